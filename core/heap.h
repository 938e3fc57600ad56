/* heap.h — a binary min-heap of deadlines (timer structure). Nodes are embedded in the objects
 * they time (intrusive, like the kernel's and libuv's timers), so removing an arbitrary node is
 * O(log n) and needs no search. The heap's array grows as needed.
 * Not thread-safe: one owner (e.g. an inference worker) serialises access. */
#ifndef LG_HEAP_H
#define LG_HEAP_H

#include <stdbool.h>
#include <stdint.h>

/* Embed one per heap the object can be in. Fields are private to heap.c. */
struct heap_node {
    uint64_t key;
    unsigned pos; /* index + 1; 0 = in no heap */
};

struct heap {
    struct heap_node **v;
    unsigned n, cap;
};

/* An empty heap; no allocation. */
void heap_init(struct heap *h);

/* Frees the array; the nodes are not touched (their objects belong to the caller). */
void heap_release(struct heap *h);

/* Inserts `node` (which must be in no heap) with `key`. Returns 0, or -1 when out of memory
 * (node unchanged). */
int heap_push(struct heap *h, struct heap_node *node, uint64_t key);

/* Removes `node` if it is in the heap; a node in no heap is ignored. */
void heap_remove(struct heap *h, struct heap_node *node);

/* The node with the smallest key, or NULL when empty. */
static inline struct heap_node *heap_top(const struct heap *h)
{
    return h->n ? h->v[0] : (struct heap_node *)0;
}

static inline bool heap_node_linked(const struct heap_node *node)
{
    return node->pos != 0;
}

#endif
