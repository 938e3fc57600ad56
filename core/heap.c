/* heap.c — see heap.h. */
#include "core/heap.h"

#include <stdlib.h>

void heap_init(struct heap *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void heap_release(struct heap *h)
{
    free(h->v);
    heap_init(h);
}

static void heap__set(struct heap *h, unsigned i, struct heap_node *node)
{
    h->v[i] = node;
    node->pos = i + 1;
}

static void heap__up(struct heap *h, unsigned i)
{
    struct heap_node *node = h->v[i];
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (h->v[parent]->key <= node->key)
            break;
        heap__set(h, i, h->v[parent]);
        i = parent;
    }
    heap__set(h, i, node);
}

static void heap__down(struct heap *h, unsigned i)
{
    struct heap_node *node = h->v[i];
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->key < h->v[c]->key)
            c++;
        if (node->key <= h->v[c]->key)
            break;
        heap__set(h, i, h->v[c]);
        i = c;
    }
    heap__set(h, i, node);
}

int heap_push(struct heap *h, struct heap_node *node, uint64_t key)
{
    if (h->n == h->cap) {
        unsigned cap = h->cap ? h->cap * 2 : 64;
        struct heap_node **v = realloc(h->v, (size_t)cap * sizeof(struct heap_node *));
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    node->key = key;
    heap__set(h, h->n++, node);
    heap__up(h, h->n - 1);
    return 0;
}

void heap_remove(struct heap *h, struct heap_node *node)
{
    if (node->pos == 0)
        return;
    unsigned i = node->pos - 1;
    node->pos = 0;
    struct heap_node *last = h->v[--h->n];
    if (i == h->n)
        return;
    heap__set(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->key > last->key)
        heap__up(h, i);
    else
        heap__down(h, i);
}
