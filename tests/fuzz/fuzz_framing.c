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
 *       number those digits spell (checked digit by digit in 128-bit arithmetic).
 *
 * Byte 0 bit 1 set: the rest is the raw bytes of a connection, fed to the byte scanner
 * (framing_scan), at once and in pieces whose sizes come from byte 0's other bits:
 *   (d) the pieces change nothing: same verdict, status, reason, request counts;
 *   (e) the first request's head is accepted exactly when an independent reading of it says
 *       so: leading CRLFs, `token SP target SP HTTP/1.d CRLF` (target without control bytes
 *       or SP, at most FRAMING_LINE_MAX), field lines `token ":" value CRLF` (no NUL, CR or LF
 *       in the value, no obs-fold), an empty line; (a)'s reference on the fields (values
 *       trimmed of OWS) plus Transfer-Encoding on HTTP/1.0 and a Content-Length that is not a
 *       64-bit decimal; and libmicrohttpd's pool cost at most FRAMING_HEAD_MAX;
 *   (f) a refusal has one of the statuses 400, 413, 414, 431, 505 and a reason. */
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
        if (x >= UINT64_MAX) /* 2^64 - 1 too: libmicrohttpd's MHD_SIZE_UNKNOWN */
            fits = false;
    }
    CHECK((rc == 0) == fits);
    if (rc == 0)
        CHECK(got == (uint64_t)x);
    else
        CHECK(got == 12345); /* untouched on refusal */
}

static bool tchar(unsigned char b)
{
    return b && ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
                 strchr("!#$%&'*+-.^_`|~", b));
}

/* (e)'s reference: 1 the first head is valid, 0 invalid, -1 not all there. */
static int ref_head(const char *d, size_t n)
{
    size_t i = 0, cost = 0;
    while (i + 1 < n && d[i] == '\r' && d[i + 1] == '\n')
        i += 2;
    if (i < n && (d[i] == '\r' || d[i] == '\n') && !(i + 1 == n && d[i] == '\r'))
        return 0; /* a CR not followed by LF, or a bare LF */
    cost = i;
    /* the request line */
    size_t rl = i;
    while (i < n && d[i] != '\r' && d[i] != '\n')
        i++;
    size_t rl_n = i - rl;
    if (rl_n > FRAMING_LINE_MAX)
        return 0;
    if (i + 1 >= n)
        return -1;
    if (d[i] != '\r' || d[i + 1] != '\n')
        return 0;
    const char *l = d + rl, *sp1 = memchr(l, ' ', rl_n);
    if (!sp1 || sp1 == l)
        return 0;
    for (const char *q = l; q < sp1; q++)
        if (!tchar((unsigned char)*q))
            return 0;
    const char *t = sp1 + 1, *sp2 = memchr(t, ' ', rl_n - (size_t)(t - l));
    if (!sp2 || sp2 == t || (size_t)(l + rl_n - (sp2 + 1)) != 8)
        return 0;
    bool query = false;
    for (const char *q = t; q < sp2; q++) {
        unsigned char b = (unsigned char)*q;
        if (b <= ' ' || b == 0x7f)
            return 0;
        if (b == '?' && !query) {
            query = true;
            cost += FRAMING_RECORD_COST;
        } else if (b == '&' && query) {
            cost += FRAMING_RECORD_COST;
        }
    }
    const char *v = sp2 + 1;
    if (memcmp(v, "HTTP/", 5) || v[5] != '1' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return 0;
    bool http10 = v[7] == '0';
    cost += rl_n + 2;
    i += 2;
    struct hdr h[MAX_HDRS + 1];
    size_t nh = 0;
    bool cl_ok = true;
    for (;;) {
        size_t ls = i;
        while (i < n && d[i] != '\r' && d[i] != '\n')
            i++;
        if (i + 1 >= n)
            return -1;
        if (d[i] != '\r' || d[i + 1] != '\n')
            return 0;
        size_t ln = i - ls;
        cost += ln + 2;
        i += 2;
        if (ln == 0)
            break;
        const char *f = d + ls, *colon = memchr(f, ':', ln);
        if (!colon || colon == f)
            return 0;
        for (const char *q = f; q < colon; q++)
            if (!tchar((unsigned char)*q))
                return 0;
        const char *vs = colon + 1, *ve = f + ln;
        if (memchr(vs, '\0', (size_t)(ve - vs)))
            return 0;
        while (vs < ve && (*vs == ' ' || *vs == '\t'))
            vs++;
        while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        cost += FRAMING_RECORD_COST;
        size_t kn = (size_t)(colon - f);
        if (ieq(f, kn, "cookie")) {
            cost += FRAMING_RECORD_COST;
            for (const char *q = colon + 1; q < f + ln; q++)
                cost += *q == ';' || *q == ',' ? FRAMING_RECORD_COST + 1 : 1;
        }
        if (ieq(f, kn, "content-length")) {
            unsigned __int128 x = 0;
            cl_ok = cl_ok && ve > vs;
            for (const char *q = vs; q < ve && cl_ok; q++) {
                x = x * 10 + (unsigned)(*q - '0');
                cl_ok = *q >= '0' && *q <= '9' && x < UINT64_MAX;
            }
        }
        if (nh < MAX_HDRS)
            h[nh++] = (struct hdr){f, vs, kn, (size_t)(ve - vs)};
        else
            return -1; /* beyond what this reference keeps: not compared */
    }
    if (cost > FRAMING_HEAD_MAX || !cl_ok || ref_refuse(h, nh, !http10))
        return 0;
    for (size_t k = 0; k < nh; k++)
        if (http10 && ieq(h[k].k, h[k].kn, "transfer-encoding"))
            return 0;
    return 1;
}

struct scan_res {
    bool ok;
    unsigned status;
    const char *why;
    uint64_t requests, complete;
};

static struct scan_res scan_in(const uint8_t *d, size_t n, unsigned seed)
{
    struct framing_scan s;
    framing_scan_init(&s);
    bool ok = true;
    for (size_t i = 0; i < n && ok;) {
        size_t k = seed ? 1 + (seed = seed * 1103515245u + 12345u) % 9u : n - i;
        if (k > n - i)
            k = n - i;
        ok = framing_scan(&s, d + i, k);
        i += k;
    }
    return (struct scan_res){ok, s.status, ok ? NULL : s.why, s.requests, s.complete};
}

static void check_stream(const uint8_t *d, size_t n, unsigned seed)
{
    struct scan_res a = scan_in(d, n, 0), b = scan_in(d, n, seed | 1u);
    /* (d) */
    CHECK(a.ok == b.ok && a.status == b.status && a.why == b.why);
    CHECK(a.requests == b.requests && a.complete == b.complete);
    /* (f) */
    if (!a.ok)
        CHECK(a.why && *a.why &&
              (a.status == 400 || a.status == 413 || a.status == 414 || a.status == 431 ||
               a.status == 505));
    /* (e) */
    int ref = ref_head((const char *)d, n);
    if (ref == 1)
        CHECK(a.requests >= 1);
    else if (ref == 0)
        CHECK(a.requests == 0 && !a.ok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 2) {
        check_stream(data + 1, size - 1, data[0] >> 2);
        return 0;
    }
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
