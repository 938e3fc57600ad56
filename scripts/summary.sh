#!/usr/bin/env bash
# Sums the "suite: N passed, N failed" lines of a `make test` log into the closing line.
# Reached only when every suite passed: make stops at the first failing one.
log=${1:?log file}
read -r p f < <(grep -E '^[a-z0-9+_-]+: [0-9]+ passed, [0-9]+ failed' "$log" |
  sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/' |
  awk '{p+=$1; f+=$2} END {print p+0, f+0}')
grep -E '^[a-z0-9+_-]+: [0-9]+ passed, [0-9]+ failed' "$log" | sed 's/^/  /'
echo "total: $p passed, $f failed"
[ "$f" -eq 0 ]
