/* esc.h — escaping text for the documents the gateway writes itself: JSON strings (error
 * envelopes, /health, /ready, model lists) and Prometheus label values. Pure functions; any
 * thread. Input need not be valid UTF-8: invalid bytes are written as U+FFFD, so the output
 * is always valid UTF-8 and valid JSON. */
#ifndef LG_ESC_H
#define LG_ESC_H

#include "core/buf.h"

#include <stddef.h>

/* Escapes s[0..n) as the inside of a JSON string (no quotes) into out, writing at most cap - 1
 * bytes plus a NUL, and never splitting a character or an escape sequence. Returns the bytes
 * written; *used (if not NULL) gets how many input bytes they cover (< n when cut). */
size_t esc_json(char *out, size_t cap, const char *s, size_t n, size_t *used);

/* Appends s[0..n) to b as a quoted JSON string. Returns 0, or -1 when b's ceiling or memory
 * ran out (b may hold part of it then). */
int esc_json_buf(struct buf *b, const char *s, size_t n);

/* Appends s (NUL-terminated) to b as the inside of a Prometheus label value (\\, \", \n; a
 * byte that is not UTF-8 as U+FFFD: the exposition format's label values are UTF-8, and a
 * scraper may refuse the whole page otherwise). Returns 0 or -1 as esc_json_buf. */
int esc_prom_label(struct buf *b, const char *s);

/* The longest prefix of s[0..n) of at most max bytes that ends on a UTF-8 character boundary
 * (for "%.*s" in messages: a cut never leaves half a character). A byte that does not start a
 * valid sequence counts as a character, as in esc_json: the result is at least max - 3. */
size_t esc_utf8_prefix(const char *s, size_t n, size_t max);

#endif
