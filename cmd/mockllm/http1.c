/* http1.c — HTTP/1.x request head parser and in-place chunked decoder (see http1.h). */
#include "cmd/mockllm/http1.h"

#include <string.h>
#include <strings.h>

static int fail(struct http_req *r, int status)
{
    r->err_status = status;
    return HTTP_ERROR;
}

static int ieq(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(a, lit, n) == 0;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Finds the comma-separated token `lit` (case-insensitive) in v[0..n). */
static int has_token(const char *v, size_t n, const char *lit)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e > s && ieq(v + s, e - s, lit))
            return 1;
    }
    return 0;
}

/* Whether the last comma-separated token of v[0..n) is "chunked". */
static int last_is_chunked(const char *v, size_t n)
{
    size_t e = n;
    while (e > 0 && is_ows(v[e - 1]))
        e--;
    size_t s = e;
    while (s > 0 && v[s - 1] != ',')
        s--;
    while (s < e && is_ows(v[s]))
        s++;
    return ieq(v + s, e - s, "chunked");
}

static int parse_length(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 18)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Finds the blank line ending the head; returns its end offset, or 0 (then *scan is set). */
static size_t find_head_end(const char *buf, size_t len, size_t *scan)
{
    size_t i = *scan;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            break;
        size_t p = (size_t)(nl - buf);
        if (p + 1 >= len || (buf[p + 1] == '\r' && p + 2 >= len)) {
            *scan = p; /* look at this newline again when more bytes arrive */
            return 0;
        }
        if (buf[p + 1] == '\n')
            return p + 2;
        if (buf[p + 1] == '\r' && buf[p + 2] == '\n')
            return p + 3;
        i = p + 1;
    }
    *scan = len;
    return 0;
}

static int parse_request_line(const char *buf, size_t ll, struct http_req *r)
{
    const char *sp1 = memchr(buf, ' ', ll);
    if (!sp1 || sp1 == buf)
        return fail(r, 400);
    size_t ml = (size_t)(sp1 - buf);
    if (ml == 3 && memcmp(buf, "GET", 3) == 0)
        r->method = HTTP_GET;
    else if (ml == 4 && memcmp(buf, "POST", 4) == 0)
        r->method = HTTP_POST;
    else if (ml == 4 && memcmp(buf, "HEAD", 4) == 0)
        r->method = HTTP_HEAD;
    else
        r->method = HTTP_OTHER;
    const char *tgt = sp1 + 1;
    const char *end = buf + ll;
    const char *sp2 = memchr(tgt, ' ', (size_t)(end - tgt));
    if (!sp2 || sp2 == tgt)
        return fail(r, 400);
    size_t tl = (size_t)(sp2 - tgt);
    const char *ver = sp2 + 1;
    size_t vl = (size_t)(end - ver);
    if (vl != 8 || memcmp(ver, "HTTP/1.", 7) != 0) {
        if (vl >= 5 && memcmp(ver, "HTTP/", 5) == 0)
            return fail(r, 505);
        return fail(r, 400);
    }
    if (ver[7] == '1')
        r->minor = 1;
    else if (ver[7] == '0')
        r->minor = 0;
    else
        return fail(r, 505);
    const char *q = memchr(tgt, '?', tl);
    r->path_off = (size_t)(tgt - buf);
    r->path_len = q ? (size_t)(q - tgt) : tl;
    return HTTP_DONE;
}

int http1_parse_head(const char *buf, size_t len, size_t *scan, size_t max_head, struct http_req *r)
{
    size_t end = find_head_end(buf, len, scan);
    if (end == 0)
        return len > max_head ? fail(r, 431) : HTTP_AGAIN;
    *scan = 0;
    memset(r, 0, sizeof(*r));
    if (end > max_head)
        return fail(r, 431);
    r->head_len = end;

    const char *eol = memchr(buf, '\n', end);
    size_t ll = (size_t)(eol - buf);
    if (ll && buf[ll - 1] == '\r')
        ll--;
    if (parse_request_line(buf, ll, r) != HTTP_DONE)
        return HTTP_ERROR;

    int saw_close = 0, saw_ka = 0, saw_te = 0;
    const char *p = eol + 1, *hend = buf + end;
    while (p < hend) {
        const char *e = memchr(p, '\n', (size_t)(hend - p));
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        const char *colon = memchr(p, ':', n);
        if (!colon || colon == p || is_ows(colon[-1]) || is_ows(p[0]))
            return fail(r, 400);
        size_t nl = (size_t)(colon - p);
        const char *v = colon + 1;
        size_t vn = n - nl - 1;
        while (vn && is_ows(v[0]))
            v++, vn--;
        while (vn && is_ows(v[vn - 1]))
            vn--;
        if (ieq(p, nl, "content-length")) {
            uint64_t cl;
            if (parse_length(v, vn, &cl) < 0 || (r->has_length && cl != r->content_length))
                return fail(r, 400);
            r->has_length = 1;
            r->content_length = cl;
        } else if (ieq(p, nl, "transfer-encoding")) {
            saw_te = 1;
            if (!last_is_chunked(v, vn))
                return fail(r, 501);
            r->chunked = 1;
        } else if (ieq(p, nl, "connection")) {
            saw_close |= has_token(v, vn, "close");
            saw_ka |= has_token(v, vn, "keep-alive");
        } else if (ieq(p, nl, "expect")) {
            if (ieq(v, vn, "100-continue"))
                r->expect_continue = 1;
        }
        p = e + 1;
    }
    if (saw_te) {
        r->has_length = 0; /* Transfer-Encoding wins over Content-Length */
        r->content_length = 0;
    }
    r->keep_alive = r->minor >= 1 ? !saw_close : (saw_ka && !saw_close);
    return HTTP_DONE;
}

enum { DC_SIZE, DC_DATA, DC_DATA_END, DC_TRAILER, DC_DONE };

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int dc_fail(int *err_status, int status)
{
    *err_status = status;
    return HTTP_ERROR;
}

int http1_dechunk(char *buf, size_t len, struct http_dechunk *d, size_t max_body, int *err_status)
{
    for (;;) {
        switch (d->state) {
        case DC_SIZE: {
            char *nl = memchr(buf + d->raw, '\n', len - d->raw);
            if (!nl)
                return len - d->raw > 1024 ? dc_fail(err_status, 400) : HTTP_AGAIN;
            uint64_t v = 0;
            size_t i = d->raw, digits = 0;
            for (; buf + i < nl; i++) {
                int h = hexval(buf[i]);
                if (h < 0)
                    break;
                if (++digits > 15)
                    return dc_fail(err_status, 413);
                v = v * 16 + (uint64_t)h;
            }
            if (!digits)
                return dc_fail(err_status, 400);
            if (buf + i < nl && buf[i] != ';' && buf[i] != '\r' && !is_ows(buf[i]))
                return dc_fail(err_status, 400);
            d->raw = (size_t)(nl - buf) + 1;
            if (v == 0) {
                d->state = DC_TRAILER;
                break;
            }
            if (v > max_body - d->out)
                return dc_fail(err_status, 413);
            d->left = v;
            d->state = DC_DATA;
            break;
        }
        case DC_DATA: {
            size_t avail = len - d->raw;
            size_t n = avail < d->left ? avail : (size_t)d->left;
            if (n) {
                memmove(buf + d->out, buf + d->raw, n);
                d->out += n;
                d->raw += n;
                d->left -= n;
            }
            if (d->left)
                return HTTP_AGAIN;
            d->state = DC_DATA_END;
            break;
        }
        case DC_DATA_END:
            if (d->raw >= len)
                return HTTP_AGAIN;
            if (buf[d->raw] == '\n') {
                d->raw++;
            } else if (buf[d->raw] == '\r') {
                if (d->raw + 1 >= len)
                    return HTTP_AGAIN;
                if (buf[d->raw + 1] != '\n')
                    return dc_fail(err_status, 400);
                d->raw += 2;
            } else {
                return dc_fail(err_status, 400);
            }
            d->state = DC_SIZE;
            break;
        case DC_TRAILER: {
            char *nl = memchr(buf + d->raw, '\n', len - d->raw);
            if (!nl)
                return len - d->raw > 16384 ? dc_fail(err_status, 431) : HTTP_AGAIN;
            size_t n = (size_t)(nl - (buf + d->raw));
            int blank = n == 0 || (n == 1 && buf[d->raw] == '\r');
            d->raw += n + 1;
            if (blank) {
                d->state = DC_DONE;
                return HTTP_DONE;
            }
            break;
        }
        default:
            return HTTP_DONE;
        }
    }
}
