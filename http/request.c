/* request.c — see request.h. */
#include "http/request.h"

#include "core/jscan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static enum lg_err req__fail(enum lg_err e, char *why, size_t whylen, const char **param,
                             const char *field, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    *param = field;
    return e;
}

/* A top-level member that must be a string or an array, by endpoint. */
static bool req__string_or_array(const struct jscan_span *v)
{
    return v && (v->type == JSCAN_STRING || v->type == JSCAN_ARRAY);
}

/* max_tokens-like fields: absent or null leaves -1; otherwise a non-negative integer. */
static int req__count(const char *body, const struct jscan_span *v, int64_t *out)
{
    *out = -1;
    if (!v || v->type == JSCAN_NULL)
        return 0;
    int64_t n;
    if (v->type != JSCAN_NUMBER || jscan_int(body, v, &n) != 0 || n < 0)
        return -1;
    *out = n;
    return 0;
}

enum lg_err request_validate(enum job_endpoint kind, const char *body, size_t len,
                             struct req_info *out, char *why, size_t whylen, const char **param)
{
    struct jscan_doc doc; /* ~6 KB on this thread's stack; nothing allocated */
    *param = NULL;
    memset(out, 0, sizeof(*out));
    out->max_tokens = -1;
    enum jscan_status st = jscan_parse(&doc, body, len);
    if (st != JSCAN_OK) {
        char msg[160];
        if (jscan_is_json_error(st))
            snprintf(msg, sizeof(msg), "request body is not valid JSON: %s at byte %zu",
                     jscan_strerror(st), doc.err_off);
        else
            snprintf(msg, sizeof(msg), "request body: %s", jscan_strerror(st));
        return req__fail(jscan_is_json_error(st) ? LGE_INVALID_JSON : LGE_INVALID_REQUEST, why,
                         whylen, param, NULL, msg);
    }
    const struct jscan_span *v = jscan_top(&doc, body, "model");
    if (!v || v->type != JSCAN_STRING || v->len <= 2)
        return req__fail(LGE_INVALID_REQUEST, why, whylen, param, "model",
                         "'model' is required and must be a non-empty string");
    /* The model routed and authorised on is the decoded string the engine will read. */
    size_t cap = (size_t)v->len - 1;
    char *model = malloc(cap);
    if (!model)
        return req__fail(LGE_INTERNAL, why, whylen, param, NULL, "out of memory");
    long ml = jscan_string(body, v, model, cap);
    if (ml <= 0) {
        free(model);
        return req__fail(LGE_INVALID_REQUEST, why, whylen, param, "model",
                         ml == JSCAN_ENUL ? "'model' must not contain U+0000"
                         : ml == 0        ? "'model' is required and must be a non-empty string"
                                          : "'model' is not valid Unicode");
    }
    enum lg_err rc = LGE_NONE;
    const char *field = NULL, *msg = NULL;
    if ((v = jscan_top(&doc, body, "stream")) != NULL && v->type != JSCAN_NULL) {
        if (v->type != JSCAN_TRUE && v->type != JSCAN_FALSE) {
            field = "stream";
            msg = "'stream' must be a boolean";
            goto out;
        }
        out->stream = v->type == JSCAN_TRUE;
    }
    v = jscan_top(&doc, body, "stream_options");
    struct jscan_span iu;
    bool has_iu = v && v->type == JSCAN_OBJECT && jscan_member(body, v, "include_usage", &iu) == 0;
    out->include_usage = has_iu && iu.type == JSCAN_TRUE;
    if (out->stream && !out->include_usage) {
        if (!v) { /* before the top-level object's '}': it has members ("model") */
            out->ask_off = doc.root.off + doc.root.len - 1;
            out->ask_ins = ",\"stream_options\":{\"include_usage\":true}";
        } else if (v->type == JSCAN_NULL) {
            out->ask_off = v->off;
            out->ask_del = v->len;
            out->ask_ins = "{\"include_usage\":true}";
        } else if (has_iu) { /* false, null, ...: the value replaced */
            out->ask_off = iu.off;
            out->ask_del = iu.len;
            out->ask_ins = "true";
        } else if (v->type == JSCAN_OBJECT) { /* after its '{' */
            out->ask_off = v->off + 1;
            out->ask_ins = v->count ? "\"include_usage\":true," : "\"include_usage\":true";
        }
    }
    int64_t mct = -1;
    if (req__count(body, jscan_top(&doc, body, "max_tokens"), &out->max_tokens) != 0 ||
        req__count(body, jscan_top(&doc, body, "max_completion_tokens"), &mct) != 0) {
        field = "max_tokens";
        msg = "'max_tokens' and 'max_completion_tokens' must be non-negative integers";
        goto out;
    }
    if (mct >= 0)
        out->max_tokens = mct; /* the newer name wins, as in OpenAI's API */
    if ((v = jscan_top(&doc, body, "user")) != NULL && v->type == JSCAN_STRING) {
        out->user_off = v->off;
        out->user_len = v->len;
    }
    switch (kind) {
    case JOB_CHAT:
        v = jscan_top(&doc, body, "messages");
        if (!v || v->type != JSCAN_ARRAY || v->count == 0) {
            field = "messages";
            msg = "'messages' is required and must be a non-empty array";
        }
        break;
    case JOB_COMPLETIONS:
        v = jscan_top(&doc, body, "prompt");
        if (!req__string_or_array(v)) {
            field = "prompt";
            msg = "'prompt' is required and must be a string or an array";
        }
        break;
    case JOB_EMBEDDINGS:
        v = jscan_top(&doc, body, "input");
        if (!req__string_or_array(v)) {
            field = "input";
            msg = "'input' is required and must be a string or an array";
        } else if (out->stream) {
            field = "stream";
            msg = "embeddings cannot be streamed";
        }
        break;
    case JOB__ENDPOINTS:
        rc = req__fail(LGE_INTERNAL, why, whylen, param, NULL, "unknown endpoint");
        goto out;
    }
    if (!msg)
        out->prompt_bytes = v->len;
out:
    if (msg)
        rc = req__fail(LGE_INVALID_REQUEST, why, whylen, param, field, msg);
    if (rc != LGE_NONE) {
        free(model);
        return rc;
    }
    out->model = model;
    return LGE_NONE;
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
