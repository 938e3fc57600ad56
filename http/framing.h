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

/* A Content-Length value: one or more digits, nothing else, at most UINT64_MAX. 0 or -1. */
int framing_parse_clen(const char *v, size_t n, uint64_t *out);

#endif
