#!/usr/bin/env python3
"""Deterministic OpenAI chat bodies for the long-prompt benchmarks.

  gen_body.py SIZE [--stream] [--model M] [--max-tokens N] [--messages N] [-o FILE]

SIZE is the body size in bytes (suffixes k/K = 1024, m/M = 1048576; "tiny" gives the one-line
body the small-request benchmarks use). The body is a chat transcript shaped like a long
prompt: a system message, then user and assistant turns alternating, prose with code blocks,
quotes, newlines, tabs and some non-ASCII text (so JSON escapes and UTF-8 are exercised as in
real traffic). 75 KiB has 60 messages; other sizes scale the message count with the size
(300 KiB: 240, 2 MiB: 1638), so a message stays ~1.25 KiB. The same arguments always give the
same bytes (a fixed seed, no clock); the body is padded to exactly SIZE bytes when SIZE is
larger than the minimal transcript.
"""
import argparse
import json
import random
import sys

WORDS = (
    "the of and to in is that for it as with was on be by this are from or at an have not which "
    "but all were when we there can more if has one will their its so about would what up out "
    "request response latency throughput gateway engine token stream buffer queue worker thread "
    "model prompt context window cache memory socket kernel batch schedule deadline retry error "
    "timeout budget upstream downstream header body chunk event parser validate allocate release "
    "measure percentile median noise baseline regression profile function pointer struct array"
).split()

NON_ASCII = ["café", "naïve", "Zürich", "“quoted”", "—", "…", "déjà vu", "µs", "→", "日本語",
             "Ελληνικά", "emoji 🙂"]

CODE = [
    'def handle(req):\n\tif not req.get("model"):\n\t\traise ValueError("model is required")\n'
    '\treturn {"ok": True, "n": len(req["messages"])}\n',
    'for (size_t i = 0; i < n; i++) {\n    if (buf[i] == \'"\' || buf[i] == \'\\\\\')\n'
    '        out[j++] = \'\\\\\';\n    out[j++] = buf[i];\n}\n',
    'SELECT id, created_at, status\n  FROM jobs\n WHERE status = \'queued\'\n'
    ' ORDER BY created_at\n LIMIT 100;\n',
    'curl -s http://127.0.0.1:8080/v1/chat/completions \\\n  -H "Content-Type: application/json" \\\n'
    '  -d \'{"model":"m","messages":[{"role":"user","content":"hi"}]}\'\n',
]

TINY = {"model": "mock-model", "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16, "stream": False}


def parse_size(s):
    s = s.strip()
    mult = 1
    if s[-1:] in "kK":
        mult, s = 1024, s[:-1]
    elif s[-1:] in "mM":
        mult, s = 1048576, s[:-1]
    return int(float(s) * mult)


def sentence(rng):
    n = rng.randint(6, 18)
    w = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.15:
        w.insert(rng.randrange(len(w)), rng.choice(NON_ASCII))
    if rng.random() < 0.1:
        w.insert(rng.randrange(len(w)), '"' + rng.choice(WORDS) + '"')
    s = " ".join(w)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ":"])


def content(rng, target):
    parts = []
    size = 0
    while size < target:
        r = rng.random()
        if r < 0.12:
            p = "```\n" + rng.choice(CODE) + "```"
        elif r < 0.2:
            p = "\n".join("- " + sentence(rng) for _ in range(rng.randint(2, 4)))
        else:
            p = " ".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        parts.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(parts)


def body(size, stream, model, max_tokens, n_messages):
    if n_messages is None:
        n_messages = max(2, round(60 * size / (75 * 1024)))
    def enc(d):
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

    def build(per):
        rng = random.Random(20261121 + n_messages)
        msgs = [{"role": "system", "content": "You are a careful assistant. " + content(rng, per)}]
        for i in range(1, n_messages):
            msgs.append({"role": "user" if i % 2 else "assistant", "content": content(rng, per)})
        return {"model": model, "messages": msgs, "max_tokens": max_tokens, "stream": stream}

    # JSON escaping (newlines, quotes, tabs; non-ASCII stays raw UTF-8, as JSON.stringify sends
    # it) and the envelope make the body larger than the text: aim low, correct the per-message
    # size until within 1% below, then trim or pad the last message to the exact size.
    per = max(16, int(size / n_messages * 0.9))
    for _ in range(5):
        doc = build(per)
        out = enc(doc)
        if 0.99 * size <= len(out) <= size:
            break
        per = max(16, int(per * size / len(out) * 0.995))
    last = doc["messages"][-1]
    while len(out) > size and len(last["content"]) > 1:
        last["content"] = last["content"][:-max(1, (len(out) - size) // 4)]
        out = enc(doc)
    if len(out) < size:
        last["content"] += " " * (size - len(out))  # one byte per space when encoded
        out = enc(doc)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--model", default="mock-model")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--messages", type=int)
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    if a.size == "tiny":
        d = dict(TINY, model=a.model, max_tokens=a.max_tokens, stream=a.stream)
        out = json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        out = body(parse_size(a.size), a.stream, a.model, a.max_tokens, a.messages)
    if a.output:
        with open(a.output, "wb") as f:
            f.write(out)
    else:
        sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
