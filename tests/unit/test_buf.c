/* Byte buffer: ceiling, consume and compaction, the pointer of an empty buffer. */
#include "core/buf.h"
#include "unit.h"

#include <string.h>

/* A buffer that never held anything gave NULL + 0 (undefined behaviour, reported by clang's
 * UBSan; request_validate got it for an empty POST body). */
START_TEST(test_empty_data)
{
    struct buf b;
    buf_init(&b, 16);
    ck_assert_ptr_nonnull(buf_data(&b));
    ck_assert_uint_eq(buf_len(&b), 0);
    ck_assert_int_eq(buf_append(&b, "abc", 3), 0);
    buf_consume(&b, 3);
    ck_assert_ptr_nonnull(buf_data(&b));
    ck_assert_uint_eq(buf_len(&b), 0);
    buf_release(&b);
    ck_assert_ptr_nonnull(buf_data(&b));
}
END_TEST

START_TEST(test_ceiling_and_consume)
{
    struct buf b;
    buf_init(&b, 8);
    ck_assert_int_eq(buf_append(&b, "0123456", 7), 0);
    ck_assert_int_eq(buf_append(&b, "78", 2), -1); /* nothing appended past the ceiling */
    ck_assert_uint_eq(buf_len(&b), 7);
    ck_assert(buf_fits(&b, 1) && !buf_fits(&b, 2));
    buf_consume(&b, 5);
    ck_assert_int_eq(buf_printf(&b, "%d", 345678), 0);
    ck_assert_uint_eq(buf_len(&b), 8);
    ck_assert_int_eq(memcmp(buf_data(&b), "56345678", 8), 0);
    buf_release(&b);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");
    tcase_add_test(tc, test_empty_data);
    tcase_add_test(tc, test_ceiling_and_consume);
    suite_add_tcase(s, tc);
    return s;
}
