#!/usr/bin/env bash
# Backpressure: a burst of K concurrent streaming requests (about 1 s each) at a gateway with a
# small max_inflight and queue_capacity. Reports how many got 200 / 429 / 503 (and anything
# else), their latency, whether Retry-After was present, and whether it is honest:
#   - probe: while a burst holds the gateway full, one client is rejected, waits exactly the
#     Retry-After it was given, and tries again; honest if it then gets a 2xx. It then keeps
#     trying every 250 ms to show when it really would have got in.
#   - crowd: every rejected request of the first burst waits its Retry-After and retries once
#     (all at about the same time, so not all can fit; shown for information).
#   - split: keys capped (max_concurrency 2) and flood at once: 200 / 429 (own limit) / 503.
#   - ttft: per-key TTFT under a flood, on a second gateway with two keys (flood, victim; weight
#     1 each), 2 slots and a queue that holds the flood. The victim sends one stream at a time,
#     alone, then while the flood keeps F streams open (each re-sent when it ends); TTFT p50 /
#     p95 / max per key and the service time (victim alone, end to end). Fair queuing should
#     keep the victim within about one service time of alone while the flood waits its own
#     queue.
#
#   scripts/bench/backpressure.sh [--short] [--burst K] [--inflight N] [--queue Q]
#                                 [--queue-timeout-ms MS] [--url BASE]
#                                 [--flood F] [--ttft-seconds S] [--no-ttft | --ttft-only]
# --url BASE uses an already running gateway (configured by you) instead of starting one (the
# ttft phase needs its own keyed gateway and is then skipped).
# Exit: 0 ok; 1 Retry-After missing or dishonest, or no rejection seen, or the victim's TTFT p95
# under the flood over its p95 alone + 2 service times (or the flood did not queue, or a victim
# request failed); 2 llmgate unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

K=256
INFLIGHT=4
QUEUE=8
QTIMEOUT=3000
BASE=""
TOKENS=48
FLOOD=40          # ttft phase: the flood key's concurrent streams
TTFT_S=20         # ttft phase: seconds the victim runs under the flood
ALONE_N=40        # ttft phase: victim streams alone (the baseline)
TTFT=1            # 0: --no-ttft; 2: --ttft-only
while (($#)); do
    case $1 in
    --short) K=64 TTFT_S=6 ALONE_N=15 ;;
    --burst) K=$2; shift ;;
    --inflight) INFLIGHT=$2; shift ;;
    --queue) QUEUE=$2; shift ;;
    --queue-timeout-ms) QTIMEOUT=$2; shift ;;
    --url) BASE=$2; shift ;;
    --flood) FLOOD=$2; shift ;;
    --ttft-seconds) TTFT_S=$2; shift ;;
    --no-ttft) TTFT=0 ;;
    --ttft-only) TTFT=2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init backpressure

# --- ttft: per-key TTFT under a flood ----------------------------------------------------------
# Its own mock engine and gateway: keys flood and victim (weight 1 each), TT_SLOTS engine slots
# (max_inflight = the backend's max_concurrency), a queue that holds the whole flood, a queue
# timeout far above the flood's wait. Every stream is TT_TOKENS events TT_ITL ms apart after
# TT_TTFT ms at the engine.
TT_SLOTS=2
TT_TOKENS=15
TT_TTFT=50
TT_ITL=10
FLOOD_KEY=sk-bench-flood-0123456789
VICTIM_KEY=sk-bench-victim-0123456789
CAPPED_KEY=sk-bench-capped-0123456789
CAPPED_SLOTS=2 # [key.capped] max_concurrency
ttft_phase() {
    local qcap=$((FLOOD + 24)) mport gport cfg=$WORK/llmgate_ttft.ini turl shape flood_pid i q
    local flood_s=$((TTFT_S + 3))
    shape='{"ttft_ms":'$TT_TTFT',"itl_ms":'$TT_ITL',"tokens":'$TT_TOKENS'}'
    if ! gateway_built; then
        echo "ttft: $LLMGATE missing, nothing measured"
        return 2
    fi
    mport=$(free_port)
    start_mock mock_ttft "$mport" --ttft-ms "$TT_TTFT" --itl-ms "$TT_ITL" --tokens "$TT_TOKENS"
    gport=$(free_port)
    cat >"$cfg" <<INI
[server]
listen = 127.0.0.1:$gport
threads = $GW_THREADS
workers = $GW_WORKERS
max_connections = 4096
[timeouts]
connect_ms = 5000
request_s = 600
[limits]
max_inflight = $TT_SLOTS
queue_capacity = $qcap
queue_timeout_ms = 120000
service_time_prior_ms = $((TT_TTFT + TT_ITL * (TT_TOKENS + 1)))
[keys]
flood = $FLOOD_KEY
victim = $VICTIM_KEY
capped = $CAPPED_KEY
[key.capped]
max_concurrency = $CAPPED_SLOTS
[key.flood]
weight = 1
[key.victim]
weight = 1
[backend.mock]
url = http://127.0.0.1:$mport
models = mock-model
max_concurrency = $TT_SLOTS
INI
    spawn llmgate_ttft "$LLMGATE" --config "$cfg"
    local gw_pid=$SPAWNED
    if ! wait_url "http://127.0.0.1:$gport/healthz" 15; then
        tail -n 20 "$WORK/llmgate_ttft.log" >&2
        echo "ttft: the keyed gateway did not answer /healthz, nothing measured"
        return 2
    fi
    turl=http://127.0.0.1:$gport$CHAT
    streams() { # KEY ttftbench-flags...
        local key=$1
        shift
        "$TTFTBENCH" --url "$turl" --key "$key" --max-tokens "$TT_TOKENS" --mock "$shape" \
            --expect-events $((TT_TOKENS + 2)) --timeout 120 --allow-fail --json "$@"
    }
    # the baseline: the victim alone, one stream at a time
    streams "$VICTIM_KEY" --concurrency 1 --requests "$ALONE_N" --warmup 2 --max-time 60 \
        >"$WORK/ttft_alone.json" 2>>"$WORK/ttftbench.err"
    # the split: at once, the capped key sends 16 streams (its own limit: 429 max_concurrency
    # beyond its slots) and the flood key 2 x FLOOD (the queue holds qcap: beyond it, 429 fair
    # share while another key waits, else 503 queue_full)
    "$TTFTBENCH" --url "$turl" --key "$CAPPED_KEY" --max-tokens "$TT_TOKENS" --mock "$shape" \
        --concurrency 16 --requests 16 --timeout 120 --max-time 120 --allow-fail --json \
        >"$WORK/split_capped.json" 2>>"$WORK/ttftbench.err" &
    local cap_pid=$!
    PIDS+=("$cap_pid")
    "$TTFTBENCH" --url "$turl" --key "$FLOOD_KEY" --max-tokens "$TT_TOKENS" --mock "$shape" \
        --concurrency $((2 * FLOOD)) --requests $((2 * FLOOD)) --timeout 120 --max-time 120 \
        --allow-fail --json >"$WORK/split_flood.json" 2>>"$WORK/ttftbench.err"
    wait "$cap_pid" 2>/dev/null
    # the flood: FLOOD streams open for flood_s seconds, each re-sent when it ends
    streams "$FLOOD_KEY" --concurrency "$FLOOD" --duration "$flood_s" --max-time $((flood_s + 60)) \
        >"$WORK/ttft_flood.json" 2>>"$WORK/ttftbench.err" &
    flood_pid=$!
    PIDS+=("$flood_pid")
    q=0
    for ((i = 0; i < 50; i++)); do # until the flood's queue holds most of it (bounded 5 s)
        q=$(curl -s --noproxy "*" -m 1 -H "Authorization: Bearer $FLOOD_KEY" \
            "http://127.0.0.1:$gport/v1/queue" | jf 'j.get("queued", 0)' 2>/dev/null)
        ((${q:-0} >= FLOOD - TT_SLOTS - 2)) && break
        sleep 0.1
    done
    # the victim under the flood, one stream at a time, ending before the flood stops re-sending
    streams "$VICTIM_KEY" --concurrency 1 --duration "$TTFT_S" --max-time $((TTFT_S + 60)) \
        >"$WORK/ttft_victim.json" 2>>"$WORK/ttftbench.err"
    wait "$flood_pid" 2>/dev/null
    stop_pid "$gw_pid"
    local f
    for f in alone victim flood split_capped split_flood; do
        [[ $f == split_* ]] && { [[ $(tail -n 1 "$WORK/$f.json") == "{"* ]] ||
            die "ttftbench ($f) failed: $(tail -n 3 "$WORK/ttftbench.err")"; continue; }
        [[ $(tail -n 1 "$WORK/ttft_$f.json") == "{"* ]] ||
            die "ttftbench ($f) failed: $(tail -n 3 "$WORK/ttftbench.err")"
    done
    local svc a_fail v_fail fl_fail
    svc=$(jf 'j["e2e_us"]["p50"]' "$WORK/ttft_alone.json")
    row() { # LABEL LOAD FILE
        jf '"%-7s | %-28s | %7d | %6d | %8s | %8s | %8s" % ("'"$1"'", "'"$2"'", j["ok"],
            j["failed"], ms(j["ttft_us"]["p50"], 0), ms(j["ttft_us"]["p95"], 0),
            ms(j["ttft_us"]["max"], 0))' "$3"
    }
    echo
    echo "split: at once, key capped (max_concurrency $CAPPED_SLOTS) 16 streams, key flood" \
        "$((2 * FLOOD)) streams; $TT_SLOTS slots, queue $qcap"
    printf '%-7s | %5s | %5s | %5s | %s\n' Key 2xx 429 503 "Retry-After on refusals"
    printf '%-7s | %5s | %5s | %5s | %s\n' ------- ----- ----- ----- -----------------------
    for f in capped flood; do
        jf '"%-7s | %5d | %5d | %5d | %d of %d (%s..%s s)" % ("'"$f"'",
            sum(v for k, v in j["status"].items() if k.startswith("2")), j["status"].get("429", 0),
            j["status"].get("503", 0), j["retry_after"]["present"], j["retry_after"]["rejected"],
            j["retry_after"]["min_s"], j["retry_after"]["max_s"])' "$WORK/split_$f.json"
    done
    local c429 cra crej
    read -r c429 cra crej < <(jf '"%d %d %d" % (j["status"].get("429", 0),
        j["retry_after"]["present"], j["retry_after"]["rejected"])' "$WORK/split_capped.json")
    echo
    echo "ttft under a flood: $TT_SLOTS engine slots (max_inflight $TT_SLOTS), queue $qcap," \
        "keys flood and victim (weight 1 each); streams of $TT_TOKENS tokens (engine TTFT" \
        "$TT_TTFT ms, $TT_ITL ms apart); $(nproc) cores"
    echo "service time (victim alone, end to end p50): $(jf 'ms(j["e2e_us"]["p50"], 0)' \
        "$WORK/ttft_alone.json") ms; flood queue when the victim started: ${q:-?}"
    printf '%-7s | %-28s | %7s | %6s | %8s | %8s | %8s\n' Key Load "2xx" Failed "TTFT p50" \
        "TTFT p95" "TTFT max"
    printf '%-7s | %-28s | %7s | %6s | %8s | %8s | %8s\n' ------- ---------------------------- \
        ------- ------ -------- -------- --------
    row victim "alone, 1 at a time" "$WORK/ttft_alone.json"
    row victim "under flood, 1 at a time" "$WORK/ttft_victim.json"
    row flood "$FLOOD at a time, ${flood_s} s" "$WORK/ttft_flood.json"
    echo "(ms; TTFT: request sent to the first SSE data: event, through the gateway)"
    local ap95 vp95 fp50 verdict prc=0
    ap95=$(jf 'j["ttft_us"]["p95"]' "$WORK/ttft_alone.json")
    vp95=$(jf 'j["ttft_us"]["p95"]' "$WORK/ttft_victim.json")
    fp50=$(jf 'j["ttft_us"]["p50"]' "$WORK/ttft_flood.json")
    v_fail=$(jf 'j["failed"] + j["incomplete"]' "$WORK/ttft_victim.json")
    a_fail=$(jf 'j["failed"] + j["incomplete"]' "$WORK/ttft_alone.json")
    fl_fail=$(jf 'j["failed"]' "$WORK/ttft_flood.json")
    verdict="✓"
    if ((vp95 > ap95 + 2 * svc)); then
        verdict="✗"
        prc=1
    fi
    python3 -c "s=$svc; print('victim under flood: TTFT p95 / service time = %.2f; p95 over alone p95:' \
' %.2f service times (target <= 2) $verdict' % ($vp95 / s, ($vp95 - $ap95) / s))
print('flood: TTFT p50 / service time = %.1f: it waits behind its own ~%d queued streams'
      ' (in one FIFO queue the victim would wait as long)' % ($fp50 / s, $FLOOD - $TT_SLOTS))"
    if ((fp50 < 3 * svc)); then
        echo "ttft: the flood's TTFT p50 is under 3 service times: it did not queue, no contention measured"
        prc=1
    fi
    if ((v_fail + a_fail > 0)); then
        echo "ttft: $a_fail victim streams alone and $v_fail under the flood failed"
        prc=1
    fi
    if ((c429 < 16 - 2 * CAPPED_SLOTS || cra < crej)); then
        echo "split: the capped key got $c429 429s (expected >= $((16 - 2 * CAPPED_SLOTS))), Retry-After on $cra of $crej"
        prc=1
    fi
    ((fl_fail > 0)) && echo "ttft: $fl_fail flood streams failed ($(jf 'j["status"]' \
        "$WORK/ttft_flood.json"))"
    return $prc
}

if ((TTFT == 2)); then
    [[ -z $BASE ]] || die "--ttft-only starts its own gateway; it does not take --url"
    ttft_phase
    exit $?
fi
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

if ((TTFT == 1)); then
    if [[ -n $STATS ]]; then
        stop_pid "$GW_PID" # the burst's gateway is idle now; the ttft phase starts its own
        ttft_phase
        trc=$?
        ((trc == 1)) && rc=1
        ((trc == 2 && rc == 0)) && rc=2
    else
        echo
        echo "ttft: skipped with --url (needs its own gateway with two keys)"
    fi
fi
exit $rc
