"""Parking (http/guard.h): while requests wait for permits, a newcomer's body is read up to one
byte short of its end and the request waits for its permit parked, off libmicrohttpd's list of
suspended connections. Whatever happens to it there, a user must not be able to tell: every
answer, byte and status as without parking, keep-alive and pipelining intact, a client that
leaves is noticed, nothing leaks. Each test checks that the requests it means did park
(llmgate_requests_parked_total), so that none passes by not parking at all."""
import json
import re
import socket
import struct
import time

from harness import HOST, OwnTest, Raw, build_request, chat_body, expected_content, request, t

CHAT = "/v1/chat/completions"


def parked(port):
    r = request(HOST, port, "GET", "/metrics", timeout=t(5))
    m = re.search(r"^llmgate_requests_parked_total (\d+)$", r.body.decode(), re.M)
    if not m:
        raise AssertionError("llmgate_requests_parked_total missing from /metrics")
    return int(m.group(1))


def gauge(port, name):
    r = request(HOST, port, "GET", "/metrics", timeout=t(5))
    m = re.search(r"^%s (\d+)$" % name, r.body.decode(), re.M)
    return int(m.group(1)) if m else None


class ParkTest(OwnTest):
    QUEUE_TIMEOUT_MS, NAME = 20000, "llmgate-park"

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 limits={"max_inflight": 1, "queue_capacity": 200,
                                         "queue_timeout_ms": int(t(cls.QUEUE_TIMEOUT_MS))},
                                 name=cls.NAME)

    def hold(self, ms):
        """A request holding the only permit for ms, and one waiting behind it (suspended: it
        came while nobody waited), so that everything sent next parks."""
        a = Raw(HOST, self.gw.port, t(30))
        a.send_request("POST", CHAT, chat_body("holder", mock={"ttft_ms": int(ms)}))
        self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "active == 1")
        b = Raw(HOST, self.gw.port, t(30))
        b.send_request("POST", CHAT, chat_body("first waiter"))
        deadline = time.monotonic() + t(5)
        while gauge(self.gw.port, "llmgate_queued") != 1:
            self.assertLess(time.monotonic(), deadline, "the first waiter never queued")
            time.sleep(0.02)
        return a, b

    def settle(self, a, b):
        self.assertEqual(a.read_response().status, 200)
        self.assertEqual(b.read_response().status, 200)
        a.close()
        b.close()

    def assert_idle(self):
        deadline = time.monotonic() + t(5)
        while True:
            q, i = gauge(self.gw.port, "llmgate_queued"), gauge(self.gw.port, "llmgate_inflight")
            if q == 0 and i == 0:
                break
            self.assertLess(time.monotonic(), deadline, "queued %s inflight %s" % (q, i))
            time.sleep(0.05)
        r = request(HOST, self.gw.port, "POST", CHAT, chat_body("after"), timeout=t(10))
        self.assertEqual(r.status, 200, r)


class TestPark(ParkTest):
    def test_waiters_served_intact_and_kept_alive(self):
        """20 parked waiters, plain and streamed, each its own token count: each gets its own
        answer, and its connection serves a second request after it."""
        self.mock.reset()
        p0 = parked(self.gw.port)
        a, b = self.hold(t(1000))
        cs = []
        for i in range(20):
            c = Raw(HOST, self.gw.port, t(30))
            c.send_request("POST", CHAT, chat_body("waiter %d" % i, stream=i % 2 == 1,
                                                   mock={"tokens": 3 + i}))
            cs.append(c)
        time.sleep(0.3)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 20, "the waiters did not park")
        self.settle(a, b)
        for i, c in enumerate(cs):
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            if i % 2:
                self.assertIn(b"data: [DONE]", r.body)
                self.assertIn(expected_content(3 + i).split()[-1].encode(), r.body)
            else:
                body = json.loads(r.body)
                self.assertEqual(body["choices"][0]["message"]["content"], expected_content(3 + i))
            c.send_request("POST", CHAT, chat_body("again", mock={"tokens": 1}))
            self.assertEqual(c.read_response().status, 200)
            c.close()
        self.assertEqual(self.mock.stats()["requests"], 2 + 20 + 20)
        self.assert_idle()

    def test_twice_in_a_row(self):
        """The same again at once: parking holds nothing over from the previous crowd."""
        for _ in range(2):
            p0 = parked(self.gw.port)
            a, b = self.hold(t(500))
            cs = [Raw(HOST, self.gw.port, t(30)) for _ in range(5)]
            for c in cs:
                c.send_request("POST", CHAT, chat_body("again"))
            time.sleep(0.2)
            self.assertGreaterEqual(parked(self.gw.port) - p0, 5)
            self.settle(a, b)
            for c in cs:
                self.assertEqual(c.read_response().status, 200)
                c.close()
        self.assert_idle()

    def test_pipelined_behind_parked(self):
        """A request pipelined behind a parked one: both answered, in order."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(500))
        c = Raw(HOST, self.gw.port, t(30))
        hp = "%s:%d" % (HOST, self.gw.port)
        c.send(build_request("POST", CHAT, hp, chat_body("one", mock={"tokens": 1})) +
               build_request("POST", CHAT, hp, chat_body("two", mock={"tokens": 4})))
        time.sleep(0.2)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 1)
        self.settle(a, b)
        r1, r2 = c.read_response(), c.read_response()
        c.close()
        self.assertEqual(json.loads(r1.body)["choices"][0]["message"]["content"], expected_content(1))
        self.assertEqual(json.loads(r2.body)["choices"][0]["message"]["content"], expected_content(4))
        self.assert_idle()

    def test_body_in_pieces(self):
        """Bodies that arrive in pieces: the last two bytes apart, and the last byte alone (then
        it is read as it comes: nothing is held back once libmicrohttpd has the rest)."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(800))
        hp = "%s:%d" % (HOST, self.gw.port)
        conns = []
        for cut in (2, 1):
            c = Raw(HOST, self.gw.port, t(30))
            req = build_request("POST", CHAT, hp, chat_body("pieces %d" % cut, mock={"tokens": cut}))
            c.send(req[:-cut])
            time.sleep(0.15)
            c.send(req[-cut:])
            conns.append((cut, c))
        time.sleep(0.2)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 1, "the 2-byte split did not park")
        self.settle(a, b)
        for cut, c in conns:
            r = c.read_response()
            c.close()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body)["choices"][0]["message"]["content"], expected_content(cut))
        self.assert_idle()

    def test_refused_while_parked(self):
        """What the final call would refuse is refused as before: invalid JSON 400, an unknown
        model 404, with the held byte read (keep-alive intact)."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(500))
        c = Raw(HOST, self.gw.port, t(30))
        c.send_request("POST", CHAT, b'{"model": "mock-model", "messages": [}')
        r = c.read_response()
        self.assertEqual(r.status, 400, r)
        c.send_request("POST", CHAT, chat_body("x", model="no-such-model"))
        r = c.read_response()
        self.assertEqual(r.status, 404, r)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 2)
        c.close()
        self.settle(a, b)
        self.assert_idle()

    def test_expect_continue(self):
        """Expect: 100-continue: the body after the interim answer, then parked."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(500))
        c = Raw(HOST, self.gw.port, t(30))
        body = chat_body("expect", mock={"tokens": 2})
        c.send(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (CHAT, len(body))).encode())
        head = c.read_head()
        self.assertEqual(head.status, 100)
        c.send(body)
        time.sleep(0.2)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 1)
        self.settle(a, b)
        r = c.read_response()
        c.close()
        self.assertEqual(r.status, 200, r)
        self.assert_idle()

    def test_half_close_while_parked(self):
        """A client that sends its request and shuts its sending side (legal HTTP, as with a
        suspended waiter): answered in full, streamed and not, once its permit comes."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(800))
        conns = []
        for stream in (False, True):
            c = Raw(HOST, self.gw.port, t(30))
            c.send_request("POST", CHAT, chat_body("half", stream=stream, mock={"tokens": 3}),
                           headers={"Connection": "close"})
            c.sock.shutdown(socket.SHUT_WR)
            conns.append((stream, c))
        time.sleep(0.3)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 2)
        self.settle(a, b)
        for stream, c in conns:
            r = c.read_response()
            c.close()
            self.assertEqual(r.status, 200, (stream, r))
            if stream:
                self.assertIn(b"data: [DONE]", r.body)
            else:
                self.assertEqual(json.loads(r.body)["choices"][0]["message"]["content"],
                                 expected_content(3))
        self.assert_idle()


class TestParkLeaves(ParkTest):
    QUEUE_TIMEOUT_MS, NAME = 1500, "llmgate-park-leave"

    def test_client_leaves_while_parked(self):
        """Parked clients that close (FIN) or reset: never sent to the engine, no permit or
        queue place kept."""
        self.mock.reset()
        p0 = parked(self.gw.port)
        a, b = self.hold(t(1200))
        fin, rst = Raw(HOST, self.gw.port, t(30)), Raw(HOST, self.gw.port, t(30))
        fin.send_request("POST", CHAT, chat_body("leaves"))
        rst.send_request("POST", CHAT, chat_body("resets"))
        time.sleep(0.3)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 2)
        fin.close()
        rst.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.close()
        time.sleep(0.3)
        self.assertEqual(gauge(self.gw.port, "llmgate_queued"), 1, "the leavers still wait")
        self.settle(a, b)
        time.sleep(0.3)
        self.assertEqual(self.mock.stats()["requests"], 2, "a parked client that left reached the engine")
        self.assert_idle()

    def test_queue_timeout_while_parked(self):
        """A parked request whose wait ends: 503 queue_timeout with Retry-After, on time."""
        p0 = parked(self.gw.port)
        a, b = self.hold(t(3000))
        c = Raw(HOST, self.gw.port, t(30))
        t0 = time.monotonic()
        c.send_request("POST", CHAT, chat_body("times out"))
        r = c.read_response()
        waited = time.monotonic() - t0
        self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_timeout", retry_after=True)
        self.assertGreater(waited, 1.2)
        self.assertLess(waited, t(1.5) + 1.5)
        self.assertGreaterEqual(parked(self.gw.port) - p0, 1)
        c.close()
        a.read_response()
        a.close()
        b.read_response()
        b.close()
        self.assert_idle()
