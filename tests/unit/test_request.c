/* Request validation: strict JSON, duplicate keys, required fields, types; request ids. */
#include "http/request.h"
#include "unit.h"

#include <stdio.h>
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
}
END_TEST

/* What json-c 0.16 let through and the one-pass scanner refuses (RFC 8259 strictly). */
START_TEST(test_stricter_than_json_c)
{
    struct req_info info;
    const char *param;
    static const char *const bad_json[] = {
        "{\"model\":\"m\",\"messages\":[1],\"t\":NaN}",
        "{\"model\":\"m\",\"messages\":[1],\"t\":-Infinity}",
        "{\"model\":\"m\",\"messages\":[\"a\tb\"]}",     /* raw control byte in a string */
        "{\"model\":\"\xc0\xaf\",\"messages\":[1]}",     /* overlong UTF-8 */
        "{\"model\":\"\xed\xa0\x80\",\"messages\":[1]}", /* encoded surrogate */
    };
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++)
        ck_assert_int_eq(check(JOB_CHAT, bad_json[i], &info, &param), LGE_INVALID_JSON);
    /* U+0000 in the model (json-c cut it: the gateway routed on "m", the engine read more) */
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"m\\u0000x\",\"messages\":[1]}", &info, &param),
                     LGE_INVALID_REQUEST);
    ck_assert_str_eq(param, "model");
    /* ... and in any key */
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"a\\u0000\":1}]}", &info, &param),
        LGE_INVALID_REQUEST);
}
END_TEST

START_TEST(test_fields)
{
    struct req_info info;
    const char *param;
    const char *body = "{\"model\":\"meta-llama\\/L\\u00e9\",\"messages\":[{\"role\":\"user\"}],"
                       "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                       "\"max_tokens\":7,\"max_completion_tokens\":9,\"user\":\"u1\"}";
    ck_assert_int_eq(check(JOB_CHAT, body, &info, &param), LGE_NONE);
    ck_assert_str_eq(info.model, "meta-llama/L\xc3\xa9"); /* decoded: what the engine reads */
    ck_assert(info.stream);
    ck_assert(info.include_usage);
    ck_assert_int_eq(info.max_tokens, 9);
    ck_assert_uint_eq(info.prompt_bytes, strlen("[{\"role\":\"user\"}]"));
    ck_assert_uint_eq(info.user_len, 4);
    ck_assert_int_eq(memcmp(body + info.user_off, "\"u1\"", 4), 0);
    free(info.model);
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1],\"max_tokens\":-1}", &info, &param),
        LGE_INVALID_REQUEST);
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1],\"max_tokens\":1.5}", &info, &param),
        LGE_INVALID_REQUEST);
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1],\"max_tokens\":null}", &info, &param),
        LGE_NONE);
    ck_assert_int_eq(info.max_tokens, -1);
    free(info.model);
}
END_TEST

/* Asking for a stream's usage: the edit applied to the body gives valid JSON (validated again,
 * duplicate keys refused) whose stream_options.include_usage is true, and nothing else moved. */
START_TEST(test_ask_usage)
{
    static const char *const cases[][2] = {
        {"{\"model\":\"m\",\"messages\":[1],\"stream\":true} \n",
         "{\"model\":\"m\",\"messages\":[1],\"stream\":true,\"stream_options\":{\"include_usage\":"
         "true}} \n"},
        {"{\"model\":\"m\",\"messages\":[1],\"stream\":true,\"stream_options\":null}",
         "{\"model\":\"m\",\"messages\":[1],\"stream\":true,\"stream_options\":{\"include_usage\":"
         "true}}"},
        {"{\"model\":\"m\",\"stream_options\":{ },\"messages\":[1],\"stream\":true}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true },\"messages\":[1],"
         "\"stream\":true}"},
        {"{\"model\":\"m\",\"stream_options\":{\"x\":1},\"messages\":[1],\"stream\":true}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true,\"x\":1},\"messages\":[1],"
         "\"stream\":true}"},
        {"{\"model\":\"m\",\"stream_options\":{\"include_usage\" : false},\"messages\":[1],"
         "\"stream\":true}",
         "{\"model\":\"m\",\"stream_options\":{\"include_usage\" : true},\"messages\":[1],"
         "\"stream\":true}"},
    };
    struct req_info info, again;
    const char *param;
    char out[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i][0];
        ck_assert_int_eq(check(JOB_CHAT, in, &info, &param), LGE_NONE);
        ck_assert_ptr_nonnull(info.ask_ins);
        ck_assert(!info.include_usage);
        snprintf(out, sizeof(out), "%.*s%s%s", (int)info.ask_off, in, info.ask_ins,
                 in + info.ask_off + info.ask_del);
        ck_assert_str_eq(out, cases[i][1]);
        ck_assert_int_eq(check(JOB_CHAT, out, &again, &param), LGE_NONE);
        ck_assert(again.include_usage);
        ck_assert_ptr_null(again.ask_ins); /* asked already */
        free(info.model);
        free(again.model);
    }
    /* not a stream, or stream_options of another type: nothing to ask */
    ck_assert_int_eq(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1]}", &info, &param),
                     LGE_NONE);
    ck_assert_ptr_null(info.ask_ins);
    free(info.model);
    ck_assert_int_eq(
        check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[1],\"stream\":true,\"stream_options\":1}",
              &info, &param),
        LGE_NONE);
    ck_assert_ptr_null(info.ask_ins);
    free(info.model);
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
    tcase_add_test(tc, test_ask_usage);
    tcase_add_test(tc, test_invalid);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_stricter_than_json_c);
    tcase_add_test(tc, test_fields);
    tcase_add_test(tc, test_request_ids);
    suite_add_tcase(s, tc);
    return s;
}
