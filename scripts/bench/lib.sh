# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the scripts that source this file
# Shared helpers for the benchmark scripts (sourced, not run).
#
# Every process a script starts goes through `spawn`, which records its pid; an EXIT trap stops
# them all by pid (TERM, then KILL after a bounded wait) and removes the work directory unless
# KEEP=1. Everything listens on 127.0.0.1 on free ports. Every wait is bounded.
#
# Environment:
#   BUILD=DIR        where llmgate, mockllm, ttftbench are (default: <repo>/build)
#   MOCKLLM="CMD"    mock engine command instead of $BUILD/mockllm (same flags)
#   LLMGATE=PATH     gateway binary instead of $BUILD/llmgate
#   KEEP=1           keep the work directory (configs, logs) after the run
#   GW_THREADS, GW_WORKERS   gateway thread pool / worker counts (default 2 / 2)
#   NGINX_WORKERS    nginx worker processes (default: GW_THREADS)
#   MOCK_THREADS     mockllm --threads (default: mockllm's own)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
TTFTBENCH=${TTFTBENCH:-$BUILD/ttftbench}
LLMGATE=${LLMGATE:-$BUILD/llmgate}
GW_THREADS=${GW_THREADS:-2}
GW_WORKERS=${GW_WORKERS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-$GW_THREADS}
CHAT=/v1/chat/completions
# python3 resolved once: behind a version manager's shim (pyenv) every call costs ~0.6 s on a
# loaded 2-core machine, and the scripts call it in polling loops (jf); the interpreter itself
# starts in ~0.1 s
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3)}
python3() { "$PYTHON" "$@"; }

PIDS=()
WORK=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

lib_cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
            log "logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# lib_init NAME: work directory, cleanup trap, file descriptor limit.
lib_init() {
    WORK=$(mktemp -d "/tmp/llmgate-bench.$1.XXXXXX")
    trap lib_cleanup EXIT
    trap 'exit 130' INT TERM
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    [[ -x $TTFTBENCH ]] || die "$TTFTBENCH missing: run make build/ttftbench"
}

# spawn NAME CMD...: start CMD in the background, output to $WORK/NAME.log; pid in SPAWNED.
spawn() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# stop_pid PID: stop one process this script started (TERM, then KILL after 5 s).
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 secs=${2:-10} i
    for ((i = 0; i < secs * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_url URL SECONDS: until URL answers 200.
wait_url() {
    local url=$1 secs=${2:-10} i
    for ((i = 0; i < secs * 10; i++)); do
        [[ $(curl -s --noproxy "*" -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null) == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

# start_mock NAME PORT [mockllm flags...]: sets MOCK_PID.
start_mock() {
    local name=$1 port=$2 i
    shift 2
    local cmd
    if [[ -n ${MOCKLLM:-} ]]; then
        read -ra cmd <<<"$MOCKLLM"
    else
        [[ -x $BUILD/mockllm ]] || die "$BUILD/mockllm missing: run make build/mockllm"
        cmd=("$BUILD/mockllm")
    fi
    [[ -n ${MOCK_THREADS:-} ]] && set -- --threads "$MOCK_THREADS" "$@"
    spawn "$name" "${cmd[@]}" --listen "127.0.0.1:$port" --quiet "$@"
    MOCK_PID=$SPAWNED
    for ((i = 0; i < 100; i++)); do
        grep -q "listening on" "$WORK/$name.log" 2>/dev/null && return 0
        kill -0 "$MOCK_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/$name.log" >&2
    die "mock engine $name did not start"
}

# nginx_http_common DIR: the http{} settings both nginx roles share.
nginx_http_common() {
    local dir=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    client_body_buffer_size 16m;
    client_max_body_size 64m;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    tcp_nodelay on;
EOF
}

# run_nginx NAME DIR PORT WORKERS: starts nginx on DIR/nginx.conf in the foreground, returns when
# it accepts and its WORKERS worker processes exist (their pids are read for CPU time); sets
# NGINX_PID.
run_nginx() {
    local name=$1 dir=$2 port=$3 workers=$4 i
    spawn "$name" /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        -g 'daemon off;'
    NGINX_PID=$SPAWNED
    wait_port "$port" 10 || {
        cat "$WORK/$name.log" "$dir/logs/error.log" >&2
        die "nginx $name did not start"
    }
    for ((i = 0; i < 100; i++)); do
        (($(pgrep -c -P "$NGINX_PID") >= workers)) && return 0
        sleep 0.1
    done
    die "nginx $name: fewer than $workers worker processes after 10 s"
}

# start_nginx NAME PORT UPSTREAM_PORT [STREAM_UPSTREAM_PORT]: nginx as a streaming reverse proxy
# in its strong configuration; sets NGINX_PID. Request bodies are held in memory
# (client_body_buffer_size 16m: with the 16 KiB default a 75 KiB body goes through a temp file
# and nginx looks 4x slower), proxy_request_buffering at its default (on: the whole body is read,
# then sent), upstream keepalive 64 with HTTP/1.1 and an empty Connection header, no response
# buffering, worker_processes = NGINX_WORKERS (= GW_THREADS). Requests with
# "Accept: text/event-stream" go to the engine_stream upstream (STREAM_UPSTREAM_PORT, default the
# same engine): compare.sh --engine nginx takes fixed bodies from one engine and timed streams
# from mockllm, the same split llmgate makes by model.
start_nginx() {
    local name=$1 port=$2 up=$3 sup=${4:-$3} dir=$WORK/$1
    mkdir -p "$dir/tmp" "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 20000; multi_accept on; }
http {
$(nginx_http_common "$dir")
    upstream engine {
        server 127.0.0.1:$up;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    upstream engine_stream {
        server 127.0.0.1:$sup;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    map \$http_accept \$engine_up {
        default engine;
        text/event-stream engine_stream;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://\$engine_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }
    }
}
EOF
    run_nginx "$name" "$dir" "$port" "$NGINX_WORKERS"
}

# The non-stream answer of the nginx engine: mockllm's answer to the tiny body (16 tokens).
ENGINE_CHAT_BODY='{"id":"chatcmpl-36cf58bba5526036","object":"chat.completion","created":1700000000,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14 tok15 "},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":16,"total_tokens":19}}'
ENGINE_MODELS_BODY='{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}'

# start_nginx_engine NAME PORT: nginx as an engine that answers every POST with one fixed chat
# completion (ENGINE_CHAT_BODY, after reading and discarding the request body) and GET /v1/models
# with a model list; ENGINE_WORKERS worker processes (default 1, like mockllm's one thread). No
# delays: nginx-light has no echo module, so timed streams stay on mockllm. Sets NGINX_PID.
start_nginx_engine() {
    local name=$1 port=$2 dir=$WORK/$1
    mkdir -p "$dir/tmp" "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
worker_processes ${ENGINE_WORKERS:-1};
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 20000; multi_accept on; }
http {
$(nginx_http_common "$dir")
    default_type application/json;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /v1/models { return 200 '$ENGINE_MODELS_BODY'; }
        location / { return 200 '$ENGINE_CHAT_BODY'; }
    }
}
EOF
    run_nginx "$name" "$dir" "$port" "${ENGINE_WORKERS:-1}"
}

gateway_built() { [[ -x $LLMGATE ]]; }

# start_llmgate NAME PORT MOCK_PORT [key=value ...]: writes a config (keys given as
# section.key=value override the defaults or add keys and sections: [backend.NAME], [keys],
# [key.NAME], ...; the section is everything before the last dot) and starts the
# gateway; sets GW_PID. Returns 1 if
# the gateway is missing or does not answer /healthz within 15 s.
start_llmgate() {
    local name=$1 port=$2 up=$3 cfg=$WORK/$1.ini
    shift 3
    gateway_built || return 1
    local -A kv=(
        [server.listen]=127.0.0.1:$port [server.threads]=$GW_THREADS
        [server.workers]=$GW_WORKERS [server.max_connections]=20000
        [timeouts.connect_ms]=5000 [timeouts.request_s]=600
        [limits.max_inflight]=20000 [limits.queue_capacity]=20000
        [limits.queue_timeout_ms]=30000
        [backend.mock.url]=http://127.0.0.1:$up [backend.mock.models]=mock-model
        [backend.mock.max_concurrency]=20000
    )
    local a
    for a in "$@"; do kv[${a%%=*}]=${a#*=}; done
    local sec k sections=(server timeouts limits health)
    for k in "${!kv[@]}"; do
        [[ " ${sections[*]} " != *" ${k%.*} "* ]] && sections+=("${k%.*}")
    done
    : >"$cfg"
    for sec in "${sections[@]}"; do
        printf '[%s]\n' "$sec" >>"$cfg"
        for k in "${!kv[@]}"; do
            [[ ${k%.*} == "$sec" ]] && printf '%s = %s\n' "${k##*.}" "${kv[$k]}" >>"$cfg"
        done
    done
    spawn "$name" "$LLMGATE" --config "$cfg"
    GW_PID=$SPAWNED
    if ! wait_url "http://127.0.0.1:$port/healthz" 15; then
        log "llmgate did not answer /healthz; its log:"
        tail -n 20 "$WORK/$name.log" >&2
        stop_pid "$GW_PID"
        return 1
    fi
}

# rss_kb PID [with-children]: resident set size in KiB (nginx: master plus workers).
rss_kb() {
    local pid=$1 total=0 p v
    local pids=("$pid") kids=()
    [[ ${2:-} == with-children ]] && mapfile -t kids < <(pgrep -P "$pid")
    pids+=("${kids[@]}")
    for p in "${pids[@]}"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# fd_count PID [with-children]: open file descriptors.
fd_count() {
    local pids=("$1") kids=() p n=0
    [[ ${2:-} == with-children ]] && mapfile -t kids < <(pgrep -P "$1")
    pids+=("${kids[@]}")
    for p in "${pids[@]}"; do n=$((n + $(find "/proc/$p/fd" -mindepth 1 2>/dev/null | wc -l))); done
    echo "$n"
}

# jf EXPR [FILE]: evaluate a Python expression over the JSON object `j` read from the last line
# of FILE (or stdin) that starts with '{'.
jf() { "$PYTHON" "$BENCH_DIR/jf.py" "$@"; }

# wrk_lua_done: the done() of the wrk scripts: one JSON line with the summary.
wrk_lua_done() {
    cat <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format('{"tool":"wrk","requests":%d,"elapsed_s":%.3f,"rps":%.1f,'
    .. '"avg_us":%.1f,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"non2xx":%d,"connect_err":%d,"read_err":%d,"write_err":%d,"timeout_err":%d}\n',
    summary.requests, secs, summary.requests / secs, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
EOF
}

# wrk_lua FILE BODY: a wrk script that POSTs BODY and prints one JSON line at the end.
wrk_lua() {
    {
        printf "wrk.body = '%s'\n" "$2"
        wrk_lua_done
    } >"$1"
}

# wrk_lua_file FILE BODY_FILE: the same with the body read from BODY_FILE (any size, any bytes).
wrk_lua_file() {
    {
        printf 'local f = assert(io.open("%s", "rb"))\nwrk.body = f:read("*a")\nf:close()\n' "$2"
        wrk_lua_done
    } >"$1"
}

# nginx_pids MASTER_PID: the master and its worker processes.
nginx_pids() { echo "$1" $(pgrep -P "$1"); }

# cpu_split PID...: "USER SYSTEM", CPU time in microseconds summed over the processes (every
# thread, running or exited) from utime and stime in /proc/PID/stat (clock ticks, USER_HZ).
cpu_split() {
    local p line f u=0 s=0 hz
    hz=$(getconf CLK_TCK)
    for p in "$@"; do
        line=$(<"/proc/$p/stat") 2>/dev/null || continue
        read -ra f <<<"${line##*) }" # fields from 3 (state) on: utime is field 14, stime 15
        u=$((u + f[11]))
        s=$((s + f[12]))
    done
    echo "$((u * 1000000 / hz)) $((s * 1000000 / hz))"
}

# cpu_us PID...: user + system CPU time in microseconds (see cpu_split).
cpu_us() {
    local u s
    read -r u s < <(cpu_split "$@")
    echo $((u + s))
}

# wrk_json URL CONC SECONDS LUA: runs wrk (keep-alive), prints its JSON line.
wrk_json() {
    local url=$1 conc=$2 secs=$3 lua=$4 threads=${WRK_THREADS:-2}
    ((threads > conc)) && threads=$conc
    timeout $((secs + 30)) wrk -t "$threads" -c "$conc" -d "${secs}s" --timeout 10s -s "$lua" \
        "$url" 2>&1 | grep '^{"tool":"wrk"' | tail -n 1
}

# oha_json URL CONC SECONDS BODY: the same with oha, when installed, in wrk_json's shape.
oha_json() {
    local url=$1 conc=$2 secs=$3 body=$4
    command -v oha >/dev/null || return 1
    timeout $((secs + 30)) oha --no-tui -j -z "${secs}s" -c "$conc" -m POST \
        -H 'Content-Type: application/json' -d "$body" "$url" 2>/dev/null |
        python3 "$BENCH_DIR/jf.py" --oha
}

# setup_targets LIST [mockllm flags...]: starts one mock engine and, for each name in the
# comma-separated LIST (direct, nginx, llmgate), what is needed to reach it. Sets MOCK_PORT,
# TARGETS (the available ones, in order), TARGET_URL[name] (base URL), MISSING (unavailable).
# GW_OVERRIDES (array of section.key=value) adjusts the gateway's config.
setup_targets() {
    local want=$1 t p
    shift
    MOCK_PORT=$(free_port)
    start_mock mock "$MOCK_PORT" "$@"
    declare -gA TARGET_URL=()
    TARGETS=()
    MISSING=()
    for t in ${want//,/ }; do
        case $t in
        direct)
            TARGET_URL[direct]=http://127.0.0.1:$MOCK_PORT
            TARGETS+=(direct)
            ;;
        nginx)
            p=$(free_port)
            start_nginx nginx "$p" "$MOCK_PORT"
            TARGET_URL[nginx]=http://127.0.0.1:$p
            TARGETS+=(nginx)
            ;;
        llmgate)
            p=$(free_port)
            if start_llmgate llmgate "$p" "$MOCK_PORT" "${GW_OVERRIDES[@]}"; then
                TARGET_URL[llmgate]=http://127.0.0.1:$p
                TARGETS+=(llmgate)
            else
                log "llmgate unavailable ($LLMGATE missing or not healthy): skipped"
                MISSING+=(llmgate)
            fi
            ;;
        *) die "unknown target: $t (direct, nginx, llmgate)" ;;
        esac
    done
    ((${#TARGETS[@]} > 0)) || die "no target available"
}
GW_OVERRIDES=()
