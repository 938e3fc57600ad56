/* request.h — what the gateway checks in an inference request before it routes it: strict
 * JSON (depth limit, UTF-8, nothing after the value), an object with no duplicate top-level
 * keys (the model we route on must be the model the engine sees), the fields each endpoint
 * needs with the right types. Pure functions; any thread. */
#ifndef LG_REQUEST_H
#define LG_REQUEST_H

#include "core/errors.h"
#include "inference/job.h"

#include <stdbool.h>
#include <stddef.h>

struct req_info {
    char *model; /* malloc'd; the caller frees */
    bool stream;
};

/* Validates `body` (len bytes, need not be NUL-terminated) for endpoint `kind`.
 * Returns LGE_NONE and fills `out`, or LGE_INVALID_JSON / LGE_INVALID_REQUEST with a message
 * in `why` (and `*param` naming the offending field, or NULL). */
enum lg_err request_validate(enum job_endpoint kind, const char *body, size_t len,
                             struct req_info *out, char *why, size_t whylen, const char **param);

/* Counts the keys of the top-level object in `json` (already known to be valid JSON) as they
 * are written, duplicates included. Returns -1 if the top-level value is not an object. */
long request_count_top_keys(const char *json, size_t len);

/* Accepts a client-supplied request id: 1..64 chars of [A-Za-z0-9._:-]. */
bool request_id_valid(const char *id);

/* Writes a new random request id (32 hex digits + NUL) into out[33]. Any thread. */
void request_id_new(char out[33]);

#endif
