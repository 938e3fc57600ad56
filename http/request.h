/* request.h — what the gateway checks in an inference request before it routes it, in one
 * pass over the body (core/jscan.c): strict RFC 8259 JSON (UTF-8, depth <= 64, nothing after
 * the value), an object without duplicate top-level keys and without U+0000 in any key (the
 * model routed on must be the model the engine reads), the fields each endpoint needs with the
 * right types. The body is forwarded untouched. Pure functions; any thread. */
#ifndef LG_REQUEST_H
#define LG_REQUEST_H

#include "core/errors.h"
#include "inference/job.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct req_info {
    char *model;         /* decoded; malloc'd, the caller frees */
    bool stream;         /* "stream": true */
    bool include_usage;  /* "stream_options": {"include_usage": true} */
    int64_t max_tokens;  /* max_completion_tokens, else max_tokens; -1 when absent */
    size_t prompt_bytes; /* raw size of messages / prompt / input */
    uint32_t user_off;   /* "user": its string span in the body (quotes included), or 0/0 */
    uint32_t user_len;
    /* How to ask the engine for a stream's usage when the client did not: the body's bytes
     * [ask_off, ask_off + ask_del) replaced by ask_ins (a literal), which makes
     * stream_options.include_usage true and keeps the body valid JSON without a duplicate key.
     * ask_ins is NULL when not a stream, the client asked itself, or stream_options is
     * neither an object nor null (the engine refuses such a body anyway). */
    uint32_t ask_off, ask_del;
    const char *ask_ins;
};

/* Validates `body` (len bytes, need not be NUL-terminated) for endpoint `kind`.
 * Returns LGE_NONE and fills `out`, or LGE_INVALID_JSON / LGE_INVALID_REQUEST with a message
 * in `why` (and `*param` naming the offending field, or NULL); out->model is NULL then. */
enum lg_err request_validate(enum job_endpoint kind, const char *body, size_t len,
                             struct req_info *out, char *why, size_t whylen, const char **param);

/* Accepts a client-supplied request id: 1..64 chars of [A-Za-z0-9._:-]. */
bool request_id_valid(const char *id);

/* Writes a new random request id (32 hex digits + NUL) into out[33]. Any thread. */
void request_id_new(char out[33]);

#endif
