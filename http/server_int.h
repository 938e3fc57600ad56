/* server_int.h — what the rooms of the HTTP front end share (not for outside http/).
 *
 *   server.c   lifecycle: listening socket, libmicrohttpd's options, acceptor hand-over
 *   access.c   libmicrohttpd's request callbacks: the access state machine, body budget,
 *              submit, completion and access log
 *   local.c    the route table and the documents the gateway answers itself, with what it
 *              derives from each configuration for them (server_prepare)
 *   metrics.c  GET /metrics
 *   admin.c    POST /admin/reload, GET /admin/config
 *   caller.c   who is asking: request id, API key, priority
 *   respond.c  answers through libmicrohttpd: documents, error envelopes, the stream adapter
 *   reply.c    header and error-reply helpers shared with the guard (http/reply.h)
 * and beside them the front door's guard.c (deadlines, connection table), linger.c (the
 * lingering close) and framing.c (the byte scanner).
 *
 * Calls run downwards only: server -> access -> local -> {admin, metrics} -> caller ->
 * respond -> reply. */
#ifndef LG_SERVER_INT_H
#define LG_SERVER_INT_H

#include "core/errors.h"
#include "inference/job.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct cfg_backend;
struct cfg_key;
struct config;
struct job;
struct snap;

/* Per-connection memory pool of libmicrohttpd: request line and headers, and the chunk being
 * sent. libmicrohttpd zeroes it for every request, so its size is paid per request. */
#define HTTP_CONN_MEMORY 16384
/* A callback response asks the reader for at most this much per call (it also cannot exceed
 * the connection's free pool memory). */
#define HTTP_BLOCK_SIZE 8192
/* The paused upstream is resumed once this much fits in the stream buffer again: one full curl
 * write (CURL_MAX_WRITE_SIZE). */
#define HTTP_UNPAUSE_ROOM 16384
/* A request body's first reservation from max_body_memory, whatever its declared length: the
 * reservation then doubles as the bytes arrive, up to the declared length (http_body_step). The
 * default table (8,192 connections) of clients that each sent a byte holds 128 MiB at most. */
#define HTTP_BODY_FIRST 16384
/* The reservation for a body of `need` bytes so far, holding `held`, of which `arrived` bytes
 * have come (need plus what waits in the socket): held, or the larger of the next doubling
 * step (from HTTP_BODY_FIRST) and `arrived`, capped at the declared length (0: none) and at
 * `ceiling` (max_body_bytes), never below need. Exposed for the unit tests. */
size_t http_body_step(size_t held, size_t need, size_t arrived, uint64_t declared, size_t ceiling);

/* Documents the gateway writes itself are small: this ceiling only stops a runaway. */
#define HTTP_DOC_MAX (64u << 20)

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

struct http_route {
    const char *path;
    enum route route;
    const char *method;
    int endpoint; /* enum job_endpoint of a proxied path, -1 for local ones */
};
extern const struct http_route http_routes[];
#define HTTP_N_ROUTES 11

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

/* Where a SIGTERM has taken the server (server_grace, server_quiesce); only moves forward. */
enum srv_phase {
    SRV_SERVING = 0,
    SRV_GRACE,   /* /ready answers 503 "draining"; every request is served as before */
    SRV_DRAINING /* listener closed; replies carry Connection: close; idle connections closed */
};

struct server {
    struct pool *pool;
    struct reloader *reloader; /* POST /admin/reload and the reload counters */
    struct MHD_Daemon *daemon;
    struct guard *guard;       /* client deadlines and the connection table */
    struct acceptor *acceptor; /* owns the listening socket (see http/accept.h) */
    struct peers *peers;       /* connections per address (max_connections_per_ip), or NULL */
    atomic_uint_fast64_t per_ip_refused;
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
    atomic_size_t body_mem;         /* request body bytes held by jobs; <= max_body_memory */
    pthread_mutex_t admin_lock;     /* admin_waits */
    struct admin_wait *admin_waits; /* POST /admin/reload requests waiting for the reloader */
    atomic_int phase;    /* enum srv_phase: set by the main thread, read by every other */
    unsigned backstop_s; /* libmicrohttpd's inactivity timeout (server.c) */
};

/* The server's phase (enum srv_phase). */
static inline enum srv_phase http__phase(struct server *s)
{
    return (enum srv_phase)atomic_load_explicit(&s->phase, memory_order_relaxed);
}

/* respond.c */
void http__count(struct server *s, unsigned status);
/* Queues a complete in-memory response. `body` is copied. */
enum MHD_Result http__send(struct server *s, struct MHD_Connection *conn, unsigned status,
                           const char *ctype, const char *body, size_t len, const char *request_id,
                           uint64_t retry_ms);
enum MHD_Result http__error(struct server *s, struct MHD_Connection *conn, enum lg_err e,
                            const char *msg, const char *param, const char *request_id,
                            uint64_t retry_ms);
enum MHD_Result http__send_buf(struct server *s, struct MHD_Connection *conn, unsigned status,
                               struct buf *b, int built, const char *rid);
/* Caller holds job->lock; queues an error itself, leaves the upstream's response in *queue
 * for the caller to queue after unlocking. */
enum MHD_Result http__respond_locked(struct server *s, struct MHD_Connection *conn, struct job *job,
                                     struct MHD_Response **queue);

/* caller.c */
const char *http__bearer(struct MHD_Connection *conn, size_t *len);
const char *http__request_id(struct MHD_Connection *conn, char idbuf[33]);
bool http__authorized(const struct config *cfg, struct MHD_Connection *conn,
                      const struct cfg_key **key);
int http__priority(struct MHD_Connection *conn, const struct cfg_key *key);

/* local.c */
int http__route(const char *url);
enum MHD_Result http__answer_local(struct server *s, struct MHD_Connection *conn, const char *url,
                                   const char *method, void **con_cls);

/* metrics.c */
enum MHD_Result http__metrics(struct server *s, struct MHD_Connection *conn, const char *rid,
                              const struct snap *sn);

/* admin.c. POST /admin/reload suspends its connection, sets *con_cls to &http__admin_mark
 * and hands the reload to the reloader's thread, which resumes it: the access handler then
 * calls http__admin_resumed (the completion callback http__admin_gone, for a client that
 * left). */
extern char http__admin_mark;
enum MHD_Result http__admin(struct server *s, struct MHD_Connection *conn, enum route route,
                            const char *rid, const struct snap *sn, void **con_cls);
enum MHD_Result http__admin_resumed(struct server *s, struct MHD_Connection *conn, void **con_cls);
void http__admin_gone(struct server *s, struct MHD_Connection *conn);
/* Frees what is left of the waits (server_free, after the daemon stopped). */
void http__admin_free(struct server *s);

/* access.c: libmicrohttpd's callbacks (cls is the server) */
void http__notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code);
void *http__uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls);
void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                     enum MHD_RequestTerminationCode toe);

#endif
