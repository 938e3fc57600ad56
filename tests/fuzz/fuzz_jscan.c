/* libFuzzer target for core/jscan.c: invariants, not just "no crash".
 *
 * For every input:
 *   - the SSE2 build and the portable (SWAR) build (jscan_portable.c) agree exactly: status,
 *     err_off and, on success, every recorded span; err_off lies within the input;
 *   - a body jscan calls valid JSON (OK or a gateway rule) is accepted by json-c in strict
 *     mode with UTF-8 validation (json-c is laxer, never stricter: see below).
 * When jscan_parse accepts:
 *   (a) the root and every top-level span lie inside the input, in order, without overlap,
 *       separated only by whitespace and one ':' or ','; every container, recursively, walked
 *       with jscan_iter has the same shape and its count; spans of top members equal the
 *       iterator's; every string and number span follows the RFC grammar (checked here
 *       independently: json-c takes raw control bytes in strings); the whole input is valid
 *       UTF-8 (an independent decoder);
 *   (b) decoded keys (an independent decoder) are pairwise distinct and contain no NUL, and
 *       jscan_top finds each of them;
 *   (c) the same body with whitespace appended, or prepended, parses to the same spans
 *       (shifted by the prefix);
 *   (d) "model", when a string, decodes with jscan_string into cap = len - 1 to exactly the
 *       independent decoding, or refuses with JSCAN_ENUL / JSCAN_ESURROGATE exactly when
 *       that decoding has U+0000 / an unpaired surrogate; integer-looking numbers agree with
 *       strtoll;
 *   (e) json-c accepts it, ends where jscan's root ends (or in the whitespace after), and (when no
 * key has an unpaired surrogate, which json-c turns into U+FFFD) has n_top members; (f) every
 * strict prefix of the value (all of them up to 64 bytes, else 24 chosen from a hash of the input)
 * copied into an exactly-sized buffer is TRUNCATED (or EMPTY) at its length: a prefix of a valid
 * body is never accepted, and nothing past len is read. */
#include "core/jscan.h"

#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum jscan_status jscan_parse_portable(struct jscan_doc *d, const char *p, size_t len);

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* An independent UTF-8 check: decode each code point, then test the rules on its value. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], len, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if (i + len > n)
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        unsigned min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static unsigned hex4(const unsigned char *s)
{
    char h[5] = {(char)s[0], (char)s[1], (char)s[2], (char)s[3], 0};
    return (unsigned)strtoul(h, NULL, 16);
}

/* Decodes the validated string span s the plain way: escapes, \uD8xx\uDCxx pairs combined,
 * an unpaired surrogate as its 3-byte generalised UTF-8 form. out has room for s->len bytes.
 * Returns the length; sets *nul / *lone. */
static size_t ref_decode(const char *p, const struct jscan_span *s, unsigned char *out, int *nul,
                         int *lone)
{
    const unsigned char *q = (const unsigned char *)p + s->off + 1;
    size_t n = s->len - 2, o = 0;
    *nul = *lone = 0;
    for (size_t i = 0; i < n;) {
        if (q[i] != '\\') {
            out[o++] = q[i++];
            continue;
        }
        unsigned char e = q[i + 1];
        if (e != 'u') {
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *at = strchr(from, e);
            CHECK(at && e);
            out[o++] = (unsigned char)to[at - from];
            i += 2;
            continue;
        }
        CHECK(i + 6 <= n);
        unsigned v = hex4(q + i + 2);
        i += 6;
        if (v >= 0xD800 && v < 0xDC00 && i + 6 <= n && q[i] == '\\' && q[i + 1] == 'u') {
            unsigned w = hex4(q + i + 2);
            if (w >= 0xDC00 && w < 0xE000) {
                v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
                i += 6;
            }
        }
        if (v == 0)
            *nul = 1;
        if (v >= 0xD800 && v < 0xE000)
            *lone = 1;
        if (v < 0x80) {
            out[o++] = (unsigned char)v;
        } else if (v < 0x800) {
            out[o++] = (unsigned char)(0xC0 | v >> 6);
            out[o++] = (unsigned char)(0x80 | (v & 0x3F));
        } else if (v < 0x10000) {
            out[o++] = (unsigned char)(0xE0 | v >> 12);
            out[o++] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (v & 0x3F));
        } else {
            out[o++] = (unsigned char)(0xF0 | v >> 18);
            out[o++] = (unsigned char)(0x80 | (v >> 12 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (v & 0x3F));
        }
    }
    return o;
}

/* The raw string span follows the RFC: no byte < 0x20, only the listed escapes, \u with 4 hex
 * digits (json-c is laxer here: it takes raw control bytes). */
static void string_ok(const char *p, const struct jscan_span *s)
{
    const unsigned char *q = (const unsigned char *)p + s->off;
    for (size_t i = 1; i + 1 < s->len; i++) {
        CHECK(q[i] >= 0x20 && q[i] != '"');
        if (q[i] != '\\')
            continue;
        CHECK(i + 2 < s->len && strchr("\"\\/bfnrtu", q[i + 1]) && q[i + 1]);
        if (q[i + 1] == 'u') {
            CHECK(i + 6 < s->len);
            for (size_t k = i + 2; k < i + 6; k++)
                CHECK(strchr("0123456789abcdefABCDEF", q[k]) && q[k]);
            i += 5;
        } else {
            i++;
        }
    }
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? exactly. */
static void number_ok(const char *p, const struct jscan_span *s)
{
    const char *q = p + s->off, *e = q + s->len;
#define DIGIT(c) ((c) >= '0' && (c) <= '9')
    if (q < e && *q == '-')
        q++;
    CHECK(q < e && DIGIT(*q));
    if (*q == '0')
        q++;
    else
        while (q < e && DIGIT(*q))
            q++;
    if (q < e && *q == '.') {
        q++;
        CHECK(q < e && DIGIT(*q));
        while (q < e && DIGIT(*q))
            q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-'))
            q++;
        CHECK(q < e && DIGIT(*q));
        while (q < e && DIGIT(*q))
            q++;
    }
    CHECK(q == e);
#undef DIGIT
}

/* p[a..b) is whitespace around exactly `seps` copies of sep. */
static void gap(const char *p, size_t a, size_t b, char sep, int seps)
{
    int seen = 0;
    CHECK(a <= b);
    for (size_t i = a; i < b; i++) {
        if (p[i] == sep && sep)
            seen++;
        else
            CHECK(is_ws((unsigned char)p[i]));
    }
    CHECK(seen == seps);
}

static void value_shape(const char *p, size_t n, const struct jscan_span *v)
{
    CHECK((size_t)v->off + v->len <= n && v->len >= 1);
    char first = p[v->off], last = p[v->off + v->len - 1];
    switch (v->type) {
    case JSCAN_STRING:
        CHECK(v->len >= 2 && first == '"' && last == '"');
        CHECK(v->escaped == (memchr(p + v->off, '\\', v->len) != NULL));
        string_ok(p, v);
        break;
    case JSCAN_OBJECT:
        CHECK(first == '{' && last == '}');
        break;
    case JSCAN_ARRAY:
        CHECK(first == '[' && last == ']');
        break;
    case JSCAN_TRUE:
        CHECK(v->len == 4 && memcmp(p + v->off, "true", 4) == 0);
        break;
    case JSCAN_FALSE:
        CHECK(v->len == 5 && memcmp(p + v->off, "false", 5) == 0);
        break;
    case JSCAN_NULL:
        CHECK(v->len == 4 && memcmp(p + v->off, "null", 4) == 0);
        break;
    case JSCAN_NUMBER:
        number_ok(p, v);
        break;
    default:
        CHECK(0);
    }
    if (v->type != JSCAN_ARRAY && v->type != JSCAN_OBJECT)
        CHECK(v->count == 0);
}

/* Walks container c with jscan_iter: shapes, order, separators, count; recursively. */
static void walk(const char *p, size_t n, const struct jscan_span *c, int depth)
{
    struct jscan_iter it;
    struct jscan_span k, v;
    CHECK(depth <= JSCAN_MAX_DEPTH);
    value_shape(p, n, c);
    CHECK(jscan_iter_init(&it, c) == 0);
    size_t prev = (size_t)c->off + 1, close = (size_t)c->off + c->len - 1;
    uint32_t count = 0;
    while (jscan_iter_next(&it, p, &k, &v) == 0) {
        if (c->type == JSCAN_OBJECT) {
            CHECK(k.type == JSCAN_STRING);
            value_shape(p, n, &k);
            gap(p, prev, k.off, ',', count ? 1 : 0);
            gap(p, (size_t)k.off + k.len, v.off, ':', 1);
        } else {
            CHECK(k.type == JSCAN_ABSENT);
            gap(p, prev, v.off, ',', count ? 1 : 0);
        }
        value_shape(p, n, &v);
        CHECK((size_t)v.off + v.len <= close);
        if (v.type == JSCAN_ARRAY || v.type == JSCAN_OBJECT)
            walk(p, n, &v, depth + 1);
        prev = (size_t)v.off + v.len;
        count++;
    }
    gap(p, prev, close, 0, 0);
    CHECK(count == c->count);
}

static int span_eq(const struct jscan_span *a, const struct jscan_span *b, uint32_t shift)
{
    return a->off + shift == b->off && a->len == b->len && a->type == b->type &&
           a->escaped == b->escaped && a->count == b->count;
}

static void same_doc(const struct jscan_doc *a, const struct jscan_doc *b, uint32_t shift)
{
    CHECK(span_eq(&a->root, &b->root, shift));
    CHECK(a->n_top == b->n_top);
    for (unsigned j = 0; j < a->n_top; j++) {
        CHECK(span_eq(&a->top[j].key, &b->top[j].key, shift));
        CHECK(span_eq(&a->top[j].val, &b->top[j].val, shift));
    }
}

static int jsonc_accepts(const char *p, size_t n, size_t *end, size_t *members, int *is_obj)
{
    json_tokener *tok = json_tokener_new_ex(JSCAN_MAX_DEPTH + 1); /* json-c allows depth-1 */
    CHECK(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, p, (int)n);
    int ok = json_tokener_get_error(tok) == json_tokener_success;
    *end = json_tokener_get_parse_end(tok);
    *is_obj = o && json_object_is_type(o, json_type_object);
    *members = *is_obj ? (size_t)json_object_object_length(o) : 0;
    json_object_put(o);
    json_tokener_free(tok);
    return ok;
}

static void check_ints(const char *p, const struct jscan_span *v)
{
    if (v->type != JSCAN_NUMBER || v->len > 40)
        return;
    char num[48];
    memcpy(num, p + v->off, v->len);
    num[v->len] = '\0';
    int plain = strpbrk(num, ".eE") == NULL;
    errno = 0;
    long long want = strtoll(num, NULL, 10);
    int fits = plain && errno == 0;
    int64_t got = 0;
    int rc = jscan_int(p, v, &got);
    CHECK(rc == (fits ? 0 : -1));
    if (fits)
        CHECK(got == want);
}

static void check_prefix(const char *p, size_t k)
{
    char *b = malloc(k ? k : 1); /* exactly k bytes: reading past them is an ASan report */
    CHECK(b);
    memcpy(b, p, k);
    struct jscan_doc *d = malloc(sizeof(*d));
    CHECK(d);
    enum jscan_status st = jscan_parse(d, b, k);
    int leading_ws = 1;
    for (size_t i = 0; i < k; i++)
        leading_ws &= is_ws((unsigned char)p[i]);
    CHECK(st == (leading_ws ? JSCAN_EMPTY : JSCAN_TRUNCATED));
    CHECK(d->err_off == k);
    free(d);
    free(b);
}

static void accepted(const char *p, size_t n, const struct jscan_doc *d)
{
    size_t root_end = (size_t)d->root.off + d->root.len;
    /* (a) */
    CHECK(d->root.type == JSCAN_OBJECT && root_end <= n);
    gap(p, 0, d->root.off, 0, 0);
    gap(p, root_end, n, 0, 0);
    CHECK(d->n_top == d->root.count && d->n_top <= JSCAN_MAX_TOP);
    CHECK(utf8_valid((const unsigned char *)p, n));
    walk(p, n, &d->root, 1);
    struct jscan_iter it;
    struct jscan_span k, v;
    jscan_iter_init(&it, &d->root);
    for (unsigned j = 0; jscan_iter_next(&it, p, &k, &v) == 0; j++) {
        CHECK(j < d->n_top);
        CHECK(span_eq(&k, &d->top[j].key, 0) && span_eq(&v, &d->top[j].val, 0));
        check_ints(p, &v);
    }
    /* (b) */
    unsigned char *keys[JSCAN_MAX_TOP];
    size_t klen[JSCAN_MAX_TOP];
    int lone_key = 0;
    for (unsigned j = 0; j < d->n_top; j++) {
        const struct jscan_span *ks = &d->top[j].key;
        int nul, lone;
        keys[j] = malloc(ks->len);
        CHECK(keys[j]);
        klen[j] = ref_decode(p, ks, keys[j], &nul, &lone);
        CHECK(!nul && klen[j] < ks->len);
        lone_key |= lone;
        for (unsigned i = 0; i < j; i++)
            CHECK(klen[i] != klen[j] || memcmp(keys[i], keys[j], klen[j]) != 0);
        keys[j][klen[j]] = '\0';
        CHECK(jscan_top(d, p, (const char *)keys[j]) == &d->top[j].val);
    }
    for (unsigned j = 0; j < d->n_top; j++)
        free(keys[j]);
    /* (c) */
    char *b = malloc(n + 4);
    struct jscan_doc *d2 = malloc(sizeof(*d2));
    CHECK(b && d2);
    memcpy(b, p, n);
    memcpy(b + n, " \t\r\n", 4);
    CHECK(jscan_parse(d2, b, n + 4) == JSCAN_OK);
    same_doc(d, d2, 0);
    memcpy(b, "\r\n", 2);
    memcpy(b + 2, p, n);
    CHECK(jscan_parse(d2, b, n + 2) == JSCAN_OK);
    same_doc(d, d2, 2);
    free(d2);
    free(b);
    /* (d) */
    const struct jscan_span *m = jscan_top(d, p, "model");
    if (m && m->type == JSCAN_STRING) {
        char *out = malloc(m->len - 1);
        unsigned char *want = malloc(m->len);
        CHECK(out && want);
        int nul, lone;
        size_t wn = ref_decode(p, m, want, &nul, &lone);
        long got = jscan_string(p, m, out, m->len - 1);
        if (nul || lone) {
            CHECK(got == JSCAN_ENUL || got == JSCAN_ESURROGATE);
            CHECK(got != JSCAN_ENUL || nul);
            CHECK(got != JSCAN_ESURROGATE || lone);
        } else {
            CHECK(got >= 0 && (size_t)got == wn && memcmp(out, want, wn) == 0 && !out[wn]);
            CHECK(utf8_valid((const unsigned char *)out, wn));
            CHECK(jscan_string_eq(p, m, out));
        }
        free(want);
        free(out);
    }
    /* (e) */
    size_t end, members;
    int is_obj;
    CHECK(jsonc_accepts(p, n, &end, &members, &is_obj));
    CHECK(is_obj && end >= root_end && end <= n); /* json-c may consume whitespace after */
    gap(p, end, n, 0, 0);
    if (!lone_key)
        CHECK(members == d->n_top);
    /* (f) */
    if (root_end <= 64) {
        for (size_t kk = 0; kk < root_end; kk++)
            check_prefix(p, kk);
    } else {
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
        check_prefix(p, root_end - 1);
        for (int r = 0; r < 24; r++) {
            h = h * 6364136223846793005ull + 1442695040888963407ull;
            check_prefix(p, (size_t)(h >> 33) % root_end);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jscan_doc d, dp;
    const char *p = (const char *)data;
    enum jscan_status st = jscan_parse(&d, p, size);
    enum jscan_status sp = jscan_parse_portable(&dp, p, size);
    CHECK(st == sp && d.err_off == dp.err_off);
    CHECK(d.err_off <= size);
    CHECK(jscan_strerror(st)[0] != '\0');
    if (st == JSCAN_OK) {
        same_doc(&d, &dp, 0);
        accepted(p, size, &d);
    } else if (!jscan_is_json_error(st)) {
        size_t end, members;
        int is_obj;
        /* valid JSON for json-c too; with a space after it, since json-c cannot tell that a
         * number or literal ending the input is complete */
        char *b = malloc(size + 1);
        CHECK(b);
        memcpy(b, p, size);
        b[size] = ' ';
        CHECK(jsonc_accepts(b, size + 1, &end, &members, &is_obj));
        CHECK(is_obj == (st != JSCAN_NOT_OBJECT));
        free(b);
    }
    return 0;
}
