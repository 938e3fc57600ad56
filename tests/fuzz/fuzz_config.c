/* libFuzzer target for core/config*.c (libinih + validation) on arbitrary text: invariants,
 * not just "no crash".
 *
 * The parent's LLMGATE_* variables are removed before the first input, so what is checked is
 * the file alone. The input is the text up to its first NUL.
 * For every input:
 *   (a) config_load_string returns a config and no message, or NULL and at least one message
 *       (config_free / config_errors_release every time: ASan's leak checker runs at exit and
 *       whenever an input leaves more blocks than it found);
 *   (b) every message is "NAME:LINE: text" or "NAME: text" with the name given, LINE a decimal
 *       number in [1, lines of the input + 1], text not empty.
 * For an accepted config:
 *   (c) at least one backend; each has a unique name of 1..49 bytes that the input writes as
 *       "[backend.NAME]" (libinih cuts longer section names: the name routed on must be the
 *       one written), a url that starts with http:// or https://, has a host and no trailing
 *       '/', >= 1 model (none empty, none with ',' or surrounding blanks), max_concurrency in
 *       [1, 1000000], and config_backends_for finds it for each of its models;
 *   (d) every [server]/[timeouts]/[limits]/[health] number is within the table's bounds
 *       (copied here), workers >= 1, max_body_memory >= max_body_bytes; listen is
 *       "HOST:PORT" or "[HOST]:PORT" with listen_host = HOST (not empty) and listen_port =
 *       PORT <= 65535; the log level is one of the four;
 *   (e) auth is on when there are keys (or an empty [keys], which is refused); key names
 *       are unique; each key has a secret (not empty, key_len its length, unique among
 *       secrets, config_key_lookup finds it) or a SHA-256; weight in [1, 1000], a priority of
 *       the three, limits resolved from [limits] (never CFG_UNSET), allowed models not empty;
 *   (f) config_dump's output, with each masked key given back its value, loads again and
 *       gives the same config (numbers, strings, backends, models, keys; api_key only as
 *       present or absent, since the dump masks it). */
#include "core/config.h"

#include "core/log.h"

#include "tests/fuzz/fuzz.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);

#define NAME "fuzz.ini"
#define DUMP_NAME "dump.ini"
#define MAX_SECTION_NAME 49 /* what libinih keeps of a section name; "backend." is 8 of them */

extern char **environ;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* collect first: unsetenv changes environ */
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (!strncmp(*e, "LLMGATE_", 8)) {
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
                CHECK(n < sizeof(name));
                memcpy(name, *e, n);
                name[n] = '\0';
                break;
            }
        }
        if (!name[0])
            break;
        CHECK(unsetenv(name) == 0);
    }
    return 0;
}

/* The table's bounds, copied (not shared) so a drift is noticed. */
struct bound {
    const char *what;
    size_t offset;
    int is_u64;
    uint64_t min, max;
};
#define AT(f) #f, offsetof(struct config, f)
static const struct bound bounds[] = {
    {AT(max_body_bytes), 1, 1024, 1ull << 30},
    {AT(max_body_memory), 1, 1024, 1ull << 40},
    {AT(threads), 0, 1, 256},
    {AT(workers), 0, 1, 256}, /* 0 in the file means the number of cores */
    {AT(max_connections), 0, 16, 1000000},
    {AT(max_connections_per_ip), 0, 0, 1000000},
    {AT(client_header_timeout_s), 0, 1, 3600},
    {AT(client_body_timeout_s), 0, 1, 3600},
    {AT(client_body_deadline_s), 0, 0, 86400},
    {AT(keepalive_timeout_s), 0, 1, 3600},
    {AT(stream_buffer_bytes), 1, 16384, 16ull << 20},
    {AT(connect_ms), 0, 1, 600000},
    {AT(request_s), 0, 1, 86400},
    {AT(drain_s), 0, 0, 3600},
    {AT(max_inflight), 0, 1, 1000000},
    {AT(queue_capacity), 0, 0, 1000000},
    {AT(queue_timeout_ms), 0, 1, 3600000},
    {AT(service_time_prior_ms), 0, 1, 3600000},
    {AT(key_max_concurrency), 0, 0, 1000000},
    {AT(key_rpm), 0, 0, 100000000},
    {AT(key_tpm), 0, 0, 1000000000},
    {AT(health_interval_ms), 0, 0, 3600000},
};

static uint64_t field(const struct config *c, const struct bound *b)
{
    const char *p = (const char *)c + b->offset;
    return b->is_u64 ? *(const uint64_t *)(const void *)p : *(const unsigned *)(const void *)p;
}

static void check_msg(const char *m, const char *name, size_t max_line)
{
    size_t nl = strlen(name);
    CHECK(!strncmp(m, name, nl) && m[nl] == ':');
    const char *p = m + nl + 1;
    if (*p == ' ') {
        CHECK(p[1] != '\0');
        return;
    }
    CHECK(isdigit((unsigned char)*p) && *p != '0');
    size_t line = 0;
    for (; isdigit((unsigned char)*p); p++) {
        line = line * 10 + (size_t)(*p - '0');
        CHECK(line <= max_line);
    }
    CHECK(line >= 1 && p[0] == ':' && p[1] == ' ' && p[2] != '\0');
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* listen = "HOST:PORT" or "[HOST]:PORT", parsed here independently. */
static void check_listen(const struct config *c)
{
    CHECK(c->listen && c->listen_host && c->listen_host[0]);
    CHECK(c->listen_port <= 65535);
    const char *colon = strrchr(c->listen, ':');
    CHECK(colon && colon[1]);
    unsigned long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        CHECK(isdigit((unsigned char)*p));
        port = port * 10 + (unsigned long)(*p - '0');
        if (port > 65535)
            break;
    }
    CHECK(port == c->listen_port);
    size_t hl = (size_t)(colon - c->listen);
    const char *h = c->listen;
    if (h[0] == '[') {
        CHECK(hl >= 2 && h[hl - 1] == ']');
        h++;
        hl -= 2;
    }
    CHECK(strlen(c->listen_host) == hl && !memcmp(c->listen_host, h, hl));
}

static void check_backend(const struct config *c, size_t i, const char *text, size_t lines)
{
    const struct cfg_backend *b = &c->backends[i];
    size_t nl = strlen(b->name);
    CHECK(nl >= 1 && nl <= MAX_SECTION_NAME - 8);
    CHECK(b->index == i && b->line >= 1 && (size_t)b->line <= lines);
    for (size_t j = 0; j < i; j++)
        CHECK(strcmp(c->backends[j].name, b->name) != 0);
    char *hdr = malloc(nl + 11);
    CHECK(hdr);
    snprintf(hdr, nl + 11, "[backend.%s]", b->name);
    CHECK(strstr(text, hdr) != NULL);
    free(hdr);

    CHECK(b->url);
    size_t scheme = !strncmp(b->url, "http://", 7) ? 7 : !strncmp(b->url, "https://", 8) ? 8 : 0;
    CHECK(scheme != 0);
    size_t ul = strlen(b->url);
    CHECK(ul > scheme && b->url[scheme] != '/' && b->url[ul - 1] != '/');

    CHECK(b->models.n >= 1 && b->models.v);
    for (size_t m = 0; m < b->models.n; m++) {
        const char *s = b->models.v[m];
        size_t ml = strlen(s);
        CHECK(ml >= 1 && !strchr(s, ','));
        CHECK(!is_blank(s[0]) && !is_blank(s[ml - 1]));
        const struct cfg_backend *found[64];
        size_t n = config_backends_for(c, s, found, 64);
        int seen = 0;
        for (size_t k = 0; k < n; k++)
            seen |= found[k] == b;
        CHECK(seen || n == 64);
    }
    CHECK(b->max_concurrency >= 1 && b->max_concurrency <= 1000000);
}

static void check_accepted(const struct config *c, const char *text, size_t lines)
{
    CHECK(c->path && !strcmp(c->path, NAME));
    /* (c) */
    CHECK(c->n_backends >= 1 && c->backends);
    for (size_t i = 0; i < c->n_backends; i++)
        check_backend(c, i, text, lines);
    /* (d) */
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        uint64_t v = field(c, &bounds[i]);
        if (v < bounds[i].min || v > bounds[i].max) {
            fprintf(stderr, "fuzz_config: %s = %llu\n", bounds[i].what, (unsigned long long)v);
            CHECK(0);
        }
    }
    CHECK(c->max_body_memory >= c->max_body_bytes);
    check_listen(c);
    enum log_level lv;
    CHECK(c->log_level && log_parse_level(c->log_level, &lv) == 0);
    /* (e) */
    CHECK(c->auth == (c->n_keys > 0));
    for (size_t i = 0; i < c->n_keys; i++) {
        const struct cfg_key *k = &c->keys[i];
        CHECK(k->name && k->name[0] && (k->key || k->has_sha256));
        if (k->key) {
            CHECK(k->key[0] && k->key_len == strlen(k->key));
            CHECK(config_key_lookup(c, k->key, k->key_len) == k->name);
        }
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(c->keys[j].name, k->name) != 0);
            CHECK(!k->key || !c->keys[j].key || strcmp(c->keys[j].key, k->key) != 0);
        }
        CHECK(k->weight >= 1 && k->weight <= 1000 && k->priority < PRIO__COUNT);
        CHECK(k->max_concurrency != CFG_UNSET && k->rpm != CFG_UNSET && k->tpm != CFG_UNSET);
        for (size_t m = 0; m < k->models.n; m++)
            CHECK(k->models.v[m][0] != '\0');
    }
}

static const struct cfg_key *key_named(const struct config *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->n_keys; i++)
        if (strlen(c->keys[i].name) == n && !memcmp(c->keys[i].name, name, n))
            return &c->keys[i];
    return NULL;
}

/* config_dump's text with each masked secret given back: "NAME = <N bytes>" under [keys] as
 * "NAME=KEY", "key = <N bytes>" under [key.NAME] as "key=KEY" (never longer than the line the
 * secret came from). Every key with a secret is unmasked exactly once. */
static char *dump_unmasked(const struct config *c)
{
    char *d = NULL, *out = NULL;
    size_t dl = 0, ol = 0;
    FILE *f = open_memstream(&d, &dl);
    CHECK(f);
    config_dump(c, f);
    CHECK(fclose(f) == 0);
    FILE *o = open_memstream(&out, &ol);
    CHECK(o);
    int in_keys = 0;
    const struct cfg_key *section_key = NULL;
    size_t unmasked = 0, secrets = 0;
    for (size_t i = 0; i < c->n_keys; i++)
        secrets += c->keys[i].key != NULL;
    for (char *line = d, *next; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (line[0] == '[') {
            in_keys = len == 6 && !memcmp(line, "[keys]", 6);
            section_key = len > 6 && !memcmp(line, "[key.", 5) && line[len - 1] == ']'
                              ? key_named(c, line + 5, len - 6)
                              : NULL;
            CHECK(in_keys || section_key || memcmp(line, "[key.", 5) != 0);
        }
        const char *eq = memchr(line, '=', len);
        size_t kl = eq ? (size_t)(eq - line) : 0;
        while (kl && line[kl - 1] == ' ')
            kl--;
        if (in_keys && line[0] != '[' && eq) {
            const struct cfg_key *k = key_named(c, line, kl);
            CHECK(k && k->key && line[len - 1] == '>');
            fprintf(o, "%s=%s\n", k->name, k->key);
            unmasked++;
        } else if (section_key && eq && kl == 3 && !memcmp(line, "key", 3)) {
            CHECK(section_key->key && line[len - 1] == '>');
            fprintf(o, "key=%s\n", section_key->key);
            unmasked++;
        } else {
            fprintf(o, "%.*s\n", (int)len, line);
        }
    }
    CHECK(unmasked == secrets);
    CHECK(fclose(o) == 0);
    free(d);
    return out;
}

static void same_list(const struct cfg_list *x, const struct cfg_list *y)
{
    CHECK(x->n == y->n);
    for (size_t m = 0; m < x->n; m++)
        CHECK(!strcmp(x->v[m], y->v[m]));
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void same_config(const struct config *a, const struct config *b)
{
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
        CHECK(field(a, &bounds[i]) == field(b, &bounds[i]));
    CHECK(str_eq(a->listen, b->listen) && str_eq(a->listen_host, b->listen_host));
    CHECK(a->listen_port == b->listen_port);
    CHECK(str_eq(a->log_level, b->log_level) && a->access_log == b->access_log);
    CHECK(a->auth == b->auth && a->n_keys == b->n_keys);
    for (size_t i = 0; i < a->n_keys; i++) {
        const struct cfg_key *x = &a->keys[i], *y = key_named(b, x->name, strlen(x->name));
        CHECK(y && str_eq(x->key, y->key) && x->has_sha256 == y->has_sha256);
        CHECK(!x->has_sha256 || !memcmp(x->sha256, y->sha256, sizeof(x->sha256)));
        CHECK(x->max_concurrency == y->max_concurrency && x->rpm == y->rpm && x->tpm == y->tpm);
        CHECK(x->weight == y->weight && x->priority == y->priority);
        same_list(&x->models, &y->models);
    }
    CHECK(a->n_backends == b->n_backends);
    for (size_t i = 0; i < a->n_backends; i++) {
        const struct cfg_backend *x = &a->backends[i], *y = &b->backends[i];
        CHECK(!strcmp(x->name, y->name) && str_eq(x->url, y->url));
        CHECK(x->max_concurrency == y->max_concurrency);
        CHECK((x->api_key != NULL) == (y->api_key != NULL));
        same_list(&x->models, &y->models);
    }
}

static void print_errors(const char *what, const char *text, const struct config_errors *e)
{
    fprintf(stderr, "fuzz_config: %s:\n%s\n--- messages:\n", what, text);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "%s\n", e->msgs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';

    struct config_errors errs = {0};
    struct config *cfg = config_load_string(NAME, text, &errs);
    /* (a), (b) */
    CHECK((cfg != NULL) == (errs.n == 0));
    for (size_t i = 0; i < errs.n; i++)
        check_msg(errs.msgs[i], NAME, lines + 1);
    config_errors_release(&errs);
    CHECK(errs.n == 0 && errs.msgs == NULL);
    if (!cfg) {
        free(text);
        return 0;
    }
    check_accepted(cfg, text, lines);

    /* (f) */
    char *dump = dump_unmasked(cfg);
    struct config *again = config_load_string(DUMP_NAME, dump, &errs);
    if (!again) {
        print_errors("the dump does not load", dump, &errs);
        CHECK(0);
    }
    same_config(cfg, again);
    config_free(again);
    config_errors_release(&errs);
    free(dump);
    config_free(cfg);
    free(text);
    return 0;
}
