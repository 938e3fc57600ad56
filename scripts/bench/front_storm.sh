#!/usr/bin/env bash
# The front door in a storm: C streaming clients open at once (each sends its whole request at
# once) against a gateway whose connection table holds S (default: 10,000 against the default
# max_connections 8,192; every accepted stream lasts ~15 s, so the table is full while the rest
# arrive). What a user wants: every client gets a readable answer — 200 for S of them, 503
# `overloaded` with Retry-After for the rest — none a 408 (they were not slow: the gateway
# was busy reading them) and none a reset or close without a reply.
#
#   scripts/bench/front_storm.sh [--short] [--clients C] [--slots S] [--old BIN]
# --short: 2,500 clients, 2,000 slots. --old BIN: the same storm against another llmgate binary
# first (before/after in one run). Exit: 0 all answered as above; 1 otherwise; 2 unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

C=10000
S=8192
OLD=
while (($#)); do
    case $1 in
    --short) C=2500 S=2000 ;;
    --clients) C=$2; shift ;;
    --slots) S=$2; shift ;;
    --old) OLD=$2; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done
((C > S)) || die "--clients must exceed --slots"

lib_init front_storm
gateway_built || exit 2
MOCK_PORT=$(free_port)
start_mock mock "$MOCK_PORT" --ttft-ms 0 --itl-ms 0 --tokens 4
SHAPE='{"ttft_ms":50,"itl_ms":250,"tokens":60}'
rc=0
ROWS=()

# storm NAME BIN: one storm against a fresh gateway built as BIN; appends a row to ROWS.
storm() {
    local name=$1 bin=$2 port out
    port=$(free_port)
    LLMGATE=$bin start_llmgate "$name" "$port" "$MOCK_PORT" "server.max_connections=$S" \
        "server.max_connections_per_ip=0" "server.client_header_timeout_s=60" || return 2
    out=$WORK/$name.storm.json
    "$TTFTBENCH" --url "http://127.0.0.1:$port/v1/chat/completions" --concurrency "$C" \
        --requests "$C" --rate $((C * 20)) --max-tokens 60 --mock "$SHAPE" --timeout 120 \
        --connect-timeout 60 --max-time 200 --allow-fail --json >"$out" 2>"$WORK/$name.storm.log"
    local row
    row=$("$PYTHON" - "$out" "$name" "$S" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
st = {int(k): v for k, v in j.get("status", {}).items()}
ok, s408, s503 = st.get(200, 0), st.get(408, 0), st.get(503, 0)
other = sum(v for k, v in st.items() if k not in (200, 408, 503))
total = j.get("requests", 0)
noreply = total - sum(st.values())
errs = ";".join("%s x%d" % (k, v) for k, v in j.get("curl_errors", {}).items()) or "-"
print("%s|%d|%d|%d|%d|%d|%d|%d|%s" % (sys.argv[2], total, ok, s408, s503, other, noreply,
                                      j.get("incomplete", 0), errs))
EOF
)
    ROWS+=("$row")
    stop_pid "$GW_PID"
}

[[ -n $OLD ]] && { storm before "$OLD" || rc=2; }
storm after "$LLMGATE" || rc=2

printf '\n%d streaming clients at once, max_connections %d\n\n' "$C" "$S"
printf '| build | clients | 200 | 408 | 503 | other | no reply | 200 cut short | transport errors |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for r in "${ROWS[@]}"; do
    IFS='|' read -r name total ok s408 s503 other none cut errs <<<"$r"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$total" "$ok" "$s408" \
        "$s503" "$other" "$none" "$cut" "$errs"
done
last=${ROWS[-1]:-}
if [[ -n $last ]]; then
    IFS='|' read -r name total ok s408 s503 other none cut errs <<<"$last"
    if ((s408 != 0 || none != 0 || other != 0 || cut != 0 || ok + s503 != C)); then
        log "not every client got a readable 200 or 503"
        rc=1
    fi
fi
exit "$rc"
