/* reply.h — the pieces of an answer that the guard (which writes straight to a socket) and the
 * server (which answers through libmicrohttpd) share, so that both say the same thing the same
 * way: the JSON error envelope with its status, X-Request-ID, Retry-After in whole seconds
 * rounded up and retry-after-ms (what the OpenAI and Anthropic SDKs read). Any thread. */
#ifndef LG_REPLY_H
#define LG_REPLY_H

#include "core/errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Response;

/* The reason phrase of the statuses the gateway sends itself. */
const char *reply_reason(unsigned status);

/* Formats Retry-After (seconds, rounded up) and retry-after-ms for a wait of `ms`. */
void reply_retry_values(uint64_t ms, char secs[24], char millis[24]);

/* Writes a whole HTTP/1.1 reply for `e` (envelope, Connection: close, a new X-Request-ID,
 * Retry-After when retry_ms > 0) into out. Returns its length, 0 if it does not fit. */
size_t reply_raw(char *out, size_t cap, enum lg_err e, const char *message, uint64_t retry_ms);

/* Adds a response header. false (logged) when libmicrohttpd refused it: the caller drops the
 * response rather than send it without, say, its Retry-After. */
bool reply_hdr(struct MHD_Response *r, const char *name, const char *value);

/* Retry-After and retry-after-ms for a wait of `ms`. */
bool reply_retry_after(struct MHD_Response *r, uint64_t ms);

#endif
