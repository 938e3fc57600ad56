/* fuzz.h — shared by the libFuzzer targets in tests/fuzz: an invariant check that reports the
 * failed condition with its place and aborts, so libFuzzer saves the input. */
#ifndef LG_FUZZ_H
#define LG_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
