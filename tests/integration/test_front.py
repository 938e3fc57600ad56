"""Refusals the headers decide come before the body; the memory all bodies in flight may hold
is bounded (503 overloaded); every document the gateway writes itself stays valid whatever
the names and ids in it contain."""

import json
import re
import time

from harness import HOST, OwnTest, Raw, chat_body, dumps, raw_exchange, request, t

CHAT = "/v1/chat/completions"
KEY = "sk-front-0123456789"


def head_only(port, headers, clen):
    """Sends a POST's headers declaring `clen` body bytes and no body; returns the response."""
    with Raw(HOST, port, t(5)) as c:
        hdr = "".join("%s: %s\r\n" % kv for kv in headers.items())
        c.send(("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n%s\r\n" % (CHAT, HOST, port, clen, hdr)).encode())
        r = c.read_response(tolerate_reset=True)
        closed = False
        try:
            c.settimeout(t(2))
            closed = c.sock.recv(1) == b""
        except OSError:
            closed = True
        return r, closed


class TestEarlyRefusals(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, keys={"k": KEY},
                                 server={"max_body_bytes": 100000}, name="llmgate-front")

    def test_401_before_the_body(self):
        """No body byte is sent: the 401 must come from the headers alone, then the close."""
        r, closed = head_only(self.gw.port, {}, 50000)
        self.assertErrorEnvelope(r, 401, "authentication_error", "invalid_api_key")
        self.assertTrue(closed, "connection kept open with an unread body")
        r, closed = head_only(self.gw.port, {"Authorization": "Bearer sk-wrong"}, 50000)
        self.assertErrorEnvelope(r, 401, "authentication_error", "invalid_api_key")

    def test_413_before_the_body(self):
        r, closed = head_only(self.gw.port, {"Authorization": "Bearer " + KEY}, 100001)
        self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")
        self.assertTrue(closed)

    def test_control_characters_in_model(self):
        """A 404 for a model id full of control characters and multi-byte characters is a
        whole, parseable envelope (it once overflowed the envelope buffer: empty body)."""
        for model in ("\u0001" * 300, "\u00e9" * 400, "\"\\" * 200, "x\u2028" * 300):
            with self.subTest(model=model[:3]):
                r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("m", model=model),
                                 {"Authorization": "Bearer " + KEY}, timeout=t(5))
                self.assertErrorEnvelope(r, 404, "invalid_request_error", "model_not_found")
                msg = r.json()["error"]["message"]
                self.assertTrue(msg.startswith("the model '"), msg)
                self.assertIn("...", msg)  # cut, at a character boundary (json.loads decoded it)


class TestBodyMemory(OwnTest):
    """max_body_memory = 50,000: one 40,000-byte body in flight, 35,000 bytes of it received,
    leaves no room for another."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 server={"max_body_bytes": 40000, "max_body_memory": 50000},
                                 name="llmgate-bodymem")

    def body(self, size):
        skeleton = dumps({"model": "mock-model", "messages": [{"role": "user", "content": ""}]})
        return dumps({"model": "mock-model",
                      "messages": [{"role": "user", "content": "y" * (size - len(skeleton))}]})

    def held(self):
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        return int(re.search(r"^llmgate_body_memory_bytes (\d+)$", m, re.M).group(1))

    def test_overloaded_then_released(self):
        big = self.body(40000)
        with Raw(HOST, self.gw.port, t(10)) as a:
            head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % (CHAT, len(big))).encode()
            # in flight: memory is taken as the body arrives (what came, or doubling from
            # 16 KiB, up to the declared 40,000): 35,000 bytes sent hold 35,000 to 40,000
            a.send(head + big[:35000])
            self.gw_wait(lambda: 35000 <= self.held() <= 40000)
            r = raw_exchange(HOST, self.gw.port, "POST", CHAT, self.body(20000), timeout=t(5))
            self.assertErrorEnvelope(r, 503, "service_unavailable", "overloaded", retry_after=True)
            self.assertIn("retry-after-ms", r.headers)
            # a chunked body is counted as it grows, and refused when it no longer fits
            b = self.body(20000)
            r = raw_exchange(HOST, self.gw.port, "POST", CHAT, None,
                             chunked=[b[i:i + 4000] for i in range(0, len(b), 4000)], timeout=t(5))
            self.assertErrorEnvelope(r, 503, "service_unavailable", "overloaded", retry_after=True)
            a.send(big[35000:])
            r = a.read_response()
            self.assertEqual(r.status, 200, r)
        self.gw_wait(lambda: self.held() == 0)
        r = raw_exchange(HOST, self.gw.port, "POST", CHAT, self.body(20000), timeout=t(5))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.held(), 0)

    def gw_wait(self, pred):
        import time
        deadline = time.monotonic() + t(5)
        while not pred():
            self.assertLess(time.monotonic(), deadline, "condition not reached")
            time.sleep(0.02)


class TestOddNames(OwnTest):
    """Backend names and model ids with quotes, backslashes and non-ASCII end up escaped in
    /metrics (Prometheus label values), /ready and /v1/models (JSON)."""

    NAME = 'we"ird\\b\u00e9'
    LONG = "b" * 40  # section names are at most 49 bytes ([backend.] + 40)

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({cls.NAME: (cls.mock.url, ['m"odel\\1']),
                                  cls.LONG: (cls.mock.url, ["long-model"])}, name="llmgate-names")

    def test_metrics_never_cut(self):
        """/metrics once lived in a fixed 8 KiB (+512 B per backend) buffer: 200 distinct
        statuses relayed from the engine pushed the backend lines out of it."""
        for code in range(400, 600):
            r = raw_exchange(HOST, self.gw.port, "POST", "/v1/chat/completions",
                             chat_body("s", model="long-model", mock={"status": code}), timeout=t(5))
            self.assertEqual(r.status, code)
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        for code in range(400, 600):
            self.assertIn('llmgate_http_responses_total{code="%d"} ' % code, m)
        self.assertIn('llmgate_backend_inflight{backend="%s"} 0\n' % self.LONG, m)

    def test_escaped(self):
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        self.assertIn('llmgate_backend_inflight{backend="we\\"ird\\\\b\u00e9"} 0', m)
        for line in m.splitlines():  # every sample line is name{labels} value
            if line and not line.startswith("#"):
                self.assertRegex(line, r'^[a-z_]+(\{([a-z]+="([^"\\]|\\.)*",?)+\})? [0-9.e+-]+$')
        self.assertIn('llmgate_backend_inflight{backend="%s"} 0' % self.LONG, m)
        self.assertTrue(m.endswith("\n"), m[-200:])
        r = request(HOST, self.gw.port, "GET", "/ready", timeout=t(5))
        self.assertIn(self.NAME, json.loads(r.body)["backends"])
        r = request(HOST, self.gw.port, "GET", "/v1/models", timeout=t(5))
        self.assertEqual([(d["id"], d["owned_by"]) for d in r.json()["data"]],
                         [('m"odel\\1', self.NAME), ("long-model", self.LONG)])


class TestFraming(OwnTest):
    """Request framing a proxy in front could read differently (request smuggling) is refused
    with a 400 envelope and the connection closed, before any body byte is used."""

    B = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, name="llmgate-framing")

    def exchange(self, raw):
        with Raw(HOST, self.gw.port, t(5)) as c:
            c.send(raw)
            r = c.read_response(tolerate_reset=True)
            try:
                c.settimeout(t(2))
                rest = c.buf + c.sock.recv(65536)
            except OSError:
                rest = b""
            return r, rest

    def assert_refused(self, raw, why):
        before = self.mock.stats()["requests"]
        r, rest = self.exchange(raw)
        self.assertErrorEnvelope(r, 400, "invalid_request_error", "invalid_request")
        self.assertIn(why, r.json()["error"]["message"])
        self.assertEqual(r.headers.get("connection", "").lower(), "close")
        self.assertEqual(rest, b"", "the connection went on after a refused framing")
        self.assertEqual(self.mock.stats()["requests"], before, "a refused request reached the engine")

    def post(self, headers, body):
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + headers + b"\r\n" + body)

    def test_two_content_lengths(self):
        """The first (3) would be used and the rest of the body parsed as a second request."""
        smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        body = self.B + smuggled
        self.assert_refused(self.post(b"Content-Length: 3\r\nContent-Length: %d\r\n" % len(body), body),
                            "more than one Content-Length")

    def test_content_length_and_chunked(self):
        chunked = b"%x\r\n" % len(self.B) + self.B + b"\r\n0\r\n\r\n"
        self.assert_refused(self.post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(self.B),
                                      chunked), "Content-Length together with Transfer-Encoding")

    def test_other_transfer_codings(self):
        chunked = b"%x\r\n" % len(self.B) + self.B + b"\r\n0\r\n\r\n"
        for te in (b"gzip, chunked", b"identity", b"chunked, chunked"):
            with self.subTest(te=te):
                self.assert_refused(self.post(b"Transfer-Encoding: " + te + b"\r\n", chunked),
                                    "unsupported Transfer-Encoding")
        self.assert_refused(self.post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked),
                            "unsupported Transfer-Encoding")

    def test_http11_without_host(self):
        with Raw(HOST, self.gw.port, t(5)) as c:
            c.send(b"GET /healthz HTTP/1.1\r\n\r\n")
            r = c.read_response(tolerate_reset=True)
        self.assertErrorEnvelope(r, 400, "invalid_request_error", "invalid_request")
        # HTTP/1.0 needs none
        with Raw(HOST, self.gw.port, t(5)) as c:
            c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
            self.assertEqual(c.read_response(tolerate_reset=True).status, 200)

    def test_cr_in_header_value(self):
        self.assert_refused(self.post(b"X-Odd: a\rb\r\nContent-Length: %d\r\n" % len(self.B), self.B),
                            "CR or LF")

    def test_chunked_alone_still_works(self):
        r = raw_exchange(HOST, self.gw.port, "POST", "/v1/chat/completions", None,
                         chunked=[self.B[:10], self.B[10:]], timeout=t(5))
        self.assertEqual(r.status, 200, r)


class TestPerIpLimit(OwnTest):
    """[server] max_connections_per_ip = 2: a third connection from the same address gets a
    readable 429 (not libmicrohttpd's silent close) and is closed; the two open ones keep
    working, and a slot frees when one closes."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, server={"max_connections_per_ip": 2},
                                 name="llmgate-perip")

    def refused(self, c):
        """What a connection beyond the limit receives, to the close."""
        c.settimeout(t(3))
        out = b""
        try:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                out += d
        except OSError:
            pass
        return out

    def metric(self, c, name):
        c.send_request("GET", "/metrics")
        r = c.read_response(method="GET")
        m = re.search(r"(?m)^%s (\d+)$" % name, r.body.decode())
        self.assertTrue(m, name)
        return int(m.group(1))

    def test_third_refused(self):
        time.sleep(t(0.5))  # the connections of the start-up health checks must be gone
        a, b = Raw(HOST, self.gw.port, t(5)), Raw(HOST, self.gw.port, t(5))
        try:
            for c in (a, b):
                c.send_request("GET", "/healthz")
                self.assertEqual(c.read_response(method="GET").status, 200)
            before = self.metric(a, "llmgate_connections_per_ip_refused_total")
            for _ in range(2):  # twice in a row: the refused one takes no slot
                third = Raw(HOST, self.gw.port, t(5))
                out = self.refused(third)
                third.close()
                self.assertTrue(out.startswith(b"HTTP/1.1 429 "), out[:200])
                head, _, body = out.partition(b"\r\n\r\n")
                self.assertIn(b"\r\nRetry-After: 1\r\n", head + b"\r\n")
                self.assertIn(b"max_connections_per_ip", body)
                self.assertEqual(json.loads(body)["error"]["code"], "rate_limit_exceeded")
            self.assertEqual(self.metric(a, "llmgate_connections_per_ip_refused_total"), before + 2)
            a.send_request("GET", "/healthz")
            self.assertEqual(a.read_response(method="GET").status, 200)
        finally:
            a.close()
        time.sleep(0.3)
        with Raw(HOST, self.gw.port, t(5)) as c:
            c.send_request("GET", "/healthz")
            self.assertEqual(c.read_response(method="GET").status, 200)
        b.close()
