/* libFuzzer target for http/framing.c: the request-framing and header-hygiene verdict, and the
 * Content-Length parser. Invariants, not just "no crash".
 *
 * Input: byte 0 selects HTTP/1.1 (bit 0); the rest is a header block, one header per '\n'
 * (a trailing '\r' is dropped, as a parser would), "name:value" split at the first ':' with
 * blanks after it skipped; a line without ':' is a name with no value (libmicrohttpd passes
 * NULL). Bytes inside a line, NUL and CR included, are passed with their exact sizes.
 *   (a) the verdict refuses exactly when an independent reading of the list says so: a NUL in a
 *       name or value, CR/LF in a value, two Content-Lengths, any Transfer-Encoding other than
 *       one "chunked", Transfer-Encoding with Content-Length, HTTP/1.1 without Host;
 *   (b) the verdict does not depend on the headers' order (reversed list: same accept/refuse);
 *   (c) an accepted request has at most one Content-Length, whose value framing_parse_clen
 *       accepts exactly when it is 1..20 digits that fit in 64 bits, and then equals the
 *       number those digits spell (checked digit by digit in 128-bit arithmetic). */
#include "http/framing.h"

#include "tests/fuzz/fuzz.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define MAX_HDRS 64

struct hdr {
    const char *k, *v;
    size_t kn, vn;
};

static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n != l)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a + 32);
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b + 32);
        if (a != b)
            return false;
    }
    return true;
}

static bool has(const char *s, size_t n, char c)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == c)
            return true;
    return false;
}

/* (a)'s reference: refuse? */
static bool ref_refuse(const struct hdr *h, size_t n, bool http11)
{
    unsigned cl = 0, te = 0, host = 0;
    bool te_ok = false;
    for (size_t i = 0; i < n; i++) {
        if (has(h[i].k, h[i].kn, '\0') || (h[i].v && has(h[i].v, h[i].vn, '\0')))
            return true;
        if (h[i].v && (has(h[i].v, h[i].vn, '\r') || has(h[i].v, h[i].vn, '\n')))
            return true;
        if (ieq(h[i].k, h[i].kn, "content-length"))
            cl++;
        if (ieq(h[i].k, h[i].kn, "transfer-encoding")) {
            te++;
            te_ok = h[i].v && ieq(h[i].v, h[i].vn, "chunked");
        }
        if (ieq(h[i].k, h[i].kn, "host"))
            host++;
    }
    return cl > 1 || te > 1 || (te == 1 && !te_ok) || (te && cl) || (http11 && host == 0);
}

static const char *verdict(const struct hdr *h, size_t n, bool http11, bool reversed)
{
    struct framing f;
    memset(&f, 0, sizeof(f));
    for (size_t i = 0; i < n; i++) {
        const struct hdr *x = &h[reversed ? n - 1 - i : i];
        if (!framing_header(&f, x->k, x->kn, x->v, x->vn))
            break;
    }
    return framing_verdict(&f, http11);
}

static void check_clen(const char *v, size_t n)
{
    uint64_t got = 12345;
    int rc = framing_parse_clen(v, n, &got);
    bool digits = n > 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            digits = false;
    unsigned __int128 x = 0;
    bool fits = digits;
    for (size_t i = 0; fits && i < n; i++) {
        x = x * 10 + (unsigned)(v[i] - '0');
        if (x > UINT64_MAX)
            fits = false;
    }
    CHECK((rc == 0) == fits);
    if (rc == 0)
        CHECK(got == (uint64_t)x);
    else
        CHECK(got == 12345); /* untouched on refusal */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool http11 = data[0] & 1;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    struct hdr h[MAX_HDRS];
    size_t n = 0;
    while (p < end && n < MAX_HDRS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *line_end = le > p && le[-1] == '\r' ? le - 1 : le;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        struct hdr *x = &h[n++];
        x->k = p;
        if (colon) {
            x->kn = (size_t)(colon - p);
            const char *v = colon + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            x->v = v;
            x->vn = (size_t)(line_end - v);
        } else {
            x->kn = (size_t)(line_end - p);
            x->v = NULL;
            x->vn = 0;
        }
        p = nl ? nl + 1 : end;
    }

    /* (a) */
    const char *why = verdict(h, n, http11, false);
    CHECK((why != NULL) == ref_refuse(h, n, http11));
    if (why)
        CHECK(*why != '\0');
    /* (b) */
    CHECK((verdict(h, n, http11, true) != NULL) == (why != NULL));
    /* (c) */
    for (size_t i = 0; i < n; i++)
        if (h[i].v)
            check_clen(h[i].v, h[i].vn);
    if (!why) {
        unsigned cl = 0;
        for (size_t i = 0; i < n; i++)
            cl += ieq(h[i].k, h[i].kn, "content-length");
        CHECK(cl <= 1);
    }
    return 0;
}
