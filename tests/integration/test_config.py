"""Command line: --check-config (file:line diagnostics, exit codes), --version, --help, env overrides."""

import os
import re
import socket
import subprocess
import time

from harness import CTX, HOST, OwnTest, Raw, chat_body, free_port, raw_exchange, request, t, write_file


def llmgate(*args, env=None, timeout=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run([os.path.join(CTX.build, "llmgate")] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, env=full_env, timeout=timeout or t(10))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


VALID = """\
[server]
listen = 127.0.0.1:18080
max_body_bytes = 10485760

[timeouts]
connect_ms = 5000
request_s = 60

[limits]
max_inflight = 100
queue_capacity = 1024
queue_timeout_ms = 30000

[keys]
alice = sk-alice-0123456789

[backend.local]
url = http://127.0.0.1:11434
models = llama3.2, qwen2.5:7b
max_concurrency = 4
"""


def with_line(text, lineno, new):
    """Replaces line `lineno` (1-based) of text."""
    lines = text.split("\n")
    lines[lineno - 1] = new
    return "\n".join(lines)


def line_of(text, needle):
    for i, line in enumerate(text.split("\n"), 1):
        if line.startswith(needle):
            return i
    raise KeyError(needle)


class TestCheckConfig(OwnTest):
    """`llmgate --check-config --config FILE`: `FILE:LINE: message` per problem, exit 1; 0 if valid."""

    def check(self, text, env=None):
        path = write_file("check.ini", text)
        rc, out, err = llmgate("--check-config", "--config", path, env=env)
        return path, rc, out + err

    def numbered(self, path, output):
        """{line: [messages]} from the `FILE:LINE: message` lines of the output."""
        rx = re.compile(r"^%s:(\d+): (\S.*)$" % re.escape(path))
        out = {}
        for ln in output.splitlines():
            m = rx.match(ln)
            if m:
                out.setdefault(int(m.group(1)), []).append(m.group(2))
        return out

    def assertProblemAt(self, text, lines, what):
        path, rc, output = self.check(text)
        self.assertEqual(rc, 1, "%s: exit status; output:\n%s" % (what, output))
        got = self.numbered(path, output)
        self.assertTrue(set(got) & set(lines),
                        "%s: expected `%s:LINE: message` with LINE in %s; output:\n%s" % (what, path, lines, output))
        return got

    def test_valid_config_exit_0(self):
        path, rc, output = self.check(VALID)
        self.assertEqual(rc, 0, output)
        self.assertEqual(self.numbered(path, output), {}, output)

    def test_bad_listen(self):
        n = line_of(VALID, "listen")
        for bad in ("nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:abc"):
            with self.subTest(listen=bad):
                self.assertProblemAt(with_line(VALID, n, "listen = " + bad), [n], "listen = " + bad)

    def test_unknown_key(self):
        n = line_of(VALID, "max_body_bytes")
        text = with_line(VALID, n, "max_body_bytes = 10485760\nbogus_key = 1")
        self.assertProblemAt(text, [n + 1], "unknown key")

    def test_max_inflight_zero(self):
        n = line_of(VALID, "max_inflight")
        self.assertProblemAt(with_line(VALID, n, "max_inflight = 0"), [n], "max_inflight = 0")

    def test_not_a_number(self):
        n = line_of(VALID, "request_s")
        self.assertProblemAt(with_line(VALID, n, "request_s = soon"), [n], "request_s = soon")

    def test_backend_without_url(self):
        n = line_of(VALID, "url")
        text = with_line(VALID, n, "; no url here")
        header = line_of(text, "[backend.local]")
        # The natural place is the section header; any line of the section is accepted.
        self.assertProblemAt(text, list(range(header, header + 5)), "backend without url")

    def test_all_problems_reported(self):
        text = VALID
        text = with_line(text, line_of(text, "listen"), "listen = nonsense")
        text = with_line(text, line_of(text, "max_inflight"), "max_inflight = 0")
        text = with_line(text, line_of(text, "url"), "; no url")
        text = text.replace("queue_timeout_ms = 30000", "queue_timeout_ms = 30000\nbogus_key = 1")
        path, rc, output = self.check(text)
        self.assertEqual(rc, 1, output)
        numbers = self.numbered(path, output)
        for what, n in (("listen", line_of(text, "listen")), ("max_inflight", line_of(text, "max_inflight")),
                        ("bogus_key", line_of(text, "bogus_key"))):
            self.assertIn(n, numbers, "%s (line %d) not reported; output:\n%s" % (what, n, output))
        # (the line of the url problem is checked by test_backend_without_url)
        self.assertIn("url", output, "missing url not reported; output:\n%s" % output)

    def test_missing_file(self):
        rc, out, err = llmgate("--check-config", "--config", os.path.join(CTX.tmp, "does-not-exist.ini"))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("does-not-exist.ini", out + err)

    def test_env_override_is_validated(self):
        path, rc, output = self.check(VALID, env={"LLMGATE_LIMITS_MAX_INFLIGHT": "0"})
        self.assertEqual(rc, 1, "LLMGATE_LIMITS_MAX_INFLIGHT=0 must make the config invalid:\n" + output)
        self.assertIn("max_inflight", output.lower())

    def test_serving_with_invalid_config_fails(self):
        text = with_line(VALID, line_of(VALID, "max_inflight"), "max_inflight = 0")
        path = write_file("invalid.ini", text)
        rc, out, err = llmgate("--config", path)
        self.assertNotEqual(rc, 0, "llmgate served with an invalid config:\n" + out + err)


class TestCli(OwnTest):
    def test_version(self):
        rc, out, err = llmgate("--version")
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out + err, r"llmgate\S* .*\d+\.\d+")

    def test_help(self):
        rc, out, err = llmgate("--help")
        self.assertEqual(rc, 0, out + err)
        for opt in ("--config", "--check-config", "--version"):
            self.assertIn(opt, out + err)

    def test_unknown_option(self):
        rc, out, err = llmgate("--no-such-option")
        self.assertNotEqual(rc, 0, out + err)


class TestEnvOverride(OwnTest):
    """LLMGATE_<SECTION>_<KEY> overrides [section] key."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 3)
        cls.file_port = free_port()
        cls.env_port = free_port()
        env = {"LLMGATE_SERVER_LISTEN": "%s:%d" % (HOST, cls.env_port),
               "LLMGATE_LIMITS_MAX_INFLIGHT": "1", "LLMGATE_LIMITS_QUEUE_CAPACITY": "1"}
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])}, port=cls.file_port, env=env,
                                 wait=False, name="llmgate-env")
        cls.gw.port = cls.env_port
        cls.gw.wait_healthy()

    def test_listen_override(self):
        r = request(HOST, self.env_port, "GET", "/healthz", timeout=t(5))
        self.assertEqual(r.status, 200)
        with self.assertRaises(OSError, msg="the port from the file must not be listening"):
            with socket.create_connection((HOST, self.file_port), timeout=2):
                pass

    def test_max_inflight_override(self):
        """max_inflight=1, queue_capacity=1 from the environment: a third concurrent request gets
        503 queue_full while the first holds the only slot."""
        self.mock.reset()
        slow = chat_body("env-slow", mock={"ttft_ms": int(t(2500))})
        a, b = Raw(HOST, self.env_port, t(15)), Raw(HOST, self.env_port, t(15))
        try:
            a.send_request("POST", "/v1/chat/completions", slow)
            self.mock.wait_stats(lambda s: s["active"] >= 1, t(5), "active >= 1")
            b.send_request("POST", "/v1/chat/completions", chat_body("env-queued"))
            time.sleep(0.3)
            r = raw_exchange(HOST, self.env_port, "POST", "/v1/chat/completions", chat_body("env-third"), timeout=t(10))
            self.assertErrorEnvelope(r, 503, "service_unavailable", "queue_full", retry_after=True)
            self.assertEqual(a.read_response().status, 200)
            self.assertEqual(b.read_response().status, 200)
        finally:
            a.close()
            b.close()
