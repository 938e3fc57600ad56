/*
 * server.c — the per-thread event loop of mockllm: non-blocking HTTP/1.1 connections on epoll
 * (level-triggered), a binary min-heap of per-connection deadlines that drives epoll's timeout
 * (ttft, itl, lingering close), and a single accept timer (--accept-delay-ms, EMFILE back-off).
 *
 * A connection is in one state at a time:
 *   READ     parsing requests (pipelined requests are answered in order)
 *   WAIT     a complete non-stream response waits for its ttft deadline
 *   STREAM   SSE events are produced one per deadline (or back to back with itl 0, pausing
 *            while more than OUT_HIGH bytes are unsent)
 *   HANG     never answers; waits for the client to go
 *   FLUSH    the response is complete but bytes are still unsent
 *   CLOSING  --close-after: close as soon as the unsent bytes are out
 *   LINGER   after a Connection: close response: write side shut, input discarded until the
 *            client closes (or LINGER_MS), so that our last bytes are not lost to a reset
 * Reads go into a per-thread scratch buffer first; only the incomplete tail of a request is
 * copied into the connection's own buffer, so idle and simple keep-alive connections own no
 * input memory. Writes go straight to the socket; only what the socket refuses is buffered.
 *
 * Every function that may close (and free) a connection returns -1 when it did; callers then
 * stop touching it. Only a connection's own event or timer handler closes it, so a batch of
 * epoll events never refers to a freed connection.
 */
#include "cmd/mockllm/mock.h"
#include "cmd/mockllm/http1.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE (64 * 1024)
#define EV_BATCH 512
#define ACCEPT_BATCH 64
#define IN_MAX ((size_t)MOCK_MAX_HEAD + MOCK_MAX_BODY + 1024 * 1024) /* raw chunked overhead */
#define PIPE_MAX (64 * 1024) /* input buffered while a response is in progress */
#define OUT_HIGH (256 * 1024)
#define EV_FLUSH (64 * 1024)
#define LINGER_MS 2000
#define EMFILE_PAUSE_MS 100
#define NOIDX SIZE_MAX
#define NS_PER_MS 1000000ULL

enum conn_state { CS_READ, CS_WAIT, CS_STREAM, CS_HANG, CS_FLUSH, CS_CLOSING, CS_LINGER };

struct conn {
    struct conn *prev, *next; /* worker's list of open connections */
    int fd;
    uint32_t events; /* current epoll interest */
    int state;
    size_t heap_idx; /* NOIDX: no timer */
    uint64_t deadline;

    char *in; /* buffered input, starting at the current request */
    size_t in_len, in_cap;
    size_t scan; /* header-end search position */
    int have_head;
    int continue_sent;
    struct http_req req;
    struct http_dechunk dc;

    struct sbuf out; /* unsent output at out.p[out_off..out.len) */
    size_t out_off;

    int infer;      /* an inference request is in progress (counted in active) */
    int keep_alive; /* of the current response */
    int blocked;    /* stream paused until the output drains */
    char *pending;  /* WAIT: the delayed response */
    size_t pending_len;
    struct stream *stream;
    uint64_t itl_ns;
    int64_t close_after;
};

struct worker {
    int id;
    int epfd, lfd, wfd;
    char listen_tag, wake_tag; /* addresses used as epoll data of lfd and wfd */
    int stop;
    int no_pwait2;
    const struct mock_config *cfg;
    struct stats_shard *st;
    struct api_ctx api;
    struct conn **heap;
    size_t heap_len, heap_cap;
    struct conn *conns;
    uint64_t now;
    uint64_t accept_at; /* 0: listening; else accepts paused until then */
    char *rbuf;
    struct sbuf ev; /* stream events being assembled */
    pthread_t thread;
    int started;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------------------------------------
 * Timer heap
 */

static void heap_place(struct worker *w, size_t i, struct conn *c)
{
    w->heap[i] = c;
    c->heap_idx = i;
}

static void heap_up(struct worker *w, size_t i)
{
    struct conn *c = w->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->heap[p]->deadline <= c->deadline)
            break;
        heap_place(w, i, w->heap[p]);
        i = p;
    }
    heap_place(w, i, c);
}

static void heap_down(struct worker *w, size_t i)
{
    struct conn *c = w->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m;
        if (l >= w->heap_len)
            break;
        m = (r < w->heap_len && w->heap[r]->deadline < w->heap[l]->deadline) ? r : l;
        if (w->heap[m]->deadline >= c->deadline)
            break;
        heap_place(w, i, w->heap[m]);
        i = m;
    }
    heap_place(w, i, c);
}

static void timer_del(struct worker *w, struct conn *c)
{
    size_t i = c->heap_idx;
    if (i == NOIDX)
        return;
    c->heap_idx = NOIDX;
    struct conn *last = w->heap[--w->heap_len];
    if (i < w->heap_len) {
        heap_place(w, i, last);
        heap_down(w, i);
        heap_up(w, last->heap_idx);
    }
}

static void conn_close(struct worker *w, struct conn *c);

/* Arms c's single timer at `at` (absolute, ns). Returns 0, or -1 after closing c (no memory). */
static int timer_set(struct worker *w, struct conn *c, uint64_t at)
{
    timer_del(w, c);
    if (w->heap_len == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 1024;
        struct conn **h = realloc(w->heap, cap * sizeof(*h));
        if (!h) {
            conn_close(w, c);
            return -1;
        }
        w->heap = h;
        w->heap_cap = cap;
    }
    c->deadline = at;
    heap_place(w, w->heap_len++, c);
    heap_up(w, c->heap_idx);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Connection lifetime and buffers
 */

static size_t out_pending(const struct conn *c)
{
    return c->out.len - c->out_off;
}

static void conn_close(struct worker *w, struct conn *c)
{
    if (c->infer) {
        STAT_ADD(w->st, aborted, 1);
        STAT_ADD(w->st, active, -1);
    }
    STAT_ADD(w->st, connections, -1);
    timer_del(w, c);
    close(c->fd); /* also removes it from the epoll set */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->in);
    sbuf_release(&c->out);
    free(c->pending);
    stream_free(c->stream);
    free(c);
}

static void conn_new(struct worker *w, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->heap_idx = NOIDX;
    c->close_after = -1;
    c->events = EPOLLIN | EPOLLRDHUP;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event e = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        close(fd);
        free(c);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    STAT_ADD(w->st, accepted, 1);
    STAT_ADD(w->st, connections, 1);
}

/* Sets the epoll interest from the state: input while it fits, output while bytes are unsent. */
static void conn_update(struct worker *w, struct conn *c)
{
    uint32_t ev = EPOLLRDHUP;
    size_t limit = c->state == CS_READ ? IN_MAX : PIPE_MAX;
    if (c->state == CS_LINGER || c->in_len < limit)
        ev |= EPOLLIN;
    if (out_pending(c))
        ev |= EPOLLOUT;
    if (ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static int in_reserve(struct conn *c, size_t want)
{
    if (want <= c->in_cap)
        return 0;
    size_t cap = c->in_cap ? c->in_cap * 2 : 4096;
    if (cap < want)
        cap = want;
    char *p = realloc(c->in, cap);
    if (!p)
        return -1;
    c->in = p;
    c->in_cap = cap;
    return 0;
}

static int in_append(struct conn *c, const char *p, size_t n)
{
    if (in_reserve(c, c->in_len + n) < 0)
        return -1;
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    return 0;
}

static void in_consume(struct conn *c, size_t n)
{
    if (n >= c->in_len) {
        free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
        return;
    }
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Sends now what the socket takes and buffers the rest. Returns 0, or -1 after closing c. */
static int conn_send(struct worker *w, struct conn *c, const char *p, size_t n)
{
    if (out_pending(c) == 0) {
        while (n > 0) {
            ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_close(w, c);
                return -1;
            }
            p += k;
            n -= (size_t)k;
        }
        if (n == 0)
            return 0;
        c->out.len = c->out_off = 0;
    } else if (c->out_off > c->out.len / 2) {
        memmove(c->out.p, c->out.p + c->out_off, out_pending(c));
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    sbuf_add(&c->out, p, n);
    if (c->out.err) {
        conn_close(w, c);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Responses
 */

static int stream_pump(struct worker *w, struct conn *c);

static int conn_linger(struct worker *w, struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CS_LINGER;
    return timer_set(w, c, w->now + LINGER_MS * NS_PER_MS);
}

/* The response is completely sent. */
static int resp_done(struct worker *w, struct conn *c)
{
    if (c->infer) {
        STAT_ADD(w->st, completed, 1);
        STAT_ADD(w->st, active, -1);
        c->infer = 0;
    }
    if (!c->keep_alive)
        return conn_linger(w, c);
    c->state = CS_READ;
    return 0;
}

/* The response's last byte is queued. */
static int resp_finish(struct worker *w, struct conn *c)
{
    if (out_pending(c)) {
        c->state = CS_FLUSH;
        return 0;
    }
    return resp_done(w, c);
}

static int conn_on_drained(struct worker *w, struct conn *c)
{
    switch (c->state) {
    case CS_FLUSH:
        return resp_done(w, c);
    case CS_CLOSING:
        conn_close(w, c);
        return -1;
    case CS_STREAM:
        return c->blocked ? stream_pump(w, c) : 0;
    default:
        return 0;
    }
}

/* EPOLLOUT: sends buffered output. */
static int conn_flush(struct worker *w, struct conn *c)
{
    while (out_pending(c)) {
        ssize_t k = send(c->fd, c->out.p + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            conn_close(w, c);
            return -1;
        }
        c->out_off += (size_t)k;
    }
    c->out.len = c->out_off = 0;
    if (c->out.cap > 64 * 1024)
        sbuf_release(&c->out);
    return conn_on_drained(w, c);
}

static int flush_ev(struct worker *w, struct conn *c)
{
    if (w->ev.len == 0)
        return 0;
    int r = conn_send(w, c, w->ev.p, w->ev.len);
    w->ev.len = 0;
    return r;
}

static int close_after_reached(const struct conn *c)
{
    return c->close_after >= 0 && (int64_t)stream_emitted(c->stream) >= c->close_after;
}

/* Emits the stream's due events: one per deadline, or all (with back-pressure) if itl is 0. */
static int stream_pump(struct worker *w, struct conn *c)
{
    struct sbuf *b = &w->ev;
    b->len = 0;
    b->err = 0;
    c->blocked = 0;
    for (;;) {
        if (close_after_reached(c)) {
            if (flush_ev(w, c) < 0)
                return -1;
            if (out_pending(c) == 0) {
                conn_close(w, c);
                return -1;
            }
            c->state = CS_CLOSING;
            return 0;
        }
        if (out_pending(c) > OUT_HIGH) {
            c->blocked = 1;
            return flush_ev(w, c);
        }
        int more = stream_emit(c->stream, b);
        if (b->err) {
            conn_close(w, c);
            return -1;
        }
        if (!more) {
            if (flush_ev(w, c) < 0)
                return -1;
            stream_free(c->stream);
            c->stream = NULL;
            return resp_finish(w, c);
        }
        if (close_after_reached(c))
            continue;
        if (c->itl_ns) {
            if (flush_ev(w, c) < 0)
                return -1;
            return timer_set(w, c, c->deadline + c->itl_ns);
        }
        if (b->len >= EV_FLUSH && flush_ev(w, c) < 0)
            return -1;
    }
}

/* Starts answering with what api produced. */
static int conn_start(struct worker *w, struct conn *c, struct api_result *res)
{
    c->keep_alive = res->keep_alive;
    if (res->infer) {
        c->infer = 1;
        STAT_ADD(w->st, requests, 1);
        STAT_ADD(w->st, active, 1);
    }
    switch (res->kind) {
    case API_HANG:
        c->state = CS_HANG;
        return 0;
    case API_DELAY:
        c->pending = malloc(res->len);
        if (!c->pending) {
            conn_close(w, c);
            return -1;
        }
        memcpy(c->pending, res->data, res->len);
        c->pending_len = res->len;
        c->state = CS_WAIT;
        return timer_set(w, c, w->now + res->delay_ms * NS_PER_MS);
    case API_STREAM:
        c->stream = res->stream;
        c->itl_ns = res->itl_ms * NS_PER_MS;
        c->close_after = res->close_after;
        c->state = CS_STREAM;
        if (conn_send(w, c, res->data, res->len) < 0)
            return -1;
        if (res->delay_ms)
            return timer_set(w, c, w->now + res->delay_ms * NS_PER_MS);
        c->deadline = w->now;
        return stream_pump(w, c);
    default:
        if (conn_send(w, c, res->data, res->len) < 0)
            return -1;
        return resp_finish(w, c);
    }
}

/* Answers an unparseable request with `status` and closes. Returns -1 if c was closed. */
static int conn_fail(struct worker *w, struct conn *c, int status)
{
    struct api_result res;
    api_http_error(&w->api, status, &res);
    return conn_start(w, c, &res);
}

static int send_continue(struct worker *w, struct conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!c->req.expect_continue || c->req.minor < 1 || c->continue_sent)
        return 0;
    c->continue_sent = 1;
    return conn_send(w, c, msg, sizeof(msg) - 1);
}

/* Parses and answers the requests in buf[0..len) while the connection is in READ state.
 * Returns the bytes consumed (the rest starts an incomplete request), or -1 if c was closed. */
static ssize_t conn_process(struct worker *w, struct conn *c, char *buf, size_t len)
{
    size_t pos = 0;
    while (c->state == CS_READ) {
        if (!c->have_head) {
            while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n'))
                pos++;
            if (pos == len)
                break;
            int rc = http1_parse_head(buf + pos, len - pos, &c->scan, MOCK_MAX_HEAD, &c->req);
            if (rc == HTTP_AGAIN)
                break;
            if (rc == HTTP_ERROR)
                return conn_fail(w, c, c->req.err_status) < 0 ? -1 : (ssize_t)len;
            if (c->req.content_length > MOCK_MAX_BODY)
                return conn_fail(w, c, 413) < 0 ? -1 : (ssize_t)len;
            c->have_head = 1;
            c->continue_sent = 0;
            memset(&c->dc, 0, sizeof(c->dc));
        }
        char *req = buf + pos;
        size_t avail = len - pos, hl = c->req.head_len, total, blen;
        if (c->req.chunked) {
            int st = 400;
            int rc = http1_dechunk(req + hl, avail - hl, &c->dc, MOCK_MAX_BODY, &st);
            if (rc == HTTP_ERROR)
                return conn_fail(w, c, st) < 0 ? -1 : (ssize_t)len;
            if (rc == HTTP_AGAIN)
                return send_continue(w, c) < 0 ? -1 : (ssize_t)pos;
            blen = c->dc.out;
            total = hl + c->dc.raw;
        } else {
            blen = (size_t)c->req.content_length;
            total = hl + blen;
            if (avail < total)
                return send_continue(w, c) < 0 ? -1 : (ssize_t)pos;
        }
        c->have_head = 0;
        struct api_req ar = {
            .method = c->req.method,
            .path = req + c->req.path_off,
            .path_len = c->req.path_len,
            .body = req + hl,
            .body_len = blen,
            .keep_alive = c->req.keep_alive,
            .http10 = c->req.minor == 0,
        };
        struct api_result res;
        api_handle(&w->api, &ar, &res);
        pos += total;
        if (conn_start(w, c, &res) < 0)
            return -1;
    }
    return (ssize_t)pos;
}

/* Answers what is buffered in c->in and keeps the unconsumed rest. */
static int conn_drain_input(struct worker *w, struct conn *c)
{
    ssize_t used = conn_process(w, c, c->in, c->in_len);
    if (used < 0)
        return -1;
    in_consume(c, (size_t)used);
    return 0;
}

/* EPOLLIN: reads until the socket is (probably) empty. Returns -1 if c was closed. */
static int conn_read(struct worker *w, struct conn *c)
{
    for (;;) {
        char *dst;
        size_t room;
        int scratch = c->state == CS_LINGER || (c->state == CS_READ && c->in_len == 0);
        if (scratch) {
            dst = w->rbuf;
            room = RBUF_SIZE;
        } else {
            size_t limit = c->state == CS_READ ? IN_MAX : PIPE_MAX;
            if (c->in_len >= limit)
                return c->state == CS_READ ? conn_fail(w, c, 413) : 0;
            size_t want = c->in_len + 16384;
            if (c->have_head && !c->req.chunked && c->req.head_len + c->req.content_length > want)
                want = c->req.head_len + (size_t)c->req.content_length;
            if (want > limit)
                want = limit;
            if (in_reserve(c, want) < 0) {
                conn_close(w, c);
                return -1;
            }
            dst = c->in + c->in_len;
            room = c->in_cap - c->in_len;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n == 0) {
            conn_close(w, c);
            return -1;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            conn_close(w, c);
            return -1;
        }
        if (c->state == CS_LINGER) {
            /* discard */
        } else if (scratch) {
            ssize_t used = conn_process(w, c, dst, (size_t)n);
            if (used < 0)
                return -1;
            if ((size_t)used < (size_t)n && c->state != CS_LINGER &&
                in_append(c, dst + used, (size_t)n - (size_t)used) < 0) {
                conn_close(w, c);
                return -1;
            }
        } else {
            c->in_len += (size_t)n;
            if (c->state == CS_READ && conn_drain_input(w, c) < 0)
                return -1;
        }
        if ((size_t)n < room)
            return 0;
    }
}

/* After an event or timer handler, with c still open: answer pipelined requests that a finished
 * response unblocked, then fix the epoll interest. */
static void conn_after(struct worker *w, struct conn *c)
{
    if (c->state == CS_READ && c->in_len > 0 && conn_drain_input(w, c) < 0)
        return;
    conn_update(w, c);
}

static void conn_on_event(struct worker *w, struct conn *c, uint32_t ev)
{
    if (ev & EPOLLERR) {
        conn_close(w, c);
        return;
    }
    if ((ev & EPOLLOUT) && conn_flush(w, c) < 0)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        if (!(c->events & EPOLLIN)) {
            conn_close(w, c); /* the client went away while we were not reading */
            return;
        }
        if (conn_read(w, c) < 0)
            return;
    }
    conn_after(w, c);
}

static void conn_on_timer(struct worker *w, struct conn *c)
{
    int r = 0;
    switch (c->state) {
    case CS_WAIT: {
        char *p = c->pending;
        c->pending = NULL;
        r = conn_send(w, c, p, c->pending_len);
        free(p);
        if (r == 0)
            r = resp_finish(w, c);
        break;
    }
    case CS_STREAM:
        r = stream_pump(w, c);
        break;
    case CS_LINGER:
        conn_close(w, c);
        return;
    default:
        break;
    }
    if (r == 0)
        conn_after(w, c);
}

/* ---------------------------------------------------------------------------------------------
 * Accepting
 */

static void listen_pause(struct worker *w, uint64_t ms)
{
    struct epoll_event e = {.events = 0, .data.ptr = &w->listen_tag};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, w->lfd, &e);
    w->accept_at = w->now + ms * NS_PER_MS;
    if (w->accept_at == 0)
        w->accept_at = 1;
}

static void listen_resume(struct worker *w)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &w->listen_tag};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, w->lfd, &e);
    w->accept_at = 0;
}

/* Accepts one connection. Returns 1 if the caller may try again, 0 if not. */
static int accept_one(struct worker *w)
{
    int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        conn_new(w, fd);
        return 1;
    }
    switch (errno) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
        return 1;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
        if (!w->cfg->quiet)
            fprintf(stderr, "mockllm: accept: %s (pausing accepts for %d ms)\n", strerror(errno),
                    EMFILE_PAUSE_MS);
        listen_pause(w, EMFILE_PAUSE_MS);
        return 0;
    default:
        return 0;
    }
}

static void on_listen(struct worker *w)
{
    if (w->cfg->accept_delay_ms > 0) {
        listen_pause(w, (uint64_t)w->cfg->accept_delay_ms);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && accept_one(w); i++)
        ;
}

static void on_accept_timer(struct worker *w)
{
    listen_resume(w);
    if (w->cfg->accept_delay_ms > 0)
        accept_one(w); /* the one accept this delay was for; the next one waits again */
}

/* ---------------------------------------------------------------------------------------------
 * Loop
 */

static void run_timers(struct worker *w)
{
    if (w->accept_at && w->accept_at <= w->now)
        on_accept_timer(w);
    while (w->heap_len && w->heap[0]->deadline <= w->now) {
        struct conn *c = w->heap[0];
        timer_del(w, c);
        conn_on_timer(w, c);
    }
}

static int loop_wait(struct worker *w, struct epoll_event *evs)
{
    uint64_t next = UINT64_MAX;
    if (w->heap_len)
        next = w->heap[0]->deadline;
    if (w->accept_at && w->accept_at < next)
        next = w->accept_at;
    uint64_t now = now_ns();
    uint64_t wait = next == UINT64_MAX ? UINT64_MAX : next > now ? next - now : 0;
    if (!w->no_pwait2) {
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ULL),
                              .tv_nsec = (long)(wait % 1000000000ULL)};
        int n = epoll_pwait2(w->epfd, evs, EV_BATCH, wait == UINT64_MAX ? NULL : &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        w->no_pwait2 = 1;
    }
    int ms = wait == UINT64_MAX               ? -1
             : wait >= 3600000ULL * NS_PER_MS ? 3600000
                                              : (int)((wait + NS_PER_MS - 1) / NS_PER_MS);
    return epoll_wait(w->epfd, evs, EV_BATCH, ms);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[EV_BATCH];
    while (!w->stop) {
        int n = loop_wait(w, evs);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "mockllm: epoll_wait: %s\n", strerror(errno));
            break;
        }
        w->now = now_ns();
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &w->listen_tag)
                on_listen(w);
            else if (p == &w->wake_tag)
                w->stop = 1;
            else
                conn_on_event(w, p, evs[i].events);
        }
        run_timers(w);
    }
    return NULL;
}

struct worker *worker_new(const struct mock_config *cfg, struct mock_stats *stats, int id, int lfd)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = id;
    w->cfg = cfg;
    w->st = &stats->shard[id];
    w->lfd = -1;
    w->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->rbuf = malloc(RBUF_SIZE);
    w->now = now_ns();
    uint64_t seed = 0x6d6f636b6c6c6d00ULL + (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    if (w->wfd < 0 || w->epfd < 0 || !w->rbuf || api_init(&w->api, cfg, stats, seed) < 0)
        goto fail;
    struct epoll_event ew = {.events = EPOLLIN, .data.ptr = &w->wake_tag};
    struct epoll_event el = {.events = EPOLLIN, .data.ptr = &w->listen_tag};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wfd, &ew) < 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, lfd, &el) < 0)
        goto fail;
    w->lfd = lfd;
    return w;
fail:
    worker_free(w);
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    w->started = 1;
    return 0;
}

void worker_stop(struct worker *w)
{
    uint64_t one = 1;
    if (w && w->wfd >= 0 && write(w->wfd, &one, sizeof(one)) < 0)
        perror("mockllm: eventfd write");
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    while (w->conns) {
        struct conn *c = w->conns;
        c->prev = NULL; /* always true of the head; says so to static analysers too */
        conn_close(w, c);
    }
    free(w->heap);
    api_release(&w->api);
    sbuf_release(&w->ev);
    free(w->rbuf);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->wfd >= 0)
        close(w->wfd);
    if (w->lfd >= 0)
        close(w->lfd);
    free(w);
}
