/* recvhook.c — see recvhook.h. */
#include "http/recvhook.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { HOLD_NONE = 0, HOLD_EOF = 1, HOLD_HELD = 2 };

/* Written once by recvhook_init before any reader thread exists (pthread_create orders them
 * after it), read-only from then on. */
static _Atomic unsigned char *hook_hold; /* by descriptor number */
static _Atomic(void *) *hook_owner;      /* by descriptor number; NULL: not registered */
static size_t hook_n;
static recvhook_scan_fn hook_scan;
static recvhook_limit_fn hook_limit;

bool recvhook_init(recvhook_scan_fn scan, recvhook_limit_fn limit)
{
    if (hook_n)
        return true;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    size_t n =
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 22) ? (1u << 22) : (size_t)rl.rlim_cur;
    hook_hold = calloc(n, sizeof(*hook_hold));
    hook_owner = hook_hold ? calloc(n, sizeof(*hook_owner)) : NULL;
    if (!hook_owner) {
        free(hook_hold);
        hook_hold = NULL;
        return false;
    }
    hook_scan = scan;
    hook_limit = limit;
    hook_n = n;
    return true;
}

static bool hook__in(int fd)
{
    return fd >= 0 && (size_t)fd < hook_n;
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (!hook__in(fd))
        return (ssize_t)syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
    void *owner =
        flags & MSG_PEEK ? NULL : atomic_load_explicit(&hook_owner[fd], memory_order_acquire);
    if (owner && hook_limit && n > 0 && (n = hook_limit(owner, fd, buf, n)) == 0) {
        errno = EAGAIN;
        return -1;
    }
    ssize_t r = (ssize_t)syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
    if (r > 0 && owner)
        return hook_scan ? hook_scan(owner, buf, r) : r;
    if (r == 0 && n > 0) {
        unsigned char want = HOLD_EOF;
        if (atomic_compare_exchange_strong(&hook_hold[fd], &want, HOLD_HELD) || want == HOLD_HELD) {
            errno = EAGAIN;
            return -1;
        }
    }
    return r;
}

void recvhook_attach(int fd, void *owner)
{
    if (hook__in(fd))
        atomic_store_explicit(&hook_owner[fd], owner, memory_order_release);
}

void recvhook_detach(int fd)
{
    if (!hook__in(fd))
        return;
    atomic_store(&hook_hold[fd], HOLD_NONE);
    atomic_store_explicit(&hook_owner[fd], NULL, memory_order_release);
}

void recvhook_hold_eof(int fd)
{
    if (hook__in(fd))
        atomic_store_explicit(&hook_hold[fd], HOLD_EOF, memory_order_relaxed);
}

bool recvhook_unhold(int fd)
{
    if (!hook__in(fd) || atomic_load_explicit(&hook_hold[fd], memory_order_relaxed) == HOLD_NONE)
        return false;
    return atomic_exchange(&hook_hold[fd], HOLD_NONE) == HOLD_HELD;
}
