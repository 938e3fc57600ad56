/* jscan: the strict one-pass request scanner. Every validation rule accepted and rejected,
 * field extraction, duplicate and NUL keys, depth 64/65, never reading past len (guard page),
 * the string/int/member/iterator readers, and both string scanners (SSE2 and SWAR).
 * Includes the .c to reach the scanners' static helpers. */
#include "core/jscan.c"
#include "unit.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static struct jscan_doc doc;

static enum jscan_status parse_n(const char *s, size_t n)
{
    return jscan_parse(&doc, s, n);
}

static enum jscan_status parse(const char *s)
{
    return parse_n(s, strlen(s));
}

#define ACCEPT(s)                                                                                  \
    ck_assert_msg(parse(s) == JSCAN_OK, "rejected (%s): %s", jscan_strerror(parse(s)), s)
#define REJECT(s, st)                                                                              \
    ck_assert_msg(parse(s) == (st), "%s: got %s, want %s", s, jscan_strerror(parse(s)),            \
                  jscan_strerror(st))
#define REJECT_AT(s, st, off)                                                                      \
    do {                                                                                           \
        REJECT(s, st);                                                                             \
        ck_assert_uint_eq(doc.err_off, off);                                                       \
    } while (0)

/* {"v":VALUE} */
static enum jscan_status parse_value(const char *v, size_t vlen)
{
    static char buf[8192];
    ck_assert_uint_lt(vlen + 6, sizeof(buf));
    memcpy(buf, "{\"v\":", 5);
    memcpy(buf + 5, v, vlen);
    buf[5 + vlen] = '}';
    return parse_n(buf, vlen + 6);
}
#define VALUE_OK(v) ck_assert_msg(parse_value(v, strlen(v)) == JSCAN_OK, "value rejected: %s", v)
#define VALUE_BAD(v, st)                                                                           \
    ck_assert_msg(parse_value(v, strlen(v)) == (st), "value %s: got %s", v,                        \
                  jscan_strerror(parse_value(v, strlen(v))))

START_TEST(test_structure)
{
    ACCEPT("{}");
    ACCEPT(" \t\r\n{} \t\r\n");
    ACCEPT("{ \"a\" : [ 1 , { } , [ ] ] , \"b\" : { \"c\" : null } }");
    ACCEPT("{\"\":0}");
    REJECT_AT("", JSCAN_EMPTY, 0);
    REJECT_AT(" \n", JSCAN_EMPTY, 2);
    REJECT_AT("[]", JSCAN_NOT_OBJECT, 0);
    REJECT_AT("  1", JSCAN_NOT_OBJECT, 2);
    REJECT("\"s\"", JSCAN_NOT_OBJECT);
    REJECT("null", JSCAN_NOT_OBJECT);
    REJECT_AT("{}x", JSCAN_TRAILING, 2);
    REJECT_AT("{} {}", JSCAN_TRAILING, 3);
    REJECT("{}\f", JSCAN_TRAILING);
    REJECT("{}\v", JSCAN_TRAILING);
    REJECT_AT("\f{}", JSCAN_SYNTAX, 0);
    REJECT_AT("\xef\xbb\xbf{}", JSCAN_SYNTAX, 0); /* BOM */
    REJECT_AT("{\"a\":1,}", JSCAN_SYNTAX, 7);
    REJECT_AT("{,}", JSCAN_SYNTAX, 1);
    REJECT_AT("{\"a\"}", JSCAN_SYNTAX, 4);
    REJECT_AT("{\"a\" 1}", JSCAN_SYNTAX, 5);
    REJECT_AT("{\"a\":}", JSCAN_SYNTAX, 5);
    REJECT_AT("{a:1}", JSCAN_SYNTAX, 1);
    REJECT_AT("{'a':1}", JSCAN_SYNTAX, 1);
    REJECT_AT("{\"a\":1]", JSCAN_SYNTAX, 6);
    REJECT_AT("{\"a\":[1}", JSCAN_SYNTAX, 7);
    REJECT_AT("{\"a\":[1,]}", JSCAN_SYNTAX, 8);
    REJECT_AT("{\"a\":[,1]}", JSCAN_SYNTAX, 6);
    REJECT_AT("{\"a\":[1 2]}", JSCAN_SYNTAX, 8);
    REJECT_AT("{\"a\":1 \"b\":2}", JSCAN_SYNTAX, 7);
    REJECT_AT("{\"a\":1/*c*/}", JSCAN_SYNTAX, 6);
    REJECT_AT("{\"a\":\xc3\xa9}", JSCAN_SYNTAX, 5); /* non-ASCII outside a string */
    REJECT_AT("{\"a\":\xc2\xa0"
              "1}",
              JSCAN_SYNTAX, 5); /* NBSP is not whitespace */
    ck_assert_int_eq(parse_n("{\"a\":\x00"
                             "1}",
                             8),
                     JSCAN_SYNTAX);
    ck_assert_uint_eq(doc.err_off, 5);
    REJECT_AT("}", JSCAN_SYNTAX, 0);
    REJECT_AT("{\"a\":1", JSCAN_TRUNCATED, 6);
    REJECT_AT("{", JSCAN_TRUNCATED, 1);
    REJECT_AT("{\"a\":[", JSCAN_TRUNCATED, 6);
    ck_assert_int_eq(parse_n("{}\0", 3), JSCAN_TRAILING);
}
END_TEST

START_TEST(test_literals_numbers)
{
    const char *good[] = {"true",
                          "false",
                          "null",
                          "0",
                          "-0",
                          "1",
                          "-1",
                          "123",
                          "1.5",
                          "-1.5",
                          "0.0",
                          "1e5",
                          "1E5",
                          "1e+5",
                          "1e-5",
                          "0e0",
                          "-0.0e-0",
                          "1e400",
                          "1.5E-0003",
                          "123456789012345678901234567890",
                          "[true,false,null]"};
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++)
        VALUE_OK(good[k]);
    const char *bad_num[] = {"01",  "-01",   "00",  "1.",    "1.e5", "-a",  "1e", "1e+",
                             "1E-", "1.5.5", "--1", "1e5e5", "1e.5", "-.5", "1-", "-Infinity"};
    for (size_t k = 0; k < sizeof(bad_num) / sizeof(bad_num[0]); k++)
        VALUE_BAD(bad_num[k], JSCAN_BAD_NUMBER);
    const char *bad[] = {"+1",  ".5",   "NaN",   "Infinity", "0x1",    "inf", "tru", "True",
                         "nul", "NULL", "truex", "nulll",    "falsee", "t",   "'a'", "undefined"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        enum jscan_status st = parse_value(bad[k], strlen(bad[k]));
        ck_assert_msg(st == JSCAN_SYNTAX || st == JSCAN_BAD_NUMBER, "%s: %s", bad[k],
                      jscan_strerror(st));
    }
    /* top-level scalars end at the input's end: a cut number or literal is TRUNCATED */
    REJECT("-", JSCAN_TRUNCATED);
    REJECT("1e", JSCAN_TRUNCATED);
    REJECT("1.", JSCAN_TRUNCATED);
    REJECT("tr", JSCAN_TRUNCATED);
    REJECT("1", JSCAN_NOT_OBJECT);
    REJECT("-1.5e3 ", JSCAN_NOT_OBJECT);
    REJECT("1 2", JSCAN_TRAILING);
}
END_TEST

START_TEST(test_strings)
{
    const char *good[] = {"\"\"",
                          "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
                          "\"\\u0041\\u00e9\\u00E9\\uAbCd\\u0000\\uffff\"",
                          "\"\\ud83d\\ude00\"",
                          "\"\\ud800\"",
                          "\"\\udc00\"",
                          "\"\\udc00\\ud800\"",
                          "\"\\ud800x\"",
                          "\"\x7f\"",
                          "\"a/b'\""};
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++)
        VALUE_OK(good[k]);
    const char *bad_esc[] = {"\"\\x41\"",   "\"\\U0041\"",   "\"\\u004\"", "\"\\u00G1\"",
                             "\"\\'\"",     "\"\\a\"",       "\"\\0\"",    "\"\\ \"",
                             "\"\\u+123\"", "\"\\\xc3\xa9\""};
    for (size_t k = 0; k < sizeof(bad_esc) / sizeof(bad_esc[0]); k++)
        VALUE_BAD(bad_esc[k], JSCAN_BAD_ESCAPE);
    REJECT_AT("{\"v\":\"ab\\x\"}", JSCAN_BAD_ESCAPE, 8);
    /* every control byte, raw, in a short and in a long string (vector path) */
    for (int c = 0; c < 0x20; c++) {
        char s[64];
        int n = snprintf(s, sizeof(s), "{\"v\":\"a%cb\"}", 'X');
        s[7] = (char)c;
        ck_assert_int_eq(parse_n(s, (size_t)n), JSCAN_CTRL_CHAR);
        ck_assert_uint_eq(doc.err_off, 7);
        n = snprintf(s, sizeof(s), "{\"v\":\"%040d%c\"}", 0, 'X');
        s[46] = (char)c;
        ck_assert_int_eq(parse_n(s, (size_t)n), JSCAN_CTRL_CHAR);
        ck_assert_uint_eq(doc.err_off, 46);
        /* and as a key */
        n = snprintf(s, sizeof(s), "{\"k%cy\":1}", 'X');
        s[3] = (char)c;
        ck_assert_int_eq(parse_n(s, (size_t)n), JSCAN_CTRL_CHAR);
    }
    REJECT_AT("{\"v\":\"abc}", JSCAN_TRUNCATED, 10);
    REJECT_AT("{\"v\":\"abc\\\"}", JSCAN_TRUNCATED, 12);
    REJECT_AT("{\"v\":\"\\u00", JSCAN_TRUNCATED, 10);
}
END_TEST

START_TEST(test_utf8)
{
    const char *good[] = {"\"\xc2\x80\"",
                          "\"\xdf\xbf\"",
                          "\"\xe0\xa0\x80\"",
                          "\"\xed\x9f\xbf\"",
                          "\"\xee\x80\x80\"",
                          "\"\xef\xbf\xbf\"",
                          "\"\xef\xbb\xbf\"",
                          "\"\xf0\x90\x80\x80\"",
                          "\"\xf4\x8f\xbf\xbf\"",
                          "\"\xf3\xbf\xbf\xbf\"",
                          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""};
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++)
        VALUE_OK(good[k]);
    const char *bad[] = {"\"\xc0\xaf\"",
                         "\"\xc1\xbf\"",
                         "\"\xe0\x80\xaf\"",
                         "\"\xe0\x9f\xbf\"",
                         "\"\xf0\x80\x80\xaf\"",
                         "\"\xf0\x8f\xbf\xbf\"",
                         "\"\xed\xa0\x80\"",
                         "\"\xed\xbf\xbf\"",
                         "\"\xf4\x90\x80\x80\"",
                         "\"\xf5\x80\x80\x80\"",
                         "\"\xf8\x88\x80\x80\x80\"",
                         "\"\xfe\"",
                         "\"\xff\"",
                         "\"\x80\"",
                         "\"\xbf\"",
                         "\"\xc2\"",
                         "\"\xe2\x82\"",
                         "\"\xf0\x9f\x98\"",
                         "\"\xc2\x41\"",
                         "\"\xe2\x28\xa1\"",
                         "\"\xe2\x82\x28\"",
                         "\"\xf0\x28\x8c\xbc\"",
                         "\"\xf0\x90\x28\xbc\"",
                         "\"\xf0\x90\x8c\x28\"",
                         "\"\xc3\xa9\xa9\"",
                         "\"caf\xe9\""};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        VALUE_BAD(bad[k], JSCAN_BAD_UTF8);
    /* every lead byte with every second byte: accepted exactly when Unicode says so */
    for (unsigned b0 = 0x80; b0 < 0x100; b0++)
        for (unsigned b1 = 0; b1 < 0x100; b1++) {
            char s[16] = "{\"v\":\"";
            s[6] = (char)b0;
            s[7] = (char)b1;
            memcpy(s + 8, "\x80\x80\"}", 4); /* continuation bytes enough for any length */
            size_t need = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
            unsigned lo = b0 == 0xE0 ? 0xA0 : b0 == 0xF0 ? 0x90 : 0x80;
            unsigned hi = b0 == 0xED ? 0x9F : b0 == 0xF4 ? 0x8F : 0xBF;
            /* pad the sequence's tail: bytes after it must be plain ASCII */
            for (size_t k = 6 + need; k < 10; k++)
                s[k] = 'x';
            int valid = b0 >= 0xC2 && b0 <= 0xF4 && b1 >= lo && b1 <= hi;
            enum jscan_status st = parse_n(s, 12);
            ck_assert_msg(valid ? st == JSCAN_OK : st == JSCAN_BAD_UTF8, "%02x %02x: %s", b0, b1,
                          jscan_strerror(st));
            if (!valid)
                ck_assert_uint_eq(doc.err_off, 6);
        }
    /* the third and fourth bytes: every value after valid leading bytes */
    for (unsigned c = 0; c < 0x100; c++) {
        char s3[] = "{\"v\":\"\xe2\x82X\"}", s4[] = "{\"v\":\"\xf0\x9f\x98X\"}",
             s4b[] = "{\"v\":\"\xf0\x9fX\x80\"}";
        s3[8] = s4[9] = s4b[8] = (char)c;
        int cont = (c & 0xC0) == 0x80;
        ck_assert_int_eq(parse_n(s3, sizeof(s3) - 1), cont ? JSCAN_OK : JSCAN_BAD_UTF8);
        ck_assert_int_eq(parse_n(s4, sizeof(s4) - 1), cont ? JSCAN_OK : JSCAN_BAD_UTF8);
        ck_assert_int_eq(parse_n(s4b, sizeof(s4b) - 1), cont ? JSCAN_OK : JSCAN_BAD_UTF8);
    }
    /* a bad sequence after a long ASCII run, at each alignment of the vector scan */
    for (size_t pad = 0; pad < 70; pad++) {
        char s[128];
        memcpy(s, "{\"v\":\"", 6);
        memset(s + 6, 'a', pad);
        memcpy(s + 6 + pad, "\xed\xa0\x80\"}", 5);
        ck_assert_int_eq(parse_n(s, pad + 11), JSCAN_BAD_UTF8);
        ck_assert_uint_eq(doc.err_off, 6 + pad);
        memcpy(s + 6 + pad, "\xe2\x82\xac\"}", 5);
        ck_assert_int_eq(parse_n(s, pad + 11), JSCAN_OK);
    }
}
END_TEST

START_TEST(test_fields)
{
    const char *b = " {\"model\" : \"gpt-4o\", \"stream\":true, \"messages\":[{\"role\":\"user\","
                    "\"content\":\"hi \\\"there\\\"\"},{\"role\":\"assistant\"}], \"max_tokens\":"
                    "256,\"stream_options\":{\"include_usage\":false,\"include_usage\":true},"
                    "\"n\":null,\"e\":[],\"o\":{},\"t\":[[1,2],[3]]}\n";
    ck_assert_int_eq(parse(b), JSCAN_OK);
    ck_assert_uint_eq(doc.n_top, 9);
    ck_assert_uint_eq(doc.root.type, JSCAN_OBJECT);
    ck_assert_uint_eq(doc.root.off, 1);
    ck_assert_uint_eq(doc.root.len, strlen(b) - 2);
    ck_assert_uint_eq(doc.root.count, 9);
    const struct jscan_span *v = jscan_top(&doc, b, "model");
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->type, JSCAN_STRING);
    ck_assert_int_eq(memcmp(b + v->off, "\"gpt-4o\"", v->len), 0);
    ck_assert_uint_eq(v->len, 8);
    ck_assert_uint_eq(v->escaped, 0);
    ck_assert_uint_eq(doc.top[0].key.off, 2);
    ck_assert_uint_eq(doc.top[0].key.len, 7);
    ck_assert_uint_eq(jscan_top(&doc, b, "stream")->type, JSCAN_TRUE);
    v = jscan_top(&doc, b, "messages");
    ck_assert_uint_eq(v->type, JSCAN_ARRAY);
    ck_assert_uint_eq(v->count, 2);
    ck_assert_uint_eq(b[v->off], '[');
    ck_assert_uint_eq(b[v->off + v->len - 1], ']');
    ck_assert_uint_eq(b[v->off + v->len], ',');
    int64_t x = 0;
    v = jscan_top(&doc, b, "max_tokens");
    ck_assert_uint_eq(v->type, JSCAN_NUMBER);
    ck_assert_uint_eq(v->len, 3);
    ck_assert_int_eq(jscan_int(b, v, &x), 0);
    ck_assert_int_eq(x, 256);
    v = jscan_top(&doc, b, "stream_options");
    ck_assert_uint_eq(v->count, 2);
    struct jscan_span iu;
    ck_assert_int_eq(jscan_member(b, v, "include_usage", &iu), 0);
    ck_assert_uint_eq(iu.type, JSCAN_TRUE); /* the last of a nested duplicate */
    ck_assert_int_eq(jscan_member(b, v, "include", &iu), -1);
    ck_assert_uint_eq(jscan_top(&doc, b, "n")->type, JSCAN_NULL);
    ck_assert_uint_eq(jscan_top(&doc, b, "e")->count, 0);
    ck_assert_uint_eq(jscan_top(&doc, b, "e")->len, 2);
    ck_assert_uint_eq(jscan_top(&doc, b, "o")->type, JSCAN_OBJECT);
    ck_assert_uint_eq(jscan_top(&doc, b, "t")->count, 2);
    ck_assert_ptr_null(jscan_top(&doc, b, "absent"));
    ck_assert_ptr_null(jscan_top(&doc, b, "mode"));
    ck_assert_ptr_null(jscan_top(&doc, b, "models"));
    /* keys are compared decoded */
    const char *e = "{\"m\\u006fdel\":\"x\\u0041\\n\",\"\\u00e9\":1}";
    ck_assert_int_eq(parse(e), JSCAN_OK);
    v = jscan_top(&doc, e, "model");
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->escaped, 1);
    ck_assert_ptr_nonnull(jscan_top(&doc, e, "\xc3\xa9"));
    ck_assert_ptr_null(jscan_top(&doc, e, "mode"));
    ck_assert_ptr_null(jscan_top(&doc, e, "model2"));
}
END_TEST

START_TEST(test_duplicates)
{
    REJECT_AT("{\"a\":1,\"a\":2}", JSCAN_DUP_KEY, 7);
    REJECT("{\"model\":\"a\",\"m\\u006fdel\":\"b\"}", JSCAN_DUP_KEY);
    REJECT("{\"\\u0061\":1,\"a\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\xc3\xa9\":1,\"\\u00e9\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\\u00E9\":1,\"\\u00e9\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\xf0\x9f\x98\x80\":1,\"\\ud83d\\ude00\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\\ud800\":1,\"\\ud800\":2}", JSCAN_DUP_KEY);
    REJECT("{\"a\\/b\":1,\"a/b\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\\\"\":1,\"\\u0022\":2}", JSCAN_DUP_KEY);
    REJECT("{\"\":1,\"\":2}", JSCAN_DUP_KEY);
    REJECT("{\"a\":1,\"b\":2,\"a\":3}", JSCAN_DUP_KEY);
    ACCEPT("{\"x\":{\"a\":1,\"a\":2},\"y\":[{\"b\":1,\"b\":2}]}"); /* nested: allowed */
    ACCEPT("{\"a\":1,\"A\":2,\"ab\":3,\"b\":4}");
    ACCEPT("{\"\\ud800\":1,\"\\udc00\":2,\"\\ud800\\udc00\":3,\"\\udc00\\ud800\":4}");
    ACCEPT("{\"\\ud83d\\ude00\":1,\"\\ud83d\":2}");
    ACCEPT("{\"\\u00e9\":1,\"e\\u0301\":2}");
    ACCEPT("{\"\\\\u0061\":1,\"a\":2}");
    /* the key with NUL: at any depth, even in a value's object; not in values */
    REJECT_AT("{\"\\u0000\":1}", JSCAN_NUL_KEY, 1);
    REJECT_AT("{\"a\":1,\"model\\u0000x\":2}", JSCAN_NUL_KEY, 7);
    REJECT("{\"x\":[{\"a\\u0000b\":1}]}", JSCAN_NUL_KEY);
    ACCEPT("{\"a\":\"\\u0000\",\"b\":[\"\\u0000\"]}");
    ACCEPT("{\"\\\\u0000\":1}");
    /* 128 top-level members, then one more */
    char big[4096];
    size_t n = 0;
    big[n++] = '{';
    for (int k = 0; k < 129; k++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%d\":%d", k ? "," : "", k, k);
    big[n++] = '}';
    ck_assert_int_eq(parse_n(big, n), JSCAN_TOO_MANY_KEYS);
    size_t cut = (size_t)(strstr(big, ",\"k128\"") - big);
    ck_assert_uint_eq(doc.err_off, cut + 1);
    big[cut] = '}';
    ck_assert_int_eq(parse_n(big, cut + 1), JSCAN_OK);
    ck_assert_uint_eq(doc.n_top, 128);
    ck_assert_uint_eq(doc.root.count, 128);
    ck_assert_int_eq(jscan_top(&doc, big, "k127")->off, cut - 3);
}
END_TEST

START_TEST(test_precedence)
{
    /* JSON errors first, wherever they are; then NOT_OBJECT, NUL_KEY, TOO_MANY_KEYS, DUP_KEY */
    REJECT("{\"a\":1,\"a\":2,", JSCAN_TRUNCATED);
    REJECT("{\"a\":1,\"a\":\"\xff\"}", JSCAN_BAD_UTF8);
    REJECT("{\"a\":1,\"a\":2} x", JSCAN_TRAILING);
    REJECT("[{\"\\u0000\":1}]", JSCAN_NOT_OBJECT);
    REJECT_AT("{\"a\":1,\"a\":2,\"b\":{\"\\u0000\":1}}", JSCAN_NUL_KEY, 18);
    REJECT("{\"\\u0000\":1,\"\\u0000\":2}", JSCAN_NUL_KEY);
    char big[4096];
    size_t n = 0;
    n += (size_t)snprintf(big, sizeof(big), "{\"k0\":0");
    for (int k = 0; k < 129; k++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, ",\"k%d\":%d", k, k);
    big[n++] = '}';
    ck_assert_int_eq(parse_n(big, n), JSCAN_TOO_MANY_KEYS);
    memcpy(big + n - 1, ",\"\\u0000\":1}", 12);
    ck_assert_int_eq(parse_n(big, n + 11), JSCAN_NUL_KEY);
}
END_TEST

static size_t nest(char *s, const char *open, const char *close, int depth, const char *mid)
{
    size_t n = 0, lo = strlen(open), lc = strlen(close), lm = strlen(mid);
    for (int k = 0; k < depth; k++, n += lo)
        memcpy(s + n, open, lo);
    memcpy(s + n, mid, lm);
    n += lm;
    for (int k = 0; k < depth; k++, n += lc)
        memcpy(s + n, close, lc);
    return n;
}

START_TEST(test_depth)
{
    static char s[2048];
    size_t n = nest(s, "{\"a\":", "}", 64, "1");
    ck_assert_int_eq(parse_n(s, n), JSCAN_OK);
    n = nest(s, "{\"a\":", "}", 65, "1");
    ck_assert_int_eq(parse_n(s, n), JSCAN_DEPTH);
    ck_assert_uint_eq(doc.err_off, 64 * 5);
    memcpy(s, "{\"a\":", 5);
    n = 5 + nest(s + 5, "[", "]", 63, "") + 1;
    s[n - 1] = '}';
    ck_assert_int_eq(parse_n(s, n), JSCAN_OK);
    n = 5 + nest(s + 5, "[", "]", 64, "") + 1;
    s[n - 1] = '}';
    ck_assert_int_eq(parse_n(s, n), JSCAN_DEPTH);
    ck_assert_uint_eq(doc.err_off, 5 + 63);
    n = nest(s, "[", "]", 64, "");
    ck_assert_int_eq(parse_n(s, n), JSCAN_NOT_OBJECT);
    n = nest(s, "[", "]", 65, "");
    ck_assert_int_eq(parse_n(s, n), JSCAN_DEPTH);
    /* depth goes down again: many siblings at depth 64 */
    n = nest(s, "{\"a\":", "}", 62, "[[],[],[1]]");
    ck_assert_int_eq(parse_n(s, n), JSCAN_OK);
    /* a duplicate is not reported when the body is too deep */
    memcpy(s, "{\"b\":1,\"b\":2,\"c\":", 17);
    n = 17 + nest(s + 17, "[", "]", 64, "") + 1;
    s[n - 1] = '}';
    ck_assert_int_eq(parse_n(s, n), JSCAN_DEPTH);
}
END_TEST

/* Parses each prefix of `s` with the prefix's last byte just before an unmapped page, so any
 * read past len faults; every strict prefix of an accepted body must be TRUNCATED (or EMPTY),
 * with err_off = its length. */
static void prefixes_at_guard(const char *s, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t ps = (size_t)pg, span = (n / ps + 2) * ps;
    char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    ck_assert_int_eq(mprotect(m + span - ps, ps, PROT_NONE), 0);
    char *end = m + span - ps;
    for (size_t k = 0; k <= n; k++) {
        memcpy(end - k, s, k);
        enum jscan_status st = jscan_parse(&doc, end - k, k);
        if (k == n) {
            ck_assert_int_eq(st, JSCAN_OK);
            break;
        }
        ck_assert_msg(st == JSCAN_TRUNCATED || (st == JSCAN_EMPTY && k <= 1),
                      "prefix %zu of %s: %s", k, s, jscan_strerror(st));
        ck_assert_uint_eq(doc.err_off, k);
    }
    munmap(m, span);
}

START_TEST(test_never_past_len)
{
    static const char body[] = "{\"model\":\"caf\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80\",\"a\":[1,"
                               "-2.5e+3,true,false,null,{}],\"e\":\"\\n\\u00e9\\ud83d\\ude00\"}";
    prefixes_at_guard(body, sizeof(body) - 1);
    /* long strings: the vector scan's tails at every length */
    char s[300];
    memcpy(s, "{\"k\":\"", 6);
    for (size_t k = 0; k < 280; k++)
        s[6 + k] = (char)('a' + k % 26);
    memcpy(s + 286, "\"}", 2);
    prefixes_at_guard(s, 288);
    /* a prefix of a longer buffer whose next bytes would complete it */
    const char *full = "{\"v\":\"\xc3\xa9\"}";
    ck_assert_int_eq(parse_n(full, 7), JSCAN_TRUNCATED); /* ends after C3: A9 must not be read */
    ck_assert_int_eq(parse_n(full, 6), JSCAN_TRUNCATED);
    ck_assert_int_eq(parse_n("{\"v\":true}", 8), JSCAN_TRUNCATED);
    ck_assert_int_eq(parse_n("{\"v\":123}", 7), JSCAN_TRUNCATED);
    ck_assert_int_eq(parse_n("{\"v\":\"\\u0041\"}", 10), JSCAN_TRUNCATED);
    ck_assert_int_eq(parse_n("{\"v\":1}   ", 7), JSCAN_OK);
    /* too long: refused before reading (the buffer is 2 bytes) */
    ck_assert_int_eq(jscan_parse(&doc, "{}", (size_t)JSCAN_MAX_LEN + 1), JSCAN_TOO_LONG);
    ck_assert_uint_eq(doc.err_off, 0);
}
END_TEST

static struct jscan_span top_of(const char *body, const char *key)
{
    ck_assert_int_eq(parse(body), JSCAN_OK);
    const struct jscan_span *v = jscan_top(&doc, body, key);
    ck_assert_ptr_nonnull(v);
    return *v;
}

START_TEST(test_string_decode)
{
    char out[64];
    const char *b = "{\"a\":\"plain\",\"b\":\"x\\\"\\\\\\/\\b\\f\\n\\r\\ty\",\"c\":\"\\u0041\\u00e9"
                    "\\u20AC\\ud83d\\ude00\xc3\xa9\",\"d\":\"a\\u0000b\",\"e\":\"\\ud800\","
                    "\"f\":\"\\udc00\\ud800\",\"g\":\"\",\"h\":1,\"i\":\"\\ud83dx\"}";
    struct jscan_span s = top_of(b, "a");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), 5);
    ck_assert_str_eq(out, "plain");
    ck_assert_int_eq(jscan_string(b, &s, out, 6), 5); /* exactly fits */
    ck_assert_int_eq(jscan_string(b, &s, out, 5), JSCAN_ESPACE);
    ck_assert_int_eq(jscan_string(b, &s, out, 0), JSCAN_ESPACE);
    s = top_of(b, "b");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), 10);
    ck_assert_str_eq(out, "x\"\\/\b\f\n\r\ty");
    ck_assert_int_eq(jscan_string(b, &s, out, 11), 10);
    ck_assert_int_eq(jscan_string(b, &s, out, 10), JSCAN_ESPACE);
    ck_assert_int_eq(jscan_string(b, &s, out, 3), JSCAN_ESPACE);
    ck_assert_int_eq(jscan_string_eq(b, &s, "x\"\\/\b\f\n\r\ty"), 1);
    ck_assert_int_eq(jscan_string_eq(b, &s, "x\"\\/\b\f\n\r\t"), 0);
    ck_assert_int_eq(jscan_string_eq(b, &s, "x\"\\/\b\f\n\r\tyz"), 0);
    s = top_of(b, "c");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), 1 + 2 + 3 + 4 + 2);
    ck_assert_str_eq(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9");
    ck_assert_int_eq(jscan_string(b, &s, out, 13), 12);
    ck_assert_int_eq(jscan_string(b, &s, out, 12), JSCAN_ESPACE);
    ck_assert_int_eq(jscan_string(b, &s, out, 8), JSCAN_ESPACE); /* in the middle of a unit */
    s = top_of(b, "d");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), JSCAN_ENUL);
    s = top_of(b, "e");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), JSCAN_ESURROGATE);
    ck_assert_int_eq(jscan_string_eq(b, &s, "\xed\xa0\x80"), 1); /* compared as itself */
    s = top_of(b, "f");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), JSCAN_ESURROGATE);
    s = top_of(b, "i");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), JSCAN_ESURROGATE);
    s = top_of(b, "g");
    ck_assert_int_eq(jscan_string(b, &s, out, 1), 0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(jscan_string_eq(b, &s, ""), 1);
    s = top_of(b, "h");
    ck_assert_int_eq(jscan_string(b, &s, out, sizeof(out)), JSCAN_ETYPE);
    ck_assert_int_eq(jscan_string_eq(b, &s, "1"), 0);
}
END_TEST

START_TEST(test_int)
{
    const struct {
        const char *num;
        int ok;
        int64_t v;
    } cases[] = {
        {"0", 1, 0},
        {"-0", 1, 0},
        {"7", 1, 7},
        {"-42", 1, -42},
        {"9223372036854775807", 1, INT64_MAX},
        {"-9223372036854775808", 1, INT64_MIN},
        {"9223372036854775808", 0, 0},
        {"-9223372036854775809", 0, 0},
        {"18446744073709551616", 0, 0},
        {"99999999999999999999999", 0, 0},
        {"1.0", 0, 0},
        {"1e2", 0, 0},
        {"1E2", 0, 0},
        {"-0.0", 0, 0},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char b[64];
        snprintf(b, sizeof(b), "{\"n\":%s}", cases[k].num);
        struct jscan_span s = top_of(b, "n");
        int64_t v = 12345;
        int rc = jscan_int(b, &s, &v);
        ck_assert_msg(rc == (cases[k].ok ? 0 : -1), "%s", cases[k].num);
        ck_assert_int_eq(v, cases[k].ok ? cases[k].v : 12345);
    }
    const char *b = "{\"s\":\"1\",\"t\":true}";
    int64_t v = 0;
    struct jscan_span s = top_of(b, "s");
    ck_assert_int_eq(jscan_int(b, &s, &v), -1);
    s = top_of(b, "t");
    ck_assert_int_eq(jscan_int(b, &s, &v), -1);
}
END_TEST

START_TEST(test_iter_member)
{
    const char *b = "{\"m\":[ {\"role\":\"a\",\"role\":\"b\"} , \"x\\\"]\" ,[1,[2,3]],{},-1.5e3,"
                    "true,false,null ],\"o\":{ \"k\\u0061\" : {\"z\":\"}\"} , \"q\":[] },\"e\":[]}";
    struct jscan_span m = top_of(b, "m"), k, v, r;
    ck_assert_uint_eq(m.count, 8);
    struct jscan_iter it;
    const uint8_t types[] = {JSCAN_OBJECT, JSCAN_STRING, JSCAN_ARRAY, JSCAN_OBJECT,
                             JSCAN_NUMBER, JSCAN_TRUE,   JSCAN_FALSE, JSCAN_NULL};
    const uint32_t counts[] = {2, 0, 2, 0, 0, 0, 0, 0};
    const char *raw[] = {"{\"role\":\"a\",\"role\":\"b\"}",
                         "\"x\\\"]\"",
                         "[1,[2,3]]",
                         "{}",
                         "-1.5e3",
                         "true",
                         "false",
                         "null"};
    ck_assert_int_eq(jscan_iter_init(&it, &m), 0);
    unsigned n = 0;
    while (jscan_iter_next(&it, b, &k, &v) == 0) {
        ck_assert_uint_lt(n, 8);
        ck_assert_uint_eq(k.type, JSCAN_ABSENT);
        ck_assert_uint_eq(v.type, types[n]);
        ck_assert_uint_eq(v.count, counts[n]);
        ck_assert_uint_eq(v.len, strlen(raw[n]));
        ck_assert_int_eq(memcmp(b + v.off, raw[n], v.len), 0);
        if (n == 0) {
            ck_assert_int_eq(jscan_member(b, &v, "role", &r), 0);
            ck_assert_int_eq(jscan_string_eq(b, &r, "b"), 1); /* last wins */
        }
        n++;
    }
    ck_assert_uint_eq(n, 8);
    ck_assert_int_eq(jscan_iter_next(&it, b, &k, &v), -1);
    struct jscan_span o = top_of(b, "o");
    ck_assert_int_eq(jscan_iter_init(&it, &o), 0);
    ck_assert_int_eq(jscan_iter_next(&it, b, &k, &v), 0);
    ck_assert_int_eq(jscan_string_eq(b, &k, "ka"), 1);
    ck_assert_uint_eq(k.escaped, 1);
    ck_assert_uint_eq(v.type, JSCAN_OBJECT);
    ck_assert_int_eq(jscan_iter_next(&it, b, NULL, &v), 0);
    ck_assert_uint_eq(v.type, JSCAN_ARRAY);
    ck_assert_int_eq(jscan_iter_next(&it, b, &k, &v), -1);
    ck_assert_int_eq(jscan_member(b, &o, "ka", &r), 0);
    ck_assert_int_eq(jscan_member(b, &r, "z", &r), 0);
    ck_assert_int_eq(memcmp(b + r.off, "\"}\"", 3), 0);
    ck_assert_int_eq(jscan_member(b, &o, "z", &r), -1); /* not at this level */
    struct jscan_span e = top_of(b, "e");
    ck_assert_int_eq(jscan_iter_init(&it, &e), 0);
    ck_assert_int_eq(jscan_iter_next(&it, b, &k, &v), -1);
    ck_assert_int_eq(jscan_member(b, &e, "x", &r), -1); /* not an object */
    struct jscan_span str = top_of("{\"s\":\"x\"}", "s");
    ck_assert_int_eq(jscan_iter_init(&it, &str), -1);
    ck_assert_int_eq(jscan_iter_next(&it, "{\"s\":\"x\"}", &k, &v), -1);
    /* the root itself */
    ck_assert_int_eq(parse(b), JSCAN_OK);
    ck_assert_int_eq(jscan_member(b, &doc.root, "o", &r), 0);
    ck_assert_uint_eq(r.off, jscan_top(&doc, b, "o")->off);
    ck_assert_uint_eq(r.len, jscan_top(&doc, b, "o")->len);
}
END_TEST

static size_t plain_ref(const unsigned char *p, size_t i, size_t n)
{
    while (i < n && !(p[i] == '"' || p[i] == '\\' || p[i] < 0x20 || p[i] >= 0x80))
        i++;
    return i;
}

START_TEST(test_plain_scanners)
{
    /* each stop byte kind at every position of buffers of every length up to 80 */
    const unsigned char stops[] = {'"', '\\', 0x00, 0x1f, 0x80, 0xff, 0x0a};
    unsigned char buf[96];
    for (size_t n = 0; n <= 80; n++)
        for (size_t pos = 0; pos <= n; pos++)
            for (size_t s = 0; s < sizeof(stops); s++) {
                for (size_t k = 0; k < n; k++)
                    buf[k] = (unsigned char)(0x20 + (k * 7 + s) % 0x5f);
                for (size_t k = 0; k < n; k++)
                    if (buf[k] == '"' || buf[k] == '\\')
                        buf[k] = 'x';
                if (pos < n)
                    buf[pos] = stops[s];
                for (size_t from = 0; from <= n && from < 20; from++) {
                    size_t want = plain_ref(buf, from, n);
                    ck_assert_uint_eq(jscan__plain_swar(buf, from, n), want);
                    ck_assert_uint_eq(jscan__plain(buf, from, n), want);
                }
            }
    /* bytes 0x7f and 0x20..0x21, 0x23..0x5b, 0x5d..0x7e never stop */
    for (unsigned c = 0x20; c < 0x80; c++) {
        memset(buf, (int)c, 64);
        size_t want = c == '"' || c == '\\' ? 0 : 64;
        ck_assert_uint_eq(jscan__plain_swar(buf, 0, 64), want);
        ck_assert_uint_eq(jscan__plain(buf, 0, 64), want);
    }
}
END_TEST

START_TEST(test_strerror)
{
    for (int a = JSCAN_OK; a <= JSCAN_DUP_KEY; a++) {
        ck_assert_str_ne(jscan_strerror((enum jscan_status)a), "unknown error");
        for (int b = a + 1; b <= JSCAN_DUP_KEY; b++)
            ck_assert_str_ne(jscan_strerror((enum jscan_status)a),
                             jscan_strerror((enum jscan_status)b));
        ck_assert_int_eq(jscan_is_json_error((enum jscan_status)a),
                         a != JSCAN_OK && a < JSCAN_NOT_OBJECT);
    }
    ck_assert_str_eq(jscan_strerror(JSCAN_BAD_UTF8), "invalid UTF-8");
    ck_assert_str_eq(jscan_strerror(JSCAN_DEPTH), "nesting deeper than 64");
    ck_assert_str_eq(jscan_strerror((enum jscan_status)99), "unknown error");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("jscan");
    TCase *tc = tcase_create("scan");
    tcase_add_test(tc, test_structure);
    tcase_add_test(tc, test_literals_numbers);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_fields);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_precedence);
    tcase_add_test(tc, test_depth);
    tcase_add_test(tc, test_never_past_len);
    tcase_add_test(tc, test_string_decode);
    tcase_add_test(tc, test_int);
    tcase_add_test(tc, test_iter_member);
    tcase_add_test(tc, test_plain_scanners);
    tcase_add_test(tc, test_strerror);
    suite_add_tcase(s, tc);
    return s;
}
