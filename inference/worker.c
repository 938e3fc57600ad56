/* worker.c — see worker.h. The event loop, the job's phases and messages, the pool API.
 * The rest of the worker: relay.c, transfer.c, watch.c, probe.c (internals in worker_int.h). */
#include "inference/worker.h"

#include "core/clock.h"
#include "core/log.h"
#include "inference/backend.h"
#include "inference/limits.h"
#include "inference/router.h"
#include "inference/worker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* waking a worker                                                                          */

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
/* ending a job                                                                             */

/* The worker lets go of the job: its reference is dropped. */
void worker__done(struct worker *w, struct job *job)
{
    job->wstate = JW_DONE;
    job_settle(job);
    atomic_fetch_sub(&w->pool->active, 1);
    job_unref(job);
}

/* Ends a job in whatever phase it is, answering with `err`. */
void worker__end(struct worker *w, struct job *job, enum lg_err err, const char *msg)
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

/* ---------------------------------------------------------------------------------------- */
/* messages                                                                                 */

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
/* the event loop                                                                           */

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
/* the pool                                                                                 */

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
