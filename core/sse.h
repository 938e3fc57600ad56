/* sse.h — incremental Server-Sent-Events framing: counts complete events in a byte stream that
 * arrives in arbitrary pieces (an event may be split anywhere, line ends may be \n, \r\n or \r).
 * A comment-only block (": keep-alive") is not an event. Not thread-safe; one per stream. */
#ifndef LG_SSE_H
#define LG_SSE_H

#include <stddef.h>

struct sse_scan {
    unsigned char cr;        /* last byte was '\r' */
    unsigned char bol;       /* at the beginning of a line */
    unsigned char comment;   /* current line starts with ':' */
    unsigned char has_field; /* current block holds a non-comment line */
};

/* Starts a scanner at the beginning of a stream. */
void sse_scan_init(struct sse_scan *s);

/* Feeds n bytes; returns how many events were completed inside them. */
size_t sse_scan_feed(struct sse_scan *s, const char *p, size_t n);

#endif
