#!/usr/bin/env bash
# restart_balancer.sh — does a rolling restart behind a load balancer fail requests?
#
# Two llmgate instances (one mockllm engine behind both) sit behind HAProxy (round robin,
# health check GET /ready every 200 ms, fall 3 / rise 2, `retries 3`, `option redispatch`,
# keep-alive to the servers) or nginx (`proxy_next_upstream`, upstream keepalive; it has no
# active health check). wrk sends small non-stream chat completions through the balancer on
# keep-alive connections while each instance in turn gets SIGTERM, exits, is started again
# and is seen up by the balancer, CYCLES times. Every status the clients received is counted,
# with wrk's socket errors (connect, read, write, timeout): a failed request is anything but 200.
#
# usage: scripts/bench/restart_balancer.sh [--balancer haproxy|nginx] [--grace S] [--drain S]
#                                          [--cycles N] [--conns N] [--ttft-ms N]
#   --balancer   haproxy (default) or nginx
#   --grace S    [timeouts] drain_grace_s of both instances (default: not written, the build's
#                default; a build without the key refuses it)
#   --drain S    [timeouts] drain_s (default 5)
#   --cycles N   restarts of each instance (default 2)
#   --conns N    wrk connections (default 32, 2 threads)
#   --ttft-ms N  the engine's time to the first byte (default 20), so requests are in flight
#                when SIGTERM lands
# Environment: BUILD, LLMGATE, KEEP (scripts/bench/lib.sh). Loopback only; every wait is
# bounded (the whole run: under a minute with the defaults); it stops by itself.
# Output: one table row per run, and a JSON line (status counts, errors, failed, total).
# Exit status 1 when any request failed.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

BALANCER=haproxy GRACE="" DRAIN=5 CYCLES=2 CONNS=32 TTFT=20
while (($#)); do
    case $1 in
    --balancer) BALANCER=$2 && shift ;;
    --grace) GRACE=$2 && shift ;;
    --drain) DRAIN=$2 && shift ;;
    --cycles) CYCLES=$2 && shift ;;
    --conns) CONNS=$2 && shift ;;
    --ttft-ms) TTFT=$2 && shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown option $1" ;;
    esac
    shift
done
[[ $BALANCER == haproxy || $BALANCER == nginx ]] || die "--balancer haproxy|nginx"
case $BALANCER in
haproxy) [[ -x /usr/sbin/haproxy ]] || die "/usr/sbin/haproxy missing (apt-get install haproxy)" ;;
nginx) [[ -x /usr/sbin/nginx ]] || die "/usr/sbin/nginx missing (apt-get install nginx-light)" ;;
esac
command -v wrk >/dev/null || die "wrk missing"

lib_init restart
# shellcheck disable=SC2034 # read by start_llmgate (lib.sh)
GW_THREADS=1 GW_WORKERS=1

mport=$(free_port)
start_mock mock "$mport" --ttft-ms "$TTFT" --tokens 8

declare -a GPORT GPID
for i in 1 2; do
    GPORT[i]=$(free_port)
    args=("timeouts.drain_s=$DRAIN")
    [[ -n $GRACE ]] && args+=("timeouts.drain_grace_s=$GRACE")
    start_llmgate "gw$i" "${GPORT[i]}" "$mport" "${args[@]}" || die "gateway $i did not start"
    GPID[i]=$GW_PID
done

fport=$(free_port)
bdir=$WORK/$BALANCER
mkdir -p "$bdir/tmp" "$bdir/logs"
if [[ $BALANCER == haproxy ]]; then
    cat >"$bdir/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket $bdir/stats.sock level admin
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 3
    option redispatch
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$fport
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server check inter 200ms fall 3 rise 2
    server gw1 127.0.0.1:${GPORT[1]}
    server gw2 127.0.0.1:${GPORT[2]}
EOF
    /usr/sbin/haproxy -c -q -f "$bdir/haproxy.cfg" || die "haproxy refused its configuration"
    spawn haproxy /usr/sbin/haproxy -db -f "$bdir/haproxy.cfg"
else
    cat >"$bdir/nginx.conf" <<EOF
worker_processes 1;
pid $bdir/nginx.pid;
error_log $bdir/logs/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_http_common "$bdir")
    upstream gateways {
        server 127.0.0.1:${GPORT[1]} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:${GPORT[2]} max_fails=1 fail_timeout=2s;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$fport backlog=4096;
        location / {
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
        }
    }
}
EOF
    run_nginx nginx "$bdir" "$fport" 1
fi
wait_port "$fport" 10 || die "$BALANCER did not start"

# wait_up N: until HAProxy reports server gwN UP (nginx: /ready is 200, and fail_timeout passed).
wait_up() {
    local n=$1 i
    for ((i = 0; i < 100; i++)); do
        if [[ $BALANCER == haproxy ]]; then
            python3 - "$bdir/stats.sock" "gw$n" <<'PY' && return 0
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
for line in out.decode().splitlines():
    f = line.split(",")
    if len(f) > 17 and f[0] == "gateways" and f[1] == sys.argv[2]:
        sys.exit(0 if f[17] == "UP" else 1)
sys.exit(1)
PY
        elif wait_url "http://127.0.0.1:${GPORT[n]}/ready" 1; then
            # nginx has no health check: a server it saw fail (connection refused while the
            # instance was down) is tried again fail_timeout (2 s) after the failure
            sleep 2.2
            return 0
        fi
        sleep 0.1
    done
    return 1
}
for i in 1 2; do wait_up "$i" || die "gw$i not up in $BALANCER"; done

lua=$WORK/count.lua
cat >"$lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
    end
    for k, v in pairs(total) do io.write(string.format("STATUS %d %d\n", k, v)) end
    local e = summary.errors
    io.write(string.format("ERRORS %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
end
EOF

log "$BALANCER on :$fport, gateways :${GPORT[1]} :${GPORT[2]}, grace=${GRACE:-default} drain=$DRAIN s, $CONNS connections"
spawn wrk wrk -t2 -c"$CONNS" -d300s --timeout 10s -s "$lua" "http://127.0.0.1:$fport$CHAT"
WRK_PID=$SPAWNED
sleep 2

# restart N: SIGTERM, wait for the exit (bounded by the drain), start again, wait until the
# balancer sees it up.
restart() {
    local n=$1 t0 i
    t0=$(date +%s.%N)
    kill -TERM "${GPID[n]}"
    for ((i = 0; i < (DRAIN + ${GRACE:-0} + 10) * 10; i++)); do
        kill -0 "${GPID[n]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "${GPID[n]}" 2>/dev/null && die "gw$n still running after SIGTERM"
    wait "${GPID[n]}" 2>/dev/null || log "gw$n exited with status $?"
    local stopped
    stopped=$(date +%s.%N)
    spawn "gw$n.$RANDOM" "$LLMGATE" --config "$WORK/gw$n.ini"
    GPID[n]=$SPAWNED
    wait_url "http://127.0.0.1:${GPORT[n]}/healthz" 15 || die "gw$n did not restart"
    wait_up "$n" || die "gw$n not seen up again by $BALANCER"
    log "gw$n: exited $(awk -v a="$t0" -v b="$stopped" 'BEGIN{printf "%.2f", b-a}') s after SIGTERM, up again after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
}
for ((c = 0; c < CYCLES; c++)); do
    for n in 1 2; do
        restart "$n"
        sleep 1
    done
done
sleep 1
kill -INT "$WRK_PID"
for ((i = 0; i < 100; i++)); do
    kill -0 "$WRK_PID" 2>/dev/null || break
    sleep 0.1
done
wait "$WRK_PID" 2>/dev/null || true

python3 - "$WORK/wrk.log" "$BALANCER" "${GRACE:-default}" "$CYCLES" <<'PY'
import json, sys
st, err = {}, [0, 0, 0, 0]
for line in open(sys.argv[1]):
    f = line.split()
    if f[:1] == ["STATUS"]:
        st[int(f[1])] = int(f[2])
    elif f[:1] == ["ERRORS"]:
        err = [int(x) for x in f[1:5]]
total = sum(st.values()) + sum(err)
failed = total - st.get(200, 0)
print("| balancer | drain_grace_s | restarts | requests | 200 | other statuses | socket errors (conn/read/write/timeout) | failed |")
print("|---|---|---|---|---|---|---|---|")
others = ", ".join("%d x %d" % (n, s) for s, n in sorted(st.items()) if s != 200) or "none"
print("| %s | %s | %d | %d | %d | %s | %s | %d (%.2f %%) |" % (
    sys.argv[2], sys.argv[3], 2 * int(sys.argv[4]), total, st.get(200, 0), others,
    "/".join(map(str, err)), failed, 100.0 * failed / total if total else 0))
print(json.dumps({"balancer": sys.argv[2], "grace": sys.argv[3], "status": st,
                  "errors": dict(zip(["connect", "read", "write", "timeout"], err)),
                  "total": total, "failed": failed}))
sys.exit(1 if failed else 0)
PY
