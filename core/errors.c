/* errors.c — see errors.h. */
#include "core/errors.h"

#include <json-c/json.h>
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
    [LGE_TIMEOUT] = {504, "gateway_timeout", "timeout", "the request timed out"},
    [LGE_INTERNAL] = {500, "server_error", "internal_error", "internal error"},
    [LGE_CLIENT_CLOSED] = {499, "client_closed", "client_closed",
                           "the client closed the connection"},
};

const struct err_info *err_info(enum lg_err e)
{
    if ((int)e < 0 || e >= LGE__COUNT)
        e = LGE_INTERNAL;
    return &err_table[e];
}

size_t err_envelope(char *out, size_t cap, enum lg_err e, const char *message, const char *param)
{
    const struct err_info *info = err_info(e);
    json_object *root = json_object_new_object();
    json_object *err = json_object_new_object();
    size_t n = 0;
    if (!root || !err) {
        json_object_put(err);
        goto out;
    }
    json_object_object_add(root, "error", err);
    json_object_object_add(err, "message",
                           json_object_new_string(message ? message : info->message));
    json_object_object_add(err, "type", json_object_new_string(info->type));
    json_object_object_add(err, "param", param ? json_object_new_string(param) : NULL);
    json_object_object_add(err, "code", json_object_new_string(info->code));
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = s ? strlen(s) : 0;
    if (s && len < cap) {
        memcpy(out, s, len + 1);
        n = len;
    }
out:
    json_object_put(root);
    if (n == 0 && cap > 0)
        out[0] = '\0';
    return n;
}
