/* relay.c — a worker's side of delivering the engine's answer to the client: the curl
 * header and body callbacks, the stream buffer and its pause, the batched resumes of
 * libmicrohttpd connections, and how a job's end is told to the HTTP side. */
#include "inference/worker_int.h"

#include "core/clock.h"
#include "core/errors.h"
#include "core/sse.h"
#include "inference/router.h"
#include "inference/usage.h"

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* ---------------------------------------------------------------------------------------- */
/* resumes, batched                                                                         */

/* The HTTP side has something new to send (headers or body bytes). The connection is resumed
 * at the end of the worker's current event batch, not at once: every MHD_resume_connection
 * writes libmicrohttpd's inter-thread channel and makes its thread walk its whole list of
 * suspended connections, so resuming the streams that got bytes in one batch together lets
 * one wake-up of that thread serve them all. Caller holds job->lock; worker thread. */
static void worker__resume_later_locked(struct worker *w, struct job *job)
{
    if (!(job->suspended || job->parked) || job->w_resume_queued)
        return;
    job->w_resume_queued = true;
    job_ref(job); /* the list's reference */
    job->w_resume_next = w->resume_head;
    w->resume_head = job;
}

void worker__flush_resumes(struct worker *w)
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
/* answers and headers                                                                      */

/* Tells the HTTP side how the job ended: an error response if it has no upstream headers yet,
 * otherwise the end of the body (with an SSE error event, or a broken connection, if `err`). */
void worker__answer(struct worker *w, struct job *job, enum lg_err err, const char *msg)
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

/* Delivers the upstream's status line and headers to the HTTP side. Streams get them as soon as
 * they are complete; a non-stream answer gets them with its whole body (one resume, one send)
 * unless the body outgrows the stream buffer, which delivers them early (worker__on_body).
 * Runs inside the header callback: resuming a connection never calls back into curl. */
void worker__deliver_headers_locked(struct worker *w, struct job *job)
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
/* curl callbacks (worker thread, inside curl_multi_socket_action)                          */

size_t worker__on_header(char *line, size_t size, size_t n, void *arg)
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

size_t worker__on_body(char *data, size_t size, size_t n, void *arg)
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

/* ---------------------------------------------------------------------------------------- */
/* the client took bytes: the transfer goes on                                              */

void worker__on_unpause(struct worker *w, struct job *job)
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
