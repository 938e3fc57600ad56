/* guard_int.h — what http/guard.c (the table, deadlines, eviction) and http/guard_io.c (what
 * the guard reads from and writes to a client's socket: the byte scan, the half-close hold, its
 * replies, lingering close) share. Not for other files. */
#ifndef LG_GUARD_INT_H
#define LG_GUARD_INT_H

#include "core/errors.h"
#include "http/framing.h"
#include "http/guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A connection's state in one word, so that a phase change and a cut race safely:
 * bits 0-2 phase, bit 3 fresh (no request seen yet), bits 4.. the phase's stamp in ms. */
#define W_PHASE(w) ((enum guard_phase)((w)&7u))
#define W_FRESH(w) (((w) >> 3) & 1u)
#define W_STAMP(w) ((w) >> 4)
#define W_MAKE(p, fresh, ms) (((uint64_t)(ms) << 4) | ((uint64_t)(fresh) << 3) | (uint64_t)(p))

/* The queues a connection waits in, by what the watchdog and the eviction look for (under
 * g->mu): each ordered by its stamp, oldest first, so that both look only at heads. */
enum guard_q {
    Q_NONE = 0, /* busy with a request, cut, or claimed (below) */
    Q_UNREAD,   /* G_HEADER, new, nothing read from it yet: by accept order */
    Q_HEAD,     /* G_HEADER with bytes read (or a kept-alive one): by the deadline's stamp */
    Q_BODY,     /* G_BODY: by its last read (within guard.touch_ms) */
    Q_IDLE,     /* G_IDLE: by when it went idle */
    Q_N
};

struct guard_list {
    struct guard_conn *head, *tail;
    uint64_t n;
};

struct guard_conn {
    _Atomic uint64_t word;
    int fd;
    uint64_t seq; /* accept order */
    struct guard *g;
    /* Under g->mu: its queue, and its place there (key: the stamp it was placed with);
     * `claimed` while the watchdog or an eviction works on it with the lock released (it is in
     * no queue then, and guard_close waits for it); `inbody`: on g->bodies, the bodies in the
     * order they began, with the time and the byte count at their start. */
    enum guard_q q;
    bool claimed, inbody;
    struct guard_conn *prev, *next, *bprev, *bnext, *batch;
    uint64_t key, body_ms, body_got;
    _Atomic uint64_t placed_ms; /* the key, for guard_touch's look without the lock */
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
    /* Parking (guard.h): a PARK_* state (its connection's thread, and guard_unhold from any),
     * and the request it is for (scan.complete then: the request being read). */
    _Atomic unsigned char park;
    uint64_t park_req;
};

enum {
    PARK_NONE = 0,
    PARK_TRIM, /* a read stopped one byte short of a Content-Length body's end */
    PARK_HOLD, /* that byte is held in the kernel: reads report EAGAIN */
    PARK_DONE, /* released: the rest of request park_req is read as it comes */
};

struct guard {
    struct guard_limits lim;
    unsigned touch_ms;  /* a body read re-places its connection at most this often */
    pthread_mutex_t mu; /* the queues, n, n_evicting, claims, stop */
    pthread_cond_t cv, claim_cv;
    pthread_t thread;
    struct guard_list qs[Q_N];
    struct guard_conn *bodies, *bodies_tail;
    uint64_t n;          /* connections in the table */
    uint64_t n_evicting; /* victims chosen, their cut not done yet */
    unsigned closers;    /* guard_close calls waiting for a claim to end */
    bool stop;
    atomic_uint_fast64_t n_cut; /* cut, not closed yet: leaving, not counted against the limit */
    atomic_bool draining;       /* guard_drain: a connection going idle is closed */
    atomic_uint_fast64_t header_timeouts, body_timeouts, idle_closed, evicted, refused;
    struct linger_set *linger; /* the lingering closer (http/linger.h) */
    pthread_mutex_t lmu;       /* waitq; taken after mu, never before */
    struct guard_conn *waitq;  /* cut with a reply, libmicrohttpd not yet closing */
    atomic_uint_fast64_t n_wait;
    atomic_uint_fast64_t parked; /* bodies whose last byte was held (guard_held) */
};

/* c's queue made right for its word now (guard.c): takes g->mu. After a change the lock-free
 * paths made (the first bytes read). */
void guard__settle(struct guard_conn *c);

/* Cuts c if its word is still `seen` (guard.c). */
bool guard__cut(struct guard *g, struct guard_conn *c, uint64_t seen, enum lg_err reply,
                const char *message, unsigned retry_after);

/* guard_io.c */
ssize_t guard__scan(void *owner, const void *buf, ssize_t r);
size_t guard__limit(void *owner, int fd, void *buf, size_t n);
void guard__hold(struct guard_conn *c, enum guard_phase p);
bool guard__data_within(int fd, uint64_t age_ms);
bool guard__data_ever(int fd);
void guard__reply(struct guard *g, int fd, enum lg_err e, const char *message,
                  unsigned retry_after);
void guard__refuse(struct guard_conn *c);
void guard__cut_linger(struct guard *g, struct guard_conn *c);
void guard__wait_tick(struct guard *g, uint64_t now);
void guard__close_linger(struct guard *g, struct guard_conn *c);

#endif
