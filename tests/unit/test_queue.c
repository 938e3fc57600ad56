/* Queue hand-off: the wait-free MPSC queue under concurrent producers (order per producer,
 * nothing lost, "was empty" wake-up signal), the bounded buffer, and router admission. */
#include "core/buf.h"
#include "core/config.h"
#include "core/mpsc.h"
#include "inference/job.h"
#include "inference/router.h"
#include "bind.h"
#include "unit.h"

#include <pthread.h>
#include <string.h>

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct item {
    struct cds_wfcq_node node;
    int producer;
    int seq;
};

static struct mpsc q;
static struct item items[PRODUCERS][PER_PRODUCER];
static atomic_int wakeups;

static void *producer(void *arg)
{
    int p = (int)(intptr_t)arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        items[p][i].producer = p;
        items[p][i].seq = i;
        if (mpsc_push(&q, &items[p][i].node))
            atomic_fetch_add(&wakeups, 1);
    }
    return NULL;
}

START_TEST(test_mpsc_concurrent)
{
    mpsc_init(&q);
    ck_assert_ptr_null(mpsc_pop(&q));
    pthread_t t[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        pthread_create(&t[i], NULL, producer, (void *)(intptr_t)i);
    int next[PRODUCERS] = {0};
    int got = 0;
    while (got < PRODUCERS * PER_PRODUCER) {
        struct cds_wfcq_node *n = mpsc_pop(&q);
        if (!n)
            continue;
        struct item *it = caa_container_of(n, struct item, node);
        ck_assert_int_eq(it->seq, next[it->producer]); /* FIFO per producer */
        next[it->producer]++;
        got++;
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    ck_assert_ptr_null(mpsc_pop(&q));
    ck_assert_int_ge(atomic_load(&wakeups), 1);
}
END_TEST

START_TEST(test_mpsc_empty_signal)
{
    struct item a, b;
    mpsc_init(&q);
    ck_assert(mpsc_push(&q, &a.node));  /* was empty: wake the consumer */
    ck_assert(!mpsc_push(&q, &b.node)); /* not empty: consumer is already due */
    ck_assert_ptr_eq(mpsc_pop(&q), &a.node);
    ck_assert_ptr_eq(mpsc_pop(&q), &b.node);
    ck_assert(mpsc_push(&q, &a.node));
    ck_assert_ptr_eq(mpsc_pop(&q), &a.node);
}
END_TEST

START_TEST(test_buf_ceiling)
{
    struct buf b;
    buf_init(&b, 10);
    ck_assert_int_eq(buf_append(&b, "12345", 5), 0);
    ck_assert_int_eq(buf_append(&b, "678901", 6), -1); /* would pass the ceiling */
    ck_assert_uint_eq(buf_len(&b), 5);
    ck_assert_int_eq(buf_append(&b, "67890", 5), 0);
    ck_assert(!buf_fits(&b, 1));
    buf_consume(&b, 4);
    ck_assert(buf_fits(&b, 4));
    ck_assert_int_eq(buf_append(&b, "abcd", 4), 0);
    ck_assert_int_eq(memcmp(buf_data(&b), "567890abcd", 10), 0);
    buf_consume(&b, 10);
    ck_assert_uint_eq(buf_len(&b), 0);
    buf_release(&b);
}
END_TEST

static struct job *granted[8];
static int n_granted;
static void on_grant(struct job *job, void *arg)
{
    (void)arg;
    granted[n_granted++] = job;
}

START_TEST(test_router_admission)
{
    struct config_errors e = {0};
    struct config *c = config_load_string(
        "r.ini",
        "[limits]\nmax_inflight = 3\nqueue_capacity = 2\n"
        "[health]\ninterval_ms = 0\n"
        "[backend.a]\nurl = http://h:1\nmodels = m, shared\nmax_concurrency = 1\n"
        "[backend.b]\nurl = http://h:2\nmodels = n, shared\nmax_concurrency = 2\n",
        &e);
    ck_assert_ptr_nonnull(c);
    struct router *r = tb_router(c, on_grant, NULL);
    struct job *j[6];
    for (int i = 0; i < 6; i++) {
        j[i] = job_new(16, 16);
        j[i]->n_candidates =
            (unsigned)config_backends_for(c, i < 3 ? "m" : "n", j[i]->candidates, 8);
    }
    ck_assert(router_ready(c)); /* probing off: unknown counts as usable */
    ck_assert_int_eq(router_acquire(r, j[0]), ROUTER_OK);
    ck_assert_int_eq(j[0]->backend, 0);
    ck_assert_int_eq(router_acquire(r, j[1]), ROUTER_QUEUED); /* a is full */
    ck_assert_int_eq(router_acquire(r, j[3]), ROUTER_OK);     /* b is free: no head-of-line block */
    ck_assert_int_eq(router_acquire(r, j[2]), ROUTER_QUEUED);
    ck_assert_int_eq(router_acquire(r, j[4]), ROUTER_OK);   /* inflight now 3 = max */
    ck_assert_int_eq(router_acquire(r, j[5]), ROUTER_FULL); /* queue (2) is full */
    struct router_stats st;
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 3);
    ck_assert_uint_eq(st.queued, 2);
    /* Retry-After for j[5] (model n: backend b, 2 slots held since just now, no history: the
     * 500 ms prior): a place frees when the first of them ends, in 500 ms, and the client is
     * told half a step (125 ms) after it; the next client refused one place (500 / 2 ms) later; a
     * client of m (backend a, 1 slot) is told when a's request ends: it needs a place in the queue,
     * not the slot (those queued for a are no matter); the grants were a moment ago (the tests may
     * run slowly) */
    uint64_t ra = router_retry_after_ms(r, j[5], LGE_QUEUE_FULL);
    ck_assert(ra > 575 && ra <= 625);
    ra = router_retry_after_ms(r, j[5], LGE_QUEUE_FULL);
    ck_assert(ra > 825 && ra <= 875);
    struct job *jm = job_new(16, 16);
    jm->n_candidates = (unsigned)config_backends_for(c, "m", jm->candidates, 8);
    ra = router_retry_after_ms(r, jm, LGE_QUEUE_FULL);
    ck_assert(ra > 700 && ra <= 750);
    job_unref(jm);

    ck_assert(router_cancel(r, j[2])); /* still waiting: taken back */
    ck_assert(!router_cancel(r, j[2]));
    router_release(r, j[0]); /* a frees up: j[1] (FIFO) is granted */
    ck_assert_int_eq(n_granted, 1);
    ck_assert_ptr_eq(granted[0], j[1]);
    ck_assert_int_eq(j[1]->backend, 0);
    ck_assert(!router_cancel(r, j[1])); /* granted: cancel says so */
    router_release(r, j[1]);
    router_release(r, j[3]);
    router_release(r, j[4]);
    router_get_stats(r, &st);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.queued, 0);

    router_set_health(c->backends[0].be, HEALTH_DOWN);
    router_set_health(c->backends[1].be, HEALTH_UP);
    ck_assert(router_ready(c));
    struct job *s = job_new(16, 16);
    s->n_candidates = (unsigned)config_backends_for(c, "shared", s->candidates, 8);
    ck_assert_int_eq(router_acquire(r, s), ROUTER_OK);
    ck_assert_int_eq(s->backend, 1); /* the healthy one */
    router_release(r, s);
    router_set_health(c->backends[1].be, HEALTH_DOWN);
    ck_assert(!router_ready(c));

    job_unref(s);
    for (int i = 0; i < 6; i++)
        job_unref(j[i]);
    tb_free(r, c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("handoff");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mpsc_concurrent);
    tcase_add_test(tc, test_mpsc_empty_signal);
    tcase_add_test(tc, test_buf_ceiling);
    tcase_add_test(tc, test_router_admission);
    suite_add_tcase(s, tc);
    return s;
}
