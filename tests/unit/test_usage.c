/* The engine's usage read from the end of its answer. */
#include "inference/usage.h"
#include "unit.h"

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

Suite *make_suite(void)
{
    Suite *s = suite_create("usage");
    TCase *tc = tcase_create("usage");
    tcase_add_test(tc, test_usage);
    suite_add_tcase(s, tc);
    return s;
}
