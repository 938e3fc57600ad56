"""[keys] configured: Bearer auth on /v1/*; health endpoints need no key."""

import hashlib
import json

from harness import OwnTest, chat_body, raw_exchange, request, t

ALICE = "sk-alice-0123456789"
BOB = "sk-bob-abcdefghijklmnop"


class TestAuth(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, keys={"alice": ALICE, "bob": BOB},
                                 name="llmgate-auth")

    def setUp(self):
        self.before = self.mock.stats()["requests"]

    def rq(self, method, path, auth=None, body=None):
        headers = {"Authorization": auth} if auth is not None else {}
        return raw_exchange(self.gw.host, self.gw.port, method, path, body, headers, timeout=t(10))

    def assert401(self, r):
        self.assertErrorEnvelope(r, 401, "authentication_error", "invalid_api_key")

    def test_missing_key(self):
        self.assert401(self.rq("POST", "/v1/chat/completions", None, chat_body("no key")))
        self.assert401(self.rq("POST", "/v1/chat/completions", None, chat_body("no key", stream=True)))
        self.assert401(self.rq("GET", "/v1/models"))
        self.assert401(self.rq("GET", "/v1/models/mock-model"))
        self.assertEqual(self.mock.stats()["requests"], self.before)

    def test_wrong_keys(self):
        for auth in ("Bearer sk-wrong", "Bearer " + ALICE[:-1], "Bearer " + ALICE + "0", "Bearer ",
                     "Bearer", ALICE, "Basic " + ALICE, "Bearer alice", "Bearer " + ALICE.upper()):
            with self.subTest(auth=auth):
                self.assert401(self.rq("POST", "/v1/chat/completions", auth, chat_body("wrong key")))
        self.assertEqual(self.mock.stats()["requests"], self.before, "an unauthenticated request reached the engine")

    def test_right_keys(self):
        for key in (ALICE, BOB):
            with self.subTest(key=key[:8]):
                r = self.rq("POST", "/v1/chat/completions", "Bearer " + key, chat_body("right key"))
                self.assertEqual(r.status, 200, r)
                r = self.rq("POST", "/v1/chat/completions", "Bearer " + key, chat_body("right key", stream=True))
                self.assertSSEHeaders(r)
                r = self.rq("GET", "/v1/models", "Bearer " + key)
                self.assertEqual(r.status, 200, r)
                self.assertEqual([m["id"] for m in r.json()["data"]], ["mock-model"])

    def test_health_needs_no_key(self):
        r = request(self.gw.host, self.gw.port, "GET", "/healthz", timeout=t(5))
        self.assertEqual(r.status, 200)
        self.assertIn(r.body, (b"OK", b"OK\n"))
        self.assertEqual(request(self.gw.host, self.gw.port, "GET", "/health", timeout=t(5)).status, 200)
        r = request(self.gw.host, self.gw.port, "GET", "/ready", timeout=t(5))
        self.assertIn(r.status, (200, 503), r)
        self.assertNotEqual(r.status, 401)


CAROL = "sk-carol-only-by-hash"


class TestKeySections(OwnTest):
    """[key.NAME] sections: a key configured by its SHA-256 only, and allowed models (any other
    model does not exist for that key: 404, and /v1/models does not list it)."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3)
        cls.gw = cls.own_gateway(
            {"m": (cls.mock.url, ["mock-model", "other-model"])}, keys={"alice": ALICE},
            extra=[("key.carol", {"key_sha256": hashlib.sha256(CAROL.encode()).hexdigest(),
                                  "models": "other-model", "priority": "low"})],
            name="llmgate-keysections")

    def rq(self, method, path, key, body=None):
        return raw_exchange(self.gw.host, self.gw.port, method, path, body,
                            {"Authorization": "Bearer " + key}, timeout=t(10))

    def test_key_by_hash(self):
        r = self.rq("POST", "/v1/chat/completions", CAROL, chat_body("by hash", model="other-model"))
        self.assertEqual(r.status, 200, r)
        digest = hashlib.sha256(CAROL.encode()).hexdigest()
        self.assertErrorEnvelope(self.rq("GET", "/v1/models", digest), 401, "authentication_error",
                                 "invalid_api_key")

    def test_allowed_models(self):
        before = self.mock.stats()["requests"]
        r = self.rq("POST", "/v1/chat/completions", CAROL, chat_body("not allowed", model="mock-model"))
        self.assertErrorEnvelope(r, 404, "invalid_request_error", "model_not_found")
        self.assertIn("the model 'mock-model' does not exist", r.body.decode())
        self.assertEqual(self.mock.stats()["requests"], before)
        ids = [m["id"] for m in json.loads(self.rq("GET", "/v1/models", CAROL).body)["data"]]
        self.assertEqual(ids, ["other-model"])
        self.assertErrorEnvelope(self.rq("GET", "/v1/models/mock-model", CAROL), 404,
                                 "invalid_request_error", "model_not_found")
        self.assertEqual(self.rq("GET", "/v1/models/other-model", CAROL).status, 200)
        # a key without a list may use every model
        ids = [m["id"] for m in json.loads(self.rq("GET", "/v1/models", ALICE).body)["data"]]
        self.assertEqual(sorted(ids), ["mock-model", "other-model"])
        r = self.rq("POST", "/v1/chat/completions", ALICE, chat_body("allowed", model="mock-model"))
        self.assertEqual(r.status, 200, r)
