/* The router's admission order: strict priority, then weighted fair queuing across keys
 * (start-time fair queuing charged by cost), no head-of-line blocking across backends, the
 * fair-share refusal of a full queue; permits back at 0. Jobs are driven by hand: one permit. */
#include "core/config.h"
#include "inference/job.h"
#include "inference/router.h"
#include "bind.h"
#include "unit.h"

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
    granted[n_granted++] = job;
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
    return n_granted > before ? granted[n_granted - 1] : NULL;
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
    suite_add_tcase(s, tc);
    return s;
}
