/* reload.h — configuration reload: re-read the live configuration's file (and the LLMGATE_*
 * environment), validate it, keep what only a start changes, bind it (pool_prepare), let the
 * layers above add what they derive from it (the `derive` hook: the HTTP side's documents,
 * registered by whoever starts the gateway, so that no call runs back up from here), and
 * publish it. New requests see it; requests in flight keep theirs. A bad file changes nothing.
 *
 * Callers: SIGHUP (main thread) and POST /admin/reload. Any thread except from inside a
 * request's snapshot read section; one reload runs at a time (the others wait). */
#ifndef LG_RELOAD_H
#define LG_RELOAD_H

#include "core/config.h"

#include <stddef.h>
#include <stdint.h>

struct pool;
struct reloader;
struct snap;

#define RELOAD_MAX_RESTART 16

/* What one reload did. */
struct reload_result {
    int status;                /* 200 reloaded, 400 the file was refused, 500 out of memory */
    struct config_errors errs; /* why the file was refused (400) */
    uint64_t gen;              /* the generation published (200) */
    size_t n_backends, n_keys; /* of the published configuration */
    const char *restart[RELOAD_MAX_RESTART]; /* keys whose change waits for a restart */
    size_t n_restart;
};

/* A reloader for `pool`; `derive` (may be NULL) adds the derived data to each prepared
 * snapshot and returns 0, or -1 out of memory. NULL out of memory. */
struct reloader *reloader_new(struct pool *pool, int (*derive)(struct snap *sn));
void reloader_free(struct reloader *r);

/* Reloads (see above) and logs the outcome; fills *res (release it with
 * reload_result_release). Returns res->status. */
int reloader_run(struct reloader *r, struct reload_result *res);
void reload_result_release(struct reload_result *res);

/* Reloads since start, by outcome (200, and any other). */
void reloader_counts(struct reloader *r, uint64_t *ok, uint64_t *failed);

#endif
