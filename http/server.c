/* server.c — see server.h: the daemon's lifecycle (listening socket, libmicrohttpd's options
 * and callbacks, the acceptor's hand-over with its stamps, quiesce and stop). */
#include "http/server.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "http/accept.h"
#include "http/guard.h"
#include "http/peers.h"
#include "http/server_int.h"
#include "inference/router.h"
#include "inference/worker.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static void http__count_status(void *arg, unsigned status)
{
    http__count(arg, status);
}

/* ---------------------------------------------------------------------------------------- */
/* lifecycle                                                                                  */

/* libmicrohttpd's own messages are mostly about clients that went away: debug level. */
static void http__mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (log_enabled(LOG_DEBUG))
        log_vwrite(LOG_DEBUG, fmt, ap);
}

/* The listening socket, made here rather than by libmicrohttpd so that a port in use is an
 * error with its reason: libmicrohttpd's MHD_OPTION_LISTENING_ADDRESS_REUSE would set
 * SO_REUSEPORT and silently share the port with another process. SO_REUSEADDR only allows
 * binding over connections in TIME_WAIT (a restart), never a second listener. */
static int http__listen(const struct config *cfg, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0) {
        log_error("listen %s: socket: %s", cfg->listen, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        log_error("listen %s: setsockopt: %s", cfg->listen, strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = errno;
        log_error("cannot listen on %s: %s%s", cfg->listen, strerror(e),
                  e == EADDRINUSE ? " (another process, perhaps another llmgate, has the port)"
                                  : "");
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        log_error("cannot listen on %s: %s", cfg->listen, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The acceptor's hand-over. libmicrohttpd queues the connection for one of its threads (woken
 * through its ITC) and closes the socket itself when it cannot take it. */
static void http__add_connection(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
    struct server *s = arg;
    if ((size_t)fd < s->n_stamps) {
        /* ordered before the reader by libmicrohttpd's new-connection mutex */
        atomic_store_explicit(&s->stamps[fd].ms, guard_now_ms(), memory_order_relaxed);
        atomic_store_explicit(&s->stamps[fd].seq, ++s->accept_seq, memory_order_relaxed);
    }
    if (s->peers && !peers_enter(s->peers, sa)) {
        /* a readable answer, not libmicrohttpd's silent close */
        atomic_fetch_add_explicit(&s->per_ip_refused, 1, memory_order_relaxed);
        guard_refuse_fd(s->guard, fd, LGE_RATE_LIMITED,
                        "too many connections from this address ([server] max_connections_per_ip)",
                        1);
        return;
    }
    if (MHD_add_connection(s->daemon, fd, sa, len) != MHD_YES) {
        log_debug("a new connection was refused: %s", strerror(errno));
        if (s->peers)
            peers_leave(s->peers, sa); /* libmicrohttpd closed it: no close notification */
    }
}

struct server *server_new(const struct config *cfg, struct pool *pool, struct reloader *reloader)
{
    struct server *s = calloc(1, sizeof(*s));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->admin_lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->pool = pool;
    s->reloader = reloader;
    s->limits = pool_limits(pool);
    s->started_wall = clock_wall_s();
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (gai != 0) {
        log_error("listen %s: %s", cfg->listen, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    int lfd = http__listen(cfg, ai);
    freeaddrinfo(ai);
    if (lfd < 0)
        goto fail;
    struct guard_limits gl = {.header_ms = cfg->client_header_timeout_s * 1000u,
                              .body_ms = cfg->client_body_timeout_s * 1000u,
                              .body_total_ms = cfg->client_body_deadline_s * 1000u,
                              .keepalive_ms = cfg->keepalive_timeout_s * 1000u,
                              .max_conns = cfg->max_connections,
                              .count_status = http__count_status,
                              .count_arg = s,
                              .park_when = router_waiting(pool_router(pool))};
    s->guard = guard_new(&gl);
    if (cfg->max_connections_per_ip && !(s->peers = peers_new(cfg->max_connections_per_ip))) {
        close(lfd);
        goto fail;
    }
    struct rlimit rl;
    s->n_stamps = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                      ? (size_t)rl.rlim_cur
                      : 65536;
    if (s->n_stamps > (1u << 22))
        s->n_stamps = 1u << 22; /* a descriptor above it is stamped when registered */
    s->stamps = calloc(s->n_stamps, sizeof(*s->stamps));
    if (!s->guard || !s->stamps) {
        close(lfd);
        goto fail;
    }
    /* libmicrohttpd's own limit sits above max_connections, so that a new connection reaches
     * the guard, which makes room for it (libmicrohttpd splits its limit between its threads
     * and would refuse silently). Its inactivity timeout is left as a backstop after the
     * guard's deadlines and client_send_timeout_s (which cuts a client that takes nothing of
     * a response still streaming from its engine); it is what ends a response whose transfer
     * already finished (the rest held by libmicrohttpd) and whose client takes no byte. */
    unsigned mhd_limit = cfg->max_connections + cfg->max_connections / 4 + 64 * cfg->threads;
    unsigned backstop = cfg->client_header_timeout_s;
    if (cfg->client_body_timeout_s > backstop)
        backstop = cfg->client_body_timeout_s;
    if (cfg->keepalive_timeout_s > backstop)
        backstop = cfg->keepalive_timeout_s;
    /* a parked request (guard.h) waits in libmicrohttpd's read state, where this timeout
     * runs: up to request_s (its queue wait and its engine's first byte), checked per request
     * (http/access.c), so that a reload to a longer request_s falls back to suspending */
    if (cfg->request_s > backstop && cfg->request_s <= 3600)
        backstop = cfg->request_s;
    backstop += 5;
    s->backstop_s = backstop;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, http__access, s, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)cfg->threads, MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, backstop, MHD_OPTION_NOTIFY_COMPLETED, http__completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, http__notify, s, MHD_OPTION_URI_LOG_CALLBACK, http__uri_log,
        s, MHD_OPTION_EXTERNAL_LOGGER, http__mhd_log, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (!s->daemon) {
        close(lfd);
        log_error("cannot start the HTTP server on %s", cfg->listen);
        goto fail;
    }
    s->acceptor = acceptor_start(lfd, http__add_connection, s);
    if (!s->acceptor) {
        close(lfd);
        log_error("cannot start accepting on %s", cfg->listen);
        goto fail;
    }
    return s;
fail:
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    guard_free(s->guard);
    peers_free(s->peers);
    free(s->stamps);
    pthread_mutex_destroy(&s->admin_lock);
    free(s);
    return NULL;
}

void server_grace(struct server *s)
{
    int serving = SRV_SERVING;
    atomic_compare_exchange_strong(&s->phase, &serving, SRV_GRACE);
}

void server_quiesce(struct server *s)
{
    acceptor_stop(s->acceptor); /* closes the listening socket: new connections are refused */
    atomic_store(&s->phase, SRV_DRAINING); /* before the guard's sweep: see guard_drain */
    guard_drain(s->guard);
}

unsigned server_connections(struct server *s)
{
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    acceptor_free(s->acceptor); /* first: nothing is handed to a stopping daemon */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    guard_free(s->guard); /* after libmicrohttpd: every connection is closed */
    peers_free(s->peers);
    http__admin_free(s);
    free(s->stamps);
    pthread_mutex_destroy(&s->admin_lock);
    free(s);
}
