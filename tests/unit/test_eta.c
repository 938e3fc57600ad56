/* test_eta.c — the Retry-After rule (inference/eta.c): its arithmetic, the promise table, and
 * the rule held to the figures in a discrete-event model of a saturated gateway (S
 * slots, a queue of C places, requests holding a slot H each): a crowd refused at once and
 * coming back when told gets in (>= 90% at the first retry) and the longest wait told is within
 * 2x of the time the gateway needs to serve the crowd — on a fresh gateway, for a second crowd
 * right after, and beside a client that ignores Retry-After and hammers. */
#include "inference/eta.h"

#include "core/clock.h"

#include <check.h>
#include <stdlib.h>

#define US 1000ull
#define MS NS_PER_MS

START_TEST(test_hold_and_step)
{
    struct eta_view v = {.slots = 4, .inflight = 4, .prior_ns = 500 * MS};
    ck_assert_uint_eq(eta_hold_ns(&v), 500 * MS); /* nothing known: the prior */
    v.age_ns = 400 * MS;
    ck_assert_uint_eq(eta_hold_ns(&v), 800 * MS); /* twice what has run, when larger */
    ck_assert_uint_eq(eta_step_ns(&v), 200 * MS);
    ck_assert_uint_eq(eta_first_ns(&v), 400 * MS); /* the rest of the oldest's hold */
    v.hold_ns = 300 * MS;
    ck_assert_uint_eq(eta_hold_ns(&v), 400 * MS); /* measured, but at least the age */
    v.age_ns = 100 * MS;
    ck_assert_uint_eq(eta_hold_ns(&v), 300 * MS); /* measured wins over the prior */
    ck_assert_uint_eq(eta_first_ns(&v), 200 * MS);
    /* places are spaced by the hold plus a margin: hold / 16 at least, or 4 deviations */
    ck_assert_uint_eq(eta_step_ns(&v), (300 + 300 / 16.0) / 4 * MS);
    v.dev_ns = 25 * MS;
    ck_assert_uint_eq(eta_step_ns(&v), 100 * MS);
    v.age_ns = 290 * MS;
    ck_assert_uint_eq(eta_first_ns(&v), 100 * MS); /* never closer than a step */
    v.inflight = 2;                                /* slots free: a step */
    ck_assert_uint_eq(eta_first_ns(&v), 100 * MS);
    v = (struct eta_view){.slots = 0, .prior_ns = 0};
    ck_assert_uint_eq(eta_hold_ns(&v), 1 * MS); /* floors, no division by zero */
    ck_assert_uint_eq(eta_step_ns(&v), 1 * MS);
    ck_assert_uint_eq(eta_ms(0, 5), 1);
    ck_assert_uint_eq(eta_ms(7200 * NS_PER_S, 0), 3600000);
}
END_TEST

START_TEST(test_promises)
{
    struct eta e = {0}, f = {0};
    struct eta *one[1] = {&e}, *both[2] = {&e, &f};
    /* step (400 + a margin of 4 x 25) / 2 = 250 ms */
    struct eta_view v = {.slots = 2, .inflight = 2, .hold_ns = 400 * MS, .dev_ns = 25 * MS};
    uint64_t now = 10 * NS_PER_S;
    /* the first place frees in 400 ms: promised half a step (125 ms) after it */
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 525 * MS);
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 775 * MS);
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, true) - now, 1025 * MS); /* a look */
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 1025 * MS);
    /* time retires promises: 500 ms later two of the three are due */
    now += 500 * MS;
    v.age_ns = 0; /* (the slots were re-granted meanwhile) */
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 775 * MS);
    /* a new measurement rescales those ahead: 775 ms at a 250 ms step is 3.1 places; at a
     * 1,062.5 ms step (hold 2 s + 125 ms, hold / 16 > 4 deviations) they are 3,293.75 ms,
     * and the next is one step past */
    v.hold_ns = 2000 * MS;
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 4356250 * US);
    /* several resources: the most promised on any; each records the new one */
    ck_assert_uint_eq(eta_tell(both, 2, &v, now, 0, false) - now, 5418750 * US);
    ck_assert_uint_eq(eta_ahead_ns(&f, now, 1062500 * US), 5418750 * US);
    /* extra time (a queue to drain first) is added after the place */
    ck_assert_uint_eq(eta_tell(both, 2, &v, now, 700 * MS, true) - now, 7181250 * US);
    /* never past an hour */
    v.hold_ns = 3000 * NS_PER_S;
    ck_assert_uint_eq(eta_tell(one, 1, &v, now, 0, false) - now, 3600 * NS_PER_S);
}
END_TEST

/* A resource without a queue (a key's slots): a step that shrinks (the first hold measured
 * shorter than the prior) does not move the promises told earlier: their clients come back
 * when told, and a slot waits for each; a new client is promised a place after them. With a
 * queue the promises ahead are rescaled (a place in the queue holds a returning client). */
START_TEST(test_no_queue_keeps_promises)
{
    struct eta q = {0}, k = {.no_queue = true};
    struct eta *qs[1] = {&q}, *ks[1] = {&k};
    struct eta_view v = {.slots = 4, .inflight = 0, .hold_ns = 500 * MS};
    uint64_t now = 10 * NS_PER_S;
    /* step (500 + 500/16 ms) / 4 = 132.8 ms: 8 promises each */
    uint64_t lastq = 0, lastk = 0;
    for (int i = 0; i < 8; i++) {
        lastq = eta_tell(qs, 1, &v, now, 0, false);
        lastk = eta_tell(ks, 1, &v, now, 0, false);
    }
    ck_assert_uint_eq(lastq, lastk);
    v.hold_ns = 250 * MS; /* measured: half the step */
    uint64_t nq = eta_tell(qs, 1, &v, now, 0, false), nk = eta_tell(ks, 1, &v, now, 0, false);
    ck_assert_uint_lt(nq, lastq);                   /* rescaled: before the old last */
    ck_assert_uint_ge(nk, lastk + eta_step_ns(&v)); /* kept: one new step after it */
}
END_TEST

START_TEST(test_seen)
{
    struct eta_seen *s = eta_seen_new(10);
    ck_assert_ptr_nonnull(s);
    int scope_a, scope_b;
    uint64_t at = 0;
    ck_assert(!eta_seen_get(s, 5, &scope_a, 0, &at));
    eta_seen_put(s, 5, &scope_a, 1000, 0);
    ck_assert(eta_seen_get(s, 5, &scope_a, 999, &at));
    ck_assert_uint_eq(at, 1000);
    ck_assert(!eta_seen_get(s, 5, &scope_a, 1000, &at)); /* due: no longer ahead */
    ck_assert(!eta_seen_get(s, 5, &scope_b, 0, &at));    /* another resource */
    ck_assert(!eta_seen_get(s, 6, &scope_a, 0, &at));
    eta_seen_put(s, 5, &scope_a, 2000, 0); /* replaced, not duplicated */
    ck_assert(eta_seen_get(s, 5, &scope_a, 1500, &at));
    ck_assert_uint_eq(at, 2000);
    eta_seen_put(s, 0, &scope_a, 2000, 0); /* an unknown client is never remembered */
    ck_assert(!eta_seen_get(s, 0, &scope_a, 0, &at));
    /* more clients than entries: the table stays bounded, the newest are found */
    for (uint64_t c = 100; c < 10100; c++)
        eta_seen_put(s, c, &scope_a, 5000 + c, 0);
    unsigned found = 0;
    for (uint64_t c = 10000; c < 10100; c++)
        found += eta_seen_get(s, c, &scope_a, 0, &at);
    ck_assert_uint_ge(found, 60);
    eta_seen_free(s);
    eta_seen_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* a model gateway                                                                            */

#define SIM_MAX_CLIENTS 256
#define SIM_SLOTS_MAX 16

struct sim_client {
    uint64_t next;    /* its next arrival; UINT64_MAX: none */
    uint64_t first;   /* its first arrival */
    uint64_t id;      /* its connection (0: a new one each time) */
    uint64_t crowd;   /* which crowd it belongs to (1, 2; 0: the hammer) */
    uint64_t period;  /* the hammer: comes back this often, whatever it is told */
    uint64_t stop;    /* the hammer stops at */
    unsigned refused; /* times refused */
    bool retried_in;  /* got in at its first retry */
    bool done;        /* served (admitted and its request ended) */
    uint64_t end;     /* when its request ended */
};

struct sim {
    unsigned slots, cap;
    uint64_t hold, prior;
    uint64_t slot_end[SIM_SLOTS_MAX];
    int slot_client[SIM_SLOTS_MAX];
    uint64_t slot_start[SIM_SLOTS_MAX];
    int queue[SIM_MAX_CLIENTS];
    unsigned q_head, q_len;
    uint64_t ewma, dev; /* as backend_hold_sample */
    uint64_t jitter;    /* a request holds its slot hold + [0, jitter) */
    uint64_t rng;
    struct eta eta;
    struct eta_seen *seen;
    struct sim_client c[SIM_MAX_CLIENTS];
    unsigned n;
    uint64_t max_told[3]; /* by crowd */
};

static void sim_start(struct sim *s, unsigned slot, int client, uint64_t now)
{
    uint64_t j = 0;
    if (s->jitter) {
        s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
        j = (s->rng >> 33) % s->jitter;
    }
    s->slot_end[slot] = now + s->hold + j;
    s->slot_start[slot] = now;
    s->slot_client[slot] = client;
}

static void sim_view(const struct sim *s, uint64_t now, struct eta_view *v)
{
    uint64_t in = 0, sum = 0;
    for (unsigned i = 0; i < s->slots; i++) {
        if (s->slot_client[i] >= 0) {
            in++;
            sum += now - s->slot_start[i];
        }
    }
    *v = (struct eta_view){.slots = s->slots,
                           .inflight = in,
                           .age_ns = in ? sum / in : 0,
                           .hold_ns = s->ewma,
                           .dev_ns = s->dev,
                           .prior_ns = s->prior};
}

static void sim_arrive(struct sim *s, int ci, uint64_t now)
{
    struct sim_client *c = &s->c[ci];
    bool retry = c->refused == 1 && c->crowd;
    for (unsigned i = 0; i < s->slots; i++) {
        if (s->slot_client[i] < 0) {
            sim_start(s, i, ci, now);
            c->next = UINT64_MAX;
            c->retried_in |= retry;
            return;
        }
    }
    if (s->q_len < s->cap) {
        s->queue[(s->q_head + s->q_len++) % SIM_MAX_CLIENTS] = ci;
        c->next = UINT64_MAX;
        c->retried_in |= retry;
        return;
    }
    /* refused: told, as router_retry_after_ms tells */
    c->refused++;
    uint64_t at;
    if (!eta_seen_get(s->seen, c->id, s, now, &at)) {
        struct eta_view v;
        struct eta *e = &s->eta;
        sim_view(s, now, &v);
        at = eta_tell(&e, 1, &v, now, 0, false);
        eta_seen_put(s->seen, c->id, s, at, now);
    }
    uint64_t told = eta_ms(at, now) * MS; /* what retry-after-ms says */
    if (told > s->max_told[c->crowd])
        s->max_told[c->crowd] = told;
    if (c->period) { /* the hammer ignores it */
        c->next = now + c->period < c->stop ? now + c->period : UINT64_MAX;
        return;
    }
    c->next = now + told;
}

static void sim_end(struct sim *s, unsigned slot, uint64_t now)
{
    uint64_t held = now - s->slot_start[slot];
    eta_smooth(&s->ewma, &s->dev, held);
    struct sim_client *c = &s->c[s->slot_client[slot]];
    c->done = true;
    c->end = now;
    s->slot_client[slot] = -1;
    if (c->period && now + c->period < c->stop)
        c->next = now + c->period;
    if (s->q_len) {
        int next = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % SIM_MAX_CLIENTS;
        s->q_len--;
        sim_start(s, slot, next, now);
    }
}

static void sim_run(struct sim *s)
{
    for (;;) {
        uint64_t t = UINT64_MAX;
        int what = -1, slot = -1;
        for (unsigned i = 0; i < s->slots; i++)
            if (s->slot_client[i] >= 0 && s->slot_end[i] < t)
                t = s->slot_end[i], slot = (int)i;
        for (unsigned i = 0; i < s->n; i++)
            if (s->c[i].next < t)
                t = s->c[i].next, what = (int)i, slot = -1;
        if (t == UINT64_MAX)
            return;
        if (slot >= 0)
            sim_end(s, (unsigned)slot, t);
        else
            sim_arrive(s, what, t);
    }
}

static void sim_init(struct sim *s, unsigned slots, unsigned cap, uint64_t hold, uint64_t prior)
{
    *s = (struct sim){.slots = slots, .cap = cap, .hold = hold, .prior = prior};
    for (unsigned i = 0; i < SIM_SLOTS_MAX; i++)
        s->slot_client[i] = -1;
    s->seen = eta_seen_new(1024);
    ck_assert_ptr_nonnull(s->seen);
}

static void sim_crowd(struct sim *s, unsigned n, uint64_t at, uint64_t crowd)
{
    for (unsigned i = 0; i < n; i++) {
        ck_assert_uint_lt(s->n, SIM_MAX_CLIENTS);
        s->c[s->n] = (struct sim_client){
            .next = at, .first = at, .id = 1000 * crowd + i + 1, .crowd = crowd};
        s->n++;
    }
}

/* The crowd's figures: refused at first, of those got in at the first retry, all served, and
 * the longest wait told over the time the gateway needs to serve everything in it or arriving
 * by `from` (the crowd's arrival): those requests x hold / slots — what it needs, not what it
 * took (clients told too long would make that as long as they were told). */
static void sim_check(struct sim *s, uint64_t crowd, uint64_t from, double min_in, double max_ratio)
{
    unsigned refused = 0, in = 0, served = 0, n = 0, work = 0;
    for (unsigned i = 0; i < s->n; i++) {
        const struct sim_client *c = &s->c[i];
        work += c->crowd && c->first <= from && c->end > from;
        if (c->crowd != crowd)
            continue;
        n++;
        refused += c->refused > 0;
        in += c->refused > 0 && c->retried_in;
        served += c->done;
    }
    ck_assert_uint_eq(served, n);
    ck_assert_uint_gt(refused, 0);
    double need = (double)work * (double)s->hold / s->slots;
    double ratio = (double)s->max_told[crowd] / need;
    ck_assert_msg((double)in >= min_in * refused, "crowd %u: %u of %u refused got in on retry",
                  (unsigned)crowd, in, refused);
    ck_assert_msg(ratio <= max_ratio, "crowd %u: longest wait told %.2f s, serving %u needs %.2f s",
                  (unsigned)crowd, (double)s->max_told[crowd] / 1e9, work, need / 1e9);
}

/* The case: 4 slots, queue 4, requests of 0.44 s, a fresh gateway (the default prior,
 * 500 ms), a crowd of 50 at once; a second crowd of 50 one second later. */
START_TEST(test_crowds_fresh_then_second)
{
    struct sim s;
    sim_init(&s, 4, 4, 440 * MS, 500 * MS);
    sim_crowd(&s, 50, 0, 1);
    sim_crowd(&s, 50, NS_PER_S, 2);
    sim_run(&s);
    sim_check(&s, 1, 0, 0.9, 2.0);
    sim_check(&s, 2, NS_PER_S, 0.9, 2.0);
    eta_seen_free(s.seen);
}
END_TEST

/* A client that ignores Retry-After: 16 loops (twice the places), each on its connection
 * (keep-alive), sending again 10 ms after each answer (a refusal or its stream's end) for 3 s; a
 * crowd of 50 just after it stopped gets in when told (had each of the hammer's refusals promised a
 * place, the crowd would be told several times too long: hundreds of refusals, a step each).
 * (Beside a live hammer, it takes the places that free before the crowd's told times come: first
 * come, first served.) */
START_TEST(test_crowd_after_a_hammer)
{
    struct sim s;
    sim_init(&s, 4, 4, 440 * MS, 500 * MS);
    for (unsigned i = 0; i < 16; i++)
        s.c[s.n++] = (struct sim_client){
            .next = i * MS, .id = 7 + i, .period = 10 * MS, .stop = 3 * NS_PER_S};
    sim_crowd(&s, 50, 3200 * MS, 1);
    sim_run(&s);
    unsigned hammered = 0;
    for (unsigned i = 0; i < 16; i++)
        hammered += s.c[i].refused;
    ck_assert_uint_gt(hammered, 200);
    sim_check(&s, 1, 3200 * MS, 0.9, 2.0);
    eta_seen_free(s.seen);
}
END_TEST

/* No queue (a key's max_concurrency: a refused client needs a slot itself), a hold already
 * measured, requests that vary by a few ms: a promised client takes its slot when it comes
 * back, so the slot frees again a hold later, just when the promise 4 places on falls due.
 * Spaced by the bare hold, each of those races the release (measured on the gateway: 30 of 36
 * in at the first retry); the margin keeps them apart. */
START_TEST(test_crowd_without_a_queue)
{
    struct sim s;
    sim_init(&s, 4, 0, 440 * MS, 500 * MS);
    s.jitter = 6 * MS;
    sim_crowd(&s, 8, 0, 2); /* the history: two rounds */
    sim_run(&s);
    sim_crowd(&s, 40, 2 * NS_PER_S, 1);
    sim_run(&s);
    sim_check(&s, 1, 2 * NS_PER_S, 0.9, 2.0);
    eta_seen_free(s.seen);
}
END_TEST

/* Requests of 10 s on a fresh gateway told from a 500 ms guess: the first retries come too
 * early (nothing is known yet), but the longest wait told stays within what serving the crowd
 * takes and every client is served. */
START_TEST(test_slow_engine_from_cold)
{
    struct sim s;
    sim_init(&s, 4, 4, 10 * NS_PER_S, 500 * MS);
    sim_crowd(&s, 50, 0, 1);
    sim_run(&s);
    sim_check(&s, 1, 0, 0.0, 2.0);
    eta_seen_free(s.seen);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("eta");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_hold_and_step);
    tcase_add_test(tc, test_promises);
    tcase_add_test(tc, test_no_queue_keeps_promises);
    tcase_add_test(tc, test_seen);
    tcase_add_test(tc, test_crowds_fresh_then_second);
    tcase_add_test(tc, test_crowd_after_a_hammer);
    tcase_add_test(tc, test_crowd_without_a_queue);
    tcase_add_test(tc, test_slow_engine_from_cold);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
