/* The engine's usage read from the end of its answer. */
#include "inference/usage.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t u(const char *s)
{
    return usage_tokens(s, strlen(s));
}

START_TEST(test_usage)
{
    ck_assert_int_eq(u("{\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,"
                       "\"total_tokens\":21}}"),
                     21);
    ck_assert_int_eq(u("\"usage\": { \"prompt_tokens\" : 9 , \"completion_tokens\": 3 }"), 12);
    ck_assert_int_eq(u("\"usage\":{\"completion_tokens\":3}"), 3);
    /* vLLM's nested details, a string with braces, an unknown key: skipped */
    ck_assert_int_eq(
        u("\"usage\":{\"prompt_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":"
          "4,\"total_tokens\":99},\"note\":\"a } { \\\" \",\"completion_tokens\":6}"),
        11);
    /* the last one counts: a stream's chunks, then [DONE] */
    ck_assert_int_eq(
        u("data: {\"usage\":{\"total_tokens\":1}}\n\ndata: {\"usage\":{\"total_tokens\""
          ":7}}\n\ndata: [DONE]\n\n"),
        7);
    /* none, null, cut, not a number, too long */
    ck_assert_int_eq(u("{\"choices\":[]}"), -1);
    ck_assert_int_eq(u("\"usage\":null"), -1);
    ck_assert_int_eq(u("\"usage\":{\"prompt_tokens\":9,\"completion_t"), -1);
    ck_assert_int_eq(u("\"usage\":{\"prompt_tokens\":\"9\"}"), -1);
    ck_assert_int_eq(u("\"usage\":{\"total_tokens\":1234567890123456}"), -1);
    ck_assert_int_eq(u("\"usage\":{}"), -1);
    /* a cut last one: the one before it */
    ck_assert_int_eq(u("\"usage\":{\"total_tokens\":5} \"usage\":{\"total_tok"), 5);
    ck_assert_int_eq(usage_tokens("", 0), -1);
}
END_TEST

/* What the filter lets through of `in` fed in pieces of `step` bytes (0: whole). */
static char *strip(const char *in, size_t step)
{
    struct usage_strip *f = usage_strip_new();
    struct buf out;
    buf_init(&out, 1 << 20);
    size_t n = strlen(in);
    for (size_t at = 0; at < n;) {
        size_t k = step && n - at > step ? step : n - at;
        ck_assert_int_eq(usage_strip_feed(f, in + at, k, &out), 0);
        ck_assert_uint_le(usage_strip_held(f), USAGE_STRIP_HOLD);
        at += k;
    }
    ck_assert_int_eq(usage_strip_flush(f, &out), 0);
    usage_strip_free(f);
    char *r = strndup(buf_data(&out), buf_len(&out));
    buf_release(&out);
    return r;
}

#define EV_TOK "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}"
#define EV_USE                                                                                     \
    "data: {\"id\":\"c\",\"choices\": [ ],\"usage\": {\"prompt_tokens\":3,"                        \
    "\"completion_tokens\":2,\"total_tokens\":5}}"
/* content that mentions the usage chunk's keys inside a string */
#define EV_TRICK                                                                                   \
    "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[],\\\"usage\\\":{\"}}]}"

START_TEST(test_strip)
{
    static const char *const nl[] = {"\n", "\r\n", "\r"};
    for (size_t e = 0; e < 3; e++) {
        char in[2048], want[2048];
        const char *l = nl[e];
        snprintf(in, sizeof(in), "%s%s%s%s%s%s%s%s%s%s: keep-alive%s%sdata: [DONE]%s%s", EV_TOK, l,
                 l, EV_TRICK, l, l, EV_USE, l, l, "", l, l, l, l);
        snprintf(want, sizeof(want), "%s%s%s%s%s%s: keep-alive%s%sdata: [DONE]%s%s", EV_TOK, l, l,
                 EV_TRICK, l, l, l, l, l, l);
        for (size_t step = 0; step <= 7; step++) {
            char *got = strip(in, step);
            ck_assert_str_eq(got, want);
            free(got);
        }
    }
    /* an event past the hold passes whole, unchecked; then filtering goes on */
    size_t big = USAGE_STRIP_HOLD + 100;
    char *in = malloc(big + 512), *want = malloc(big + 512);
    memset(in, 'x', big);
    memcpy(in, "data: ", 6);
    snprintf(in + big, 512, "\n\n%s\n\ndata: [DONE]\n\n", EV_USE);
    memcpy(want, in, big);
    snprintf(want + big, 512, "\n\ndata: [DONE]\n\n");
    for (size_t step = 0; step <= 4096; step += 1024) {
        char *got = strip(in, step ? step : 1);
        ck_assert_str_eq(got, want);
        free(got);
    }
    free(in);
    free(want);
    /* a stream cut inside an event: what is held comes out at the end */
    char *got = strip(EV_TOK "\n\ndata: {\"choi", 3);
    ck_assert_str_eq(got, EV_TOK "\n\ndata: {\"choi");
    free(got);
    /* an output buffer that refuses is an error */
    struct usage_strip *f = usage_strip_new();
    struct buf small;
    buf_init(&small, 8);
    ck_assert_int_eq(usage_strip_feed(f, EV_TOK "\n\n", strlen(EV_TOK) + 2, &small), -1);
    buf_release(&small);
    usage_strip_free(f);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("usage");
    TCase *tc = tcase_create("usage");
    tcase_add_test(tc, test_usage);
    tcase_add_test(tc, test_strip);
    suite_add_tcase(s, tc);
    return s;
}
