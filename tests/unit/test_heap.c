/* Deadline heap: order under random pushes and removals of arbitrary nodes, against a
 * brute-force reference. */
#include "core/heap.h"
#include "unit.h"

#include <stdint.h>

#define N 500

struct item {
    struct heap_node node;
    uint64_t key;
    int in;
};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The smallest key among the items marked in, or UINT64_MAX. */
static uint64_t ref_min(const struct item *it)
{
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < N; i++)
        if (it[i].in && it[i].key < m)
            m = it[i].key;
    return m;
}

START_TEST(test_random_ops)
{
    static struct item it[N];
    struct heap h;
    heap_init(&h);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N; i++)
        it[i] = (struct item){.key = 0};
    for (int op = 0; op < 20000; op++) {
        struct item *x = &it[rnd(&seed) % N];
        if (!x->in) {
            x->key = rnd(&seed) % 1000; /* many equal keys */
            ck_assert_int_eq(heap_push(&h, &x->node, x->key), 0);
            x->in = 1;
        } else if (rnd(&seed) % 3 == 0) {
            struct heap_node *top = heap_top(&h);
            ck_assert_ptr_nonnull(top);
            struct item *t = (struct item *)(void *)top;
            ck_assert_uint_eq(t->key, ref_min(it));
            heap_remove(&h, top);
            t->in = 0;
        } else {
            heap_remove(&h, &x->node);
            x->in = 0;
            ck_assert(!heap_node_linked(&x->node));
        }
        uint64_t m = ref_min(it);
        if (m == UINT64_MAX)
            ck_assert_ptr_null(heap_top(&h));
        else
            ck_assert_uint_eq(heap_top(&h)->key, m);
    }
    /* drains in order */
    uint64_t last = 0;
    struct heap_node *top;
    while ((top = heap_top(&h)) != NULL) {
        ck_assert_uint_ge(top->key, last);
        last = top->key;
        heap_remove(&h, top);
    }
    heap_remove(&h, &it[0].node); /* not in the heap: ignored */
    heap_release(&h);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("heap");
    TCase *tc = tcase_create("heap");
    tcase_add_test(tc, test_random_ops);
    suite_add_tcase(s, tc);
    return s;
}
