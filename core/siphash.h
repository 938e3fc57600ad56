/* SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): a keyed hash
 * whose outputs an outsider cannot predict without the key, so a table keyed by it leaks
 * nothing through its timing about what it holds (the API keys' index, core/config_keys.c). */
#ifndef LG_SIPHASH_H
#define LG_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* key: 16 bytes, k0 = bytes 0..7 and k1 = bytes 8..15, little-endian. */
uint64_t siphash24(const uint64_t key[2], const void *data, size_t len);

/* For tables of names from a trusted source (the config file): a fixed key. */
uint64_t siphash24_name(const char *name);

#endif
