/* request.c — see request.h. */
#include "http/request.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define REQ_MAX_DEPTH 64

long request_count_top_keys(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i >= len || p[i] != '{')
        return -1;
    long keys = 0;
    int depth = 0;
    bool expect_key = false; /* next string at depth 1 is a key */
    for (; i < len; i++) {
        char c = p[i];
        if (c == '"') {
            bool is_key = depth == 1 && expect_key;
            for (i++; i < len && p[i] != '"'; i++)
                if (p[i] == '\\')
                    i++;
            if (is_key) {
                keys++;
                expect_key = false;
            }
        } else if (c == '{' || c == '[') {
            depth++;
            if (depth == 1)
                expect_key = true;
        } else if (c == '}' || c == ']') {
            depth--;
            if (depth == 0)
                break;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
        }
    }
    return keys;
}

static enum lg_err req__fail(enum lg_err e, char *why, size_t whylen, const char **param,
                             const char *field, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    *param = field;
    return e;
}

enum lg_err request_validate(enum job_endpoint kind, const char *body, size_t len,
                             struct req_info *out, char *why, size_t whylen, const char **param)
{
    enum lg_err rc = LGE_NONE;
    json_object *root = NULL;
    json_tokener *tok = json_tokener_new_ex(REQ_MAX_DEPTH);
    *param = NULL;
    out->model = NULL;
    out->stream = false;
    if (!tok)
        return req__fail(LGE_INTERNAL, why, whylen, param, NULL, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    if (len == 0 || len > INT32_MAX) {
        rc = req__fail(LGE_INVALID_JSON, why, whylen, param, NULL, "request body is empty");
        goto out;
    }
    root = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    while (end < len &&
           (body[end] == ' ' || body[end] == '\t' || body[end] == '\r' || body[end] == '\n'))
        end++;
    if (!root || jerr != json_tokener_success || end != len) {
        char msg[200];
        snprintf(msg, sizeof(msg), "request body is not valid JSON: %s",
                 !root && jerr == json_tokener_continue ? "unexpected end"
                 : jerr != json_tokener_success         ? json_tokener_error_desc(jerr)
                                                        : "trailing data after the value");
        rc = req__fail(LGE_INVALID_JSON, why, whylen, param, NULL, msg);
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, NULL,
                       "request body must be a JSON object");
        goto out;
    }
    if (request_count_top_keys(body, len) != (long)json_object_object_length(root)) {
        rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, NULL,
                       "request body has a duplicate top-level key");
        goto out;
    }
    json_object *v;
    if (!json_object_object_get_ex(root, "model", &v) ||
        !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0) {
        rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "model",
                       "'model' is required and must be a non-empty string");
        goto out;
    }
    out->model = strdup(json_object_get_string(v));
    if (!out->model) {
        rc = req__fail(LGE_INTERNAL, why, whylen, param, NULL, "out of memory");
        goto out;
    }
    if (json_object_object_get_ex(root, "stream", &v) && v != NULL) {
        if (!json_object_is_type(v, json_type_boolean)) {
            rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "stream",
                           "'stream' must be a boolean");
            goto out;
        }
        out->stream = json_object_get_boolean(v);
    }
    switch (kind) {
    case JOB_CHAT:
        if (!json_object_object_get_ex(root, "messages", &v) ||
            !json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
            rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "messages",
                           "'messages' is required and must be a non-empty array");
        break;
    case JOB_COMPLETIONS:
        if (!json_object_object_get_ex(root, "prompt", &v) ||
            !(json_object_is_type(v, json_type_string) || json_object_is_type(v, json_type_array)))
            rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "prompt",
                           "'prompt' is required and must be a string or an array");
        break;
    case JOB_EMBEDDINGS:
        if (!json_object_object_get_ex(root, "input", &v) ||
            !(json_object_is_type(v, json_type_string) || json_object_is_type(v, json_type_array)))
            rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "input",
                           "'input' is required and must be a string or an array");
        else if (out->stream)
            rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, "stream",
                           "embeddings cannot be streamed");
        break;
    case JOB__ENDPOINTS:
        rc = req__fail(LGE_INTERNAL, why, whylen, param, NULL, "unknown endpoint");
        break;
    }
out:
    if (rc != LGE_NONE) {
        free(out->model);
        out->model = NULL;
    }
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

bool request_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (n >= 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n > 0;
}

/* xorshift128+ per thread, seeded from the kernel: ids need to be unique, not secret. */
void request_id_new(char out[33])
{
    static _Thread_local uint64_t s[2];
    if (s[0] == 0 && s[1] == 0) {
        if (getrandom(s, sizeof(s), 0) != (ssize_t)sizeof(s) || (s[0] == 0 && s[1] == 0)) {
            s[0] = (uint64_t)(uintptr_t)&s ^ 0x9e3779b97f4a7c15ull;
            s[1] = 0xbf58476d1ce4e5b9ull;
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t x = s[0], y = s[1];
        s[0] = y;
        x ^= x << 23;
        s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        uint64_t r = s[1] + y;
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(r >> (i * 4)) & 15];
    }
    out[32] = '\0';
}
