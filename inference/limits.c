/* limits.c — see limits.h. */
#include "inference/limits.h"

#include "core/siphash.h"

#include "core/config.h"
#include "inference/eta.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MS_PER_MIN 60000ull

/* A bucket of `cap` units refilled at cap per minute, kept in units * 60,000 ("unit-ms"), so
 * a refill is exact integer arithmetic: elapsed ms * cap (cap <= 1e9: no overflow). The level
 * may be below zero: tokens used beyond what requests admitted together were charged are owed
 * (limits_reconcile) and refill first, down to at most BUCKET_DEBT_MINUTES of the cap. */
struct bucket {
    uint64_t cap;  /* units; 0 = no limit */
    int64_t level; /* unit-ms: units * MS_PER_MIN; negative: owed */
    uint64_t t_ns; /* last refill, advanced by whole ms */
};

/* The most a key may owe: an hour of its tpm (a bound so that no run of overdraws can take
 * the level out of range; 60 * 1e9 * 60,000 = 3.6e15 unit-ms). */
#define BUCKET_DEBT_MINUTES 60

static int64_t bucket_full(const struct bucket *b)
{
    return (int64_t)(b->cap * MS_PER_MIN);
}

/* A key's state, named: a reload that keeps the key (its name) keeps it, with its slots in use
 * and its buckets' levels; the limits come from the newest configuration that binds it. */
struct key_state {
    pthread_mutex_t mu;
    unsigned inflight, max_inflight;
    uint64_t hold_ns;      /* smoothed time its requests hold a slot (0: no history yet) */
    uint64_t hold_dev_ns;  /* its smoothed deviation (inference/eta.h) */
    uint64_t prior_ns;     /* assumed before any history ([limits] service_time_prior_ms) */
    uint64_t start_us_sum; /* sum of the admission times (µs) of those in progress: their age */
    struct eta eta;        /* promises told to its clients refused for concurrency */
    struct bucket req, tok;
    char *name;
    unsigned ref; /* configurations binding it (registry lock) */
    struct key_state *next;
};

struct limits {
    pthread_mutex_t lock;  /* the registry: bind and unbind only */
    struct eta_seen *seen; /* promises by connection (Retry-After of max_concurrency) */
    /* key states by name: chained hash, at most one state per bucket on average */
    struct ks_bucket {
        struct key_state *head;
    } * tab;
    size_t mask, n;
};

static size_t limits__bucket(const struct limits *l, const char *name)
{
    return siphash24_name(name) & l->mask;
}

static struct key_state *limits__find_locked(const struct limits *l, const char *name)
{
    if (!l->tab)
        return NULL;
    struct key_state *ks = l->tab[limits__bucket(l, name)].head;
    while (ks && strcmp(ks->name, name) != 0)
        ks = ks->next;
    return ks;
}

/* Room for one more state: the table doubled (and refilled) when full. false: out of memory. */
static bool limits__room_locked(struct limits *l)
{
    if (l->tab && l->n + 1 <= l->mask + 1)
        return true;
    size_t cap = l->tab ? 2 * (l->mask + 1) : 64;
    struct ks_bucket *t = calloc(cap, sizeof(*t));
    if (!t)
        return false;
    struct ks_bucket *old = l->tab;
    size_t old_cap = old ? l->mask + 1 : 0;
    l->tab = t;
    l->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        for (struct key_state *ks = old[i].head, *next; ks; ks = next) {
            next = ks->next;
            size_t b = limits__bucket(l, ks->name);
            ks->next = t[b].head;
            t[b].head = ks;
        }
    }
    free(old);
    return true;
}

static void bucket_init(struct bucket *b, uint64_t cap, uint64_t now)
{
    b->cap = cap;
    b->level = bucket_full(b);
    b->t_ns = now;
}

static void bucket_refill(struct bucket *b, uint64_t now)
{
    if (!b->cap || now <= b->t_ns)
        return;
    int64_t full = bucket_full(b);
    uint64_t dt = (now - b->t_ns) / 1000000u;
    /* BUCKET_DEBT_MINUTES + 1 refill any debt and the bucket */
    if (dt >= (BUCKET_DEBT_MINUTES + 1) * MS_PER_MIN ||
        (uint64_t)(full - b->level) <= dt * b->cap) {
        b->level = full;
        b->t_ns = now;
    } else {
        b->level += (int64_t)(dt * b->cap);
        b->t_ns += dt * 1000000u;
    }
}

/* ms until the bucket holds `units` (it refills cap units a minute), at least 1. */
static uint64_t bucket_wait_ms(const struct bucket *b, uint64_t units)
{
    int64_t want = (int64_t)(units * MS_PER_MIN);
    if (b->level >= want)
        return 1;
    uint64_t ms = ((uint64_t)(want - b->level) + b->cap - 1) / b->cap;
    return ms ? ms : 1;
}

/* Units a request may need at most: a request larger than the whole bucket waits for a full
 * one instead of never being admitted. */
static uint64_t bucket_need(const struct bucket *b, uint64_t units)
{
    return units < b->cap ? units : b->cap;
}

/* Whole units in the bucket, 0 when it owes. */
static uint64_t bucket_units(const struct bucket *b)
{
    return b->level > 0 ? (uint64_t)b->level / MS_PER_MIN : 0;
}

/* `units` back, never past full. */
static void bucket_give(struct bucket *b, uint64_t units)
{
    int64_t full = bucket_full(b);
    int64_t back = (int64_t)(bucket_need(b, units) * MS_PER_MIN);
    b->level = full - b->level < back ? full : b->level + back;
}

/* `units` more taken: owed when the bucket holds fewer, never past the debt bound. */
static void bucket_owe(struct bucket *b, uint64_t units)
{
    int64_t floor = -(int64_t)BUCKET_DEBT_MINUTES * bucket_full(b);
    int64_t more = (int64_t)(bucket_need(b, units) * MS_PER_MIN);
    b->level = b->level - floor < more ? floor : b->level - more;
}

struct limits *limits_new(void)
{
    struct limits *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->seen = eta_seen_new(4096);
    if (!l->seen || pthread_mutex_init(&l->lock, NULL) != 0) {
        eta_seen_free(l->seen);
        free(l);
        return NULL;
    }
    return l;
}

void limits_free(struct limits *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    eta_seen_free(l->seen);
    free(l->tab); /* empty: every configuration was unbound */
    free(l);
}

/* A bucket given a new capacity: a new limit starts full, a changed one keeps its level
 * (within the new capacity; a debt stays owed, within the new bound). */
static void bucket_resize(struct bucket *b, uint64_t cap, uint64_t now)
{
    if (b->cap == cap)
        return;
    if (!b->cap || !cap) {
        bucket_init(b, cap, now);
        return;
    }
    bucket_refill(b, now);
    b->cap = cap;
    int64_t full = bucket_full(b);
    if (b->level > full)
        b->level = full;
    if (b->level < -(int64_t)BUCKET_DEBT_MINUTES * full)
        b->level = -(int64_t)BUCKET_DEBT_MINUTES * full;
}

static void limits__put_locked(struct limits *l, struct key_state *ks)
{
    if (--ks->ref)
        return;
    for (struct key_state **pp = &l->tab[limits__bucket(l, ks->name)].head; *pp;
         pp = &(*pp)->next) {
        if (*pp == ks) {
            *pp = ks->next;
            l->n--;
            break;
        }
    }
    pthread_mutex_destroy(&ks->mu);
    free(ks->name);
    free(ks);
}

int limits_bind(struct limits *l, struct config *cfg, uint64_t now_ns)
{
    pthread_mutex_lock(&l->lock);
    size_t i;
    for (i = 0; i < cfg->n_keys; i++) {
        struct cfg_key *ck = &cfg->keys[i];
        struct key_state *ks = limits__find_locked(l, ck->name);
        if (!ks) {
            if (!limits__room_locked(l))
                break;
            ks = calloc(1, sizeof(*ks));
            if (!ks || !(ks->name = strdup(ck->name)) || pthread_mutex_init(&ks->mu, NULL) != 0) {
                if (ks)
                    free(ks->name);
                free(ks);
                break;
            }
            ks->eta.no_queue = true; /* a key's slots have no queue */
            bucket_init(&ks->req, ck->rpm, now_ns);
            bucket_init(&ks->tok, ck->tpm, now_ns);
            size_t b = limits__bucket(l, ks->name);
            ks->next = l->tab[b].head;
            l->tab[b].head = ks;
            l->n++;
        }
        ks->ref++;
        pthread_mutex_lock(&ks->mu);
        ks->max_inflight = ck->max_concurrency;
        ks->prior_ns = (uint64_t)cfg->service_time_prior_ms * 1000000u;
        bucket_resize(&ks->req, ck->rpm, now_ns);
        bucket_resize(&ks->tok, ck->tpm, now_ns);
        pthread_mutex_unlock(&ks->mu);
        ck->st = ks;
    }
    if (i < cfg->n_keys) {
        while (i-- > 0) {
            limits__put_locked(l, cfg->keys[i].st);
            cfg->keys[i].st = NULL;
        }
        pthread_mutex_unlock(&l->lock);
        return -1;
    }
    pthread_mutex_unlock(&l->lock);
    return 0;
}

void limits_unbind(struct limits *l, struct config *cfg)
{
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (cfg->keys[i].st)
            limits__put_locked(l, cfg->keys[i].st);
        cfg->keys[i].st = NULL;
    }
    pthread_mutex_unlock(&l->lock);
}

uint64_t limits_estimate(uint64_t prompt_bytes, int64_t max_tokens)
{
    return (prompt_bytes + 3) / 4 +
           (max_tokens >= 0 ? (uint64_t)max_tokens : LIM_DEFAULT_MAX_TOKENS);
}

static struct key_state *limits__state(struct limits *l, const struct cfg_key *k)
{
    (void)l;
    return k ? k->st : NULL;
}

/* When key ks's client `client`, refused now for max_concurrency, should come back
 * (inference/eta.h: one of its slots frees every hold / max_concurrency; the promises ahead of
 * it; a client refused again before its time is told the rest of it). Holds ks->mu. */
static uint64_t limits__told(struct limits *l, struct key_state *ks, uint64_t now, uint64_t client)
{
    uint64_t at;
    if (eta_seen_get(l->seen, client, ks, now, &at))
        return at;
    struct eta_view v = {
        .slots = ks->max_inflight,
        .inflight = ks->inflight,
        .hold_ns = ks->hold_ns,
        .dev_ns = ks->hold_dev_ns,
        .prior_ns = ks->prior_ns,
    };
    uint64_t now_us = now / 1000;
    if (ks->inflight && ks->start_us_sum / ks->inflight <= now_us)
        v.age_ns = (now_us - ks->start_us_sum / ks->inflight) * 1000;
    struct eta *e = &ks->eta;
    at = eta_tell(&e, 1, &v, now, 0, false);
    eta_seen_put(l->seen, client, ks, at, now);
    return at;
}

/* The verdict for `tokens` (0: only what the headers can tell). Holds ks->mu. */
static enum lim_verdict limits__judge(struct limits *l, struct key_state *ks, uint64_t tokens,
                                      uint64_t now, uint64_t client, uint64_t *retry_ms)
{
    bucket_refill(&ks->req, now);
    bucket_refill(&ks->tok, now);
    if (ks->max_inflight && ks->inflight >= ks->max_inflight) {
        *retry_ms = eta_ms(limits__told(l, ks, now, client), now);
        return LIM_CONCURRENCY;
    }
    if (ks->req.cap && ks->req.level < (int64_t)MS_PER_MIN) {
        *retry_ms = bucket_wait_ms(&ks->req, 1);
        return LIM_RPM;
    }
    if (ks->tok.cap) {
        uint64_t need = bucket_need(&ks->tok, tokens ? tokens : 1);
        if (ks->tok.level < (int64_t)(need * MS_PER_MIN)) {
            *retry_ms = bucket_wait_ms(&ks->tok, need);
            return LIM_TPM;
        }
    }
    return LIM_OK;
}

enum lim_verdict limits_check(struct limits *l, const struct cfg_key *k, uint64_t now_ns,
                              uint64_t client, uint64_t *retry_ms)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return LIM_OK;
    pthread_mutex_lock(&ks->mu);
    enum lim_verdict v = limits__judge(l, ks, 0, now_ns, client, retry_ms);
    pthread_mutex_unlock(&ks->mu);
    return v;
}

enum lim_verdict limits_take(struct limits *l, const struct cfg_key *k, uint64_t tokens,
                             uint64_t now_ns, uint64_t client, uint64_t *retry_ms,
                             struct lim_state *st)
{
    struct key_state *ks = limits__state(l, k);
    if (st)
        *st = (struct lim_state){0};
    if (!ks)
        return LIM_OK;
    pthread_mutex_lock(&ks->mu);
    enum lim_verdict v = limits__judge(l, ks, tokens, now_ns, client, retry_ms);
    if (v == LIM_OK) {
        ks->inflight++;
        ks->start_us_sum += now_ns / 1000;
        if (ks->req.cap)
            ks->req.level -= (int64_t)MS_PER_MIN;
        uint64_t taken = 0;
        if (ks->tok.cap) { /* judged above: the bucket holds `taken` */
            taken = bucket_need(&ks->tok, tokens);
            ks->tok.level -= (int64_t)(taken * MS_PER_MIN);
        }
        if (st) {
            st->taken_tokens = taken;
            st->took_request = ks->req.cap != 0;
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

void limits_reconcile(struct limits *l, const struct cfg_key *k, uint64_t taken, uint64_t used)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks || !taken)
        return;
    pthread_mutex_lock(&ks->mu);
    if (ks->tok.cap) { /* a reload may have taken the limit away since */
        if (used < taken)
            bucket_give(&ks->tok, taken - used);
        else
            bucket_owe(&ks->tok, used - taken);
    }
    pthread_mutex_unlock(&ks->mu);
}

void limits_refund_request(struct limits *l, const struct cfg_key *k)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return;
    pthread_mutex_lock(&ks->mu);
    if (ks->req.cap) /* a reload may have taken the limit away since */
        bucket_give(&ks->req, 1);
    pthread_mutex_unlock(&ks->mu);
}

void limits_release(struct limits *l, const struct cfg_key *k, uint64_t taken_ns, uint64_t now_ns)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return;
    pthread_mutex_lock(&ks->mu);
    if (ks->inflight) {
        ks->inflight--;
        uint64_t us = taken_ns / 1000;
        ks->start_us_sum = ks->inflight && ks->start_us_sum > us ? ks->start_us_sum - us : 0;
    }
    if (taken_ns && now_ns > taken_ns) {
        uint64_t held_ns = now_ns - taken_ns;
        eta_smooth(&ks->hold_ns, &ks->hold_dev_ns, held_ns);
    }
    pthread_mutex_unlock(&ks->mu);
}

unsigned limits_inflight(struct limits *l, const struct cfg_key *k)
{
    struct key_state *ks = limits__state(l, k);
    if (!ks)
        return 0;
    pthread_mutex_lock(&ks->mu);
    unsigned v = ks->inflight;
    pthread_mutex_unlock(&ks->mu);
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
