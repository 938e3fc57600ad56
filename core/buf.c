/* buf.c — see buf.h. */
#include "core/buf.h"

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

/* Ensures room for `need` more bytes plus a NUL after the data. */
static int buf__reserve(struct buf *b, size_t need)
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
    if (buf__reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}
