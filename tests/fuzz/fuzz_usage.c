/* libFuzzer target for inference/usage.c (the engine's usage at the end of its answer):
 *   (a) the result is -1 or a count in [0, 2e15], read only within the buffer (the input is
 *       copied into an exactly sized allocation: a read past it is an ASan report);
 *   (b) whatever the input, a well-formed usage object appended to it is the one read:
 *       input + "usage":{"prompt_tokens":A,"completion_tokens":B} gives A + B, and
 *       input + "usage":{..., "total_tokens":T} gives T (A, B, T taken from the input). */
#include "inference/usage.h"

#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    CHECK(copy);
    memcpy(copy, data, size);
    int64_t r = usage_tokens(copy, size);
    CHECK(r == -1 || (r >= 0 && r <= 2000000000000000LL));
    free(copy);

    unsigned a = 0, b = 0, t = 0;
    for (size_t i = 0; i < size; i++) {
        a = a * 31 + data[i];
        b = b * 17 + data[i];
        t = t * 13 + data[i];
    }
    a %= 100000, b %= 100000, t %= 1000000;
    char tail[160];
    for (int with_total = 0; with_total < 2; with_total++) {
        int n = with_total
                    ? snprintf(tail, sizeof(tail),
                               "\"usage\": {\"prompt_tokens\":%u, \"completion_tokens\":%u,"
                               " \"total_tokens\":%u}}",
                               a, b, t)
                    : snprintf(tail, sizeof(tail),
                               "\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u}", a, b);
        char *all = malloc(size + (size_t)n);
        CHECK(all);
        memcpy(all, data, size);
        memcpy(all + size, tail, (size_t)n);
        CHECK(usage_tokens(all, size + (size_t)n) == (with_total ? (int64_t)t : (int64_t)a + b));
        free(all);
    }
    return 0;
}
