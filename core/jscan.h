/* jscan.h — a strict, allocation-free, one-pass scanner for JSON request bodies.
 *
 * jscan_parse() validates a body against RFC 8259 exactly (UTF-8 included) plus the gateway's
 * own rules, and records where each top-level member's key and value lie in the input, so the
 * fields the gateway needs (model, stream, ...) can be read afterwards without building a tree.
 * String contents, the bulk of a chat body, are skipped 32 bytes at a time (SSE2, or 8 with a
 * portable SWAR fallback) and non-ASCII runs go through a UTF-8 validator.
 *
 * What is accepted — exactly RFC 8259, and then the gateway's rules:
 *   - one value, whitespace (space, \t, \n, \r only) around it, nothing else; no BOM;
 *   - strings: no raw byte < 0x20; escapes \" \\ \/ \b \f \n \r \t \uXXXX (hex in either case);
 *     an unpaired escaped surrogate ("\ud800") is accepted, as Python's json module does;
 *   - UTF-8 everywhere: no overlong forms, no encoded surrogates (ED A0..BF), nothing above
 *     U+10FFFF, no truncated sequences, no stray continuation bytes;
 *   - numbers -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? of any length (no range check);
 *   - true, false, null;
 *   - nesting at most JSCAN_MAX_DEPTH containers (the top-level object is depth 1);
 *   - gateway rules, checked only on bodies that are otherwise valid JSON: the top-level value
 *     is an object, no key anywhere contains \u0000 (json-c would cut the key short where the
 *     engine would not), at most JSCAN_MAX_TOP top-level members, no two top-level keys equal
 *     after decoding ("model" and "m\u006fdel" are the same key).
 *
 * Decoded strings: escapes are decoded and a \uD8xx\uDCxx pair becomes one code point, the way
 * every mainstream JSON reader does. Key comparisons (duplicates, jscan_top, jscan_member) use
 * that decoding with unpaired surrogates kept as themselves, so two keys are equal exactly when
 * Python's json module would read them as equal strings.
 *
 * Spans hold 32-bit offsets: inputs are limited to JSCAN_MAX_LEN bytes.
 * Every function here is pure (no global state, no allocation): any thread, any number at once,
 * as long as each caller uses its own struct jscan_doc. */
#ifndef LG_JSCAN_H
#define LG_JSCAN_H

#include <stddef.h>
#include <stdint.h>

#define JSCAN_MAX_DEPTH 64        /* arrays + objects; the top-level object is depth 1 */
#define JSCAN_MAX_TOP 128         /* top-level members; more is JSCAN_TOO_MANY_KEYS */
#define JSCAN_MAX_LEN 0x7fffffffu /* 2^31 - 1: longer inputs are JSCAN_TOO_LONG */

/* Results of jscan_parse. The first group means "this is not JSON" (map to invalid_json); the
 * second "valid JSON, refused by the gateway's rules" (invalid_request). When a body breaks
 * several rules the status is the first of this list that applies, whatever the order in the
 * body: any JSON error, else NOT_OBJECT, NUL_KEY, TOO_MANY_KEYS, DUP_KEY. Among JSON errors the
 * one met first in the body is reported. */
enum jscan_status {
    JSCAN_OK = 0,
    JSCAN_TOO_LONG,   /* len > JSCAN_MAX_LEN; nothing was read */
    JSCAN_EMPTY,      /* no value: empty or whitespace only */
    JSCAN_TRUNCATED,  /* the input ends inside the value */
    JSCAN_SYNTAX,     /* a byte that cannot appear here (includes a BOM, NaN, 'x', ...) */
    JSCAN_BAD_NUMBER, /* malformed number: 01, 1., 1e, -x, 1.5.5 (.5 and +1 are SYNTAX) */
    JSCAN_BAD_ESCAPE, /* backslash escape not in the RFC's list, or \u without 4 hex digits */
    JSCAN_CTRL_CHAR,  /* raw byte < 0x20 inside a string */
    JSCAN_BAD_UTF8,   /* malformed UTF-8 */
    JSCAN_TRAILING,   /* something other than whitespace after the value */
    JSCAN_DEPTH,      /* more than JSCAN_MAX_DEPTH nested arrays/objects */
    JSCAN__RULES,     /* not a status: the gateway's rules follow */
    JSCAN_NOT_OBJECT = JSCAN__RULES, /* valid JSON, but the top-level value is not an object */
    JSCAN_NUL_KEY,                   /* an object key (at any depth) contains \u0000 */
    JSCAN_TOO_MANY_KEYS,             /* more than JSCAN_MAX_TOP top-level members */
    JSCAN_DUP_KEY,                   /* two top-level keys are equal after decoding */
};

enum jscan_type {
    JSCAN_ABSENT = 0,
    JSCAN_NULL,
    JSCAN_FALSE,
    JSCAN_TRUE,
    JSCAN_NUMBER,
    JSCAN_STRING,
    JSCAN_ARRAY,
    JSCAN_OBJECT,
};

/* One value (or key) of a validated input. */
struct jscan_span {
    uint32_t off, len; /* its raw bytes in the input; a string's include the quotes */
    uint8_t type;      /* enum jscan_type */
    uint8_t escaped;   /* strings: contains a backslash (decoding is more than a copy) */
    uint32_t count;    /* arrays: elements; objects: members as written; else 0 */
};

struct jscan_member {
    struct jscan_span key, val;
};

/* Filled by jscan_parse. On JSCAN_OK: root is the top-level object, top[0..n_top) its members
 * in input order. On any other status only err_off is meaningful. The rest is private.
 * About 5 KB (5,152 bytes on LP64): fine on a thread stack. */
struct jscan_doc {
    struct jscan_span root;
    unsigned n_top;
    size_t err_off; /* byte offset of the error: the offending byte (len when the input ended
                       early), the key that broke a rule, or the value for NOT_OBJECT */
    struct jscan_member top[JSCAN_MAX_TOP];
    uint64_t khash__[JSCAN_MAX_TOP]; /* private: hashes of the decoded top-level keys */
};

/* Validates p[0..len) (need not be NUL-terminated; nothing at or past p + len is read) and
 * fills *d as described above. Returns JSCAN_OK or the first problem (see enum jscan_status).
 * One pass over the input; no allocation; the cost of the duplicate-key check is that of
 * comparing keys whose 64-bit hashes collide. */
enum jscan_status jscan_parse(struct jscan_doc *d, const char *p, size_t len);

/* Short constant English message for a status ("invalid UTF-8", "nesting deeper than 64"...);
 * never NULL (an unknown value gets "unknown error"). */
const char *jscan_strerror(enum jscan_status st);

/* Nonzero if st means the input is not JSON at all (as opposed to OK or a gateway rule). */
static inline int jscan_is_json_error(enum jscan_status st)
{
    return st != JSCAN_OK && st < JSCAN__RULES;
}

/* The value of the top-level member whose decoded key equals the NUL-terminated `key`, or
 * NULL. d must come from a jscan_parse of p that returned JSCAN_OK. */
const struct jscan_span *jscan_top(const struct jscan_doc *d, const char *p, const char *key);

/* Looks up `key` (decoded, NUL-terminated) among the members of the object `obj`, a span of
 * a validated input p (e.g. the "stream_options" value). If the key occurs several times (the
 * no-duplicates rule is for the top level only) the last occurrence wins, as in json-c, Python
 * and most engines. Returns 0 and fills *out (which may be obj itself), or -1 if absent or obj
 * is not an object. Cost: one walk over obj's bytes. */
int jscan_member(const char *p, const struct jscan_span *obj, const char *key,
                 struct jscan_span *out);

/* Iteration over the elements of an array or the members of an object of a validated input:
 *     struct jscan_iter it; struct jscan_span k, v;
 *     jscan_iter_init(&it, &arr);
 *     while (jscan_iter_next(&it, p, &k, &v) == 0) ...
 * Fields are private. */
struct jscan_iter {
    uint32_t pos, end;
    uint8_t obj;
};

/* Starts iterating `c`. Returns 0, or -1 if c is not an array or an object (the iteration is
 * then empty). */
int jscan_iter_init(struct jscan_iter *it, const struct jscan_span *c);

/* The next element (object members: key in *key, value in *val; arrays: *key has type
 * JSCAN_ABSENT). key may be NULL. Returns 0, or -1 when there are no more. */
int jscan_iter_next(struct jscan_iter *it, const char *p, struct jscan_span *key,
                    struct jscan_span *val);

/* jscan_string results besides a length */
enum {
    JSCAN_ESPACE = -1,     /* the decoded string and its NUL do not fit in cap bytes */
    JSCAN_ENUL = -2,       /* it contains U+0000 (it could not be a C string) */
    JSCAN_ESURROGATE = -3, /* it has an unpaired \uD800-\uDFFF: not expressible in UTF-8 */
    JSCAN_ETYPE = -4,      /* s is not a string */
};

/* Decodes the string span s of a validated input p into out: valid UTF-8, NUL-terminated.
 * Returns the decoded length (without the NUL), or one of the JSCAN_E* codes above (the first
 * problem met while decoding; out is then unspecified). Never longer than s->len - 2, so
 * cap = s->len - 1 always fits. */
long jscan_string(const char *p, const struct jscan_span *s, char *out, size_t cap);

/* Nonzero if the string span s of p decodes to exactly the NUL-terminated `str`. */
int jscan_string_eq(const char *p, const struct jscan_span *s, const char *str);

/* For a number span written as an integer (no fraction, no exponent) within int64 range:
 * stores it in *out and returns 0 ("-0" is 0). Otherwise returns -1 and leaves *out alone. */
int jscan_int(const char *p, const struct jscan_span *s, int64_t *out);

#endif
