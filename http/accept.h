/* The front door's acceptor: one thread that owns the listening socket, accepts connections and
 * hands each one over (to libmicrohttpd with MHD_add_connection). Stopping it closes the socket,
 * so from then on a connection attempt is refused by the kernel.
 *
 * Why llmgate does not let libmicrohttpd listen: in 0.9.75, MHD_quiesce_daemon on a thread pool
 * with epoll removes the listening socket from each worker's epoll set while that worker may be
 * removing it itself, and aborts the process when it loses the race ("Failed to remove listen FD
 * from epoll set", daemon.c:5531): a graceful drain that sometimes crashes. Owning the socket
 * makes "stop accepting" a shutdown() and close() that race with nothing. */
#ifndef LLMGATE_HTTP_ACCEPT_H
#define LLMGATE_HTTP_ACCEPT_H

#include <stdint.h>
#include <sys/socket.h>

struct acceptor;

/* Takes over a connection (non-blocking, close-on-exec); must close it on failure. */
typedef void (*acceptor_add_fn)(void *arg, int fd, const struct sockaddr *sa, socklen_t len);

/* Starts the thread on the listening socket lfd (which it now owns). NULL on failure (lfd is
 * then still the caller's). */
struct acceptor *acceptor_start(int lfd, acceptor_add_fn add, void *arg);

/* Stops accepting: shutdown(2) of the listening socket (connection attempts are refused from
 * then on; the thread's blocked accept4 returns), joins the thread, closes the socket.
 * Idempotent. */
void acceptor_stop(struct acceptor *a);

/* Connections handed over, and accept() failures that paused accepting (EMFILE and the like). */
uint64_t acceptor_accepted(const struct acceptor *a);
uint64_t acceptor_pauses(const struct acceptor *a);

/* acceptor_stop if still running, then frees. NULL is fine. */
void acceptor_free(struct acceptor *a);

#endif
