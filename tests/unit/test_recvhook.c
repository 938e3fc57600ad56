/* The process-wide recv() override (http/recvhook.c): a registered descriptor's bytes go through
 * the scan, an end of file is held back while asked and given back after, an unregistered
 * descriptor passes through. On real socket pairs. */
#include "http/recvhook.h"
#include "unit.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int scanned;
static void *scanned_owner;

/* Sees the bytes; refuses (end of file) a buffer that starts with 'X'. */
static ssize_t scan(void *owner, const void *buf, ssize_t r)
{
    scanned++;
    scanned_owner = owner;
    return ((const char *)buf)[0] == 'X' ? 0 : r;
}

static size_t allow = (size_t)-1; /* what limit() lets through */
static int limited;

static size_t limit(void *owner, int fd, void *buf, size_t n)
{
    (void)owner;
    (void)fd;
    (void)buf;
    limited++;
    return n < allow ? n : allow;
}

static void pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

START_TEST(test_scan_and_pass_through)
{
    ck_assert(recvhook_init(scan, NULL));
    int sv[2], owner = 0;
    char b[16];
    pair(sv);
    /* not registered: passes through, unseen */
    ck_assert_int_eq(write(sv[1], "ab", 2), 2);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 2);
    ck_assert_int_eq(scanned, 0);
    recvhook_attach(sv[0], &owner);
    ck_assert_int_eq(write(sv[1], "cd", 2), 2);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), MSG_PEEK), 2); /* a peek is not scanned */
    ck_assert_int_eq(scanned, 0);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 2);
    ck_assert_int_eq(scanned, 1);
    ck_assert_ptr_eq(scanned_owner, &owner);
    ck_assert_int_eq(write(sv[1], "Xy", 2), 2);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 0); /* the scan's verdict */
    recvhook_detach(sv[0]);
    ck_assert_int_eq(write(sv[1], "Xz", 2), 2);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 2); /* detached: unseen again */
    ck_assert_int_eq(scanned, 2);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* The limit is asked before a registered descriptor is read: it caps the read, 0 reads nothing
 * (EAGAIN, the bytes stay in the kernel); peeks and unregistered descriptors are not asked. */
START_TEST(test_limit)
{
    ck_assert(recvhook_init(scan, limit));
    int sv[2], owner = 0;
    char b[16];
    pair(sv);
    ck_assert_int_eq(write(sv[1], "abcdef", 6), 6);
    ck_assert_int_eq(recv(sv[0], b, 1, 0), 1); /* not registered */
    ck_assert_int_eq(limited, 0);
    recvhook_attach(sv[0], &owner);
    allow = 3;
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 3);
    ck_assert_int_eq(memcmp(b, "bcd", 3), 0);
    ck_assert_int_eq(limited, 1);
    ck_assert_int_eq(scanned, 1);
    allow = 0;
    errno = 0;
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(scanned, 1);                             /* nothing read, nothing scanned */
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), MSG_PEEK), 2); /* a peek is not limited */
    ck_assert_int_eq(limited, 2);
    allow = (size_t)-1;
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 2); /* still there */
    ck_assert_int_eq(memcmp(b, "ef", 2), 0);
    recvhook_detach(sv[0]);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_eof_held_then_given_back)
{
    ck_assert(recvhook_init(scan, NULL));
    int sv[2], owner = 0;
    char b[16];
    pair(sv);
    recvhook_attach(sv[0], &owner);
    ck_assert(!recvhook_unhold(sv[0])); /* nothing held */
    recvhook_hold_eof(sv[0]);
    ck_assert(!recvhook_unhold(sv[0])); /* asked, but no end of file came */
    recvhook_hold_eof(sv[0]);
    shutdown(sv[1], SHUT_WR);
    errno = 0;
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), -1); /* still held */
    ck_assert(recvhook_unhold(sv[0]));                  /* it was: the caller gives it back */
    ck_assert_int_eq(recv(sv[0], b, sizeof(b), 0), 0);
    recvhook_detach(sv[0]);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("recvhook");
    TCase *tc = tcase_create("recvhook");
    tcase_add_test(tc, test_scan_and_pass_through);
    tcase_add_test(tc, test_eof_held_then_given_back);
    tcase_add_test(tc, test_limit);
    suite_add_tcase(s, tc);
    return s;
}
