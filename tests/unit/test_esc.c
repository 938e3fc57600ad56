/* Escaping for the documents the gateway writes: JSON strings, Prometheus labels, error
 * envelopes that always fit, UTF-8-safe cuts. */
#include "core/errors.h"
#include "core/esc.h"
#include "unit.h"

#include <string.h>

START_TEST(test_json)
{
    char out[64];
    ck_assert_uint_eq(esc_json(out, sizeof(out), "a\"b\\c\n\x01\x7f", 8, NULL), 21);
    ck_assert_str_eq(out, "a\\\"b\\\\c\\n\\u0001\\u007f");
    /* invalid UTF-8 (overlong, surrogate, lone continuation) becomes U+FFFD per byte */
    esc_json(out, sizeof(out), "\xc0\xaf|\xed\xa0\x80|\x80", 8, NULL);
    ck_assert_str_eq(out, "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                          "\xef\xbf\xbd");
    /* valid multi-byte characters pass unchanged */
    esc_json(out, sizeof(out), "\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80", 9, NULL);
    ck_assert_str_eq(out, "\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80");
}
END_TEST

START_TEST(test_json_cut)
{
    /* never splits a character or an escape: with room for 5 bytes, "é\n" (2 + 2) fits,
     * the next "é" (2) does not */
    char out[6];
    size_t used;
    size_t n = esc_json(out, sizeof(out), "\xc3\xa9\n\xc3\xa9", 5, &used);
    ck_assert_uint_eq(n, 4);
    ck_assert_uint_eq(used, 3);
    n = esc_json(out, 4, "ab\x01", 3, &used);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(out, "ab");
}
END_TEST

START_TEST(test_envelope_always_whole)
{
    char msg[3000], out[2048];
    for (size_t i = 0; i + 2 < sizeof(msg); i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[sizeof(msg) - 2] = '\0';
    size_t n = err_envelope(out, sizeof(out), LGE_MODEL_NOT_FOUND, msg, NULL);
    ck_assert_uint_gt(n, 1000);
    ck_assert_uint_lt(n, sizeof(out));
    ck_assert_uint_eq(strlen(out), n);
    ck_assert_ptr_nonnull(strstr(out, "\xc3\xa9...\",\"type\":\"invalid_request_error\""));
    ck_assert_ptr_nonnull(strstr(out, "\"code\":\"model_not_found\"}}"));
    /* a message of control characters (6 bytes each when escaped) */
    memset(msg, 1, 1000);
    msg[1000] = '\0';
    n = err_envelope(out, sizeof(out), LGE_MODEL_NOT_FOUND, msg, "model");
    ck_assert_uint_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(out, "\\u0001...\",\"type\""));
    ck_assert_ptr_nonnull(strstr(out, "\"param\":\"model\""));
}
END_TEST

START_TEST(test_prom_and_prefix)
{
    struct buf b;
    buf_init(&b, 100);
    ck_assert_int_eq(esc_prom_label(&b, "a\"b\\c\nd"), 0);
    ck_assert_uint_eq(buf_len(&b), 10);
    ck_assert_int_eq(memcmp(buf_data(&b), "a\\\"b\\\\c\\nd", 10), 0);
    buf_release(&b);
    ck_assert_uint_eq(esc_utf8_prefix("ab\xc3\xa9", 4, 3), 2);
    ck_assert_uint_eq(esc_utf8_prefix("ab\xc3\xa9", 4, 4), 4);
    ck_assert_uint_eq(esc_utf8_prefix("\xf0\x9f\x98\x80z", 5, 3), 0);
}
END_TEST

/* A backend name that is not UTF-8 went into /metrics as it was: the exposition format's
 * label values are UTF-8 (esc.h: output always valid UTF-8). */
START_TEST(test_prom_label_utf8)
{
    struct buf b;
    buf_init(&b, 100);
    ck_assert_int_eq(esc_prom_label(&b, "a\xff\xc3\xa9\xed\xa0\x80\"\xe2\x82"), 0);
    const char *want = "a\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\\\""
                       "\xef\xbf\xbd\xef\xbf\xbd";
    ck_assert_uint_eq(buf_len(&b), strlen(want));
    ck_assert_int_eq(memcmp(buf_data(&b), want, strlen(want)), 0);
    buf_release(&b);
}
END_TEST

/* esc_utf8_prefix walked back over every continuation byte: "m" + 300 stray ones, cut at 256,
 * gave ""; an invalid lead byte took the stray byte after it along. */
START_TEST(test_prefix_stray_continuations)
{
    char s[301];
    s[0] = 'm';
    memset(s + 1, 0x80, 300);
    ck_assert_uint_eq(esc_utf8_prefix(s, 301, 256), 256);
    ck_assert_uint_eq(esc_utf8_prefix("\xc0\x80z", 3, 1), 1);      /* overlong: two characters */
    ck_assert_uint_eq(esc_utf8_prefix("\xe2\x82z", 3, 1), 1);      /* truncated sequence */
    ck_assert_uint_eq(esc_utf8_prefix("a\xe2\x82\xacz", 5, 2), 1); /* inside a valid one */
    ck_assert_uint_eq(esc_utf8_prefix("a\xe2\x82\xacz", 5, 3), 1);
    ck_assert_uint_eq(esc_utf8_prefix("a\xe2\x82\xacz", 5, 4), 4);
}
END_TEST

/* A long param (escaped into 159 bytes) beside the longest type and code (405, 413, 429) left
 * no envelope at all in ERR_ENVELOPE_MIN bytes, where errors.h promises a whole one. */
START_TEST(test_envelope_min_long_param)
{
    char param[400], out[ERR_ENVELOPE_MIN];
    memset(param, 'p', sizeof(param) - 1);
    param[sizeof(param) - 1] = '\0';
    for (int e = 0; e < LGE__COUNT; e++) {
        size_t n = err_envelope(out, sizeof(out), (enum lg_err)e, "a message", param);
        ck_assert_msg(n > 0, "no envelope for error %d", e);
        ck_assert_uint_lt(n, sizeof(out));
        ck_assert_ptr_nonnull(strstr(out, "\"param\":\"ppp"));
        ck_assert_ptr_nonnull(strstr(out, err_info((enum lg_err)e)->code));
        ck_assert_int_eq(strcmp(out + n - 2, "}}"), 0);
    }
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("esc");
    TCase *tc = tcase_create("esc");
    tcase_add_test(tc, test_json);
    tcase_add_test(tc, test_json_cut);
    tcase_add_test(tc, test_envelope_always_whole);
    tcase_add_test(tc, test_prom_and_prefix);
    tcase_add_test(tc, test_prom_label_utf8);
    tcase_add_test(tc, test_prefix_stray_continuations);
    tcase_add_test(tc, test_envelope_min_long_param);
    suite_add_tcase(s, tc);
    return s;
}
