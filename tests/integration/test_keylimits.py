"""Per-key limits ([key.NAME] max_concurrency, rpm, tpm): 429 rate_limit_exceeded naming the limit,
with Retry-After and retry-after-ms from the bucket's refill; decided from the headers before the
body is read where the headers tell; OpenAI's x-ratelimit-* headers on admitted responses; every
slot given back."""

import json
import re
import threading
import time

from harness import HOST, OwnTest, Raw, build_request, chat_body, request, t

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
        self.assertEqual(self.key_inflight("conc"), 0)

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
        """tpm = 1000, charged by estimate (prompt bytes / 4 + max_tokens): a request for 900
        goes, the next for 500 is refused after its body with the bucket's refill time; the
        headers say what is left."""
        r = self.rq("tpm", chat_body("t", max_tokens=900))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["x-ratelimit-limit-tokens"], "1000")
        self.assertLess(int(r.headers["x-ratelimit-remaining-tokens"]), 100)
        self.assertNotIn("x-ratelimit-limit-requests", r.headers)
        r = self.rq("tpm", chat_body("t", max_tokens=500))
        self.assert429(r, "tpm", 20000, 30000)

    def test_no_limits_no_headers(self):
        r = self.rq("free", chat_body("free"))
        self.assertEqual(r.status, 200, r)
        self.assertFalse([h for h in r.headers if h.startswith("x-ratelimit")], r.headers)
