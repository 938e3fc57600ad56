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
    struct job *head, *tail;
    uint64_t hold_ewma_ns; /* smoothed time a permit is held */
    uint64_t granted_total;
    uint64_t rejected_total;
};

struct router *router_new(const struct config *cfg, router_grant_fn grant, void *arg)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->be = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(*r->be));
    if (!r->be || pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r->be);
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

static void router__unlink(struct router *r, struct job *job)
{
    if (job->r_prev)
        job->r_prev->r_next = job->r_next;
    else
        r->head = job->r_next;
    if (job->r_next)
        job->r_next->r_prev = job->r_prev;
    else
        r->tail = job->r_prev;
    job->r_next = job->r_prev = NULL;
    job->r_waiting = false;
    r->queued--;
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
        rc = ROUTER_FULL;
    } else {
        job->r_waiting = true;
        job->r_prev = r->tail;
        job->r_next = NULL;
        if (r->tail)
            r->tail->r_next = job;
        else
            r->head = job;
        r->tail = job;
        r->queued++;
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
    r->be[job->backend].inflight--;
    r->inflight--;
    job->backend = -1;
    r->hold_ewma_ns = r->hold_ewma_ns ? (r->hold_ewma_ns * 7 + held) / 8 : held;
    /* Grant in FIFO order every waiter that can run now; a waiter whose backends are all busy
     * does not block waiters for other backends. */
    for (struct job *w = r->head, *next; w && r->inflight < r->cfg->max_inflight; w = next) {
        next = w->r_next;
        int idx = router__pick(r, w);
        if (idx < 0)
            continue;
        router__unlink(r, w);
        router__take(r, w, idx);
        r->grant(w, r->grant_arg);
    }
    pthread_mutex_unlock(&r->lock);
}

unsigned router_retry_after(struct router *r)
{
    pthread_mutex_lock(&r->lock);
    uint64_t ahead = (uint64_t)r->queued + 1;
    uint64_t ns = r->hold_ewma_ns * ahead / (r->cfg->max_inflight ? r->cfg->max_inflight : 1);
    pthread_mutex_unlock(&r->lock);
    uint64_t s = (ns + NS_PER_S - 1) / NS_PER_S;
    if (s < 1)
        s = 1;
    if (s > 3600)
        s = 3600;
    return (unsigned)s;
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
