/* sse.c — see sse.h. Line ends per the WHATWG SSE grammar: CRLF, LF or CR. */
#include "core/sse.h"

void sse_scan_init(struct sse_scan *s)
{
    s->cr = 0;
    s->bol = 1;
    s->comment = 0;
    s->has_field = 0;
}

size_t sse_scan_feed(struct sse_scan *s, const char *p, size_t n)
{
    size_t events = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n' && s->cr) { /* second half of CRLF: already counted */
            s->cr = 0;
            continue;
        }
        s->cr = (c == '\r');
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
            continue;
        }
        if (s->bol) {
            s->comment = (c == ':');
            s->bol = 0;
        }
    }
    return events;
}
