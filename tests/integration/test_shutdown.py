"""SIGTERM: graceful shutdown with streams open, exit status 0, promptly."""

import json
import os
import signal
import socket
import subprocess
import time

from harness import CTX, HOST, Gateway, OwnTest, Raw, chat_body, raw_exchange, t


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
        closed, not left accepting), an idle keep-alive connection is closed, and a stream in
        progress still completes."""
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
            # the idle keep-alive connection was closed at the drain's start (TestDrain)
            idle.settimeout(t(2))
            self.assertEqual(idle.sock.recv(100), b"", "an idle keep-alive connection left open")
            body = b"".join(p for _, p in it)
            self.assertIn(b"data: [DONE]", body, "the stream in progress did not complete")
            self.assertEqual(g.proc.wait_exit(t(10)), 0)
            self.assertEqual(g.proc.sanitizer_hits(), [])
        finally:
            idle.close()
            stream.close()


class TestDrain(OwnTest):
    """The drain after SIGTERM, as a balancer sees it: /ready goes 503 at once while requests
    are served for drain_grace_s; then the port closes, idle keep-alive connections are closed,
    replies carry Connection: close; a second SIGTERM ends it; a stuck worker cannot crash it."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2, name="mock-drain")

    def start(self, name, timeouts=None, env=None):
        g = Gateway({"m": (self.mock.url, ["mock-model"])}, name=name, wait=False,
                    timeouts=timeouts, env=env)
        self.owned.append(g.proc)
        g.wait_healthy()
        return g

    def stream(self, g, tokens, itl_ms=100):
        c = Raw(HOST, g.port, t(15))
        c.send_request("POST", "/v1/chat/completions",
                       chat_body("s", stream=True, mock={"ttft_ms": 0, "itl_ms": itl_ms, "tokens": tokens}))
        r = c.read_head()
        self.assertSSEHeaders(r)
        c.it = c.iter_body(r)
        next(c.it)
        return c

    def test_grace_ready_503_while_serving(self):
        g = self.start("llmgate-grace", timeouts={"drain_s": 5, "drain_grace_s": 3})
        kept = Raw(HOST, g.port, t(10))
        try:
            kept.send_request("GET", "/healthz")
            self.assertEqual(kept.read_response(method="GET").status, 200)
            t0 = time.monotonic()
            g.proc.signal(signal.SIGTERM)
            ready = None
            while time.monotonic() - t0 < t(1.5):
                ready = raw_exchange(HOST, g.port, "GET", "/ready", timeout=t(2))
                if ready.status == 503:
                    break
                time.sleep(0.02)
            self.assertEqual(ready.status, 503, "/ready still 200 after SIGTERM: %r" % (ready,))
            self.assertEqual(json.loads(ready.body)["status"], "draining")
            self.assertLess(time.monotonic() - t0, t(1.5))
            # within the grace: served as before, on a new connection and on a kept-alive one
            r = raw_exchange(HOST, g.port, "POST", "/v1/chat/completions", chat_body("new"), timeout=t(5))
            self.assertEqual(r.status, 200, r)
            kept.send_request("POST", "/v1/chat/completions", chat_body("kept"))
            r = kept.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("close", r.headers.get("connection", "").lower(), r)
            self.assertTrue(g.proc.running())
            self.assertLess(time.monotonic() - t0, 2.5, "too slow to tell the grace from its end")
            # after the grace: the port is closed
            refused = False
            while time.monotonic() - t0 < 3 + t(2):
                try:
                    socket.create_connection((HOST, g.port), timeout=1).close()
                except ConnectionRefusedError:
                    refused = True
                    break
                except ConnectionResetError:
                    pass
                time.sleep(0.05)
            self.assertTrue(refused, "new connections still accepted after the grace")
            self.assertGreater(time.monotonic() - t0, 2.9, "the port closed before the grace ended")
            self.assertEqual(g.proc.wait_exit(t(10)), 0)
            self.assertEqual(g.proc.sanitizer_hits(), [])
        finally:
            kept.close()

    def test_reply_while_draining_has_connection_close(self):
        """A request in flight at SIGTERM is answered with Connection: close, and its kept-alive
        connection ends after the reply."""
        g = self.start("llmgate-connclose", timeouts={"drain_s": 10})
        self.mock.reset()
        c = Raw(HOST, g.port, t(10))
        try:
            c.send_request("POST", "/v1/chat/completions", chat_body("slow", mock={"ttft_ms": 1500}))
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
            g.proc.signal(signal.SIGTERM)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("connection", "").lower(), "close", r)
            c.settimeout(t(2))
            self.assertEqual(c.sock.recv(100), b"", "the connection stayed open after its reply")
            self.assertEqual(g.proc.wait_exit(t(10)), 0)
        finally:
            c.close()

    def test_idle_keepalive_closed_at_drain_start(self):
        """An idle keep-alive connection is closed at SIGTERM, and one that goes idle during the
        drain (its stream ended) is closed then, while a long stream keeps the drain going."""
        g = self.start("llmgate-idleclose", timeouts={"drain_s": 20})
        self.mock.reset()
        idle = Raw(HOST, g.port, t(10))
        short = long_ = None
        try:
            idle.send_request("GET", "/healthz")
            self.assertEqual(idle.read_response(method="GET").status, 200)
            short = self.stream(g, tokens=10)
            long_ = self.stream(g, tokens=300)
            g.proc.signal(signal.SIGTERM)
            idle.settimeout(t(1.5))
            try:
                got = idle.sock.recv(100)
            except socket.timeout:
                self.fail("an idle keep-alive connection still open 1.5 s after SIGTERM")
            self.assertEqual(got, b"")
            body = b"".join(p for _, p in short.it)
            self.assertIn(b"data: [DONE]", body, "the short stream was cut")
            short.settimeout(t(1.5))
            try:
                got = short.sock.recv(100)
            except socket.timeout:
                self.fail("a connection that went idle during the drain was left open")
            self.assertEqual(got, b"")
            self.assertTrue(g.proc.running(), "the long stream should keep the drain going")
        finally:
            for c in (idle, short, long_):
                if c:
                    c.close()

    def test_second_sigterm_ends_the_drain(self):
        g = self.start("llmgate-second", timeouts={"drain_s": 30})
        self.mock.reset()
        c = self.stream(g, tokens=1000)
        try:
            g.proc.signal(signal.SIGTERM)
            time.sleep(0.5)
            next(c.it)  # still flowing: the drain lets it run
            t0 = time.monotonic()
            g.proc.signal(signal.SIGTERM)
            rc = g.proc.wait_exit(t(4))
            self.assertIsNotNone(rc, "still running 4 s after a second SIGTERM (drain_s is 30)")
            self.assertEqual(rc, 0)
            self.assertLess(time.monotonic() - t0, t(4))
            c.settimeout(t(2))
            body = b""
            try:
                body = b"".join(p for _, p in c.it)
            except (EOFError, ConnectionResetError):
                pass
            self.assertNotIn(b"data: [DONE]", body, "the stream was not cut")
            self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "the engine's transfer ended")
            self.assertEqual(g.proc.sanitizer_hits(), [])
        finally:
            c.close()

    def stall_shim(self):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims", "stall.c")
        so = os.path.join(CTX.tmp, "stall.so")
        if not os.path.exists(so):
            subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl"], check=True, timeout=60)
        return so

    def stalled(self, name, stall_ms):
        flag = os.path.join(CTX.tmp, name + ".stall")
        env = {"LD_PRELOAD": self.stall_shim(), "STALL_FILE": flag, "STALL_MS": str(stall_ms),
               # the sanitizer runtime must come first in the library list; the shim is harmless
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        g = self.start(name, timeouts={"drain_s": 0}, env=env)
        self.mock.reset()
        return g, flag

    def test_worker_stuck_past_the_drain(self):
        """A worker stuck in a call for 3.5 s while it aborts a stream (past the abort's 2 s
        wait): the daemon is not stopped under it -- the worker ends the stream when it comes
        back, then the gateway exits 0."""
        g, flag = self.stalled("llmgate-stuck", 3500)
        c = self.stream(g, tokens=1000)
        try:
            open(flag, "w").close()
            t0 = time.monotonic()
            g.proc.signal(signal.SIGTERM)
            rc = g.proc.wait_exit(t(12))
            self.assertIsNotNone(rc, "still running 12 s after SIGTERM")
            self.assertEqual(rc, 0, "exit status; log:\n%s" % g.proc.tail(15))
            self.assertGreater(time.monotonic() - t0, 3.0, "the worker was not stuck")
            self.assertEqual(g.proc.sanitizer_hits(), [])
            c.settimeout(t(2))
            body = b""
            try:
                body = b"".join(p for _, p in c.it)
            except (EOFError, ConnectionResetError):
                pass
            self.assertIn(b"shutting down", body, "the stream did not end with the error event")
        finally:
            c.close()

    def test_worker_stuck_for_good(self):
        """A worker that does not come back: the gateway exits within its bound (status 1, said
        in the log) instead of freeing connections under it or waiting forever."""
        g, flag = self.stalled("llmgate-stuck2", 60000)
        c = self.stream(g, tokens=1000)
        try:
            open(flag, "w").close()
            t0 = time.monotonic()
            g.proc.signal(signal.SIGTERM)
            rc = g.proc.wait_exit(t(12))
            self.assertIsNotNone(rc, "still running 12 s after SIGTERM")
            self.assertEqual(rc, 1, "exit status; log:\n%s" % g.proc.tail(15))
            self.owned.remove(g.proc)  # exited as it should, not with 0
            self.assertLess(time.monotonic() - t0, t(10))
            self.assertIn("a worker did not stop", g.proc.log_text())
            self.assertEqual(g.proc.sanitizer_hits(), [])
        finally:
            c.close()


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
