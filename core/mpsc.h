/* mpsc.h — multi-producer, single-consumer queue over liburcu's wait-free concurrent queue.
 * Producers (any thread, no RCU read section, no lock) push embedded nodes; exactly one thread
 * pops. A popped node belongs to the consumer again at once. */
#ifndef LG_MPSC_H
#define LG_MPSC_H

#include <stdbool.h>
#include <urcu/wfcqueue.h>

struct mpsc {
    struct __cds_wfcq_head head;
    struct cds_wfcq_tail tail;
};

/* Initialises an empty queue. */
void mpsc_init(struct mpsc *q);

/* Enqueues `node` (wait-free; any thread). Returns true when the queue was empty before, i.e.
 * the consumer may be asleep and must be woken. */
bool mpsc_push(struct mpsc *q, struct cds_wfcq_node *node);

/* Dequeues the oldest node, or NULL when empty. Consumer thread only. */
struct cds_wfcq_node *mpsc_pop(struct mpsc *q);

#endif
