"""Fault matrix: a scripted bad engine (raw sockets, one mode per request) and misbehaving
clients. For every fault the exact outcome a client sees is checked — a 502/504 OpenAI error
envelope when nothing was relayed yet; once a head was relayed, a final SSE error event (event
streams) or a dropped connection (plain bodies), never a truncated body that looks complete —
and then that the gateway is back at its baseline: /metrics gauges at 0 (permits returned),
open descriptors and RSS flat across repetitions, and a normal request served right after.

The bad engine picks its behaviour from the first word of the request's first message
(`fault:NAME`), which the gateway forwards untouched; anything else gets a valid answer.

Where today's gateway is wrong the test states the right behaviour and is marked
expectedFailure, with a `# KNOWN:` comment saying what happens today.
"""

import json
import os
import random
import re
import select
import socket
import struct
import threading
import time
import unittest

from harness import (CTX, HOST, OwnTest, Raw, build_request, chat_body, request, sse_events, t)

CHAT = "/v1/chat/completions"
MODEL = "bad-model"
ENGINE_CONN_TIMEOUT = 20.0  # an engine connection left silent ends by itself after this
REPS = 5       # repetitions of each fault
REQUEST_S = 1  # [timeouts] request_s of the fault gateways
FAULT_KEY = "sk-fault-0123456789"
AUTH = {"Authorization": "Bearer " + FAULT_KEY}
FD_SLACK = 4   # descriptors over the baseline allowed (kept-alive upstream connections)
RSS_SLACK_KIB = (64 if CTX.sanitizer else 2) * 1024  # ASan's quarantine holds freed memory


# --------------------------------------------------------------------------------------------
# the bad engine

def ok_json(content):
    """The engine's valid non-stream answer to a request whose first message is `content`."""
    return json.dumps({"id": "chatcmpl-bad", "object": "chat.completion", "created": 1, "model": MODEL,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: " + content},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
                      separators=(",", ":")).encode()


def sse_event(content, i):
    chunk = {"id": "chatcmpl-bad", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": "%s#%d " % (content, i)}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def ok_sse_events(content, n=3):
    """The SSE events (bytes each) of the engine's valid stream: n content chunks, then [DONE]."""
    return [sse_event(content, i) for i in range(n)] + [b"data: [DONE]\n\n"]


def big_json(content, size):
    """A valid JSON answer of exactly `size` bytes (larger than the gateway's stream buffer)."""
    skel = ok_json(content + "|")
    return ok_json(content + "|" + "z" * (size - len(skel)))


class BadEngine:
    """An HTTP/1.1 'engine' on a loopback port whose answer to each POST is chosen by the first
    word of the first message's content. GET (health probes) always gets a valid answer.
    Every connection runs in a daemon thread with a socket timeout; stop() ends them all."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(256)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.url = "http://%s:%d" % (HOST, self.port)
        self.lock = threading.Lock()
        self.conns = set()
        self.accepted = 0
        self.served = {}  # mode -> POSTs received
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True, name="bad-engine")
        self.thread.start()

    def stop(self):
        self.stopping = True
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)
        self.lsock.close()

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def count(self, mode):
        with self.lock:
            return self.served.get(mode, 0)

    # -- plumbing

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(ENGINE_CONN_TIMEOUT)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True, name="bad-engine-conn").start()

    def _serve(self, c):
        buf = [b""]
        try:
            while not self.stopping:
                req = self._read_request(c, buf)
                if req is None:
                    return
                if not self._respond(c, *req):
                    return
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(c, buf):
        while b"\r\n\r\n" not in buf[0]:
            d = c.recv(65536)
            if not d:
                return None
            buf[0] += d
        head, _, rest = buf[0].partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            d = c.recv(65536)
            if not d:
                return None
            rest += d
        body, buf[0] = rest[:n], rest[n:]
        return method, path, headers, body

    @staticmethod
    def _silence(c):
        """Says nothing more; returns when the peer closes (or the socket times out)."""
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        return False

    @staticmethod
    def _rst(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False  # _serve closes it: with linger 0 that sends a RST

    @staticmethod
    def _head(status, ctype, length=None, chunked=False, extra=b""):
        h = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n" % (status, b"OK" if status == 200 else b"X", ctype)
        h += extra
        if length is not None:
            h += b"Content-Length: %d\r\n" % length
        if chunked:
            h += b"Transfer-Encoding: chunked\r\n"
        return h + b"\r\n"

    @staticmethod
    def _chunk(data):
        return b"%x\r\n%s\r\n" % (len(data), data)

    def _respond(self, c, method, path, headers, body):
        """Answers one request; returns True to keep the connection for the next one."""
        if method == "GET":
            doc = b'{"object":"list","data":[{"id":"%s","object":"model"}]}' % MODEL.encode()
            c.sendall(self._head(200, b"application/json", len(doc)) + doc)
            return True
        try:
            req = json.loads(body)
            content = req["messages"][0]["content"]
            stream = bool(req.get("stream"))
        except (ValueError, KeyError, IndexError, TypeError):
            content, stream = "", False
        word = content.split(" ", 1)[0]
        mode = word[len("fault:"):] if word.startswith("fault:") else "ok"
        with self.lock:
            self.served[mode] = self.served.get(mode, 0) + 1
        js = ok_json(content)
        evs = ok_sse_events(content)
        sse_head = self._head(200, b"text/event-stream", chunked=True)
        json_ct = b"application/json"

        if mode == "ok":
            if stream:
                c.sendall(sse_head)
                for e in evs:
                    c.sendall(self._chunk(e))
                c.sendall(b"0\r\n\r\n")
            else:
                c.sendall(self._head(200, json_ct, len(js)) + js)
            return True
        if mode == "close_status":  # in the middle of the status line
            c.sendall(b"HTTP/1.1 20")
            return False
        if mode == "close_headers":  # in the middle of the header block
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Len" %
                      (b"text/event-stream" if stream else json_ct))
            return False
        if mode == "ssh":  # not HTTP at all: an SSH server's banner, then it waits
            c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            return self._silence(c)
        if mode == "noise":  # binary noise, then close
            c.sendall(bytes(random.Random(7).getrandbits(8) for _ in range(4096)))
            return False
        if mode == "huge_line":  # one 1 MiB header line
            c.sendall(self._head(200, json_ct, len(js), extra=b"X-Huge: " + b"a" * (1 << 20) + b"\r\n") + js)
            return True
        if mode == "many_headers":  # 1 MiB of small header lines
            lines = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"v" * 16) for i in range((1 << 20) // 34))
            c.sendall(self._head(200, json_ct, len(js), extra=lines) + js)
            return True
        if mode == "short_cl":  # declares more than it sends, then closes
            if stream:
                c.sendall(self._head(200, b"text/event-stream", length=len(b"".join(evs)) + 100)
                          + evs[0] + evs[1])
            else:
                c.sendall(self._head(200, json_ct, len(js) + 100) + js)
            return False
        if mode == "short_cl_big":  # the same with a plain body larger than the stream buffer
            big = big_json(content, 256 * 1024)
            c.sendall(self._head(200, json_ct, len(big)) + big[:160 * 1024])
            time.sleep(0.2)
            return False
        if mode == "long_cl":  # sends more than it declares, and keeps the connection
            c.sendall(self._head(200, json_ct, len(js)) + js +
                      b'{"smuggled":true}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}')
            return True
        if mode == "stall":  # half the body (two events), then silence
            if stream:
                c.sendall(sse_head + self._chunk(evs[0]))
                c.sendall(self._chunk(evs[1]))
            else:
                c.sendall(self._head(200, json_ct, len(js)) + js[:len(js) // 2])
            return self._silence(c)
        if mode == "stall_big":  # a plain body larger than the stream buffer, stalled
            big = big_json(content, 256 * 1024)
            c.sendall(self._head(200, json_ct, len(big)) + big[:160 * 1024])
            return self._silence(c)
        if mode == "reset":  # some of the answer, then a RST
            if stream:
                c.sendall(sse_head + self._chunk(evs[0]))
                c.sendall(self._chunk(evs[1]))
            else:
                c.sendall(self._head(200, json_ct, len(js)) + js[:len(js) // 2])
            time.sleep(0.1)
            return self._rst(c)
        if mode == "reset_big":
            big = big_json(content, 256 * 1024)
            c.sendall(self._head(200, json_ct, len(big)) + big[:160 * 1024])
            time.sleep(0.2)
            return self._rst(c)
        if mode == "never":  # reads the request, never answers
            return self._silence(c)
        c.sendall(self._head(500, json_ct, 2) + b"{}")
        return True


# --------------------------------------------------------------------------------------------
# gateway state

def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def tcp_sockets():
    """{socket inode: (local port, remote port, listening)} for every TCP socket on the box."""
    out = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    col = line.split()
                    local, remote, state, inode = col[1], col[2], col[3], int(col[9])
                    out[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                  state == "0A")
        except FileNotFoundError:
            pass
    return out


def fd_census(pid, gw_port, engine_port):
    """The gateway's descriptors in three counts: (client connections, upstream connections to
    the engine, everything else). Upstream connections are curl's keep-alive pool, which grows
    with the largest number of requests that ran at once and is not a leak; the other two must
    come back to the baseline."""
    socks = tcp_sockets()
    client = upstream = other = 0
    base = "/proc/%d/fd" % pid
    for fd in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, fd))
        except FileNotFoundError:
            continue  # closed while we looked
        m = re.match(r"socket:\[(\d+)\]$", target)
        info = socks.get(int(m.group(1))) if m else None
        if info and info[0] == gw_port and not info[2]:
            client += 1
        elif info and info[1] == engine_port:
            upstream += 1
        else:
            other += 1
    return client, upstream, other


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def metrics(port):
    """The gauges that must be 0 when the gateway is idle: {name: value}."""
    r = request(HOST, port, "GET", "/metrics", timeout=t(5))
    if r.status != 200:
        raise AssertionError("GET /metrics -> %r" % (r,))
    text = r.body.decode()
    out = {}
    for name in ("llmgate_inflight", "llmgate_queued", "llmgate_active_jobs", "llmgate_body_memory_bytes"):
        m = re.search(r"^%s (\d+)$" % name, text, re.M)
        if not m:
            raise AssertionError("%s missing from /metrics" % name)
        out[name] = int(m.group(1))
    for m in re.finditer(r'^(llmgate_(?:backend|key)_inflight\{(?:backend|key)="[^"]*"\}) (\d+)$',
                         text, re.M):
        out[m.group(1)] = int(m.group(2))
    if not any(k.startswith("llmgate_backend_inflight") for k in out):
        raise AssertionError("llmgate_backend_inflight missing from /metrics")
    return out


class BaselineTest(OwnTest):
    """A gateway whose idle state is measured once (descriptors after a warm-up) and checked
    after every fault. Subclasses start the gateway in start() and say what a normal request
    is in normal()."""

    @classmethod
    def fixture(cls):
        cls.start()
        cls.pid = cls.gw.proc.pid
        for i in range(8):  # warm-up: every worker's upstream connection, allocator arenas
            for stream in (False, True):
                cls.normal("warm-up %d" % i, stream)
        cls.base = cls.settled_census(None)

    @classmethod
    def start(cls):
        raise NotImplementedError

    @classmethod
    def normal(cls, content, stream):
        """A normal request; raises unless it got the exact expected answer."""
        raise NotImplementedError

    @classmethod
    def census(cls):
        return fd_census(cls.pid, cls.gw.port, cls.engine_port)

    @classmethod
    def settled_census(cls, fits, timeout=None):
        """The gateway's descriptor census once `fits(census)` holds (or, with fits None, once
        it stays the same for 50 ms), or the last census when `timeout` runs out."""
        deadline = time.monotonic() + (timeout or t(3))
        n = cls.census()
        while time.monotonic() < deadline:
            if fits is not None and fits(n):
                return n
            time.sleep(0.05)
            m = cls.census()
            if fits is None and m == n:
                return m
            n = m
        return n

    def wait_idle(self, what):
        """Every gauge of /metrics back to 0 (permits returned, nothing queued or running)."""
        deadline = time.monotonic() + t(5)
        m = metrics(self.gw.port)
        while any(m.values()):
            if time.monotonic() > deadline:
                self.fail("after %s the gateway did not come back to idle within %.1fs: %s"
                          % (what, t(5), {k: v for k, v in m.items() if v}))
            time.sleep(0.05)
            m = metrics(self.gw.port)

    def assertBaseline(self, what, stream=False, upstream=0):
        """Gauges back to 0, no client connection left, other descriptors back at the
        baseline, at most `upstream` more pooled engine connections than at the baseline
        (the most requests the fault ran at once beyond the warm-up's), a normal request
        served. Returns (descriptors, RSS KiB) for the growth check."""
        self.wait_idle(what)
        b_client, b_up, b_other = self.base
        # the pool keeps what the busiest test of the class needed (curl keeps idle
        # connections for two minutes)
        type(self).upstream_peak = max(getattr(self, "upstream_peak", 0), upstream, FD_SLACK)
        up_max = b_up + self.upstream_peak

        def fits(c):
            return c[0] == 0 and c[1] <= up_max and c[2] <= b_other + 1

        c = self.settled_census(fits)
        self.assertTrue(fits(c), "after %s the gateway holds %d client connections, %d engine connections "
                        "(at most %d expected), %d other descriptors (baseline %r)"
                        % (what, c[0], c[1], up_max, c[2], self.base))
        rss = rss_kib(self.pid)
        self.normal("after " + what, stream)
        return sum(c), rss

    def assertNoGrowth(self, what, samples):
        """No descriptor growth with every repetition; RSS within a small bound (from the
        second sample on: the first repetition may size buffers once)."""
        fds = [s[0] for s in samples]
        rss = [s[1] for s in samples]
        if len(fds) >= 3:
            self.assertFalse(all(b > a for a, b in zip(fds, fds[1:])),
                             "%s: descriptors grow with every repetition: %s" % (what, fds))
        grew = rss[-1] - rss[min(1, len(rss) - 1)]
        self.assertLess(grew, RSS_SLACK_KIB, "%s: RSS grew %d KiB over %d repetitions: %s KiB"
                        % (what, grew, len(rss), rss))


class FaultTest(BaselineTest):
    """A gateway in front of one bad engine (health probes off, so only the test's requests
    open upstream connections)."""

    gw_name = "llmgate-faults"

    @classmethod
    def start(cls):
        cls.engine = BadEngine()
        # a key with limits, so that its slots are checked back at 0 after every fault too
        cls.gw = cls.own_gateway({"bad": (cls.engine.url, [MODEL], 8)},
                                 timeouts={"request_s": REQUEST_S, "connect_ms": 2000},
                                 keys={"fault": FAULT_KEY},
                                 extra=[("key.fault", {"max_concurrency": 100, "rpm": 100000})],
                                 env={"LLMGATE_HEALTH_INTERVAL_MS": "0"}, name=cls.gw_name)
        cls.engine_port = cls.engine.port

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.engine.stop()

    @classmethod
    def normal(cls, content, stream):
        with Raw(HOST, cls.gw.port, t(10)) as c:
            c.send_request("POST", CHAT, chat_body(content, stream=stream, model=MODEL), headers=AUTH)
            r = c.read_response()
        want = b"".join(ok_sse_events(content)) if stream else ok_json(content)
        if r.status != 200 or r.body != want:
            raise AssertionError("normal request (stream=%s) -> %r; expected 200 %r" % (stream, r, want[:300]))
        return r

    def send(self, content, stream, timeout=None):
        """One request through the gateway; returns (Resp, seconds). The body is read up to its
        framing, or to EOF / reset (then resp.complete is False)."""
        t0 = time.monotonic()
        with Raw(HOST, self.gw.port, timeout or t(10)) as c:
            c.send_request("POST", CHAT, chat_body(content, stream=stream, model=MODEL), headers=AUTH)
            r = c.read_response(tolerate_reset=True)
        return r, time.monotonic() - t0

    def repeat(self, mode, stream, check, reps=REPS, timeout=None):
        """Provokes fault `mode` `reps` times; check(resp, seconds, content) judges each outcome;
        after each the baseline is checked, and at the end that nothing grew."""
        what = "fault %s (%s)" % (mode, "stream" if stream else "non-stream")
        samples = []
        for i in range(reps):
            content = "fault:%s rep%d" % (mode, i)
            before = self.engine.count(mode)
            r, took = self.send(content, stream, timeout)
            self.assertEqual(self.engine.count(mode), before + 1, "the engine did not get the request once")
            with self.subTest(rep=i):
                check(r, took, content)
            samples.append(self.assertBaseline(what, stream))
        self.assertNoGrowth(what, samples)

    # -- outcomes

    def assert502(self, r, took=None, content=None):
        self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")

    def assert504(self, r, took, content=None):
        self.assertErrorEnvelope(r, 504, "gateway_timeout", "timeout")
        self.assertGreater(took, REQUEST_S - 0.3, "504 before request_s")
        self.assertLess(took, REQUEST_S + t(2), "504 late")

    def assertStreamError(self, r, n_events, content, type_, code):
        """A relayed event stream: exactly the engine's first n_events events, byte for byte,
        then one SSE error event (type_, code) in the OpenAI envelope, then the stream's end."""
        self.assertSSEHeaders(r)
        prefix = b"".join(ok_sse_events(content)[:n_events])
        self.assertEqual(r.body[:len(prefix)], prefix, "relayed events differ")
        rest = r.body[len(prefix):]
        self.assertTrue(rest.startswith(b"data: ") and rest.endswith(b"\n\n") and rest.count(b"\n\n") == 1,
                        "expected exactly one SSE error event after %d events; got %r" % (n_events, rest[:600]))
        obj = json.loads(sse_events(rest)[0])
        self.assertEqual(set(obj), {"error"}, obj)
        err = obj["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, err)
        self.assertIsInstance(err["message"], str)
        self.assertIsNone(err["param"])
        self.assertEqual((err["type"], err["code"]), (type_, code), err)
        self.assertTrue(r.complete, "the stream did not end after its error event")

    def assertDropped(self, r, declared):
        """A plain body whose head was relayed, then broken: fewer bytes than its Content-Length
        and the connection dropped, so no client takes it for a whole answer."""
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.framing, "length", r)
        self.assertEqual(int(r.headers["content-length"]), declared, r)
        self.assertFalse(r.complete, "a broken plain body arrived complete")
        self.assertLess(len(r.body), declared)


class TestEngineFaults(FaultTest):
    """Faults the gateway notices at once (no timeout involved)."""

    gw_name = "llmgate-faults"

    def test_control_valid_answer(self):
        def ok(stream):
            def check(r, took, content):
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.complete)
                if stream:
                    self.assertSSEHeaders(r)
                    self.assertEqual(r.body, b"".join(ok_sse_events(content)))
                else:
                    self.assertEqual(r.headers.get("content-type"), "application/json", r)
                    self.assertEqual(r.body, ok_json(content))
            return check
        for stream in (False, True):
            self.repeat("ok", stream, ok(stream))

    def test_close_in_status_line(self):
        for stream in (False, True):
            self.repeat("close_status", stream, self.assert502)

    def test_close_in_headers_nonstream(self):
        self.repeat("close_headers", False, self.assert502)

    def test_close_in_headers_stream(self):
        self.repeat("close_headers", True, self.assert502)

    def test_close_in_headers_leaves_no_trace(self):
        """Whatever the status (the two tests above), the gateway answers with a JSON error and
        comes back to its baseline: this part holds today and must not hide behind them."""
        def check(r, took, content):
            self.assertIn(r.status, (500, 502), r)
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        for stream in (False, True):
            self.repeat("close_headers", stream, check)

    def test_garbage_ssh_banner(self):
        """An SSH server's banner, then silence: refused at once, not after request_s."""
        def check(r, took, content):
            self.assert502(r)
            self.assertLess(took, REQUEST_S * 0.8, "garbage was not refused at once")
        for stream in (False, True):
            self.repeat("ssh", stream, check)

    def test_garbage_binary_noise(self):
        for stream in (False, True):
            self.repeat("noise", stream, self.assert502)

    def test_huge_header_line(self):
        """One 1 MiB header line."""
        for stream in (False, True):
            self.repeat("huge_line", stream, self.assert502)

    def test_many_header_lines(self):
        """1 MiB of 34-byte header lines."""
        for stream in (False, True):
            self.repeat("many_headers", stream, self.assert502)

    def test_short_content_length_nonstream(self):
        """Declares 100 bytes more than it sends, then closes: a plain answer is relayed only
        whole, so nothing went out yet -> 502."""
        self.repeat("short_cl", False, self.assert502)

    def test_short_content_length_stream(self):
        """An event stream with a Content-Length longer than the two events sent, then EOF:
        the two events, then an SSE bad_gateway event."""
        self.repeat("short_cl", True,
                    lambda r, took, content: self.assertStreamError(r, 2, content, "upstream_error", "bad_gateway"))

    def test_short_content_length_big_body(self):
        """A 256 KiB plain answer (over the stream buffer, so its head goes out early) cut at
        160 KiB by EOF: the client's connection is dropped short of the Content-Length."""
        self.repeat("short_cl_big", False, lambda r, took, content: self.assertDropped(r, 256 * 1024))

    def test_long_content_length(self):
        """More bytes than declared (something that looks like a second response): the client
        gets exactly the declared body, and the extra bytes never reach a later request."""
        def check(r, took, content):
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete)
            self.assertEqual(r.body, ok_json(content))
            for i in range(4):  # whichever worker's pooled connection comes next
                self.normal("after long_cl %d" % i, bool(i % 2))
        self.repeat("long_cl", False, check)

    def test_reset_mid_body(self):
        """Half of a plain body, then a RST: nothing relayed yet -> 502."""
        self.repeat("reset", False, self.assert502)

    def test_reset_mid_body_big(self):
        """160 KiB of a 256 KiB plain body (head already relayed), then a RST: dropped."""
        self.repeat("reset_big", False, lambda r, took, content: self.assertDropped(r, 256 * 1024))

    def test_reset_mid_stream(self):
        """Two SSE events, then a RST (SO_LINGER 0): the two events, then an SSE bad_gateway event."""
        self.repeat("reset", True,
                    lambda r, took, content: self.assertStreamError(r, 2, content, "upstream_error", "bad_gateway"))


class TestEngineTimeouts(FaultTest):
    """Faults only request_s ends (request_s = 1)."""

    gw_name = "llmgate-faults-timeouts"

    def assertUpstreamClosed(self, before):
        """The gateway closed its connection to the silent engine (it does not keep a
        connection whose answer it abandoned)."""
        deadline = time.monotonic() + t(3)
        while self.engine.open_connections() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(self.engine.open_connections(), before,
                             "the gateway kept its connection to an engine it timed out")

    def repeat_closing(self, mode, stream, check, reps=REPS, timeout=None):
        def wrapped(r, took, content):
            check(r, took, content)
            self.assertUpstreamClosed(self.conns_before)
        self.conns_before = self.engine.open_connections()
        self.repeat(mode, stream, wrapped, reps, timeout)

    def test_never_answers(self):
        for stream in (False, True):
            self.repeat_closing("never", stream, self.assert504)

    def test_stall_mid_body(self):
        """Half of a plain body, then silence: nothing relayed yet -> 504 at request_s."""
        self.repeat_closing("stall", False, self.assert504)

    def test_stall_mid_body_big(self):
        """160 KiB of a 256 KiB plain body (head relayed), then silence: the connection is
        dropped at request_s."""
        def check(r, took, content):
            self.assertDropped(r, 256 * 1024)
            self.assertGreater(took, REQUEST_S - 0.3)
            self.assertLess(took, REQUEST_S + t(2))
        self.repeat_closing("stall_big", False, check)

    def test_stall_mid_stream(self):
        """Two SSE events, then silence: the stream must end with an SSE timeout event within
        request_s (plus slack) of the silence instead of hanging the client."""
        wait = REQUEST_S + t(3)
        samples = []
        for i in range(REPS):
            content = "fault:stall stream%d" % i
            before = self.engine.open_connections()
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send_request("POST", CHAT, chat_body(content, stream=True, model=MODEL), headers=AUTH)
                r = c.read_head()
                self.assertSSEHeaders(r)
                prefix = b"".join(ok_sse_events(content)[:2])
                got = b""
                c.settimeout(wait)
                try:
                    for _, piece in c.iter_body(r):
                        got += piece
                except (EOFError, ConnectionResetError):
                    pass
                except (TimeoutError, socket.timeout):
                    self.fail("after %s, nothing for %.1fs: the stream hangs (no SSE error event, no end)"
                              % ("the two events" if got == prefix else "%r" % (got[:300],), wait))
            r.body = got
            self.assertStreamError(r, 2, content, "gateway_timeout", "timeout")
            self.assertUpstreamClosed(before)
            samples.append(self.assertBaseline("a stalled stream", True))
        self.assertNoGrowth("stalled stream", samples)

    def test_stall_mid_stream_client_leaves(self):
        """Two SSE events, then silence; the client gives up after 0.3 s: the gateway cancels
        the upstream transfer (its idle-stream watch) and returns to its baseline."""
        samples = []
        for i in range(REPS):
            before = self.engine.open_connections()
            content = "fault:stall leaves%d" % i
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send_request("POST", CHAT, chat_body(content, stream=True, model=MODEL), headers=AUTH)
                r = c.read_head()
                self.assertSSEHeaders(r)
                want = b"".join(ok_sse_events(content)[:2])
                got = b""
                it = c.iter_body(r)
                while len(got) < len(want):
                    got += next(it)[1]
                self.assertEqual(got, want)
                time.sleep(0.3)
            self.assertUpstreamClosed(before)
            samples.append(self.assertBaseline("a stalled stream the client left", True))
        self.assertNoGrowth("stalled stream left by its client", samples)


class TestClientFaults(BaselineTest):
    """Misbehaving clients, in front of the normal mock engine."""

    @classmethod
    def start(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 5, name="mock-faults")
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, name="llmgate-client-faults")
        cls.engine_port = cls.mock.port
        cls.hostport = "%s:%d" % (HOST, cls.gw.port)

    @classmethod
    def expected(cls, body):
        """The mock's answer to `body`, asked directly (it is deterministic for a body)."""
        r = request(cls.mock.host, cls.mock.port, "POST", CHAT, body, timeout=t(10))
        if r.status != 200:
            raise AssertionError("mock direct -> %r" % (r,))
        return r.body

    @classmethod
    def normal(cls, content, stream):
        body = chat_body(content, stream=stream)
        with Raw(HOST, cls.gw.port, t(10)) as c:
            c.send_request("POST", CHAT, body)
            r = c.read_response()
        if r.status != 200 or r.body != cls.expected(body):
            raise AssertionError("normal request (stream=%s) -> %r" % (stream, r))
        return r

    def req(self, body):
        return build_request("POST", CHAT, self.hostport, body)

    def test_pipelining(self):
        """Two requests in one send on one connection: both answered, in order, byte for byte,
        and the connection stays open for a third."""
        for first, second in ((False, True), (True, False), (False, False), (True, True)):
            with self.subTest(first_stream=first, second_stream=second):
                b1 = chat_body("pipelined one %s" % first, stream=first)
                b2 = chat_body("pipelined two %s" % second, stream=second, max_tokens=3)
                with Raw(HOST, self.gw.port, t(10)) as c:
                    c.send(self.req(b1) + self.req(b2))
                    r1 = c.read_response()
                    r2 = c.read_response()
                    c.send(self.req(b1))
                    r3 = c.read_response()
                self.assertEqual((r1.status, r2.status, r3.status), (200, 200, 200), (r1, r2, r3))
                self.assertEqual(r1.body, self.expected(b1))
                self.assertEqual(r2.body, self.expected(b2))
                self.assertEqual(r3.body, r1.body)
        self.assertBaseline("pipelining")

    def test_slowloris(self):
        """Eight clients send their headers one byte every 200 ms for 3 s; meanwhile every
        request on another connection is answered within 1 s. Then the slow clients finish
        their requests and are answered too."""
        n_slow = 8
        body = chat_body("slow client")
        want = self.expected(body)
        data = self.req(body)
        slow = [Raw(HOST, self.gw.port, t(10)) for _ in range(n_slow)]
        try:
            sent = 0
            t_end = time.monotonic() + 3.0
            worst = 0.0
            served = 0
            while time.monotonic() < t_end:
                tick = time.monotonic()
                for c in slow:
                    c.send(data[sent:sent + 1])
                sent += 1
                while time.monotonic() - tick < 0.2:
                    t0 = time.monotonic()
                    self.normal("while slowloris %d" % served, served % 2 == 1)
                    worst = max(worst, time.monotonic() - t0)
                    served += 1
                    time.sleep(0.05)
            self.assertLess(sent, data.index(b"\r\n\r\n"), "the slow headers were complete before the end")
            self.assertGreater(served, 10)
            self.assertLess(worst, t(1), "a normal request took %.2fs while slow clients trickled headers" % worst)
            for c in slow:
                c.send(data[sent:])
            for c in slow:
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, want)
        finally:
            for c in slow:
                c.close()
        self.assertBaseline("slowloris", upstream=n_slow + 1)

    def test_half_body_then_close(self):
        """Content-Length 2x what is sent, then close: nothing reaches the engine, the body
        budget and every gauge go back to 0, no descriptor is kept."""
        body = chat_body("half a body " + "h" * 2000)
        head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (CHAT, self.hostport, 2 * len(body))).encode()
        samples = []
        for i in range(REPS):
            before = self.mock.stats()["requests"]
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send(head + body)
                time.sleep(0.1)
            self.wait_idle("half a body")
            self.assertEqual(self.mock.stats()["requests"], before, "half a request reached the engine")
            samples.append(self.assertBaseline("half a body"))
        self.assertNoGrowth("half a body", samples)

    def half_close(self, stream, ttft_ms, outcome=True):
        """A complete request, then shutdown(SHUT_WR), then read. With outcome, the answer must
        be whole; always, the gateway must come back to its baseline."""
        body = chat_body("half close %s %d" % (stream, ttft_ms), stream=stream, mock={"ttft_ms": ttft_ms})
        want = self.expected(body)
        samples = []
        for i in range(REPS if outcome else 3):
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send(self.req(body))
                c.sock.shutdown(socket.SHUT_WR)
                r = c.read_response(tolerate_reset=True)
            if outcome:
                with self.subTest(rep=i):
                    self.assertEqual(r.status, 200, r)
                    # the half-close was told from a leave with an interim 100 (at most one)
                    self.assertLessEqual(len(r.interim), 1, r.interim)
                    self.assertTrue(all(x.status == 100 for x in r.interim), r.interim)
                    self.assertTrue(r.complete, "answer cut: %r" % (r,))
                    self.assertEqual(r.body, want)
            samples.append(self.assertBaseline("a half-closed client", stream))
        self.assertNoGrowth("half-closed client", samples)

    def test_half_close_leaves_no_trace(self):
        """Whatever a half-closed client gets (the two tests below), the engine's request ends
        and the gateway comes back to its baseline: this part holds today."""
        for stream in (False, True):
            self.half_close(stream, 500, outcome=False)
            self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "mock active == 0")

    def test_half_close_nonstream(self):
        """shutdown(SHUT_WR) after a complete request, engine thinks 500 ms: answered whole."""
        self.half_close(False, 500)

    def test_half_close_stream(self):
        """The same for a stream."""
        self.half_close(True, 500)


class TestClientDeadlines(BaselineTest):
    """[server] client_header_timeout_s, client_body_timeout_s, keepalive_timeout_s and the
    connection table at max_connections, with short deadlines, in front of the mock engine."""

    HEADER_S, BODY_S, KEEPALIVE_S, MAX_CONNS = 2, 1, 2, 16
    BODY_TOTAL_S = 5
    LATE = 0.6  # the watchdog ticks every 250 ms; a loaded CI machine adds some

    @classmethod
    def start(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 5, name="mock-deadlines")
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 server={"client_header_timeout_s": cls.HEADER_S,
                                         "client_body_timeout_s": cls.BODY_S,
                                         "client_body_deadline_s": cls.BODY_TOTAL_S,
                                         "keepalive_timeout_s": cls.KEEPALIVE_S,
                                         "max_connections": cls.MAX_CONNS},
                                 name="llmgate-deadlines")
        cls.engine_port = cls.mock.port
        cls.hostport = "%s:%d" % (HOST, cls.gw.port)

    normal = classmethod(TestClientFaults.normal.__func__)
    expected = classmethod(TestClientFaults.expected.__func__)

    def req(self, body):
        return build_request("POST", CHAT, self.hostport, body)

    def gauge(self, name):
        r = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5))
        m = re.search(r"^%s (\d+)$" % name, r.body.decode(), re.M)
        self.assertTrue(m, "%s missing from /metrics" % name)
        return int(m.group(1))

    def wait_no_clients(self):
        """Until the gateway holds no client socket (a /metrics look's connection, closed by
        the test, may still be in its table for a moment, and would be the first evicted)."""
        deadline = time.monotonic() + t(3)
        while self.census()[0]:
            self.assertLess(time.monotonic(), deadline, "client connections stay open")
            time.sleep(0.02)

    def until_closed(self, c, limit):
        """Everything the gateway sends until it closes c, and when it closed (monotonic)."""
        c.settimeout(limit)
        out = b""
        while True:
            try:
                d = c.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return out, time.monotonic()
            out += d

    def assert408(self, data, what):
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), "%s: %r" % (what, data[:200]))
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Type: application/json\r\n", head + b"\r\n")
        self.assertIn(b"\r\nConnection: close", head)
        self.assertIn(b"\r\nX-Request-ID: ", head)
        err = json.loads(body)["error"]
        self.assertEqual((err["type"], err["code"]), ("invalid_request_error", "request_timeout"), body)
        self.assertEqual(len(body), int(re.search(rb"Content-Length: (\d+)", head).group(1)))

    def test_header_deadline(self):
        """Headers trickled a byte every 100 ms: 408 and close at client_header_timeout_s from
        the connection's start, although a byte came just before."""
        before = self.gauge("llmgate_client_header_timeouts_total")
        data = self.req(chat_body("slow headers"))
        with Raw(HOST, self.gw.port, t(10)) as c:
            t0 = time.monotonic()
            for i in range(int(self.HEADER_S / 0.1) + 10):
                try:
                    c.send(data[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.1)
            out, t1 = self.until_closed(c, t(5))
        self.assert408(out, "slow headers")
        self.assertGreaterEqual(t1 - t0, self.HEADER_S - 0.05)
        self.assertLess(t1 - t0, self.HEADER_S + 1.0 + self.LATE)
        self.assertEqual(self.gauge("llmgate_client_header_timeouts_total"), before + 1)
        self.assertBaseline("a slow header")

    def test_silent_connection(self):
        """A connection that never sends a byte is closed at the header deadline, with no reply."""
        with Raw(HOST, self.gw.port, t(10)) as c:
            t0 = time.monotonic()
            out, t1 = self.until_closed(c, t(5))
        self.assertEqual(out, b"")
        self.assertGreaterEqual(t1 - t0, self.HEADER_S - 0.05)
        self.assertLess(t1 - t0, self.HEADER_S + self.LATE)
        self.assertBaseline("a silent connection")

    def test_body_deadline(self):
        """A body that stops half-way: 408 client_body_timeout_s after the last byte; the
        body's memory is returned."""
        body = chat_body("half a body")
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send(self.req(body)[:-len(body) // 2])
            t0 = time.monotonic()
            out, t1 = self.until_closed(c, t(5))
        self.assert408(out, "stalled body")
        self.assertIn(b"client_body_timeout_s", out)
        self.assertGreaterEqual(t1 - t0, self.BODY_S - 0.05)
        self.assertLess(t1 - t0, self.BODY_S + self.LATE)
        self.assertBaseline("a stalled body")

    def test_slow_body_that_keeps_coming(self):
        """client_body_timeout_s is between two reads, not for the whole body: a body sent a
        byte every 150 ms for 3 s in all is served."""
        body = chat_body("a slow but steady body " + "s" * 8)
        data = self.req(body)
        head = data[:-len(body)]
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send(head)
            step = max(1, len(body) // 20)
            t0 = time.monotonic()
            for i in range(0, len(body), step):
                c.send(body[i:i + step])
                time.sleep(0.15)
            r = c.read_response()
        self.assertGreater(time.monotonic() - t0, 2 * self.BODY_S)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, self.expected(body))
        self.assertBaseline("a slow steady body")

    def test_body_total_deadline(self):
        """A body that keeps coming, a byte every 150 ms (each within client_body_timeout_s),
        is cut with 408 at client_body_deadline_s from its start; its memory is returned."""
        body = chat_body("an endless body " + "e" * 200)
        data = self.req(body)
        head = data[:-len(body)]
        with Raw(HOST, self.gw.port, t(20)) as c:
            c.send(head)
            t0 = time.monotonic()
            for i in range(len(body) - 1):
                try:
                    c.send(body[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                if time.monotonic() - t0 > self.BODY_TOTAL_S + 3:
                    break
                r, _, _ = select.select([c.sock], [], [], 0.15)
                if r:
                    break
            out, t1 = self.until_closed(c, t(5))
        self.assert408(out, "endless body")
        self.assertIn(b"client_body_deadline_s", out)
        self.assertGreaterEqual(t1 - t0, self.BODY_TOTAL_S - 0.05)
        self.assertLess(t1 - t0, self.BODY_TOTAL_S + self.LATE)
        self.assertBaseline("an endless body")

    def test_keepalive(self):
        """A keep-alive connection is reusable within keepalive_timeout_s and closed without a
        byte after it."""
        body = chat_body("keep-alive")
        want = self.expected(body)
        with Raw(HOST, self.gw.port, t(10)) as c:
            for pause in (0.0, self.KEEPALIVE_S - 0.7):
                time.sleep(pause)
                c.send(self.req(body))
                r = c.read_response()
                self.assertEqual((r.status, r.body), (200, want), r)
            t0 = time.monotonic()
            out, t1 = self.until_closed(c, t(5))
        self.assertEqual(out, b"")
        self.assertGreaterEqual(t1 - t0, self.KEEPALIVE_S - 0.05)
        self.assertLess(t1 - t0, self.KEEPALIVE_S + self.LATE)
        self.assertBaseline("keep-alive expiry")

    def test_full_table_of_slow_clients(self):
        """max_connections slow clients (each sent part of its headers) hold the whole table:
        normal requests still get through at once (the first closes the oldest of them with
        408, the next ones normally reuse the slot it freed); the slow ones left are cut at
        their deadline, with 408 too."""
        before = self.gauge("llmgate_connections_evicted_total")
        data = self.req(chat_body("slow client in a full table"))
        self.wait_no_clients()
        slow = [Raw(HOST, self.gw.port, t(10)) for _ in range(self.MAX_CONNS)]
        try:
            for c in slow:
                c.send(data[:20])
            # (no /metrics look now: its own connection would make room too)
            time.sleep(0.3)
            for i in range(3):
                t0 = time.monotonic()
                self.normal("through a full table %d" % i, i % 2 == 1)
                self.assertLess(time.monotonic() - t0, 0.5)
            # the one evicted is the oldest, and got 408
            out, _ = self.until_closed(slow[0], t(2))
            self.assert408(out, "evicted")
            self.assertIn(b"connection table is full", out)
            for c in slow[1:]:
                out, _ = self.until_closed(c, t(5))
                self.assert408(out, "slow client at its deadline")
        finally:
            for c in slow:
                c.close()
        self.wait_no_clients()
        # one at least; a later normal request may find the previous one's connection (or a
        # slow one) still in the table on a loaded machine and evict it too
        self.assertIn(self.gauge("llmgate_connections_evicted_total") - before, (1, 2, 3))
        self.assertBaseline("a table full of slow clients", upstream=self.MAX_CONNS)

    def test_full_table_of_busy_requests(self):
        """When every slot holds a request in progress, a new connection gets 503 overloaded
        with Retry-After (nothing can be evicted), and the requests are all answered."""
        before = self.gauge("llmgate_connections_refused_total")
        evicted = self.gauge("llmgate_connections_evicted_total")
        body = chat_body("busy")
        data = build_request("POST", CHAT, self.hostport, body, {"Expect": "100-continue"})
        head, rest = data[:-len(body)], body
        self.wait_no_clients()
        busy = [Raw(HOST, self.gw.port, t(10)) for _ in range(self.MAX_CONNS)]
        try:
            # each is in its body once libmicrohttpd has sent its 100 Continue (no /metrics
            # look: it would take a slot); the body then waits
            for c in busy:
                c.send(head)
            for c in busy:
                self.assertEqual(c.read_head().status, 100)
            with Raw(HOST, self.gw.port, t(10)) as c:
                out, _ = self.until_closed(c, t(3))
            self.assertTrue(out.startswith(b"HTTP/1.1 503 "), out[:200])
            self.assertIn(b"\r\nRetry-After: 1\r\n", out)
            self.assertIn(b'"code":"overloaded"', out)
            for c in busy:
                c.send(rest)
            want = self.expected(body)
            for c in busy:
                r = c.read_response()
                self.assertEqual((r.status, r.body), (200, want), r)
        finally:
            for c in busy:
                c.close()
        self.wait_no_clients()  # else this look could evict a closing one
        self.assertEqual(self.gauge("llmgate_connections_refused_total"), before + 1)
        self.assertEqual(self.gauge("llmgate_connections_evicted_total"), evicted)
        self.assertBaseline("a table full of requests", upstream=self.MAX_CONNS)
