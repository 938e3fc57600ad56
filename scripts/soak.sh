#!/usr/bin/env bash
# Bounded soak of one gateway against the mock engine, on 127.0.0.1 only: mixed traffic in
# segments of SEG seconds until TOTAL requests were made or MAX_S seconds passed, with the
# gateway's RSS and open descriptors sampled after every segment. Per segment, at once:
#   - non-stream chat requests     wrk, c=16, keep-alive
#   - refused requests             wrk, c=4: unknown model (404), bad JSON (400), over the body
#                                  limit (413, answered from the headers), in turn
#   - streams                      ttftbench, c=40, 20 events 1 ms apart
#   - cancelled streams            a client that reads the first event and closes, c=8
# At the end: counts by kind, the RSS samples, the least-squares slope of RSS over requests
# (KiB per 100,000 requests) and over time, descriptors, and the gateway's counters back at 0.
# Not part of `make test` (minutes); `scripts/soak.sh --total 100000` for a short one.
#
#   scripts/soak.sh [--total N] [--max-s S] [--seg S]
# Exit: 0 done and the gateway back at rest (in-flight 0, active 0), 1 otherwise.
set -uo pipefail
source "$(dirname "$0")/bench/lib.sh"

TOTAL=1000000
MAX_S=1200
SEG=10
while (($#)); do
    case $1 in
    --total) TOTAL=$2; shift ;;
    --max-s) MAX_S=$2; shift ;;
    --seg) SEG=$2; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done

lib_init soak
MP=$(free_port)
GP=$(free_port)
start_mock mock "$MP" --threads 2 --ttft-ms 0 --itl-ms 1 --tokens 20
start_llmgate llmgate "$GP" "$MP" server.max_body_bytes=65536 health.interval_ms=1000 ||
    die "llmgate did not start"
URL=http://127.0.0.1:$GP$CHAT
wrk_lua "$WORK/ok.lua" '{"model":"mock-model","messages":[{"role":"user","content":"soak"}],"max_tokens":16}'
cat >"$WORK/refused.lua" <<'LUA'
local bodies = {
  '{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}',
  '{"model":"mock-model","messages":[{"role":"user","content":"x"}',
  string.rep("x", 70000),
}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i % 3 + 1])
end
LUA
cat >"$WORK/cancel.py" <<'PY'
import socket, sys, threading, time
port, secs, conc = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
body = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"cancel"}],"mock":{"itl_ms":50,"tokens":200}}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % len(body)) + body
n = [0]
def loop():
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            got = b""
            while b"data:" not in got:
                d = s.recv(4096)
                if not d:
                    break
                got += d
            s.close()
            n[0] += 1
        except OSError:
            time.sleep(0.05)
ths = [threading.Thread(target=loop) for _ in range(conc)]
[t.start() for t in ths]
[t.join() for t in ths]
print(n[0])
PY

metric() { curl -s --noproxy '*' "http://127.0.0.1:$GP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
SAMPLES=$WORK/samples.txt
: >"$SAMPLES"
done_req=0 ok=0 refused=0 streams=0 cancelled=0 seg=0
t_start=$(date +%s)
log "soak: up to $TOTAL requests or $MAX_S s, segments of $SEG s; gateway pid $GW_PID"
echo "0 0 $(rss_kb "$GW_PID") $(fd_count "$GW_PID")" >>"$SAMPLES"
while ((done_req < TOTAL && $(date +%s) - t_start < MAX_S)); do
    seg=$((seg + 1))
    wrk -t1 -c16 -d"${SEG}s" -s "$WORK/ok.lua" "$URL" >"$WORK/ok.out" 2>&1 &
    p1=$!
    wrk -t1 -c4 -d"${SEG}s" -s "$WORK/refused.lua" "$URL" >"$WORK/refused.out" 2>&1 &
    p2=$!
    "$TTFTBENCH" --url "$URL" --model mock-model --concurrency 40 --duration "$SEG" --max-tokens 20 \
        --json >"$WORK/streams.json" 2>/dev/null &
    p3=$!
    python3 "$WORK/cancel.py" "$GP" "$SEG" 8 >"$WORK/cancel.out" 2>/dev/null &
    p4=$!
    wait $p1 $p2 $p3 $p4
    a=$(awk '/requests in/ {print $1}' "$WORK/ok.out")
    b=$(awk '/requests in/ {print $1}' "$WORK/refused.out")
    c=$(jf 'j["ok"] + j["failed"]' "$WORK/streams.json" 2>/dev/null || echo 0)
    d=$(cat "$WORK/cancel.out" 2>/dev/null || echo 0)
    ok=$((ok + ${a:-0})) refused=$((refused + ${b:-0})) streams=$((streams + ${c:-0}))
    cancelled=$((cancelled + ${d:-0}))
    done_req=$((ok + refused + streams + cancelled))
    echo "$(($(date +%s) - t_start)) $done_req $(rss_kb "$GW_PID") $(fd_count "$GW_PID")" >>"$SAMPLES"
    log "segment $seg: $done_req requests so far; RSS $(rss_kb "$GW_PID") KiB, fds $(fd_count "$GW_PID")"
    kill -0 "$GW_PID" 2>/dev/null || die "llmgate died"
done
sleep 2 # let cancelled transfers and kept-alive connections settle
inflight=$(metric llmgate_inflight)
active=$(metric llmgate_active_jobs)
queued=$(metric llmgate_queued)
body_mem=$(metric llmgate_body_memory_bytes)
echo "$(($(date +%s) - t_start)) $done_req $(rss_kb "$GW_PID") $(fd_count "$GW_PID")" >>"$SAMPLES"
python3 - "$SAMPLES" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def slope(xs, ys):
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0
rest = rows[-1]  # after the load, when the gateway went idle (and returned memory)
warm = rows[1:-1] if len(rows) > 4 else rows[:-1]  # under load; the first segment fills pools
t = [r[0] for r in warm]; req = [r[1] for r in warm]; rss = [r[2] for r in warm]
print("RSS samples (s, requests, KiB, fds):")
for r in rows:
    print("  %6.0f %9.0f %8.0f %6.0f" % r)
print("RSS slope after the first segment: %.1f KiB per 100,000 requests, %.1f KiB per minute"
      % (slope(req, rss) * 1e5, slope(t, rss) * 60))
print("RSS under load, first / last segment: %.0f / %.0f KiB; at rest afterwards: %.0f KiB"
      % (rss[0], rss[-1], rest[2]))
PY
echo "requests: $done_req (non-stream $ok, refused $refused, streams $streams, cancelled $cancelled)"
echo "at rest: in-flight ${inflight:-?}, active ${active:-?}, queued ${queued:-?}, body memory ${body_mem:-?}"
[[ ${inflight:-1} == 0 && ${active:-1} == 0 && ${queued:-1} == 0 && ${body_mem:-1} == 0 ]]
