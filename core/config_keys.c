/* config_keys.c — the API keys' index (built once at load) and the lookups request code makes
 * on a loaded configuration: a key by its value, the admin key, a key's models, the backends
 * of a model. See config.h. */
#include "core/config_int.h"

#include "core/clock.h"
#include "core/siphash.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

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
void cfg__index_keys(struct config *cfg, struct config_errors *errs)
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
