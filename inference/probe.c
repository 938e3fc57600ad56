/* probe.c — worker 0's active health probes (GET /v1/models on every backend). */
#include "inference/worker_int.h"

#include "core/clock.h"
#include "core/log.h"
#include "inference/backend.h"
#include "inference/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/compiler.h>

/* ---------------------------------------------------------------------------------------- */
/* health probes (worker 0)                                                                 */

static size_t worker__discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

void worker__probes_free(struct worker *w)
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

static void probe__done(struct worker *w, struct xfer_owner *o, CURLcode rc);
static const struct xfer_ops probe__xfer = {.on_done = probe__done};

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
        pr->xfer.ops = &probe__xfer;
        curl_easy_setopt(pr->easy, CURLOPT_PRIVATE, &pr->xfer);
        curl_easy_setopt(pr->easy, CURLOPT_OPENSOCKETFUNCTION, worker__open_socket);
        curl_easy_setopt(pr->easy, CURLOPT_OPENSOCKETDATA, w);
        curl_easy_setopt(pr->easy, CURLOPT_CLOSESOCKETFUNCTION, worker__close_socket);
        curl_easy_setopt(pr->easy, CURLOPT_CLOSESOCKETDATA, w);
        curl_easy_setopt(pr->easy, CURLOPT_USERAGENT, "llmgate/" LLMGATE_VERSION " probe");
    }
}

/* A probe's transfer ended (xfer_ops.on_done of every probe's easy handle). */
static void probe__done(struct worker *w, struct xfer_owner *o, CURLcode rc)
{
    struct probe *pr = caa_container_of(o, struct probe, xfer);
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

void worker__run_probes(struct worker *w, uint64_t now)
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
