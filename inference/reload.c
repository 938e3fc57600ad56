/* reload.c — see reload.h. */
#include "inference/reload.h"

#include "core/log.h"
#include "inference/snap.h"
#include "inference/worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct reloader {
    struct pool *pool;
    int (*derive)(struct snap *sn);
    pthread_mutex_t lock; /* one reload at a time */
    atomic_uint_fast64_t ok, failed;
};

struct reloader *reloader_new(struct pool *pool, int (*derive)(struct snap *sn))
{
    struct reloader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->pool = pool;
    r->derive = derive;
    return r;
}

void reloader_free(struct reloader *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void reloader_counts(struct reloader *r, uint64_t *ok, uint64_t *failed)
{
    *ok = atomic_load(&r->ok);
    *failed = atomic_load(&r->failed);
}

void reload_result_release(struct reload_result *res)
{
    config_errors_release(&res->errs);
}

static int reload__fail(struct reloader *r, struct reload_result *res, struct snap *cur, int status)
{
    atomic_fetch_add(&r->failed, 1);
    snap_put(cur);
    pthread_mutex_unlock(&r->lock);
    return res->status = status;
}

int reloader_run(struct reloader *r, struct reload_result *res)
{
    memset(res, 0, sizeof(*res));
    pthread_mutex_lock(&r->lock);
    struct snap *cur = pool_snap(r->pool);
    struct config *cfg = cur ? config_load(cur->cfg->path, &res->errs) : NULL;
    if (!cfg) {
        log_warn("reload refused (%zu problem%s); the running configuration stays", res->errs.n,
                 res->errs.n == 1 ? "" : "s");
        for (size_t i = 0; i < res->errs.n; i++)
            log_warn("reload refused: %s", res->errs.msgs[i]);
        return reload__fail(r, res, cur, 400);
    }
    /* cur holds what runs of the keys only a start changes (each reload keeps them): the
     * file's different values are reported, then replaced by the running ones */
    res->n_restart = config_restart_diff(cur->cfg, cfg, res->restart, RELOAD_MAX_RESTART);
    if (config_restart_keep(cfg, cur->cfg) != 0) {
        config_free(cfg);
        log_error("reload failed: out of memory; the running configuration stays");
        return reload__fail(r, res, cur, 500);
    }
    res->n_backends = cfg->n_backends;
    res->n_keys = cfg->n_keys;
    enum log_level lv = LOG_INFO;
    log_parse_level(cfg->log_level, &lv);
    struct snap *sn = pool_prepare(r->pool, cfg); /* takes cfg over */
    if (!sn || (r->derive && r->derive(sn) != 0)) {
        snap_put(sn);
        log_error("reload failed: out of memory; the running configuration stays");
        return reload__fail(r, res, cur, 500);
    }
    snap_put(cur); /* before the publication waits for readers: we are one of them no more */
    log_set_level(lv);
    res->gen = pool_publish(r->pool, sn);
    atomic_fetch_add(&r->ok, 1);
    log_info("reload: generation %llu (%zu backend%s, %zu key%s)", (unsigned long long)res->gen,
             res->n_backends, res->n_backends == 1 ? "" : "s", res->n_keys,
             res->n_keys == 1 ? "" : "s");
    for (size_t i = 0; i < res->n_restart; i++)
        log_warn("reload: %s changed; it takes effect at the next start", res->restart[i]);
    pthread_mutex_unlock(&r->lock);
    return res->status = 200;
}
