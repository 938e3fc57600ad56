/* config_dump.c — a loaded configuration written back as an INI file that loads again
 * (--dump-config, GET /admin/config; secrets masked), and what a reload cannot change without
 * a restart. See config.h. */
#include "core/config_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            if (l->n == 0 && r->def == NULL && rows != cfg__backend_rows)
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
        const struct cfg_row *r = &cfg__rows[i];
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
        cfg__dump_rows(out, k, cfg__key_rows + in_keys, N_KEY_ROWS - in_keys, false);
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        fprintf(out, "\n[backend.%s]\n", cfg->backends[i].name);
        cfg__dump_rows(out, &cfg->backends[i], cfg__backend_rows, N_BACKEND_ROWS, false);
    }
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
    "server.client_body_deadline_s",
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
            if (!strncmp(cfg__rows[j].section, restart_keys[i], (size_t)(dot - restart_keys[i])) &&
                cfg__rows[j].section[dot - restart_keys[i]] == '\0' &&
                !strcmp(cfg__rows[j].name, dot + 1))
                r = &cfg__rows[j];
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
    dst->client_body_deadline_s = running->client_body_deadline_s;
    dst->keepalive_timeout_s = running->keepalive_timeout_s;
    return 0;
}
