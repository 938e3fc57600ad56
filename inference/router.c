/* router.c — see router.h. */
#include "inference/router.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "inference/eta.h"
#include "inference/job.h"
#include "inference/rqueue.h"
#include "inference/snap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Fair queuing (start-time fair queuing per priority class, charged by estimated tokens) and
 * the waiters' order live in inference/rqueue.c: every grant, refusal and count there costs
 * O(log keys) plus a look at each of the pool's candidate sets, whatever is queued. */

struct rpool {
    pthread_mutex_t lock;
    struct router *r;
    const struct config *cfg; /* the configuration it belongs to: its keys' index space */
    struct rqueue q;          /* its waiters (q.queued of them) */
    atomic_uint n_waiting;    /* q.queued, for looks without the lock */
    atomic_bool starved;      /* a waiter stopped for want of a gateway slot (max_inflight) */
    unsigned cap;             /* its waiting requests at most */
    struct backend **be;      /* its backends (each lists this pool) */
    unsigned n_be;
    struct rpool *next_all, *prev_all; /* the router's list of every live pool */
};

struct router {
    router_grant_fn grant;
    void *grant_arg;
    atomic_uint inflight; /* gateway-wide permits held */
    atomic_uint queued;   /* gateway-wide waiters */
    atomic_uint max_inflight, queue_cap, pool_cap, prior_ms;
    atomic_uint starved; /* pools with `starved` set */
    atomic_uint_fast64_t granted_total, rejected_total;
    atomic_uint turn;      /* where the next walk over starved pools starts */
    struct eta_seen *seen; /* promises by connection (Retry-After) */
    pthread_mutex_t list_lock;
    struct rpool *all;
    unsigned n_all;
};

static void pool__dispatch(struct rpool *p);

struct router *router_new(router_grant_fn grant, void *arg)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->list_lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->seen = eta_seen_new(4096);
    if (!r->seen) {
        pthread_mutex_destroy(&r->list_lock);
        free(r);
        return NULL;
    }
    r->grant = grant;
    r->grant_arg = arg;
    atomic_init(&r->max_inflight, 1);
    atomic_init(&r->prior_ms, 500);
    return r;
}

void router_free(struct router *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->list_lock);
    eta_seen_free(r->seen);
    free(r);
}

void router_apply(struct router *r, const struct config *cfg)
{
    atomic_store(&r->max_inflight, cfg->max_inflight);
    atomic_store(&r->queue_cap, cfg->queue_capacity);
    atomic_store(&r->pool_cap, cfg->pool_queue_capacity);
    atomic_store(&r->prior_ms, cfg->service_time_prior_ms);
    /* Slots the new limits add (a backend's max_concurrency, set by backends_bind, or
     * max_inflight) go to the requests waiting now, not at the next release or their timeout;
     * a starved mark left by waiters that are gone is cleared on the way. */
    pthread_mutex_lock(&r->list_lock);
    for (struct rpool *p = r->all; p; p = p->next_all) {
        if (!atomic_load(&p->n_waiting) && !atomic_load(&p->starved))
            continue;
        pthread_mutex_lock(&p->lock);
        pool__dispatch(p);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&r->list_lock);
}

/* ---------------------------------------------------------------------------------------- */
/* pools of a configuration                                                                   */

static unsigned uf_find(unsigned *parent, unsigned i)
{
    while (parent[i] != i)
        i = parent[i] = parent[parent[i]];
    return i;
}

static void pool__free(struct rpool *p)
{
    pthread_mutex_destroy(&p->lock);
    rq_release(&p->q);
    free(p->be);
    free(p);
}

/* Takes p out of backend b's list of pools. */
static void pool__unlist(struct backend *b, const struct rpool *p)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->plock);
    for (unsigned k = 0; k < b->n_pools; k++) {
        if (b->pools[k] == p) {
            b->pools[k] = b->pools[--b->n_pools];
            break;
        }
    }
    atomic_store(&b->n_pools_hint, b->n_pools);
    pthread_mutex_unlock(&b->plock);
}

/* Adds p to its backends' lists and to the router's. */
static int pool__register(struct router *r, struct rpool *p)
{
    unsigned i;
    for (i = 0; i < p->n_be; i++) {
        struct backend *b = p->be[i];
        if (!b)
            break; /* not bound (backends_bind): refused like out of memory */
        pthread_mutex_lock(&b->plock);
        bool room = b->n_pools < b->cap_pools;
        if (!room) { /* streams that outlive many reloads pin as many configurations */
            unsigned cap = b->cap_pools ? b->cap_pools * 2 : 2;
            struct rpool **v = realloc(b->pools, cap * sizeof(struct rpool *));
            if (v) {
                b->pools = v;
                b->cap_pools = cap;
                room = true;
            }
        }
        if (room) {
            b->pools[b->n_pools++] = p;
            atomic_store(&b->n_pools_hint, b->n_pools);
        }
        pthread_mutex_unlock(&b->plock);
        if (!room)
            break;
    }
    if (i < p->n_be) { /* out of memory, or unbound */
        while (i-- > 0)
            pool__unlist(p->be[i], p);
        return -1;
    }
    pthread_mutex_lock(&r->list_lock);
    p->next_all = r->all;
    p->prev_all = NULL;
    if (r->all)
        r->all->prev_all = p;
    r->all = p;
    r->n_all++;
    pthread_mutex_unlock(&r->list_lock);
    return 0;
}

static void pool__unregister(struct router *r, struct rpool *p)
{
    for (unsigned i = 0; i < p->n_be; i++)
        pool__unlist(p->be[i], p);
    pthread_mutex_lock(&r->list_lock);
    if (p->prev_all)
        p->prev_all->next_all = p->next_all;
    else
        r->all = p->next_all;
    if (p->next_all)
        p->next_all->prev_all = p->prev_all;
    r->n_all--;
    if (atomic_load(&p->starved))
        atomic_fetch_sub(&r->starved, 1);
    pthread_mutex_unlock(&r->list_lock);
}

void router_unbind(struct router *r, struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_backends; i++) {
        struct rpool *p = cfg->backends[i].pool;
        if (!p)
            continue;
        for (size_t j = i; j < cfg->n_backends; j++)
            if (cfg->backends[j].pool == p)
                cfg->backends[j].pool = NULL;
        pool__unregister(r, p);
        pool__free(p);
    }
}

int router_bind(struct router *r, struct config *cfg)
{
    size_t n = cfg->n_backends;
    unsigned *parent = calloc(n ? n : 1, sizeof(*parent));
    if (!parent)
        return -1;
    for (unsigned i = 0; i < n; i++)
        parent[i] = i;
    /* backends that serve a common model are in one pool */
    for (size_t i = 0; i < n; i++) {
        for (size_t m = 0; m < cfg->backends[i].models.n; m++) {
            const struct cfg_backend *c[JOB_MAX_CANDIDATES];
            size_t k =
                config_backends_for(cfg, cfg->backends[i].models.v[m], c, JOB_MAX_CANDIDATES);
            for (size_t j = 1; j < k; j++)
                parent[uf_find(parent, c[j]->index)] = uf_find(parent, c[0]->index);
        }
    }
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        if (uf_find(parent, i) != i)
            continue;
        struct rpool *p = calloc(1, sizeof(*p));
        if (!p || pthread_mutex_init(&p->lock, NULL) != 0) {
            free(p);
            rc = -1;
            break;
        }
        p->r = r;
        p->cfg = cfg;
        p->cap = cfg->pool_queue_capacity && cfg->pool_queue_capacity < cfg->queue_capacity
                     ? cfg->pool_queue_capacity
                     : cfg->queue_capacity;
        p->be = calloc(n, sizeof(struct backend *));
        if (rq_init(&p->q, cfg) != 0 || !p->be) {
            pool__free(p);
            rc = -1;
            break;
        }
        for (unsigned j = 0; j < n; j++) {
            if (uf_find(parent, j) == i) {
                p->be[p->n_be++] = cfg->backends[j].be;
                cfg->backends[j].pool = p;
            }
        }
        if (pool__register(r, p) != 0) {
            for (unsigned j = 0; j < n; j++)
                if (cfg->backends[j].pool == p)
                    cfg->backends[j].pool = NULL;
            pool__free(p);
            rc = -1;
        }
    }
    free(parent);
    if (rc != 0)
        router_unbind(r, cfg);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* permits                                                                                    */

static bool take_below(atomic_uint *v, unsigned max)
{
    unsigned cur = atomic_load(v);
    while (cur < max)
        if (atomic_compare_exchange_weak(v, &cur, cur + 1))
            return true;
    return false;
}

static bool global_full(struct router *r)
{
    return atomic_load(&r->inflight) >= atomic_load(&r->max_inflight);
}

/* The candidate with a free slot and the lowest load, preferring backends not known to be
 * down, or NULL. */
static const struct cfg_backend *pool__pick(const struct job *job)
{
    const struct cfg_backend *best = NULL;
    int best_down = 1;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < job->n_candidates; i++) {
        const struct cfg_backend *cb = job->candidates[i];
        struct backend *b = cb->be;
        unsigned in = atomic_load_explicit(&b->inflight, memory_order_relaxed);
        unsigned max = atomic_load_explicit(&b->max, memory_order_relaxed);
        if (in >= max)
            continue;
        int down = atomic_load_explicit(&b->health, memory_order_relaxed) == HEALTH_DOWN;
        uint64_t load = ((uint64_t)in << 20) / max;
        if (down < best_down || (down == best_down && load < best_load)) {
            best = cb;
            best_down = down;
            best_load = load;
        }
    }
    return best;
}

enum take_rc { TAKE_OK, TAKE_BACKEND, TAKE_GLOBAL };

/* Takes a backend slot and a gateway slot for job, or nothing. */
static enum take_rc pool__take(struct router *r, struct job *job)
{
    for (;;) {
        const struct cfg_backend *cb = pool__pick(job);
        if (!cb)
            return TAKE_BACKEND;
        struct backend *b = cb->be;
        if (!take_below(&b->inflight, atomic_load(&b->max)))
            continue; /* taken meanwhile by another pool of the object: look again */
        if (!take_below(&r->inflight, atomic_load(&r->max_inflight))) {
            atomic_fetch_sub(&b->inflight, 1);
            return TAKE_GLOBAL;
        }
        atomic_fetch_add_explicit(&b->granted, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->granted_total, 1, memory_order_relaxed);
        job->backend = (int)cb->index;
        job->r_be = cb;
        job->r_granted = true;
        job->t_granted_ns = clock_now_ns();
        atomic_fetch_add_explicit(&b->grant_us_sum, job->t_granted_ns / 1000, memory_order_relaxed);
        return TAKE_OK;
    }
}

static bool pool__runnable(const struct job *job)
{
    return pool__pick(job) != NULL;
}

static void pool__set_starved(struct rpool *p, bool on)
{
    if (atomic_exchange(&p->starved, on) != on)
        atomic_fetch_add(&p->r->starved, on ? 1u : (unsigned)-1);
}

/* Takes job out of p's queue: granted, or gone without a grant. Pool lock held. */
static void pool__unlink(struct rpool *p, struct job *job, bool granted)
{
    rq_remove(&p->q, job, granted);
    atomic_fetch_sub(&p->n_waiting, 1);
    atomic_fetch_sub(&p->r->queued, 1);
    if (p->q.queued == 0)
        pool__set_starved(p, false); /* nobody left to starve: no newcomer queues for it */
}

/* Grants every waiter of p that can run now: by priority class, then smallest start tag. A
 * waiter stopped only by max_inflight marks the pool starved, so that the next gateway slot
 * freed anywhere looks here (set before the last look at the gateway's count: a release
 * either sees the mark or frees the slot before that look). Pool lock held. */
static void pool__dispatch(struct rpool *p)
{
    struct router *r = p->r;
    while (p->q.queued) {
        if (global_full(r)) {
            pool__set_starved(p, true);
            if (global_full(r))
                return;
        }
        struct job *best = rq_best(&p->q, pool__runnable);
        if (!best)
            break;
        enum take_rc t = pool__take(r, best);
        if (t == TAKE_GLOBAL)
            continue; /* marks the pool starved above, or finds the slot freed */
        if (t == TAKE_BACKEND)
            continue; /* its backend was taken by another pool meanwhile: look again */
        pool__unlink(p, best, true);
        r->grant(best, r->grant_arg);
    }
    pool__set_starved(p, false);
}

/* Reserves a place in the gateway's queue. */
static bool router__reserve(struct router *r)
{
    return take_below(&r->queued, atomic_load(&r->queue_cap));
}

/* Whether job's key holds more than its share of a full queue (of `cap` places) while other
 * keys wait in the pool too. The anonymous key (auth off) is everyone: never. Pool lock held. */
static bool pool__over_share(struct rpool *p, const struct job *job, unsigned cap)
{
    if (!job->key)
        return false;
    const struct rq_key *k = rq_key_of(&p->q, job);
    unsigned active = p->q.active_keys + (k->queued == 0);
    return active >= 2 && k->queued >= cap / active;
}

enum router_rc router_acquire(struct router *r, struct job *job)
{
    struct rpool *p = job->n_candidates ? job->candidates[0]->pool : NULL;
    if (!p)
        return ROUTER_FULL;
    job->r_pool = p;
    enum router_rc rc;
    pthread_mutex_lock(&p->lock);
    /* A mark left by waiters that are gone, or slots added since (a reload): look again */
    if (atomic_load(&p->starved))
        pool__dispatch(p);
    /* A free backend slot of its own means nobody waiting can use it (each release grants
     * what it frees): take it at once. Unless waiters here wait for a gateway slot: then the
     * newcomer queues behind them. */
    if (!atomic_load(&p->starved) && pool__take(r, job) == TAKE_OK) {
        rc = ROUTER_OK;
    } else if (p->q.queued >= p->cap || !router__reserve(r)) {
        atomic_fetch_add_explicit(&r->rejected_total, 1, memory_order_relaxed);
        unsigned cap = p->q.queued >= p->cap ? p->cap : atomic_load(&r->queue_cap);
        rc = pool__over_share(p, job, cap) ? ROUTER_FAIR_SHARE : ROUTER_FULL;
    } else if (rq_push(&p->q, job) != 0) { /* out of memory */
        atomic_fetch_sub(&r->queued, 1);
        atomic_fetch_add_explicit(&r->rejected_total, 1, memory_order_relaxed);
        rc = ROUTER_FULL;
    } else {
        /* queued (its place reserved above), then a look: it may pass the waiters whose
         * backends are busy, or a slot was freed meanwhile. A grant made now comes through
         * the callback like any later one. */
        atomic_fetch_add(&p->n_waiting, 1);
        pool__dispatch(p);
        rc = ROUTER_QUEUED;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

bool router_cancel(struct router *r, struct job *job)
{
    (void)r;
    struct rpool *p = job->r_pool;
    if (!p)
        return false;
    pthread_mutex_lock(&p->lock);
    bool was_waiting = job->r_waiting;
    if (was_waiting)
        pool__unlink(p, job, false);
    pthread_mutex_unlock(&p->lock);
    return was_waiting;
}

void router_release(struct router *r, struct job *job)
{
    if (job->backend < 0 || !job->r_be)
        return;
    struct backend *b = job->r_be->be;
    struct rpool *own = job->r_pool;
    backend_hold_sample(b, clock_now_ns() - job->t_granted_ns);
    atomic_fetch_sub_explicit(&b->grant_us_sum, job->t_granted_ns / 1000, memory_order_relaxed);
    job->backend = -1;
    job->r_be = NULL;
    atomic_fetch_sub(&b->inflight, 1);
    atomic_fetch_sub(&r->inflight, 1);
    /* the other live configurations' pools that count permits on this backend */
    if (atomic_load_explicit(&b->n_pools_hint, memory_order_relaxed) > 1) {
        pthread_mutex_lock(&b->plock);
        for (unsigned i = 0; i < b->n_pools; i++) {
            struct rpool *q = b->pools[i];
            if (q == own || !atomic_load(&q->n_waiting))
                continue;
            pthread_mutex_lock(&q->lock);
            pool__dispatch(q);
            pthread_mutex_unlock(&q->lock);
        }
        pthread_mutex_unlock(&b->plock);
    }
    /* pools that wait only for a gateway slot first, in turn: one saturated pool cannot keep
     * max_inflight to itself */
    if (atomic_load(&r->starved) > 0) {
        pthread_mutex_lock(&r->list_lock);
        unsigned skip = r->n_all ? atomic_fetch_add(&r->turn, 1) % r->n_all : 0;
        for (int pass = 0; pass < 2 && !global_full(r); pass++) {
            unsigned i = 0;
            for (struct rpool *q = r->all; q && !global_full(r); q = q->next_all, i++) {
                if ((pass == 0) != (i >= skip) || q == own || !atomic_load(&q->starved))
                    continue;
                pthread_mutex_lock(&q->lock);
                pool__dispatch(q);
                pthread_mutex_unlock(&q->lock);
            }
        }
        pthread_mutex_unlock(&r->list_lock);
    }
    if (own && atomic_load(&own->n_waiting)) {
        pthread_mutex_lock(&own->lock);
        pool__dispatch(own);
        pthread_mutex_unlock(&own->lock);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Retry-After and looks                                                                      */

/* Waiters of p (other than `self`) that compete for the backends in `cands`: O(candidate sets
 * of the pool), not O(waiters). Pool lock held. */
static unsigned router__ahead(struct rpool *p, const struct cfg_backend *const *cands, unsigned n,
                              const struct job *self)
{
    return rq_ahead(&p->q, cands, n, self);
}

/* What is known of the permits `cands` offer (inference/eta.h). */
static void router__view(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                         uint64_t now, struct eta_view *v, struct eta **es)
{
    uint64_t slots = 0, inflight = 0, sum_us = 0, hold = 0, dev = 0;
    for (unsigned i = 0; i < n; i++) {
        struct backend *b = cands[i]->be;
        slots += atomic_load(&b->max);
        inflight += atomic_load(&b->inflight);
        sum_us += atomic_load_explicit(&b->grant_us_sum, memory_order_relaxed);
        uint64_t h = atomic_load_explicit(&b->hold_ns, memory_order_relaxed);
        if (h > hold) { /* the slowest of them, with its deviation */
            hold = h;
            dev = atomic_load_explicit(&b->hold_dev_ns, memory_order_relaxed);
        }
        es[i] = &b->eta;
    }
    unsigned maxin = atomic_load(&r->max_inflight);
    *v = (struct eta_view){
        .slots = slots > maxin ? maxin : slots,
        .inflight = inflight,
        .hold_ns = hold,
        .dev_ns = dev,
        .prior_ns = (uint64_t)atomic_load(&r->prior_ms) * NS_PER_MS,
    };
    /* the counters are read one by one: a grant or release in between can make them disagree
     * for a moment; a mean older than the clock allows is none */
    uint64_t now_us = now / 1000;
    if (inflight && sum_us / inflight <= now_us)
        v->age_ns = (now_us - sum_us / inflight) * 1000;
}

uint64_t router_retry_after_ms(struct router *r, const struct job *job, enum lg_err why)
{
    struct rpool *p = job->n_candidates ? job->candidates[0]->pool : NULL;
    if (!p)
        return 1000;
    uint64_t now = clock_now_ns(), at;
    /* promised by backend object: a reload keeps its promises */
    const void *scope = job->candidates[0]->be;
    /* refused again before its time (it ignores Retry-After): the rest of its wait, and no
     * second place promised */
    if (eta_seen_get(r->seen, job->client_id, scope, now, &at))
        return eta_ms(at, now);
    struct eta_view v;
    struct eta *es[JOB_MAX_CANDIDATES];
    unsigned n = job->n_candidates;
    bool promise = why == LGE_QUEUE_FULL || why == LGE_QUEUE_TIMEOUT || why == LGE_RATE_LIMITED;
    uint64_t extra = 0;
    pthread_mutex_lock(&p->lock);
    router__view(r, job->candidates, n, now, &v, es);
    if (why == LGE_QUEUE_TIMEOUT && job->snap) {
        /* it waited its whole queue_timeout: back in the queue it would again wait behind
         * those ahead; come back when that wait fits in the timeout */
        uint64_t behind = (router__ahead(p, job->candidates, n, job) + 1) * eta_step_ns(&v);
        uint64_t qt = (uint64_t)job->snap->cfg->queue_timeout_ms * NS_PER_MS;
        extra = behind > qt ? behind - qt : 0;
    }
    at = eta_tell(es, n, &v, now, extra, !promise);
    pthread_mutex_unlock(&p->lock);
    if (promise)
        eta_seen_put(r->seen, job->client_id, scope, at, now);
    return eta_ms(at, now);
}

void router_pool_stats(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                       struct router_pool_stats *out)
{
    struct rpool *p = n ? cands[0]->pool : NULL;
    if (!p) {
        *out = (struct router_pool_stats){0};
        return;
    }
    uint64_t now = clock_now_ns(), ahead;
    struct eta_view v;
    struct eta *es[JOB_MAX_CANDIDATES];
    n = n > JOB_MAX_CANDIDATES ? JOB_MAX_CANDIDATES : n;
    pthread_mutex_lock(&p->lock);
    router__view(r, cands, n, now, &v, es);
    ahead = router__ahead(p, cands, n, NULL);
    bool full = p->q.queued >= p->cap || atomic_load(&r->queued) >= atomic_load(&r->queue_cap);
    pthread_mutex_unlock(&p->lock);
    out->inflight = (unsigned)v.inflight;
    out->slots = (unsigned)v.slots;
    out->queued = (unsigned)ahead;
    if (v.inflight < v.slots && ahead == 0)
        out->wait_ms = 0; /* nothing to wait for while a slot is free and nobody waits */
    else if (full)        /* refused now: what it would be told (not counted as told) */
        out->wait_ms = eta_ms(eta_tell(es, n, &v, now, 0, true), now);
    else /* queued behind those ahead */
        out->wait_ms = eta_ms(now + eta_first_ns(&v) + ahead * eta_step_ns(&v), now);
}

unsigned router_key_queued(struct router *r, const struct config *cfg, const struct cfg_key *k)
{
    (void)r;
    unsigned n = 0;
    size_t ki = k ? (size_t)(k - cfg->keys) : cfg->n_keys;
    if (ki > cfg->n_keys)
        return 0;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        struct rpool *p = cfg->backends[i].pool;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = cfg->backends[j].pool == p;
        if (!p || seen)
            continue;
        pthread_mutex_lock(&p->lock);
        n += p->q.keys[ki].queued;
        pthread_mutex_unlock(&p->lock);
    }
    return n;
}

void router_set_health(struct backend *b, enum backend_health h)
{
    atomic_store_explicit(&b->health, (int)h, memory_order_relaxed);
}

enum backend_health router_health(const struct backend *b)
{
    return (enum backend_health)atomic_load_explicit(&b->health, memory_order_relaxed);
}

bool router_ready(const struct config *cfg)
{
    bool probing = cfg->health_interval_ms > 0;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        enum backend_health h = router_health(cfg->backends[i].be);
        if (h == HEALTH_UP || (!probing && h == HEALTH_UNKNOWN))
            return true;
    }
    return false;
}

void router_get_stats(struct router *r, struct router_stats *out)
{
    out->inflight = atomic_load(&r->inflight);
    out->queued = atomic_load(&r->queued);
    out->granted_total = atomic_load(&r->granted_total);
    out->rejected_total = atomic_load(&r->rejected_total);
}

const atomic_uint *router_waiting(struct router *r)
{
    return &r->queued;
}
