"""Per-key limits ([key.NAME] max_concurrency, rpm, tpm): 429 rate_limit_exceeded naming the limit,
with Retry-After and retry-after-ms from the bucket's refill; decided from the headers before the
body is read where the headers tell; OpenAI's x-ratelimit-* headers on admitted responses; every
slot given back."""

import json
import re
import signal
import threading
import time

from harness import CTX, HOST, OwnTest, Raw, build_request, chat_body, free_port, in_thread, request, t

CTX_SLOW = bool(CTX.sanitizer)  # ASan: a slower gateway, the same order

CHAT = "/v1/chat/completions"
KEYS = {"conc": "sk-conc-0123", "rpm": "sk-rpm-0123", "tpm": "sk-tpm-0123", "free": "sk-free-0123"}


class TestKeyLimits(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3)
        cls.gw = cls.own_gateway(
            {"m": (cls.mock.url, ["mock-model"])}, keys=KEYS,
            extra=[("key.conc", {"max_concurrency": 2}), ("key.rpm", {"rpm": 3}),
                   ("key.tpm", {"tpm": 1000})],
            name="llmgate-keylimits")

    def rq(self, key, body, headers=None):
        h = {"Authorization": "Bearer " + KEYS[key]}
        h.update(headers or {})
        with Raw(HOST, self.gw.port, t(20)) as c:
            c.send_request("POST", CHAT, body, headers=h)
            return c.read_response(tolerate_reset=True)

    def key_inflight(self, key):
        body = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        return int(re.search(r'^llmgate_key_inflight\{key="%s"\} (\d+)$' % key, body, re.M).group(1))

    def assert429(self, r, limit, retry_min_ms, retry_max_ms):
        self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        self.assertIn("rate limit exceeded: %s " % limit, json.loads(r.body)["error"]["message"])
        ms = int(r.headers["retry-after-ms"])
        self.assertGreaterEqual(ms, retry_min_ms, r.headers)
        self.assertLessEqual(ms, retry_max_ms, r.headers)
        self.assertEqual(int(r.headers["retry-after"]), (ms + 999) // 1000, r.headers)

    def test_concurrency_from_the_headers(self):
        """Two slow requests hold the key's two slots: a third is refused 429 max_concurrency
        from its headers alone (its body is never sent), and the engine never sees it; the
        slots come back when the two end."""
        before = self.mock.stats()["requests"]
        slow = chat_body("slow", mock={"ttft_ms": 1500})
        out = []
        threads = [threading.Thread(target=lambda: out.append(self.rq("conc", slow))) for _ in range(2)]
        for th in threads:
            th.start()
        self.mock.wait_stats(lambda s: s["active"] == 2, t(5), "two in flight")
        self.assertEqual(self.key_inflight("conc"), 2)
        body = chat_body("third")
        with Raw(HOST, self.gw.port, t(10)) as c:
            data = build_request("POST", CHAT, "%s:%d" % (HOST, self.gw.port), body,
                                 {"Authorization": "Bearer " + KEYS["conc"]})
            c.send(data[:-len(body)])  # the headers only
            r = c.read_response(tolerate_reset=True)
        self.assert429(r, "max_concurrency", 1, 60000)
        # another key is not held back
        self.assertEqual(self.rq("free", chat_body("free")).status, 200)
        for th in threads:
            th.join()
        self.assertEqual([x.status for x in out], [200, 200], out)
        self.assertEqual(self.mock.stats()["requests"], before + 3)
        deadline = time.monotonic() + t(3)
        while self.key_inflight("conc"):
            self.assertLess(time.monotonic(), deadline, "the key's slots did not come back")
            time.sleep(0.02)
        self.assertEqual(self.rq("conc", chat_body("after")).status, 200)
        deadline = time.monotonic() + t(3)
        while self.key_inflight("conc"):  # the completion callback runs after the last byte
            self.assertLess(time.monotonic(), deadline, "the key's slot did not come back")
            time.sleep(0.02)

    def test_rpm(self):
        """rpm = 3: three requests, each telling what is left; the fourth is refused with the
        time until the bucket holds one again (20 s at 3 a minute)."""
        left = []
        for i in range(3):
            r = self.rq("rpm", chat_body("rpm %d" % i))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers["x-ratelimit-limit-requests"], "3")
            left.append(int(r.headers["x-ratelimit-remaining-requests"]))
            self.assertRegex(r.headers["x-ratelimit-reset-requests"], r"^\d+(ms|\.\d{3}s|m\d+s)$")
        self.assertEqual(left, [2, 1, 0])
        before = self.mock.stats()["requests"]
        r = self.rq("rpm", chat_body("rpm 4"))
        self.assert429(r, "rpm", 15000, 20000)
        self.assertEqual(self.mock.stats()["requests"], before)

    def test_tpm(self):
        """tpm = 1000, charged by estimate at admission (prompt bytes / 4 + max_tokens) and
        corrected by the engine's usage at the end: while a request for 900 runs, one for 500
        is refused after its body with the bucket's refill time; once the first ends (the mock
        used 3), its unused tokens are back and 900 more go through, again and again (a plain
        answer's usage and a stream's last chunk both read)."""
        out = []
        th = threading.Thread(target=lambda: out.append(
            self.rq("tpm", chat_body("t", max_tokens=900, mock={"ttft_ms": 1500, "tokens": 3}))))
        th.start()
        try:
            self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "the first in flight")
            r = self.rq("tpm", chat_body("t", max_tokens=500))
            self.assert429(r, "tpm", 20000, 30000)
        finally:
            th.join()
        self.assertEqual(out[0].status, 200, out[0])
        self.assertEqual(out[0].headers["x-ratelimit-limit-tokens"], "1000")
        self.assertLess(int(out[0].headers["x-ratelimit-remaining-tokens"]), 100)
        self.assertNotIn("x-ratelimit-limit-requests", out[0].headers)
        r = self.rq("tpm", chat_body("t", max_tokens=900, mock={"tokens": 3}))
        self.assertEqual(r.status, 200, r)
        # the streamed usage (stream_options.include_usage) is read too
        r = self.rq("tpm", chat_body("t", stream=True, max_tokens=900, mock={"tokens": 3},
                                     stream_options={"include_usage": True}))
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'"usage"', r.body)
        r = self.rq("tpm", chat_body("t", max_tokens=900, mock={"tokens": 3}))
        self.assertEqual(r.status, 200, r)

    def test_no_limits_no_headers(self):
        r = self.rq("free", chat_body("free"))
        self.assertEqual(r.status, 200, r)
        self.assertFalse([h for h in r.headers if h.startswith("x-ratelimit")], r.headers)


class TestFairQueue(OwnTest):
    """One permit (max_inflight = 1), an engine that takes 150 ms per request: a key that
    floods the queue cannot delay another key's single request by more than about one service
    time; a high-priority key passes the queue; X-Priority may lower a class, not raise it; a
    full queue refuses the key holding most of it 429 (its fault), another key 503."""

    SERVICE_S = 0.15

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", int(cls.SERVICE_S * 1000), "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway(
            {"m": (cls.mock.url, ["mock-model"], 1)}, keys={"flood": "sk-flood-1", "one": "sk-one-1",
                                                         "vip": "sk-vip-1"},
            limits={"max_inflight": 1, "queue_capacity": 24, "queue_timeout_ms": 60000},
            extra=[("key.vip", {"priority": "high"})], name="llmgate-fair")

    def rq(self, key, content, headers=None):
        h = {"Authorization": "Bearer sk-%s-1" % key}
        h.update(headers or {})
        with Raw(HOST, self.gw.port, t(60)) as c:
            c.send_request("POST", CHAT, chat_body(content), headers=h)
            return c.read_response()

    def flood(self, n):
        """n requests of key 'flood' in the queue (one running); returns the threads and results."""
        out = []
        ths = [threading.Thread(target=lambda i=i: out.append(self.rq("flood", "flood %d" % i)))
               for i in range(n)]
        for th in ths:
            th.start()
        deadline = time.monotonic() + t(5)
        while self.mock.stats()["active"] < 1 or self.queued() < n - 1:
            self.assertLess(time.monotonic(), deadline, "the flood is not queued")
            time.sleep(0.01)
        return ths, out

    def queued(self):
        body = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        return int(re.search(r"^llmgate_queued (\d+)$", body, re.M).group(1))

    def test_one_request_is_not_starved(self):
        ths, out = self.flood(16)
        try:
            t0 = time.monotonic()
            r = self.rq("one", "just one")
            took = time.monotonic() - t0
            self.assertEqual(r.status, 200, r)
            # FIFO would take 16 service times (2.4 s); fair queuing: the one running, then this
            self.assertLess(took, 3.5 * self.SERVICE_S * (3 if CTX_SLOW else 1),
                            "a single request waited %.2fs behind a flood of 16" % took)
        finally:
            for th in ths:
                th.join()
        self.assertEqual([x.status for x in out], [200] * 16)

    def test_priority(self):
        ths, out = self.flood(10)
        try:
            t0 = time.monotonic()
            r = self.rq("vip", "vip")
            self.assertEqual(r.status, 200, r)
            self.assertLess(time.monotonic() - t0, 3.5 * self.SERVICE_S * (3 if CTX_SLOW else 1))
        finally:
            for th in ths:
                th.join()
        r = self.rq("one", "bad priority", {"X-Priority": "urgent"})
        self.assertErrorEnvelope(r, 400, "invalid_request_error", "invalid_request")
        self.assertEqual(self.rq("vip", "asks lower", {"X-Priority": "low"}).status, 200)

    def get_queue(self, key):
        h = {"Authorization": "Bearer sk-%s-1" % key} if key else {}
        with Raw(HOST, self.gw.port, t(10)) as c:
            c.send_request("GET", "/v1/queue", headers=h)
            return c.read_response(method="GET")

    def test_queue_endpoint(self):
        """GET /v1/queue: the caller's waiting requests, and each pool's depth and wait."""
        ths, out = self.flood(10)  # 1 running, 9 waiting
        try:
            r = self.get_queue("flood")
            self.assertEqual(r.status, 200, r)
            q = json.loads(r.body)
            self.assertEqual((q["object"], q["key"]), ("queue", "flood"))
            self.assertEqual((q["queued"], q["in_progress"]), (9, 1), q)
            self.assertEqual(len(q["pools"]), 1, q)
            p = q["pools"][0]
            self.assertEqual((p["models"], p["backends"], p["slots"]), (["mock-model"], ["m"], 1), p)
            self.assertEqual((p["in_flight"], p["queued"]), (1, 9), p)
            # 10 permits' time ahead (nine waiting and this one) at ~150 ms each
            self.assertGreater(p["estimated_wait_ms"], 5 * self.SERVICE_S * 1000, p)
            q = json.loads(self.get_queue("one").body)
            self.assertEqual((q["key"], q["queued"], q["in_progress"]), ("one", 0, 0), q)
            self.assertErrorEnvelope(self.get_queue(None), 401, "authentication_error", "invalid_api_key")
        finally:
            for th in ths:
                th.join()
        q = json.loads(self.get_queue("flood").body)
        self.assertEqual((q["queued"], q["in_progress"], q["pools"][0]["queued"]), (0, 0, 0), q)
        self.assertEqual(q["pools"][0]["estimated_wait_ms"], 0, q)

    def test_fair_share_refusal(self):
        """The flood holds 20 of the 24 places, 'one' holds 3: the queue has one place left,
        then none. The flood's next request is its own fault (429 fair share); 'one''s is the
        gateway's (503 queue_full)."""
        ths, out = self.flood(21)  # 1 running, 20 queued
        try:
            more = []
            ths2 = [threading.Thread(target=lambda i=i: more.append(self.rq("one", "one %d" % i)))
                    for i in range(4)]
            for th in ths2:
                th.start()
            deadline = time.monotonic() + t(5)
            while self.queued() < 24:
                self.assertLess(time.monotonic(), deadline, "the queue did not fill")
                time.sleep(0.01)
            r = self.rq("flood", "one too many")
            self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
            self.assertIn("fair share", json.loads(r.body)["error"]["message"])
            self.assertIn("retry-after-ms", r.headers)
            r = self.rq("one", "no room")
            self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_full")
        finally:
            for th in ths + ths2:
                th.join()
        self.assertEqual([x.status for x in out + more], [200] * 25)


class TestCrowdRetry(OwnTest):
    """A crowd refused together is told staggered Retry-After times (one permit's time apart,
    from the pool's measured hold time and slots): coming back exactly when told, nearly all
    get in on their second try."""

    SERVICE_MS = 200
    CROWD = 50

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", cls.SERVICE_MS, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], 2)},
                                 limits={"max_inflight": 2, "queue_capacity": 4, "queue_timeout_ms": 60000},
                                 name="llmgate-crowd")

    def one(self, content):
        with Raw(HOST, self.gw.port, t(60)) as c:
            c.send_request("POST", CHAT, chat_body(content))
            return c.read_response()

    def test_crowd_comes_back_when_told(self):
        for i in range(4):  # history: the pool's hold time
            self.assertEqual(self.one("warm %d" % i).status, 200)
        results = [None] * self.CROWD
        barrier = threading.Barrier(self.CROWD)

        def client(i):
            barrier.wait()
            r = self.one("crowd %d" % i)
            if r.status != 503:
                results[i] = ("first", r.status, 0)
                return
            ms = int(r.headers["retry-after-ms"])
            time.sleep(ms / 1000.0)
            r2 = self.one("crowd %d again" % i)
            results[i] = ("second", r2.status, ms)

        ths = [threading.Thread(target=client, args=(i,)) for i in range(self.CROWD)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        refused = [x for x in results if x[0] == "second"]
        told = sorted(x[2] for x in refused)
        got_in = sum(1 for x in refused if x[1] == 200)
        share = got_in / max(1, len(refused))
        print("\n    crowd: %d of %d refused at first; %d of them (%.0f%%) got in when they came back; "
              "told %d..%d ms" % (len(refused), self.CROWD, got_in, 100 * share, told[0], told[-1]),
              end=" ")
        self.assertGreaterEqual(len(refused), self.CROWD - 10)
        self.assertEqual(len(set(told)), len(told), "two refused clients were told the same time")
        self.assertGreaterEqual(share, 0.8)


class TestRetryAfterTrue(OwnTest):
    """Issue 13 item 1, on a fresh gateway with the default prior: 4 slots, queue 4, requests of
    0.44 s. A crowd of 50 refused at once and retrying when told (retry-after-ms) gets in at the
    first retry (>= 90%), and the longest wait told is within 2x of what serving the crowd needs
    (its requests x 0.44 s / 4 slots); the same for a second crowd 1 s later. (Before: told
    12.5..135 s; a second crowd 133..138 s.)"""

    SERVICE_MS = 440
    SLOTS = 4
    CROWD = 50
    REFUSED = 503  # what a refusal is
    HEADERS = None

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", cls.SERVICE_MS, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], cls.SLOTS)},
                                 limits={"max_inflight": cls.SLOTS, "queue_capacity": 4,
                                         "queue_timeout_ms": 60000},
                                 name="llmgate-retry-true")

    def one(self, content):
        with Raw(HOST, self.gw.port, t(60)) as c:
            c.send_request("POST", CHAT, chat_body(content), headers=self.HEADERS)
            return c.read_response()

    def crowd(self, tag, start, out):
        barrier = threading.Barrier(self.CROWD)

        def client(i):
            barrier.wait()
            tries, told = [], []
            for attempt in range(8):
                r = self.one("%s %d %d" % (tag, i, attempt))
                tries.append(r.status)
                if r.status != self.REFUSED:
                    break
                ms = int(r.headers["retry-after-ms"])
                told.append(ms)
                time.sleep(ms / 1000.0)
            out[i] = (tries, told)

        time.sleep(max(0.0, start - time.monotonic()))
        ths = [threading.Thread(target=client, args=(i,)) for i in range(self.CROWD)]
        for th in ths:
            th.start()
        return ths

    def figures(self, name, out, work):
        refused = [x for x in out if x[0][0] == self.REFUSED]
        first_retry_in = sum(1 for x in refused if len(x[0]) > 1 and x[0][1] == 200)
        served = sum(1 for x in out if x[0][-1] == 200)
        longest = max(max(x[1]) for x in refused)
        need_ms = work * self.SERVICE_MS / self.SLOTS
        print("\n    %s: %d refused, %d got in at the first retry, %d of %d served; longest wait told "
              "%d ms, serving %d needs %d ms" % (name, len(refused), first_retry_in, served, len(out),
                                                 longest, work, need_ms), end=" ")
        self.assertEqual(served, len(out))
        self.assertGreaterEqual(first_retry_in, 0.9 * len(refused))
        self.assertLessEqual(longest, 2 * need_ms)

    def test_two_crowds_from_cold(self):
        a, b = [None] * self.CROWD, [None] * self.CROWD
        t0 = time.monotonic()
        ths = self.crowd("a", t0, a) + self.crowd("b", t0 + 1.0, b)
        for th in ths:
            th.join()
        self.figures("first crowd", a, self.CROWD)
        # the second crowd arrives behind what is left of the first: ~8 of it served by then
        self.figures("second crowd", b, 2 * self.CROWD - 8)


class TestKeyRetryAfterTrue(TestRetryAfterTrue):
    """The same for a key's max_concurrency 429 (its promises live on the key): key `crowd`
    holds 4 slots of an engine with 16; a crowd of 40 of its clients from a cold start, then,
    after a reload (SIGHUP: the key's state and promises carry over), a second crowd."""

    CROWD = 40
    REFUSED = 429
    HEADERS = {"Authorization": "Bearer sk-crowd-0123456789"}

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", cls.SERVICE_MS, "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], 16)},
                                 keys={"crowd": "sk-crowd-0123456789"},
                                 extra=[("key.crowd", {"max_concurrency": cls.SLOTS})],
                                 limits={"max_inflight": 16, "queue_capacity": 16,
                                         "queue_timeout_ms": 60000},
                                 name="llmgate-key-retry-true")

    def test_two_crowds_from_cold(self):
        a, b = [None] * self.CROWD, [None] * self.CROWD
        for th in self.crowd("a", time.monotonic(), a):
            th.join()
        self.figures("first crowd", a, self.CROWD)
        self.gw.proc.signal(signal.SIGHUP)
        time.sleep(0.5)
        for th in self.crowd("b", time.monotonic(), b):
            th.join()
        self.figures("second crowd, after a reload", b, self.CROWD)


class TestExactCounts(OwnTest):
    """max_inflight = 4, queue_capacity = 8, 40 slow requests at once: exactly 12 are served
    (4 running + 8 waiting), 28 refused 503 queue_full, each with Retry-After and
    retry-after-ms; the engine sees exactly 12; every permit comes back."""

    @classmethod
    def fixture(cls):
        # slow enough that all 40 are in before the first ends (a sanitizer build is slower)
        cls.mock = cls.own_mock("--ttft-ms", int(t(1000)), "--itl-ms", 0, "--tokens", 2)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], 4)},
                                 limits={"max_inflight": 4, "queue_capacity": 8, "queue_timeout_ms": 60000},
                                 name="llmgate-exact")

    def test_forty_at_once(self):
        before = self.mock.stats()["requests"]
        results = [None] * 40
        barrier = threading.Barrier(40)

        def client(i):
            barrier.wait()
            with Raw(HOST, self.gw.port, t(60)) as c:
                c.send_request("POST", CHAT, chat_body("exact %d" % i))
                results[i] = c.read_response()

        ths = [threading.Thread(target=client, args=(i,)) for i in range(40)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        served = [r for r in results if r.status == 200]
        refused = [r for r in results if r.status != 200]
        self.assertEqual(len(served), 12, sorted(r.status for r in results))
        self.assertEqual(len(refused), 28)
        for r in refused:
            self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_full", retry_after=True)
            ms = int(r.headers["retry-after-ms"])
            self.assertGreaterEqual(ms, 1)
            self.assertEqual(int(r.headers["retry-after"]), (ms + 999) // 1000)
        self.assertEqual(self.mock.stats()["requests"] - before, 12)
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        for g in ("llmgate_inflight", "llmgate_queued"):
            self.assertRegex(m, r"(?m)^%s 0$" % g)


class TestTpmHonest(OwnTest):
    """tpm is charged by estimate at admission and settled once per request: a request no
    engine saw (the engine unreachable, a queue timeout, a client that left while queued) gets
    its charge back; tokens used beyond the estimates of requests admitted together are owed
    (the bucket goes below zero), not forgiven. One key per test: each starts with a full
    bucket of 1000."""

    TPM_KEYS = {"free": "sk-free-0123", "unreach": "sk-unreach-0123", "qto": "sk-qto-0123",
                "left": "sk-left-0123", "debt": "sk-debt-0123", "strm": "sk-strm-0123",
                "own": "sk-own-0123", "count": "sk-count-0123", "rpmq": "sk-rpmq-0123"}

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3)
        cls.gw = cls.own_gateway(
            {"m": (cls.mock.url, ["mock-model"], 1),
             "dead": ("http://%s:%d" % (HOST, free_port()), ["dead-model"])},
            keys=cls.TPM_KEYS, limits={"queue_timeout_ms": 400},
            extra=[("health", {"interval_ms": 0}),
                   ("backend.nousage", {"url": cls.mock.url, "models": "plain-model",
                                        "stream_usage": "false"})] +
                  [("key.%s" % k, {"tpm": 1000}) for k in cls.TPM_KEYS if k not in ("free", "rpmq")] +
                  [("key.rpmq", {"rpm": 2})],
            name="llmgate-tpm")

    def rq(self, key, body, timeout=20):
        with Raw(HOST, self.gw.port, t(timeout)) as c:
            c.send_request("POST", CHAT, body, headers={"Authorization": "Bearer " + self.TPM_KEYS[key]})
            return c.read_response(tolerate_reset=True)

    def hold_slot(self, ms):
        """The engine's only slot held by a key without limits for `ms`."""
        th, res = in_thread(self.rq, "free", chat_body("hold", mock={"ttft_ms": ms}))
        self.mock.wait_stats(lambda s: s["active"] == 1, t(5), "the slot held")
        return th, res

    def assert_whole(self, key):
        """The key's bucket holds (nearly) its 1000 again: 900 more are admitted."""
        deadline = time.monotonic() + t(3)
        while True:  # the charge is settled when the request's last reference goes
            r = self.rq(key, chat_body("t", max_tokens=900))
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.status, 200, r)

    def test_refund_engine_unreachable(self):
        r = self.rq("unreach", chat_body("t", model="dead-model", max_tokens=900))
        self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")
        self.assert_whole("unreach")

    def test_refund_queue_timeout(self):
        th, res = self.hold_slot(1500)
        try:
            r = self.rq("qto", chat_body("t", max_tokens=900))
            self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_timeout", retry_after=True)
        finally:
            th.join()
        self.assertEqual(res["result"].status, 200, res)
        self.assert_whole("qto")

    def test_refund_client_left_while_queued(self):
        before = self.mock.stats()["requests"]
        th, res = self.hold_slot(1500)
        try:
            with Raw(HOST, self.gw.port, t(10)) as c:
                c.send_request("POST", CHAT, chat_body("t", max_tokens=900),
                               headers={"Authorization": "Bearer " + self.TPM_KEYS["left"]})
                time.sleep(0.2)  # queued behind the held slot; then the client goes
        finally:
            th.join()
        self.assertEqual(res["result"].status, 200, res)
        time.sleep(0.2)
        self.assertEqual(self.mock.stats()["requests"], before + 1)  # only the hold
        self.assert_whole("left")

    def test_rpm_refund(self):
        """rpm is refunded like tpm: a key allowed 2 requests a minute that was refused twice
        by the gateway itself (queue timeouts, no engine saw them) still has both."""
        for _ in range(2):
            th, res = self.hold_slot(900)
            try:
                r = self.rq("rpmq", chat_body("t"))
                self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_timeout",
                                         retry_after=True)
            finally:
                th.join()
            self.assertEqual(res["result"].status, 200, res)
        time.sleep(0.1)  # the charge is settled when the request's last reference goes
        for i in range(2):
            r = self.rq("rpmq", chat_body("t"))
            self.assertEqual(r.status, 200, (i, r))
        r = self.rq("rpmq", chat_body("t"))
        self.assertEqual(r.status, 429, r)

    def test_overdraw_is_owed(self):
        """Two requests estimated at about 20 tokens each, admitted together, that used 600
        each: 1200 of 1000 used, 200 owed. One token more is 12 s away (201 tokens at 1000 a
        minute), not the 60 ms a bucket clamped at zero would say."""
        body = chat_body("d", max_tokens=10, mock={"ttft_ms": 300, "tokens": 600})
        ths = [in_thread(self.rq, "debt", body) for _ in range(2)]
        for th, res in ths:
            th.join()
            self.assertEqual(res["result"].status, 200, res)
        deadline = time.monotonic() + t(3)
        while True:
            r = self.rq("debt", chat_body("d", max_tokens=1))
            if r.status == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assert429(r, "tpm", 9000, 13000)

    assert429 = TestKeyLimits.assert429

    def events(self, r):
        self.assertEqual(r.status, 200, r)
        return [e[len("data: "):] for e in r.body.decode().split("\n\n") if e.startswith("data: ")]

    def test_stream_usage_asked_and_not_relayed(self):
        """A stream whose client did not ask for usage: the gateway asks the engine (the mock
        sends its usage chunk only when asked), settles the charge by it (900 more go through
        at once), and the client receives the stream without that chunk."""
        r = self.rq("strm", chat_body("s", stream=True, max_tokens=900, mock={"tokens": 3}))
        ev = self.events(r)
        self.assertEqual(ev[-1], "[DONE]", ev)
        self.assertNotIn(b'"usage"', r.body)
        chunks = [json.loads(e) for e in ev[:-1]]
        self.assertTrue(all(c["choices"] for c in chunks), chunks)
        self.assertEqual("".join(c["choices"][0]["delta"].get("content", "") for c in chunks),
                         "tok0 tok1 tok2 ")
        self.assert_whole("strm")

    def test_client_usage_is_relayed(self):
        """A client that asked for usage itself gets the usage chunk (empty choices, usage)."""
        r = self.rq("own", chat_body("s", stream=True, max_tokens=900, mock={"tokens": 3},
                                     stream_options={"include_usage": True}))
        last = json.loads(self.events(r)[-2])
        self.assertEqual(last["choices"], [])
        self.assertEqual(last["usage"]["completion_tokens"], 3)
        self.assert_whole("own")

    def test_stream_usage_off_counts_events(self):
        """[backend] stream_usage = false (an engine that refuses stream_options): the body
        goes as it came (the mock, not asked, sends no usage) and the stream is settled by its
        events (about a token each), not by its estimate of 900."""
        r = self.rq("count", chat_body("s", model="plain-model", stream=True, max_tokens=900,
                                       mock={"tokens": 3}))
        self.assertEqual(len(self.events(r)), 5, r.body)  # 3 tokens, the stop, [DONE]
        self.assertNotIn(b'"usage"', r.body)
        self.assert_whole("count")
