/* log.h — one-line-per-event logging to stderr; any thread. */
#ifndef LG_LOG_H
#define LG_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Sets the most verbose level that is written. Any thread (a reload sets it). */
void log_set_level(enum log_level level);

/* Parses "error", "warn", "info", "debug"; returns 0 and sets *out, or -1. */
int log_parse_level(const char *name, enum log_level *out);

/* Returns non-zero when messages at `level` are written. */
int log_enabled(enum log_level level);

/* Writes one line: timestamp, level, message. Lines longer than 1 KiB are cut. */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Same with a va_list. */
void log_vwrite(enum log_level level, const char *fmt, va_list ap);

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_INFO))                                                                 \
            log_write(LOG_INFO, __VA_ARGS__);                                                      \
    } while (0)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
