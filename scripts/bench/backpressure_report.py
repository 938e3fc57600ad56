#!/usr/bin/env python3
"""Tables and figures of backpressure.sh from crowd.py's records.

  backpressure_report.py crowds DIR ROW...   the crowd table; ROW = EXP:ROLE:GATE:LABEL
        (GATE 1: a miss of a target fails the run, 0: reported only). Prints the table, writes
        DIR/crowds.txt; exit 1 when a gated row misses a target.
  backpressure_report.py ttft DIR ALONE VICTIM FLOOD   the per-key TTFT table (roles of the
        ttft experiment); prints one JSON line last with the figures the script checks.
  backpressure_report.py plot DIR EXP:TITLE...       the figures (gnuplot, PNG in DIR).

DIR holds records.jsonl (every crowd.py line of the run). Times in the records are seconds.

A crowd row, for the clients of ROLE in experiment EXP:
  refused   clients refused (429/503) at their first try;
  in        of them, those whose first retry, sent when they were told, was not refused
            (target >= 90%);
  told max  the longest wait told to any of its clients, any try;
  needed    what the gateway really took to serve the crowd: from the crowd's first request to
            the end of its last answer; "-" when not every client was served;
  ratio     told max / needed (target <= 2).
"""
import collections
import json
import os
import subprocess
import sys

REFUSED = (429, 503)


def load(d):
    recs = []
    with open(os.path.join(d, "records.jsonl")) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    return recs


def clients(recs, exp, role):
    by = collections.defaultdict(list)
    for r in recs:
        if r["exp"] == exp and r["role"] == role:
            by[r["client"]].append(r)
    return [sorted(v, key=lambda r: r["attempt"]) for _, v in sorted(by.items())]


def crowd_figures(recs, exp, role):
    cl = clients(recs, exp, role)
    refused = [c for c in cl if c[0]["status"] in REFUSED]
    told = [r["told_ms"] for c in cl for r in c if r["told_ms"] is not None]
    f = {
        "clients": len(cl),
        "refused": len(refused),
        "in": sum(1 for c in refused if len(c) > 1 and c[1]["status"] not in REFUSED and c[1]["status"]),
        "served": sum(1 for c in cl if c[-1]["status"] == 200 and not c[-1]["error"]),
        "gave_up": sum(1 for c in cl if c[-1]["gave_up"]),
        "told_max_s": max(told) / 1000.0 if told else None,
        "needed_s": None,
    }
    if cl and f["served"] == len(cl):
        f["needed_s"] = max(c[-1]["t_end"] for c in cl) - min(c[0]["t_sent"] for c in cl)
    return f


def hammer_figures(recs, exp):
    hs = [r for r in recs if r["exp"] == exp and r["kind"] == "hammer"]
    if not hs:
        return None
    told = [r["told_ms"] for r in hs if r["told_ms"] is not None]
    return {"sent": len(hs), "refused": sum(1 for r in hs if r["status"] in REFUSED),
            "admitted": sum(1 for r in hs if r["status"] == 200),
            "errors": sum(1 for r in hs if not r["status"]),
            "connections": sum(1 for r in hs if r["new_conn"]),
            "loops": len(set(r["client"] for r in hs)),
            "told_max_s": max(told) / 1000.0 if told else None}


def cmd_crowds(d, rows):
    recs = load(d)
    out, miss = [], False
    head = "%-44s | %7s | %7s | %-14s | %6s | %8s | %8s | %-7s" % (
        "Crowd", "clients", "refused", "in when told", "served", "told max", "needed", "ratio")
    out += [head, "-" * len(head)]
    hammers = []
    for row in rows:
        exp, role, gate, label = row.split(":", 3)
        f = crowd_figures(recs, exp, role)
        share = f["in"] / f["refused"] if f["refused"] else None
        ok_share = share is not None and share >= 0.9
        ratio = (f["told_max_s"] / f["needed_s"]) if f["told_max_s"] and f["needed_s"] else None
        ok_ratio = ratio is not None and ratio <= 2.0
        if gate == "1" and not (ok_share and ok_ratio):
            miss = True
        in_s = "%d (%.0f%%) %s" % (f["in"], 100 * share, "✓" if ok_share else "✗") if share is not None else "-"
        out.append("%-44s | %7d | %7d | %-14s | %6d | %8s | %8s | %-7s" % (
            label, f["clients"], f["refused"], in_s, f["served"],
            "%.2f s" % f["told_max_s"] if f["told_max_s"] is not None else "-",
            "%.2f s" % f["needed_s"] if f["needed_s"] is not None else "-",
            "%.2f %s" % (ratio, "✓" if ok_ratio else "✗") if ratio is not None else "- ✗"))
        if f["gave_up"]:
            out.append("%-44s   %d gave up: told more than the bench waits" % ("", f["gave_up"]))
        if not gate == "1":
            out.append("%-44s   (reported, not gated: see the README)" % "")
        h = hammer_figures(recs, exp)
        if h and exp not in [x[0] for x in hammers]:
            hammers.append((exp, h))
    for exp, h in hammers:
        out.append("hammer in %s: %d loops, %d requests on %d connections: %d refused, %d admitted, "
                   "%d errors; longest wait told to it %s" % (
                       exp, h["loops"], h["sent"], h["connections"], h["refused"], h["admitted"],
                       h["errors"], "%.2f s" % h["told_max_s"] if h["told_max_s"] is not None else "-"))
    out.append("(in when told: refused clients whose first retry, at the time told, got in; target "
               ">= 90%. ratio: told max / needed, target <= 2)")
    text = "\n".join(out)
    print(text)
    with open(os.path.join(d, "crowds.txt"), "w") as f:
        f.write(text + "\n")
    return 1 if miss else 0


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def cmd_ttft(d, exp, alone, victim, flood):
    recs = load(d)
    res = {}
    for role in (alone, victim, flood):
        rs = [r for r in recs if r["exp"] == exp and r["role"] == role]
        ok = [r for r in rs if r["status"] == 200 and r["t_first"] is not None and not r["error"]]
        tt = [1000.0 * (r["t_first"] - r["t_sent"]) for r in ok]
        e2e = [1000.0 * (r["t_end"] - r["t_sent"]) for r in ok]
        res[role] = {"ok": len(ok), "failed": len(rs) - len(ok), "p50": pct(tt, 50),
                     "p95": pct(tt, 95), "max": max(tt) if tt else None, "e2e_p50": pct(e2e, 50),
                     "status": dict(collections.Counter(str(r["status"]) for r in rs))}
    print(json.dumps(res, separators=(",", ":")))
    return 0


def write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(" ".join("%.6g" % x if isinstance(x, float) else str(x) for x in r) + "\n")


def cmd_plot(d, exps):
    recs = load(d)
    gp = ["set terminal pngcairo size 1400,%d font ',10' noenhanced", "set grid",
          "set key outside right top"]
    panels = []
    for spec in exps:
        exp, title = spec.split(":", 1)
        rs = [r for r in recs if r["exp"] == exp]
        if not rs:
            continue
        # admitted / refused per 0.25 s, crowd and hammer apart
        w = 0.25
        bins = collections.defaultdict(lambda: [0, 0, 0, 0])
        for r in rs:
            if r["t_head"] is None:
                continue
            col = (0 if r["status"] == 200 else 1 if r["status"] in REFUSED else None)
            if col is None:
                continue
            if r["kind"] == "hammer":
                col += 2
            bins[int(r["t_head"] / w)][col] += 1
        last = max(bins) if bins else 0
        write(os.path.join(d, "timeline_%s.dat" % exp),
              [(b * w, *[x / w for x in bins.get(b, [0, 0, 0, 0])]) for b in range(last + 2)])
        # the wait told at the first refusal against the wait really had, to the admission
        pts = []
        for role in sorted(set(r["role"] for r in rs if r["kind"] == "crowd")):
            for c in clients(recs, exp, role):
                if c[0]["status"] not in REFUSED or c[0]["told_ms"] is None:
                    continue
                adm = [r for r in c if r["status"] == 200]
                if adm:
                    pts.append((role, c[0]["told_ms"] / 1000.0, adm[0]["t_head"] - c[0]["t_head"],
                                len(c) - 1))
                elif c[-1]["gave_up"]:  # on the x axis: told, never waited
                    pts.append(("gave_up", c[0]["told_ms"] / 1000.0, 0.0, len(c) - 1))
        write(os.path.join(d, "told_%s.dat" % exp), [(p[1], p[2], p[3], p[0]) for p in pts])
        panels.append((exp, title, sorted(set(p[0] for p in pts)), bool(pts),
                       any(r["kind"] == "hammer" for r in rs)))
    n = len(panels)
    if n:
        g = list(gp)
        g[0] = g[0] % (300 * n)
        g += ["set output '%s'" % os.path.join(d, "admitted_refused.png"),
              "set multiplot layout %d,1 title 'Requests admitted (200 head) and refused (429/503), "
              "per second in 0.25 s bins'" % n, "set xlabel 'time (s)'", "set ylabel 'per s'",
              "set ytics nomirror"]
        for exp, title, _, _, hammer in panels:
            f = os.path.join(d, "timeline_%s.dat" % exp)
            plot = ("plot '%s' u 1:2 w steps lw 2 lc rgb '#1a9850' t 'crowd admitted', "
                    "'' u 1:3 w steps lw 2 lc rgb '#d73027' t 'crowd refused'" % f)
            if hammer:  # hundreds per second: on its own axis
                g += ["set y2tics", "set y2label 'hammer, per s'"]
                plot += (", '' u 1:4 axes x1y2 w steps lw 1 dt 2 lc rgb '#4575b4' t 'hammer admitted (y2)'"
                         ", '' u 1:5 axes x1y2 w steps lw 1 dt 2 lc rgb '#984ea3' t 'hammer refused (y2)'")
            else:
                g += ["unset y2tics", "unset y2label"]
            g += ["set title '%s'" % title, plot]
        g += ["unset multiplot", "unset y2tics", "unset y2label", "set ytics mirror"]
        cols = 2
        rows_n = (n + cols - 1) // cols
        g += ["set terminal pngcairo size 1400,%d font ',10' noenhanced" % (420 * rows_n),
              "set output '%s'" % os.path.join(d, "told_vs_real.png"),
              "set multiplot layout %d,%d title 'Wait told at the first refusal vs the wait really "
              "had (refusal to admission); on y = x a client got in exactly when told'" % (rows_n, cols),
              "set xlabel 'told (s)'", "set ylabel 'really waited (s)'", "set key inside left top",
              "set style fill solid 0"]
        for exp, title, roles, has, _ in panels:
            f = os.path.join(d, "told_%s.dat" % exp)
            if not has:
                g += ["set title '%s: no refused client got in'" % title,
                      "plot [0:1][0:1] x w l lc rgb 'gray' t 'y = x'"]
                continue
            parts = ["'%s' u 1:(strcol(4) eq '%s' ? $2 : 1/0) w p pt %d ps 0.8 t '%s'" % (
                f, ro, 2 if ro == "gave_up" else 7,
                "gave up, told over the bench bound (drawn at y = 0)" if ro == "gave_up" else ro)
                for ro in roles]
            parts.append("x w l lc rgb 'gray' t 'y = x'")
            parts.append("2*x w l dt 2 lc rgb 'gray' t 'y = 2x'")
            g += ["set title '%s'" % title, "set xrange [0:*]", "set yrange [0:*]",
                  "plot " + ", ".join(parts)]
        g += ["unset multiplot", "set autoscale"]
        path = os.path.join(d, "crowds.gp")
        with open(path, "w") as f:
            f.write("\n".join(g) + "\n")
        subprocess.run(["gnuplot", path], check=True)
    # per-key TTFT under a flood
    tt = [r for r in recs if r["kind"] == "streams" and r["t_first"] is not None and r["status"] == 200]
    if tt:
        roles = sorted(set(r["role"] for r in tt))
        for ro in roles:
            write(os.path.join(d, "ttft_%s.dat" % ro),
                  [(r["t_sent"], 1000.0 * (r["t_first"] - r["t_sent"])) for r in tt if r["role"] == ro])
        g = ["set terminal pngcairo size 1400,600 font ',10' noenhanced", "set grid",
             "set output '%s'" % os.path.join(d, "ttft_by_key.png"),
             "set title 'TTFT per key under a flood (fair queuing across keys): each point one "
             "stream, at the time it was sent'", "set xlabel 'time sent (s)'",
             "set ylabel 'TTFT (ms, log)'", "set logscale y", "set key outside right top"]
        colors = {"alone": "#1a9850", "victim": "#4575b4", "flood": "#d73027", "warm": "gray"}
        names = {"alone": "key victim alone", "warm": "victim warm-up (not counted)",
                 "victim": "key victim under the flood", "flood": "key flood"}
        parts = ["'%s' u 1:2 w p pt 7 ps 0.6 lc rgb '%s' t '%s'" % (
            os.path.join(d, "ttft_%s.dat" % ro), colors.get(ro, "black"), names.get(ro, ro))
            for ro in roles]
        g.append("plot " + ", ".join(parts))
        path = os.path.join(d, "ttft.gp")
        with open(path, "w") as f:
            f.write("\n".join(g) + "\n")
        subprocess.run(["gnuplot", path], check=True)
    return 0


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, d, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "crowds":
        return cmd_crowds(d, rest)
    if cmd == "ttft":
        return cmd_ttft(d, *rest)
    if cmd == "plot":
        return cmd_plot(d, rest)
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
