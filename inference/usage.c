/* usage.c — see usage.h. */
#include "inference/usage.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool usage__ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A quoted key at p (p[0] == '"'): its length without quotes, *end after the closing quote, or
 * -1 (escapes are not expected in these keys: a key with one is skipped as unknown). */
static long usage__key(const char *p, const char *lim, const char **end)
{
    const char *q = p + 1;
    while (q < lim && *q != '"') {
        if (*q == '\\') {
            if (q + 1 >= lim)
                return -1;
            q++;
        }
        q++;
    }
    if (q >= lim)
        return -1;
    *end = q + 1;
    return (long)(q - p - 1);
}

/* Parses the object at p ('{'), filling the three counts (-1 absent). Returns false if the
 * object does not close within lim. */
static bool usage__object(const char *p, const char *lim, int64_t *prompt, int64_t *completion,
                          int64_t *total)
{
    int depth = 0;
    /* strings are skipped whole where they start (as keys, then not followed by ':') */
    for (const char *q = p; q < lim; q++) {
        char c = *q;
        if (c == '{') {
            depth++;
        } else if (c == '}') {
            if (--depth == 0)
                return true;
        } else if (c == '"') {
            const char *after;
            long kl = usage__key(q, lim, &after);
            if (kl < 0)
                return false;
            const char *v = after;
            while (v < lim && usage__ws(*v))
                v++;
            if (depth != 1 || v >= lim || *v != ':') {
                q = after - 1; /* a string value, or a key of a nested object */
                continue;
            }
            v++;
            while (v < lim && usage__ws(*v))
                v++;
            int64_t *slot = NULL;
            if (kl == 13 && !memcmp(q + 1, "prompt_tokens", 13))
                slot = prompt;
            else if (kl == 17 && !memcmp(q + 1, "completion_tokens", 17))
                slot = completion;
            else if (kl == 12 && !memcmp(q + 1, "total_tokens", 12))
                slot = total;
            if (slot && v < lim && *v >= '0' && *v <= '9') {
                int64_t n = 0;
                int digits = 0;
                while (v < lim && *v >= '0' && *v <= '9' && digits < 16) {
                    n = n * 10 + (*v - '0');
                    v++;
                    digits++;
                }
                if (digits <= 15)
                    *slot = n;
            }
            q = v - 1;
        }
    }
    return false;
}

int64_t usage_tokens(const char *buf, size_t len)
{
    static const char key[] = "\"usage\"";
    const char *lim = buf + len;
    /* the last occurrence whose value is an object that closes in the buffer */
    for (size_t i = len; i >= sizeof(key) - 1; i--) {
        const char *p = buf + i - (sizeof(key) - 1);
        if (memcmp(p, key, sizeof(key) - 1) != 0)
            continue;
        const char *v = p + sizeof(key) - 1;
        while (v < lim && usage__ws(*v))
            v++;
        if (v >= lim || *v != ':')
            continue;
        v++;
        while (v < lim && usage__ws(*v))
            v++;
        if (v >= lim || *v != '{')
            continue;
        int64_t prompt = -1, completion = -1, total = -1;
        if (!usage__object(v, lim, &prompt, &completion, &total))
            continue;
        if (total >= 0)
            return total;
        if (prompt < 0 && completion < 0)
            return -1;
        return (prompt > 0 ? prompt : 0) + (completion > 0 ? completion : 0);
    }
    return -1;
}

struct usage_strip {
    size_t n;     /* bytes held: the current event so far (while !passing) */
    bool passing; /* the current event outgrew the hold: passed on unchecked */
    bool cr;      /* the last byte was '\r' (a '\n' after it ends nothing more) */
    bool bol;     /* at the beginning of a line */
    char held[USAGE_STRIP_HOLD];
};

struct usage_strip *usage_strip_new(void)
{
    struct usage_strip *f = malloc(sizeof(*f));
    if (f) {
        f->n = 0;
        f->passing = f->cr = false;
        f->bol = true;
    }
    return f;
}

void usage_strip_free(struct usage_strip *f)
{
    free(f);
}

size_t usage_strip_held(const struct usage_strip *f)
{
    return f->n;
}

/* At p: optional blanks, then c. Returns the byte after c, or NULL. */
static const char *usage__after(const char *p, const char *lim, char c)
{
    while (p < lim && usage__ws(*p))
        p++;
    return p < lim && *p == c ? p + 1 : NULL;
}

/* The quoted key `key` (with its quotes) followed by ':' and the byte `open` somewhere in
 * [p, lim). Inside a JSON string a quote is escaped, so a match starts at a real key. */
static bool usage__has(const char *p, const char *lim, const char *key, char open, char close)
{
    size_t kl = strlen(key);
    for (const char *q = p; (size_t)(lim - q) >= kl; q++) {
        q = memchr(q, key[0], (size_t)(lim - q) - kl + 1);
        if (!q)
            return false;
        if (memcmp(q, key, kl) != 0)
            continue;
        const char *v = usage__after(q + kl, lim, ':');
        v = v ? usage__after(v, lim, open) : NULL;
        if (v && (!close || usage__after(v, lim, close)))
            return true;
    }
    return false;
}

/* A whole event: its usage-only chunk? */
static bool usage__only(const char *p, size_t n)
{
    const char *lim = p + n;
    return usage__has(p, lim, "\"choices\"", '[', ']') && usage__has(p, lim, "\"usage\"", '{', 0);
}

int usage_strip_feed(struct usage_strip *f, const char *p, size_t n, struct buf *out)
{
    size_t start = 0; /* the current event's first byte in p (or held, from before) */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        bool eol = false;
        if (c == '\n') {
            eol = !f->cr;
            f->cr = false;
        } else if (c == '\r') {
            eol = true;
            f->cr = true;
        } else {
            f->cr = false;
            f->bol = false;
        }
        if (!eol)
            continue;
        if (!f->bol) {
            f->bol = true; /* a line ended; the event goes on */
            continue;
        }
        /* a blank line: the event [start, i] (after what is held) is complete */
        size_t len = i + 1 - start;
        if (f->passing) {
            if (buf_append(out, p + start, len) != 0)
                return -1;
        } else if (f->n) {
            bool drop = false;
            if (f->n + len <= USAGE_STRIP_HOLD) {
                memcpy(f->held + f->n, p + start, len);
                drop = usage__only(f->held, f->n + len);
                if (!drop && buf_append(out, f->held, f->n + len) != 0)
                    return -1;
            } else if (buf_append(out, f->held, f->n) != 0 ||
                       buf_append(out, p + start, len) != 0) {
                return -1;
            }
        } else if ((len > USAGE_STRIP_HOLD || !usage__only(p + start, len)) &&
                   buf_append(out, p + start, len) != 0) {
            return -1; /* (longer than the hold: passed unchecked, as it is when it comes in
                        * pieces) */
        }
        f->n = 0;
        f->passing = false;
        start = i + 1;
    }
    /* the rest starts an event: held while it may still be a usage chunk */
    size_t rest = n - start;
    if (!rest)
        return 0;
    if (!f->passing && f->n + rest <= USAGE_STRIP_HOLD) {
        memcpy(f->held + f->n, p + start, rest);
        f->n += rest;
        return 0;
    }
    if (!f->passing && (buf_append(out, f->held, f->n) != 0))
        return -1;
    f->n = 0;
    f->passing = true;
    return buf_append(out, p + start, rest);
}

int usage_strip_flush(struct usage_strip *f, struct buf *out)
{
    size_t n = f->n;
    f->n = 0;
    return n ? buf_append(out, f->held, n) : 0;
}
