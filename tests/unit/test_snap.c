/* Configuration snapshots: publication with urcu-bp, pinning by reference, the old snapshot
 * freed when its last holder lets go, and readers on threads the library never saw (as
 * libmicrohttpd's are) while a writer publishes. */
#include "core/config.h"
#include "inference/snap.h"
#include "unit.h"

#include <pthread.h>
#include <stdatomic.h>

static atomic_int freed;

static void on_free(void *arg)
{
    (void)arg;
    atomic_fetch_add(&freed, 1);
}

static struct snap *mk(void)
{
    struct config_errors e = {0};
    struct config *c =
        config_load_string("s.ini", "[backend.x]\nurl = http://127.0.0.1:1\nmodels = m\n", &e);
    ck_assert_ptr_nonnull(c);
    struct snap *s = snap_new(c);
    ck_assert_ptr_nonnull(s);
    s->http_free = on_free;
    return s;
}

START_TEST(test_pin_and_free)
{
    struct snap_slot slot;
    snap_slot_init(&slot);
    atomic_store(&freed, 0);
    ck_assert_ptr_null(snap_current(&slot));
    struct snap *a = mk();
    snap_publish(&slot, a);
    ck_assert_uint_eq(a->gen, 1);
    struct snap *pin = snap_current(&slot); /* a request in flight */
    ck_assert_ptr_eq(pin, a);
    snap_publish(&slot, mk());
    ck_assert_int_eq(atomic_load(&freed), 0); /* still pinned */
    struct snap *cur = snap_current(&slot);
    ck_assert_uint_eq(cur->gen, 2);
    snap_put(cur);
    snap_put(pin); /* the request ends: the old one goes */
    ck_assert_int_eq(atomic_load(&freed), 1);
    snap_slot_release(&slot);
    ck_assert_int_eq(atomic_load(&freed), 2);
}
END_TEST

static struct snap *reaped;

static void on_reap(struct snap *s, void *arg)
{
    *(int *)arg += 1;
    reaped = s;
}

/* A snapshot with a reap hook is handed to it by its last reference, not freed there: the
 * reloader frees large snapshots on its own thread, off the event threads. */
START_TEST(test_reap_hook)
{
    atomic_store(&freed, 0);
    int calls = 0;
    struct snap *s = mk();
    s->reap = on_reap;
    s->reap_arg = &calls;
    snap_ref(s);
    snap_put(s);
    ck_assert_int_eq(calls, 0);
    snap_put(s); /* the last one */
    ck_assert_int_eq(calls, 1);
    ck_assert_ptr_eq(reaped, s);
    ck_assert_int_eq(atomic_load(&freed), 0); /* not freed by snap_put */
    snap_free(reaped);
    ck_assert_int_eq(atomic_load(&freed), 1);
}
END_TEST

static atomic_bool stop;

static void *reader(void *arg)
{
    struct snap_slot *slot = arg;
    uint64_t last = 0;
    while (!atomic_load(&stop)) {
        struct snap *s = snap_current(slot);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_ge(s->gen, last); /* generations only grow */
        last = s->gen;
        ck_assert_uint_eq(s->cfg->n_backends, 1); /* still whole while pinned */
        snap_put(s);
    }
    return NULL;
}

START_TEST(test_readers_while_publishing)
{
    struct snap_slot slot;
    snap_slot_init(&slot);
    atomic_store(&freed, 0);
    atomic_store(&stop, false);
    snap_publish(&slot, mk());
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader, &slot), 0);
    for (int i = 0; i < 300; i++)
        snap_publish(&slot, mk());
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&freed), 300);
    snap_slot_release(&slot);
    ck_assert_int_eq(atomic_load(&freed), 301);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("snap");
    TCase *tc = tcase_create("snap");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pin_and_free);
    tcase_add_test(tc, test_readers_while_publishing);
    tcase_add_test(tc, test_reap_hook);
    suite_add_tcase(s, tc);
    return s;
}
