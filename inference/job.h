/* job.h — one proxied inference request, shared by the HTTP front end (libmicrohttpd threads)
 * and the inference worker that owns its upstream transfer.
 *
 * This struct is deliberately not opaque: it is the hand-off contract between http/ and
 * inference/. Each group of fields says which thread may touch it. See docs/ARCHITECTURE.md.
 *
 * Lifetime: reference counted. The HTTP side holds one reference from creation until
 * libmicrohttpd reports the request completed; the worker holds one from submit until the
 * transfer is finished or cancelled; every message in flight on a worker queue holds one.
 * The last job_unref frees everything the job owns (body, stream buffer, curl handle are
 * released earlier by the worker). */
#ifndef LG_JOB_H
#define LG_JOB_H

#include "core/buf.h"
#include "core/config.h"
#include "core/heap.h"
#include "core/errors.h"
#include "core/sse.h"
#include "inference/limits.h"
#include "inference/xfer.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <urcu/wfcqueue.h>

struct MHD_Connection;
struct cfg_backend;
struct job;
struct rpool;
struct rq_flow;
struct snap;
struct usage_strip;

/* The proxied endpoints. The same index selects the upstream path in job_paths. */
enum job_endpoint { JOB_CHAT = 0, JOB_COMPLETIONS, JOB_EMBEDDINGS, JOB__ENDPOINTS };

/* "/v1/chat/completions", "/v1/completions", "/v1/embeddings": the client's path, appended to
 * the backend's base URL. */
extern const char *const job_paths[JOB__ENDPOINTS];

enum job_msg_type { JM_SUBMIT, JM_CANCEL, JM_UNPAUSE, JM_GRANT };

struct job_msg {
    struct cds_wfcq_node node;
    enum job_msg_type type;
    struct job *job;
};

/* Worker-side phase (worker thread only). */
enum job_wstate { JW_NEW, JW_WAITING, JW_RUNNING, JW_DONE };

/* Candidates a job holds inline: every backend of its model (the configuration refuses a
 * model on more, CFG_MODEL_BACKENDS_MAX). */
#define JOB_MAX_CANDIDATES CFG_MODEL_BACKENDS_MAX

struct job {
    atomic_uint refs;

    /* --- set by the HTTP thread before submit; read-only afterwards --------------------- */
    struct MHD_Connection *conn;
    int client_fd;
    uint64_t client_id; /* its connection, unique for the process's life (0: unknown) */
    enum job_endpoint endpoint;
    bool stream; /* request asked for "stream": true */
    char *model;
    struct buf body;         /* the request body as received: forwarded byte for byte */
    atomic_size_t *body_mem; /* the gateway-wide count of body bytes held ([server]
                              * max_body_memory); this job holds body_mem_held of it */
    size_t body_mem_held;
    char request_id[72];
    const struct cfg_key *key; /* the caller's API key (in the config), or NULL: auth off */
    const char *key_name;      /* key->name, or NULL */
    bool lim_taken;            /* holds a slot of the key's max_concurrency (http side) */
    struct limits *limits;     /* the registry lim_taken took from: the tpm charge
                                * (lim.taken_tokens) is settled by the last job_unref */
    int64_t usage_tokens;      /* the engine's usage (prompt + completion), -1 unknown; set by
                                * the worker at a successful end */
    bool lim_settled;          /* job_settle ran (the worker's end, else the last reference) */
    uint64_t lim_at_ns;        /* when limits_take admitted it (its now_ns) */
    struct lim_state lim;      /* the key's buckets at admission: x-ratelimit-* headers */
    uint64_t prompt_est;       /* the estimate's prompt part: a stream without usage is settled
                                * by it plus the events relayed */
    uint32_t ask_off, ask_del; /* a stream of a key with tpm whose client did not ask for usage:
                                * the body edit that asks for it (struct req_info) */
    const char *ask_ins;       /* NULL: not to be asked */
    uint64_t t_start_ns;
    uint64_t deadline_ns; /* t_start + request_s */
    const struct cfg_backend *candidates[JOB_MAX_CANDIDATES];
    unsigned n_candidates;
    unsigned worker;

    void *h_gconn; /* the connection's guard record (http/guard.h), for unpark */
    int park_epfd; /* libmicrohttpd's epoll set that polls the connection, for unpark */
    /* Wakes a parked connection (http/access.c): its body's last byte may be read, and its
     * thread's epoll is asked to look at the socket again. Under `lock`, only while the
     * connection is open (!h_closed). */
    void (*unpark)(struct job *job);

    struct pool *pool;
    struct snap *snap; /* the configuration it started with, pinned until the job is freed:
                        * key, candidates and model come from it */

    /* --- HTTP thread only (libmicrohttpd callbacks of this connection) ------------------ */
    int h_state;         /* http/access.c's phase */
    uint64_t h_declared; /* the body's Content-Length (0: none, or chunked) */
    bool h_submitted;    /* handed to a worker: a cancel must follow if it is not finished */
    unsigned h_skip;     /* body bytes libmicrohttpd will hand over that the job has already
                          * (a parked request's last one, taken with MSG_PEEK) */
    unsigned h_status;   /* status sent to the client */

    /* --- router (under the job's pool lock) ---------------------------------------------- */
    struct job *r_next, *r_prev; /* in its flow's waiting list (inference/rqueue.c) */
    struct rq_flow *r_flow;      /* that flow, while waiting */
    unsigned prio;               /* enum cfg_priority: the key's, or lower by X-Priority */
    uint64_t cost;               /* estimated tokens: what fair queuing charges (capped) */
    bool cost_open;              /* no max_tokens: fair queuing charges its ceiling */
    uint64_t r_tag;              /* start tag (start-time fair queuing), while waiting */
    uint64_t r_finish;           /* its finish tag: what its key was charged up to */
    bool r_waiting;
    bool r_granted;
    struct rpool *r_pool;           /* the pool it asked (set by router_acquire) */
    const struct cfg_backend *r_be; /* the backend holding our permit, NULL none */
    int backend;                    /* its index in the job's configuration, -1 none */
    uint64_t t_granted_ns;

    /* --- worker thread only ------------------------------------------------------------- */
    enum job_wstate wstate;
    bool w_cancelled;
    bool w_hdr_done;    /* upstream headers delivered to the HTTP side */
    bool w_sent;        /* bytes of the request went to an engine: it may have seen it (a
                         * request that never did is refunded its tpm and rpm charges; asked
                         * of curl only when such a charge was taken) */
    struct job *w_next; /* waiting list (arrival order; drained at shutdown) */
    struct job *w_prev;
    uint64_t w_wait_deadline_ns;
    struct heap_node w_wait;     /* in the worker's heap of wait deadlines while waiting */
    struct heap_node w_deadline; /* in the worker's deadline heap while request_s bounds it:
                                  * from the start of the transfer to the end of a plain
                                  * answer, or to the first body byte of an event stream */
    struct job *w_young_next;    /* the worker's list of transfers not watched yet */
    uint64_t w_started_ns;       /* the upstream transfer started */
    uint64_t w_last_byte_ns;     /* the engine's last body byte (the batch's time) */
    uint64_t w_taken_seen;       /* `taken` at the worker's last watch of a waiting response */
    uint64_t w_send_since_ns;    /* since then the client has taken none of the bytes waiting */
    bool w_send_waiting;         /* the last watch saw bytes waiting for the client */
    struct job *w_resume_next;   /* the worker's list of connections to resume at the end of
                                  * its event batch (one hand-over for many events) */
    bool w_resume_queued;
    CURL *easy;
    struct xfer_owner w_xfer; /* its transfer's owner on the multi handle (inference/xfer.h) */
    struct curl_slist hdr[5]; /* request headers: nodes owned here, no allocation */
    char hdr_rid[96];
    unsigned up_status;
    char up_ctype[128];
    int64_t up_clen;
    struct sse_scan sse;
    /* The engine's last body bytes, kept only for a key with tpm: its "usage" is there (the
     * end of a plain answer; a stream's last chunk with stream_options.include_usage). */
#define JOB_TAIL 1024
    bool w_track_usage;          /* w_tail is allocated (JOB_TAIL bytes) */
    struct usage_strip *w_strip; /* the usage was asked for (the body edited): its chunk is
                                  * taken out of what the client receives */
    size_t w_tail_len;
    char *w_tail;
    uint64_t t_first_event_ns;

    /* --- shared between the HTTP thread and the worker: under `lock` --------------------
     * Lock order: job->lock before anything of libmicrohttpd's (MHD_suspend_connection).
     * MHD_resume_connection is called after `lock` is released (job__unlock). */
    pthread_mutex_t lock;
    bool suspended;      /* the connection is suspended and waiting for us */
    bool parked;         /* or it waits for us parked (http/guard.h): libmicrohttpd is still
                          * reading its body, whose last byte is held; `unpark` wakes it */
    bool h_closed;       /* libmicrohttpd completed the request: the connection may be gone */
    bool resume_pending; /* job__unlock must resume the connection */
    bool headers_ready;  /* status/content type below are valid */
    unsigned status;
    char content_type[128];
    int64_t content_length; /* -1 unknown */
    enum lg_err fail;       /* set instead of headers_ready when the gateway answers itself */
    const char *fail_msg;   /* its message (a string literal), or NULL for the default */
    uint64_t retry_ms;      /* for 503/429: Retry-After and retry-after-ms */
    bool eof;               /* no more bytes will be appended */
    bool eof_error;         /* the stream broke: end with error (drop the connection) */
    bool up_paused;         /* the upstream transfer is paused: buffer was full */
    bool unpause_pending;   /* a JM_UNPAUSE is queued */
    bool client_gone;       /* libmicrohttpd completed the request */
    bool body_started;      /* the engine has sent body bytes */
    uint64_t events;        /* SSE events relayed (counted by the worker) */
    uint64_t bytes_out;     /* engine body bytes taken into `out` */
    uint64_t taken;         /* bytes of `out` the client's connection took (the reader) */
    int watch_epfd;         /* client_fd is watched for hang-ups in this epoll set, or -1.
                             * Only while the connection is suspended or parked; a parked one
                             * libmicrohttpd may close (a reset): http__completed, before the
                             * close, ends the watch. */
    bool watch_hup_only;    /* the watch waits for EPOLLHUP/EPOLLERR only: the client has
                             * half-closed (EPOLLRDHUP seen), which is legal HTTP */
    bool probed;            /* a "100 Continue" went to the client to tell a half-close from
                             * a client that left (its kernel answers that with a reset) */
    bool responded;         /* the response is queued: nothing may be written past it */
    bool http11;            /* the request is HTTP/1.1 (a 1xx may be sent) */
    struct buf out;         /* engine bytes not yet sent to the client */

    struct job_msg m_submit, m_cancel, m_unpause, m_grant;
};

/* Allocates a job with one reference (the caller's), body ceiling `max_body`, stream buffer
 * ceiling `max_stream`. Returns NULL when out of memory. Any thread. */
struct job *job_new(size_t max_body, size_t max_stream);

/* Frees the request body and gives its bytes back to the gateway's body budget. Called by the
 * worker once the upstream transfer is over (nothing reads the body after that), and by the
 * last job_unref. */
void job_release_body(struct job *job);

/* Settles the key's tpm charge, once (later calls do nothing): by the engine's usage when it
 * reported one; refunded whole when no engine saw the request (refused while queued or
 * draining, the engine unreachable, the client gone before the transfer began); otherwise the
 * estimate stands. Called by the worker when it lets go of the job (before the client has the
 * last bytes, so its next request sees the settled bucket), and by the last job_unref for a
 * job no worker had. The job's snapshot, and so the key's state, is pinned meanwhile. */
void job_settle(struct job *job);

/* Takes one more reference. Any thread. */
void job_ref(struct job *job);

/* Drops one reference; the last one frees the job. Any thread; NULL is fine. */
void job_unref(struct job *job);

/* Stops watching the client socket and, if the connection is suspended waiting for us, marks it
 * to be resumed by job__unlock; a parked one is woken at once (unpark). Caller holds job->lock
 * and releases it with job__unlock. */
void job__resume_locked(struct job *job);

/* Releases job->lock, then resumes the connection if job__resume_locked asked for it. Resuming
 * after the unlock keeps the woken libmicrohttpd thread from blocking on the lock its waker still
 * holds (one wake-up instead of a wake-up, a futex wait and a futex wake). The connection stays
 * suspended until then, so nothing else can suspend or resume it in between; the caller holds a
 * reference, so job->conn stays valid. */
void job__unlock(struct job *job);

/* Watches the (suspended or parked) client socket for hang-ups in `epfd`, tagged with the job
 * pointer. Caller holds job->lock. */
void job__watch_locked(struct job *job, int epfd);

#endif
