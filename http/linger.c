/* linger.c — see linger.h. */
#include "http/linger.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How often deadlines are looked at while sockets linger, and how much one socket may give per
 * wake (level-triggered: the rest comes at the next). */
#define LINGER_TICK_MS 100
#define LINGER_READ_MAX (256u << 10)

struct lsock {
    int fd;
    uint64_t since, last;
    struct lsock *prev, *next;
};

struct linger_set {
    int ep, wake;
    unsigned max;
    pthread_t thread;
    pthread_mutex_t mu; /* the list and n; an entry is added under it, with its epoll_ctl */
    struct lsock *head;
    unsigned n;
    atomic_bool stop;
    atomic_uint_fast64_t taken, full;
};

static uint64_t linger__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool linger_due(uint64_t since_ms, uint64_t last_ms, uint64_t now_ms)
{
    uint64_t all = now_ms > since_ms ? now_ms - since_ms : 0;
    uint64_t quiet = now_ms > last_ms ? now_ms - last_ms : 0;
    return all >= LINGER_TOTAL_MS || quiet >= LINGER_IDLE_MS;
}

/* Out of the list (the thread's, or the freeing caller's), out of epoll, closed. */
static void linger__close(struct linger_set *l, struct lsock *s)
{
    pthread_mutex_lock(&l->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    l->n--;
    pthread_mutex_unlock(&l->mu);
    epoll_ctl(l->ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    free(s);
}

/* Reads and discards what s's client sent. False when it is done (end of file or error). */
static bool linger__drain(struct lsock *s, uint64_t now)
{
    static char sink[65536]; /* the thread's only: what is read is thrown away */
    size_t got = 0;
    while (got < LINGER_READ_MAX) {
        ssize_t r = read(s->fd, sink, sizeof(sink));
        if (r > 0) {
            got += (size_t)r;
            s->last = now;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
}

static void *linger__run(void *arg)
{
    struct linger_set *l = arg;
    struct epoll_event ev[64];
    uint64_t scanned = 0;
    while (!atomic_load(&l->stop)) {
        pthread_mutex_lock(&l->mu);
        int timeout = l->n ? LINGER_TICK_MS : -1;
        pthread_mutex_unlock(&l->mu);
        int n = epoll_wait(l->ep, ev, 64, timeout);
        uint64_t now = linger__now();
        for (int i = 0; i < n; i++) {
            struct lsock *s = ev[i].data.ptr;
            if (!s) {
                uint64_t v;
                ssize_t r = read(l->wake, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (!linger__drain(s, now))
                linger__close(l, s);
        }
        if (now - scanned < LINGER_TICK_MS)
            continue;
        scanned = now;
        for (;;) { /* the due ones, one at a time (closing takes the lock) */
            pthread_mutex_lock(&l->mu);
            struct lsock *s = l->head;
            while (s && !linger_due(s->since, s->last, now))
                s = s->next;
            pthread_mutex_unlock(&l->mu);
            if (!s)
                break;
            linger__close(l, s);
        }
    }
    return NULL;
}

struct linger_set *linger_new(unsigned max)
{
    struct linger_set *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->max = max;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    pthread_mutex_init(&l->mu, NULL);
    if (l->ep < 0 || l->wake < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake, &ev) != 0 ||
        pthread_create(&l->thread, NULL, linger__run, l) != 0) {
        log_error("linger: cannot start: %s", strerror(errno));
        if (l->ep >= 0)
            close(l->ep);
        if (l->wake >= 0)
            close(l->wake);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    return l;
}

static void linger__wake(struct linger_set *l)
{
    uint64_t one = 1;
    ssize_t r = write(l->wake, &one, sizeof(one));
    (void)r; /* a full counter already wakes the thread */
}

void linger_free(struct linger_set *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    linger__wake(l);
    pthread_join(l->thread, NULL);
    while (l->head)
        linger__close(l, l->head);
    close(l->ep);
    close(l->wake);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void linger_take(struct linger_set *l, int fd, uint64_t since_ms)
{
    shutdown(fd, SHUT_WR); /* the answer, then FIN (libmicrohttpd may have done it already) */
    struct lsock *s = l ? malloc(sizeof(*s)) : NULL;
    if (!s) {
        close(fd);
        return;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    s->fd = fd;
    s->since = since_ms;
    s->last = since_ms;
    s->prev = NULL;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
    pthread_mutex_lock(&l->mu);
    bool first = l->n == 0;
    if (l->n >= l->max || epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        pthread_mutex_unlock(&l->mu);
        atomic_fetch_add(&l->full, 1);
        close(fd);
        free(s);
        return;
    }
    s->next = l->head;
    if (l->head)
        l->head->prev = s;
    l->head = s;
    l->n++;
    pthread_mutex_unlock(&l->mu);
    atomic_fetch_add(&l->taken, 1);
    if (first)
        linger__wake(l); /* its epoll_wait had no timeout: the deadlines run from now */
}

void linger_get_stats(struct linger_set *l, struct linger_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    out->lingering = l->n;
    pthread_mutex_unlock(&l->mu);
    out->taken = atomic_load(&l->taken);
    out->full = atomic_load(&l->full);
}
