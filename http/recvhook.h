/* recvhook.h — the process-wide recv() override, and the per-descriptor tables it reads.
 *
 * The executable defines recv(2), so every call to recv() in the process that the dynamic
 * linker resolves lands in http/recvhook.c instead of glibc's:
 *
 *   - libmicrohttpd 0.9.75 reads every client connection with recv() (MHD_recv_): the reason
 *     the override exists. It cannot be told (a) not to close a connection the moment a read
 *     returns 0 (a client that half-closed after its request would lose the response), nor
 *     (b) to show the bytes to anyone before parsing them (http/framing.c's scanner, which
 *     refuses what libmicrohttpd would let through). http/guard.c registers each client
 *     connection's descriptor here and gets both.
 *   - libcurl reads the engines' connections with recv() too: their descriptors are never
 *     registered, so they pass straight through (one range check and a table look).
 *   - any other caller in the process: passed through unchanged.
 *
 * The override is a raw recvfrom system call plus, for a registered descriptor, the limit
 * asked first (a request body's last byte left in the kernel while its request waits for a
 * permit: http/guard.h, "parking"), the scan and the end-of-file hold. It runs on any thread at any
 * time (libmicrohttpd's, the workers' curl), so the tables exist before any such thread starts
 * (recvhook_init, at start-up, once) and are never freed; each entry is an atomic. Descriptors at
 * or beyond the tables' size (the descriptor limit at recvhook_init), or with no recvhook_init at
 * all, pass through. */
#ifndef LG_RECVHOOK_H
#define LG_RECVHOOK_H

#include <stdbool.h>
#include <sys/types.h>

/* Sees the r > 0 bytes recv() got on a registered descriptor before its caller does: returns
 * what recv() returns (r, fewer bytes, 0 for an end of file, or -1 with errno). On the thread
 * reading the descriptor. */
typedef ssize_t (*recvhook_scan_fn)(void *owner, const void *buf, ssize_t r);

/* Asked before a registered descriptor is read for n > 0 bytes into buf: how many to read
 * (at most n; it may look at what waits with a MSG_PEEK read into buf), or 0 to read nothing
 * now (recv() then reports EAGAIN). On the thread reading the descriptor. */
typedef size_t (*recvhook_limit_fn)(void *owner, int fd, void *buf, size_t n);

/* Creates the tables, sized by RLIMIT_NOFILE as it is now, and sets the scan and the limit
 * (NULL: none). Once per process, single-threaded: before any thread that may call recv()
 * starts. False: out of memory (every descriptor then passes through). */
bool recvhook_init(recvhook_scan_fn scan, recvhook_limit_fn limit);

/* fd's bytes go through the scan with `owner` from now on (a new client connection). */
void recvhook_attach(int fd, void *owner);
/* fd is no longer registered and holds nothing. Before the descriptor is closed. */
void recvhook_detach(int fd);

/* From now on an end of file on fd is held back: recv() reports EAGAIN, and notes it. */
void recvhook_hold_eof(int fd);
/* Stops holding; true when an end of file was held back (the caller gives it back, e.g. with
 * shutdown(fd, SHUT_RD), which makes the socket readable again). */
bool recvhook_unhold(int fd);

#endif
