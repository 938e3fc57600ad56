#!/usr/bin/env python3
"""Aggregate compare.sh samples: CPU per unit, added latency, ratios llmgate/nginx, targets.

  compare_report.py SAMPLES TARGETS NOISE_MAX [--meta FILE] [--syscalls FILE] [--force]

SAMPLES has one JSON object per line: {"run": i, "target": t, "metric": m, "value": v}.
TARGETS is comma-separated, in column order (direct,nginx,llmgate). --meta: body sizes and run
parameters (compare.sh writes it). --syscalls: one JSON line per proxy and workload with strace
call counts and the units (requests or events) they were spent on.

Ratios of CPU per unit are medians of per-run ratios (llmgate and nginx measured minutes apart in
the same run); added latency is proxy minus direct within each run, then the median over runs.
Exit 0 when reported, 3 when the min-max spread of a gated ratio (CPU per unit) exceeds NOISE_MAX
of its median and --force is not given, 1 when a run recorded failures.
"""
import json
import statistics
import sys
from collections import defaultdict

GATED = ["tiny_c50_cpu_us", "75K_c8_cpu_us", "st_ev_cpu_us"]
BIG = ["75K", "300K", "2M"]


def load(path):
    vals = defaultdict(dict)  # (metric, target) -> {run: value}
    with open(path) as f:
        for line in f:
            if line.strip():
                s = json.loads(line)
                d = vals[(s["metric"], s["target"])]
                if s["metric"] == "failed":
                    d[s["run"]] = d.get(s["run"], 0) + float(s["value"])
                else:
                    d[s["run"]] = float(s["value"])
    return vals


def spread(v):
    if len(v) < 2:
        return None
    m = statistics.median(v)
    return (max(v) - min(v)) / abs(m) if m else 0.0


class Report:
    def __init__(self, vals, targets, meta):
        self.v, self.targets, self.meta = vals, targets, meta
        self.runs = sorted({r for d in vals.values() for r in d})

    def per_run(self, m, t):
        return self.v.get((m, t), {})

    def med(self, m, t):
        d = self.per_run(m, t)
        return statistics.median(d.values()) if d else None

    def combine(self, fn, *series):
        """Per-run fn over several {run: value} series, for the runs present in all."""
        out = {}
        for r in self.runs:
            xs = [s.get(r) for s in series]
            if all(x is not None for x in xs):
                y = fn(*xs)
                if y is not None:
                    out[r] = y
        return out

    def ratio_runs(self, m, a="llmgate", b="nginx"):
        return self.combine(lambda x, y: x / y if y else None, self.per_run(m, a),
                            self.per_run(m, b))

    def added_runs(self, m, t):
        return self.combine(lambda x, y: x - y, self.per_run(m, t), self.per_run(m, "direct"))

    def per_byte_runs(self, b, t):
        d = self.meta["bytes"][b] - self.meta["bytes"]["tiny"]
        return self.combine(lambda x, y: (x - y) * 1000.0 / d, self.per_run(f"{b}_c8_cpu_us", t),
                            self.per_run("tiny_c8_cpu_us", t))


def med(d):
    return statistics.median(d.values()) if d else None


def f(v, nd=1, sign=False):
    if v is None:
        return "-"
    s = f"{v:+,.{nd}f}" if sign else f"{v:,.{nd}f}"
    return s


def verdict(ok):
    return "" if ok is None else ("✓" if ok else "✗")


def table(title, head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    print()
    print(title)
    line = " | ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                      for i, (h, w) in enumerate(zip(head, widths)))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                         for i, (x, w) in enumerate(zip(row, widths))))


def kib(n):
    return f"{n / 1024:,.0f} KiB" if n < 1 << 20 else f"{n / 1048576:.1f} MiB"


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        raise SystemExit(__doc__)
    path, targets, noise_max = args[0], args[1].split(","), float(args[2])
    opt = {}
    rest = args[3:]
    force = "--force" in rest
    for k in ("--meta", "--syscalls"):
        if k in rest:
            opt[k] = rest[rest.index(k) + 1]
    meta = json.load(open(opt["--meta"])) if "--meta" in opt else {
        "bytes": {"tiny": 105, "75K": 76800, "300K": 307200, "2M": 2097152}}
    R = Report(load(path), targets, meta)
    have_gw = "llmgate" in targets and "nginx" in targets
    nruns = len(R.runs)

    # ---- noise gate: CPU per unit ratios (or nginx's own CPU per unit without llmgate) -------
    noisy = []
    for m in GATED:
        series = R.ratio_runs(m) if have_gw else R.per_run(m, "nginx")
        sp = spread(list(series.values()))
        if sp is not None and sp > noise_max:
            noisy.append((m, sp, series))
    failed = sum(sum(R.per_run("failed", t).values()) for t in targets)
    if noisy:
        what = "llmgate/nginx ratio" if have_gw else "nginx CPU per unit"
        print(f"\nmin-max spread over {nruns} runs exceeds {noise_max:.0%} of the median ({what}):")
        for m, sp, series in noisy:
            print(f"  {m:18s} spread {sp:6.1%}  runs: "
                  + ", ".join(f"{x:.2f}" for _, x in sorted(series.items())))
        if not force:
            print("REFUSED: the machine was too noisy to compare; no figures reported "
                  "(re-run on a quiet machine, more --runs, or --force to print anyway).")
            return 3
        print("NOISY: figures printed anyway (--force); do not trust small differences.")

    gw, ng = "llmgate", "nginx"
    B = meta["bytes"]

    # ---- 1. CPU per unit of work -----------------------------------------------------------
    rows = []

    def sys_pct(m, t):
        v = R.med(m.replace("_cpu_us", "_sys_frac"), t)
        return f"{100 * v:.0f}%" if v is not None else "-"

    def cpu_row(label, m, target=None, unit="µs"):
        rr = R.ratio_runs(m)
        r = med(rr)
        ok = None if target is None or r is None else r <= target
        sp = spread(list(rr.values())) if have_gw else spread(list(R.per_run(m, ng).values()))
        rows.append([label, f"{f(R.med(m, ng), 1)} {unit}", f"{f(R.med(m, gw), 1)} {unit}",
                     f(r, 2) + "×" if r else "-", f"≤ {target}×" if target else "",
                     verdict(ok), f"{sp:.0%}" if sp is not None else "-", sys_pct(m, ng),
                     sys_pct(m, gw)])

    cpu_row(f"tiny body ({B['tiny']} B), c=50: CPU per request", "tiny_c50_cpu_us", 2)
    cpu_row("tiny body, c=8: CPU per request", "tiny_c8_cpu_us")
    cpu_row("75 KiB body (60 messages), c=8: CPU per request", "75K_c8_cpu_us", 2.5)
    cpu_row("300 KiB body, c=8: CPU per request", "300K_c8_cpu_us")
    cpu_row("2 MiB body, c=8: CPU per request", "2M_c8_cpu_us")
    for b in BIG:
        pb = {t: med(R.per_byte_runs(b, t)) for t in (ng, gw)}
        rr = R.combine(lambda x, y: x / y if y else None, R.per_byte_runs(b, gw),
                       R.per_byte_runs(b, ng))
        rows.append([f"cost per body byte, ({b} − tiny) / {B[b] - B['tiny']:,} B at c=8",
                     f"{f(pb[ng], 2)} ns/B", f"{f(pb[gw], 2)} ns/B",
                     f(med(rr), 2) + "×" if rr else "-", "", "",
                     f"{spread(list(rr.values())):.0%}" if len(rr) > 1 else "-", "", ""])
    cpu_row(f"{meta.get('streams', 1000):,} streams × {meta.get('st_events', 67)} events: "
            "CPU per relayed event", "st_ev_cpu_us", 1.5)
    table(f"CPU per unit of work: proxy utime+stime (/proc/PID/stat; nginx = master + workers) "
          f"/ completed requests or relayed events; median of {nruns} runs; ratio = median of "
          f"per-run ratios; spread = min-max of the per-run ratio / median; sys = the kernel's "
          f"share (stime) of that CPU",
          ["workload", "nginx", "llmgate", "llmgate/nginx", "target", "", "spread", "nginx sys",
           "llmgate sys"], rows)

    # ---- 2. latency at c=1 -----------------------------------------------------------------
    rows = []
    for b, target in (("tiny", 2), ("75K", 3), ("300K", None), ("2M", None)):
        m50, m99 = f"{b}_c1_p50_us", f"{b}_c1_p99_us"
        a = {t: med(R.added_runs(m50, t)) for t in (ng, gw)}
        a99 = {t: med(R.added_runs(m99, t)) for t in (ng, gw)}
        # A ratio needs a positive nginx figure: at c=1 nginx can be within the noise of direct.
        r = a[gw] / a[ng] if a[gw] is not None and a[ng] is not None and a[ng] > 0 else None
        ok = None if target is None or r is None else r <= target
        rows.append([f"{b} ({B[b]:,} B)" if b == "tiny" else f"{b} ({kib(B[b])})",
                     f(R.med(m50, "direct"), 0), f(R.med(m50, ng), 0), f(R.med(m50, gw), 0),
                     f(a[ng], 0, True), f(a[gw], 0, True), f(r, 2) + "×" if r else "-",
                     f"≤ {target}×" if target else "", verdict(ok),
                     f(a99[ng], 0, True), f(a99[gw], 0, True)])
    table("Latency at c=1 (ttftbench, µs): p50 direct / nginx / llmgate, added p50 over direct "
          "(median over runs of the per-run difference), ratio of added p50, added p99",
          ["body", "direct p50", "nginx p50", "llmgate p50", "nginx +p50", "llmgate +p50",
           "ratio", "target", "", "nginx +p99", "llmgate +p99"], rows)

    # ---- 3. throughput ---------------------------------------------------------------------
    rows = []
    for b, c, target in (("tiny", 50, 0.6), ("tiny", 8, None), ("75K", 8, None),
                         ("300K", 8, None), ("2M", 8, None)):
        m = f"{b}_c{c}_rps"
        rr = R.ratio_runs(m)
        r = med(rr)
        ok = None if target is None or r is None else r >= target
        rows.append([f"{b} c={c}", f(R.med(m, "direct"), 0), f(R.med(m, ng), 0),
                     f(R.med(m, gw), 0), f(r, 2) if r else "-",
                     f"≥ {target}" if target else "", verdict(ok),
                     f"{spread(list(rr.values())):.0%}" if len(rr) > 1 else "-"])
    table("Throughput (wrk, keep-alive, req/s; direct c=8 not measured: the engine alone is not "
          "the question)", ["workload", "direct", "nginx", "llmgate", "llmgate/nginx", "target",
                            "", "spread"], rows)

    # ---- 4. streams ------------------------------------------------------------------------
    rows = []
    st = meta.get("streams", 1000)
    add = {t: med(R.added_runs("st_ttft_p99_us", t)) for t in (ng, gw)}
    for t in targets:
        fin, fout = R.per_run("st_frames_in", t), R.per_run("st_frames_out", t)
        stalls = sum(R.per_run("st_stalls", t).values())
        frames_ok = fin == fout and bool(fin)
        a = add.get(t)
        ok = None
        if t == gw and add[gw] is not None and add[ng] is not None:
            ok = add[gw] <= add[ng] + 5000
        rows.append([t, f(ms(R.med("st_ttft_p50_us", t)), 2), f(ms(R.med("st_ttft_p99_us", t)), 2),
                     f(ms(a), 2, True) if t != "direct" else "",
                     f"≤ nginx {f(ms(add[ng]), 2, True)} + 5" if t == gw and add[ng] is not None
                     else "", verdict(ok), f(ms(R.med("st_gap_p99_us", t)), 2),
                     f"{sum(fin.values()):,.0f} / {sum(fout.values()):,.0f}",
                     f"{stalls:.0f}", verdict(frames_ok and stalls == 0) if t != "direct" else ""])
    table(f"{st:,} streams opened at once × {meta.get('st_events', 67)} events, 20 ms apart, "
          "TTFT 50 ms (ms; frames and stalls summed over runs)",
          ["target", "TTFT p50", "TTFT p99", "added p99", "target", "", "gap p99",
           "frames in / out", "stalls", ""], rows)

    # ---- 5. inter-token gap under long prompts ---------------------------------------------
    rows = []
    for t in targets:
        d = R.combine(lambda x, y: x - y, R.per_run("itl_load_gap_p99_us", t),
                      R.per_run("itl_alone_gap_p99_us", t))
        dm = med(d)
        ok = None if t != gw or dm is None else dm <= 1000
        rows.append([t, f(ms(R.med("itl_alone_gap_p99_us", t)), 2),
                     f(ms(R.med("itl_load_gap_p99_us", t)), 2), f(ms(dm), 2, True),
                     "≤ +1 ms" if t == gw else "", verdict(ok),
                     f(R.med("itl_prompt_rps", t), 0),
                     f"{sum(R.per_run('itl_alone_stalls', t).values()):.0f} / "
                     f"{sum(R.per_run('itl_load_stalls', t).values()):.0f}"])
    table(f"Inter-token gap p99 of {meta.get('itl_streams', 100)} streams "
          f"({meta.get('itl_events', 152)} events, 20 ms apart), alone and while 75 KiB prompts "
          "arrive at c=8 (wrk) through the same proxy (ms)",
          ["target", "alone", "with prompts", "delta", "target", "", "prompts req/s",
           "stalls alone / with"], rows)

    # ---- 6. syscalls -----------------------------------------------------------------------
    if "--syscalls" in opt:
        sc = defaultdict(dict)
        for line in open(opt["--syscalls"]):
            if line.strip():
                s = json.loads(line)
                sc[s["workload"]][s["target"]] = s
        if sc:
            rows = []
            for wl, label in (("tiny", "per tiny request (c=50)"), ("75K", "per 75 KiB request "
                              "(c=8)"), ("event", f"per stream event ({meta.get('sc_streams', 200)}"
                                                  " streams)")):
                cols = []
                tot = {}
                for t in (ng, gw):
                    s = sc[wl].get(t)
                    if not s or not s["units"]:
                        cols.append("-")
                        continue
                    tot[t] = sum(s["calls"].values()) / s["units"]
                    top = sorted(s["calls"].items(), key=lambda kv: -kv[1])[:5]
                    cols.append(f"{tot[t]:.2f}: " + ", ".join(
                        f"{k} {v / s['units']:.2f}" for k, v in top))
                r = tot[gw] / tot[ng] if gw in tot and tot.get(ng) else None
                rows.append([label, cols[0], cols[1], f(r, 2) + "×" if r else "-"])
            table("Syscalls (strace -c -f -p over one ttftbench run; not timed): total per unit "
                  "and the five most frequent", ["unit", "nginx", "llmgate", "ratio"], rows)

    print()
    print("✓/✗: targets for llmgate; a ✗ is reported, it does not fail the run. Added latency "
          "and TTFT are medians of per-run differences; their spread is in the work directory "
          "(samples.jsonl).")
    if failed:
        print(f"FAILED requests in the runs: {failed:.0f} (see the work directory)")
        return 1
    return 0


def ms(us):
    return None if us is None else us / 1000.0


if __name__ == "__main__":
    sys.exit(main())
