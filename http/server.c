/* server.c — see server.h. */
#include "http/server.h"

#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/esc.h"
#include "core/log.h"
#include "http/accept.h"
#include "http/framing.h"
#include "http/guard.h"
#include "http/request.h"
#include "inference/job.h"
#include "inference/limits.h"
#include "inference/router.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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
    R_METRICS,
    R_QUEUE,
    R_ADMIN_RELOAD,
    R_ADMIN_CONFIG
};

/* A model pool: the models served by exactly the same backends (GET /v1/queue). */
struct http_pool {
    const struct cfg_backend *cands[JOB_MAX_CANDIDATES];
    unsigned n_cands;
    const char **models;
    size_t n_models;
};

/* What the HTTP side derives from one configuration (a snapshot's `http`). */
struct http_derived {
    char *models_json; /* GET /v1/models for keys that may use every model */
    size_t models_len;
    char **key_models_json; /* per key with an allow-list (by index in cfg->keys), else NULL */
    size_t *key_models_len;
    size_t n_keys;
    struct http_pool *pools;
    size_t n_pools;
};

struct server {
    struct pool *pool;
    struct MHD_Daemon *daemon;
    struct guard *guard;       /* client deadlines and the connection table */
    struct acceptor *acceptor; /* owns the listening socket (see http/accept.h) */
    /* When and in which order each descriptor was accepted, for the guard: written by the
     * acceptor before MHD_add_connection, read when libmicrohttpd's thread registers it. */
    struct accept_stamp {
        atomic_uint_fast64_t ms, seq;
    } * stamps;
    size_t n_stamps;
    uint64_t accept_seq;   /* the acceptor's own */
    struct limits *limits; /* per-key concurrency, rpm, tpm (the pool's) */
    int64_t started_wall;
    atomic_uint_fast64_t status_count[600];
    atomic_size_t body_mem;      /* request body bytes held by jobs; <= max_body_memory */
    pthread_mutex_t reload_lock; /* one reload at a time (SIGHUP, POST /admin/reload) */
    atomic_uint_fast64_t reloads_ok, reloads_failed;
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
    {"/v1/queue", R_QUEUE, "GET", -1},
    {"/admin/reload", R_ADMIN_RELOAD, "POST", -1},
    {"/admin/config", R_ADMIN_CONFIG, "GET", -1},
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

/* Adds a response header. false (logged) when libmicrohttpd refused it: the caller drops the
 * response rather than send it without, say, its Retry-After. */
static bool http__hdr(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) == MHD_YES)
        return true;
    log_warn("cannot add the response header %s", name);
    return false;
}

/* Retry-After (whole seconds, rounded up) and retry-after-ms (what the OpenAI and Anthropic
 * SDKs read), for a wait of `ms`. */
static bool http__retry_after(struct MHD_Response *r, uint64_t ms_)
{
    char ra[24], ms[24];
    snprintf(ra, sizeof(ra), "%llu", (unsigned long long)((ms_ + 999) / 1000));
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)ms_);
    return http__hdr(r, MHD_HTTP_HEADER_RETRY_AFTER, ra) && http__hdr(r, "retry-after-ms", ms);
}

/* Queues a complete in-memory response. `body` is copied. */
static enum MHD_Result http__send(struct server *s, struct MHD_Connection *conn, unsigned status,
                                  const char *ctype, const char *body, size_t len,
                                  const char *request_id, uint64_t retry_ms)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (!http__hdr(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) ||
        !http__hdr(r, "X-Request-ID", request_id) ||
        (retry_ms && !http__retry_after(r, retry_ms))) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    http__count(s, status);
    return ret;
}

static enum MHD_Result http__error(struct server *s, struct MHD_Connection *conn, enum lg_err e,
                                   const char *msg, const char *param, const char *request_id,
                                   uint64_t retry_ms)
{
    char body[2048]; /* err_envelope cuts a long message to fit, never the envelope */
    size_t n = err_envelope(body, sizeof(body), e, msg, param);
    return http__send(s, conn, err_info(e)->status, "application/json", body, n, request_id,
                      retry_ms);
}

/* Sends the JSON document in `b` (built by the caller), or a 500 if building it failed. */
static enum MHD_Result http__send_buf(struct server *s, struct MHD_Connection *conn,
                                      unsigned status, struct buf *b, int built, const char *rid)
{
    enum MHD_Result r =
        built == 0
            ? http__send(s, conn, status, "application/json", buf_data(b), buf_len(b), rid, 0)
            : http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    buf_release(b);
    return r;
}

/* Documents the gateway writes itself are small: this ceiling only stops a runaway. */
#define HTTP_DOC_MAX (64u << 20)

/* ---------------------------------------------------------------------------------------- */
/* GET endpoints                                                                              */

static int http__model_obj(struct buf *b, const char *id, const char *owner)
{
    return buf_printf(b, "{\"id\":") || esc_json_buf(b, id, strlen(id)) ||
           buf_printf(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":") ||
           esc_json_buf(b, owner, strlen(owner)) || buf_printf(b, "}");
}

/* The union of configured models that `key` may use (NULL: all), first backend listing a
 * model owns it. */
static char *http__models_list(const struct config *cfg, const struct cfg_key *key, size_t *len)
{
    struct buf b;
    buf_init(&b, HTTP_DOC_MAX);
    int rc = buf_printf(&b, "{\"object\":\"list\",\"data\":[");
    bool first_item = true;
    for (size_t i = 0; i < cfg->n_backends && rc == 0; i++) {
        for (size_t m = 0; m < cfg->backends[i].models.n && rc == 0; m++) {
            const char *id = cfg->backends[i].models.v[m];
            const struct cfg_backend *first;
            config_backends_for(cfg, id, &first, 1);
            if (first != &cfg->backends[i] || !config_key_allows(key, id))
                continue;
            rc = (first_item ? 0 : buf_printf(&b, ",")) ||
                 http__model_obj(&b, id, cfg->backends[i].name);
            first_item = false;
        }
    }
    if (rc == 0)
        rc = buf_printf(&b, "]}");
    char *copy = rc == 0 ? strndup(buf_data(&b), buf_len(&b)) : NULL;
    *len = copy ? buf_len(&b) : 0;
    buf_release(&b);
    return copy;
}

static enum MHD_Result http__metrics(struct server *s, struct MHD_Connection *conn, const char *rid,
                                     const struct snap *sn)
{
    const struct config *cfg = sn->cfg;
    struct router *r = pool_router(s->pool);
    struct router_stats rs;
    struct pool_stats ps;
    struct guard_stats gs;
    router_get_stats(r, &rs);
    pool_get_stats(s->pool, &ps);
    guard_get_stats(s->guard, &gs);
    struct buf b;
    buf_init(&b, HTTP_DOC_MAX);
    int rc = buf_printf(&b, "# HELP llmgate_http_responses_total Responses sent, by status code.\n"
                            "# TYPE llmgate_http_responses_total counter\n");
    for (unsigned c = 100; c < 600 && rc == 0; c++) {
        uint64_t v = atomic_load_explicit(&s->status_count[c], memory_order_relaxed);
        if (v)
            rc = buf_printf(&b, "llmgate_http_responses_total{code=\"%u\"} %llu\n", c,
                            (unsigned long long)v);
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
        {"llmgate_body_memory_bytes", "gauge",
         "Bytes of request bodies held in flight (limit: max_body_memory).",
         atomic_load_explicit(&s->body_mem, memory_order_relaxed)},
        {"llmgate_client_connections", "gauge", "Open client connections (limit: max_connections).",
         gs.open},
        {"llmgate_client_header_timeouts_total", "counter",
         "Requests whose headers did not arrive within client_header_timeout_s.",
         gs.header_timeouts},
        {"llmgate_client_body_timeouts_total", "counter",
         "Request bodies that stalled for client_body_timeout_s.", gs.body_timeouts},
        {"llmgate_keepalive_closed_total", "counter",
         "Idle keep-alive connections closed at keepalive_timeout_s.", gs.idle_closed},
        {"llmgate_connections_evicted_total", "counter",
         "Idle or slow connections closed to make room at max_connections.", gs.evicted},
        {"llmgate_connections_refused_total", "counter",
         "New connections refused with 503: every slot busy with a request.", gs.refused},
        {"llmgate_config_generation", "gauge", "The live configuration: 1 at start, +1 per reload.",
         sn->gen},
    };
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]) && rc == 0; i++)
        rc = buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", scalars[i].name,
                        scalars[i].help, scalars[i].name, scalars[i].type, scalars[i].name,
                        scalars[i].value);
    if (rc == 0)
        rc = buf_printf(
            &b,
            "# HELP llmgate_ttft_seconds Time from request arrival to the first streamed event.\n"
            "# TYPE llmgate_ttft_seconds summary\nllmgate_ttft_seconds_sum %.6f\n"
            "llmgate_ttft_seconds_count %llu\n",
            (double)ps.ttft_ns_sum / 1e9, (unsigned long long)ps.ttft_count);
    if (rc == 0)
        rc = buf_printf(&b,
                        "# HELP llmgate_config_reloads_total Reloads (SIGHUP, POST /admin/reload), "
                        "by result.\n# TYPE llmgate_config_reloads_total counter\n"
                        "llmgate_config_reloads_total{result=\"ok\"} %llu\n"
                        "llmgate_config_reloads_total{result=\"error\"} %llu\n",
                        (unsigned long long)atomic_load(&s->reloads_ok),
                        (unsigned long long)atomic_load(&s->reloads_failed));
    static const char *const fam[4][3] = {
        {"llmgate_backend_up", "gauge", "Backend health (1 up, 0 down or unknown)."},
        {"llmgate_backend_inflight", "gauge", "Requests in flight per backend."},
        {"llmgate_backend_requests_total", "counter", "Permits granted per backend."},
        {"llmgate_backend_failures_total", "counter",
         "Transfers that failed per backend (connect, broken, timeout)."}};
    for (int f = 0; f < 4 && rc == 0; f++) {
        rc = buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", fam[f][0], fam[f][2], fam[f][0],
                        fam[f][1]);
        for (size_t i = 0; i < cfg->n_backends && rc == 0; i++) {
            const struct backend *be = cfg->backends[i].be;
            unsigned long long v = f == 0   ? router_health(be) == HEALTH_UP
                                   : f == 1 ? atomic_load(&be->inflight)
                                   : f == 2 ? (unsigned long long)atomic_load(&be->granted)
                                            : (unsigned long long)atomic_load(&be->failures);
            rc = buf_printf(&b, "%s{backend=\"", fam[f][0]) ||
                 esc_prom_label(&b, cfg->backends[i].name) || buf_printf(&b, "\"} %llu\n", v);
        }
    }
    if (rc == 0 && cfg->n_keys)
        rc = buf_printf(&b, "# HELP llmgate_key_inflight Requests of each API key in progress "
                            "(limit: its max_concurrency).\n# TYPE llmgate_key_inflight gauge\n");
    for (size_t i = 0; i < cfg->n_keys && rc == 0; i++)
        rc = buf_printf(&b, "llmgate_key_inflight{key=\"") ||
             esc_prom_label(&b, cfg->keys[i].name) ||
             buf_printf(&b, "\"} %u\n", limits_inflight(s->limits, &cfg->keys[i]));
    enum MHD_Result ret = rc == 0
                              ? http__send(s, conn, 200, "text/plain; version=0.0.4; charset=utf-8",
                                           buf_data(&b), buf_len(&b), rid, 0)
                              : http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    buf_release(&b);
    return ret;
}

/* GET /v1/queue: the caller's requests waiting and in progress, and each pool it may use with
 * its depth and the wait a new request would be told now. */
static enum MHD_Result http__queue(struct server *s, struct MHD_Connection *conn, const char *rid,
                                   const struct cfg_key *key, const struct snap *sn)
{
    const struct http_derived *d = sn->http;
    struct router *r = pool_router(s->pool);
    struct buf b;
    buf_init(&b, HTTP_DOC_MAX);
    int rc = buf_printf(&b, "{\"object\":\"queue\",\"key\":");
    if (key)
        rc = rc || esc_json_buf(&b, key->name, strlen(key->name));
    else
        rc = rc || buf_printf(&b, "null");
    unsigned mine = router_key_queued(r, sn->cfg, key);
    unsigned running = limits_inflight(s->limits, key);
    rc = rc || buf_printf(&b, ",\"queued\":%u", mine);
    if (key)
        rc = rc || buf_printf(&b, ",\"in_progress\":%u", running > mine ? running - mine : 0);
    rc = rc || buf_printf(&b, ",\"pools\":[");
    bool first = true;
    for (size_t i = 0; i < d->n_pools && rc == 0; i++) {
        const struct http_pool *p = &d->pools[i];
        bool any = false;
        for (size_t m = 0; m < p->n_models && !any; m++)
            any = config_key_allows(key, p->models[m]);
        if (!any)
            continue;
        struct router_pool_stats ps;
        router_pool_stats(r, p->cands, p->n_cands, &ps);
        rc = buf_printf(&b, "%s{\"models\":[", first ? "" : ",");
        first = false;
        bool fm = true;
        for (size_t m = 0; m < p->n_models && rc == 0; m++) {
            if (!config_key_allows(key, p->models[m]))
                continue;
            rc = (fm ? 0 : buf_printf(&b, ",")) ||
                 esc_json_buf(&b, p->models[m], strlen(p->models[m]));
            fm = false;
        }
        rc = rc || buf_printf(&b, "],\"backends\":[");
        for (unsigned c = 0; c < p->n_cands && rc == 0; c++)
            rc = (c ? buf_printf(&b, ",") : 0) ||
                 esc_json_buf(&b, p->cands[c]->name, strlen(p->cands[c]->name));
        rc = rc || buf_printf(&b,
                              "],\"slots\":%u,\"in_flight\":%u,\"queued\":%u,"
                              "\"estimated_wait_ms\":%llu}",
                              ps.slots, ps.inflight, ps.queued, (unsigned long long)ps.wait_ms);
    }
    rc = rc || buf_printf(&b, "]}");
    return http__send_buf(s, conn, 200, &b, rc, rid);
}

static enum MHD_Result http__get(struct server *s, struct MHD_Connection *conn, enum route route,
                                 const char *url, const char *rid, const struct cfg_key *key,
                                 const struct snap *sn)
{
    const struct config *cfg = sn->cfg;
    const struct http_derived *d = sn->http;
    struct buf b;
    int rc;
    buf_init(&b, HTTP_DOC_MAX);
    switch (route) {
    case R_HEALTHZ:
        return http__send(s, conn, 200, "text/plain; charset=utf-8", "OK", 2, rid, 0);
    case R_HEALTH:
        rc = buf_printf(&b, "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%lld}",
                        LLMGATE_VERSION, (long long)(clock_wall_s() - s->started_wall));
        return http__send_buf(s, conn, 200, &b, rc, rid);
    case R_READY: {
        bool ready = router_ready(cfg);
        static const char *const names[] = {"unknown", "up", "down"};
        rc = buf_printf(&b, "{\"status\":\"%s\",\"backends\":{", ready ? "ready" : "not_ready");
        for (size_t i = 0; i < cfg->n_backends && rc == 0; i++) {
            const char *name = cfg->backends[i].name;
            rc = (i ? buf_printf(&b, ",") : 0) || esc_json_buf(&b, name, strlen(name)) ||
                 buf_printf(&b, ":\"%s\"", names[router_health(cfg->backends[i].be)]);
        }
        rc = rc || buf_printf(&b, "}}");
        return http__send_buf(s, conn, ready ? 200 : 503, &b, rc, rid);
    }
    case R_METRICS:
        return http__metrics(s, conn, rid, sn);
    case R_QUEUE:
        buf_release(&b);
        return http__queue(s, conn, rid, key, sn);
    case R_MODELS: {
        size_t ki = key ? (size_t)(key - cfg->keys) : 0;
        if (key && d->key_models_json[ki])
            return http__send(s, conn, 200, "application/json", d->key_models_json[ki],
                              d->key_models_len[ki], rid, 0);
        return http__send(s, conn, 200, "application/json", d->models_json, d->models_len, rid, 0);
    }
    case R_MODEL: {
        const char *id = url + strlen("/v1/models/");
        const struct cfg_backend *be;
        if (config_backends_for(cfg, id, &be, 1) == 0 || !config_key_allows(key, id))
            return http__error(s, conn, LGE_MODEL_NOT_FOUND, NULL, NULL, rid, 0);
        rc = http__model_obj(&b, id, be->name);
        return http__send_buf(s, conn, 200, &b, rc, rid);
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
    if (!http__hdr(r, name, v))
        return false;
    snprintf(name, sizeof(name), "x-ratelimit-remaining-%s", what);
    snprintf(v, sizeof(v), "%u", remaining);
    if (!http__hdr(r, name, v))
        return false;
    snprintf(name, sizeof(name), "x-ratelimit-reset-%s", what);
    http__duration(v, sizeof(v), reset_ms);
    return http__hdr(r, name, v);
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
static enum MHD_Result http__respond_locked(struct server *s, struct MHD_Connection *conn,
                                            struct job *job, struct MHD_Response **queue)
{
    job->responded = true; /* the worker may write no probe past this */
    if (job->fail != LGE_NONE) {
        job->h_status = err_info(job->fail)->status;
        return http__error(s, conn, job->fail, job->fail_msg, NULL, job->request_id, job->retry_ms);
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
    if ((job->content_type[0] && !http__hdr(r, MHD_HTTP_HEADER_CONTENT_TYPE, job->content_type)) ||
        !http__hdr(r, "X-Request-ID", job->request_id) || !http__ratelimit_headers(r, &job->lim) ||
        ((sse || job->stream) && (!http__hdr(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") ||
                                  !http__hdr(r, "X-Accel-Buffering", "no")))) {
        MHD_destroy_response(r); /* drops the reader's reference, if it took one */
        return MHD_NO;
    }
    job->h_status = job->status;
    *queue = r;
    return MHD_YES;
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

/* Marks requests the gateway answers itself (con_cls). */
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
static void http__notify(void *cls, struct MHD_Connection *conn, void **socket_context,
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
        guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* Called when a request line has arrived: the request's headers are on their way (its first
 * byte came a little earlier; the keep-alive wait is over). Returns the initial con_cls. */
static void *http__uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    guard_request_line(http__gconn(conn));
    return NULL;
}

static void http__count_status(void *arg, unsigned status)
{
    http__count(arg, status);
}

static const char *http__request_id(struct MHD_Connection *conn, char idbuf[33])
{
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    if (!rid || !request_id_valid(rid)) {
        request_id_new(idbuf);
        rid = idbuf;
    }
    return rid;
}

/* True when auth is off or the Bearer key is known; sets *key (NULL with auth off). */
static bool http__authorized(const struct config *cfg, struct MHD_Connection *conn,
                             const struct cfg_key **key)
{
    *key = NULL;
    if (!cfg->auth)
        return true;
    size_t klen = 0;
    const char *bearer = http__bearer(conn, &klen);
    *key = bearer ? config_key_find(cfg, bearer, klen) : NULL;
    return *key != NULL;
}

static enum MHD_Result http__admin(struct server *s, struct MHD_Connection *conn, enum route route,
                                   const char *rid, const struct snap *sn);

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
    struct snap *sn = pool_snap(s->pool);
    if (!sn)
        return http__error(s, conn, LGE_DRAINING, NULL, NULL, rid, 1000);
    enum MHD_Result ret;
    const struct cfg_key *key = NULL;
    bool needs_key = route == R_CHAT || route == R_COMPLETIONS || route == R_EMBEDDINGS ||
                     route == R_MODELS || route == R_MODEL || route == R_QUEUE;
    if (route == R_ADMIN_RELOAD || route == R_ADMIN_CONFIG)
        ret = http__admin(s, conn, route, rid, sn);
    else if (needs_key && !http__authorized(sn->cfg, conn, &key))
        ret = http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    else
        ret = http__get(s, conn, route, url, rid, key, sn);
    snap_put(sn);
    return ret;
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

/* Appends body bytes as they arrive. A body that passes max_body_bytes (chunked: its length
 * was not declared) or the memory budget is read on and discarded, and refused at its end:
 * libmicrohttpd cannot send an answer in the middle of an upload. */
static void http__take_body(struct server *s, struct job *job, const char *p, size_t n)
{
    if (job->h_refused != LGE_NONE)
        return;
    if (!buf_fits(&job->body, n)) {
        job->h_refused = LGE_TOO_LARGE;
    } else {
        size_t held = job->body_mem_held, need = buf_len(&job->body) + n;
        /* over the budget, or out of memory */
        if ((need > held && http__mem_take(s, job, need - held) != 0) ||
            buf_append(&job->body, p, n) != 0)
            job->h_refused = LGE_OVERLOADED;
    }
    if (job->h_refused != LGE_NONE) {
        buf_release(&job->body);
        atomic_fetch_sub_explicit(&s->body_mem, job->body_mem_held, memory_order_relaxed);
        job->body_mem_held = 0;
    }
}

/* The request's priority class: its key's (normal without auth), or a lower one it asks for
 * with X-Priority (a higher one is not granted). -1 for a value that is none of the three. */
static int http__priority(struct MHD_Connection *conn, const struct cfg_key *key)
{
    unsigned base = key ? key->priority : PRIO_NORMAL;
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Priority");
    if (!v)
        return (int)base;
    for (unsigned p = 0; p < PRIO__COUNT; p++)
        if (!strcasecmp(v, config_priority_name(p)))
            return (int)(p > base ? p : base);
    return -1;
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

/* Final call of a POST: validate, route, suspend, hand over. */
static enum MHD_Result http__submit(struct server *s, struct MHD_Connection *conn, struct job *job)
{
    char why[256];
    const char *param;
    struct req_info info;
    if (job->h_refused != LGE_NONE) {
        job->h_state = H_DONE;
        job->h_status = err_info(job->h_refused)->status;
        return http__error(s, conn, job->h_refused, NULL, NULL, job->request_id,
                           job->h_refused == LGE_OVERLOADED ? 1000 : 0);
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
    const struct config *cfg = job->snap->cfg;
    job->n_candidates =
        (unsigned)config_backends_for(cfg, job->model, job->candidates, JOB_MAX_CANDIDATES);
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

    /* Suspend before the hand-over, so the worker can only ever resume a suspended connection. */
    pthread_mutex_lock(&job->lock);
    job->suspended = true;
    MHD_suspend_connection(conn);
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

static enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    (void)upload_data;

    if (*con_cls == &http_deferred) {
        /* Not a proxied request: answered once the request is read completely, so the
         * connection stays reusable (an early answer makes libmicrohttpd close it). */
        if (*upload_data_size) {
            *upload_data_size = 0; /* discarded */
            return guard_touch(http__gconn(conn)) ? MHD_YES : MHD_NO;
        }
        *con_cls = NULL;
        if (!guard_enter(http__gconn(conn), G_BUSY))
            return MHD_NO;
        return http__answer_local(s, conn, url, method);
    }
    if (job) {
        if (job->h_state == H_BODY) {
            if (*upload_data_size) {
                http__take_body(s, job, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return guard_touch(http__gconn(conn)) ? MHD_YES : MHD_NO;
            }
            if (!guard_enter(http__gconn(conn), G_BUSY))
                return MHD_NO; /* cut by the guard: libmicrohttpd closes, completed frees */
            return http__submit(s, conn, job);
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
            if (queue) {
                r = MHD_queue_response(conn, status, queue);
                MHD_destroy_response(queue);
                http__count(s, status);
            }
            return r;
        }
        return MHD_YES;
    }

    /* first call: headers only. From here the body's deadline runs (client_body_timeout_s);
     * an answer given now ends the request (the guard's G_BUSY until it is sent). */
    if (!guard_enter(http__gconn(conn), G_BODY))
        return MHD_NO;
    char idbuf[33];
    const char *rid = http__request_id(conn, idbuf);
    const char *bad = http__framing(conn, version);
    if (bad) /* answered before any body byte, so libmicrohttpd closes the connection */
        return http__error(s, conn, LGE_INVALID_REQUEST, bad, NULL, rid, 0);
    int ri = http__route(url);
    if (ri < 0 || routes[ri].endpoint < 0 || strcmp(method, routes[ri].method) != 0) {
        *con_cls = &http_deferred;
        return MHD_YES;
    }
    /* The configuration this request is served with, to its end (a reload does not change it
     * under the request). */
    struct snap *sn = pool_snap(s->pool);
    if (!sn)
        return http__error(s, conn, LGE_DRAINING, NULL, NULL, rid, 1000);
    const struct config *cfg = sn->cfg;
    enum MHD_Result early = MHD_YES;
    bool refused = true;
    /* What the headers decide is answered now, before any body byte is read; libmicrohttpd
     * then closes the connection (the unread body cannot be skipped safely). */
    const struct cfg_key *key = NULL;
    int prio = -1;
    uint64_t retry_ms, clen = 0;
    enum lim_verdict lv;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!http__authorized(cfg, conn, &key))
        early = http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    else if ((prio = http__priority(conn, key)) < 0)
        early = http__error(s, conn, LGE_INVALID_REQUEST, "X-Priority must be high, normal or low",
                            NULL, rid, 0);
    else if ((lv = limits_check(s->limits, key, key ? clock_now_ns() : 0,
                                guard_conn_id(http__gconn(conn)), &retry_ms)) != LIM_OK)
        early = http__rate_limited(s, conn, key, lv, rid, retry_ms);
    else if (cl && (framing_parse_clen(cl, strlen(cl), &clen) != 0 || clen > cfg->max_body_bytes))
        early = http__error(s, conn, LGE_TOO_LARGE, NULL, NULL, rid, 0);
    else if (!(job = job_new(cfg->max_body_bytes, cfg->stream_buffer_bytes)))
        early = http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    else
        refused = false;
    if (refused) {
        snap_put(sn);
        return early;
    }
    job->snap = sn; /* released with the job */
    job->body_mem = &s->body_mem;
    /* A declared length is taken from the body budget and allocated at once. */
    if (clen > 0 && (http__mem_take(s, job, clen) != 0 || buf_reserve(&job->body, clen) != 0)) {
        job_unref(job);
        return http__error(s, conn, LGE_OVERLOADED, NULL, NULL, rid, 1000);
    }
    snprintf(job->request_id, sizeof(job->request_id), "%s", rid);
    job->t_start_ns = clock_now_ns();
    job->endpoint = (enum job_endpoint)routes[ri].endpoint;
    job->key = key;
    job->key_name = key ? key->name : NULL;
    job->prio = (unsigned)prio;
    job->h_state = H_BODY;
    job->http11 = framing_http11(version); /* 1.1 to 1.9; before the job is shared */
    *con_cls = job;
    return MHD_YES;
}

static void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct job *job = *con_cls;
    /* the response is out (or the request ended): keep-alive idle from now */
    guard_enter(http__gconn(conn), G_IDLE);
    if (!job || *con_cls == &http_deferred)
        return;
    *con_cls = NULL;
    if (job->lim_taken)
        limits_release(s->limits, job->key, job->lim_at_ns, job->key ? clock_now_ns() : 0);
    const struct config *cfg = job->snap->cfg;
    pthread_mutex_lock(&job->lock);
    job->client_gone = true;
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

/* ---------------------------------------------------------------------------------------- */
/* lifecycle                                                                                  */

/* libmicrohttpd's own messages are mostly about clients that went away: debug level. */
static void http__mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (log_enabled(LOG_DEBUG))
        log_vwrite(LOG_DEBUG, fmt, ap);
}

/* The listening socket, made here rather than by libmicrohttpd so that a port in use is an
 * error with its reason: libmicrohttpd's MHD_OPTION_LISTENING_ADDRESS_REUSE would set
 * SO_REUSEPORT and silently share the port with another process. SO_REUSEADDR only allows
 * binding over connections in TIME_WAIT (a restart), never a second listener. */
static int http__listen(const struct config *cfg, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0) {
        log_error("listen %s: socket: %s", cfg->listen, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        log_error("listen %s: setsockopt: %s", cfg->listen, strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = errno;
        log_error("cannot listen on %s: %s%s", cfg->listen, strerror(e),
                  e == EADDRINUSE ? " (another process, perhaps another llmgate, has the port)"
                                  : "");
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        log_error("cannot listen on %s: %s", cfg->listen, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Groups the configured models by their candidate backends. 0, or -1 out of memory. */
static int http__build_pools(struct http_derived *d, const struct config *cfg)
{
    for (size_t bi = 0; bi < cfg->n_backends; bi++) {
        for (size_t m = 0; m < cfg->backends[bi].models.n; m++) {
            const char *id = cfg->backends[bi].models.v[m];
            const struct cfg_backend *c[JOB_MAX_CANDIDATES];
            unsigned n = (unsigned)config_backends_for(cfg, id, c, JOB_MAX_CANDIDATES);
            if (n == 0 || c[0] != &cfg->backends[bi])
                continue; /* counted once, under the first backend that lists it */
            struct http_pool *p = NULL;
            for (size_t i = 0; i < d->n_pools && !p; i++) {
                bool same = d->pools[i].n_cands == n;
                for (unsigned k = 0; same && k < n; k++)
                    same = d->pools[i].cands[k] == c[k];
                if (same)
                    p = &d->pools[i];
            }
            if (!p) {
                struct http_pool *np = realloc(d->pools, (d->n_pools + 1) * sizeof(*np));
                if (!np)
                    return -1;
                d->pools = np;
                p = &d->pools[d->n_pools++];
                memset(p, 0, sizeof(*p));
                for (unsigned k = 0; k < n; k++)
                    p->cands[k] = c[k];
                p->n_cands = n;
            }
            const char **nm = realloc(p->models, (p->n_models + 1) * sizeof(*nm));
            if (!nm)
                return -1;
            p->models = nm;
            p->models[p->n_models++] = id;
        }
    }
    return 0;
}

static void http__derived_free(void *arg)
{
    struct http_derived *d = arg;
    if (!d)
        return;
    for (size_t i = 0; i < d->n_pools; i++)
        free(d->pools[i].models);
    free(d->pools);
    free(d->models_json);
    for (size_t i = 0; d->key_models_json && i < d->n_keys; i++)
        free(d->key_models_json[i]);
    free(d->key_models_json);
    free(d->key_models_len);
    free(d);
}

int server_prepare(struct snap *sn)
{
    const struct config *cfg = sn->cfg;
    struct http_derived *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    sn->http = d;
    sn->http_free = http__derived_free;
    d->n_keys = cfg->n_keys;
    d->models_json = http__models_list(cfg, NULL, &d->models_len);
    d->key_models_json = calloc(cfg->n_keys + 1, sizeof(*d->key_models_json));
    d->key_models_len = calloc(cfg->n_keys + 1, sizeof(*d->key_models_len));
    if (!d->models_json || !d->key_models_json || !d->key_models_len ||
        http__build_pools(d, cfg) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (cfg->keys[i].models.n == 0)
            continue;
        d->key_models_json[i] = http__models_list(cfg, &cfg->keys[i], &d->key_models_len[i]);
        if (!d->key_models_json[i])
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* reload                                                                                     */

int server_reload(struct server *s, struct buf *out)
{
    pthread_mutex_lock(&s->reload_lock);
    struct snap *cur = pool_snap(s->pool);
    struct config_errors errs = {0};
    struct config *cfg = cur ? config_load(cur->cfg->path, &errs) : NULL;
    int status = 200, rc = 0;
    if (!cfg) {
        atomic_fetch_add(&s->reloads_failed, 1);
        status = 400;
        log_warn("reload refused (%zu problem%s); the running configuration stays", errs.n,
                 errs.n == 1 ? "" : "s");
        for (size_t i = 0; i < errs.n; i++)
            log_warn("reload refused: %s", errs.msgs[i]);
        if (out) {
            /* the envelope's message holds them all; "errors" lists them one by one */
            struct buf msg;
            buf_init(&msg, 1u << 20);
            int mrc = buf_printf(&msg, "the configuration was not reloaded: ");
            for (size_t i = 0; i < errs.n && mrc == 0; i++)
                mrc = buf_printf(&msg, "%s%s", i ? "; " : "", errs.msgs[i]);
            if (errs.n == 0)
                mrc = mrc || buf_printf(&msg, "out of memory");
            rc = mrc || buf_printf(out, "{\"error\":{\"message\":") ||
                 esc_json_buf(out, buf_data(&msg), buf_len(&msg)) ||
                 buf_printf(out, ",\"type\":\"invalid_request_error\",\"param\":null,"
                                 "\"code\":\"invalid_config\"},\"errors\":[");
            for (size_t i = 0; i < errs.n && rc == 0; i++)
                rc = (i ? buf_printf(out, ",") : 0) ||
                     esc_json_buf(out, errs.msgs[i], strlen(errs.msgs[i]));
            rc = rc || buf_printf(out, "]}");
            buf_release(&msg);
        }
        config_errors_release(&errs);
        snap_put(cur);
        pthread_mutex_unlock(&s->reload_lock);
        return rc ? 500 : status;
    }
    /* cur holds what runs of the keys only a start changes (each reload keeps them): the
     * file's different values are reported, then replaced by the running ones */
    const char *restart[16];
    size_t n_restart = config_restart_diff(cur->cfg, cfg, restart, 16);
    if (config_restart_keep(cfg, cur->cfg) != 0) {
        config_free(cfg);
        atomic_fetch_add(&s->reloads_failed, 1);
        log_error("reload failed: out of memory; the running configuration stays");
        snap_put(cur);
        pthread_mutex_unlock(&s->reload_lock);
        return 500;
    }
    size_t n_be = cfg->n_backends, n_keys = cfg->n_keys;
    enum log_level lv = LOG_INFO;
    log_parse_level(cfg->log_level, &lv);
    struct snap *sn = pool_prepare(s->pool, cfg); /* takes cfg over */
    if (!sn || server_prepare(sn) != 0) {
        snap_put(sn);
        atomic_fetch_add(&s->reloads_failed, 1);
        log_error("reload failed: out of memory; the running configuration stays");
        snap_put(cur);
        pthread_mutex_unlock(&s->reload_lock);
        return 500; /* the caller answers its own out-of-memory envelope */
    }
    snap_put(cur); /* before the publication waits for readers: we are one of them no more */
    log_set_level(lv);
    uint64_t gen = pool_publish(s->pool, sn);
    atomic_fetch_add(&s->reloads_ok, 1);
    log_info("reload: generation %llu (%zu backend%s, %zu key%s)", (unsigned long long)gen, n_be,
             n_be == 1 ? "" : "s", n_keys, n_keys == 1 ? "" : "s");
    for (size_t i = 0; i < n_restart; i++)
        log_warn("reload: %s changed; it takes effect at the next start", restart[i]);
    if (out) {
        rc = buf_printf(out,
                        "{\"status\":\"reloaded\",\"generation\":%llu,\"backends\":%zu,"
                        "\"keys\":%zu,\"restart_required\":[",
                        (unsigned long long)gen, n_be, n_keys);
        for (size_t i = 0; i < n_restart && rc == 0; i++)
            rc = buf_printf(out, "%s\"%s\"", i ? "," : "", restart[i]);
        rc = rc || buf_printf(out, "]}");
    }
    pthread_mutex_unlock(&s->reload_lock);
    return rc ? 500 : status;
}

/* The admin endpoints: behind [admin] key; without one the admin API does not exist (404). */
static enum MHD_Result http__admin(struct server *s, struct MHD_Connection *conn, enum route route,
                                   const char *rid, const struct snap *sn)
{
    const struct config *cfg = sn->cfg;
    if (!cfg->admin_key)
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    size_t klen = 0;
    const char *bearer = http__bearer(conn, &klen);
    if (!bearer || !config_admin_ok(cfg, bearer, klen))
        return http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    if (route == R_ADMIN_RELOAD) {
        struct buf b;
        buf_init(&b, HTTP_DOC_MAX);
        int status = server_reload(s, &b);
        if (status == 500) {
            buf_release(&b);
            return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
        }
        enum MHD_Result r = http__send(s, conn, (unsigned)status, "application/json", buf_data(&b),
                                       buf_len(&b), rid, 0);
        buf_release(&b);
        return r;
    }
    /* GET /admin/config: the live configuration as --dump-config writes it, keys masked */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    config_dump(cfg, f);
    int bad = ferror(f);
    fclose(f);
    enum MHD_Result r;
    struct MHD_Response *resp =
        bad ? NULL : MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    char gen[24];
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)sn->gen);
    if (!resp) {
        r = http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    } else if (!http__hdr(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8") ||
               !http__hdr(resp, "X-Request-ID", rid) ||
               !http__hdr(resp, "X-Llmgate-Generation", gen)) {
        MHD_destroy_response(resp);
        r = MHD_NO;
    } else {
        r = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp);
        http__count(s, 200);
    }
    free(text);
    return r;
}

/* The acceptor's hand-over. libmicrohttpd queues the connection for one of its threads (woken
 * through its ITC) and closes the socket itself when it cannot take it. */
static void http__add_connection(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
    struct server *s = arg;
    if ((size_t)fd < s->n_stamps) {
        /* ordered before the reader by libmicrohttpd's new-connection mutex */
        atomic_store_explicit(&s->stamps[fd].ms, guard_now_ms(), memory_order_relaxed);
        atomic_store_explicit(&s->stamps[fd].seq, ++s->accept_seq, memory_order_relaxed);
    }
    if (MHD_add_connection(s->daemon, fd, sa, len) != MHD_YES)
        log_debug("a new connection was refused: %s", strerror(errno));
}

struct server *server_new(const struct config *cfg, struct pool *pool)
{
    struct server *s = calloc(1, sizeof(*s));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->reload_lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->pool = pool;
    s->limits = pool_limits(pool);
    s->started_wall = clock_wall_s();
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (gai != 0) {
        log_error("listen %s: %s", cfg->listen, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    int lfd = http__listen(cfg, ai);
    freeaddrinfo(ai);
    if (lfd < 0)
        goto fail;
    struct guard_limits gl = {.header_ms = cfg->client_header_timeout_s * 1000u,
                              .body_ms = cfg->client_body_timeout_s * 1000u,
                              .keepalive_ms = cfg->keepalive_timeout_s * 1000u,
                              .max_conns = cfg->max_connections,
                              .count_status = http__count_status,
                              .count_arg = s};
    s->guard = guard_new(&gl);
    struct rlimit rl;
    s->n_stamps = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                      ? (size_t)rl.rlim_cur
                      : 65536;
    if (s->n_stamps > (1u << 22))
        s->n_stamps = 1u << 22; /* a descriptor above it is stamped when registered */
    s->stamps = calloc(s->n_stamps, sizeof(*s->stamps));
    if (!s->guard || !s->stamps) {
        close(lfd);
        goto fail;
    }
    /* libmicrohttpd's own limit sits above max_connections, so that a new connection reaches
     * the guard, which makes room for it (libmicrohttpd splits its limit between its threads
     * and would refuse silently). Its inactivity timeout is left as a backstop after the
     * guard's deadlines, and is what ends a response whose client takes no byte of it. */
    unsigned mhd_limit = cfg->max_connections + cfg->max_connections / 4 + 64 * cfg->threads;
    unsigned backstop = cfg->client_header_timeout_s;
    if (cfg->client_body_timeout_s > backstop)
        backstop = cfg->client_body_timeout_s;
    if (cfg->keepalive_timeout_s > backstop)
        backstop = cfg->keepalive_timeout_s;
    backstop += 5;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, http__access, s, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)cfg->threads, MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)cfg->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, backstop, MHD_OPTION_NOTIFY_COMPLETED, http__completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, http__notify, s, MHD_OPTION_URI_LOG_CALLBACK, http__uri_log,
        s, MHD_OPTION_EXTERNAL_LOGGER, http__mhd_log, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (!s->daemon) {
        close(lfd);
        log_error("cannot start the HTTP server on %s", cfg->listen);
        goto fail;
    }
    s->acceptor = acceptor_start(lfd, http__add_connection, s);
    if (!s->acceptor) {
        close(lfd);
        log_error("cannot start accepting on %s", cfg->listen);
        goto fail;
    }
    return s;
fail:
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    guard_free(s->guard);
    free(s->stamps);
    pthread_mutex_destroy(&s->reload_lock);
    free(s);
    return NULL;
}

void server_quiesce(struct server *s)
{
    acceptor_stop(s->acceptor); /* closes the listening socket: new connections are refused */
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
    acceptor_free(s->acceptor); /* first: nothing is handed to a stopping daemon */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    guard_free(s->guard); /* after libmicrohttpd: every connection is closed */
    free(s->stamps);
    pthread_mutex_destroy(&s->reload_lock);
    free(s);
}
