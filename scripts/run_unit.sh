#!/usr/bin/env bash
# Runs each Check unit-test binary given as an argument; prints a summary line.
set -u
pass=0 fail=0
for t in "$@"; do
  out=$(CK_FORK=yes "$t" 2>&1); rc=$?
  echo "$out" | grep -E '^[0-9]+%: Checks' | sed "s|^|$(basename "$t"): |"
  n=$(echo "$out" | sed -nE 's/^[0-9]+%: Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/p')
  read -r checks failures errors <<<"${n:-0 0 1}"
  bad=$((failures + errors)); [ $rc -ne 0 ] && [ $bad -eq 0 ] && bad=1
  [ $bad -ne 0 ] && echo "$out" | grep -vE '^[0-9]+%: Checks'
  pass=$((pass + checks - (failures + errors))); fail=$((fail + bad))
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
