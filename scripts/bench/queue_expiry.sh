#!/usr/bin/env bash
# A long admission queue expiring at once beside running streams: what it costs the streams.
#
#   scripts/bench/queue_expiry.sh [--short] [--waiters W] [--streams S] [--runs R]
#                                 [--queue-timeout-ms MS]
#
# One gateway, two mock engines on loopback: `mock-model` (TTFT 50 ms, a token every 20 ms,
# room for every stream) and `slow-model` on an engine that never answers, max_concurrency 1.
# One request holds slow-model's only slot; then, per run:
#   alone  S streams (100) of mock-model, nothing queued;
#   queue  W requests (20,000) for slow-model are queued (polled on /metrics until all wait,
#          at most 60 s), then the S streams start; the waiters all time out together
#          (queue_timeout_ms, 8000) while the streams run (they last the queue timeout + 3 s).
# W is capped by the open-file limit (each of the gateway and the load generator holds W
# sockets; an unprivileged shell cannot pass its hard limit, 20,000 on the test machines: W is
# then 19,000 and the script says so).
# Runs alternate alone / queue R times (1; --short: W 5,000). It prints the streams' inter-token
# gap p50/p99/max and stalls per run, the waiters' answers (503 expected), and the delta of the
# gap p99 queue - alone (median over runs); the target is <= 1 ms. Then the same without the
# gateway (streams straight to the engine, W clients waiting on the silent engine and giving up
# at the queue timeout): the machine's own floor, and the gateway's share above it; and W
# clients answered 503 together by an engine (mockllm --fail-after-ms, 2 threads) after the
# queue timeout: the floor of what the gateway does (W answers written, read and closed at
# once on the same cores), and the gateway's share above that.
# Exit: 0 ok (delta within target); 1 a stream failed, waiters were not all refused with 503
# or the delta is over the target; 2 llmgate unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

WAITERS=20000
STREAMS=100
RUNS=1
QTIMEOUT=8000
ITL_MS=20
while (($#)); do
    case $1 in
    --short) WAITERS=5000 ;;
    --waiters) WAITERS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --queue-timeout-ms) QTIMEOUT=$2; shift ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init queue_expiry
TOKENS=$(((QTIMEOUT + 3000) / ITL_MS))
fd_max=$(ulimit -n)
if [[ $fd_max != unlimited ]] && ((WAITERS > fd_max - 2 * STREAMS - 800)); then
    log "open-file limit $fd_max: $WAITERS waiters capped to $((fd_max - 2 * STREAMS - 800))"
    WAITERS=$((fd_max - 2 * STREAMS - 800))
fi
MOCK_PORT=$(free_port)
HANG_PORT=$(free_port)
FAIL_PORT=$(free_port)
GW_PORT=$(free_port)
start_mock mock "$MOCK_PORT" --ttft-ms 50 --itl-ms "$ITL_MS" --tokens "$TOKENS"
start_mock hang "$HANG_PORT" --hang
# the floor of answering them: an engine that answers every request 503 after the queue timeout
start_mock fail "$FAIL_PORT" --threads 2 --fail-status 503 --fail-after-ms "$QTIMEOUT"
conns=$((WAITERS + STREAMS + 200))
start_llmgate llmgate "$GW_PORT" "$MOCK_PORT" \
    server.max_connections=$conns limits.max_inflight=20000 \
    limits.queue_capacity=$((WAITERS + 100)) limits.pool_queue_capacity=0 \
    limits.queue_timeout_ms="$QTIMEOUT" health.interval_ms=0 timeouts.request_s=600 \
    backend.slow.url=http://127.0.0.1:$HANG_PORT backend.slow.models=slow-model \
    backend.slow.max_concurrency=1 || exit 2
BASE=http://127.0.0.1:$GW_PORT

queued() {
    local v
    v=$(curl -s --noproxy '*' -m 2 "$BASE/metrics" | awk '$1 == "llmgate_queued" {print $2; exit}')
    echo "${v:-0}"
}

# the request that holds slow-model's slot for the whole run
spawn blocker curl -s --noproxy '*' -m 3600 -o /dev/null "$BASE$CHAT" \
    -H 'Content-Type: application/json' \
    -d '{"model":"slow-model","messages":[{"role":"user","content":"hold"}]}'
for ((i = 0; i < 50; i++)); do
    [[ $(curl -s --noproxy '*' -m 2 "$BASE/metrics" |
        awk '$1 == "llmgate_inflight" {print $2; exit}') -ge 1 ]] 2>/dev/null && break
    sleep 0.1
done

"$TTFTBENCH" --url "$BASE$CHAT" --concurrency 8 --max-tokens 4 --json >/dev/null 2>&1 # warm-up

streams() { # prints ttftbench's JSON line for S streams
    "$TTFTBENCH" --url "$BASE$CHAT" --concurrency "$STREAMS" --requests "$STREAMS" \
        --max-tokens "$TOKENS" --expect-gap-ms "$ITL_MS" --expect-events $((TOKENS + 2)) \
        --timeout 60 --max-time 120 --allow-fail --json 2>>"$WORK/ttftbench.err"
}

rc=0
row() { printf '%-5s %-6s | %7s | %7s | %7s | %7s | %6s | %s\n' "$@"; }
echo
echo "queue expiry: $STREAMS streams ($TOKENS tokens, ${ITL_MS} ms apart) beside $WAITERS" \
    "waiters expiring after ${QTIMEOUT} ms; times in ms; $(nproc) cores; $LLMGATE"
row run load Streams "Gap P50" "Gap P99" "Gap max" Stalls "waiters"
row --- ---- ------- ------- ------- ------- ------ -------
deltas=()
for ((run = 1; run <= RUNS; run++)); do
    declare -A p99=()
    for load in alone queue; do
        wdesc=-
        wpid=
        if [[ $load == queue ]]; then
            "$TTFTBENCH" --url "$BASE$CHAT" --model slow-model --concurrency "$WAITERS" \
                --requests "$WAITERS" --max-tokens 4 --timeout $((QTIMEOUT / 1000 + 60)) \
                --connect-timeout 30 --max-time 180 --allow-fail --json \
                >"$WORK/waiters.$run.json" 2>>"$WORK/waiters.err" &
            wpid=$!
            t0=$SECONDS
            peak=0
            while ((peak < WAITERS && SECONDS - t0 < 60)); do
                n=$(queued)
                ((n > peak)) && peak=$n
                sleep 0.05
            done
            wdesc="queued $peak after $((SECONDS - t0)) s"
        fi
        out=$(streams)
        if [[ -n $wpid ]]; then
            wait "$wpid"
            w=$(jf '"%d ok, %d failed, status %s" % (j["ok"], j["failed"],
                j.get("status", {}))' "$WORK/waiters.$run.json" 2>/dev/null)
            wdesc="$wdesc; $w"
            nfail=$(jf 'j["failed"]' "$WORK/waiters.$run.json" 2>/dev/null || echo 0)
            ((nfail == WAITERS)) || rc=1
        fi
        if [[ $out != "{"* ]]; then
            row "$run" "$load" failed - - - - "$wdesc"
            rc=1
            continue
        fi
        echo "$run $load $out" >>"$WORK/results.txt"
        read -r ok failed p50 q99 mx stalls < <(jf '"%d %d %s %s %s %d" % (j["ok"], j["failed"],
            ms(j["gap_us"]["p50"]), ms(j["gap_us"]["p99"]), ms(j["gap_us"]["max"]),
            j["stalls"])' <<<"$out")
        p99[$load]=$(jf 'j["gap_us"]["p99"]' <<<"$out")
        ((failed > 0)) && rc=1
        row "$run" "$load" "$ok/$STREAMS" "$p50" "$q99" "$mx" "$stalls" "$wdesc"
    done
    [[ -n ${p99[alone]:-} && -n ${p99[queue]:-} ]] && deltas+=($((p99[queue] - p99[alone])))
    unset p99
done
# The machine's own floor, same run: the same streams straight to the engine, alone and beside
# W clients waiting on the engine that never answers and giving up together at the queue
# timeout (the load generator's and the kernel's share of what the streams see, no gateway).
DSTREAMS() {
    "$TTFTBENCH" --url "http://127.0.0.1:$MOCK_PORT$CHAT" --concurrency "$STREAMS" \
        --requests "$STREAMS" --max-tokens "$TOKENS" --expect-gap-ms "$ITL_MS" \
        --expect-events $((TOKENS + 2)) --timeout 60 --max-time 120 --allow-fail --json \
        2>>"$WORK/ttftbench.err"
}
declare -A direct=()
for load in alone queue answer; do
    wdesc=-
    wpid=
    if [[ $load != alone ]]; then
        port=$HANG_PORT timeout=$(((QTIMEOUT + 999) / 1000))
        # queue: clients giving up on a silent engine; answer: an engine answering them all
        # 503 at once after the queue timeout (what the gateway does, without the gateway)
        [[ $load == answer ]] && port=$FAIL_PORT timeout=$((QTIMEOUT / 1000 + 60))
        "$TTFTBENCH" --url "http://127.0.0.1:$port$CHAT" --concurrency "$WAITERS" \
            --requests "$WAITERS" --max-tokens 4 --timeout "$timeout" \
            --connect-timeout 30 --max-time 180 --allow-fail --json >"$WORK/direct.$load.json" \
            2>>"$WORK/waiters.err" &
        wpid=$!
        t0=$SECONDS
        peak=0
        while ((peak < WAITERS * 99 / 100 && SECONDS - t0 < 60)); do
            n=$(ss -tnH state established "( dport = :$port )" 2>/dev/null | wc -l)
            ((n > peak)) && peak=$n
            sleep 0.05
        done
        wdesc="waiting $peak after $((SECONDS - t0)) s"
    fi
    out=$(DSTREAMS)
    if [[ -n $wpid ]]; then
        wait "$wpid"
        [[ $load == answer ]] && wdesc="$wdesc; $(jf '"%d answered, status %s" % (j["failed"],
            j.get("status", {}))' "$WORK/direct.$load.json" 2>/dev/null)"
    fi
    if [[ $out != "{"* ]]; then
        row direct "$load" failed - - - - "$wdesc"
        continue
    fi
    read -r ok p50 q99 mx stalls < <(jf '"%d %s %s %s %d" % (j["ok"], ms(j["gap_us"]["p50"]),
        ms(j["gap_us"]["p99"]), ms(j["gap_us"]["max"]), j["stalls"])' <<<"$out")
    direct[$load]=$(jf 'j["gap_us"]["p99"]' <<<"$out")
    row direct "$load" "$ok/$STREAMS" "$p50" "$q99" "$mx" "$stalls" "$wdesc"
done
floor= afloor=
[[ -n ${direct[alone]:-} && -n ${direct[queue]:-} ]] && floor=$((direct[queue] - direct[alone]))
[[ -n ${direct[alone]:-} && -n ${direct[answer]:-} ]] && afloor=$((direct[answer] - direct[alone]))
if ((${#deltas[@]} > 0)); then
    med=$(printf '%s\n' "${deltas[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    verdict="✓"
    ((med > 1000)) && verdict="✗" && rc=1
    printf 'gap p99 queue - alone: %s us (median of %d run(s)); target <= 1000 us %s\n' \
        "$med" "${#deltas[@]}" "$verdict"
    [[ -n $floor ]] && printf 'the machine without the gateway (direct, same run): %s us; the gateway'"'"'s own share: %s us\n' \
        "$floor" "$((med - floor))"
    [[ -n $afloor ]] && printf 'an engine answering the waiters 503 together, without the gateway: %s us; the gateway'"'"'s share above it: %s us\n' \
        "$afloor" "$((med - afloor))"
fi
exit $rc
