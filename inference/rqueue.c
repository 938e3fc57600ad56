/* rqueue.c — see rqueue.h. */
#include "inference/rqueue.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct rq_flow {
    struct heap_node hn;     /* in sets[set].heap[cls] while it has waiters */
    struct job *head, *tail; /* its waiters (job->r_next / r_prev), oldest first */
    struct rq_flow *next;    /* the key's flows */
    unsigned set, cls;
};

#define RQ_FLOW(node) ((struct rq_flow *)((char *)(node)-offsetof(struct rq_flow, hn)))

int rq_init(struct rqueue *q, const struct config *cfg)
{
    memset(q, 0, sizeof(*q));
    q->key_base = cfg->keys;
    q->n_keys = cfg->n_keys;
    q->keys = calloc(cfg->n_keys + 1, sizeof(*q->keys));
    return q->keys ? 0 : -1;
}

void rq_release(struct rqueue *q)
{
    for (size_t i = 0; q->keys && i <= q->n_keys; i++) {
        struct rq_flow *f = q->keys[i].flows;
        while (f) {
            struct rq_flow *next = f->next;
            free(f);
            f = next;
        }
    }
    for (unsigned s = 0; s < q->n_sets; s++)
        for (unsigned c = 0; c < PRIO__COUNT; c++)
            heap_release(&q->sets[s].heap[c]);
    free(q->sets);
    free(q->keys);
    memset(q, 0, sizeof(*q));
}

struct rq_key *rq_key_of(struct rqueue *q, const struct job *job)
{
    size_t i = job->key ? (size_t)(job->key - q->key_base) : q->n_keys;
    return &q->keys[i <= q->n_keys ? i : q->n_keys];
}

static unsigned rq__cls(const struct job *job)
{
    return job->prio < PRIO__COUNT ? job->prio : PRIO_NORMAL;
}

/* The set of job's candidate list, added if new; -1 out of memory. */
static int rq__set(struct rqueue *q, const struct job *job)
{
    size_t bytes = job->n_candidates * sizeof(const struct cfg_backend *);
    for (unsigned s = 0; s < q->n_sets; s++) {
        q->steps++;
        if (q->sets[s].n == job->n_candidates &&
            memcmp(q->sets[s].cands, job->candidates, bytes) == 0)
            return (int)s;
    }
    if (q->n_sets == q->cap_sets) {
        unsigned cap = q->cap_sets ? q->cap_sets * 2 : 4;
        struct rq_set *v = realloc(q->sets, cap * sizeof(*v));
        if (!v)
            return -1;
        q->sets = v;
        q->cap_sets = cap;
    }
    struct rq_set *st = &q->sets[q->n_sets];
    memset(st, 0, sizeof(*st));
    memcpy(st->cands, job->candidates, bytes);
    st->n = job->n_candidates;
    for (unsigned c = 0; c < PRIO__COUNT; c++)
        heap_init(&st->heap[c]);
    return (int)q->n_sets++;
}

/* The key's flow for (set, class), created if new; NULL out of memory. */
static struct rq_flow *rq__flow(struct rqueue *q, struct rq_key *k, unsigned set, unsigned cls)
{
    for (struct rq_flow *f = k->flows; f; f = f->next) {
        q->steps++;
        if (f->set == set && f->cls == cls)
            return f;
    }
    struct rq_flow *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->set = set;
    f->cls = cls;
    f->next = k->flows;
    k->flows = f;
    return f;
}

/* What fair queuing charges job, in tokens: its estimate capped at RQ_MAX_CHARGE; without
 * max_tokens, RQ_MAX_CHARGE. */
static uint64_t rq__charge(const struct job *job)
{
    if (job->cost_open || job->cost > RQ_MAX_CHARGE)
        return RQ_MAX_CHARGE;
    return job->cost ? job->cost : 1;
}

int rq_push(struct rqueue *q, struct job *job)
{
    if (job->n_candidates == 0 || job->n_candidates > JOB_MAX_CANDIDATES)
        return -1;
    int set = rq__set(q, job);
    if (set < 0)
        return -1;
    unsigned c = rq__cls(job);
    struct rq_key *k = rq_key_of(q, job);
    struct rq_flow *f = rq__flow(q, k, (unsigned)set, c);
    if (!f)
        return -1;
    struct rq_set *st = &q->sets[set];
    uint64_t weight = job->key && job->key->weight ? job->key->weight : 1;
    uint64_t start = q->vtime[c] > k->finish[c] ? q->vtime[c] : k->finish[c];
    uint64_t finish = start + (rq__charge(job) * RQ_TAG_SCALE + weight - 1) / weight;
    if (!f->head && heap_push(&st->heap[c], &f->hn, start) != 0)
        return -1;
    k->finish[c] = finish;
    job->r_tag = start;
    job->r_finish = finish;
    job->r_flow = f;
    job->r_waiting = true;
    job->r_prev = f->tail;
    job->r_next = NULL;
    if (f->tail)
        f->tail->r_next = job;
    else
        f->head = job;
    f->tail = job;
    q->queued++;
    st->queued++;
    if (k->queued++ == 0)
        q->active_keys++;
    k->queued_cls[c]++;
    return 0;
}

void rq_remove(struct rqueue *q, struct job *job, bool granted)
{
    struct rq_flow *f = job->r_flow;
    struct rq_set *st = &q->sets[f->set];
    struct rq_key *k = rq_key_of(q, job);
    unsigned c = f->cls;
    bool was_head = f->head == job;
    if (job->r_prev)
        job->r_prev->r_next = job->r_next;
    else
        f->head = job->r_next;
    if (job->r_next)
        job->r_next->r_prev = job->r_prev;
    else
        f->tail = job->r_prev;
    if (was_head) {
        heap_remove(&st->heap[c], &f->hn);
        /* cannot fail: the heap had room for this node a moment ago */
        if (f->head)
            (void)heap_push(&st->heap[c], &f->hn, f->head->r_tag);
    }
    job->r_next = job->r_prev = NULL;
    job->r_flow = NULL;
    job->r_waiting = false;
    q->queued--;
    st->queued--;
    if (--k->queued == 0)
        q->active_keys--;
    k->queued_cls[c]--;
    if (granted) {
        if (job->r_tag > q->vtime[c])
            q->vtime[c] = job->r_tag;
        if (job->r_finish > k->served[c])
            k->served[c] = job->r_finish;
    } else if (k->queued_cls[c] == 0) {
        k->finish[c] = k->served[c]; /* nothing of it waits: it owes only what it was served */
    } else if (k->finish[c] == job->r_finish) {
        k->finish[c] = job->r_tag; /* its newest left: the next starts where that one did */
    }
}

struct job *rq_best(struct rqueue *q, bool (*runnable)(const struct job *job))
{
    for (unsigned c = 0; c < PRIO__COUNT; c++) {
        struct job *best = NULL;
        for (unsigned s = 0; s < q->n_sets; s++) {
            struct heap_node *top = heap_top(&q->sets[s].heap[c]);
            q->steps++;
            if (!top)
                continue;
            struct job *head = RQ_FLOW(top)->head;
            if (best && head->r_tag >= best->r_tag)
                continue;
            if (runnable(head))
                best = head;
        }
        if (best)
            return best;
    }
    return NULL;
}

static bool rq__overlap(const struct rq_set *st, const struct cfg_backend *const *cands, unsigned n)
{
    for (unsigned i = 0; i < st->n; i++)
        for (unsigned j = 0; j < n; j++)
            if (st->cands[i] == cands[j])
                return true;
    return false;
}

unsigned rq_ahead(struct rqueue *q, const struct cfg_backend *const *cands, unsigned n,
                  const struct job *self)
{
    unsigned ahead = 0;
    for (unsigned s = 0; s < q->n_sets; s++) {
        q->steps++;
        if (q->sets[s].queued && rq__overlap(&q->sets[s], cands, n)) {
            ahead += q->sets[s].queued;
            if (self && self->r_waiting && self->r_flow && self->r_flow->set == s)
                ahead--;
        }
    }
    return ahead;
}
