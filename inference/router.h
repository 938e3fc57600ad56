/* router.h — admission: concurrency permits per engine (max_concurrency) and gateway-wide
 * (max_inflight), and the waiting requests, in one queue per model pool.
 *
 * A pool is a set of backends that some model's requests may use: the models whose backends
 * overlap share one (their requests compete for the same permits), models on disjoint backends
 * never do. Each pool has its own lock, waiting lists and fair-queuing clock, so that a
 * saturated model never delays another. Inside a pool: strict priority between classes, then
 * weighted fair queuing across API keys (start-time fair queuing charged by estimated tokens).
 * The queue is bounded gateway-wide (queue_capacity) and per pool (pool_queue_capacity).
 *
 * Pools are built per configuration (router_bind) from its backends and models; the backend
 * objects they count permits on outlive configurations (inference/backend.h). A permit freed by
 * a request of an old configuration is offered to the pools of the new one that share its
 * backend, and a gateway slot (max_inflight) freed in one pool to the pools that wait only for
 * one, in turn.
 *
 * Thread safety: every function may be called from any thread. Locks are held for short,
 * non-blocking work and never nested except: a backend's pool-list lock or the router's pool
 * list lock, then one pool lock. The grant callback runs under a pool lock and must not call
 * the router. No job lock is held when the router is called. */
#ifndef LG_ROUTER_H
#define LG_ROUTER_H

#include "core/errors.h"
#include "inference/backend.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct cfg_backend;
struct cfg_key;
struct config;
struct job;
struct router;

/* Called, under a pool lock, when a waiting job is granted a permit (job->backend set).
 * It must only hand the job to its worker (wait-free enqueue + wakeup). */
typedef void (*router_grant_fn)(struct job *job, void *arg);

/* ROUTER_FAIR_SHARE: the queue is full and the job's key holds more than its share of it
 * while other keys wait too: its own fault (429), not the gateway's (503). */
enum router_rc { ROUTER_OK, ROUTER_QUEUED, ROUTER_FULL, ROUTER_FAIR_SHARE };

struct router_stats {
    unsigned inflight;
    unsigned queued;
    uint64_t granted_total;
    uint64_t rejected_total;
};

/* Creates the router. Returns NULL when out of memory. */
struct router *router_new(router_grant_fn grant, void *arg);

/* Frees the router; every configuration must be unbound. NULL is fine. */
void router_free(struct router *r);

/* Builds cfg's pools (cfg->backends[i].pool); its backends must be bound (backends_bind).
 * 0, or -1 out of memory (nothing built). */
int router_bind(struct router *r, struct config *cfg);

/* Makes cfg's gateway-wide limits (max_inflight, queue_capacity, the Retry-After prior) the
 * router's: the newest configuration's. */
void router_apply(struct router *r, const struct config *cfg);

/* Frees cfg's pools; none of its jobs may be waiting. */
void router_unbind(struct router *r, struct config *cfg);

/* Tries to give `job` a permit on one of its candidate backends (all in one pool of the job's
 * configuration). ROUTER_OK: permit held, job->backend set. ROUTER_QUEUED: the job waits; the
 * grant callback runs later (or router_cancel takes it back). ROUTER_FULL: queue full,
 * nothing held. */
enum router_rc router_acquire(struct router *r, struct job *job);

/* Takes a waiting job out of the queue. Returns true if it was waiting (no permit held);
 * false if it had been granted already (the grant callback ran or is running). */
bool router_cancel(struct router *r, struct job *job);

/* Returns the permit `job` holds and grants waiting jobs that can now run. */
void router_release(struct router *r, struct job *job);

/* Milliseconds job's client, refused now for `why` (LGE_QUEUE_FULL, LGE_QUEUE_TIMEOUT, a 429
 * LGE_RATE_LIMITED for its fair share, or another 503), should wait before a retry is likely to
 * get in: the first place on its backends not promised to another refused client
 * (inference/eta.h: hold time measured, or the prior / the age of what runs before any; promises
 * spaced one place apart, retired as time passes). A queue_timeout adds the time until the wait
 * behind those queued fits in the timeout. The three refusals are recorded as promises (a
 * client refused again before its time is told the rest of it); other 503s only look. In
 * [1, 3600000]. */
uint64_t router_retry_after_ms(struct router *r, const struct job *job, enum lg_err why);

/* A pool's live state for GET /v1/queue: the backends in `cands` (a model's candidates), their
 * requests in flight and slots, the waiters that compete for them, and the wait a new request
 * would be told (without counting it as told). */
struct router_pool_stats {
    unsigned inflight, slots, queued;
    uint64_t wait_ms;
};
void router_pool_stats(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                       struct router_pool_stats *out);

/* Requests of key `k` of cfg (NULL: without a key) waiting now in cfg's pools. */
unsigned router_key_queued(struct router *r, const struct config *cfg, const struct cfg_key *k);

/* Records a probe or transfer outcome. */
void router_set_health(struct backend *b, enum backend_health h);
enum backend_health router_health(const struct backend *b);

/* True when at least one of cfg's backends is up (or unknown while probing is off). */
bool router_ready(const struct config *cfg);

/* Snapshot of the counters. */
void router_get_stats(struct router *r, struct router_stats *out);

/* The gateway-wide count of requests waiting for a permit, to be looked at without a lock
 * (the front door parks request bodies while it is not 0: http/guard.h). */
const atomic_uint *router_waiting(struct router *r);

#endif
