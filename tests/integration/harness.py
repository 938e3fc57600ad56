"""Shared machinery of the integration tests: processes, configs, HTTP clients, SSE parsing.

Everything here talks to loopback only. Every wait is bounded by a deadline; every process
started through `Proc` is registered so the runner can stop it even when a test fails.
"""

import asyncio
import ctypes
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer", "ThreadSanitizer: reported")
HOST = "127.0.0.1"
MODEL = "mock-model"


class Ctx:
    """Run-wide settings, filled in by run.py before any test runs."""

    build = "build"
    sanitizer = False
    tmp = "/tmp"
    scale = 1.0  # multiplies every timeout (ASan/UBSan builds are several times slower)
    external_url = None  # LLMGATE_TEST_URL
    external_mock_url = None  # LLMGATE_TEST_MOCK_URL (optional companion of the above)
    procs = []  # every Proc ever started, in order
    seq = 0


CTX = Ctx()


def t(seconds):
    """A timeout scaled for the build under test."""
    return seconds * CTX.scale


# --------------------------------------------------------------------------------------------
# processes

def free_port():
    """A loopback port that was free a moment ago (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent():
    # Safety net only: if the runner itself is killed, the kernel sends SIGTERM to the child.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ProcError(AssertionError):
    pass


class Proc:
    """A child process whose stdout+stderr go to a log file in the run's temp dir."""

    def __init__(self, name, argv, env=None):
        CTX.seq += 1
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(CTX.tmp, "%02d-%s.log" % (CTX.seq, name))
        self.started = time.monotonic()
        self.stopped = None
        self.rc = None
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self.log_path, "wb") as log:
            log.write(("$ %s\n" % " ".join(argv)).encode())
            if env:
                log.write(("  env: %s\n" % " ".join("%s=%s" % kv for kv in env.items())).encode())
            log.flush()
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, env=full_env,
                                      preexec_fn=_die_with_parent)
        CTX.procs.append(self)

    @property
    def pid(self):
        return self.p.pid

    def running(self):
        return self.p.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=50):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def sanitizer_hits(self):
        text = self.log_text()
        return [p for p in SANITIZER_PATTERNS if p in text]

    def wait_log(self, regex, timeout):
        """Waits until the log matches `regex`; returns the match. Fails if the process exits."""
        deadline = time.monotonic() + timeout
        rx = re.compile(regex)
        while time.monotonic() < deadline:
            m = rx.search(self.log_text())
            if m:
                return m
            if not self.running():
                raise ProcError("%s exited (rc=%s) before printing /%s/" % (self.name, self.p.returncode, regex))
            time.sleep(0.02)
        raise ProcError("%s did not print /%s/ within %.1fs" % (self.name, regex, timeout))

    def signal(self, sig):
        if self.running():
            self.p.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.stopped is None:
            self.stopped = time.monotonic()
        return self.rc

    def kill(self):
        if self.running():
            self.p.kill()
            self.p.wait(timeout=10)
        if self.stopped is None:
            self.stopped = time.monotonic()

    def stop(self, timeout=None, check=True):
        """SIGTERM, wait, SIGKILL if needed. With check, raises if the exit was not clean (exit
        code 0 within the timeout) or the log holds a sanitizer report."""
        timeout = timeout or t(10)
        problems = []
        if self.running():
            self.p.send_signal(signal.SIGTERM)
            rc = self.wait_exit(timeout)
            if rc is None:
                problems.append("did not exit within %.1fs of SIGTERM (killed)" % timeout)
                self.kill()
                self.rc = self.p.returncode
        else:
            self.rc = self.p.returncode
            if self.stopped is None:
                self.stopped = time.monotonic()
        if self.rc not in (0, None) and not problems:
            problems.append("exit status %s after SIGTERM (expected 0)" % self.rc)
        hits = self.sanitizer_hits()
        if hits:
            problems.append("sanitizer report in log: %s" % ", ".join(hits))
        if check and problems:
            raise ProcError("%s (pid %d, log %s): %s" % (self.name, self.pid, self.log_path, "; ".join(problems)))
        return problems


def stop_all(procs):
    """Stops every process in `procs` (all of them, even when some fail); raises one combined error."""
    errors = []
    for p in procs:
        if p is None:
            continue
        try:
            p.stop()
        except ProcError as e:
            errors.append(str(e))
    if errors:
        raise ProcError("\n".join(errors))


# --------------------------------------------------------------------------------------------
# mock engine

class Mock:
    """`mockllm` on a free loopback port (it prints `mockllm listening on HOST:PORT`)."""

    def __init__(self, *args, name="mockllm"):
        argv = [os.path.join(CTX.build, "mockllm"), "--listen", "%s:0" % HOST] + [str(a) for a in args]
        self.proc = Proc(name, argv)
        m = self.proc.wait_log(r"mockllm listening on ([0-9.]+):(\d+)", t(10))
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = "http://%s:%d" % (self.host, self.port)

    def stop(self):
        self.proc.stop()

    def stats(self):
        r = request(self.host, self.port, "GET", "/mock/stats", timeout=t(5))
        if r.status != 200:
            raise AssertionError("GET /mock/stats -> %d %r" % (r.status, r.body[:200]))
        return json.loads(r.body)

    def reset(self):
        r = request(self.host, self.port, "POST", "/mock/reset", timeout=t(5))
        if r.status // 100 != 2:
            raise AssertionError("POST /mock/reset -> %d %r" % (r.status, r.body[:200]))

    def wait_stats(self, pred, timeout, what="condition"):
        """Polls /mock/stats until pred(stats) is true; returns the stats. Raises on timeout."""
        deadline = time.monotonic() + timeout
        s = self.stats()
        while not pred(s):
            if time.monotonic() > deadline:
                raise AssertionError("mock stats never reached %s within %.1fs; last: %s" % (what, timeout, s))
            time.sleep(0.05)
            s = self.stats()
        return s


class ExternalMock(Mock):
    def __init__(self, url):  # noqa: super not called on purpose: nothing to start
        m = re.match(r"http://([^:/]+):(\d+)", url)
        self.host, self.port, self.url, self.proc = m.group(1), int(m.group(2)), url.rstrip("/"), None

    def stop(self):
        pass


# --------------------------------------------------------------------------------------------
# gateway

def render_ini(sections):
    """sections: list of (name, dict). Returns INI text."""
    out = []
    for name, keys in sections:
        out.append("[%s]" % name)
        for k, v in keys.items():
            out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


def gateway_sections(listen, backends, server=None, timeouts=None, limits=None, keys=None, extra=None):
    """backends: {name: (url, [models]) or (url, [models], max_concurrency)}; extra: more
    [(section, {key: value})], e.g. [key.NAME] sections."""
    srv = {"listen": listen, "max_body_bytes": 10485760, "threads": 2, "workers": 2}
    srv.update(server or {})
    tmo = {"connect_ms": 5000, "request_s": 60}
    tmo.update(timeouts or {})
    lim = {"max_inflight": 100, "queue_capacity": 1024, "queue_timeout_ms": 30000}
    lim.update(limits or {})
    sections = [("server", srv), ("timeouts", tmo), ("limits", lim)]
    if keys:
        sections.append(("keys", dict(keys)))
    sections.extend(extra or [])
    for name, spec in backends.items():
        url, models = spec[0], spec[1]
        conc = spec[2] if len(spec) > 2 else 4
        sections.append(("backend.%s" % name, {"url": url, "models": ", ".join(models), "max_concurrency": conc}))
    return sections


def write_file(name, text):
    CTX.seq += 1
    path = os.path.join(CTX.tmp, "%02d-%s" % (CTX.seq, name))
    with open(path, "w") as f:
        f.write(text)
    return path


class Gateway:
    """`llmgate` with a config written by the test, on a free loopback port; waits for /healthz."""

    def __init__(self, backends, server=None, timeouts=None, limits=None, keys=None, env=None,
                 name="llmgate", port=None, wait=True, extra=None):
        self.host = HOST
        self.port = port or free_port()
        sections = gateway_sections("%s:%d" % (HOST, self.port), backends, server, timeouts, limits, keys,
                                    extra)
        self.config_path = write_file(name + ".ini", render_ini(sections))
        self.proc = Proc(name, [os.path.join(CTX.build, "llmgate"), "--config", self.config_path], env=env)
        if wait:
            self.wait_healthy()

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def wait_healthy(self, timeout=None):
        timeout = timeout or t(10)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc and not self.proc.running():
                raise ProcError("llmgate exited (rc=%s) before becoming healthy; log:\n%s"
                                % (self.proc.p.returncode, self.proc.tail(20)))
            try:
                r = request(self.host, self.port, "GET", "/healthz", timeout=1)
                if r.status == 200 and r.body.strip() == b"OK":
                    return
                last = "%d %r" % (r.status, r.body[:100])
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise ProcError("llmgate not healthy within %.1fs (last: %s)" % (timeout, last))

    def stop(self):
        if self.proc:
            self.proc.stop()


class ExternalGateway(Gateway):
    def __init__(self, url):  # noqa: nothing to start
        m = re.match(r"http://([^:/]+):(\d+)", url)
        if not m:
            raise SystemExit("LLMGATE_TEST_URL must look like http://HOST:PORT")
        self.host, self.port, self.proc, self.config_path = m.group(1), int(m.group(2)), None, None


# --------------------------------------------------------------------------------------------
# HTTP clients

class Resp:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1", complete=True):
        self.status = status
        self.reason = reason
        self.header_list = headers  # [(name, value)] as received
        self.headers = {}
        for k, v in headers:
            k = k.lower()
            self.headers[k] = v if k not in self.headers else self.headers[k] + ", " + v
        self.body = body
        self.version = version
        self.complete = complete
        self.interim = []  # 1xx responses read before this one (Raw.read_response)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%s %d %s %r>" % (self.version, self.status, self.headers, self.body[:300])


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def request(host, port, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection (http.client). body: bytes, or an object sent as JSON."""
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = dumps(body)
    hdrs = {}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


def build_request(method, path, host_port, body=None, headers=None, version="HTTP/1.1", chunked=None):
    """Raw request bytes. chunked: None, or a list of byte pieces sent as chunks."""
    lines = ["%s %s %s" % (method, path, version), "Host: %s" % host_port]
    hdrs = dict(headers or {})
    if body is not None or chunked is not None:
        hdrs.setdefault("Content-Type", "application/json")
    if chunked is not None:
        hdrs["Transfer-Encoding"] = "chunked"
    elif body is not None and "Content-Length" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    for k, v in hdrs.items():
        lines.append("%s: %s" % (k, v))
    out = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunked is not None:
        for piece in chunked:
            if piece:
                out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        out += b"0\r\n\r\n"
    elif body is not None:
        out += body
    return out


class Raw:
    """A raw HTTP/1.x client on one socket: exact framing, arrival times, keep-alive reuse."""

    def __init__(self, host, port, timeout=10):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def settimeout(self, s):
        self.sock.settimeout(s)

    def send(self, data):
        self.sock.sendall(data)

    def send_request(self, method, path, body=None, headers=None, version="HTTP/1.1", chunked=None):
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = dumps(body)
        self.send(build_request(method, path, "%s:%d" % (self.host, self.port), body, headers, version, chunked))

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            self.eof = True
            raise EOFError("connection closed by peer")
        self.buf += d

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """Reads the status line and headers; returns a Resp with body b"" (body not read yet)."""
        head = self._until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
        r = Resp(status, reason, headers, b"", version, complete=False)
        r.framing = ("chunked" if "chunked" in r.headers.get("transfer-encoding", "").lower()
                     else "length" if "content-length" in r.headers else "close")
        return r

    def iter_body(self, resp, method="POST"):
        """Yields (monotonic time, bytes) for each piece of the body as it arrives; sets
        resp.complete when the body ended by its framing (or by EOF for close-delimited)."""
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.complete = True
            return
        if resp.framing == "length":
            left = int(resp.headers["content-length"])
            while left > 0:
                if not self.buf:
                    self._fill()
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                yield time.monotonic(), piece
            resp.complete = True
        elif resp.framing == "chunked":
            while True:
                size_line = self._until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._until(b"\r\n") != b"\r\n":  # trailers
                        pass
                    resp.complete = True
                    return
                left = size
                while left > 0:
                    if not self.buf:
                        self._fill()
                    piece, self.buf = self.buf[:left], self.buf[left:]
                    left -= len(piece)
                    yield time.monotonic(), piece
                if self._exact(2) != b"\r\n":
                    raise AssertionError("bad chunk terminator")
        else:
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    yield time.monotonic(), piece
                try:
                    self._fill()
                except EOFError:
                    resp.complete = True
                    return

    def read_response(self, method="POST", tolerate_reset=False):
        """Reads one whole response. With tolerate_reset, an EOF/reset mid-body returns what came
        (resp.complete stays False). Interim 1xx responses are skipped, as HTTP/1.1 clients do
        (RFC 9110 15.2), and kept in resp.interim."""
        r = self.read_head()
        interim = []
        while 100 <= r.status < 200 and r.status != 101:
            interim.append(r)
            r = self.read_head()
        r.interim = interim
        parts = []
        try:
            for _, piece in self.iter_body(r, method):
                parts.append(piece)
        except (EOFError, ConnectionResetError):
            if not tolerate_reset:
                raise
        r.body = b"".join(parts)
        return r


def raw_exchange(host, port, method, path, body=None, headers=None, version="HTTP/1.1", chunked=None, timeout=10):
    with Raw(host, port, timeout) as c:
        c.send_request(method, path, body, headers, version, chunked)
        return c.read_response(method)


# --------------------------------------------------------------------------------------------
# SSE

def sse_events(body):
    """Splits an SSE body into events; returns the list of `data` payloads (str), comments dropped."""
    text = body.decode("utf-8").replace("\r\n", "\n")
    out = []
    for block in text.split("\n\n"):
        data = [ln[5:].lstrip(" ") if ln.startswith("data:") else None for ln in block.split("\n")]
        data = [d for d in data if d is not None]
        if data:
            out.append("\n".join(data))
    return out


def stream_content(events):
    """Concatenates the delta contents of chat (or text of completion) chunks."""
    out = []
    for e in events:
        if e == "[DONE]":
            continue
        obj = json.loads(e)
        for ch in obj.get("choices", []):
            if "delta" in ch:
                out.append(ch["delta"].get("content") or "")
            elif "text" in ch:
                out.append(ch.get("text") or "")
    return "".join(out)


def expected_content(tokens):
    return "".join("tok%d " % i for i in range(tokens))


# --------------------------------------------------------------------------------------------
# bodies and assertions

def chat_body(content="hello", stream=False, model=None, mock=None, **extra):
    b = {"model": model or MODEL, "messages": [{"role": "user", "content": content}]}
    if stream:
        b["stream"] = True
    if mock:
        b["mock"] = mock
    b.update(extra)
    return dumps(b)


def completion_body(prompt="hello", stream=False, model=None, mock=None, **extra):
    b = {"model": model or MODEL, "prompt": prompt}
    if stream:
        b["stream"] = True
    if mock:
        b["mock"] = mock
    b.update(extra)
    return dumps(b)


def embedding_body(inp="hello", model=None, **extra):
    b = {"model": model or MODEL, "input": inp}
    b.update(extra)
    return dumps(b)


class GatewayTestCase(unittest.TestCase):
    maxDiff = 4000

    def assertErrorEnvelope(self, r, status, type_, code, retry_after=False):
        """Exact OpenAI error envelope produced by the gateway itself."""
        self.assertEqual(r.status, status, "status; response: %r" % (r,))
        ct = r.headers.get("content-type", "")
        self.assertTrue(ct.startswith("application/json"), "content-type %r; %r" % (ct, r))
        try:
            obj = json.loads(r.body)
        except ValueError:
            self.fail("error body is not JSON: %r" % (r.body[:300],))
        self.assertEqual(set(obj.keys()), {"error"}, r.body)
        err = obj["error"]
        self.assertEqual(set(err.keys()), {"message", "type", "param", "code"}, r.body)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"], "empty message")
        self.assertEqual(err["type"], type_, r.body)
        if isinstance(code, (set, tuple, list)):
            self.assertIn(err["code"], code, r.body)
        else:
            self.assertEqual(err["code"], code, r.body)
        self.assertIn("x-request-id", r.headers, "X-Request-ID missing on error %r" % (r,))
        if retry_after:
            self.assertIn("retry-after", r.headers, "Retry-After missing: %r" % (r,))
            self.assertRegex(r.headers["retry-after"], r"^\d+$")
            self.assertLessEqual(int(r.headers["retry-after"]), 3600)
        # CONTRACT.md: the envelope is {"error":{"message":"...","type":"...","param":null,"code":"..."}}
        self.assertIsNone(err["param"], "contract envelope has \"param\":null; got %r" % (r.body,))

    def assertSSEHeaders(self, r):
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/event-stream"), r)
        self.assertEqual(r.headers.get("cache-control", "").lower(), "no-cache", r)
        self.assertEqual(r.headers.get("x-accel-buffering", "").lower(), "no", r)
        self.assertIn("x-request-id", r.headers, r)


def run_async(coro, timeout):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def in_thread(fn, *args):
    """Runs fn in a daemon thread; returns (thread, result_holder dict)."""
    holder = {}

    def body():
        try:
            holder["result"] = fn(*args)
        except BaseException as e:  # reported by the test that joins
            holder["error"] = e

    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th, holder


# --------------------------------------------------------------------------------------------
# fixtures

class _Shared:
    gw = None
    mock = None  # the engine behind "mock-model" (None: external gateway without LLMGATE_TEST_MOCK_URL)
    mock_b = None  # the engine behind "b-model" (own fixture only)
    procs = []
    error = None


SHARED = _Shared()
MOCK_DEFAULT_ARGS = ("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 5)


def shared_fixture():
    """The gateway most tests use: two mock engines, no keys, default limits. Started once."""
    S = SHARED
    if S.error:
        raise S.error
    if S.gw:
        return S
    try:
        if CTX.external_url:
            S.gw = ExternalGateway(CTX.external_url)
            S.mock = ExternalMock(CTX.external_mock_url) if CTX.external_mock_url else None
            return S
        S.mock = Mock(*MOCK_DEFAULT_ARGS, name="mock-a")
        S.procs.append(S.mock.proc)
        S.mock_b = Mock(*MOCK_DEFAULT_ARGS, name="mock-b")
        S.procs.append(S.mock_b.proc)
        S.gw = Gateway({"a": (S.mock.url, ["mock-model", "other-model"]),
                        "b": (S.mock_b.url, ["b-model", "other-model", "qwen2.5:7b"])},
                       name="llmgate-shared")
        S.procs.append(S.gw.proc)
        return S
    except BaseException as e:
        S.error = e
        raise


def stop_shared_fixture():
    procs, SHARED.procs = SHARED.procs, []
    stop_all(list(reversed(procs)))


class SharedTest(GatewayTestCase):
    """Tests that run against the shared gateway (or LLMGATE_TEST_URL)."""

    @classmethod
    def setUpClass(cls):
        s = shared_fixture()
        cls.gw, cls.mock, cls.mock_b = s.gw, s.mock, s.mock_b

    def need_mock(self):
        if self.mock is None:
            self.skipTest("needs the mock engine behind the gateway (set LLMGATE_TEST_MOCK_URL)")

    def need_own(self):
        if CTX.external_url:
            self.skipTest("needs the gateway started by the tests")

    def get(self, path, headers=None, timeout=None):
        return request(self.gw.host, self.gw.port, "GET", path, headers=headers, timeout=timeout or t(10))

    def post(self, path, body, headers=None, timeout=None):
        return request(self.gw.host, self.gw.port, "POST", path, body, headers=headers, timeout=timeout or t(10))

    def direct(self, path, body, timeout=None, mock=None):
        m = mock or self.mock
        return request(m.host, m.port, "POST", path, body, timeout=timeout or t(10))

    def raw(self, timeout=None):
        return Raw(self.gw.host, self.gw.port, timeout or t(10))


class OwnTest(SharedTest):
    """Tests that need a specially configured gateway: skipped with LLMGATE_TEST_URL. Subclasses
    implement fixture(cls) and start processes with cls.own_mock / cls.own_gateway."""

    @classmethod
    def setUpClass(cls):
        if CTX.external_url:
            raise unittest.SkipTest("needs a specially configured gateway (LLMGATE_TEST_URL is set)")
        cls.owned = []
        try:
            cls.fixture()
        except BaseException:
            try:
                stop_all(list(reversed(cls.owned)))
            except ProcError:
                pass
            raise

    @classmethod
    def tearDownClass(cls):
        stop_all(list(reversed(cls.owned)))

    @classmethod
    def fixture(cls):
        pass

    @classmethod
    def own_mock(cls, *args, name="mock"):
        m = Mock(*args, name=name)
        cls.owned.append(m.proc)
        return m

    @classmethod
    def own_gateway(cls, *a, **kw):
        # Register the process even when it never becomes healthy, so it is stopped.
        kw_wait = kw.pop("wait", True)
        g = Gateway(*a, wait=False, **kw)
        cls.owned.append(g.proc)
        if kw_wait:
            g.wait_healthy()
        return g
