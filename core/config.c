/* config.c — see config.h. */
#include "core/config.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/siphash.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

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

#define F(field) offsetof(struct config, field)
#define BF(field) offsetof(struct cfg_backend, field)
#define KF(field) offsetof(struct cfg_key, field)

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
    {"server", "client_send_timeout_s", CT_UINT, F(client_send_timeout_s), 1, 3600, "60",
     "a client that takes no response byte for this long (bytes waiting) is cut; its permit "
     "freed"},
    {"server", "stream_buffer_bytes", CT_SIZE, F(stream_buffer_bytes), 16384, 16ull << 20, "65536",
     "per-request buffer between engine and client; full = engine paused"},
    {"timeouts", "connect_ms", CT_UINT, F(connect_ms), 1, 600000, "5000", "upstream connect"},
    {"timeouts", "request_s", CT_UINT, F(request_s), 1, 86400, "60",
     "queueing + the engine's first byte + a whole non-stream answer; streams that keep "
     "flowing are never cut, one silent for request_s ends; expiry -> 504"},
    {"timeouts", "drain_s", CT_UINT, F(drain_s), 0, 3600, "10",
     "on SIGTERM: how long open requests may finish before they are cut"},
    {"timeouts", "drain_grace_s", CT_UINT, F(drain_grace_s), 0, 3600, "0",
     "on SIGTERM: /ready answers 503 while requests are served this long (a balancer takes "
     "the instance out), then the port closes and drain_s begins"},
    {"limits", "max_inflight", CT_UINT, F(max_inflight), 1, 1000000, "100",
     "requests holding an upstream slot, gateway-wide"},
    {"limits", "queue_capacity", CT_UINT, F(queue_capacity), 0, 1000000, "1024",
     "waiting requests, gateway-wide; beyond -> 503 queue_full"},
    {"limits", "pool_queue_capacity", CT_UINT, F(pool_queue_capacity), 0, 1000000, "0",
     "waiting requests per model pool (the backends that serve a model), so that one saturated "
     "model cannot fill the gateway's queue; 0 = queue_capacity"},
    {"limits", "queue_timeout_ms", CT_UINT, F(queue_timeout_ms), 1, 3600000, "30000",
     "longest wait for a slot; expiry -> 503 queue_timeout"},
    {"limits", "service_time_prior_ms", CT_UINT, F(service_time_prior_ms), 1, 3600000, "500",
     "Retry-After's first guess of how long a request holds an engine slot, before any has "
     "ended (then twice the age of the requests in flight, if larger)"},
    {"limits", "key_max_concurrency", CT_UINT, F(key_max_concurrency), 0, 1000000, "0",
     "default for every key: its requests at once; beyond -> 429; 0 = no limit"},
    {"limits", "key_rpm", CT_UINT, F(key_rpm), 0, 100000000, "0",
     "default for every key: requests per minute; beyond -> 429; 0 = no limit"},
    {"limits", "key_tpm", CT_UINT, F(key_tpm), 0, 1000000000, "0",
     "default for every key: tokens per minute; beyond -> 429; 0 = no limit"},
    {"health", "interval_ms", CT_UINT, F(health_interval_ms), 0, 3600000, "5000",
     "active probe of each backend (GET url/v1/models); 0 = off"},
    {"admin", "key", CT_SECRET, F(admin_key), 0, 0, NULL,
     "Bearer key for POST /admin/reload and GET /admin/config; unset = the admin API is off"},
    {"log", "level", CT_LEVEL, F(log_level), 0, 0, "info", "error, warn, info or debug"},
    {"log", "access", CT_BOOL, F(access_log), 0, 0, "false", "one line per finished request"},
};
#define N_ROWS (sizeof(cfg_rows) / sizeof(cfg_rows[0]))

/* The keys of a [backend.NAME] section (offsets into struct cfg_backend). */
static const struct cfg_row backend_rows[] = {
    {"backend", "url", CT_URL, BF(url), 0, 0, NULL,
     "the engine's base URL (http:// or https://); /v1/... is appended"},
    {"backend", "models", CT_LIST, BF(models), 0, 0, NULL, "model ids it serves, comma-separated"},
    {"backend", "max_concurrency", CT_UINT, BF(max_concurrency), 1, 1000000, "4",
     "the engine's parallel slots"},
    {"backend", "api_key", CT_SECRET, BF(api_key), 0, 0, NULL,
     "sent upstream as Authorization: Bearer"},
    {"backend", "stream_usage", CT_BOOL, BF(stream_usage), 0, 0, "true",
     "for a key with tpm, ask for a stream's usage (stream_options.include_usage, its chunk not "
     "relayed) when the client did not; false for an engine that refuses the field: the "
     "stream's events are counted instead"},
};
#define N_BACKEND_ROWS (sizeof(backend_rows) / sizeof(backend_rows[0]))

/* The keys of a [key.NAME] section (offsets into struct cfg_key). A numeric limit without a
 * default here takes [limits]' key_* default. */
static const struct cfg_row key_rows[] = {
    {"key", "key", CT_SECRET, KF(key), 0, 0, NULL, "the secret (or [keys] NAME = KEY)"},
    {"key", "key_sha256", CT_SHA256, KF(sha256), 0, 0, NULL,
     "the secret's SHA-256, 64 hex digits, so the file need not hold the secret"},
    {"key", "max_concurrency", CT_UINT, KF(max_concurrency), 0, 1000000, NULL,
     "its requests at once; 0 = no limit (default: [limits] key_max_concurrency)"},
    {"key", "rpm", CT_UINT, KF(rpm), 0, 100000000, NULL,
     "requests per minute; 0 = no limit (default: [limits] key_rpm)"},
    {"key", "tpm", CT_UINT, KF(tpm), 0, 1000000000, NULL,
     "tokens per minute; 0 = no limit (default: [limits] key_tpm)"},
    {"key", "weight", CT_UINT, KF(weight), 1, 1000, "1", "its share of a contended pool"},
    {"key", "priority", CT_PRIO, KF(priority), 0, 0, "normal",
     "high, normal or low: the highest its requests may ask for"},
    {"key", "models", CT_LIST, KF(models), 0, 0, NULL,
     "model ids it may use, comma-separated (default: all)"},
};
#define N_KEY_ROWS (sizeof(key_rows) / sizeof(key_rows[0]))

static const char *const prio_names[PRIO__COUNT] = {"high", "normal", "low"};

const char *config_priority_name(unsigned p)
{
    return p < PRIO__COUNT ? prio_names[p] : "normal";
}

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
    /* the keys by name while parsing (a file may name thousands): open addressing, slot =
     * index + 1 into cfg->keys, at most half full */
    uint32_t *names;
    size_t names_mask;
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

static void cfg__list_free(struct cfg_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* "a, b ,c" -> l (replacing what it held). */
static int cfg__set_list(struct cfg_list *l, const char *value, char *why, size_t whylen)
{
    struct cfg_list nl = {0};
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
                cfg__list_free(&nl);
                return -1;
            }
        }
        char **m = realloc(nl.v, (nl.n + 1) * sizeof(*m));
        if (!m)
            goto nomem;
        nl.v = m;
        m[nl.n] = strndup(start, (size_t)(end - start));
        if (!m[nl.n])
            goto nomem;
        nl.n++;
    }
    cfg__list_free(l);
    *l = nl;
    return 0;
nomem:
    cfg__list_free(&nl);
    snprintf(why, whylen, "out of memory");
    return -1;
}

static int cfg__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Replaces the string in *slot by a copy of value. */
static int cfg__set_str(char **slot, const char *value, char *why, size_t whylen)
{
    char *copy = strdup(value);
    if (!copy) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

/* Stores `value` into the field of `row` in `base` (the config, a backend or a key). On a bad
 * value, writes why into `why`. */
static int cfg__set(struct config *cfg, void *base_, const struct cfg_row *row, const char *value,
                    char *why, size_t whylen)
{
    char *base = (char *)base_ + row->offset;
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
    case CT_PRIO:
        for (unsigned p = 0; p < PRIO__COUNT; p++) {
            if (!strcmp(value, prio_names[p])) {
                *(unsigned *)(void *)base = p;
                return 0;
            }
        }
        snprintf(why, whylen, "'%s' is not one of high, normal, low", value);
        return -1;
    case CT_LIST:
        return cfg__set_list((struct cfg_list *)(void *)base, value, why, whylen);
    case CT_SHA256: {
        struct cfg_key *k = base_;
        unsigned char h[32];
        if (strlen(value) != 64) {
            snprintf(why, whylen, "key_sha256 must be 64 hex digits");
            return -1;
        }
        for (size_t i = 0; i < 32; i++) {
            int hi = cfg__hexval(value[2 * i]), lo = cfg__hexval(value[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(why, whylen, "key_sha256 must be 64 hex digits");
                return -1;
            }
            h[i] = (unsigned char)(hi << 4 | lo);
        }
        memcpy(k->sha256, h, sizeof(h));
        k->has_sha256 = true;
        return 0;
    }
    case CT_URL: {
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
        if (!u) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        free(*(char **)(void *)base);
        *(char **)(void *)base = u;
        return 0;
    }
    case CT_LEVEL: {
        enum log_level lv;
        if (log_parse_level(value, &lv) != 0) {
            snprintf(why, whylen, "'%s' is not one of error, warn, info, debug", value);
            return -1;
        }
        return cfg__set_str((char **)(void *)base, value, why, whylen);
    }
    case CT_SECRET:
        if (!*value) {
            snprintf(why, whylen, "'%s' is empty", row->name);
            return -1;
        }
        return cfg__set_str((char **)(void *)base, value, why, whylen);
    case CT_STR:
        return cfg__set_str((char **)(void *)base, value, why, whylen);
    case CT_LISTEN: {
        char *host = NULL;
        unsigned port = 0;
        if (cfg__parse_listen(value, &host, &port) != 0) {
            snprintf(why, whylen, "'%s' is not host:port", value);
            return -1;
        }
        if (cfg__set_str((char **)(void *)base, value, why, whylen) != 0) {
            free(host);
            return -1;
        }
        free(cfg->listen_host);
        cfg->listen_host = host;
        cfg->listen_port = port;
        return 0;
    }
    }
    return -1;
}

/* A row of `rows` named `name`, or NULL. */
static const struct cfg_row *cfg__drow(const struct cfg_row *rows, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].name, name))
            return &rows[i];
    return NULL;
}

/* "url, models, max_concurrency, api_key" for messages. */
static void cfg__known(char *out, size_t cap, const struct cfg_row *rows, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? ", " : "", rows[i].name);
}

static const struct cfg_row *cfg__row(const char *section, const char *name)
{
    for (size_t i = 0; i < N_ROWS; i++)
        if (!strcmp(cfg_rows[i].section, section) && !strcmp(cfg_rows[i].name, name))
            return &cfg_rows[i];
    return NULL;
}

/* Applies the defaults of a dynamic section's rows to a new backend or key. */
static void cfg__row_defaults(struct config *cfg, void *base, const struct cfg_row *rows, size_t n)
{
    char why[200];
    for (size_t i = 0; i < n; i++)
        if (rows[i].def)
            (void)cfg__set(cfg, base, &rows[i], rows[i].def, why, sizeof(why));
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
    cfg__row_defaults(cfg, b, backend_rows, N_BACKEND_ROWS);
    b->line = line;
    b->index = (unsigned)cfg->n_backends++;
    return b;
}

static size_t cfg__name_slot(const struct cfg_parse *ps, const char *name)
{
    size_t at = siphash24_name(name) & ps->names_mask;
    while (ps->names[at] && strcmp(ps->cfg->keys[ps->names[at] - 1].name, name) != 0)
        at = (at + 1) & ps->names_mask;
    return at;
}

/* Room for one more name in the index: doubled (and refilled) when half full. */
static bool cfg__names_room(struct cfg_parse *ps)
{
    size_t n = ps->cfg->n_keys;
    if (ps->names && 2 * (n + 1) <= ps->names_mask + 1)
        return true;
    size_t cap = ps->names ? 2 * (ps->names_mask + 1) : 64;
    uint32_t *t = calloc(cap, sizeof(*t));
    if (!t || n >= UINT32_MAX / 4) {
        free(t);
        return false;
    }
    free(ps->names);
    ps->names = t;
    ps->names_mask = cap - 1;
    for (size_t i = 0; i < n; i++)
        ps->names[cfg__name_slot(ps, ps->cfg->keys[i].name)] = (uint32_t)(i + 1);
    return true;
}

/* Key NAME, made on first mention ([keys] NAME = ... or [key.NAME]). */
static struct cfg_key *cfg__key(struct cfg_parse *ps, const char *name, int line)
{
    struct config *cfg = ps->cfg;
    if (!cfg__names_room(ps))
        return NULL;
    size_t slot = cfg__name_slot(ps, name);
    if (ps->names[slot])
        return &cfg->keys[ps->names[slot] - 1];
    struct cfg_key *k = realloc(cfg->keys, (cfg->n_keys + 1) * sizeof(*k));
    if (!k)
        return NULL;
    cfg->keys = k;
    k = &cfg->keys[cfg->n_keys];
    memset(k, 0, sizeof(*k));
    k->name = strdup(name);
    if (!k->name)
        return NULL;
    k->max_concurrency = k->rpm = k->tpm = CFG_UNSET;
    cfg__row_defaults(cfg, k, key_rows, N_KEY_ROWS);
    k->line = line;
    ps->names[slot] = (uint32_t)(cfg->n_keys + 1);
    cfg->n_keys++;
    return k;
}

/* [section.NAME] key = value for a dynamic section's rows. */
static int cfg__set_dynamic(struct config *cfg, void *base, const char *kind,
                            const struct cfg_row *rows, size_t n, const char *name,
                            const char *value, char *why, size_t whylen)
{
    const struct cfg_row *row = cfg__drow(rows, n, name);
    if (!row) {
        char known[200];
        cfg__known(known, sizeof(known), rows, n);
        snprintf(why, whylen, "unknown key '%s' in a %s section (known: %s)", name, kind, known);
        return -1;
    }
    return cfg__set(cfg, base, row, value, why, whylen);
}

static int cfg__handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *ps = user;
    struct config *cfg = ps->cfg;
    char why[300] = "";
    int rc = -1;

    if (!strcmp(section, "keys")) {
        cfg->auth = true;
        struct cfg_key *k = *name ? cfg__key(ps, name, ps->line) : NULL;
        if (!*name) {
            snprintf(why, sizeof(why), "an API key needs a name: NAME = KEY");
        } else if (k && k->key) {
            snprintf(why, sizeof(why), "API key '%s' is given twice", name);
        } else if (k) {
            rc = cfg__set(cfg, k, &key_rows[0], value, why, sizeof(why));
            if (rc != 0 && !*value)
                snprintf(why, sizeof(why), "API key '%s' is empty", name);
        }
    } else if (!strncmp(section, "backend.", 8) || !strncmp(section, "key.", 4)) {
        bool backend = section[0] == 'b';
        const char *sname = section + (backend ? 8 : 4);
        if (!*sname) {
            snprintf(why, sizeof(why), "%s section needs a name: [%s.NAME]",
                     backend ? "backend" : "key", backend ? "backend" : "key");
        } else if (backend) {
            struct cfg_backend *b = cfg__backend(cfg, sname, ps->section_line);
            rc = b ? cfg__set_dynamic(cfg, b, "backend", backend_rows, N_BACKEND_ROWS, name, value,
                                      why, sizeof(why))
                   : -1;
        } else {
            cfg->auth = true;
            struct cfg_key *k = cfg__key(ps, sname, ps->section_line);
            if (k && !strcmp(name, "key") && k->key)
                snprintf(why, sizeof(why), "API key '%s' is given twice", sname);
            else
                rc = k ? cfg__set_dynamic(cfg, k, "key", key_rows, N_KEY_ROWS, name, value, why,
                                          sizeof(why))
                       : -1;
        }
    } else {
        const struct cfg_row *row = cfg__row(section, name);
        if (!row)
            snprintf(why, sizeof(why), "unknown key '%s' in [%s]", name, section);
        else
            rc = cfg__set(cfg, cfg, row, value, why, sizeof(why));
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
        if (cfg_rows[i].def) /* [admin] key has none: unset */
            (void)cfg__set(cfg, cfg, &cfg_rows[i], cfg_rows[i].def, why, sizeof(why));
}

/* LLMGATE_SERVER_MAX_BODY_BYTES etc. */
static void cfg__env_name(char *out, size_t cap, const char *section, const char *name)
{
    size_t n = (size_t)snprintf(out, cap, "LLMGATE_%s_%s", section, name);
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = isalnum((unsigned char)out[i]) ? (char)toupper((unsigned char)out[i]) : '_';
}

/* LLMGATE_<KIND>_<NAME>_<KEY> for each row of an existing dynamic section. */
static void cfg__env_dynamic(struct config *cfg, struct config_errors *errs, void *base,
                             const char *kind, const char *sname, const struct cfg_row *rows,
                             size_t n)
{
    char env[256], why[300], sec[200];
    snprintf(sec, sizeof(sec), "%s_%s", kind, sname);
    for (size_t k = 0; k < n; k++) {
        cfg__env_name(env, sizeof(env), sec, rows[k].name);
        const char *v = getenv(env);
        if (v && cfg__set(cfg, base, &rows[k], v, why, sizeof(why)) != 0)
            cfg__err(errs, "env %s: %s", env, why);
    }
}

static void cfg__env(struct config *cfg, struct config_errors *errs)
{
    char env[256], why[300];
    for (size_t i = 0; i < N_ROWS; i++) {
        cfg__env_name(env, sizeof(env), cfg_rows[i].section, cfg_rows[i].name);
        const char *v = getenv(env);
        if (v && cfg__set(cfg, cfg, &cfg_rows[i], v, why, sizeof(why)) != 0)
            cfg__err(errs, "env %s: %s", env, why);
    }
    for (size_t b = 0; b < cfg->n_backends; b++)
        cfg__env_dynamic(cfg, errs, &cfg->backends[b], "backend", cfg->backends[b].name,
                         backend_rows, N_BACKEND_ROWS);
    for (size_t k = 0; k < cfg->n_keys; k++)
        cfg__env_dynamic(cfg, errs, &cfg->keys[k], "key", cfg->keys[k].name, key_rows, N_KEY_ROWS);
}

/* A digest's first 8 bytes: its slot in the index (any byte order buckets as well). */
static uint64_t cfg__digest_prefix(const unsigned char *d)
{
    uint64_t v;
    memcpy(&v, d, sizeof(v));
    return v;
}

/* A table for n entries: a power of two at least 2n (so a probe ends at an empty slot soon). */
static uint32_t *cfg__table(size_t n, size_t *mask)
{
    size_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    *mask = cap - 1;
    return calloc(cap, sizeof(uint32_t));
}

/* Builds the keys' index and finds the keys that share a value, in linear time: two equal plain
 * values, two equal digests, or a plain value whose SHA-256 is another key's key_sha256. */
static void cfg__index_keys(struct config *cfg, struct config_errors *errs)
{
    size_t n_plain = 0, n_sha = 0;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (cfg->keys[i].key)
            n_plain++;
        else if (cfg->keys[i].has_sha256)
            n_sha++;
    }
    if (n_plain + n_sha == 0)
        return;
    if (cfg->n_keys > UINT32_MAX / 4) {
        cfg__err(errs, "%s: too many keys (%zu)", cfg->path, cfg->n_keys);
        return;
    }
    if (getrandom(cfg->key_sip, sizeof(cfg->key_sip), 0) != (ssize_t)sizeof(cfg->key_sip)) {
        /* no entropy yet (early boot): the index still works, its layout is just guessable */
        cfg->key_sip[0] = clock_now_ns() ^ (uint64_t)(uintptr_t)cfg;
        cfg->key_sip[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    }
    if ((n_plain && !(cfg->key_slots = cfg__table(n_plain, &cfg->key_mask))) ||
        (n_sha && !(cfg->sha_slots = cfg__table(n_sha, &cfg->sha_mask)))) {
        cfg__err(errs, "%s: out of memory (the keys' index)", cfg->path);
        return;
    }
    for (size_t i = 0; i < cfg->n_keys; i++) {
        struct cfg_key *k = &cfg->keys[i];
        uint32_t *slots = k->key ? cfg->key_slots : cfg->sha_slots;
        size_t mask = k->key ? cfg->key_mask : cfg->sha_mask;
        uint64_t h;
        if (k->key)
            h = k->hash = siphash24(cfg->key_sip, k->key, k->key_len);
        else if (k->has_sha256)
            h = cfg__digest_prefix(k->sha256);
        else
            continue;
        size_t at = h & mask;
        for (; slots[at]; at = (at + 1) & mask) {
            const struct cfg_key *o = &cfg->keys[slots[at] - 1];
            bool same = k->key ? o->hash == h && o->key_len == k->key_len &&
                                     !memcmp(o->key, k->key, k->key_len)
                               : !memcmp(o->sha256, k->sha256, sizeof(k->sha256));
            if (same)
                cfg__err(errs, "%s:%d: keys '%s' and '%s' have the same value", cfg->path, k->line,
                         o->name, k->name);
        }
        slots[at] = (uint32_t)(i + 1);
    }
    if (!n_sha || !n_plain)
        return;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const struct cfg_key *k = &cfg->keys[i];
        if (!k->key)
            continue;
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)k->key, k->key_len, d);
        for (size_t at = cfg__digest_prefix(d) & cfg->sha_mask; cfg->sha_slots[at];
             at = (at + 1) & cfg->sha_mask) {
            const struct cfg_key *o = &cfg->keys[cfg->sha_slots[at] - 1];
            if (!memcmp(o->sha256, d, sizeof(d)))
                cfg__err(errs, "%s:%d: keys '%s' and '%s' have the same value", cfg->path, o->line,
                         k->name, o->name);
        }
    }
}

/* A model on more than CFG_MODEL_BACKENDS_MAX backends is an error (a request would only ever
 * be routed among the first ones), named once with its count, at the first backend past the
 * bound. Models are counted in a hash table by name: linear in the models listed. */
static void cfg__check_model_backends(struct config *cfg, struct config_errors *errs)
{
    size_t total = 0, cap = 16;
    for (size_t i = 0; i < cfg->n_backends; i++)
        total += cfg->backends[i].models.n;
    if (total <= CFG_MODEL_BACKENDS_MAX)
        return;
    while (cap < 2 * total)
        cap *= 2;
    struct mslot {
        const char *model;
        size_t count, last; /* backends naming it; the last one + 1 */
        size_t over;        /* the first backend past the bound + 1 */
    } *t = calloc(cap, sizeof(*t));
    if (!t) {
        cfg__err(errs, "%s: out of memory", cfg->path);
        return;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cfg->n_backends; i++) {
            const struct cfg_backend *b = &cfg->backends[i];
            for (size_t m = 0; m < b->models.n; m++) {
                const char *name = b->models.v[m];
                struct mslot *s = &t[siphash24_name(name) & (cap - 1)];
                while (s->model && strcmp(s->model, name) != 0)
                    s = s + 1 < t + cap ? s + 1 : t;
                s->model = name;
                if (pass == 1) { /* counted: report once, at the backend past the bound */
                    if (s->over == i + 1 && s->last != 0) {
                        cfg__err(errs,
                                 "%s:%d: [backend.%s]: model '%s' is on %zu backends, at most %d "
                                 "(a request is routed among at most %d of its model's backends)",
                                 cfg->path, b->line, b->name, name, s->count,
                                 CFG_MODEL_BACKENDS_MAX, CFG_MODEL_BACKENDS_MAX);
                        s->last = 0;
                    }
                } else if (s->last != i + 1) { /* a backend listing it twice counts once */
                    s->last = i + 1;
                    if (++s->count == CFG_MODEL_BACKENDS_MAX + 1)
                        s->over = i + 1;
                }
            }
        }
    }
    free(t);
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
        if (b->models.n == 0)
            cfg__err(errs, "%s:%d: [backend.%s] has no models", cfg->path, b->line, b->name);
    }
    cfg__check_model_backends(cfg, errs);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        struct cfg_key *k = &cfg->keys[i];
        if (!k->key && !k->has_sha256)
            cfg__err(errs,
                     "%s:%d: key '%s' has neither a value ([keys] %s = ..., or key =) nor "
                     "key_sha256",
                     cfg->path, k->line, k->name, k->name);
        if (k->key)
            k->key_len = strlen(k->key);
        if (k->max_concurrency == CFG_UNSET)
            k->max_concurrency = cfg->key_max_concurrency;
        if (k->rpm == CFG_UNSET)
            k->rpm = cfg->key_rpm;
        if (k->tpm == CFG_UNSET)
            k->tpm = cfg->key_tpm;
    }
    if (cfg->max_body_memory < cfg->max_body_bytes)
        cfg__err(errs,
                 "%s: [server] max_body_memory (%llu) is smaller than max_body_bytes (%llu): "
                 "a body of the allowed size could never be taken",
                 cfg->path, (unsigned long long)cfg->max_body_memory,
                 (unsigned long long)cfg->max_body_bytes);
    if (cfg->auth && cfg->n_keys == 0)
        cfg__err(errs, "%s: [keys] is present but empty: no client could authenticate", cfg->path);
    cfg__index_keys(cfg, errs);
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
    free(ps.names);
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

/* Frees what the rows of `rows` allocated in `base`. */
static void cfg__rows_free(void *base, const struct cfg_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *field = (char *)base + rows[i].offset;
        switch (rows[i].type) {
        case CT_STR:
        case CT_LISTEN:
        case CT_LEVEL:
        case CT_URL:
        case CT_SECRET:
            free(*(char **)(void *)field);
            break;
        case CT_LIST:
            cfg__list_free((struct cfg_list *)(void *)field);
            break;
        default:
            break;
        }
    }
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    cfg__rows_free(cfg, cfg_rows, N_ROWS);
    free(cfg->listen_host);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        free(cfg->keys[i].name);
        cfg__rows_free(&cfg->keys[i], key_rows, N_KEY_ROWS);
    }
    free(cfg->keys);
    free(cfg->key_slots);
    free(cfg->sha_slots);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        free(cfg->backends[i].name);
        cfg__rows_free(&cfg->backends[i], backend_rows, N_BACKEND_ROWS);
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

static void cfg__dump_list(FILE *out, const char *name, const struct cfg_list *l)
{
    size_t len = 0;
    for (size_t m = 0; m < l->n; m++)
        len += strlen(l->v[m]) + (m ? 2 : 0);
    bool spaced = cfg__dump_spaced(name, len);
    fprintf(out, "%s", name);
    if (l->n == 0)
        fprintf(out, " =");
    for (size_t m = 0; m < l->n; m++)
        fprintf(out, "%s%s", cfg__dump_sep(spaced, l->v[m], m ? ", " : " = ", m ? "," : "="),
                l->v[m]);
    fprintf(out, "\n");
}

/* The rows of one section of `base`, each with its help as a comment when `help`. */
static void cfg__dump_rows(FILE *out, const void *base_, const struct cfg_row *rows, size_t n,
                           bool help)
{
    char v[80];
    for (size_t i = 0; i < n; i++) {
        const struct cfg_row *r = &rows[i];
        const char *base = (const char *)base_ + r->offset;
        const char *value = v;
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
        case CT_PRIO:
            value = config_priority_name(*(const unsigned *)(const void *)base);
            break;
        case CT_SECRET: {
            const char *sec = *(char *const *)(const void *)base;
            if (!sec)
                continue;
            snprintf(v, sizeof(v), "<%zu bytes>", strlen(sec));
            break;
        }
        case CT_SHA256: {
            const struct cfg_key *k = base_;
            if (!k->has_sha256)
                continue;
            for (size_t j = 0; j < 32; j++)
                snprintf(v + 2 * j, sizeof(v) - 2 * j, "%02x", k->sha256[j]);
            break;
        }
        case CT_LIST: {
            const struct cfg_list *l = (const struct cfg_list *)(const void *)base;
            if (l->n == 0 && r->def == NULL && rows != backend_rows)
                continue; /* an unset allow-list: all */
            if (help)
                fprintf(out, "; %s\n", r->help);
            cfg__dump_list(out, r->name, l);
            continue;
        }
        default:
            value = *(char *const *)(const void *)base;
            if (!value)
                continue;
        }
        if (help)
            fprintf(out, "; %s (default %s)\n", r->help, r->def ? r->def : "none");
        cfg__dump_kv(out, r->name, value);
    }
}

/* Whether "[key.NAME]" reads back as key NAME: libinih keeps 49 bytes of a section name, ends
 * it at the first ']' and takes " ;" for a comment. */
static bool cfg__section_safe(const char *name)
{
    if (strlen(name) + 4 > CFG_MAX_SECTION || strchr(name, ']'))
        return false;
    for (const char *c = name; *c; c++)
        if (*c == ';' && c > name && isspace((unsigned char)c[-1]))
            return false;
    return true;
}

/* Whether "NAME = ..." under [keys] reads back as key NAME (libinih ends a name at '=' or ':',
 * trims blanks, and a line starting with '[', ';' or '#' is no key). */
static bool cfg__keys_safe(const char *name)
{
    size_t n = strlen(name);
    return n && !strpbrk(name, "=:") && !strchr("[;#", name[0]) &&
           !isspace((unsigned char)name[0]) && !isspace((unsigned char)name[n - 1]);
}

/* Where a key's secret is dumped: under [keys] for a short name or one no section can hold. */
static bool cfg__dump_in_keys(const char *name)
{
    return cfg__keys_safe(name) && (strlen(name) <= 3 || !cfg__section_safe(name));
}

void config_dump(const struct config *cfg, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < N_ROWS; i++) {
        const struct cfg_row *r = &cfg_rows[i];
        if (strcmp(section, r->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", r->section);
            section = r->section;
        }
        cfg__dump_rows(out, cfg, r, 1, true);
    }
    /* A key goes where the file could have named it and its unmasked secret's line is never
     * longer than the one it came from: in its own [key.NAME] (the name fits a section and
     * reads back the same), and its secret under [keys] ("NAME = <masked>") when its name is
     * short (so "key = ..." would be longer) or fits no section. A name that fits no section
     * came from [keys], so the rest of it is [limits]' defaults: nothing else to write. An
     * empty [keys] stays, so that auth stays on (and the check refuses it). */
    if (cfg->auth) {
        fprintf(out, "\n[keys]\n");
        for (size_t i = 0; i < cfg->n_keys; i++) {
            const struct cfg_key *k = &cfg->keys[i];
            if (k->key && cfg__dump_in_keys(k->name)) {
                char v[40];
                snprintf(v, sizeof(v), "<%zu bytes>", k->key_len);
                cfg__dump_kv(out, k->name, v);
            }
        }
    }
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const struct cfg_key *k = &cfg->keys[i];
        if (!cfg__section_safe(k->name))
            continue;
        fprintf(out, "\n[key.%s]\n", k->name);
        bool in_keys = k->key && cfg__dump_in_keys(k->name);
        cfg__dump_rows(out, k, key_rows + in_keys, N_KEY_ROWS - in_keys, false);
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        fprintf(out, "\n[backend.%s]\n", cfg->backends[i].name);
        cfg__dump_rows(out, &cfg->backends[i], backend_rows, N_BACKEND_ROWS, false);
    }
}

size_t config_backends_for(const struct config *cfg, const char *model,
                           const struct cfg_backend **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_backends && n < max; i++) {
        const struct cfg_backend *b = &cfg->backends[i];
        for (size_t m = 0; m < b->models.n; m++) {
            if (!strcmp(b->models.v[m], model)) {
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

/* One lookup in the index, whatever the number of keys. What its timing depends on is the
 * presented value's siphash under a random key (or its SHA-256): which slots it probes says
 * nothing an outsider can use about the values held, and the value itself is compared in
 * constant time. A plain value is looked up first; SHA-256 (~5,800 instructions) is computed
 * only when key_sha256 keys exist and no plain one matched. */
const struct cfg_key *config_key_find(const struct config *cfg, const char *key, size_t len)
{
    if (cfg->key_slots) {
        uint64_t h = siphash24(cfg->key_sip, key, len);
        for (size_t at = h & cfg->key_mask; cfg->key_slots[at]; at = (at + 1) & cfg->key_mask) {
            const struct cfg_key *k = &cfg->keys[cfg->key_slots[at] - 1];
            if (k->hash == h && cfg__ct_equal(key, len, k->key, k->key_len))
                return k;
        }
    }
    if (cfg->sha_slots) {
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)key, len, d);
        for (size_t at = cfg__digest_prefix(d) & cfg->sha_mask; cfg->sha_slots[at];
             at = (at + 1) & cfg->sha_mask) {
            const struct cfg_key *k = &cfg->keys[cfg->sha_slots[at] - 1];
            if (cfg__ct_equal((const char *)d, sizeof(d), (const char *)k->sha256,
                              sizeof(k->sha256)))
                return k;
        }
    }
    return NULL;
}

bool config_admin_ok(const struct config *cfg, const char *key, size_t len)
{
    return cfg->admin_key && cfg__ct_equal(key, len, cfg->admin_key, strlen(cfg->admin_key));
}

const char *config_key_lookup(const struct config *cfg, const char *key, size_t len)
{
    const struct cfg_key *k = config_key_find(cfg, key, len);
    return k ? k->name : NULL;
}

bool config_key_allows(const struct cfg_key *k, const char *model)
{
    if (!k || k->models.n == 0)
        return true;
    for (size_t i = 0; i < k->models.n; i++)
        if (!strcmp(k->models.v[i], model))
            return true;
    return false;
}

/* What a running gateway cannot change: its listening socket, its threads, its connection
 * table and the client deadlines libmicrohttpd and the guard were started with. */
static const char *const restart_keys[] = {
    "server.listen",
    "server.threads",
    "server.workers",
    "server.max_connections",
    "server.max_connections_per_ip",
    "server.client_header_timeout_s",
    "server.client_body_timeout_s",
    "server.keepalive_timeout_s",
};

size_t config_restart_diff(const struct config *a, const struct config *b, const char **out,
                           size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(restart_keys) / sizeof(restart_keys[0]) && n < max; i++) {
        const char *dot = strchr(restart_keys[i], '.');
        const struct cfg_row *r = NULL;
        for (size_t j = 0; j < N_ROWS && !r; j++)
            if (!strncmp(cfg_rows[j].section, restart_keys[i], (size_t)(dot - restart_keys[i])) &&
                cfg_rows[j].section[dot - restart_keys[i]] == '\0' &&
                !strcmp(cfg_rows[j].name, dot + 1))
                r = &cfg_rows[j];
        if (!r)
            continue;
        const char *pa = (const char *)a + r->offset, *pb = (const char *)b + r->offset;
        bool same;
        if (r->type == CT_UINT)
            same = *(const unsigned *)(const void *)pa == *(const unsigned *)(const void *)pb;
        else {
            const char *sa = *(char *const *)(const void *)pa,
                       *sb = *(char *const *)(const void *)pb;
            same = sa && sb ? !strcmp(sa, sb) : sa == sb;
        }
        if (!same)
            out[n++] = restart_keys[i];
    }
    return n;
}

int config_restart_keep(struct config *dst, const struct config *running)
{
    char *listen = strdup(running->listen), *host = strdup(running->listen_host);
    if (!listen || !host) {
        free(listen);
        free(host);
        return -1;
    }
    free(dst->listen);
    free(dst->listen_host);
    dst->listen = listen;
    dst->listen_host = host;
    dst->listen_port = running->listen_port;
    dst->threads = running->threads;
    dst->workers = running->workers;
    dst->max_connections = running->max_connections;
    dst->max_connections_per_ip = running->max_connections_per_ip;
    dst->client_header_timeout_s = running->client_header_timeout_s;
    dst->client_body_timeout_s = running->client_body_timeout_s;
    dst->keepalive_timeout_s = running->keepalive_timeout_s;
    return 0;
}
