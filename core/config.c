/* config.c — reading a configuration: the INI file through libinih (line reader, handler,
 * the dynamic [keys] / [key.NAME] / [backend.NAME] sections), environment overrides,
 * validation, loading and freeing. The table of keys is config_rows.c, the keys' index and
 * request-path lookups config_keys.c, the dump and the restart diff config_dump.c. See
 * config.h. */
#include "core/config_int.h"

#include "core/siphash.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void cfg__err(struct config_errors *errs, const char *fmt, ...)
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
        if (!strcmp(cfg__rows[i].section, section) && !strcmp(cfg__rows[i].name, name))
            return &cfg__rows[i];
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
    cfg__row_defaults(cfg, b, cfg__backend_rows, N_BACKEND_ROWS);
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
    cfg__row_defaults(cfg, k, cfg__key_rows, N_KEY_ROWS);
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
            rc = cfg__set(cfg, k, &cfg__key_rows[0], value, why, sizeof(why));
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
            rc = b ? cfg__set_dynamic(cfg, b, "backend", cfg__backend_rows, N_BACKEND_ROWS, name,
                                      value, why, sizeof(why))
                   : -1;
        } else {
            cfg->auth = true;
            struct cfg_key *k = cfg__key(ps, sname, ps->section_line);
            if (k && !strcmp(name, "key") && k->key)
                snprintf(why, sizeof(why), "API key '%s' is given twice", sname);
            else
                rc = k ? cfg__set_dynamic(cfg, k, "key", cfg__key_rows, N_KEY_ROWS, name, value,
                                          why, sizeof(why))
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
        if (cfg__rows[i].def) /* [admin] key has none: unset */
            (void)cfg__set(cfg, cfg, &cfg__rows[i], cfg__rows[i].def, why, sizeof(why));
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
        cfg__env_name(env, sizeof(env), cfg__rows[i].section, cfg__rows[i].name);
        const char *v = getenv(env);
        if (v && cfg__set(cfg, cfg, &cfg__rows[i], v, why, sizeof(why)) != 0)
            cfg__err(errs, "env %s: %s", env, why);
    }
    for (size_t b = 0; b < cfg->n_backends; b++)
        cfg__env_dynamic(cfg, errs, &cfg->backends[b], "backend", cfg->backends[b].name,
                         cfg__backend_rows, N_BACKEND_ROWS);
    for (size_t k = 0; k < cfg->n_keys; k++)
        cfg__env_dynamic(cfg, errs, &cfg->keys[k], "key", cfg->keys[k].name, cfg__key_rows,
                         N_KEY_ROWS);
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

/* Whether host (the listen address's host part) is a loopback address. */
static bool cfg__loopback(const char *host)
{
    if (!host)
        return false;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return !strcmp(host, "localhost");
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
    if (cfg->max_connections_per_ip == CFG_AUTO) {
        /* Facing a LAN, no one host may take the whole table; on loopback every client is
         * this machine, one address: no limit. */
        unsigned n = cfg->max_connections / 8;
        cfg->max_connections_per_ip = cfg__loopback(cfg->listen_host) ? 0 : n < 64 ? 64 : n;
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

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    cfg__rows_free(cfg, cfg__rows, N_ROWS);
    free(cfg->listen_host);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        free(cfg->keys[i].name);
        cfg__rows_free(&cfg->keys[i], cfg__key_rows, N_KEY_ROWS);
    }
    free(cfg->keys);
    free(cfg->key_slots);
    free(cfg->sha_slots);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        free(cfg->backends[i].name);
        cfg__rows_free(&cfg->backends[i], cfg__backend_rows, N_BACKEND_ROWS);
    }
    free(cfg->backends);
    free(cfg->path);
    free(cfg);
}
