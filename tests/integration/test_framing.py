"""Framing at the byte level (http/framing.c, fed from the guard's recv()): what libmicrohttpd
0.9.75 would let through (a space before a colon, obs-fold, bare LF, Transfer-Encoding on
HTTP/1.0) is refused, and what it would answer itself with an HTML page or no reply at all
(request line or headers too large, a request line it cannot parse, an unknown version, a
malformed Content-Length or chunked body) is the JSON envelope. Every refusal closes the
connection and never reaches the engine."""

import socket

from harness import HOST, OwnTest, Raw, t

B = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def chunked(body):
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


class TestFramingBytes(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, name="llmgate-bytes")

    def exchange(self, raw, n=1):
        """Sends raw, reads n responses; returns them and whether the connection then closed."""
        with Raw(HOST, self.gw.port, t(5)) as c:
            try:
                c.send(raw)
            except OSError:
                pass  # refused while still sending: the reply is read all the same
            rs = [c.read_response(tolerate_reset=True) for _ in range(n)]
            try:
                c.settimeout(t(2))
                closed = c.buf == b"" and c.sock.recv(1) == b""
            except socket.timeout:
                closed = False
            except OSError:
                closed = True
            return rs, closed

    def refused(self, raw, status, code, why):
        before = self.mock.stats()["requests"]
        (r,), closed = self.exchange(raw)
        self.assertErrorEnvelope(r, status, "invalid_request_error", code)
        self.assertIn(why, r.json()["error"]["message"])
        self.assertEqual(r.headers.get("connection", "").lower(), "close")
        self.assertTrue(closed, "the connection stayed open after a refusal")
        self.assertEqual(self.mock.stats()["requests"], before, "a refused request reached the engine")

    def bad(self, raw, why):
        self.refused(raw, 400, "invalid_request", why)

    # -- item 10: what libmicrohttpd lets through -------------------------------------------

    def test_space_before_colon(self):
        """libmicrohttpd reads `Transfer-Encoding : chunked` as no Transfer-Encoding at all (an
        empty body, 400 invalid_json); a proxy that trims the space reads a chunked body."""
        self.bad(CHAT + b"Transfer-Encoding : chunked\r\n\r\n" + chunked(B), "not a token character")
        self.bad(CHAT + b"Content-Length\t: %d\r\n\r\n" % len(B) + B, "not a token character")

    def test_name_bytes_not_token(self):
        for name in (b"X Y", b"X\tY", b"X-\xc3\xa9", b"X(1)", b"X\"", b"X\x7f", b"X\x01"):
            with self.subTest(name=name):
                self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + name + b": v\r\n\r\n",
                         "not a token character")
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", "header name is empty")
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", "not a token character")

    def test_obs_fold(self):
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "obs-fold")
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", "obs-fold")

    def test_transfer_encoding_on_http10(self):
        self.bad(b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(B),
                 "HTTP/1.0")

    def test_bare_lf_refused(self):
        """Bare LF line ends are refused everywhere (libmicrohttpd accepts them): in the
        request line, in a header line, at the end of the head, in a chunked body."""
        self.bad(b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n", "bare LF")
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", "bare LF")
        self.bad(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\n", "bare LF")
        self.bad(CHAT + b"Transfer-Encoding: chunked\r\n\r\n%x\n" % len(B) + B + b"\r\n0\r\n\r\n", "bare LF")

    def test_http_1x_versions(self):
        """HTTP/1.2-1.9 are HTTP/1.1, as libmicrohttpd treats them: Host needed, kept alive."""
        self.bad(b"GET /healthz HTTP/1.2\r\n\r\n", "Host")
        (r1, r2), closed = self.exchange(b"GET /healthz HTTP/1.5\r\nHost: x\r\n\r\n" * 2, n=2)
        self.assertEqual((r1.status, r1.body, r2.status), (200, b"OK", 200))
        self.assertFalse(closed)

    # -- item 11: what libmicrohttpd answers itself ------------------------------------------

    def test_request_line_too_long(self):
        self.refused(b"GET /v1/models?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
                     "uri_too_long", "request line")

    def test_headers_too_large(self):
        hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 150) for i in range(100))
        self.refused(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n", 431,
                     "request_header_fields_too_large", "header fields")
        self.refused(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 15000 + b"\r\n\r\n", 431,
                     "request_header_fields_too_large", "header fields")

    def test_unparseable_request_lines(self):
        """libmicrohttpd closes these without a reply, or answers 400 in HTML."""
        for line, why in ((b"garbage", "request line"), (b"GET", "request line"),
                          (b"GET /healthz", "request line"), (b"GET  /healthz HTTP/1.1", "request line"),
                          (b"GET /hea lthz HTTP/1.1", "request line"), (b"GET /he\x00z HTTP/1.1", "request line"),
                          (b"\x01\x02 /healthz HTTP/1.1", "method"), (b"GET /healthz HTTP/x.1", "HTTP version"),
                          (b"GET /healthz http/1.1", "HTTP version"), (b"GET /healthz HTTP/1.10", "HTTP version")):
            with self.subTest(line=line):
                self.bad(line + b"\r\nHost: x\r\n\r\n", why)

    def test_other_versions_505(self):
        for v in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1"):
            with self.subTest(v=v):
                self.refused(b"GET /healthz " + v + b"\r\nHost: x\r\n\r\n", 505,
                             "http_version_not_supported", "HTTP/1.x")

    def test_malformed_content_length(self):
        for v in (b"-1", b"12abc", b"1 2", b"0x10", b""):
            with self.subTest(v=v):
                self.bad(CHAT + b"Content-Length: " + v + b"\r\n\r\n" + B, "Content-Length")
        self.refused(CHAT + b"Content-Length: 99999999999999999999999\r\n\r\n", 413, "request_too_large",
                     "Content-Length")

    def test_malformed_chunked(self):
        te = CHAT + b"Transfer-Encoding: chunked\r\n\r\n"
        self.bad(te + b"zz\r\n" + B, "chunk size")
        self.bad(te + b"5 \r\nhello\r\n0\r\n\r\n", "chunk size")
        self.bad(te + b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF")
        self.bad(te + b"5;a\x01b\r\nhello\r\n0\r\n\r\n", "chunk extension")
        self.refused(te + b"1ffffffffffffffff\r\n", 413, "request_too_large", "chunk size")
        self.refused(te + b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 3000 + b"\r\n\r\n", 431,
                     "request_header_fields_too_large", "trailer")

    def test_pipelined_refusal_after_the_answers(self):
        """A bad request behind good ones (in one packet): the good ones are answered, then the
        refusal, then the close."""
        good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        post = CHAT + b"Content-Length: %d\r\n\r\n" % len(B) + B
        (r1, r2, r3), closed = self.exchange(good + post + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n",
                                             n=3)
        self.assertEqual((r1.status, r1.body, r2.status), (200, b"OK", 200))
        self.assertErrorEnvelope(r3, 400, "invalid_request_error", "invalid_request")
        self.assertIn("not a token character", r3.json()["error"]["message"])
        self.assertTrue(closed)

    def test_limits_are_below_libmicrohttpds(self):
        """What the scanner lets through at its limits, libmicrohttpd takes (no HTML)."""
        line = b"GET /healthz?" + b"a" * (8192 - len(b"GET /healthz? HTTP/1.1")) + b" HTTP/1.1\r\n"
        many = b"".join(b"X%d:\r\n" % i for i in range(150))
        cookie = b"Cookie: " + b";".join([b"a=b"] * 60) + b"\r\n"
        for raw in (line + b"Host: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + cookie + many[:many.index(b"X60:")] + b"\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 12000 + b"\r\n\r\n"):
            with self.subTest(size=len(raw)):
                (r,), _ = self.exchange(raw)
                self.assertEqual((r.status, r.body), (200, b"OK"), r)

    def test_keepalive_bodies_stay_in_step(self):
        """Requests with counted and chunked bodies (extensions, trailers) and none, one after
        another on one connection, byte by byte: each is answered (the scanner follows the
        bodies, so the next request line is where libmicrohttpd sees it)."""
        post = CHAT + b"Content-Length: %d\r\n\r\n" % len(B) + B
        ch = (CHAT + b"Transfer-Encoding: chunked\r\n\r\n" + b"a;x=\"y z\"\r\n" + B[:10] + b"\r\n"
              + b"%X\r\n" % (len(B) - 10) + B[10:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        get = b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        raw = post + ch + get + ch + post
        with Raw(HOST, self.gw.port, t(10)) as c:
            for i in range(len(raw)):
                c.send(raw[i:i + 1])
            statuses = [c.read_response().status for _ in range(5)]
        self.assertEqual(statuses, [200] * 5)
