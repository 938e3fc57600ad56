#!/usr/bin/env bash
# Memory per open stream: hold S concurrent slow streams (one token every 2 s) open through a
# proxy and report its resident memory at idle, with S/10 streams, with S streams, after the
# clients went away, and the slope per open stream between S/10 and S. For llmgate (each stream
# costs it two sockets) and, for comparison, nginx. Streams are opened at --ramp per second;
# the clients are stopped (connections closed) after the measurement, which also shows whether
# the proxy cancels the upstream streams (engine's active count back to 0).
#
#   scripts/bench/streams_memory.sh [--short] [--streams S] [--ramp R] [--targets llmgate,nginx]
# Exit: 0 ok; 1 streams failed or upstream not cancelled; 2 llmgate unavailable.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

S=8000
RAMP=1000
WANT=llmgate,nginx
while (($#)); do
    case $1 in
    --short) S=2000 ;;
    --streams) S=$2; shift ;;
    --ramp) RAMP=$2; shift ;;
    --targets) WANT=$2; shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done
((S >= 10)) || die "--streams must be at least 10"

lib_init streams_memory
SHAPE='{"ttft_ms":100,"itl_ms":2000,"tokens":400}'
MOCK_PORT=$(free_port)
start_mock mock "$MOCK_PORT" --ttft-ms 0 --itl-ms 0 --tokens 4
STATS=http://127.0.0.1:$MOCK_PORT/mock/stats
S10=$((S / 10))
rc=0
RESULTS=()

mock_active() { curl -s --noproxy "*" -m 2 "$STATS" | jf 'j.get("active", 0)' 2>/dev/null || echo "?"; }

# open_streams NAME URL N: starts a ttftbench holding N streams; waits (bounded) until all N
# have received their first event. Sets OPEN_PID. Returns 1 on timeout.
open_streams() {
    local name=$1 url=$2 n=$3 i got=0 limit
    spawn "$name" "$TTFTBENCH" --url "$url" --concurrency "$n" --requests "$n" --rate "$RAMP" \
        --max-tokens 400 --mock "$SHAPE" --expect-gap-ms 2000 --timeout 1000 --max-time 1000 \
        --connect-timeout 30 --progress --allow-fail --json
    OPEN_PID=$SPAWNED
    limit=$((n / RAMP + 60))
    for ((i = 0; i < limit * 4; i++)); do
        got=$(grep -o 'streaming=[0-9]*' "$WORK/$name.log" 2>/dev/null | tail -n 1)
        got=${got#streaming=}
        ((${got:-0} >= n)) && return 0
        kill -0 "$OPEN_PID" 2>/dev/null || break
        sleep 0.25
    done
    log "$name: only ${got:-0} of $n streams open"
    return 1
}

measure() { # target-name pid rss-mode base-url
    local t=$1 pid=$2 mode=$3 url=$4$CHAT idle r10 rS after fds slope closed i failed=0 ok=1
    "$TTFTBENCH" --url "$url" --concurrency 10 --requests 50 --max-tokens 4 --json \
        >/dev/null 2>&1 # warm-up
    sleep 1
    idle=$(rss_kb "$pid" "$mode")
    log "$t: idle RSS ${idle} KiB; opening $S10 streams"
    open_streams "$t-a" "$url" "$S10" || ok=0
    sleep 1
    r10=$(rss_kb "$pid" "$mode")
    local pid_a=$OPEN_PID
    log "$t: RSS ${r10} KiB with $S10 streams; opening $((S - S10)) more"
    ((ok)) && { open_streams "$t-b" "$url" $((S - S10)) || ok=0; }
    sleep 1
    rS=$(rss_kb "$pid" "$mode")
    fds=$(fd_count "$pid" "$mode")
    local active_at_s
    active_at_s=$(mock_active)
    log "$t: RSS ${rS} KiB with $S streams (engine active $active_at_s, proxy fds $fds)"
    stop_pid "$OPEN_PID"
    stop_pid "$pid_a"
    for f in "$WORK/$t-a.log" "$WORK/$t-b.log"; do
        [[ -f $f ]] || continue
        failed=$((failed + $(jf 'j["failed"] - j["aborted"]' "$f" 2>/dev/null || echo 1)))
    done
    closed="no"
    for ((i = 0; i < 80; i++)); do # engine's streams cancelled? (bounded 20 s)
        if [[ $(mock_active) == 0 ]]; then
            closed="$(((i + 3) / 4))s"
            break
        fi
        sleep 0.25
    done
    sleep 1
    after=$(rss_kb "$pid" "$mode")
    slope="-"
    ((ok)) && slope=$(python3 -c "print('%.2f' % (($rS - $r10) / ($S - $S10)))")
    ((ok)) || rc=1
    ((failed > 0)) && rc=1
    [[ $closed == no ]] && rc=1
    RESULTS+=("$(printf '%-8s | %7s | %8s | %9s | %8s | %8s | %10s | %6s | %6s | %9s' "$t" \
        "$S" "$((idle / 1024))" "$((r10 / 1024))" "$((rS / 1024))" "$((after / 1024))" \
        "$slope" "$fds" "$failed" "$closed")")
}

for t in ${WANT//,/ }; do
    case $t in
    llmgate)
        p=$(free_port)
        if ! start_llmgate llmgate "$p" "$MOCK_PORT" timeouts.request_s=1200; then
            RESULTS+=("$(printf '%-8s | unavailable' llmgate)")
            ((rc == 0)) && rc=2
            continue
        fi
        measure llmgate "$GW_PID" single "http://127.0.0.1:$p"
        stop_pid "$GW_PID"
        ;;
    nginx)
        p=$(free_port)
        start_nginx nginx "$p" "$MOCK_PORT"
        measure nginx "$NGINX_PID" with-children "http://127.0.0.1:$p"
        stop_pid "$NGINX_PID"
        ;;
    *) die "unknown target: $t (llmgate, nginx)" ;;
    esac
done

echo
echo "streams_memory: $S slow streams (1 token / 2 s), opened at $RAMP/s; RSS in MiB;" \
    "$(nproc) cores"
printf '%-8s | %7s | %8s | %9s | %8s | %8s | %10s | %6s | %6s | %9s\n' Target Streams \
    "RSS idle" "RSS @S/10" "RSS @S" "after" "KiB/stream" "fds@S" Failed "Upstr.end"
printf '%-8s | %7s | %8s | %9s | %8s | %8s | %10s | %6s | %6s | %9s\n' -------- ------- \
    -------- --------- -------- -------- ---------- ------ ------ ---------
printf '%s\n' "${RESULTS[@]}"
echo "(KiB/stream: RSS slope between S/10 and S. after: clients gone. Upstr.end: time until the"
echo " engine saw every upstream stream closed; nginx counts master + workers.)"
exit $rc
