"""1,000 concurrent streams through one gateway, every byte checked."""

import asyncio
import threading
import time

from harness import CTX, HOST, OwnTest, build_request, chat_body, request, sse_events, t

N_STREAMS = 1000
VARIANTS = 10
TOKENS = 20


async def fetch_stream(host, port, body, timeout):
    """One POST over a fresh connection; returns (status, headers dict, decoded body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(build_request("POST", "/v1/chat/completions", "%s:%d" % (host, port), body))
        await writer.drain()

        async def read():
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ")[1])
            headers = {}
            for line in head[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            parts = []
            if "chunked" in headers.get("transfer-encoding", ""):
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    parts.append((await reader.readexactly(size + 2))[:-2])
            elif "content-length" in headers:
                parts.append(await reader.readexactly(int(headers["content-length"])))
            else:
                parts.append(await reader.read())
            return status, headers, b"".join(parts)

        return await asyncio.wait_for(read(), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


class TestThousandStreams(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 20, "--tokens", TOKENS, "--threads", 4, name="mock-load")
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"], N_STREAMS + 24)},
                                 server={"threads": 2, "workers": 2},
                                 limits={"max_inflight": N_STREAMS + 24, "queue_capacity": 1024, "queue_timeout_ms": 60000},
                                 name="llmgate-load")

    def test_1000_concurrent_streams(self):
        # ttft 1 s keeps every stream open at the same time while the clients connect.
        mock = {"ttft_ms": int(t(1000)), "itl_ms": 20, "tokens": TOKENS}
        bodies = [chat_body("load variant %d" % v, stream=True, mock=mock) for v in range(VARIANTS)]
        expected = []
        for b in bodies:
            r = request(self.mock.host, self.mock.port, "POST", "/v1/chat/completions", b, timeout=t(10))
            self.assertEqual(r.status, 200)
            self.assertEqual(len(sse_events(r.body)), TOKENS + 2)
            expected.append(r.body)
        self.mock.reset()

        peak = {"active": 0}
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    peak["active"] = max(peak["active"], self.mock.stats()["active"])
                except Exception:
                    pass
                stop.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        per_stream = t(60)

        async def main():
            tasks = [fetch_stream(HOST, self.gw.port, bodies[i % VARIANTS], per_stream) for i in range(N_STREAMS)]
            return await asyncio.gather(*tasks, return_exceptions=True)

        t0 = time.monotonic()
        try:
            results = asyncio.run(asyncio.wait_for(main(), t(90)))
        finally:
            stop.set()
            poller.join(5)
        took = time.monotonic() - t0

        problems = {}
        for i, res in enumerate(results):
            if isinstance(res, BaseException):
                key = "exception %s" % type(res).__name__
            else:
                status, headers, body = res
                if status != 200:
                    key = "status %d %s" % (status, body[:120])
                elif body != expected[i % VARIANTS]:
                    ev = sse_events(body) if body else []
                    key = "body differs (%d events, %d bytes vs %d)" % (len(ev), len(body), len(expected[i % VARIANTS]))
                else:
                    continue
            problems.setdefault(key, []).append(i)
        summary = "; ".join("%s: %d streams (e.g. #%d)" % (k, len(v), v[0]) for k, v in problems.items())
        ok = N_STREAMS - sum(len(v) for v in problems.values())
        print("\n    load: %d/%d streams byte-exact in %.1fs, peak %d concurrent at the engine"
              % (ok, N_STREAMS, took, peak["active"]), end=" ")
        self.assertFalse(problems, summary)
        s = self.mock.wait_stats(lambda s: s["active"] == 0, t(10), "active == 0")
        self.assertEqual(s["completed"], N_STREAMS, s)
        self.assertEqual(s["aborted"], 0, s)
        # They ran side by side, not one slot at a time.
        self.assertGreaterEqual(peak["active"], N_STREAMS // 2 if not CTX.sanitizer else N_STREAMS // 5,
                                "peak concurrency at the engine")
        r = request(HOST, self.gw.port, "GET", "/healthz", timeout=t(5))
        self.assertEqual(r.status, 200)
