/*
 * mock.h — shared declarations of the mockllm mock inference engine (cmd/mockllm/).
 *
 * Modules: main.c (flags, sockets, threads, signals), server.c (one epoll loop per thread:
 * connections, timers, HTTP/1.1 I/O), http1.c (request head and chunked-body parser), api.c
 * (OpenAI endpoints: request JSON in, response bytes out), sbuf.c (growable byte buffer).
 *
 * Threading: every worker thread owns its epoll loop, listening socket, connections, timers and
 * api context; nothing is shared between threads except the read-only configuration and the
 * statistics shards (relaxed atomics, one cache line per thread).
 */
#ifndef MOCKLLM_MOCK_H
#define MOCKLLM_MOCK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#define MOCK_MAX_HEAD (16 * 1024)        /* request line + headers */
#define MOCK_MAX_BODY (16 * 1024 * 1024) /* decoded request body; 413 beyond */
#define MOCK_MAX_TOKENS 100000
#define MOCK_MAX_DELAY_MS 3600000 /* one hour: bound of every delay knob */
#define MOCK_CREATED 1700000000

/* Immutable after startup; read by every thread. */
struct mock_config {
    char host[256];
    int port;
    int threads;
    char **models; /* n_models non-empty strings */
    size_t n_models;
    int ttft_ms;
    int itl_ms;
    int tokens;
    int embedding_dim;
    int fail_status;   /* 0: not set */
    double fail_rate;  /* < 0: not set */
    int fail_after_ms; /* failures answered after this delay (0: at once) */
    int close_after;   /* < 0: off */
    int hang;          /* bool */
    int accept_delay_ms;
    int quiet; /* bool */
};

/* ---------------------------------------------------------------------------------------------
 * sbuf: growable byte buffer. Fields are private to sbuf.c except p/len (read) and err. An
 * allocation failure sets err and makes further appends no-ops; check err once at the end.
 */
struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    int err;
};

/* Frees the storage; the sbuf is then empty and reusable. Accepts an empty sbuf. */
void sbuf_release(struct sbuf *b);
/* Makes room for at least `extra` more bytes. Returns 0, or -1 (and sets err) on failure. */
int sbuf_reserve(struct sbuf *b, size_t extra);
void sbuf_add(struct sbuf *b, const void *m, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addu(struct sbuf *b, uint64_t v);
/* Appends `s[0..n)` as a quoted, escaped JSON string. */
void sbuf_add_jstr(struct sbuf *b, const char *s, size_t n);
#define SBUF_LIT(b, s) sbuf_add((b), (s), sizeof(s) - 1)

/* ---------------------------------------------------------------------------------------------
 * Statistics: one shard per worker thread, written only by its owner (relaxed atomics so that
 * /mock/stats and /mock/reset on another thread read and zero them safely), summed on read.
 */
struct stats_shard {
    _Alignas(64) atomic_uint_fast64_t requests;
    atomic_uint_fast64_t completed;
    atomic_uint_fast64_t aborted;
    atomic_uint_fast64_t accepted;
    atomic_int_fast64_t active;      /* gauge: never reset */
    atomic_int_fast64_t connections; /* gauge: never reset */
};

struct mock_stats {
    struct stats_shard *shard; /* n shards, shard[i] belongs to worker i */
    int n;
};

#define STAT_ADD(sh, f, v) atomic_fetch_add_explicit(&(sh)->f, (v), memory_order_relaxed)

/* ---------------------------------------------------------------------------------------------
 * api: turns one parsed HTTP request into response bytes (or a stream, a delay, a hang).
 * One api_ctx per worker thread; not thread-safe.
 */
struct api_ctx {
    const struct mock_config *cfg;
    struct mock_stats *stats;
    json_tokener *tok;
    struct sbuf out;  /* response bytes of the last api_handle call */
    struct sbuf body; /* scratch: response body before its head */
    uint64_t rng;
};

struct api_req {
    int method; /* enum http_method */
    const char *path;
    size_t path_len;
    const char *body;
    size_t body_len;
    int keep_alive;
    int http10;
};

enum api_kind {
    API_RESPOND, /* send data/len now, then the response is complete */
    API_DELAY,   /* send data/len after delay_ms, then complete */
    API_STREAM,  /* send data/len (the head) now; stream events from delay_ms on */
    API_HANG,    /* never answer; wait for the client to go */
};

struct stream;

struct api_result {
    int kind;
    int infer;      /* an inference request: counted in /mock/stats */
    int keep_alive; /* keep the connection after this response */
    const char *data;
    size_t len;
    uint64_t delay_ms;
    uint64_t itl_ms;
    int64_t close_after;   /* streams: close after this many events; < 0 off */
    struct stream *stream; /* API_STREAM: owned by the caller afterwards (stream_free) */
};

/* Sets up `x`. Returns 0, or -1 on allocation failure (nothing to release then). */
int api_init(struct api_ctx *x, const struct mock_config *cfg, struct mock_stats *stats,
             uint64_t seed);
void api_release(struct api_ctx *x);
/* Answers `rq`. res->data stays valid until the next call on `x`. Never fails: an internal
 * error becomes a 500 response. */
void api_handle(struct api_ctx *x, const struct api_req *rq, struct api_result *res);
/* Fills `res` with an error response (status 400, 413, 431, 501 or 505) for a request that could
 * not be parsed; the connection is to be closed after it. Data valid as for api_handle. */
void api_http_error(struct api_ctx *x, int status, struct api_result *res);

/* Appends the next SSE event of `s` (framed as one HTTP chunk when the stream is chunked; the
 * last event is followed by the terminating chunk). Returns 1 if more events remain, else 0. */
int stream_emit(struct stream *s, struct sbuf *b);
/* Events emitted so far. */
uint32_t stream_emitted(const struct stream *s);
void stream_free(struct stream *s);

/* ---------------------------------------------------------------------------------------------
 * worker: one thread, one epoll loop, one listening socket.
 */
struct worker;

/* Creates worker `id` serving listening socket `lfd` (taken: closed by worker_free). Returns
 * NULL on failure (the caller keeps `lfd`). */
struct worker *worker_new(const struct mock_config *cfg, struct mock_stats *stats, int id, int lfd);
/* Starts the thread. Returns 0 or -1. */
int worker_start(struct worker *w);
/* Asks the loop to stop; safe from any thread and from the main thread's signal wait. */
void worker_stop(struct worker *w);
/* Joins the thread (if started) and frees everything the worker owns. Accepts NULL. */
void worker_free(struct worker *w);

#endif
