/* llmgate — OpenAI-compatible inference gateway. Entry point: options, configuration,
 * start-up, signal handling and graceful shutdown. */
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "http/guard.h"
#include "http/server.h"
#include "inference/reload.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: llmgate [--config FILE] [--check-config] [--dump-config] [--version] [--help]\n"
            "\n"
            "  --config FILE    configuration file (default ./config.ini)\n"
            "  --check-config   validate the configuration, print FILE:LINE: message per problem,\n"
            "                   exit 0 when valid, 1 otherwise\n"
            "  --dump-config    print the effective configuration (file + LLMGATE_* environment)\n"
            "  --version        print the version\n"
            "\n"
            "Environment: LLMGATE_<SECTION>_<KEY> overrides [section] key, e.g.\n"
            "  LLMGATE_SERVER_LISTEN=0.0.0.0:8080 LLMGATE_LIMITS_MAX_INFLIGHT=100\n"
            "  LLMGATE_BACKEND_<NAME>_URL=... for an existing [backend.NAME].\n"
            "Signals: SIGTERM/SIGINT: /ready answers 503 for timeouts.drain_grace_s while\n"
            "  requests are served, then the port closes and open requests may finish\n"
            "  (timeouts.drain_s); a second SIGTERM/SIGINT ends the drain at once; exit 0.\n"
            "  SIGHUP reloads the file (a bad one is refused, the running configuration stays).\n");
}

/* Raises the descriptor limit: each proxied stream costs two (client + engine). */
static void raise_nofile(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t need = (rlim_t)want * 2 + 64;
    rlim_t target = rl.rlim_max == RLIM_INFINITY || need < rl.rlim_max ? need : rl.rlim_max;
    if (target > rl.rlim_cur) {
        rl.rlim_cur = target;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need)
        log_warn("RLIMIT_NOFILE is %llu: fewer than max_connections=%u streams can be held",
                 (unsigned long long)rl.rlim_cur, want);
}

/* Waits until `ms` passed, or also until the pool has no active jobs when `pool` is given; a
 * signal in `set` is taken meanwhile (`set` NULL: none): SIGTERM or SIGINT ends the wait and
 * returns true (the operator asks for the end now), others are logged and ignored. */
static bool wait_drain(struct pool *pool, unsigned ms, const sigset_t *set)
{
    uint64_t until = clock_now_ns() + (uint64_t)ms * NS_PER_MS;
    struct pool_stats st;
    for (;;) {
        if (pool) {
            pool_get_stats(pool, &st);
            if (st.active == 0)
                return false;
        }
        uint64_t now = clock_now_ns();
        if (now >= until)
            return false;
        uint64_t left = until - now < 10 * NS_PER_MS ? until - now : 10 * NS_PER_MS;
        struct timespec tick = {.tv_nsec = (long)left};
        int sig = set ? sigtimedwait(set, NULL, &tick) : -1;
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("signal %s again: ending the drain now", sig == SIGTERM ? "TERM" : "INT");
            return true;
        }
        if (sig > 0)
            log_info("signal %d while draining: ignored", sig);
        else if (!set)
            nanosleep(&tick, NULL);
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);

    /* Every thread started from here on inherits the blocked set: only sigwait sees them.
     * Set first thing, so that no signal in the list can kill a gateway still starting. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* What operators' tools send (systemctl reload, logrotate): taken by sigwait too, so they
     * never kill the process or cut a stream. SIGHUP reloads; SIGUSR1 (log reopening, the
     * observability work) and SIGUSR2 are logged and ignored. */
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    const char *path = "config.ini";
    bool check = false, dump = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
        } else if (!strcmp(argv[i], "--check-config")) {
            check = true;
        } else if (!strcmp(argv[i], "--dump-config")) {
            dump = true;
        } else if (!strcmp(argv[i], "--version")) {
            printf("llmgate %s\n", LLMGATE_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "llmgate: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        config_errors_release(&errs);
        return 1;
    }
    if (check) {
        printf("%s: ok (%zu backend%s, %zu key%s)\n", path, cfg->n_backends,
               cfg->n_backends == 1 ? "" : "s", cfg->n_keys, cfg->n_keys == 1 ? "" : "s");
        config_free(cfg);
        return 0;
    }
    if (dump) {
        config_dump(cfg, stdout);
        config_free(cfg);
        return 0;
    }

    enum log_level lv = LOG_INFO;
    log_parse_level(cfg->log_level, &lv);
    log_set_level(lv);
    raise_nofile(cfg->max_connections);
    /* before the first thread (curl's resolver, the workers, libmicrohttpd's): they all call
     * the recv() override, which reads the tables this creates */
    if (!guard_init_process()) {
        log_error("cannot start: out of memory");
        config_free(cfg);
        return 1;
    }

    int rc = 1;
    struct pool *pool = NULL;
    struct server *srv = NULL;
    struct reloader *reloader = NULL;
    struct snap *pinned = NULL; /* start-up's reference to snapshot 1 */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("curl_global_init failed");
        goto out;
    }
    pool = pool_new(cfg);
    if (!pool) {
        log_error("cannot start the inference workers");
        goto out;
    }
    reloader = reloader_new(pool, server_prepare);
    if (!reloader) {
        log_error("cannot start the reloader");
        goto out;
    }
    /* the configuration becomes generation 1; from here it belongs to its snapshot, which a
     * reload may free as soon as a client can ask for one (once server_new accepts): start-up
     * reads it through a reference of its own, dropped when the start-up log line is out */
    struct snap *first = pool_prepare(pool, cfg);
    cfg = NULL;
    if (!first || server_prepare(first) != 0) {
        snap_put(first);
        log_error("cannot start: out of memory");
        goto out;
    }
    reloader_adopt(reloader, first); /* freed off the event threads, like a reload's */
    snap_ref(first);
    pinned = first;
    pool_publish(pool, first);
    if (pool_start(pool) != 0) {
        log_error("cannot start the inference workers");
        goto out;
    }
    const struct config *boot = pinned->cfg;
    srv = server_new(boot, pool, reloader);
    if (!srv)
        goto out;
    log_info("llmgate %s listening on %s (%u http threads, %u workers, %zu backends, auth %s)",
             LLMGATE_VERSION, boot->listen, boot->threads, boot->workers, boot->n_backends,
             boot->auth ? "on" : "off");
    snap_put(pinned);
    pinned = NULL;

    /* Wait for a signal; meanwhile, when the gateway went idle after work, give freed memory
     * back to the system (glibc keeps it in its arenas otherwise). */
    int sig = -1;
    uint64_t trimmed_at = 0;
    struct timespec tick = {.tv_sec = 2};
    while (sig < 0) {
        sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            log_info("signal HUP: reloading");
            struct reload_result res; /* logged by the reloader; a bad file changes nothing */
            reloader_run(reloader, &res);
            reload_result_release(&res);
            sig = -1;
            continue;
        }
        if (sig == SIGUSR1 || sig == SIGUSR2) {
            log_info("signal %s: nothing to do yet (log reopening is not implemented); ignored",
                     sig == SIGUSR1 ? "USR1" : "USR2");
            sig = -1;
            continue;
        }
        struct pool_stats st;
        pool_get_stats(pool, &st);
        if (sig < 0 && st.active == 0 && st.started != trimmed_at) {
            malloc_trim(0);
            trimmed_at = st.started;
        }
    }
    struct snap *live = pool_snap(pool);
    unsigned drain_s = live ? live->cfg->drain_s : 10;
    unsigned grace_s = live ? live->cfg->drain_grace_s : 0;
    snap_put(live);
    /* 1. grace: /ready says 503 while everything is served, so that a balancer's health check
     * takes the instance out before its listening socket closes */
    bool now = false;
    if (grace_s > 0) {
        log_info("signal %s: /ready answers 503, serving on for %u s (drain_grace_s)",
                 sig == SIGTERM ? "TERM" : "INT", grace_s);
        server_grace(srv);
        now = wait_drain(NULL, grace_s * 1000u, &set);
    }
    /* 2. drain: the listening socket closes, idle keep-alive connections too, replies carry
     * Connection: close; open requests may finish within drain_s. A second TERM or INT ends
     * either wait at once. */
    log_info("signal %s: draining (up to %u s)", sig == SIGTERM ? "TERM" : "INT", drain_s);
    reloader_stop(reloader); /* no reload while draining; one waiting is answered first */
    server_quiesce(srv);
    pool_drain(pool);
    if (!now)
        (void)wait_drain(pool, drain_s * 1000u, &set); /* a second signal: abort now */
    pool_abort_all(pool);
    wait_drain(pool, 2000, NULL);
    /* 3. no worker may touch a connection once libmicrohttpd has freed it, nor leave one
     * suspended (stopping the daemon then is an API violation, a panic in 0.9.75): the workers
     * end what they hold and are joined first. One stuck in a call cannot be waited for
     * forever: then the process ends without freeing what that worker may still use. */
    if (pool_join(pool, 5000) != 0) {
        log_error("a worker did not stop within 5 s of the drain's end: exiting at once");
        _exit(1);
    }
    /* let resumed connections flush their last bytes */
    for (int i = 0; i < 50 && server_connections(srv) > 0; i++)
        usleep(10000);
    rc = 0;
out:
    snap_put(pinned);
    if (reloader)
        reloader_stop(reloader); /* a start that failed half-way */
    server_free(srv);
    pool_free(pool);
    reloader_free(reloader); /* after the last snapshot it adopted */
    curl_global_cleanup();
    config_free(cfg);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
