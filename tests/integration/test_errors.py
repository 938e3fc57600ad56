"""The gateway's own error envelopes (400/404/405) and engine errors relayed unchanged."""

import json

import harness
from harness import SharedTest, chat_body, dumps, raw_exchange, t

CHAT = "/v1/chat/completions"


class TestBadRequests(SharedTest):
    """400 invalid_json / invalid_request; the engine must never see these requests."""

    def setUp(self):
        self.before = self.mock.stats()["requests"] if self.mock else None

    def tearDown(self):
        if self.mock is not None and self.before is not None:
            self.assertEqual(self.mock.stats()["requests"], self.before, "a rejected request reached the engine")

    def check(self, path, body, code):
        r = self.post(path, body)
        self.assertErrorEnvelope(r, 400, "invalid_request_error", code)
        return r

    def test_not_json(self):
        for body in (b"hello", b"{not json", b'{"model":"mock-model","messages":[', b"",
                     b'{"model":"mock-model","messages":[]} trailing', b"\xff\xfe{}"):
            with self.subTest(body=body):
                self.check(CHAT, body, "invalid_json")

    def test_not_an_object(self):
        for body in (b"[]", b"42", b'"str"', b"null"):
            with self.subTest(body=body):
                r = self.post(CHAT, body)
                # Valid JSON of the wrong shape: either code is a fair reading of the contract.
                self.assertErrorEnvelope(r, 400, "invalid_request_error", ("invalid_request", "invalid_json"))

    def test_wrong_types(self):
        base = {"model": harness.MODEL, "messages": [{"role": "user", "content": "x"}]}
        cases = {
            "stream string": dict(base, stream="yes"),
            "stream string false": dict(base, stream="false"),
            "stream number": dict(base, stream=1),
            "model number": dict(base, model=123),
            "model null": dict(base, model=None),
            "messages object": dict(base, messages={"role": "user"}),
            "messages string": dict(base, messages="hi"),
        }
        for name, body in cases.items():
            with self.subTest(case=name):
                self.check(CHAT, dumps(body), "invalid_request")

    def test_missing_fields(self):
        cases = [
            (CHAT, {"messages": [{"role": "user", "content": "x"}]}),
            (CHAT, {"model": harness.MODEL}),
            ("/v1/completions", {"model": harness.MODEL}),
            ("/v1/completions", {"prompt": "x"}),
            ("/v1/embeddings", {"model": harness.MODEL}),
            ("/v1/embeddings", {"input": "x"}),
        ]
        for path, body in cases:
            with self.subTest(path=path, body=body):
                self.check(path, dumps(body), "invalid_request")

    def test_duplicate_model_key(self):
        """json-c keeps the last duplicate; an engine may keep the first: reject outright."""
        body = b'{"model":"mock-model","messages":[{"role":"user","content":"x"}],"model":"mock-model"}'
        self.check(CHAT, body, "invalid_request")
        body = b'{"model":"no-such-model","model":"mock-model","messages":[{"role":"user","content":"x"}]}'
        self.check(CHAT, body, "invalid_request")


class TestNotFound(SharedTest):
    def test_unknown_model(self):
        before = self.mock.stats()["requests"] if self.mock else None
        for path, body in ((CHAT, chat_body("x", model="no-such-model")),
                           (CHAT, chat_body("x", model="no-such-model", stream=True)),
                           ("/v1/completions", dumps({"model": "no-such-model", "prompt": "x"})),
                           ("/v1/embeddings", dumps({"model": "no-such-model", "input": "x"}))):
            with self.subTest(path=path, body=body[:60]):
                r = self.post(path, body)
                self.assertErrorEnvelope(r, 404, "invalid_request_error", "model_not_found")
        if self.mock:
            self.assertEqual(self.mock.stats()["requests"], before)

    def test_unknown_path(self):
        for method, path in (("GET", "/"), ("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", "/v2/models"),
                             ("GET", "/healthzz"), ("POST", "/v1/chat/completions/extra")):
            with self.subTest(method=method, path=path):
                body = b"{}" if method == "POST" else None
                r = raw_exchange(self.gw.host, self.gw.port, method, path, body, timeout=t(10))
                self.assertErrorEnvelope(r, 404, "invalid_request_error", "not_found")


class TestMethodNotAllowed(SharedTest):
    def test_wrong_method(self):
        for method, path in (("GET", "/v1/chat/completions"), ("GET", "/v1/completions"),
                             ("GET", "/v1/embeddings"), ("POST", "/v1/models"),
                             ("DELETE", "/v1/chat/completions"), ("PUT", "/v1/models/" + harness.MODEL)):
            with self.subTest(method=method, path=path):
                body = b"{}" if method in ("POST", "PUT") else None
                r = raw_exchange(self.gw.host, self.gw.port, method, path, body, timeout=t(10))
                self.assertErrorEnvelope(r, 405, "invalid_request_error", "method_not_allowed")


class TestEngineErrors(SharedTest):
    """An engine's error status and body are relayed unchanged (also for stream requests)."""

    def relay(self, status, stream):
        self.need_mock()
        body = chat_body("engine error %d" % status, stream=stream, mock={"status": status})
        direct = self.direct(CHAT, body)
        self.assertEqual(direct.status, status, "mock did not honour mock.status: %r" % (direct,))
        via = raw_exchange(self.gw.host, self.gw.port, "POST", CHAT, body, timeout=t(10))
        self.assertEqual(via.status, status, via)
        self.assertEqual(via.body, direct.body)
        self.assertEqual(via.headers.get("content-type"), direct.headers.get("content-type"))
        self.assertIn("x-request-id", via.headers)

    def test_relay_nonstream(self):
        for status in (400, 422, 429, 500, 503):
            with self.subTest(status=status):
                self.relay(status, False)

    def test_relay_stream(self):
        for status in (400, 500, 503):
            with self.subTest(status=status):
                self.relay(status, True)

    def test_relay_error_body_is_json(self):
        self.need_mock()
        r = self.post(CHAT, chat_body("engine error json", mock={"status": 500}))
        self.assertEqual(r.status, 500)
        json.loads(r.body)
