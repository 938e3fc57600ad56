/* The byte scanner (http/framing.c): what it refuses, with which status, at which limits, and
 * that splitting the bytes anywhere changes nothing. */
#include "http/framing.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

struct res {
    bool ok;
    unsigned status;
    const char *why;
    uint64_t requests, complete;
};

/* Feeds `n` bytes of `in` in pieces of `step` bytes (0: at once). */
static struct res feed(const char *in, size_t n, size_t step)
{
    struct framing_scan s;
    framing_scan_init(&s);
    bool ok = true;
    for (size_t i = 0; i < n && ok;) {
        size_t k = step && step < n - i ? step : n - i;
        ok = framing_scan(&s, in + i, k);
        i += k;
    }
    return (struct res){ok, ok ? 0 : s.status, ok ? NULL : s.why, s.requests, s.complete};
}

/* The same result at once and split at every size from 1 to 7. */
static struct res feed_all(const char *in, size_t n)
{
    struct res r = feed(in, n, 0);
    for (size_t step = 1; step < 8; step++) {
        struct res q = feed(in, n, step);
        ck_assert_msg(q.ok == r.ok && q.status == r.status && q.complete == r.complete,
                      "split %zu of %s", step, in);
    }
    return r;
}

/* a literal, NUL bytes included */
#define refused(lit, status, why) refused_n(lit, sizeof(lit) - 1, status, why)
static void refused_n(const char *in, size_t n, unsigned status, const char *why)
{
    struct res r = feed_all(in, n);
    ck_assert_msg(!r.ok, "accepted: %s", in);
    ck_assert_uint_eq(r.status, status);
    ck_assert_msg(strstr(r.why, why), "%s: why '%s', not '%s'", in, r.why, why);
}

#define GET "GET /v1/models HTTP/1.1\r\nHost: x\r\n"

START_TEST(test_accepts)
{
    static const char *ok[] = {
        GET "\r\n",
        "\r\n\r\n" GET "\r\n", /* empty lines before a request line */
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n",
        "GET /a?b=c&d HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab:\tv \t\r\nUA: caf\xc3\xa9\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length:  3 \r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"
        "3;ext=\"a b\"\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct res r = feed_all(ok[i], strlen(ok[i]));
        ck_assert_msg(r.ok, "refused (%s): %s", r.why, ok[i]);
        ck_assert_uint_eq(r.complete, 1);
    }
}
END_TEST

START_TEST(test_pipelined)
{
    const char *in = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /"
                     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "4\r\n\r\n\r\n\r\n0\r\n\r\n" GET "\r\n" GET "X: a";
    struct res r = feed_all(in, strlen(in));
    ck_assert(r.ok);
    /* the body "GET /" and the chunk "\r\n\r\n" are data; the last head is not complete */
    ck_assert_uint_eq(r.complete, 3);
    ck_assert_uint_eq(r.requests, 3);

    /* where the refused request begins, in the call that refused it */
    struct framing_scan s;
    framing_scan_init(&s);
    const char *two = GET "\r\n"
                          "GET / HTTP/1.1\r\nBad Name: 1\r\n";
    ck_assert(!framing_scan(&s, two, strlen(two)));
    ck_assert_uint_eq(s.msg_off, strlen(GET "\r\n"));
    ck_assert_uint_eq(s.complete, 1);
}
END_TEST

/* What parking reads (http/guard_io.c): where in a call's bytes the first Content-Length body
 * ends, its length, the body bytes still to come, whether the scanner is in a head. */
START_TEST(test_body_end)
{
    struct framing_scan s;
    framing_scan_init(&s);
    const char *head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    ck_assert(framing_scan_in_head(&s));
    ck_assert(framing_scan(&s, head, strlen(head)));
    ck_assert(!framing_scan_in_head(&s));
    ck_assert_uint_eq(framing_scan_body_left(&s), 5);
    ck_assert_uint_eq(s.cl_end, 0);
    ck_assert(framing_scan(&s, "abc", 3));
    ck_assert_uint_eq(framing_scan_body_left(&s), 2);
    ck_assert_uint_eq(s.cl_end, 0);
    /* the body ends 2 bytes in; a second request with its own body follows in the same call */
    const char *rest = "de"
                       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz" GET "\r\n";
    ck_assert(framing_scan(&s, rest, strlen(rest)));
    ck_assert_uint_eq(s.cl_end, 2); /* the first to end, not the last */
    ck_assert_uint_eq(s.cl_end_len, 5);
    ck_assert_uint_eq(s.complete, 3);
    ck_assert(framing_scan_in_head(&s));
    ck_assert_uint_eq(framing_scan_body_left(&s), 0);
    /* a call in which no body ends says 0 again */
    ck_assert(framing_scan(&s, GET "\r\n", strlen(GET "\r\n")));
    ck_assert_uint_eq(s.cl_end, 0);
    /* a chunked body is not a Content-Length one */
    const char *ch =
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
    ck_assert(framing_scan(&s, ch, strlen(ch)));
    ck_assert_uint_eq(s.cl_end, 0);
    ck_assert_uint_eq(framing_scan_body_left(&s), 0);
}
END_TEST

START_TEST(test_refusals)
{
    refused("GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", 400,
            "not a token character");
    refused(GET "X Y: z\r\n\r\n", 400, "not a token character");
    refused(GET "X\tY: z\r\n\r\n", 400, "not a token character");
    refused(GET "X-\xc3\xa9: z\r\n\r\n", 400, "not a token character");
    refused(GET "X(Y): z\r\n\r\n", 400, "not a token character");
    refused(GET "NoColon\r\n\r\n", 400, "not a token character");
    refused(GET ": v\r\n\r\n", 400, "name is empty");
    refused(GET "X-A: a\r\n b\r\n\r\n", 400, "obs-fold");
    refused("GET /x HTTP/1.1\r\n\tHost: x\r\n\r\n", 400, "obs-fold");
    refused("GET /x HTTP/1.1\nHost: x\n\n", 400, "bare LF");
    refused(GET "X: a\n\r\n", 400, "bare LF");
    refused("\nGET /x HTTP/1.1\r\n", 400, "bare LF");
    refused(GET "X: a\rb\r\n\r\n", 400, "CR or LF");
    refused(GET "X: a\0b\r\n\r\n", 400, "NUL");
    refused("GET /x HTTP/1.1\r\r\n", 400, "CR not followed by LF");
    refused("garbage\r\n\r\n", 400, "request line");
    refused("GET\r\n\r\n", 400, "request line");
    refused("\x01GET / HTTP/1.1\r\n", 400, "method is not a token");
    refused("G(T / HTTP/1.1\r\n", 400, "method is not a token");
    refused("GET  / HTTP/1.1\r\n", 400, "request line");
    refused("GET /a b HTTP/1.1\r\n", 400, "request line");
    refused("GET /a\x7f HTTP/1.1\r\n", 400, "request line");
    refused("GET /x\r\n", 400, "request line");
    refused("GET /x http/1.1\r\n", 400, "malformed HTTP version");
    refused("GET /x HTTP/1.10\r\n", 400, "malformed HTTP version");
    refused("GET /x HTTP/1\r\n", 400, "malformed HTTP version");
    refused("GET /x HTTP/1.1 \r\n", 400, "request line");
    refused("GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.x");
    refused("GET /x HTTP/0.9\r\nHost: x\r\n\r\n", 505, "HTTP/1.x");
    refused("GET /x HTTP/1.1\r\n\r\n", 400, "needs a Host");
    refused("GET /x HTTP/1.5\r\n\r\n", 400, "needs a Host");
    refused("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0");
    refused(GET "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", 400, "more than one");
    refused(GET "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "together");
    refused(GET "Transfer-Encoding: gzip, chunked\r\n\r\n", 400, "unsupported");
    refused(GET "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
            "unsupported");
    refused(GET "Transfer-Encoding: chun ked\r\n\r\n", 400, "unsupported");
    refused(GET "Content-Length: -1\r\n\r\n", 400, "not a decimal number");
    refused(GET "Content-Length: 1 2\r\n\r\n", 400, "not a decimal number");
    refused(GET "Content-Length:\r\n\r\n", 400, "not a decimal number");
    refused(GET "Content-Length: 18446744073709551616\r\n\r\n", 413, "2^64");
    /* libmicrohttpd 0.9.75 reads 2^64 - 1 as "unknown size" and waits for the body's end */
    refused(GET "Content-Length: 18446744073709551615\r\n\r\n", 413, "2^64");
    refused(GET "Content-Length: 99999999999999999999999\r\n\r\n", 413, "2^64");
#define CH GET "Transfer-Encoding: chunked\r\n\r\n"
    refused(CH "zz\r\n", 400, "malformed chunk size");
    refused(CH "5 \r\n", 400, "malformed chunk size");
    refused(CH ";x\r\n", 400, "malformed chunk size");
    refused(CH "\r\n", 400, "malformed chunk size");
    refused(CH "5\n", 400, "bare LF");
    refused(CH "5;a\x01\r\n", 400, "control byte");
    refused(CH "3\r\nabcX", 400, "not followed by CRLF");
    refused(CH "3\r\nabc\rX", 400, "not followed by CRLF");
    refused(CH "3\r\nabc\n", 400, "bare LF");
    refused(CH "10000000000000000\r\n", 413, "2^64");
    refused(CH "0\r\nBad Trailer: x\r\n\r\n", 400, "not a token character");
}
END_TEST

static size_t fill(char *out, size_t at, char c, size_t n)
{
    memset(out + at, c, n);
    return at + n;
}

START_TEST(test_limits)
{
    static char in[40000];
    /* a request line of FRAMING_LINE_MAX bytes (CRLF not counted) passes, one more is 414 */
    size_t n = (size_t)snprintf(in, sizeof(in), "GET /");
    n = fill(in, n, 'a', FRAMING_LINE_MAX - 5 - 9);
    n += (size_t)snprintf(in + n, sizeof(in) - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(feed(in, n, 0).ok);
    memmove(in + 6, in + 5, n - 5);
    struct res r = feed(in, n + 1, 0);
    ck_assert_uint_eq(r.status, 414);

    /* one field: the head's cost is its bytes plus a record per field */
    const char *rl = "GET / HTTP/1.1\r\n";
    n = (size_t)snprintf(in, sizeof(in), "%sX: ", rl);
    size_t fixed = strlen(rl) + 3 /* "X: " */ + 2 /* CRLF */ + 2 /* end */ + FRAMING_RECORD_COST;
    n = fill(in, n, 'v', FRAMING_HEAD_MAX - fixed);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n\r\n");
    r = feed(in, n, 0);
    ck_assert_msg(!r.ok && strstr(r.why, "Host"), "exactly at the limit: %s", r.why);
    memmove(in + n - 3, in + n - 4, 4); /* one more value byte */
    in[n - 4] = 'v';
    r = feed(in, n + 1, 0);
    ck_assert_uint_eq(r.status, 431);

    /* many small fields: 64 per record */
    n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: x\r\n");
    size_t cost = n + FRAMING_RECORD_COST + 2;
    while (cost + 4 + FRAMING_RECORD_COST <= FRAMING_HEAD_MAX) {
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X:\r\n");
        cost += 4 + FRAMING_RECORD_COST;
    }
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
    ck_assert(feed(in, n, 0).ok);
    n += (size_t)snprintf(in + n - 2, sizeof(in) - n, "X:\r\n\r\n") - 2;
    ck_assert_uint_eq(feed(in, n, 0).status, 431);

    /* cookies and query arguments cost a record each */
    n = (size_t)snprintf(in, sizeof(in), "GET /?");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "a&");
    n += (size_t)snprintf(in + n, sizeof(in) - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_uint_eq(feed(in, n, 0).status, 431);
    n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: x\r\nCookie: ");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "a;");
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n\r\n");
    ck_assert_uint_eq(feed(in, n, 0).status, 431);

    /* a trailer section has its own, smaller limit */
    n = (size_t)snprintf(in, sizeof(in), CH "0\r\nT: ");
    n = fill(in, n, 't', FRAMING_TRAILER_MAX);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n\r\n");
    r = feed(in, n, 0);
    ck_assert_uint_eq(r.status, 431);
    ck_assert(strstr(r.why, "trailer"));

    /* a chunk-size line (extensions included) is bounded */
    n = (size_t)snprintf(in, sizeof(in), CH "1;");
    n = fill(in, n, 'e', FRAMING_CHUNK_LINE_MAX);
    ck_assert_uint_eq(feed(in, n, 0).status, 400);
}
END_TEST

START_TEST(test_parse_clen)
{
    uint64_t v = 0;
    ck_assert_int_eq(framing_parse_clen("18446744073709551614", 20, &v), 0);
    ck_assert_uint_eq(v, UINT64_MAX - 1);
    /* 2^64 - 1 is libmicrohttpd's MHD_SIZE_UNKNOWN: not a length */
    ck_assert_int_eq(framing_parse_clen("18446744073709551615", 20, &v), -1);
    ck_assert_int_eq(framing_parse_clen("18446744073709551616", 20, &v), -1);
    ck_assert_int_eq(framing_parse_clen("0", 1, &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(framing_parse_clen("", 0, &v), -1);
}
END_TEST

START_TEST(test_http11)
{
    ck_assert(framing_http11("HTTP/1.1"));
    ck_assert(framing_http11("HTTP/1.9"));
    ck_assert(!framing_http11("HTTP/1.0"));
    ck_assert(!framing_http11("HTTP/2.0"));
    ck_assert(!framing_http11("HTTP/1.10"));
    ck_assert(!framing_http11(NULL));
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("framing");
    TCase *tc = tcase_create("scan");
    tcase_add_test(tc, test_accepts);
    tcase_add_test(tc, test_pipelined);
    tcase_add_test(tc, test_body_end);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_http11);
    tcase_add_test(tc, test_parse_clen);
    suite_add_tcase(s, tc);
    return s;
}
