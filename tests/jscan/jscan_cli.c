/* jscan_cli — the C side of the differential test (tests/jscan/diff.py).
 *
 *   jscan_cli FILE...     one JSON line per file
 *   jscan_cli --stream    reads records "<decimal length>\n<bytes>" from stdin, one line each
 *
 * Each line: {"status": "ok" | a status name, ...} and, when the status is ok, what the gateway
 * would extract: every top-level member [key, type, offset, length, count, escaped], model,
 * user (decoded, as "h:<hex>", or "nul" / "surrogate" when jscan_string refuses them), the type
 * (and integer value) of stream, stream_options.include_usage, max_tokens,
 * max_completion_tokens, type/count/length of messages, prompt, input, and per element of
 * messages its type, length, count and decoded "role" (read with jscan_iter / jscan_member).
 * Every input is copied into a buffer of exactly its size, so an over-read is a sanitizer
 * report in the ASan build. */
#include "core/jscan.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {"absent", "null",   "false", "true",
                                         "number", "string", "array", "object"};

static const char *status_name(enum jscan_status st)
{
    switch (st) {
    case JSCAN_OK:
        return "ok";
    case JSCAN_TOO_LONG:
        return "too_long";
    case JSCAN_EMPTY:
        return "empty";
    case JSCAN_TRUNCATED:
        return "truncated";
    case JSCAN_SYNTAX:
        return "syntax";
    case JSCAN_BAD_NUMBER:
        return "bad_number";
    case JSCAN_BAD_ESCAPE:
        return "bad_escape";
    case JSCAN_CTRL_CHAR:
        return "ctrl_char";
    case JSCAN_BAD_UTF8:
        return "bad_utf8";
    case JSCAN_TRAILING:
        return "trailing";
    case JSCAN_DEPTH:
        return "depth";
    case JSCAN_NOT_OBJECT:
        return "not_object";
    case JSCAN_NUL_KEY:
        return "nul_key";
    case JSCAN_TOO_MANY_KEYS:
        return "too_many_keys";
    case JSCAN_DUP_KEY:
        return "dup_key";
    }
    return "?";
}

/* A decoded string as "h:<hex>", or the reason jscan_string refused it. */
static void put_str(const char *p, const struct jscan_span *s)
{
    size_t cap = (size_t)s->len + 1;
    char *out = malloc(cap);
    if (!out) {
        fputs("\"oom\"", stdout);
        return;
    }
    long n = jscan_string(p, s, out, cap);
    if (n == JSCAN_ENUL)
        fputs("\"nul\"", stdout);
    else if (n == JSCAN_ESURROGATE)
        fputs("\"surrogate\"", stdout);
    else if (n < 0)
        printf("\"error %ld\"", n);
    else {
        fputs("\"h:", stdout);
        for (long k = 0; k < n; k++)
            printf("%02x", (unsigned char)out[k]);
        putchar('"');
    }
    free(out);
}

/* A value as its decoded string, or its type name (with the integer value for integers when
 * `ints`). */
static void put_val(const char *p, const struct jscan_span *v, int ints)
{
    int64_t x;
    if (!v)
        fputs("\"absent\"", stdout);
    else if (v->type == JSCAN_STRING && !ints)
        put_str(p, v);
    else if (v->type == JSCAN_NUMBER && ints && jscan_int(p, v, &x) == 0)
        printf("%" PRId64, x);
    else
        printf("\"%s\"", type_names[v->type]);
}

static void put_shape(const struct jscan_span *v)
{
    if (!v)
        fputs("\"absent\"", stdout);
    else
        printf("[\"%s\",%u,%u]", type_names[v->type], (unsigned)v->count, (unsigned)v->len);
}

static void report(const char *name, const char *p, size_t len)
{
    static struct jscan_doc d; /* too large to be worth a stack frame here */
    enum jscan_status st = jscan_parse(&d, p, len);
    printf("{\"file\":\"%s\",\"status\":\"%s\"", name, status_name(st));
    if (st != JSCAN_OK) {
        printf(",\"err_off\":%zu}\n", d.err_off);
        return;
    }
    printf(",\"n\":%u,\"members\":[", d.n_top);
    for (unsigned j = 0; j < d.n_top; j++) {
        const struct jscan_member *m = &d.top[j];
        printf("%s[", j ? "," : "");
        put_str(p, &m->key);
        printf(",\"%s\",%u,%u,%u,%u]", type_names[m->val.type], (unsigned)m->val.off,
               (unsigned)m->val.len, (unsigned)m->val.count, (unsigned)m->val.escaped);
    }
    fputs("],\"model\":", stdout);
    put_val(p, jscan_top(&d, p, "model"), 0);
    fputs(",\"user\":", stdout);
    put_val(p, jscan_top(&d, p, "user"), 0);
    fputs(",\"stream\":", stdout);
    put_val(p, jscan_top(&d, p, "stream"), 1);
    fputs(",\"include_usage\":", stdout);
    const struct jscan_span *so = jscan_top(&d, p, "stream_options");
    struct jscan_span iu;
    if (!so || so->type != JSCAN_OBJECT)
        fputs("\"n/a\"", stdout);
    else
        put_val(p, jscan_member(p, so, "include_usage", &iu) == 0 ? &iu : NULL, 1);
    fputs(",\"max_tokens\":", stdout);
    put_val(p, jscan_top(&d, p, "max_tokens"), 1);
    fputs(",\"max_completion_tokens\":", stdout);
    put_val(p, jscan_top(&d, p, "max_completion_tokens"), 1);
    const char *shapes[] = {"messages", "prompt", "input"};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        printf(",\"%s\":", shapes[k]);
        put_shape(jscan_top(&d, p, shapes[k]));
    }
    const struct jscan_span *msgs = jscan_top(&d, p, "messages");
    if (msgs && msgs->type == JSCAN_ARRAY) {
        struct jscan_iter it;
        struct jscan_span k, v, role;
        unsigned n = 0;
        fputs(",\"elems\":[", stdout);
        jscan_iter_init(&it, msgs);
        while (jscan_iter_next(&it, p, &k, &v) == 0) {
            printf("%s[\"%s\",%u,%u,", n++ ? "," : "", type_names[v.type], (unsigned)v.len,
                   (unsigned)v.count);
            if (v.type != JSCAN_OBJECT)
                fputs("\"n/a\"", stdout);
            else
                put_val(p, jscan_member(p, &v, "role", &role) == 0 ? &role : NULL, 0);
            putchar(']');
        }
        putchar(']');
    }
    fputs("}\n", stdout);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "jscan_cli: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += r;
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "jscan_cli: out of memory\n");
        return -1;
    }
    char *exact = malloc(len ? len : 1); /* exactly len bytes: over-reads are ASan reports */
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    const char *base = strrchr(path, '/');
    report(base ? base + 1 : path, exact, len);
    free(exact);
    return 0;
}

static int run_stream(void)
{
    char name[32];
    for (unsigned idx = 0;; idx++) {
        unsigned long len;
        if (scanf("%lu", &len) != 1)
            return 0;
        if (getchar() != '\n')
            return -1;
        char *buf = malloc(len ? len : 1);
        if (!buf || fread(buf, 1, len, stdin) != len) {
            free(buf);
            return -1;
        }
        snprintf(name, sizeof(name), "%u", idx);
        report(name, buf, len);
        free(buf);
    }
}

int main(int argc, char **argv)
{
    int rc = 0;
    if (argc == 2 && strcmp(argv[1], "--stream") == 0)
        rc = run_stream();
    else
        for (int k = 1; k < argc; k++)
            if (run_file(argv[k]) != 0)
                rc = -1;
    fflush(stdout);
    return rc ? 1 : 0;
}
