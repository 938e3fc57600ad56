/* config.h — the gateway's configuration: an INI file (parsed by libinih), then
 * LLMGATE_<SECTION>_<KEY> environment overrides, then validation. A value is one line: blanks
 * that start a line are ignored (an indented line is not a continuation of the one above).
 * Every fixed key is a row of one table (config_rows.c) that drives parsing, overrides, defaults,
 * bounds, --check-config and --dump-config. A loaded config is immutable once published:
 * request code reads it, never writes it (the inference layer binds its runtime objects to the
 * be/up/pool/st fields before publication). A reload loads a new one beside it. */
#ifndef LG_CONFIG_H
#define LG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A comma-separated list of ids ("a, b ,c"): none empty, no blanks around, no control byte. */
struct cfg_list {
    char **v;
    size_t n;
};

struct backend;   /* inference/backend.h: the named backend object that outlives reloads */
struct upstream;  /* inference/worker.c: its URLs and headers, built per configuration */
struct rpool;     /* inference/router.c: the admission pool it belongs to */
struct key_state; /* inference/limits.c: the key's buckets and slots, kept across reloads */

struct cfg_backend {
    char *name; /* from [backend.NAME] */
    char *url;  /* base URL without trailing '/' */
    struct cfg_list models;
    unsigned max_concurrency;
    char *api_key;     /* sent upstream as Bearer, or NULL */
    bool stream_usage; /* may be sent stream_options.include_usage when the client did not */
    unsigned index;
    int line; /* of its [backend.NAME] header, for messages */
    /* Bound by the inference layer before the configuration is published, never after. */
    struct backend *be;
    struct upstream *up;
    struct rpool *pool;
};

enum cfg_priority { PRIO_HIGH = 0, PRIO_NORMAL, PRIO_LOW, PRIO__COUNT };

/* The most backends one model may be on: a request is routed among its model's backends, and
 * each request holds them as its candidates (JOB_MAX_CANDIDATES). More is a load error. */
#define CFG_MODEL_BACKENDS_MAX 8

/* A numeric key limit not written for the key: [limits]' default applies. */
#define CFG_UNSET 0xFFFFFFFFu
/* A numeric key written "auto" (a row whose default is "auto"): validation resolves it. */
#define CFG_AUTO 0xFFFFFFFEu

/* An API key: [keys] NAME = KEY, and/or a [key.NAME] section. */
struct cfg_key {
    char *name;
    char *key; /* the secret, or NULL when only its SHA-256 is configured */
    size_t key_len;
    bool has_sha256;
    unsigned char sha256[32]; /* key_sha256 = 64 hex digits */
    unsigned max_concurrency; /* requests at once; 0 = no limit */
    unsigned rpm;             /* requests per minute; 0 = no limit */
    unsigned tpm;             /* tokens per minute (estimated, then reconciled); 0 = no limit */
    unsigned weight;          /* share of a contended pool */
    unsigned priority;        /* enum cfg_priority: the highest this key may ask for */
    struct cfg_list models;   /* allowed model ids; n == 0: all */
    int line;                 /* first line that named it, for messages */
    uint64_t hash;            /* siphash24 of the value under the config's key_sip (key != NULL) */
    struct key_state *st;     /* bound before publication (inference/limits.c) */
};

struct config {
    char *path;
    /* [server] */
    char *listen;      /* as written */
    char *listen_host; /* parsed */
    unsigned listen_port;
    uint64_t max_body_bytes;
    uint64_t max_body_memory;
    unsigned threads;
    unsigned workers;
    unsigned max_connections;
    unsigned max_connections_per_ip; /* 0 = no limit ("auto" resolved at load) */
    unsigned client_header_timeout_s;
    unsigned client_body_timeout_s;
    unsigned client_body_deadline_s; /* the whole body, from its start; 0 = none */
    unsigned keepalive_timeout_s;
    unsigned client_send_timeout_s; /* reloadable: read per request */
    uint64_t stream_buffer_bytes;
    /* [timeouts] */
    unsigned connect_ms;
    unsigned request_s;
    unsigned drain_s;
    unsigned drain_grace_s; /* SIGTERM -> listener closed: /ready 503, requests served */
    /* [limits] */
    unsigned max_inflight;
    unsigned queue_capacity;
    unsigned pool_queue_capacity; /* waiting requests per model pool; 0 = queue_capacity */
    unsigned queue_timeout_ms;
    unsigned service_time_prior_ms; /* Retry-After's permit hold time before any history */
    unsigned key_max_concurrency;   /* defaults for every key; 0 = no limit */
    unsigned key_rpm;
    unsigned key_tpm;
    /* [health] */
    unsigned health_interval_ms;
    /* [log] */
    char *log_level;
    bool access_log;
    /* [admin] */
    char *admin_key; /* Bearer for the /admin/ endpoints; NULL: the admin API is off */
    /* [keys] — auth is on when the section exists */
    bool auth;
    struct cfg_key *keys;
    size_t n_keys;
    /* The keys' index, built at load (config_key_find): open addressing, slot = index + 1 into
     * keys, 0 = empty; at most half full. Plain values by siphash24 under key_sip (random per
     * load); keys known only by key_sha256 by the digest's first 8 bytes. */
    uint64_t key_sip[2];
    uint32_t *key_slots, *sha_slots;
    size_t key_mask, sha_mask;
    /* [backend.*] */
    struct cfg_backend *backends;
    size_t n_backends;
};

/* Problems found while loading, each "FILE:LINE: message" (or "env NAME: message"). */
struct config_errors {
    char **msgs;
    size_t n;
};

/* Loads `path`, applies environment overrides and validates. Returns the config, or NULL with
 * every problem appended to `errs` (which the caller releases). Any thread; no globals. */
struct config *config_load(const char *path, struct config_errors *errs);

/* Same, from a string (for tests); `name` is used in messages. */
struct config *config_load_string(const char *name, const char *text, struct config_errors *errs);

/* Frees a config; NULL is fine. */
void config_free(struct config *cfg);

/* Frees the messages of `errs` and empties it. */
void config_errors_release(struct config_errors *errs);

/* Writes the effective configuration as INI with each key's help as a comment; keys are masked. */
void config_dump(const struct config *cfg, FILE *out);

/* The keys whose values differ between a and b and that take effect only at a start
 * ("server.threads", ...): up to `max` names (static strings). Returns the count. */
size_t config_restart_diff(const struct config *a, const struct config *b, const char **out,
                           size_t max);

/* Gives dst the running process's values of those keys (so that a reloaded configuration
 * shows what runs). 0, or -1 out of memory. */
int config_restart_keep(struct config *dst, const struct config *running);

/* Backends serving `model`, in config order: up to `max` pointers into cfg. Returns the count. */
size_t config_backends_for(const struct config *cfg, const char *model,
                           const struct cfg_backend **out, size_t max);

/* Returns the key matching `key`, or NULL: one probe of the keys' index whatever their number
 * (slots chosen by a keyed hash, the candidate compared in constant time); a key configured by
 * its SHA-256 is found by the SHA-256 of `key`. */
const struct cfg_key *config_key_find(const struct config *cfg, const char *key, size_t len);

/* Whether `key` is the [admin] key (constant time in its bytes). */
bool config_admin_ok(const struct config *cfg, const char *key, size_t len);

/* The name of config_key_find's key, or NULL. */
const char *config_key_lookup(const struct config *cfg, const char *key, size_t len);

/* Whether key k may use `model` (its models list, or every model when it has none). NULL k
 * (auth off) may use all. */
bool config_key_allows(const struct cfg_key *k, const char *model);

/* "high", "normal", "low". */
const char *config_priority_name(unsigned p);

#endif
