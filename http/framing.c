/* framing.c — see framing.h. */
#include "http/framing.h"

#include <string.h>
#include <strings.h>

static bool framing__is(const char *key, size_t n, const char *name)
{
    size_t l = strlen(name);
    return n == l && strncasecmp(key, name, l) == 0;
}

bool framing_header(struct framing *f, const char *key, size_t key_size, const char *value,
                    size_t value_size)
{
    if (f->why)
        return false;
    if (memchr(key, '\0', key_size) || (value && memchr(value, '\0', value_size)))
        f->why = "a header contains a NUL byte";
    else if (value && (memchr(value, '\r', value_size) || memchr(value, '\n', value_size)))
        f->why = "a header value contains CR or LF";
    else if (framing__is(key, key_size, "Content-Length"))
        f->n_clen++;
    else if (framing__is(key, key_size, "Transfer-Encoding")) {
        f->n_te++;
        f->te_chunked = value && value_size == 7 && strncasecmp(value, "chunked", 7) == 0;
    } else if (framing__is(key, key_size, "Host"))
        f->n_host++;
    return f->why == NULL;
}

const char *framing_verdict(const struct framing *f, bool http11)
{
    if (f->why)
        return f->why;
    if (f->n_clen > 1)
        return "more than one Content-Length header";
    if (f->n_te > 1 || (f->n_te && !f->te_chunked))
        return "unsupported Transfer-Encoding (only chunked is accepted)";
    if (f->n_te && f->n_clen)
        return "Content-Length together with Transfer-Encoding";
    if (http11 && f->n_host == 0)
        return "an HTTP/1.1 request needs a Host header";
    return NULL;
}

int framing_parse_clen(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}
