/* server.c — see server.h. */
#include "http/server.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "http/request.h"
#include "inference/job.h"
#include "inference/router.h"
#include "inference/worker.h"

#include <arpa/inet.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A callback response asks the reader for at most this much per call (it also cannot exceed
 * the connection's free pool memory). */
/* Per-connection memory pool of libmicrohttpd: request line and headers, and the chunk being
 * sent. libmicrohttpd zeroes it for every request, so its size is paid per request. */
#define HTTP_CONN_MEMORY 16384
#define HTTP_BLOCK_SIZE 8192
/* The paused upstream is resumed once this much fits in the stream buffer again: one full curl
 * write (CURL_MAX_WRITE_SIZE). */
#define HTTP_UNPAUSE_ROOM 16384

enum h_state { H_BODY = 0, H_WAIT, H_DONE };

enum route {
    R_NONE,
    R_CHAT,
    R_COMPLETIONS,
    R_EMBEDDINGS,
    R_MODELS,
    R_MODEL,
    R_HEALTHZ,
    R_HEALTH,
    R_READY,
    R_METRICS
};

struct server {
    const struct config *cfg;
    struct pool *pool;
    struct MHD_Daemon *daemon;
    int64_t started_wall;
    char *models_json;
    size_t models_len;
    atomic_uint_fast64_t status_count[600];
};

static const struct {
    const char *path;
    enum route route;
    const char *method;
    int endpoint; /* enum job_endpoint of a proxied path, -1 for local ones */
} routes[] = {
    {"/v1/chat/completions", R_CHAT, "POST", JOB_CHAT},
    {"/v1/completions", R_COMPLETIONS, "POST", JOB_COMPLETIONS},
    {"/v1/embeddings", R_EMBEDDINGS, "POST", JOB_EMBEDDINGS},
    {"/v1/models", R_MODELS, "GET", -1},
    {"/healthz", R_HEALTHZ, "GET", -1},
    {"/health", R_HEALTH, "GET", -1},
    {"/ready", R_READY, "GET", -1},
    {"/metrics", R_METRICS, "GET", -1},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static int http__route(const char *url)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (!strcmp(url, routes[i].path))
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* responses                                                                                  */

static void http__count(struct server *s, unsigned status)
{
    if (status < 600)
        atomic_fetch_add_explicit(&s->status_count[status], 1, memory_order_relaxed);
}

/* Queues a complete in-memory response. `body` is copied. */
static enum MHD_Result http__send(struct server *s, struct MHD_Connection *conn, unsigned status,
                                  const char *ctype, const char *body, size_t len,
                                  const char *request_id, unsigned retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "X-Request-ID", request_id);
    if (retry_after) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    http__count(s, status);
    return ret;
}

static enum MHD_Result http__error(struct server *s, struct MHD_Connection *conn, enum lg_err e,
                                   const char *msg, const char *param, const char *request_id,
                                   unsigned retry_after)
{
    char body[1024];
    size_t n = err_envelope(body, sizeof(body), e, msg, param);
    return http__send(s, conn, err_info(e)->status, "application/json", body, n, request_id,
                      retry_after);
}

static enum MHD_Result http__json(struct server *s, struct MHD_Connection *conn, unsigned status,
                                  json_object *obj, const char *request_id)
{
    const char *txt = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
    enum MHD_Result r =
        http__send(s, conn, status, "application/json", txt, strlen(txt), request_id, 0);
    json_object_put(obj);
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* GET endpoints                                                                              */

static json_object *http__model_obj(const char *id, const char *owner)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "id", json_object_new_string(id));
    json_object_object_add(m, "object", json_object_new_string("model"));
    json_object_object_add(m, "created", json_object_new_int64(0));
    json_object_object_add(m, "owned_by", json_object_new_string(owner));
    return m;
}

/* The union of configured models, first backend listing a model owns it. */
static char *http__models_list(const struct config *cfg, size_t *len)
{
    json_object *root = json_object_new_object();
    json_object *data = json_object_new_array();
    json_object_object_add(root, "object", json_object_new_string("list"));
    json_object_object_add(root, "data", data);
    for (size_t b = 0; b < cfg->n_backends; b++) {
        for (size_t m = 0; m < cfg->backends[b].n_models; m++) {
            const char *id = cfg->backends[b].models[m];
            const struct cfg_backend *first;
            config_backends_for(cfg, id, &first, 1);
            if (first == &cfg->backends[b])
                json_object_array_add(data, http__model_obj(id, cfg->backends[b].name));
        }
    }
    const char *txt = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    char *copy = strdup(txt);
    *len = copy ? strlen(copy) : 0;
    json_object_put(root);
    return copy;
}

static enum MHD_Result http__metrics(struct server *s, struct MHD_Connection *conn, const char *rid)
{
    struct router *r = pool_router(s->pool);
    struct router_stats rs;
    struct pool_stats ps;
    router_get_stats(r, &rs);
    pool_get_stats(s->pool, &ps);
    size_t cap = 8192 + s->cfg->n_backends * 512, n = 0;
    char *out = malloc(cap);
    if (!out)
        return http__error(s, conn, LGE_INTERNAL, NULL, NULL, rid, 0);
#define P(...)                                                                                     \
    do {                                                                                           \
        int k_ = snprintf(out + n, cap - n, __VA_ARGS__);                                          \
        if (k_ > 0)                                                                                \
            n += (size_t)k_ < cap - n ? (size_t)k_ : cap - n - 1;                                  \
    } while (0)
    P("# HELP llmgate_http_responses_total Responses sent, by status code.\n"
      "# TYPE llmgate_http_responses_total counter\n");
    for (unsigned c = 100; c < 600; c++) {
        uint64_t v = atomic_load_explicit(&s->status_count[c], memory_order_relaxed);
        if (v)
            P("llmgate_http_responses_total{code=\"%u\"} %llu\n", c, (unsigned long long)v);
    }
    const struct {
        const char *name, *type, *help;
        unsigned long long value;
    } scalars[] = {
        {"llmgate_inflight", "gauge", "Requests holding an upstream permit.", rs.inflight},
        {"llmgate_queued", "gauge", "Requests waiting for a permit.", rs.queued},
        {"llmgate_queue_rejected_total", "counter", "Requests refused with 503 queue_full.",
         rs.rejected_total},
        {"llmgate_active_jobs", "gauge", "Inference requests between submit and end.", ps.active},
        {"llmgate_upstream_requests_total", "counter", "Upstream transfers started.", ps.started},
        {"llmgate_upstream_errors_total", "counter", "Upstream transfers that failed.",
         ps.upstream_errors},
        {"llmgate_client_aborts_total", "counter",
         "Clients that left before the end of the response.", ps.client_aborts},
    };
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++)
        P("# HELP %s %s\n# TYPE %s %s\n%s %llu\n", scalars[i].name, scalars[i].help,
          scalars[i].name, scalars[i].type, scalars[i].name, scalars[i].value);
    P("# HELP llmgate_ttft_seconds Time from request arrival to the first streamed event.\n"
      "# TYPE llmgate_ttft_seconds summary\nllmgate_ttft_seconds_sum %.6f\n"
      "llmgate_ttft_seconds_count %llu\n",
      (double)ps.ttft_ns_sum / 1e9, (unsigned long long)ps.ttft_count);
    P("# HELP llmgate_backend_up Backend health (1 up, 0 down or unknown).\n"
      "# TYPE llmgate_backend_up gauge\n");
    for (size_t i = 0; i < s->cfg->n_backends; i++)
        P("llmgate_backend_up{backend=\"%s\"} %d\n", s->cfg->backends[i].name,
          router_health(r, (unsigned)i) == HEALTH_UP);
    P("# HELP llmgate_backend_inflight Requests in flight per backend.\n"
      "# TYPE llmgate_backend_inflight gauge\n");
    for (size_t i = 0; i < s->cfg->n_backends; i++)
        P("llmgate_backend_inflight{backend=\"%s\"} %u\n", s->cfg->backends[i].name,
          router_backend_inflight(r, (unsigned)i));
#undef P
    enum MHD_Result ret =
        http__send(s, conn, 200, "text/plain; version=0.0.4; charset=utf-8", out, n, rid, 0);
    free(out);
    return ret;
}

static enum MHD_Result http__get(struct server *s, struct MHD_Connection *conn, enum route route,
                                 const char *url, const char *rid)
{
    switch (route) {
    case R_HEALTHZ:
        return http__send(s, conn, 200, "text/plain; charset=utf-8", "OK", 2, rid, 0);
    case R_HEALTH: {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "status", json_object_new_string("ok"));
        json_object_object_add(o, "version", json_object_new_string(LLMGATE_VERSION));
        json_object_object_add(o, "uptime_s",
                               json_object_new_int64(clock_wall_s() - s->started_wall));
        return http__json(s, conn, 200, o, rid);
    }
    case R_READY: {
        struct router *r = pool_router(s->pool);
        bool ready = router_ready(r);
        json_object *o = json_object_new_object();
        json_object *b = json_object_new_object();
        static const char *const names[] = {"unknown", "up", "down"};
        json_object_object_add(o, "status", json_object_new_string(ready ? "ready" : "not_ready"));
        json_object_object_add(o, "backends", b);
        for (size_t i = 0; i < s->cfg->n_backends; i++)
            json_object_object_add(b, s->cfg->backends[i].name,
                                   json_object_new_string(names[router_health(r, (unsigned)i)]));
        return http__json(s, conn, ready ? 200 : 503, o, rid);
    }
    case R_METRICS:
        return http__metrics(s, conn, rid);
    case R_MODELS:
        return http__send(s, conn, 200, "application/json", s->models_json, s->models_len, rid, 0);
    case R_MODEL: {
        const char *id = url + strlen("/v1/models/");
        const struct cfg_backend *b;
        if (config_backends_for(s->cfg, id, &b, 1) == 0)
            return http__error(s, conn, LGE_MODEL_NOT_FOUND, NULL, NULL, rid, 0);
        return http__json(s, conn, 200, http__model_obj(id, b->name), rid);
    }
    default:
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    }
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

/* The worker resumed us: answer with the upstream's status and stream its body, or with the
 * gateway's own error. Caller holds job->lock. */
static enum MHD_Result http__respond_locked(struct server *s, struct MHD_Connection *conn,
                                            struct job *job)
{
    if (job->fail != LGE_NONE) {
        job->h_status = err_info(job->fail)->status;
        return http__error(s, conn, job->fail, NULL, NULL, job->request_id, job->retry_after);
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
    if (job->content_type[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, job->content_type);
    MHD_add_response_header(r, "X-Request-ID", job->request_id);
    if (sse || job->stream) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
    }
    job->h_status = job->status;
    enum MHD_Result ret = MHD_queue_response(conn, job->status, r);
    MHD_destroy_response(r);
    http__count(s, job->status);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* access handler                                                                             */

static const char *http__bearer(struct MHD_Connection *conn, size_t *len)
{
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    *len = strlen(h);
    while (*len && h[*len - 1] == ' ')
        (*len)--;
    return *len ? h : NULL;
}

/* Marks requests the gateway answers itself (con_cls). */
static int http_deferred;

static const char *http__request_id(struct MHD_Connection *conn, char idbuf[33])
{
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    if (!rid || !request_id_valid(rid)) {
        request_id_new(idbuf);
        rid = idbuf;
    }
    return rid;
}

/* True when auth is off or the Bearer key is known; sets *key_name. */
static bool http__authorized(struct server *s, struct MHD_Connection *conn, const char **key_name)
{
    *key_name = NULL;
    if (!s->cfg->auth)
        return true;
    size_t klen = 0;
    const char *key = http__bearer(conn, &klen);
    *key_name = key ? config_key_lookup(s->cfg, key, klen) : NULL;
    return *key_name != NULL;
}

/* Everything that is not a proxied request: local endpoints and request errors. */
static enum MHD_Result http__answer_local(struct server *s, struct MHD_Connection *conn,
                                          const char *url, const char *method)
{
    char idbuf[33];
    const char *rid = http__request_id(conn, idbuf);
    int ri = http__route(url);
    enum route route = ri >= 0 ? routes[ri].route : R_NONE;
    if (route == R_NONE && !strncmp(url, "/v1/models/", 11) && url[11])
        route = R_MODEL;
    if (route == R_NONE)
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    const char *want = route == R_MODEL ? "GET" : routes[ri].method;
    if (strcmp(method, want) != 0 && !(strcmp(want, "GET") == 0 && !strcmp(method, "HEAD")))
        return http__error(s, conn, LGE_METHOD, NULL, NULL, rid, 0);
    const char *key_name;
    bool needs_key = route == R_CHAT || route == R_COMPLETIONS || route == R_EMBEDDINGS ||
                     route == R_MODELS || route == R_MODEL;
    if (needs_key && !http__authorized(s, conn, &key_name))
        return http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    return http__get(s, conn, route, url, rid);
}

/* Final call of a POST: validate, route, suspend, hand over. */
static enum MHD_Result http__submit(struct server *s, struct MHD_Connection *conn, struct job *job)
{
    char why[256];
    const char *param;
    struct req_info info;
    if (job->h_too_large) {
        job->h_state = H_DONE;
        job->h_status = 413;
        return http__error(s, conn, LGE_TOO_LARGE, NULL, NULL, job->request_id, 0);
    }
    enum lg_err e = request_validate(job->endpoint, buf_data(&job->body), buf_len(&job->body),
                                     &info, why, sizeof(why), &param);
    if (e != LGE_NONE) {
        job->h_state = H_DONE;
        job->h_status = err_info(e)->status;
        (void)param; /* the contract's envelope has "param": null; the message names the field */
        return http__error(s, conn, e, why, NULL, job->request_id, 0);
    }
    job->model = info.model;
    job->stream = info.stream;
    job->n_candidates =
        (unsigned)config_backends_for(s->cfg, job->model, job->candidates, JOB_MAX_CANDIDATES);
    if (job->n_candidates == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the model '%.200s' does not exist", job->model);
        job->h_state = H_DONE;
        job->h_status = 404;
        return http__error(s, conn, LGE_MODEL_NOT_FOUND, msg, NULL, job->request_id, 0);
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    job->client_fd = ci ? ci->connect_fd : -1;
    job->conn = conn;
    job->pool = s->pool;
    job->deadline_ns = job->t_start_ns + (uint64_t)s->cfg->request_s * NS_PER_S;
    job->h_state = H_WAIT;

    /* Suspend before the hand-over, so the worker can only ever resume a suspended connection. */
    pthread_mutex_lock(&job->lock);
    job->suspended = true;
    MHD_suspend_connection(conn);
    pthread_mutex_unlock(&job->lock);
    if (pool_submit(s->pool, job) != 0) {
        pthread_mutex_lock(&job->lock);
        job->fail = LGE_DRAINING;
        job->retry_after = 1;
        job__resume_locked(job);
        pthread_mutex_unlock(&job->lock);
        return MHD_YES;
    }
    job->h_submitted = true;
    return MHD_YES;
}

static enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    (void)version;
    (void)upload_data;

    if (*con_cls == &http_deferred) {
        /* Not a proxied request: answered once the request is read completely, so the
         * connection stays reusable (an early answer makes libmicrohttpd close it). */
        if (*upload_data_size) {
            *upload_data_size = 0; /* discarded */
            return MHD_YES;
        }
        *con_cls = NULL;
        return http__answer_local(s, conn, url, method);
    }
    if (job) {
        if (job->h_state == H_BODY) {
            if (*upload_data_size) {
                if (!job->h_too_large &&
                    buf_append(&job->body, upload_data, *upload_data_size) != 0)
                    job->h_too_large = true; /* keep reading, discard, answer 413 at the end */
                *upload_data_size = 0;
                return MHD_YES;
            }
            return http__submit(s, conn, job);
        }
        if (job->h_state == H_WAIT) {
            pthread_mutex_lock(&job->lock);
            enum MHD_Result r;
            if (job->fail != LGE_NONE || job->headers_ready) {
                job->h_state = H_DONE;
                r = http__respond_locked(s, conn, job);
            } else { /* not ours to be woken for: wait on */
                job->suspended = true;
                MHD_suspend_connection(conn);
                r = MHD_YES;
            }
            pthread_mutex_unlock(&job->lock);
            return r;
        }
        return MHD_YES;
    }

    /* first call: headers only */
    char idbuf[33];
    const char *rid = http__request_id(conn, idbuf);
    int ri = http__route(url);
    const char *key_name = NULL;
    if (ri < 0 || routes[ri].endpoint < 0 || strcmp(method, routes[ri].method) != 0 ||
        !http__authorized(s, conn, &key_name)) {
        *con_cls = &http_deferred;
        return MHD_YES;
    }
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg->max_body_bytes)
        return http__error(s, conn, LGE_TOO_LARGE, NULL, NULL, rid, 0); /* closes: body unread */

    job = job_new(s->cfg->max_body_bytes, s->cfg->stream_buffer_bytes);
    if (!job)
        return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    snprintf(job->request_id, sizeof(job->request_id), "%s", rid);
    job->t_start_ns = clock_now_ns();
    job->endpoint = (enum job_endpoint)routes[ri].endpoint;
    job->key_name = key_name;
    job->h_state = H_BODY;
    *con_cls = job;
    return MHD_YES;
}

static void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    (void)conn;
    if (!job || *con_cls == &http_deferred)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&job->lock);
    job->client_gone = true;
    bool finished = job->eof || job->fail != LGE_NONE;
    pthread_mutex_unlock(&job->lock);
    if (job->h_submitted && !finished)
        pool_cancel(s->pool, job);
    if (s->cfg->access_log) {
        uint64_t us = (clock_now_ns() - job->t_start_ns) / 1000;
        log_info("access id=%s model=%s stream=%d status=%u key=%s dur_us=%llu bytes=%llu "
                 "events=%llu end=%s",
                 job->request_id, job->model ? job->model : "-", job->stream, job->h_status,
                 job->key_name ? job->key_name : "-", (unsigned long long)us,
                 (unsigned long long)job->bytes_out, (unsigned long long)job->events,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted");
    }
    job_unref(job);
}

/* ---------------------------------------------------------------------------------------- */
/* lifecycle                                                                                  */

/* libmicrohttpd's own messages are mostly about clients that went away: debug level. */
static void http__mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (log_enabled(LOG_DEBUG))
        log_vwrite(LOG_DEBUG, fmt, ap);
}

struct server *server_new(const struct config *cfg, struct pool *pool)
{
    struct server *s = calloc(1, sizeof(*s));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    if (!s)
        return NULL;
    s->cfg = cfg;
    s->pool = pool;
    s->started_wall = clock_wall_s();
    s->models_json = http__models_list(cfg, &s->models_len);
    if (!s->models_json)
        goto fail;
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (gai != 0) {
        log_error("listen %s: %s", cfg->listen, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->listen_port, NULL, NULL, http__access, s, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)300, MHD_OPTION_NOTIFY_COMPLETED,
        http__completed, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096, MHD_OPTION_EXTERNAL_LOGGER,
        http__mhd_log, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        log_error("cannot listen on %s (address in use, or not allowed?)", cfg->listen);
        goto fail;
    }
    return s;
fail:
    free(s->models_json);
    free(s);
    return NULL;
}

void server_quiesce(struct server *s)
{
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

unsigned server_connections(struct server *s)
{
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    free(s->models_json);
    free(s);
}
