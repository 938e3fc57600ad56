/* xfer.h — who owns an easy handle on a worker's multi handle.
 *
 * The curl side of a worker (transfer.c: the multi handle, its sockets and timer) hands a
 * finished transfer to its owner through the owner's table of callbacks, and knows no owner's
 * type: a job's upstream transfer, a health probe. CURLOPT_PRIVATE of every easy handle points
 * at its owner's `struct xfer_owner`, a member of the owner (found from it with liburcu's
 * caa_container_of). Bytes and headers already reach their owner through CURLOPT_WRITEDATA and
 * CURLOPT_HEADERDATA; only the end needs this. On the worker's thread. */
#ifndef LG_XFER_H
#define LG_XFER_H

#include <curl/curl.h>

struct worker;
struct xfer_owner;

struct xfer_ops {
    /* The transfer ended (curl's result rc); the owner removes the handle from the multi. */
    void (*on_done)(struct worker *w, struct xfer_owner *o, CURLcode rc);
};

struct xfer_owner {
    const struct xfer_ops *ops;
};

#endif
