#!/usr/bin/env bash
# The same load, interleaved in one run, against (a) mockllm directly, (b) nginx in front of it
# (proxy_pass, upstream keepalive, proxy_buffering off, HTTP/1.1), (c) llmgate in front of it.
# Each run measures, for every target in turn (order rotated from run to run):
#   - non-stream throughput at concurrency 50 (wrk, keep-alive)
#   - non-stream latency at concurrency 1 (ttftbench --no-stream, microseconds)
#   - streaming, 100 concurrent streams shaped like an engine (TTFT 50 ms, 20 ms/token,
#     64 tokens): TTFT p50/p99, gap p99, frames in/out, stalls
# Reports medians over runs, ratios llmgate/direct and llmgate/nginx, and added latency.
# Refuses to report (exit 3) when a headline figure's min-max spread over the runs is over
# --noise-max of its median.
#
#   scripts/bench/compare.sh [--short] [--runs N] [--noise-max F] [--force]
# Exit: 0 reported; 1 failures; 2 llmgate unavailable (direct vs nginx reported); 3 too noisy.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

RUNS=5
TPUT_S=5
LAT1_N=3000
STREAMS=200
NOISE_MAX=${NOISE_MAX:-0.30}
FORCE=""
while (($#)); do
    case $1 in
    --short) RUNS=3; TPUT_S=2; LAT1_N=1000; STREAMS=100 ;;
    --runs) RUNS=$2; shift ;;
    --noise-max) NOISE_MAX=$2; shift ;;
    --force) FORCE=--force ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init compare
BODY='{"model":"mock-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":false}'
wrk_lua "$WORK/post.lua" "$BODY"
SHAPE='{"ttft_ms":50,"itl_ms":20,"tokens":64}'
setup_targets direct,nginx,llmgate --ttft-ms 0 --itl-ms 0 --tokens 16
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
SAMPLES=$WORK/samples.jsonl
: >"$SAMPLES"

sample() { # run target metric value
    printf '{"run":%d,"target":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" "$4" >>"$SAMPLES"
}

measure() { # run target
    local r=$1 t=$2 url=${TARGET_URL[$2]}$CHAT out
    out=$(wrk_json "$url" 50 "$TPUT_S" "$WORK/post.lua")
    echo "run $r $t tput $out" >>"$WORK/raw.txt"
    if [[ $out == "{"* ]]; then
        read -r rps p50 p99 bad < <(jf '"%f %d %d %d" % (j["rps"], j["p50_us"], j["p99_us"],
            j["non2xx"]+j["connect_err"]+j["read_err"]+j["write_err"]+j["timeout_err"])' <<<"$out")
        sample "$r" "$t" tput_rps "$rps"
        sample "$r" "$t" tput_p50_us "$p50"
        sample "$r" "$t" tput_p99_us "$p99"
        sample "$r" "$t" failed "$bad"
    else
        sample "$r" "$t" failed 1
    fi

    out=$("$TTFTBENCH" --url "$url" --no-stream --concurrency 1 --requests "$LAT1_N" \
        --warmup 50 --max-time 120 --allow-fail --json 2>>"$WORK/ttftbench.err")
    echo "run $r $t lat1 $out" >>"$WORK/raw.txt"
    if [[ $out == "{"* ]]; then
        read -r p50 p90 p99 rps bad < <(jf '"%d %d %d %f %d" % (j["latency_us"]["p50"],
            j["latency_us"]["p90"], j["latency_us"]["p99"], j["rps"], j["failed"])' <<<"$out")
        sample "$r" "$t" lat1_p50_us "$p50"
        sample "$r" "$t" lat1_p90_us "$p90"
        sample "$r" "$t" lat1_p99_us "$p99"
        sample "$r" "$t" lat1_rps "$rps"
        sample "$r" "$t" failed "$bad"
    else
        sample "$r" "$t" failed 1
    fi

    out=$("$TTFTBENCH" --url "$url" --concurrency 100 --requests "$STREAMS" --max-tokens 64 \
        --mock "$SHAPE" --expect-gap-ms 20 --expect-events 66 --max-time 120 --allow-fail \
        --json 2>>"$WORK/ttftbench.err")
    echo "run $r $t stream $out" >>"$WORK/raw.txt"
    if [[ $out == "{"* ]]; then
        read -r p50 p99 gap e2e fin fout stalls bad < <(jf '"%d %d %d %d %d %d %d %d" % (
            j["ttft_us"]["p50"], j["ttft_us"]["p99"], j["gap_us"]["p99"], j["e2e_us"]["p99"],
            j["events_in"], j["events_expected"], j["stalls"], j["failed"])' <<<"$out")
        sample "$r" "$t" st_ttft_p50_us "$p50"
        sample "$r" "$t" st_ttft_p99_us "$p99"
        sample "$r" "$t" st_gap_p99_us "$gap"
        sample "$r" "$t" st_e2e_p99_us "$e2e"
        sample "$r" "$t" st_frames_in "$fin"
        sample "$r" "$t" st_frames_out "$fout"
        sample "$r" "$t" st_stalls "$stalls"
        sample "$r" "$t" failed "$bad"
    else
        sample "$r" "$t" failed 1
    fi
}

# Warm-up: connections, caches, page faults; not recorded.
for t in "${TARGETS[@]}"; do
    wrk_json "${TARGET_URL[$t]}$CHAT" 50 1 "$WORK/post.lua" >/dev/null
    "$TTFTBENCH" --url "${TARGET_URL[$t]}$CHAT" --concurrency 100 --max-tokens 64 \
        --mock "$SHAPE" --json >/dev/null 2>&1
done

n=${#TARGETS[@]}
for ((r = 1; r <= RUNS; r++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${TARGETS[$(((i + r - 1) % n))]}"); done
    log "run $r/$RUNS: ${order[*]}"
    for t in "${order[@]}"; do measure "$r" "$t"; done
done

echo
echo "compare: $RUNS interleaved runs, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC');" \
    "wrk ${TPUT_S}s at c=50; ttftbench c=1 x $LAT1_N; $STREAMS streams at c=100"
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
target_list=$(IFS=,; echo "${TARGETS[*]}")
python3 "$BENCH_DIR/compare_report.py" "$SAMPLES" "$target_list" "$NOISE_MAX" $FORCE
rc=$?
if ((${#MISSING[@]} > 0)); then
    echo "llmgate: not measured (unavailable)"
    ((rc == 0)) && rc=2
fi
exit $rc
