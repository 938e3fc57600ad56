/* local.c — the routes and what the gateway answers itself: health, readiness, models, the
 * caller's queue, and what it derives from each configuration to answer them quickly (a
 * snapshot's `http` part, built by server_prepare). libmicrohttpd threads, except
 * server_prepare (whoever prepares a snapshot). */
#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/esc.h"
#include "http/server.h"
#include "http/server_int.h"
#include "inference/job.h"
#include "inference/limits.h"
#include "inference/router.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

const struct http_route http_routes[] = {
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

_Static_assert(sizeof(http_routes) / sizeof(http_routes[0]) == HTTP_N_ROUTES,
               "HTTP_N_ROUTES (server_int.h) counts the route table");

int http__route(const char *url)
{
    for (size_t i = 0; i < HTTP_N_ROUTES; i++)
        if (!strcmp(url, http_routes[i].path))
            return (int)i;
    return -1;
}

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
        /* draining (SIGTERM): out of the balancer's rotation, though still serving */
        bool draining = http__phase(s) != SRV_SERVING;
        bool ready = !draining && router_ready(cfg);
        static const char *const names[] = {"unknown", "up", "down"};
        rc = buf_printf(&b, "{\"status\":\"%s\",\"backends\":{",
                        draining ? "draining"
                        : ready  ? "ready"
                                 : "not_ready");
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

/* Everything that is not a proxied request: local endpoints and request errors. */
enum MHD_Result http__answer_local(struct server *s, struct MHD_Connection *conn, const char *url,
                                   const char *method, void **con_cls)
{
    char idbuf[33];
    const char *rid = http__request_id(conn, idbuf);
    int ri = http__route(url);
    enum route route = ri >= 0 ? http_routes[ri].route : R_NONE;
    if (route == R_NONE && !strncmp(url, "/v1/models/", 11) && url[11])
        route = R_MODEL;
    if (route == R_NONE)
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    const char *want = route == R_MODEL ? "GET" : http_routes[ri].method;
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
        ret = http__admin(s, conn, route, rid, sn, con_cls);
    else if (needs_key && !http__authorized(sn->cfg, conn, &key))
        ret = http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    else
        ret = http__get(s, conn, route, url, rid, key, sn);
    snap_put(sn);
    return ret;
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
