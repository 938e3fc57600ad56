/* peers.c — see peers.h. */
#include "http/peers.h"

#include "core/siphash.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define PEERS_BUCKETS 4096 /* a power of two; chains grow with the number of distinct hosts */

struct peer {
    struct peer *next;
    unsigned char addr[16]; /* IPv4: the first 4 bytes, the rest 0 (len says which) */
    unsigned len;
    unsigned open;
};

struct peers {
    pthread_mutex_t mu;
    unsigned limit;
    uint64_t key[2];
    struct peer *b[PEERS_BUCKETS];
};

struct peers *peers_new(unsigned limit)
{
    struct peers *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->limit = limit;
    if (getrandom(p->key, sizeof(p->key), 0) != (ssize_t)sizeof(p->key)) {
        /* no randomness yet: the clock and the table's address, still unknown outside */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        p->key[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
        p->key[1] = (uint64_t)(uintptr_t)p ^ 0x9e3779b97f4a7c15ull;
    }
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void peers_free(struct peers *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < PEERS_BUCKETS; i++)
        for (struct peer *e = p->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* The address's bytes (4 for IPv4, an IPv4-mapped IPv6 included; 16 for IPv6), or 0. */
static unsigned peers__addr(const struct sockaddr *sa, unsigned char out[16])
{
    memset(out, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(out, a->s6_addr + 12, 4);
            return 4;
        }
        memcpy(out, a->s6_addr, 16);
        return 16;
    }
    return 0;
}

/* The entry for the address, and the link that points at it. Holds p->mu. */
static struct peer **peers__find(struct peers *p, const unsigned char addr[16], unsigned len)
{
    uint64_t h = siphash24(p->key, addr, len);
    struct peer **at = &p->b[h & (PEERS_BUCKETS - 1)];
    while (*at && ((*at)->len != len || memcmp((*at)->addr, addr, len) != 0))
        at = &(*at)->next;
    return at;
}

bool peers_enter(struct peers *p, const struct sockaddr *sa)
{
    unsigned char addr[16];
    unsigned len = peers__addr(sa, addr);
    if (!len)
        return true;
    bool ok = false;
    pthread_mutex_lock(&p->mu);
    struct peer **at = peers__find(p, addr, len);
    if (!*at && (*at = calloc(1, sizeof(**at))) != NULL) {
        memcpy((*at)->addr, addr, 16);
        (*at)->len = len;
    }
    if (*at && (*at)->open < p->limit) {
        (*at)->open++;
        ok = true;
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void peers_leave(struct peers *p, const struct sockaddr *sa)
{
    unsigned char addr[16];
    unsigned len = peers__addr(sa, addr);
    if (!len)
        return;
    pthread_mutex_lock(&p->mu);
    struct peer **at = peers__find(p, addr, len);
    if (*at && (*at)->open && --(*at)->open == 0) {
        struct peer *e = *at;
        *at = e->next;
        free(e);
    }
    pthread_mutex_unlock(&p->mu);
}

unsigned peers_count(struct peers *p, const struct sockaddr *sa)
{
    unsigned char addr[16];
    unsigned len = peers__addr(sa, addr), n = 0;
    if (!len)
        return 0;
    pthread_mutex_lock(&p->mu);
    struct peer **at = peers__find(p, addr, len);
    if (*at)
        n = (*at)->open;
    pthread_mutex_unlock(&p->mu);
    return n;
}
