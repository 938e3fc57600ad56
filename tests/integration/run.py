#!/usr/bin/env python3
"""Integration tests of llmgate: the real binaries on loopback against the bundled mock engine.

    python3 tests/integration/run.py --build build [--sanitizer] [-k PATTERN] [--keep-logs] [-v]

Starts build/mockllm and build/llmgate on free loopback ports with configs written into a temp
dir, runs every test module below, prints the last 50 lines of each involved log on a failure,
and ends with `integration: N passed, N failed` (exit status 1 on any failure).

LLMGATE_TEST_URL=http://HOST:PORT runs the tests that need no specially configured gateway
against an already running one (others are skipped); LLMGATE_TEST_MOCK_URL optionally names the
mockllm behind it (for the tests that read its /mock/stats); LLMGATE_TEST_MODEL overrides
the model id used (default mock-model).
"""

import argparse
import faulthandler
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import CTX  # noqa: E402

MODULES = [
    "test_config",
    "test_endpoints",
    "test_errors",
    "test_auth",
    "test_front",
    "test_bodybound",
    "test_framing",
    "test_upstream",
    "test_faults",
    "test_connections",
    "test_backpressure",
    "test_limits",
    "test_keylimits",
    "test_reload",
    "test_disconnect",
    "test_park",
    "test_load",
    "test_shutdown",
]


class Result(unittest.TextTestResult):
    """Counts passes, prints the involved processes' logs on each failure."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = 0
        self.window_start = time.monotonic()

    def startTest(self, test):
        self.t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self.showAll:
            self.stream.writeln("    (%.2fs)" % (time.monotonic() - self.t0))
        self.window_start = time.monotonic()

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1

    def _dump_logs(self, test):
        now = time.monotonic()
        procs = [p for p in CTX.procs if p.started <= now and (p.stopped is None or p.stopped >= self.window_start - 0.5)]
        out = self.stream
        out.writeln("")
        out.writeln("FAILED: %s" % test)
        for p in procs:
            out.writeln("----- last 50 lines of %s (%s) -----" % (p.name, p.log_path))
            out.writeln(p.tail(50))
        out.writeln("----- end of logs -----")
        out.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump_logs(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump_logs(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._dump_logs(subtest)


def stop_everything():
    for p in CTX.procs:
        try:
            if p.running():
                p.kill()
        except Exception:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--sanitizer", action="store_true")
    ap.add_argument("-k", dest="pattern", action="append", default=[])
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--timeout", type=float, default=0, help="whole-run watchdog, seconds")
    args = ap.parse_args()

    CTX.build = os.path.abspath(args.build)
    CTX.sanitizer = args.sanitizer
    CTX.scale = 3.0 if args.sanitizer else 1.0
    CTX.external_url = os.environ.get("LLMGATE_TEST_URL") or None
    CTX.external_mock_url = os.environ.get("LLMGATE_TEST_MOCK_URL") or None
    if os.environ.get("LLMGATE_TEST_MODEL"):
        harness.MODEL = os.environ["LLMGATE_TEST_MODEL"]
    CTX.tmp = tempfile.mkdtemp(prefix="llmgate-it-")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    if not CTX.external_url:
        for b in ("llmgate", "mockllm"):
            if not os.access(os.path.join(CTX.build, b), os.X_OK):
                print("integration: missing %s/%s (build it first)" % (CTX.build, b))
                print("integration: 0 passed, 1 failed")
                return 1

    # Whole-run watchdog: every wait is bounded, but a bug in a test must not hang CI.
    budget = args.timeout or (720 if args.sanitizer else 360)

    def watchdog():
        sys.stderr.write("integration: watchdog: run exceeded %ds; stacks:\n" % budget)
        faulthandler.dump_traceback(all_threads=True)
        for p in CTX.procs:
            sys.stderr.write("----- last 50 lines of %s (%s) -----\n%s\n" % (p.name, p.log_path, p.tail(50)))
        stop_everything()
        sys.stderr.write("integration: 0 passed, 1 failed\n")
        os._exit(1)

    wd = threading.Timer(budget, watchdog)
    wd.daemon = True
    wd.start()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))

    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p for p in args.pattern]
    suite = unittest.TestSuite()
    for name in MODULES:
        suite.addTests(loader.loadTestsFromName(name))

    extra_failures = []
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2 if args.verbose else 1,
                                     resultclass=Result, buffer=False)
    result = None
    try:
        result = runner.run(suite)
    finally:
        try:
            harness.stop_shared_fixture()
        except harness.ProcError as e:
            extra_failures.append("shared fixture shutdown: %s" % e)
        for p in CTX.procs:  # anything a test forgot (should be none)
            if p.running():
                problems = p.stop(check=False)
                extra_failures.append("%s was still running at the end%s" % (p.name, ": " + "; ".join(problems) if problems else ""))
        for p in CTX.procs:
            hits = p.sanitizer_hits()
            if hits:
                extra_failures.append("sanitizer report in %s (%s): %s" % (p.name, p.log_path, ", ".join(hits)))
        wd.cancel()

    for f in extra_failures:
        print("FAIL: %s" % f)
    for p in CTX.procs:
        if any(p.name in f for f in extra_failures):
            print("----- last 50 lines of %s (%s) -----\n%s" % (p.name, p.log_path, p.tail(50)))
    # A test counts once however many of its subtests failed.
    failed_ids = {str(getattr(test, "test_case", test)) for test, _ in result.failures + result.errors}
    failed = len(failed_ids) + len(result.unexpectedSuccesses) + len(set(extra_failures))
    passed = result.passed
    skipped = len(result.skipped)
    if failed or args.keep_logs:
        print("integration: logs kept in %s" % CTX.tmp)
    else:
        shutil.rmtree(CTX.tmp, ignore_errors=True)
    print("integration: %d skipped, %.1fs" % (skipped, time.monotonic() - t0))
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
