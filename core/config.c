/* config.c — see config.h. */
#include "core/config.h"

#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum cfg_type { CT_UINT, CT_SIZE, CT_STR, CT_BOOL, CT_LISTEN, CT_LEVEL };

struct cfg_row {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;
    uint64_t min, max;
    const char *def;
    const char *help;
};

#define F(field) offsetof(struct config, field)

/* The fixed keys. Dynamic sections ([keys], [backend.NAME]) are handled below the table. */
static const struct cfg_row cfg_rows[] = {
    {"server", "listen", CT_LISTEN, F(listen), 0, 0, "127.0.0.1:8080", "host:port to serve on"},
    {"server", "max_body_bytes", CT_SIZE, F(max_body_bytes), 1024, 1ull << 30, "10485760",
     "larger request bodies get 413"},
    {"server", "max_body_memory", CT_SIZE, F(max_body_memory), 1024, 1ull << 40, "536870912",
     "bytes all request bodies in flight may hold together; beyond -> 503 overloaded"},
    {"server", "threads", CT_UINT, F(threads), 1, 256, "2", "libmicrohttpd connection threads"},
    {"server", "workers", CT_UINT, F(workers), 0, 256, "0",
     "inference workers (curl multi loops); 0 = number of cores"},
    {"server", "max_connections", CT_UINT, F(max_connections), 16, 1000000, "8192",
     "open client connections; RLIMIT_NOFILE is raised to fit"},
    {"server", "max_connections_per_ip", CT_UINT, F(max_connections_per_ip), 0, 1000000, "0",
     "open connections from one client address; more are closed at accept; 0 = no limit"},
    {"server", "client_header_timeout_s", CT_UINT, F(client_header_timeout_s), 1, 3600, "60",
     "request line and headers, from the request's first byte; expiry -> 408, close"},
    {"server", "client_body_timeout_s", CT_UINT, F(client_body_timeout_s), 1, 3600, "60",
     "between two reads of a request body; expiry -> 408, close"},
    {"server", "keepalive_timeout_s", CT_UINT, F(keepalive_timeout_s), 1, 3600, "75",
     "an idle keep-alive connection is closed after this"},
    {"server", "stream_buffer_bytes", CT_SIZE, F(stream_buffer_bytes), 16384, 16ull << 20, "65536",
     "per-request buffer between engine and client; full = engine paused"},
    {"timeouts", "connect_ms", CT_UINT, F(connect_ms), 1, 600000, "5000", "upstream connect"},
    {"timeouts", "request_s", CT_UINT, F(request_s), 1, 86400, "60",
     "queueing + the engine's first byte + a whole non-stream answer; streams that keep "
     "flowing are never cut, one silent for request_s ends; expiry -> 504"},
    {"timeouts", "drain_s", CT_UINT, F(drain_s), 0, 3600, "10",
     "on SIGTERM: how long open requests may finish before they are cut"},
    {"limits", "max_inflight", CT_UINT, F(max_inflight), 1, 1000000, "100",
     "requests holding an upstream slot, gateway-wide"},
    {"limits", "queue_capacity", CT_UINT, F(queue_capacity), 0, 1000000, "1024",
     "waiting requests, gateway-wide; beyond -> 503 queue_full"},
    {"limits", "queue_timeout_ms", CT_UINT, F(queue_timeout_ms), 1, 3600000, "30000",
     "longest wait for a slot; expiry -> 503 queue_timeout"},
    {"health", "interval_ms", CT_UINT, F(health_interval_ms), 0, 3600000, "5000",
     "active probe of each backend (GET url/v1/models); 0 = off"},
    {"log", "level", CT_LEVEL, F(log_level), 0, 0, "info", "error, warn, info or debug"},
    {"log", "access", CT_BOOL, F(access_log), 0, 0, "false", "one line per finished request"},
};
#define N_ROWS (sizeof(cfg_rows) / sizeof(cfg_rows[0]))

static const char *const backend_keys[] = {"url", "models", "max_concurrency", "api_key"};

struct cfg_parse {
    struct config *cfg;
    struct config_errors *errs;
    const char *file;
    int line;
    const char *text; /* string source */
    size_t pos;
    FILE *fp;
    int line_error;   /* line of the last error we recorded */
    int section_line; /* line of the last [section] header */
};

static void cfg__err(struct config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void cfg__err(struct config_errors *errs, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char **m = realloc(errs->msgs, (errs->n + 1) * sizeof(*m));
    if (!m)
        return;
    errs->msgs = m;
    m[errs->n] = strdup(msg);
    if (m[errs->n])
        errs->n++;
}

void config_errors_release(struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = 0;
}

/* Parses a whole unsigned decimal number. */
static int cfg__parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Splits "host:port" / "[v6]:port". Returns 0 and allocates *host. */
static int cfg__parse_listen(const char *s, char **host, unsigned *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
    }
    uint64_t p;
    if (hlen == 0 || cfg__parse_u64(colon + 1, &p) != 0 || p > 65535)
        return -1;
    *host = strndup(h, hlen);
    if (!*host)
        return -1;
    *port = (unsigned)p;
    return 0;
}

/* Stores `value` into the field of `row`. On a bad value, writes why into `why`. */
static int cfg__set(struct config *cfg, const struct cfg_row *row, const char *value, char *why,
                    size_t whylen)
{
    char *base = (char *)cfg + row->offset;
    uint64_t v;
    switch (row->type) {
    case CT_UINT:
    case CT_SIZE:
        if (cfg__parse_u64(value, &v) != 0) {
            snprintf(why, whylen, "'%s' is not a non-negative integer", value);
            return -1;
        }
        if (v < row->min || v > row->max) {
            snprintf(why, whylen, "%llu is out of range [%llu, %llu]", (unsigned long long)v,
                     (unsigned long long)row->min, (unsigned long long)row->max);
            return -1;
        }
        if (row->type == CT_UINT)
            *(unsigned *)(void *)base = (unsigned)v;
        else
            *(uint64_t *)(void *)base = v;
        return 0;
    case CT_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "on") ||
            !strcmp(value, "1")) {
            *(bool *)(void *)base = true;
        } else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "off") ||
                   !strcmp(value, "0")) {
            *(bool *)(void *)base = false;
        } else {
            snprintf(why, whylen, "'%s' is not a boolean (true/false)", value);
            return -1;
        }
        return 0;
    case CT_LEVEL: {
        enum log_level lv;
        if (log_parse_level(value, &lv) != 0) {
            snprintf(why, whylen, "'%s' is not one of error, warn, info, debug", value);
            return -1;
        }
    }
        /* fall through */
    case CT_STR:
    case CT_LISTEN: {
        char *host = NULL;
        unsigned port = 0;
        if (row->type == CT_LISTEN && cfg__parse_listen(value, &host, &port) != 0) {
            snprintf(why, whylen, "'%s' is not host:port", value);
            return -1;
        }
        char *copy = strdup(value);
        if (!copy) {
            free(host);
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        char **slot = (char **)(void *)base;
        free(*slot);
        *slot = copy;
        if (row->type == CT_LISTEN) {
            free(cfg->listen_host);
            cfg->listen_host = host;
            cfg->listen_port = port;
        }
        return 0;
    }
    }
    return -1;
}

static const struct cfg_row *cfg__row(const char *section, const char *name)
{
    for (size_t i = 0; i < N_ROWS; i++)
        if (!strcmp(cfg_rows[i].section, section) && !strcmp(cfg_rows[i].name, name))
            return &cfg_rows[i];
    return NULL;
}

static struct cfg_backend *cfg__backend(struct config *cfg, const char *name, int line)
{
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (!strcmp(cfg->backends[i].name, name))
            return &cfg->backends[i];
    struct cfg_backend *b = realloc(cfg->backends, (cfg->n_backends + 1) * sizeof(*b));
    if (!b)
        return NULL;
    cfg->backends = b;
    b = &cfg->backends[cfg->n_backends];
    memset(b, 0, sizeof(*b));
    b->name = strdup(name);
    if (!b->name)
        return NULL;
    b->max_concurrency = 4;
    b->line = line;
    b->index = (unsigned)cfg->n_backends++;
    return b;
}

static void cfg__free_models(struct cfg_backend *b)
{
    for (size_t i = 0; i < b->n_models; i++)
        free(b->models[i]);
    free(b->models);
    b->models = NULL;
    b->n_models = 0;
}

/* "a, b ,c" -> models. */
static int cfg__set_models(struct cfg_backend *b, const char *value, char *why, size_t whylen)
{
    cfg__free_models(b);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start)
            continue;
        for (const char *c = start; c < end; c++) {
            if ((unsigned char)*c < ' ' || *c == 0x7f) {
                /* libinih trims such bytes at a line's end: the dump would not load back the
                 * same id, and no client would mean one */
                snprintf(why, whylen, "model '%.*s' has a control byte", (int)(end - start), start);
                return -1;
            }
        }
        char **m = realloc(b->models, (b->n_models + 1) * sizeof(*m));
        if (!m)
            goto nomem;
        b->models = m;
        m[b->n_models] = strndup(start, (size_t)(end - start));
        if (!m[b->n_models])
            goto nomem;
        b->n_models++;
    }
    return 0;
nomem:
    snprintf(why, whylen, "out of memory");
    return -1;
}

static int cfg__set_backend(struct cfg_backend *b, const char *name, const char *value, char *why,
                            size_t whylen)
{
    if (!strcmp(name, "url")) {
        if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) {
            snprintf(why, whylen, "url '%s' must start with http:// or https://", value);
            return -1;
        }
        size_t scheme = value[4] == 's' ? 8 : 7;
        if (value[scheme] == '\0' || value[scheme] == '/') {
            snprintf(why, whylen, "url '%s' has no host", value);
            return -1;
        }
        for (const char *c = value; *c; c++) {
            if ((unsigned char)*c <= ' ' || *c == 0x7f) {
                /* curl refuses such a url on every request; the dump would lose a blank */
                snprintf(why, whylen, "url '%s' has a blank or a control byte", value);
                return -1;
            }
        }
        size_t len = strlen(value);
        while (len > 0 && value[len - 1] == '/')
            len--; /* stops at the host */
        char *u = strndup(value, len);
        if (!u)
            return -1;
        free(b->url);
        b->url = u;
        return 0;
    }
    if (!strcmp(name, "models"))
        return cfg__set_models(b, value, why, whylen);
    if (!strcmp(name, "max_concurrency")) {
        uint64_t v;
        if (cfg__parse_u64(value, &v) != 0 || v < 1 || v > 1000000) {
            snprintf(why, whylen, "max_concurrency '%s' is not an integer in [1, 1000000]", value);
            return -1;
        }
        b->max_concurrency = (unsigned)v;
        return 0;
    }
    if (!strcmp(name, "api_key")) {
        char *k = strdup(value);
        if (!k)
            return -1;
        free(b->api_key);
        b->api_key = k;
        return 0;
    }
    snprintf(why, whylen,
             "unknown key '%s' in a backend section (known: url, models, "
             "max_concurrency, api_key)",
             name);
    return -1;
}

static int cfg__add_key(struct config *cfg, const char *name, const char *value, char *why,
                        size_t whylen)
{
    if (!*value) {
        snprintf(why, whylen, "API key '%s' is empty", name);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (!strcmp(cfg->keys[i].name, name)) {
            snprintf(why, whylen, "API key name '%s' is defined twice", name);
            return -1;
        }
        if (!strcmp(cfg->keys[i].key, value)) {
            snprintf(why, whylen, "keys '%s' and '%s' have the same value", cfg->keys[i].name,
                     name);
            return -1;
        }
    }
    struct cfg_key *k = realloc(cfg->keys, (cfg->n_keys + 1) * sizeof(*k));
    if (!k)
        return -1;
    cfg->keys = k;
    k[cfg->n_keys].name = strdup(name);
    k[cfg->n_keys].key = strdup(value);
    k[cfg->n_keys].key_len = strlen(value);
    if (!k[cfg->n_keys].name || !k[cfg->n_keys].key) {
        free(k[cfg->n_keys].name);
        free(k[cfg->n_keys].key);
        return -1;
    }
    cfg->n_keys++;
    return 0;
}

static int cfg__handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *ps = user;
    struct config *cfg = ps->cfg;
    char why[300] = "";
    int rc = -1;

    if (!strcmp(section, "keys")) {
        cfg->auth = true;
        rc = cfg__add_key(cfg, name, value, why, sizeof(why));
    } else if (!strncmp(section, "backend.", 8)) {
        if (!section[8]) {
            snprintf(why, sizeof(why), "backend section needs a name: [backend.NAME]");
        } else {
            struct cfg_backend *b = cfg__backend(cfg, section + 8, ps->section_line);
            rc = b ? cfg__set_backend(b, name, value, why, sizeof(why)) : -1;
        }
    } else {
        const struct cfg_row *row = cfg__row(section, name);
        if (!row)
            snprintf(why, sizeof(why), "unknown key '%s' in [%s]", name, section);
        else
            rc = cfg__set(cfg, row, value, why, sizeof(why));
    }
    if (rc != 0) {
        cfg__err(ps->errs, "%s:%d: %s", ps->file, ps->line, why[0] ? why : "out of memory");
        ps->line_error = ps->line;
    }
    return 1; /* keep going: report every problem */
}

/* Line reader for inih that counts lines, so the handler knows where it is. It also hands
 * libinih every line without a BOM (line 1) and without the blanks that start it: libinih
 * takes an indented line that follows a key for a continuation of that key's value, and a
 * continuation replaces the value (keeping its "; comment" in libinih 55), so an indented
 * "max_concurrency = 8" under "models = a, b" silently became the model list. Here an
 * indented line is a line like any other, as in git's config files. */
#define CFG_MAX_SECTION 49 /* libinih's MAX_SECTION - 1 */

static char *cfg__reader(char *str, int num, void *stream)
{
    struct cfg_parse *ps = stream;
    size_t cap = (size_t)num;
    size_t n = 0;
    int c = EOF;
    bool any = false;
    bool too_long = false;
    for (;;) {
        if (ps->fp) {
            c = fgetc(ps->fp);
        } else {
            c = ps->text[ps->pos] ? (unsigned char)ps->text[ps->pos++] : EOF;
        }
        if (c == EOF)
            break;
        any = true;
        if (c == '\n') {
            str[n++] = '\n'; /* room is kept for it: the limit is on what precedes it */
            break;
        }
        if (n + 2 < cap)
            str[n++] = (char)c;
        else
            too_long = true;
    }
    if (!any)
        return NULL;
    str[n] = '\0';
    ps->line++;
    size_t skip = 0;
    if (ps->line == 1 && !strncmp(str, "\xEF\xBB\xBF", 3))
        skip = 3;
    while (str[skip] && str[skip] != '\n' && isspace((unsigned char)str[skip]))
        skip++; /* the blanks libinih's lskip() would skip */
    memmove(str, str + skip, n - skip + 1);
    const char *t = str;
    if (ps->line == 1 && !strncmp(t, "\xEF\xBB\xBF", 3)) {
        /* libinih strips a BOM at the start of the first line it is given, which is this one
         * after the blanks above, then skips blanks again: see the section as it will */
        t += 3;
        while (*t && isspace((unsigned char)*t))
            t++;
    }
    if (*t == '[') {
        ps->section_line = ps->line;
        /* libinih keeps at most 49 bytes of a section name and cuts the rest silently: a
         * [backend.NAME] would get another NAME than the one written. */
        const char *rb = strchr(t, ']');
        size_t sl = rb ? (size_t)(rb - t - 1) : strlen(t + 1);
        if (sl > CFG_MAX_SECTION && !too_long) {
            cfg__err(ps->errs, "%s:%d: section name longer than %d bytes", ps->file, ps->line,
                     CFG_MAX_SECTION);
            ps->line_error = ps->line;
            str[0] = '\0';
            return str;
        }
    }
    if (!strncmp(t, "[keys]", 6))
        ps->cfg->auth = true; /* an empty [keys] section still means "auth on" */
    if (too_long) {
        cfg__err(ps->errs, "%s:%d: line longer than %d bytes", ps->file, ps->line, num - 2);
        ps->line_error = ps->line;
        str[0] = '\0'; /* drop it */
    }
    return str;
}

static void cfg__defaults(struct config *cfg)
{
    char why[200];
    for (size_t i = 0; i < N_ROWS; i++)
        (void)cfg__set(cfg, &cfg_rows[i], cfg_rows[i].def, why, sizeof(why));
}

/* LLMGATE_SERVER_MAX_BODY_BYTES etc. */
static void cfg__env_name(char *out, size_t cap, const char *section, const char *name)
{
    size_t n = (size_t)snprintf(out, cap, "LLMGATE_%s_%s", section, name);
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = isalnum((unsigned char)out[i]) ? (char)toupper((unsigned char)out[i]) : '_';
}

static void cfg__env(struct config *cfg, struct config_errors *errs)
{
    char env[256], why[300];
    for (size_t i = 0; i < N_ROWS; i++) {
        cfg__env_name(env, sizeof(env), cfg_rows[i].section, cfg_rows[i].name);
        const char *v = getenv(env);
        if (v && cfg__set(cfg, &cfg_rows[i], v, why, sizeof(why)) != 0)
            cfg__err(errs, "env %s: %s", env, why);
    }
    for (size_t b = 0; b < cfg->n_backends; b++) {
        for (size_t k = 0; k < sizeof(backend_keys) / sizeof(backend_keys[0]); k++) {
            char sec[200];
            snprintf(sec, sizeof(sec), "backend_%s", cfg->backends[b].name);
            cfg__env_name(env, sizeof(env), sec, backend_keys[k]);
            const char *v = getenv(env);
            if (v && cfg__set_backend(&cfg->backends[b], backend_keys[k], v, why, sizeof(why)))
                cfg__err(errs, "env %s: %s", env, why);
        }
    }
}

static void cfg__validate(struct config *cfg, struct config_errors *errs)
{
    if (cfg->n_backends == 0)
        cfg__err(errs, "%s: no [backend.NAME] section: at least one inference engine is needed",
                 cfg->path);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        struct cfg_backend *b = &cfg->backends[i];
        if (!b->url)
            cfg__err(errs, "%s:%d: [backend.%s] has no url", cfg->path, b->line, b->name);
        if (b->n_models == 0)
            cfg__err(errs, "%s:%d: [backend.%s] has no models", cfg->path, b->line, b->name);
    }
    if (cfg->max_body_memory < cfg->max_body_bytes)
        cfg__err(errs,
                 "%s: [server] max_body_memory (%llu) is smaller than max_body_bytes (%llu): "
                 "a body of the allowed size could never be taken",
                 cfg->path, (unsigned long long)cfg->max_body_memory,
                 (unsigned long long)cfg->max_body_bytes);
    if (cfg->auth && cfg->n_keys == 0)
        cfg__err(errs, "%s: [keys] is present but empty: no client could authenticate", cfg->path);
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (unsigned)n : 1;
    }
}

static struct config *cfg__load(const char *name, FILE *fp, const char *text,
                                struct config_errors *errs)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    size_t before = errs->n;
    if (!cfg || !(cfg->path = strdup(name))) {
        cfg__err(errs, "%s: out of memory", name);
        config_free(cfg);
        return NULL;
    }
    cfg__defaults(cfg);
    struct cfg_parse ps = {.cfg = cfg, .errs = errs, .file = name, .text = text, .fp = fp};
    int rc = ini_parse_stream(cfg__reader, &ps, cfg__handler, &ps);
    if (rc > 0 && rc != ps.line_error)
        cfg__err(errs, "%s:%d: syntax error (expected [section] or key = value)", name, rc);
    else if (rc < 0)
        cfg__err(errs, "%s: cannot read", name);
    cfg__env(cfg, errs);
    cfg__validate(cfg, errs);
    if (errs->n != before) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        cfg__err(errs, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct config *cfg = cfg__load(path, fp, NULL, errs);
    fclose(fp);
    return cfg;
}

struct config *config_load_string(const char *name, const char *text, struct config_errors *errs)
{
    return cfg__load(name, NULL, text, errs);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_ROWS; i++) {
        if (cfg_rows[i].type == CT_STR || cfg_rows[i].type == CT_LISTEN ||
            cfg_rows[i].type == CT_LEVEL)
            free(*(char **)(void *)((char *)cfg + cfg_rows[i].offset));
    }
    free(cfg->listen_host);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        free(cfg->keys[i].name);
        free(cfg->keys[i].key);
    }
    free(cfg->keys);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        free(cfg->backends[i].name);
        free(cfg->backends[i].url);
        free(cfg->backends[i].api_key);
        cfg__free_models(&cfg->backends[i]);
    }
    free(cfg->backends);
    free(cfg->path);
    free(cfg);
}

/* Writes "name = value", or "name=value" (and models as "a,b") when the spaced line would be
 * longer than the reader keeps: a dumped line is then never longer than the line its value
 * came from, so the dump of a file loads again (but for the masked keys). */
#define CFG_MAX_LINE 200 /* libinih's INI_MAX_LINE; the reader keeps CFG_MAX_LINE - 2 bytes */

static bool cfg__dump_spaced(const char *name, size_t value_len)
{
    return strlen(name) + 3 + value_len <= CFG_MAX_LINE - 2;
}

/* A blank before text that starts with ';' would make the rest of the line a comment for
 * libinih (a value or a model may well start with ';' when nothing precedes it). */
static const char *cfg__dump_sep(bool spaced, const char *next, const char *blank,
                                 const char *compact)
{
    return spaced && next[0] != ';' ? blank : compact;
}

static void cfg__dump_kv(FILE *out, const char *name, const char *value)
{
    bool spaced = cfg__dump_spaced(name, strlen(value));
    fprintf(out, "%s%s%s\n", name, cfg__dump_sep(spaced, value, " = ", "="), value);
}

static void cfg__dump_models(FILE *out, const struct cfg_backend *b)
{
    size_t len = 0;
    for (size_t m = 0; m < b->n_models; m++)
        len += strlen(b->models[m]) + (m ? 2 : 0);
    bool spaced = cfg__dump_spaced("models", len);
    if (b->n_models == 0)
        fprintf(out, "models =");
    for (size_t m = 0; m < b->n_models; m++)
        fprintf(out, "%s%s",
                cfg__dump_sep(spaced, b->models[m], m ? ", " : "models = ", m ? "," : "models="),
                b->models[m]);
    fprintf(out, "\n");
}

void config_dump(const struct config *cfg, FILE *out)
{
    const char *section = "";
    char v[64];
    for (size_t i = 0; i < N_ROWS; i++) {
        const struct cfg_row *r = &cfg_rows[i];
        if (strcmp(section, r->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", r->section);
            section = r->section;
        }
        const char *base = (const char *)cfg + r->offset;
        const char *value = v;
        fprintf(out, "; %s (default %s)\n", r->help, r->def);
        switch (r->type) {
        case CT_UINT:
            snprintf(v, sizeof(v), "%u", *(const unsigned *)(const void *)base);
            break;
        case CT_SIZE:
            snprintf(v, sizeof(v), "%llu",
                     (unsigned long long)*(const uint64_t *)(const void *)base);
            break;
        case CT_BOOL:
            value = *(const bool *)(const void *)base ? "true" : "false";
            break;
        default:
            value = *(char *const *)(const void *)base;
        }
        cfg__dump_kv(out, r->name, value);
    }
    if (cfg->auth) {
        fprintf(out, "\n[keys]\n");
        for (size_t i = 0; i < cfg->n_keys; i++) {
            snprintf(v, sizeof(v), "<%zu bytes>", cfg->keys[i].key_len);
            cfg__dump_kv(out, cfg->keys[i].name, v);
        }
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        const struct cfg_backend *b = &cfg->backends[i];
        fprintf(out, "\n[backend.%s]\n", b->name);
        cfg__dump_kv(out, "url", b->url);
        cfg__dump_models(out, b);
        fprintf(out, "max_concurrency = %u\n", b->max_concurrency);
        if (b->api_key)
            fprintf(out, "api_key = <set>\n");
    }
}

size_t config_backends_for(const struct config *cfg, const char *model,
                           const struct cfg_backend **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_backends && n < max; i++) {
        const struct cfg_backend *b = &cfg->backends[i];
        for (size_t m = 0; m < b->n_models; m++) {
            if (!strcmp(b->models[m], model)) {
                out[n++] = b;
                break;
            }
        }
    }
    return n;
}

/* Compares two byte strings in time that depends only on the length of `b`. */
static int cfg__ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(b[i] ^ (i < alen ? a[i] : 0));
    return diff == 0;
}

const char *config_key_lookup(const struct config *cfg, const char *key, size_t len)
{
    const char *found = NULL;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        /* no early exit: every key is compared */
        if (cfg__ct_equal(key, len, cfg->keys[i].key, cfg->keys[i].key_len))
            found = cfg->keys[i].name;
    }
    return found;
}
