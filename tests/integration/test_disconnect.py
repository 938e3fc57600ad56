"""A client that goes away cancels its upstream request: mid-stream, before the first byte, queued."""

import time

from harness import HOST, OwnTest, Raw, SharedTest, chat_body, t

CHAT = "/v1/chat/completions"


class TestDisconnect(SharedTest):
    def setUp(self):
        self.need_mock()
        self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0 before the test")
        self.base = self.mock.stats()

    def test_mid_stream(self):
        body = chat_body("disconnect mid-stream", stream=True, mock={"ttft_ms": 0, "itl_ms": 200, "tokens": 100})
        c = Raw(self.gw.host, self.gw.port, t(10))
        try:
            c.send_request("POST", CHAT, body)
            r = c.read_head()
            self.assertSSEHeaders(r)
            got = b""
            for _, piece in c.iter_body(r):
                got += piece
                if got.count(b"\n\n") >= 3:
                    break
        finally:
            c.close()
        t0 = time.monotonic()
        s = self.mock.wait_stats(lambda s: s["aborted"] >= self.base["aborted"] + 1 and s["active"] == 0,
                                 t(5), "aborted+1 and active == 0")
        self.assertLess(time.monotonic() - t0, t(5))
        self.assertEqual(s["completed"], self.base["completed"], "the stream ran to completion anyway: %s" % s)

    def leave_during_prefill(self, body):
        """Sends `body` (engine ttft 6 s), closes the client once the engine has it; returns
        the engine's stats once it saw the abort, and the seconds since the request."""
        c = Raw(self.gw.host, self.gw.port, t(10))
        try:
            t_start = time.monotonic()
            c.send_request("POST", CHAT, body)
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
            time.sleep(0.3)
        finally:
            c.close()
        s = self.mock.wait_stats(lambda s: s["aborted"] >= self.base["aborted"] + 1 and s["active"] == 0,
                                 t(8), "aborted+1 and active == 0")
        return s, time.monotonic() - t_start

    def test_before_first_byte(self):
        """Client leaves while the engine is still thinking (ttft 6 s): cancelled well before 6 s."""
        body = chat_body("disconnect in prefill", stream=True, mock={"ttft_ms": 6000, "itl_ms": 0, "tokens": 3})
        try:
            s, took = self.leave_during_prefill(body)
        except AssertionError as e:
            self.fail("client of a stream left during prefill (engine ttft 6 s); the upstream request was "
                      "not cancelled: %s" % e)
        self.assertEqual(s["completed"], self.base["completed"], s)
        self.assertLess(took, 5.5, "upstream cancelled only %.1fs after the request (ttft 6 s): the gateway "
                                   "waited for the first byte to notice the client was gone" % took)

    def test_before_first_byte_nonstream(self):
        body = chat_body("disconnect in prefill json", mock={"ttft_ms": 6000, "itl_ms": 0, "tokens": 3})
        s, took = self.leave_during_prefill(body)
        self.assertLess(took, 5.5, "upstream cancelled only %.1fs after the request (ttft 6 s)" % took)


class TestDisconnectQueued(OwnTest):
    """max_inflight=1: a queued request whose client left is never sent to the engine."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 limits={"max_inflight": 1, "queue_capacity": 10, "queue_timeout_ms": 30000},
                                 name="llmgate-dq")

    def run_case(self, stream):
        self.mock.reset()
        a = Raw(HOST, self.gw.port, t(20))
        b = Raw(HOST, self.gw.port, t(20))
        try:
            a.send_request("POST", CHAT, chat_body("holder", stream=stream,
                                                   mock={"ttft_ms": 0 if stream else 4000, "itl_ms": 400, "tokens": 10}))
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
            b.send_request("POST", CHAT, chat_body("queued then gone", stream=stream))
            time.sleep(0.5)
            b.close()
            ra = a.read_response()
            self.assertEqual(ra.status, 200, ra)
        finally:
            a.close()
            b.close()
        time.sleep(1.0)
        s = self.mock.stats()
        self.assertEqual(s["requests"], 1, "the abandoned queued request was sent to the engine: %s" % s)
        r = Raw(HOST, self.gw.port, t(10))
        try:
            r.send_request("POST", CHAT, chat_body("next"))
            self.assertEqual(r.read_response().status, 200)
        finally:
            r.close()
        self.assertEqual(self.mock.stats()["requests"], 2)

    def test_queued_stream(self):
        self.run_case(True)

    def test_queued_nonstream(self):
        self.run_case(False)
