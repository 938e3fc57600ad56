/* router.c — see router.h. */
#include "inference/router.h"

#include "core/clock.h"
#include "core/config.h"
#include "inference/job.h"

#include <stdatomic.h>
#include <stdlib.h>

struct backend_rt {
    unsigned inflight;
    unsigned max;
    atomic_int health;
    uint64_t hold_ewma_ns; /* smoothed time a permit on it is held (0: no history yet) */
    uint64_t told_ns;      /* the latest time a refused client was told to come back */
};

/* Fair queuing: start-time fair queuing (Goyal et al.) per priority class. A waiting job's start
 * tag is max(class virtual time, its key's last finish tag); its key's finish tag then grows by
 * cost / weight. The runnable waiter with the smallest start tag is served first, and the class's
 * virtual time becomes its tag. A key that floods gets ever later tags; a key with one request
 * gets the current virtual time: it is served within about one service time, whatever is queued.
 * The scan over the waiting list (bounded by queue_capacity) also lets a waiter whose backends
 * are free pass waiters whose backends are busy: no head-of-line blocking across models. */
#define TAG_SCALE 1024u /* cost units per tag unit at weight 1 */

struct key_rt {
    uint64_t finish[PRIO__COUNT]; /* last finish tag per class */
    unsigned queued;
};

struct router {
    pthread_mutex_t lock;
    const struct config *cfg;
    router_grant_fn grant;
    void *grant_arg;
    struct backend_rt *be;
    size_t n_be;
    unsigned inflight;
    unsigned queued;
    struct job *head[PRIO__COUNT], *tail[PRIO__COUNT];
    uint64_t vtime[PRIO__COUNT];
    struct key_rt *keys; /* by index in cfg->keys; [n_keys] is the anonymous key (auth off) */
    uint64_t granted_total;
    uint64_t rejected_total;
};

struct router *router_new(const struct config *cfg, router_grant_fn grant, void *arg)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->be = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(*r->be));
    r->keys = calloc(cfg->n_keys + 1, sizeof(*r->keys));
    if (!r->be || !r->keys || pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r->be);
        free(r->keys);
        free(r);
        return NULL;
    }
    r->cfg = cfg;
    r->grant = grant;
    r->grant_arg = arg;
    r->n_be = cfg->n_backends;
    for (size_t i = 0; i < r->n_be; i++) {
        r->be[i].max = cfg->backends[i].max_concurrency;
        atomic_init(&r->be[i].health, HEALTH_UNKNOWN);
    }
    return r;
}

void router_free(struct router *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->be);
    free(r->keys);
    free(r);
}

/* Picks the candidate with a free slot and the lowest load, preferring backends not known to
 * be down. Returns the index or -1. Router lock held. */
static int router__pick(struct router *r, const struct job *job)
{
    if (r->inflight >= r->cfg->max_inflight)
        return -1;
    int best = -1;
    int best_down = 1;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < job->n_candidates; i++) {
        unsigned idx = job->candidates[i]->index;
        struct backend_rt *b = &r->be[idx];
        if (b->inflight >= b->max)
            continue;
        int down = atomic_load_explicit(&b->health, memory_order_relaxed) == HEALTH_DOWN;
        uint64_t load = ((uint64_t)b->inflight << 20) / b->max;
        if (down < best_down || (down == best_down && load < best_load)) {
            best = (int)idx;
            best_down = down;
            best_load = load;
        }
    }
    return best;
}

static void router__take(struct router *r, struct job *job, int idx)
{
    r->be[idx].inflight++;
    r->inflight++;
    r->granted_total++;
    job->backend = idx;
    job->r_granted = true;
    job->t_granted_ns = clock_now_ns();
}

static struct key_rt *router__key(struct router *r, const struct job *job)
{
    size_t i = job->key ? (size_t)(job->key - r->cfg->keys) : r->cfg->n_keys;
    return &r->keys[i <= r->cfg->n_keys ? i : r->cfg->n_keys];
}

static unsigned router__prio(const struct job *job)
{
    return job->prio < PRIO__COUNT ? job->prio : PRIO_NORMAL;
}

static void router__unlink(struct router *r, struct job *job)
{
    unsigned p = router__prio(job);
    if (job->r_prev)
        job->r_prev->r_next = job->r_next;
    else
        r->head[p] = job->r_next;
    if (job->r_next)
        job->r_next->r_prev = job->r_prev;
    else
        r->tail[p] = job->r_prev;
    job->r_next = job->r_prev = NULL;
    job->r_waiting = false;
    r->queued--;
    router__key(r, job)->queued--;
}

/* Queues job with its start tag. Router lock held. */
static void router__enqueue(struct router *r, struct job *job)
{
    unsigned p = router__prio(job);
    struct key_rt *k = router__key(r, job);
    unsigned weight = job->key && job->key->weight ? job->key->weight : 1;
    uint64_t start = r->vtime[p] > k->finish[p] ? r->vtime[p] : k->finish[p];
    uint64_t cost = job->cost ? job->cost : 1;
    k->finish[p] = start + (cost * TAG_SCALE + weight - 1) / weight;
    job->r_tag = start;
    job->r_waiting = true;
    job->r_prev = r->tail[p];
    job->r_next = NULL;
    if (r->tail[p])
        r->tail[p]->r_next = job;
    else
        r->head[p] = job;
    r->tail[p] = job;
    r->queued++;
    k->queued++;
}

/* Whether job's key holds more than its share of a full queue while other keys wait too. The
 * anonymous key (auth off) is everyone: never. Router lock held. */
static bool router__over_share(struct router *r, const struct job *job)
{
    if (!job->key)
        return false;
    unsigned active = 0;
    for (size_t i = 0; i <= r->cfg->n_keys; i++)
        active += r->keys[i].queued > 0;
    const struct key_rt *k = router__key(r, job);
    if (k->queued == 0)
        active++;
    return active >= 2 && k->queued >= r->cfg->queue_capacity / active;
}

enum router_rc router_acquire(struct router *r, struct job *job)
{
    enum router_rc rc;
    pthread_mutex_lock(&r->lock);
    int idx = router__pick(r, job);
    if (idx >= 0) {
        router__take(r, job, idx);
        rc = ROUTER_OK;
    } else if (r->queued >= r->cfg->queue_capacity) {
        r->rejected_total++;
        rc = router__over_share(r, job) ? ROUTER_FAIR_SHARE : ROUTER_FULL;
    } else {
        router__enqueue(r, job);
        rc = ROUTER_QUEUED;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

bool router_cancel(struct router *r, struct job *job)
{
    pthread_mutex_lock(&r->lock);
    bool was_waiting = job->r_waiting;
    if (was_waiting)
        router__unlink(r, job);
    pthread_mutex_unlock(&r->lock);
    return was_waiting;
}

void router_release(struct router *r, struct job *job)
{
    if (job->backend < 0)
        return;
    uint64_t held = clock_now_ns() - job->t_granted_ns;
    pthread_mutex_lock(&r->lock);
    int idx_released = job->backend;
    r->be[job->backend].inflight--;
    r->inflight--;
    job->backend = -1;
    struct backend_rt *hb = &r->be[idx_released];
    hb->hold_ewma_ns = hb->hold_ewma_ns ? (hb->hold_ewma_ns * 7 + held) / 8 : held;
    /* Grant every waiter that can run now: by priority class, then smallest start tag. */
    while (r->queued && r->inflight < r->cfg->max_inflight) {
        struct job *best = NULL;
        int best_idx = -1;
        for (unsigned p = 0; p < PRIO__COUNT && !best; p++) {
            for (struct job *w = r->head[p]; w; w = w->r_next) {
                if (best && w->r_tag >= best->r_tag)
                    continue;
                int idx = router__pick(r, w);
                if (idx >= 0)
                    best = w, best_idx = idx;
            }
        }
        if (!best)
            break;
        unsigned p = router__prio(best);
        if (best->r_tag > r->vtime[p])
            r->vtime[p] = best->r_tag;
        router__unlink(r, best);
        router__take(r, best, best_idx);
        r->grant(best, r->grant_arg);
    }
    pthread_mutex_unlock(&r->lock);
}

/* The pool of `cands`: its slots, its hold-time step, the latest time told, and the waiters
 * (other than `self`) that compete for it. Router lock held. */
static void router__pool(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                         const struct job *self, uint64_t *slots_out, uint64_t *step_out,
                         uint64_t *told_out, uint64_t *ahead_out, unsigned *inflight_out)
{
    uint64_t slots = 0, hold = 0, told = 0;
    unsigned inflight = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct backend_rt *b = &r->be[cands[i]->index];
        slots += b->max;
        inflight += b->inflight;
        uint64_t h =
            b->hold_ewma_ns ? b->hold_ewma_ns : (uint64_t)r->cfg->service_time_prior_ms * NS_PER_MS;
        if (h > hold)
            hold = h;
        if (b->told_ns > told)
            told = b->told_ns;
    }
    if (slots > r->cfg->max_inflight)
        slots = r->cfg->max_inflight;
    if (slots == 0)
        slots = 1;
    uint64_t ahead = 0;
    for (unsigned p = 0; p < PRIO__COUNT; p++) {
        for (const struct job *w = r->head[p]; w; w = w->r_next) {
            bool overlap = false;
            for (unsigned i = 0; i < w->n_candidates && !overlap; i++)
                for (unsigned j = 0; j < n && !overlap; j++)
                    overlap = w->candidates[i] == cands[j];
            ahead += w != self && overlap;
        }
    }
    *slots_out = slots;
    *step_out = hold / slots; /* one permit frees this often, on average */
    *told_out = told;
    *ahead_out = ahead;
    *inflight_out = inflight;
}

static uint64_t router__ms(uint64_t ns)
{
    uint64_t ms = (ns + NS_PER_MS - 1) / NS_PER_MS;
    return ms < 1 ? 1 : ms > 3600000 ? 3600000 : ms;
}

uint64_t router_retry_after_ms(struct router *r, const struct job *job)
{
    uint64_t now = clock_now_ns(), slots, step, told, ahead;
    unsigned inflight;
    pthread_mutex_lock(&r->lock);
    router__pool(r, job->candidates, job->n_candidates, job, &slots, &step, &told, &ahead,
                 &inflight);
    uint64_t at = now + (ahead + 1) * step;
    /* a crowd refused together is told staggered times: each one slot after the last told */
    if (told + step > at)
        at = told + step;
    for (unsigned i = 0; i < job->n_candidates; i++)
        r->be[job->candidates[i]->index].told_ns = at;
    pthread_mutex_unlock(&r->lock);
    return router__ms(at - now);
}

void router_pool_stats(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                       struct router_pool_stats *out)
{
    uint64_t now = clock_now_ns(), slots, step, told, ahead;
    unsigned inflight;
    pthread_mutex_lock(&r->lock);
    router__pool(r, cands, n, NULL, &slots, &step, &told, &ahead, &inflight);
    pthread_mutex_unlock(&r->lock);
    uint64_t at = now + (ahead + 1) * step;
    if (told + step > at)
        at = told + step;
    out->inflight = inflight;
    out->slots = (unsigned)slots;
    out->queued = (unsigned)ahead;
    /* nothing to wait for while a slot is free and nobody waits */
    out->wait_ms = inflight < slots && ahead == 0 ? 0 : router__ms(at - now);
}

unsigned router_key_queued(struct router *r, const struct cfg_key *k)
{
    pthread_mutex_lock(&r->lock);
    size_t i = k ? (size_t)(k - r->cfg->keys) : r->cfg->n_keys;
    unsigned n = i <= r->cfg->n_keys ? r->keys[i].queued : 0;
    pthread_mutex_unlock(&r->lock);
    return n;
}

void router_set_health(struct router *r, unsigned index, enum backend_health h)
{
    if (index < r->n_be)
        atomic_store_explicit(&r->be[index].health, (int)h, memory_order_relaxed);
}

enum backend_health router_health(struct router *r, unsigned index)
{
    if (index >= r->n_be)
        return HEALTH_DOWN;
    return (enum backend_health)atomic_load_explicit(&r->be[index].health, memory_order_relaxed);
}

unsigned router_backend_inflight(struct router *r, unsigned index)
{
    pthread_mutex_lock(&r->lock);
    unsigned n = index < r->n_be ? r->be[index].inflight : 0;
    pthread_mutex_unlock(&r->lock);
    return n;
}

bool router_ready(struct router *r)
{
    bool probing = r->cfg->health_interval_ms > 0;
    for (size_t i = 0; i < r->n_be; i++) {
        enum backend_health h = router_health(r, (unsigned)i);
        if (h == HEALTH_UP || (!probing && h == HEALTH_UNKNOWN))
            return true;
    }
    return false;
}

void router_get_stats(struct router *r, struct router_stats *out)
{
    pthread_mutex_lock(&r->lock);
    out->inflight = r->inflight;
    out->queued = r->queued;
    out->granted_total = r->granted_total;
    out->rejected_total = r->rejected_total;
    pthread_mutex_unlock(&r->lock);
}
