/* rqueue.h — the waiting requests of one admission pool (inference/router.c), ordered by
 * strict priority, then start-time fair queuing across API keys, with no head-of-line blocking
 * across the models of the pool; every operation costs O(log keys) plus a walk over the pool's
 * candidate sets (one per model of the pool, a handful), whatever the number of waiters.
 *
 * Structure: a *set* is one candidate list (the backends a model's requests may use; a pool
 * has one per model). Per priority class and set, each key has a *flow*: its waiters in arrival
 * order (their start tags grow along it). Per class and set, a heap orders the non-empty flows
 * by the start tag of their head. The next grant is the smallest head among the sets whose
 * backends have room, in the first class that has one; a waiter whose set's backends are free
 * passes heads whose backends are busy. Counts are kept per set (the waiters competing for some
 * backends are a sum over the sets that share one) and per key (the keys waiting are a count).
 *
 * Tags: a waiter's start tag is max(class virtual time, its key's finish tag); the key's finish
 * tag then grows by charge × 1024 / weight, where the charge is the request's estimated tokens
 * capped at RQ_MAX_CHARGE, and exactly RQ_MAX_CHARGE for a request without max_tokens (it may
 * produce as much as the engine allows: it is not cheaper than an honest one). A waiter that
 * leaves without a grant (timeout, cancel) gives back what it was charged when it was its key's
 * newest in its class, and a key with nothing left waiting in a class is charged only for what
 * it was served: a backlog that expired leaves no phantom tag behind.
 *
 * Not thread-safe: the pool's lock serialises every call. */
#ifndef LG_RQUEUE_H
#define LG_RQUEUE_H

#include "core/config.h"
#include "core/heap.h"
#include "inference/job.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most tokens one request is charged: about the most an engine produces for one request
 * (a long context). Keeps tags far from overflow: 2^15 × 1024 per request. */
#define RQ_MAX_CHARGE 32768u
#define RQ_TAG_SCALE 1024u /* tag units per charged token at weight 1 */

struct rq_flow; /* private to rqueue.c */

struct rq_key {
    uint64_t finish[PRIO__COUNT]; /* the start tag of its next request, at least */
    uint64_t served[PRIO__COUNT]; /* the finish tag of its latest request granted */
    unsigned queued;              /* its waiters, every class */
    unsigned queued_cls[PRIO__COUNT];
    struct rq_flow *flows; /* its flows (created on first use, kept until rq_release) */
};

struct rq_set {
    const struct cfg_backend *cands[JOB_MAX_CANDIDATES];
    unsigned n;
    unsigned queued;               /* its waiters, every class */
    struct heap heap[PRIO__COUNT]; /* its non-empty flows by head tag */
};

/* Embedded in the pool; fields are private to rqueue.c (read-only elsewhere). */
struct rqueue {
    const struct cfg_key *key_base; /* the configuration's keys: a job's key index */
    size_t n_keys;                  /* keys[n_keys] is the anonymous key (auth off) */
    struct rq_key *keys;
    struct rq_set *sets;
    unsigned n_sets, cap_sets;
    uint64_t vtime[PRIO__COUNT];
    unsigned queued;      /* every waiter */
    unsigned active_keys; /* keys with at least one waiter */
    uint64_t steps;       /* sets and flows looked at, ever: the unit tests' cost meter */
};

/* An empty queue for cfg's keys. 0, or -1 out of memory. */
int rq_init(struct rqueue *q, const struct config *cfg);

/* Frees what the queue allocated; nothing may be waiting. */
void rq_release(struct rqueue *q);

/* Tags `job` and queues it (job->r_waiting set). 0, or -1 out of memory (nothing changed). */
int rq_push(struct rqueue *q, struct job *job);

/* Takes a waiting job out: `granted` (it was served: the class clock moves to its tag) or not
 * (it left: its key gets back what only a served request pays). */
void rq_remove(struct rqueue *q, struct job *job, bool granted);

/* The waiter to grant next: in the first class that has one whose candidates have room
 * (`runnable`), the smallest start tag. NULL: none can run now. */
struct job *rq_best(struct rqueue *q, bool (*runnable)(const struct job *job));

/* Waiters (other than `self`) whose candidates include one of cands[0..n). */
unsigned rq_ahead(struct rqueue *q, const struct cfg_backend *const *cands, unsigned n,
                  const struct job *self);

/* The key of `job` (the anonymous one without a key). */
struct rq_key *rq_key_of(struct rqueue *q, const struct job *job);

#endif
