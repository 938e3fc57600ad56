# llmgate — build, run, test, bench.
#
#   make          build build/llmgate, build/mockllm, build/ttftbench, build/jscan_bench,
#                 build/guard_bench
#   make run      install deps, build, serve on 127.0.0.1:8080 backed by mockllm
#   make test     install deps, build, format + lint checks, every suite (unit, jscan-diff,
#                 fuzz-smoke, integration, ASan/UBSan, TSan, openai e2e)
#   make fuzz     every libFuzzer target for FUZZ_SECONDS (default 60) each
#   make bench    short version of every benchmark (issue 3)
#
# O=<dir> selects the build directory; SAN=1 builds with AddressSanitizer + UBSan, SAN=thread
# with ThreadSanitizer. CFLAGS / LDFLAGS / LDLIBS on the command line are added to what the
# project needs (make CFLAGS="-O0 -g3" keeps the include and pkg-config flags).

SHELL   := /bin/bash
CC      ?= cc
O       ?= build
SAN     ?= 0
PKGS    := libmicrohttpd libcurl json-c liburcu-cds liburcu-bp inih libcrypto

# what only the benchmarks use (scripts/bench/restart_balancer.sh: a balancer in front)
BENCH_PKGS := haproxy
DEB_PKGS := build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libjson-c-dev \
            liburcu-dev libinih-dev check libsubunit-dev python3 curl wrk nginx-light \
            clang-format clang-tidy cppcheck clang libclang-rt-14-dev valgrind strace
BENCH_DEB_PKGS := gnuplot-nox $(BENCH_PKGS)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
VERSION := 0.1.0
# CFLAGS / LDFLAGS / LDLIBS are the builder's (a distro's or a sanitizer build's: `make
# CFLAGS=...` replaces the default, never what the project needs); REQ_* is what the project
# needs, always there; ALL_* is what the rules use.
CFLAGS  ?= -O2 -g
REQ_CFLAGS := -DLLMGATE_VERSION=\"$(VERSION)\" -std=c11 -D_GNU_SOURCE $(WARN) -pthread -MMD -MP -I. \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
REQ_LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
SAN_CFLAGS  :=
SAN_LDFLAGS :=
ifeq ($(SAN),1)
SAN_CFLAGS  := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=address,undefined
endif
# SAN=thread: ThreadSanitizer; core/tsan.h turns its annotations on by itself (what liburcu, built
# without TSan, guarantees); liburcu, libcurl and libmicrohttpd themselves are not instrumented.
ifeq ($(SAN),thread)
SAN_CFLAGS  := -O1 -fsanitize=thread -fno-omit-frame-pointer
SAN_LDFLAGS := -fsanitize=thread
endif
ALL_CFLAGS  = $(REQ_CFLAGS) $(CFLAGS) $(SAN_CFLAGS)
ALL_LDFLAGS = $(LDFLAGS) $(SAN_LDFLAGS)
ALL_LDLIBS  = $(REQ_LDLIBS) $(LDLIBS)

CORE_SRC  := $(wildcard core/*.c)
HTTP_SRC  := $(wildcard http/*.c)
INF_SRC   := $(wildcard inference/*.c)
LIB_SRC   := $(CORE_SRC) $(HTTP_SRC) $(INF_SRC)
LIB_OBJ   := $(LIB_SRC:%.c=$(O)/%.o)
MOCK_SRC  := $(wildcard cmd/mockllm/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/%)

BINS := $(O)/llmgate $(O)/mockllm $(O)/ttftbench $(O)/jscan_bench $(O)/guard_bench

.PHONY: all deps bench-deps run test unit integration asan tsan e2e bench lint format check-format clean \
        jscan-diff fuzz fuzz-smoke
all: $(BINS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/libllmgate.a: $(LIB_OBJ)
	@rm -f $@
	@echo "  AR      $@"
	@ar rcs $@ $^

$(O)/llmgate: $(O)/cmd/llmgate.o $(O)/libllmgate.a
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/mockllm: $(MOCK_SRC:%.c=$(O)/%.o)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/ttftbench: $(O)/bench/ttftbench.o
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/jscan_bench: $(O)/bench/jscan_bench.o $(O)/libllmgate.a
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/guard_bench: $(O)/bench/guard_bench.o $(O)/libllmgate.a
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/tests/%: tests/unit/%.c $(O)/libllmgate.a
	@mkdir -p $(dir $@)
	@echo "  CC/LD   $@"
	@$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(O)/libllmgate.a $(ALL_LDLIBS) $(shell pkg-config --libs check)

# --- jscan: differential test against Python's json (tests/jscan), fuzzing (tests/fuzz) -------
# jscan_cli_swar is the same driver with the portable (non-SSE2) string scan compiled in.
$(O)/tests/jscan_cli: $(O)/tests/jscan/jscan_cli.o $(O)/libllmgate.a
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(O)/tests/jscan_cli_swar: tests/jscan/jscan_cli.c core/jscan.c core/jscan.h
	@mkdir -p $(dir $@)
	@echo "  CC/LD   $@"
	@$(CC) $(filter-out -MMD -MP,$(ALL_CFLAGS)) -DJSCAN_PORTABLE $(ALL_LDFLAGS) -o $@ tests/jscan/jscan_cli.c core/jscan.c

jscan-diff: $(O)/tests/jscan_cli $(O)/tests/jscan_cli_swar
	@python3 tests/jscan/diff.py $(O)/tests/jscan_cli $(O)/tests/jscan_cli_swar

# libFuzzer targets: every tests/fuzz/fuzz_NAME.c, built with clang and ASan + UBSan, seeded
# from tests/fuzz/corpus/NAME (new inputs go to $(O)/fuzz/work/NAME, crashes to
# $(O)/fuzz/artifacts/), with tests/fuzz/NAME.dict when present. FUZZ_DEPS_fuzz_NAME lists the
# other sources a target needs; FUZZ_PKGS_fuzz_NAME the pkg-config packages it compiles and
# links against besides json-c (which every target gets); FUZZ_ARGS adds libFuzzer options
# (e.g. -jobs=2 -workers=2); FUZZ_TARGETS=NAME... runs only those (default: all).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_ARGS    ?=
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(O)/fuzz/fuzz_%)
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE $(WARN) -I. -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_DEPS_fuzz_jscan  := core/jscan.c tests/fuzz/jscan_portable.c
FUZZ_DEPS_fuzz_sse    := core/sse.c
FUZZ_DEPS_fuzz_config := core/config.c core/config_rows.c core/config_keys.c core/config_dump.c \
                         core/log.c core/siphash.c
FUZZ_PKGS_fuzz_config := inih libcrypto
FUZZ_DEPS_fuzz_escape := core/esc.c core/errors.c core/buf.c
FUZZ_DEPS_fuzz_framing := http/framing.c
FUZZ_DEPS_fuzz_usage  := inference/usage.c core/buf.c
FUZZ_DEPS_fuzz_usage_strip := inference/usage.c core/buf.c
FUZZ_DEPS_fuzz_reqid  := http/request.c core/jscan.c
FUZZ_PKGS_fuzz_reqid  := libcurl liburcu-cds # inference/job.h, included by http/request.h

FUZZ_PREREQ := $(wildcard core/*.[ch] http/*.[ch] inference/*.[ch] tests/fuzz/*.[ch])

$(O)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_PREREQ)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(shell pkg-config --cflags json-c $(FUZZ_PKGS_$(notdir $@))) \
	  -o $@ $< $(FUZZ_DEPS_$(notdir $@)) $(shell pkg-config --libs json-c $(FUZZ_PKGS_$(notdir $@)))

fuzz: $(FUZZ_BIN)
	@for bin in $(FUZZ_BIN); do name=$$(basename $$bin); name=$${name#fuzz_}; \
	  work=$(O)/fuzz/work/$$name; art=$(O)/fuzz/artifacts/; mkdir -p $$work $$art; \
	  dict=tests/fuzz/$$name.dict; [ -f $$dict ] && dict=-dict=$$dict || dict=; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	  $$bin -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$$art $$dict \
	    $(FUZZ_ARGS) $$work tests/fuzz/corpus/$$name 2>$(O)/fuzz/$$name.log; rc=$$?; \
	  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' \
	    $(O)/fuzz/$$name.log | sed "s/^/  $$name /"; \
	  if [ $$rc -ne 0 ]; then tail -40 $(O)/fuzz/$$name.log; echo "fuzz: 0 passed, 1 failed ($$name)"; exit 1; fi; \
	done; echo "fuzz: $(words $(FUZZ_BIN)) passed, 0 failed ($(FUZZ_SECONDS) s each)"

# The bounded run in `make test` uses a fixed seed, so that CI replays the same inputs each time
# (a regression check over the committed corpora and their neighbourhood); `make fuzz` explores.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20 FUZZ_ARGS="-seed=1 $(FUZZ_ARGS)"

# --- dependencies: Debian packages only; installs what is missing ---------------------------
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

config.ini:
	cp config.ini.example config.ini

# --- run: gateway on 127.0.0.1:8080 backed by the bundled mock engine ------------------------
run: deps
	$(MAKE) all
	scripts/run.sh

# --- tests ------------------------------------------------------------------------------------
unit: $(UNIT_BIN)
	@scripts/run_unit.sh $(UNIT_BIN)

integration: all
	python3 tests/integration/run.py --build $(O)

asan:
	$(MAKE) O=build-asan SAN=1 all $(patsubst $(O)/%,build-asan/%,$(UNIT_BIN))
	# sanitized code runs several times slower: Check's 4 s per test would cut the tests that
	# load 20,000 keys (test_key_index, test_many_keys take 4-6 s under ASan here)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  CK_TIMEOUT_MULTIPLIER=5 $(MAKE) O=build-asan SAN=1 unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(MAKE) O=build-asan SAN=1 jscan-diff
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  python3 tests/integration/run.py --build build-asan --sanitizer

# ThreadSanitizer: the gateway and the mock engine built with -fsanitize=thread (clang; liburcu,
# libcurl and libmicrohttpd are not instrumented: core/tsan.h tells TSan what liburcu
# guarantees), then every integration test against them. A report makes the run fail twice
# over: the harness finds "WARNING: ThreadSanitizer" in the process's log, and TSan's exit code
# (66) is not the clean 0 expected at SIGTERM. TSAN_OPTIONS can be overridden (e.g.
# halt_on_error=1 to stop at the first report).
TSAN_CC      ?= clang
TSAN_OPTIONS ?= exitcode=66 second_deadlock_stack=1 history_size=4
tsan:
	$(MAKE) O=build-tsan SAN=thread CC=$(TSAN_CC) all
	TSAN_OPTIONS="$(TSAN_OPTIONS)" python3 tests/integration/run.py --build build-tsan --sanitizer

e2e: all
	tests/e2e/run.sh $(O)

TEST_LOG := $(O)/test.log
test: deps
	@mkdir -p $(O); : > $(TEST_LOG)
	set -o pipefail; $(MAKE) all 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) check-format lint 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) unit 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) jscan-diff 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) fuzz-smoke 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) integration 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) asan 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) tsan 2>&1 | tee -a $(TEST_LOG)
	set -o pipefail; $(MAKE) e2e 2>&1 | tee -a $(TEST_LOG)
	@scripts/summary.sh $(TEST_LOG)

# Exit 3 from all.sh means compare.sh refused to report because the machine was too noisy:
# every table is still printed, so make succeeds with a warning.
# the benchmarks' own tools beyond DEB_PKGS (gnuplot draws backpressure.sh's figures)
bench-deps:
	@missing=""; for p in $(BENCH_DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "bench-deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "bench-deps: all present"; fi

bench: all bench-deps
	@scripts/bench/all.sh --short; rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "bench: compare refused (machine too noisy); other tables above"; \
	else exit $$rc; fi

lint:
	clang-tidy --quiet $(LIB_SRC) cmd/llmgate.c -- $(filter-out -MMD -MP,$(ALL_CFLAGS))
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --suppress=missingIncludeSystem --inline-suppr -D_GNU_SOURCE -DLLMGATE_VERSION='"x"' -I. \
	  $(LIB_SRC) cmd/llmgate.c cmd/mockllm bench

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan

-include $(shell find $(O) -name '*.d' 2>/dev/null)
