/* respond.c — the gateway's answers through libmicrohttpd: complete documents, error
 * envelopes, and the streaming adapter that hands an engine's bytes to the client as the worker
 * buffers them (see server_int.h). libmicrohttpd threads. */
#include "core/errors.h"
#include "core/log.h"
#include "http/reply.h"
#include "http/server_int.h"
#include "inference/job.h"
#include "inference/worker.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void http__count(struct server *s, unsigned status)
{
    if (status < 600)
        atomic_fetch_add_explicit(&s->status_count[status], 1, memory_order_relaxed);
}

/* While draining, every reply ends its connection: a keep-alive client (a balancer's pooled
 * connection) reconnects, and finds another instance. libmicrohttpd 0.9.75 closes the
 * connection after a response that carries this header. */
static bool http__drain_close(struct server *s, struct MHD_Response *r)
{
    return http__phase(s) != SRV_DRAINING || reply_hdr(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* Queues a complete in-memory response (`body` copied); `close`: it ends the connection. */
static enum MHD_Result http__send_close(struct server *s, struct MHD_Connection *conn,
                                        unsigned status, const char *ctype, const char *body,
                                        size_t len, const char *request_id, uint64_t retry_ms,
                                        bool close)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (!reply_hdr(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) ||
        !reply_hdr(r, "X-Request-ID", request_id) ||
        (retry_ms && !reply_retry_after(r, retry_ms)) || !http__drain_close(s, r) ||
        (close && !reply_hdr(r, MHD_HTTP_HEADER_CONNECTION, "close"))) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    http__count(s, status);
    return ret;
}

enum MHD_Result http__send(struct server *s, struct MHD_Connection *conn, unsigned status,
                           const char *ctype, const char *body, size_t len, const char *request_id,
                           uint64_t retry_ms)
{
    return http__send_close(s, conn, status, ctype, body, len, request_id, retry_ms, false);
}

/* The JSON error envelope of e; `close`: it ends the connection. */
static enum MHD_Result http__error_close(struct server *s, struct MHD_Connection *conn,
                                         enum lg_err e, const char *msg, const char *param,
                                         const char *request_id, uint64_t retry_ms, bool close)
{
    char body[2048]; /* err_envelope cuts a long message to fit, never the envelope */
    size_t n = err_envelope(body, sizeof(body), e, msg, param);
    return http__send_close(s, conn, err_info(e)->status, "application/json", body, n, request_id,
                            retry_ms, close);
}

enum MHD_Result http__error(struct server *s, struct MHD_Connection *conn, enum lg_err e,
                            const char *msg, const char *param, const char *request_id,
                            uint64_t retry_ms)
{
    return http__error_close(s, conn, e, msg, param, request_id, retry_ms, false);
}

/* Sends the JSON document in `b` (built by the caller), or a 500 if building it failed. */
enum MHD_Result http__send_buf(struct server *s, struct MHD_Connection *conn, unsigned status,
                               struct buf *b, int built, const char *rid)
{
    enum MHD_Result r =
        built == 0
            ? http__send(s, conn, status, "application/json", buf_data(b), buf_len(b), rid, 0)
            : http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    buf_release(b);
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* streaming response adapter                                                                 */

/* Content reader (libmicrohttpd thread, response mutex held). Copies what the worker buffered,
 * or ends the body, or suspends the connection until the worker has more. Never returns 0
 * without suspending: that would busy-loop. */
static ssize_t http__reader(void *cls, uint64_t pos, char *out, size_t max)
{
    struct job *job = cls;
    ssize_t ret;
    (void)pos;
    pthread_mutex_lock(&job->lock);
    size_t n = buf_len(&job->out);
    if (n > 0) {
        if (n > max)
            n = max;
        memcpy(out, buf_data(&job->out), n);
        buf_consume(&job->out, n);
        job->taken += n; /* the worker's send deadline sees the client take bytes */
        if (job->up_paused && !job->unpause_pending && buf_fits(&job->out, HTTP_UNPAUSE_ROOM)) {
            job->unpause_pending = true;
            pool_unpause(job->pool, job);
        }
        ret = (ssize_t)n;
    } else if (job->eof) {
        ret = job->eof_error ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        job->suspended = true;
        MHD_suspend_connection(job->conn);
        /* Before the first token the engine may be silent for long (prefill): notice a client
         * that leaves at once. Later, the next token's write notices it, or the worker's
         * periodic watch of idle streams (worker__watch_idle). */
        if (!job->body_started)
            pool__watch_locked(job->pool, job);
        ret = 0;
    }
    pthread_mutex_unlock(&job->lock);
    return ret;
}

static void http__reader_free(void *cls)
{
    job_unref(cls);
}

/* "1.5s", "6m0s", "20ms": how OpenAI writes x-ratelimit-reset-*. */
static void http__duration(char *out, size_t cap, uint64_t ms)
{
    if (ms < 1000)
        snprintf(out, cap, "%llums", (unsigned long long)ms);
    else if (ms < 60000)
        snprintf(out, cap, "%llu.%03llus", (unsigned long long)(ms / 1000),
                 (unsigned long long)(ms % 1000));
    else
        snprintf(out, cap, "%llum%llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms % 60000 / 1000));
}

/* x-ratelimit-limit-WHAT, -remaining-WHAT, -reset-WHAT. */
static bool http__ratelimit_trio(struct MHD_Response *r, const char *what, unsigned limit,
                                 unsigned remaining, uint64_t reset_ms)
{
    char name[40], v[32];
    snprintf(name, sizeof(name), "x-ratelimit-limit-%s", what);
    snprintf(v, sizeof(v), "%u", limit);
    if (!reply_hdr(r, name, v))
        return false;
    snprintf(name, sizeof(name), "x-ratelimit-remaining-%s", what);
    snprintf(v, sizeof(v), "%u", remaining);
    if (!reply_hdr(r, name, v))
        return false;
    snprintf(name, sizeof(name), "x-ratelimit-reset-%s", what);
    http__duration(v, sizeof(v), reset_ms);
    return reply_hdr(r, name, v);
}

/* OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens} for a key with rpm / tpm, as
 * its buckets stood when this request was admitted. */
static bool http__ratelimit_headers(struct MHD_Response *r, const struct lim_state *st)
{
    return (!st->limit_requests ||
            http__ratelimit_trio(r, "requests", st->limit_requests, st->remaining_requests,
                                 st->reset_requests_ms)) &&
           (!st->limit_tokens || http__ratelimit_trio(r, "tokens", st->limit_tokens,
                                                      st->remaining_tokens, st->reset_tokens_ms));
}

/* The worker resumed us: answer with the upstream's status and stream its body, or with the
 * gateway's own error. Caller holds job->lock. The upstream's response is not queued here but
 * left in *queue, for the caller to queue (and count) once it dropped the job lock:
 * libmicrohttpd takes a response's mutex in MHD_queue_response and MHD_destroy_response and
 * holds it while it calls http__reader, which takes the job lock (lock order, ARCHITECTURE). */
enum MHD_Result http__respond_locked(struct server *s, struct MHD_Connection *conn, struct job *job,
                                     struct MHD_Response **queue)
{
    job->responded = true; /* the worker may write no probe past this */
    if (job->fail != LGE_NONE) {
        job->h_status = err_info(job->fail)->status;
        /* A queue_timeout waited its whole queue_timeout and is told to come back in
         * Retry-After: its connection is closed rather than kept idle that long (its
         * descriptor and 16 KiB libmicrohttpd pool freed; the next request reconnects). Kept
         * alive, libmicrohttpd would zero the whole pool for the next request: for a crowd of
         * waiters expiring together, most of what the streams beside it paid
         * (scripts/bench/queue_expiry.sh; docs/ARCHITECTURE.md "Admission"). */
        return http__error_close(s, conn, job->fail, job->fail_msg, NULL, job->request_id,
                                 job->retry_ms, job->fail == LGE_QUEUE_TIMEOUT);
    }
    bool sse = strncasecmp(job->content_type, "text/event-stream", 17) == 0;
    struct MHD_Response *r;
    if (job->eof && !job->eof_error && !sse &&
        (job->content_length < 0 || (uint64_t)job->content_length == buf_len(&job->out))) {
        /* The whole body is here: one buffer response, sent with the headers at once. */
        r = MHD_create_response_from_buffer(buf_len(&job->out), (void *)buf_data(&job->out),
                                            MHD_RESPMEM_MUST_COPY);
        if (!r)
            return MHD_NO;
        buf_consume(&job->out, buf_len(&job->out));
    } else {
        uint64_t size =
            (job->content_length >= 0 && !sse) ? (uint64_t)job->content_length : MHD_SIZE_UNKNOWN;
        r = MHD_create_response_from_callback(size, HTTP_BLOCK_SIZE, http__reader, job,
                                              http__reader_free);
        if (!r)
            return MHD_NO;
        job_ref(job); /* the response's reference, dropped by http__reader_free */
    }
    if ((job->content_type[0] && !reply_hdr(r, MHD_HTTP_HEADER_CONTENT_TYPE, job->content_type)) ||
        !reply_hdr(r, "X-Request-ID", job->request_id) || !http__ratelimit_headers(r, &job->lim) ||
        !http__drain_close(s, r) ||
        ((sse || job->stream) && (!reply_hdr(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") ||
                                  !reply_hdr(r, "X-Accel-Buffering", "no")))) {
        MHD_destroy_response(r); /* drops the reader's reference, if it took one */
        return MHD_NO;
    }
    job->h_status = job->status;
    *queue = r;
    return MHD_YES;
}
