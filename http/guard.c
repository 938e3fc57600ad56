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

/* Cuts c if its word is still `seen`. The caller has c claimed, or is c's own thread (so c->fd
 * is open), and never holds g->mu (the reply and the shutdown are system calls). With a reply,
 * the close lingers (guard__cut_linger); without, libmicrohttpd's next read on it returns 0 and
 * it closes the connection. A cut connection counts no more against max_connections. */
bool guard__cut(struct guard *g, struct guard_conn *c, uint64_t seen, enum lg_err reply,
                const char *message, unsigned retry_after)
{
    if (!atomic_compare_exchange_strong(&c->word, &seen, W_MAKE(G_CUT, 0, W_STAMP(seen))))
        return false;
    atomic_fetch_add(&g->n_cut, 1);
    if (reply != LGE_NONE) {
        guard__reply(g, c->fd, reply, message, retry_after);
        guard__cut_linger(g, c);
        return true;
    }
    shutdown(c->fd, SHUT_RDWR);
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* the queues (under g->mu)                                                                   */
/*
 * Every connection the guard may act on waits in the queue of what it is doing (guard_int.h),
 * placed by the stamp its deadline runs from, so the watchdog and the eviction look only at
 * heads (nginx's reusable-connection queue, with a queue per phase). A phase change re-places
 * its connection (one lock, at the tail nearly always); a body read re-places it at most every
 * touch_ms, so the body queue's order, and the body deadline, are exact within touch_ms. A
 * connection is placed from behind, never more than PLACE_WALK places before the tail: stamps
 * arrive nearly in order (a new connection's first bytes may be read a little after a later
 * one's), and a crafted order costs a deadline a little lateness, never a walk of the table. */
#define PLACE_WALK 64

static bool guard__before(const struct guard_conn *a, uint64_t key, uint64_t seq)
{
    return a->key < key || (a->key == key && a->seq <= seq);
}

static void guard__unlink(struct guard *g, struct guard_conn *c)
{
    if (c->q == Q_NONE)
        return;
    struct guard_list *l = &g->qs[c->q];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    l->n--;
    c->prev = c->next = NULL;
    c->q = Q_NONE;
}

static void guard__link(struct guard *g, struct guard_conn *c, enum guard_q q, uint64_t key)
{
    struct guard_list *l = &g->qs[q];
    struct guard_conn *after = l->tail;
    for (int walk = 0; after && walk < PLACE_WALK && !guard__before(after, key, c->seq); walk++)
        after = after->prev;
    if (after && !guard__before(after, key, c->seq))
        after = l->tail; /* walked far enough: at the tail */
    c->prev = after;
    c->next = after ? after->next : l->head;
    if (c->next)
        c->next->prev = c;
    else
        l->tail = c;
    if (after)
        after->next = c;
    else
        l->head = c;
    l->n++;
    c->q = q;
    c->key = key;
    atomic_store_explicit(&c->placed_ms, key, memory_order_relaxed);
}

static void guard__body_unlink(struct guard *g, struct guard_conn *c)
{
    if (!c->inbody)
        return;
    if (c->bprev)
        c->bprev->bnext = c->bnext;
    else
        g->bodies = c->bnext;
    if (c->bnext)
        c->bnext->bprev = c->bprev;
    else
        g->bodies_tail = c->bprev;
    c->bprev = c->bnext = NULL;
    c->inbody = false;
}

/* c where its word says it belongs. Holds g->mu; c not claimed. */
static void guard__place(struct guard *g, struct guard_conn *c)
{
    uint64_t w = atomic_load(&c->word), stamp = W_STAMP(w);
    enum guard_q q = Q_NONE;
    switch (W_PHASE(w)) {
    case G_HEADER:
        q = W_FRESH(w) && atomic_load_explicit(&c->got, memory_order_relaxed) == 0 ? Q_UNREAD
                                                                                   : Q_HEAD;
        break;
    case G_BODY:
        q = Q_BODY;
        break;
    case G_IDLE:
        q = Q_IDLE;
        break;
    case G_BUSY:
    case G_CUT:
        break;
    }
    if (q != Q_BODY)
        guard__body_unlink(g, c);
    else if (!c->inbody) { /* a body begins: on the bodies' queue, by its start */
        c->inbody = true;
        c->body_ms = stamp;
        c->body_got = atomic_load_explicit(&c->got, memory_order_relaxed);
        c->bnext = NULL;
        c->bprev = g->bodies_tail;
        if (g->bodies_tail)
            g->bodies_tail->bnext = c;
        else
            g->bodies = c;
        g->bodies_tail = c;
    }
    if (c->q == q && q != Q_BODY && c->key == stamp)
        return;
    guard__unlink(g, c);
    if (q != Q_NONE)
        guard__link(g, c, q, stamp);
}

/* c out of its queue while the caller works on it without the lock. Holds g->mu. */
static void guard__claim(struct guard *g, struct guard_conn *c)
{
    guard__unlink(g, c);
    c->claimed = true;
}

/* The claim ended: c placed by its word now (out of every queue if cut). Holds g->mu. */
static void guard__unclaim(struct guard *g, struct guard_conn *c)
{
    c->claimed = false;
    guard__place(g, c);
    if (g->closers)
        pthread_cond_broadcast(&g->claim_cv);
}

void guard__settle(struct guard_conn *c)
{
    struct guard *g = c->g;
    pthread_mutex_lock(&g->mu);
    if (!c->claimed)
        guard__place(g, c);
    pthread_mutex_unlock(&g->mu);
}

/* ---------------------------------------------------------------------------------------- */
/* the watchdog                                                                               */

/* What the watchdog does with one connection it claimed; not under the lock. `total`: it came
 * from the bodies' queue (its body's start is past client_body_deadline_s). */
static void guard__check(struct guard *g, struct guard_conn *c, uint64_t now, bool total)
{
    uint64_t w = atomic_load(&c->word);
    enum guard_phase p = W_PHASE(w);
    uint64_t age = now > W_STAMP(w) ? now - W_STAMP(w) : 0;
    if (total) { /* a read restamps the word meanwhile: cut all the same */
        while (W_PHASE(w) == G_BODY &&
               !guard__cut(g, c, w, LGE_REQUEST_TIMEOUT,
                           "the request body did not arrive within client_body_deadline_s", 0))
            w = atomic_load(&c->word);
        if (W_PHASE(w) == G_BODY)
            atomic_fetch_add(&g->body_timeouts, 1);
        return;
    }
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
        bool sent = !W_FRESH(w) || atomic_load_explicit(&c->got, memory_order_relaxed) > 0 ||
                    guard__data_ever(c->fd);
        if (guard__cut(g, c, w, sent ? LGE_REQUEST_TIMEOUT : LGE_NONE,
                       "the request's headers did not arrive within client_header_timeout_s", 0))
            atomic_fetch_add(&g->header_timeouts, 1);
    } else if (guard__cut(g, c, w, LGE_REQUEST_TIMEOUT,
                          "the request body stalled for client_body_timeout_s", 0)) {
        atomic_fetch_add(&g->body_timeouts, 1);
    }
}

/* A queue's deadline. */
static uint64_t guard__deadline(const struct guard *g, enum guard_q q)
{
    switch (q) {
    case Q_UNREAD:
    case Q_HEAD:
        return g->lim.header_ms;
    case Q_BODY:
        return g->lim.body_ms;
    case Q_IDLE:
        return g->lim.keepalive_ms;
    default:
        return UINT64_MAX;
    }
}

/* Connections the watchdog claims in one round, at most: a guard_close waiting for one of
 * them waits for the round's system calls, no longer. */
#define ROUND_MAX 256

/* Claims up to ROUND_MAX connections due at now: on a list through ->batch, and those whose
 * body began before client_body_deadline_s on *tot. Holds g->mu. */
static struct guard_conn *guard__due_round(struct guard *g, uint64_t now, struct guard_conn **tot)
{
    struct guard_conn *list = NULL;
    unsigned n = 0;
    for (int q = Q_UNREAD; q < Q_N; q++) {
        uint64_t d = guard__deadline(g, (enum guard_q)q);
        struct guard_conn *c;
        while (n < ROUND_MAX && (c = g->qs[q].head) && c->key + d <= now) {
            guard__claim(g, c);
            c->batch = list;
            list = c;
            n++;
        }
    }
    *tot = NULL;
    uint64_t total = g->lim.body_total_ms;
    struct guard_conn *c;
    while (total && n < ROUND_MAX && (c = g->bodies) && !c->claimed && c->body_ms + total <= now) {
        guard__claim(g, c);
        guard__body_unlink(g, c); /* cut below, or out of its body: off the bodies' queue */
        c->batch = *tot;
        *tot = c;
        n++;
    }
    return list;
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
        for (;;) {
            struct guard_conn *tot, *list = guard__due_round(g, now, &tot);
            if (!list && !tot)
                break;
            pthread_mutex_unlock(&g->mu); /* the checks make system calls */
            for (struct guard_conn *c = list; c; c = c->batch)
                guard__check(g, c, now, false);
            for (struct guard_conn *c = tot; c; c = c->batch)
                guard__check(g, c, now, true);
            pthread_mutex_lock(&g->mu);
            for (struct guard_conn *c = list, *next; c; c = next)
                next = c->batch, guard__unclaim(g, c);
            for (struct guard_conn *c = tot, *next; c; c = next)
                next = c->batch, guard__unclaim(g, c);
        }
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
    g->touch_ms = l->body_ms / 8 < 250 ? l->body_ms / 8 : 250;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->lmu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_cond_init(&g->claim_cv, NULL);
    pthread_condattr_destroy(&ca);
    /* a quarter of the table may linger at once (each costs a descriptor, nothing else) */
    g->linger = linger_new(l->max_conns / 4 + 16);
    if (!g->linger || pthread_create(&g->thread, NULL, guard__run, g) != 0) {
        log_error("guard: cannot start its thread: %s", strerror(errno));
        linger_free(g->linger);
        pthread_cond_destroy(&g->claim_cv);
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
    /* none left when libmicrohttpd has closed everything; kept safe anyway (a connection in
     * no queue, busy or cut, is the caller's to close) */
    for (int q = Q_UNREAD; q < Q_N; q++) {
        for (struct guard_conn *c = g->qs[q].head, *next; c; c = next) {
            next = c->next;
            free(c);
        }
        g->qs[q].head = g->qs[q].tail = NULL;
    }
    linger_free(g->linger); /* what still lingers is closed */
    pthread_cond_destroy(&g->claim_cv);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->lmu);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ---------------------------------------------------------------------------------------- */
/* eviction                                                                                   */

/* Headers that have been arriving this long are a slow client's (a normal client sends them
 * in one packet): the first to make room. */
#define SLOW_HEADER_MS 1000
/* A new connection nothing was read from is not evicted this young: its request may be
 * waiting in the socket for threads busy with a burst of connections. */
#define UNREAD_KEEP_MS 5000
/* A body arriving for this long at less than SLOW_BODY_BPS on average is a slow one: evicted
 * before a newcomer is refused (a client on a LAN sends megabytes a second). */
#define SLOW_BODY_MS 2000
#define SLOW_BODY_BPS 8192
/* How far past a queue's head the eviction looks for a connection still in that queue's
 * phase (one whose phase just moved is re-placed a moment later). */
#define LOOK 4

/* Eviction order: slow headers, then idle keep-alive connections, then slow bodies, then
 * headers that are only late; oldest first within each (the heads of their queues).
 * Connections busy with a request are kept, and so are bodies arriving at a fair rate.
 * Slow is judged by what the client sent, not by how long the gateway took to read it: a new
 * connection from which libmicrohttpd has read nothing yet is only late (its request may sit
 * unread in the socket while the threads are busy with a burst of connections: measured, of
 * 10,000 clients opening at once against 8,192 slots, 712 that had sent their whole request
 * got 408 within seconds); one that sent part of its headers a second ago and no more is
 * slow. A kept-alive connection in G_HEADER has sent its request line (that is how it got
 * there). */
static struct guard_conn *guard__first(struct guard *g, enum guard_q q, enum guard_phase p,
                                       const struct guard_conn *except, uint64_t *seen)
{
    struct guard_conn *c = g->qs[q].head;
    for (int i = 0; c && i < LOOK; i++, c = c->next) {
        uint64_t w = atomic_load(&c->word);
        if (c != except && W_PHASE(w) == p) {
            *seen = w;
            return c;
        }
    }
    return NULL;
}

/* The slowest of the oldest bodies, if it is slow. */
static struct guard_conn *guard__slow_body(struct guard *g, uint64_t now, uint64_t *seen)
{
    struct guard_conn *best = NULL;
    uint64_t best_rate = SLOW_BODY_BPS;
    struct guard_conn *c = g->bodies;
    for (int i = 0; c && i < LOOK * 2; i++, c = c->bnext) {
        uint64_t w = atomic_load(&c->word);
        uint64_t age = now > c->body_ms ? now - c->body_ms : 0;
        if (c->claimed || W_PHASE(w) != G_BODY || age < SLOW_BODY_MS)
            continue;
        uint64_t got = atomic_load_explicit(&c->got, memory_order_relaxed) - c->body_got;
        uint64_t rate = got * 1000u / age;
        if (rate < best_rate)
            best = c, best_rate = rate, *seen = w;
    }
    return best;
}

/* The connection to close for a newcomer when the table is full, or NULL. Holds g->mu. */
static struct guard_conn *guard__victim(struct guard *g, struct guard_conn *except, uint64_t *seen)
{
    uint64_t now = guard_now_ms(), w = 0, u = 0;
    struct guard_conn *h = guard__first(g, Q_HEAD, G_HEADER, except, &w);
    if (h && now >= W_STAMP(w) + SLOW_HEADER_MS)
        return *seen = w, h;
    struct guard_conn *v = guard__first(g, Q_IDLE, G_IDLE, except, seen);
    if (v)
        return v;
    if ((v = guard__slow_body(g, now, seen)))
        return v;
    struct guard_conn *r = guard__first(g, Q_UNREAD, G_HEADER, except, &u);
    if (r && (!W_FRESH(u) || now < W_STAMP(u) + UNREAD_KEEP_MS))
        r = NULL; /* nothing read yet and young: kept (the newcomer is refused instead) */
    if (h && (!r || W_STAMP(w) < W_STAMP(u) || (W_STAMP(w) == W_STAMP(u) && h->seq < r->seq)))
        return *seen = w, h;
    if (r)
        return *seen = u, r;
    return NULL;
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
    bool refuse = false;
    pthread_mutex_lock(&g->mu);
    guard__place(g, c);
    g->n++;
    /* over the limit: make room. Cut connections are leaving and chosen victims are about to
     * be cut: neither counts. The victim's cut is done with the lock released (system calls);
     * its phase may move meanwhile (then the cut fails and another is chosen). */
    while (g->n - atomic_load(&g->n_cut) - g->n_evicting > g->lim.max_conns) {
        uint64_t seen;
        struct guard_conn *v = guard__victim(g, c, &seen);
        if (!v) {
            guard__unlink(g, c);
            refuse = true;
            break;
        }
        guard__claim(g, v);
        g->n_evicting++;
        pthread_mutex_unlock(&g->mu);
        bool header = W_PHASE(seen) == G_HEADER;
        bool sent =
            W_PHASE(seen) == G_BODY ||
            (header && (!W_FRESH(seen) || atomic_load_explicit(&v->got, memory_order_relaxed) > 0 ||
                        guard__data_ever(v->fd)));
        bool cut = guard__cut(
            g, v, seen, sent ? LGE_REQUEST_TIMEOUT : LGE_NONE,
            W_PHASE(seen) == G_BODY
                ? "the connection table is full and this request's body was the slowest"
                : "the connection table is full and this request's headers were the slowest",
            0);
        pthread_mutex_lock(&g->mu);
        g->n_evicting--;
        guard__unclaim(g, v);
        if (cut)
            atomic_fetch_add(&g->evicted, 1);
    }
    pthread_mutex_unlock(&g->mu);
    if (refuse && guard__cut(g, c, atomic_load(&c->word), LGE_OVERLOADED,
                             "every connection slot of the gateway is busy with a request", 1))
        atomic_fetch_add(&g->refused, 1);
    recvhook_attach(fd, c);
    return c;
}

void guard_drain(struct guard *g)
{
    /* The flag first: a connection going idle from now on sees it and closes itself; one that
     * went idle before is in G_IDLE for the sweep below (both are sequentially consistent, and
     * guard__cut lets one of the two win). The idle ones are claimed, then looked at with the
     * lock released (system calls). */
    atomic_store(&g->draining, true);
    pthread_mutex_lock(&g->mu);
    struct guard_conn *list = NULL;
    while (g->qs[Q_IDLE].head) {
        struct guard_conn *c = g->qs[Q_IDLE].head;
        guard__claim(g, c);
        c->batch = list;
        list = c;
    }
    pthread_mutex_unlock(&g->mu);
    for (struct guard_conn *c = list; c; c = c->batch) {
        uint64_t w = atomic_load(&c->word);
        int unread = 0;
        if (W_PHASE(w) != G_IDLE || (ioctl(c->fd, SIOCINQ, &unread) == 0 && unread > 0))
            continue; /* its next request is arriving: answered, with Connection: close */
        if (guard__cut(g, c, w, LGE_NONE, NULL, 0))
            atomic_fetch_add(&g->idle_closed, 1);
    }
    pthread_mutex_lock(&g->mu);
    for (struct guard_conn *c = list, *next; c; c = next)
        next = c->batch, guard__unclaim(g, c);
    pthread_mutex_unlock(&g->mu);
}

void guard_close(struct guard *g, struct guard_conn *c)
{
    if (!c)
        return;
    guard__close_linger(g, c);
    pthread_mutex_lock(&g->mu);
    while (c->claimed) { /* the watchdog or an eviction is at its socket: a moment */
        g->closers++;
        pthread_cond_wait(&g->claim_cv, &g->mu);
        g->closers--;
    }
    guard__unlink(g, c);
    guard__body_unlink(g, c);
    g->n--;
    if (W_PHASE(atomic_load(&c->word)) == G_CUT)
        atomic_fetch_sub(&g->n_cut, 1);
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
    bool ok = true;
    if (p == G_IDLE && atomic_load(&c->g->draining)) {
        /* draining: the response is out, the connection closes (on its own thread: c->fd is
         * open) */
        w = atomic_load(&c->word);
        while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, LGE_NONE, NULL, 0))
            w = atomic_load(&c->word);
        ok = false;
    }
    /* a body read within touch_ms of its last placing keeps its place: no lock */
    if (p != G_BODY || W_PHASE(w) != G_BODY || !ok ||
        now >= atomic_load_explicit(&c->placed_ms, memory_order_relaxed) + c->g->touch_ms)
        guard__settle(c);
    if (ok && p == G_IDLE && ++c->answered >= c->scan.complete &&
        atomic_load_explicit(&c->refused, memory_order_relaxed))
        guard__refuse(c); /* a pipelined request refused while earlier ones were served */
    return ok;
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
    guard__settle(c);
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
    out->parked = atomic_load(&g->parked);
}
