/* metrics.c — GET /metrics: the Prometheus text exposition of the gateway's counters and
 * gauges, read from the router, the pool, the guard, the key limits and the reloader. */
#include "core/config.h"
#include "core/errors.h"
#include "core/esc.h"
#include "http/guard.h"
#include "http/server_int.h"
#include "inference/backend.h"
#include "inference/limits.h"
#include "inference/reload.h"
#include "inference/router.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <microhttpd.h>
#include <stdatomic.h>

enum MHD_Result http__metrics(struct server *s, struct MHD_Connection *conn, const char *rid,
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
    uint64_t lingering, lingered;
    guard_linger_stats(s->guard, &lingering, &lingered);
    uint64_t reloads_ok, reloads_failed;
    reloader_counts(s->reloader, &reloads_ok, &reloads_failed);
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
        {"llmgate_client_send_timeouts_total", "counter",
         "Clients cut for taking no response byte for client_send_timeout_s.", ps.send_timeouts},
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
        {"llmgate_requests_parked_total", "counter",
         "Requests that waited for a permit parked (their body's last byte held), not suspended.",
         gs.parked},
        {"llmgate_connections_refused_total", "counter",
         "New connections refused with 503: every slot busy with a request.", gs.refused},
        {"llmgate_connections_per_ip_refused_total", "counter",
         "New connections refused with 429: their address had max_connections_per_ip open.",
         atomic_load_explicit(&s->per_ip_refused, memory_order_relaxed)},
        {"llmgate_lingering_connections", "gauge",
         "Sockets answered before their body's end, drained before their close.", lingering},
        {"llmgate_lingering_closes_total", "counter",
         "Sockets drained before their close (lingering close), in all.", lingered},
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
                        (unsigned long long)reloads_ok, (unsigned long long)reloads_failed);
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
