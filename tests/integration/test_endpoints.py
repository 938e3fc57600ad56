"""Every endpoint of the contract, the proxied bytes compared with the mock engine's own."""

import json
import re
import time

import harness
from harness import (SharedTest, chat_body, completion_body, embedding_body, expected_content,
                     raw_exchange, sse_events, stream_content, t)


class TestHealth(SharedTest):
    def test_healthz(self):
        r = self.get("/healthz")
        self.assertEqual(r.status, 200)
        self.assertIn(r.body, (b"OK", b"OK\n"))
        self.assertIn("x-request-id", r.headers)

    def test_health_json(self):
        r = self.get("/health")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        self.assertIsInstance(json.loads(r.body), dict)
        self.assertIn("x-request-id", r.headers)

    def test_ready(self):
        deadline = time.monotonic() + t(10)
        r = self.get("/ready")
        while r.status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            r = self.get("/ready")
        self.assertEqual(r.status, 200, "backends are up; /ready: %r" % (r,))
        self.assertIn("x-request-id", r.headers)

    def test_metrics_prometheus_text(self):
        self.post("/v1/chat/completions", chat_body("metrics warm-up"))
        r = self.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        text = r.body.decode("utf-8")
        self.assertTrue(text.endswith("\n"), "exposition must end with a newline")
        name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
        label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
        value = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN)"
        sample = re.compile(r"^(%s)(\{(%s(,%s)*,?)?\})? %s( -?\d+)?$" % (name, label, label, value))
        samples, types = 0, {}
        for ln in text.splitlines():
            if not ln:
                continue
            if ln.startswith("# TYPE "):
                m = re.match(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % name, ln)
                self.assertTrue(m, "bad TYPE line %r" % ln)
                self.assertNotIn(m.group(1), types, "duplicate TYPE for %s" % m.group(1))
                types[m.group(1)] = m.group(2)
            elif ln.startswith("# HELP "):
                self.assertRegex(ln, r"^# HELP %s .*$" % name)
            elif ln.startswith("#"):
                continue
            else:
                self.assertRegex(ln, sample, "bad sample line")
                samples += 1
        self.assertGreater(samples, 0, "no samples")
        self.assertTrue(types, "no # TYPE lines")


class TestModels(SharedTest):
    def configured(self):
        return {"mock-model", "other-model", "b-model", "qwen2.5:7b"}

    def test_list_is_union_of_configured_models(self):
        r = self.get("/v1/models")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))
        obj = r.json()
        self.assertEqual(obj.get("object"), "list", obj)
        self.assertIsInstance(obj.get("data"), list)
        for m in obj["data"]:
            self.assertEqual(m.get("object"), "model", m)
            self.assertIsInstance(m.get("id"), str)
            self.assertIsInstance(m.get("created"), int, m)
            self.assertIsInstance(m.get("owned_by"), str, m)
        ids = [m["id"] for m in obj["data"]]
        self.assertEqual(len(ids), len(set(ids)), "a model served by two backends is listed once: %s" % ids)
        if not harness.CTX.external_url:
            self.assertEqual(set(ids), self.configured())
        else:
            self.assertIn(harness.MODEL, ids)

    def test_get_one(self):
        for mid in ([harness.MODEL] if harness.CTX.external_url else sorted(self.configured())):
            with self.subTest(model=mid):
                r = self.get("/v1/models/" + mid)
                self.assertEqual(r.status, 200, r)
                obj = r.json()
                self.assertEqual(obj.get("id"), mid)
                self.assertEqual(obj.get("object"), "model")
                listed = [m for m in self.get("/v1/models").json()["data"] if m["id"] == mid]
                self.assertEqual([obj], listed, "GET /v1/models/{id} matches its entry in the list")

    def test_get_unknown(self):
        r = self.get("/v1/models/no-such-model")
        self.assertErrorEnvelope(r, 404, "invalid_request_error", "model_not_found")


class TestProxy(SharedTest):
    """The gateway relays the engine's bytes unchanged: compare with the mock directly."""

    def compare(self, path, body, stream):
        self.need_mock()
        direct = self.direct(path, body)
        self.assertEqual(direct.status, 200, "mock direct: %r" % (direct,))
        via = raw_exchange(self.gw.host, self.gw.port, "POST", path, body, timeout=t(10))
        if stream:
            self.assertSSEHeaders(via)
        else:
            self.assertEqual(via.status, 200, via)
            self.assertTrue(via.headers.get("content-type", "").startswith("application/json"), via)
        self.assertIn("x-request-id", via.headers)
        self.assertEqual(via.body, direct.body, "body through the gateway differs from the mock's")
        return via

    def test_chat_nonstream_bytes(self):
        via = self.compare("/v1/chat/completions", chat_body("bytes non-stream", max_tokens=7), False)
        obj = via.json()
        self.assertEqual(obj["object"], "chat.completion")
        self.assertEqual(obj["choices"][0]["message"]["content"], expected_content(7))

    def test_chat_stream_bytes_and_events(self):
        via = self.compare("/v1/chat/completions", chat_body("bytes stream", stream=True, max_tokens=6), True)
        events = sse_events(via.body)
        self.assertEqual(len(events), 6 + 2, events)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(stream_content(events), expected_content(6))
        finish = json.loads(events[-2])
        self.assertEqual(finish["choices"][0].get("finish_reason"), "stop", finish)

    def test_completions_nonstream_bytes(self):
        via = self.compare("/v1/completions", completion_body("bytes completion", max_tokens=4), False)
        self.assertEqual(via.json()["choices"][0]["text"], expected_content(4))

    def test_completions_stream_bytes(self):
        via = self.compare("/v1/completions", completion_body("bytes completion", stream=True, max_tokens=4), True)
        events = sse_events(via.body)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(stream_content(events), expected_content(4))

    def test_embeddings_bytes(self):
        via = self.compare("/v1/embeddings", embedding_body(["one", "two"]), False)
        obj = via.json()
        self.assertEqual(obj["object"], "list")
        self.assertEqual(len(obj["data"]), 2)

    def test_stream_false_is_json(self):
        body = harness.dumps({"model": harness.MODEL, "stream": False,
                              "messages": [{"role": "user", "content": "explicit false"}]})
        via = self.compare("/v1/chat/completions", body, False)
        self.assertEqual(via.json()["object"], "chat.completion")

    def test_large_body_1mib(self):
        """A 1 MiB body (over libcurl's Expect: 100-continue threshold) is forwarded exactly: the
        mock's response id is a hash of the body it received."""
        self.compare("/v1/chat/completions", chat_body("x" * (1 << 20)), False)

    def test_chunked_request_body(self):
        self.need_mock()
        body = chat_body("chunked upload", max_tokens=3)
        direct = self.direct("/v1/chat/completions", body)
        pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
        via = raw_exchange(self.gw.host, self.gw.port, "POST", "/v1/chat/completions", chunked=pieces, timeout=t(10))
        self.assertEqual(via.status, 200, via)
        self.assertEqual(via.body, direct.body)

    def test_routing_by_model(self):
        """b-model is served only by backend b (mock-b); mock-model only by backend a (mock-a)."""
        self.need_own()
        a0, b0 = self.mock.stats()["requests"], self.mock_b.stats()["requests"]
        r = self.post("/v1/chat/completions", chat_body("route me", model="b-model"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, self.direct("/v1/chat/completions", chat_body("route me", model="b-model"), mock=self.mock_b).body)
        self.assertEqual(self.mock_b.stats()["requests"], b0 + 2)  # through the gateway + direct
        self.assertEqual(self.mock.stats()["requests"], a0)
        r = self.post("/v1/chat/completions", chat_body("route me", model="qwen2.5:7b"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock_b.stats()["requests"], b0 + 3)
        self.assertEqual(self.mock.stats()["requests"], a0)


class TestStreamingIncremental(SharedTest):
    def test_events_arrive_as_produced(self):
        """itl 200 ms, 5 tokens: the first event reaches the client long before the last."""
        body = chat_body("incremental", stream=True, max_tokens=5, mock={"ttft_ms": 0, "itl_ms": 200, "tokens": 5})
        with self.raw(t(15)) as c:
            t0 = time.monotonic()
            c.send_request("POST", "/v1/chat/completions", body)
            r = c.read_head()
            self.assertSSEHeaders(r)
            arrivals, buf = [], b""
            for when, piece in c.iter_body(r):
                buf += piece
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    if ev.startswith(b"data:"):
                        arrivals.append((when - t0, ev))
            self.assertTrue(r.complete)
        self.assertEqual(len(arrivals), 7, [a[1] for a in arrivals])
        first, last = arrivals[0][0], arrivals[-1][0]
        self.assertGreater(last - first, 0.6, "events were buffered: arrivals %s" % [round(a[0], 3) for a in arrivals])
        self.assertLess(first, 0.5 * t(1), "first event late: %.3fs" % first)
        gaps = [b[0] - a[0] for a, b in zip(arrivals[:5], arrivals[1:5])]
        for g in gaps:
            self.assertGreater(g, 0.05, "token events bunched together: arrivals %s" % [round(a[0], 3) for a in arrivals])


class TestRequestID(SharedTest):
    def test_echo(self):
        rid = "test-rid-0123456789abcdef"
        for method, path, body in (("GET", "/healthz", None), ("GET", "/v1/models", None),
                                   ("GET", "/nope", None),
                                   ("POST", "/v1/chat/completions", chat_body("rid")),
                                   ("POST", "/v1/chat/completions", b"{not json"),
                                   ("POST", "/v1/chat/completions", chat_body("rid", stream=True))):
            with self.subTest(method=method, path=path, body=body and body[:30]):
                r = raw_exchange(self.gw.host, self.gw.port, method, path, body, {"X-Request-ID": rid}, timeout=t(10))
                self.assertEqual(r.headers.get("x-request-id"), rid, r)

    def test_generated(self):
        seen = set()
        for path in ("/healthz", "/v1/models", "/nope", "/healthz"):
            r = self.get(path)
            rid = r.headers.get("x-request-id")
            self.assertTrue(rid, "no X-Request-ID on %s: %r" % (path, r))
            self.assertRegex(rid, r"^[\x21-\x7e]{8,128}$")
            seen.add(rid)
        r = self.post("/v1/chat/completions", chat_body("rid gen", stream=True))
        self.assertTrue(r.headers.get("x-request-id"))
        seen.add(r.headers["x-request-id"])
        self.assertEqual(len(seen), 5, "generated ids must differ: %s" % seen)
