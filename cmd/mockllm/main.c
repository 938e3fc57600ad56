/*
 * mockllm — a small, fast OpenAI-compatible mock inference engine (tests, demo, benchmarks).
 *
 * Usage:
 *   mockllm [--listen HOST:PORT] [--threads N] [--models a,b,c] [--ttft-ms N] [--itl-ms N]
 *           [--tokens N] [--embedding-dim N] [--fail-status CODE] [--fail-rate F]
 *           [--fail-after-ms N] [--close-after N] [--hang] [--accept-delay-ms N] [--quiet] [--help]
 *
 *   --listen HOST:PORT    default 127.0.0.1:8000; port 0 = ephemeral. When ready, prints exactly
 *                         one line to stderr: "mockllm listening on HOST:PORT" (the real port).
 *   --threads N           event-loop threads (default 1), each with its own epoll loop and its
 *                         own SO_REUSEPORT listening socket on the same port (the kernel spreads
 *                         connections over them).
 *   --models a,b,c        ids listed by GET /v1/models (default mock-model). Any model id in a
 *                         request is accepted and echoed back.
 *   --ttft-ms N           delay before the first body byte: before the first SSE event of a
 *                         stream (its headers go out at once), before the whole non-stream
 *                         response (chat, completions, embeddings). Default 0.
 *   --itl-ms N            delay between consecutive SSE events (default 0).
 *   --tokens N            content tokens per completion (default 16; token i is "tok<i> ").
 *   --embedding-dim N     embedding vector length (default 32; a request's "dimensions" wins).
 *   --fail-status CODE    (400..599) answer every inference request with CODE and the body
 *                         {"error":{"message":"mock failure","type":"mock_error","param":null,
 *                         "code":"mock_failure"}}.
 *   --fail-rate F         (0..1) fail only this fraction of inference requests (with
 *                         --fail-status, default 500). Failures are answered at once (no ttft).
 *   --fail-after-ms N     answer the failures of --fail-status / --fail-rate / mock.status after
 *                         N ms instead (an engine that takes its time, then errors; default 0).
 *   --close-after N       streams: after N events close the TCP connection abruptly (no [DONE],
 *                         no terminating chunk). Counted as aborted in /mock/stats.
 *   --hang                read requests and never answer (every path except /mock/...); the
 *                         connection stays open until the client goes.
 *   --accept-delay-ms N   wait N ms before each accept() (a timer, the loop keeps serving).
 *   --quiet               no diagnostics besides the listening line.
 *   Invalid flags: usage on stderr, exit 2. SIGINT/SIGTERM: close and free everything, exit 0.
 *   RLIMIT_NOFILE's soft limit is raised to the hard limit at start.
 *
 * Per-request overrides, in the JSON body of an inference request:
 *   "mock": {"ttft_ms":N, "itl_ms":N, "tokens":N, "status":N, "close_after":N, "hang":true}
 *   status 400..599 fails the request with that status; status 200 forces success (overrides
 *   --fail-*). Without mock.tokens, an integer "max_completion_tokens" or "max_tokens" sets the
 *   token count exactly. Tokens are capped at 100000, delays at one hour.
 *
 * Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings (inference: counted,
 * delayed, failed); GET /v1/models, /v1/models/{id}, /health; GET /mock/stats, POST /mock/reset
 * (never delayed or failed). Streams: one HTTP chunk per SSE event: T content events, a final
 * event with finish_reason "stop", a usage event if stream_options.include_usage, "[DONE]";
 * event k goes out at ttft + k*itl. Response ids are "chatcmpl-"/"cmpl-" + 16 hex digits of the
 * FNV-1a hash of the request body, "created" is always 1700000000: the same request gives
 * byte-identical responses. Prompt tokens are counted as ceil(bytes/4) of the prompt text.
 *
 * /mock/stats: requests (inference requests received), active (waiting for ttft, streaming or
 * hanging), completed (answered completely, errors included), aborted (the client went away
 * first, or --close-after cut the stream), connections (open now), accepted (total).
 * POST /mock/reset zeroes requests, completed, aborted and accepted.
 */
#include "cmd/mockllm/mock.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Flags: one table drives parsing and the usage text.
 */

enum opt_type { OPT_INT, OPT_RATE, OPT_BOOL, OPT_LISTEN, OPT_MODELS, OPT_HELP };

struct opt {
    const char *name;
    int type;
    size_t off; /* OPT_INT, OPT_BOOL: offset of the int in struct mock_config */
    long lo, hi;
    const char *arg;
    const char *help;
};

#define CFG(f) offsetof(struct mock_config, f)

static const struct opt opts[] = {
    {"listen", OPT_LISTEN, 0, 0, 0, "HOST:PORT", "listen address (default 127.0.0.1:8000)"},
    {"threads", OPT_INT, CFG(threads), 1, 256, "N", "event-loop threads (default 1)"},
    {"models", OPT_MODELS, 0, 0, 0, "a,b,c", "model ids for /v1/models (default mock-model)"},
    {"ttft-ms", OPT_INT, CFG(ttft_ms), 0, MOCK_MAX_DELAY_MS, "N", "time to first token"},
    {"itl-ms", OPT_INT, CFG(itl_ms), 0, MOCK_MAX_DELAY_MS, "N", "delay between stream events"},
    {"tokens", OPT_INT, CFG(tokens), 0, MOCK_MAX_TOKENS, "N", "content tokens (default 16)"},
    {"embedding-dim", OPT_INT, CFG(embedding_dim), 1, 65536, "N", "embedding size (default 32)"},
    {"fail-status", OPT_INT, CFG(fail_status), 400, 599, "CODE", "fail inference requests"},
    {"fail-rate", OPT_RATE, 0, 0, 0, "F", "fraction of requests to fail (0..1)"},
    {"fail-after-ms", OPT_INT, CFG(fail_after_ms), 0, MOCK_MAX_DELAY_MS, "N",
     "answer failures after N ms"},
    {"close-after", OPT_INT, CFG(close_after), 0, 1000000000, "N",
     "close streams abruptly after N events"},
    {"hang", OPT_BOOL, CFG(hang), 0, 0, NULL, "read requests and never answer"},
    {"accept-delay-ms", OPT_INT, CFG(accept_delay_ms), 0, MOCK_MAX_DELAY_MS, "N",
     "delay before each accept()"},
    {"quiet", OPT_BOOL, CFG(quiet), 0, 0, NULL, "no diagnostics besides the listening line"},
    {"help", OPT_HELP, 0, 0, 0, NULL, "this text"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mockllm [options]\n");
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-26s %s\n", left, opts[i].help);
    }
    fprintf(f, "Per-request overrides: \"mock\":{\"ttft_ms\":N,\"itl_ms\":N,\"tokens\":N,"
               "\"status\":N,\"close_after\":N,\"hang\":true} in the JSON body.\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_listen(const char *s, struct mock_config *cfg)
{
    const char *colon = strrchr(s, ':');
    long port;
    if (!colon || parse_long(colon + 1, 0, 65535, &port) < 0)
        return -1;
    size_t n = (size_t)(colon - s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(cfg->host))
        return -1;
    memcpy(cfg->host, s, n);
    cfg->host[n] = 0;
    cfg->port = (int)port;
    return 0;
}

static void free_models(struct mock_config *cfg)
{
    for (size_t i = 0; i < cfg->n_models; i++)
        free(cfg->models[i]);
    free(cfg->models);
    cfg->models = NULL;
    cfg->n_models = 0;
}

static int parse_models(const char *s, struct mock_config *cfg)
{
    free_models(cfg);
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    cfg->models = calloc(n, sizeof(char *));
    if (!cfg->models)
        return -1;
    for (const char *p = s;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0) {
            char *m = strndup(p, len);
            if (!m)
                return -1;
            cfg->models[cfg->n_models++] = m;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return cfg->n_models ? 0 : -1;
}

/* Returns 0 to run, 1 after --help, -1 on a bad flag (reported). */
static int parse_args(int argc, char **argv, struct mock_config *cfg)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "mockllm: unexpected argument '%s'\n", a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const struct opt *o = NULL;
        for (size_t j = 0; j < sizeof(opts) / sizeof(opts[0]); j++)
            if (strlen(opts[j].name) == nl && strncmp(opts[j].name, a, nl) == 0)
                o = &opts[j];
        if (!o) {
            fprintf(stderr, "mockllm: unknown flag '%s'\n", argv[i]);
            return -1;
        }
        if (o->type == OPT_HELP)
            return 1;
        if (o->type == OPT_BOOL) {
            if (eq) {
                fprintf(stderr, "mockllm: --%s takes no value\n", o->name);
                return -1;
            }
            *(int *)((char *)cfg + o->off) = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            fprintf(stderr, "mockllm: --%s needs a value\n", o->name);
            return -1;
        }
        int bad = 0;
        long l;
        switch (o->type) {
        case OPT_INT:
            bad = parse_long(v, o->lo, o->hi, &l) < 0;
            if (!bad)
                *(int *)((char *)cfg + o->off) = (int)l;
            break;
        case OPT_RATE: {
            char *end;
            double d = strtod(v, &end);
            bad = end == v || *end || !(d >= 0.0 && d <= 1.0);
            if (!bad)
                cfg->fail_rate = d;
            break;
        }
        case OPT_LISTEN:
            bad = parse_listen(v, cfg) < 0;
            break;
        case OPT_MODELS:
            bad = parse_models(v, cfg) < 0;
            break;
        }
        if (bad) {
            fprintf(stderr, "mockllm: bad value '%s' for --%s\n", v, o->name);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Sockets
 */

/* Binds a non-blocking listening socket to cfg's host and `port` (SO_REUSEPORT if `shared`). */
static int listen_on(const struct mock_config *cfg, int port, int shared)
{
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(cfg->host, ports, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "mockllm: %s: %s\n", cfg->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (shared)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 65535) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        fprintf(stderr, "mockllm: cannot listen on %s:%d: %s\n", cfg->host, port, strerror(errno));
    freeaddrinfo(ai);
    return fd;
}

/* Writes "HOST:PORT" of a bound socket (IPv6 in brackets). Returns the port or -1. */
static int bound_name(int fd, char *out, size_t n)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    snprintf(out, n, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
    long port;
    return parse_long(serv, 0, 65535, &port) < 0 ? -1 : (int)port;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct mock_config cfg = {
        .threads = 1,
        .tokens = 16,
        .embedding_dim = 32,
        .fail_rate = -1,
        .close_after = -1,
        .port = 8000,
    };
    memcpy(cfg.host, "127.0.0.1", sizeof("127.0.0.1"));
    int rc = 1, nworkers = 0;
    struct worker **workers = NULL;
    struct mock_stats stats = {0};

    int pa = parse_args(argc, argv, &cfg);
    if (pa != 0) {
        usage(pa > 0 ? stdout : stderr);
        free_models(&cfg);
        return pa > 0 ? 0 : 2;
    }
    if (!cfg.n_models && parse_models("mock-model", &cfg) < 0)
        goto out;
    raise_nofile();

    /* SIGINT/SIGTERM are taken by sigwait below; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    stats.n = cfg.threads;
    stats.shard = aligned_alloc(64, sizeof(*stats.shard) * (size_t)cfg.threads);
    workers = calloc((size_t)cfg.threads, sizeof(*workers));
    if (!stats.shard || !workers)
        goto out;
    memset(stats.shard, 0, sizeof(*stats.shard) * (size_t)cfg.threads);

    /* One thread: a plain socket. Several: SO_REUSEPORT sockets on one port, after claiming
     * the port with a plain bind, so that a port already in use (even by another SO_REUSEPORT
     * process of ours, say a stale mockllm) fails instead of silently splitting its traffic. */
    char name[NI_MAXHOST + 16] = "";
    int port = cfg.port, shared = cfg.threads > 1;
    if (shared) {
        int probe = listen_on(&cfg, port, 0);
        if (probe < 0)
            goto out;
        port = bound_name(probe, name, sizeof(name));
        close(probe);
        if (port < 0)
            goto out;
    }
    for (int i = 0; i < cfg.threads; i++) {
        int lfd = listen_on(&cfg, port, shared);
        if (lfd < 0)
            goto out;
        if (i == 0 && (port = bound_name(lfd, name, sizeof(name))) < 0) {
            close(lfd);
            goto out;
        }
        workers[i] = worker_new(&cfg, &stats, i, lfd);
        if (!workers[i]) {
            close(lfd);
            goto out;
        }
        nworkers++;
    }
    for (int i = 0; i < nworkers; i++)
        if (worker_start(workers[i]) < 0)
            goto out;
    fprintf(stderr, "mockllm listening on %s\n", name);
    fflush(stderr);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    rc = 0;
out:
    for (int i = 0; i < nworkers; i++)
        worker_stop(workers[i]);
    for (int i = 0; i < nworkers; i++)
        worker_free(workers[i]);
    if (rc == 0 && !cfg.quiet) {
        uint64_t req = 0, done = 0, ab = 0;
        for (int i = 0; i < stats.n; i++) {
            req += atomic_load(&stats.shard[i].requests);
            done += atomic_load(&stats.shard[i].completed);
            ab += atomic_load(&stats.shard[i].aborted);
        }
        fprintf(stderr, "mockllm: stopped (requests %llu, completed %llu, aborted %llu)\n",
                (unsigned long long)req, (unsigned long long)done, (unsigned long long)ab);
    }
    free(workers);
    free(stats.shard);
    free_models(&cfg);
    return rc;
}
