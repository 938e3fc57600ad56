#!/usr/bin/env bash
# llmgate against nginx proxy_pass (strong configuration, see start_nginx in lib.sh) and against
# the engine reached directly, interleaved in one run: for every workload, each target in turn
# (the order rotates from run to run), so that the ratios compare the same minute of the machine.
#
# Workloads (per run):
#   tiny   c=50  wrk        throughput, CPU per request            (small requests)
#   tiny   c=8   wrk        CPU per request (the base of the per-byte cost)
#   tiny   c=1   ttftbench  latency p50/p99 (added over direct)
#   75K, 300K, 2M chat bodies (gen_body.py: 60 messages for 75 KiB, scaled for the others):
#          c=8   wrk        CPU per request, throughput; cost per body byte against tiny c=8
#          c=1   ttftbench  latency p50/p99 (added over direct)
#   1,000 streams opened at once x 67 events 20 ms apart (TTFT 50 ms): CPU per relayed event,
#          TTFT p50/p99 (added over direct), gap p99, frames in/out, stalls
#   100 streams x (ITL_TOKENS+2) events, alone and then while 75K prompts arrive at c=8: gap p99
# Then once per proxy, outside the timed windows: syscalls per tiny request (c=50), per 75K
# request (c=8) and per stream event, from `strace -c -f -p` over exactly one ttftbench run.
#
# CPU per unit = (utime+stime after - before) / completed requests (or relayed events), read from
# /proc/PID/stat of the proxy around each measured window: llmgate's process (all threads), nginx's
# master + workers. Not measured for direct (that is the engine's own cost).
#
# Engines (--engine) for the non-stream requests: nginx (default) — a second nginx answers every
# request with a fixed chat completion (no JSON parsing: the cheapest engine, the users' setup);
# mock — a mockllm (it parses each body with json-c: ~150 us of its own CPU per 75 KiB request,
# which competes with the proxy for the two cores and caps nginx's 75K throughput). Timed streams
# always come from their own mockllm (nginx-light cannot space events; a separate process so that
# parsing prompts never delays their events); llmgate routes them by model (mock-stream), nginx
# by "Accept: text/event-stream".
#
# Refuses to report (exit 3) when the llmgate/nginx ratio of a CPU-per-unit figure (tiny c=50,
# 75K c=8, per event) moved by more than --noise-max of its median over the runs (CPU per unit is
# far steadier than req/s on a shared machine; the rest shows its spread but does not gate).
#
#   scripts/bench/compare.sh [--short] [--runs N] [--engine nginx|mock] [--noise-max F]
#                            [--force] [--no-syscalls]
# Exit: 0 reported (targets missed are marked, not failures); 1 failures; 2 llmgate unavailable
# (direct vs nginx reported); 3 too noisy.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

RUNS=3
TPUT_S=5       # tiny c=50, tiny c=8, 75K c=8 windows
BIG_S=3        # 300K and 2M c=8 windows
LAT_N=(3000 1000 300 60) # c=1 requests for tiny, 75K, 300K, 2M
STREAMS=1000
ST_TOKENS=65   # + the final event + [DONE] = 67 events
ITL_STREAMS=100
ITL_TOKENS=150 # 20 ms apart: ~3 s of streaming
SC_STREAMS=200 # strace pass: at 1,000 streams ptrace stops batch events and under-count
ENGINE=nginx
NOISE_MAX=${NOISE_MAX:-0.30}
FORCE=""
SYSCALLS=1
while (($#)); do
    case $1 in
    --short)
        RUNS=3 TPUT_S=2 BIG_S=2 ITL_TOKENS=50
        LAT_N=(1000 300 100 20)
        ;;
    --runs) RUNS=$2; shift ;;
    --engine) ENGINE=$2; shift ;;
    --noise-max) NOISE_MAX=$2; shift ;;
    --force) FORCE=--force ;;
    --no-syscalls) SYSCALLS=0 ;;
    -h | --help) sed -n '2,38p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done
[[ $ENGINE == nginx || $ENGINE == mock ]] || die "--engine: nginx or mock"
((SYSCALLS == 0)) || command -v strace >/dev/null || {
    log "strace not installed: syscall counts skipped"
    SYSCALLS=0
}

lib_init compare
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
SAMPLES=$WORK/samples.jsonl
: >"$SAMPLES"

# --- bodies ---------------------------------------------------------------------------------
BODIES=(tiny 75K 300K 2M)
declare -A BYTES=()
for b in "${BODIES[@]}"; do
    python3 "$BENCH_DIR/gen_body.py" "$b" -o "$WORK/body.$b.json" || die "gen_body.py $b"
    BYTES[$b]=$(stat -c %s "$WORK/body.$b.json")
    wrk_lua_file "$WORK/$b.lua" "$WORK/body.$b.json"
done

# --- engines and proxies --------------------------------------------------------------------
MOCK_PORT=$(free_port)
start_mock mock "$MOCK_PORT" --ttft-ms 0 --itl-ms 0 --tokens 16
ENGINE_PORT=$(free_port)
if [[ $ENGINE == nginx ]]; then
    start_nginx_engine engine "$ENGINE_PORT"
else
    start_mock engine "$ENGINE_PORT" --ttft-ms 0 --itl-ms 0 --tokens 16
fi
declare -A NS_URL=() ST_URL=() CPU_PIDS=() TRACE_PIDS=()
TARGETS=(direct)
MISSING=()
NS_URL[direct]=http://127.0.0.1:$ENGINE_PORT$CHAT
ST_URL[direct]=http://127.0.0.1:$MOCK_PORT$CHAT

p=$(free_port)
start_nginx nginx "$p" "$ENGINE_PORT" "$MOCK_PORT"
TARGETS+=(nginx)
NS_URL[nginx]=http://127.0.0.1:$p$CHAT
ST_URL[nginx]=${NS_URL[nginx]}
CPU_PIDS[nginx]=$(nginx_pids "$NGINX_PID")
TRACE_PIDS[nginx]=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

p=$(free_port)
if start_llmgate llmgate "$p" "$MOCK_PORT" backend.mock.models=mock-stream \
    backend.fixed.url="http://127.0.0.1:$ENGINE_PORT" backend.fixed.models=mock-model \
    backend.fixed.max_concurrency=20000; then
    TARGETS+=(llmgate)
    NS_URL[llmgate]=http://127.0.0.1:$p$CHAT
    ST_URL[llmgate]=${NS_URL[llmgate]}
    CPU_PIDS[llmgate]=$GW_PID
    TRACE_PIDS[llmgate]=$GW_PID
else
    log "llmgate unavailable ($LLMGATE missing or not healthy): direct vs nginx only"
    MISSING+=(llmgate)
fi
PROXIES=()
for t in "${TARGETS[@]}"; do [[ $t != direct ]] && PROXIES+=("$t"); done

# --- measurements ---------------------------------------------------------------------------
sample() { # run target metric value
    printf '{"run":%d,"target":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" "$4" >>"$SAMPLES"
}

per_unit() { # cpu_before cpu_after units -> microseconds per unit
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.3f", (n > 0 ? (b - a) / n : 0) }'
}

# cpu_samples RUN TARGET PREFIX "USER SYS" "USER SYS" UNITS: PREFIX_cpu_us (user + system per
# unit) and PREFIX_sys_frac (the system share: kernel work, mostly syscalls and copies).
cpu_samples() {
    local r=$1 t=$2 m=$3 u0 s0 u1 s1 n=$6
    read -r u0 s0 <<<"$4"
    read -r u1 s1 <<<"$5"
    ((n > 0)) || return 0
    sample "$r" "$t" "${m}_cpu_us" "$(per_unit $((u0 + s0)) $((u1 + s1)) "$n")"
    ((u1 + s1 > u0 + s0)) &&
        sample "$r" "$t" "${m}_sys_frac" "$(per_unit "$s0" "$s1" $((u1 + s1 - u0 - s0)))"
    return 0
}

# wrk_window RUN TARGET BODY CONC SECONDS: throughput and (proxies) CPU per request.
wrk_window() {
    local r=$1 t=$2 b=$3 c=$4 secs=$5 pids c0="0 0" c1="0 0" out n rps bad
    read -ra pids <<<"${CPU_PIDS[$t]:-}"
    ((${#pids[@]})) && c0=$(cpu_split "${pids[@]}")
    out=$(wrk_json "${NS_URL[$t]}" "$c" "$secs" "$WORK/$b.lua")
    ((${#pids[@]})) && c1=$(cpu_split "${pids[@]}")
    echo "run $r $t $b c=$c cpu $c0..$c1 $out" >>"$WORK/raw.txt"
    if [[ $out != "{"* ]]; then
        sample "$r" "$t" failed 1
        return
    fi
    read -r n rps bad < <(jf '"%d %f %d" % (j["requests"], j["rps"], j["non2xx"]
        + j["connect_err"] + j["read_err"] + j["write_err"] + j["timeout_err"])' <<<"$out")
    sample "$r" "$t" "${b}_c${c}_rps" "$rps"
    sample "$r" "$t" failed "$bad"
    ((${#pids[@]})) && cpu_samples "$r" "$t" "${b}_c${c}" "$c0" "$c1" "$n"
}

# lat1 RUN TARGET BODY N: latency at concurrency 1 (ttftbench, microsecond clock).
lat1() {
    local r=$1 t=$2 b=$3 n=$4 out p50 p99 bad
    out=$("$TTFTBENCH" --url "${NS_URL[$t]}" --no-stream --body "$WORK/body.$b.json" \
        --concurrency 1 --requests "$n" --warmup $((n / 20 + 5)) --max-time 120 --allow-fail \
        --json 2>>"$WORK/ttftbench.err")
    echo "run $r $t $b c=1 $out" >>"$WORK/raw.txt"
    if [[ $out != "{"* ]]; then
        sample "$r" "$t" failed 1
        return
    fi
    read -r p50 p99 bad < <(jf '"%d %d %d" % (j["latency_us"]["p50"], j["latency_us"]["p99"],
        j["failed"])' <<<"$out")
    sample "$r" "$t" "${b}_c1_p50_us" "$p50"
    sample "$r" "$t" "${b}_c1_p99_us" "$p99"
    sample "$r" "$t" failed "$bad"
}

# stream_run TARGET STREAMS TOKENS: one ttftbench run of STREAMS streams opened at once, TOKENS
# tokens 20 ms apart after a 50 ms TTFT; prints its JSON line.
stream_run() {
    "$TTFTBENCH" --url "${ST_URL[$1]}" --model mock-stream --concurrency "$2" --requests "$2" \
        --max-tokens "$3" --mock '{"ttft_ms":50,"itl_ms":20,"tokens":'"$3"'}' \
        --expect-gap-ms 20 --expect-events $(($3 + 2)) --timeout 120 --max-time 180 \
        --allow-fail --json 2>>"$WORK/ttftbench.err"
}

# streams RUN TARGET: 1,000 streams at once: CPU per relayed event, burst TTFT, frames, stalls.
streams() {
    local r=$1 t=$2 pids c0="0 0" c1="0 0" out v
    read -ra pids <<<"${CPU_PIDS[$t]:-}"
    ((${#pids[@]})) && c0=$(cpu_split "${pids[@]}")
    out=$(stream_run "$t" "$STREAMS" "$ST_TOKENS")
    ((${#pids[@]})) && c1=$(cpu_split "${pids[@]}")
    echo "run $r $t streams cpu $c0..$c1 $out" >>"$WORK/raw.txt"
    if [[ $out != "{"* ]]; then
        sample "$r" "$t" failed 1
        return
    fi
    read -ra v < <(jf '"%d %d %d %d %d %d %d" % (j["ttft_us"]["p50"], j["ttft_us"]["p99"],
        j["gap_us"]["p99"], j["events_in"], j["events_expected"], j["stalls"], j["failed"])' <<<"$out")
    sample "$r" "$t" st_ttft_p50_us "${v[0]}"
    sample "$r" "$t" st_ttft_p99_us "${v[1]}"
    sample "$r" "$t" st_gap_p99_us "${v[2]}"
    sample "$r" "$t" st_frames_in "${v[3]}"
    sample "$r" "$t" st_frames_out "${v[4]}"
    sample "$r" "$t" st_stalls "${v[5]}"
    sample "$r" "$t" failed "${v[6]}"
    ((${#pids[@]})) && cpu_samples "$r" "$t" st_ev "$c0" "$c1" "${v[3]}"
}

# itl RUN TARGET: gap p99 of ITL_STREAMS streams alone, then while 75K prompts arrive at c=8.
itl() {
    local r=$1 t=$2 out v secs wpid
    out=$(stream_run "$t" "$ITL_STREAMS" "$ITL_TOKENS")
    echo "run $r $t itl-alone $out" >>"$WORK/raw.txt"
    if [[ $out != "{"* ]]; then
        sample "$r" "$t" failed 1
        return
    fi
    read -ra v < <(jf '"%d %d %d" % (j["gap_us"]["p99"], j["stalls"], j["failed"])' <<<"$out")
    sample "$r" "$t" itl_alone_gap_p99_us "${v[0]}"
    sample "$r" "$t" itl_alone_stalls "${v[1]}"
    sample "$r" "$t" failed "${v[2]}"

    secs=$(((50 + (ITL_TOKENS + 2) * 20 + 999) / 1000 + 1)) # the streams run inside the window
    spawn "itl-wrk-$r-$t" timeout $((secs + 30)) wrk -t "${WRK_THREADS:-2}" -c 8 -d "${secs}s" \
        --timeout 10s -s "$WORK/75K.lua" "${NS_URL[$t]}"
    wpid=$SPAWNED
    sleep 0.3
    out=$(stream_run "$t" "$ITL_STREAMS" "$ITL_TOKENS")
    wait "$wpid"
    echo "run $r $t itl-load $out" >>"$WORK/raw.txt"
    if [[ $out != "{"* ]]; then
        sample "$r" "$t" failed 1
        return
    fi
    read -ra v < <(jf '"%d %d %d" % (j["gap_us"]["p99"], j["stalls"], j["failed"])' <<<"$out")
    sample "$r" "$t" itl_load_gap_p99_us "${v[0]}"
    sample "$r" "$t" itl_load_stalls "${v[1]}"
    sample "$r" "$t" failed "${v[2]}"
    out=$(grep '^{"tool":"wrk"' "$WORK/itl-wrk-$r-$t.log" | tail -n 1)
    [[ $out == "{"* ]] && sample "$r" "$t" itl_prompt_rps "$(jf 'j["rps"]' <<<"$out")"
}

# syscalls TARGET WORKLOAD UNIT CMD...: strace -c -f attached to the proxy for exactly one run of
# CMD (a ttftbench --json command); calls per unit (UNIT: ok or events_in) into syscalls.jsonl.
syscalls() {
    local t=$1 wl=$2 unit=$3 pids p args=() threads=0 i out n st
    shift 3
    read -ra pids <<<"${TRACE_PIDS[$t]}"
    for p in "${pids[@]}"; do
        args+=(-p "$p")
        threads=$((threads + $(find "/proc/$p/task" -mindepth 1 -maxdepth 1 | wc -l)))
    done
    spawn "strace-$t-$wl" strace -c -f -o "$WORK/strace-$t-$wl.txt" "${args[@]}"
    st=$SPAWNED
    for ((i = 0; i < 50; i++)); do # "Process N attached with T threads", one line per -p
        (($(grep -c attached "$WORK/strace-$t-$wl.log" 2>/dev/null) >= ${#pids[@]})) && break
        sleep 0.1
    done
    sleep 0.2
    out=$("$@" 2>>"$WORK/ttftbench.err")
    kill -INT "$st" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$st" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$st"
    echo "syscalls $t $wl $out" >>"$WORK/raw.txt"
    [[ $out == "{"* ]] || return 0
    n=$(jf "j['$unit']" <<<"$out")
    python3 - "$WORK/strace-$t-$wl.txt" "$t" "$wl" "$n" "$threads" >>"$WORK/syscalls.jsonl" <<'EOF'
import json, sys
path, target, wl, n, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
print(json.dumps({"target": target, "workload": wl, "units": n, "threads": int(threads),
                  "calls": calls}))
EOF
}

# --- warm-up: connections, caches, page faults, memory for 1,000 connections; not recorded ---
for t in "${TARGETS[@]}"; do
    for b in "${BODIES[@]}"; do wrk_json "${NS_URL[$t]}" 8 1 "$WORK/$b.lua" >/dev/null; done
    stream_run "$t" "$STREAMS" 8 >/dev/null
done

# --- runs -----------------------------------------------------------------------------------
WORKLOADS=(tiny_c50 tiny_c8 tiny_c1 75K_c8 75K_c1 300K_c8 300K_c1 2M_c8 2M_c1 streams itl)
run_workload() { # run target workload
    local r=$1 t=$2
    case $3 in
    tiny_c50) wrk_window "$r" "$t" tiny 50 "$TPUT_S" ;;
    tiny_c8) [[ $t != direct ]] && wrk_window "$r" "$t" tiny 8 "$TPUT_S" ;;
    75K_c8) [[ $t != direct ]] && wrk_window "$r" "$t" 75K 8 "$TPUT_S" ;;
    300K_c8 | 2M_c8) [[ $t != direct ]] && wrk_window "$r" "$t" "${3%_c8}" 8 "$BIG_S" ;;
    tiny_c1) lat1 "$r" "$t" tiny "${LAT_N[0]}" ;;
    75K_c1) lat1 "$r" "$t" 75K "${LAT_N[1]}" ;;
    300K_c1) lat1 "$r" "$t" 300K "${LAT_N[2]}" ;;
    2M_c1) lat1 "$r" "$t" 2M "${LAT_N[3]}" ;;
    streams) streams "$r" "$t" ;;
    itl) itl "$r" "$t" ;;
    esac
    return 0
}
n=${#TARGETS[@]}
for ((r = 1; r <= RUNS; r++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${TARGETS[$(((i + r - 1) % n))]}"); done
    log "run $r/$RUNS: ${order[*]} (load $(cut -d' ' -f1 /proc/loadavg))"
    for w in "${WORKLOADS[@]}"; do
        for t in "${order[@]}"; do run_workload "$r" "$t" "$w"; done
    done
done

: >"$WORK/syscalls.jsonl"
if ((SYSCALLS)); then
    log "syscall counts (strace -c -f), outside the timed runs"
    for t in "${PROXIES[@]}"; do
        syscalls "$t" tiny ok "$TTFTBENCH" --url "${NS_URL[$t]}" --no-stream \
            --body "$WORK/body.tiny.json" --concurrency 50 --requests 3000 --max-time 120 --json
        syscalls "$t" 75K ok "$TTFTBENCH" --url "${NS_URL[$t]}" --no-stream \
            --body "$WORK/body.75K.json" --concurrency 8 --requests 1000 --max-time 120 --json
        syscalls "$t" event events_in stream_run "$t" "$SC_STREAMS" "$ST_TOKENS"
    done
fi

# --- report ---------------------------------------------------------------------------------
cat >"$WORK/meta.json" <<EOF
{"runs": $RUNS, "engine": "$ENGINE", "bytes": {"tiny": ${BYTES[tiny]}, "75K": ${BYTES[75K]},
 "300K": ${BYTES[300K]}, "2M": ${BYTES[2M]}}, "tput_s": $TPUT_S, "big_s": $BIG_S,
 "lat_n": [${LAT_N[0]}, ${LAT_N[1]}, ${LAT_N[2]}, ${LAT_N[3]}], "streams": $STREAMS,
 "st_events": $((ST_TOKENS + 2)), "itl_streams": $ITL_STREAMS, "itl_events": $((ITL_TOKENS + 2)),
 "sc_streams": $SC_STREAMS}
EOF
echo
echo "compare: $RUNS interleaved runs, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), engine" \
    "$ENGINE (streams: mockllm); proxies: llmgate threads=$GW_THREADS workers=$GW_WORKERS, nginx" \
    "worker_processes=$NGINX_WORKERS"
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
target_list=$(IFS=,; echo "${TARGETS[*]}")
python3 "$BENCH_DIR/compare_report.py" "$SAMPLES" "$target_list" "$NOISE_MAX" \
    --meta "$WORK/meta.json" --syscalls "$WORK/syscalls.jsonl" $FORCE
rc=$?
if ((${#MISSING[@]} > 0)); then
    echo "llmgate: not measured (unavailable)"
    ((rc == 0)) && rc=2
fi
exit $rc
