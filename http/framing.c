/* framing.c — see framing.h. */
#include "http/framing.h"

#include <string.h>
#include <strings.h>

static bool framing__is(const char *key, size_t n, const char *name)
{
    size_t l = strlen(name);
    return n == l && strncasecmp(key, name, l) == 0;
}

bool framing_header(struct framing *f, const char *key, size_t key_size, const char *value,
                    size_t value_size)
{
    if (f->why)
        return false;
    if (memchr(key, '\0', key_size) || (value && memchr(value, '\0', value_size)))
        f->why = "a header contains a NUL byte";
    else if (value && (memchr(value, '\r', value_size) || memchr(value, '\n', value_size)))
        f->why = "a header value contains CR or LF";
    else if (framing__is(key, key_size, "Content-Length"))
        f->n_clen++;
    else if (framing__is(key, key_size, "Transfer-Encoding")) {
        f->n_te++;
        f->te_chunked = value && value_size == 7 && strncasecmp(value, "chunked", 7) == 0;
    } else if (framing__is(key, key_size, "Host"))
        f->n_host++;
    return f->why == NULL;
}

const char *framing_verdict(const struct framing *f, bool http11)
{
    if (f->why)
        return f->why;
    if (f->n_clen > 1)
        return "more than one Content-Length header";
    if (f->n_te > 1 || (f->n_te && !f->te_chunked))
        return "unsupported Transfer-Encoding (only chunked is accepted)";
    if (f->n_te && f->n_clen)
        return "Content-Length together with Transfer-Encoding";
    if (http11 && f->n_host == 0)
        return "an HTTP/1.1 request needs a Host header";
    return NULL;
}

int framing_parse_clen(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (x == UINT64_MAX)
        return -1; /* libmicrohttpd's MHD_SIZE_UNKNOWN */
    *out = x;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* the byte scanner                                                                           */

enum {
    S_START = 0, /* before a request line (empty lines are skipped) */
    S_START_LF,  /* an empty line's CR seen */
    S_METHOD,
    S_TARGET,
    S_VERSION,
    S_RL_LF,    /* the request line's CR seen */
    S_FIELD,    /* at the start of a field line (or of the empty line ending the section) */
    S_NAME,     /* in a field name */
    S_VALUE,    /* after the colon */
    S_VALUE_LF, /* a field line's CR seen */
    S_END_LF,   /* the section's empty line: CR seen */
    S_BODY,     /* Content-Length bytes */
    S_CHUNK_SIZE,
    S_CHUNK_EXT,
    S_CHUNK_LF,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_REFUSED,
};

/* the fields the framing verdict needs */
enum { HDR_OTHER = 0, HDR_CL, HDR_TE, HDR_HOST, HDR_COOKIE };

void framing_scan_init(struct framing_scan *s)
{
    memset(s, 0, sizeof(*s));
}

/* The next request on the connection starts: everything but the count is per request. */
static void scan__next(struct framing_scan *s, size_t off)
{
    uint64_t n = s->requests, c = s->complete + 1, el = s->cl_end_len;
    size_t e = s->cl_end;
    memset(s, 0, sizeof(*s));
    s->requests = n;
    s->complete = c;
    s->msg_off = off;
    s->cl_end = e;
    s->cl_end_len = el;
}

static bool scan__refuse(struct framing_scan *s, unsigned status, const char *why)
{
    s->st = S_REFUSED;
    s->status = status;
    s->why = why;
    return false;
}

/* RFC 9110 5.6.2 tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~ (a bit per byte) */
static const uint32_t scan__tchars[8] = {0, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};

static bool scan__tchar(unsigned char b)
{
    return (scan__tchars[b >> 5] >> (b & 31)) & 1u;
}

static bool scan__hex(unsigned char b, unsigned *d)
{
    if (b >= '0' && b <= '9')
        *d = b - '0';
    else if ((b | 0x20) >= 'a' && (b | 0x20) <= 'f')
        *d = (unsigned)(b | 0x20) - 'a' + 10;
    else
        return false;
    return true;
}

/* Adds to the head's cost; false when it is past the limits (then refused). */
static bool scan__cost(struct framing_scan *s, unsigned n)
{
    s->cost += n;
    if (s->trailer)
        s->trailer_cost += n;
    if (s->cost > FRAMING_HEAD_MAX || s->trailer_cost > FRAMING_TRAILER_MAX)
        return scan__refuse(s, 431,
                            s->trailer ? "the request's trailer section is too large"
                                       : "the request's header fields are too large");
    return true;
}

/* A field name is complete (at its colon): which field it is. */
static bool scan__name(struct framing_scan *s)
{
    s->hdr = HDR_OTHER;
    if (!scan__cost(s, FRAMING_RECORD_COST))
        return false;
    if (s->trailer)
        return true; /* trailers do not frame the request */
    size_t n = s->name_n;
    if (framing__is(s->name, n, "Content-Length")) {
        s->hdr = HDR_CL;
        s->f.n_clen++;
        s->cl_st = 0;
        s->clen = 0;
    } else if (framing__is(s->name, n, "Transfer-Encoding")) {
        s->hdr = HDR_TE;
        s->te_i = 0;
        s->te_other = false;
    } else if (framing__is(s->name, n, "Host")) {
        s->hdr = HDR_HOST;
        s->f.n_host++;
    } else if (framing__is(s->name, n, "Cookie")) {
        s->hdr = HDR_COOKIE; /* libmicrohttpd copies it and keeps a record per cookie */
        return scan__cost(s, FRAMING_RECORD_COST);
    }
    return true;
}

/* One byte of a field value (CR, LF and NUL excluded). */
static bool scan__value(struct framing_scan *s, unsigned char b)
{
    bool ws = b == ' ' || b == '\t';
    switch (s->hdr) {
    case HDR_CL: /* OWS digits OWS */
        if (ws) {
            if (s->cl_st == 1)
                s->cl_st = 2;
        } else if (b >= '0' && b <= '9' && s->cl_st < 2) {
            s->cl_st = 1;
            if (s->clen > (UINT64_MAX - (b - '0')) / 10)
                s->cl_over = true;
            else
                s->clen = s->clen * 10 + (b - '0');
        } else {
            s->cl_bad = true;
        }
        return true;
    case HDR_TE: { /* OWS "chunked" OWS, any case; te_i 8: trailing OWS */
        static const char ch[] = "chunked";
        if (ws) {
            if (s->te_i == 7)
                s->te_i = 8;
            else if (s->te_i != 0 && s->te_i != 8)
                s->te_other = true;
        } else if (s->te_i < 7 && (b | 0x20) == ch[s->te_i]) {
            s->te_i++;
        } else {
            s->te_other = true;
        }
        return true;
    }
    case HDR_COOKIE:
        return scan__cost(s, b == ';' || b == ',' ? FRAMING_RECORD_COST + 1 : 1);
    default:
        return true;
    }
}

/* A field line is complete (its LF). */
static void scan__field_end(struct framing_scan *s)
{
    if (s->hdr == HDR_CL && s->cl_st == 0)
        s->cl_bad = true; /* empty */
    else if (s->hdr == HDR_TE) {
        s->f.n_te++;
        s->f.te_chunked = !s->te_other && s->te_i >= 7;
    }
}

/* The head is complete (the empty line's LF): the verdict, then the body's framing. */
static bool scan__head_end(struct framing_scan *s, size_t off)
{
    const char *why = framing_verdict(&s->f, s->http11);
    if (why)
        return scan__refuse(s, 400, why);
    if (s->http10 && s->f.n_te)
        return scan__refuse(s, 400, "Transfer-Encoding on an HTTP/1.0 request");
    if (s->f.n_clen && s->cl_bad)
        return scan__refuse(s, 400, "Content-Length is not a decimal number");
    /* 2^64 - 1 too: libmicrohttpd 0.9.75 takes it for MHD_SIZE_UNKNOWN (no length) and would
     * read a body without end */
    if (s->f.n_clen && (s->cl_over || s->clen == UINT64_MAX))
        return scan__refuse(s, 413, "Content-Length is 2^64 - 1 or larger");
    s->requests++;
    if (s->f.n_te) {
        s->st = S_CHUNK_SIZE;
        s->line = 0;
        s->left = 0;
        s->chunk_digit = false;
    } else if (s->f.n_clen && s->clen > 0) {
        s->st = S_BODY;
        s->left = s->clen;
    } else {
        scan__next(s, off);
    }
    return true;
}

bool framing_scan(struct framing_scan *s, const void *buf, size_t n)
{
    const unsigned char *p = buf, *end = p + n;
    uint64_t complete0 = s->complete;
    if (s->st != S_REFUSED)
        s->msg_off = 0;
    s->cl_end = 0;
    while (p < end) {
        if (s->st == S_REFUSED)
            return false;
        if (s->st == S_BODY || s->st == S_DATA) { /* bulk */
            size_t take = (size_t)(end - p) < s->left ? (size_t)(end - p) : (size_t)s->left;
            p += take;
            s->left -= take;
            if (s->left == 0) {
                if (s->st == S_BODY) {
                    size_t off = (size_t)(p - (const unsigned char *)buf);
                    if (s->complete == complete0) { /* the first request to end here */
                        s->cl_end = off;
                        s->cl_end_len = s->clen;
                    }
                    scan__next(s, off);
                } else
                    s->st = S_DATA_CR;
            }
            continue;
        }
        if (s->st == S_VALUE && (s->hdr == HDR_OTHER || s->hdr == HDR_HOST)) {
            /* most of a head's bytes: a value no framing reads, up to its CR */
            const unsigned char *q = p;
            while (q < end && *q != '\r' && *q != '\n' && *q != '\0')
                q++;
            if (q > p) {
                if (!scan__cost(s, (unsigned)(q - p)))
                    return false;
                p = q;
                continue;
            }
        }
        unsigned char b = *p++;
        bool head = s->st <= S_END_LF;
        if (head && !scan__cost(s, 1))
            return false;
        if (s->st <= S_VERSION && b != '\r' && ++s->line > FRAMING_LINE_MAX)
            return scan__refuse(s, 414, "the request line is longer than 8192 bytes");
        if (b == '\n' && s->st != S_START_LF && s->st != S_RL_LF && s->st != S_VALUE_LF &&
            s->st != S_END_LF && s->st != S_CHUNK_LF && s->st != S_DATA_LF)
            return scan__refuse(s, 400, "a line ends in a bare LF (CRLF needed)");
        switch (s->st) {
        case S_START:
            if (b == '\r') {
                s->st = S_START_LF;
            } else if (scan__tchar(b)) {
                s->st = S_METHOD;
            } else {
                return scan__refuse(s, 400,
                                    b == '\n' ? "a line ends in a bare LF (CRLF needed)"
                                              : "the request method is not a token");
            }
            break;
        case S_START_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "a CR not followed by LF");
            s->st = S_START;
            s->line = 0;
            break;
        case S_METHOD:
            if (b == ' ')
                s->st = S_TARGET;
            else if (!scan__tchar(b))
                return scan__refuse(s, 400,
                                    b == '\r'
                                        ? "malformed request line (method SP target SP HTTP/1.x)"
                                        : "the request method is not a token");
            break;
        case S_TARGET:
            if (b == ' ' && s->name_n) {
                s->st = S_VERSION;
                s->name_n = 0;
                break;
            }
            if (b <= ' ' || b == 0x7f)
                return scan__refuse(s, 400,
                                    "malformed request line (method SP target SP HTTP/1.x)");
            s->name_n = 1; /* the target is not empty */
            if (b == '?' && !s->in_query) {
                s->in_query = true; /* libmicrohttpd keeps a record per argument */
                if (!scan__cost(s, FRAMING_RECORD_COST))
                    return false;
            } else if (b == '&' && s->in_query && !scan__cost(s, FRAMING_RECORD_COST)) {
                return false;
            }
            break;
        case S_VERSION:
            if (b == '\r') {
                const char *v = s->name;
                if (s->name_n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
                    v[6] != '.' || v[7] < '0' || v[7] > '9')
                    return scan__refuse(s, 400, "malformed HTTP version");
                if (v[5] != '1')
                    return scan__refuse(s, 505, "only HTTP/1.x is supported");
                s->http10 = v[7] == '0';
                s->http11 = !s->http10;
                s->st = S_RL_LF;
            } else if (b == ' ') {
                return scan__refuse(s, 400,
                                    "malformed request line (method SP target SP HTTP/1.x)");
            } else if (s->name_n == 8 || b < ' ' || b >= 0x7f) {
                return scan__refuse(s, 400, "malformed HTTP version");
            } else {
                s->name[s->name_n++] = (char)b;
            }
            break;
        case S_RL_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "a CR not followed by LF");
            s->st = S_FIELD;
            break;
        case S_FIELD:
            s->name_n = 0;
            if (b == '\r') {
                s->st = S_END_LF;
            } else if (scan__tchar(b)) {
                s->name[s->name_n++] = (char)b;
                s->st = S_NAME;
            } else if (b == ' ' || b == '\t') {
                return scan__refuse(s, 400,
                                    "a header line starts with a space (obs-fold is refused)");
            } else if (b == '\n') {
                return scan__refuse(s, 400, "a line ends in a bare LF (CRLF needed)");
            } else {
                return scan__refuse(s, 400,
                                    b == ':' ? "a header name is empty"
                                             : "a header name contains a byte that is "
                                               "not a token character");
            }
            break;
        case S_NAME:
            if (b == ':') {
                if (!scan__name(s))
                    return false;
                s->st = S_VALUE;
            } else if (scan__tchar(b)) {
                if (s->name_n < sizeof(s->name))
                    s->name[s->name_n++] = (char)b; /* longer: not a name framing reads */
            } else {
                return scan__refuse(s, 400,
                                    "a header name contains a byte that is not a token character");
            }
            break;
        case S_VALUE:
            if (b == '\r')
                s->st = S_VALUE_LF;
            else if (b == '\n')
                return scan__refuse(s, 400, "a line ends in a bare LF (CRLF needed)");
            else if (b == '\0')
                return scan__refuse(s, 400, "a header contains a NUL byte");
            else if (!scan__value(s, b))
                return false;
            break;
        case S_VALUE_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "a header value contains CR or LF");
            scan__field_end(s);
            s->st = S_FIELD;
            break;
        case S_END_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "a CR not followed by LF");
            if (s->trailer)
                scan__next(s, (size_t)(p - (const unsigned char *)buf));
            else if (!scan__head_end(s, (size_t)(p - (const unsigned char *)buf)))
                return false;
            break;
        case S_CHUNK_SIZE:
        case S_CHUNK_EXT: {
            unsigned d;
            if (++s->line > FRAMING_CHUNK_LINE_MAX)
                return scan__refuse(s, 400, "a chunk-size line is longer than 1024 bytes");
            if (b == '\r' && s->chunk_digit) {
                s->st = S_CHUNK_LF;
            } else if (s->st == S_CHUNK_EXT) {
                if ((b < ' ' && b != '\t') || b == 0x7f)
                    return scan__refuse(s, 400, "a control byte in a chunk extension");
            } else if (b == ';' && s->chunk_digit) {
                s->st = S_CHUNK_EXT;
            } else if (scan__hex(b, &d)) {
                if (s->left > (UINT64_MAX >> 4))
                    return scan__refuse(s, 413, "a chunk size is larger than 2^64 - 1");
                s->left = (s->left << 4) | d;
                s->chunk_digit = true;
            } else {
                return scan__refuse(s, 400, "malformed chunk size (hex digits, then CRLF)");
            }
            break;
        }
        case S_CHUNK_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "a CR not followed by LF");
            if (s->left == 0) {
                s->trailer = true;
                s->st = S_FIELD;
            } else {
                s->st = S_DATA;
            }
            break;
        case S_DATA_CR:
            if (b != '\r')
                return scan__refuse(s, 400, "chunk data is not followed by CRLF");
            s->st = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (b != '\n')
                return scan__refuse(s, 400, "chunk data is not followed by CRLF");
            s->st = S_CHUNK_SIZE;
            s->line = 0;
            s->chunk_digit = false;
            break;
        default:
            return false;
        }
    }
    return s->st != S_REFUSED;
}

uint64_t framing_scan_body_left(const struct framing_scan *s)
{
    return s->st == S_BODY ? s->left : 0;
}

bool framing_scan_in_head(const struct framing_scan *s)
{
    return s->st <= S_END_LF;
}

bool framing_http11(const char *version)
{
    return version && strncmp(version, "HTTP/1.", 7) == 0 && version[7] >= '1' &&
           version[7] <= '9' && version[8] == '\0';
}
