/*
 * jscan_bench — core/jscan.c against json-c on generated request bodies.
 *
 *   build/jscan_bench [--rounds N] [--min-ms M]
 *
 * Bodies (deterministic, built here): a small chat request, a ~75 KB chat body (60 messages of
 * English text with the usual escapes: newlines, quotes, an occasional \uXXXX), ~300 KB and
 * ~2 MB versions of it, and a ~75 KB body of mostly Chinese and Cyrillic text.
 *
 * Per body, two costs are timed, each the best of --rounds rounds (default 5) of at least
 * --min-ms (default 200) milliseconds:
 *   jscan   jscan_parse + the lookups the gateway does (model decoded, stream, messages);
 *   json-c  what http/request.c does today: json_tokener_new_ex(64), STRICT|VALIDATE_UTF8,
 *           json_tokener_parse_ex, the model lookup, json_object_put, json_tokener_free
 *           (without request.c's second pass for duplicate keys).
 * Prints MB/s (10^6 bytes) and ns per body for both, and the ratio. Not run by make test.
 */
#include "core/clock.h"
#include "core/jscan.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *p;
    size_t len, cap;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            fprintf(stderr, "jscan_bench: out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static const char *const en_words[] = {
    "the",     "gateway",  "forwards", "request", "to",       "an",       "engine",   "and",
    "streams", "tokens",   "back",     "while",   "keeping",  "a",        "strict",   "eye",
    "on",      "what",     "clients",  "send",    "model",    "answer",   "question", "about",
    "weather", "in",       "Paris",    "code",    "review",   "please",   "explain",  "why",
    "this",    "function", "returns",  "null",    "when",     "input",    "is",       "empty",
    "context", "window",   "summary",  "of",      "previous", "messages", "with",     "care",
    "however", "it",       "should",   "not",     "be",       "slower",   "than",     "before",
    "latency", "matters",  "for",      "every",   "user",     "GPU",      "memory",   "budget"};

static const char *const zh_words[] = {"推理",   "网关", "模型", "请求", "流式", "输出", "令牌",
                                       "上下文", "用户", "问题", "回答", "中文", "文本", "测试"};
static const char *const ru_words[] = {"запрос", "модель", "ответ", "пользователь", "контекст",
                                       "шлюз",   "поток",  "токен", "сообщение",    "память"};

/* One message's content: sentences of words, some quoted, some line breaks, as JSON text. */
static void english(struct sbuf *b, size_t bytes)
{
    size_t start = b->len;
    int cap = 1;
    while (b->len - start < bytes) {
        const char *w = en_words[rnd(sizeof(en_words) / sizeof(en_words[0]))];
        if (cap) {
            char c[64];
            snprintf(c, sizeof(c), "%s", w);
            if (c[0] >= 'a' && c[0] <= 'z')
                c[0] = (char)(c[0] - 'a' + 'A');
            puts_(b, c);
            cap = 0;
        } else {
            unsigned r = rnd(100);
            puts_(b, r < 3 ? " \\\"" : " ");
            puts_(b, w);
            if (r < 3)
                puts_(b, "\\\"");
        }
        unsigned r = rnd(100);
        if (r < 8) {
            puts_(b, r < 2 ? ".\\n\\n" : r < 3 ? ": \\u2014" : ".");
            cap = 1;
        } else if (r < 12) {
            puts_(b, ",");
        }
    }
}

static void nonascii(struct sbuf *b, size_t bytes)
{
    size_t start = b->len;
    while (b->len - start < bytes) {
        unsigned r = rnd(100);
        if (r < 60)
            puts_(b, zh_words[rnd(sizeof(zh_words) / sizeof(zh_words[0]))]);
        else if (r < 90) {
            puts_(b, ru_words[rnd(sizeof(ru_words) / sizeof(ru_words[0]))]);
            puts_(b, " ");
        } else if (r < 95)
            puts_(b, "，");
        else if (r < 98)
            puts_(b, "。\\n");
        else
            puts_(b, " GPU ");
    }
}

static char *chat_body(unsigned messages, size_t content_bytes, int cjk, size_t *len)
{
    struct sbuf b = {0};
    rng_state = 0x9e3779b97f4a7c15ull;
    puts_(&b, "{\"model\":\"llama3.2\",\"messages\":[");
    for (unsigned m = 0; m < messages; m++) {
        puts_(&b, m ? ",{\"role\":\"" : "{\"role\":\"");
        puts_(&b, m == 0 ? "system" : m % 2 ? "user" : "assistant");
        puts_(&b, "\",\"content\":\"");
        if (cjk)
            nonascii(&b, content_bytes);
        else
            english(&b, content_bytes);
        puts_(&b, "\"}");
    }
    puts_(&b, "],\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":512,"
              "\"temperature\":0.7,\"user\":\"bench\"}");
    *len = b.len;
    return b.p;
}

static volatile size_t sink;

static int run_jscan(const char *p, size_t n)
{
    struct jscan_doc d;
    char model[256];
    if (jscan_parse(&d, p, n) != JSCAN_OK)
        return -1;
    const struct jscan_span *m = jscan_top(&d, p, "model"), *s = jscan_top(&d, p, "stream");
    const struct jscan_span *msgs = jscan_top(&d, p, "messages");
    if (!m || jscan_string(p, m, model, sizeof(model)) < 0 || !s || !msgs)
        return -1;
    sink += (size_t)model[0] + s->type + msgs->count;
    return 0;
}

static int run_jsonc(const char *p, size_t n)
{
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return -1;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, p, (int)n), *v;
    int rc = root && json_tokener_get_error(tok) == json_tokener_success &&
                     json_object_object_get_ex(root, "model", &v)
                 ? 0
                 : -1;
    if (rc == 0)
        sink += (size_t)json_object_get_string_len(v);
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

/* Best ns per call over `rounds` rounds of at least min_ms each. */
static double best_ns(int (*fn)(const char *, size_t), const char *p, size_t n, int rounds,
                      unsigned min_ms)
{
    double best = 0;
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = clock_now_ns(), t;
        unsigned long calls = 0;
        do {
            if (fn(p, n) != 0) {
                fprintf(stderr, "jscan_bench: a parser refused a body\n");
                exit(1);
            }
            calls++;
            t = clock_now_ns();
        } while (t - t0 < (uint64_t)min_ms * NS_PER_MS);
        double ns = (double)(t - t0) / (double)calls;
        if (r == 0 || ns < best)
            best = ns;
    }
    return best;
}

int main(int argc, char **argv)
{
    int rounds = 5;
    unsigned min_ms = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--min-ms") == 0 && i + 1 < argc)
            min_ms = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--rounds N] [--min-ms M]\n", argv[0]);
            return 2;
        }
    }
    if (rounds < 1)
        rounds = 1;
    struct {
        const char *name;
        unsigned messages;
        size_t content;
        int cjk;
    } bodies[] = {
        {"chat small", 2, 60, 0},
        {"chat 75 KB (60 msgs)", 60, 1220, 0},
        {"chat 300 KB", 240, 1220, 0},
        {"chat 2 MB", 1600, 1220, 0},
        {"zh/ru 75 KB (60 msgs)", 60, 1220, 1},
    };
    printf("%-24s %10s %12s %10s %12s %10s %8s\n", "body", "bytes", "jscan ns", "MB/s", "json-c ns",
           "MB/s", "speedup");
    for (size_t k = 0; k < sizeof(bodies) / sizeof(bodies[0]); k++) {
        size_t n;
        char *p = chat_body(bodies[k].messages, bodies[k].content, bodies[k].cjk, &n);
        double a = best_ns(run_jscan, p, n, rounds, min_ms);
        double b = best_ns(run_jsonc, p, n, rounds, min_ms);
        printf("%-24s %10zu %12.0f %10.0f %12.0f %10.0f %7.1fx\n", bodies[k].name, n, a,
               (double)n * 1e3 / a, b, (double)n * 1e3 / b, b / a);
        free(p);
    }
    return 0;
}
