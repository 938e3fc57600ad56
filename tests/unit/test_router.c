/* The router's admission order: strict priority, then weighted fair queuing across keys
 * (start-time fair queuing charged by cost), no head-of-line blocking across backends, the
 * fair-share refusal of a full queue; permits back at 0. Jobs are driven by hand: one permit. */
#include "core/config.h"
#include "inference/job.h"
#include "inference/router.c" /* the pools' queues: their cost meter (rqueue.steps) */
#include "inference/router.h"
#include "bind.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#define N 200

static const char text[] =
    "[limits]\nmax_inflight = 1\nqueue_capacity = 64\n"
    "[keys]\nA = sk-a\nB = sk-b\nC = sk-c\nH = sk-h\n"
    "[key.C]\nweight = 3\n[key.H]\npriority = high\n"
    "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 1\n"
    "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\nmax_concurrency = 1\n";

static struct job jobs[N];
static struct job *granted[N];
static size_t n_granted;

static void on_grant(struct job *job, void *arg)
{
    (void)arg;
    granted[n_granted++ % N] = job; /* the latest N (some tests grant thousands) */
}

static struct config *load(const char *t)
{
    struct config_errors e = {0};
    struct config *c = config_load_string("r.ini", t, &e);
    ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
    return c;
}

static struct job *mk(struct config *c, int i, const char *key, const char *model, unsigned prio,
                      uint64_t cost)
{
    struct job *j = &jobs[i];
    memset(j, 0, sizeof(*j));
    j->backend = -1;
    j->key = NULL;
    for (size_t k = 0; key && k < c->n_keys; k++)
        if (!strcmp(c->keys[k].name, key))
            j->key = &c->keys[k];
    ck_assert(!key || j->key);
    j->n_candidates = (unsigned)config_backends_for(c, model, j->candidates, JOB_MAX_CANDIDATES);
    j->prio = prio;
    j->cost = cost;
    return j;
}

/* Releases the running job; returns the one granted next (or NULL). */
static struct job *next(struct router *r, struct job *running)
{
    size_t before = n_granted;
    router_release(r, running);
    return n_granted > before ? granted[(n_granted - 1) % N] : NULL;
}

START_TEST(test_fair_and_priority)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *run = mk(c, 0, "A", "m", PRIO_NORMAL, 100);
    ck_assert_int_eq(router_acquire(r, run), ROUTER_OK);
    /* A floods with 40, then B asks once: B is served second (after one of A's), not 41st */
    for (int i = 1; i <= 40; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "A", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
    struct job *b = mk(c, 41, "B", "m", PRIO_NORMAL, 100);
    ck_assert_int_eq(router_acquire(r, b), ROUTER_QUEUED);
    int b_at = -1;
    for (int k = 0; k < 5; k++) {
        run = next(r, run);
        if (run == b)
            b_at = k;
    }
    ck_assert_msg(b_at >= 0 && b_at <= 1, "B granted at %d", b_at);
    /* a high-priority request passes every normal one */
    struct job *h = mk(c, 42, "H", "m", PRIO_HIGH, 100);
    ck_assert_int_eq(router_acquire(r, h), ROUTER_QUEUED);
    run = next(r, run);
    ck_assert_ptr_eq(run, h);
    /* drain */
    while (run)
        run = next(r, run);
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);
    tb_free(r, c);
}
END_TEST

START_TEST(test_weights)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *run = mk(c, 0, "A", "m", PRIO_NORMAL, 100);
    ck_assert_int_eq(router_acquire(r, run), ROUTER_OK);
    for (int i = 1; i <= 30; i++) {
        ck_assert_int_eq(router_acquire(r, mk(c, i, "A", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
        ck_assert_int_eq(router_acquire(r, mk(c, 30 + i, "C", "m", PRIO_NORMAL, 100)),
                         ROUTER_QUEUED);
    }
    /* C (weight 3) gets three of every four grants while both wait */
    unsigned nc = 0;
    for (int k = 0; k < 20; k++) {
        run = next(r, run);
        nc += run->key->weight == 3;
    }
    ck_assert_msg(nc >= 14 && nc <= 16, "C had %u of 20", nc);
    while (run)
        run = next(r, run);
    tb_free(r, c);
}
END_TEST

START_TEST(test_no_head_of_line_blocking)
{
    struct config *c =
        load("[limits]\nmax_inflight = 2\n[keys]\nA = sk-a\n"
             "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 1\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\nmax_concurrency = 1\n");
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *m0 = mk(c, 0, "A", "m", PRIO_NORMAL, 1), *n0 = mk(c, 1, "A", "n", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, m0), ROUTER_OK);
    ck_assert_int_eq(router_acquire(r, n0), ROUTER_OK);
    struct job *m1 = mk(c, 2, "A", "m", PRIO_NORMAL, 1), *n1 = mk(c, 3, "A", "n", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, m1), ROUTER_QUEUED); /* older, for the busy backend x */
    ck_assert_int_eq(router_acquire(r, n1), ROUTER_QUEUED);
    ck_assert_ptr_eq(next(r, n0), n1); /* y freed: n1 goes, m1 waits for x */
    ck_assert_ptr_eq(next(r, m0), m1);
    router_release(r, m1);
    router_release(r, n1);
    tb_free(r, c);
}
END_TEST

START_TEST(test_fair_share_refusal)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *run = mk(c, 0, "A", "m", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, run), ROUTER_OK);
    for (int i = 1; i <= 60; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "A", "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    for (int i = 61; i <= 64; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "B", "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    /* full (64): A holds 60, more than half: its next is its own fault (429); B's is not */
    ck_assert_int_eq(router_acquire(r, mk(c, 65, "A", "m", PRIO_NORMAL, 1)), ROUTER_FAIR_SHARE);
    ck_assert_int_eq(router_acquire(r, mk(c, 66, "B", "m", PRIO_NORMAL, 1)), ROUTER_FULL);
    /* alone (auth off: one anonymous flow), a full queue is the gateway's: 503 */
    for (int i = 1; i <= 64; i++)
        ck_assert(router_cancel(r, &jobs[i]));
    for (int i = 1; i <= 64; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, mk(c, 65, NULL, "m", PRIO_NORMAL, 1)), ROUTER_FULL);
    for (int i = 1; i <= 64; i++)
        ck_assert(router_cancel(r, &jobs[i]));
    router_release(r, run);
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);
    tb_free(r, c);
}
END_TEST

/* One queue per model pool: models on disjoint backends get their own pools (their own
 * locks); a model whose pool is full (pool_queue_capacity) does not take the other's places. */
START_TEST(test_pools_apart)
{
    struct config *c =
        load("[limits]\nmax_inflight = 10\nqueue_capacity = 8\npool_queue_capacity = 4\n"
             "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m, s\nmax_concurrency = 1\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\nmax_concurrency = 1\n"
             "[backend.z]\nurl = http://127.0.0.1:3\nmodels = s\nmax_concurrency = 1\n");
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    /* x and z share model s: one pool; y is apart */
    ck_assert_ptr_eq(c->backends[0].pool, c->backends[2].pool);
    ck_assert_ptr_ne(c->backends[0].pool, c->backends[1].pool);
    ck_assert_int_eq(router_acquire(r, mk(c, 0, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, mk(c, 5, NULL, "m", PRIO_NORMAL, 1)), ROUTER_FULL);
    /* the other pool still has its own four places, and a free backend is taken at once */
    ck_assert_int_eq(router_acquire(r, mk(c, 6, NULL, "n", PRIO_NORMAL, 1)), ROUTER_OK);
    for (int i = 7; i <= 10; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, NULL, "n", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, mk(c, 11, NULL, "n", PRIO_NORMAL, 1)), ROUTER_FULL);
    ck_assert_uint_eq(router_key_queued(r, c, NULL), 8);
    /* s may use z, free: granted past m's waiters on x */
    ck_assert_int_eq(router_acquire(r, mk(c, 12, NULL, "s", PRIO_NORMAL, 1)), ROUTER_OK);
    ck_assert_int_eq(jobs[12].backend, 2);
    for (int i = 1; i <= 10; i++)
        if (i != 5 && i != 6)
            ck_assert(router_cancel(r, &jobs[i]));
    router_release(r, &jobs[0]);
    router_release(r, &jobs[6]);
    router_release(r, &jobs[12]);
    ck_assert_int_eq(n_granted, 0);
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);
    tb_free(r, c);
}
END_TEST

/* When max_inflight binds, a freed gateway slot goes to the pools waiting for one in turn: a
 * saturated model cannot keep the gateway to itself. */
START_TEST(test_gateway_slot_turns)
{
    struct config *c =
        load("[limits]\nmax_inflight = 2\n"
             "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 4\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\nmax_concurrency = 4\n");
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    ck_assert_int_eq(router_acquire(r, mk(c, 0, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    ck_assert_int_eq(router_acquire(r, mk(c, 1, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    for (int i = 2; i < 6; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    for (int i = 6; i < 10; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, NULL, "n", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    /* m's requests end one by one: n is served first, then they alternate */
    struct job *g = next(r, &jobs[0]);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->candidates[0]->name, "y");
    struct job *h = next(r, g);
    ck_assert_ptr_nonnull(h);
    ck_assert_str_eq(h->candidates[0]->name, "x");
    struct job *i = next(r, h);
    ck_assert_str_eq(i->candidates[0]->name, "y");
    for (int k = 2; k < 10; k++)
        if (jobs[k].r_waiting)
            ck_assert(router_cancel(r, &jobs[k]));
    router_release(r, &jobs[1]);
    router_release(r, i);
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);
    tb_free(r, c);
}
END_TEST

/* A reload: backends are objects by name (and url), so a reordered file keeps them with their
 * permits and health; a request of the old configuration gives its permit back to a waiter of
 * the new one. */
START_TEST(test_reload_carries_backends)
{
    struct config *c1 =
        load("[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 1\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\n");
    struct router *r = tb_router(c1, on_grant, NULL);
    n_granted = 0;
    ck_assert_int_eq(router_acquire(r, mk(c1, 0, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    router_set_health(c1->backends[1].be, HEALTH_DOWN);
    struct config *c2 =
        load("[backend.w]\nurl = http://127.0.0.1:9\nmodels = n\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\n"
             "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 1\n");
    ck_assert_int_eq(backends_bind(tb_reg, c2), 0);
    ck_assert_int_eq(router_bind(r, c2), 0);
    router_apply(r, c2);
    ck_assert_ptr_eq(c2->backends[2].be, c1->backends[0].be);
    ck_assert_ptr_eq(c2->backends[1].be, c1->backends[1].be);
    ck_assert_int_eq(router_health(c2->backends[1].be), HEALTH_DOWN);
    ck_assert_int_eq(router_health(c2->backends[0].be), HEALTH_UNKNOWN);
    ck_assert_uint_eq(atomic_load(&c2->backends[2].be->inflight), 1);
    /* x is held by the old request: the new configuration's request waits, then gets it */
    struct job *j = mk(c2, 1, NULL, "m", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, j), ROUTER_QUEUED);
    ck_assert_ptr_eq(next(r, &jobs[0]), j);
    ck_assert_int_eq(j->backend, 2);
    router_unbind(r, c1); /* the old configuration ends */
    backends_unbind(tb_reg, c1);
    config_free(c1);
    router_release(r, j);
    ck_assert_uint_eq(atomic_load(&c2->backends[2].be->inflight), 0);
    tb_free(r, c2);
}
END_TEST

/* Long streams may pin many configurations at once: each binds its pools on the same objects. */
START_TEST(test_many_live_configurations)
{
    static const char t[] = "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\n";
    struct config *c[20];
    c[0] = load(t);
    struct router *r = tb_router(c[0], on_grant, NULL);
    for (int i = 1; i < 20; i++) {
        c[i] = load(t);
        ck_assert_int_eq(backends_bind(tb_reg, c[i]), 0);
        ck_assert_int_eq(router_bind(r, c[i]), 0);
        ck_assert_ptr_eq(c[i]->backends[0].be, c[0]->backends[0].be);
    }
    ck_assert_uint_eq(c[0]->backends[0].be->n_pools, 20);
    for (int i = 1; i < 20; i++) {
        router_unbind(r, c[i]);
        backends_unbind(tb_reg, c[i]);
        config_free(c[i]);
    }
    ck_assert_uint_eq(c[0]->backends[0].be->n_pools, 1);
    tb_free(r, c[0]);
}
END_TEST

/* A key whose backlog left (timed out, cancelled) keeps no phantom finish tag: its next
 * request starts at the class's virtual time, not behind the backlog that was never served. */
START_TEST(test_phantom_tag_rollback)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *run = mk(c, 0, "B", "m", PRIO_NORMAL, 100);
    ck_assert_int_eq(router_acquire(r, run), ROUTER_OK);
    for (int i = 1; i <= 5; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "B", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
    for (int i = 6; i <= 35; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "A", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
    for (int i = 35; i >= 6; i -= 2) /* newest first, then the rest oldest first */
        ck_assert(router_cancel(r, &jobs[i]));
    for (int i = 6; i <= 35; i += 2)
        ck_assert(router_cancel(r, &jobs[i]));
    struct job *a = mk(c, 36, "A", "m", PRIO_NORMAL, 100);
    ck_assert_int_eq(router_acquire(r, a), ROUTER_QUEUED);
    int a_at = -1;
    for (int k = 0; k < 6 && run; k++) {
        run = next(r, run);
        if (run == a)
            a_at = k;
    }
    ck_assert_msg(a_at >= 0 && a_at <= 1, "A granted at %d (behind its phantom backlog)", a_at);
    while (run)
        run = next(r, run);
    tb_free(r, c);
}
END_TEST

/* A request's charge is capped: max_tokens of any size cannot wrap its key's tag around (which
 * made a huge request nearly free and let its key's next requests jump the queue). */
START_TEST(test_charge_clamp)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *m0 = mk(c, 1, "A", "m", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, m0), ROUTER_OK); /* x is busy: the rest wait */
    /* cost * 1024 is 2^65 + 1024: wrapped, it was charged like 1 token */
    ck_assert_int_eq(router_acquire(r, mk(c, 2, "A", "m", PRIO_NORMAL, (1ull << 55) + 1)),
                     ROUTER_QUEUED);
    for (int i = 3; i <= 7; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "A", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
    for (int i = 8; i <= 10; i++)
        ck_assert_int_eq(router_acquire(r, mk(c, i, "B", "m", PRIO_NORMAL, 100)), ROUTER_QUEUED);
    /* the huge one (or B's first) goes first; every B before A's next */
    struct job *g = m0;
    unsigned b_seen = 0;
    for (int k = 0; k < 4; k++) {
        g = next(r, g);
        ck_assert_ptr_nonnull(g);
        if (g->key && !strcmp(g->key->name, "B"))
            b_seen++;
        else
            ck_assert_msg(g == &jobs[2], "A's request %d granted before B's", (int)(g - jobs));
    }
    ck_assert_uint_eq(b_seen, 3);
    while (g)
        g = next(r, g);
    tb_free(r, c);
}
END_TEST

/* A request without max_tokens is charged the ceiling: never less than an honest one. */
START_TEST(test_open_charged_ceiling)
{
    struct config *c = load(text);
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    struct job *run = mk(c, 0, "C", "m", PRIO_NORMAL, 1);
    ck_assert_int_eq(router_acquire(r, run), ROUTER_OK);
    struct job *a1 = mk(c, 1, "A", "m", PRIO_NORMAL, 300), *a2 = mk(c, 2, "A", "m", PRIO_NORMAL, 1);
    struct job *b1 = mk(c, 3, "B", "m", PRIO_NORMAL, 1u << 20),
               *b2 = mk(c, 4, "B", "m", PRIO_NORMAL, 1);
    a1->cost_open = true; /* 300: what limits_estimate gives a short prompt without max_tokens */
    ck_assert_int_eq(router_acquire(r, a1), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, a2), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, b1), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, b2), ROUTER_QUEUED);
    ck_assert_uint_eq(a2->r_tag - a1->r_tag, (uint64_t)RQ_MAX_CHARGE * RQ_TAG_SCALE);
    ck_assert_uint_ge(a2->r_tag - a1->r_tag, b2->r_tag - b1->r_tag);
    while (run)
        run = next(r, run);
    tb_free(r, c);
}
END_TEST

/* Admission costs the same whatever is queued: thousands of waiters of many keys, cancelled in
 * any order, granted, refused, counted for Retry-After — each operation looks at a bounded
 * number of sets and flows (the pool's two models, a key's flows), never at the other waiters. */
START_TEST(test_cost_independent_of_queue)
{
    enum { W = 6000, KEYS = 60 };
    char text2[4096];
    size_t len = (size_t)snprintf(text2, sizeof(text2),
                                  "[limits]\nmax_inflight = 4\nqueue_capacity = %d\n"
                                  "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m, s\n"
                                  "max_concurrency = 1\n"
                                  "[backend.z]\nurl = http://127.0.0.1:3\nmodels = s\n"
                                  "max_concurrency = 1\n[keys]\n",
                                  W);
    for (int k = 0; k < KEYS; k++)
        len += (size_t)snprintf(text2 + len, sizeof(text2) - len, "k%d = sk-%d\n", k, k);
    struct config *c = load(text2);
    struct router *r = tb_router(c, on_grant, NULL);
    struct rqueue *q = &c->backends[0].pool->q;
    struct job *js = calloc(W + 2, sizeof(*js));
    ck_assert_ptr_nonnull(js);
    n_granted = 0;
    for (int i = 0; i < W + 2; i++) {
        struct job *j = &js[i];
        j->backend = -1;
        j->key = &c->keys[(unsigned)i % KEYS];
        j->n_candidates = (unsigned)config_backends_for(c, i % 3 && i > 1 ? "m" : "s",
                                                        j->candidates, JOB_MAX_CANDIDATES);
        j->prio = PRIO_NORMAL;
        j->cost = 10 + (unsigned)i % 7;
    }
    ck_assert_int_eq(router_acquire(r, &js[0]), ROUTER_OK);
    ck_assert_int_eq(router_acquire(r, &js[1]), ROUTER_OK); /* x and z busy */
    uint64_t before = q->steps, worst = 0;
    for (int i = 2; i < W + 2; i++) {
        uint64_t s0 = q->steps;
        ck_assert_int_eq(router_acquire(r, &js[i]), ROUTER_QUEUED);
        if (q->steps - s0 > worst)
            worst = q->steps - s0;
    }
    /* full: refused, and its Retry-After counts the waiters ahead of it */
    struct job extra = js[5];
    extra.r_waiting = false;
    uint64_t s0 = q->steps;
    ck_assert_int_eq(router_acquire(r, &extra), ROUTER_FAIR_SHARE);
    pthread_mutex_lock(&c->backends[0].pool->lock);
    ck_assert_uint_eq(
        router__ahead(c->backends[0].pool, extra.candidates, extra.n_candidates, NULL), W);
    ck_assert_uint_eq(
        router__ahead(c->backends[0].pool, js[3].candidates, js[3].n_candidates, &js[3]), W - 1);
    pthread_mutex_unlock(&c->backends[0].pool->lock);
    (void)router_retry_after_ms(r, &js[3], LGE_QUEUE_FULL); /* what a refused client is told */
    if (q->steps - s0 > worst)
        worst = q->steps - s0;
    /* a third leave (every third from the newest), then every release grants one */
    for (int i = W + 1; i >= 2; i -= 3) {
        s0 = q->steps;
        ck_assert(router_cancel(r, &js[i]));
        if (q->steps - s0 > worst)
            worst = q->steps - s0;
    }
    struct job *run[2] = {&js[0], &js[1]};
    for (size_t k = 0;; k++) {
        s0 = q->steps;
        struct job *g = next(r, run[k % 2]);
        if (q->steps - s0 > worst)
            worst = q->steps - s0;
        if (!g)
            break;
        run[k % 2] = g;
    }
    /* sets: 2, a key's flows: 2; a release looks at a set or two per grant and per pool */
    ck_assert_msg(worst <= 16, "one operation looked at %llu sets/flows",
                  (unsigned long long)worst);
    ck_assert_msg(q->steps - before < (uint64_t)W * 20, "%llu in all",
                  (unsigned long long)(q->steps - before));
    ck_assert_uint_eq(q->queued, 0);
    for (int i = 0; i < W + 2; i++)
        if (js[i].backend >= 0)
            router_release(r, &js[i]);
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);
    free(js);
    tb_free(r, c);
}
END_TEST

/* A reload that adds slots (max_concurrency 2 -> 8) grants the requests already waiting at
 * once, not at the next release. */
START_TEST(test_reload_wakes_waiters)
{
    static const char t1[] =
        "[limits]\nmax_inflight = 100\nqueue_capacity = 64\n"
        "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 2\n";
    static const char t2[] =
        "[limits]\nmax_inflight = 100\nqueue_capacity = 64\n"
        "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 8\n";
    struct config *c1 = load(t1);
    struct router *r = tb_router(c1, on_grant, NULL);
    n_granted = 0;
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(router_acquire(r, mk(c1, i, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    for (int i = 2; i < 22; i++)
        ck_assert_int_eq(router_acquire(r, mk(c1, i, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    struct config *c2 = load(t2);
    ck_assert_int_eq(backends_bind(tb_reg, c2), 0);
    ck_assert_int_eq(router_bind(r, c2), 0);
    router_apply(r, c2);
    ck_assert_uint_eq(n_granted, 6);
    ck_assert_uint_eq(atomic_load(&c2->backends[0].be->inflight), 8);
    for (int i = 2; i < 22; i++)
        if (jobs[i].r_waiting)
            ck_assert(router_cancel(r, &jobs[i]));
    for (int i = 0; i < 22; i++)
        if (jobs[i].backend >= 0)
            router_release(r, &jobs[i]);
    router_unbind(r, c1);
    backends_unbind(tb_reg, c1);
    config_free(c1);
    tb_free(r, c2);
}
END_TEST

/* A starved mark (waiters stopped for a gateway slot) left after they are gone does not turn a
 * newcomer away when slots are free (here: max_inflight raised by a reload). */
START_TEST(test_stale_starved_mark)
{
    struct config *c =
        load("[limits]\nmax_inflight = 1\nqueue_capacity = 2\n"
             "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\nmax_concurrency = 1\n"
             "[backend.y]\nurl = http://127.0.0.1:2\nmodels = n\nmax_concurrency = 1\n");
    struct router *r = tb_router(c, on_grant, NULL);
    n_granted = 0;
    ck_assert_int_eq(router_acquire(r, mk(c, 0, NULL, "m", PRIO_NORMAL, 1)), ROUTER_OK);
    ck_assert_int_eq(router_acquire(r, mk(c, 1, NULL, "n", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    ck_assert(router_cancel(r, &jobs[1])); /* n's pool stays marked starved */
    ck_assert_int_eq(router_acquire(r, mk(c, 2, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, mk(c, 3, NULL, "m", PRIO_NORMAL, 1)), ROUTER_QUEUED);
    c->max_inflight = 4; /* a reload raising it, as far as the router sees */
    router_apply(r, c);
    /* y is free, gateway slots are free, the queue is full (of m's): served, not refused */
    ck_assert_int_eq(router_acquire(r, mk(c, 4, NULL, "n", PRIO_NORMAL, 1)), ROUTER_OK);
    ck_assert(router_cancel(r, &jobs[2]));
    ck_assert(router_cancel(r, &jobs[3]));
    router_release(r, &jobs[0]);
    router_release(r, &jobs[4]);
    tb_free(r, c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, test_fair_and_priority);
    tcase_add_test(tc, test_weights);
    tcase_add_test(tc, test_no_head_of_line_blocking);
    tcase_add_test(tc, test_fair_share_refusal);
    tcase_add_test(tc, test_pools_apart);
    tcase_add_test(tc, test_gateway_slot_turns);
    tcase_add_test(tc, test_reload_carries_backends);
    tcase_add_test(tc, test_many_live_configurations);
    tcase_add_test(tc, test_phantom_tag_rollback);
    tcase_add_test(tc, test_charge_clamp);
    tcase_add_test(tc, test_open_charged_ceiling);
    tcase_add_test(tc, test_cost_independent_of_queue);
    tcase_add_test(tc, test_reload_wakes_waiters);
    tcase_add_test(tc, test_stale_starved_mark);
    suite_add_tcase(s, tc);
    return s;
}
