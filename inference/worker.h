/* worker.h — the fixed pool of inference workers. Each worker is one thread with one epoll
 * loop, one libcurl multi handle driven by curl_multi_socket_action, one wait-free inbound
 * queue (liburcu wfcqueue) woken through an eventfd, and the waiting list of the jobs it owns.
 * Workers own every upstream transfer: only they call curl on it (add, pause/unpause, remove).
 * Worker 0 also runs the active health probes.
 *
 * Threads: pool_submit/pool_cancel/pool_unpause are called by libmicrohttpd threads; the
 * lifecycle functions by the main thread. See docs/ARCHITECTURE.md. */
#ifndef LG_WORKER_H
#define LG_WORKER_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct job;
struct limits;
struct snap;
struct pool;
struct router;

struct pool_stats {
    uint64_t active;          /* jobs submitted and not finished */
    uint64_t upstream_errors; /* transfers that failed (connect, broken, timeout) */
    uint64_t client_aborts;   /* clients that left before the end */
    uint64_t send_timeouts;   /* clients cut at client_send_timeout_s */
    uint64_t started;         /* upstream transfers started */
    uint64_t ttft_ns_sum;     /* first upstream event, summed over streams that had one */
    uint64_t ttft_count;
};

/* Creates the pool (threads not started), sized by cfg's [server] workers and its backends'
 * slots (fixed until a restart). Nothing is published yet: see pool_prepare. NULL on failure. */
struct pool *pool_new(const struct config *cfg);

/* A snapshot of cfg (taken over, freed with the snapshot even on failure) with the pool's
 * runtime objects bound: backend objects and key states by name, upstream URLs, admission
 * pools. Unpublished; the caller may add the HTTP side's data. NULL when out of memory. */
struct snap *pool_prepare(struct pool *p, struct config *cfg);

/* Publishes a prepared snapshot (taking over the caller's reference): new requests see it; the
 * previous one lives on until its last request ends. Returns its generation. One caller at a
 * time; not from inside a snapshot read section. */
uint64_t pool_publish(struct pool *p, struct snap *s);

/* The current snapshot with a reference (snap_put it). Any thread. */
struct snap *pool_snap(struct pool *p);

/* The key states (limits.h). */
struct limits *pool_limits(struct pool *p);

/* Starts the worker threads. Returns 0, or -1 (nothing left running). Main thread. */
int pool_start(struct pool *p);

/* Hands `job` to a worker (round robin). The connection must already be suspended with
 * job->suspended set. Takes its own reference; the caller keeps its own. Returns 0, or -1 when
 * the pool is draining (nothing was taken; the caller answers 503 draining). HTTP thread. */
int pool_submit(struct pool *p, struct job *job);

/* The client side of `job` is finished (libmicrohttpd completed the request): the worker stops
 * the upstream transfer if it still runs. Only for submitted jobs. HTTP thread. */
void pool_cancel(struct pool *p, struct job *job);

/* Asks the owning worker to resume the paused upstream transfer. Caller holds job->lock and has
 * set job->unpause_pending. Any thread. */
void pool_unpause(struct pool *p, struct job *job);

/* Watches the suspended client connection of `job` for hang-ups on its worker, so a client
 * that leaves during a silent phase (prefill) cancels the upstream at once. Caller holds
 * job->lock. Any thread. */
void pool__watch_locked(struct pool *p, struct job *job);

/* Refuses new submissions from now on. Main thread. */
void pool_drain(struct pool *p);

/* Ends every job now: answers 503 draining to those without upstream headers, ends the
 * others' streams with an error; keeps failing anything that still arrives. Main thread. */
void pool_abort_all(struct pool *p);

/* Tells every worker to stop once it has ended its jobs (call pool_abort_all first) and joins
 * them, waiting at most `ms`. 0: every worker is joined, and none will touch a job or a client
 * connection again, so the HTTP daemon may be stopped. -1: a worker is still running (stuck in
 * a call): the connections its jobs point at must not be freed, nor the pool. Main thread. */
int pool_join(struct pool *p, unsigned ms);

/* Stops and joins the workers, then releases every job still referenced by a queue.
 * Call after the HTTP daemon is stopped. Main thread. */
void pool_stop(struct pool *p);

/* Frees the pool (stopped or never started). NULL is fine. */
void pool_free(struct pool *p);

/* The pool's router (admission, backends, health). */
struct router *pool_router(struct pool *p);

/* Counters; any thread. */
void pool_get_stats(struct pool *p, struct pool_stats *out);

#endif
