/* usage.h — the engine's token usage from the end of its answer: the last "usage" object in a
 * tail of the body (a plain answer ends with it; a stream's last chunk carries it with
 * stream_options.include_usage). Engine output: read strictly, never past `len`. */
#ifndef LG_USAGE_H
#define LG_USAGE_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* total_tokens of the last "usage":{...} in buf, else prompt_tokens + completion_tokens (those
 * present), or -1 when there is no such object or no count in it. Counts are non-negative
 * integers of at most 15 digits; anything else in the object is skipped (nested objects too). */
int64_t usage_tokens(const char *buf, size_t len);

/* A filter over an event stream that drops its usage-only events: data whose JSON has
 * "choices": [] and a "usage" object (the last chunk an engine sends for
 * stream_options.include_usage), for a stream whose usage the gateway asked for and the client
 * did not. Other bytes pass unchanged. An event is held until its blank line (it may arrive
 * in pieces), up to USAGE_STRIP_HOLD bytes: a longer one is passed on as it comes, unchecked
 * (a usage chunk is far shorter). One per stream; not thread-safe. */
#define USAGE_STRIP_HOLD 4096

struct usage_strip;

/* A filter at the start of a stream, or NULL out of memory. */
struct usage_strip *usage_strip_new(void);
void usage_strip_free(struct usage_strip *f); /* NULL is fine */

/* Bytes held back (the start of an event not complete yet). */
size_t usage_strip_held(const struct usage_strip *f);

/* Feeds n bytes; appends what passes to `out`. 0, or -1 when `out` refused bytes (its
 * ceiling, or memory): the caller ends the stream. Call only when `out` fits
 * usage_strip_held + n more bytes. */
int usage_strip_feed(struct usage_strip *f, const char *p, size_t n, struct buf *out);

/* The end of the stream: what is still held (an event without its blank line) is appended. */
int usage_strip_flush(struct usage_strip *f, struct buf *out);

#endif
