/*
 * api.c — the OpenAI-shaped endpoints of mockllm: request JSON in, complete response bytes (or a
 * stream description) out. No I/O here; server.c sends what this produces and runs the timers.
 *
 * Responses are written by hand into sbufs (no json-c objects on the way out): they are small,
 * fixed-shape, and byte-for-byte deterministic for a given request body.
 */
#include "cmd/mockllm/mock.h"
#include "cmd/mockllm/http1.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum route { R_UNKNOWN, R_CHAT, R_COMPL, R_EMB, R_MODELS, R_MODEL, R_HEALTH, R_STATS, R_RESET };

struct stream {
    char *head; /* {"id":"..","object":"..","created":..,"model":"..", */
    size_t head_len;
    int chat;
    int chunked;
    int include_usage;
    uint32_t tokens;
    uint32_t prompt_tokens;
    uint32_t next;
    uint32_t total; /* tokens + final + [usage] + [DONE] */
};

/* Per-request knobs: flags, overridden by the body's "mock" object. */
struct knobs {
    int64_t ttft_ms;
    int64_t itl_ms;
    int64_t tokens; /* < 0: not set by mock.tokens */
    int64_t status; /* 0: not set */
    int64_t close_after;
    int hang;
};

static const char *const ERR_500 =
    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    "Content-Length: 93\r\nConnection: close\r\n\r\n"
    "{\"error\":{\"message\":\"mockllm: out of memory\",\"type\":\"server_error\",\"param\":null,"
    "\"code\":null}}";

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_SEED 0xcbf29ce484222325ULL

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(struct api_ctx *x)
{
    return (double)(splitmix64(&x->rng) >> 11) * (1.0 / 9007199254740992.0);
}

static void add_hex16(struct sbuf *b, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char t[16];
    for (int i = 15; i >= 0; i--, v >>= 4)
        t[i] = hex[v & 15];
    sbuf_add(b, t, 16);
}

static uint32_t approx_tokens(size_t bytes)
{
    uint64_t t = (bytes + 3) / 4;
    return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* An integer member (a JSON integer, or a number with an integral value). */
static int get_int(json_object *obj, const char *key, int64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return 1;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (isfinite(d) && d == floor(d) && fabs(d) < 9e18) {
            *out = (int64_t)d;
            return 1;
        }
    }
    return 0;
}

static int get_bool(json_object *obj, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_boolean) &&
           json_object_get_boolean(v);
}

static json_object *get_typed(json_object *obj, const char *key, json_type t)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, t))
        return NULL;
    return v;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 500 ? "Client Error" : "Server Error";
    }
}

/* ---------------------------------------------------------------------------------------------
 * Response assembly
 */

/* Appends a response head. clen < 0: no Content-Length (chunked for HTTP/1.1, else
 * close-delimited). */
static void put_head(struct sbuf *o, int status, const char *ctype, int64_t clen, int keep_alive,
                     int http10, const char *extra)
{
    SBUF_LIT(o, "HTTP/1.1 ");
    sbuf_addu(o, (uint64_t)status);
    SBUF_LIT(o, " ");
    sbuf_adds(o, reason(status));
    SBUF_LIT(o, "\r\nContent-Type: ");
    sbuf_adds(o, ctype);
    SBUF_LIT(o, "\r\n");
    if (clen >= 0) {
        SBUF_LIT(o, "Content-Length: ");
        sbuf_addu(o, (uint64_t)clen);
        SBUF_LIT(o, "\r\n");
    } else if (!http10) {
        SBUF_LIT(o, "Transfer-Encoding: chunked\r\n");
    }
    if (!keep_alive)
        SBUF_LIT(o, "Connection: close\r\n");
    else if (http10)
        SBUF_LIT(o, "Connection: keep-alive\r\n");
    if (extra)
        sbuf_adds(o, extra);
    SBUF_LIT(o, "\r\n");
}

/* Sends x->body as a JSON response with `status`. */
static void reply(struct api_ctx *x, const struct api_req *rq, struct api_result *res, int status,
                  const char *extra)
{
    x->out.len = 0;
    put_head(&x->out, status, "application/json", (int64_t)x->body.len, res->keep_alive, rq->http10,
             extra);
    if (rq->method != HTTP_HEAD)
        sbuf_add(&x->out, x->body.p, x->body.len);
}

/* Writes an OpenAI error envelope into x->body. NULL param/code become JSON null. */
static void error_body(struct api_ctx *x, const char *type, const char *msg, size_t msg_len,
                       const char *param, const char *code)
{
    struct sbuf *b = &x->body;
    b->len = 0;
    SBUF_LIT(b, "{\"error\":{\"message\":");
    sbuf_add_jstr(b, msg, msg_len);
    SBUF_LIT(b, ",\"type\":");
    sbuf_add_jstr(b, type, strlen(type));
    SBUF_LIT(b, ",\"param\":");
    if (param)
        sbuf_add_jstr(b, param, strlen(param));
    else
        SBUF_LIT(b, "null");
    SBUF_LIT(b, ",\"code\":");
    if (code)
        sbuf_add_jstr(b, code, strlen(code));
    else
        SBUF_LIT(b, "null");
    SBUF_LIT(b, "}}");
}

static void reply_error(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                        int status, const char *msg, const char *param, const char *code)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    error_body(x, type, msg, strlen(msg), param, code);
    reply(x, rq, res, status, NULL);
}

void api_http_error(struct api_ctx *x, int status, struct api_result *res)
{
    static const struct api_req rq = {0};
    const char *msg = status == 413   ? "Request body too large"
                      : status == 431 ? "Request header fields too large"
                      : status == 501 ? "Unsupported Transfer-Encoding"
                      : status == 505 ? "HTTP version not supported"
                                      : "Malformed HTTP request";
    memset(res, 0, sizeof(*res));
    res->kind = API_RESPOND;
    res->keep_alive = 0;
    x->out.err = x->body.err = 0;
    reply_error(x, &rq, res, status, msg, NULL, NULL);
    res->data = x->out.p;
    res->len = x->out.len;
    if (x->out.err || x->body.err) {
        res->data = ERR_500;
        res->len = strlen(ERR_500);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Knobs and faults
 */

static void read_knobs(const struct mock_config *cfg, json_object *req, struct knobs *k)
{
    k->ttft_ms = cfg->ttft_ms;
    k->itl_ms = cfg->itl_ms;
    k->tokens = -1;
    k->status = 0;
    k->close_after = cfg->close_after;
    k->hang = 0;
    json_object *m = get_typed(req, "mock", json_type_object);
    if (!m)
        return;
    int64_t v;
    if (get_int(m, "ttft_ms", &v))
        k->ttft_ms = clamp64(v, 0, MOCK_MAX_DELAY_MS);
    if (get_int(m, "itl_ms", &v))
        k->itl_ms = clamp64(v, 0, MOCK_MAX_DELAY_MS);
    if (get_int(m, "tokens", &v))
        k->tokens = clamp64(v, 0, MOCK_MAX_TOKENS);
    if (get_int(m, "status", &v))
        k->status = v;
    if (get_int(m, "close_after", &v))
        k->close_after = v < 0 ? -1 : v;
    k->hang = get_bool(m, "hang");
}

/* The failure status for this request, or 0 to answer normally. */
static int fail_status(struct api_ctx *x, const struct knobs *k)
{
    const struct mock_config *cfg = x->cfg;
    if (k->status)
        return k->status >= 400 && k->status <= 599 ? (int)k->status : 0;
    if (!cfg->fail_status && cfg->fail_rate < 0)
        return 0;
    double rate = cfg->fail_rate < 0 ? 1.0 : cfg->fail_rate;
    if (rate < 1.0 && rng_unit(x) >= rate)
        return 0;
    return cfg->fail_status ? cfg->fail_status : 500;
}

static void reply_fail(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                       int status)
{
    static const char msg[] = "mock failure";
    error_body(x, "mock_error", msg, sizeof(msg) - 1, NULL, "mock_failure");
    reply(x, rq, res, status, NULL);
    if (x->cfg->fail_after_ms > 0) { /* --fail-after-ms: the whole answer, later */
        res->kind = API_DELAY;
        res->delay_ms = (uint64_t)x->cfg->fail_after_ms;
    }
}

/* Turns a complete non-stream response in x->out into a delayed one if ttft asks for it. */
static void maybe_delay(struct api_result *res, const struct knobs *k)
{
    if (k->ttft_ms > 0) {
        res->kind = API_DELAY;
        res->delay_ms = (uint64_t)k->ttft_ms;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Token accounting of prompts (deterministic approximation: 4 bytes per token)
 */

static uint32_t chat_prompt_tokens(json_object *messages)
{
    uint64_t t = 0;
    size_t n = json_object_array_length(messages);
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(messages, i);
        json_object *c;
        if (!json_object_is_type(m, json_type_object) ||
            !json_object_object_get_ex(m, "content", &c))
            continue;
        if (json_object_is_type(c, json_type_string)) {
            t += approx_tokens((size_t)json_object_get_string_len(c));
        } else if (json_object_is_type(c, json_type_array)) {
            size_t np = json_object_array_length(c);
            for (size_t j = 0; j < np; j++) {
                json_object *txt =
                    get_typed(json_object_array_get_idx(c, j), "text", json_type_string);
                if (txt)
                    t += approx_tokens((size_t)json_object_get_string_len(txt));
            }
        }
    }
    return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

/* Tokens of a completions prompt: a string, or an array of strings, ints, or int arrays.
 * Returns -1 if the shape is wrong. */
static int64_t prompt_tokens(json_object *p)
{
    if (json_object_is_type(p, json_type_string))
        return approx_tokens((size_t)json_object_get_string_len(p));
    if (!json_object_is_type(p, json_type_array))
        return -1;
    int64_t t = 0;
    size_t n = json_object_array_length(p);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(p, i);
        if (json_object_is_type(e, json_type_string))
            t += approx_tokens((size_t)json_object_get_string_len(e));
        else if (json_object_is_type(e, json_type_int))
            t += 1;
        else if (json_object_is_type(e, json_type_array))
            t += (int64_t)json_object_array_length(e);
        else
            return -1;
    }
    return t > UINT32_MAX ? UINT32_MAX : t;
}

/* ---------------------------------------------------------------------------------------------
 * Chat and text completions
 */

static void put_usage(struct sbuf *b, uint32_t prompt, uint32_t completion)
{
    SBUF_LIT(b, "\"usage\":{\"prompt_tokens\":");
    sbuf_addu(b, prompt);
    SBUF_LIT(b, ",\"completion_tokens\":");
    sbuf_addu(b, completion);
    SBUF_LIT(b, ",\"total_tokens\":");
    sbuf_addu(b, (uint64_t)prompt + completion);
    SBUF_LIT(b, "}");
}

/* {"id":"<prefix><hex>","object":"<object>","created":..,"model":"<model>", */
static void put_common(struct sbuf *b, int chat, uint64_t id, const char *object,
                       json_object *model)
{
    SBUF_LIT(b, "{\"id\":\"");
    if (chat)
        SBUF_LIT(b, "chatcmpl-");
    else
        SBUF_LIT(b, "cmpl-");
    add_hex16(b, id);
    SBUF_LIT(b, "\",\"object\":\"");
    sbuf_adds(b, object);
    SBUF_LIT(b, "\",\"created\":");
    sbuf_addu(b, MOCK_CREATED);
    SBUF_LIT(b, ",\"model\":");
    sbuf_add_jstr(b, json_object_get_string(model), (size_t)json_object_get_string_len(model));
    SBUF_LIT(b, ",");
}

static struct stream *stream_new(int chat, uint64_t id, json_object *model, uint32_t tokens,
                                 uint32_t prompt, int usage, int chunked)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    struct sbuf h = {0};
    put_common(&h, chat, id, chat ? "chat.completion.chunk" : "text_completion", model);
    if (h.err) {
        sbuf_release(&h);
        free(s);
        return NULL;
    }
    s->head = h.p;
    s->head_len = h.len;
    s->chat = chat;
    s->chunked = chunked;
    s->include_usage = usage;
    s->tokens = tokens;
    s->prompt_tokens = prompt;
    s->total = tokens + 2 + (usage ? 1 : 0);
    return s;
}

void stream_free(struct stream *s)
{
    if (!s)
        return;
    free(s->head);
    free(s);
}

uint32_t stream_emitted(const struct stream *s)
{
    return s->next;
}

int stream_emit(struct stream *s, struct sbuf *b)
{
    static const char hex[] = "0123456789abcdef";
    if (s->next >= s->total)
        return 0;
    uint32_t k = s->next++;
    size_t mark = b->len;
    if (s->chunked && sbuf_reserve(b, 10) == 0)
        b->len += 10; /* room for the chunk-size line, fixed up below */
    size_t start = b->len;
    SBUF_LIT(b, "data: ");
    if (k == s->total - 1) {
        SBUF_LIT(b, "[DONE]");
    } else {
        sbuf_add(b, s->head, s->head_len);
        if (k < s->tokens) {
            if (s->chat) {
                SBUF_LIT(b, "\"choices\":[{\"index\":0,\"delta\":{");
                if (k == 0)
                    SBUF_LIT(b, "\"role\":\"assistant\",");
                SBUF_LIT(b, "\"content\":\"tok");
                sbuf_addu(b, k);
                SBUF_LIT(b, " \"},\"finish_reason\":null}]}");
            } else {
                SBUF_LIT(b, "\"choices\":[{\"index\":0,\"text\":\"tok");
                sbuf_addu(b, k);
                SBUF_LIT(b, " \",\"logprobs\":null,\"finish_reason\":null}]}");
            }
        } else if (k == s->tokens) {
            if (s->chat)
                SBUF_LIT(b, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
            else
                SBUF_LIT(b, "\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,"
                            "\"finish_reason\":\"stop\"}]}");
        } else {
            SBUF_LIT(b, "\"choices\":[],");
            put_usage(b, s->prompt_tokens, s->tokens);
            SBUF_LIT(b, "}");
        }
    }
    SBUF_LIT(b, "\n\n");
    if (s->chunked && !b->err) {
        size_t plen = b->len - start;
        char t[16];
        size_t i = sizeof(t);
        for (size_t v = plen; v; v >>= 4)
            t[--i] = hex[v & 15];
        size_t hl = sizeof(t) - i;
        memmove(b->p + mark + hl + 2, b->p + start, plen);
        memcpy(b->p + mark, t + i, hl);
        b->p[mark + hl] = '\r';
        b->p[mark + hl + 1] = '\n';
        b->len = mark + hl + 2 + plen;
        SBUF_LIT(b, "\r\n");
        if (s->next == s->total)
            SBUF_LIT(b, "0\r\n\r\n");
    }
    return s->next < s->total;
}

static void handle_generate(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                            json_object *req, const struct knobs *k, int chat)
{
    json_object *model = get_typed(req, "model", json_type_string);
    if (!model) {
        reply_error(x, rq, res, 400, "you must provide a model parameter", "model", NULL);
        return;
    }
    uint32_t prompt;
    if (chat) {
        json_object *messages = get_typed(req, "messages", json_type_array);
        if (!messages) {
            reply_error(x, rq, res, 400, "'messages' is a required property (an array)", "messages",
                        NULL);
            return;
        }
        prompt = chat_prompt_tokens(messages);
    } else {
        json_object *p;
        int64_t t = json_object_object_get_ex(req, "prompt", &p) ? prompt_tokens(p) : -1;
        if (t < 0) {
            reply_error(x, rq, res, 400, "'prompt' is a required property (a string or an array)",
                        "prompt", NULL);
            return;
        }
        prompt = (uint32_t)t;
    }
    int status = fail_status(x, k);
    if (status) {
        reply_fail(x, rq, res, status);
        return;
    }

    int64_t tokens = x->cfg->tokens, v;
    if (k->tokens >= 0)
        tokens = k->tokens;
    else if (get_int(req, "max_completion_tokens", &v) || get_int(req, "max_tokens", &v))
        tokens = clamp64(v, 0, MOCK_MAX_TOKENS);
    uint64_t id = fnv1a(rq->body, rq->body_len, FNV_SEED);

    if (get_bool(req, "stream")) {
        json_object *so = get_typed(req, "stream_options", json_type_object);
        int usage = so && get_bool(so, "include_usage");
        if (rq->http10)
            res->keep_alive = 0; /* close-delimited body */
        res->stream = stream_new(chat, id, model, (uint32_t)tokens, prompt, usage, !rq->http10);
        if (!res->stream) {
            x->out.err = 1;
            return;
        }
        x->out.len = 0;
        put_head(&x->out, 200, "text/event-stream", -1, res->keep_alive, rq->http10,
                 "Cache-Control: no-cache\r\n");
        res->kind = API_STREAM;
        res->delay_ms = (uint64_t)k->ttft_ms;
        res->itl_ms = (uint64_t)k->itl_ms;
        res->close_after = k->close_after;
        return;
    }

    struct sbuf *b = &x->body;
    b->len = 0;
    put_common(b, chat, id, chat ? "chat.completion" : "text_completion", model);
    if (chat)
        SBUF_LIT(b, "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
    else
        SBUF_LIT(b, "\"choices\":[{\"index\":0,\"text\":\"");
    for (int64_t i = 0; i < tokens; i++) {
        SBUF_LIT(b, "tok");
        sbuf_addu(b, (uint64_t)i);
        SBUF_LIT(b, " ");
    }
    if (chat)
        SBUF_LIT(b, "\"},\"finish_reason\":\"stop\"}],");
    else
        SBUF_LIT(b, "\",\"logprobs\":null,\"finish_reason\":\"stop\"}],");
    put_usage(b, prompt, (uint32_t)tokens);
    SBUF_LIT(b, "}");
    reply(x, rq, res, 200, NULL);
    maybe_delay(res, k);
}

/* ---------------------------------------------------------------------------------------------
 * Embeddings: unit vectors from a splitmix64 sequence seeded by the input's FNV-1a hash
 */

struct b64 {
    struct sbuf *b;
    unsigned char pend[3];
    int n;
};

static void b64_flush(struct b64 *e, int final)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (e->n == 0 || (e->n < 3 && !final))
        return;
    unsigned v = (unsigned)e->pend[0] << 16 | (unsigned)(e->n > 1 ? e->pend[1] : 0) << 8 |
                 (unsigned)(e->n > 2 ? e->pend[2] : 0);
    char o[4] = {tbl[v >> 18], tbl[(v >> 12) & 63], e->n > 1 ? tbl[(v >> 6) & 63] : '=',
                 e->n > 2 ? tbl[v & 63] : '='};
    sbuf_add(e->b, o, 4);
    e->n = 0;
}

static void b64_put(struct b64 *e, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        e->pend[e->n++] = p[i];
        b64_flush(e, 0);
    }
}

static double emb_component(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void put_vector(struct sbuf *b, uint64_t seed, int dim, int base64)
{
    uint64_t s = seed;
    double norm = 0;
    for (int j = 0; j < dim; j++) {
        double c = emb_component(&s);
        norm += c * c;
    }
    norm = norm > 0 ? 1.0 / sqrt(norm) : 0;
    s = seed;
    if (base64) {
        struct b64 e = {.b = b};
        SBUF_LIT(b, "\"");
        for (int j = 0; j < dim; j++) {
            float f = (float)(emb_component(&s) * norm);
            uint32_t u;
            memcpy(&u, &f, 4);
            unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                                   (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
            b64_put(&e, le, 4);
        }
        b64_flush(&e, 1);
        SBUF_LIT(b, "\"");
        return;
    }
    SBUF_LIT(b, "[");
    for (int j = 0; j < dim; j++) {
        int64_t m = (int64_t)llround(emb_component(&s) * norm * 1e6);
        char t[16];
        size_t i = sizeof(t);
        uint64_t a = (uint64_t)(m < 0 ? -m : m);
        for (int d = 0; d < 6; d++, a /= 10)
            t[--i] = (char)('0' + a % 10);
        t[--i] = '.';
        do {
            t[--i] = (char)('0' + a % 10);
            a /= 10;
        } while (a);
        if (m < 0)
            t[--i] = '-';
        if (j)
            SBUF_LIT(b, ",");
        sbuf_add(b, t + i, sizeof(t) - i);
    }
    SBUF_LIT(b, "]");
}

/* Hash and token count of one embedding input item (a string or an array of ints). */
static int emb_item(json_object *e, uint64_t *hash, uint64_t *tokens)
{
    if (json_object_is_type(e, json_type_string)) {
        size_t n = (size_t)json_object_get_string_len(e);
        *hash = fnv1a(json_object_get_string(e), n, FNV_SEED);
        *tokens += approx_tokens(n);
        return 0;
    }
    if (!json_object_is_type(e, json_type_array))
        return -1;
    size_t n = json_object_array_length(e);
    uint64_t h = FNV_SEED ^ 0x5bd1e995; /* ints never hash like the same text */
    for (size_t i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(e, i);
        if (!json_object_is_type(t, json_type_int))
            return -1;
        uint64_t v = (uint64_t)json_object_get_int64(t);
        unsigned char le[8];
        for (int j = 0; j < 8; j++)
            le[j] = (unsigned char)(v >> (8 * j));
        h = fnv1a(le, 8, h);
    }
    *hash = h;
    *tokens += n;
    return 0;
}

static void handle_embeddings(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                              json_object *req, const struct knobs *k)
{
    json_object *model = get_typed(req, "model", json_type_string);
    if (!model) {
        reply_error(x, rq, res, 400, "you must provide a model parameter", "model", NULL);
        return;
    }
    json_object *input;
    int ok = json_object_object_get_ex(req, "input", &input);
    /* Items: a string; an array of strings; an array of ints (one item); an array of int arrays. */
    int single = ok && (json_object_is_type(input, json_type_string) ||
                        (json_object_is_type(input, json_type_array) &&
                         json_object_array_length(input) > 0 &&
                         json_object_is_type(json_object_array_get_idx(input, 0), json_type_int)));
    size_t n = single                                              ? 1
               : ok && json_object_is_type(input, json_type_array) ? json_object_array_length(input)
                                                                   : 0;
    uint64_t tokens = 0, h;
    for (size_t i = 0; ok && i < n; i++)
        ok = emb_item(single ? input : json_object_array_get_idx(input, i), &h, &tokens) == 0;
    if (!ok || n == 0) {
        reply_error(x, rq, res, 400,
                    "'input' must be a non-empty string, array of strings, array of integers, "
                    "or array of integer arrays",
                    "input", NULL);
        return;
    }
    int status = fail_status(x, k);
    if (status) {
        reply_fail(x, rq, res, status);
        return;
    }
    int64_t dim = x->cfg->embedding_dim;
    if (get_int(req, "dimensions", &dim))
        dim = clamp64(dim, 1, 65536);
    json_object *fmt = get_typed(req, "encoding_format", json_type_string);
    int base64 = fmt && strcmp(json_object_get_string(fmt), "base64") == 0;

    struct sbuf *b = &x->body;
    b->len = 0;
    SBUF_LIT(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        uint64_t unused = 0;
        emb_item(single ? input : json_object_array_get_idx(input, i), &h, &unused);
        if (i)
            SBUF_LIT(b, ",");
        SBUF_LIT(b, "{\"object\":\"embedding\",\"index\":");
        sbuf_addu(b, i);
        SBUF_LIT(b, ",\"embedding\":");
        put_vector(b, h, (int)dim, base64);
        SBUF_LIT(b, "}");
    }
    SBUF_LIT(b, "],\"model\":");
    sbuf_add_jstr(b, json_object_get_string(model), (size_t)json_object_get_string_len(model));
    SBUF_LIT(b, ",\"usage\":{\"prompt_tokens\":");
    sbuf_addu(b, tokens);
    SBUF_LIT(b, ",\"total_tokens\":");
    sbuf_addu(b, tokens);
    SBUF_LIT(b, "}}");
    reply(x, rq, res, 200, NULL);
    maybe_delay(res, k);
}

/* ---------------------------------------------------------------------------------------------
 * Inference dispatch, models, health, stats
 */

static void handle_infer(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                         int route)
{
    res->infer = 1;
    json_tokener_reset(x->tok);
    json_object *req = NULL;
    if (rq->body_len > 0)
        req = json_tokener_parse_ex(x->tok, rq->body, (int)rq->body_len);
    if (req && json_tokener_get_error(x->tok) == json_tokener_success) {
        /* Only whitespace may follow the value. */
        for (size_t i = json_tokener_get_parse_end(x->tok); i < rq->body_len; i++) {
            char ch = rq->body[i];
            if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
                json_object_put(req);
                req = NULL;
                break;
            }
        }
    } else if (req) {
        json_object_put(req);
        req = NULL;
    }
    if (!req || !json_object_is_type(req, json_type_object)) {
        reply_error(x, rq, res, 400,
                    req ? "The request body must be a JSON object"
                        : "We could not parse the JSON body of your request",
                    NULL, NULL);
        json_object_put(req);
        return;
    }
    struct knobs k;
    read_knobs(x->cfg, req, &k);
    if (k.hang)
        res->kind = API_HANG;
    else if (route == R_EMB)
        handle_embeddings(x, rq, res, req, &k);
    else
        handle_generate(x, rq, res, req, &k, route == R_CHAT);
    json_object_put(req);
}

static void put_model(struct sbuf *b, const char *id, size_t n)
{
    SBUF_LIT(b, "{\"id\":");
    sbuf_add_jstr(b, id, n);
    SBUF_LIT(b, ",\"object\":\"model\",\"created\":");
    sbuf_addu(b, MOCK_CREATED);
    SBUF_LIT(b, ",\"owned_by\":\"mockllm\"}");
}

static void handle_models(struct api_ctx *x, const struct api_req *rq, struct api_result *res)
{
    struct sbuf *b = &x->body;
    b->len = 0;
    SBUF_LIT(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < x->cfg->n_models; i++) {
        if (i)
            SBUF_LIT(b, ",");
        put_model(b, x->cfg->models[i], strlen(x->cfg->models[i]));
    }
    SBUF_LIT(b, "]}");
    reply(x, rq, res, 200, NULL);
}

static void handle_model(struct api_ctx *x, const struct api_req *rq, struct api_result *res,
                         const char *id, size_t n)
{
    for (size_t i = 0; i < x->cfg->n_models; i++) {
        const char *m = x->cfg->models[i];
        if (strlen(m) == n && memcmp(m, id, n) == 0) {
            x->body.len = 0;
            put_model(&x->body, id, n);
            reply(x, rq, res, 200, NULL);
            return;
        }
    }
    struct sbuf msg = {0};
    SBUF_LIT(&msg, "The model '");
    sbuf_add(&msg, id, n);
    SBUF_LIT(&msg, "' does not exist");
    if (msg.err) {
        x->out.err = 1;
    } else {
        error_body(x, "invalid_request_error", msg.p, msg.len, "model", "model_not_found");
        reply(x, rq, res, 404, NULL);
    }
    sbuf_release(&msg);
}

static void handle_stats(struct api_ctx *x, const struct api_req *rq, struct api_result *res)
{
    uint64_t req = 0, done = 0, ab = 0, acc = 0;
    int64_t act = 0, conns = 0;
    for (int i = 0; i < x->stats->n; i++) {
        struct stats_shard *s = &x->stats->shard[i];
        req += atomic_load_explicit(&s->requests, memory_order_relaxed);
        done += atomic_load_explicit(&s->completed, memory_order_relaxed);
        ab += atomic_load_explicit(&s->aborted, memory_order_relaxed);
        acc += atomic_load_explicit(&s->accepted, memory_order_relaxed);
        act += atomic_load_explicit(&s->active, memory_order_relaxed);
        conns += atomic_load_explicit(&s->connections, memory_order_relaxed);
    }
    struct sbuf *b = &x->body;
    b->len = 0;
    SBUF_LIT(b, "{\"requests\":");
    sbuf_addu(b, req);
    SBUF_LIT(b, ",\"active\":");
    sbuf_addu(b, (uint64_t)(act > 0 ? act : 0));
    SBUF_LIT(b, ",\"completed\":");
    sbuf_addu(b, done);
    SBUF_LIT(b, ",\"aborted\":");
    sbuf_addu(b, ab);
    SBUF_LIT(b, ",\"connections\":");
    sbuf_addu(b, (uint64_t)(conns > 0 ? conns : 0));
    SBUF_LIT(b, ",\"accepted\":");
    sbuf_addu(b, acc);
    SBUF_LIT(b, "}");
    reply(x, rq, res, 200, NULL);
}

static void handle_reset(struct api_ctx *x, const struct api_req *rq, struct api_result *res)
{
    for (int i = 0; i < x->stats->n; i++) {
        struct stats_shard *s = &x->stats->shard[i];
        atomic_store_explicit(&s->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&s->completed, 0, memory_order_relaxed);
        atomic_store_explicit(&s->aborted, 0, memory_order_relaxed);
        atomic_store_explicit(&s->accepted, 0, memory_order_relaxed);
    }
    x->body.len = 0;
    SBUF_LIT(&x->body, "{\"status\":\"ok\"}");
    reply(x, rq, res, 200, NULL);
}

static int path_is(const struct api_req *rq, const char *lit)
{
    return rq->path_len == strlen(lit) && memcmp(rq->path, lit, rq->path_len) == 0;
}

static int route_of(const struct api_req *rq)
{
    static const struct {
        const char *path;
        int route;
    } table[] = {
        {"/v1/chat/completions", R_CHAT}, {"/v1/completions", R_COMPL}, {"/v1/embeddings", R_EMB},
        {"/v1/models", R_MODELS},         {"/health", R_HEALTH},        {"/mock/stats", R_STATS},
        {"/mock/reset", R_RESET},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (path_is(rq, table[i].path))
            return table[i].route;
    if (rq->path_len > 11 && memcmp(rq->path, "/v1/models/", 11) == 0)
        return R_MODEL;
    return R_UNKNOWN;
}

static void not_found(struct api_ctx *x, const struct api_req *rq, struct api_result *res)
{
    struct sbuf msg = {0};
    SBUF_LIT(&msg, "Invalid URL (");
    sbuf_adds(&msg, rq->method == HTTP_GET    ? "GET"
                    : rq->method == HTTP_POST ? "POST"
                    : rq->method == HTTP_HEAD ? "HEAD"
                                              : "?");
    SBUF_LIT(&msg, " ");
    sbuf_add(&msg, rq->path, rq->path_len);
    SBUF_LIT(&msg, ")");
    if (msg.err) {
        x->out.err = 1;
    } else {
        error_body(x, "invalid_request_error", msg.p, msg.len, NULL, "unknown_url");
        reply(x, rq, res, 404, NULL);
    }
    sbuf_release(&msg);
}

void api_handle(struct api_ctx *x, const struct api_req *rq, struct api_result *res)
{
    memset(res, 0, sizeof(*res));
    res->kind = API_RESPOND;
    res->keep_alive = rq->keep_alive;
    res->close_after = -1;
    x->out.len = x->body.len = 0;
    x->out.err = x->body.err = 0;

    int route = route_of(rq);
    int is_mock = route == R_STATS || route == R_RESET;
    int want_post = route == R_CHAT || route == R_COMPL || route == R_EMB || route == R_RESET;
    if (x->cfg->hang && !is_mock) {
        res->kind = API_HANG;
        res->infer = want_post && rq->method == HTTP_POST;
        return;
    }
    int method = rq->method == HTTP_HEAD ? HTTP_GET : rq->method; /* HEAD: GET without body */
    if (route != R_UNKNOWN && method != (want_post ? HTTP_POST : HTTP_GET)) {
        x->body.len = 0;
        error_body(x, "invalid_request_error", "Method not allowed", 18, NULL,
                   "method_not_allowed");
        reply(x, rq, res, 405, want_post ? "Allow: POST\r\n" : "Allow: GET\r\n");
    } else {
        switch (route) {
        case R_CHAT:
        case R_COMPL:
        case R_EMB:
            handle_infer(x, rq, res, route);
            break;
        case R_MODELS:
            handle_models(x, rq, res);
            break;
        case R_MODEL:
            handle_model(x, rq, res, rq->path + 11, rq->path_len - 11);
            break;
        case R_HEALTH:
            x->body.len = 0;
            SBUF_LIT(&x->body, "{\"status\":\"ok\"}");
            reply(x, rq, res, 200, NULL);
            break;
        case R_STATS:
            handle_stats(x, rq, res);
            break;
        case R_RESET:
            handle_reset(x, rq, res);
            break;
        default:
            not_found(x, rq, res);
        }
    }
    res->data = x->out.p;
    res->len = x->out.len;
    if (res->kind == API_HANG)
        return;
    if (x->out.err || x->body.err) {
        stream_free(res->stream);
        res->stream = NULL;
        res->kind = API_RESPOND;
        res->keep_alive = 0;
        res->data = ERR_500;
        res->len = strlen(ERR_500);
    }
}

int api_init(struct api_ctx *x, const struct mock_config *cfg, struct mock_stats *stats,
             uint64_t seed)
{
    memset(x, 0, sizeof(*x));
    x->cfg = cfg;
    x->stats = stats;
    x->rng = seed;
    x->tok = json_tokener_new_ex(256);
    return x->tok ? 0 : -1;
}

void api_release(struct api_ctx *x)
{
    if (x->tok)
        json_tokener_free(x->tok);
    x->tok = NULL;
    sbuf_release(&x->out);
    sbuf_release(&x->body);
}
