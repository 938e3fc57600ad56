/* Request validation: strict JSON, duplicate keys, required fields, types; request ids. */
#include "http/request.h"
#include "unit.h"

#include <string.h>

static enum lg_err check(enum job_endpoint k, const char *body, struct req_info *info,
                         const char **param)
{
    char why[256];
    return request_validate(k, body, strlen(body), info, why, sizeof(why), param);
}

START_TEST(test_valid)
{
    struct req_info info;
    const char *param;
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream\":true} \n",
              &info, &param),
        LGE_NONE);
    ck_assert_str_eq(info.model, "m");
    ck_assert(info.stream);
    free(info.model);
    ck_assert_int_eq(check(JOB_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\"],\"stream\":null}",
                           &info, &param),
                     LGE_NONE);
    ck_assert(!info.stream);
    free(info.model);
    ck_assert_int_eq(check(JOB_EMBEDDINGS, "{\"input\":\"a\",\"model\":\"e\"}", &info, &param),
                     LGE_NONE);
    ck_assert_str_eq(info.model, "e");
    free(info.model);
}
END_TEST

START_TEST(test_invalid)
{
    struct req_info info;
    const char *param;
    ck_assert_int_eq(check(JOB_CHAT, "", &info, &param), LGE_INVALID_JSON);
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"m\"", &info, &param), LGE_INVALID_JSON);
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1]} x", &info, &param),
                     LGE_INVALID_JSON);
    ck_assert_int_eq(check(JOB_CHAT, "{'model':'m'}", &info, &param), LGE_INVALID_JSON);
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"\xff\",\"messages\":[1]}", &info, &param),
                     LGE_INVALID_JSON);
    ck_assert_int_eq(check(JOB_CHAT, "[1]", &info, &param), LGE_INVALID_REQUEST);
    ck_assert_int_eq(check(JOB_CHAT, "{\"messages\":[1]}", &info, &param), LGE_INVALID_REQUEST);
    ck_assert_str_eq(param, "model");
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":5,\"messages\":[1]}", &info, &param),
                     LGE_INVALID_REQUEST);
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[]}", &info, &param),
                     LGE_INVALID_REQUEST);
    ck_assert_str_eq(param, "messages");
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1],\"stream\":\"false\"}", &info, &param),
        LGE_INVALID_REQUEST);
    ck_assert_str_eq(param, "stream");
    ck_assert_int_eq(check(JOB_COMPLETIONS, "{\"model\":\"m\",\"prompt\":3}", &info, &param),
                     LGE_INVALID_REQUEST);
    ck_assert_int_eq(check(JOB_EMBEDDINGS, "{\"model\":\"m\"}", &info, &param),
                     LGE_INVALID_REQUEST);
    ck_assert_int_eq(
        check(JOB_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"a\",\"stream\":true}", &info, &param),
        LGE_INVALID_REQUEST);
    /* deeper than the limit */
    char deep[300];
    memset(deep, '[', sizeof(deep));
    memcpy(deep, "{\"model\":\"m\",\"messages\":", 24);
    deep[sizeof(deep) - 1] = '\0';
    ck_assert_int_eq(check(JOB_CHAT, deep, &info, &param), LGE_INVALID_JSON);
}
END_TEST

START_TEST(test_duplicates)
{
    struct req_info info;
    const char *param;
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"a\",\"messages\":[1],\"model\":\"b\"}", &info, &param),
        LGE_INVALID_REQUEST);
    /* the same key spelled with an escape is still the same key */
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"a\",\"messages\":[1],\"\\u006dodel\":\"b\"}", &info, &param),
        LGE_INVALID_REQUEST);
    /* nested duplicates and look-alike strings are not top-level duplicates */
    ck_assert_int_eq(
        check(JOB_CHAT,
              "{\"model\":\"a\",\"messages\":[{\"model\":1,\"model\":2}],\"x\":\"\\\"model\\\",\"}",
              &info, &param),
        LGE_NONE);
    free(info.model);
    const char *j = "{\"a\":{\"b\":1,\"c\":[1,{\"d\":2}]},\"e\":\"f,g\"}";
    ck_assert_int_eq(request_count_top_keys(j, strlen(j)), 2);
    ck_assert_int_eq(request_count_top_keys("[]", 2), -1);
    ck_assert_int_eq(request_count_top_keys(" {}", 3), 0);
}
END_TEST

START_TEST(test_request_ids)
{
    ck_assert(request_id_valid("abc-123_x.y:z"));
    ck_assert(!request_id_valid(""));
    ck_assert(!request_id_valid("has space"));
    ck_assert(!request_id_valid("new\r\nline"));
    char long_id[80];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    ck_assert(!request_id_valid(long_id));
    char a[33], b[33];
    request_id_new(a);
    request_id_new(b);
    ck_assert_uint_eq(strlen(a), 32);
    ck_assert(request_id_valid(a));
    ck_assert_str_ne(a, b);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("validate");
    tcase_add_test(tc, test_valid);
    tcase_add_test(tc, test_invalid);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_request_ids);
    suite_add_tcase(s, tc);
    return s;
}
