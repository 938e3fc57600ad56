"""No body without a bound (issue 13, items 7, 8 and 12).

- A request the gateway answers itself (unknown path, wrong method, a GET with a body) is
  answered from its headers, before its body, with the caps proxied requests have.
- A chunked body is refused (413) when it crosses max_body_bytes, not when it ends.
- A Content-Length libmicrohttpd would read as "unknown size" (2^64 - 1) is a 413.
- After an early answer (401, 413, ... from the headers; 413/503 in the middle of a body; 408)
  the gateway drains what the client still sends for a bounded time before it closes (a
  lingering close), so the client reads the answer instead of a reset.
- Body memory is reserved as the bytes arrive: connections that declare large bodies and
  send a byte now and then do not take max_body_memory."""

import re
import socket
import threading
import time

from harness import HOST, OwnTest, Raw, chat_body, dumps, request, t

CHAT = "/v1/chat/completions"
KEY = "sk-bound-0123456789"
LIMIT = 100000


def raw_head(port, method, path, headers):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (HOST, port)]
    lines += ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class BodyTest(OwnTest):
    def answered_in(self, data, within, then=b""):
        """Sends `data` (and `then`, if any), never the rest of the body; returns the response
        and whether the connection was closed after it. Fails if nothing came within `within`."""
        with Raw(HOST, self.gw.port, within) as c:
            c.send(data)
            if then:
                c.send(then)
            t0 = time.monotonic()
            try:
                r = c.read_response(tolerate_reset=True)
            except socket.timeout:
                self.fail("no answer within %.1f s: the gateway waits for the body" % within)
            self.assertLess(time.monotonic() - t0, within)
            closed = False
            try:
                c.settimeout(t(3))
                closed = c.buf == b"" and c.sock.recv(1) == b""
            except OSError:
                closed = True
            return r, closed


class TestLocalBodies(BodyTest):
    """Local answers with a declared body come before the body; the body is never waited for."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, keys={"k": KEY},
                                 server={"max_body_bytes": LIMIT, "client_body_timeout_s": 30},
                                 name="llmgate-bodybound")

    def test_unknown_path_with_body(self):
        r, closed = self.answered_in(raw_head(self.gw.port, "POST", "/v1/nope",
                                              [("Content-Length", "50000")]), t(3))
        self.assertErrorEnvelope(r, 404, "invalid_request_error", "not_found")
        self.assertTrue(closed, "kept open with an unread body")

    def test_wrong_method_with_chunked_body(self):
        r, closed = self.answered_in(raw_head(self.gw.port, "GET", CHAT,
                                              [("Transfer-Encoding", "chunked")]), t(3), b"10\r\n" + b"x" * 16)
        self.assertErrorEnvelope(r, 405, "invalid_request_error", "method_not_allowed")
        self.assertTrue(closed)

    def test_get_with_body(self):
        r, closed = self.answered_in(raw_head(self.gw.port, "GET", "/healthz",
                                              [("Content-Length", "5000")]), t(3))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(closed)

    def test_local_body_over_the_cap(self):
        """The cap proxied requests have: a declared body over max_body_bytes is a 413."""
        for method, path in (("GET", "/healthz"), ("POST", "/v1/nope"), ("GET", CHAT)):
            with self.subTest(path=path):
                r, closed = self.answered_in(raw_head(self.gw.port, method, path,
                                                      [("Content-Length", str(LIMIT + 1))]), t(3))
                self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")
                self.assertTrue(closed)

    def test_content_length_that_does_not_fit(self):
        """2^64 - 1 is libmicrohttpd's "unknown size": an error, like any larger value."""
        for clen in ("18446744073709551615", "18446744073709551616", "99999999999999999999999"):
            for method, path in (("POST", CHAT), ("GET", "/healthz"), ("POST", "/v1/nope")):
                with self.subTest(clen=clen, path=path):
                    r, closed = self.answered_in(raw_head(self.gw.port, method, path,
                                                          [("Authorization", "Bearer " + KEY),
                                                           ("Content-Length", clen)]), t(3))
                    self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")
                    self.assertTrue(closed)

    def test_without_body_kept_alive(self):
        with Raw(HOST, self.gw.port, t(5)) as c:
            for path, status in (("/healthz", 200), ("/v1/nope", 404), ("/healthz", 200)):
                c.send_request("GET", path)
                self.assertEqual(c.read_response(method="GET").status, status)

    def test_chunked_over_the_cap_refused_when_it_crosses(self):
        """The chunk that passes max_body_bytes is answered at once (no last chunk is sent)."""
        before = self.mock.stats()["requests"]
        head = raw_head(self.gw.port, "POST", CHAT, [("Authorization", "Bearer " + KEY),
                                                     ("Content-Type", "application/json"),
                                                     ("Transfer-Encoding", "chunked")])
        piece = b"x" * 10000
        chunks = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(LIMIT // len(piece) + 1))
        r, closed = self.answered_in(head + chunks, t(3))
        self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")
        self.assertTrue(closed)
        self.assertEqual(self.mock.stats()["requests"], before)
        # and the gateway still serves
        with Raw(HOST, self.gw.port, t(5)) as c:
            c.send_request("POST", CHAT, chat_body("after"), {"Authorization": "Bearer " + KEY})
            self.assertEqual(c.read_response().status, 200)


class Sender(threading.Thread):
    """Sends `total` bytes on c (in 64 KiB pieces, `gap` s apart), whatever happens to the
    connection; records how it ended."""

    def __init__(self, c, total, gap=0.0, piece=65536):
        super().__init__(daemon=True)
        self.c, self.total, self.gap, self.piece = c, total, gap, piece
        self.sent, self.error = 0, None

    def run(self):
        try:
            while self.sent < self.total:
                n = min(self.piece, self.total - self.sent)
                self.c.sock.sendall(b"x" * n)
                self.sent += n
                if self.gap:
                    time.sleep(self.gap)
        except OSError as e:
            self.error = e


class TestLingeringClose(BodyTest):
    """A client that goes on sending its body after an early answer reads the answer."""

    BIG = 4 << 20

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, keys={"k": KEY},
                                 server={"max_body_bytes": 1 << 20, "client_body_timeout_s": 30},
                                 name="llmgate-linger")

    def send_then_read(self, data):
        """What most clients do (Python's http.client, requests): send the whole request, then
        read the answer. A reset while sending loses the answer."""
        with Raw(HOST, self.gw.port, t(10)) as c:
            try:
                c.send(data)
            except OSError as e:
                self.fail("the request could not be sent whole (%r): the early answer is lost" % e)
            return c.read_response()

    def test_401_with_a_large_body_sent_whole(self):
        head = raw_head(self.gw.port, "POST", CHAT, [("Authorization", "Bearer sk-wrong"),
                                                     ("Content-Type", "application/json"),
                                                     ("Content-Length", str(self.BIG))])
        for rep in range(3):
            with self.subTest(rep=rep):
                r = self.send_then_read(head + b"x" * self.BIG)
                self.assertErrorEnvelope(r, 401, "authentication_error", "invalid_api_key")

    def test_413_mid_chunked_body_sent_whole(self):
        head = raw_head(self.gw.port, "POST", CHAT, [("Authorization", "Bearer " + KEY),
                                                     ("Content-Type", "application/json"),
                                                     ("Transfer-Encoding", "chunked")])
        piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
        r = self.send_then_read(head + piece * (self.BIG // 65536) + b"0\r\n\r\n")
        self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")

    def test_lingering_is_bounded(self):
        """A client that never stops sending is closed all the same, within the lingering time
        (5 s in all, 2 s without a byte)."""
        head = raw_head(self.gw.port, "POST", CHAT, [("Authorization", "Bearer sk-wrong"),
                                                     ("Content-Length", str(1 << 30))])
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send(head)
            r = c.read_response()
            self.assertEqual(r.status, 401)
            s = Sender(c, 1 << 30, gap=0.1, piece=1024)
            t0 = time.monotonic()
            s.start()
            s.join(t(12))
            self.assertFalse(s.is_alive(), "still accepting bytes after 12 s")
            self.assertLess(time.monotonic() - t0, t(9))
        # a silent client is closed after the idle part
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send(head)
            self.assertEqual(c.read_response().status, 401)
            t0 = time.monotonic()
            try:
                self.assertEqual(c.sock.recv(1), b"")
            except OSError:
                pass
            self.assertLess(time.monotonic() - t0, t(4))


class TestSlowBodiesMemory(OwnTest):
    """52 connections declaring 10 MiB each and sending one byte do not take the 512 MiB of
    max_body_memory: an honest request is served beside them."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 server={"max_body_bytes": 10 << 20, "max_body_memory": 512 << 20,
                                         "client_body_timeout_s": 60},
                                 name="llmgate-slowbodies")

    def held(self):
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        return int(re.search(r"^llmgate_body_memory_bytes (\d+)$", m, re.M).group(1))

    def test_declared_is_not_taken(self):
        conns = []
        try:
            for _ in range(52):
                c = Raw(HOST, self.gw.port, t(10))
                c.send(raw_head(self.gw.port, "POST", CHAT, [("Content-Type", "application/json"),
                                                             ("Content-Length", str(10 << 20))]) + b"{")
                conns.append(c)
            deadline = time.monotonic() + t(5)
            while self.held() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            held = self.held()
            self.assertGreater(held, 0)
            self.assertLessEqual(held, 52 * 65536, "declared lengths were taken from the budget")
            r = request(HOST, self.gw.port, "POST", CHAT, dumps({"model": "mock-model", "messages": [
                {"role": "user", "content": "y" * 60000}]}), timeout=t(5))
            self.assertEqual(r.status, 200, r.body[:300])
        finally:
            for c in conns:
                c.close()
