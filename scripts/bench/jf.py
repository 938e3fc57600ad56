#!/usr/bin/env python3
"""Small JSON helper for the benchmark scripts.

  jf.py EXPR [FILE]   evaluate a Python expression over `j`, the JSON object on the last line of
                      FILE (or stdin) that starts with '{'; prints the result ('-' for None).
                      Helpers: ms(us) formats microseconds as milliseconds.
  jf.py --oha         convert oha's -j output (stdin) into the wrk_json line shape.
"""
import json
import sys


def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit("jf.py: no JSON line found")


def ms(us, digits=2):
    if us is None:
        return "-"
    return f"{us / 1000.0:.{digits}f}"


def oha():
    d = json.loads(sys.stdin.read())
    s = d.get("summary", {})
    p = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    total = sum(codes.values())
    non2xx = sum(v for k, v in codes.items() if not str(k).startswith("2"))

    def us(x):
        return int(round((x or 0) * 1e6))

    print(json.dumps({
        "tool": "oha",
        "requests": total,
        "rps": s.get("requestsPerSec", 0),
        "avg_us": us(s.get("average")),
        "p50_us": us(p.get("p50")),
        "p90_us": us(p.get("p90")),
        "p95_us": us(p.get("p95")),
        "p99_us": us(p.get("p99")),
        "max_us": us(s.get("slowest")),
        "non2xx": non2xx,
        "errors": sum(d.get("errorDistribution", {}).values()),
    }))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--oha":
        oha()
        return
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    text = open(sys.argv[2]).read() if len(sys.argv) > 2 else sys.stdin.read()
    j = last_json(text)
    v = eval(sys.argv[1], {"j": j, "ms": ms})  # expressions come from our own scripts
    print("-" if v is None else v)


if __name__ == "__main__":
    main()
