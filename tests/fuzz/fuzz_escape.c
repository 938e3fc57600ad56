/* libFuzzer target for core/esc.c and err_envelope (core/errors.c): invariants, not just
 * "no crash".
 *
 * Input: byte 0 flags (bit 0: message NULL, bit 1: param NULL), byte 1 the error (also out of
 * the table's range), bytes 2-3 esc_json's cap (0..1023), bytes 4-5 err_envelope's cap (from
 * ERR_ENVELOPE_MIN - 32), byte 6 where the text splits into message and param, byte 7
 * esc_utf8_prefix's max; the rest is the text (any bytes).
 *
 * The reference here is an independent UTF-8 decoder: "sanitized" text is the input with
 * every byte that does not start a valid sequence (RFC 3629) replaced by U+FFFD.
 *   (a) esc_json: writes at most cap - 1 bytes and a NUL (nothing when cap is 0) into exactly
 *       cap bytes; the output is valid JSON string content (own checker: valid UTF-8, no byte
 *       < 0x20, no bare '"', only the escapes JSON has), decodes to the sanitized prefix of the
 *       input it says it used, stops only on a character boundary and only when the next
 *       character's escape would not fit;
 *   (b) esc_json_buf: a JSON string that json-c (strict, UTF-8 checked) parses to the
 *       sanitized input, which is the input itself when that was valid UTF-8;
 *   (c) err_envelope: with cap >= ERR_ENVELOPE_MIN, always a whole envelope that json-c parses
 *       to {"error":{"message","type","param","code"}} with the table's type and code, param
 *       null or a prefix of the sanitized param, the message the sanitized message or a cut
 *       prefix of it followed by "..." (cut only when it did not fit); below, 0 and "";
 *   (d) esc_prom_label: no raw '"' or newline, every '\\' starts \\\\, \\" or \\n, valid UTF-8,
 *       and unescaping gives the sanitized input (up to its first NUL);
 *   (e) esc_utf8_prefix: the longest prefix of at most max bytes that ends on a character
 *       boundary of the reference decoding (never inside a valid sequence). */
#include "core/buf.h"
#include "core/errors.h"
#include "core/esc.h"

#include "tests/fuzz/fuzz.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 8
#define HEAD "{\"error\":{\"message\":\""

/* Length of the valid UTF-8 sequence at s[0..n), or 0: decode, then test the value. */
static size_t ref_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], len, cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (unsigned k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3F);
    }
    unsigned min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0, l; i < n; i += l)
        if ((l = ref_utf8_len(s + i, n - i)) == 0)
            return 0;
    return 1;
}

/* Characters of the reference decoding: the length of the one at s[0..n) (1 for a byte that
 * does not start a valid sequence). */
static size_t ref_char(const unsigned char *s, size_t n)
{
    size_t l = ref_utf8_len(s, n);
    return l ? l : 1;
}

/* The sanitized text of s[0..n) into out (room for 3n bytes). */
static size_t sanitize(const unsigned char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ref_utf8_len(s + i, n - i);
        if (l) {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

/* Bytes the JSON escape of the character at s[0..n) takes (esc.h: \" \\ \n \r \t, \u00XX for
 * other controls and DEL, U+FFFD for a byte that is not UTF-8). */
static size_t ref_escaped_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t')
        return 2;
    if (c < 0x20 || c == 0x7f)
        return 6;
    size_t l = ref_utf8_len(s, n);
    return l ? l : 3;
}

static unsigned hexval(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Checks that s[0..n) is valid JSON string content and decodes it into out (room for n bytes;
 * \u escapes here are below U+0080 or surrogates, which esc_json never writes). */
static size_t json_content(const unsigned char *s, size_t n, unsigned char *out)
{
    CHECK(utf8_valid(s, n));
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        CHECK(s[i] >= 0x20 && s[i] != '"');
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        CHECK(i + 1 < n);
        const char *at = strchr("\"\\/bfnrtu", s[i + 1]);
        CHECK(at && s[i + 1]);
        if (s[i + 1] != 'u') {
            out[o++] = (unsigned char)"\"\\/\b\f\n\r\t"[at - "\"\\/bfnrtu"];
            i += 2;
            continue;
        }
        CHECK(i + 6 <= n);
        unsigned v = 0;
        for (size_t k = i + 2; k < i + 6; k++) {
            CHECK(strchr("0123456789abcdefABCDEF", s[k]) && s[k]);
            v = v << 4 | hexval(s[k]);
        }
        CHECK(v < 0x80); /* esc_json writes \u only for control bytes and DEL */
        out[o++] = (unsigned char)v;
        i += 6;
    }
    return o;
}

static void check_esc_json(const unsigned char *s, size_t n, size_t cap)
{
    char *out = malloc(cap ? cap : 1); /* exactly cap bytes: writing past them is a report */
    unsigned char *dec = malloc(cap + 1), *want = malloc(3 * n + 1);
    CHECK(out && dec && want);
    out[0] = 'X';
    size_t used = 12345;
    size_t w = esc_json(out, cap, (const char *)s, n, &used);
    if (cap == 0) {
        CHECK(w == 0 && used == 0 && out[0] == 'X');
        goto out;
    }
    CHECK(w <= cap - 1 && out[w] == '\0' && strlen(out) == w && used <= n);
    size_t dl = json_content((const unsigned char *)out, w, dec);
    /* used ends on a character boundary of the reference decoding */
    size_t i = 0;
    while (i < used)
        i += ref_char(s + i, n - i);
    CHECK(i == used);
    size_t wl = sanitize(s, used, want);
    CHECK(dl == wl && !memcmp(dec, want, wl));
    if (used < n)
        CHECK(w + ref_escaped_len(s + used, n - used) > cap - 1);
    /* the same call without *used, and on the prefix it used, writes the same */
    char *again = malloc(cap);
    CHECK(again);
    CHECK(esc_json(again, cap, (const char *)s, n, NULL) == w && !memcmp(again, out, w + 1));
    size_t used2;
    CHECK(esc_json(again, cap, (const char *)s, used, &used2) == w && used2 == used);
    CHECK(!memcmp(again, out, w + 1));
    free(again);
out:
    free(want);
    free(dec);
    free(out);
}

/* json-c in strict mode, UTF-8 checked: the parsed object of p[0..n), NULL if it does not
 * parse as one whole value. */
static json_object *jsonc_parse(const char *p, size_t n)
{
    json_tokener *tok = json_tokener_new();
    CHECK(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, p, (int)n);
    if (json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != n) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static void check_esc_json_buf(const unsigned char *s, size_t n)
{
    struct buf b;
    buf_init(&b, 6 * n + 2);
    CHECK(esc_json_buf(&b, (const char *)s, n) == 0);
    const char *p = buf_data(&b);
    size_t len = buf_len(&b);
    CHECK(len >= 2 && p[0] == '"' && p[len - 1] == '"');
    json_object *o = jsonc_parse(p, len);
    CHECK(o && json_object_is_type(o, json_type_string));
    unsigned char *want = malloc(3 * n + 1);
    CHECK(want);
    size_t wl = sanitize(s, n, want);
    CHECK((size_t)json_object_get_string_len(o) == wl);
    CHECK(!memcmp(json_object_get_string(o), want, wl));
    if (utf8_valid(s, n))
        CHECK(wl == n && !memcmp(want, s, n));
    json_object_put(o);
    free(want);
    buf_release(&b);

    /* a ceiling too low for the whole string: -1, never more than the ceiling */
    if (n > 0) {
        buf_init(&b, n / 2 + 1);
        int rc = esc_json_buf(&b, (const char *)s, n);
        CHECK(rc == -1 && buf_len(&b) <= n / 2 + 1);
        buf_release(&b);
    }
}

/* Is a[0..al) b[0..bl) cut at a character boundary of b's (sanitized, so valid) text? */
static int is_char_prefix(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    if (al > bl || memcmp(a, b, al) != 0)
        return 0;
    return al == bl || (b[al] & 0xC0) != 0x80;
}

static size_t ref_escaped_total(const unsigned char *s, size_t n)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i += ref_char(s + i, n - i))
        t += ref_escaped_len(s + i, n - i);
    return t;
}

static void check_envelope(enum lg_err e, const char *msg, const char *param, size_t cap)
{
    char *out = malloc(cap ? cap : 1);
    CHECK(out);
    out[0] = 'X';
    size_t n = err_envelope(out, cap, e, msg, param);
    if (cap < ERR_ENVELOPE_MIN) {
        CHECK(n == 0 && (cap == 0 ? out[0] == 'X' : out[0] == '\0'));
        free(out);
        return;
    }
    if (n == 0)
        fprintf(stderr, "fuzz_escape: no envelope: e=%d cap=%zu param=%zu bytes\n", (int)e, cap,
                param ? strlen(param) : 0);
    CHECK(n > 0 && n < cap && strlen(out) == n && !strncmp(out, HEAD, strlen(HEAD)));
    json_object *o = jsonc_parse(out, n), *err, *m, *t, *p, *c;
    CHECK(o && json_object_is_type(o, json_type_object) && json_object_object_length(o) == 1);
    CHECK(json_object_object_get_ex(o, "error", &err));
    CHECK(json_object_is_type(err, json_type_object) && json_object_object_length(err) == 4);
    CHECK(json_object_object_get_ex(err, "message", &m) &&
          json_object_is_type(m, json_type_string));
    CHECK(json_object_object_get_ex(err, "type", &t) && json_object_is_type(t, json_type_string));
    CHECK(json_object_object_get_ex(err, "param", &p));
    CHECK(json_object_object_get_ex(err, "code", &c) && json_object_is_type(c, json_type_string));
    const struct err_info *info = err_info(e);
    CHECK(!strcmp(json_object_get_string(t), info->type));
    CHECK(!strcmp(json_object_get_string(c), info->code));

    const char *full = msg ? msg : info->message;
    size_t fl = strlen(full);
    unsigned char *want = malloc(3 * fl + 3 * (param ? strlen(param) : 0) + 1);
    CHECK(want);
    size_t wl = sanitize((const unsigned char *)full, fl, want);
    const unsigned char *got = (const unsigned char *)json_object_get_string(m);
    size_t gl = (size_t)json_object_get_string_len(m);
    int cut = !(gl == wl && !memcmp(got, want, wl));
    if (cut) {
        CHECK(gl >= 3 && !memcmp(got + gl - 3, "...", 3));
        CHECK(is_char_prefix(got, gl - 3, want, wl) && gl - 3 < wl);
        /* cut only when the whole message did not fit */
        CHECK(strlen(out) - (size_t)(strstr(out, "\",\"type\":") - out) +
                  ref_escaped_total((const unsigned char *)full, fl) + strlen(HEAD) + 1 >
              cap);
    }
    if (!param) {
        CHECK(json_object_is_type(p, json_type_null));
    } else {
        CHECK(json_object_is_type(p, json_type_string));
        size_t pl = sanitize((const unsigned char *)param, strlen(param), want);
        CHECK(is_char_prefix((const unsigned char *)json_object_get_string(p),
                             (size_t)json_object_get_string_len(p), want, pl));
    }
    free(want);
    json_object_put(o);
    free(out);
}

static void check_prom(const unsigned char *s, size_t n)
{
    char *z = malloc(n + 1);
    CHECK(z);
    memcpy(z, s, n);
    z[n] = '\0';
    size_t zl = strlen(z);
    struct buf b;
    buf_init(&b, 6 * zl + 1);
    CHECK(esc_prom_label(&b, z) == 0);
    const unsigned char *p = (const unsigned char *)buf_data(&b);
    size_t len = buf_len(&b);
    CHECK(utf8_valid(p, len) && !memchr(p, '\0', len));
    unsigned char *dec = malloc(len + 1), *want = malloc(3 * zl + 1);
    CHECK(dec && want);
    size_t dl = 0;
    for (size_t i = 0; i < len; i++) {
        CHECK(p[i] != '"' && p[i] != '\n');
        if (p[i] == '\\') {
            CHECK(i + 1 < len && (p[i + 1] == '\\' || p[i + 1] == '"' || p[i + 1] == 'n'));
            dec[dl++] = p[i + 1] == 'n' ? '\n' : p[i + 1];
            i++;
        } else {
            dec[dl++] = p[i];
        }
    }
    size_t wl = sanitize((const unsigned char *)z, zl, want);
    CHECK(dl == wl && !memcmp(dec, want, wl));
    free(want);
    free(dec);
    buf_release(&b);
    free(z);
}

static void check_prefix(const unsigned char *s, size_t n, size_t max)
{
    char *copy = malloc(n ? n : 1); /* exactly n bytes */
    CHECK(copy);
    memcpy(copy, s, n);
    size_t r = esc_utf8_prefix(copy, n, max);
    free(copy);
    if (n <= max) {
        CHECK(r == n);
        return;
    }
    size_t want = 0;
    for (size_t i = 0; i <= max; i += ref_char(s + i, n - i))
        want = i; /* the last boundary at or before max */
    if (r != want)
        fprintf(stderr, "fuzz_escape: esc_utf8_prefix(n=%zu, max=%zu) = %zu, want %zu\n", n, max, r,
                want);
    CHECK(r == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    const unsigned char *s = data + HEADER;
    size_t n = size - HEADER;
    int no_msg = data[0] & 1, no_param = data[0] & 2;
    enum lg_err e = (enum lg_err)(data[1] % (LGE__COUNT + 2));
    size_t cap = (size_t)(data[2] | data[3] << 8) % 1024;
    size_t ecap = ERR_ENVELOPE_MIN - 32 + (size_t)(data[4] | data[5] << 8) % 2048;
    size_t split = n * data[6] / 255;

    check_esc_json(s, n, cap);
    check_esc_json_buf(s, n);

    char *msg = malloc(split + 1), *param = malloc(n - split + 1);
    CHECK(msg && param);
    memcpy(msg, s, split);
    msg[split] = '\0';
    memcpy(param, s + split, n - split);
    param[n - split] = '\0';
    check_envelope(e, no_msg ? NULL : msg, no_param ? NULL : param, ecap);
    check_envelope(e, no_msg ? NULL : msg, no_param ? NULL : param, ERR_ENVELOPE_MIN);
    free(param);
    free(msg);

    check_prom(s, n);
    check_prefix(s, n, data[7] % (n + 1 + 4));
    return 0;
}
