/* transfer.c — a worker's upstream transfers: curl's sockets in its epoll set, starting a
 * transfer (easy handles kept for reuse), and classifying how one finished. */
#include "inference/worker_int.h"

#include "core/clock.h"
#include "core/log.h"
#include "inference/backend.h"
#include "inference/router.h"
#include "inference/usage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <urcu/compiler.h>

/* ---------------------------------------------------------------------------------------- */
/* curl sockets in the worker's epoll set                                                   */

/* Registration of curl's sockets in the worker's epoll set. curl says REMOVE when a transfer
 * ends, also for a connection it keeps for the next request to the same engine, and asks for
 * the same socket again when that request starts: a DEL and an ADD per request for nothing.
 * Instead a removed socket stays registered, "parked": an event on it (the engine closed an
 * idle connection) unregisters it without bothering curl, and a socket curl wants again with
 * the mask it has costs no syscall. Only sockets curl opened through worker__open_socket are
 * parked: they are closed through worker__close_socket, which forgets the state before the
 * descriptor number can be reused. Others (the threaded resolver's socket pair, closed
 * without a callback) are taken out of the set on REMOVE as usual. */
#define WFD_IN 1u     /* registered for EPOLLIN */
#define WFD_OUT 2u    /* registered for EPOLLOUT */
#define WFD_REG 4u    /* in the epoll set */
#define WFD_PARKED 8u /* registered, but curl does not watch it now */
#define WFD_OURS 16u  /* opened by worker__open_socket: its close is reported */

static uint8_t *worker__fdst(struct worker *w, curl_socket_t s)
{
    if (s < 0)
        return NULL;
    if ((size_t)s >= w->n_fdst) {
        size_t n = w->n_fdst ? w->n_fdst : 1024;
        while (n <= (size_t)s)
            n *= 2;
        uint8_t *p = realloc(w->fdst, n);
        if (!p)
            return NULL;
        memset(p + w->n_fdst, 0, n - w->n_fdst);
        w->fdst = p;
        w->n_fdst = n;
    }
    return &w->fdst[s];
}

int worker__on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
    struct worker *w = arg;
    (void)easy;
    (void)sockp;
    uint8_t *st = worker__fdst(w, s);
    if (what == CURL_POLL_REMOVE) {
        if (st && (*st & (WFD_REG | WFD_OURS)) == (WFD_REG | WFD_OURS)) {
            *st |= WFD_PARKED;
        } else {
            epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
            if (st)
                *st &= WFD_OURS;
        }
        return 0;
    }
    if (what & CURL_POLL_IN) {
        /* The request is out; acknowledge the engine's answer at once. An engine that sends its
         * head and its body (or first event) in two writes without TCP_NODELAY (Python's
         * http.server, for one) holds the second write under Nagle until our delayed ACK: 40 ms
         * added to the answer or to the first token. Linux leaves quick-ack mode again by
         * itself, so this is set each time a transfer starts waiting. */
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
    }
    unsigned want = ((what & CURL_POLL_IN) ? WFD_IN : 0) | ((what & CURL_POLL_OUT) ? WFD_OUT : 0);
    struct epoll_event ev = {.events = ((want & WFD_IN) ? EPOLLIN : 0u) |
                                       ((want & WFD_OUT) ? EPOLLOUT : 0u),
                             .data.u64 = ((uint64_t)s << 2) | TAG_CURL};
    if (st && (*st & WFD_REG)) {
        if ((*st & (WFD_IN | WFD_OUT)) != want && epoll_ctl(w->epfd, EPOLL_CTL_MOD, s, &ev) != 0)
            log_warn("epoll_ctl(MOD, curl socket %d): %s", (int)s, strerror(errno));
        *st = (uint8_t)((*st & WFD_OURS) | WFD_REG | want);
        return 0;
    }
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s, &ev) == 0 ||
        (errno == EEXIST && epoll_ctl(w->epfd, EPOLL_CTL_MOD, s, &ev) == 0)) {
        if (st)
            *st = (uint8_t)((*st & WFD_OURS) | WFD_REG | want);
    } else {
        log_warn("epoll_ctl(ADD, curl socket %d): %s", (int)s, strerror(errno));
    }
    return 0;
}

/* An event on a parked socket: curl does not watch it, so take it out of the set (curl finds
 * the connection dead when it next wants it). Returns true if the socket was parked. */
bool worker__parked_event(struct worker *w, curl_socket_t s)
{
    if (s < 0 || (size_t)s >= w->n_fdst || !(w->fdst[s] & WFD_PARKED))
        return false;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
    w->fdst[s] = WFD_OURS;
    return true;
}

/* CURLOPT_OPENSOCKETFUNCTION of every easy handle: marks the sockets whose close we hear of. */
curl_socket_t worker__open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct worker *w = arg;
    (void)purpose;
    curl_socket_t s = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    uint8_t *st = s >= 0 ? worker__fdst(w, s) : NULL;
    if (st)
        *st = WFD_OURS;
    return s < 0 ? CURL_SOCKET_BAD : s;
}

/* CURLOPT_CLOSESOCKETFUNCTION of every easy handle: the state of a closed descriptor is
 * forgotten before its number can come back (closing also takes it out of the epoll set). */
int worker__close_socket(void *arg, curl_socket_t s)
{
    struct worker *w = arg;
    if (s >= 0 && (size_t)s < w->n_fdst)
        w->fdst[s] = 0;
    return close(s);
}

int worker__on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct worker *w = arg;
    (void)multi;
    w->curl_deadline_ns =
        timeout_ms < 0 ? UINT64_MAX : clock_now_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* starting transfers                                                                       */

/* An easy handle with the options every transfer shares: a reused one, or a new one. */
static CURL *worker__easy(struct worker *w)
{
    if (w->n_spare)
        return w->spare[--w->n_spare];
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "llmgate/" LLMGATE_VERSION);
    /* Engines are local: no proxy. This also spares curl its per-transfer *_proxy getenv. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, worker__open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, w);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, worker__close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, w);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, worker__on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, worker__on_body);
    return e;
}

/* A stream of a key with tpm whose client did not ask for usage: the body is edited to ask
 * (a few bytes spliced in where the request scan found room, not re-serialised), and the usage
 * chunk is filtered out of what the client receives. Without room under the body's ceiling or
 * memory, the stream goes as it came (settled by its events). */
static void worker__ask_usage(struct job *job)
{
    struct usage_strip *f = usage_strip_new();
    if (f &&
        buf_splice(&job->body, job->ask_off, job->ask_del, job->ask_ins, strlen(job->ask_ins)) == 0)
        job->w_strip = f;
    else
        usage_strip_free(f);
}

static void worker__transfer_done(struct worker *w, struct xfer_owner *o, CURLcode rc);
static const struct xfer_ops worker__job_xfer = {.on_done = worker__transfer_done};

void worker__start(struct worker *w, struct job *job)
{
    const struct config *cfg = job->snap->cfg;
    const struct upstream *up = cfg->backends[job->backend].up;
    uint64_t now = clock_now_ns();
    if (now >= job->deadline_ns) {
        job->wstate = JW_RUNNING;
        worker__end(w, job, LGE_TIMEOUT, NULL);
        return;
    }
    CURL *e = worker__easy(w);
    if (!e) {
        job->wstate = JW_RUNNING; /* holds a permit: teardown returns it */
        worker__end(w, job, LGE_INTERNAL, "out of memory starting the upstream transfer");
        return;
    }
    /* curl only reads the header list; its nodes and strings live in the job */
    snprintf(job->hdr_rid, sizeof(job->hdr_rid), "X-Request-ID: %s", job->request_id);
    char *lines[5] = {(char *)"Content-Type: application/json", (char *)"Expect:",
                      job->stream ? (char *)"Accept: text/event-stream"
                                  : (char *)"Accept: application/json",
                      job->hdr_rid, up->auth};
    unsigned n = up->auth ? 5 : 4;
    for (unsigned i = 0; i < n; i++) {
        job->hdr[i].data = lines[i];
        job->hdr[i].next = i + 1 < n ? &job->hdr[i + 1] : NULL;
    }
    if (job->ask_ins && !job->w_strip && cfg->backends[job->backend].stream_usage)
        worker__ask_usage(job);
    curl_easy_setopt(e, CURLOPT_CURLU, up->curlu[job->endpoint]);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_ms);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, buf_data(&job->body));
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)buf_len(&job->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, job->hdr);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
    job->w_xfer.ops = &worker__job_xfer;
    curl_easy_setopt(e, CURLOPT_PRIVATE, &job->w_xfer);
    /* request_s is enforced here, not with CURLOPT_TIMEOUT_MS, which would also cut a stream
     * that keeps flowing (worker__expire_deadlines). */
    if (heap_push(&w->deadlines, &job->w_deadline, job->deadline_ns) != 0 ||
        curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        heap_remove(&w->deadlines, &job->w_deadline);
        curl_easy_cleanup(e);
        job->wstate = JW_RUNNING;
        worker__end(w, job, LGE_INTERNAL, "cannot start the upstream transfer");
        return;
    }
    job->easy = e;
    job->wstate = JW_RUNNING;
    list_append(&w->running, job);
    w->n_running++;
    job->w_started_ns = now;
    job_ref(job); /* the young list's reference */
    job->w_young_next = NULL;
    if (w->young_tail)
        w->young_tail->w_young_next = job;
    else
        w->young_head = job;
    w->young_tail = job;
    atomic_fetch_add(&w->pool->started, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* finished transfers                                                                       */

/* Removes the curl side of a running transfer and returns its permit. The easy handle of a
 * cleanly finished transfer is kept for the next one (`reusable`); others are freed. */
void worker__teardown(struct worker *w, struct job *job, bool reusable)
{
    if (job->easy) {
        long sent = 0; /* request bytes written to the engine, this transfer: only a tpm or
                        * rpm charge (job_settle) asks */
        if ((job->lim.taken_tokens || job->lim.took_request) && !job->w_sent &&
            (curl_easy_getinfo(job->easy, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK || sent > 0))
            job->w_sent = true;
        curl_multi_remove_handle(w->multi, job->easy);
        if (reusable && w->n_spare < WORKER_SPARE_EASY)
            w->spare[w->n_spare++] = job->easy;
        else
            curl_easy_cleanup(job->easy);
        job->easy = NULL;
        list_unlink(&w->running, job);
        w->n_running--;
    }
    heap_remove(&w->deadlines, &job->w_deadline);
    job_release_body(job);
    router_release(w->pool->router, job);
}

static enum lg_err worker__classify(CURL *e, CURLcode rc, const char **msg)
{
    curl_off_t connect_us = 0;
    long new_conns = 0;
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &new_conns);
    /* A reused connection reports no connect time: it was connected all along. */
    bool connected = new_conns == 0 || connect_us > 0;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        if (!connected) {
            *msg = "connecting to the inference engine timed out";
            return LGE_BAD_GATEWAY;
        }
        *msg = NULL;
        return LGE_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        *msg = "the inference engine is unreachable";
        return LGE_BAD_GATEWAY;
    default:
        *msg = curl_easy_strerror(rc);
        return LGE_BAD_GATEWAY;
    }
}

static void worker__upstream_error(struct worker *w, struct backend *be)
{
    atomic_fetch_add(&w->pool->upstream_errors, 1);
    atomic_fetch_add_explicit(&be->failures, 1, memory_order_relaxed);
}

/* A job's transfer ended (xfer_ops.on_done of every job's easy handle). */
static void worker__transfer_done(struct worker *w, struct xfer_owner *o, CURLcode rc)
{
    struct job *job = caa_container_of(o, struct job, w_xfer);
    struct backend *be = job->snap->cfg->backends[job->backend].be;
    const char *msg = NULL;
    enum lg_err err = LGE_NONE;
    if (job->w_hdr_done && job->stream && job->t_first_event_ns) {
        atomic_fetch_add(&w->pool->ttft_ns_sum, job->t_first_event_ns - job->t_start_ns);
        atomic_fetch_add(&w->pool->ttft_count, 1);
    }
    if (rc != CURLE_OK) {
        err = worker__classify(job->easy, rc, &msg);
        pthread_mutex_lock(&job->lock);
        bool gone = job->client_gone;
        pthread_mutex_unlock(&job->lock);
        if (rc == CURLE_WRITE_ERROR && gone)
            err = LGE_NONE; /* we aborted it: the client left */
        else
            worker__upstream_error(w, be);
        if (rc == CURLE_COULDNT_CONNECT ||
            (rc == CURLE_OPERATION_TIMEDOUT && err == LGE_BAD_GATEWAY))
            router_set_health(be, HEALTH_DOWN);
    } else if (!job->w_hdr_done) {
        /* curl calls a response that ends inside its head a success (it ends when the
         * connection does): for the client it is a broken answer from the engine */
        err = LGE_BAD_GATEWAY;
        msg = "the inference engine closed the connection inside its response headers";
        worker__upstream_error(w, be);
    } else {
        router_set_health(be, HEALTH_UP);
    }
    if (job->w_hdr_done && rc == CURLE_OK) {
        worker__teardown(w, job, true);
        int64_t usage = job->w_track_usage ? usage_tokens(job->w_tail, job->w_tail_len) : -1;
        pthread_mutex_lock(&job->lock);
        job->usage_tokens = usage;
        if (job->w_strip && usage_strip_flush(job->w_strip, &job->out) != 0)
            job->eof_error = true; /* an unterminated last event that no longer fits */
        if (!job->headers_ready) {
            job->eof = true; /* status, headers and the whole body in one hand-over */
            worker__deliver_headers_locked(w, job);
        }
        pthread_mutex_unlock(&job->lock);
        worker__answer(w, job, LGE_NONE, NULL);
        worker__done(w, job);
        return;
    }
    if (job->w_hdr_done && err == LGE_BAD_GATEWAY)
        msg = "the inference engine broke the stream";
    if (err == LGE_NONE && rc != CURLE_OK)
        err = LGE_BAD_GATEWAY;
    worker__end(w, job, err, msg);
}

void worker__check_finished(struct worker *w)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        void *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct xfer_owner *o = priv;
        o->ops->on_done(w, o, m->data.result);
    }
}
