/* tsan.h — what ThreadSanitizer cannot see, told to it; compiled only into a TSan build
 * (`make tsan`: -fsanitize=thread), empty in every other build.
 *
 * TSan knows the C11 atomics, pthreads and the libc calls it intercepts. It does not see into
 * liburcu (built without TSan, its inline parts are fences and volatile accesses), so two
 * guarantees liburcu gives are invisible to it and show up as data races that are none:
 *
 *   - the wait-free queue's hand-off (core/mpsc.c): what a producer wrote into a node before
 *     cds_wfcq_enqueue is visible to the consumer that dequeues it. TSAN_RELEASE(node) before
 *     the enqueue, TSAN_ACQUIRE(node) after the dequeue say so.
 *   - the RCU publish (inference/snap.c): what the publisher wrote into an object before
 *     rcu_assign_pointer is visible to a reader that finds it with rcu_dereference. In the TSan
 *     build LG_RCU_ASSIGN / LG_RCU_DEREF are a release store and an acquire load (what
 *     liburcu 0.14 itself compiles them to with --enable-compiler-atomic-builtins), so TSan
 *     sees both the pointer's exchange and the hand-off of what it points to; otherwise they
 *     are liburcu's rcu_assign_pointer / rcu_dereference, unchanged.
 *
 * The grace period (synchronize_rcu) needs no annotation here: every reader takes a counted
 * reference inside its read section (snap_current), and the free happens at the last
 * reference's drop, an acq_rel atomic TSan sees. There is no call_rcu in the project. */
#ifndef LG_TSAN_H
#define LG_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define LG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LG_TSAN 1
#endif
#endif

#ifdef LG_TSAN
#include <sanitizer/tsan_interface.h>
/* Everything this thread did before TSAN_RELEASE(a) happens before what a thread does after a
 * later TSAN_ACQUIRE(a) (a: any address, used as the name of the hand-off). */
#define TSAN_RELEASE(a) __tsan_release((void *)(a))
#define TSAN_ACQUIRE(a) __tsan_acquire((void *)(a))
#define LG_RCU_ASSIGN(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#define LG_RCU_DEREF(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#else
#define TSAN_RELEASE(a) ((void)0)
#define TSAN_ACQUIRE(a) ((void)0)
#define LG_RCU_ASSIGN(p, v) rcu_assign_pointer(p, v)
#define LG_RCU_DEREF(p) rcu_dereference(p)
#endif

#endif
