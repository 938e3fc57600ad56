/* eta.h — how long a refused client should wait before a retry gets in: the Retry-After of a
 * 503 queue_full / queue_timeout and of a 429 (a key over its max_concurrency, or over its
 * fair share of a full queue).
 *
 * A refused client needs a place (a permit or a place in the queue), not a slot: a retry gets
 * in when one has freed for it. With S slots each held H on average, a place frees every
 * step = (H + a margin) / S; the first one when the oldest request in flight ends. Each refusal
 * is a promise: the client is told the first place not yet promised to another refused client,
 * half a step after it frees (not on the instant), so a crowd is told staggered times one step
 * apart and, coming back when told, finds room. The margin (once H is measured: 4 deviations
 * of the hold, at least H / 16) is there because a kept promise starts a new hold: the slot it
 * took frees again when the promise S places later falls due, and without slack every such
 * promise races that release.
 * Promises are kept per resource (a backend, a key) as a frontier: the latest time promised and
 * the step it was spaced with, i.e. (frontier - now) / step promises still ahead. Time passing
 * retires them (a promise whose time has come was kept or not: either way it no longer holds a
 * place); a new step (a new measurement) rescales those ahead instead of keeping times made
 * with an old estimate. A client that is refused again before its promised time (one that
 * ignores Retry-After: the same connection) is told the rest of its wait and is not promised a
 * second place, so a hammering client cannot push everyone else's times out.
 *
 * H: the smoothed hold time once any permit has been given back (the measurement wins over
 * any prior), but at least the mean age of the requests in flight (if they have already run
 * longer, the engine got slower). Before any measurement: the larger of [limits]
 * service_time_prior_ms and twice the mean age of the requests in flight (they have run that
 * long and, by the only evidence there is, will run as long again). So a fresh gateway tells a
 * short wait, learns from the first completions, and tells the clients that come back early a
 * true one.
 *
 * Pure arithmetic plus a small table of outstanding promises by client (eta_seen). Thread
 * safety: an `eta` frontier is atomics (a lost update between two threads refusing at the same
 * instant costs one step of stagger, never a stuck value); eta_seen has its own mutex. */
#ifndef LG_ETA_H
#define LG_ETA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Promises told on one resource; embedded in an object that outlives configurations (a
 * backend, a key's state), so reloads keep them. Zero-initialised: none. Fields private. */
struct eta {
    atomic_uint_fast64_t frontier_ns; /* the latest return time promised (monotonic ns) */
    atomic_uint_fast64_t step_ns;     /* the spacing it was promised with */
    /* A resource without a queue (a key's max_concurrency): a slot that frees before its
     * promised client returns stays free for it, so promises already told are not moved
     * earlier when the step shrinks (a new client promised a time among them would take a
     * slot one of them counts on). Set once, before the first promise. */
    bool no_queue;
};

/* What is known of the permits a refused request competes for. */
struct eta_view {
    uint64_t slots;    /* permits (>= 1 used when 0) */
    uint64_t inflight; /* of them, held now */
    uint64_t age_ns;   /* mean age of the held ones (0: none held) */
    uint64_t hold_ns;  /* smoothed hold time measured; 0: none yet */
    uint64_t dev_ns;   /* its smoothed deviation (eta_smooth) */
    uint64_t prior_ns; /* the first guess before any measurement */
};

/* One hold sample into the smoothed time and deviation (TCP's SRTT and RTTVAR, gains 1/8 and
 * 1/4; the first sample is the time, with no deviation). */
void eta_smooth(uint64_t *hold_ns, uint64_t *dev_ns, uint64_t sample_ns);

/* The hold time to plan with (see above); >= 1 ms. */
uint64_t eta_hold_ns(const struct eta_view *v);

/* A place frees every eta_step_ns(v): (hold + margin) / slots, >= 1 µs. The margin, once a hold
 * is measured, is max(4 x deviation, hold / 16): a promised client takes its slot when it comes
 * back, so that slot frees again a hold later, exactly when the promise S places on falls due;
 * without a margin every such promise races the slot's release (and the client's own way back,
 * which the gateway does not see). */
uint64_t eta_step_ns(const struct eta_view *v);

/* From now until the first place frees: the rest of the oldest request's hold (estimated from
 * the mean age when every slot is held), within [step, hold]; one step when slots are free. */
uint64_t eta_first_ns(const struct eta_view *v);

/* Promises still ahead on e at `now`, rescaled to `step_ns`, as time: (frontier - now) in the
 * old step's units times the new step (never less than frontier - now on a no_queue
 * resource). 0 when none. */
uint64_t eta_ahead_ns(const struct eta *e, uint64_t now, uint64_t step_ns);

/* The whole rule for a request that competes for the resources es[0..n-1] (the promises ahead
 * are the most any of them has): the time (absolute, monotonic ns) the next refused client is
 * told, extra_ns later than the first unpromised place (extra_ns: e.g. a queue to drain first),
 * recorded as a promise on each unless `dry` (a look, as GET /v1/queue takes). */
uint64_t eta_tell(struct eta *const *es, unsigned n, const struct eta_view *v, uint64_t now,
                  uint64_t extra_ns, bool dry);

/* Milliseconds from now to at, rounded up, within [1, 3600000]. */
uint64_t eta_ms(uint64_t at_ns, uint64_t now);

/* Outstanding promises by client: `client` names a connection (0: unknown, never matched),
 * `scope` the resource it was refused on (a pool, a key's state). */
struct eta_seen;

/* A table of `slots` entries (rounded up to a power of two, >= 64). NULL out of memory. */
struct eta_seen *eta_seen_new(unsigned slots);
/* NULL is fine. */
void eta_seen_free(struct eta_seen *s);

/* The time promised to `client` on `scope`, if that promise is still ahead of now: true and
 * *at_ns set. Any thread. */
bool eta_seen_get(struct eta_seen *s, uint64_t client, const void *scope, uint64_t now,
                  uint64_t *at_ns);

/* Remembers the promise (replacing an older one of the same client and scope, or an expired
 * or the oldest entry near it). client 0: nothing. Any thread. */
void eta_seen_put(struct eta_seen *s, uint64_t client, const void *scope, uint64_t at_ns,
                  uint64_t now);

#endif
