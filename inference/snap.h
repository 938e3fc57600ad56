/* snap.h — a published configuration: the loaded file (struct config) with the runtime objects
 * bound to it (backend objects, key states, upstream URLs, admission pools) and what the HTTP
 * side derives from it (GET /v1/models documents), under one reference count.
 *
 * One snapshot is current. A request pins the current one when it arrives (snap_current: an
 * RCU read section of the bullet-proof flavour, urcu-bp, usable from libmicrohttpd's threads,
 * then a reference) and keeps it to its end, however long its stream: its key, limits,
 * candidates and upstream stay those it started with. A reload publishes a new one
 * (snap_publish: pointer exchange, grace period, the old one's publication reference dropped);
 * the old one is freed, with what only it binds, when its last request ends. */
#ifndef LG_SNAP_H
#define LG_SNAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct config;

struct snap {
    atomic_uint ref;
    uint64_t gen; /* 1 for the configuration loaded at start, +1 per reload */
    struct config *cfg;
    void *http; /* the HTTP side's derived documents, freed by http_free */
    void (*http_free)(void *http);
    void (*unbind)(struct snap *s, void *arg); /* the inference layer's runtime objects */
    void *unbind_arg;
    /* When set, the last reference hands the snapshot to reap (which calls snap_free, perhaps
     * on another thread) instead of freeing it on the thread that dropped it. */
    void (*reap)(struct snap *s, void *arg);
    void *reap_arg;
    struct snap *reap_next; /* the reaper's list */
};

/* The publication point. */
struct snap_slot {
    struct snap *cur;     /* RCU-protected */
    pthread_mutex_t lock; /* one publisher at a time */
    uint64_t gen;
};

/* A snapshot of cfg (taken over: freed with it), one reference (the caller's). */
struct snap *snap_new(struct config *cfg);

void snap_ref(struct snap *s);
/* Drops a reference; the last one unbinds, frees the derived data and the config (or hands the
 * snapshot to its reap hook, which does). NULL ok. */
void snap_put(struct snap *s);

/* Unbinds and frees s now (its reference count is 0). */
void snap_free(struct snap *s);

void snap_slot_init(struct snap_slot *slot);
/* Drops the current snapshot's publication reference. */
void snap_slot_release(struct snap_slot *slot);

/* The current snapshot with a reference the caller drops with snap_put. Any thread. */
struct snap *snap_current(struct snap_slot *slot);

/* Makes s current (taking over the caller's reference) and gives it the next generation; waits
 * for every reader that may have seen the previous one to hold its own reference, then drops
 * the previous one's publication reference. Not from inside snap_current's read section. */
void snap_publish(struct snap_slot *slot, struct snap *s);

#endif
