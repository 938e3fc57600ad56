"""A client that goes away cancels its upstream request: mid-stream, before the first byte, queued."""

import socket
import time

from harness import HOST, OwnTest, Raw, SharedTest, chat_body, request, t

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


class TestSendTimeout(OwnTest):
    """[server] client_send_timeout_s: a client that stops reading its stream (its socket full,
    the engine's transfer paused on a full buffer) holds its engine permit only that long; a
    client that reads slowly but steadily is never cut."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 5, name="mock-sendto")
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], 1)},
                                 server={"client_send_timeout_s": 2, "stream_buffer_bytes": 16384},
                                 limits={"queue_timeout_ms": 12000}, name="llmgate-sendto")

    @staticmethod
    def stuck_client(port, tokens, small_rcvbuf=True):
        """Connects with a small receive buffer, sends a stream request, reads nothing."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small_rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, port))
        body = chat_body("never read", stream=True, mock={"ttft_ms": 0, "itl_ms": 0, "tokens": tokens})
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (CHAT.encode(), len(body), body))
        return s

    def test_stuck_reader_frees_its_permit(self):
        """The only permit is held by a client that reads nothing of a long stream; with
        client_send_timeout_s = 2 the next request is served within a few seconds (before: it
        waited for the queue timeout, 12 s, and got 503)."""
        stuck = self.stuck_client(self.gw.port, 200000)
        try:
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "the stuck stream at the engine")
            time.sleep(0.5)  # its buffers fill; the transfer pauses
            t0 = time.monotonic()
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send_request("POST", CHAT, chat_body("next", stream=False))
                r = c.read_response()
            took = time.monotonic() - t0
            self.assertEqual(r.status, 200, r)
            self.assertLess(took, 7, "served only %.1f s later" % took)
            # the stuck client's connection was cut: it reads what was sent, then the end
            stuck.settimeout(t(5))
            got = 0
            while True:
                try:
                    b = stuck.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not b:
                    break
                got += len(b)
            self.assertGreater(got, 0)
        finally:
            stuck.close()
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        self.assertRegex(m, r"llmgate_client_send_timeouts_total [1-9]")
        self.gw.proc.wait_log(r"took no response byte for client_send_timeout_s", t(2))

    def test_slow_reader_is_not_cut(self):
        """A client that reads 1 MB bursts 0.5 s apart (less than the timeout apart; slower than
        the engine writes) of a stream larger than every buffer on the way (~3 MB in the kernel
        here), so that bytes wait for it the whole time, reads its whole stream: the deadline
        runs between two takes, not from the first byte that waited."""
        s = self.stuck_client(self.gw.port, 60000, small_rcvbuf=False)  # ~9 MB of events
        try:
            data = bytearray()
            deadline = time.monotonic() + t(40)
            done = False
            while not done and time.monotonic() < deadline:
                time.sleep(0.5)
                s.setblocking(False)
                burst = 0
                while burst < (1 << 20):
                    try:
                        b = s.recv(1 << 20)
                    except BlockingIOError:
                        break
                    if not b:
                        done = True
                        break
                    data += b
                    burst += len(b)
                    if data.endswith(b"0\r\n\r\n"):
                        done = True
                        break
        finally:
            s.close()
        self.assertTrue(data.endswith(b"0\r\n\r\n"), "the stream was cut after %d bytes" % len(data))
        self.assertIn(b"data: [DONE]", data)
        self.assertGreater(len(data), 6 << 20)
