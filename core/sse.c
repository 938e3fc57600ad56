/* sse.c — see sse.h. Line ends per the WHATWG SSE grammar: CRLF, LF or CR. */
#include "core/sse.h"

#include <string.h>

void sse_scan_init(struct sse_scan *s)
{
    s->cr = 0;
    s->bol = 1;
    s->comment = 0;
    s->has_field = 0;
}

/* Per byte only where a line starts or ends; the rest of a line (an event's JSON, the bulk of
 * a stream) is skipped with memchr. */
size_t sse_scan_feed(struct sse_scan *s, const char *p, size_t n)
{
    size_t events = 0, i = 0;
    while (i < n) {
        char c = p[i];
        if (s->cr) { /* the LF of a CRLF whose CR ended the previous line */
            s->cr = 0;
            if (c == '\n') {
                i++;
                continue;
            }
        }
        if (c == '\n' || c == '\r') {
            if (s->bol) { /* empty line: dispatch */
                if (s->has_field)
                    events++;
                s->has_field = 0;
            } else if (!s->comment) {
                s->has_field = 1;
            }
            s->bol = 1;
            s->comment = 0;
            s->cr = (c == '\r');
            i++;
            continue;
        }
        if (s->bol) {
            s->comment = (c == ':');
            s->bol = 0;
        }
        const char *lf = memchr(p + i, '\n', n - i);
        size_t end = lf ? (size_t)(lf - p) : n;
        const char *cr = memchr(p + i, '\r', end - i);
        i = cr ? (size_t)(cr - p) : end;
    }
    return events;
}
