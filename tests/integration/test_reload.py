"""Hot reload: `[admin] key`, `POST /admin/reload`, `GET /admin/config`, SIGHUP. The file the
gateway was started with is rewritten and reloaded: new requests see the new keys, limits and
backends at once; a request in flight finishes on the config it started with; a backend or key
that stays (same name) keeps its health, in-flight counts and buckets; a bad file is refused
with every problem as FILE:LINE and the running config stays; the permit counters end at 0."""

import json
import os
import re
import signal
import subprocess
import threading
import time

from harness import (CTX, HOST, OwnTest, Raw, chat_body, expected_content, free_port,
                     gateway_sections, render_ini, request, sse_events, stream_content, t)

CHAT = "/v1/chat/completions"
ADMIN = "adm-Secret-7f3a9c1e"
KEYS = {"alice": "sk-alice-5e1d0c2b", "bob": "sk-bob-9a8b7c6d", "carol": "sk-carol-13579bdf"}
UPSTREAM_SECRET = "sk-upstream-2468ace0"
PERMIT_GAUGES = ("llmgate_inflight", "llmgate_queued", "llmgate_backend_inflight", "llmgate_key_inflight")


def parse_metrics(text):
    """Prometheus text -> {"name{labels}": number} (comments dropped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        v = float(value)
        out[name] = int(v) if v == int(v) else v
    return out


class ReloadTest(OwnTest):
    """Helpers: every test starts its own gateway (generations are counted from 1 in each) and
    stops it at its end; the config is rendered by the harness, so a rewrite differs from the
    start file only where the test says."""

    def start(self, backends, keys=None, limits=None, extra=None, admin=ADMIN, health_ms=None,
              name="llmgate-reload", server=None):
        self.spec = dict(backends=backends, keys=keys, limits=limits, extra=extra, admin=admin,
                         health_ms=health_ms)
        g = self.own_gateway(backends, keys=keys, limits=limits, server=server,
                             extra=self._extra(extra, admin, health_ms), name=name)
        self.addCleanup(g.stop)  # a dirty exit (rc != 0, sanitizer report) fails the test
        return g

    @staticmethod
    def _extra(extra, admin, health_ms):
        out = []
        if admin is not None:
            out.append(("admin", {"key": admin}))
        if health_ms is not None:
            out.append(("health", {"interval_ms": health_ms}))
        return out + list(extra or [])

    def config_text(self, gw, backends, keys=None, limits=None, extra=None, admin=ADMIN,
                    health_ms=None, server=None, api_keys=None):
        sections = gateway_sections("%s:%d" % (HOST, gw.port), backends, server=server,
                                    limits=limits, keys=keys,
                                    extra=self._extra(extra, admin, health_ms))
        for name, d in sections:  # [backend.NAME] api_key (not in gateway_sections)
            if name.startswith("backend.") and name[8:] in (api_keys or {}):
                d["api_key"] = api_keys[name[8:]]
        return render_ini(sections)

    def rewrite(self, gw, text=None, **kw):
        """Replaces gw's config file (atomically: a reload never reads half a file)."""
        if text is None:
            text = self.config_text(gw, **kw)
        tmp = gw.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, gw.config_path)
        return text

    def admin(self, gw, method, path, key=ADMIN):
        h = {"Authorization": "Bearer " + key} if key is not None else {}
        if method == "POST":
            h["Content-Length"] = "0"
        with Raw(HOST, gw.port, t(20)) as c:
            c.send_request(method, path, headers=h)
            return c.read_response(method=method, tolerate_reset=True)

    def reload(self, gw, key=ADMIN):
        return self.admin(gw, "POST", "/admin/reload", key)

    def chat(self, gw, key=None, body=None, timeout=None):
        h = {"Authorization": "Bearer " + KEYS.get(key, key)} if key else {}
        with Raw(HOST, gw.port, timeout or t(20)) as c:
            c.send_request("POST", CHAT, body if body is not None else chat_body("hi"), headers=h)
            return c.read_response(tolerate_reset=True)

    def metrics(self, gw):
        r = request(HOST, gw.port, "GET", "/metrics", timeout=t(5))
        self.assertEqual(r.status, 200, r)
        return parse_metrics(r.body.decode())

    def metric(self, gw, sample):
        m = self.metrics(gw)
        self.assertIn(sample, m, "no %s in /metrics" % sample)
        return m[sample]

    def wait_metric(self, gw, sample, value, timeout=None):
        deadline = time.monotonic() + (timeout or t(5))
        while True:
            m = self.metrics(gw)
            if m.get(sample) == value:
                return
            if time.monotonic() > deadline:
                self.fail("%s never read %s (last: %s)" % (sample, value, m.get(sample)))
            time.sleep(0.02)

    def wait_permits_zero(self, gw, timeout=None):
        """Every permit gauge (gateway, per backend, per key) back at 0. Bounded: the completion
        callback runs just after the client's last byte."""
        deadline = time.monotonic() + (timeout or t(5))
        while True:
            m = self.metrics(gw)
            busy = {k: v for k, v in m.items() if k.split("{")[0] in PERMIT_GAUGES and v != 0}
            if not busy and "llmgate_inflight" in m and "llmgate_queued" in m:
                return m
            if time.monotonic() > deadline:
                self.fail("permit counters not back at 0: %s" % busy)
            time.sleep(0.02)

    def assertReloaded(self, r, generation, backends, keys, restart=()):
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        obj = json.loads(r.body)
        self.assertTrue({"status", "generation", "backends", "keys", "restart_required"} <= set(obj), obj)
        self.assertEqual(obj["status"], "reloaded", obj)
        self.assertEqual(obj["generation"], generation, obj)
        self.assertEqual(obj["backends"], backends, obj)
        self.assertEqual(obj["keys"], keys, obj)
        self.assertIsInstance(obj["restart_required"], list, obj)
        self.assertEqual(sorted(obj["restart_required"]), sorted(restart), obj)
        return obj

    def assertRefused(self, r, path):
        """400 invalid_config in the OpenAI envelope, plus "errors": every problem as PATH:LINE."""
        self.assertEqual(r.status, 400, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        self.assertIn("x-request-id", r.headers, r)
        obj = json.loads(r.body)
        self.assertEqual(set(obj), {"error", "errors"}, obj)
        err = obj["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, obj)
        self.assertEqual((err["type"], err["param"], err["code"]),
                         ("invalid_request_error", None, "invalid_config"), obj)
        self.assertTrue(isinstance(err["message"], str) and err["message"], obj)
        errors = obj["errors"]
        self.assertIsInstance(errors, list, obj)
        self.assertTrue(errors, obj)
        for e in errors:
            self.assertIsInstance(e, str, obj)
            self.assertRegex(e, r"^%s:\d+: \S" % re.escape(path), obj)
        return errors

    def assertGeneration(self, gw, n):
        self.assertEqual(self.metric(gw, "llmgate_config_generation"), n)
        r = self.admin(gw, "GET", "/admin/config")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("x-llmgate-generation"), str(n), r.headers)

    def assertStreamDone(self, r, tokens):
        self.assertSSEHeaders(r)
        self.assertTrue(r.complete, "the stream was cut: %r" % (r.body[-300:],))
        events = sse_events(r.body)
        self.assertEqual(events[-1], "[DONE]", r.body[-300:])
        self.assertEqual(stream_content(events), expected_content(tokens))


class TestAdminOff(ReloadTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3, name="mock-adminoff")

    def test_admin_is_404_without_an_admin_key(self):
        """No [admin] key: /admin/* does not exist (404 not_found, the JSON envelope), whatever
        the Bearer; the generation gauge is there all the same."""
        gw = self.start({"m": (self.mock.url, ["mock-model"])}, admin=None, name="llmgate-adminoff")
        for method, path in (("POST", "/admin/reload"), ("GET", "/admin/config")):
            for key in (None, ADMIN, "anything"):
                with self.subTest(method=method, path=path, key=key):
                    self.assertErrorEnvelope(self.admin(gw, method, path, key), 404,
                                             "invalid_request_error", "not_found")
        self.assertEqual(self.metric(gw, "llmgate_config_generation"), 1)
        self.assertEqual(self.chat(gw).status, 200)


class TestReload(ReloadTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3, name="mock-reload-a")
        cls.mock_b = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3, name="mock-reload-b")

    def one_backend(self):
        return {"a": (self.mock.url, ["mock-model"])}

    def test_admin_auth(self):
        """With [admin] key: a missing Bearer, a wrong one, or a client API key on /admin/* get
        401 invalid_api_key; the admin key gets in; other methods on /admin/reload are 405."""
        gw = self.start(self.one_backend(), keys={"alice": KEYS["alice"]})
        for method, path in (("POST", "/admin/reload"), ("GET", "/admin/config")):
            for key in (None, "wrong-" + ADMIN, ADMIN[:-1], KEYS["alice"]):
                with self.subTest(method=method, path=path, key=key):
                    self.assertErrorEnvelope(self.admin(gw, method, path, key), 401,
                                             "authentication_error", "invalid_api_key")
        self.assertGeneration(gw, 1)  # no refused request reloaded anything
        for method in ("GET", "PUT", "DELETE"):
            with self.subTest(method=method):
                self.assertErrorEnvelope(self.admin(gw, method, "/admin/reload"), 405,
                                         "invalid_request_error", "method_not_allowed")
        self.assertReloaded(self.reload(gw), 2, 1, 1)
        self.assertGeneration(gw, 2)

    def test_admin_key_follows_the_file(self):
        """The admin key is config like any other: a reload that changes it lets the new one in
        and the old one not; one that drops [admin] makes /admin/* 404; SIGHUP brings it back."""
        gw = self.start(self.one_backend())
        new_admin = "adm-Other-0c0ffee5"
        self.rewrite(gw, backends=self.one_backend(), admin=new_admin)
        self.assertReloaded(self.reload(gw), 2, 1, 0)
        self.assertErrorEnvelope(self.admin(gw, "GET", "/admin/config"), 401,
                                 "authentication_error", "invalid_api_key")
        r = self.admin(gw, "GET", "/admin/config", key=new_admin)
        self.assertEqual((r.status, r.headers.get("x-llmgate-generation")), (200, "2"), r)
        self.assertNotIn(new_admin, r.body.decode())

        self.rewrite(gw, backends=self.one_backend(), admin=None)
        self.assertReloaded(self.reload(gw, key=new_admin), 3, 1, 0)
        for key in (None, ADMIN, new_admin):
            self.assertErrorEnvelope(self.admin(gw, "POST", "/admin/reload", key), 404,
                                     "invalid_request_error", "not_found")
        self.assertEqual(self.metric(gw, "llmgate_config_generation"), 3)

        self.rewrite(gw, backends=self.one_backend())
        gw.proc.signal(signal.SIGHUP)
        gw.proc.wait_log(r"reload: generation 4\b", t(5))
        self.assertGeneration(gw, 4)

    def test_reload_adds_and_removes_keys(self):
        """alice + bob -> alice + carol by POST /admin/reload: carol works at once, bob gets
        401, alice is untouched; generation 1 -> 2 in the answer, /metrics and /admin/config;
        /admin/config is the --dump-config of the new file and shows no secret (API keys,
        the admin key, a backend's api_key)."""
        gw = self.start(self.one_backend(), keys={"alice": KEYS["alice"], "bob": KEYS["bob"]})
        self.assertEqual([self.chat(gw, k).status for k in ("alice", "bob")], [200, 200])
        self.assertErrorEnvelope(self.chat(gw, "carol"), 401, "authentication_error", "invalid_api_key")
        r = self.admin(gw, "GET", "/admin/config")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        self.assertEqual(r.headers.get("x-llmgate-generation"), "1", r.headers)
        text = r.body.decode()
        self.assertIn("[key.alice]", text)
        self.assertIn("[key.bob]", text)
        self.assertNotIn("[key.carol]", text)
        for secret in (KEYS["alice"], KEYS["bob"], ADMIN):
            self.assertNotIn(secret, text, "a secret in /admin/config")

        new = self.rewrite(gw, backends=self.one_backend(), keys={"alice": KEYS["alice"], "carol": KEYS["carol"]},
                           api_keys={"a": UPSTREAM_SECRET})
        self.assertIn(UPSTREAM_SECRET, new)
        self.assertReloaded(self.reload(gw), 2, 1, 2)
        self.assertEqual(self.chat(gw, "carol").status, 200)
        self.assertEqual(self.chat(gw, "alice").status, 200)
        self.assertErrorEnvelope(self.chat(gw, "bob"), 401, "authentication_error", "invalid_api_key")

        m = self.metrics(gw)
        self.assertEqual(m.get("llmgate_config_generation"), 2)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="ok"}'), 1)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="error"}'), 0)
        self.assertIn('llmgate_key_inflight{key="carol"}', m)
        self.assertNotIn('llmgate_key_inflight{key="bob"}', m)

        r = self.admin(gw, "GET", "/admin/config")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        self.assertEqual(r.headers.get("x-llmgate-generation"), "2", r.headers)
        text = r.body.decode()
        self.assertIn("[key.alice]", text)
        self.assertIn("[key.carol]", text)
        self.assertNotIn("[key.bob]", text)
        for secret in list(KEYS.values()) + [ADMIN, UPSTREAM_SECRET]:
            self.assertNotIn(secret, text, "a secret in /admin/config")
        # the same format as --dump-config of the same file
        dump = subprocess.run([os.path.join(CTX.build, "llmgate"), "--dump-config", "--config", gw.config_path],
                              capture_output=True, timeout=t(10))
        self.assertEqual(dump.returncode, 0, dump.stderr)
        self.assertEqual(text.rstrip(), dump.stdout.decode().rstrip())

    def test_restart_required(self):
        """Changed [server] keys are not an error: the reload succeeds, names them (and only
        them) in restart_required, and the gateway keeps serving on its socket; a changed
        [limits] key is live, not listed."""
        gw = self.start(self.one_backend())
        elsewhere = "%s:%d" % (HOST, free_port())
        self.rewrite(gw, backends=self.one_backend(),
                     server={"listen": elsewhere, "threads": 3, "workers": 3, "max_connections": 4096},
                     limits={"queue_timeout_ms": 20000})
        self.assertReloaded(self.reload(gw), 2, 1, 0, restart=["server.listen", "server.max_connections",
                                                               "server.threads", "server.workers"])
        self.assertEqual(self.chat(gw).status, 200)  # still on its old socket
        self.assertGeneration(gw, 2)

    def test_restart_required_is_against_what_runs(self):
        """restart_required names the keys whose value in the file is not the one running:
        threads 2 -> 3 is listed; the same file again still lists it (3 is still not in effect:
        only a restart brings it); the original value back (what runs) lists nothing."""
        gw = self.start(self.one_backend())
        self.rewrite(gw, backends=self.one_backend(), server={"threads": 3})
        self.assertReloaded(self.reload(gw), 2, 1, 0, restart=["server.threads"])
        self.assertReloaded(self.reload(gw), 3, 1, 0, restart=["server.threads"])
        self.rewrite(gw, backends=self.one_backend())
        self.assertReloaded(self.reload(gw), 4, 1, 0, restart=[])

    def test_concurrent_reloads(self):
        """Six POST /admin/reload at once and a SIGHUP among them: every one succeeds with its
        own generation, 2..8 each logged once, the gauge ends at 8, ok counter 7; requests
        meanwhile are all served."""
        gw = self.start(self.one_backend(), keys={"alice": KEYS["alice"]})
        barrier = threading.Barrier(7)
        res = []
        lock = threading.Lock()

        def post():
            barrier.wait()
            r = self.reload(gw)
            with lock:
                res.append(r)

        ths = [threading.Thread(target=post) for _ in range(6)]
        for th in ths:
            th.start()
        barrier.wait()
        gw.proc.signal(signal.SIGHUP)
        statuses = [self.chat(gw, "alice").status for _ in range(5)]
        for th in ths:
            th.join(t(20))
        self.assertEqual(statuses, [200] * 5)
        self.assertEqual([r.status for r in res], [200] * 6, res)
        gens = sorted(json.loads(r.body)["generation"] for r in res)
        self.assertEqual(len(set(gens)), 6, gens)
        self.assertTrue(set(gens) <= set(range(2, 9)), gens)
        gw.proc.wait_log(r"signal HUP: reloading", t(5))
        self.wait_metric(gw, 'llmgate_config_reloads_total{result="ok"}', 7)
        self.assertGeneration(gw, 8)
        logged = re.findall(r"reload: generation (\d+)", gw.proc.log_text())
        self.assertEqual(sorted(int(g) for g in logged), list(range(2, 9)), logged)
        self.assertEqual(self.chat(gw, "alice").status, 200)

    def test_reload_blocks_no_event_thread(self):
        """POST /admin/reload runs on the reloader's thread: with one libmicrohttpd thread and a
        reload stuck reading its file (a FIFO nobody writes yet), other requests are answered
        meanwhile; the reload completes once the file arrives. (On an event thread, the
        /healthz below waits for the reload: it timed out before the reloader.)"""
        gw = self.start(self.one_backend(), keys={"alice": KEYS["alice"]}, server={"threads": 1})
        text = self.config_text(gw, self.one_backend(), keys={"alice": KEYS["alice"]},
                                server={"threads": 1})
        os.unlink(gw.config_path)
        os.mkfifo(gw.config_path)
        res = []
        th = threading.Thread(target=lambda: res.append(self.reload(gw)))
        th.start()
        try:
            time.sleep(0.3)
            self.assertEqual(res, [], "the reload cannot have read a FIFO nobody writes")
            t0 = time.monotonic()
            r = request(HOST, gw.port, "GET", "/healthz", timeout=3)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.chat(gw, "alice", timeout=3).status, 200)
            self.assertLess(time.monotonic() - t0, 2.5)
            self.assertEqual(res, [], "the reload finished before its file was written")
        finally:
            with open(gw.config_path, "w") as f:  # the reader waits: this open does not block
                f.write(text)
            th.join(t(20))
            os.unlink(gw.config_path)
            with open(gw.config_path, "w") as f:
                f.write(text)
        self.assertEqual(len(res), 1)
        self.assertReloaded(res[0], 2, 1, 1)

    def test_reload_with_a_body(self):
        """`curl -d '{}'` sends a body with the POST: the reload (answered from the headers,
        on the reloader's thread, the body never read) still answers 200, declared or
        chunked."""
        gw = self.start(self.one_backend())
        for gen, extra in ((2, {"Content-Length": "2"}), (3, {"Transfer-Encoding": "chunked"})):
            with Raw(HOST, gw.port, t(10)) as c:
                h = {"Authorization": "Bearer " + ADMIN}
                h.update(extra)
                body = b"{}" if "Content-Length" in extra else b"2\r\n{}\r\n0\r\n\r\n"
                head = "".join("%s: %s\r\n" % kv for kv in h.items())
                c.send(b"POST /admin/reload HTTP/1.1\r\nHost: x\r\n" + head.encode() + b"\r\n" + body)
                r = c.read_response(tolerate_reset=True)
            self.assertReloaded(r, gen, 1, 0)

    def test_bad_file_is_refused(self):
        """A file with `max_inflight = lots` and an unknown section, which would also swap bob
        for dave: 400 invalid_config with each problem as FILE:LINE; nothing of it applies (bob
        still works, dave does not, generation 1), reloads_total{result="error"} counts it.
        SIGHUP with the same file logs `reload refused` with the same FILE:LINE and changes
        nothing either; the process lives on. The file fixed, the next reload is generation 2."""
        keys = {"alice": KEYS["alice"], "bob": KEYS["bob"]}
        gw = self.start(self.one_backend(), keys=keys)
        text = self.config_text(gw, self.one_backend(), keys={"alice": KEYS["alice"], "dave": "sk-dave-24680"},
                                limits={"max_inflight": "lots"}, extra=[("bogus", {"x": 1})])
        lines = text.splitlines()
        lots_line = lines.index("max_inflight = lots") + 1
        bogus_lines = (lines.index("[bogus]") + 1, lines.index("[bogus]") + 2)
        self.rewrite(gw, text)

        errors = self.assertRefused(self.reload(gw), gw.config_path)
        prefix = "%s:%d: " % (gw.config_path, lots_line)
        self.assertTrue([e for e in errors if e.startswith(prefix) and "lots" in e],
                        "no error names %s(... lots): %s" % (prefix, errors))
        self.assertTrue([e for e in errors if "bogus" in e and
                         any(e.startswith("%s:%d: " % (gw.config_path, n)) for n in bogus_lines)],
                        "no error names the [bogus] section at line %s: %s" % (bogus_lines, errors))
        self.assertEqual([self.chat(gw, k).status for k in ("alice", "bob")], [200, 200])
        self.assertErrorEnvelope(self.chat(gw, "sk-dave-24680"), 401, "authentication_error", "invalid_api_key")
        self.assertGeneration(gw, 1)
        live = self.admin(gw, "GET", "/admin/config").body.decode()
        self.assertIn("[key.bob]", live)
        self.assertNotIn("[key.dave]", live)
        self.assertIn("max_inflight = 100", live)
        m = self.metrics(gw)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="error"}'), 1)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="ok"}'), 0)
        self.assertIn('llmgate_key_inflight{key="bob"}', m)

        gw.proc.signal(signal.SIGHUP)
        gw.proc.wait_log(r"reload refused", t(5))
        gw.proc.wait_log(re.escape(prefix), t(5))
        self.wait_metric(gw, 'llmgate_config_reloads_total{result="error"}', 2)
        time.sleep(0.2)
        self.assertTrue(gw.proc.running(), "SIGHUP with a bad file killed the gateway")
        self.assertEqual([self.chat(gw, k).status for k in ("alice", "bob")], [200, 200])
        self.assertGeneration(gw, 1)

        self.rewrite(gw, backends=self.one_backend(), keys={"alice": KEYS["alice"], "dave": "sk-dave-24680"})
        self.assertReloaded(self.reload(gw), 2, 1, 2)
        self.assertEqual(self.chat(gw, "sk-dave-24680").status, 200)
        self.assertErrorEnvelope(self.chat(gw, "bob"), 401, "authentication_error", "invalid_api_key")
        self.assertEqual(self.metric(gw, 'llmgate_config_reloads_total{result="error"}'), 2)

    def test_sighup_reloads(self):
        """SIGHUP with a valid changed file: logs `reload: generation 2`; the added key works,
        the removed one is 401; the generation gauge and the ok counter follow."""
        gw = self.start(self.one_backend(), keys={"alice": KEYS["alice"]})
        self.assertErrorEnvelope(self.chat(gw, "bob"), 401, "authentication_error", "invalid_api_key")
        self.rewrite(gw, backends=self.one_backend(), keys={"bob": KEYS["bob"]})
        gw.proc.signal(signal.SIGHUP)
        gw.proc.wait_log(r"reload: generation 2\b", t(5))
        self.assertEqual(self.chat(gw, "bob").status, 200)
        self.assertErrorEnvelope(self.chat(gw, "alice"), 401, "authentication_error", "invalid_api_key")
        self.assertGeneration(gw, 2)
        self.assertEqual(self.metric(gw, 'llmgate_config_reloads_total{result="ok"}'), 1)
        self.assertTrue(gw.proc.running())

    def test_reordered_backends_keep_health(self):
        """Two backends for one model, `dead` on a port nobody listens on, probes 60 s apart
        (only the one at start runs). Once dead reads 0 and live 1, the file is rewritten with
        the two sections swapped and reloaded: right away each name keeps its health (not its
        index's), and every request is served by live."""
        dead_url = "http://%s:%d" % (HOST, free_port())
        order1 = {"dead": (dead_url, ["mock-model"]), "live": (self.mock.url, ["mock-model"])}
        order2 = {"live": (self.mock.url, ["mock-model"]), "dead": (dead_url, ["mock-model"])}
        gw = self.start(order1, health_ms=60000)
        gw.proc.wait_log(r"backend dead is down", t(10))
        self.wait_metric(gw, 'llmgate_backend_up{backend="live"}', 1, t(10))
        m = self.metrics(gw)
        self.assertEqual((m.get('llmgate_backend_up{backend="dead"}'), m.get('llmgate_backend_up{backend="live"}')),
                         (0, 1), m)
        before = self.mock.stats()["requests"]
        for i in range(3):  # some history for live
            self.assertEqual(self.chat(gw, body=chat_body("before %d" % i)).status, 200)
        self.assertEqual(self.mock.stats()["requests"], before + 3)

        log_before = len(gw.proc.log_text())
        self.rewrite(gw, backends=order2, health_ms=60000)
        self.assertReloaded(self.reload(gw), 2, 2, 0)
        m = self.metrics(gw)
        self.assertEqual((m.get('llmgate_backend_up{backend="dead"}'), m.get('llmgate_backend_up{backend="live"}')),
                         (0, 1), "health moved with the index, not the name: %s" % m)
        for i in range(6):
            r = self.chat(gw, body=chat_body("after %d" % i))
            self.assertEqual(r.status, 200, r)
            if "x-llmgate-backend" in r.headers:
                self.assertEqual(r.headers["x-llmgate-backend"], "live", r.headers)
        self.assertEqual(self.mock.stats()["requests"], before + 9, "a request went to the dead backend")
        m = self.wait_permits_zero(gw)
        self.assertEqual((m.get('llmgate_backend_up{backend="dead"}'), m.get('llmgate_backend_up{backend="live"}')),
                         (0, 1), m)
        # The reload probes every backend at once (worker.c: probe_now); a probe only logs a
        # change of health, so a health moved or reset by the reload would show here even once
        # that probe has put it right again.
        time.sleep(0.3)
        self.assertNotRegex(gw.proc.log_text()[log_before:], r"backend (dead|live) is (up|down)")

    def test_reordered_backends_keep_passive_health(self):
        """The same without probes ([health] interval_ms = 0): health learnt from requests only.
        A request for a model only dead serves fails 502 and marks dead down; requests for the
        shared model mark live up. After the swapped file is reloaded, live still reads 1 and
        every request for the shared model goes to live (none to the dead one)."""
        dead_url = "http://%s:%d" % (HOST, free_port())
        order1 = {"dead": (dead_url, ["mock-model", "dead-model"]), "live": (self.mock.url, ["mock-model"])}
        order2 = {"live": (self.mock.url, ["mock-model"]), "dead": (dead_url, ["mock-model", "dead-model"])}
        gw = self.start(order1, health_ms=0)
        self.assertErrorEnvelope(self.chat(gw, body=chat_body("x", model="dead-model")), 502,
                                 "upstream_error", "bad_gateway")
        before = self.mock.stats()["requests"]
        for i in range(3):
            self.assertEqual(self.chat(gw, body=chat_body("before %d" % i)).status, 200)
        self.assertEqual(self.mock.stats()["requests"], before + 3)
        m = self.metrics(gw)
        self.assertEqual((m.get('llmgate_backend_up{backend="dead"}'), m.get('llmgate_backend_up{backend="live"}')),
                         (0, 1), m)
        self.rewrite(gw, backends=order2, health_ms=0)
        self.assertReloaded(self.reload(gw), 2, 2, 0)
        m = self.metrics(gw)
        self.assertEqual((m.get('llmgate_backend_up{backend="dead"}'), m.get('llmgate_backend_up{backend="live"}')),
                         (0, 1), "health moved or reset by the reload: %s" % m)
        statuses = [self.chat(gw, body=chat_body("after %d" % i)).status for i in range(6)]
        self.assertEqual(statuses, [200] * 6)
        self.assertEqual(self.mock.stats()["requests"], before + 9, "a request went to the dead backend")
        self.wait_permits_zero(gw)

    def test_stream_survives_removal(self):
        """A stream of key `temp` on backend b is running when a reload removes both the key and
        the backend: it finishes normally (every token, [DONE]); new requests of temp get 401,
        for b's model 404 model_not_found; b's gauges are gone, every permit back at 0."""
        both = {"a": (self.mock.url, ["mock-model"]), "b": (self.mock_b.url, ["b-model"])}
        keys = {"alice": KEYS["alice"], "temp": "sk-temp-112233"}
        gw = self.start(both, keys=keys)
        b0 = self.mock_b.stats()
        tokens = 20
        with Raw(HOST, gw.port, t(20)) as c:
            c.send_request("POST", CHAT, chat_body("long", stream=True, model="b-model",
                                                   mock={"ttft_ms": 0, "itl_ms": 100, "tokens": tokens}),
                           headers={"Authorization": "Bearer sk-temp-112233"})
            r = c.read_head()
            self.assertSSEHeaders(r)
            it = c.iter_body(r)
            parts = [next(it)[1]]
            self.assertEqual(self.metric(gw, 'llmgate_key_inflight{key="temp"}'), 1)
            self.rewrite(gw, backends={"a": (self.mock.url, ["mock-model"])}, keys={"alice": KEYS["alice"]})
            self.assertReloaded(self.reload(gw), 2, 1, 1)
            reloaded_at = time.monotonic()
            last = reloaded_at
            for at, piece in it:
                parts.append(piece)
                last = at
            r.body = b"".join(parts)
        self.assertGreater(last, reloaded_at + 0.2, "the stream did not run past the reload")
        self.assertStreamDone(r, tokens)
        self.assertErrorEnvelope(self.chat(gw, "sk-temp-112233"), 401, "authentication_error", "invalid_api_key")
        self.assertErrorEnvelope(self.chat(gw, "alice", chat_body("b?", model="b-model")), 404,
                                 "invalid_request_error", "model_not_found")
        self.assertEqual(self.chat(gw, "alice").status, 200)
        m = self.wait_permits_zero(gw)
        self.assertNotIn('llmgate_backend_inflight{backend="b"}', m)
        self.assertNotIn('llmgate_backend_up{backend="b"}', m)
        self.assertNotIn('llmgate_key_inflight{key="temp"}', m)
        b1 = self.mock_b.wait_stats(lambda s: s["active"] == 0, t(5), "b idle")
        self.assertEqual((b1["requests"] - b0["requests"], b1["aborted"] - b0["aborted"]), (1, 0), b1)

    def test_queued_requests_survive_reload(self):
        """One slot per backend, each held by a slow request with 3 more queued behind it, on
        a (kept by the reload) and on b (removed by it, with its model). Every one of the 8
        is served 200 by its own engine in turn; 2 requests sent after the reload (a's slot is
        still busy, so they wait with the old ones for the same slot) are served too; the queue
        and every permit end at 0."""
        both = {"a": (self.mock.url, ["mock-model"], 1), "b": (self.mock_b.url, ["b-model"], 1)}
        gw = self.start(both)
        a0, b0 = self.mock.stats(), self.mock_b.stats()
        out = []
        lock = threading.Lock()

        def send(model, content):
            r = self.chat(gw, body=chat_body(content, model=model, mock={"ttft_ms": 400}), timeout=t(30))
            with lock:
                out.append((model, content, r.status, r))

        ths = []
        for i in range(4):
            for model in ("mock-model", "b-model"):
                th = threading.Thread(target=send, args=(model, "before %d" % i))
                th.start()
                ths.append(th)
        try:
            self.wait_metric(gw, "llmgate_queued", 6)
            self.rewrite(gw, backends={"a": (self.mock.url, ["mock-model"], 1)})
            self.assertReloaded(self.reload(gw), 2, 1, 0)
            for i in range(2):
                th = threading.Thread(target=send, args=("mock-model", "after %d" % i))
                th.start()
                ths.append(th)
        finally:
            for th in ths:
                th.join(t(30))
        bad = [(m, c, st, r) for m, c, st, r in out if st != 200]
        self.assertEqual(bad, [])
        self.assertEqual(len(out), 10)
        m = self.wait_permits_zero(gw)
        self.assertNotIn('llmgate_backend_inflight{backend="b"}', m)
        self.assertEqual(self.mock.stats()["requests"] - a0["requests"], 6)
        self.assertEqual(self.mock_b.stats()["requests"] - b0["requests"], 4)
        self.assertErrorEnvelope(self.chat(gw, body=chat_body("b?", model="b-model")), 404,
                                 "invalid_request_error", "model_not_found")

    def test_reload_adding_slots_wakes_waiters(self):
        """max_concurrency 2 -> 8 while 100 requests wait behind two slow ones (6 s): the
        reload grants six of them at once, and the 100 quick ones (50 ms) are all served long
        before the slow ones end — not when a slot is next released, nor at their timeout."""
        gw = self.start({"a": (self.mock.url, ["mock-model"], 2)},
                        limits={"queue_timeout_ms": 30000, "queue_capacity": 200})
        slow_ms, n = 6000, 100
        done = {}
        lock = threading.Lock()

        def send(i, ttft):
            r = self.chat(gw, body=chat_body("w%d" % i, mock={"ttft_ms": ttft}), timeout=t(40))
            with lock:
                done[i] = (r.status, time.monotonic())

        ths = [threading.Thread(target=send, args=(i, slow_ms)) for i in range(2)]
        for th in ths:
            th.start()
        try:
            self.wait_metric(gw, "llmgate_inflight", 2)
            t_start = time.monotonic()
            waiters = [threading.Thread(target=send, args=(i, 50)) for i in range(2, 2 + n)]
            for th in waiters:
                th.start()
            ths += waiters
            self.wait_metric(gw, "llmgate_queued", n, timeout=t(10))
            self.rewrite(gw, backends={"a": (self.mock.url, ["mock-model"], 8)},
                         limits={"queue_timeout_ms": 30000, "queue_capacity": 200})
            self.assertReloaded(self.reload(gw), 2, 1, 0)
            t_reload = time.monotonic()
            self.assertLess(t_reload - t_start, slow_ms / 1000 - 2, "too slow to measure")
            self.wait_metric(gw, "llmgate_inflight", 8, timeout=1.0)
        finally:
            for th in ths:
                th.join(t(40))
        self.assertEqual(len(done), n + 2)
        self.assertEqual(sorted(set(st for st, _ in done.values())), [200], done)
        quick = [at - t_reload for i, (st, at) in done.items() if i >= 2]
        slow_end = min(at for i, (st, at) in done.items() if i < 2)
        # 100 x 50 ms over 6 slots: ~1 s after the reload, and before the first slot is freed
        self.assertLess(max(quick), t(3), "waiters served %.2f s after the reload" % max(quick))
        self.assertLess(max(quick) + t_reload, slow_end, "waiters waited for a release")
        self.wait_permits_zero(gw)

    def test_tpm_cap_raised_refunds_no_more_than_taken(self):
        """A reload that raises a key's tpm from 1000 to 10000 while its request is in progress:
        the request estimated at 5000 took the whole bucket (1000); it uses a few tokens, and
        gives back at most what it took (~1000 and the refill since), not its 5000 estimate:
        a request estimated at 3000 right after is 429 tpm, one at 800 is admitted."""
        keys = {"tk": "sk-tk-8899"}
        backends = {"a": (self.mock.url, ["mock-model"], 8)}
        gw = self.start(backends, keys=keys, extra=[("key.tk", {"tpm": 1000})])
        out = {}
        th = threading.Thread(target=lambda: out.update(r=self.chat(
            gw, "sk-tk-8899", chat_body("t", max_tokens=5000, mock={"ttft_ms": 1500, "tokens": 3}))))
        th.start()
        try:
            self.wait_metric(gw, 'llmgate_key_inflight{key="tk"}', 1)
            self.rewrite(gw, backends=backends, keys=keys, extra=[("key.tk", {"tpm": 10000})])
            self.assertReloaded(self.reload(gw), 2, 1, 1)
        finally:
            th.join(t(20))
        self.assertEqual(out["r"].status, 200, out)
        self.wait_permits_zero(gw)
        deadline = time.monotonic() + t(3)
        while True:  # settled when the request's last reference goes: an 800 gets in then
            r = self.chat(gw, "sk-tk-8899", chat_body("t", max_tokens=800))
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.status, 200, r)
        r = self.chat(gw, "sk-tk-8899", chat_body("t", max_tokens=3000))
        self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        self.assertIn("tpm", json.loads(r.body)["error"]["message"])

    def test_key_state_carries_over(self):
        """A key that stays keeps its state: `conc` holds 2 slow requests of its 2 slots; a
        reload raises max_concurrency to 3: its in-flight count stays 2 (not reset), one more
        is admitted, a fourth is 429 max_concurrency; `rpm` (2 a minute) spent before the
        reload is still spent after it (429 rpm). All slots come back to 0."""
        keys = {"conc": "sk-conc-4455", "rpm": "sk-rpm-6677"}
        backends = {"a": (self.mock.url, ["mock-model"], 8)}
        gw = self.start(backends, keys=keys,
                        extra=[("key.conc", {"max_concurrency": 2}), ("key.rpm", {"rpm": 2})])
        self.assertEqual([self.chat(gw, "sk-rpm-6677").status for _ in range(2)], [200, 200])
        self.assertErrorEnvelope(self.chat(gw, "sk-rpm-6677"), 429, "rate_limit_exceeded", "rate_limit_exceeded")

        slow = chat_body("slow", mock={"ttft_ms": 2500})
        out = []
        ths = [threading.Thread(target=lambda: out.append(self.chat(gw, "sk-conc-4455", slow))) for _ in range(2)]
        for th in ths:
            th.start()
        try:
            self.wait_metric(gw, 'llmgate_key_inflight{key="conc"}', 2)
            r = self.chat(gw, "sk-conc-4455")
            self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
            self.assertIn("max_concurrency", json.loads(r.body)["error"]["message"])

            self.rewrite(gw, backends=backends, keys=keys,
                         extra=[("key.conc", {"max_concurrency": 3}), ("key.rpm", {"rpm": 2})])
            self.assertReloaded(self.reload(gw), 2, 1, 2)
            self.assertEqual(self.metric(gw, 'llmgate_key_inflight{key="conc"}'), 2)
            r = self.chat(gw, "sk-rpm-6677")
            self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
            self.assertIn("rpm", json.loads(r.body)["error"]["message"])

            th3 = threading.Thread(target=lambda: out.append(self.chat(gw, "sk-conc-4455", slow)))
            th3.start()
            ths.append(th3)
            self.wait_metric(gw, 'llmgate_key_inflight{key="conc"}', 3)
            r = self.chat(gw, "sk-conc-4455")
            self.assertErrorEnvelope(r, 429, "rate_limit_exceeded", "rate_limit_exceeded")
            self.assertIn("max_concurrency", json.loads(r.body)["error"]["message"])
        finally:
            for th in ths:
                th.join(t(20))
        self.assertEqual([x.status for x in out], [200, 200, 200], out)
        self.wait_permits_zero(gw)
        self.assertEqual(self.chat(gw, "sk-conc-4455").status, 200)
        self.wait_permits_zero(gw)


class TestReloadUnderLoad(ReloadTest):
    """Engines whose streams last 1.5 s (30 tokens, 50 ms apart)."""

    TOKENS = 30
    CLIENTS = 20
    RELOADS = 10

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 50, "--tokens", cls.TOKENS, name="mock-load-a")
        cls.mock_b = cls.own_mock("--ttft-ms", 0, "--itl-ms", 50, "--tokens", cls.TOKENS, name="mock-load-b")

    def test_reload_under_load(self):
        """20 clients stream without pause (staggered starts, so streams start and end at every
        moment) while the file alternates between two valid configs 10 times, every other
        reload by SIGHUP: X = backend a, key `load` max_concurrency 60; Y = backends a and b,
        `load` max_concurrency 50 and a second key (both above the 20 streams plus the slots
        a finished stream gives back just after its last byte). Every stream is 200 and complete with
        [DONE], streams ran on both engines (b's cut from the config while in flight), none was
        aborted, and the permit counters end at 0."""
        a = (self.mock.url, ["mock-model"], 64)
        b = (self.mock_b.url, ["mock-model"], 64)
        cfg_x = dict(backends={"a": a}, keys={"load": "sk-load-0001"},
                     extra=[("key.load", {"max_concurrency": 60})])
        cfg_y = dict(backends={"a": a, "b": b}, keys={"load": "sk-load-0001", "other": "sk-other-0002"},
                     extra=[("key.load", {"max_concurrency": 50})])
        gw = self.start(cfg_x["backends"], keys=cfg_x["keys"], extra=cfg_x["extra"], name="llmgate-reload-load")
        a0, b0 = self.mock.stats(), self.mock_b.stats()
        stop = threading.Event()
        results = []
        lock = threading.Lock()

        def client(i):
            time.sleep(i * 0.075)
            n = 0
            while not stop.is_set():
                n += 1
                desc = "client %d stream %d" % (i, n)
                try:
                    with Raw(HOST, gw.port, t(20)) as c:
                        c.send_request("POST", CHAT, chat_body(desc, stream=True),
                                       headers={"Authorization": "Bearer sk-load-0001"})
                        r = c.read_response(tolerate_reset=True)
                    problem = None
                    if r.status != 200:
                        problem = "status %d: %r" % (r.status, r.body[:200])
                    elif not r.complete:
                        problem = "cut after %d bytes: %r" % (len(r.body), r.body[-200:])
                    else:
                        ev = sse_events(r.body)
                        if not ev or ev[-1] != "[DONE]":
                            problem = "no [DONE]: %r" % (r.body[-200:],)
                        elif stream_content(ev) != expected_content(self.TOKENS):
                            problem = "content %r" % stream_content(ev)
                except Exception as e:  # noqa: reported below
                    problem = repr(e)
                with lock:
                    results.append((desc, problem))

        ths = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(self.CLIENTS)]
        for th in ths:
            th.start()
        reload_errors = []
        try:
            time.sleep(1.0)
            for n in range(self.RELOADS):
                spec = cfg_y if n % 2 == 0 else cfg_x
                self.rewrite(gw, **spec)
                gen = n + 2
                if n % 2 == 1:
                    gw.proc.signal(signal.SIGHUP)
                    gw.proc.wait_log(r"reload: generation %d\b" % gen, t(5))
                else:
                    r = self.reload(gw)
                    if r.status != 200 or json.loads(r.body).get("generation") != gen:
                        reload_errors.append((gen, r))
                time.sleep(0.3)
            time.sleep(0.5)
        finally:
            stop.set()
            for th in ths:
                th.join(t(30))
        self.assertFalse([th for th in ths if th.is_alive()], "clients still running")
        self.assertEqual(reload_errors, [])
        failures = [x for x in results if x[1] is not None]
        self.assertEqual(failures, [], "%d of %d streams failed" % (len(failures), len(results)))
        print("\n    %d streams, %d reloads" % (len(results), self.RELOADS), end=" ")
        self.assertGreaterEqual(len(results), self.CLIENTS * 2)
        m = self.wait_permits_zero(gw)
        self.assertEqual(m.get("llmgate_config_generation"), self.RELOADS + 1)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="ok"}'), self.RELOADS)
        self.assertEqual(m.get('llmgate_config_reloads_total{result="error"}'), 0)
        self.assertNotIn('llmgate_backend_inflight{backend="b"}', m)  # X is live at the end
        a1 = self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "a idle")
        b1 = self.mock_b.wait_stats(lambda s: s["active"] == 0, t(5), "b idle")
        da, db = a1["requests"] - a0["requests"], b1["requests"] - b0["requests"]
        self.assertEqual(da + db, len(results), (a1, b1))
        self.assertGreater(da, 0)
        self.assertGreater(db, 0, "no stream ran on b while it was configured")
        self.assertEqual((a1["aborted"] - a0["aborted"], b1["aborted"] - b0["aborted"]), (0, 0), (a1, b1))
        self.assertTrue(gw.proc.running())
