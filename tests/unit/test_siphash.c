/* SipHash-2-4 against the reference vectors (key 00 01 .. 0f, message 00 01 .. n-1). */
#include "core/siphash.h"
#include "unit.h"

static const uint64_t want[18] = {
    0x726fdb47dd0e0e31ull, 0x74f839c593dc67fdull, 0x0d6c8009d9a94f5aull, 0x85676696d7fb7e2dull,
    0xcf2794e0277187b7ull, 0x18765564cd99a68dull, 0xcbc9466e58fee3ceull, 0xab0200f58b01d137ull,
    0x93f5f5799a932462ull, 0x9e0082df0ba9e4b0ull, 0x7a5dbbc594ddb9f3ull, 0xf4b32f46226bada7ull,
    0x751e8fbc860ee5fbull, 0x14ea5627c0843d90ull, 0xf723ca908e7af2eeull, 0xa129ca6149be45e5ull,
    0x3f2acc7f57c29bdbull, 0x699ae9f52cbe4794ull,
};

START_TEST(test_vectors)
{
    const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    unsigned char msg[18];
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)i;
    for (size_t n = 0; n < 18; n++)
        ck_assert_msg(siphash24(key, msg, n) == want[n], "length %zu", n);
    const uint64_t other[2] = {1, 0};
    ck_assert(siphash24(other, msg, 15) != want[15]); /* the key matters */
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("siphash");
    TCase *tc = tcase_create("siphash");
    tcase_add_test(tc, test_vectors);
    suite_add_tcase(s, tc);
    return s;
}
