/* The lingering close (http/linger.h) on real loopback TCP connections: a client that goes on
 * sending after an answer can send and then read the answer, and the draining is bounded.
 * And the body's memory steps (http_body_step): what a body holds as its bytes arrive. */
#include "http/guard.h"
#include "http/linger.h"
#include "http/server_int.h"
#include "sock.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sends n bytes (blocking, 5 s at most); 0, or the errno that stopped it. */
static int send_n(int fd, size_t n)
{
    static char junk[65536];
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (n > 0) {
        ssize_t w = send(fd, junk, n < sizeof(junk) ? n : sizeof(junk), MSG_NOSIGNAL);
        if (w < 0)
            return errno;
        n -= (size_t)w;
    }
    return 0;
}

/* What the client end receives until EOF (or 2 s); its length. -1: a reset came. */
static ssize_t read_all(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) != 1)
            break;
        ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    return (ssize_t)n;
}

static uint64_t lingering(struct linger_set *l)
{
    struct linger_stats st;
    linger_get_stats(l, &st);
    return st.lingering;
}

START_TEST(test_due)
{
    ck_assert(!linger_due(1000, 1000, 1000));
    ck_assert(!linger_due(1000, 1000, 1000 + LINGER_IDLE_MS - 1));
    ck_assert(linger_due(1000, 1000, 1000 + LINGER_IDLE_MS));
    /* bytes keep it, up to the total */
    ck_assert(!linger_due(1000, 1000 + LINGER_TOTAL_MS - 10, 1000 + LINGER_TOTAL_MS - 1));
    ck_assert(linger_due(1000, 1000 + LINGER_TOTAL_MS - 10, 1000 + LINGER_TOTAL_MS));
    ck_assert(!linger_due(5000, 5000, 10)); /* a clock behind the stamps: not due */
}
END_TEST

START_TEST(test_body_step)
{
    const size_t cap = 10u << 20;
    /* the first byte of a declared 10 MiB body holds 16 KiB, not 10 MiB */
    ck_assert_uint_eq(http_body_step(0, 1, 1, 10u << 20, cap), HTTP_BODY_FIRST);
    /* within the reservation: unchanged */
    ck_assert_uint_eq(http_body_step(HTTP_BODY_FIRST, 100, 100, 10u << 20, cap), HTTP_BODY_FIRST);
    /* doubling, up to the declared length */
    ck_assert_uint_eq(
        http_body_step(HTTP_BODY_FIRST, HTTP_BODY_FIRST + 1, HTTP_BODY_FIRST + 1, 10u << 20, cap),
        2 * HTTP_BODY_FIRST);
    ck_assert_uint_eq(http_body_step(65536, 70000, 70000, 76800, cap), 76800);
    /* a small declared body is taken whole at once */
    ck_assert_uint_eq(http_body_step(0, 100, 100, 300, cap), 300);
    /* a large first piece: what it needs */
    ck_assert_uint_eq(http_body_step(0, 100000, 100000, 0, cap), 100000);
    /* no declared length (chunked): up to the ceiling */
    ck_assert_uint_eq(http_body_step(cap / 2 + 1, cap / 2 + 2, cap / 2 + 2, 0, cap), cap);
    /* an honest 75 KiB body in 8 KiB reads: 16, 32, 64, 75 KiB -- four reservations */
    size_t held = 0, steps = 0;
    for (size_t got = 0; got < 76800;) {
        got += got + 8192 <= 76800 ? 8192 : 76800 - got;
        size_t next = http_body_step(held, got, got, 76800, cap);
        steps += next != held;
        held = next;
    }
    ck_assert_uint_eq(held, 76800);
    ck_assert_uint_eq(steps, 4);
    /* the same body already waiting in the socket at its first read: reserved at once */
    ck_assert_uint_eq(http_body_step(0, 8192, 76800, 76800, cap), 76800);
    /* what waits beyond the declared body (a pipelined request) is not reserved */
    ck_assert_uint_eq(http_body_step(0, 8192, 90000, 76800, cap), 76800);
    /* nor beyond the ceiling (chunked: its framing bytes are counted too) */
    ck_assert_uint_eq(http_body_step(0, 8192, cap + 100, 0, cap), cap);
    /* a slow client with a byte: the first step only */
    ck_assert_uint_eq(http_body_step(0, 1, 1, 10u << 20, cap), HTTP_BODY_FIRST);
}
END_TEST

/* A socket handed over after an answer: the client can send 4 MiB more (no reset), then reads
 * the answer and an end of file; the socket goes when the client closes. */
START_TEST(test_drains_then_closes)
{
    struct linger_set *l = linger_new(8);
    ck_assert_ptr_nonnull(l);
    int c, s = tcp_pair(&c);
    static const char answer[] = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    ck_assert_int_eq(send(s, answer, sizeof(answer) - 1, 0), (ssize_t)sizeof(answer) - 1);
    ck_assert_int_eq(send_n(c, 1000), 0); /* unread when the server lets go */
    linger_take(l, s, now_ms());
    ck_assert_uint_eq(lingering(l), 1);
    ck_assert_int_eq(send_n(c, 4u << 20), 0);
    char got[256];
    ck_assert_int_eq(read_all(c, got, sizeof(got)), (ssize_t)sizeof(answer) - 1);
    ck_assert_str_eq(got, answer);
    close(c);
    for (int i = 0; i < 50 && lingering(l); i++)
        sleep_ms(20);
    ck_assert_uint_eq(lingering(l), 0);
    linger_free(l);
}
END_TEST

/* A silent client is let go after LINGER_IDLE_MS; one that never stops after LINGER_TOTAL_MS. */
START_TEST(test_bounded)
{
    struct linger_set *l = linger_new(8);
    int c1, s1 = tcp_pair(&c1), c2, s2 = tcp_pair(&c2);
    uint64_t t0 = now_ms();
    linger_take(l, s1, t0);
    linger_take(l, s2, t0);
    ck_assert_uint_eq(lingering(l), 2);
    int err = 0;
    uint64_t first_gone = 0;
    while (now_ms() - t0 < LINGER_TOTAL_MS + 2000 && !err) {
        err = send_n(c2, 1024); /* every 100 ms, never idle */
        if (!first_gone && lingering(l) == 1)
            first_gone = now_ms() - t0;
        sleep_ms(100);
    }
    ck_assert_msg(first_gone >= LINGER_IDLE_MS - 100 && first_gone < LINGER_IDLE_MS + 500,
                  "silent socket closed after %llu ms", (unsigned long long)first_gone);
    ck_assert_msg(err == EPIPE || err == ECONNRESET, "the sender was not cut (%d)", err);
    ck_assert_uint_ge(now_ms() - t0, LINGER_TOTAL_MS - 100);
    ck_assert_uint_eq(lingering(l), 0);
    close(c1);
    close(c2);
    linger_free(l);
}
END_TEST

/* At most `max` linger: beyond, a socket is closed at once. linger_free closes what lingers. */
START_TEST(test_full_and_free)
{
    struct linger_set *l = linger_new(1);
    int c1, s1 = tcp_pair(&c1), c2, s2 = tcp_pair(&c2);
    linger_take(l, s1, now_ms());
    linger_take(l, s2, now_ms());
    struct linger_stats st;
    linger_get_stats(l, &st);
    ck_assert_uint_eq(st.lingering, 1);
    ck_assert_uint_eq(st.taken, 1);
    ck_assert_uint_eq(st.full, 1);
    char got[16];
    ck_assert_int_eq(read_all(c2, got, sizeof(got)), 0); /* closed: EOF */
    linger_free(l);
    ck_assert_int_eq(read_all(c1, got, sizeof(got)), 0);
    close(c1);
    close(c2);
}
END_TEST

/* The guard's refusal in the middle of a body: the reply on the socket, then libmicrohttpd's
 * close (guard_close, then close(2) of its descriptor) -- the client still sends 4 MiB and
 * then reads the whole 413. */
START_TEST(test_guard_refusal_lingers)
{
    struct guard_limits gl = {
        .header_ms = 10000, .body_ms = 10000, .keepalive_ms = 10000, .max_conns = 16};
    struct guard *g = guard_new(&gl);
    ck_assert_ptr_nonnull(g);
    int c, s = tcp_pair(&c);
    struct guard_conn *gc = guard_open(g, s, 0, 1);
    ck_assert(guard_enter(gc, G_BODY));
    ck_assert_int_eq(send_n(c, 100000), 0); /* some body, unread */
    ck_assert(!guard_refuse(gc, LGE_TOO_LARGE, "too large", 0));
    ck_assert_int_eq(guard_phase_of(gc), G_CUT);
    guard_close(g, gc); /* libmicrohttpd's close */
    close(s);
    ck_assert_int_eq(send_n(c, 4u << 20), 0);
    static char got[4096];
    ssize_t n = read_all(c, got, sizeof(got));
    ck_assert_int_gt(n, 0);
    ck_assert_msg(strstr(got, "HTTP/1.1 413 ") == got, "%s", got);
    ck_assert_ptr_nonnull(strstr(got, "\"code\":\"request_too_large\""));
    uint64_t now, total;
    guard_linger_stats(g, &now, &total);
    ck_assert_uint_eq(total, 1);
    close(c);
    guard_free(g);
}
END_TEST

Suite *make_suite(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("linger");
    TCase *tc = tcase_create("linger");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_due);
    tcase_add_test(tc, test_body_step);
    tcase_add_test(tc, test_drains_then_closes);
    tcase_add_test(tc, test_bounded);
    tcase_add_test(tc, test_full_and_free);
    tcase_add_test(tc, test_guard_refusal_lingers);
    suite_add_tcase(s, tc);
    return s;
}
