#!/usr/bin/env bash
# Runs every benchmark and prints their tables, then a summary.
#   scripts/bench/all.sh [--short]      (--short: a few minutes on 2 cores)
# Outputs are kept in $BENCH_OUT (default /tmp/llmgate-bench-results.<date>).
# Exit: 0 all ok; 1 something failed; 3 compare refused (too noisy); 2 llmgate (or valgrind,
# strace for cost.sh) unavailable.
set -uo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
TTFTBENCH=${TTFTBENCH:-${BUILD:-$DIR/../../build}/ttftbench}
SHORT=()
case ${1:-} in
--short) SHORT=(--short) ;;
"") ;;
-h | --help) sed -n '2,5p' "$0"; exit 0 ;;
*) echo "usage: $0 [--short]" >&2; exit 1 ;;
esac
OUT=${BENCH_OUT:-/tmp/llmgate-bench-results.$(date -u +%Y%m%d-%H%M%S)}
export BENCH_OUT=$OUT # backpressure.sh keeps its tables and figures in $BENCH_OUT/backpressure
mkdir -p "$OUT"
echo "llmgate benchmarks ${SHORT[*]}: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
    "$(uname -r); outputs in $OUT"

"$TTFTBENCH" --self-test || exit 1

declare -A MEANING=([0]=ok [1]=FAILED [2]="skipped/partial (llmgate or a tool unavailable)"
    [3]="REFUSED (too noisy)")
SUMMARY=()
worst=0
# name[+extra argument]: scripts/bench/NAME.sh [--short] [extra]
for entry in no_stream_bench stream_bench compare backpressure streams_memory front_storm cost \
    cost+--syscalls; do
    s=${entry%%+*}
    extra=()
    [[ $entry == *+* ]] && extra=("${entry#*+}")
    label="$s${extra[*]:+ ${extra[*]}}"
    echo
    echo "=== $label ==="
    start=$SECONDS
    "$DIR/$s.sh" "${SHORT[@]}" "${extra[@]}" 2>"$OUT/${entry//+/}.log" | tee "$OUT/${entry//+/}.txt"
    rc=${PIPESTATUS[0]}
    SUMMARY+=("$(printf '%-20s exit %d  %-48s %4ds' "$label" "$rc" "${MEANING[$rc]:-FAILED}" \
        $((SECONDS - start)))")
    # Worst first: 1 (failed) > 3 (refused, too noisy) > 2 (llmgate unavailable) > 0.
    case $rc in
    0) ;;
    2) ((worst == 0)) && worst=2 ;;
    3) ((worst != 1)) && worst=3 ;;
    *) worst=1 ;;
    esac
    ((rc != 0 && rc != 2)) && echo "($label: exit $rc; its log: $OUT/${entry//+/}.log)"
done
echo
echo "=== summary ==="
printf '%s\n' "${SUMMARY[@]}"
exit $worst
