#!/usr/bin/env bash
# Streaming across a concurrency sweep with ttftbench, against mockllm shaped like a real engine
# (TTFT 50 ms, 20 ms between tokens, 64 tokens = 66 SSE events per stream), reached directly,
# through nginx, and through llmgate.
#
#   scripts/bench/stream_bench.sh [--short] [--targets direct,nginx,llmgate]
#                                 [--rounds R] [--conc "1 4 8 16 64 256"]
# Exit: 0 ok; 1 failed streams or lost frames; 2 a requested target was unavailable.
# Stalls are reported, not fatal: on a shared machine the scheduler makes some.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=3
MIN_STREAMS=20
CONCS="1 4 8 16 64 256"
WANT=direct,nginx,llmgate
TTFT_MS=50
ITL_MS=20
TOKENS=64
while (($#)); do
    case $1 in
    --short) ROUNDS=1; MIN_STREAMS=3 ;;
    --targets) WANT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --conc) CONCS=$2; shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init stream
setup_targets "$WANT" --ttft-ms "$TTFT_MS" --itl-ms "$ITL_MS" --tokens "$TOKENS"

rc=0
row() { printf '%-11s | %7s | %8s | %8s | %7s | %6s | %13s\n' "$@"; }
for t in "${TARGETS[@]}"; do
    url=${TARGET_URL[$t]}$CHAT
    "$TTFTBENCH" --url "$url" --concurrency 4 --max-tokens 4 --json >/dev/null 2>&1 # warm-up
    echo
    echo "stream, target $t (mock TTFT ${TTFT_MS} ms, ${ITL_MS} ms/token, $TOKENS tokens;" \
        "times in ms; $(nproc) cores)"
    row Concurrency Streams "TTFT P50" "TTFT P99" "Gap P99" Stalls "Frames in/out"
    row ----------- ------- -------- -------- ------- ------ -------------
    for c in $CONCS; do
        n=$((c * ROUNDS))
        ((n < MIN_STREAMS)) && n=$MIN_STREAMS
        out=$("$TTFTBENCH" --url "$url" --concurrency "$c" --requests "$n" \
            --max-tokens "$TOKENS" --expect-gap-ms "$ITL_MS" --expect-events $((TOKENS + 2)) \
            --timeout 120 --max-time 300 --allow-fail --json 2>>"$WORK/ttftbench.err")
        if [[ $out != "{"* ]]; then
            row "$c" failed - - - - -
            rc=1
            continue
        fi
        echo "$t $c $out" >>"$WORK/results.txt"
        read -r ok failed p50 p99 gap stalls fin fout < <(jf '"%d %d %s %s %s %d %d %d" % (
            j["ok"], j["failed"], ms(j["ttft_us"]["p50"]), ms(j["ttft_us"]["p99"]),
            ms(j["gap_us"]["p99"]), j["stalls"], j["events_in"], j["events_expected"])' <<<"$out")
        streams=$ok
        ((failed > 0)) && streams="$ok+${failed}F"
        row "$c" "$streams" "$p50" "$p99" "$gap" "$stalls" "$fin/$fout"
        ((failed > 0 || fin != fout)) && rc=1
    done
done
echo "(Streams: completed, +nF failed. Stall: a gap over $((2 * ITL_MS)) ms; stalls against"
echo " direct too mean the machine, not the proxy, was late.)"
((${#MISSING[@]} > 0 && rc == 0)) && rc=2
exit $rc
