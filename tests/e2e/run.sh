#!/usr/bin/env bash
# End-to-end tests: the official `openai` npm client against build/llmgate backed by build/mockllm.
#
#   tests/e2e/run.sh BUILD_DIR
#
# Installs the pinned client (npm ci, only when node_modules is missing or stale), starts mockllm
# and llmgate on free loopback ports, runs `node --test openai.test.mjs`, stops both (also on
# failure) and ends with `e2e: N passed, N failed`. Exit status 1 on any failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" 2>/dev/null && pwd) || { echo "e2e: no build dir ${1:-build}"; echo "e2e: 0 passed, 1 failed"; exit 1; }
cd "$here"

fail() {
    echo "e2e: $*"
    cleanup
    echo "e2e: 0 passed, 1 failed"
    exit 1
}

for b in llmgate mockllm; do
    [ -x "$build/$b" ] || fail "missing $build/$b (build it first)"
done
command -v node >/dev/null || fail "node not found"

# --- the client: npm ci when node_modules is missing or does not match package-lock.json ------
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.llmgate-lock.sha256 ] || [ "$(cat node_modules/.llmgate-lock.sha256)" != "$lock_sum" ]; then
    timeout 300 npm ci --no-audit --no-fund || fail "npm ci failed"
    echo "$lock_sum" > node_modules/.llmgate-lock.sha256
fi

tmp=$(mktemp -d /tmp/llmgate-e2e.XXXXXX)
mock_pid=""
gw_pid=""
status=1

stop_pid() { # pid name: SIGTERM, wait up to 10 s, then SIGKILL; reports an unclean exit
    local pid=$1 i rc
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "e2e: $2 (pid $pid) ignored SIGTERM for 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    rc=$?
    [ "$rc" = 0 ] || echo "e2e: $2 exited with status $rc after SIGTERM"
}

cleaned=""
cleanup() { # idempotent: called before the summary line, and by the EXIT trap
    [ -z "$cleaned" ] || return 0
    cleaned=1
    stop_pid "$gw_pid" llmgate
    stop_pid "$mock_pid" mockllm
    if [ "$status" != 0 ]; then
        for f in "$tmp"/*.log; do
            [ -f "$f" ] || continue
            echo "----- last 50 lines of $f -----"
            tail -n 50 "$f"
        done
        echo "e2e: logs kept in $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# --- mock engine --------------------------------------------------------------------------------
"$build/mockllm" --listen 127.0.0.1:0 --ttft-ms 0 --itl-ms 5 --tokens 8 >"$tmp/mockllm.log" 2>&1 &
mock_pid=$!
mock_addr=""
for _ in $(seq 1 100); do
    mock_addr=$(sed -n 's/.*mockllm listening on \([0-9.]*:[0-9]*\).*/\1/p' "$tmp/mockllm.log" | head -n1)
    [ -n "$mock_addr" ] && break
    kill -0 "$mock_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$mock_addr" ] || fail "mockllm did not start (log: $tmp/mockllm.log)"

# --- gateway ------------------------------------------------------------------------------------
port=$(free_port)
key="sk-e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
slot_key="sk-e2e-slot-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$tmp/llmgate.ini" <<EOF
[server]
listen = 127.0.0.1:$port
max_body_bytes = 10485760

[timeouts]
connect_ms = 5000
request_s = 60

[limits]
max_inflight = 100
queue_capacity = 1024
queue_timeout_ms = 30000

[keys]
e2e = $key
slot = $slot_key

[key.slot]
max_concurrency = 1

[backend.mock]
url = http://$mock_addr
models = mock-model, other-model
max_concurrency = 64

[backend.narrow]
url = http://$mock_addr
models = narrow-model
max_concurrency = 2
EOF
"$build/llmgate" --config "$tmp/llmgate.ini" >"$tmp/llmgate.log" 2>&1 &
gw_pid=$!
ready=""
for _ in $(seq 1 100); do
    if [ "$(curl -s --max-time 1 "http://127.0.0.1:$port/healthz" 2>/dev/null)" = "OK" ]; then
        ready=1
        break
    fi
    kill -0 "$gw_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$ready" ] || fail "llmgate did not become healthy (log: $tmp/llmgate.log)"

# --- tests --------------------------------------------------------------------------------------
LLMGATE_E2E_URL="http://127.0.0.1:$port" LLMGATE_E2E_KEY="$key" LLMGATE_E2E_MOCK_URL="http://$mock_addr" \
    LLMGATE_E2E_SLOT_KEY="$slot_key" \
    timeout 180 node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tmp/tap.txt" openai.test.mjs
rc=$?

passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tmp/tap.txt" | tail -n1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tmp/tap.txt" | tail -n1)
cancelled=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$tmp/tap.txt" | tail -n1)
passed=${passed:-0}
failed=$(( ${failed:-0} + ${cancelled:-0} ))
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
    failed=1 # node itself failed (timeout, crash): count it
fi

# The gateway must still be alive and must shut down cleanly.
kill -0 "$gw_pid" 2>/dev/null || { echo "e2e: llmgate died during the tests"; failed=$((failed + 1)); }
kill -TERM "$gw_pid" 2>/dev/null
gw_rc=""
for _ in $(seq 1 100); do
    kill -0 "$gw_pid" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$gw_pid" 2>/dev/null; then
    wait "$gw_pid"
    gw_rc=$?
    gw_pid=""
    if [ "$gw_rc" != 0 ]; then
        echo "e2e: llmgate exited with status $gw_rc after SIGTERM (expected 0)"
        failed=$((failed + 1))
    fi
else
    echo "e2e: llmgate still running 10 s after SIGTERM"
    failed=$((failed + 1))
fi

[ "$failed" = 0 ] && status=0
cleanup
echo "e2e: $passed passed, $failed failed"
exit $status
