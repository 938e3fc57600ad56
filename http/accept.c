/* The acceptor thread (see accept.h for why it exists). */
#include "http/accept.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ACCEPT_PAUSE_MS 100 /* out of descriptors or memory: leave them in the backlog a while */

struct acceptor {
    int lfd;
    int stop_fd; /* eventfd: written once by acceptor_stop (ends a pause) */
    atomic_bool stop;
    acceptor_add_fn add;
    void *arg;
    pthread_t thread;
    bool running;
    atomic_uint_fast64_t accepted, pauses;
    uint64_t warned_ns; /* last pause logged (the thread's own) */
};

/* Whether an accept() failure must pause accepting: out of descriptors or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) and anything unexpected, so as not to spin. A peer gone before its
 * accept, or a network error that accept(2) passes on, is not: the next one may be fine. */
static bool acceptor__must_pause(int e)
{
    switch (e) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM: /* a firewall rule */
        return false;
    default:
        return true;
    }
}

static void *acceptor__main(void *arg)
{
    struct acceptor *a = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main thread's */
    /* A blocking accept4: one system call per connection, none while idle. acceptor_stop
     * wakes it with shutdown(2), after which accept4 fails (EINVAL). */
    while (!atomic_load_explicit(&a->stop, memory_order_acquire)) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(a->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            atomic_fetch_add_explicit(&a->accepted, 1, memory_order_relaxed);
            a->add(a->arg, fd, (const struct sockaddr *)&ss, len);
            continue;
        }
        int e = errno;
        if (atomic_load_explicit(&a->stop, memory_order_acquire))
            break;
        if (!acceptor__must_pause(e))
            continue;
        atomic_fetch_add_explicit(&a->pauses, 1, memory_order_relaxed);
        uint64_t now = clock_now_ns();
        if (a->warned_ns == 0 || now - a->warned_ns >= NS_PER_S) {
            log_warn("accept: %s; not accepting for %d ms", strerror(e), ACCEPT_PAUSE_MS);
            a->warned_ns = now;
        }
        /* the connections wait in the kernel's backlog; acceptor_stop ends the pause */
        struct pollfd p = {.fd = a->stop_fd, .events = POLLIN};
        (void)poll(&p, 1, ACCEPT_PAUSE_MS);
    }
    return NULL;
}

struct acceptor *acceptor_start(int lfd, acceptor_add_fn add, void *arg)
{
    struct acceptor *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    int fl = fcntl(lfd, F_GETFL);
    if (fl < 0 || fcntl(lfd, F_SETFL, fl & ~O_NONBLOCK) != 0) { /* accept4 blocks */
        free(a);
        return NULL;
    }
    a->lfd = lfd;
    a->add = add;
    a->arg = arg;
    a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->stop_fd < 0) {
        free(a);
        return NULL;
    }
    int rc = pthread_create(&a->thread, NULL, acceptor__main, a);
    if (rc != 0) {
        log_error("accept: cannot start the thread: %s", strerror(rc));
        close(a->stop_fd);
        free(a);
        return NULL;
    }
    pthread_setname_np(a->thread, "llmgate-accept");
    a->running = true;
    return a;
}

void acceptor_stop(struct acceptor *a)
{
    if (!a || !a->running)
        return;
    atomic_store_explicit(&a->stop, true, memory_order_release);
    uint64_t one = 1;
    while (write(a->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    /* takes the socket out of listening at once (a new connection is refused, the backlog is
     * reset) and wakes a blocked accept4 */
    shutdown(a->lfd, SHUT_RDWR);
    pthread_join(a->thread, NULL);
    a->running = false;
    close(a->lfd);
    a->lfd = -1;
}

uint64_t acceptor_accepted(const struct acceptor *a)
{
    return a ? atomic_load_explicit(&a->accepted, memory_order_relaxed) : 0;
}

uint64_t acceptor_pauses(const struct acceptor *a)
{
    return a ? atomic_load_explicit(&a->pauses, memory_order_relaxed) : 0;
}

void acceptor_free(struct acceptor *a)
{
    if (!a)
        return;
    acceptor_stop(a);
    close(a->stop_fd);
    free(a);
}
