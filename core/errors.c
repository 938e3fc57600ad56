/* errors.c — see errors.h. */
#include "core/errors.h"

#include "core/esc.h"

#include <stdio.h>
#include <string.h>

static const struct err_info err_table[LGE__COUNT] = {
    [LGE_NONE] = {500, "server_error", "internal_error", "internal error"},
    [LGE_INVALID_JSON] = {400, "invalid_request_error", "invalid_json",
                          "request body is not valid JSON"},
    [LGE_INVALID_REQUEST] = {400, "invalid_request_error", "invalid_request", "invalid request"},
    [LGE_UNAUTHORIZED] = {401, "authentication_error", "invalid_api_key",
                          "missing or invalid API key"},
    [LGE_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found",
                             "the model does not exist"},
    [LGE_NOT_FOUND] = {404, "invalid_request_error", "not_found", "unknown path"},
    [LGE_METHOD] = {405, "invalid_request_error", "method_not_allowed",
                    "method not allowed on this path"},
    [LGE_TOO_LARGE] = {413, "invalid_request_error", "request_too_large",
                       "request body is larger than max_body_bytes"},
    [LGE_REQUEST_TIMEOUT] = {408, "invalid_request_error", "request_timeout",
                             "the request did not arrive in time"},
    [LGE_RATE_LIMITED] = {429, "rate_limit_exceeded", "rate_limit_exceeded",
                          "this API key is over its limit"},
    [LGE_BAD_GATEWAY] = {502, "upstream_error", "bad_gateway",
                         "the inference engine is unreachable or broke the response"},
    [LGE_QUEUE_FULL] = {503, "service_unavailable", "queue_full", "the gateway queue is full"},
    [LGE_QUEUE_TIMEOUT] = {503, "service_unavailable", "queue_timeout",
                           "no engine slot became free in time"},
    [LGE_NO_BACKEND] = {503, "service_unavailable", "no_backend",
                        "no inference engine can serve this model now"},
    [LGE_DRAINING] = {503, "service_unavailable", "draining", "the gateway is shutting down"},
    [LGE_OVERLOADED] = {503, "service_unavailable", "overloaded",
                        "the gateway holds as many request bodies as it may (max_body_memory)"},
    [LGE_TIMEOUT] = {504, "gateway_timeout", "timeout", "the request timed out"},
    [LGE_INTERNAL] = {500, "server_error", "internal_error", "internal error"},
    [LGE_CLIENT_CLOSED] = {499, "client_closed", "client_closed",
                           "the client closed the connection"},
    [LGE_URI_TOO_LONG] = {414, "invalid_request_error", "uri_too_long",
                          "the request line is too long"},
    [LGE_HEADERS_TOO_LARGE] = {431, "invalid_request_error", "request_header_fields_too_large",
                               "the request's header fields are too large"},
    [LGE_HTTP_VERSION] = {505, "invalid_request_error", "http_version_not_supported",
                          "only HTTP/1.x is supported"},
};

const struct err_info *err_info(enum lg_err e)
{
    if ((int)e < 0 || e >= LGE__COUNT)
        e = LGE_INTERNAL;
    return &err_table[e];
}

#define ERR__TAIL "\",\"type\":\"%s\",\"param\":%s%s%s,\"code\":\"%s\"}}"

size_t err_envelope(char *out, size_t cap, enum lg_err e, const char *message, const char *param)
{
    const struct err_info *info = err_info(e);
    const char *msg = message ? message : info->message;
    static const char head[] = "{\"error\":{\"message\":\"";
    size_t hl = sizeof(head) - 1;
    char esc_param[160];
    if (param) {
        /* The param gets what a cap of ERR_ENVELOPE_MIN leaves beside the head, the rest of
         * the tail and "..." + NUL for the message, so that any cap >= ERR_ENVELOPE_MIN holds
         * a whole envelope (a 159-byte param did not fit beside a long type and code). */
        int rest = snprintf(NULL, 0, ERR__TAIL, info->type, "\"", "", "\"", info->code);
        size_t left = ERR_ENVELOPE_MIN - hl - 4, room = sizeof(esc_param);
        if (rest < 0 || (size_t)rest >= left)
            room = 1;
        else if (left - (size_t)rest + 1 < room)
            room = left - (size_t)rest + 1;
        esc_json(esc_param, room, param, strlen(param), NULL);
    }
    /* what follows the message: at most ~60 + sizeof(esc_param) + type + code bytes */
    char tail[400];
    int t = snprintf(tail, sizeof(tail), ERR__TAIL, info->type, param ? "\"" : "",
                     param ? esc_param : "null", param ? "\"" : "", info->code);
    if (t < 0 || (size_t)t >= sizeof(tail) || cap < ERR_ENVELOPE_MIN || hl + (size_t)t + 4 > cap) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    memcpy(out, head, hl);
    size_t room = cap - hl - (size_t)t; /* message bytes + NUL */
    size_t n = strlen(msg), used;
    size_t w = esc_json(out + hl, room, msg, n, &used);
    if (used < n) { /* cut: make room for "..." */
        w = esc_json(out + hl, room - 3, msg, n, NULL);
        memcpy(out + hl + w, "...", 3);
        w += 3;
    }
    memcpy(out + hl + w, tail, (size_t)t + 1);
    return hl + w + (size_t)t;
}
