/* guard_bench — what the front door's connection table costs a newcomer when it is full, as the
 * table grows: N connections open, then M newcomers, each either refused (every connection
 * busy with a request: 503) or making room (every connection idle: the oldest evicted).
 * Prints ns per newcomer for each N. The connections have no socket (descriptor -1: the
 * guard's replies and shutdowns fail harmlessly), so only the table's own work is measured.
 *
 *   guard_bench [--newcomers M] [N ...]      (default N: 1000 8000 64000; M: 2000)
 */
#include "http/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ns per newcomer with n connections in `phase`, m newcomers. */
static double run(unsigned n, unsigned m, enum guard_phase phase)
{
    struct guard_limits l = {
        .header_ms = 600000, .body_ms = 600000, .keepalive_ms = 600000, .max_conns = n};
    struct guard *g = guard_new(&l);
    struct guard_conn **c = calloc((size_t)n + m, sizeof(*c));
    if (!g || !c) {
        fprintf(stderr, "guard_bench: out of memory\n");
        exit(1);
    }
    uint64_t seq = 1;
    for (unsigned i = 0; i < n; i++) {
        c[i] = guard_open(g, -1, 0, seq++);
        if (!c[i] || !guard_enter(c[i], phase)) {
            fprintf(stderr, "guard_bench: cannot fill the table\n");
            exit(1);
        }
    }
    double t0 = now_ns();
    for (unsigned i = 0; i < m; i++) {
        struct guard_conn *x = guard_open(g, -1, 0, seq++);
        if (phase == G_IDLE) {
            /* it evicted the oldest idle one; this one goes idle too (the table stays full
             * of idle connections), the evicted one is closed */
            guard_enter(x, G_IDLE);
            c[n + i] = x;
            guard_close(g, c[i]);
            c[i] = NULL;
        } else {
            guard_close(g, x); /* refused */
        }
    }
    double per = (now_ns() - t0) / m;
    for (unsigned i = 0; i < n + m; i++)
        if (c[i])
            guard_close(g, c[i]);
    free(c);
    guard_free(g);
    return per;
}

int main(int argc, char **argv)
{
    unsigned m = 2000, ns[16], k = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--newcomers") && i + 1 < argc)
            m = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (k < 16)
            ns[k++] = (unsigned)strtoul(argv[i], NULL, 10);
    }
    if (!k) {
        ns[k++] = 1000;
        ns[k++] = 8000;
        ns[k++] = 64000;
    }
    printf("%10s %18s %18s\n", "table", "refused ns/newcomer", "evicting ns/newcomer");
    for (unsigned i = 0; i < k; i++)
        printf("%10u %18.0f %18.0f\n", ns[i], run(ns[i], m, G_BUSY), run(ns[i], m, G_IDLE));
    return 0;
}
