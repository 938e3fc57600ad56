/* SSE framing: events counted across arbitrary splits and every line-end style; error events. */
#include "core/errors.h"
#include "core/sse.h"
#include "unit.h"

#include <stdint.h>
#include <string.h>

static size_t feed_all(const char *s, size_t step)
{
    struct sse_scan sc;
    sse_scan_init(&sc);
    size_t n = strlen(s), ev = 0;
    for (size_t i = 0; i < n; i += step)
        ev += sse_scan_feed(&sc, s + i, i + step <= n ? step : n - i);
    return ev;
}

START_TEST(test_counts)
{
    const char *lf = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
    const char *crlf = "data: x\r\n\r\nevent: e\r\ndata: y\r\n\r\n";
    const char *cr = "data: x\r\rdata: y\r\r";
    const char *comments = ": keep-alive\n\ndata: x\n\n: ping\n\n";
    const char *partial = "data: x\n\ndata: y\n";
    for (size_t step = 1; step <= 7; step++) {
        ck_assert_uint_eq(feed_all(lf, step), 3);
        ck_assert_uint_eq(feed_all(crlf, step), 2);
        ck_assert_uint_eq(feed_all(cr, step), 2);
        ck_assert_uint_eq(feed_all(comments, step), 1);
        ck_assert_uint_eq(feed_all(partial, step), 1);
    }
    ck_assert_uint_eq(feed_all("\n\n\n\n", 1), 0);
}
END_TEST

START_TEST(test_split_crlf)
{
    /* CR at the end of one piece, LF at the start of the next: one line end, not two */
    struct sse_scan sc;
    sse_scan_init(&sc);
    ck_assert_uint_eq(sse_scan_feed(&sc, "data: x\r", 8), 0);
    ck_assert_uint_eq(sse_scan_feed(&sc, "\n", 1), 0);
    ck_assert_uint_eq(sse_scan_feed(&sc, "\r", 1), 1);
    ck_assert_uint_eq(sse_scan_feed(&sc, "\ndata: y\n\n", 10), 1);
}
END_TEST

/* The byte-at-a-time scanner the fast one replaced: the reference it must agree with. */
static size_t ref_feed(struct sse_scan *s, const char *p, size_t n)
{
    size_t events = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n' && s->cr) {
            s->cr = 0;
            continue;
        }
        s->cr = (c == '\r');
        if (c == '\n' || c == '\r') {
            if (s->bol) {
                if (s->has_field)
                    events++;
                s->has_field = 0;
            } else if (!s->comment) {
                s->has_field = 1;
            }
            s->bol = 1;
            s->comment = 0;
            continue;
        }
        if (s->bol) {
            s->comment = (c == ':');
            s->bol = 0;
        }
    }
    return events;
}

START_TEST(test_random_against_reference)
{
    static const char alphabet[] = "\n\n\r:d a";
    uint64_t x = 0x243f6a8885a308d3ull;
    char buf[300];
    for (int round = 0; round < 20000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = (size_t)(x % sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = alphabet[x % (sizeof(alphabet) - 1)];
        }
        struct sse_scan a, b;
        sse_scan_init(&a);
        sse_scan_init(&b);
        size_t ea = 0, eb = ref_feed(&b, buf, n);
        for (size_t i = 0; i < n;) { /* random pieces */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t k = 1 + (size_t)(x % 17);
            if (k > n - i)
                k = n - i;
            ea += sse_scan_feed(&a, buf + i, k);
            i += k;
        }
        ck_assert_uint_eq(ea, eb);
        ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
    }
}
END_TEST

START_TEST(test_envelope)
{
    char out[512];
    size_t n = err_envelope(out, sizeof(out), LGE_TIMEOUT, NULL, NULL);
    ck_assert_uint_gt(n, 0);
    ck_assert_str_eq(
        out, "{\"error\":{\"message\":\"the request timed out\",\"type\":\"gateway_timeout\","
             "\"param\":null,\"code\":\"timeout\"}}");
    n = err_envelope(out, sizeof(out), LGE_INVALID_REQUEST, "bad \"x\"/y", "model");
    ck_assert_str_eq(
        out, "{\"error\":{\"message\":\"bad \\\"x\\\"/y\",\"type\":\"invalid_request_error\","
             "\"param\":\"model\",\"code\":\"invalid_request\"}}");
    ck_assert_uint_eq(err_envelope(out, 10, LGE_TIMEOUT, NULL, NULL), 0);
    ck_assert_uint_eq(err_info(LGE_QUEUE_FULL)->status, 503);
    ck_assert_uint_eq(err_info(LGE_RATE_LIMITED)->status, 429);
    ck_assert_uint_eq(err_info(LGE_BAD_GATEWAY)->status, 502);
    ck_assert_uint_eq(err_info(LGE_TOO_LARGE)->status, 413);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("sse");
    TCase *tc = tcase_create("framing");
    tcase_add_test(tc, test_counts);
    tcase_add_test(tc, test_split_crlf);
    tcase_add_test(tc, test_random_against_reference);
    tcase_add_test(tc, test_envelope);
    suite_add_tcase(s, tc);
    return s;
}
