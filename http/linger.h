/* linger.h — the lingering close (nginx's lingering_close).
 *
 * When the gateway answers a request before its body (401, 413, 429, 503 from the headers; a
 * 413 or 503 in the middle of a body; a 408), the client may still be sending. Closing a
 * socket with unread bytes makes the kernel send a reset, and a client that writes its whole
 * request before it reads (most HTTP libraries) gets EPIPE or ECONNRESET and never reads the
 * answer. So such a socket is not closed at once: libmicrohttpd's close is kept from reaching
 * the socket (the guard hands a duplicate of the descriptor here just before libmicrohttpd
 * closes its own), the write side is shut (the answer, then FIN), and what the client still
 * sends is read and discarded until it closes, or LINGER_IDLE_MS pass without a byte, or
 * LINGER_TOTAL_MS since the answer -- then the socket is closed.
 *
 * One thread with its own epoll set. At most `max` sockets linger at once; beyond, a socket is
 * closed at once (the behaviour without lingering). A lingering socket is no longer in the
 * connection table and holds no libmicrohttpd slot, only its descriptor. */
#ifndef LG_LINGER_H
#define LG_LINGER_H

#include <stdbool.h>
#include <stdint.h>

/* nginx: lingering_time 30 s, lingering_timeout 5 s; shorter here, since a client that
 * honours the answer stops sending within a round trip. */
#define LINGER_TOTAL_MS 5000
#define LINGER_IDLE_MS 2000

struct linger_set;

struct linger_stats {
    uint64_t lingering; /* sockets draining now */
    uint64_t taken;     /* sockets that lingered, in all */
    uint64_t full;      /* sockets closed at once: `max` were lingering */
};

/* A lingering closer with its thread running, or NULL. */
struct linger_set *linger_new(unsigned max);
/* Stops the thread and closes every socket still lingering. */
void linger_free(struct linger_set *l);

/* Takes fd (the caller's own descriptor of the socket; the caller no longer uses it): shuts
 * its write side and drains it, from since_ms (guard_now_ms: when the answer was given) on.
 * Always consumes fd. Any thread. */
void linger_take(struct linger_set *l, int fd, uint64_t since_ms);

void linger_get_stats(struct linger_set *l, struct linger_stats *out);

/* Whether a socket lingering since since_ms, whose last byte came at last_ms, is to be closed
 * at now_ms. Exposed for the unit tests. */
bool linger_due(uint64_t since_ms, uint64_t last_ms, uint64_t now_ms);

#endif
