/* router.h — backend registry, model routing and admission: concurrency permits per engine
 * (max_concurrency) and gateway-wide (max_inflight), the waiting requests (queue_capacity)
 * served by strict priority and, within a priority, weighted fair queuing across API keys
 * (start-time fair queuing charged by estimated tokens), backend health, and an honest
 * Retry-After estimate.
 *
 * Thread safety: every function may be called from any thread; one mutex guards the state and
 * is held only for short, non-blocking work. Lock order: the router lock may be taken while
 * no job lock is held; the grant callback runs under the router lock and must not take it. */
#ifndef LG_ROUTER_H
#define LG_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

struct cfg_backend;
struct cfg_key;
struct config;
struct job;
struct router;

/* Called, under the router lock, when a waiting job is granted a permit (job->backend set).
 * It must only hand the job to its worker (wait-free enqueue + wakeup). */
typedef void (*router_grant_fn)(struct job *job, void *arg);

/* ROUTER_FAIR_SHARE: the queue is full and the job's key holds more than its share of it
 * while other keys wait too: its own fault (429), not the gateway's (503). */
enum router_rc { ROUTER_OK, ROUTER_QUEUED, ROUTER_FULL, ROUTER_FAIR_SHARE };

enum backend_health { HEALTH_UNKNOWN = 0, HEALTH_UP, HEALTH_DOWN };

struct router_stats {
    unsigned inflight;
    unsigned queued;
    uint64_t granted_total;
    uint64_t rejected_total;
};

/* Creates the router for `cfg` (which must outlive it). Returns NULL when out of memory. */
struct router *router_new(const struct config *cfg, router_grant_fn grant, void *arg);

/* Frees the router; no job may be waiting. NULL is fine. */
void router_free(struct router *r);

/* Tries to give `job` a permit on one of its candidate backends.
 * ROUTER_OK: permit held, job->backend set. ROUTER_QUEUED: the job waits; the grant callback
 * runs later (or router_cancel takes it back). ROUTER_FULL: queue full, nothing held. */
enum router_rc router_acquire(struct router *r, struct job *job);

/* Takes a waiting job out of the queue. Returns true if it was waiting (no permit held);
 * false if it had been granted already (the grant callback ran or is running). */
bool router_cancel(struct router *r, struct job *job);

/* Returns the permit `job` holds and grants waiting jobs that can now run. */
void router_release(struct router *r, struct job *job);

/* Milliseconds job's client, refused now, should wait before a retry is likely to get in: its
 * position among the waiters that compete for the same backends × the pool's smoothed permit
 * hold time ÷ its slots (the pool's backends' max_concurrency, capped by max_inflight), with
 * [limits] service_time_prior_ms before any history. Clients refused in a row are told times
 * one slot apart, so that a crowd coming back when told finds room. In [1, 3600000]. */
uint64_t router_retry_after_ms(struct router *r, const struct job *job);

/* A pool's live state for GET /v1/queue: the backends in `cands` (a model's candidates), their
 * requests in flight and slots, the waiters that compete for them, and the wait a new request
 * would be told (without counting it as told). */
struct router_pool_stats {
    unsigned inflight, slots, queued;
    uint64_t wait_ms;
};
void router_pool_stats(struct router *r, const struct cfg_backend *const *cands, unsigned n,
                       struct router_pool_stats *out);

/* Requests of key `k` (NULL: without a key) waiting now. */
unsigned router_key_queued(struct router *r, const struct cfg_key *k);

/* Records a probe or transfer outcome for backend `index`. */
void router_set_health(struct router *r, unsigned index, enum backend_health h);

/* Health of backend `index`. */
enum backend_health router_health(struct router *r, unsigned index);

/* Current in-flight requests on backend `index`. */
unsigned router_backend_inflight(struct router *r, unsigned index);

/* True when at least one backend is up (or unknown while probing is off). */
bool router_ready(struct router *r);

/* Snapshot of the counters. */
void router_get_stats(struct router *r, struct router_stats *out);

#endif
