"""A slow client pauses the upstream transfer: the gateway's memory stays bounded while the
engine produces far more than any buffer holds, and every byte still arrives once the client
reads again."""

import time

from harness import OwnTest, Raw, chat_body, sse_events, t

CHAT = "/v1/chat/completions"
TOKENS = 100000  # ~15 MB of SSE: far beyond the stream buffer and the kernel's socket buffers


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class TestSlowClient(OwnTest):
    @classmethod
    def fixture(cls):
        cls.mock = cls.own_mock("--ttft-ms", 0, "--itl-ms", 0)
        cls.gw = cls.own_gateway({"m": (cls.mock.url, ["mock-model"])},
                                 server={"stream_buffer_bytes": 16384}, name="llmgate-slow")

    def test_pause_bounds_memory(self):
        body = chat_body("slow reader", stream=True, mock={"tokens": TOKENS, "itl_ms": 0})
        c = Raw(self.gw.host, self.gw.port, t(60))
        try:
            c.send_request("POST", CHAT, body)
            r = c.read_head()
            self.assertEqual(r.status, 200)
            time.sleep(0.3)
            before = rss_kib(self.gw.proc.pid)
            time.sleep(t(2.0))  # not reading: the engine must be paused, not buffered
            after = rss_kib(self.gw.proc.pid)
            s = self.mock.stats()
            self.assertEqual(s["active"], 1, "the engine finished while the client read nothing: "
                             "the gateway buffered the whole stream (%s)" % s)
            self.assertLess(after - before, 12 * 1024,
                            "gateway RSS grew %d KiB while the client was not reading" % (after - before))
            data = b"".join(piece for _, piece in c.iter_body(r))
            self.assertTrue(r.complete)
        finally:
            c.close()
        events = sse_events(data)
        self.assertEqual(len(events), TOKENS + 2)
        self.assertEqual(events[-1], "[DONE]")
        self.assertIn('"content":"tok%d "' % (TOKENS - 1), events[-3])
        s = self.mock.wait_stats(lambda s: s["active"] == 0, t(5), "active == 0")
        self.assertEqual(s["aborted"], 0)
