#!/usr/bin/env python3
"""Crowd, hammer and per-key stream clients for backpressure.sh; one JSON line per request sent.

  crowd.py --url BASE --out FILE [--shape JSON] [--max-wait S] [--deadline S]
           [--crowd NAME:N:AT[:KEY]]... [--hammer NAME:LOOPS:ka|new:AT[:UNTIL]]...
           [--streams NAME:C:AT:FOR[:KEY]]...

All times are seconds from the scenario's start (CLOCK_MONOTONIC, the same clock in every
process of the machine), so the records of one run line up.

--crowd NAME:N:AT[:KEY]  N clients released together AT s (threads waiting on one barrier,
    then on the same instant). Each sends a streaming chat request on a new connection; on a
    429 or 503 it waits the time it was told (retry-after-ms, else Retry-After in seconds),
    counted from when the refusal arrived, and sends again on a new connection; at most
    --attempts (8) tries, and never a wait over --max-wait (it gives up instead, and the told
    time is still recorded).
--hammer NAME:LOOPS:MODE:AT[:UNTIL]  LOOPS clients that ignore Retry-After: each sends again
    --gap-ms (10) after every answer (a refusal or its stream's end), from AT until UNTIL (s),
    or, without UNTIL, until every crowd is done. MODE ka: one keep-alive connection per loop,
    reused while the gateway keeps it open; new: a new connection for every request.
--streams NAME:C:AT:FOR[:KEY]  C closed loops from AT for FOR s: each sends a stream and sends
    the next one when it ends (per-key TTFT under a flood).

Record (one JSON object per line): exp (the --exp tag), role (NAME), kind (crowd, hammer,
streams), key, client, attempt, new_conn (the request opened a connection), t_sent (request
written), t_head (status line and headers read), t_first (first SSE data: line), t_end (the
answer read to its end), status (0: no answer), told_ms (a refusal's wait, else null), gave_up
(a refusal whose wait was over --max-wait), error.
"""
import argparse
import http.client
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

REFUSED = (429, 503)


class Run:
    def __init__(self, args):
        u = urlsplit(args.url)
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
        self.shape = json.loads(args.shape)
        self.args = args
        self.t0 = time.monotonic() + 0.2  # the scenario starts once every thread exists
        self.out = open(args.out, "a", buffering=1)
        self.lock = threading.Lock()
        self.crowds_left = 0
        self.crowds_done = threading.Event()
        self.deadline = self.t0 + args.deadline

    def now(self):
        return time.monotonic() - self.t0

    def sleep_until(self, t):
        d = self.t0 + t - time.monotonic()
        if d > 0:
            time.sleep(d)

    def emit(self, rec):
        rec["exp"] = self.args.exp
        with self.lock:
            self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def body(self, tag):
        return json.dumps({"model": self.args.model, "stream": True, "max_tokens": 64,
                           "messages": [{"role": "user", "content": tag}], "mock": self.shape})

    def connect(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def send(self, conn, key, tag):
        """One request on conn (a new connection when None). Returns (record, conn or None:
        closed)."""
        rec = {"new_conn": conn is None, "t_sent": None, "t_head": None, "t_first": None,
               "t_end": None, "status": 0, "told_ms": None, "gave_up": False, "error": None}
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key:
            h["Authorization"] = "Bearer " + key
        try:
            if conn is None:
                conn = self.connect()
            conn.request("POST", self.path, self.body(tag), h)
            rec["t_sent"] = self.now()
            r = conn.getresponse()
            rec["t_head"] = self.now()
            rec["status"] = r.status
            if r.status in REFUSED:
                ms = r.getheader("retry-after-ms")
                s = r.getheader("retry-after")
                if ms is not None:
                    rec["told_ms"] = int(ms)
                elif s is not None:
                    rec["told_ms"] = int(s) * 1000
            seen = b""
            while True:
                piece = r.read1(65536)
                if not piece:
                    break
                if rec["t_first"] is None:
                    seen = (seen + piece)[-65536:]
                    if b"data:" in seen:
                        rec["t_first"] = self.now()
            rec["t_end"] = self.now()
            r.close()  # read to its end; the connection stays open unless the answer said close
            if r.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            rec["t_end"] = self.now()
            if conn is not None:
                conn.close()
            conn = None
        return rec, conn

    # --- roles ----------------------------------------------------------------------------
    def crowd_client(self, name, i, key, barrier, at):
        barrier.wait()
        self.sleep_until(at)
        try:
            for attempt in range(self.args.attempts):
                rec, _ = self.send(None, key, "%s %d %d" % (name, i, attempt))
                rec.update(role=name, kind="crowd", key=key, client=i, attempt=attempt)
                told = rec["told_ms"]
                if rec["status"] in REFUSED and told is not None and told / 1000.0 > self.args.max_wait:
                    rec["gave_up"] = True
                self.emit(rec)
                if rec["status"] not in REFUSED or told is None or rec["gave_up"]:
                    break
                self.sleep_until(rec["t_head"] + told / 1000.0)
                if time.monotonic() > self.deadline:
                    break
        finally:
            with self.lock:
                self.crowds_left -= 1
                if self.crowds_left == 0:
                    self.crowds_done.set()

    def hammer_loop(self, name, i, mode, at, until):
        self.sleep_until(at)
        conn, n = None, 0
        while time.monotonic() < self.deadline:
            if until is not None and self.now() >= until:
                break
            if until is None and self.crowds_done.is_set():
                break
            rec, conn = self.send(conn if mode == "ka" else None, None, "%s %d %d" % (name, i, n))
            if mode == "new" and conn is not None:
                conn.close()
                conn = None
            rec.update(role=name, kind="hammer", key=None, client=i, attempt=n)
            self.emit(rec)
            n += 1
            time.sleep(self.args.gap_ms / 1000.0)
        if conn is not None:
            conn.close()

    def stream_loop(self, name, i, key, at, dur):
        self.sleep_until(at)
        conn, n = None, 0
        while self.now() < at + dur and time.monotonic() < self.deadline:
            rec, conn = self.send(conn, key, "%s %d %d" % (name, i, n))
            rec.update(role=name, kind="streams", key=key, client=i, attempt=n)
            self.emit(rec)
            n += 1
            if rec["error"]:
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def fields(spec, n_min, n_max, what):
    f = spec.split(":")
    if not n_min <= len(f) <= n_max:
        raise SystemExit("crowd.py: bad --%s %r" % (what, spec))
    return f + [None] * (n_max - len(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--exp", default="")
    ap.add_argument("--model", default="mock-model")
    ap.add_argument("--shape", default='{"ttft_ms":40,"itl_ms":20,"tokens":20}')
    ap.add_argument("--crowd", action="append", default=[])
    ap.add_argument("--hammer", action="append", default=[])
    ap.add_argument("--streams", action="append", default=[])
    ap.add_argument("--attempts", type=int, default=8)
    ap.add_argument("--max-wait", type=float, default=60.0)
    ap.add_argument("--gap-ms", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--deadline", type=float, default=300.0, help="stop everything after S s")
    args = ap.parse_args()
    run = Run(args)
    threads = []
    crowds = [fields(s, 3, 4, "crowd") for s in args.crowd]
    run.crowds_left = sum(int(c[1]) for c in crowds)
    if run.crowds_left == 0:
        run.crowds_done.set()
    for name, n, at, key in crowds:
        barrier = threading.Barrier(int(n))
        threads += [threading.Thread(target=run.crowd_client, args=(name, i, key, barrier, float(at)))
                    for i in range(int(n))]
    for s in args.hammer:
        name, loops, mode, at, until = fields(s, 4, 5, "hammer")
        if mode not in ("ka", "new"):
            raise SystemExit("crowd.py: hammer mode is ka or new, not %r" % mode)
        threads += [threading.Thread(target=run.hammer_loop,
                                     args=(name, i, mode, float(at), float(until) if until else None))
                    for i in range(int(loops))]
    for s in args.streams:
        name, c, at, dur, key = fields(s, 4, 5, "streams")
        threads += [threading.Thread(target=run.stream_loop, args=(name, i, key, float(at), float(dur)))
                    for i in range(int(c))]
    threading.stack_size(256 * 1024)
    for th in threads:
        th.daemon = True
        th.start()
    for th in threads:
        th.join(max(0.0, run.deadline + args.timeout - time.monotonic()))
    run.out.close()
    alive = sum(1 for th in threads if th.is_alive())
    if alive:
        print("crowd.py: %d clients still running at the deadline" % alive, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
