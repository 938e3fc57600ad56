"""SIGTERM: graceful shutdown with streams open, exit status 0, promptly."""

import signal
import socket
import time

from harness import HOST, Gateway, OwnTest, Raw, chat_body, raw_exchange, t


class TestShutdown(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2, name="mock-term")

    def start(self, name):
        g = Gateway({"m": (self.mock.url, ["mock-model"])}, name=name, wait=False)
        self.owned.append(g.proc)
        g.wait_healthy()
        return g

    def test_sigterm_idle(self):
        g = self.start("llmgate-term-idle")
        t0 = time.monotonic()
        g.proc.signal(signal.SIGTERM)
        rc = g.proc.wait_exit(t(5))
        self.assertIsNotNone(rc, "still running 5 s after SIGTERM")
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, t(2))
        self.assertEqual(g.proc.sanitizer_hits(), [])

    def test_sigterm_with_open_streams(self):
        g = self.start("llmgate-term-streams")
        self.mock.reset()
        clients = []
        try:
            for i in range(4):
                c = Raw(HOST, g.port, t(15))
                clients.append(c)
                c.send_request("POST", "/v1/chat/completions",
                               chat_body("long %d" % i, stream=True, mock={"ttft_ms": 0, "itl_ms": 250, "tokens": 200}))
                r = c.read_head()
                self.assertSSEHeaders(r)
                c.resp = r
                c.it = c.iter_body(r)
                next(c.it)  # the first event is flowing
            self.mock.wait_stats(lambda s: s["active"] == 4, t(5), "active == 4")
            t0 = time.monotonic()
            g.proc.signal(signal.SIGTERM)
            time.sleep(0.5)
            # Draining: a new request is refused (connection refused, or 503 draining).
            try:
                r = raw_exchange(HOST, g.port, "POST", "/v1/chat/completions", chat_body("late"), timeout=t(5))
            except (ConnectionRefusedError, ConnectionResetError, EOFError):
                r = None
            if r is not None:
                self.assertErrorEnvelope(r, 503, "service_unavailable", "draining", retry_after=True)
            rc = g.proc.wait_exit(t(15))
            took = time.monotonic() - t0
            self.assertIsNotNone(rc, "llmgate still running 15 s after SIGTERM with 4 streams open")
            self.assertEqual(rc, 0, "exit status after SIGTERM")
            self.assertEqual(g.proc.sanitizer_hits(), [])
            # Every client sees its stream end (cleanly or by a closed connection), none hangs.
            for c in clients:
                c.settimeout(t(5))
                try:
                    for _ in c.it:
                        pass
                except (EOFError, ConnectionResetError):
                    pass
                except socket.timeout:
                    self.fail("a client stream was left hanging after the gateway exited")
            with self.assertRaises(OSError, msg="listening after exit"):
                socket.create_connection((HOST, g.port), timeout=2).close()
            self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0 after shutdown")
            print("\n    shutdown with 4 open streams took %.2fs" % took, end=" ")
        finally:
            for c in clients:
                c.close()

    def test_drain_closes_the_port_at_once(self):
        """From SIGTERM on, a new connection is refused by the kernel (the listening socket is
        closed, not left accepting) while a request on an open keep-alive connection gets 503
        draining, and a stream in progress still completes."""
        g = self.start("llmgate-term-port")
        self.mock.reset()
        idle = Raw(HOST, g.port, t(10))
        stream = Raw(HOST, g.port, t(10))
        try:
            idle.send_request("GET", "/healthz")
            self.assertEqual(idle.read_response(method="GET").status, 200)
            stream.send_request("POST", "/v1/chat/completions",
                                chat_body("s", stream=True, mock={"ttft_ms": 0, "itl_ms": 100, "tokens": 15}))
            r = stream.read_head()
            self.assertSSEHeaders(r)
            it = stream.iter_body(r)
            next(it)
            g.proc.signal(signal.SIGTERM)
            refused = False
            for _ in range(40):  # the main thread takes the signal within its 2 s tick at worst
                try:
                    socket.create_connection((HOST, g.port), timeout=2).close()
                except ConnectionRefusedError:
                    refused = True
                    break
                except ConnectionResetError:
                    pass  # in the backlog at the moment the socket stopped listening
                time.sleep(0.05)
            self.assertTrue(refused, "new connections still accepted during the drain")
            idle.send_request("POST", "/v1/chat/completions", chat_body("late"))
            self.assertErrorEnvelope(idle.read_response(tolerate_reset=True), 503, "service_unavailable",
                                     "draining", retry_after=True)
            body = b"".join(p for _, p in it)
            self.assertIn(b"data: [DONE]", body, "the stream in progress did not complete")
            self.assertEqual(g.proc.wait_exit(t(10)), 0)
            self.assertEqual(g.proc.sanitizer_hits(), [])
        finally:
            idle.close()
            stream.close()


class TestOperatorSignals(OwnTest):
    """HUP, USR1, USR2 (systemctl reload, logrotate) and PIPE never kill the gateway or cut a
    stream; a second gateway on a port in use exits non-zero and never shares it."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2, name="mock-sig")
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, name="llmgate-sig")

    def test_signals_do_not_kill_or_cut(self):
        with Raw(HOST, self.gw.port, t(15)) as c:
            c.send_request("POST", "/v1/chat/completions",
                           chat_body("sig", stream=True, mock={"ttft_ms": 0, "itl_ms": 100, "tokens": 12}))
            r = c.read_head()
            self.assertSSEHeaders(r)
            it = c.iter_body(r)
            next(it)
            for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGHUP):
                self.gw.proc.signal(sig)
                time.sleep(0.1)
            body = b"".join(piece for _, piece in it)
            self.assertTrue(r.complete, "the stream was cut")
        self.assertTrue(self.gw.proc.running(), "a signal killed the gateway")
        self.assertIn(b"data: [DONE]", body, "the stream was cut")
        self.assertEqual(raw_exchange(HOST, self.gw.port, "POST", "/v1/chat/completions",
                                      chat_body("after"), timeout=t(5)).status, 200)
        # HUP reloads (the file is unchanged: the same configuration, a new generation), the
        # others are logged and ignored
        self.gw.proc.wait_log(r"reload: generation 3 ", t(2))
        self.gw.proc.wait_log(r"signal USR1: .*ignored", t(2))

    def test_port_in_use_is_refused(self):
        g = Gateway({"m": (self.mock.url, ["mock-model"])}, name="llmgate-second", port=self.gw.port, wait=False)
        rc = g.proc.wait_exit(t(5))
        if rc is None:
            g.proc.kill()
        self.assertIsNotNone(rc, "a second gateway started on a port in use")
        self.assertNotEqual(rc, 0)
        self.assertIn("Address already in use", g.proc.log_text())
        # the first one still has every connection
        for i in range(20):
            self.assertEqual(raw_exchange(HOST, self.gw.port, "POST", "/v1/chat/completions",
                                          chat_body("one %d" % i), timeout=t(5)).status, 200)
