/* The acceptor: connections are handed over with their peer address; stopping it closes the
 * listening socket (a connection attempt is then refused, not left hanging); running out of
 * descriptors pauses accepting instead of spinning, and accepting resumes by itself. */
#include "http/accept.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static atomic_int handed;
static atomic_int last_port; /* the peer's port, as the acceptor saw it */
static int kept[16];         /* with keep: the connections taken stay open, as a server's do */
static bool keep;

static void take(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
    (void)arg;
    if (len >= (socklen_t)sizeof(struct sockaddr_in) && sa->sa_family == AF_INET)
        atomic_store(&last_port, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    int n = atomic_load(&handed);
    if (keep && n < 16)
        kept[n] = fd;
    else
        close(fd);
    atomic_fetch_add(&handed, 1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int listener(struct sockaddr_in *a)
{
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)a, sizeof(*a)), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    socklen_t al = sizeof(*a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)a, &al), 0);
    return fd;
}

/* A connected client socket; its local port in *port. */
static int dial(const struct sockaddr_in *a, int *port)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    if (connect(c, (const struct sockaddr *)a, sizeof(*a)) != 0) {
        int e = errno;
        close(c);
        errno = e;
        return -1;
    }
    struct sockaddr_in me;
    socklen_t ml = sizeof(me);
    ck_assert_int_eq(getsockname(c, (struct sockaddr *)&me, &ml), 0);
    if (port)
        *port = ntohs(me.sin_port);
    return c;
}

static void wait_handed(int n)
{
    for (int i = 0; i < 300 && atomic_load(&handed) < n; i++)
        sleep_ms(10);
}

START_TEST(test_hand_over_and_stop)
{
    atomic_store(&handed, 0);
    struct sockaddr_in a;
    int lfd = listener(&a);
    struct acceptor *acc = acceptor_start(lfd, take, NULL);
    ck_assert_ptr_nonnull(acc);
    int port = 0;
    int c = dial(&a, &port);
    ck_assert_int_ge(c, 0);
    wait_handed(1);
    ck_assert_int_eq(atomic_load(&handed), 1);
    ck_assert_int_eq(atomic_load(&last_port), port);
    close(c);

    int cs[20];
    for (int i = 0; i < 20; i++) {
        cs[i] = dial(&a, NULL);
        ck_assert_int_ge(cs[i], 0);
    }
    wait_handed(21);
    ck_assert_int_eq(atomic_load(&handed), 21);
    ck_assert_uint_eq(acceptor_accepted(acc), 21);
    for (int i = 0; i < 20; i++)
        close(cs[i]);

    acceptor_stop(acc);
    acceptor_stop(acc); /* idempotent */
    errno = 0;
    ck_assert_int_eq(dial(&a, NULL), -1);
    ck_assert_int_eq(errno, ECONNREFUSED);
    ck_assert_int_eq(atomic_load(&handed), 21);
    acceptor_free(acc);
}
END_TEST

/* Check runs each test in its own process, so the lowered descriptor limit stays here. */
START_TEST(test_out_of_descriptors_pauses)
{
    atomic_store(&handed, 0);
    keep = true;
    struct sockaddr_in a;
    int lfd = listener(&a);
    struct acceptor *acc = acceptor_start(lfd, take, NULL);
    ck_assert_ptr_nonnull(acc);

    int c1 = dial(&a, NULL);
    ck_assert_int_ge(c1, 0);
    wait_handed(1);
    ck_assert_int_eq(atomic_load(&handed), 1);
    sleep_ms(50); /* the acceptor is blocked in accept4 again, a descriptor reserved */

    /* c2 takes the lowest free descriptor and the limit allows none above it: the acceptor's
     * reserved one takes c2, then accept4 has no descriptor for the next (EMFILE) */
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c2, 0);
    low = old;
    low.rlim_cur = (rlim_t)c2 + 1;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    ck_assert_int_eq(connect(c2, (const struct sockaddr *)&a, sizeof(a)), 0);
    wait_handed(2);
    ck_assert_int_eq(atomic_load(&handed), 2);
    /* a third client waits in the kernel's backlog while the acceptor pauses, not spins */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    int c3 = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c3, 0);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    ck_assert_int_eq(connect(c3, (const struct sockaddr *)&a, sizeof(a)), 0);
    sleep_ms(550);
    ck_assert_int_eq(atomic_load(&handed), 2);
    uint64_t pauses = acceptor_pauses(acc);
    ck_assert_uint_ge(pauses, 1);
    ck_assert_uint_le(pauses, 10); /* ~one per 100 ms */

    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    wait_handed(3); /* accepting resumes by itself */
    ck_assert_int_eq(atomic_load(&handed), 3);
    acceptor_free(acc);
    for (int i = 0; i < 3; i++)
        close(kept[i]);
    close(c1);
    close(c2);
    close(c3);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("accept");
    TCase *tc = tcase_create("accept");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_hand_over_and_stop);
    tcase_add_test(tc, test_out_of_descriptors_pauses);
    suite_add_tcase(s, tc);
    return s;
}
