/* guard.h — the front door's clock and its connection table.
 *
 * libmicrohttpd 0.9.75 has one inactivity timeout per connection: a client that sends its
 * headers one byte a second keeps a connection forever, and a full connection table locks
 * everyone out. The guard gives each client connection a phase and a deadline:
 *
 *   G_HEADER  request line and headers arriving: client_header_timeout_s from the request's
 *             first byte (from accept for a new connection) -> 408, then close
 *   G_BODY    body arriving: client_body_timeout_s from the last read, and
 *             client_body_deadline_s from the body's start -> 408, then close
 *   G_IDLE    keep-alive between requests: keepalive_timeout_s -> closed without a reply
 *   G_BUSY    request complete: the gateway's own deadlines (request_s) apply
 *
 * and keeps the number of open connections at max_connections: a new connection beyond it
 * evicts a slow header (one that sent part of its headers over a second ago: judged by what
 * was read from it, not by how long the gateway took to read it), else the longest-idle
 * keep-alive connection, else a slow body (one arriving for 2 s at under 8 KiB/s), else a
 * header only late (a kept-alive one, or a new connection that sent nothing for 5 s); oldest
 * first in each. When none qualifies (every connection busy with a request, or new with its
 * request not read yet), the new one gets 503 overloaded.
 *
 * Each connection waits in a queue per phase, ordered by its deadline's stamp (nginx's
 * reusable-connection queue): the eviction and the watchdog look only at the queues' heads, so
 * their cost does not grow with the table. Phase changes are one compare-and-swap on the
 * connection's own word and one short lock to re-place it (a body read re-places at most every
 * 250 ms); the watchdog claims due connections under the lock and makes its system calls
 * (probes, replies, shutdown) with it released. Cutting a connection is a compare-and-swap to
 * G_CUT, the reply written straight to the socket, then shutdown(2), which libmicrohttpd sees
 * as the client's end; the connection's own thread learns of the cut from
 * guard_enter/guard_touch returning false and stops.
 *
 * A connection answered before its client stopped sending (a reply the guard wrote, or an
 * early answer marked with guard_linger) is not closed with a reset: at libmicrohttpd's close
 * its socket goes to the lingering closer (http/linger.h), which drains it for a bounded time.
 * A connection cut with a reply counts no more against max_connections. */
#ifndef LG_GUARD_H
#define LG_GUARD_H

#include "core/errors.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum guard_phase { G_IDLE = 0, G_HEADER, G_BODY, G_BUSY, G_CUT };

struct guard_limits {
    unsigned header_ms;     /* G_HEADER deadline */
    unsigned body_ms;       /* G_BODY deadline, from the last read */
    unsigned body_total_ms; /* G_BODY deadline, from the body's start; 0 = none */
    unsigned keepalive_ms;  /* G_IDLE deadline */
    unsigned max_conns;     /* open connections; beyond: evict or refuse */
    unsigned tick_ms;       /* watchdog period; 0 = derived from the deadlines */
    /* Counts a status the guard wrote itself (408, 503); may be NULL. Called from the
     * watchdog or a connection thread. */
    void (*count_status)(void *arg, unsigned status);
    void *count_arg;
    /* While this is not 0 (requests are waiting for permits), a request body's last byte is
     * left in the kernel (parking, below). NULL: never. */
    const atomic_uint *park_when;
};

struct guard_stats {
    uint64_t open;            /* connections in the table */
    uint64_t header_timeouts; /* G_HEADER past its deadline (408, or closed if nothing came) */
    uint64_t body_timeouts;   /* G_BODY past its deadline (408) */
    uint64_t idle_closed;     /* keep-alive connections closed at keepalive_timeout_s */
    uint64_t evicted;         /* closed to make room for a new connection */
    uint64_t refused;         /* new connections refused (503): every slot busy */
    uint64_t parked;          /* request bodies whose last byte was held (guard_held) */
};

struct guard;
struct guard_conn;

/* Once per process, at start-up, before any thread that may call recv() starts (libmicrohttpd's,
 * the workers'): the descriptor tables of the recv() override (http/recvhook.h), sized by
 * RLIMIT_NOFILE as it is then. Without it, the guard keeps its deadlines and table but neither
 * scans the bytes nor holds a half-closed client's end of file. False: out of memory. */
bool guard_init_process(void);

/* A guard with its watchdog thread running, or NULL (out of memory, no thread). */
struct guard *guard_new(const struct guard_limits *l);
/* Stops the watchdog and frees the table. Every connection must be closed first. */
void guard_free(struct guard *g);

/* The server is draining (SIGTERM): every keep-alive connection idle now is closed (one whose
 * next request has begun to arrive is left to be answered), and from now on each connection is
 * closed as soon as it goes idle (guard_enter G_IDLE), so that its client reconnects elsewhere
 * instead of sending its next request to a closing server. Main thread; once. */
void guard_drain(struct guard *g);

/* A new client connection on `fd`, in G_HEADER (fresh), accepted at accepted_ms
 * (guard_now_ms; 0 = now) as the seq-th connection (increasing from 1; 0 = after all others).
 * The header deadline runs from accepted_ms, and the table's "oldest" is by accept order even
 * when connections reach the table through different threads in another order. May evict
 * another connection or refuse this one (then already cut: guard_enter returns false). NULL:
 * out of memory. */
struct guard_conn *guard_open(struct guard *g, int fd, uint64_t accepted_ms, uint64_t seq);
/* The guard's clock (CLOCK_MONOTONIC_COARSE, ms). */
uint64_t guard_now_ms(void);
/* The connection's end: out of the table. Before the descriptor is closed. */
void guard_close(struct guard *g, struct guard_conn *c);

/* Moves c to phase p with a fresh deadline. False when the guard has cut the connection: the
 * caller must stop serving it. NULL c (no guard) is always true. Any thread. */
bool guard_enter(struct guard_conn *c, enum guard_phase p);
/* A request line has arrived: a keep-alive connection's header deadline starts now, a new
 * connection's keeps running from accept (and it has sent something). */
void guard_request_line(struct guard_conn *c);
/* Body progress: restarts the G_BODY deadline. False when cut. */
bool guard_touch(struct guard_conn *c);
/* An answer is being given before the request's body was read (libmicrohttpd closes the
 * connection after it): its close lingers (http/linger.h). The connection's thread. */
void guard_linger(struct guard_conn *c);
/* Refuses the request being read, in the middle of its body, where libmicrohttpd cannot
 * answer any more: the reply for `e` written to the socket (Retry-After: retry_after s, if not
 * 0), the connection cut, its close lingering. Returns false (the caller returns MHD_NO). The
 * connection's thread. */
bool guard_refuse(struct guard_conn *c, enum lg_err e, const char *message, unsigned retry_after);
/* A new connection refused before libmicrohttpd has it (the acceptor's thread): the reply for
 * `e` written to fd (Retry-After: retry_after s, if not 0), counted, and fd handed to the
 * lingering closer, which closes it. */
void guard_refuse_fd(struct guard *g, int fd, enum lg_err e, const char *message,
                     unsigned retry_after);
/* Sockets lingering now, and that lingered in all. */
void guard_linger_stats(struct guard *g, uint64_t *lingering, uint64_t *lingered);

/* Parking. libmicrohttpd 0.9.75 walks a thread's whole list of suspended connections at every
 * wake-up that resumes one (resume_suspended_connections), so thousands of requests waiting
 * suspended for a permit make every stream's every resume pay for all of them. A waiter is
 * kept off that list instead: while park_when is not 0, the recv() override reads a request
 * with a Content-Length body of 2 bytes or more only up to one byte short of its end (a head
 * is looked at with MSG_PEEK to find it), and then reads nothing more. libmicrohttpd, still
 * receiving the body, waits for the socket (edge-triggered: no event comes, nothing is
 * polled); the access handler, which has every byte but that one, takes it with MSG_PEEK and
 * hands the request over. When the request's answer is ready, guard_unhold, and a new look
 * at the socket by libmicrohttpd's epoll (EPOLL_CTL_MOD), let it read the byte and finish. */
/* Whether the connection's request body is complete but for its last byte, held in the kernel. */
bool guard_held(struct guard_conn *c);
/* The held byte may be read from now on. Any thread; c must be open. */
void guard_unhold(struct guard_conn *c);

/* The connection's phase (G_CUT once cut). */
/* c's accept order: names the connection for the process's life (0: NULL, or none given). */
uint64_t guard_conn_id(const struct guard_conn *c);

enum guard_phase guard_phase_of(const struct guard_conn *c);

void guard_get_stats(struct guard *g, struct guard_stats *out);

/* What the watchdog does with a connection in phase p, stamped at stamp_ms (fresh: no request
 * seen on it yet), at now_ms. Exposed for the unit tests. */
enum guard_action {
    GA_NONE,    /* within its deadline */
    GA_PROBE,   /* keep-alive deadline passed: close it, unless bytes came (then G_HEADER) */
    GA_TIMEOUT, /* header or body deadline passed: 408 if the client sent anything, close */
};
enum guard_action guard_due(enum guard_phase p, uint64_t stamp_ms, uint64_t now_ms,
                            const struct guard_limits *l);

#endif
