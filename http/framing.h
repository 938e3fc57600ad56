/* framing.h — request framing and header hygiene, decided from the header list alone (no
 * libmicrohttpd here, so the fuzzer drives exactly what the server runs).
 *
 * libmicrohttpd 0.9.75 takes the first of two Content-Lengths and the rest of the body as a
 * second request, accepts Content-Length with Transfer-Encoding, waits for the body of an
 * unknown transfer coding, and passes a bare CR inside a header value; the server refuses all
 * of these with 400 and closes the connection, on every request's first access-handler call. */
#ifndef LG_FRAMING_H
#define LG_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct framing {
    unsigned n_clen, n_te, n_host;
    bool te_chunked; /* the (last) Transfer-Encoding is exactly "chunked" (any case) */
    const char *why; /* first problem, or NULL */
};

/* One request header, with its exact sizes. Returns false once a problem is found (the rest
 * need not be seen). */
bool framing_header(struct framing *f, const char *key, size_t key_size, const char *value,
                    size_t value_size);

/* Why the request must be refused (400, then close), or NULL. http11: the request line says
 * HTTP/1.1 (which needs a Host header). */
const char *framing_verdict(const struct framing *f, bool http11);

/* A Content-Length value: one or more digits, nothing else, below UINT64_MAX (which
 * libmicrohttpd reads as "unknown size"). 0 or -1. */
int framing_parse_clen(const char *v, size_t n, uint64_t *out);

/* ---------------------------------------------------------------------------------------- */
/* The byte scanner: a client connection's bytes as they are received, before libmicrohttpd
 * parses them.
 *
 * libmicrohttpd 0.9.75 accepts more than RFC 9112 allows where a proxy in front may read the
 * bytes differently (a space before a header's colon, obs-fold, bare LF line ends, any byte
 * in a method), and answers what it refuses itself with its own HTML pages (414, 431, 400,
 * 413, 505), or with no reply at all. The scanner follows every request on the connection --
 * request line, header fields, the body by Content-Length or chunked coding, trailers, then
 * the next request -- and refuses, at the first byte that makes a request invalid, everything
 * libmicrohttpd would refuse and more:
 *
 *   400  request line not `token SP target SP HTTP/d.d CRLF` (one SP each; the target has no
 *        control byte and no SP); a header name with a byte that is not a token character
 *        (RFC 9110 5.6.2: a space before the colon, a control byte, a non-ASCII byte) or empty;
 *        a header line starting with SP or HTAB (obs-fold); a line not ended by CRLF (bare LF,
 *        CR not followed by LF); NUL in a field value; a Content-Length that is not digits;
 *        the framing verdict (framing_verdict) and Transfer-Encoding on HTTP/1.0; a chunk-size
 *        line that is not hex digits [; extension] CRLF, or chunk data not followed by CRLF
 *   413  a Content-Length of 2^64 - 1 or more (libmicrohttpd 0.9.75 reads 2^64 - 1 as
 *        MHD_SIZE_UNKNOWN, a body without end), a chunk size past 2^64 - 1
 *   414  a request line longer than FRAMING_LINE_MAX
 *   431  a head (request line, fields, trailers) past FRAMING_HEAD_MAX in libmicrohttpd's
 *        accounting (below)
 *   505  HTTP/d.d with a major version other than 1
 *
 * Empty lines before a request line are skipped (RFC 9112 2.2), as libmicrohttpd does.
 * HTTP/1.2 to 1.9 are HTTP/1.1 to libmicrohttpd (keep-alive, chunked replies, Host needed),
 * and here too.
 *
 * Limits. libmicrohttpd keeps the request line, the header lines and one 64-byte record per
 * header field, per query argument and per cookie (plus a copy of the Cookie value) in its
 * connection pool (16 KiB in llmgate); over it, it answers 414/431 itself. The scanner counts
 * the same way ("cost") and refuses at FRAMING_HEAD_MAX, a quarter below what the pool holds,
 * so that it always decides first. */
#define FRAMING_LINE_MAX 8192
#define FRAMING_HEAD_MAX 12288
#define FRAMING_RECORD_COST 64
#define FRAMING_CHUNK_LINE_MAX 1024 /* a chunk-size line, extensions included */
#define FRAMING_TRAILER_MAX 2048    /* the trailer section's own share of FRAMING_HEAD_MAX */

struct framing_scan {
    /* all private to framing.c; zero it (or framing_scan_init) before the first byte */
    unsigned char st, name_n, hdr, cl_st, te_i;
    bool http10, http11, in_query, trailer, cl_bad, cl_over, te_other, chunk_digit;
    char name[18];
    unsigned line, cost, trailer_cost;
    uint64_t left, clen;
    struct framing f;
    /* after a refusal: the status to answer (400, 413, 414, 431, 505) and why */
    unsigned status;
    const char *why;
    uint64_t requests;   /* requests whose head was accepted */
    uint64_t complete;   /* requests received whole (head, body, trailers) */
    size_t msg_off;      /* in the last call's bytes: where the request being read began (0: at
                          * or before the first byte); after a refusal, the refused one's */
    size_t cl_end;       /* in the last call's bytes: just after the final byte of a
                          * Content-Length body, if the first request to end in them had one
                          * (0: none did) */
    uint64_t cl_end_len; /* that body's Content-Length */
};

void framing_scan_init(struct framing_scan *s);
/* Feeds the next n bytes the client sent. True: nothing wrong so far. False: refused (at
 * this call or an earlier one): s->status and s->why say how to answer; the connection must
 * be closed after the answer. Bytes after a refusal are not looked at. */
bool framing_scan(struct framing_scan *s, const void *buf, size_t n);

/* The bytes left of the Content-Length body being received (0: not in one). */
uint64_t framing_scan_body_left(const struct framing_scan *s);
/* Whether the scanner is between requests or in a request's head (request line, fields). */
bool framing_scan_in_head(const struct framing_scan *s);

/* Whether a request line's version (libmicrohttpd's "HTTP/1.x") is treated as HTTP/1.1:
 * HTTP/1.1 to HTTP/1.9, as libmicrohttpd does. */
bool framing_http11(const char *version);

#endif
