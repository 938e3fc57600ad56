/* usage.h — the engine's token usage from the end of its answer: the last "usage" object in a
 * tail of the body (a plain answer ends with it; a stream's last chunk carries it with
 * stream_options.include_usage). Engine output: read strictly, never past `len`. */
#ifndef LG_USAGE_H
#define LG_USAGE_H

#include <stddef.h>
#include <stdint.h>

/* total_tokens of the last "usage":{...} in buf, else prompt_tokens + completion_tokens (those
 * present), or -1 when there is no such object or no count in it. Counts are non-negative
 * integers of at most 15 digits; anything else in the object is skipped (nested objects too). */
int64_t usage_tokens(const char *buf, size_t len);

#endif
