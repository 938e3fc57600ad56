#!/usr/bin/env python3
"""Differential test of core/jscan.c against a strict reference built on Python's json module.

    diff.py CLI [CLI...] [--corpus DIR] [--mutations N] [--seed S] [-v]

Every input is given to each CLI (build/tests/jscan_cli and its portable twin, see
jscan_cli.c) and to the reference below; the status and every extracted field must agree.

The reference (the gateway's documented rules, in this order of precedence):
  1. more than 2^31-1 bytes                                  -> too_long
  2. bytes.decode('utf-8') strict (rejects overlong forms, surrogates, > U+10FFFF, truncated
     and stray bytes), then json.loads(str, parse_constant=<raise>, object_pairs_hook=...).
     Bytes are never given to json.loads: it would decode them with 'surrogatepass'.
     Any failure                                             -> invalid JSON
  3. nesting deeper than 64 (arrays + objects)               -> depth
  4. the top-level value is not an object                    -> not_object
  5. a key, at any depth, contains U+0000                    -> nul_key
  6. more than 128 top-level members                         -> too_many_keys
  7. two top-level keys equal (as Python strings)            -> dup_key
The C side reports the JSON error it meets first, so for (2) any of jscan's JSON-error
statuses (depth included: a body too deep before its syntax error) is agreement; everything
else must match exactly.

Inputs: the files of tests/jscan/corpus (y_*: accepted, n_*: rejected — the prefix is checked
against both sides), every strict prefix of each accepted corpus file and of a few generated
request bodies (truncation at every point), and N deterministic random mutations of valid
request bodies. Python standard library only.
"""

import json
import os
import random
import subprocess
import sys

MAX_LEN = 2**31 - 1
MAX_DEPTH = 64
MAX_TOP = 128
JSON_ERRORS = {"too_long", "empty", "truncated", "syntax", "bad_number", "bad_escape",
               "ctrl_char", "bad_utf8", "trailing", "depth"}
HERE = os.path.dirname(os.path.abspath(__file__))

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # a 5,000-digit integer is valid JSON


class Obj(dict):
    """A JSON object as the hook saw it: the members as written, duplicates included."""
    __slots__ = ("pairs",)


def reject_constant(name):
    raise ValueError("not JSON: " + name)


def make_hook(state):
    def hook(pairs):
        o = Obj(pairs)
        o.pairs = pairs
        if any("\0" in k for k, _ in pairs):
            state["nul"] = True
        return o
    return hook


def depth_of(v):
    best, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, list):
            best = max(best, d)
            stack.extend((y, d + 1) for y in x)
        elif isinstance(x, Obj):
            best = max(best, d)
            stack.extend((y, d + 1) for _, y in x.pairs)
    return best


def type_name(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def count_of(v):
    if isinstance(v, list):
        return len(v)
    if isinstance(v, Obj):
        return len(v.pairs)
    return 0


def str_repr(s):
    if "\0" in s:
        return "nul"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        return "surrogate"
    return "h:" + s.encode("utf-8").hex()


ABSENT = object()


def val_repr(v, ints):
    if v is ABSENT:
        return "absent"
    if isinstance(v, str) and not ints:
        return str_repr(v)
    if ints and type(v) is int and -2**63 <= v < 2**63:
        return v
    return type_name(v)


def ws(s, i):
    while i < len(s) and s[i] in " \t\n\r":
        i += 1
    return i


def walk(dec, s, i):
    """Members (key or None, start, end, value) of the container opening at s[i], found with
    json's own raw_decode: an implementation independent of jscan's span bookkeeping."""
    close = "}" if s[i] == "{" else "]"
    out = []
    i = ws(s, i + 1)
    if s[i] == close:
        return out
    while True:
        key = None
        if close == "}":
            key, i = dec.raw_decode(s, i)
            i = ws(s, i)
            assert s[i] == ":"
            i = ws(s, i + 1)
        v, j = dec.raw_decode(s, i)
        out.append((key, i, j, v))
        i = ws(s, j)
        if s[i] == ",":
            i = ws(s, i + 1)
            continue
        assert s[i] == close
        return out


def reference(data):
    if len(data) > MAX_LEN:
        return {"status": "too_long"}
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"status": "json"}
    state = {"nul": False}
    hook = make_hook(state)
    try:
        v = json.loads(s, object_pairs_hook=hook, parse_constant=reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return {"status": "json"}
    if depth_of(v) > MAX_DEPTH:
        return {"status": "depth"}
    if not isinstance(v, Obj):
        return {"status": "not_object"}
    if state["nul"]:
        return {"status": "nul_key"}
    if len(v.pairs) > MAX_TOP:
        return {"status": "too_many_keys"}
    if len(set(k for k, _ in v.pairs)) != len(v.pairs):
        return {"status": "dup_key"}

    dec = json.JSONDecoder(object_pairs_hook=make_hook({}), parse_constant=reject_constant)
    cum = {}

    def boff(ci):  # byte offset of character index ci
        if ci not in cum:
            cum[ci] = len(s[:ci].encode("utf-8"))
        return cum[ci]

    def blen(a, b):
        return boff(b) - boff(a)

    members = walk(dec, s, ws(s, 0))
    spans = {}
    out = {"status": "ok", "n": len(members), "members": []}
    for key, a, b, val in members:
        esc = 1 if isinstance(val, str) and "\\" in s[a:b] else 0
        out["members"].append([str_repr(key), type_name(val), boff(a), blen(a, b),
                               count_of(val), esc])
        spans[key] = (a, b, val)
    top = {k: sp[2] for k, sp in spans.items()}
    out["model"] = val_repr(top.get("model", ABSENT), False)
    out["user"] = val_repr(top.get("user", ABSENT), False)
    out["stream"] = val_repr(top.get("stream", ABSENT), True)
    so = top.get("stream_options", ABSENT)
    out["include_usage"] = (val_repr(so.get("include_usage", ABSENT), True)
                            if isinstance(so, Obj) else "n/a")
    out["max_tokens"] = val_repr(top.get("max_tokens", ABSENT), True)
    out["max_completion_tokens"] = val_repr(top.get("max_completion_tokens", ABSENT), True)
    for k in ("messages", "prompt", "input"):
        if k not in spans:
            out[k] = "absent"
        else:
            a, b, val = spans[k]
            out[k] = [type_name(val), count_of(val), blen(a, b)]
    if isinstance(top.get("messages"), list):
        a, _, _ = spans["messages"]
        elems = []
        for _, ea, eb, ev in walk(dec, s, a):
            role = val_repr(ev.get("role", ABSENT), False) if isinstance(ev, Obj) else "n/a"
            elems.append([type_name(ev), blen(ea, eb), count_of(ev), role])
        out["elems"] = elems
    return out


def agree(ref, got):
    if ref["status"] == "json":
        return got.get("status") in JSON_ERRORS
    got = {k: v for k, v in got.items() if k not in ("file", "err_off")}
    return ref == got


# --- inputs -----------------------------------------------------------------------------------

WORDS = ("the model answers questions about the weather and writes code in C and Python while "
         "keeping context short enough for a small GPU box serving many users at once").split()
UNI = ["é", "ü", "ß", "€", "日本語", "Привет", "😀", "中文", "\u2028", "\ufeff", "\U0010ffff"]
ESCAPES = ["\\n", "\\\"", "\\\\", "\\/", "\\t", "\\u00e9", "\\u20AC", "\\ud83d\\ude00",
           "\\ud800", "\\udc00x", "\\u0000", "\\b\\f\\r"]


def text(rng, n):
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.75:
            parts.append(rng.choice(WORDS))
        elif r < 0.9:
            parts.append(rng.choice(UNI))
        else:
            parts.append(rng.choice(ESCAPES))
    return " ".join(parts)


def request_body(rng, messages=None, words=30):
    """A plausible chat/completions/embeddings body, as JSON text with our own escapes."""
    msgs = []
    for _ in range(messages if messages is not None else rng.randint(1, 6)):
        m = ['"role":"%s"' % rng.choice(["system", "user", "assistant", "tool"]),
             '"content":"%s"' % text(rng, rng.randint(0, words))]
        if rng.random() < 0.2:
            m.append('"name":"n%d"' % rng.randint(0, 9))
        if rng.random() < 0.1:
            m.append('"tool_calls":[{"id":"c1","type":"function","function":{"name":"f",'
                     '"arguments":"{\\"x\\":1}"}}]')
        if rng.random() < 0.05:
            m.append('"role":"user"')  # a nested duplicate: allowed, last wins
        rng.shuffle(m)
        msgs.append("{" + ",".join(m) + "}")
    fields = ['"model":"%s"' % rng.choice(["gpt-4o", "llama3.2", "m\\u006fdel", "mock-model",
                                           "qwen/\\u4e2d"])]
    kind = rng.random()
    if kind < 0.6:
        fields.append('"messages":[' + ",".join(msgs) + "]")
    elif kind < 0.8:
        fields.append('"prompt":' + rng.choice(['"%s"' % text(rng, 5), '["a","b"]', "[]"]))
    else:
        fields.append('"input":' + rng.choice(['"%s"' % text(rng, 5), '["x"]', "[[1,2],[3]]"]))
    opt = [
        '"stream":%s' % rng.choice(["true", "false", "null", '"true"', "1"]),
        '"stream_options":%s' % rng.choice(['{"include_usage":true}', '{}', "null",
                                            '{"include_usage":false,"include_usage":true}']),
        '"max_tokens":%s' % rng.choice(["16", "0", "-1", "1.0", "1e3", "9223372036854775807",
                                        "9223372036854775808", "-9223372036854775808",
                                        "-0", '"16"']),
        '"max_completion_tokens":%d' % rng.randint(1, 4096),
        '"temperature":%s' % rng.choice(["0.7", "1", "0", "1.5e-1"]),
        '"user":"%s"' % text(rng, 2),
        '"tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object",'
        '"properties":{"city":{"type":"string"}},"required":["city"]}}}]',
        '"stop":["\\n\\n","END"]',
        '"logit_bias":{"50256":-100}',
        '"metadata":{"a":{"b":{"c":[[],[{}],null]}}}',
    ]
    fields += rng.sample(opt, rng.randint(0, len(opt)))
    rng.shuffle(fields)
    sep = rng.choice([",", ", ", ",\n  ", " ,\t"])
    body = "{" + sep.join(fields) + "}"
    if rng.random() < 0.2:
        body = rng.choice([" ", "\n", "\r\n", "\t"]) + body + rng.choice([" ", "\n", ""])
    return body.encode("utf-8")


TOKENS = [b'"', b"\\", b",", b":", b"{", b"}", b"[", b"]", b" ", b"\t", b"\n", b"\r", b"\x0c",
          b"\x00", b"\x1f", b"\x7f", b"\\u0000", b"\\ud800", b"\\udc00", b"\\ud83d\\ude00",
          b"\\u00", b"\\x", b"\\U0041", b"\xc0\xaf", b"\xc2", b"\xe0\x80\xaf", b"\xed\xa0\x80",
          b"\xed\x9f\xbf", b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf",
          b"\xf5", b"\xff", b"\x80", b"\xef\xbb\xbf", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3\xa9",
          b"1e5", b"-0", b"01", b"1.", b".5", b"-", b"+1", b"1e", b"NaN", b"Infinity", b"true",
          b"nul", b"null", b"fals", b'"model":"x",', b'"a":1,', b'"\\u0000":1,', b"[[[[",
          b"]]]]", b"{}", b"[]", b'""', b"0", b"9223372036854775808"]


def mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a token
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and b:  # delete a range
            del b[pos:pos + rng.randint(1, 8)]
        elif op == 3 and b:  # duplicate a range
            a = rng.randrange(len(b))
            b[pos:pos] = b[a:a + rng.randint(1, 16)]
        elif op == 4:  # truncate
            del b[pos:]
        elif op == 5:  # a duplicate or escaped top-level key
            k = rng.choice([b'"model":"y",', b'"m\\u006fdel":"y",', b'"\\u006dodel":1,',
                            b'"stream":false,', b'"messages":[],', b'"":0,', b'"\\ud800":0,'])
            i = b.find(b"{")
            if i >= 0:
                b[i + 1:i + 1] = k
        elif op == 6:  # nest deeper
            k = rng.choice([63, 64, 65, 66])
            i = b.find(b":")
            if i >= 0:
                b[i + 1:i + 1] = b"[" * k
                j = b.find(b",", i)
                j = j if j >= 0 else len(b) - 1
                b[j:j] = b"]" * k
        elif op == 7 and len(b) > 1:  # swap two bytes
            a, c = rng.randrange(len(b)), rng.randrange(len(b))
            b[a], b[c] = b[c], b[a]
        else:  # many top-level keys
            i = b.find(b"{")
            if i >= 0:
                n = rng.choice([100, 126, 127, 128, 129])
                b[i + 1:i + 1] = b"".join(b'"k%d":%d,' % (k, k) for k in range(n))
    return bytes(b)


def inputs(corpus_dir, n_mut, seed):
    """(name, bytes, expected) with expected 'y', 'n' or None."""
    cases = []
    accepted = []
    for name in sorted(os.listdir(corpus_dir)):
        with open(os.path.join(corpus_dir, name), "rb") as f:
            data = f.read()
        exp = name[0] if name[:2] in ("y_", "n_") else None
        cases.append((name, data, exp))
        if exp == "y":
            accepted.append((name, data))
    rng = random.Random(seed)
    bodies = [request_body(rng) for _ in range(200)]
    bodies.append(request_body(rng, messages=60))  # ~8 KB chat body
    big = [request_body(rng, messages=60, words=400) for _ in range(2)]  # ~75 KB chat bodies
    for name, data in accepted + [("gen%d" % k, b) for k, b in enumerate(bodies[:3])]:
        end = len(data.rstrip(b" \t\r\n"))
        for k in range(end):  # every strict prefix of the value: never accepted
            cases.append(("%s[:%d]" % (name, k), data[:k], "n"))
    for k, b in enumerate(bodies):
        cases.append(("body%d" % k, b, None))
    for k, b in enumerate(big):
        cases.append(("big%d" % k, b, None))
        for j in range(20):
            cases.append(("big%d_mut%d" % (k, j), mutate(rng, b), None))
    seeds = bodies + [d for _, d in accepted]
    for k in range(n_mut):
        cases.append(("mut%d" % k, mutate(rng, rng.choice(seeds)), None))
    return cases


def run_cli(cli, cases):
    payload = b"".join(b"%d\n" % len(d) + d for _, d, _ in cases)
    r = subprocess.run([cli, "--stream"], input=payload, stdout=subprocess.PIPE, check=True)
    lines = r.stdout.decode("ascii").splitlines()
    if len(lines) != len(cases):
        sys.exit("%s: %d answers for %d inputs" % (cli, len(lines), len(cases)))
    return [json.loads(x) for x in lines]


def main():
    args = sys.argv[1:]
    clis, corpus, n_mut, seed, verbose = [], os.path.join(HERE, "corpus"), 4000, 20261121, False
    while args:
        a = args.pop(0)
        if a == "--corpus":
            corpus = args.pop(0)
        elif a == "--mutations":
            n_mut = int(args.pop(0))
        elif a == "--seed":
            seed = int(args.pop(0))
        elif a == "-v":
            verbose = True
        else:
            clis.append(a)
    if not clis:
        sys.exit(__doc__)
    cases = inputs(corpus, n_mut, seed)
    refs = [reference(d) for _, d, _ in cases]
    bad = set()
    shown = 0
    stats = {}
    for cli in clis:
        for k, ((name, data, exp), ref, got) in enumerate(zip(cases, refs, run_cli(cli, cases))):
            ok = agree(ref, got)
            if exp == "y" and (ref["status"] != "ok" or got["status"] != "ok"):
                ok = False
            if exp == "n" and (ref["status"] == "ok" or got["status"] == "ok"):
                ok = False
            stats[got["status"]] = stats.get(got["status"], 0) + 1
            if ok:
                continue
            bad.add(k)
            shown += 1
            if shown <= 20:
                print("DISAGREE %s: %s (%r)" % (os.path.basename(cli), name, data[:120]))
                print("  reference: %s" % json.dumps(ref)[:600])
                print("  jscan:     %s" % json.dumps(got)[:600])
    if verbose:
        print("statuses:", ", ".join("%s %d" % kv for kv in sorted(stats.items())))
    failed = len(bad)
    print("jscan-diff: %d passed, %d failed (inputs, each against %d builds; corpus %s)"
          % (len(cases) - failed, failed, len(clis), os.path.relpath(corpus)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
