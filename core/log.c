/* log.c — see log.h. A single write(2) per line keeps lines from different threads whole. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set by a reload on one thread while every thread reads it: an atomic, read relaxed (a line
 * written or dropped just around a level change is either way right). */
static atomic_int log_max = LOG_INFO;
static const char *const log_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_max, (int)level, memory_order_relaxed);
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (int i = 0; i <= LOG_DEBUG; i++) {
        if (strcmp(name, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    int k = snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000L,
                     log_names[level]);
    if (k > 0)
        n += (size_t)k;
    k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (k > 0)
        n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
    while (n > 0 && line[n - 1] == '\n')
        n--; /* libmicrohttpd's messages end with one */
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
