/* sock.h — loopback TCP pairs for the unit tests of the front door (guard, linger). */
#ifndef LG_TEST_SOCK_H
#define LG_TEST_SOCK_H

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int tp_lfd = -1; /* one listening socket per test binary */

/* A connected pair: *client is the peer's end, the return value the server's end. */
static inline int tcp_pair(int *client)
{
    if (tp_lfd < 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        tp_lfd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(tp_lfd, 0);
        ck_assert_int_eq(bind(tp_lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(listen(tp_lfd, 64), 0);
    }
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    ck_assert_int_eq(getsockname(tp_lfd, (struct sockaddr *)&a, &al), 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(*client, 0);
    ck_assert_int_eq(connect(*client, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(tp_lfd, NULL, NULL);
    ck_assert_int_ge(s, 0);
    return s;
}

#endif
