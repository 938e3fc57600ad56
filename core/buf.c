/* buf.c — see buf.h. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    b->max = max;
}

void buf_release(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

int buf_fits(const struct buf *b, size_t n)
{
    return n <= b->max - buf_len(b);
}

/* Ensures room for `need` more bytes plus a NUL after the data; `exact` allocates just that
 * instead of doubling. */
static int buf__reserve(struct buf *b, size_t need, int exact)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + need + 1 <= b->cap)
        return 0;
    size_t used = b->len - b->off;
    if (b->off > 0 && used + need + 1 <= b->cap) {
        memmove(b->data, b->data + b->off, used);
        b->off = 0;
        b->len = used;
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    if (exact)
        cap = used + need + 1;
    while (cap < used + need + 1)
        cap *= 2;
    if (cap > b->max + 1 && used + need + 1 <= b->max + 1)
        cap = b->max + 1;
    char *p = malloc(cap);
    if (!p)
        return -1;
    if (used)
        memcpy(p, b->data + b->off, used);
    free(b->data);
    b->data = p;
    b->cap = cap;
    b->off = 0;
    b->len = used;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (!buf_fits(b, n))
        return -1;
    if (n == 0)
        return 0;
    if (buf__reserve(b, n, 0) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_splice(struct buf *b, size_t at, size_t del, const void *p, size_t n)
{
    size_t used = buf_len(b);
    if (at > used || del > used - at)
        return -1;
    if (n > del && (!buf_fits(b, n - del) || buf__reserve(b, n - del, 1) != 0))
        return -1;
    if (n == 0 && del == 0)
        return 0;
    char *d = b->data + b->off; /* not NULL: there were bytes to delete, or room was made */
    memmove(d + at + n, d + at + del, used - at - del);
    memcpy(d + at, p, n);
    b->len = b->len - del + n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

int buf_reserve(struct buf *b, size_t n)
{
    if (!buf_fits(b, n))
        return -1;
    return buf__reserve(b, n, 1);
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (k < 0)
        return -1;
    if ((size_t)k < sizeof(tmp))
        return buf_append(b, tmp, (size_t)k);
    if (!buf_fits(b, (size_t)k) || buf__reserve(b, (size_t)k, 0) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)k;
    return 0;
}
