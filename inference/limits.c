/* limits.c — see limits.h. */
#include "inference/limits.h"

#include "core/config.h"

#include <pthread.h>
#include <stdlib.h>

#define MS_PER_MIN 60000ull

/* A bucket of `cap` units refilled at cap per minute, kept in units * 60,000 ("unit-ms"), so
 * a refill is exact integer arithmetic: elapsed ms * cap (cap <= 1e9: no overflow). */
struct bucket {
    uint64_t cap;   /* units; 0 = no limit */
    uint64_t level; /* unit-ms: units * MS_PER_MIN */
    uint64_t t_ns;  /* last refill, advanced by whole ms */
};

struct key_state {
    pthread_mutex_t mu;
    unsigned inflight, max_inflight;
    struct bucket req, tok;
};

struct limits {
    const struct config *cfg;
    struct key_state *k; /* by index in cfg->keys */
    size_t n;
};

static void bucket_init(struct bucket *b, uint64_t cap, uint64_t now)
{
    b->cap = cap;
    b->level = cap * MS_PER_MIN;
    b->t_ns = now;
}

static void bucket_refill(struct bucket *b, uint64_t now)
{
    if (!b->cap || now <= b->t_ns)
        return;
    uint64_t full = b->cap * MS_PER_MIN, dt = (now - b->t_ns) / 1000000u;
    if (dt >= MS_PER_MIN || full - b->level <= dt * b->cap) {
        b->level = full;
        b->t_ns = now;
    } else {
        b->level += dt * b->cap;
        b->t_ns += dt * 1000000u;
    }
}

/* ms until the bucket holds `units` (it refills cap units a minute), at least 1. */
static uint64_t bucket_wait_ms(const struct bucket *b, uint64_t units)
{
    uint64_t want = units * MS_PER_MIN;
    if (b->level >= want)
        return 1;
    uint64_t ms = (want - b->level + b->cap - 1) / b->cap;
    return ms ? ms : 1;
}

/* Units a request may need at most: a request larger than the whole bucket waits for a full
 * one instead of never being admitted. */
static uint64_t bucket_need(const struct bucket *b, uint64_t units)
{
    return units < b->cap ? units : b->cap;
}

static uint64_t bucket_units(const struct bucket *b)
{
    return b->level / MS_PER_MIN;
}

struct limits *limits_new(const struct config *cfg)
{
    struct limits *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->cfg = cfg;
    l->n = cfg->n_keys;
    l->k = calloc(l->n ? l->n : 1, sizeof(*l->k));
    if (!l->k) {
        free(l);
        return NULL;
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct cfg_key *ck = &cfg->keys[i];
        pthread_mutex_init(&l->k[i].mu, NULL);
        l->k[i].max_inflight = ck->max_concurrency;
        bucket_init(&l->k[i].req, ck->rpm, 0);
        bucket_init(&l->k[i].tok, ck->tpm, 0);
    }
    return l;
}

void limits_free(struct limits *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        pthread_mutex_destroy(&l->k[i].mu);
    free(l->k);
    free(l);
}

uint64_t limits_estimate(uint64_t prompt_bytes, int64_t max_tokens)
{
    return (prompt_bytes + 3) / 4 +
           (max_tokens >= 0 ? (uint64_t)max_tokens : LIM_DEFAULT_MAX_TOKENS);
}

static struct key_state *limits__state(struct limits *l, const struct cfg_key *k)
{
    if (!l || !k)
        return NULL;
    size_t i = (size_t)(k - l->cfg->keys);
    return i < l->n ? &l->k[i] : NULL;
}

/* The verdict for `tokens` (0: only what the headers can tell). Holds ks->mu. */
static enum lim_verdict limits__judge(struct key_state *ks, uint64_t tokens, uint64_t now,
                                      uint64_t *retry_ms)
{
    bucket_refill(&ks->req, now);
    bucket_refill(&ks->tok, now);
    if (ks->max_inflight && ks->inflight >= ks->max_inflight) {
        *retry_ms = 1000; /* a slot frees when one of its requests ends: no better estimate yet */
        return LIM_CONCURRENCY;
    }
    if (ks->req.cap && ks->req.level < MS_PER_MIN) {
        *retry_ms = bucket_wait_ms(&ks->req, 1);
        return LIM_RPM;
    }
    if (ks->tok.cap) {
        uint64_t need = bucket_need(&ks->tok, tokens ? tokens : 1);
        if (ks->tok.level < need * MS_PER_MIN) {
            *retry_ms = bucket_wait_ms(&ks->tok, need);
            return LIM_TPM;
        }
    }
    return LIM_OK;
}

enum lim_verdict limits_check(struct limits *l, const struct cfg_key *k, uint64_t now_ns,
                              uint64_t *retry_ms)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return LIM_OK;
    pthread_mutex_lock(&ks->mu);
    enum lim_verdict v = limits__judge(ks, 0, now_ns, retry_ms);
    pthread_mutex_unlock(&ks->mu);
    return v;
}

enum lim_verdict limits_take(struct limits *l, const struct cfg_key *k, uint64_t tokens,
                             uint64_t now_ns, uint64_t *retry_ms, struct lim_state *st)
{
    struct key_state *ks = limits__state(l, k);
    if (st)
        *st = (struct lim_state){0};
    if (!ks)
        return LIM_OK;
    pthread_mutex_lock(&ks->mu);
    enum lim_verdict v = limits__judge(ks, tokens, now_ns, retry_ms);
    if (v == LIM_OK) {
        ks->inflight++;
        if (ks->req.cap)
            ks->req.level -= MS_PER_MIN;
        if (ks->tok.cap) {
            uint64_t take = bucket_need(&ks->tok, tokens) * MS_PER_MIN;
            ks->tok.level = ks->tok.level > take ? ks->tok.level - take : 0;
        }
        if (st) {
            if (ks->req.cap) {
                st->limit_requests = (unsigned)ks->req.cap;
                st->remaining_requests = (unsigned)bucket_units(&ks->req);
                st->reset_requests_ms = bucket_wait_ms(&ks->req, ks->req.cap);
            }
            if (ks->tok.cap) {
                st->limit_tokens = (unsigned)ks->tok.cap;
                st->remaining_tokens = (unsigned)bucket_units(&ks->tok);
                st->reset_tokens_ms = bucket_wait_ms(&ks->tok, ks->tok.cap);
            }
        }
    }
    pthread_mutex_unlock(&ks->mu);
    return v;
}

void limits_reconcile(struct limits *l, const struct cfg_key *k, uint64_t charged, uint64_t used)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks || !ks->tok.cap)
        return;
    pthread_mutex_lock(&ks->mu);
    charged = bucket_need(&ks->tok, charged); /* what limits_take took */
    uint64_t full = ks->tok.cap * MS_PER_MIN;
    if (used > ks->tok.cap)
        used = ks->tok.cap;
    if (used < charged) {
        uint64_t back = (charged - used) * MS_PER_MIN;
        ks->tok.level = full - ks->tok.level < back ? full : ks->tok.level + back;
    } else {
        uint64_t more = (used - charged) * MS_PER_MIN;
        ks->tok.level = ks->tok.level > more ? ks->tok.level - more : 0;
    }
    pthread_mutex_unlock(&ks->mu);
}

void limits_release(struct limits *l, const struct cfg_key *k)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return;
    pthread_mutex_lock(&ks->mu);
    if (ks->inflight)
        ks->inflight--;
    pthread_mutex_unlock(&ks->mu);
}

unsigned limits_inflight(struct limits *l, unsigned i)
{
    if (!l || i >= l->n)
        return 0;
    pthread_mutex_lock(&l->k[i].mu);
    unsigned v = l->k[i].inflight;
    pthread_mutex_unlock(&l->k[i].mu);
    return v;
}

const char *limits_name(enum lim_verdict v)
{
    switch (v) {
    case LIM_CONCURRENCY:
        return "max_concurrency";
    case LIM_RPM:
        return "rpm";
    case LIM_TPM:
        return "tpm";
    case LIM_OK:
        break;
    }
    return "none";
}
