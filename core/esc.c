/* esc.c — see esc.h. */
#include "core/esc.h"

#include <string.h>

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t esc__utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

size_t esc_json(char *out, size_t cap, const char *s, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    if (cap == 0) {
        if (used)
            *used = 0;
        return 0;
    }
    while (i < n) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen, adv = 1;
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            plen = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            tmp[0] = '\\';
            tmp[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            plen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            tmp[0] = '\\';
            tmp[1] = 'u';
            tmp[2] = '0';
            tmp[3] = '0';
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            plen = 6;
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            plen = 1;
        } else if ((adv = esc__utf8_len(u + i, n - i)) != 0) {
            piece = s + i;
            plen = adv;
        } else {
            piece = "\xef\xbf\xbd"; /* U+FFFD for a byte that is not UTF-8 */
            plen = 3;
            adv = 1;
        }
        if (o + plen > cap - 1)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
        i += adv;
    }
    out[o] = '\0';
    if (used)
        *used = i;
    return o;
}

int esc_json_buf(struct buf *b, const char *s, size_t n)
{
    char tmp[512];
    if (buf_append(b, "\"", 1) != 0)
        return -1;
    while (n > 0) {
        size_t used;
        size_t w = esc_json(tmp, sizeof(tmp), s, n, &used);
        if (buf_append(b, tmp, w) != 0)
            return -1;
        s += used;
        n -= used;
    }
    return buf_append(b, "\"", 1);
}

int esc_prom_label(struct buf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        const char *piece = s + i;
        size_t plen = 1, adv = 1;
        if (u[i] == '\\' || u[i] == '"' || u[i] == '\n') {
            piece = u[i] == '\\' ? "\\\\" : u[i] == '"' ? "\\\"" : "\\n";
            plen = 2;
        } else if (u[i] >= 0x80) {
            adv = esc__utf8_len(u + i, n - i);
            if (adv) {
                plen = adv;
            } else {
                piece = "\xef\xbf\xbd"; /* U+FFFD: label values are UTF-8 */
                plen = 3;
                adv = 1;
            }
        }
        if (buf_append(b, piece, plen) != 0)
            return -1;
        i += adv;
    }
    return 0;
}

size_t esc_utf8_prefix(const char *s, size_t n, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    if (n <= max)
        return n;
    /* Only a valid sequence can cross max, and it starts at most 3 bytes back, on the nearest
     * byte that is not a continuation byte. Stray continuation bytes are characters of their
     * own (esc_json writes each as U+FFFD): walking back over all of them cut "m" + 300 of
     * them to "". */
    for (size_t back = 1; back <= 3 && back <= max; back++) {
        size_t i = max - back;
        if ((u[i] & 0xC0) != 0x80)
            return esc__utf8_len(u + i, n - i) > back ? i : max;
    }
    return max;
}
