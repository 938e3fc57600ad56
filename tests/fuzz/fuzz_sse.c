/* libFuzzer target for core/sse.c, the incremental SSE event counter: invariants, not just
 * "no crash".
 *
 * Input: byte 0 = k (low 4 bits), then k 16-bit little-endian gaps (split points, each from
 * the previous one, taken modulo what is left), then the stream. Seeds in corpus/sse start
 * with "\0" (no splits) or a few gaps, followed by a real stream.
 *
 * For every stream:
 *   (a) fed whole, byte at a time, or in the pieces the split points give, sse_scan_feed
 *       returns the same total and ends in the same state; in every piece it reports exactly
 *       the events an independent byte-at-a-time reference (below, written from the WHATWG
 *       grammar) completes there, and after every piece its state equals the reference's;
 *   (b) a piece of 0 bytes completes nothing and changes nothing;
 *   (c) appending "\n\n" completes at most one more event: exactly one when the reference has
 *       a pending non-comment line or a block with a field, else none; "\n\n\n\n" no more
 *       than "\n\n"; after that the scanner is at the start of a line with an empty block;
 *   (d) the count is at most the number of line ends / 2 (an event needs a field line and an
 *       empty line). */
#include "core/sse.h"

#include "tests/fuzz/fuzz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPLITS 15

/* The reference: WHATWG "interpreting an event stream", reduced to what the counter needs.
 * A line ends at CRLF, LF or CR; an empty line dispatches the block if the block had a line
 * that is not a comment (a comment line starts with ':'). */
struct ref {
    int after_cr;     /* the previous byte was a CR: an LF now belongs to it */
    size_t line_len;  /* bytes of the current line so far */
    int line_comment; /* its first byte is ':' */
    int block_field;  /* the block has a completed non-comment line */
    size_t events;
    size_t line_ends;
};

static void ref_line_end(struct ref *r)
{
    r->line_ends++;
    if (r->line_len == 0) {
        if (r->block_field)
            r->events++;
        r->block_field = 0;
    } else if (!r->line_comment) {
        r->block_field = 1;
    }
    r->line_len = 0;
    r->line_comment = 0;
}

static void ref_byte(struct ref *r, unsigned char c)
{
    if (c == '\n' && r->after_cr) {
        r->after_cr = 0;
        return;
    }
    r->after_cr = 0;
    if (c == '\r' || c == '\n') {
        ref_line_end(r);
        r->after_cr = c == '\r';
        return;
    }
    if (r->line_len == 0)
        r->line_comment = c == ':';
    r->line_len++;
}

/* The scanner's state as the reference sees it. */
static void same_state(const struct sse_scan *s, const struct ref *r)
{
    CHECK(s->cr == (r->after_cr ? 1 : 0));
    CHECK(s->bol == (r->line_len == 0 ? 1 : 0));
    CHECK(s->comment == (r->line_len > 0 && r->line_comment ? 1 : 0));
    CHECK(s->has_field == (r->block_field ? 1 : 0));
}

static int state_eq(const struct sse_scan *a, const struct sse_scan *b)
{
    return a->cr == b->cr && a->bol == b->bol && a->comment == b->comment &&
           a->has_field == b->has_field;
}

/* Feeds p[0..n) to a fresh scanner in pieces ending at cuts[0..k) (ascending, <= n) and then
 * at n, checking each piece against the reference. Returns the total; *out gets the state. */
static size_t feed_pieces(const char *p, size_t n, const size_t *cuts, size_t k,
                          struct sse_scan *out)
{
    struct sse_scan s;
    struct ref r = {0};
    size_t total = 0, at = 0;
    sse_scan_init(&s);
    same_state(&s, &r);
    for (size_t j = 0; j <= k; j++) {
        size_t end = j < k ? cuts[j] : n;
        CHECK(end >= at && end <= n);
        size_t before = r.events;
        for (size_t i = at; i < end; i++)
            ref_byte(&r, (unsigned char)p[i]);
        /* a private copy of the piece: reading outside it is an ASan report */
        char *piece = malloc(end - at ? end - at : 1);
        CHECK(piece);
        memcpy(piece, p + at, end - at);
        size_t got = sse_scan_feed(&s, piece, end - at);
        free(piece);
        CHECK(got == r.events - before);
        same_state(&s, &r);
        total += got;
        at = end;
    }
    CHECK(total == r.events);
    *out = s;
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t k = data[0] & MAX_SPLITS, pos = 1;
    uint16_t gaps[MAX_SPLITS];
    size_t ng = 0;
    while (ng < k && pos + 2 <= size) {
        gaps[ng++] = (uint16_t)(data[pos] | data[pos + 1] << 8);
        pos += 2;
    }
    const char *p = (const char *)data + pos;
    size_t n = size - pos;

    /* the reference over the whole stream */
    struct ref r = {0};
    for (size_t i = 0; i < n; i++)
        ref_byte(&r, (unsigned char)p[i]);

    /* (a) whole */
    struct sse_scan whole, s;
    size_t ev = feed_pieces(p, n, NULL, 0, &whole);
    CHECK(ev == r.events);
    same_state(&whole, &r);

    /* (a) at the fuzzer's split points */
    size_t cuts[MAX_SPLITS], at = 0;
    for (size_t j = 0; j < ng; j++) {
        at += n - at ? gaps[j] % (n - at + 1) : 0;
        cuts[j] = at;
    }
    CHECK(feed_pieces(p, n, cuts, ng, &s) == ev && state_eq(&s, &whole));

    /* (a) byte at a time (every position a split), for streams short enough to be cheap */
    if (n <= 4096) {
        struct sse_scan b;
        sse_scan_init(&b);
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += sse_scan_feed(&b, p + i, 1);
        CHECK(total == ev && state_eq(&b, &whole));
    }

    /* (b) */
    s = whole;
    CHECK(sse_scan_feed(&s, p, 0) == 0 && state_eq(&s, &whole));

    /* (c) */
    size_t expect = r.block_field || (r.line_len > 0 && !r.line_comment);
    s = whole;
    size_t more = sse_scan_feed(&s, "\n\n", 2);
    CHECK(more <= 1 && more == expect);
    CHECK(s.bol && !s.has_field && !s.comment);
    s = whole;
    CHECK(sse_scan_feed(&s, "\n\n\n\n", 4) == more);
    s = whole;
    CHECK(sse_scan_feed(&s, "\r\n\r\n", 4) == more);

    /* (d) */
    CHECK(2 * ev <= r.line_ends);
    return 0;
}
