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

Suite *make_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, test_fair_and_priority);
    tcase_add_test(tc, test_weights);
    tcase_add_test(tc, test_no_head_of_line_blocking);
    tcase_add_test(tc, test_fair_share_refusal);
    suite_add_tcase(s, tc);
    return s;
}
