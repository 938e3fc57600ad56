/* snap.c — see snap.h. */
#include "inference/snap.h"

#include "core/config.h"
#include "core/tsan.h"

#include <stdlib.h>
#include <urcu-bp.h>

struct snap *snap_new(struct config *cfg)
{
    struct snap *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->ref, 1);
    s->cfg = cfg;
    return s;
}

void snap_ref(struct snap *s)
{
    atomic_fetch_add_explicit(&s->ref, 1, memory_order_relaxed);
}

void snap_put(struct snap *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->ref, 1, memory_order_acq_rel) != 1)
        return;
    if (s->reap)
        s->reap(s, s->reap_arg);
    else
        snap_free(s);
}

void snap_free(struct snap *s)
{
    if (s->http_free)
        s->http_free(s->http);
    if (s->unbind)
        s->unbind(s, s->unbind_arg);
    config_free(s->cfg);
    free(s);
}

void snap_slot_init(struct snap_slot *slot)
{
    slot->cur = NULL;
    slot->gen = 0;
    pthread_mutex_init(&slot->lock, NULL);
}

void snap_slot_release(struct snap_slot *slot)
{
    pthread_mutex_lock(&slot->lock);
    struct snap *old = slot->cur;
    LG_RCU_ASSIGN(slot->cur, NULL);
    pthread_mutex_unlock(&slot->lock);
    synchronize_rcu();
    snap_put(old);
    pthread_mutex_destroy(&slot->lock);
}

struct snap *snap_current(struct snap_slot *slot)
{
    rcu_read_lock();
    struct snap *s = LG_RCU_DEREF(slot->cur); /* rcu_dereference (core/tsan.h) */
    if (s)
        snap_ref(s); /* before the read section ends: the publisher waits for it */
    rcu_read_unlock();
    return s;
}

void snap_publish(struct snap_slot *slot, struct snap *s)
{
    pthread_mutex_lock(&slot->lock);
    struct snap *old = slot->cur;
    s->gen = ++slot->gen;
    LG_RCU_ASSIGN(slot->cur, s); /* rcu_assign_pointer (core/tsan.h) */
    pthread_mutex_unlock(&slot->lock);
    synchronize_rcu(); /* every reader that saw `old` has taken its reference by now */
    snap_put(old);
}
