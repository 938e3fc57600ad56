/* jscan.c — see jscan.h.
 *
 * jscan_parse is a state machine over the input with four states (value, key, after a value,
 * close) written as labels and gotos, the usual shape of a hand-written JSON parser: there is
 * no recursion and the only stack is one bit per open container (array or object), so the
 * depth limit is also the size of that stack. Everything else is a function per token kind. */
#include "core/jscan.h"

#include <string.h>

#if defined(__SSE2__) && !defined(JSCAN_PORTABLE)
#include <emmintrin.h>
#define JSCAN_SSE2 1
#endif

/* Bytes that end a run of plain string contents: '"', '\\', < 0x20 and >= 0x80. */
static const uint8_t jscan__stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 20 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 50 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 90 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* a0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* b0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* c0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* d0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* e0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* f0 */
};

static const uint8_t jscan__ws[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* The byte a one-character escape stands for (0: not a valid escape). */
static const uint8_t jscan__esc[256] = {['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
                                        ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t'};

/* Hex digit values plus one; 0 for anything else. */
static const uint8_t jscan__hex[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

#define JSCAN__ONES 0x0101010101010101ull
#define JSCAN__HIGH 0x8080808080808080ull

static inline size_t jscan__ws_skip(const unsigned char *p, size_t i, size_t n)
{
    while (i < n && jscan__ws[p[i]])
        i++;
    return i;
}

/* Nonzero if the 8 bytes at q hold no stop byte. Exact as a yes/no answer: the classic
 * has-zero-byte / has-less-than tricks, whose per-byte masks may be wrong above the first hit,
 * are only used as a whole. */
static inline int jscan__word_plain(const unsigned char *q)
{
    uint64_t x;
    memcpy(&x, q, 8);
    uint64_t xq = x ^ (JSCAN__ONES * '"'), xb = x ^ (JSCAN__ONES * '\\');
    uint64_t t = ((xq - JSCAN__ONES) & ~xq) | ((xb - JSCAN__ONES) & ~xb) |
                 (x - JSCAN__ONES * 0x20) | x; /* < 0x20 when no high bit; high bit */
    return (t & JSCAN__HIGH) == 0;
}

/* The first index >= i of a stop byte, or n: portable, 8 bytes at a time. */
static size_t jscan__plain_swar(const unsigned char *p, size_t i, size_t n)
{
    while (i + 8 <= n && jscan__word_plain(p + i))
        i += 8;
    while (i < n && !jscan__stop[p[i]])
        i++;
    return i;
}

#ifdef JSCAN_SSE2
static inline unsigned jscan__mask16(const unsigned char *q)
{
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
    /* signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them too */
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                             _mm_cmplt_epi8(v, space));
    return (unsigned)_mm_movemask_epi8(m);
}

/* The first index >= i of a stop byte, or n: 32 then 16 bytes at a time, the rest SWAR.
 * Never loads past n. */
static size_t jscan__plain(const unsigned char *p, size_t i, size_t n)
{
    while (i + 32 <= n) {
        unsigned m = jscan__mask16(p + i) | jscan__mask16(p + i + 16) << 16;
        if (m)
            return i + (unsigned)__builtin_ctz(m);
        i += 32;
    }
    if (i + 16 <= n) {
        unsigned m = jscan__mask16(p + i);
        if (m)
            return i + (unsigned)__builtin_ctz(m);
        i += 16;
    }
    return jscan__plain_swar(p, i, n);
}
#else
#define jscan__plain jscan__plain_swar
#endif

/* Validates UTF-8 from p[*pi] (a byte >= 0x80) through the run of text that follows, until a
 * '"', '\\' or control byte, 8 plain ASCII bytes in a row (the vector scan is faster there)
 * or the end. Returns JSCAN_OK with *pi there, JSCAN_BAD_UTF8 with *pi at the first byte of
 * the bad sequence, or JSCAN_TRUNCATED (*pi = n) when the input ends inside a sequence. */
static enum jscan_status jscan__utf8(const unsigned char *p, size_t *pi, size_t n)
{
    size_t i = *pi;
    while (i < n) {
        unsigned c = p[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            if (jscan__stop[c] || (i + 8 <= n && jscan__word_plain(p + i)))
                break;
            i++;
            continue;
        }
        if (c < 0xC2) /* continuation byte, or C0/C1: overlong 2-byte form */
            goto bad;
        if (c < 0xE0) {
            need = 1;
        } else if (c < 0xF0) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* U+D800..U+DFFF */
        } else if (c < 0xF5) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            goto bad;
        }
        if (i + 1 >= n)
            goto truncated;
        if (p[i + 1] < lo || p[i + 1] > hi)
            goto bad;
        for (size_t k = 2; k <= need; k++) {
            if (i + k >= n)
                goto truncated;
            if ((p[i + k] & 0xC0) != 0x80)
                goto bad;
        }
        i += need + 1;
    }
    *pi = i;
    return JSCAN_OK;
bad:
    *pi = i;
    return JSCAN_BAD_UTF8;
truncated:
    *pi = n;
    return JSCAN_TRUNCATED;
}

#define JSCAN__F_ESC 1u /* the string has a backslash */
#define JSCAN__F_NUL 2u /* it has \u0000 */

/* Scans the string whose opening quote is p[i]. Returns JSCAN_OK with *end just past the
 * closing quote and JSCAN__F_* bits in *flags, or an error with *end at its offset. */
static enum jscan_status jscan__str(const unsigned char *p, size_t i, size_t n, size_t *end,
                                    unsigned *flags)
{
    enum jscan_status st;
    unsigned fl = 0;
    i++;
    for (;;) {
        i = jscan__plain(p, i, n);
        if (i >= n) {
            st = JSCAN_TRUNCATED;
            goto out;
        }
        unsigned c = p[i];
        if (c == '"') {
            i++;
            st = JSCAN_OK;
            goto out;
        }
        if (c == '\\') {
            fl |= JSCAN__F_ESC;
            if (i + 1 >= n) {
                i = n;
                st = JSCAN_TRUNCATED;
                goto out;
            }
            c = p[i + 1];
            if (c == 'u') {
                unsigned v = 0;
                for (size_t k = i + 2; k < i + 6; k++) {
                    if (k >= n) {
                        i = n;
                        st = JSCAN_TRUNCATED;
                        goto out;
                    }
                    unsigned h = jscan__hex[p[k]];
                    if (h == 0) {
                        st = JSCAN_BAD_ESCAPE;
                        goto out;
                    }
                    v = v << 4 | (h - 1);
                }
                if (v == 0)
                    fl |= JSCAN__F_NUL;
                i += 6;
            } else if (jscan__esc[c]) {
                i += 2;
            } else {
                st = JSCAN_BAD_ESCAPE;
                goto out;
            }
            continue;
        }
        if (c < 0x20) {
            st = JSCAN_CTRL_CHAR;
            goto out;
        }
        st = jscan__utf8(p, &i, n);
        if (st != JSCAN_OK)
            goto out;
    }
out:
    *end = i;
    *flags = fl;
    return st;
}

static inline int jscan__digit(unsigned c)
{
    return c - '0' < 10u;
}

/* Scans the number starting at p[i] ('-' or a digit). Same contract as jscan__str. */
static enum jscan_status jscan__num(const unsigned char *p, size_t i, size_t n, size_t *end)
{
    enum jscan_status st = JSCAN_BAD_NUMBER;
    if (p[i] == '-' && ++i >= n)
        goto truncated;
    if (p[i] == '0') {
        i++;
    } else if ((unsigned)(p[i] - '1') < 9u) {
        while (++i < n && jscan__digit(p[i]))
            ;
    } else {
        goto out;
    }
    if (i < n && p[i] == '.') {
        if (++i >= n)
            goto truncated;
        if (!jscan__digit(p[i]))
            goto out;
        while (++i < n && jscan__digit(p[i]))
            ;
    }
    if (i < n && (p[i] | 0x20) == 'e') {
        if (++i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= n)
            goto truncated;
        if (!jscan__digit(p[i]))
            goto out;
        while (++i < n && jscan__digit(p[i]))
            ;
    }
    /* "01", "1.2.3", "1e2e3", "1-": the number is over but this cannot follow it */
    if (i < n &&
        (jscan__digit(p[i]) || p[i] == '.' || (p[i] | 0x20) == 'e' || p[i] == '+' || p[i] == '-'))
        goto out;
    st = JSCAN_OK;
    goto out;
truncated:
    i = n;
    st = JSCAN_TRUNCATED;
out:
    *end = i;
    return st;
}

/* Matches the literal w (wl bytes) at p[i]. Same contract as jscan__str. */
static enum jscan_status jscan__lit(const unsigned char *p, size_t i, size_t n, const char *w,
                                    size_t wl, size_t *end)
{
    for (size_t k = 0; k < wl; k++) {
        if (i + k >= n) {
            *end = n;
            return JSCAN_TRUNCATED;
        }
        if (p[i + k] != (unsigned char)w[k]) {
            *end = i + k;
            return JSCAN_SYNTAX;
        }
    }
    *end = i + wl;
    return JSCAN_OK;
}

/* --- decoding of validated strings ---------------------------------------------------------- */

#define JSCAN__U_NUL 1u /* a decoded unit was U+0000 */
#define JSCAN__U_SUR 2u /* ... an unpaired surrogate */

static unsigned jscan__hex4(const unsigned char *q)
{
    return (unsigned)(jscan__hex[q[0]] - 1) << 12 | (unsigned)(jscan__hex[q[1]] - 1) << 8 |
           (unsigned)(jscan__hex[q[2]] - 1) << 4 | (unsigned)(jscan__hex[q[3]] - 1);
}

/* Decodes one unit of the validated string body p[*pi..end) (end: the closing quote): a raw
 * byte, or one escape, a \uD8xx\uDCxx pair counting as one. Writes 1..4 bytes to u and returns
 * how many; sets JSCAN__U_* bits in *odd. An unpaired surrogate is written as its 3-byte
 * generalised UTF-8 form (ED A0..BF xx), which no valid UTF-8 input contains: comparing these
 * bytes compares decoded strings exactly as Python's json module sees them. */
static unsigned jscan__unit(const unsigned char *p, size_t *pi, size_t end, unsigned char u[4],
                            unsigned *odd)
{
    size_t i = *pi;
    if (p[i] != '\\' || i + 1 >= end) {
        u[0] = p[i];
        *pi = i + 1;
        return 1;
    }
    if (p[i + 1] != 'u' || i + 6 > end) {
        u[0] = jscan__esc[p[i + 1]];
        *pi = i + 2;
        return 1;
    }
    unsigned v = jscan__hex4(p + i + 2);
    i += 6;
    if (v >= 0xD800 && v <= 0xDBFF && i + 6 <= end && p[i] == '\\' && p[i + 1] == 'u') {
        unsigned w = jscan__hex4(p + i + 2);
        if (w >= 0xDC00 && w <= 0xDFFF) {
            v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
            i += 6;
        }
    }
    *pi = i;
    if (v == 0)
        *odd |= JSCAN__U_NUL;
    else if (v >= 0xD800 && v <= 0xDFFF)
        *odd |= JSCAN__U_SUR;
    if (v < 0x80) {
        u[0] = (unsigned char)v;
        return 1;
    }
    if (v < 0x800) {
        u[0] = (unsigned char)(0xC0 | v >> 6);
        u[1] = (unsigned char)(0x80 | (v & 0x3F));
        return 2;
    }
    if (v < 0x10000) {
        u[0] = (unsigned char)(0xE0 | v >> 12);
        u[1] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (v & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | v >> 18);
    u[1] = (unsigned char)(0x80 | (v >> 12 & 0x3F));
    u[2] = (unsigned char)(0x80 | (v >> 6 & 0x3F));
    u[3] = (unsigned char)(0x80 | (v & 0x3F));
    return 4;
}

/* A byte-at-a-time reader of a decoded string, for comparisons and hashing of escaped keys. */
struct jscan__rd {
    const unsigned char *p;
    size_t i, end;
    unsigned char u[4];
    unsigned un, ui;
};

static void jscan__rd_init(struct jscan__rd *r, const char *p, const struct jscan_span *s)
{
    r->p = (const unsigned char *)p;
    r->i = (size_t)s->off + 1;
    r->end = (size_t)s->off + s->len - 1;
    r->un = r->ui = 0;
}

/* The next decoded byte, or -1 at the end. */
static int jscan__rd_get(struct jscan__rd *r)
{
    if (r->ui < r->un)
        return r->u[r->ui++];
    if (r->i >= r->end)
        return -1;
    unsigned odd = 0;
    r->un = jscan__unit(r->p, &r->i, r->end, r->u, &odd);
    r->ui = 1;
    return r->u[0];
}

static int jscan__span_eq(const char *p, const struct jscan_span *a, const struct jscan_span *b)
{
    if (!a->escaped && !b->escaped)
        return a->len == b->len && memcmp(p + a->off, p + b->off, a->len) == 0;
    struct jscan__rd ra, rb;
    jscan__rd_init(&ra, p, a);
    jscan__rd_init(&rb, p, b);
    for (;;) {
        int x = jscan__rd_get(&ra), y = jscan__rd_get(&rb);
        if (x != y)
            return 0;
        if (x < 0)
            return 1;
    }
}

#define JSCAN__FNV_BASIS 0xcbf29ce484222325ull
#define JSCAN__FNV_PRIME 0x100000001b3ull

/* FNV-1a of the decoded string s. */
static uint64_t jscan__hash(const char *p, const struct jscan_span *s)
{
    uint64_t h = JSCAN__FNV_BASIS;
    if (!s->escaped) {
        const unsigned char *q = (const unsigned char *)p + s->off + 1;
        for (size_t k = 0; k + 2 < s->len; k++)
            h = (h ^ q[k]) * JSCAN__FNV_PRIME;
        return h;
    }
    struct jscan__rd r;
    jscan__rd_init(&r, p, s);
    for (int c; (c = jscan__rd_get(&r)) >= 0;)
        h = (h ^ (unsigned)c) * JSCAN__FNV_PRIME;
    return h;
}

_Static_assert(sizeof(struct jscan_doc) <= 8192, "struct jscan_doc is meant for a thread stack");

/* --- the parser ------------------------------------------------------------------------------ */

/* Records a rule violation unless one that takes precedence is already recorded. */
static inline void jscan__rule(enum jscan_status *rule, size_t *rule_off, enum jscan_status st,
                               size_t off)
{
    if (*rule == JSCAN_OK || st < *rule) {
        *rule = st;
        *rule_off = off;
    }
}

enum jscan_status jscan_parse(struct jscan_doc *d, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    const size_t n = len;
    size_t i = 0, start;
    unsigned depth = 0;              /* open containers */
    uint64_t objs = 0;               /* bit k: the container at depth k + 1 is an object */
    struct jscan_member *cur = NULL; /* the top-level member whose value comes next */
    uint32_t cnt2 = 0;               /* values directly inside the open depth-2 container */
    enum jscan_status st = JSCAN_OK, rule = JSCAN_OK;
    size_t rule_off = 0;
    unsigned fl = 0;
    uint8_t type;

    d->n_top = 0;
    d->err_off = 0;
    memset(&d->root, 0, sizeof(d->root));
    if (len > JSCAN_MAX_LEN) {
        st = JSCAN_TOO_LONG;
        goto fail;
    }
    i = jscan__ws_skip(p, 0, n);
    if (i >= n) {
        st = JSCAN_EMPTY;
        goto fail;
    }
    d->root.off = (uint32_t)i;

value: /* a value must start at p[i] */
    if (i >= n) {
        st = JSCAN_TRUNCATED;
        goto fail;
    }
    if (depth == 1) {
        d->root.count++;
        if (cur)
            cur->val.off = (uint32_t)i;
    } else if (depth == 2) {
        cnt2++;
    }
    start = i;
    fl = 0;
    switch (p[i]) {
    case '"':
        st = jscan__str(p, i, n, &i, &fl);
        type = JSCAN_STRING;
        break;
    case '{':
    case '[': {
        int obj = p[i] == '{';
        if (depth == JSCAN_MAX_DEPTH) {
            st = JSCAN_DEPTH;
            goto fail;
        }
        type = obj ? JSCAN_OBJECT : JSCAN_ARRAY;
        if (obj)
            objs |= (uint64_t)1 << depth;
        else
            objs &= ~((uint64_t)1 << depth);
        depth++;
        if (depth == 1) {
            d->root.type = type;
        } else if (depth == 2) {
            cnt2 = 0;
            if (cur) {
                cur->val.type = type;
                cur->val.escaped = 0;
            }
        }
        i = jscan__ws_skip(p, i + 1, n);
        if (i >= n) {
            st = JSCAN_TRUNCATED;
            goto fail;
        }
        if (p[i] == (obj ? '}' : ']')) {
            i++;
            goto close;
        }
        if (obj)
            goto key;
        goto value;
    }
    case 't':
        st = jscan__lit(p, i, n, "true", 4, &i);
        type = JSCAN_TRUE;
        break;
    case 'f':
        st = jscan__lit(p, i, n, "false", 5, &i);
        type = JSCAN_FALSE;
        break;
    case 'n':
        st = jscan__lit(p, i, n, "null", 4, &i);
        type = JSCAN_NULL;
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        st = jscan__num(p, i, n, &i);
        type = JSCAN_NUMBER;
        break;
    default:
        st = JSCAN_SYNTAX;
        goto fail;
    }
    if (st != JSCAN_OK)
        goto fail;
    if (depth == 0) {
        d->root.type = type;
        d->root.len = (uint32_t)(i - start);
        d->root.escaped = (uint8_t)(fl & JSCAN__F_ESC);
        goto done;
    }
    if (depth == 1 && cur) {
        cur->val.type = type;
        cur->val.len = (uint32_t)(i - start);
        cur->val.escaped = (uint8_t)(fl & JSCAN__F_ESC);
        cur->val.count = 0;
    }
    goto after;

key: /* a key must start at p[i] */
    if (i >= n) {
        st = JSCAN_TRUNCATED;
        goto fail;
    }
    if (p[i] != '"') {
        st = JSCAN_SYNTAX;
        goto fail;
    }
    start = i;
    st = jscan__str(p, i, n, &i, &fl);
    if (st != JSCAN_OK)
        goto fail;
    if (fl & JSCAN__F_NUL)
        jscan__rule(&rule, &rule_off, JSCAN_NUL_KEY, start);
    if (depth == 1) {
        cur = NULL;
        if (d->n_top == JSCAN_MAX_TOP) {
            jscan__rule(&rule, &rule_off, JSCAN_TOO_MANY_KEYS, start);
        } else if (rule == JSCAN_OK) { /* once a rule is broken, keys need no more checks */
            unsigned m = d->n_top++;
            cur = &d->top[m];
            cur->key.off = (uint32_t)start;
            cur->key.len = (uint32_t)(i - start);
            cur->key.type = JSCAN_STRING;
            cur->key.escaped = (uint8_t)(fl & JSCAN__F_ESC);
            cur->key.count = 0;
            uint64_t h = jscan__hash(text, &cur->key);
            d->khash__[m] = h;
            for (unsigned j = 0; j < m; j++)
                if (d->khash__[j] == h && jscan__span_eq(text, &d->top[j].key, &cur->key)) {
                    jscan__rule(&rule, &rule_off, JSCAN_DUP_KEY, start);
                    break;
                }
        } else {
            d->n_top++; /* counted for the JSCAN_MAX_TOP rule only */
        }
    }
    i = jscan__ws_skip(p, i, n);
    if (i >= n) {
        st = JSCAN_TRUNCATED;
        goto fail;
    }
    if (p[i] != ':') {
        st = JSCAN_SYNTAX;
        goto fail;
    }
    i = jscan__ws_skip(p, i + 1, n);
    goto value;

close: /* p[i - 1] closed the container at `depth` */
    if (depth == 2 && cur) {
        cur->val.len = (uint32_t)(i - cur->val.off);
        cur->val.count = cnt2;
    }
    if (--depth == 0) {
        d->root.len = (uint32_t)(i - d->root.off);
        goto done;
    }

after: /* a value inside the container at `depth` (>= 1) ended at p[i - 1] */
    i = jscan__ws_skip(p, i, n);
    if (i >= n) {
        st = JSCAN_TRUNCATED;
        goto fail;
    }
    {
        int obj = (int)(objs >> (depth - 1) & 1);
        if (p[i] == ',') {
            i = jscan__ws_skip(p, i + 1, n);
            if (obj)
                goto key;
            goto value;
        }
        if (p[i] == (obj ? '}' : ']')) {
            i++;
            goto close;
        }
        st = JSCAN_SYNTAX;
        goto fail;
    }

done:
    i = jscan__ws_skip(p, i, n);
    if (i < n) {
        st = JSCAN_TRAILING;
        goto fail;
    }
    if (d->root.type != JSCAN_OBJECT) {
        d->err_off = d->root.off;
        return JSCAN_NOT_OBJECT;
    }
    if (rule != JSCAN_OK) {
        d->err_off = rule_off;
        return rule;
    }
    return JSCAN_OK;
fail:
    d->err_off = i;
    return st;
}

const char *jscan_strerror(enum jscan_status st)
{
    switch (st) {
    case JSCAN_OK:
        return "ok";
    case JSCAN_TOO_LONG:
        return "body longer than 2 GiB";
    case JSCAN_EMPTY:
        return "empty body";
    case JSCAN_TRUNCATED:
        return "unexpected end of the body";
    case JSCAN_SYNTAX:
        return "unexpected character";
    case JSCAN_BAD_NUMBER:
        return "malformed number";
    case JSCAN_BAD_ESCAPE:
        return "invalid escape in a string";
    case JSCAN_CTRL_CHAR:
        return "control character in a string";
    case JSCAN_BAD_UTF8:
        return "invalid UTF-8";
    case JSCAN_TRAILING:
        return "data after the JSON value";
    case JSCAN_DEPTH:
        return "nesting deeper than 64";
    case JSCAN_NOT_OBJECT:
        return "the body must be a JSON object";
    case JSCAN_NUL_KEY:
        return "an object key contains \\u0000";
    case JSCAN_TOO_MANY_KEYS:
        return "more than 128 top-level keys";
    case JSCAN_DUP_KEY:
        return "duplicate top-level key";
    }
    return "unknown error";
}

/* --- reading a validated input ---------------------------------------------------------------- */

int jscan_string_eq(const char *p, const struct jscan_span *s, const char *str)
{
    if (s->type != JSCAN_STRING || s->len < 2)
        return 0;
    if (!s->escaped) {
        size_t n = (size_t)s->len - 2;
        return strlen(str) == n && memcmp(p + s->off + 1, str, n) == 0;
    }
    struct jscan__rd r;
    jscan__rd_init(&r, p, s);
    for (size_t k = 0;; k++) {
        int c = jscan__rd_get(&r);
        if (c < 0)
            return str[k] == '\0';
        if (str[k] == '\0' || (unsigned char)str[k] != (unsigned)c)
            return 0;
    }
}

const struct jscan_span *jscan_top(const struct jscan_doc *d, const char *p, const char *key)
{
    for (unsigned j = 0; j < d->n_top && j < JSCAN_MAX_TOP; j++)
        if (jscan_string_eq(p, &d->top[j].key, key))
            return &d->top[j].val;
    return NULL;
}

/* Past the end of the validated string opening at p[i] (bounded by end); *esc: has a '\\'. */
static size_t jscan__skip_str(const unsigned char *p, size_t i, size_t end, uint8_t *esc)
{
    *esc = 0;
    for (i++;;) {
        i = jscan__plain(p, i, end);
        if (i >= end)
            return end;
        if (p[i] == '"')
            return i + 1;
        if (p[i] == '\\') {
            *esc = 1;
            i += 2;
        } else {
            i++;
        }
    }
}

/* Past the end of the validated value at p[i] (bounded by end); fills *v. */
static size_t jscan__skip(const unsigned char *p, size_t i, size_t end, struct jscan_span *v)
{
    size_t start = i;
    v->off = (uint32_t)i;
    v->escaped = 0;
    v->count = 0;
    switch (p[i]) {
    case '"':
        v->type = JSCAN_STRING;
        i = jscan__skip_str(p, i, end, &v->escaped);
        break;
    case '{':
    case '[': {
        unsigned char close = p[i] == '{' ? '}' : ']';
        v->type = p[i] == '{' ? JSCAN_OBJECT : JSCAN_ARRAY;
        i = jscan__ws_skip(p, i + 1, end);
        if (i < end && p[i] == close) {
            i++;
            break;
        }
        uint32_t commas = 0;
        unsigned lvl = 1;
        uint8_t esc;
        while (i < end && lvl > 0) {
            unsigned char c = p[i];
            if (c == '"') {
                i = jscan__skip_str(p, i, end, &esc);
                continue;
            }
            if (c == '{' || c == '[')
                lvl++;
            else if (c == '}' || c == ']')
                lvl--;
            else if (c == ',' && lvl == 1)
                commas++;
            i++;
        }
        v->count = commas + 1;
        break;
    }
    case 't':
    case 'n':
        v->type = p[i] == 't' ? JSCAN_TRUE : JSCAN_NULL;
        i += 4;
        break;
    case 'f':
        v->type = JSCAN_FALSE;
        i += 5;
        break;
    default:
        v->type = JSCAN_NUMBER;
        while (i < end && (jscan__digit(p[i]) || p[i] == '-' || p[i] == '+' || p[i] == '.' ||
                           (p[i] | 0x20) == 'e'))
            i++;
        break;
    }
    if (i > end)
        i = end;
    v->len = (uint32_t)(i - start);
    return i;
}

int jscan_iter_init(struct jscan_iter *it, const struct jscan_span *c)
{
    it->pos = it->end = 0;
    it->obj = 0;
    if ((c->type != JSCAN_ARRAY && c->type != JSCAN_OBJECT) || c->len < 2)
        return -1;
    it->pos = c->off + 1;
    it->end = c->off + c->len - 1;
    it->obj = c->type == JSCAN_OBJECT;
    return 0;
}

int jscan_iter_next(struct jscan_iter *it, const char *text, struct jscan_span *key,
                    struct jscan_span *val)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = it->pos, end = it->end;
    struct jscan_span k = {0};
    i = jscan__ws_skip(p, i, end);
    if (i < end && p[i] == ',')
        i = jscan__ws_skip(p, i + 1, end);
    if (i >= end) {
        it->pos = it->end;
        return -1;
    }
    if (it->obj) {
        i = jscan__skip(p, i, end, &k);
        i = jscan__ws_skip(p, i, end);
        i = jscan__ws_skip(p, i + 1, end); /* the colon */
        if (i >= end) {
            it->pos = it->end;
            return -1;
        }
    }
    if (key)
        *key = k;
    i = jscan__skip(p, i, end, val);
    it->pos = (uint32_t)i;
    return 0;
}

int jscan_member(const char *p, const struct jscan_span *obj, const char *key,
                 struct jscan_span *out)
{
    struct jscan_iter it;
    struct jscan_span k, v;
    int found = -1;
    if (obj->type != JSCAN_OBJECT || jscan_iter_init(&it, obj) != 0)
        return -1;
    while (jscan_iter_next(&it, p, &k, &v) == 0)
        if (jscan_string_eq(p, &k, key)) {
            *out = v;
            found = 0;
        }
    return found;
}

long jscan_string(const char *text, const struct jscan_span *s, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)text;
    if (s->type != JSCAN_STRING || s->len < 2)
        return JSCAN_ETYPE;
    size_t i = (size_t)s->off + 1, end = (size_t)s->off + s->len - 1, o = 0;
    if (!s->escaped) {
        size_t n = end - i;
        if (n >= cap)
            return JSCAN_ESPACE;
        memcpy(out, p + i, n);
        out[n] = '\0';
        return (long)n;
    }
    while (i < end) {
        const unsigned char *bs = memchr(p + i, '\\', end - i);
        size_t run = (bs ? (size_t)(bs - p) : end) - i;
        if (o + run >= cap)
            return JSCAN_ESPACE;
        memcpy(out + o, p + i, run);
        o += run;
        i += run;
        if (i >= end)
            break;
        unsigned char u[4];
        unsigned odd = 0, k = jscan__unit(p, &i, end, u, &odd);
        if (odd & JSCAN__U_NUL)
            return JSCAN_ENUL;
        if (odd & JSCAN__U_SUR)
            return JSCAN_ESURROGATE;
        if (o + k >= cap)
            return JSCAN_ESPACE;
        memcpy(out + o, u, k);
        o += k;
    }
    if (o >= cap)
        return JSCAN_ESPACE;
    out[o] = '\0';
    return (long)o;
}

int jscan_int(const char *text, const struct jscan_span *s, int64_t *out)
{
    const unsigned char *p = (const unsigned char *)text + s->off;
    size_t n = s->len, i = 0;
    if (s->type != JSCAN_NUMBER || n == 0)
        return -1;
    int neg = p[0] == '-';
    i = (size_t)neg;
    if (i >= n)
        return -1;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    for (; i < n; i++) {
        unsigned dg = p[i] - (unsigned)'0';
        if (dg > 9 || v > (limit - dg) / 10)
            return -1;
        v = v * 10 + dg;
    }
    if (!neg)
        *out = (int64_t)v;
    else if (v == (uint64_t)INT64_MAX + 1)
        *out = INT64_MIN;
    else
        *out = -(int64_t)v;
    return 0;
}
