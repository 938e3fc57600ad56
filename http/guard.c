/* guard.c — see guard.h. */
#include "http/guard.h"

#include "core/errors.h"
#include "core/log.h"
#include "http/guard_int.h"
#include "http/linger.h"
#include "http/recvhook.h"

#include <errno.h>
#include <linux/sockios.h> /* SIOCINQ */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

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

/* Cuts c if its word is still `seen`. The caller holds g->mu, or is c's own thread (so c->fd
 * is open). With a reply, the close lingers (guard__cut_linger); without, libmicrohttpd's next
 * read on it returns 0 and it closes the connection. */
bool guard__cut(struct guard *g, struct guard_conn *c, uint64_t seen, enum lg_err reply,
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
