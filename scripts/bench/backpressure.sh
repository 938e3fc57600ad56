#!/usr/bin/env bash
# Backpressure: a burst of K concurrent streaming requests (about 1 s each) at a gateway with a
# small max_inflight and queue_capacity. Reports how many got 200 / 429 / 503 (and anything
# else), their latency, whether Retry-After was present, and whether it is honest:
#   - probe: while a burst holds the gateway full, one client is rejected, waits exactly the
#     Retry-After it was given, and tries again; honest if it then gets a 2xx. It then keeps
#     trying every 250 ms to show when it really would have got in.
#   - crowd: every rejected request of the first burst waits its Retry-After and retries once
#     (all at about the same time, so not all can fit; shown for information).
#
#   scripts/bench/backpressure.sh [--short] [--burst K] [--inflight N] [--queue Q]
#                                 [--queue-timeout-ms MS] [--url BASE]
# --url BASE uses an already running gateway (configured by you) instead of starting one.
# Exit: 0 ok; 1 Retry-After missing or dishonest, or no rejection seen; 2 llmgate unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

K=256
INFLIGHT=4
QUEUE=8
QTIMEOUT=3000
BASE=""
TOKENS=48
while (($#)); do
    case $1 in
    --short) K=64 ;;
    --burst) K=$2; shift ;;
    --inflight) INFLIGHT=$2; shift ;;
    --queue) QUEUE=$2; shift ;;
    --queue-timeout-ms) QTIMEOUT=$2; shift ;;
    --url) BASE=$2; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init backpressure
SHAPE='{"ttft_ms":50,"itl_ms":20,"tokens":'$TOKENS'}'
STATS=""
if [[ -z $BASE ]]; then
    # shellcheck disable=SC2034 # read by setup_targets
    # the prior for Retry-After before any request ended: what a request here takes (~1 s)
    GW_OVERRIDES=(limits.max_inflight="$INFLIGHT" limits.queue_capacity="$QUEUE"
        limits.queue_timeout_ms="$QTIMEOUT" limits.service_time_prior_ms=1000)
    setup_targets llmgate --ttft-ms 50 --itl-ms 20 --tokens "$TOKENS"
    if ((${#MISSING[@]} > 0)); then
        echo "backpressure: llmgate unavailable, nothing measured"
        exit 2
    fi
    BASE=${TARGET_URL[llmgate]}
    STATS=http://127.0.0.1:$MOCK_PORT/mock/stats
    CONF="max_inflight=$INFLIGHT queue_capacity=$QUEUE queue_timeout_ms=$QTIMEOUT service_time_prior_ms=1000"
else
    CONF="external gateway"
fi
URL=$BASE$CHAT
burst() { # extra ttftbench flags...
    "$TTFTBENCH" --url "$URL" --concurrency "$K" --requests "$K" --max-tokens "$TOKENS" \
        --mock "$SHAPE" --expect-events $((TOKENS + 2)) --timeout 60 --max-time 180 \
        --allow-fail "$@"
}

rc=0
# --- crowd: burst, every rejected request retries once after its Retry-After -------------------
out=$(burst --retry-after --retry-max 30 --json 2>>"$WORK/ttftbench.err")
echo "$out" >"$WORK/burst.json"
[[ $out == "{"* ]] || die "ttftbench failed: $(tail -n 3 "$WORK/ttftbench.err")"
echo
echo "backpressure: burst of $K concurrent streams (~$((50 + 20 * TOKENS)) ms each)," \
    "$CONF; $(nproc) cores"
printf '%-8s | %6s | %9s | %9s | %9s\n' Status Count "P50 (ms)" "P99 (ms)" "Max (ms)"
printf '%-8s | %6s | %9s | %9s | %9s\n' -------- ------ --------- --------- ---------
jf '"\n".join("%-8s | %6d | %9s | %9s | %9s" % (k, v["n"], ms(v["p50"]), ms(v["p99"]),
    ms(v["max"])) for k, v in sorted(j["latency_by_status_us"].items()))' <<<"$out"
jf '"\n".join("%-8s | %6d |" % (k[:8], v) for k, v in j["curl_errors"].items()) or None' \
    <<<"$out" | grep -v '^-$'
read -r n200 n429 n503 rej present ramin ramax att retok < <(jf '"%d %d %d %d %d %d %d %d %d" % (
    sum(v for k, v in j["status"].items() if k.startswith("2")), j["status"].get("429", 0),
    j["status"].get("503", 0), j["retry_after"]["rejected"], j["retry_after"]["present"],
    j["retry_after"]["min_s"], j["retry_after"]["max_s"], j["retry"]["attempted"],
    j["retry"]["ok"])' <<<"$out")
echo "200: $n200   429: $n429   503: $n503   (accepted at most: inflight $INFLIGHT + queue $QUEUE)"
if ((rej == 0)); then
    echo "no 429/503 at all: the burst did not overflow the limits"
    rc=1
else
    echo "Retry-After present on $present of $rej rejections (min ${ramin}s, max ${ramax}s)"
    ((present < rej)) && rc=1
    echo "crowd: $att rejected requests waited their Retry-After and retried once;" \
        "$retok got 2xx ($(jf 'j["retry"]["status"]' <<<"$out"))"
fi

# --- probe: one client, honest Retry-After? ----------------------------------------------------
burst --json >"$WORK/burst2.json" 2>>"$WORK/ttftbench.err" &
BURST_PID=$!
PIDS+=("$BURST_PID")
for ((i = 0; i < 50; i++)); do # until the engine sees max_inflight streams (bounded 5 s)
    if [[ -n $STATS ]]; then
        a=$(curl -s --noproxy "*" -m 1 "$STATS" | jf 'j.get("active", 0)' 2>/dev/null)
        ((${a:-0} >= INFLIGHT)) && break
    elif ((i >= 3)); then
        break
    fi
    sleep 0.1
done
PROBE_BODY='{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":false,"mock":{"ttft_ms":0,"itl_ms":0,"tokens":1}}'
probe() { # prints "status retry-after-seconds"
    curl -s --noproxy "*" -o /dev/null -D - -m 60 -H 'Content-Type: application/json' -d "$PROBE_BODY" "$URL" |
        awk 'NR==1 {s=$2} tolower($1)=="retry-after:" {gsub("\r",""); r=$2}
             END {print (s==""?0:s), (r==""?"-":r)}'
}
read -r s1 ra < <(probe)
t0=$(date +%s.%N)
if [[ $s1 == 2* ]]; then
    echo "probe: got $s1 while the burst was running (not rejected; limits not reached)"
    rc=1
elif [[ $ra == - || ! $ra =~ ^[0-9]+$ ]]; then
    echo "probe: rejected with $s1 and no usable Retry-After ('$ra')"
    rc=1
elif ((ra > 60)); then
    echo "probe: rejected with $s1, Retry-After ${ra}s: too long to check here"
    rc=1
else
    sleep "$ra"
    read -r s2 _ < <(probe)
    if [[ $s2 == 2* ]]; then
        verdict="honest"
    else
        verdict="NOT honest"
        rc=1
    fi
    got_in="-"
    if [[ $s2 == 2* ]]; then
        got_in=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
    else
        for ((i = 0; i < 240; i++)); do # every 250 ms, at most 60 s
            sleep 0.25
            read -r s3 _ < <(probe)
            if [[ $s3 == 2* ]]; then
                got_in=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
                break
            fi
        done
    fi
    echo "probe: rejected with $s1, Retry-After ${ra}s; after waiting ${ra}s got $s2:" \
        "$verdict (first 2xx after ${got_in}s)"
fi
wait "$BURST_PID" 2>/dev/null
exit $rc
