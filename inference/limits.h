/* limits.h — per-key limits: requests in progress (max_concurrency), requests per minute (rpm)
 * and tokens per minute (tpm) as token buckets, each with the time until it would admit again.
 *
 * A key over a limit gets 429 rate_limit_exceeded naming the limit, with Retry-After: the
 * bucket's refill time for rpm/tpm, the time until one of its slots frees for concurrency. What the
 * headers decide (concurrency, an empty rpm or tpm bucket) is decided before the body is read
 * (limits_check); the body's estimate is taken at admission (limits_take), atomically with the
 * check. A request in progress holds its key's slot until its end (limits_release, from the
 * completion callback: every path ends there).
 *
 * Buckets start full (a key may burst its whole minute at once, as OpenAI's do) and refill
 * continuously; the tpm bucket may go below zero (tokens used beyond the estimates are owed). Token
 * cost is an estimate: prompt bytes / 4 + max_tokens (or a default when the request sets none). One
 * mutex per key; any thread. A key's state belongs to its name and survives reloads that keep the
 * name (limits_bind). */
#ifndef LG_LIMITS_H
#define LG_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct cfg_key;
struct limits;

enum lim_verdict { LIM_OK = 0, LIM_CONCURRENCY, LIM_RPM, LIM_TPM };

/* What the x-ratelimit-* headers say after an admission (OpenAI's names). */
struct lim_state {
    unsigned limit_requests, remaining_requests; /* 0/0 when the key has no rpm */
    uint64_t reset_requests_ms;                  /* until the rpm bucket is full again */
    unsigned limit_tokens, remaining_tokens;     /* 0/0 when the key has no tpm */
    uint64_t reset_tokens_ms;
    uint64_t taken_tokens; /* taken from the tpm bucket (the estimate, at most the cap; 0
                            * without tpm): what limits_reconcile settles */
    bool took_request;     /* one taken from the rpm bucket: limits_refund_request's to give */
};

/* Tokens a request is estimated to cost when it sets no max_tokens. */
#define LIM_DEFAULT_MAX_TOKENS 256

/* The registry of key states, by key name. */
struct limits *limits_new(void);
/* Frees the registry; every configuration must be unbound. NULL is fine. */
void limits_free(struct limits *l);

/* Binds cfg->keys[i].st for each key of cfg: the state of the same name (its slots in use and
 * bucket levels carry over; its limits become cfg's), or a new one with full buckets. 0, or -1
 * out of memory (nothing bound). */
int limits_bind(struct limits *l, struct config *cfg, uint64_t now_ns);

/* Drops cfg's references; a state no configuration names any more is freed. */
void limits_unbind(struct limits *l, struct config *cfg);

/* The estimated token cost of a request. */
uint64_t limits_estimate(uint64_t prompt_bytes, int64_t max_tokens);

/* Before the body: would key k be refused now? *retry_ms: when to come back (>= 1). NULL k or
 * a key without limits: LIM_OK. Takes nothing, but a refusal for max_concurrency is a promise
 * (inference/eta.h): `client` names the connection (0: unknown), so that one refused again
 * before its time is told the rest of it instead of a new place. */
enum lim_verdict limits_check(struct limits *l, const struct cfg_key *k, uint64_t now_ns,
                              uint64_t client, uint64_t *retry_ms);

/* At admission: takes a slot, a request and `tokens` from k's buckets, or nothing and returns
 * why not (with *retry_ms; `client` as for limits_check). LIM_OK also fills *st when st is not
 * NULL; limits_release must be given the same now_ns. */
enum lim_verdict limits_take(struct limits *l, const struct cfg_key *k, uint64_t tokens,
                             uint64_t now_ns, uint64_t client, uint64_t *retry_ms,
                             struct lim_state *st);

/* Settles a request's tpm charge once its cost is known: `taken` is what limits_take took
 * (lim_state.taken_tokens), `used` the engine's usage (0 for a request no engine saw: a refund).
 * The difference goes back to k's tpm bucket (never past full), or is owed: the bucket goes
 * below zero and refills from there (at most an hour of the cap is owed), so requests admitted
 * together that used more than they were charged are not forgiven. Nothing when `taken` is 0,
 * or when k has no tpm limit any more. Once per admitted request; any thread. */
void limits_reconcile(struct limits *l, const struct cfg_key *k, uint64_t taken, uint64_t used);

/* A request limits_take admitted (lim_state.took_request) that no engine saw (refused by the
 * gateway itself: queue full or timed out, fair share, draining; the client gone while queued;
 * no engine reachable): its request goes back to k's rpm bucket (never past full; nothing when
 * k has no rpm limit any more). Once per such request; any thread. */
void limits_refund_request(struct limits *l, const struct cfg_key *k);

/* The end, at now_ns, of a request that limits_take admitted at taken_ns (the now_ns it was
 * given; 0 and 0: not measured): its slot back. The time held, smoothed, and the age of those
 * still in progress give the Retry-After of a refusal for max_concurrency (inference/eta.h: one
 * of the key's slots frees every hold / max_concurrency; [limits] service_time_prior_ms, or
 * twice the age in progress, before any history), staggered for clients refused in a row. */
void limits_release(struct limits *l, const struct cfg_key *k, uint64_t taken_ns, uint64_t now_ns);

/* Requests of key k in progress (for /metrics and the tests). */
unsigned limits_inflight(struct limits *l, const struct cfg_key *k);

/* The limit's name for messages: "max_concurrency", "rpm", "tpm". */
const char *limits_name(enum lim_verdict v);

#endif
