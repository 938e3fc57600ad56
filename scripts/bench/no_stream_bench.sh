#!/usr/bin/env bash
# Non-stream throughput and latency across a concurrency sweep, with wrk (and oha when
# installed): a small chat body, keep-alive, against each target (mockllm direct, nginx in front
# of it, llmgate in front of it). The mock answers at once (no TTFT, no token spacing), so the
# figures are the cost of the HTTP path.
#
#   scripts/bench/no_stream_bench.sh [--short] [--targets direct,nginx,llmgate]
#                                    [--duration S] [--conc "1 4 8 16 64 256"]
# Exit: 0 ok; 1 errors or non-2xx seen; 2 a requested target was unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=5
CONCS="1 4 8 16 64 256"
WANT=direct,nginx,llmgate
while (($#)); do
    case $1 in
    --short) DURATION=2 ;;
    --targets) WANT=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --conc) CONCS=$2; shift ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init no_stream
BODY='{"model":"mock-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":false}'
wrk_lua "$WORK/post.lua" "$BODY"
setup_targets "$WANT" --ttft-ms 0 --itl-ms 0 --tokens 16

rc=0
row() { printf '%-11s | %9s | %8s | %8s | %8s | %8s | %7s\n' "$@"; }
for t in "${TARGETS[@]}"; do
    url=${TARGET_URL[$t]}$CHAT
    wrk_json "$url" 4 1 "$WORK/post.lua" >/dev/null # warm-up
    for tool in wrk oha; do
        [[ $tool == oha ]] && ! command -v oha >/dev/null && continue
        echo
        echo "non-stream, target $t ($tool, keep-alive, ${DURATION}s per step, $(nproc) cores)"
        row Concurrency RPS "Avg(ms)" P50 P95 P99 non-2xx
        row ----------- --------- -------- -------- -------- -------- -------
        for c in $CONCS; do
            if [[ $tool == wrk ]]; then
                out=$(wrk_json "$url" "$c" "$DURATION" "$WORK/post.lua")
            else
                out=$(oha_json "$url" "$c" "$DURATION" "$BODY")
            fi
            if [[ -z $out ]]; then
                row "$c" failed - - - - -
                rc=1
                continue
            fi
            echo "$t $tool $c $out" >>"$WORK/results.txt"
            read -r rps avg p50 p95 p99 bad < <(jf '"%.0f %s %s %s %s %d" % (j["rps"],
                ms(j["avg_us"],3), ms(j["p50_us"],3), ms(j["p95_us"],3), ms(j["p99_us"],3),
                j["non2xx"] + j.get("connect_err",0) + j.get("read_err",0)
                + j.get("write_err",0) + j.get("timeout_err",0) + j.get("errors",0))' <<<"$out")
            row "$c" "$rps" "$avg" "$p50" "$p95" "$p99" "$bad"
            ((bad > 0)) && rc=1
        done
    done
done
((${#MISSING[@]} > 0 && rc == 0)) && rc=2
exit $rc
