/* access.c — libmicrohttpd's callbacks for a request: the connection's start and end (into and
 * out of the guard's table), the access handler's state machine (headers -> body -> submit ->
 * wait -> respond), the request body's budget, and the completion callback with the access
 * log. libmicrohttpd threads. */
#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/esc.h"
#include "core/log.h"
#include "http/framing.h"
#include "http/guard.h"
#include "http/peers.h"
#include "http/request.h"
#include "http/server_int.h"
#include "inference/job.h"
#include "inference/limits.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

enum h_state { H_BODY = 0, H_WAIT, H_DONE };

/* Request framing and header hygiene (http/framing.c), checked on every request's first
 * access-handler call. libmicrohttpd 0.9.75 already cuts a header line at a NUL (its sizes are
 * strlen's), so the NUL check holds for versions that report the bytes received. */
static enum MHD_Result http__hdr_scan(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    return framing_header(cls, key, key_size, value, value_size) ? MHD_YES : MHD_NO;
}

/* Returns why the request must be refused (400, then close), or NULL. */
static const char *http__framing(struct MHD_Connection *conn, const char *version)
{
    struct framing f = {0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, http__hdr_scan, &f);
    return framing_verdict(&f, framing_http11(version));
}

/* Marks a local request without a body, answered at its next call (con_cls). */
static int http_deferred;

/* The guard's record of the connection (its socket context). */
static struct guard_conn *http__gconn(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* libmicrohttpd's connection start and end: into and out of the guard's table. A connection
 * the guard cannot record (out of memory) is closed at once. */
void http__notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return;
        uint64_t at = 0, seq = 0;
        size_t fd = (size_t)ci->connect_fd;
        if (fd < s->n_stamps) {
            at = atomic_load_explicit(&s->stamps[fd].ms, memory_order_relaxed);
            seq = atomic_load_explicit(&s->stamps[fd].seq, memory_order_relaxed);
        }
        *socket_context = guard_open(s->guard, ci->connect_fd, at, seq);
        if (!*socket_context)
            shutdown(ci->connect_fd, SHUT_RDWR);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (s->peers) {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
            if (ci)
                peers_leave(s->peers, ci->client_addr);
        }
        guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* Called when a request line has arrived: the request's headers are on their way (its first
 * byte came a little earlier; the keep-alive wait is over). Returns the initial con_cls. */
void *http__uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    guard_request_line(http__gconn(conn));
    return NULL;
}

/* Takes n bytes of the gateway-wide body budget for `job`. Returns 0, or -1 when the bodies
 * in flight would pass max_body_memory (nothing taken). */
static int http__mem_take(struct server *s, struct job *job, size_t n)
{
    size_t before = atomic_fetch_add_explicit(&s->body_mem, n, memory_order_relaxed);
    if (before + n > job->snap->cfg->max_body_memory) {
        atomic_fetch_sub_explicit(&s->body_mem, n, memory_order_relaxed);
        return -1;
    }
    job->body_mem_held += n;
    return 0;
}

size_t http_body_step(size_t held, size_t need, size_t arrived, uint64_t declared, size_t ceiling)
{
    if (need <= held)
        return held;
    size_t next = held ? held * 2 : HTTP_BODY_FIRST;
    if (arrived > next)
        next = arrived;
    size_t top = declared && declared < ceiling ? (size_t)declared : ceiling;
    if (next > top)
        next = top;
    return next < need ? need : next;
}

/* Bytes the client sent that wait in the socket's receive queue (0 if it cannot tell). */
static size_t http__queued(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int q = 0;
    return ci && ioctl(ci->connect_fd, FIONREAD, &q) == 0 && q > 0 ? (size_t)q : 0;
}

/* Refuses the request in the middle of its body: libmicrohttpd cannot answer any more, so the
 * guard writes the reply and cuts the connection (its close lingers). Returns MHD_NO. */
static enum MHD_Result http__body_refused(struct server *s, struct MHD_Connection *conn,
                                          struct job *job, enum lg_err e)
{
    (void)s;
    job->h_state = H_DONE;
    job->h_status = err_info(e)->status;
    guard_refuse(http__gconn(conn), e,
                 e == LGE_TOO_LARGE ? "the request body is larger than max_body_bytes"
                                    : "the request bodies in flight use all of max_body_memory",
                 e == LGE_OVERLOADED ? 1 : 0);
    return MHD_NO;
}

/* Appends body bytes as they arrive. Memory is taken from the budget as the bytes come (what
 * arrived, or a doubling step, up to the declared length: http_body_step), so a connection
 * that declares a large body and sends it slowly holds about what it sent. A body that passes
 * max_body_bytes (chunked: its length was not declared) or the budget is refused at once. */
static enum MHD_Result http__take_body(struct server *s, struct MHD_Connection *conn,
                                       struct job *job, const char *p, size_t n)
{
    if (!buf_fits(&job->body, n))
        return http__body_refused(s, conn, job, LGE_TOO_LARGE);
    size_t len = buf_len(&job->body), held = job->body_mem_held;
    if (len + n > held) {
        /* what arrived: this piece and what waits in the kernel (an honest client's whole
         * body, often), so that a body sent at once is reserved at once */
        size_t arrived = len + n;
        if (job->h_declared > HTTP_BODY_FIRST || !job->h_declared) /* else: the first step */
            arrived += http__queued(conn);
        size_t want = http_body_step(held, len + n, arrived, job->h_declared,
                                     (size_t)job->snap->cfg->max_body_bytes);
        /* over the budget, or out of memory */
        if (http__mem_take(s, job, want - held) != 0 || buf_reserve(&job->body, want - len) != 0)
            return http__body_refused(s, conn, job, LGE_OVERLOADED);
    }
    if (buf_append(&job->body, p, n) != 0)
        return http__body_refused(s, conn, job, LGE_OVERLOADED);
    return guard_touch(http__gconn(conn)) ? MHD_YES : MHD_NO;
}

/* The body budget not taken now (a reload may have lowered it under what is held). */
static size_t http__mem_free(struct server *s, const struct config *cfg)
{
    size_t held = atomic_load_explicit(&s->body_mem, memory_order_relaxed);
    return held < cfg->max_body_memory ? (size_t)cfg->max_body_memory - held : 0;
}

/* Whether the request has a body: a Content-Length other than 0 (or one that is not a
 * length), or a Transfer-Encoding. */
static bool http__has_body(struct MHD_Connection *conn, uint64_t clen, bool bad_clen)
{
    return clen > 0 || bad_clen ||
           MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

/* An answer from a request's headers: if the request has a body, libmicrohttpd closes the
 * connection after the answer, and that close lingers. Returns r. */
static enum MHD_Result http__early(struct MHD_Connection *conn, uint64_t clen, bool bad_clen,
                                   enum MHD_Result r)
{
    if (http__has_body(conn, clen, bad_clen))
        guard_linger(http__gconn(conn));
    return r;
}

/* 429 for key k over limit v: the message names the limit. */
static enum MHD_Result http__rate_limited(struct server *s, struct MHD_Connection *conn,
                                          const struct cfg_key *k, enum lim_verdict v,
                                          const char *rid, uint64_t retry_ms)
{
    char msg[200];
    unsigned value = !k                     ? 0
                     : v == LIM_CONCURRENCY ? k->max_concurrency
                     : v == LIM_RPM         ? k->rpm
                                            : k->tpm;
    const char *unit = v == LIM_CONCURRENCY ? "requests at once"
                       : v == LIM_RPM       ? "requests per minute"
                                            : "tokens per minute";
    snprintf(msg, sizeof(msg), "rate limit exceeded: %s (this API key may use %u %s)",
             limits_name(v), value, unit);
    return http__error(s, conn, LGE_RATE_LIMITED, msg, NULL, rid, retry_ms);
}

/* Wakes a parked connection (job->unpark, under job->lock, the connection open): the held
 * byte may be read, and libmicrohttpd's epoll looks at the socket again (EPOLL_CTL_MOD with
 * the events and tag libmicrohttpd registered it with reports it readable: the byte is
 * there). Not in that set just now (ENOENT): libmicrohttpd adds it back itself, and the add
 * reports it readable the same way. */
static void http__unpark(struct job *job)
{
    guard_unhold(job->h_gconn);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET,
                             .data.ptr = job->conn};
    (void)epoll_ctl(job->park_epfd, EPOLL_CTL_MOD, job->client_fd, &ev);
}

/* A request whose last body byte was held but that is not parked after all (it is refused,
 * or cannot wait parked): the byte is let go at once, and the request goes on as any other,
 * at its final call. */
static enum MHD_Result http__unpark_now(struct job *job)
{
    job->h_state = H_BODY; /* the final call submits (or refuses) it */
    free(job->model);      /* validated again then */
    job->model = NULL;
    job->unpark(job);
    return MHD_YES;
}

/* Final call of a POST (or, `park`, the call that brought all of its body but the held last
 * byte, already taken): validate, route, suspend (or park), hand over. Parking, what it would
 * refuse is refused at the final call instead (nothing here has an effect before the limits'
 * take, the last check). */
static enum MHD_Result http__submit(struct server *s, struct MHD_Connection *conn, struct job *job,
                                    bool park)
{
    char why[256];
    const char *param;
    struct req_info info;
    enum lg_err e = request_validate(job->endpoint, buf_data(&job->body), buf_len(&job->body),
                                     &info, why, sizeof(why), &param);
    if (e != LGE_NONE && park)
        return http__unpark_now(job);
    if (e != LGE_NONE) {
        job->h_state = H_DONE;
        job->h_status = err_info(e)->status;
        (void)param; /* the contract's envelope has "param": null; the message names the field */
        return http__error(s, conn, e, why, NULL, job->request_id, 0);
    }
    job->model = info.model;
    job->stream = info.stream;
    const struct config *cfg = job->snap->cfg;
    job->n_candidates =
        (unsigned)config_backends_for(cfg, job->model, job->candidates, JOB_MAX_CANDIDATES);
    if ((job->n_candidates == 0 || !config_key_allows(job->key, job->model)) && park)
        return http__unpark_now(job);
    if (job->n_candidates == 0 || !config_key_allows(job->key, job->model)) {
        /* a model the key may not use is one that does not exist, for that key */
        char msg[400];
        size_t ml = strlen(job->model);
        int cut = (int)esc_utf8_prefix(job->model, ml, 256);
        snprintf(msg, sizeof(msg), "the model '%.*s%s' does not exist", cut, job->model,
                 (size_t)cut < ml ? "..." : "");
        job->h_state = H_DONE;
        job->h_status = 404;
        return http__error(s, conn, LGE_MODEL_NOT_FOUND, msg, NULL, job->request_id, 0);
    }
    /* the key's slot and its buckets, atomically with their check */
    uint64_t retry_ms;
    job->cost = limits_estimate(info.prompt_bytes, info.max_tokens);
    job->cost_open = info.max_tokens < 0 && job->endpoint != JOB_EMBEDDINGS; /* rqueue.h */
    job->lim_at_ns = job->key ? clock_now_ns() : 0;
    enum lim_verdict lv = limits_take(s->limits, job->key, job->cost, job->lim_at_ns,
                                      guard_conn_id(http__gconn(conn)), &retry_ms, &job->lim);
    if (lv != LIM_OK && park)
        return http__unpark_now(job);
    if (lv != LIM_OK) {
        job->h_state = H_DONE;
        job->h_status = 429;
        return http__rate_limited(s, conn, job->key, lv, job->request_id, retry_ms);
    }
    job->lim_taken = true;   /* given back by http__completed, whatever the end */
    job->limits = s->limits; /* its tpm charge is settled by job_settle */
    job->usage_tokens = -1;
    if (job->key && job->key->tpm) { /* tpm is reconciled with the engine's usage */
        job->w_tail = malloc(JOB_TAIL);
        job->w_track_usage = job->w_tail != NULL;
        job->prompt_est = limits_estimate(info.prompt_bytes, 0);
        job->ask_off = info.ask_off; /* a stream's usage: asked for, if the backend takes it */
        job->ask_del = info.ask_del;
        job->ask_ins = job->w_track_usage ? info.ask_ins : NULL;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    job->client_fd = ci ? ci->connect_fd : -1;
    job->client_id = guard_conn_id(http__gconn(conn));
    job->conn = conn;
    job->pool = s->pool;
    job->deadline_ns = job->t_start_ns + (uint64_t)cfg->request_s * NS_PER_S;
    job->h_state = H_WAIT;

    /* Suspend (or park) before the hand-over, so the worker can only ever wake a connection
     * that waits for it. */
    pthread_mutex_lock(&job->lock);
    if (park) {
        job->parked = true;
    } else {
        job->suspended = true;
        MHD_suspend_connection(conn);
    }
    pthread_mutex_unlock(&job->lock);
    if (pool_submit(s->pool, job) != 0) {
        pthread_mutex_lock(&job->lock);
        job->fail = LGE_DRAINING;
        job->retry_ms = 1000;
        job__resume_locked(job);
        job__unlock(job);
        return MHD_YES;
    }
    job->h_submitted = true;
    return MHD_YES;
}

/* All of a body but its last byte has come, and the guard holds that byte in the kernel
 * (guard_held): take the byte with MSG_PEEK and hand the request over parked, so that it
 * waits for its permit without being suspended (http/guard.h). A request that could outwait
 * libmicrohttpd's own timeout in its read state (a reload to a longer request_s) does not
 * park: its byte is let go at once. */
static enum MHD_Result http__park(struct server *s, struct MHD_Connection *conn, struct job *job)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *di = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
    const union MHD_DaemonInfo *ei =
        di ? MHD_get_daemon_info(di->daemon, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    job->client_fd = ci ? ci->connect_fd : -1;
    job->park_epfd = ei ? ei->epoll_fd : -1;
    job->conn = conn;
    job->h_gconn = http__gconn(conn);
    job->unpark = http__unpark;
    char last;
    if (job->client_fd < 0 || job->park_epfd < 0 || job->snap->cfg->request_s + 5 > s->backstop_s ||
        recv(job->client_fd, &last, 1, MSG_PEEK | MSG_DONTWAIT) != 1) {
        guard_unhold(job->h_gconn); /* never left held, whatever could not be asked */
        if (job->client_fd >= 0 && job->park_epfd >= 0)
            job->unpark(job);
        return MHD_YES;
    }
    enum MHD_Result r = http__take_body(s, conn, job, &last, 1);
    if (r != MHD_YES)
        return r;    /* refused (the connection cut) */
    job->h_skip = 1; /* libmicrohttpd hands it over once more when it reads it */
    if (!guard_enter(job->h_gconn, G_BUSY))
        return MHD_NO;
    return http__submit(s, conn, job, true);
}

enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    (void)upload_data;

    if (*con_cls == &http__admin_mark)
        return http__admin_resumed(s, conn, con_cls); /* its reload is done */
    if (*con_cls == &http_deferred) {
        /* A local request without a body, answered at its second call so that the connection
         * stays reusable (libmicrohttpd 0.9.75 closes after any answer from the first). */
        *con_cls = NULL;
        *upload_data_size = 0; /* none: no length was declared */
        if (!guard_enter(http__gconn(conn), G_BUSY))
            return MHD_NO;
        return http__answer_local(s, conn, url, method, con_cls);
    }
    if (job) {
        if (*upload_data_size && job->h_skip) { /* a byte taken already (http__park) */
            size_t k = *upload_data_size < job->h_skip ? *upload_data_size : job->h_skip;
            job->h_skip -= (unsigned)k;
            *upload_data_size -= k;
            upload_data += k;
            if (!*upload_data_size)
                return MHD_YES; /* a call with body bytes, not the final one */
        }
        if (job->h_state == H_BODY) {
            if (*upload_data_size) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                enum MHD_Result r = http__take_body(s, conn, job, upload_data, n);
                if (r == MHD_YES && job->h_declared >= 2 &&
                    buf_len(&job->body) + 1 == job->h_declared && guard_held(http__gconn(conn)))
                    return http__park(s, conn, job);
                return r;
            }
            if (!guard_enter(http__gconn(conn), G_BUSY))
                return MHD_NO; /* cut by the guard: libmicrohttpd closes, completed frees */
            return http__submit(s, conn, job, false);
        }
        if (job->h_state == H_WAIT && *upload_data_size) {
            *upload_data_size = 0; /* parked, and woken before its final call: nothing more */
            return MHD_YES;
        }
        if (job->h_state == H_WAIT) {
            pthread_mutex_lock(&job->lock);
            enum MHD_Result r;
            struct MHD_Response *queue = NULL;
            unsigned status = job->status;
            if (job->fail != LGE_NONE || job->headers_ready) {
                job->h_state = H_DONE;
                r = http__respond_locked(s, conn, job, &queue);
            } else { /* not ours to be woken for: wait on */
                job->suspended = true;
                MHD_suspend_connection(conn);
                r = MHD_YES;
            }
            pthread_mutex_unlock(&job->lock);
            if (queue) { /* the lock order: no response mutex under the job lock */
                r = MHD_queue_response(conn, status, queue);
                MHD_destroy_response(queue);
                http__count(s, status);
            }
            return r;
        }
        return MHD_YES;
    }

    /* first call: headers only. From here the body's deadline runs (client_body_timeout_s);
     * an answer given now ends the request (the guard's G_BUSY until it is sent). An answer
     * given now to a request with a body makes libmicrohttpd close the connection after it
     * (the unread body cannot be skipped safely): that close lingers (guard_linger). */
    struct guard_conn *gc = http__gconn(conn);
    if (!guard_enter(gc, G_BODY))
        return MHD_NO;
    char idbuf[33];
    const char *rid = http__request_id(conn, idbuf);
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t clen = 0;
    bool bad_clen = cl && framing_parse_clen(cl, strlen(cl), &clen) != 0;
    const char *bad = http__framing(conn, version);
    if (bad) /* answered before any body byte, so libmicrohttpd closes the connection */
        return http__early(conn, clen, bad_clen,
                           http__error(s, conn, LGE_INVALID_REQUEST, bad, NULL, rid, 0));
    /* The configuration this request is served with, to its end (a reload does not change it
     * under the request). */
    struct snap *sn = pool_snap(s->pool);
    if (!sn)
        return http__early(conn, clen, bad_clen,
                           http__error(s, conn, LGE_DRAINING, NULL, NULL, rid, 1000));
    const struct config *cfg = sn->cfg;
    int ri = http__route(url);
    if (ri < 0 || http_routes[ri].endpoint < 0 || strcmp(method, http_routes[ri].method) != 0) {
        /* Not a proxied request. With a body: answered from its headers (its body never read;
         * the cap proxied bodies have), then closed. Without: at the next call. */
        bool over = bad_clen || clen > cfg->max_body_bytes;
        snap_put(sn);
        if (!http__has_body(conn, clen, bad_clen)) {
            *con_cls = &http_deferred;
            return MHD_YES;
        }
        if (over)
            return http__early(conn, clen, bad_clen,
                               http__error(s, conn, LGE_TOO_LARGE, NULL, NULL, rid, 0));
        if (!guard_enter(gc, G_BUSY))
            return MHD_NO;
        guard_linger(gc); /* it has a body */
        return http__answer_local(s, conn, url, method, con_cls);
    }
    enum MHD_Result early = MHD_YES;
    bool refused = true;
    /* What the headers decide is answered now, before any body byte is read. */
    const struct cfg_key *key = NULL;
    int prio = -1;
    uint64_t retry_ms;
    enum lim_verdict lv;
    if (!http__authorized(cfg, conn, &key))
        early = http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    else if ((prio = http__priority(conn, key)) < 0)
        early = http__error(s, conn, LGE_INVALID_REQUEST, "X-Priority must be high, normal or low",
                            NULL, rid, 0);
    else if ((lv = limits_check(s->limits, key, key ? clock_now_ns() : 0, guard_conn_id(gc),
                                &retry_ms)) != LIM_OK)
        early = http__rate_limited(s, conn, key, lv, rid, retry_ms);
    else if (bad_clen || clen > cfg->max_body_bytes)
        early = http__error(s, conn, LGE_TOO_LARGE, NULL, NULL, rid, 0);
    else if (clen > http__mem_free(s, cfg)) /* would not fit now (a look: nothing taken) */
        early = http__error(s, conn, LGE_OVERLOADED, NULL, NULL, rid, 1000);
    else if (!(job = job_new(cfg->max_body_bytes, cfg->stream_buffer_bytes)))
        early = http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    else
        refused = false;
    if (refused) {
        snap_put(sn);
        return http__early(conn, clen, bad_clen, early);
    }
    job->snap = sn; /* released with the job */
    job->body_mem = &s->body_mem;
    job->h_declared = clen; /* memory is taken as the body arrives (http__take_body) */
    snprintf(job->request_id, sizeof(job->request_id), "%s", rid);
    job->t_start_ns = clock_now_ns();
    job->endpoint = (enum job_endpoint)http_routes[ri].endpoint;
    job->key = key;
    job->key_name = key ? key->name : NULL;
    job->prio = (unsigned)prio;
    job->h_state = H_BODY;
    job->http11 = framing_http11(version); /* 1.1 to 1.9; before the job is shared */
    *con_cls = job;
    return MHD_YES;
}

void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                     enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    /* the response is out (or the request ended): keep-alive idle from now */
    guard_enter(http__gconn(conn), G_IDLE);
    if (*con_cls == &http__admin_mark) {
        http__admin_gone(s, conn); /* resumed, then closed before its answer */
        *con_cls = NULL;
        return;
    }
    if (!job || *con_cls == &http_deferred)
        return;
    *con_cls = NULL;
    if (job->lim_taken)
        limits_release(s->limits, job->key, job->lim_at_ns, job->key ? clock_now_ns() : 0);
    const struct config *cfg = job->snap->cfg;
    pthread_mutex_lock(&job->lock);
    job->client_gone = true;
    job->h_closed = true;       /* a parked connection is not woken from now on */
    if (job->watch_epfd >= 0) { /* parked, and closed by libmicrohttpd (the client reset it) */
        epoll_ctl(job->watch_epfd, EPOLL_CTL_DEL, job->client_fd, NULL);
        job->watch_epfd = -1;
    }
    bool finished = job->eof || job->fail != LGE_NONE;
    unsigned long long bytes = job->bytes_out, events = job->events;
    pthread_mutex_unlock(&job->lock);
    if (job->h_submitted && !finished)
        pool_cancel(s->pool, job);
    if (cfg->access_log) {
        uint64_t us = (clock_now_ns() - job->t_start_ns) / 1000;
        log_info("access id=%s model=%s stream=%d status=%u key=%s dur_us=%llu bytes=%llu "
                 "events=%llu end=%s",
                 job->request_id, job->model ? job->model : "-", job->stream, job->h_status,
                 job->key_name ? job->key_name : "-", (unsigned long long)us, bytes, events,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted");
    }
    job_unref(job);
}
