/* Connections per client address ([server] max_connections_per_ip). */
#include "http/peers.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static struct sockaddr_in v4(const char *a)
{
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(1234)};
    ck_assert_int_eq(inet_pton(AF_INET, a, &s.sin_addr), 1);
    return s;
}

static struct sockaddr_in6 v6(const char *a)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(1234)};
    ck_assert_int_eq(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
    return s;
}

#define SA(x) ((const struct sockaddr *)(const void *)&(x))

START_TEST(test_limit_per_address)
{
    struct peers *p = peers_new(2);
    ck_assert_ptr_nonnull(p);
    struct sockaddr_in a = v4("192.168.1.10"), b = v4("192.168.1.11");
    struct sockaddr_in6 a6 = v6("::ffff:192.168.1.10"), c6 = v6("fe80::1");
    ck_assert(peers_enter(p, SA(a)));
    ck_assert(peers_enter(p, SA(a6))); /* the same host through an IPv4-mapped address */
    ck_assert(!peers_enter(p, SA(a)));
    ck_assert_uint_eq(peers_count(p, SA(a)), 2);
    ck_assert(peers_enter(p, SA(b))); /* another host is not limited by it */
    ck_assert(peers_enter(p, SA(c6)));
    ck_assert(peers_enter(p, SA(c6)));
    ck_assert(!peers_enter(p, SA(c6)));
    peers_leave(p, SA(a));
    ck_assert_uint_eq(peers_count(p, SA(a)), 1);
    ck_assert(peers_enter(p, SA(a))); /* a slot freed */
    peers_leave(p, SA(a));
    peers_leave(p, SA(a6));
    ck_assert_uint_eq(peers_count(p, SA(a)), 0);
    peers_leave(p, SA(a)); /* more leaves than enters change nothing */
    ck_assert(peers_enter(p, SA(a)));
    ck_assert(peers_enter(p, SA(a)));
    ck_assert(!peers_enter(p, SA(a)));
    struct sockaddr un = {.sa_family = AF_UNIX};
    for (int i = 0; i < 5; i++)
        ck_assert(peers_enter(p, &un)); /* not IP: never limited */
    peers_free(p);
}
END_TEST

/* Many distinct hosts: each counted on its own, the table emptied as they leave. */
START_TEST(test_many_hosts)
{
    struct peers *p = peers_new(1);
    ck_assert_ptr_nonnull(p);
    for (unsigned i = 0; i < 20000; i++) {
        struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        ck_assert(peers_enter(p, SA(s)));
        ck_assert(!peers_enter(p, SA(s)));
    }
    for (unsigned i = 0; i < 20000; i++) {
        struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        ck_assert_uint_eq(peers_count(p, SA(s)), 1);
        peers_leave(p, SA(s));
        ck_assert_uint_eq(peers_count(p, SA(s)), 0);
    }
    peers_free(p);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("peers");
    TCase *tc = tcase_create("peers");
    tcase_add_test(tc, test_limit_per_address);
    tcase_add_test(tc, test_many_hosts);
    suite_add_tcase(s, tc);
    return s;
}
