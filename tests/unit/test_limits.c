/* Per-key limits: concurrency slots, rpm and tpm token buckets, their refill times and the
 * x-ratelimit state, on a fake clock. */
#include "core/config.h"
#include "inference/limits.h"
#include "unit.h"

#define MS 1000000ull

/* what limits_reconcile is told was charged: what limits_take took */
#define TAKEN(st, est) ((st).taken_tokens)

static const char text[] = "[keys]\nA = sk-a\nB = sk-b\nC = sk-c\n"
                           "[key.A]\nrpm = 60\n"
                           "[key.B]\ntpm = 1000\n"
                           "[key.C]\nmax_concurrency = 2\n"
                           "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\n";

static struct config *load(void)
{
    struct config_errors e = {0};
    struct config *c = config_load_string("l.ini", text, &e);
    ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
    return c;
}

START_TEST(test_rpm)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *a = config_key_find(c, "sk-a", 4);
    uint64_t t0 = 1000 * MS, retry = 0;
    struct lim_state st;
    for (int i = 0; i < 60; i++) {
        ck_assert_int_eq(limits_take(l, a, 10, t0, 0, &retry, &st), LIM_OK);
        limits_release(l, a, 0, 0);
    }
    ck_assert_uint_eq(st.limit_requests, 60);
    ck_assert_uint_eq(st.remaining_requests, 0);
    ck_assert_uint_eq(st.reset_requests_ms, 60000);
    ck_assert_uint_eq(st.limit_tokens, 0); /* no tpm for A */
    /* empty: the next request in 1 s (60 a minute), checked before the body too */
    ck_assert_int_eq(limits_check(l, a, t0, 0, &retry), LIM_RPM);
    ck_assert_uint_eq(retry, 1000);
    ck_assert_int_eq(limits_take(l, a, 10, t0 + 400 * MS, 0, &retry, NULL), LIM_RPM);
    ck_assert_uint_eq(retry, 600);
    ck_assert_int_eq(limits_take(l, a, 10, t0 + 1000 * MS, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_requests, 0);
    limits_release(l, a, 0, 0);
    /* a long pause refills to the cap, not beyond */
    ck_assert_int_eq(limits_take(l, a, 10, t0 + 3600000 * MS, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_requests, 59);
    limits_release(l, a, 0, 0);
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

/* A request no engine saw gets its rpm unit back, never past the cap. */
START_TEST(test_rpm_refund)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *a = config_key_find(c, "sk-a", 4);
    uint64_t t0 = 1000 * MS, retry = 0;
    struct lim_state st;
    limits_refund_request(l, a); /* full: nothing more */
    for (int i = 0; i < 60; i++) {
        ck_assert_int_eq(limits_take(l, a, 10, t0, 0, &retry, &st), LIM_OK);
        ck_assert(st.took_request);
        limits_release(l, a, 0, 0);
    }
    ck_assert_int_eq(limits_take(l, a, 10, t0, 0, &retry, NULL), LIM_RPM);
    limits_refund_request(l, a); /* the 60th was refused by the gateway: back */
    ck_assert_int_eq(limits_take(l, a, 10, t0, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_requests, 0);
    limits_release(l, a, 0, 0);
    ck_assert_int_eq(limits_take(l, a, 10, t0, 0, &retry, NULL), LIM_RPM);
    /* a key without rpm takes none and is given none */
    const struct cfg_key *b = config_key_find(c, "sk-b", 4);
    ck_assert_int_eq(limits_take(l, b, 10, t0, 0, &retry, &st), LIM_OK);
    ck_assert(!st.took_request);
    limits_release(l, b, 0, 0);
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

START_TEST(test_tpm)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *b = config_key_find(c, "sk-b", 4);
    uint64_t t0 = 5 * MS, retry = 0;
    struct lim_state st;
    ck_assert_int_eq(limits_take(l, b, 600, t0, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.limit_tokens, 1000);
    ck_assert_uint_eq(st.remaining_tokens, 400);
    ck_assert_uint_eq(st.reset_tokens_ms, 36000); /* 600 tokens at 1000 a minute */
    limits_release(l, b, 0, 0);
    /* 600 more need 200 more than the 400 left: 12 s */
    ck_assert_int_eq(limits_take(l, b, 600, t0, 0, &retry, NULL), LIM_TPM);
    ck_assert_uint_eq(retry, 12000);
    /* the headers alone cannot tell a cost: one token left is enough to go on */
    ck_assert_int_eq(limits_check(l, b, t0, 0, &retry), LIM_OK);
    ck_assert_int_eq(limits_take(l, b, 400, t0, 0, &retry, NULL), LIM_OK);
    limits_release(l, b, 0, 0);
    ck_assert_int_eq(limits_check(l, b, t0, 0, &retry), LIM_TPM);
    ck_assert_uint_eq(retry, 60); /* one token */
    /* a request larger than the whole bucket waits for a full one, then goes */
    ck_assert_int_eq(limits_take(l, b, 5000, t0 + 30000 * MS, 0, &retry, NULL), LIM_TPM);
    ck_assert_uint_eq(retry, 30000);
    ck_assert_int_eq(limits_take(l, b, 5000, t0 + 60000 * MS, 0, &retry, NULL), LIM_OK);
    limits_release(l, b, 0, 0);
    ck_assert_uint_eq(limits_estimate(400, 100), 200);
    ck_assert_uint_eq(limits_estimate(1, -1), 1 + LIM_DEFAULT_MAX_TOKENS);
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

/* Overdraw by concurrent requests is carried as debt: the bucket goes below zero and refills
 * from there; nothing is forgiven. */
START_TEST(test_tpm_debt)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *b = config_key_find(c, "sk-b", 4);
    uint64_t t0 = 5 * MS, retry = 0;
    struct lim_state s1, s2;
    /* two requests estimated at 500 each, admitted together, each really used 900 */
    ck_assert_int_eq(limits_take(l, b, 500, t0, 0, &retry, &s1), LIM_OK);
    ck_assert_int_eq(limits_take(l, b, 500, t0, 0, &retry, &s2), LIM_OK);
    ck_assert_uint_eq(s2.remaining_tokens, 0);
    limits_reconcile(l, b, TAKEN(s1, 500), 900);
    limits_reconcile(l, b, TAKEN(s2, 500), 900);
    limits_release(l, b, 0, 0);
    limits_release(l, b, 0, 0);
    /* 800 owed: one token is there again once 801 have refilled, 48.06 s at 1000 a minute */
    ck_assert_int_eq(limits_check(l, b, t0, 0, &retry), LIM_TPM);
    ck_assert_uint_eq(retry, 48060);
    ck_assert_int_eq(limits_check(l, b, t0 + 48000 * MS, 0, &retry), LIM_TPM);
    ck_assert_uint_eq(retry, 60);
    ck_assert_int_eq(limits_check(l, b, t0 + 48060 * MS, 0, &retry), LIM_OK);
    /* refilled from the debt, not from zero: a minute later 200 are there, not 1000 */
    ck_assert_int_eq(limits_take(l, b, 201, t0 + 60000 * MS, 0, &retry, NULL), LIM_TPM);
    ck_assert_int_eq(limits_take(l, b, 200, t0 + 60000 * MS, 0, &retry, &s1), LIM_OK);
    ck_assert_uint_eq(s1.remaining_tokens, 0);
    limits_release(l, b, 0, 0);
    /* a refund (the engine never saw it) gives back what was taken, never past the cap */
    limits_reconcile(l, b, TAKEN(s1, 200), 0);
    ck_assert_int_eq(limits_take(l, b, 200, t0 + 60000 * MS, 0, &retry, &s1), LIM_OK);
    ck_assert_uint_eq(s1.remaining_tokens, 0);
    limits_release(l, b, 0, 0);
    limits_reconcile(l, b, TAKEN(s1, 200), 0);
    limits_reconcile(l, b, 1000, 0); /* 200 there: full, not 1200 */
    ck_assert_int_eq(limits_take(l, b, 1, t0 + 60000 * MS, 0, &retry, &s1), LIM_OK);
    ck_assert_uint_eq(s1.remaining_tokens, 999);
    limits_release(l, b, 0, 0);
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

/* A reload that changes the tpm cap: what a request in progress gives back at its end is at
 * most what was taken from the bucket at its admission, under whatever cap now holds. */
START_TEST(test_tpm_rebind_refund)
{
    struct config *c1 = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c1, 0), 0);
    const struct cfg_key *b1 = config_key_find(c1, "sk-b", 4);
    uint64_t t = 5 * MS, retry = 0;
    struct lim_state st;
    /* estimated at 5000 against a cap of 1000: the whole bucket is taken, 1000 */
    ck_assert_int_eq(limits_take(l, b1, 5000, t, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_tokens, 0);
    struct config_errors e = {0};
    struct config *c2 = config_load_string(
        "l2.ini",
        "[keys]\nB = sk-b\n[key.B]\ntpm = 10000\n[backend.x]\nurl = http://127.0.0.1:1\n"
        "models = m\n",
        &e);
    ck_assert_ptr_nonnull(c2);
    ck_assert_int_eq(limits_bind(l, c2, t), 0);
    const struct cfg_key *b2 = config_key_find(c2, "sk-b", 4);
    /* it used 3: 997 of the 1000 taken come back, not 4997 of the 5000 estimated */
    limits_reconcile(l, b1, TAKEN(st, 5000), 3);
    limits_release(l, b1, 0, 0);
    ck_assert_int_eq(limits_take(l, b2, 998, t, 0, &retry, NULL), LIM_TPM);
    ck_assert_int_eq(limits_take(l, b2, 997, t, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_tokens, 0);
    limits_release(l, b2, 0, 0);
    limits_unbind(l, c1);
    limits_unbind(l, c2);
    limits_free(l);
    config_free(c1);
    config_free(c2);
}
END_TEST

START_TEST(test_concurrency)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *k = config_key_find(c, "sk-c", 4);
    const struct cfg_key *a = config_key_find(c, "sk-a", 4);
    uint64_t retry = 0;

    ck_assert_int_eq(limits_take(l, k, 1, 0, 0, &retry, NULL), LIM_OK);
    ck_assert_int_eq(limits_take(l, k, 1, 0, 0, &retry, NULL), LIM_OK);
    ck_assert_uint_eq(limits_inflight(l, k), 2);
    ck_assert_int_eq(limits_check(l, k, 0, 0, &retry), LIM_CONCURRENCY);
    ck_assert_int_eq(limits_take(l, k, 1, 0, 0, &retry, NULL), LIM_CONCURRENCY);
    ck_assert_uint_eq(limits_inflight(l, k), 2); /* a refusal takes nothing */
    /* another key is not affected; no key (auth off) has no limits */
    ck_assert_int_eq(limits_take(l, a, 1, 0, 0, &retry, NULL), LIM_OK);
    limits_release(l, a, 0, 0);
    ck_assert_int_eq(limits_take(l, NULL, 1, 0, 0, &retry, NULL), LIM_OK);
    limits_release(l, k, 0, 0);
    ck_assert_int_eq(limits_take(l, k, 1, 0, 0, &retry, NULL), LIM_OK);
    limits_release(l, k, 0, 0);
    limits_release(l, k, 0, 0);
    ck_assert_uint_eq(limits_inflight(l, k), 0);
    ck_assert_str_eq(limits_name(LIM_CONCURRENCY), "max_concurrency");
    ck_assert_str_eq(limits_name(LIM_RPM), "rpm");
    ck_assert_str_eq(limits_name(LIM_TPM), "tpm");
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

/* A refusal for max_concurrency says when a slot of the key frees for the client
 * (inference/eta.h): before any history the prior (500 ms by default) or twice the age of what
 * runs; half a step after the place frees, refusals in a row one step (hold / 2 slots) apart; a
 * connection refused again before its time is told the rest of it; then the measured hold time
 * (spaced with a margin of hold / 32), at least the age in progress. */
START_TEST(test_concurrency_retry)
{
    struct config *c = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c, 0), 0);
    const struct cfg_key *k = config_key_find(c, "sk-c", 4);
    uint64_t retry = 0, t = 1000 * MS;
    ck_assert_int_eq(limits_take(l, k, 1, t, 0, &retry, NULL), LIM_OK);
    ck_assert_int_eq(limits_take(l, k, 1, t, 0, &retry, NULL), LIM_OK);
    ck_assert_int_eq(limits_check(l, k, t, 0, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 625); /* both just began: the prior's hold + half a step */
    ck_assert_int_eq(limits_take(l, k, 1, t, 0, &retry, NULL), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 875); /* the next one refused: one step (500 / 2) later */
    ck_assert_int_eq(limits_check(l, k, t, 7, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 1125);
    /* connection 7 again before its time: the rest of its wait, no second place */
    ck_assert_int_eq(limits_check(l, k, t + 100 * MS, 7, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 1025);
    ck_assert_int_eq(limits_check(l, k, t + 100 * MS, 8, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 1275); /* a new one: after connection 7's place */
    /* no history yet, and what runs has run 1 s: twice that (2 s, a step of 1 s), the
     * promise still ahead rescaled to it */
    ck_assert_int_eq(limits_check(l, k, t + 1000 * MS, 0, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 2500);        /* connection 8 still has 375 ms, 1.5 steps: 1.5 s now */
    limits_release(l, k, t, t + 400 * MS); /* its requests take 400 ms */
    limits_release(l, k, t, t + 400 * MS);
    uint64_t t2 = t + 20000 * MS; /* every promise has come due */
    ck_assert_int_eq(limits_take(l, k, 1, t2, 0, &retry, NULL), LIM_OK);
    ck_assert_int_eq(limits_take(l, k, 1, t2, 0, &retry, NULL), LIM_OK);
    ck_assert_int_eq(limits_check(l, k, t2, 0, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry,
                      507); /* measured: the oldest ends in 400 ms, + half a step (of 425 / 2) */
    ck_assert_int_eq(limits_check(l, k, t2 + 300 * MS, 0, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 419); /* one step (212.5 ms) after the place promised at +506.25 */
    /* what runs has run 2 s, longer than the 400 ms measured: the engine got slower */
    ck_assert_int_eq(limits_check(l, k, t2 + 2000 * MS, 0, &retry), LIM_CONCURRENCY);
    ck_assert_uint_eq(retry, 1519); /* (2 s + 25 ms) / 2, + half of it */
    limits_release(l, k, t2, t2 + 2000 * MS);
    limits_release(l, k, t2, t2 + 2000 * MS);
    limits_unbind(l, c);
    limits_free(l);
    config_free(c);
}
END_TEST

/* A reload keeps a key's state by name: its slots in use and its buckets' levels carry over,
 * its limits become the new file's; a key the new file drops is gone with the old config. */
START_TEST(test_rebind)
{
    struct config *c1 = load();
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c1, 0), 0);
    const struct cfg_key *a1 = config_key_find(c1, "sk-a", 4);
    const struct cfg_key *k1 = config_key_find(c1, "sk-c", 4);
    uint64_t retry = 0, t = 1000 * MS;
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(limits_take(l, a1, 1, t, 0, &retry, NULL), LIM_OK);
        limits_release(l, a1, 0, 0);
    }
    ck_assert_int_eq(limits_take(l, k1, 1, t, 0, &retry, NULL), LIM_OK); /* held across */
    struct config_errors e = {0};
    struct config *c2 = config_load_string(
        "l2.ini",
        "[keys]\nC = sk-c2\nA = sk-a\nD = sk-d\n[key.A]\nrpm = 60\n[key.C]\nmax_concurrency = 1\n"
        "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\n",
        &e);
    ck_assert_ptr_nonnull(c2);
    ck_assert_int_eq(limits_bind(l, c2, t), 0);
    const struct cfg_key *a2 = config_key_find(c2, "sk-a", 4);
    const struct cfg_key *k2 = config_key_find(c2, "sk-c2", 5); /* a new secret, the same key */
    ck_assert_ptr_eq(a2->st, a1->st);
    ck_assert_ptr_eq(k2->st, k1->st);
    ck_assert_uint_eq(limits_inflight(l, k2), 1);
    /* now max_concurrency 1: the slot held since before the reload fills it */
    ck_assert_int_eq(limits_take(l, k2, 1, t, 0, &retry, NULL), LIM_CONCURRENCY);
    struct lim_state st;
    ck_assert_int_eq(limits_take(l, a2, 1, t, 0, &retry, &st), LIM_OK);
    ck_assert_uint_eq(st.remaining_requests, 29); /* 30 of 60 were used before the reload */
    limits_release(l, a2, 0, 0);
    limits_release(l, k1, 0, 0); /* the old request ends, on the state it shares */
    ck_assert_uint_eq(limits_inflight(l, k2), 0);
    limits_unbind(l, c1); /* then the old config (B was only there) */
    ck_assert_ptr_nonnull(k2->st);
    ck_assert_int_eq(limits_take(l, k2, 1, t, 0, &retry, NULL), LIM_OK);
    limits_release(l, k2, 0, 0);
    limits_unbind(l, c2);
    limits_free(l);
    config_free(c1);
    config_free(c2);
}
END_TEST

/* Many keys: 6,000 bound, then a file keeping every other one (and 1,000 new): the kept ones
 * keep their state (a slot held across), the dropped ones are freed when the old config is
 * unbound (ASan's leak check), and every key of each config has a state of its own. */
static struct config *many(int first, int step, int n, int extra)
{
    size_t cap = 256 + (size_t)(n + extra) * 80;
    char *t = malloc(cap);
    ck_assert_ptr_nonnull(t);
    size_t at = (size_t)snprintf(t, cap, "[limits]\nkey_max_concurrency = 1\n[keys]\n");
    for (int i = first; i < n; i += step)
        at += (size_t)snprintf(t + at, cap - at, "k%d = sk-%d\n", i, i);
    for (int i = 0; i < extra; i++)
        at += (size_t)snprintf(t + at, cap - at, "new%d = sk-new-%d\n", i, i);
    snprintf(t + at, cap - at, "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\n");
    struct config_errors e = {0};
    struct config *c = config_load_string("m.ini", t, &e);
    ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
    free(t);
    return c;
}

START_TEST(test_many_keys)
{
    enum { N = 6000 };
    struct config *c1 = many(0, 1, N, 0);
    struct limits *l = limits_new();
    ck_assert_int_eq(limits_bind(l, c1, 0), 0);
    uint64_t retry = 0;
    char v[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(v, sizeof(v), "sk-%d", i);
        const struct cfg_key *k = config_key_find(c1, v, (size_t)n);
        ck_assert_ptr_nonnull(k->st);
        ck_assert_int_eq(limits_take(l, k, 1, 0, 0, &retry, NULL), LIM_OK); /* one slot each */
    }
    struct config *c2 = many(0, 2, N, 1000);
    ck_assert_int_eq(limits_bind(l, c2, 0), 0);
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(v, sizeof(v), "sk-%d", i);
        const struct cfg_key *k1 = config_key_find(c1, v, (size_t)n);
        const struct cfg_key *k2 = config_key_find(c2, v, (size_t)n);
        ck_assert_ptr_eq(k2->st, k1->st);
        ck_assert_int_eq(limits_take(l, k2, 1, 0, 0, &retry, NULL), LIM_CONCURRENCY);
    }
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(v, sizeof(v), "sk-new-%d", i);
        const struct cfg_key *k = config_key_find(c2, v, (size_t)n);
        ck_assert_ptr_nonnull(k->st);
        ck_assert_uint_eq(limits_inflight(l, k), 0);
    }
    for (int i = 0; i < N; i++) {
        int n = snprintf(v, sizeof(v), "sk-%d", i);
        limits_release(l, config_key_find(c1, v, (size_t)n), 0, 0);
    }
    limits_unbind(l, c1);
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(v, sizeof(v), "sk-%d", i);
        const struct cfg_key *k = config_key_find(c2, v, (size_t)n);
        ck_assert_uint_eq(limits_inflight(l, k), 0);
    }
    limits_unbind(l, c2);
    limits_free(l);
    config_free(c1);
    config_free(c2);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");
    tcase_add_test(tc, test_rpm);
    tcase_add_test(tc, test_rpm_refund);
    tcase_add_test(tc, test_tpm);
    tcase_add_test(tc, test_tpm_debt);
    tcase_add_test(tc, test_tpm_rebind_refund);
    tcase_add_test(tc, test_concurrency);
    tcase_add_test(tc, test_concurrency_retry);
    tcase_add_test(tc, test_rebind);
    tcase_add_test(tc, test_many_keys);
    suite_add_tcase(s, tc);
    return s;
}
