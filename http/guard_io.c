/* guard_io.c — the guard at a client's socket (see guard.h): the bytes libmicrohttpd reads,
 * checked by http/framing.c before it parses them; a half-closed client's end of file held while
 * its response is produced; the replies the guard writes itself; lingering close. */
#include "core/errors.h"
#include "core/log.h"
#include "http/framing.h"
#include "http/guard_int.h"
#include "http/linger.h"
#include "http/recvhook.h"
#include "http/reply.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Slack when asking the kernel whether bytes came after a stamp: its clock is in jiffies. */
#define PROBE_SLACK_MS 20

/* ---------------------------------------------------------------------------------------- */
/* a half-closed client (shutdown(SHUT_WR) after its request, legal HTTP) is served           */
/*
 * libmicrohttpd 0.9.75 closes a connection the moment a read returns 0, in every state
 * (MHD_connection_handle_read), and it reads once more on every resume (it marks a resumed
 * connection read-ready, and its event-loop state is still the body's "read"): a client that
 * half-closed after its request would lose the response. So while a request is complete and
 * its response is being produced (G_BUSY), an end of file on its socket is held back: the
 * recv() override (http/recvhook.c) reports EAGAIN instead, and notes it. When the response
 * is out (G_IDLE), a noted end of file is given back: shutdown(SHUT_RD) makes the socket
 * readable again, libmicrohttpd reads the 0 and closes. Whether the client really left is the
 * worker's question (worker__client_event). */
ssize_t guard__scan(void *owner, const void *buf, ssize_t r);

bool guard_init_process(void)
{
    return recvhook_init(guard__scan, guard__limit);
}

/* The hold for c's descriptor as c enters phase p. */
void guard__hold(struct guard_conn *c, enum guard_phase p)
{
    if (p == G_BUSY)
        recvhook_hold_eof(c->fd);
    else if (recvhook_unhold(c->fd) && p == G_IDLE)
        shutdown(c->fd, SHUT_RD);
}

/* The kernel's record of what fd received: false if it cannot tell (not TCP). */
static bool guard__tcp_info(int fd, struct tcp_info *ti)
{
    socklen_t len = sizeof(*ti);
    memset(ti, 0, sizeof(*ti));
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) == 0 &&
           len >= offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti->tcpi_bytes_received);
}

/* Whether data came on fd later than `age_ms` ago (the kernel's clock is in jiffies: with
 * some slack). A socket that cannot tell answers false. */
bool guard__data_within(int fd, uint64_t age_ms)
{
    struct tcp_info ti;
    return guard__tcp_info(fd, &ti) && (uint64_t)ti.tcpi_last_data_recv + PROBE_SLACK_MS < age_ms;
}

/* Whether fd ever received a byte. A socket that cannot tell answers true. */
bool guard__data_ever(int fd)
{
    struct tcp_info ti;
    return !guard__tcp_info(fd, &ti) || ti.tcpi_bytes_received > 0;
}

/* Writes a whole reply for `e` straight to the socket (best effort: the socket buffer is empty
 * in the phases the guard cuts, so one send takes it). */
void guard__reply(struct guard *g, int fd, enum lg_err e, const char *message, unsigned retry_after)
{
    char out[1024];
    size_t n = reply_raw(out, sizeof(out), e, message, (uint64_t)retry_after * 1000u);
    if (!n)
        return;
    ssize_t sent = send(fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent; /* a client that cannot take 600 bytes is closed all the same */
    if (g->lim.count_status)
        g->lim.count_status(g->lim.count_arg, err_info(e)->status);
}

/* ---------------------------------------------------------------------------------------- */
/* framing: what the client sent is checked before libmicrohttpd parses it (http/framing.h)   */

static enum lg_err guard__framing_err(unsigned status)
{
    switch (status) {
    case 413:
        return LGE_TOO_LARGE;
    case 414:
        return LGE_URI_TOO_LONG;
    case 431:
        return LGE_HEADERS_TOO_LARGE;
    case 505:
        return LGE_HTTP_VERSION;
    default:
        return LGE_INVALID_REQUEST;
    }
}

/* The scanner refused what c's client sent: the envelope, then the close (unless the watchdog
 * cut it first). On c's thread, so c->fd is open. */
void guard__refuse(struct guard_conn *c)
{
    enum lg_err e = guard__framing_err(c->scan.status);
    uint64_t w = atomic_load(&c->word);
    while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, e, c->scan.why, 0))
        w = atomic_load(&c->word);
    guard__settle(c); /* out of its queue */
}

/* recv()'s look at r bytes a client connection's descriptor gave: what libmicrohttpd is to get.
 * A refusal is answered at once, and libmicrohttpd gets the end of file (it closes) -- unless
 * requests received before the refused one are not answered yet (pipelined): then
 * libmicrohttpd gets the bytes up to the refused request, what comes after is dropped, and
 * the refusal is answered when the last of those responses is out (guard_enter G_IDLE).
 * An early answer (401, 413, ... from the headers) is for the request being read, so its
 * refusal is immediate; after an early answer libmicrohttpd reads nothing more from the
 * socket, so no reply can cross it. */
ssize_t guard__scan(void *owner, const void *buf, ssize_t r)
{
    struct guard_conn *c = owner;
    if (atomic_fetch_add_explicit(&c->got, (uint64_t)r, memory_order_relaxed) == 0 && r > 0 &&
        W_PHASE(atomic_load(&c->word)) == G_HEADER)
        guard__settle(c); /* its first bytes: from the unread connections to the headers */
    if (W_PHASE(atomic_load(&c->word)) == G_CUT)
        return 0; /* cut (its reply written): libmicrohttpd is to close; the bytes are dropped */
    if (atomic_load_explicit(&c->refused, memory_order_relaxed)) {
        errno = EAGAIN;
        return -1;
    }
    if (framing_scan(&c->scan, buf, (size_t)r)) {
        if (atomic_load_explicit(&c->park, memory_order_relaxed) == PARK_TRIM &&
            c->park_req == c->scan.complete && framing_scan_body_left(&c->scan) == 1) {
            /* the trimmed read got all it asked for: the body's last byte is what is left */
            atomic_store_explicit(&c->park, PARK_HOLD, memory_order_release);
            atomic_fetch_add_explicit(&c->g->parked, 1, memory_order_relaxed);
        }
        return r;
    }
    enum guard_phase p = W_PHASE(atomic_load(&c->word));
    if (p == G_CUT)
        return 0;
    if (c->scan.complete > c->answered || p == G_BUSY) {
        atomic_store_explicit(&c->refused, true, memory_order_relaxed);
        if (c->scan.msg_off > 0)
            return (ssize_t)c->scan.msg_off;
        errno = EAGAIN;
        return -1;
    }
    guard__refuse(c);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* parking: a waiting request's last body byte left in the kernel (guard.h)                   */

/* recv()'s question before it reads c's socket for n bytes into buf: how many to read. On c's
 * thread (the scanner is its own). */
size_t guard__limit(void *owner, int fd, void *buf, size_t n)
{
    struct guard_conn *c = owner;
    unsigned char st = atomic_load_explicit(&c->park, memory_order_acquire);
    if (st == PARK_HOLD)
        return 0;
    if (st != PARK_NONE && c->park_req != c->scan.complete) /* a request before this one's */
        st = PARK_NONE;
    if (st == PARK_DONE || !c->g->lim.park_when ||
        !atomic_load_explicit(c->g->lim.park_when, memory_order_relaxed) ||
        atomic_load_explicit(&c->refused, memory_order_relaxed) ||
        W_PHASE(atomic_load_explicit(&c->word, memory_order_relaxed)) == G_CUT)
        return n;
    uint64_t left = framing_scan_body_left(&c->scan);
    size_t want = 0;
    if (left) {
        /* in a body: a read that would take its end stops one short (at least one byte
         * read, so that libmicrohttpd hands the handler what came) */
        if (left >= 2 && left - 1 <= n)
            want = (size_t)(left - 1);
    } else if (framing_scan_in_head(&c->scan)) {
        /* a head (often with its whole body in the same segment): where does its body end? */
        ssize_t p = (ssize_t)syscall(SYS_recvfrom, fd, buf, n, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
        if (p < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0; /* nothing yet, as the read would say: what arrives meanwhile is decided
                       * at the read its edge brings, not swallowed unlooked-at by this one */
        if (p <= 0)
            return n;
        struct framing_scan t = c->scan;
        if (!framing_scan(&t, buf, (size_t)p) || !t.cl_end || t.cl_end_len < 2)
            return (size_t)p; /* no more than was looked at: what arrives meanwhile (the
                               * body after its head, often) is decided at the next read */
        want = t.cl_end - 1;
    }
    if (!want)
        return n;
    c->park_req = c->scan.complete;
    atomic_store_explicit(&c->park, PARK_TRIM, memory_order_relaxed);
    return want;
}

bool guard_held(struct guard_conn *c)
{
    return c && atomic_load_explicit(&c->park, memory_order_acquire) == PARK_HOLD;
}

void guard_unhold(struct guard_conn *c)
{
    if (c)
        atomic_store_explicit(&c->park, PARK_DONE, memory_order_release);
}

/* ---------------------------------------------------------------------------------------- */
/* lingering close: an answer given before the client stopped sending (http/linger.h)        */
/*
 * Two ways an answer comes before the body's end. (1) libmicrohttpd sends it (an early answer
 * queued from the headers, guard_linger), then closes the connection itself. (2) The guard
 * writes it (a 408, a 503 for a newcomer, a framing refusal, guard_refuse in the middle of a
 * body): then only the write side is shut, and the recv() above gives libmicrohttpd an end of
 * file at its next read, so that it closes. A client that sends nothing more gives
 * libmicrohttpd no read: after LINGER_IDLE_MS of silence the read side is shut too, which
 * libmicrohttpd sees at once (the silence was the lingering's whole idle time already).
 * Either way, when libmicrohttpd closes (guard_close, before its close(2)), a duplicate of the
 * descriptor goes to the lingering closer, which drains and closes it; libmicrohttpd's close
 * then releases only its own number (a new connection may get it at once: the duplicate has
 * another number, and is in none of the tables above). */

void guard__cut_linger(struct guard *g, struct guard_conn *c)
{
    atomic_store(&c->linger_ms, guard_now_ms());
    atomic_store(&c->linger, true);
    shutdown(c->fd, SHUT_WR);
    pthread_mutex_lock(&g->lmu);
    c->waiting = true;
    c->wprev = NULL;
    c->wnext = g->waitq;
    if (g->waitq)
        g->waitq->wprev = c;
    g->waitq = c;
    atomic_fetch_add(&g->n_wait, 1);
    pthread_mutex_unlock(&g->lmu);
}

static void guard__unwait(struct guard *g, struct guard_conn *c)
{
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        g->waitq = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    c->waiting = false;
    atomic_fetch_sub(&g->n_wait, 1);
}

/* The watchdog's look at the cut connections libmicrohttpd has not closed yet. */
void guard__wait_tick(struct guard *g, uint64_t now)
{
    pthread_mutex_lock(&g->lmu);
    struct guard_conn *c = g->waitq;
    while (c) {
        struct guard_conn *next = c->wnext;
        uint64_t at = atomic_load(&c->linger_ms);
        if (now > at && now - at >= LINGER_IDLE_MS) {
            /* silent all along: nothing to drain; libmicrohttpd reads the end of file now */
            atomic_store(&c->linger, false);
            guard__unwait(g, c);
            shutdown(c->fd, SHUT_RD); /* fd open: guard_close takes lmu first */
        }
        c = next;
    }
    pthread_mutex_unlock(&g->lmu);
}

/* At libmicrohttpd's close of c (its descriptor still open): the lingering, if c is due one. */
void guard__close_linger(struct guard *g, struct guard_conn *c)
{
    pthread_mutex_lock(&g->lmu);
    if (c->waiting)
        guard__unwait(g, c);
    pthread_mutex_unlock(&g->lmu);
    if (!atomic_exchange(&c->linger, false) || c->fd < 0)
        return;
    int d = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (d >= 0)
        linger_take(g->linger, d, atomic_load(&c->linger_ms));
}

void guard_linger(struct guard_conn *c)
{
    if (!c)
        return;
    atomic_store(&c->linger_ms, guard_now_ms());
    atomic_store(&c->linger, true);
}

bool guard_refuse(struct guard_conn *c, enum lg_err e, const char *message, unsigned retry_after)
{
    if (!c)
        return false;
    uint64_t w = atomic_load(&c->word);
    while (W_PHASE(w) != G_CUT && !guard__cut(c->g, c, w, e, message, retry_after))
        w = atomic_load(&c->word);
    guard__settle(c); /* out of its queue */
    return false;
}

void guard_refuse_fd(struct guard *g, int fd, enum lg_err e, const char *message,
                     unsigned retry_after)
{
    guard__reply(g, fd, e, message, retry_after);
    linger_take(g->linger, fd, guard_now_ms()); /* shuts the write side, drains, closes */
}

void guard_linger_stats(struct guard *g, uint64_t *lingering, uint64_t *lingered)
{
    struct linger_stats ls;
    linger_get_stats(g->linger, &ls);
    *lingering = ls.lingering;
    *lingered = ls.taken;
}
