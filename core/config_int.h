/* config_int.h — what the files of the config module share (config.c, config_rows.c,
 * config_keys.c, config_dump.c); not for use outside core/config*.c. */
#ifndef LG_CONFIG_INT_H
#define LG_CONFIG_INT_H

#include "core/config.h"

enum cfg_type {
    CT_UINT,
    CT_SIZE,
    CT_STR,
    CT_BOOL,
    CT_LISTEN,
    CT_LEVEL,
    CT_URL,    /* http(s)://host..., stored without trailing '/' */
    CT_LIST,   /* struct cfg_list */
    CT_SECRET, /* a string the dump masks */
    CT_SHA256, /* 64 hex digits into struct cfg_key's sha256 */
    CT_PRIO,   /* high | normal | low */
};

struct cfg_row {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;
    uint64_t min, max;
    const char *def;
    const char *help;
};

/* The fixed keys, the keys of a [backend.NAME] and of a [key.NAME] section (config_rows.c). */
extern const struct cfg_row cfg__rows[];
extern const struct cfg_row cfg__backend_rows[];
extern const struct cfg_row cfg__key_rows[];
extern const size_t cfg__n_rows, cfg__n_backend_rows, cfg__n_key_rows;
#define N_ROWS cfg__n_rows
#define N_BACKEND_ROWS cfg__n_backend_rows
#define N_KEY_ROWS cfg__n_key_rows

#define CFG_MAX_SECTION 49 /* libinih's MAX_SECTION - 1 */

/* Appends a message to errs (dropped when out of memory). config.c. */
void cfg__err(struct config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Stores `value` into the field of `row` in `base` (the config, a backend or a key). On a bad
 * value, writes why into `why` and returns -1. config_rows.c. */
int cfg__set(struct config *cfg, void *base_, const struct cfg_row *row, const char *value,
             char *why, size_t whylen);

/* Frees what the rows of `rows` allocated in `base`. config_rows.c. */
void cfg__rows_free(void *base, const struct cfg_row *rows, size_t n);

/* Builds the keys' index and reports the keys that share a value (config_keys.c). Called
 * once by validation, after every key's key_len is set. */
void cfg__index_keys(struct config *cfg, struct config_errors *errs);

#endif
