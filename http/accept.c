/* The acceptor thread (see accept.h for why it exists). */
#include "http/accept.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ACCEPT_BATCH 64     /* connections taken per wake-up before polling again */
#define ACCEPT_PAUSE_MS 100 /* out of descriptors or memory: leave them in the backlog a while */

struct acceptor {
    int lfd;
    int stop_fd; /* eventfd: written once by acceptor_stop */
    acceptor_add_fn add;
    void *arg;
    pthread_t thread;
    bool running;
    atomic_uint_fast64_t accepted, pauses;
    uint64_t warned_ns; /* last pause logged (the thread's own) */
};

/* What an accept() failure means: 0 try the next one, 1 the backlog is empty, 2 pause. */
static int acceptor__classify(int e)
{
    switch (e) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
        return 1;
    /* the peer is gone, or a network error that accept(2) passes on: the next one may be fine */
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
        return 0;
    default: /* EMFILE, ENFILE, ENOBUFS, ENOMEM, and anything unexpected: do not spin */
        return 2;
    }
}

/* Accepts what is waiting. false when accepting must pause. */
static bool acceptor__drain_backlog(struct acceptor *a)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(a->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            atomic_fetch_add_explicit(&a->accepted, 1, memory_order_relaxed);
            a->add(a->arg, fd, (const struct sockaddr *)&ss, len);
            continue;
        }
        int e = errno;
        int what = acceptor__classify(e);
        if (what == 1)
            return true;
        if (what == 2) {
            atomic_fetch_add_explicit(&a->pauses, 1, memory_order_relaxed);
            uint64_t now = clock_now_ns();
            if (a->warned_ns == 0 || now - a->warned_ns >= NS_PER_S) {
                log_warn("accept: %s; not accepting for %d ms", strerror(e), ACCEPT_PAUSE_MS);
                a->warned_ns = now;
            }
            return false;
        }
    }
    return true;
}

static void *acceptor__main(void *arg)
{
    struct acceptor *a = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main thread's */
    bool paused = false;
    for (;;) {
        struct pollfd p[2] = {{.fd = a->stop_fd, .events = POLLIN},
                              {.fd = a->lfd, .events = POLLIN}};
        int n = poll(p, paused ? 1 : 2, paused ? ACCEPT_PAUSE_MS : -1);
        if (n < 0 && errno != EINTR) {
            log_error("accept: poll: %s", strerror(errno));
            paused = true;
            continue;
        }
        if (p[0].revents)
            break;
        if (paused) {
            paused = false; /* the pause is over (or a spurious wake-up: poll again) */
            continue;
        }
        if (n > 0 && p[1].revents)
            paused = !acceptor__drain_backlog(a);
    }
    return NULL;
}

struct acceptor *acceptor_start(int lfd, acceptor_add_fn add, void *arg)
{
    struct acceptor *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
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
    uint64_t one = 1;
    while (write(a->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    pthread_join(a->thread, NULL);
    a->running = false;
    close(a->lfd); /* the kernel refuses new connections from here on */
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
