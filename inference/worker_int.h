/* worker_int.h — what the files of the worker (worker.c, relay.c, transfer.c, watch.c,
 * probe.c) share: the worker and pool structs and the functions one file calls in another.
 * Only those files include it: the rest of the gateway sees worker.h. Every function here
 * runs on the worker thread that owns the job. */
#ifndef LG_WORKER_INT_H
#define LG_WORKER_INT_H

#include "core/errors.h"
#include "core/heap.h"
#include "core/mpsc.h"
#include "inference/job.h"
#include "inference/snap.h"
#include "inference/worker.h"
#include "inference/xfer.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backend;

/* epoll data tags: the eventfd, curl sockets ((fd << 2) | 2), or a job pointer (8-aligned)
 * whose client socket is watched for hang-ups. */
#define TAG_WAKE 1u
#define TAG_CURL 2u

struct job_list {
    struct job *head, *tail;
};

struct probe {
    struct xfer_owner xfer; /* on the multi handle (inference/xfer.h) */
    CURL *easy;
    struct backend *be; /* of the configuration w->probe_snap */
    bool busy;
    char *url;
};

struct worker {
    struct pool *pool;
    unsigned id;
    pthread_t thread;
    bool started;
    struct mpsc q;
    int efd;
    int epfd;
    CURLM *multi;
    uint64_t curl_deadline_ns; /* UINT64_MAX: no curl timer */
    struct job_list waiting;   /* queued for a permit, FIFO = deadline order */
    struct job_list running;   /* transfers on the multi handle */
    unsigned n_running;
    struct heap deadlines;   /* running jobs still bounded by request_s (job->w_deadline) */
    struct heap waits;       /* waiting jobs by their own wait deadline (job->w_wait): jobs of
                              * configurations with different timeouts wait side by side */
    struct job *young_head;  /* started transfers whose client is not watched yet, in start */
    struct job *young_tail;  /* order (each holds a reference); see worker__watch_young */
    struct job *resume_head; /* connections to resume at the end of this event batch */
    uint64_t loop_now_ns;    /* when the current event batch began (one clock read) */
    atomic_bool quit;
    bool aborting;
    uint8_t *fdst; /* per curl socket fd: WFD_* registration state in epfd */
    size_t n_fdst;
    CURL **spare; /* finished easy handles kept for reuse (LIFO) */
    unsigned n_spare;
    struct probe *probes; /* worker 0 only: one per backend of probe_snap */
    size_t n_probes;
    struct snap *probe_snap; /* the configuration the probes were built for (pinned) */
    unsigned probe_interval_ms;
    uint64_t next_probe_ns;
    uint64_t next_watch_ns;
};

/* How often a worker looks for streams whose connection waits (suspended) for the next token
 * and starts watching their client sockets, so a client that leaves an idle stream is noticed
 * within about this long, without a syscall per token. */
#define WORKER_WATCH_SCAN_NS (1000 * NS_PER_MS)

/* A transfer still waiting for the engine's headers this long after it started gets its client
 * socket watched. Most answers come sooner, and watching costs two epoll_ctl: a client that
 * leaves earlier is noticed this much later. */
#define WORKER_WATCH_DELAY_NS (100 * NS_PER_MS)

/* What each backend's requests need, built once: URLs per path, the Authorization header. */
struct upstream {
    char *url[JOB__ENDPOINTS];
    CURLU *curlu[JOB__ENDPOINTS]; /* the same, parsed once: curl does not re-parse a URL per
                                     transfer */
    char *auth;
};

#define WORKER_SPARE_EASY 256

struct pool {
    struct snap_slot slot;     /* the current configuration */
    struct backends *backends; /* backend objects by name, across configurations */
    struct limits *limits;     /* key states by name, across configurations */
    struct router *router;
    struct worker *w;
    unsigned n;
    atomic_uint rr;
    atomic_bool draining;
    atomic_bool aborting;
    atomic_uint_fast64_t active;
    atomic_uint_fast64_t upstream_errors;
    atomic_uint_fast64_t client_aborts;
    atomic_uint_fast64_t send_timeouts;
    atomic_uint_fast64_t started;
    atomic_uint_fast64_t ttft_ns_sum;
    atomic_uint_fast64_t ttft_count;
    long max_conns;        /* CURLMOPT_MAXCONNECTS of each worker */
    atomic_bool probe_now; /* a new configuration: worker 0 rebuilds its probes */
};

static inline void list_unlink(struct job_list *l, struct job *job)
{
    if (job->w_prev)
        job->w_prev->w_next = job->w_next;
    else if (l->head == job)
        l->head = job->w_next;
    else
        return; /* not in the list */
    if (job->w_next)
        job->w_next->w_prev = job->w_prev;
    else
        l->tail = job->w_prev;
    job->w_next = job->w_prev = NULL;
}

static inline void list_append(struct job_list *l, struct job *job)
{
    job->w_prev = l->tail;
    job->w_next = NULL;
    if (l->tail)
        l->tail->w_next = job;
    else
        l->head = job;
    l->tail = job;
}
/* worker.c */

/* The worker lets go of the job: its reference is dropped. */
void worker__done(struct worker *w, struct job *job);
/* Ends a job in whatever phase it is, answering with `err`. */
void worker__end(struct worker *w, struct job *job, enum lg_err err, const char *msg);

/* relay.c */

/* Resumes the connections queued during this event batch. */
void worker__flush_resumes(struct worker *w);
/* Tells the HTTP side how the job ended (an error response, or the end of the body). */
void worker__answer(struct worker *w, struct job *job, enum lg_err err, const char *msg);
/* Hands the upstream's status line and headers to the HTTP side. Caller holds job->lock. */
void worker__deliver_headers_locked(struct worker *w, struct job *job);
/* CURLOPT_HEADERFUNCTION and CURLOPT_WRITEFUNCTION of every transfer (data: the job). */
size_t worker__on_header(char *line, size_t size, size_t n, void *arg);
size_t worker__on_body(char *data, size_t size, size_t n, void *arg);
/* JM_UNPAUSE: the client took bytes, the paused transfer goes on. */
void worker__on_unpause(struct worker *w, struct job *job);

/* transfer.c */

/* curl multi callbacks: CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION (data: the worker). */
int worker__on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp);
int worker__on_timer(CURLM *multi, long timeout_ms, void *arg);
/* An epoll event on curl socket s: true if it was parked (handled, curl is not told). */
bool worker__parked_event(struct worker *w, curl_socket_t s);
/* CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION of every easy handle (data: the
 * worker). */
curl_socket_t worker__open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr);
int worker__close_socket(void *arg, curl_socket_t s);
/* Starts the upstream transfer of a job that holds a permit (or ends it). */
void worker__start(struct worker *w, struct job *job);
/* Removes the curl side of a running transfer and returns its permit. */
void worker__teardown(struct worker *w, struct job *job, bool reusable);
/* Hands each transfer curl reports finished to its owner (xfer_ops.on_done). */
void worker__check_finished(struct worker *w);

/* probe.c */

void worker__probes_free(struct worker *w);
/* Worker 0: starts the probes that are due (others: nothing). */
void worker__run_probes(struct worker *w, uint64_t now);

/* watch.c */

/* Watches the client of a job for hang-ups while it waits. */
void worker__watch(struct worker *w, struct job *job);
/* An event on a watched client socket: true when the client is gone (the job must end). */
bool worker__client_event(struct job *job, uint32_t events);
/* Starts watching the clients of transfers still without an answer after a while. */
void worker__watch_young(struct worker *w, uint64_t now);
/* Ends the waiting jobs past their wait deadline. */
void worker__expire_waiting(struct worker *w, uint64_t now);
/* Ends the transfers past request_s. */
void worker__expire_deadlines(struct worker *w, uint64_t now);
/* The periodic scan of running transfers: watches idle clients, ends silent streams. */
void worker__watch_idle(struct worker *w, uint64_t now);

#endif
