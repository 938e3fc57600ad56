"""Connection handling: keep-alive reuse on both sides, HTTP/1.0 clients."""

import harness
from harness import CTX, SharedTest, chat_body, expected_content, sse_events, stream_content, t


class TestKeepAlive(SharedTest):
    def run_sequence(self, kinds, n):
        """Sends n requests over one raw connection, cycling through `kinds` (name -> request
        args, expected status); fails if the gateway closes or asks to close the connection."""
        names = list(kinds)
        with self.raw(t(15)) as c:
            for i in range(n):
                name = names[i % len(names)]
                (method, path, body), want, check = kinds[name]
                c.send_request(method, path, body)
                try:
                    r = c.read_response(method)
                except (EOFError, ConnectionError) as e:
                    self.fail("connection closed by the gateway after %d requests (%s)" % (i, e))
                self.assertEqual(r.status, want, "request %d (%s): %r" % (i, name, r))
                self.assertTrue(r.complete)
                self.assertNotIn("close", r.headers.get("connection", "").lower(),
                                 "request %d (%s) answered with Connection: close: %r" % (i, name, r))
                if check:
                    check(r)

    def test_post_requests_on_one_connection(self):
        """JSON, stream and error POSTs over one client connection; upstream connections are
        pooled too (the mock's `accepted` grows by a handful at most)."""
        n = 30 if CTX.sanitizer else 60
        accepted0 = self.mock.stats()["accepted"] if self.mock else None
        direct_json = self.direct("/v1/chat/completions", chat_body("keepalive")).body if self.mock else None
        direct_sse = self.direct("/v1/chat/completions", chat_body("keepalive", stream=True)).body if self.mock else None

        def same(expected):
            def check(r):
                if expected is not None:
                    self.assertEqual(r.body, expected)
            return check

        def chunked_sse(r):
            self.assertEqual(r.framing, "chunked", r)
            same(direct_sse)(r)

        self.run_sequence({
            "json": (("POST", "/v1/chat/completions", chat_body("keepalive")), 200, same(direct_json)),
            "stream": (("POST", "/v1/chat/completions", chat_body("keepalive", stream=True)), 200, chunked_sse),
            "bad json": (("POST", "/v1/chat/completions", b"{bad json"), 400, None),
        }, n)
        if self.mock:
            grew = self.mock.stats()["accepted"] - accepted0
            self.assertLessEqual(grew, 6, "%d upstream connections for %d sequential requests: no reuse"
                                 % (grew, 2 * n // 3 + 2))

    def test_get_requests_on_one_connection(self):
        self.run_sequence({
            "models": (("GET", "/v1/models", None), 200, None),
            "healthz": (("GET", "/healthz", None), 200, None),
            "model": (("GET", "/v1/models/" + harness.MODEL, None), 200, None),
            "metrics": (("GET", "/metrics", None), 200, None),
            "404": (("GET", "/nope", None), 404, None),
        }, 20)

    def test_mixed_methods_on_one_connection(self):
        self.run_sequence({
            "json": (("POST", "/v1/chat/completions", chat_body("keepalive mixed")), 200, None),
            "models": (("GET", "/v1/models", None), 200, None),
            "stream": (("POST", "/v1/chat/completions", chat_body("keepalive mixed", stream=True)), 200, None),
            "healthz": (("GET", "/healthz", None), 200, None),
        }, 12)


class TestHTTP10(SharedTest):
    def read_all(self, method, path, body):
        with self.raw(t(15)) as c:
            c.send_request(method, path, body, headers={}, version="HTTP/1.0")
            r = c.read_response(method)
            # The gateway must close after an HTTP/1.0 response without keep-alive.
            c.settimeout(t(5))
            try:
                self.assertEqual(c.sock.recv(1), b"", "connection not closed after an HTTP/1.0 response")
            except ConnectionResetError:
                pass
            return r

    def test_stream_to_http10_client(self):
        body = chat_body("http/1.0 stream", stream=True, max_tokens=5)
        r = self.read_all("POST", "/v1/chat/completions", body)
        self.assertSSEHeaders(r)
        self.assertNotIn("chunked", r.headers.get("transfer-encoding", "").lower(), "no chunking for HTTP/1.0")
        self.assertEqual(r.headers.get("connection", "").lower(), "close", r)
        self.assertTrue(r.complete)
        events = sse_events(r.body)
        self.assertEqual(len(events), 5 + 2)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(stream_content(events), expected_content(5))
        if self.mock:
            self.assertEqual(r.body, self.direct("/v1/chat/completions", body).body)

    def test_json_to_http10_client(self):
        body = chat_body("http/1.0 json", max_tokens=3)
        r = self.read_all("POST", "/v1/chat/completions", body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.framing, "length", r)
        if self.mock:
            self.assertEqual(r.body, self.direct("/v1/chat/completions", body).body)

    def test_healthz_http10(self):
        r = self.read_all("GET", "/healthz", None)
        self.assertEqual(r.status, 200)
        self.assertIn(r.body, (b"OK", b"OK\n"))
