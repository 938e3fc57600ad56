/* errors.h — every error the gateway itself produces, named once and mapped to its HTTP status,
 * OpenAI error type and code in one table (errors.c). */
#ifndef LG_ERRORS_H
#define LG_ERRORS_H

#include <stddef.h>

enum lg_err {
    LGE_NONE = 0,
    LGE_INVALID_JSON,
    LGE_INVALID_REQUEST,
    LGE_UNAUTHORIZED,
    LGE_MODEL_NOT_FOUND,
    LGE_NOT_FOUND,
    LGE_METHOD,
    LGE_TOO_LARGE,
    LGE_REQUEST_TIMEOUT, /* 408: a client's headers or body did not arrive in time */
    LGE_RATE_LIMITED,
    LGE_BAD_GATEWAY,
    LGE_QUEUE_FULL,
    LGE_QUEUE_TIMEOUT,
    LGE_NO_BACKEND,
    LGE_DRAINING,
    LGE_OVERLOADED, /* 503: request bodies in flight hold [server] max_body_memory */
    LGE_TIMEOUT,
    LGE_INTERNAL,
    LGE_CLIENT_CLOSED,     /* 499: logged only, the client is gone */
    LGE_URI_TOO_LONG,      /* 414: request line over its limit (http/framing.h) */
    LGE_HEADERS_TOO_LARGE, /* 431: header fields (or trailers) over their limit */
    LGE_HTTP_VERSION,      /* 505: a major HTTP version other than 1 */
    LGE__COUNT
};

struct err_info {
    unsigned status;
    const char *type;
    const char *code;
    const char *message; /* default message */
};

/* The row for `e` (LGE_NONE maps to a 500 internal error row). Any thread. */
const struct err_info *err_info(enum lg_err e);

/* Writes the OpenAI envelope {"error":{"message","type","param","code"}} for `e` into out
 * (NUL-terminated). `message` NULL means the default; `param` NULL gives "param":null.
 * The message (and param) are escaped and, if the envelope would not fit, cut at a character
 * boundary with "...": with cap >= ERR_ENVELOPE_MIN the result is always a whole envelope.
 * Returns the length, or 0 if cap is smaller than that. Any thread. */
#define ERR_ENVELOPE_MIN 256
size_t err_envelope(char *out, size_t cap, enum lg_err e, const char *message, const char *param);

#endif
