/* mpsc.c — see mpsc.h. */
#include "core/mpsc.h"

#include "core/tsan.h"

void mpsc_init(struct mpsc *q)
{
    __cds_wfcq_init(&q->head, &q->tail);
}

bool mpsc_push(struct mpsc *q, struct cds_wfcq_node *node)
{
    cds_wfcq_node_init(node);
    TSAN_RELEASE(node); /* the hand-off inside liburcu, invisible to TSan (core/tsan.h) */
    /* cds_wfcq_enqueue returns false when the queue was empty before the push. */
    return !cds_wfcq_enqueue(&q->head, &q->tail, node);
}

struct cds_wfcq_node *mpsc_pop(struct mpsc *q)
{
    /* Single consumer: the lock-free dequeue needs no mutual exclusion among consumers.
     * "Blocking" only waits out a producer caught between its two stores. */
    struct cds_wfcq_node *node = __cds_wfcq_dequeue_blocking(&q->head, &q->tail);
    if (node)
        TSAN_ACQUIRE(node);
    return node;
}
