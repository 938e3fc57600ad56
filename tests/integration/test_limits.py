"""Limits and failures: 413 body size, 503 queue_full/queue_timeout, 504 timeout, 502 bad_gateway."""

import json
import time

from harness import (HOST, OwnTest, Raw, chat_body, dumps, expected_content, free_port, gateway_sections,
                     raw_exchange, render_ini, request, sse_events, stream_content, t)

CHAT = "/v1/chat/completions"


def padded_chat(size):
    """A valid chat body of exactly `size` bytes."""
    skeleton = dumps({"model": "mock-model", "messages": [{"role": "user", "content": ""}]})
    assert size >= len(skeleton)
    return dumps({"model": "mock-model", "messages": [{"role": "user", "content": "x" * (size - len(skeleton))}]})


class TestBodyLimit(OwnTest):
    LIMIT = 4096

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, server={"max_body_bytes": cls.LIMIT},
                                 name="llmgate-413")

    def exchange(self, **kw):
        with Raw(self.gw.host, self.gw.port, t(10)) as c:
            c.send_request("POST", CHAT, **kw)
            return c.read_response(tolerate_reset=True)

    def assert413(self, r):
        self.assertErrorEnvelope(r, 413, "invalid_request_error", "request_too_large")

    def test_at_limit_accepted(self):
        body = padded_chat(self.LIMIT)
        self.assertEqual(len(body), self.LIMIT)
        self.assertEqual(self.exchange(body=body).status, 200)
        pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
        self.assertEqual(self.exchange(chunked=pieces).status, 200)

    def test_content_length_over_limit(self):
        before = self.mock.stats()["requests"]
        self.assert413(self.exchange(body=padded_chat(self.LIMIT + 1)))
        self.assert413(self.exchange(body=padded_chat(self.LIMIT * 3)))
        self.assertEqual(self.mock.stats()["requests"], before)

    def test_huge_content_length_answered_before_body(self):
        """Content-Length far over the limit: 413 from the headers alone, no body sent."""
        with Raw(self.gw.host, self.gw.port, t(5)) as c:
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 10737418240\r\n\r\n")
            self.assert413(c.read_response(tolerate_reset=True))

    def test_chunked_over_limit(self):
        before = self.mock.stats()["requests"]
        body = padded_chat(self.LIMIT + 1)
        self.assert413(self.exchange(chunked=[body[i:i + 1000] for i in range(0, len(body), 1000)]))
        body = padded_chat(self.LIMIT * 4)
        self.assert413(self.exchange(chunked=[body[i:i + 512] for i in range(0, len(body), 512)]))
        self.assertEqual(self.mock.stats()["requests"], before)

    def test_still_serving_after_413(self):
        self.assert413(self.exchange(body=padded_chat(self.LIMIT * 2)))
        self.assertEqual(self.exchange(body=chat_body("after 413")).status, 200)


class TestQueue(OwnTest):
    """max_inflight=1, queue_capacity=1: one request holds the slot, one waits, the next is refused."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 limits={"max_inflight": 1, "queue_capacity": 1, "queue_timeout_ms": 1500},
                                 name="llmgate-queue")

    def test_queue_full_and_queue_timeout(self):
        self.mock.reset()
        hold_ms = int(t(4000))
        a = Raw(HOST, self.gw.port, t(20))
        b = Raw(HOST, self.gw.port, t(20))
        try:
            a.send_request("POST", CHAT, chat_body("hold the slot", mock={"ttft_ms": hold_ms}))
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
            tb = time.monotonic()
            b.send_request("POST", CHAT, chat_body("queued"))
            time.sleep(0.3)
            t0 = time.monotonic()
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send_request("POST", CHAT, chat_body("refused"))
                r = c.read_response()
                self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_full", retry_after=True)
                self.assertLess(time.monotonic() - t0, t(1), "queue_full must be immediate")
                # refused at once: the connection stays (a client ignoring Retry-After on it is
                # known as the same client)
                self.assertNotEqual(r.headers.get("connection", "").lower(), "close")
                c.send_request("GET", "/health")
                self.assertEqual(c.read_response("GET").status, 200)
            rb = b.read_response()
            waited = time.monotonic() - tb
            self.assertErrorEnvelope(rb, 503, "service_unavailable", "queue_timeout", retry_after=True)
            self.assertGreater(waited, 1.2, "queue_timeout before queue_timeout_ms")
            self.assertLess(waited, t(1.5) + 2, "queue_timeout late")
            # it waited its whole timeout: closed, not kept idle for its Retry-After
            self.assertEqual(rb.headers.get("connection", "").lower(), "close")
            b.settimeout(t(2))
            self.assertEqual(b.sock.recv(1), b"", "the connection stays open after queue_timeout")
            ra = a.read_response()
            self.assertEqual(ra.status, 200, ra)
        finally:
            a.close()
            b.close()
        self.assertEqual(self.mock.stats()["requests"], 1, "refused/timed-out requests reached the engine")
        # The slot was released: the next request goes through at once.
        r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("after"), timeout=t(10))
        self.assertEqual(r.status, 200, r)

    def test_slot_released_after_stream(self):
        for i in range(5):
            r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("seq %d" % i, stream=True), timeout=t(10))
            self.assertEqual(r.status, 200, r)


class TestQueueDeadlineOrder(OwnTest):
    """Each waiting request expires by its own deadline, not behind the queue's head: after a
    reload shortens queue_timeout_ms, a request queued later (new configuration) times out
    first, while one queued earlier (old configuration, its longer timeout) waits on."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.backends = {"m": (cls.mock.url, ["mock-model"])}
        # one worker: both waiters in one worker's queue
        cls.gw = cls.own_gateway(cls.backends, server={"workers": 1},
                                 limits={"max_inflight": 1, "queue_timeout_ms": 4000},
                                 extra=[("admin", {"key": "adm-deadline-0123"})], name="llmgate-qorder")

    def test_later_shorter_deadline_expires_first(self):
        hold_ms = int(t(7000))
        a = Raw(HOST, self.gw.port, t(30))  # holds the slot
        b = Raw(HOST, self.gw.port, t(30))  # queued under queue_timeout_ms = 4000
        try:
            a.send_request("POST", CHAT, chat_body("hold", mock={"ttft_ms": hold_ms}))
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
            tb = time.monotonic()
            b.send_request("POST", CHAT, chat_body("old deadline"))
            with open(self.gw.config_path, "w") as f:
                f.write(render_ini(gateway_sections(
                    "%s:%d" % (HOST, self.gw.port), self.backends, server={"workers": 1},
                    limits={"max_inflight": 1, "queue_timeout_ms": 500},
                    extra=[("admin", {"key": "adm-deadline-0123"})])))
            r = request(HOST, self.gw.port, "POST", "/admin/reload", body=b"",
                        headers={"Authorization": "Bearer adm-deadline-0123"}, timeout=t(5))
            self.assertEqual(r.status, 200, r)
            tc = time.monotonic()
            rc = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("new deadline"), timeout=t(10))
            waited_c = time.monotonic() - tc
            self.assertErrorEnvelope(rc, 503, "service_unavailable", "queue_timeout", retry_after=True)
            self.assertGreater(waited_c, 0.4)
            self.assertLess(waited_c, t(0.5) + 1.5, "the later request waited behind the earlier one")
            rb = b.read_response()
            waited_b = time.monotonic() - tb
            self.assertErrorEnvelope(rb, 503, "service_unavailable", "queue_timeout", retry_after=True)
            self.assertGreater(waited_b, 3.8, "the earlier request lost its own (longer) deadline")
            self.assertEqual(a.read_response().status, 200)
        finally:
            a.close()
            b.close()


class TestTimeouts(OwnTest):
    """request_s = 1: expiry before the first byte -> 504; mid-stream -> an SSE error event."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, timeouts={"request_s": 1},
                                 name="llmgate-504")

    def expect_504(self, body):
        self.mock.reset()
        t0 = time.monotonic()
        r = raw_exchange(HOST, self.gw.port, "POST", CHAT, body, timeout=t(10))
        took = time.monotonic() - t0
        self.assertErrorEnvelope(r, 504, "gateway_timeout", "timeout")
        self.assertGreater(took, 0.8)
        self.assertLess(took, t(1) + 2, "504 late")
        s = self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0 (upstream cancelled)")
        self.assertEqual(s["aborted"], 1, s)

    def test_hang_nonstream(self):
        self.expect_504(chat_body("hang", mock={"hang": True}))

    def test_hang_stream(self):
        self.expect_504(chat_body("hang", stream=True, mock={"hang": True}))

    def test_slow_first_token_nonstream(self):
        self.expect_504(chat_body("slow ttft", mock={"ttft_ms": 3000}))

    def test_slow_first_token_stream(self):
        """The engine committed its 200 stream head and then thinks past request_s: the stream
        ends with one SSE error event (code timeout)."""
        self.mock.reset()
        body = chat_body("slow ttft stream", stream=True, mock={"ttft_ms": 3000})
        t0 = time.monotonic()
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send_request("POST", CHAT, body)
            r = c.read_response(tolerate_reset=True)
        took = time.monotonic() - t0
        if r.status == 504:  # not yet committed to the client: a plain 504 is right too
            self.assertErrorEnvelope(r, 504, "gateway_timeout", "timeout")
        else:
            self.assertSSEHeaders(r)
            events = sse_events(r.body)
            self.assertEqual(len(events), 1, events)
            err = json.loads(events[0])["error"]
            self.assertEqual((err.get("type"), err.get("code")), ("gateway_timeout", "timeout"), err)
        self.assertLess(took, t(1) + 2)
        s = self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0")
        self.assertEqual(s["aborted"], 1, s)

    def test_stream_outlives_request_s(self):
        """request_s bounds the wait for the first byte, never a stream that keeps flowing:
        20 tokens 200 ms apart (4 s) against request_s = 1 arrive whole, without an error."""
        self.mock.reset()
        body = chat_body("long generation", stream=True, mock={"ttft_ms": 0, "itl_ms": 200, "tokens": 20})
        t0 = time.monotonic()
        with Raw(HOST, self.gw.port, t(15)) as c:
            c.send_request("POST", CHAT, body)
            r = c.read_response()
        took = time.monotonic() - t0
        self.assertSSEHeaders(r)
        self.assertGreater(took, 3.5, "the stream was not paced as the engine sent it")
        events = sse_events(r.body)
        self.assertEqual(events[-1], "[DONE]", events[-3:])
        errors = [e for e in events if e != "[DONE]" and "error" in json.loads(e)]
        self.assertEqual(errors, [], "stream cut by request_s")
        self.assertEqual(stream_content(events), expected_content(20))
        s = self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0")
        self.assertEqual(s["aborted"], 0, s)

    def test_fast_request_unaffected(self):
        r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("fast", stream=True), timeout=t(10))
        self.assertEqual(r.status, 200)


class TestBadGateway(OwnTest):
    """An engine that cannot be reached, or breaks before the first byte."""

    @classmethod
    def fixture(cls):
        cls.dead_url = "http://%s:%d" % (HOST, free_port())  # nothing listens there
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.dead = cls.own_gateway({"dead": (cls.dead_url, ["mock-model"])}, timeouts={"connect_ms": 1000},
                                   name="llmgate-dead")
        cls.mixed = cls.own_gateway({"dead": (cls.dead_url, ["dead-model"]), "live": (cls.mock.url, ["mock-model"])},
                                    timeouts={"connect_ms": 1000}, name="llmgate-mixed")

    def test_unreachable_engine(self):
        for body in (chat_body("dead"), chat_body("dead", stream=True)):
            with self.subTest(stream=b'"stream"' in body):
                r = raw_exchange(HOST, self.dead.port, "POST", CHAT, body, timeout=t(10))
                if r.status == 503:
                    # Once the gateway knows the only engine is down it may say so instead.
                    self.assertErrorEnvelope(r, 503, "service_unavailable", "no_backend", retry_after=True)
                else:
                    self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")

    def test_unreachable_engine_in_mixed_config(self):
        r = raw_exchange(HOST, self.mixed.port, "POST", CHAT, chat_body("dead", model="dead-model"), timeout=t(10))
        if r.status == 503:
            self.assertErrorEnvelope(r, 503, "service_unavailable", "no_backend", retry_after=True)
        else:
            self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")
        r = raw_exchange(HOST, self.mixed.port, "POST", CHAT, chat_body("live"), timeout=t(10))
        self.assertEqual(r.status, 200, r)

    def wait_ready(self, gw, status):
        deadline = time.monotonic() + t(15)
        r = request(HOST, gw.port, "GET", "/ready", timeout=t(5))
        while r.status != status and time.monotonic() < deadline:
            time.sleep(0.2)
            r = request(HOST, gw.port, "GET", "/ready", timeout=t(5))
        return r

    def test_ready_503_when_no_engine(self):
        r = self.wait_ready(self.dead, 503)
        self.assertEqual(r.status, 503, "/ready with the only backend down: %r" % (r,))
        self.assertEqual(request(HOST, self.dead.port, "GET", "/healthz", timeout=t(5)).status, 200)

    def test_ready_200_when_one_engine_up(self):
        r = self.wait_ready(self.mixed, 200)
        self.assertEqual(r.status, 200, r)
        time.sleep(1.0)  # after probes have had time to run it must still be ready
        self.assertEqual(request(HOST, self.mixed.port, "GET", "/ready", timeout=t(5)).status, 200)

    def test_engine_breaks_stream(self):
        """The engine closes its connection mid-stream (mock close_after = N events): the client
        gets the N events and then a visible failure (an SSE error event, or a stream that ends
        without its terminating chunk), never a clean end that looks like success. With N = 0 a
        502 bad_gateway is also right (nothing relayed yet)."""
        for n in (0, 2):
            with self.subTest(close_after=n):
                body = chat_body("close early", stream=True, mock={"close_after": n, "tokens": 10})
                with Raw(HOST, self.mixed.port, t(10)) as c:
                    c.send_request("POST", CHAT, body)
                    r = c.read_response(tolerate_reset=True)
                if n == 0 and r.status == 502:
                    self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")
                    continue
                self.assertSSEHeaders(r)
                events = sse_events(r.body)
                content = [e for e in events if e != "[DONE]" and "choices" in json.loads(e)]
                errors = [e for e in events if e != "[DONE]" and "error" in json.loads(e)]
                self.assertEqual(len(content), n, events)
                self.assertNotIn("[DONE]", events)
                self.assertTrue(errors or not r.complete,
                                "a broken upstream stream ended like a successful one: %r" % (r.body,))
                if errors:
                    self.assertIsInstance(json.loads(errors[0])["error"].get("message"), str, errors)
