#!/usr/bin/env bash
# What one unit of work costs the gateway, independent of the machine's noise:
#
#   default     user-space instructions (valgrind --tool=callgrind, Ir: every instruction llmgate
#               and its libraries execute in user space; deterministic for one binary and input
#               up to thread interleaving) per tiny request, per 75 KiB request, per body byte
#               and per stream event; then the 15 functions with the highest inclusive cost per
#               75 KiB request (callgrind_annotate).
#   --syscalls  system calls by name (strace -c -f) per tiny request, per 75 KiB request and per
#               stream event, over the same loads.
#
# Method: llmgate runs against mockllm on loopback, once per load, started under the tool and
# stopped with SIGTERM (the tool writes its totals at exit). Each load is sent twice, to two fresh
# gateways: N requests and 2N requests (c=1, ttftbench); cost per request = (total(2N) -
# total(N)) / N, which cancels start-up, the first connection and shutdown. Streams: S streams of
# K tokens and S streams of 2K tokens (events 10 ms apart, so each event arrives on its own);
# cost per event = (total(2K) - total(K)) / (S * K). Health probes are off.
#
#   scripts/bench/cost.sh [--short] [--syscalls] [--n N] [--streams S] [--tokens K]
# Exit: 0 reported; 1 a load failed or a tool did not write its totals; 2 llmgate not built, or
# valgrind (strace with --syscalls) not installed.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

MODE=callgrind
N_TINY=400
N_BIG=100
S=10
K=40
while (($#)); do
    case $1 in
    --short) N_TINY=150 N_BIG=40 S=5 K=30 ;;
    --syscalls) MODE=strace ;;
    --n) N_TINY=$2 N_BIG=$(($2 / 4 > 0 ? $2 / 4 : 1)); shift ;;
    --streams) S=$2; shift ;;
    --tokens) K=$2; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
    shift
done
TOOL=valgrind
[[ $MODE == strace ]] && TOOL=strace
command -v $TOOL >/dev/null || {
    echo "cost: $TOOL not installed (apt-get install $TOOL), nothing measured"
    exit 2
}
gateway_built || {
    echo "cost: $LLMGATE not built, nothing measured"
    exit 2
}

lib_init cost
python3 "$BENCH_DIR/gen_body.py" tiny -o "$WORK/body.tiny.json" || die "gen_body.py"
python3 "$BENCH_DIR/gen_body.py" 75K -o "$WORK/body.75K.json" || die "gen_body.py"
B_TINY=$(stat -c %s "$WORK/body.tiny.json")
B_BIG=$(stat -c %s "$WORK/body.75K.json")
MOCK_PORT=$(free_port)
start_mock mock "$MOCK_PORT" --ttft-ms 0 --itl-ms 0 --tokens 16

# gateway_under_tool NAME: llmgate under valgrind or strace on a free port; sets GW_URL, TOOL_PID
# (what to wait for) and SIG_PID (what gets SIGTERM: llmgate itself).
gateway_under_tool() {
    local name=$1 port cfg=$WORK/$1.ini i
    port=$(free_port)
    cat >"$cfg" <<EOF
[server]
listen = 127.0.0.1:$port
threads = $GW_THREADS
workers = $GW_WORKERS
[timeouts]
request_s = 600
[limits]
max_inflight = 1000
[health]
interval_ms = 0
[backend.mock]
url = http://127.0.0.1:$MOCK_PORT
models = mock-model
max_concurrency = 1000
EOF
    if [[ $MODE == callgrind ]]; then
        spawn "$name" valgrind -q --tool=callgrind --collect-atstart=yes \
            --callgrind-out-file="$WORK/$name.out" "$LLMGATE" --config "$cfg"
        TOOL_PID=$SPAWNED
        SIG_PID=$SPAWNED # valgrind runs the program in its own process
    else
        spawn "$name" strace -c -f -o "$WORK/$name.out" "$LLMGATE" --config "$cfg"
        TOOL_PID=$SPAWNED
    fi
    # Ready when it logs its listening line (no probe request: that would be counted).
    for ((i = 0; i < 600; i++)); do
        grep -q "listening on" "$WORK/$name.log" 2>/dev/null && break
        kill -0 "$TOOL_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "listening on" "$WORK/$name.log" || {
        tail -n 20 "$WORK/$name.log" >&2
        die "llmgate under $MODE did not start"
    }
    [[ $MODE == strace ]] && SIG_PID=$(pgrep -P "$TOOL_PID" | head -n 1)
    GW_URL=http://127.0.0.1:$port$CHAT
}

# stop_gateway: SIGTERM to llmgate, then wait (bounded) for the tool to write its totals.
stop_gateway() {
    local i
    kill -TERM "$SIG_PID" 2>/dev/null
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$TOOL_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$TOOL_PID"
}

# one NAME LOAD...: one fresh gateway, one ttftbench load (c=1 or S streams); checks it.
one() {
    local name=$1 out
    shift
    gateway_under_tool "$name"
    out=$("$TTFTBENCH" --url "$GW_URL" "$@" --max-time 600 --json 2>>"$WORK/ttftbench.err")
    echo "$name $out" >>"$WORK/raw.txt"
    # The gateway's 2 s idle tick trims freed memory once after work: let it happen in every run.
    sleep 2.5
    stop_gateway
    if [[ $out != "{"* || $(jf 'j["failed"]' <<<"$out") != 0 ]]; then
        log "load $name failed: $out"
        exit 1
    fi
}

declare -A SPEC=(
    [tiny1]="--no-stream --body $WORK/body.tiny.json --requests $N_TINY"
    [tiny2]="--no-stream --body $WORK/body.tiny.json --requests $((2 * N_TINY))"
    [big1]="--no-stream --body $WORK/body.75K.json --requests $N_BIG"
    [big2]="--no-stream --body $WORK/body.75K.json --requests $((2 * N_BIG))"
    [ev1]="--concurrency $S --requests $S --max-tokens $K --mock {\"itl_ms\":10,\"tokens\":$K} --expect-events $((K + 2))"
    [ev2]="--concurrency $S --requests $S --max-tokens $((2 * K)) --mock {\"itl_ms\":10,\"tokens\":$((2 * K))} --expect-events $((2 * K + 2))"
)
start=$SECONDS
for name in tiny1 tiny2 big1 big2 ev1 ev2; do
    log "$MODE: $name"
    read -ra load <<<"${SPEC[$name]}"
    one "$name" "${load[@]}"
done

echo
echo "cost ($MODE): $("$LLMGATE" --version 2>/dev/null | head -n 1), threads=$GW_THREADS" \
    "workers=$GW_WORKERS, against mockllm; $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
    "load $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - start)) s"
python3 - "$MODE" "$WORK" "$ROOT" "$N_TINY" "$N_BIG" "$S" "$K" "$B_TINY" "$B_BIG" <<'EOF'
import re, subprocess, sys
mode, work, root = sys.argv[1], sys.argv[2], sys.argv[3]
n_tiny, n_big, s, k, b_tiny, b_big = map(int, sys.argv[4:])

def totals_callgrind(name):
    for line in open(f"{work}/{name}.out"):
        if line.startswith(("totals:", "summary:")):
            return {"Ir": int(line.split()[1])}
    raise SystemExit(f"cost: no totals in {name}.out")

def totals_strace(name):
    calls = {}
    for line in open(f"{work}/{name}.out"):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    if not calls:
        raise SystemExit(f"cost: no strace summary in {name}.out")
    calls["(all)"] = sum(calls.values())
    return calls

tot = {n: (totals_callgrind if mode == "callgrind" else totals_strace)(n)
       for n in ("tiny1", "tiny2", "big1", "big2", "ev1", "ev2")}
units = {"tiny": ("tiny1", "tiny2", n_tiny, f"tiny request ({b_tiny} B, c=1)"),
         "big": ("big1", "big2", n_big, f"75 KiB request ({b_big:,} B, c=1)"),
         "ev": ("ev1", "ev2", s * k, f"stream event ({s} streams, {k} -> {2 * k} tokens)")}

def per(key, unit):
    a, b, n, _ = units[unit]
    return (tot[b].get(key, 0) - tot[a].get(key, 0)) / n

if mode == "callgrind":
    print(f"\n{'unit':48s} | {'Ir (N)':>15s} | {'Ir (2N)':>15s} | {'N':>5s} | {'Ir per unit':>12s}")
    print("-" * 48 + "-+-" + "-" * 15 + "-+-" + "-" * 15 + "-+-" + "-" * 5 + "-+-" + "-" * 12)
    for u, (a, b, n, label) in units.items():
        print(f"{label:48s} | {tot[a]['Ir']:>15,} | {tot[b]['Ir']:>15,} | {n:>5} | "
              f"{per('Ir', u):>12,.0f}")
    pb = (per("Ir", "big") - per("Ir", "tiny")) / (b_big - b_tiny)
    print(f"{'body byte ((75 KiB - tiny) / ' + format(b_big - b_tiny, ',') + ' B)':48s} | "
          f"{'':>15s} | {'':>15s} | {'':>5s} | {pb:>12,.2f}")
    print("(N for events: streams x tokens added. Ir: user-space instructions of llmgate and its "
          "libraries.)")

    def annotate(name, inclusive):
        out = subprocess.run(["callgrind_annotate", f"--inclusive={inclusive}", "--auto=no",
                              "--threshold=100", f"{work}/{name}.out"],
                             capture_output=True, text=True).stdout
        # A function can be listed twice (its file named by an absolute and a relative path, with
        # and without its object): one entry per file:function, the larger count.
        fn, objs = {}, {}
        for line in out.splitlines():
            m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(\S+)(?:\s+\[([^\]]*)\])?\s*$", line)
            if m and ":" in m.group(2):
                key = m.group(2).replace(root + "/", "")
                fn[key] = max(fn.get(key, 0), int(m.group(1).replace(",", "")))
                if m.group(3):
                    objs[key] = m.group(3).rsplit("/", 1)[-1]
        return {k + (f" [{objs[k]}]" if k in objs else ""): v for k, v in fn.items()}

    whole = per("Ir", "big")
    for inclusive, count, what in (("yes", 15, "inclusive"), ("no", 10, "self")):
        f1, f2 = annotate("big1", inclusive), annotate("big2", inclusive)
        d = sorted(((f2.get(x, 0) - f1.get(x, 0)) / n_big, x) for x in set(f1) | set(f2))
        print(f"\nTop {count} functions by {what} Ir per 75 KiB request ((2N - N) / N, "
              f"callgrind_annotate --inclusive={inclusive}; whole request {whole:,.0f} Ir):")
        for v, x in d[::-1][:count]:
            print(f"  {v:>12,.0f}  {100 * v / whole:5.1f}%  {x}")
else:
    names = sorted({x for t in tot.values() for x in t if x != "(all)"},
                   key=lambda x: -(per(x, "tiny") + per(x, "big") + per(x, "ev")))
    print(f"\n{'syscall':16s} | {'per tiny req':>12s} | {'per 75 KiB req':>14s} | "
          f"{'per event':>9s}")
    print("-" * 16 + "-+-" + "-" * 12 + "-+-" + "-" * 14 + "-+-" + "-" * 9)
    for x in ["(all)"] + names:
        v = [per(x, u) for u in ("tiny", "big", "ev")]
        if x != "(all)" and all(abs(y) < 0.005 for y in v):
            continue
        print(f"{x:16s} | {v[0]:>12.2f} | {v[1]:>14.2f} | {v[2]:>9.2f}")
    print(f"((2N - N) / N; N = {n_tiny} tiny, {n_big} x 75 KiB requests at c=1, {s} streams x "
          f"{k} tokens added; strace -c -f from start to exit)")
EOF
