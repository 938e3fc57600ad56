/* guard.c — see guard.h. */
#include "http/guard.h"

#include "core/errors.h"
#include "core/log.h"
#include "http/framing.h"
#include "http/linger.h"
#include "http/recvhook.h"
#include "http/reply.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h> /* SIOCINQ */
#include <linux/tcp.h>     /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connection's state in one word, so that a phase change and a cut race safely:
 * bits 0-2 phase, bit 3 fresh (no request seen yet), bits 4.. the phase's stamp in ms. */
#define W_PHASE(w) ((enum guard_phase)((w)&7u))
#define W_FRESH(w) (((w) >> 3) & 1u)
#define W_STAMP(w) ((w) >> 4)
#define W_MAKE(p, fresh, ms) (((uint64_t)(ms) << 4) | ((uint64_t)(fresh) << 3) | (uint64_t)(p))

/* Slack when asking the kernel whether bytes came after a stamp: its clock is in jiffies. */
#define PROBE_SLACK_MS 20

struct guard_conn {
    _Atomic uint64_t word;
    int fd;
    uint64_t seq; /* accept order; the list is kept in it (under g->mu) */
    struct guard_conn *prev, *next;
    struct guard *g;
    /* The bytes its client sent, followed by http/framing.c's scanner (in the recv() override,
     * on the connection's thread only), and a refusal held back while a response is being
     * produced (given at G_IDLE). */
    struct framing_scan scan;
    uint64_t answered; /* requests whose response is out (G_IDLE entries) */
    /* Bytes libmicrohttpd has read from it (the recv() override; relaxed, the watchdog and
     * the eviction read it): what the client has shown it sent, for judging it slow. */
    _Atomic uint64_t got;
    _Atomic bool refused;
    /* An answer was given before the client stopped sending (see "lingering close" below):
     * when libmicrohttpd closes, the socket lingers from linger_ms. `waiting`: cut by the
     * guard, on g->waitq until libmicrohttpd closes it (under g->lmu). */
    _Atomic bool linger;
    _Atomic uint64_t linger_ms;
    bool waiting;
    struct guard_conn *wprev, *wnext;
};

struct guard {
    struct guard_limits lim;
    pthread_mutex_t mu; /* the list, n, stop */
    pthread_cond_t cv;
    pthread_t thread;
    struct guard_conn *head;
    uint64_t n;
    bool stop;
    atomic_bool draining; /* guard_drain: a connection going idle is closed */
    atomic_uint_fast64_t header_timeouts, body_timeouts, idle_closed, evicted, refused;
    struct linger_set *linger; /* the lingering closer (http/linger.h) */
    pthread_mutex_t lmu;       /* waitq; taken after mu, never before */
    struct guard_conn *waitq;  /* cut with a reply, libmicrohttpd not yet closing */
    atomic_uint_fast64_t n_wait;
};

/* ---------------------------------------------------------------------------------------- */
/* a half-closed client (shutdown(SHUT_WR) after its request, legal HTTP) is served           */
/*
 * libmicrohttpd 0.9.75 closes a connection the moment a read returns 0, in every state
 * (MHD_connection_handle_read), and it reads once more on every resume (it marks a resumed
 * connection read-ready, and its event-loop state is still the body's "read"): a client that
 * half-closed after its request would lose the response. So while a request is complete and
 * its response is being produced (G_BUSY), an end of file on its socket is held back: the
 * recv() override (http/recvhook.c) reports EAGAIN instead, and notes it. When the response
 * is out (G_IDLE), a noted end of file is given back: shutdown(SHUT_RD) makes the socket
 * readable again, libmicrohttpd reads the 0 and closes. Whether the client really left is the
 * worker's question (worker__client_event). */
static ssize_t guard__scan(void *owner, const void *buf, ssize_t r);

bool guard_init_process(void)
{
    return recvhook_init(guard__scan);
}

/* The hold for c's descriptor as c enters phase p. */
static void guard__hold(struct guard_conn *c, enum guard_phase p)
{
    if (p == G_BUSY)
        recvhook_hold_eof(c->fd);
    else if (recvhook_unhold(c->fd) && p == G_IDLE)
        shutdown(c->fd, SHUT_RD);
}

uint64_t guard_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

enum guard_action guard_due(enum guard_phase p, uint64_t stamp_ms, uint64_t now_ms,
                            const struct guard_limits *l)
{
    uint64_t age = now_ms > stamp_ms ? now_ms - stamp_ms : 0;
    switch (p) {
    case G_IDLE:
        return age >= l->keepalive_ms ? GA_PROBE : GA_NONE;
    case G_HEADER:
        return age >= l->header_ms ? GA_TIMEOUT : GA_NONE;
    case G_BODY:
        return age >= l->body_ms ? GA_TIMEOUT : GA_NONE;
    case G_BUSY:
    case G_CUT:
        break;
    }
    return GA_NONE;
}

/* The kernel's record of what fd received: false if it cannot tell (not TCP). */
static bool guard__tcp_info(int fd, struct tcp_info *ti)
{
    socklen_t len = sizeof(*ti);
    memset(ti, 0, sizeof(*ti));
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) == 0 &&
           len >= offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti->tcpi_bytes_received);
}

/* Whether data came on fd later than `age_ms` ago (the kernel's clock is in jiffies: with
 * some slack). A socket that cannot tell answers false. */
static bool guard__data_within(int fd, uint64_t age_ms)
{
    struct tcp_info ti;
    return guard__tcp_info(fd, &ti) && (uint64_t)ti.tcpi_last_data_recv + PROBE_SLACK_MS < age_ms;
}

/* Whether fd ever received a byte. A socket that cannot tell answers true. */
static bool guard__data_ever(int fd)
{
    struct tcp_info ti;
    return !guard__tcp_info(fd, &ti) || ti.tcpi_bytes_received > 0;
}

/* Writes a whole reply for `e` straight to the socket (best effort: the socket buffer is empty
 * in the phases the guard cuts, so one send takes it). */
static void guard__reply(struct guard *g, int fd, enum lg_err e, const char *message,
                         unsigned retry_after)
{
    char out[1024];
    size_t n = reply_raw(out, sizeof(out), e, message, (uint64_t)retry_after * 1000u);
    if (!n)
        return;
    ssize_t sent = send(fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent; /* a client that cannot take 600 bytes is closed all the same */
    if (g->lim.count_status)
        g->lim.count_status(g->lim.count_arg, err_info(e)->status);
}

static void guard__cut_linger(struct guard *g, struct guard_conn *c);

/* Cuts c if its word is still `seen`. The caller holds g->mu, or is c's own thread (so c->fd
 * is open). With a reply, the close lingers (guard__cut_linger); without, libmicrohttpd's next
 * read on it returns 0 and it closes the connection. */
static bool guard__cut(struct guard *g, struct guard_conn *c, uint64_t seen, enum lg_err reply,
                       const char *message, unsigned retry_after)
{
    if (!atomic_compare_exchange_strong(&c->word, &seen, W_MAKE(G_CUT, 0, W_STAMP(seen))))
        return false;
    if (reply != LGE_NONE) {
        guard__reply(g, c->fd, reply, message, retry_after);
        guard__cut_linger(g, c);
        return true;
    }
    shutdown(c->fd, SHUT_RDWR);
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* framing: what the client sent is checked before libmicrohttpd parses it (http/framing.h)   */

static enum lg_err guard__framing_err(unsigned status)
{
    switch (status) {
    case 413:
        return LGE_TOO_LARGE;
    case 414:
        return LGE_URI_TOO_LONG;
    case 431:
        return LGE_HEADERS_TOO_LARGE;
    case 505:
        return LGE_HTTP_VERSION;
    default:
        return LGE_INVALID_REQUEST;
    }
}

/* The scanner refused what c's client sent: the envelope, then the close (unless the watchdog
 * cut it first). On c's thread, so c->fd is open. */
static void guard__refuse(struct guard_conn *c)
{
    enum lg_err e = guard__framing_err(c->scan.status);
    uint64_t w = atomic_load(&c->word);
    while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, e, c->scan.why, 0))
        w = atomic_load(&c->word);
}

/* recv()'s look at r bytes a client connection's descriptor gave: what libmicrohttpd is to get.
 * A refusal is answered at once, and libmicrohttpd gets the end of file (it closes) -- unless
 * requests received before the refused one are not answered yet (pipelined): then
 * libmicrohttpd gets the bytes up to the refused request, what comes after is dropped, and
 * the refusal is answered when the last of those responses is out (guard_enter G_IDLE).
 * An early answer (401, 413, ... from the headers) is for the request being read, so its
 * refusal is immediate; after an early answer libmicrohttpd reads nothing more from the
 * socket, so no reply can cross it. */
static ssize_t guard__scan(void *owner, const void *buf, ssize_t r)
{
    struct guard_conn *c = owner;
    atomic_fetch_add_explicit(&c->got, (uint64_t)r, memory_order_relaxed);
    if (W_PHASE(atomic_load(&c->word)) == G_CUT)
        return 0; /* cut (its reply written): libmicrohttpd is to close; the bytes are dropped */
    if (atomic_load_explicit(&c->refused, memory_order_relaxed)) {
        errno = EAGAIN;
        return -1;
    }
    if (framing_scan(&c->scan, buf, (size_t)r))
        return r;
    enum guard_phase p = W_PHASE(atomic_load(&c->word));
    if (p == G_CUT)
        return 0;
    if (c->scan.complete > c->answered || p == G_BUSY) {
        atomic_store_explicit(&c->refused, true, memory_order_relaxed);
        if (c->scan.msg_off > 0)
            return (ssize_t)c->scan.msg_off;
        errno = EAGAIN;
        return -1;
    }
    guard__refuse(c);
    return 0;
}

/* The watchdog's look at one connection. Holds g->mu. */
static void guard__check(struct guard *g, struct guard_conn *c, uint64_t now)
{
    uint64_t w = atomic_load(&c->word);
    enum guard_phase p = W_PHASE(w);
    uint64_t age = now > W_STAMP(w) ? now - W_STAMP(w) : 0;
    switch (guard_due(p, W_STAMP(w), now, &g->lim)) {
    case GA_NONE:
        return;
    case GA_PROBE:
        /* Bytes since the keep-alive began: a request line is on its way (libmicrohttpd has
         * not seen all of it, or its phase would have moved). It gets the whole header
         * deadline from now, an upper bound on its first byte's lateness. */
        if (guard__data_within(c->fd, age)) {
            atomic_compare_exchange_strong(&c->word, &w, W_MAKE(G_HEADER, 0, now));
            return;
        }
        if (guard__cut(g, c, w, LGE_NONE, NULL, 0))
            atomic_fetch_add(&g->idle_closed, 1);
        return;
    case GA_TIMEOUT:
        break;
    }
    if (p == G_HEADER) {
        /* A new connection that never sent a byte is closed without a reply, as a keep-alive
         * one would be: there is no request to answer. */
        bool sent = !W_FRESH(w) || guard__data_ever(c->fd);
        if (guard__cut(g, c, w, sent ? LGE_REQUEST_TIMEOUT : LGE_NONE,
                       "the request's headers did not arrive within client_header_timeout_s", 0))
            atomic_fetch_add(&g->header_timeouts, 1);
    } else if (guard__cut(g, c, w, LGE_REQUEST_TIMEOUT,
                          "the request body stalled for client_body_timeout_s", 0)) {
        atomic_fetch_add(&g->body_timeouts, 1);
    }
}

static void guard__wait_tick(struct guard *g, uint64_t now);

static void *guard__run(void *arg)
{
    struct guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)g->lim.tick_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stop)
            break;
        uint64_t now = guard_now_ms();
        for (struct guard_conn *c = g->head; c; c = c->next)
            guard__check(g, c, now);
        pthread_mutex_unlock(&g->mu);
        guard__wait_tick(g, now); /* not under the table's lock: it makes system calls */
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

struct guard *guard_new(const struct guard_limits *l)
{
    struct guard *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->lim = *l;
    if (g->lim.tick_ms == 0) {
        /* a deadline is met within a quarter of the shortest one (and 250 ms) */
        unsigned m = l->header_ms;
        if (l->body_ms < m)
            m = l->body_ms;
        if (l->keepalive_ms < m)
            m = l->keepalive_ms;
        g->lim.tick_ms = m / 4 < 250 ? (m / 4 ? m / 4 : 1) : 250;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->lmu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* a quarter of the table may linger at once (each costs a descriptor, nothing else) */
    g->linger = linger_new(l->max_conns / 4 + 16);
    if (!g->linger || pthread_create(&g->thread, NULL, guard__run, g) != 0) {
        log_error("guard: cannot start its thread: %s", strerror(errno));
        linger_free(g->linger);
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->lmu);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void guard_free(struct guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    while (g->head) { /* none when libmicrohttpd has closed everything; kept safe anyway */
        struct guard_conn *c = g->head;
        g->head = c->next;
        free(c);
    }
    linger_free(g->linger); /* what still lingers is closed */
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->lmu);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Headers that have been arriving this long are a slow client's (a normal client sends them
 * in one packet): the first to make room. */
#define SLOW_HEADER_MS 1000
/* A new connection nothing was read from is not evicted this young: its request may be
 * waiting in the socket for threads busy with a burst of connections. */
#define UNREAD_KEEP_MS 5000

/* Eviction order: slow headers, then idle keep-alive connections, then headers that are only
 * late; oldest first within each. Connections in a body or busy with a request are kept.
 * Slow is judged by what the client sent, not by how long the gateway took to read it: a new
 * connection from which libmicrohttpd has read nothing yet is only late (its request may sit
 * unread in the socket while the threads are busy with a burst of connections: measured, of
 * 10,000 clients opening at once against 8,192 slots, 712 that had sent their whole request
 * got 408 within seconds); one that sent part of its headers a second ago and no more is
 * slow. A kept-alive connection in G_HEADER has sent its request line (that is how it got
 * there). */
static int guard__rank(const struct guard_conn *c, uint64_t w, uint64_t now)
{
    uint64_t age = now > W_STAMP(w) ? now - W_STAMP(w) : 0;
    switch (W_PHASE(w)) {
    case G_HEADER:
        if (!W_FRESH(w) || atomic_load_explicit(&c->got, memory_order_relaxed) > 0)
            return age >= SLOW_HEADER_MS ? 0 : 2;
        /* nothing read yet: kept while the gateway may just be behind (a newcomer is
         * refused instead), then taken as a connection that sent nothing */
        return age >= UNREAD_KEEP_MS ? 2 : -1;
    case G_IDLE:
        return 1;
    default:
        return -1;
    }
}

/* The connection to close for a newcomer when the table is full, or NULL. The list is newest
 * first, so among equal stamps the last seen is the oldest. Holds g->mu. */
static struct guard_conn *guard__victim(struct guard *g, struct guard_conn *except, uint64_t *seen)
{
    struct guard_conn *best = NULL;
    uint64_t best_w = 0, now = guard_now_ms();
    int best_rank = 3;
    for (struct guard_conn *c = g->head; c; c = c->next) {
        uint64_t w = atomic_load(&c->word);
        int rank = guard__rank(c, w, now);
        if (c == except || rank < 0)
            continue;
        if (rank < best_rank || (rank == best_rank && W_STAMP(w) <= W_STAMP(best_w)))
            best = c, best_w = w, best_rank = rank;
    }
    *seen = best_w;
    return best;
}

static void guard__close_linger(struct guard *g, struct guard_conn *c);

struct guard_conn *guard_open(struct guard *g, int fd, uint64_t accepted_ms, uint64_t seq)
{
    struct guard_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    uint64_t now = guard_now_ms();
    c->fd = fd;
    c->g = g;
    framing_scan_init(&c->scan);
    c->seq = seq ? seq : UINT64_MAX;
    atomic_init(&c->word,
                W_MAKE(G_HEADER, 1, accepted_ms && accepted_ms <= now ? accepted_ms : now));
    pthread_mutex_lock(&g->mu);
    /* newest first: in front of every connection accepted earlier (nearly always the head) */
    struct guard_conn *after = NULL, *at = g->head;
    while (at && at->seq > c->seq)
        after = at, at = at->next;
    c->prev = after;
    c->next = at;
    if (at)
        at->prev = c;
    if (after)
        after->next = c;
    else
        g->head = c;
    g->n++;
    /* over the limit: make room (a victim's phase may move under us; then pick again) */
    while (g->n - atomic_load(&g->n_wait) > g->lim.max_conns) { /* cut ones are leaving */
        uint64_t seen;
        struct guard_conn *v = guard__victim(g, c, &seen);
        if (!v) {
            if (guard__cut(g, c, atomic_load(&c->word), LGE_OVERLOADED,
                           "every connection slot of the gateway is busy with a request", 1))
                atomic_fetch_add(&g->refused, 1);
            break;
        }
        bool header = W_PHASE(seen) == G_HEADER;
        bool sent = header && (!W_FRESH(seen) || guard__data_ever(v->fd));
        if (guard__cut(g, v, seen, sent ? LGE_REQUEST_TIMEOUT : LGE_NONE,
                       "the connection table is full and this request's headers were the slowest",
                       0)) {
            atomic_fetch_add(&g->evicted, 1);
            break; /* its close takes it out of n */
        }
    }
    pthread_mutex_unlock(&g->mu);
    recvhook_attach(fd, c);
    return c;
}

void guard_drain(struct guard *g)
{
    /* The flag first: a connection going idle from now on sees it and closes itself; one that
     * went idle before is in G_IDLE for the sweep below (both are sequentially consistent, and
     * guard__cut lets one of the two win). */
    atomic_store(&g->draining, true);
    pthread_mutex_lock(&g->mu);
    for (struct guard_conn *c = g->head; c; c = c->next) {
        uint64_t w = atomic_load(&c->word);
        int unread = 0;
        if (W_PHASE(w) != G_IDLE || (ioctl(c->fd, SIOCINQ, &unread) == 0 && unread > 0))
            continue; /* its next request is arriving: answered, with Connection: close */
        if (guard__cut(g, c, w, LGE_NONE, NULL, 0))
            atomic_fetch_add(&g->idle_closed, 1);
    }
    pthread_mutex_unlock(&g->mu);
}

void guard_close(struct guard *g, struct guard_conn *c)
{
    if (!c)
        return;
    guard__close_linger(g, c);
    pthread_mutex_lock(&g->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        g->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g->n--;
    pthread_mutex_unlock(&g->mu);
    recvhook_detach(c->fd);
    free(c);
}

bool guard_enter(struct guard_conn *c, enum guard_phase p)
{
    if (!c)
        return true;
    uint64_t now = guard_now_ms();
    uint64_t w = atomic_load_explicit(&c->word, memory_order_relaxed);
    do {
        if (W_PHASE(w) == G_CUT)
            return false;
    } while (!atomic_compare_exchange_weak(&c->word, &w, W_MAKE(p, 0, now)));
    guard__hold(c, p);
    if (p == G_IDLE && atomic_load(&c->g->draining)) {
        /* draining: the response is out, the connection closes (on its own thread: c->fd is
         * open) */
        w = atomic_load(&c->word);
        while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, LGE_NONE, NULL, 0))
            w = atomic_load(&c->word);
        return false;
    }
    if (p == G_IDLE && ++c->answered >= c->scan.complete &&
        atomic_load_explicit(&c->refused, memory_order_relaxed))
        guard__refuse(c); /* a pipelined request refused while earlier ones were served */
    return true;
}

void guard_request_line(struct guard_conn *c)
{
    if (!c)
        return;
    uint64_t now = guard_now_ms();
    uint64_t w = atomic_load_explicit(&c->word, memory_order_relaxed), nw;
    do {
        if (W_PHASE(w) == G_IDLE)
            nw = W_MAKE(G_HEADER, 0, now);
        else if (W_PHASE(w) == G_HEADER && W_FRESH(w))
            nw = W_MAKE(G_HEADER, 0, W_STAMP(w)); /* its deadline still runs from accept */
        else
            return;
    } while (!atomic_compare_exchange_weak(&c->word, &w, nw));
}

bool guard_touch(struct guard_conn *c)
{
    return guard_enter(c, G_BODY);
}

uint64_t guard_conn_id(const struct guard_conn *c)
{
    return c && c->seq != UINT64_MAX ? c->seq : 0;
}

enum guard_phase guard_phase_of(const struct guard_conn *c)
{
    return c ? W_PHASE(atomic_load(&((struct guard_conn *)c)->word)) : G_BUSY;
}

void guard_get_stats(struct guard *g, struct guard_stats *out)
{
    pthread_mutex_lock(&g->mu);
    out->open = g->n;
    pthread_mutex_unlock(&g->mu);
    out->header_timeouts = atomic_load(&g->header_timeouts);
    out->body_timeouts = atomic_load(&g->body_timeouts);
    out->idle_closed = atomic_load(&g->idle_closed);
    out->evicted = atomic_load(&g->evicted);
    out->refused = atomic_load(&g->refused);
}

/* ---------------------------------------------------------------------------------------- */
/* lingering close: an answer given before the client stopped sending (http/linger.h)        */
/*
 * Two ways an answer comes before the body's end. (1) libmicrohttpd sends it (an early answer
 * queued from the headers, guard_linger), then closes the connection itself. (2) The guard
 * writes it (a 408, a 503 for a newcomer, a framing refusal, guard_refuse in the middle of a
 * body): then only the write side is shut, and the recv() above gives libmicrohttpd an end of
 * file at its next read, so that it closes. A client that sends nothing more gives
 * libmicrohttpd no read: after LINGER_IDLE_MS of silence the read side is shut too, which
 * libmicrohttpd sees at once (the silence was the lingering's whole idle time already).
 * Either way, when libmicrohttpd closes (guard_close, before its close(2)), a duplicate of the
 * descriptor goes to the lingering closer, which drains and closes it; libmicrohttpd's close
 * then releases only its own number (a new connection may get it at once: the duplicate has
 * another number, and is in none of the tables above). */

static void guard__cut_linger(struct guard *g, struct guard_conn *c)
{
    atomic_store(&c->linger_ms, guard_now_ms());
    atomic_store(&c->linger, true);
    shutdown(c->fd, SHUT_WR);
    pthread_mutex_lock(&g->lmu);
    c->waiting = true;
    c->wprev = NULL;
    c->wnext = g->waitq;
    if (g->waitq)
        g->waitq->wprev = c;
    g->waitq = c;
    atomic_fetch_add(&g->n_wait, 1);
    pthread_mutex_unlock(&g->lmu);
}

static void guard__unwait(struct guard *g, struct guard_conn *c)
{
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        g->waitq = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    c->waiting = false;
    atomic_fetch_sub(&g->n_wait, 1);
}

/* The watchdog's look at the cut connections libmicrohttpd has not closed yet. */
static void guard__wait_tick(struct guard *g, uint64_t now)
{
    pthread_mutex_lock(&g->lmu);
    struct guard_conn *c = g->waitq;
    while (c) {
        struct guard_conn *next = c->wnext;
        uint64_t at = atomic_load(&c->linger_ms);
        if (now > at && now - at >= LINGER_IDLE_MS) {
            /* silent all along: nothing to drain; libmicrohttpd reads the end of file now */
            atomic_store(&c->linger, false);
            guard__unwait(g, c);
            shutdown(c->fd, SHUT_RD); /* fd open: guard_close takes lmu first */
        }
        c = next;
    }
    pthread_mutex_unlock(&g->lmu);
}

/* At libmicrohttpd's close of c (its descriptor still open): the lingering, if c is due one. */
static void guard__close_linger(struct guard *g, struct guard_conn *c)
{
    pthread_mutex_lock(&g->lmu);
    if (c->waiting)
        guard__unwait(g, c);
    pthread_mutex_unlock(&g->lmu);
    if (!atomic_exchange(&c->linger, false) || c->fd < 0)
        return;
    int d = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (d >= 0)
        linger_take(g->linger, d, atomic_load(&c->linger_ms));
}

void guard_linger(struct guard_conn *c)
{
    if (!c)
        return;
    atomic_store(&c->linger_ms, guard_now_ms());
    atomic_store(&c->linger, true);
}

bool guard_refuse(struct guard_conn *c, enum lg_err e, const char *message, unsigned retry_after)
{
    if (!c)
        return false;
    uint64_t w = atomic_load(&c->word);
    while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, e, message, retry_after))
        w = atomic_load(&c->word);
    return false;
}

void guard_linger_stats(struct guard *g, uint64_t *lingering, uint64_t *lingered)
{
    struct linger_stats ls;
    linger_get_stats(g->linger, &ls);
    *lingering = ls.lingering;
    *lingered = ls.taken;
}
