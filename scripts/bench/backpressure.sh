#!/usr/bin/env bash
# Backpressure: is Retry-After true, and does a crowd that honours it get in? Draws what it
# measured (gnuplot, PNG beside the tables in the results directory).
#   - crowds (crowd.py, one record per request: time sent, refused, told, admitted, ended):
#     every client of a crowd released at once, refused ones retrying when told
#     (retry-after-ms), on gateways of 4 slots (max_inflight = the backend's max_concurrency),
#     queue 4, requests of ~0.44 s:
#       (a) a first crowd of 50 on a fresh gateway (the default service_time_prior_ms),
#       (b) a second crowd of 50 one second later,
#       (c) a crowd of 50 while a hammer (16 loops, twice the gateway's places) ignores
#           Retry-After and re-sends 10 ms after every answer: on one keep-alive connection per
#           loop, then (fresh gateway) on a new connection per request,
#       (d) per-key max_concurrency 429: keys a and b (4 slots each, engine 16) each refuse a
#           crowd of 40 at once; a second crowd of key a one second later.
#     Per crowd: the share of refused clients that got in at the first retry (target >= 90%) and
#     the longest wait told against the time the gateway really took to serve the crowd (first
#     request to last answer; target within 2x).
#   - burst and probe: a burst of K concurrent streams (about 1 s each) at max_inflight 4,
#     queue 8: 200 / 429 / 503 counts, latency, Retry-After on every refusal; one probe refused
#     while a burst holds the gateway full waits exactly its Retry-After and must then get in.
#   - split: keys capped (max_concurrency 2) and flood at once: 200 / 429 (own limit) / 503.
#   - ttft: per-key TTFT under a flood, on a gateway with two keys (flood, victim; weight 1
#     each), 2 slots and a queue that holds the flood. The victim sends one stream at a time,
#     alone, then while the flood keeps F streams open (each re-sent when it ends); TTFT p50 /
#     p95 / max per key and the service time (victim alone, end to end). Fair queuing should
#     keep the victim within about one service time of alone while the flood waits its own
#     queue.
# Figures: admitted_refused.png (requests admitted / refused over time, per crowd experiment),
# told_vs_real.png (the wait each refused client was told against the wait it really had),
# ttft_by_key.png (TTFT per key over time under the flood); records.jsonl, the tables (*.txt),
# the gnuplot scripts and their data beside them.
#
#   scripts/bench/backpressure.sh [--short] [--out DIR] [--burst K] [--inflight N] [--queue Q]
#                                 [--queue-timeout-ms MS] [--url BASE]
#                                 [--flood F] [--ttft-seconds S] [--no-ttft | --ttft-only]
#                                 [--no-crowds | --crowds-only]
# --out DIR: the results directory (default $BENCH_OUT/backpressure when BENCH_OUT is set, else
# /tmp/llmgate-backpressure.DATE); kept. --url BASE uses an already running gateway (configured
# by you) for the burst and probe only (crowds and ttft need gateways of their own: skipped).
# Exit: 0 ok; 1 a gated crowd target missed (all but the hammer on new connections, see the
# README), Retry-After missing or dishonest, no rejection seen, or the victim's TTFT p95 under
# the flood over its p95 alone + 2 service times (or the flood did not queue, or a victim
# request failed); 2 llmgate (or gnuplot) unavailable.
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
ALONE_S=8         # ttft phase: seconds the victim runs alone first (the baseline)
TTFT=1            # 0: --no-ttft; 2: --ttft-only
CROWDS=1          # 0: --no-crowds; 2: --crowds-only
MAX_WAIT=30       # crowds: a client told longer gives up (the bench stays bounded)
OUT=""
while (($#)); do
    case $1 in
    --short) K=64 TTFT_S=6 ALONE_S=3 ;;
    --out) OUT=$2; shift ;;
    --burst) K=$2; shift ;;
    --inflight) INFLIGHT=$2; shift ;;
    --queue) QUEUE=$2; shift ;;
    --queue-timeout-ms) QTIMEOUT=$2; shift ;;
    --url) BASE=$2; shift ;;
    --flood) FLOOD=$2; shift ;;
    --ttft-seconds) TTFT_S=$2; shift ;;
    --no-ttft) TTFT=0 ;;
    --ttft-only) TTFT=2 CROWDS=0 ;;
    --no-crowds) CROWDS=0 ;;
    --crowds-only) CROWDS=2 TTFT=0 ;;
    -h | --help) sed -n '2,43p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init backpressure
if [[ -z $OUT ]]; then
    OUT=${BENCH_OUT:+$BENCH_OUT/backpressure}
    OUT=${OUT:-/tmp/llmgate-backpressure.$(date -u +%Y%m%d-%H%M%S)}
fi
mkdir -p "$OUT" || die "cannot create $OUT"
: >"$OUT/records.jsonl"
exec > >(tee "$OUT/backpressure.txt") # every table also in the results directory
command -v gnuplot >/dev/null || log "gnuplot missing (Debian: gnuplot-nox; make bench-deps): no figures"
CROWD_PY=$BENCH_DIR/crowd.py
REPORT_PY=$BENCH_DIR/backpressure_report.py

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
    local qcap=$((FLOOD + 24)) mport gport cfg=$WORK/llmgate_ttft.ini turl shape
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
    local f
    for f in split_capped split_flood; do
        [[ $(tail -n 1 "$WORK/$f.json") == "{"* ]] ||
            die "ttftbench ($f) failed: $(tail -n 3 "$WORK/ttftbench.err")"
    done
    # one timeline (crowd.py, every stream recorded): the victim alone, one stream at a time
    # (after a warm-up of 0.5 s); the flood from ALONE_S + 0.5 s, FLOOD streams each re-sent when
    # it ends; the victim again from ALONE_S + 2.5 s (the flood queued by then) for TTFT_S s,
    # ending before the flood stops re-sending
    local v0 f0 fend adur
    adur=$(python3 -c "print($ALONE_S - 0.6)")
    v0=$(python3 -c "print($ALONE_S + 2.5)")
    f0=$(python3 -c "print($ALONE_S + 0.5)")
    fend=$(python3 -c "print($TTFT_S + 2.5)")
    python3 "$CROWD_PY" --url "http://127.0.0.1:$gport" --out "$OUT/records.jsonl" --exp ttft \
        --shape "$shape" --deadline $((ALONE_S + TTFT_S + 90)) \
        --streams "warm:1:0:0.5:$VICTIM_KEY" --streams "alone:1:0.6:$adur:$VICTIM_KEY" \
        --streams "flood:$FLOOD:$f0:$fend:$FLOOD_KEY" --streams "victim:1:$v0:$TTFT_S:$VICTIM_KEY" \
        2>>"$WORK/crowd.err" || die "crowd.py (ttft) failed: $(tail -n 3 "$WORK/crowd.err")"
    stop_pid "$gw_pid"
    local tj=$WORK/ttft.json
    python3 "$REPORT_PY" ttft "$OUT" ttft alone victim flood >"$tj" ||
        die "backpressure_report.py ttft failed"
    local svc a_fail v_fail fl_fail
    svc=$(jf 'int(1000 * j["alone"]["e2e_p50"])' "$tj")
    row() { # LABEL LOAD ROLE
        jf '"%-7s | %-28s | %7d | %6d | %8.0f | %8.0f | %8.0f" % ("'"$1"'", "'"$2"'",
            j["'"$3"'"]["ok"], j["'"$3"'"]["failed"], j["'"$3"'"]["p50"], j["'"$3"'"]["p95"],
            j["'"$3"'"]["max"])' "$tj"
    }
    {
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
    } | tee "$OUT/split.txt"
    local c429 cra crej
    read -r c429 cra crej < <(jf '"%d %d %d" % (j["status"].get("429", 0),
        j["retry_after"]["present"], j["retry_after"]["rejected"])' "$WORK/split_capped.json")
    local ap95 vp95 fp50 verdict prc=0
    ap95=$(jf 'int(1000 * j["alone"]["p95"])' "$tj")
    vp95=$(jf 'int(1000 * j["victim"]["p95"])' "$tj")
    fp50=$(jf 'int(1000 * j["flood"]["p50"])' "$tj")
    v_fail=$(jf 'j["victim"]["failed"]' "$tj")
    a_fail=$(jf 'j["alone"]["failed"]' "$tj")
    fl_fail=$(jf 'j["flood"]["failed"]' "$tj")
    verdict="✓"
    if ((vp95 > ap95 + 2 * svc)); then
        verdict="✗"
        prc=1
    fi
    {
        echo
        echo "ttft under a flood: $TT_SLOTS engine slots (max_inflight $TT_SLOTS), queue $qcap," \
            "keys flood and victim (weight 1 each); streams of $TT_TOKENS tokens (engine TTFT" \
            "$TT_TTFT ms, $TT_ITL ms apart); $(nproc) cores"
        echo "service time (victim alone, end to end p50): $((svc / 1000)) ms"
        printf '%-7s | %-28s | %7s | %6s | %8s | %8s | %8s\n' Key Load "2xx" Failed "TTFT p50" \
            "TTFT p95" "TTFT max"
        printf '%-7s | %-28s | %7s | %6s | %8s | %8s | %8s\n' ------- ---------------------------- \
            ------- ------ -------- -------- --------
        row victim "alone, 1 at a time" alone
        row victim "under flood, 1 at a time" victim
        row flood "$FLOOD at a time, ${fend} s" flood
        echo "(ms; TTFT: request sent to the first SSE data: event, through the gateway)"
        python3 -c "s=$svc; print('victim under flood: TTFT p95 / service time = %.2f; p95 over alone p95:' \
' %.2f service times (target <= 2) $verdict' % ($vp95 / s, ($vp95 - $ap95) / s))
print('flood: TTFT p50 / service time = %.1f: it waits behind its own ~%d queued streams'
      ' (in one FIFO queue the victim would wait as long)' % ($fp50 / s, $FLOOD - $TT_SLOTS))"
    } | tee "$OUT/ttft.txt"
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
    ((fl_fail > 0)) && echo "ttft: $fl_fail flood streams failed ($(jf 'j["flood"]["status"]' "$tj"))"
    return $prc
}

# --- crowds: who gets in when told, and how long told against how long it really took --------
# One mock engine; a fresh gateway per experiment (config from start_llmgate in lib.sh plus the
# overrides). Requests of ~0.44 s: engine TTFT 40 ms, 20 tokens 20 ms apart.
CROWD_SHAPE='{"ttft_ms":40,"itl_ms":20,"tokens":20}'
KEY_A=sk-bench-crowd-a-0123456789
KEY_B=sk-bench-crowd-b-0123456789
CROWD_ROWS=(
    "fresh:a:1:(a) first crowd, fresh gateway"
    "fresh:b:1:(b) second crowd, 1 s after the first"
    "hammer_ka:c:1:(c) beside a hammer on keep-alive"
    "hammer_new:c:0:(c) beside a hammer, new conn per request"
    "keys:ka:1:(d) key a, max_concurrency 429"
    "keys:kb:1:(d) key b at the same time"
    "keys:ka2:1:(d) key a, second crowd 1 s after"
)
CROWD_PLOTS=(
    "fresh:(a) and (b): fresh gateway, 4 slots, queue 4; crowd a (50) at 0 s, crowd b (50) at 1 s"
    "hammer_ka:(c) hammer of 16 loops on keep-alive connections from 0 to 3 s; crowd c (50) at 2 s"
    "hammer_new:(c) the same hammer on a new connection per request; crowd c (50) at 2 s"
    "keys:(d) keys a and b, max_concurrency 4 each (engine 16): crowds ka and kb (40 each) at 0 s, ka2 (40) at 1 s"
)
crowd_run() { # EXP gateway-overrides... -- crowd.py arguments...
    local exp=$1 ov=() p
    shift
    while [[ $1 != -- ]]; do
        ov+=("$1")
        shift
    done
    shift
    p=$(free_port)
    start_llmgate "gw_$exp" "$p" "$MOCK_PORT" "${ov[@]}" || return 2
    python3 "$CROWD_PY" --url "http://127.0.0.1:$p" --out "$OUT/records.jsonl" --exp "$exp" \
        --shape "$CROWD_SHAPE" --max-wait "$MAX_WAIT" --deadline 240 "$@" 2>>"$WORK/crowd.err" ||
        die "crowd.py ($exp) failed: $(tail -n 3 "$WORK/crowd.err")"
    stop_pid "$GW_PID"
}
crowd_phase() {
    gateway_built || { echo "crowds: $LLMGATE missing, nothing measured"; return 2; }
    MOCK_PORT=$(free_port)
    start_mock mock_crowds "$MOCK_PORT"
    local small=(limits.max_inflight=4 limits.queue_capacity=4 limits.queue_timeout_ms=60000
        backend.mock.max_concurrency=4)
    crowd_run fresh "${small[@]}" -- --crowd a:50:0 --crowd b:50:1.0 || return 2
    crowd_run hammer_ka "${small[@]}" -- --hammer h:16:ka:0:3 --crowd c:50:2 || return 2
    crowd_run hammer_new "${small[@]}" -- --hammer h:16:new:0:3 --crowd c:50:2 || return 2
    crowd_run keys limits.max_inflight=16 limits.queue_capacity=16 limits.queue_timeout_ms=60000 \
        backend.mock.max_concurrency=16 keys.a=$KEY_A keys.b=$KEY_B key.a.max_concurrency=4 \
        key.b.max_concurrency=4 -- --crowd "ka:40:0:$KEY_A" --crowd "kb:40:0:$KEY_B" \
        --crowd "ka2:40:1.0:$KEY_A" || return 2
    stop_pid "$MOCK_PID"
    echo
    echo "crowds: every client of a crowd at once, refused ones retrying when told" \
        "(retry-after-ms); requests of ~0.44 s; 4 slots, queue 4 (d: 4 slots per key," \
        "engine 16); a wait told over ${MAX_WAIT} s is not waited; $(nproc) cores"
    python3 "$REPORT_PY" crowds "$OUT" "${CROWD_ROWS[@]}"
}

plot_all() {
    command -v gnuplot >/dev/null || { echo "figures: gnuplot missing (gnuplot-nox), none drawn"; return 2; }
    local plots=()
    ((CROWDS > 0)) && plots=("${CROWD_PLOTS[@]}")
    python3 "$REPORT_PY" plot "$OUT" "${plots[@]}" 2>>"$WORK/gnuplot.err" ||
        { echo "figures: gnuplot failed: $(tail -n 3 "$WORK/gnuplot.err")"; return 1; }
    echo
    echo "figures and tables in $OUT:"
    local f
    for f in "$OUT"/*.png "$OUT"/*.txt; do
        [[ -e $f ]] && echo "  ${f##*/}"
    done
    return 0
}

rc=0
merge_rc() { # worst first: 1 > 2 > 0
    (($1 == 1)) && rc=1
    (($1 == 2 && rc == 0)) && rc=2
    return 0
}
if [[ -n $BASE ]] && ((CROWDS == 2 || TTFT == 2)); then
    die "--crowds-only and --ttft-only start their own gateways; they do not take --url"
fi
if ((CROWDS > 0)) && [[ -z $BASE ]]; then
    crowd_phase
    merge_rc $?
elif ((CROWDS > 0)); then
    echo "crowds: skipped with --url (they need gateways of their own)"
    CROWDS=0
fi
if ((TTFT == 2)); then
    ttft_phase
    merge_rc $?
fi
if ((CROWDS == 2 || TTFT == 2)); then
    plot_all
    merge_rc $?
    exit $rc
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

# --- burst: every rejected request retries once after its Retry-After -------------------------
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
# until the engine sees max_inflight streams and the queue is full (bounded 5 s): a probe sent
# before the whole burst has arrived can take a place and is not refused
for ((i = 0; i < 50; i++)); do
    if [[ -n $STATS ]]; then
        a=$(curl -s --noproxy "*" -m 1 "$STATS" | jf 'j.get("active", 0)' 2>/dev/null)
        qd=$(curl -s --noproxy "*" -m 1 "$BASE/v1/queue" | jf 'j.get("queued", 0)' 2>/dev/null)
        ((${a:-0} >= INFLIGHT && ${qd:-0} >= QUEUE)) && break
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
        merge_rc $?
    else
        echo
        echo "ttft: skipped with --url (needs its own gateway with two keys)"
    fi
fi
plot_all
merge_rc $?
exit $rc
