"""Upstream connections the gateway does not control: an engine (a Python HTTP/1.1 server, not
mockllm) that closes idle keep-alive connections after 0.2 s, reached by a host name (the
resolver path) and by address. Requests before and after every close must all succeed: the
gateway keeps idle upstream sockets registered between requests and must notice their close."""

import http.server
import json
import re
import socket
import threading
import time

from harness import HOST, OwnTest, chat_body, free_port, raw_exchange, request, t

CHAT = "/v1/chat/completions"
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "py-model",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop"}]}).encode()


class Engine(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 0.2  # idle keep-alive connections are closed after this
    served = 0
    conns = set()

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.reply(b'{"object":"list","data":[]}')

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Engine.conns.add(self.client_address)
        Engine.served += 1
        self.reply(BODY)

    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TestIdleUpstreamClosed(OwnTest):
    @classmethod
    def fixture(cls):
        cls.srv = http.server.ThreadingHTTPServer((HOST, 0), Engine)
        cls.srv.daemon_threads = True
        threading.Thread(target=cls.srv.serve_forever, daemon=True).start()
        port = cls.srv.server_address[1]
        cls.gw = cls.own_gateway({"byname": ("http://localhost:%d" % port, ["py-model"]),
                                  "byaddr": ("http://%s:%d" % (HOST, port), ["py-addr"])},
                                 name="llmgate-upstream")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.srv.shutdown()
        cls.srv.server_close()

    def test_requests_across_idle_closes(self):
        Engine.served = 0
        Engine.conns = set()
        for rnd in range(6):
            for model in ("py-model", "py-addr"):
                for _ in range(3):  # back to back: the connection is reused
                    r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("x", model=model), timeout=t(5))
                    self.assertEqual(r.status, 200, (rnd, model, r))
                    self.assertEqual(r.body, BODY)
            time.sleep(0.35)  # the engine closes every idle connection meanwhile
        self.assertEqual(Engine.served, 36)
        # fresh connections after each close (by port), so the closes really happened
        self.assertGreaterEqual(len(Engine.conns), 6)
        # concurrent requests after the closes
        results = []

        def one(i):
            results.append(raw_exchange(HOST, self.gw.port, "POST", CHAT,
                                        chat_body("c%d" % i, model="py-addr"), timeout=t(10)).status)
        ths = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        self.assertEqual(results, [200] * 20)


class TestBrokenHead(OwnTest):
    """An engine that closes the connection inside its response head: 502 bad_gateway (curl
    reports such a transfer as a success), counted as an upstream error."""

    @classmethod
    def fixture(cls):
        cls.srv = socket.socket()
        cls.srv.bind((HOST, 0))
        cls.srv.listen(16)
        cls.srv.settimeout(0.2)
        cls.stop = threading.Event()

        def serve():
            while not cls.stop.is_set():
                try:
                    c, _ = cls.srv.accept()
                except OSError:
                    continue
                with c:
                    c.settimeout(2)
                    try:
                        req = c.recv(65536)
                        if req.startswith(b"GET"):  # health probe
                            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                        else:
                            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: appli")
                    except OSError:
                        pass
        cls.th = threading.Thread(target=serve, daemon=True)
        cls.th.start()
        cls.gw = cls.own_gateway({"half": ("http://%s:%d" % (HOST, cls.srv.getsockname()[1]), ["half-model"])},
                                 name="llmgate-brokenhead")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.stop.set()
        cls.th.join(2)
        cls.srv.close()

    def upstream_errors(self):
        m = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        return int(re.search(r"^llmgate_upstream_errors_total (\d+)$", m, re.M).group(1))

    def test_502(self):
        before = self.upstream_errors()
        for stream in (False, True):
            r = raw_exchange(HOST, self.gw.port, "POST", CHAT, chat_body("x", model="half-model", stream=stream),
                             timeout=t(5))
            self.assertErrorEnvelope(r, 502, "upstream_error", "bad_gateway")
        self.assertEqual(self.upstream_errors(), before + 2)


class TestProbesIgnoreProxy(OwnTest):
    """The gateway's environment names a proxy (http_proxy, https_proxy, all_proxy) on a port
    nobody listens on. Engines are reached directly by real transfers and by the health probes
    alike: the probes (every 100 ms) keep the backend up, and requests are served."""

    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0, "--tokens", 2)
        dead = "http://%s:%d" % (HOST, free_port())
        cls.gw = cls.own_gateway(
            {"m": (cls.mock.url, ["mock-model"])}, extra=[("health", {"interval_ms": 100})],
            env={"http_proxy": dead, "https_proxy": dead, "all_proxy": dead, "no_proxy": ""},
            name="llmgate-proxyenv")

    def up(self):
        body = request(HOST, self.gw.port, "GET", "/metrics", timeout=t(5)).body.decode()
        m = re.search(r'^llmgate_backend_up\{backend="m"\} (\d+)$', body, re.M)
        return m and int(m.group(1))

    def test_probes_keep_the_backend_up(self):
        self.gw.proc.wait_log(r"backend m is up", t(10))
        time.sleep(0.5)  # several rounds of probes
        self.assertEqual(self.up(), 1)
        self.assertNotRegex(self.gw.proc.log_text(), r"backend m is down")
        r = request(HOST, self.gw.port, "POST", CHAT, chat_body("via no proxy"), timeout=t(10))
        self.assertEqual(r.status, 200, r)
