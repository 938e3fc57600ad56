#!/usr/bin/env python3
"""Aggregate compare.sh samples: medians over runs, ratios, added latency, noise check.

  compare_report.py SAMPLES TARGETS NOISE_MAX [--force]

SAMPLES has one JSON object per line: {"run": i, "target": t, "metric": m, "value": v}.
TARGETS is comma-separated, in column order (direct,nginx,llmgate).
Exit 0 when reported, 3 when the min-max spread of a gated metric exceeds NOISE_MAX (fraction of
the median) for some target and --force is not given, 1 when a run recorded failures.
"""
import json
import statistics
import sys
from collections import defaultdict

# (metric, label, unit, gated by the noise check)
ROWS = [
    ("tput_rps", "non-stream c=50 throughput", "req/s", True),
    ("tput_p50_us", "non-stream c=50 latency p50", "ms", False),
    ("tput_p99_us", "non-stream c=50 latency p99", "ms", False),
    ("lat1_p50_us", "non-stream c=1 latency p50", "us", True),
    ("lat1_p90_us", "non-stream c=1 latency p90", "us", False),
    ("lat1_p99_us", "non-stream c=1 latency p99", "us", False),
    ("lat1_rps", "non-stream c=1 throughput", "req/s", False),
    ("st_ttft_p50_us", "stream c=100 TTFT p50", "ms", True),
    ("st_ttft_p99_us", "stream c=100 TTFT p99", "ms", False),
    ("st_gap_p99_us", "stream c=100 gap p99", "ms", False),
    ("st_e2e_p99_us", "stream c=100 end-to-end p99", "ms", False),
    ("st_frames_in", "stream c=100 frames in", "", False),
    ("st_frames_out", "stream c=100 frames out", "", False),
    ("st_stalls", "stream c=100 stalls", "", False),
    ("failed", "failed requests (sum)", "", False),
]


# A gated metric is noisy when its min-max range is over NOISE_MAX of the median AND over this
# absolute floor (same unit as the samples): a 10 us median moving by 5 us is not a noisy machine,
# it is the clock's and the scheduler's grain.
NOISE_FLOOR = {"lat1_p50_us": 10, "st_ttft_p50_us": 2000}


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v / 1000:.2f}"
    if unit == "us":
        return f"{v:.0f}"
    if unit == "req/s":
        return f"{v:.0f}"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    path, targets, noise_max = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
    force = "--force" in sys.argv[4:]
    vals = defaultdict(list)  # (metric, target) -> [values]
    run_ids = set()
    with open(path) as f:
        for line in f:
            if line.strip():
                s = json.loads(line)
                vals[(s["metric"], s["target"])].append(float(s["value"]))
                run_ids.add(s["run"])
    runs = len(run_ids)

    def med(m, t):
        v = vals.get((m, t))
        if not v:
            return None
        return sum(v) if m == "failed" else statistics.median(v)

    def spread(m, t):
        v = vals.get((m, t))
        if not v or len(v) < 2 or m == "failed":
            return None
        md = statistics.median(v)
        return (max(v) - min(v)) / md if md else 0.0

    noisy = []
    for m, label, _, gated in ROWS:
        for t in targets:
            sp = spread(m, t)
            v = vals.get((m, t), [])
            if (gated and sp is not None and sp > noise_max
                    and max(v) - min(v) > NOISE_FLOOR.get(m, 0)):
                noisy.append((label, t, sp, vals[(m, t)]))
    failed = sum(sum(vals.get(("failed", t), [])) for t in targets)

    if noisy:
        print(f"\nmin-max spread over {runs} runs exceeds {noise_max:.0%} of the median"
              f" (and the floors {NOISE_FLOOR}):")
        for label, t, sp, v in noisy:
            print(f"  {label:32s} {t:8s} spread {sp:6.1%}  runs: "
                  + ", ".join(f"{x:.0f}" for x in v))
        if not force:
            print("REFUSED: the machine was too noisy to compare; no figures reported "
                  "(re-run on a quiet machine, more --runs, or --force to print anyway).")
            return 3
        print("NOISY: figures printed anyway (--force); do not trust small differences.")

    cols = targets[:]
    have = lambda t: t in targets  # noqa: E731
    ratio_cols = []
    if have("llmgate") and have("direct"):
        ratio_cols.append(("llmgate", "direct"))
    if have("llmgate") and have("nginx"):
        ratio_cols.append(("llmgate", "nginx"))
    if not have("llmgate") and have("nginx") and have("direct"):
        ratio_cols.append(("nginx", "direct"))
    head = f"{'metric (median of %d runs)' % runs:36s} {'unit':5s}"
    for t in cols:
        head += f" | {t:>9s}"
    for a, b in ratio_cols:
        head += f" | {a + '/' + b:>14s}"
    head += " | spread max"
    print()
    print(head)
    print("-" * len(head))
    for m, label, unit, _ in ROWS:
        line = f"{label:36s} {unit:5s}"
        for t in cols:
            line += f" | {fmt(med(m, t), unit):>9s}"
        for a, b in ratio_cols:
            x, y = med(m, a), med(m, b)
            r = f"{x / y:.3f}" if x is not None and y else "-"
            line += f" | {r:>14s}"
        sps = [spread(m, t) for t in cols]
        sps = [s for s in sps if s is not None]
        line += f" | {max(sps):9.1%}" if sps else " |         -"
        print(line)

    print()
    base = "direct"
    for other in [t for t in ("llmgate", "nginx") if have(t)]:
        if not have(base):
            break
        parts = []
        for m, name in (("lat1_p50_us", "c=1 p50"), ("lat1_p99_us", "c=1 p99"),
                        ("st_ttft_p50_us", "TTFT p50"), ("st_ttft_p99_us", "TTFT p99")):
            x, y = med(m, other), med(m, base)
            if x is not None and y is not None:
                parts.append(f"{name} {x - y:+.0f} us")
        print(f"added latency ({other} - {base}): " + ", ".join(parts))
    if failed:
        print(f"FAILED requests in the runs: {failed:.0f} (see the work directory)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
