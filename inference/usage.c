/* usage.c — see usage.h. */
#include "inference/usage.h"

#include <stdbool.h>
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
