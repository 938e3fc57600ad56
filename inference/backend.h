/* backend.h — backends as named objects. A configuration names its backends ([backend.NAME]);
 * the object behind a name outlives any one configuration: a reload that keeps a backend (the
 * same name and url) keeps its object, so its health, the permits held on it, its permit hold
 * time history and its counters carry over, whatever its position in the new file. An object
 * is freed when the last configuration that names it is (requests pin their configuration).
 *
 * Thread safety: the registry has one mutex (taken only to bind and unbind configurations);
 * an object's counters are atomics; its list of admission pools has its own mutex. */
#ifndef LG_BACKEND_H
#define LG_BACKEND_H

#include "inference/eta.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct config;
struct rpool;

enum backend_health { HEALTH_UNKNOWN = 0, HEALTH_UP, HEALTH_DOWN };

struct backend {
    char *name;
    char *url;
    atomic_uint ref; /* configurations binding it */
    atomic_int health;
    atomic_uint inflight;              /* permits held on it */
    atomic_uint max;                   /* its max_concurrency, from the newest configuration */
    atomic_uint_fast64_t hold_ns;      /* smoothed time a permit is held (0: no history yet) */
    atomic_uint_fast64_t hold_dev_ns;  /* its smoothed deviation (inference/eta.h) */
    atomic_uint_fast64_t grant_us_sum; /* sum of the grant times (µs) of the permits held: their
                                        * mean age, for Retry-After (inference/eta.h) */
    struct eta eta;                    /* promises told to clients refused on it (Retry-After) */
    atomic_uint_fast64_t granted;      /* permits granted on it, ever */
    atomic_uint_fast64_t failures;     /* transfers that failed on it (connect, broken, timeout) */
    /* the admission pools (one per live configuration) whose waiters a freed permit on it may
     * serve: a request of an old configuration gives its permit back to the new one's queue */
    pthread_mutex_t plock;
    struct rpool **pools; /* one per live configuration naming it (grown as needed) */
    unsigned n_pools, cap_pools;
    atomic_uint n_pools_hint; /* n_pools, for a look without the lock */
    struct backend *next;     /* in the registry */
};

struct backends;

struct backends *backends_new(void);
/* Frees the registry; every configuration must be unbound. NULL is fine. */
void backends_free(struct backends *reg);

/* Binds cfg->backends[i].be for every backend of cfg: the object of the same name and url, or
 * a new one; max_concurrency is taken from cfg. 0, or -1 out of memory (nothing bound). */
int backends_bind(struct backends *reg, struct config *cfg);

/* Drops cfg's references (an object no configuration names any more is freed). */
void backends_unbind(struct backends *reg, struct config *cfg);

/* Smoothed permit hold time, updated with one sample. */
void backend_hold_sample(struct backend *b, uint64_t held_ns);

#endif
