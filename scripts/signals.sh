#!/usr/bin/env bash
# Signals at bad moments, bounded, on 127.0.0.1 only (not part of `make test`: it hunts races,
# which a fixed test run finds only by luck). CYCLES times: start a gateway in front of a
# mockllm, let CLIENTS clients stream and call POST /admin/reload in a loop, send SIGHUP at a
# random moment, SIGTERM at another, and (every other cycle) a SIGHUP right after the SIGTERM.
# Every exit must be 0 and, with an ASan or TSan build, the log free of sanitizer reports.
#
#   scripts/signals.sh [--cycles N] [--clients C] [--build DIR]    (default 50, 6, build)
#   e.g. make O=build-asan SAN=1 && scripts/signals.sh --build build-asan
#        make O=build-tsan SAN=thread CC=clang && scripts/signals.sh --build build-tsan
# Exit: 0 every cycle clean; 1 otherwise (the bad cycles' logs are kept and named).
set -uo pipefail

CYCLES=50
CLIENTS=6
BUILD=build
while (($#)); do
    case $1 in
    --cycles) CYCLES=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --build) BUILD=$2; shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "signals.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GW=$ROOT/$BUILD/llmgate
MOCK=$ROOT/$BUILD/mockllm
[[ -x $GW && -x $MOCK ]] || { echo "signals.sh: build first ($GW, $MOCK)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/llmgate-signals.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MP=$(free_port)
GP=$(free_port)
"$MOCK" --listen 127.0.0.1:"$MP" --ttft-ms 5 --itl-ms 2 --tokens 20 >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null' EXIT
cat >"$WORK/g.ini" <<EOF
[server]
listen = 127.0.0.1:$GP
threads = 2
workers = 2
[timeouts]
drain_s = 1
[limits]
max_inflight = 2
queue_capacity = 8
[health]
interval_ms = 50
[admin]
key = adm-signals
[backend.m]
url = http://127.0.0.1:$MP
models = m
max_concurrency = 2
EOF
BODY='{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
bad=0
for ((i = 1; i <= CYCLES; i++)); do
    ASAN_OPTIONS=detect_leaks=1 "$GW" --config "$WORK/g.ini" >"$WORK/g.log" 2>&1 &
    pid=$!
    up=0
    for _ in $(seq 250); do
        curl -s -o /dev/null "http://127.0.0.1:$GP/healthz" && { up=1; break; }
        sleep 0.02
    done
    pids=()
    for ((c = 0; c < CLIENTS && up; c++)); do
        (for _ in 1 2 3 4 5 6; do
            curl -s -o /dev/null -m 10 -H 'content-type: application/json' -d "$BODY" \
                "http://127.0.0.1:$GP/v1/chat/completions" --next -s -o /dev/null -m 10 -X POST \
                -H "Authorization: Bearer adm-signals" "http://127.0.0.1:$GP/admin/reload"
        done) >/dev/null 2>&1 &
        pids+=($!)
    done
    sleep "0.0$((RANDOM % 9 + 1))"
    kill -HUP "$pid" 2>/dev/null
    sleep "0.0$((RANDOM % 9 + 1))"
    kill -TERM "$pid" 2>/dev/null
    ((i % 2 == 0)) && kill -HUP "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    ((${#pids[@]})) && wait "${pids[@]}"
    if ((rc != 0 || !up)) || grep -qE "ERROR: AddressSanitizer|runtime error|LeakSanitizer|ThreadSanitizer" "$WORK/g.log"; then
        bad=$((bad + 1))
        cp "$WORK/g.log" "$WORK/bad-$i.log"
        echo "cycle $i: exit $rc (up: $up), log $WORK/bad-$i.log"
    fi
done
echo "signals: $CYCLES cycles, $bad bad (work: $WORK)"
((bad == 0))
