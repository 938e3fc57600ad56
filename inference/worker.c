/* worker.c — see worker.h. */
#include "inference/worker.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/heap.h"
#include "core/log.h"
#include "core/mpsc.h"
#include "inference/backend.h"
#include "inference/job.h"
#include "inference/limits.h"
#include "inference/router.h"
#include "inference/snap.h"
#include "inference/usage.h"

#include <curl/curl.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* epoll data tags: the eventfd, curl sockets ((fd << 2) | 2), or a job pointer (8-aligned)
 * whose client socket is watched for hang-ups. */
#define TAG_WAKE 1u
#define TAG_CURL 2u

struct job_list {
    struct job *head, *tail;
};

struct probe {
    CURL *easy;
    struct backend *be; /* of the configuration w->probe_snap */
    bool busy;
    char *url;
};

struct worker {
    struct pool *pool;
    unsigned id;
    pthread_t thread;
    bool started;
    struct mpsc q;
    int efd;
    int epfd;
    CURLM *multi;
    uint64_t curl_deadline_ns; /* UINT64_MAX: no curl timer */
    struct job_list waiting;   /* queued for a permit, FIFO = deadline order */
    struct job_list running;   /* transfers on the multi handle */
    unsigned n_running;
    struct heap deadlines;   /* running jobs still bounded by request_s (job->w_deadline) */
    struct heap waits;       /* waiting jobs by their own wait deadline (job->w_wait): jobs of
                              * configurations with different timeouts wait side by side */
    struct job *young_head;  /* started transfers whose client is not watched yet, in start */
    struct job *young_tail;  /* order (each holds a reference); see worker__watch_young */
    struct job *resume_head; /* connections to resume at the end of this event batch */
    uint64_t loop_now_ns;    /* when the current event batch began (one clock read) */
    atomic_bool quit;
    bool aborting;
    uint8_t *fdst; /* per curl socket fd: WFD_* registration state in epfd */
    size_t n_fdst;
    CURL **spare; /* finished easy handles kept for reuse (LIFO) */
    unsigned n_spare;
    struct probe *probes; /* worker 0 only: one per backend of probe_snap */
    size_t n_probes;
    struct snap *probe_snap; /* the configuration the probes were built for (pinned) */
    unsigned probe_interval_ms;
    uint64_t next_probe_ns;
    uint64_t next_watch_ns;
};

/* How often a worker looks for streams whose connection waits (suspended) for the next token
 * and starts watching their client sockets, so a client that leaves an idle stream is noticed
 * within about this long, without a syscall per token. */
#define WORKER_WATCH_SCAN_NS (1000 * NS_PER_MS)

/* A transfer still waiting for the engine's headers this long after it started gets its client
 * socket watched. Most answers come sooner, and watching costs two epoll_ctl: a client that
 * leaves earlier is noticed this much later. */
#define WORKER_WATCH_DELAY_NS (100 * NS_PER_MS)

/* What each backend's requests need, built once: URLs per path, the Authorization header. */
struct upstream {
    char *url[JOB__ENDPOINTS];
    CURLU *curlu[JOB__ENDPOINTS]; /* the same, parsed once: curl does not re-parse a URL per
                                     transfer */
    char *auth;
};

#define WORKER_SPARE_EASY 256

struct pool {
    struct snap_slot slot;     /* the current configuration */
    struct backends *backends; /* backend objects by name, across configurations */
    struct limits *limits;     /* key states by name, across configurations */
    struct router *router;
    struct worker *w;
    unsigned n;
    atomic_uint rr;
    atomic_bool draining;
    atomic_bool aborting;
    atomic_uint_fast64_t active;
    atomic_uint_fast64_t upstream_errors;
    atomic_uint_fast64_t client_aborts;
    atomic_uint_fast64_t send_timeouts;
    atomic_uint_fast64_t started;
    atomic_uint_fast64_t ttft_ns_sum;
    atomic_uint_fast64_t ttft_count;
    long max_conns;        /* CURLMOPT_MAXCONNECTS of each worker */
    atomic_bool probe_now; /* a new configuration: worker 0 rebuilds its probes */
};

static void worker__wake(struct worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof(one));
    (void)r; /* EAGAIN only when the counter is saturated: already awake */
}

static void worker__post(struct worker *w, struct job_msg *m)
{
    job_ref(m->job);
    if (mpsc_push(&w->q, &m->node))
        worker__wake(w);
}

/* Router grant callback: runs under the router lock, on any thread. */
static void pool__grant(struct job *job, void *arg)
{
    struct pool *p = arg;
    worker__post(&p->w[job->worker], &job->m_grant);
}

/* ---------------------------------------------------------------------------------------- */
/* client hang-up watch (queued and waiting-for-headers phases)                               */

static void worker__watch(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    job__watch_locked(job, w->epfd);
    pthread_mutex_unlock(&job->lock);
}

/* ---------------------------------------------------------------------------------------- */
/* resumes, batched                                                                           */

/* The HTTP side has something new to send (headers or body bytes). The connection is resumed
 * at the end of the worker's current event batch, not at once: every MHD_resume_connection
 * writes libmicrohttpd's inter-thread channel and makes its thread walk its whole list of
 * suspended connections, so resuming the streams that got bytes in one batch together lets
 * one wake-up of that thread serve them all. Caller holds job->lock; worker thread. */
static void worker__resume_later_locked(struct worker *w, struct job *job)
{
    if (!job->suspended || job->w_resume_queued)
        return;
    job->w_resume_queued = true;
    job_ref(job); /* the list's reference */
    job->w_resume_next = w->resume_head;
    w->resume_head = job;
}

static void worker__flush_resumes(struct worker *w)
{
    struct job *job = w->resume_head;
    w->resume_head = NULL;
    while (job) {
        struct job *next = job->w_resume_next;
        pthread_mutex_lock(&job->lock);
        job->w_resume_queued = false;
        job->w_resume_next = NULL;
        job__resume_locked(job); /* nothing if resumed meanwhile */
        job__unlock(job);        /* resumes after the unlock */
        job_unref(job);
        job = next;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* ending a job                                                                               */

static void list_unlink(struct job_list *l, struct job *job)
{
    if (job->w_prev)
        job->w_prev->w_next = job->w_next;
    else if (l->head == job)
        l->head = job->w_next;
    else
        return; /* not in the list */
    if (job->w_next)
        job->w_next->w_prev = job->w_prev;
    else
        l->tail = job->w_prev;
    job->w_next = job->w_prev = NULL;
}

static void list_append(struct job_list *l, struct job *job)
{
    job->w_prev = l->tail;
    job->w_next = NULL;
    if (l->tail)
        l->tail->w_next = job;
    else
        l->head = job;
    l->tail = job;
}

/* Tells the HTTP side how the job ended: an error response if it has no upstream headers yet,
 * otherwise the end of the body (with an SSE error event, or a broken connection, if `err`). */
static void worker__answer(struct worker *w, struct job *job, enum lg_err err, const char *msg)
{
    /* computed before taking the job lock: the router lock is never taken under it */
    uint64_t retry_ms = err_info(err)->status == 503 || err_info(err)->status == 429
                            ? router_retry_after_ms(w->pool->router, job, err)
                            : 0;
    pthread_mutex_lock(&job->lock);
    if (!job->headers_ready) {
        if (job->fail == LGE_NONE) {
            job->fail = err != LGE_NONE ? err : LGE_INTERNAL;
            job->retry_ms = retry_ms;
            if (err == LGE_RATE_LIMITED)
                job->fail_msg = msg; /* a literal: says which limit */
        }
    } else if (!job->eof) {
        job->eof = true;
        if (err == LGE_CLIENT_CLOSED) {
            job->eof_error = true; /* nobody to tell */
        } else if (err != LGE_NONE) {
            bool sse = strncasecmp(job->content_type, "text/event-stream", 17) == 0;
            char env[512], ev[600];
            size_t n = 0;
            if (sse && err_envelope(env, sizeof(env), err, msg, NULL) > 0) {
                int k = snprintf(ev, sizeof(ev), "data: %s\n\n", env);
                n = k > 0 && (size_t)k < sizeof(ev) ? (size_t)k : 0;
            }
            if (n == 0 || buf_append(&job->out, ev, n) != 0)
                job->eof_error = true;
        }
    }
    worker__resume_later_locked(w, job);
    pthread_mutex_unlock(&job->lock);
}

/* Removes the curl side of a running transfer and returns its permit. The easy handle of a
 * cleanly finished transfer is kept for the next one (`reusable`); others are freed. */
static void worker__teardown(struct worker *w, struct job *job, bool reusable)
{
    if (job->easy) {
        long sent = 0; /* request bytes written to the engine, this transfer: only a tpm charge
                        * (job_settle) asks */
        if (job->lim.taken_tokens && !job->w_sent &&
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

/* The worker lets go of the job: its reference is dropped. */
static void worker__done(struct worker *w, struct job *job)
{
    job->wstate = JW_DONE;
    job_settle(job);
    atomic_fetch_sub(&w->pool->active, 1);
    job_unref(job);
}

/* Ends a job in whatever phase it is, answering with `err`. */
static void worker__end(struct worker *w, struct job *job, enum lg_err err, const char *msg)
{
    switch (job->wstate) {
    case JW_WAITING:
        list_unlink(&w->waiting, job);
        heap_remove(&w->waits, &job->w_wait);
        worker__answer(w, job, err, msg);
        if (job->w_cancelled)
            return; /* already answered; waiting for the grant */
        if (!router_cancel(w->pool->router, job)) {
            /* granted meanwhile: the JM_GRANT in our queue will give the permit back */
            job->w_cancelled = true;
            return;
        }
        worker__done(w, job);
        return;
    case JW_RUNNING:
        worker__teardown(w, job, false);
        worker__answer(w, job, err, msg);
        worker__done(w, job);
        return;
    case JW_NEW:
        worker__answer(w, job, err, msg);
        worker__done(w, job);
        return;
    case JW_DONE:
        return;
    }
}

/* Delivers the upstream's status line and headers to the HTTP side. Streams get them as soon as
 * they are complete; a non-stream answer gets them with its whole body (one resume, one send)
 * unless the body outgrows the stream buffer, which delivers them early (worker__on_body).
 * Runs inside the header callback: resuming a connection never calls back into curl. */
static void worker__deliver_headers_locked(struct worker *w, struct job *job)
{
    job->headers_ready = true;
    job->status = job->up_status;
    memcpy(job->content_type, job->up_ctype, sizeof(job->content_type));
    job->content_length = job->up_clen;
    worker__resume_later_locked(w, job);
}

static void worker__deliver_headers(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    worker__deliver_headers_locked(w, job);
    pthread_mutex_unlock(&job->lock);
}

/* ---------------------------------------------------------------------------------------- */
/* curl callbacks (worker thread, inside curl_multi_socket_action)                           */

static size_t worker__on_header(char *line, size_t size, size_t n, void *arg)
{
    struct job *job = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        const char *sp = memchr(line, ' ', len);
        job->up_status = sp ? (unsigned)strtoul(sp + 1, NULL, 10) : 0;
        job->up_ctype[0] = '\0';
        job->up_clen = -1;
    } else if (len > 13 && strncasecmp(line, "content-type:", 13) == 0) {
        const char *v = line + 13;
        size_t vl = len - 13;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl >= sizeof(job->up_ctype))
            vl = sizeof(job->up_ctype) - 1;
        memcpy(job->up_ctype, v, vl);
        job->up_ctype[vl] = '\0';
    } else if (len > 15 && strncasecmp(line, "content-length:", 15) == 0) {
        job->up_clen = strtoll(line + 15, NULL, 10);
    } else if ((len == 2 && line[0] == '\r') || (len == 1 && line[0] == '\n')) {
        if (job->up_status < 200)
            return len; /* 1xx interim response */
        job->w_hdr_done = true;
        if (job->stream)
            worker__deliver_headers(&job->pool->w[job->worker], job);
    }
    return len;
}

/* An event stream once its first body byte arrived is bounded by the client, not by
 * request_s: a long generation that keeps flowing is never cut. */
static bool worker__is_sse(const char *ctype)
{
    return strncasecmp(ctype, "text/event-stream", 17) == 0;
}

/* The last JOB_TAIL bytes of the engine's body. Worker thread only. */
static void worker__keep_tail(struct job *job, const char *data, size_t len)
{
    if (len >= JOB_TAIL) {
        memcpy(job->w_tail, data + len - JOB_TAIL, JOB_TAIL);
        job->w_tail_len = JOB_TAIL;
        return;
    }
    size_t keep = job->w_tail_len + len > JOB_TAIL ? JOB_TAIL - len : job->w_tail_len;
    memmove(job->w_tail, job->w_tail + job->w_tail_len - keep, keep);
    memcpy(job->w_tail + keep, data, len);
    job->w_tail_len = keep + len;
}

static size_t worker__on_body(char *data, size_t size, size_t n, void *arg)
{
    struct job *job = arg;
    struct worker *w = &job->pool->w[job->worker];
    size_t len = size * n;
    /* Counted on a copy of the scanner: bytes refused with PAUSE come again later. */
    struct sse_scan sc = job->sse;
    size_t ev = job->stream ? sse_scan_feed(&sc, data, len) : 0;
    /* the usage we asked for is not relayed (an engine's error answer is, whole) */
    struct usage_strip *strip =
        job->w_strip && job->up_status < 300 && worker__is_sse(job->up_ctype) ? job->w_strip : NULL;
    pthread_mutex_lock(&job->lock);
    if (job->client_gone) {
        pthread_mutex_unlock(&job->lock);
        return 0; /* abort: nobody is listening */
    }
    if (!buf_fits(&job->out, strip ? usage_strip_held(strip) + len : len)) {
        job->up_paused = true;
        if (!job->headers_ready) /* a large non-stream body: start sending it */
            worker__deliver_headers_locked(w, job);
        pthread_mutex_unlock(&job->lock);
        return CURL_WRITEFUNC_PAUSE;
    }
    if ((strip ? usage_strip_feed(strip, data, len, &job->out)
               : buf_append(&job->out, data, len)) != 0) {
        pthread_mutex_unlock(&job->lock);
        return 0; /* out of memory: abort the transfer */
    }
    if (job->w_track_usage)
        worker__keep_tail(job, data, len);
    bool first = !job->body_started;
    job->body_started = true;
    job->w_last_byte_ns = w->loop_now_ns; /* the batch's time: no clock read per event */
    job->bytes_out += len;
    job->events += ev;
    /* A plain answer is handed over whole at its end (worker__transfer_done): waking the
     * HTTP side for every piece would only make it suspend again. */
    if (job->headers_ready)
        worker__resume_later_locked(w, job);
    pthread_mutex_unlock(&job->lock);
    job->sse = sc;
    if (ev && !job->t_first_event_ns)
        job->t_first_event_ns = clock_now_ns();
    if (first && worker__is_sse(job->up_ctype))
        heap_remove(&w->deadlines, &job->w_deadline);
    return len;
}

static size_t worker__discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

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

static int worker__on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
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
static bool worker__parked_event(struct worker *w, curl_socket_t s)
{
    if (s < 0 || (size_t)s >= w->n_fdst || !(w->fdst[s] & WFD_PARKED))
        return false;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
    w->fdst[s] = WFD_OURS;
    return true;
}

/* CURLOPT_OPENSOCKETFUNCTION of every easy handle: marks the sockets whose close we hear of. */
static curl_socket_t worker__open_socket(void *arg, curlsocktype purpose,
                                         struct curl_sockaddr *addr)
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
static int worker__close_socket(void *arg, curl_socket_t s)
{
    struct worker *w = arg;
    if (s >= 0 && (size_t)s < w->n_fdst)
        w->fdst[s] = 0;
    return close(s);
}

static int worker__on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct worker *w = arg;
    (void)multi;
    w->curl_deadline_ns =
        timeout_ms < 0 ? UINT64_MAX : clock_now_ns() + (uint64_t)timeout_ms * NS_PER_MS;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* starting transfers                                                                         */

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

static void worker__start(struct worker *w, struct job *job)
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
    curl_easy_setopt(e, CURLOPT_PRIVATE, job);
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
/* messages                                                                                   */

static void worker__on_submit(struct worker *w, struct job *job)
{
    if (w->aborting) {
        worker__end(w, job, LGE_DRAINING, NULL);
        return;
    }
    switch (router_acquire(w->pool->router, job)) {
    case ROUTER_OK:
        worker__start(w, job);
        return;
    case ROUTER_QUEUED: {
        worker__watch(w, job); /* a wait has begun: notice a client that leaves it */
        const struct config *cfg = job->snap->cfg;
        uint64_t qd = clock_now_ns() + (uint64_t)cfg->queue_timeout_ms * NS_PER_MS;
        job->w_wait_deadline_ns = qd < job->deadline_ns ? qd : job->deadline_ns;
        job->wstate = JW_WAITING;
        list_append(&w->waiting, job);
        if (heap_push(&w->waits, &job->w_wait, job->w_wait_deadline_ns) != 0)
            worker__end(w, job, LGE_INTERNAL, "out of memory queueing the request");
        return;
    }
    case ROUTER_FULL:
        worker__end(w, job, LGE_QUEUE_FULL, NULL);
        return;
    case ROUTER_FAIR_SHARE:
        worker__end(w, job, LGE_RATE_LIMITED,
                    "rate limit exceeded: fair share (the queue is full and this API key holds "
                    "more than its share of it)");
        return;
    }
}

static void worker__on_grant(struct worker *w, struct job *job)
{
    list_unlink(&w->waiting, job);
    heap_remove(&w->waits, &job->w_wait);
    if (job->w_cancelled || job->wstate != JW_WAITING) {
        router_release(w->pool->router, job);
        if (job->wstate != JW_DONE)
            worker__done(w, job);
        return;
    }
    if (w->aborting) {
        job->wstate = JW_RUNNING;
        worker__end(w, job, LGE_DRAINING, NULL);
        return;
    }
    worker__start(w, job);
}

static void worker__on_cancel(struct worker *w, struct job *job)
{
    if (job->wstate == JW_DONE || job->w_cancelled)
        return;
    atomic_fetch_add(&w->pool->client_aborts, 1);
    worker__end(w, job, LGE_NONE, NULL);
}

static void worker__on_unpause(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    job->unpause_pending = false;
    bool paused = job->up_paused;
    job->up_paused = false;
    pthread_mutex_unlock(&job->lock);
    /* Not under the job lock: curl may call the write callback from inside curl_easy_pause. */
    if (paused && job->wstate == JW_RUNNING && job->easy)
        curl_easy_pause(job->easy, CURLPAUSE_CONT);
    (void)w;
}

static void worker__drain_queue(struct worker *w)
{
    struct cds_wfcq_node *node;
    while ((node = mpsc_pop(&w->q)) != NULL) {
        struct job_msg *m = caa_container_of(node, struct job_msg, node);
        struct job *job = m->job;
        switch (m->type) {
        case JM_SUBMIT:
            worker__on_submit(w, job);
            break;
        case JM_GRANT:
            worker__on_grant(w, job);
            break;
        case JM_CANCEL:
            worker__on_cancel(w, job);
            break;
        case JM_UNPAUSE:
            worker__on_unpause(w, job);
            break;
        }
        job_unref(job); /* the message's reference */
    }
}

/* ---------------------------------------------------------------------------------------- */
/* finished transfers, timeouts, probes                                                       */

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

static void worker__probes_free(struct worker *w)
{
    for (size_t i = 0; i < w->n_probes; i++) {
        if (w->probes[i].busy)
            curl_multi_remove_handle(w->multi, w->probes[i].easy);
        curl_easy_cleanup(w->probes[i].easy);
        free(w->probes[i].url);
    }
    free(w->probes);
    w->probes = NULL;
    w->n_probes = 0;
    snap_put(w->probe_snap);
    w->probe_snap = NULL;
}

/* Worker 0's probes follow the current configuration: rebuilt after a reload (a probe in
 * flight is dropped; the backend objects keep the health it measured before). */
static void worker__probes_refresh(struct worker *w)
{
    struct snap *cur = snap_current(&w->pool->slot);
    if (!cur || cur == w->probe_snap) {
        snap_put(cur);
        return;
    }
    worker__probes_free(w);
    w->probe_snap = cur; /* the reference taken above */
    const struct config *cfg = cur->cfg;
    w->probe_interval_ms = cfg->health_interval_ms;
    if (cfg->health_interval_ms == 0 || cfg->n_backends == 0)
        return;
    w->probes = calloc(cfg->n_backends, sizeof(*w->probes));
    if (!w->probes) {
        log_warn("health probes: out of memory");
        return;
    }
    w->n_probes = cfg->n_backends;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        struct probe *pr = &w->probes[i];
        const struct cfg_backend *be = &cfg->backends[i];
        size_t ul = strlen(be->url) + sizeof("/v1/models");
        pr->be = be->be;
        pr->url = malloc(ul);
        pr->easy = curl_easy_init();
        if (!pr->url || !pr->easy) {
            curl_easy_cleanup(pr->easy);
            pr->easy = NULL; /* skipped by the rounds */
            continue;
        }
        snprintf(pr->url, ul, "%s/v1/models", be->url);
        long total = cfg->health_interval_ms < 5000 ? (long)cfg->health_interval_ms : 5000L;
        curl_easy_setopt(pr->easy, CURLOPT_URL, pr->url);
        curl_easy_setopt(pr->easy, CURLOPT_NOSIGNAL, 1L);
        /* as real transfers (worker__easy): the engine directly, whatever *_proxy says */
        curl_easy_setopt(pr->easy, CURLOPT_PROXY, "");
        curl_easy_setopt(pr->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_ms);
        curl_easy_setopt(pr->easy, CURLOPT_TIMEOUT_MS, total);
        curl_easy_setopt(pr->easy, CURLOPT_WRITEFUNCTION, worker__discard);
        curl_easy_setopt(pr->easy, CURLOPT_PRIVATE, pr);
        curl_easy_setopt(pr->easy, CURLOPT_OPENSOCKETFUNCTION, worker__open_socket);
        curl_easy_setopt(pr->easy, CURLOPT_OPENSOCKETDATA, w);
        curl_easy_setopt(pr->easy, CURLOPT_CLOSESOCKETFUNCTION, worker__close_socket);
        curl_easy_setopt(pr->easy, CURLOPT_CLOSESOCKETDATA, w);
        curl_easy_setopt(pr->easy, CURLOPT_USERAGENT, "llmgate/" LLMGATE_VERSION " probe");
    }
}

static void worker__probe_done(struct worker *w, struct probe *pr, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(pr->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(w->multi, pr->easy);
    pr->busy = false;
    enum backend_health h =
        (rc == CURLE_OK && status > 0 && status < 500) ? HEALTH_UP : HEALTH_DOWN;
    enum backend_health was = router_health(pr->be);
    if (h != was)
        log_info("backend %s is %s (probe: %s, status %ld)", pr->be->name,
                 h == HEALTH_UP ? "up" : "down", curl_easy_strerror(rc), status);
    router_set_health(pr->be, h);
}

static void worker__transfer_done(struct worker *w, struct job *job, CURLcode rc)
{
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

static void worker__check_finished(struct worker *w)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        void *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        CURLcode rc = m->data.result;
        if (w->probes && (char *)priv >= (char *)w->probes &&
            (char *)priv < (char *)(w->probes + w->n_probes)) {
            worker__probe_done(w, priv, rc);
            continue;
        }
        worker__transfer_done(w, priv, rc);
    }
}

static void worker__run_probes(struct worker *w, uint64_t now)
{
    if (w->id != 0)
        return;
    /* a plain load first: this runs on every turn of worker 0's loop */
    if (atomic_load_explicit(&w->pool->probe_now, memory_order_relaxed) &&
        atomic_exchange(&w->pool->probe_now, false))
        w->next_probe_ns = 0;
    if (now < w->next_probe_ns)
        return;
    worker__probes_refresh(w);
    if (!w->probes || w->probe_interval_ms == 0) {
        w->next_probe_ns = now + 500 * NS_PER_MS; /* a reload may turn probing on */
        return;
    }
    w->next_probe_ns = now + (uint64_t)w->probe_interval_ms * NS_PER_MS;
    for (size_t i = 0; i < w->n_probes; i++) {
        struct probe *pr = &w->probes[i];
        if (pr->busy || !pr->easy)
            continue;
        if (curl_multi_add_handle(w->multi, pr->easy) == CURLM_OK)
            pr->busy = true;
    }
}

static void worker__expire_waiting(struct worker *w, uint64_t now)
{
    struct heap_node *top;
    while ((top = heap_top(&w->waits)) != NULL && top->key <= now) {
        struct job *job = (struct job *)(void *)((char *)top - offsetof(struct job, w_wait));
        enum lg_err err = now >= job->deadline_ns ? LGE_TIMEOUT : LGE_QUEUE_TIMEOUT;
        worker__end(w, job, err, NULL);
    }
}

/* request_s ran out for a transfer that is still bounded by it: 504, or an SSE error event
 * when the stream's headers were relayed already. */
static void worker__expire_deadlines(struct worker *w, uint64_t now)
{
    struct heap_node *top;
    while ((top = heap_top(&w->deadlines)) != NULL && top->key <= now) {
        struct job *job = caa_container_of(top, struct job, w_deadline);
        atomic_fetch_add(&w->pool->upstream_errors, 1);
        worker__end(w, job, LGE_TIMEOUT, NULL); /* teardown takes it out of the heap */
    }
}

/* An event on a watched client socket. Returns true when the client is gone (the job must
 * end), false when it is not, or the watch ended earlier in this batch.
 *
 * EPOLLHUP or EPOLLERR: gone (its kernel reset the connection). EPOLLRDHUP alone is the
 * client's FIN, which is either a client that left or one that half-closed after its request
 * (shutdown(SHUT_WR), legal HTTP, still reading). Before any response byte, an HTTP/1.1
 * client is asked: an interim "100 Continue" (RFC 9110 15.2: a client must accept a 1xx it
 * did not expect) is written to it; a client that left answers that with a reset (EPOLLHUP),
 * a half-closed one reads it and waits on. Once a response is under way, a client that left
 * resets the next bytes written. Either way the watch then waits for EPOLLHUP/EPOLLERR only.
 * An HTTP/1.0 client cannot be asked: its FIN is taken as gone. */
static bool worker__client_event(struct job *job, uint32_t events)
{
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    bool gone = false;
    pthread_mutex_lock(&job->lock);
    if (job->watch_epfd < 0) {
        pthread_mutex_unlock(&job->lock);
        return false;
    }
    if ((events & (EPOLLHUP | EPOLLERR)) || (!job->http11 && !job->responded))
        gone = true;
    else if (!job->watch_hup_only) {
        if (!job->responded && !job->probed) {
            job->probed = true;
            ssize_t n = send(job->client_fd, probe, sizeof(probe) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            gone = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
        }
        job->watch_hup_only = true;
        struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)(uintptr_t)job};
        epoll_ctl(job->watch_epfd, EPOLL_CTL_MOD, job->client_fd, &ev);
    }
    if (gone)
        job->client_gone = true;
    pthread_mutex_unlock(&job->lock);
    return gone;
}

/* Starts watching the clients of transfers that have waited WORKER_WATCH_DELAY_NS for their
 * engine (those answered by then are just dropped from the list). */
static void worker__watch_young(struct worker *w, uint64_t now)
{
    struct job *job;
    while ((job = w->young_head) != NULL && (now - job->w_started_ns >= WORKER_WATCH_DELAY_NS ||
                                             w->aborting || atomic_load(&w->quit))) {
        w->young_head = job->w_young_next;
        if (!w->young_head)
            w->young_tail = NULL;
        job->w_young_next = NULL;
        if (job->wstate == JW_RUNNING)
            worker__watch(w, job); /* only if still suspended waiting for us */
        job_unref(job);
    }
}

/* Whether the client of a response under way has taken none of the bytes waiting for it for
 * client_send_timeout_s (nginx's send_timeout: the time between two successive takes while
 * there is something to take). Then it is cut, so that a client that stopped reading does not
 * hold its engine permit (its transfer paused on a full buffer) for as long as it likes.
 * Sampled once a scan: a take is seen as a change of job->taken, which the content reader
 * counts (no clock read per chunk). Caller holds job->lock. */
static bool worker__send_stalled_locked(struct job *job, uint64_t now)
{
    if (!job->responded || job->client_gone || buf_len(&job->out) == 0 ||
        job->taken != job->w_taken_seen) {
        job->w_taken_seen = job->taken;
        job->w_send_since_ns = now;
        return false;
    }
    return now - job->w_send_since_ns >= (uint64_t)job->snap->cfg->client_send_timeout_s * NS_PER_S;
}

/* Cuts a client that stopped taking its response (worker__send_stalled_locked): the connection
 * is shut down (libmicrohttpd then closes it), the transfer torn down and the permit freed. */
static void worker__cut_client(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    if (!job->client_gone && job->client_fd >= 0)
        shutdown(job->client_fd, SHUT_RDWR); /* open: the completion callback has not run */
    pthread_mutex_unlock(&job->lock);
    atomic_fetch_add(&w->pool->send_timeouts, 1);
    atomic_fetch_add(&w->pool->client_aborts, 1);
    log_info("request %s: the client took no response byte for client_send_timeout_s (%u s): "
             "cut",
             job->request_id, job->snap->cfg->client_send_timeout_s);
    worker__end(w, job, LGE_CLIENT_CLOSED, NULL);
}

/* Once a second over the running transfers: start watching the clients of streams waiting
 * for their next token (a client that leaves an idle stream is noticed without a syscall per
 * token), cut clients that stopped reading (client_send_timeout_s), and end the streams whose
 * engine went silent. A stream that left the deadline heap (its first byte came) is bounded
 * by request_s between two bytes: one that keeps flowing is never cut, one that stopped ends
 * with an SSE timeout event. A transfer paused for a slow client is not silent. */
static void worker__watch_idle(struct worker *w, uint64_t now)
{
    if (now < w->next_watch_ns)
        return;
    w->next_watch_ns = now + WORKER_WATCH_SCAN_NS;
    struct job *next;
    for (struct job *job = w->running.head; job; job = next) {
        next = job->w_next;
        uint64_t idle_ns = (uint64_t)job->snap->cfg->request_s * NS_PER_S;
        pthread_mutex_lock(&job->lock);
        if (job->headers_ready)
            job__watch_locked(job, w->epfd); /* only if suspended and not watched yet */
        bool stalled = !heap_node_linked(&job->w_deadline) && !job->up_paused &&
                       now - job->w_last_byte_ns >= idle_ns;
        bool send_stalled = worker__send_stalled_locked(job, now);
        pthread_mutex_unlock(&job->lock);
        if (send_stalled) {
            worker__cut_client(w, job);
        } else if (stalled) {
            atomic_fetch_add(&w->pool->upstream_errors, 1);
            worker__end(w, job, LGE_TIMEOUT, "the inference engine stopped sending the stream");
        }
    }
}

static int worker__timeout_ms(struct worker *w, uint64_t now)
{
    uint64_t d = w->curl_deadline_ns;
    if (w->running.head && w->next_watch_ns < d)
        d = w->next_watch_ns;
    const struct heap_node *wt = heap_top(&w->waits);
    if (wt && wt->key < d)
        d = wt->key;
    const struct heap_node *top = heap_top(&w->deadlines);
    if (top && top->key < d)
        d = top->key;
    if (w->young_head && w->young_head->w_started_ns + WORKER_WATCH_DELAY_NS < d)
        d = w->young_head->w_started_ns + WORKER_WATCH_DELAY_NS;
    if (w->id == 0 && w->next_probe_ns < d)
        d = w->next_probe_ns;
    if (d == UINT64_MAX)
        return 1000;
    if (d <= now)
        return 0;
    uint64_t ms = (d - now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > 1000 ? 1000 : (int)ms;
}

static void worker__abort_all(struct worker *w)
{
    w->aborting = true;
    while (w->waiting.head)
        worker__end(w, w->waiting.head, LGE_DRAINING, NULL);
    while (w->running.head)
        worker__end(w, w->running.head, LGE_DRAINING, "the gateway is shutting down");
}

static void *worker__main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    int running;
    while (!atomic_load(&w->quit)) {
        uint64_t now = clock_now_ns();
        int n = epoll_wait(w->epfd, evs, 256, worker__timeout_ms(w, now));
        w->loop_now_ns = clock_now_ns();
        bool wake = false;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_WAKE) {
                wake = true;
            } else if ((tag & 3u) == TAG_CURL) {
                int flags = 0;
                if (evs[i].events & EPOLLIN)
                    flags |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT)
                    flags |= CURL_CSELECT_OUT;
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    flags |= CURL_CSELECT_ERR;
                curl_socket_t fd = (curl_socket_t)(tag >> 2);
                if (!worker__parked_event(w, fd))
                    curl_multi_socket_action(w->multi, fd, flags, &running);
            } else {
                struct job *job = (struct job *)(uintptr_t)tag;
                if (!worker__client_event(job, evs[i].events))
                    continue; /* resumed earlier in this batch, or only half-closed */
                atomic_fetch_add(&w->pool->client_aborts, 1);
                log_debug("%s: client closed the connection while waiting", job->request_id);
                worker__end(w, job, LGE_CLIENT_CLOSED, NULL);
            }
        }
        if (wake) {
            worker__drain_queue(w);
            if (atomic_load(&w->pool->aborting) && !w->aborting)
                worker__abort_all(w);
        }
        now = clock_now_ns();
        if (w->curl_deadline_ns <= now) {
            w->curl_deadline_ns = UINT64_MAX;
            curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        worker__check_finished(w);
        worker__expire_waiting(w, now);
        worker__expire_deadlines(w, now);
        worker__watch_young(w, now);
        worker__run_probes(w, now);
        worker__watch_idle(w, now);
        worker__flush_resumes(w);
    }
    if (atomic_load(&w->pool->aborting)) {
        /* told to quit in a shutdown: whatever it still holds is ended and its connection
         * resumed before the thread is gone (the daemon is stopped after the join) */
        worker__drain_queue(w);
        if (!w->aborting)
            worker__abort_all(w);
    }
    worker__watch_young(w, clock_now_ns()); /* quit: drops the list's references */
    worker__flush_resumes(w);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* the pool                                                                                   */

static int worker__init(struct pool *p, struct worker *w, unsigned id)
{
    w->pool = p;
    w->id = id;
    w->efd = w->epfd = -1;
    w->curl_deadline_ns = UINT64_MAX;
    heap_init(&w->deadlines);
    heap_init(&w->waits);
    atomic_init(&w->quit, false);
    mpsc_init(&w->q);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->multi = curl_multi_init();
    w->spare = calloc(WORKER_SPARE_EASY, sizeof(*w->spare));
    if (w->efd < 0 || w->epfd < 0 || !w->multi || !w->spare)
        return -1;
    /* Edge-triggered and never read: every write to an eventfd wakes its epoll waiters, so each
     * wake-up is reported once without a read() to reset the counter (which cannot overflow:
     * one increment per wake-up, 2^64 - 2 of them). */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = TAG_WAKE};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) != 0)
        return -1;
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, worker__on_socket);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, worker__on_timer);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, p->max_conns);
    w->next_probe_ns = 0; /* worker 0 probes at once */
    return 0;
}

static void worker__release(struct worker *w)
{
    /* Messages left after the threads stopped: cancels from connections closed while the
     * daemon stopped. Every job is finished already; drop the references. */
    struct cds_wfcq_node *node;
    while ((node = mpsc_pop(&w->q)) != NULL) {
        struct job_msg *m = caa_container_of(node, struct job_msg, node);
        if (m->type == JM_SUBMIT && m->job->wstate == JW_NEW) {
            atomic_fetch_sub(&w->pool->active, 1);
            job_unref(m->job); /* the worker's reference that never started */
        }
        job_unref(m->job);
    }
    worker__probes_free(w);
    heap_release(&w->deadlines);
    heap_release(&w->waits);
    free(w->fdst);
    w->fdst = NULL;
    w->n_fdst = 0;
    while (w->n_spare)
        curl_easy_cleanup(w->spare[--w->n_spare]);
    free(w->spare);
    w->spare = NULL;
    if (w->multi)
        curl_multi_cleanup(w->multi);
    w->multi = NULL;
    if (w->efd >= 0)
        close(w->efd);
    if (w->epfd >= 0)
        close(w->epfd);
    w->efd = w->epfd = -1;
}

/* a + b in a new string, or NULL. */
static char *str_concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s)
        snprintf(s, la + lb + 1, "%s%s", a, b);
    return s;
}

struct pool *pool_new(const struct config *cfg)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snap_slot_init(&p->slot);
    p->n = cfg->workers ? cfg->workers : 1;
    p->router = router_new(pool__grant, p);
    p->backends = backends_new();
    p->limits = limits_new();
    p->w = calloc(p->n, sizeof(*p->w));
    if (!p->router || !p->backends || !p->limits || !p->w)
        goto fail;
    for (size_t b = 0; b < cfg->n_backends; b++)
        p->max_conns += (long)cfg->backends[b].max_concurrency;
    /* Each worker keeps an idle upstream connection for every transfer it may have in flight
     * (plus the health probes'). curl's default cache size, 4 x the transfers added at the
     * moment, closes idle connections whenever a worker's load dips, and the next burst connects
     * again: 0.04-0.1 new upstream connections per request at c=50. Sized at start. */
    if (p->max_conns > (long)cfg->max_inflight)
        p->max_conns = (long)cfg->max_inflight;
    p->max_conns += (long)cfg->n_backends;
    for (unsigned i = 0; i < p->n; i++)
        if (worker__init(p, &p->w[i], i) != 0)
            goto fail;
    return p;
fail:
    pool_free(p);
    return NULL;
}

static void upstream_free(struct upstream *up)
{
    if (!up)
        return;
    for (unsigned i = 0; i < JOB__ENDPOINTS; i++) {
        free(up->url[i]);
        curl_url_cleanup(up->curlu[i]);
    }
    free(up->auth);
    free(up);
}

static struct upstream *upstream_new(const struct cfg_backend *be)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    for (unsigned i = 0; i < JOB__ENDPOINTS; i++) {
        if (!(up->url[i] = str_concat(be->url, job_paths[i])) || !(up->curlu[i] = curl_url()) ||
            curl_url_set(up->curlu[i], CURLUPART_URL, up->url[i], 0) != CURLUE_OK) {
            log_error("backend %s: cannot parse url %s", be->name, be->url);
            upstream_free(up);
            return NULL;
        }
    }
    if (be->api_key && !(up->auth = str_concat("Authorization: Bearer ", be->api_key))) {
        upstream_free(up);
        return NULL;
    }
    return up;
}

/* The inference layer's part of a snapshot's end (snap_put). */
static void pool__unbind(struct snap *s, void *arg)
{
    struct pool *p = arg;
    struct config *cfg = s->cfg;
    router_unbind(p->router, cfg);
    for (size_t b = 0; b < cfg->n_backends; b++) {
        upstream_free(cfg->backends[b].up);
        cfg->backends[b].up = NULL;
    }
    limits_unbind(p->limits, cfg);
    backends_unbind(p->backends, cfg);
}

struct snap *pool_prepare(struct pool *p, struct config *cfg)
{
    struct snap *s = snap_new(cfg);
    if (!s) {
        config_free(cfg);
        return NULL;
    }
    s->unbind = pool__unbind;
    s->unbind_arg = p;
    int rc = backends_bind(p->backends, cfg);
    rc = rc || limits_bind(p->limits, cfg, clock_now_ns());
    for (size_t b = 0; b < cfg->n_backends && rc == 0; b++)
        if (!(cfg->backends[b].up = upstream_new(&cfg->backends[b])))
            rc = -1;
    rc = rc || router_bind(p->router, cfg);
    if (rc != 0) {
        snap_put(s); /* unbinds what was bound */
        return NULL;
    }
    return s;
}

uint64_t pool_publish(struct pool *p, struct snap *s)
{
    router_apply(p->router, s->cfg);
    snap_publish(&p->slot, s);
    uint64_t gen = s->gen;
    /* worker 0 rebuilds its probes at once */
    atomic_store(&p->probe_now, true);
    worker__wake(&p->w[0]);
    return gen;
}

struct snap *pool_snap(struct pool *p)
{
    return snap_current(&p->slot);
}

struct limits *pool_limits(struct pool *p)
{
    return p->limits;
}

int pool_start(struct pool *p)
{
    for (unsigned i = 0; i < p->n; i++) {
        if (pthread_create(&p->w[i].thread, NULL, worker__main, &p->w[i]) != 0) {
            pool_stop(p);
            return -1;
        }
        p->w[i].started = true;
    }
    return 0;
}

int pool_submit(struct pool *p, struct job *job)
{
    atomic_fetch_add(&p->active, 1);
    if (atomic_load(&p->draining)) {
        atomic_fetch_sub(&p->active, 1);
        return -1;
    }
    unsigned i = atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed) % p->n;
    job->worker = i;
    job_ref(job); /* the worker's reference, held until worker__done */
    worker__post(&p->w[i], &job->m_submit);
    return 0;
}

void pool_cancel(struct pool *p, struct job *job)
{
    worker__post(&p->w[job->worker], &job->m_cancel);
}

void pool__watch_locked(struct pool *p, struct job *job)
{
    job__watch_locked(job, p->w[job->worker].epfd);
}

void pool_unpause(struct pool *p, struct job *job)
{
    worker__post(&p->w[job->worker], &job->m_unpause);
}

void pool_drain(struct pool *p)
{
    atomic_store(&p->draining, true);
}

void pool_abort_all(struct pool *p)
{
    atomic_store(&p->draining, true);
    atomic_store(&p->aborting, true);
    for (unsigned i = 0; i < p->n; i++)
        worker__wake(&p->w[i]);
}

int pool_join(struct pool *p, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until); /* pthread_timedjoin_np's clock */
    until.tv_sec += (time_t)(ms / 1000u);
    until.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    for (unsigned i = 0; i < p->n; i++) {
        atomic_store(&p->w[i].quit, true);
        worker__wake(&p->w[i]);
    }
    int rc = 0;
    for (unsigned i = 0; i < p->n; i++) {
        if (!p->w[i].started)
            continue;
        if (pthread_timedjoin_np(p->w[i].thread, NULL, &until) != 0) {
            rc = -1;
            continue;
        }
        p->w[i].started = false;
    }
    return rc;
}

void pool_stop(struct pool *p)
{
    for (unsigned i = 0; i < p->n; i++) {
        if (!p->w[i].started)
            continue;
        atomic_store(&p->w[i].quit, true);
        worker__wake(&p->w[i]);
        pthread_join(p->w[i].thread, NULL);
        p->w[i].started = false;
    }
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pool_stop(p);
    for (unsigned i = 0; p->w && i < p->n; i++)
        worker__release(&p->w[i]);
    free(p->w);
    snap_slot_release(&p->slot);
    router_free(p->router);
    limits_free(p->limits);
    backends_free(p->backends);
    free(p);
}

struct router *pool_router(struct pool *p)
{
    return p->router;
}

void pool_get_stats(struct pool *p, struct pool_stats *out)
{
    out->active = atomic_load(&p->active);
    out->upstream_errors = atomic_load(&p->upstream_errors);
    out->client_aborts = atomic_load(&p->client_aborts);
    out->send_timeouts = atomic_load(&p->send_timeouts);
    out->started = atomic_load(&p->started);
    out->ttft_ns_sum = atomic_load(&p->ttft_ns_sum);
    out->ttft_count = atomic_load(&p->ttft_count);
}
