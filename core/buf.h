/* buf.h — a byte buffer with a ceiling fixed at creation (curl's dynbuf, nginx pools).
 * Readers consume from the front without moving bytes; space is compacted lazily.
 * Fields are private to buf.c; the struct is public only so it can be embedded.
 * Not thread-safe: the owner serialises access. */
#ifndef LG_BUF_H
#define LG_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t off; /* first unread byte */
    size_t len; /* end of data */
    size_t cap; /* allocated */
    size_t max; /* ceiling on unread bytes */
};

/* Prepares an empty buffer that will never hold more than `max` unread bytes. No allocation. */
void buf_init(struct buf *b, size_t max);

/* Frees the storage; the buffer is empty and may be reused with the same ceiling. */
void buf_release(struct buf *b);

/* Appends n bytes. Returns 0, or -1 if the ceiling would be passed or memory ran out
 * (nothing is appended then). */
int buf_append(struct buf *b, const void *p, size_t n);

/* Makes room for n more bytes at once (e.g. a body whose Content-Length is known), so the
 * appends that follow do not reallocate. Returns 0, or -1 past the ceiling or out of memory. */
int buf_reserve(struct buf *b, size_t n);

/* Appends printf-formatted text. Returns 0, or -1 (ceiling or memory; nothing appended). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns non-zero when n more bytes fit under the ceiling. */
int buf_fits(const struct buf *b, size_t n);

/* Unread bytes and their count. The pointer is valid until the next append/consume; it is
 * never NULL (a buffer that never held anything gives "": NULL + 0 is undefined behaviour,
 * and so is NULL passed to memcpy or to a parser, even for 0 bytes). */
static inline const char *buf_data(const struct buf *b)
{
    return b->data ? b->data + b->off : "";
}
static inline size_t buf_len(const struct buf *b)
{
    return b->len - b->off;
}

/* Replaces the `del` unread bytes at offset `at` by p[0..n) (an insertion when del is 0).
 * Returns 0, or -1 when the span is not inside the data, the ceiling would be passed or memory
 * ran out (nothing changed then). */
int buf_splice(struct buf *b, size_t at, size_t del, const void *p, size_t n);

/* Drops the first n unread bytes (n <= buf_len). */
void buf_consume(struct buf *b, size_t n);

#endif
