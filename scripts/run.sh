#!/usr/bin/env bash
# `make run`: the bundled mock engine on 127.0.0.1:8001 and llmgate on 127.0.0.1:8080.
# Uses ./config.ini if present (copied from config.ini.example otherwise). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
[ -f config.ini ] || cp config.ini.example config.ini
"$B/mockllm" --listen 127.0.0.1:8001 --threads 1 --ttft-ms 20 --itl-ms 15 --tokens 24 --quiet &
mock=$!
trap 'kill $mock 2>/dev/null; wait $mock 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:8001/health 2>/dev/null && break; sleep 0.1; done
cat <<'MSG'
llmgate on http://127.0.0.1:8080 (mock engine on :8001). Try:
  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
  curl -sN http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'
MSG
"$B/llmgate" --config config.ini
