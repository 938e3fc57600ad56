/*
 * http1.h — incremental HTTP/1.x request parser of mockllm: the request head, and chunked
 * request bodies decoded in place. Pure functions over caller-owned bytes; no allocation.
 */
#ifndef MOCKLLM_HTTP1_H
#define MOCKLLM_HTTP1_H

#include <stddef.h>
#include <stdint.h>

enum http_method { HTTP_GET = 1, HTTP_POST, HTTP_HEAD, HTTP_OTHER };

enum { HTTP_DONE = 0, HTTP_AGAIN = 1, HTTP_ERROR = -1 };

struct http_req {
    int method;
    int minor; /* HTTP/1.<minor> */
    int keep_alive;
    int expect_continue;
    int chunked;
    int has_length;
    uint64_t content_length;
    size_t path_off; /* path (query stripped) at buf[path_off..+path_len) */
    size_t path_len;
    size_t head_len; /* request line + headers + blank line */
    int err_status;  /* after HTTP_ERROR: the status to answer with */
};

/*
 * Parses the request head at the start of buf[0..len). `*scan` is where the search for the end
 * of the head resumes (0 for a new request; kept between calls while HTTP_AGAIN). Returns
 * HTTP_DONE with `*req` filled, HTTP_AGAIN if the head is incomplete, or HTTP_ERROR with
 * req->err_status set (400, 431 past `max_head`, 501, 505).
 */
int http1_parse_head(const char *buf, size_t len, size_t *scan, size_t max_head,
                     struct http_req *req);

/* State of an in-place chunked-body decoder; zero it for a new body. */
struct http_dechunk {
    size_t raw;    /* raw bytes consumed */
    size_t out;    /* decoded bytes, at buf[0..out) */
    uint64_t left; /* bytes left in the current chunk */
    int state;
};

/*
 * Decodes the chunked body at buf[0..len) (the bytes after the head) in place: decoded data is
 * moved to buf[0..d->out). Call again with more bytes (same buf start) after HTTP_AGAIN.
 * Returns HTTP_DONE (body complete: d->raw bytes used), HTTP_AGAIN, or HTTP_ERROR with
 * `*err_status` 400 or 413 (decoded size over `max_body`).
 */
int http1_dechunk(char *buf, size_t len, struct http_dechunk *d, size_t max_body, int *err_status);

#endif
