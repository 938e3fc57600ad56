/* backend.c — see backend.h. */
#include "inference/backend.h"

#include "core/config.h"

#include <stdlib.h>
#include <string.h>

struct backends {
    pthread_mutex_t lock;
    struct backend *head;
};

struct backends *backends_new(void)
{
    struct backends *reg = calloc(1, sizeof(*reg));
    if (reg && pthread_mutex_init(&reg->lock, NULL) != 0) {
        free(reg);
        return NULL;
    }
    return reg;
}

void backends_free(struct backends *reg)
{
    if (!reg)
        return;
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static void backend__free(struct backend *b)
{
    pthread_mutex_destroy(&b->plock);
    free(b->pools);
    free(b->name);
    free(b->url);
    free(b);
}

static struct backend *backend__new(const struct cfg_backend *cb)
{
    struct backend *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->name = strdup(cb->name);
    b->url = strdup(cb->url);
    if (!b->name || !b->url || pthread_mutex_init(&b->plock, NULL) != 0) {
        free(b->name);
        free(b->url);
        free(b);
        return NULL;
    }
    atomic_init(&b->ref, 0);
    atomic_init(&b->health, HEALTH_UNKNOWN);
    return b;
}

/* Drops one reference; unlinks and frees the object at 0. Registry lock held. */
static void backends__put_locked(struct backends *reg, struct backend *b)
{
    if (atomic_fetch_sub(&b->ref, 1) != 1)
        return;
    for (struct backend **pp = &reg->head; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    backend__free(b);
}

int backends_bind(struct backends *reg, struct config *cfg)
{
    pthread_mutex_lock(&reg->lock);
    size_t i;
    for (i = 0; i < cfg->n_backends; i++) {
        struct cfg_backend *cb = &cfg->backends[i];
        struct backend *b = reg->head;
        while (b && (strcmp(b->name, cb->name) != 0 || strcmp(b->url, cb->url) != 0))
            b = b->next;
        if (!b) {
            b = backend__new(cb);
            if (!b)
                break;
            b->next = reg->head;
            reg->head = b;
        }
        atomic_fetch_add(&b->ref, 1);
        atomic_store(&b->max, cb->max_concurrency);
        cb->be = b;
    }
    if (i < cfg->n_backends) {
        while (i-- > 0) {
            backends__put_locked(reg, cfg->backends[i].be);
            cfg->backends[i].be = NULL;
        }
        pthread_mutex_unlock(&reg->lock);
        return -1;
    }
    pthread_mutex_unlock(&reg->lock);
    return 0;
}

void backends_unbind(struct backends *reg, struct config *cfg)
{
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        if (cfg->backends[i].be)
            backends__put_locked(reg, cfg->backends[i].be);
        cfg->backends[i].be = NULL;
    }
    pthread_mutex_unlock(&reg->lock);
}

void backend_hold_sample(struct backend *b, uint64_t held_ns)
{
    /* smoothed with its deviation (eta_smooth); concurrent samples may lose one: harmless */
    uint64_t h = atomic_load_explicit(&b->hold_ns, memory_order_relaxed);
    uint64_t d = atomic_load_explicit(&b->hold_dev_ns, memory_order_relaxed);
    eta_smooth(&h, &d, held_ns);
    atomic_store_explicit(&b->hold_ns, h, memory_order_relaxed);
    atomic_store_explicit(&b->hold_dev_ns, d, memory_order_relaxed);
}
