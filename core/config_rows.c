/* config_rows.c — the table of keys (one row per key: section, name, type, where it lands,
 * bounds, default, help) and what a value of each type means: parsing into the field, freeing
 * it. See config.h. */
#include "core/config_int.h"

#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define F(field) offsetof(struct config, field)
#define BF(field) offsetof(struct cfg_backend, field)
#define KF(field) offsetof(struct cfg_key, field)

/* The fixed keys. Dynamic sections ([keys], [backend.NAME]) are handled by config.c. */
const struct cfg_row cfg__rows[] = {
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
    {"server", "max_connections_per_ip", CT_UINT, F(max_connections_per_ip), 0, 1000000, "auto",
     "open connections from one client address (one more gets 429 and is closed); 0 = no limit; "
     "auto = "
     "none when listening on loopback, else max_connections / 8 (at least 64)"},
    {"server", "client_header_timeout_s", CT_UINT, F(client_header_timeout_s), 1, 3600, "60",
     "request line and headers, from the request's first byte; expiry -> 408, close"},
    {"server", "client_body_timeout_s", CT_UINT, F(client_body_timeout_s), 1, 3600, "60",
     "between two reads of a request body; expiry -> 408, close"},
    {"server", "client_body_deadline_s", CT_UINT, F(client_body_deadline_s), 0, 86400, "300",
     "a whole request body, from its start; expiry -> 408, close; 0 = none"},
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
const size_t cfg__n_rows = sizeof(cfg__rows) / sizeof(cfg__rows[0]);

/* The keys of a [backend.NAME] section (offsets into struct cfg_backend). */
const struct cfg_row cfg__backend_rows[] = {
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
const size_t cfg__n_backend_rows = sizeof(cfg__backend_rows) / sizeof(cfg__backend_rows[0]);

/* The keys of a [key.NAME] section (offsets into struct cfg_key). A numeric limit without a
 * default here takes [limits]' key_* default. */
const struct cfg_row cfg__key_rows[] = {
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
const size_t cfg__n_key_rows = sizeof(cfg__key_rows) / sizeof(cfg__key_rows[0]);

static const char *const prio_names[PRIO__COUNT] = {"high", "normal", "low"};

const char *config_priority_name(unsigned p)
{
    return p < PRIO__COUNT ? prio_names[p] : "normal";
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
int cfg__set(struct config *cfg, void *base_, const struct cfg_row *row, const char *value,
             char *why, size_t whylen)
{
    char *base = (char *)base_ + row->offset;
    uint64_t v;
    switch (row->type) {
    case CT_UINT:
    case CT_SIZE:
        if (row->type == CT_UINT && row->def && !strcmp(row->def, "auto") &&
            !strcmp(value, "auto")) {
            *(unsigned *)(void *)base = CFG_AUTO; /* resolved by validation */
            return 0;
        }
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

/* Frees what the rows of `rows` allocated in `base`. */
void cfg__rows_free(void *base, const struct cfg_row *rows, size_t n)
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
