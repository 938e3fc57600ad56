/* The front door's guard: deadlines per phase, the eviction order when the connection table is
 * full, and what a cut client receives, on real loopback TCP connections. */
#include "http/guard.h"
#include "http/guard_int.h" /* guard__limit: the question recv() asks before a read */
#include "sock.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What the client end receives until EOF (or 2 s): into out, NUL-terminated; its length. */
static size_t read_all(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) != 1)
            break;
        ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    return n;
}

static unsigned counted[600];
static void count(void *arg, unsigned status)
{
    (void)arg;
    counted[status]++;
}

START_TEST(test_due)
{
    struct guard_limits l = {.header_ms = 100, .body_ms = 200, .keepalive_ms = 300};
    ck_assert_int_eq(guard_due(G_HEADER, 1000, 1099, &l), GA_NONE);
    ck_assert_int_eq(guard_due(G_HEADER, 1000, 1100, &l), GA_TIMEOUT);
    ck_assert_int_eq(guard_due(G_BODY, 1000, 1199, &l), GA_NONE);
    ck_assert_int_eq(guard_due(G_BODY, 1000, 1200, &l), GA_TIMEOUT);
    ck_assert_int_eq(guard_due(G_IDLE, 1000, 1299, &l), GA_NONE);
    ck_assert_int_eq(guard_due(G_IDLE, 1000, 1300, &l), GA_PROBE);
    ck_assert_int_eq(guard_due(G_BUSY, 0, 1u << 30, &l), GA_NONE);
    ck_assert_int_eq(guard_due(G_CUT, 0, 1u << 30, &l), GA_NONE);
    ck_assert_int_eq(guard_due(G_HEADER, 2000, 1000, &l), GA_NONE); /* a stamp ahead of now */
}
END_TEST

/* Deadlines far away: only the table limit acts. */
START_TEST(test_eviction_order)
{
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 3,
                             .count_status = count};
    ck_assert(guard_init_process()); /* the recv() override: what the server side reads counts */
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int ca, cb, cc, cd, ce;
    int sa = tcp_pair(&ca), sb = tcp_pair(&cb), sc = tcp_pair(&cc);
    /* a: accepted 6 s ago and silent since (nothing read): past the time an unread connection
     * is kept for a busy gateway */
    struct guard_conn *a = guard_open(g, sa, guard_now_ms() - 6000, 0),
                      *b = guard_open(g, sb, 0, 0), *c = guard_open(g, sc, 0, 0);
    ck_assert(guard_enter(b, G_IDLE));
    ck_assert(guard_enter(c, G_BUSY));
    /* full: the idle keep-alive connection goes first, without a reply */
    int sd = tcp_pair(&cd);
    struct guard_conn *d = guard_open(g, sd, 0, 0);
    ck_assert_int_eq(guard_phase_of(b), G_CUT);
    ck_assert(!guard_enter(b, G_BUSY));
    ck_assert(!guard_touch(b));
    ck_assert_int_eq(guard_phase_of(a), G_HEADER);
    char buf[2048];
    ck_assert_uint_eq(read_all(cb, buf, sizeof(buf)), 0);
    guard_close(g, b);
    close(sb);
    /* next: the oldest of the headers (a, which sent nothing: closed without a reply) */
    int se = tcp_pair(&ce);
    struct guard_conn *e = guard_open(g, se, 0, 0);
    ck_assert_int_eq(guard_phase_of(a), G_CUT);
    ck_assert_int_eq(guard_phase_of(d), G_HEADER);
    ck_assert_uint_eq(read_all(ca, buf, sizeof(buf)), 0);
    guard_close(g, a);
    close(sa);
    /* a new connection whose bytes the server has not read yet (its threads busy) is not
     * judged slow, however long ago it connected: the idle keep-alive connection goes first */
    ck_assert_int_eq(send(cd, "POST /v1/ch", 11, 0), 11);
    sleep_ms(1100);
    int sx, cx;
    sx = tcp_pair(&cx);
    ck_assert(guard_enter(e, G_IDLE));
    struct guard_conn *x = guard_open(g, sx, 0, 0);
    ck_assert_int_eq(guard_phase_of(e), G_CUT);
    ck_assert_int_eq(guard_phase_of(d), G_HEADER);
    guard_close(g, e);
    close(se);
    close(ce);
    /* read, its headers are arriving for over a second: it outranks everything; one that
     * sent bytes gets 408 */
    char part[32];
    ck_assert_int_eq(recv(sd, part, sizeof(part), 0), 11); /* through the override */
    ck_assert(guard_enter(x, G_IDLE));
    ck_assert_int_eq(guard_phase_of(d), G_HEADER);
    int sf, cf;
    sf = tcp_pair(&cf);
    struct guard_conn *f = guard_open(g, sf, 0, 0);
    ck_assert_int_eq(guard_phase_of(d), G_CUT);
    ck_assert_int_eq(guard_phase_of(x), G_IDLE);
    read_all(cd, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "\"code\":\"request_timeout\""));
    ck_assert_ptr_nonnull(strstr(buf, "Content-Type: application/json\r\n"));
    ck_assert_uint_eq(counted[408], 1);
    guard_close(g, d);
    close(sd);
    /* every slot busy with a request: the newcomer is refused with 503 and Retry-After */
    ck_assert(guard_enter(x, G_BUSY));
    ck_assert(guard_enter(f, G_BODY));
    int sh, ch;
    sh = tcp_pair(&ch);
    struct guard_conn *h = guard_open(g, sh, 0, 0);
    ck_assert_int_eq(guard_phase_of(h), G_CUT);
    ck_assert(!guard_enter(h, G_HEADER));
    read_all(ch, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 503 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "Retry-After: 1\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\"code\":\"overloaded\""));
    struct guard_stats st;
    guard_get_stats(g, &st);
    ck_assert_uint_eq(st.evicted, 4);
    ck_assert_uint_eq(st.refused, 1);
    ck_assert_uint_eq(st.open, 4);
    struct guard_conn *left[] = {c, x, f, h};
    int fds[] = {sc, sx, sf, sh, cc, cd, cx, cf, ch, ca, cb};
    for (size_t i = 0; i < 4; i++)
        guard_close(g, left[i]);
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    guard_free(g);
}
END_TEST

/* A burst of new connections whose requests wait unread (the threads are busy) fills the table:
 * the next one is refused with a 503 it can read, none of them is evicted as "slow". */
START_TEST(test_unread_are_kept)
{
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 2,
                             .count_status = count};
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int ca, cb, cn;
    int sa = tcp_pair(&ca), sb = tcp_pair(&cb);
    uint64_t then = guard_now_ms() - 2000; /* 2 s ago: "slow" by the old rule */
    struct guard_conn *a = guard_open(g, sa, then, 1), *b = guard_open(g, sb, then, 2);
    const char req[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(ca, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    ck_assert_int_eq(send(cb, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    int sn = tcp_pair(&cn);
    struct guard_conn *n = guard_open(g, sn, 0, 3);
    ck_assert_int_eq(guard_phase_of(a), G_HEADER);
    ck_assert_int_eq(guard_phase_of(b), G_HEADER);
    ck_assert_int_eq(guard_phase_of(n), G_CUT);
    char buf[2048];
    read_all(cn, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 503 ", 13) == 0, "%s", buf);
    struct guard_conn *left[] = {a, b, n};
    int fds[] = {sa, sb, sn, ca, cb, cn};
    for (size_t i = 0; i < 3; i++)
        guard_close(g, left[i]);
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    guard_free(g);
}
END_TEST

/* Connections reach the table through different threads, not always in the order they were
 * accepted: the oldest is by accept order (seq), and the header deadline runs from accept. */
START_TEST(test_accept_order)
{
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 3,
                             .count_status = count};
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int c1, c2, c3, c4, c5;
    int s1 = tcp_pair(&c1), s2 = tcp_pair(&c2), s3 = tcp_pair(&c3);
    uint64_t at = guard_now_ms() - 6000; /* silent for 6 s: evictable (UNREAD_KEEP_MS) */
    /* registered in the order 3, 1, 2 with one stamp: 1 was accepted first */
    struct guard_conn *k3 = guard_open(g, s3, at, 3);
    struct guard_conn *k1 = guard_open(g, s1, at, 1);
    struct guard_conn *k2 = guard_open(g, s2, at, 2);
    int s4 = tcp_pair(&c4);
    struct guard_conn *k4 = guard_open(g, s4, at, 4);
    ck_assert_int_eq(guard_phase_of(k1), G_CUT);
    ck_assert_int_eq(guard_phase_of(k2), G_HEADER);
    ck_assert_int_eq(guard_phase_of(k3), G_HEADER);
    guard_close(g, k1);
    close(s1);
    int s5 = tcp_pair(&c5);
    struct guard_conn *k5 = guard_open(g, s5, at, 5);
    ck_assert_int_eq(guard_phase_of(k2), G_CUT);
    ck_assert_int_eq(guard_phase_of(k3), G_HEADER);
    ck_assert_int_eq(guard_phase_of(k4), G_HEADER);
    ck_assert_int_eq(guard_phase_of(k5), G_HEADER);
    guard_close(g, k2);
    close(s2);
    guard_free(g); /* frees k3, k4, k5 too */

    /* the header deadline counts from accept, not from registration */
    struct guard_limits s = {.header_ms = 500,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 8,
                             .count_status = count};
    struct guard *h = guard_new(&s);
    ck_assert_ptr_nonnull(h);
    int c6, s6 = tcp_pair(&c6);
    ck_assert_int_eq(send(c6, "GET /", 5, 0), 5);
    sleep_ms(50);
    struct guard_conn *k6 = guard_open(h, s6, guard_now_ms() - 450, 1);
    guard_request_line(k6);
    sleep_ms(350); /* 800 ms after "accept", 350 after registration */
    ck_assert_int_eq(guard_phase_of(k6), G_CUT);
    guard_close(h, k6);
    guard_free(h);
    int fds[] = {s3, s4, s5, s6, c1, c2, c3, c4, c5, c6};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}
END_TEST

/* Short deadlines: the watchdog acts. */
START_TEST(test_deadlines)
{
    struct guard_limits l = {
        .header_ms = 200, .body_ms = 200, .keepalive_ms = 200, .max_conns = 100, .tick_ms = 10};
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    char buf[2048];
    int c1, c2, c3, c4, c5;

    /* headers trickling past the deadline: 408 */
    int s1 = tcp_pair(&c1);
    struct guard_conn *h = guard_open(g, s1, 0, 0);
    ck_assert_int_eq(send(c1, "G", 1, 0), 1);
    guard_request_line(h);
    sleep_ms(100);
    ck_assert_int_eq(guard_phase_of(h), G_HEADER);
    read_all(c1, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);
    ck_assert_int_eq(guard_phase_of(h), G_CUT);

    /* a body that keeps coming is never cut, however long it takes in all */
    int s2 = tcp_pair(&c2);
    struct guard_conn *b = guard_open(g, s2, 0, 0);
    ck_assert(guard_enter(b, G_BODY));
    for (int i = 0; i < 10; i++) {
        sleep_ms(60);
        ck_assert(guard_touch(b));
    }
    /* ...and one that stalls is, with 408 */
    read_all(c2, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "client_body_timeout_s"));
    ck_assert(!guard_touch(b));

    /* an idle keep-alive connection: closed without a reply */
    int s3 = tcp_pair(&c3);
    struct guard_conn *k = guard_open(g, s3, 0, 0);
    ck_assert(guard_enter(k, G_IDLE));
    ck_assert_uint_eq(read_all(c3, buf, sizeof(buf)), 0);
    ck_assert_int_eq(guard_phase_of(k), G_CUT);

    /* a keep-alive connection whose next request line is still arriving at the keep-alive
     * deadline gets the header deadline on top, then 408 */
    int s4 = tcp_pair(&c4);
    struct guard_conn *p = guard_open(g, s4, 0, 0);
    ck_assert(guard_enter(p, G_IDLE));
    sleep_ms(100);
    ck_assert_int_eq(send(c4, "POS", 3, 0), 3);
    sleep_ms(200);
    ck_assert_int_eq(guard_phase_of(p), G_HEADER);
    read_all(c4, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);

    /* a fresh connection that never sent a byte: closed without a reply */
    int s5 = tcp_pair(&c5);
    struct guard_conn *q = guard_open(g, s5, 0, 0);
    ck_assert_uint_eq(read_all(c5, buf, sizeof(buf)), 0);
    ck_assert_int_eq(guard_phase_of(q), G_CUT);

    /* busy connections have no client deadline */
    int s6, c6;
    s6 = tcp_pair(&c6);
    struct guard_conn *r = guard_open(g, s6, 0, 0);
    ck_assert(guard_enter(r, G_BUSY));
    sleep_ms(400);
    ck_assert_int_eq(guard_phase_of(r), G_BUSY);

    struct guard_stats st;
    guard_get_stats(g, &st);
    ck_assert_uint_eq(st.header_timeouts, 3);
    ck_assert_uint_eq(st.body_timeouts, 1);
    ck_assert_uint_eq(st.idle_closed, 1);
    struct guard_conn *all[] = {h, b, k, p, q, r};
    int fds[] = {s1, s2, s3, s4, s5, s6, c1, c2, c3, c4, c5, c6};
    for (size_t i = 0; i < 6; i++)
        guard_close(g, all[i]);
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    guard_free(g);
}
END_TEST

/* A body that keeps coming, a byte at a time, is cut at client_body_deadline_s from its start
 * (the per-read deadline alone would keep it forever); the next request's body starts anew. */
START_TEST(test_body_deadline)
{
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .body_total_ms = 400,
                             .keepalive_ms = 600000,
                             .max_conns = 8,
                             .tick_ms = 10,
                             .count_status = count};
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int ca, cb;
    int sa = tcp_pair(&ca), sb = tcp_pair(&cb);
    struct guard_conn *a = guard_open(g, sa, 0, 1), *b = guard_open(g, sb, 0, 2);
    ck_assert(guard_enter(a, G_BODY));
    ck_assert(guard_enter(b, G_BODY));
    for (int i = 0; i < 5; i++) { /* 250 ms of steady reads */
        sleep_ms(50);
        ck_assert(guard_touch(a));
        ck_assert(guard_touch(b));
    }
    /* b's request ends and its next one begins: a new body, a new deadline */
    ck_assert(guard_enter(b, G_BUSY));
    ck_assert(guard_enter(b, G_IDLE));
    guard_request_line(b);
    ck_assert(guard_enter(b, G_BODY));
    bool cut = false;
    for (int i = 0; i < 20 && !cut; i++) { /* up to 1 s more: a must go at ~400 ms */
        sleep_ms(20);
        cut = !guard_touch(a);
    }
    ck_assert(cut);
    ck_assert_int_eq(guard_phase_of(b), G_BODY);
    char buf[2048];
    read_all(ca, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "client_body_deadline_s"));
    struct guard_stats st;
    guard_get_stats(g, &st);
    ck_assert_uint_eq(st.body_timeouts, 1);
    guard_close(g, a);
    guard_close(g, b);
    int fds[] = {sa, sb, ca, cb};
    for (size_t i = 0; i < 4; i++)
        close(fds[i]);
    guard_free(g);
}
END_TEST

/* The table full of requests: a body arriving slowly is evicted for a newcomer (408), one
 * arriving at a fair rate is kept; with none left to evict the newcomer gets 503. */
START_TEST(test_slow_body_evicted)
{
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 3,
                             .count_status = count};
    ck_assert(guard_init_process());
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int ca, cb, cc, cd, ce;
    int sa = tcp_pair(&ca), sb = tcp_pair(&cb), sc = tcp_pair(&cc);
    struct guard_conn *a = guard_open(g, sa, 0, 1), *b = guard_open(g, sb, 0, 2),
                      *c = guard_open(g, sc, 0, 3);
    ck_assert(guard_enter(c, G_BUSY));
    static char chunk[16384], sink[16384];
    memset(chunk, 'x', sizeof(chunk));
    /* the requests' headers first (the guard's scanner follows every byte) */
    const char req[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 10000000\r\n\r\n";
    ck_assert_int_eq(send(ca, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    ck_assert_int_eq(send(cb, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
    sleep_ms(20);
    ck_assert_int_eq(recv(sa, sink, sizeof(sink), 0), (ssize_t)sizeof(req) - 1);
    ck_assert_int_eq(recv(sb, sink, sizeof(sink), 0), (ssize_t)sizeof(req) - 1);
    ck_assert(guard_enter(a, G_BODY));
    ck_assert(guard_enter(b, G_BODY));
    for (int i = 0; i < 11; i++) { /* 2.2 s: a sends one byte, b 176 KiB (80 KiB/s) */
        if (i == 0) {
            ck_assert_int_eq(send(ca, "{", 1, 0), 1);
            ck_assert_int_eq(recv(sa, sink, sizeof(sink), 0), 1); /* through the override */
            ck_assert(guard_touch(a));
        }
        ck_assert_int_eq(send(cb, chunk, sizeof(chunk), 0), (ssize_t)sizeof(chunk));
        size_t got = 0;
        while (got < sizeof(chunk)) {
            ssize_t r = recv(sb, sink, sizeof(sink), 0);
            ck_assert_int_gt(r, 0);
            got += (size_t)r;
        }
        ck_assert(guard_touch(b));
        sleep_ms(200);
    }
    int sd = tcp_pair(&cd);
    struct guard_conn *d = guard_open(g, sd, 0, 4);
    ck_assert_int_eq(guard_phase_of(a), G_CUT);
    ck_assert_int_eq(guard_phase_of(b), G_BODY);
    ck_assert_int_eq(guard_phase_of(d), G_HEADER);
    char buf[2048];
    read_all(ca, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "body was the slowest"));
    /* a is leaving (cut), the table holds b, c, d: the next newcomer finds no one to evict */
    int se = tcp_pair(&ce);
    struct guard_conn *e = guard_open(g, se, 0, 5);
    ck_assert_int_eq(guard_phase_of(e), G_CUT);
    ck_assert_int_eq(guard_phase_of(b), G_BODY);
    read_all(ce, buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "HTTP/1.1 503 ", 13) == 0, "%s", buf);
    struct guard_stats st;
    guard_get_stats(g, &st);
    ck_assert_uint_eq(st.evicted, 1);
    ck_assert_uint_eq(st.refused, 1);
    struct guard_conn *all[] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++)
        guard_close(g, all[i]);
    int fds[] = {sa, sb, sc, sd, se, ca, cb, cc, cd, ce};
    for (size_t i = 0; i < 10; i++)
        close(fds[i]);
    guard_free(g);
}
END_TEST

/* Parking while someone waits (guard.h): a read stops where the peek looked (at nothing: no
 * read), so a request or a body arriving between the peek and the read is not swallowed unseen;
 * the body is then read up to one byte short and its last byte held. */
START_TEST(test_park_head_then_body)
{
    static atomic_uint waiting;
    struct guard_limits l = {.header_ms = 600000,
                             .body_ms = 600000,
                             .keepalive_ms = 600000,
                             .max_conns = 4,
                             .park_when = &waiting};
    ck_assert(guard_init_process());
    struct guard *g = guard_new(&l);
    ck_assert_ptr_nonnull(g);
    int cl, sv = tcp_pair(&cl);
    struct guard_conn *c = guard_open(g, sv, 0, 1);
    const char head[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 10\r\n\r\n";
    const size_t hl = sizeof(head) - 1;
    char buf[8192];
    atomic_store(&waiting, 1);
    /* nothing has come: the read says so (EAGAIN), so that a request arriving between the
     * peek and the read is looked at by the read its own edge brings */
    ck_assert_uint_eq(guard__limit(c, sv, buf, sizeof(buf)), 0);
    ck_assert_int_eq(send(cl, head, hl, 0), (ssize_t)hl);
    sleep_ms(20);
    atomic_store(&waiting, 0);
    ck_assert_uint_eq(guard__limit(c, sv, buf, sizeof(buf)), sizeof(buf)); /* nobody waits */
    atomic_store(&waiting, 1);
    /* the peek sees the head alone: no more than it may be read, whatever comes next */
    ck_assert_uint_eq(guard__limit(c, sv, buf, sizeof(buf)), hl);
    ck_assert_int_eq(send(cl, "0123456789", 10, 0), 10);
    sleep_ms(20);
    ck_assert_int_eq(recv(sv, buf, hl, 0), (ssize_t)hl); /* libmicrohttpd reads what it was told */
    ck_assert(!guard_held(c));
    ck_assert_int_eq(recv(sv, buf, sizeof(buf), 0), 9); /* the body, one byte short */
    ck_assert(guard_held(c));
    errno = 0;
    ck_assert_int_eq(recv(sv, buf, sizeof(buf), 0), -1); /* the last byte stays in the kernel */
    ck_assert_int_eq(errno, EAGAIN);
    guard_unhold(c);
    ck_assert_int_eq(recv(sv, buf, sizeof(buf), 0), 1);
    guard_close(g, c);
    close(sv);
    close(cl);
    guard_free(g);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("guard");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_due);
    tcase_add_test(tc, test_eviction_order);
    tcase_add_test(tc, test_accept_order);
    tcase_add_test(tc, test_unread_are_kept);
    tcase_add_test(tc, test_deadlines);
    tcase_add_test(tc, test_body_deadline);
    tcase_add_test(tc, test_slow_body_evicted);
    tcase_add_test(tc, test_park_head_then_body);
    suite_add_tcase(s, tc);
    return s;
}
