/* peers.h — open connections per client address, for [server] max_connections_per_ip.
 *
 * The acceptor counts a connection in before handing it to libmicrohttpd, and libmicrohttpd's
 * close notification counts it out; one beyond the limit is answered by the guard (429, readable,
 * lingering close: guard_refuse_fd) instead of being closed silently, which is what
 * libmicrohttpd's own per-address limit does. IPv4 and IPv6 addresses are told apart (an
 * IPv4-mapped IPv6 address counts as its IPv4 address). Buckets are chosen by SipHash under a
 * random key, so no client can aim its addresses at one bucket. Any thread. */
#ifndef LG_PEERS_H
#define LG_PEERS_H

#include <stdbool.h>
#include <sys/socket.h>

struct peers;

/* A table for at most `limit` (> 0) connections per address, or NULL out of memory. */
struct peers *peers_new(unsigned limit);
void peers_free(struct peers *p); /* NULL is fine */

/* A new connection from sa: true, counted; false, not counted: its address has `limit` open (or
 * there is no memory to count it). An address that is not IPv4 or IPv6 is never limited. */
bool peers_enter(struct peers *p, const struct sockaddr *sa);
/* A connection peers_enter counted is closed. */
void peers_leave(struct peers *p, const struct sockaddr *sa);
/* Connections open from sa now (for the tests). */
unsigned peers_count(struct peers *p, const struct sockaddr *sa);

#endif
