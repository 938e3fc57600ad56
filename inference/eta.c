/* eta.c — see eta.h. */
#include "inference/eta.h"

#include "core/clock.h"

#include <pthread.h>
#include <stdlib.h>

#define ETA_MAX_NS (3600ull * NS_PER_S) /* Retry-After is told within an hour */
#define ETA_MIN_STEP_NS 1000ull         /* promises are never closer than 1 µs */

uint64_t eta_hold_ns(const struct eta_view *v)
{
    uint64_t h;
    if (v->hold_ns) /* measured: it wins, unless what runs now has already run longer */
        h = v->hold_ns > v->age_ns ? v->hold_ns : v->age_ns;
    else /* a first guess, or twice what the requests in flight have already run */
        h = v->prior_ns > 2 * v->age_ns ? v->prior_ns : 2 * v->age_ns;
    if (h < NS_PER_MS)
        h = NS_PER_MS;
    return h > ETA_MAX_NS ? ETA_MAX_NS : h;
}

void eta_smooth(uint64_t *hold_ns, uint64_t *dev_ns, uint64_t sample_ns)
{
    uint64_t h = *hold_ns;
    if (!h) {
        *hold_ns = sample_ns;
        *dev_ns = 0;
        return;
    }
    uint64_t d = sample_ns > h ? sample_ns - h : h - sample_ns;
    *dev_ns = (*dev_ns * 3 + d) / 4;
    *hold_ns = (h * 7 + sample_ns) / 8;
}

uint64_t eta_step_ns(const struct eta_view *v)
{
    uint64_t slots = v->slots ? v->slots : 1;
    uint64_t margin = 0;
    if (v->hold_ns) {
        margin = v->hold_ns / 16;
        if (margin < 4 * v->dev_ns)
            margin = 4 * v->dev_ns;
    }
    uint64_t s = (eta_hold_ns(v) + margin) / slots;
    return s < ETA_MIN_STEP_NS ? ETA_MIN_STEP_NS : s;
}

uint64_t eta_first_ns(const struct eta_view *v)
{
    uint64_t h = eta_hold_ns(v), step = eta_step_ns(v);
    if (v->inflight == 0 || v->inflight < v->slots)
        return step;
    /* every slot is held: the oldest ends first. Its age is at least the mean's, so the rest of
     * the mean-aged hold bounds its remainder from above (a crowd admitted at once: exact). */
    uint64_t rest = h > v->age_ns ? h - v->age_ns : 0;
    return rest < step ? step : rest;
}

uint64_t eta_ahead_ns(const struct eta *e, uint64_t now, uint64_t step_ns)
{
    uint64_t f = atomic_load_explicit(&e->frontier_ns, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&e->step_ns, memory_order_relaxed);
    if (f <= now || s == 0)
        return 0;
    if (e->no_queue && step_ns < s)
        step_ns = s; /* the promised come back when told: nothing moves earlier */
    unsigned __int128 ahead = (unsigned __int128)(f - now) * step_ns / s; /* exact */
    const uint64_t max = ETA_MAX_NS;
    return ahead >= max ? max : (uint64_t)ahead;
}

/* Records a promise at at_ns, spaced step_ns. */
static void eta_promise(struct eta *e, uint64_t at_ns, uint64_t step_ns)
{
    atomic_store_explicit(&e->frontier_ns, at_ns, memory_order_relaxed);
    atomic_store_explicit(&e->step_ns, step_ns, memory_order_relaxed);
}

uint64_t eta_tell(struct eta *const *es, unsigned n, const struct eta_view *v, uint64_t now,
                  uint64_t extra_ns, bool dry)
{
    uint64_t step = eta_step_ns(v), first = eta_first_ns(v), ahead = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t a = eta_ahead_ns(es[i], now, step);
        if (a > ahead)
            ahead = a;
    }
    /* one step past the last place promised; the first one half a step after its place
     * frees (so is every later one), not on the instant: a client that comes back a moment
     * early, or a slot that frees a moment late, must not turn a promise kept into a refusal */
    uint64_t wait = ahead ? ahead + step : 0;
    if (wait < first + step / 2)
        wait = first + step / 2;
    wait += extra_ns;
    if (wait > ETA_MAX_NS)
        wait = ETA_MAX_NS;
    for (unsigned i = 0; i < n && !dry; i++)
        eta_promise(es[i], now + wait, step);
    return now + wait;
}

uint64_t eta_ms(uint64_t at_ns, uint64_t now)
{
    uint64_t ns = at_ns > now ? at_ns - now : 0;
    uint64_t ms = (ns + NS_PER_MS - 1) / NS_PER_MS;
    return ms < 1 ? 1 : ms > 3600000 ? 3600000 : ms;
}

/* ---------------------------------------------------------------------------------------- */
/* outstanding promises by client                                                             */

#define SEEN_PROBE 8 /* entries looked at per operation */

struct seen_entry {
    uint64_t client;
    const void *scope;
    uint64_t at_ns;
};

struct eta_seen {
    pthread_mutex_t mu;
    unsigned mask;
    struct seen_entry *v;
};

struct eta_seen *eta_seen_new(unsigned slots)
{
    unsigned n = 64;
    while (n < slots && n < (1u << 24))
        n <<= 1;
    struct eta_seen *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->v = calloc(n, sizeof(*s->v));
    if (!s->v || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->v);
        free(s);
        return NULL;
    }
    s->mask = n - 1;
    return s;
}

void eta_seen_free(struct eta_seen *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->v);
    free(s);
}

static unsigned seen__slot(const struct eta_seen *s, uint64_t client, const void *scope)
{
    uint64_t x = client ^ ((uint64_t)(uintptr_t)scope * 0x9e3779b97f4a7c15ull);
    x ^= x >> 30; /* splitmix64's finaliser */
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (unsigned)x & s->mask;
}

bool eta_seen_get(struct eta_seen *s, uint64_t client, const void *scope, uint64_t now,
                  uint64_t *at_ns)
{
    if (!s || client == 0)
        return false;
    bool found = false;
    unsigned i = seen__slot(s, client, scope);
    pthread_mutex_lock(&s->mu);
    for (unsigned k = 0; k < SEEN_PROBE; k++) {
        const struct seen_entry *en = &s->v[(i + k) & s->mask];
        if (en->client == client && en->scope == scope) {
            found = en->at_ns > now;
            if (found)
                *at_ns = en->at_ns;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

void eta_seen_put(struct eta_seen *s, uint64_t client, const void *scope, uint64_t at_ns,
                  uint64_t now)
{
    if (!s || client == 0)
        return;
    unsigned i = seen__slot(s, client, scope);
    pthread_mutex_lock(&s->mu);
    struct seen_entry *use = NULL;
    for (unsigned k = 0; k < SEEN_PROBE; k++) {
        struct seen_entry *en = &s->v[(i + k) & s->mask];
        if (en->client == client && en->scope == scope) {
            use = en;
            break;
        }
        if (!use || (use->at_ns > now && en->at_ns < use->at_ns))
            use = en; /* an empty or expired entry, else the one promised soonest */
    }
    use->client = client;
    use->scope = scope;
    use->at_ns = at_ns;
    pthread_mutex_unlock(&s->mu);
}
