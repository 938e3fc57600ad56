/* libFuzzer target for inference/usage.c's usage_strip (the engine's stream, event by event,
 * with the usage-only chunk the gateway asked for removed):
 *   (a) the bytes out do not depend on how the stream is cut into reads: the input fed whole
 *       and fed in pieces (cut points taken from the input) give the same bytes;
 *   (b) a stream without "usage" in it passes byte for byte;
 *   (c) never more bytes out than in; what is held back stays within USAGE_STRIP_HOLD;
 *   (d) whatever came before, a usage-only chunk after a blank line is removed and nothing
 *       else is: input + blank lines + chunk gives what input + blank lines gives. */
#include "core/buf.h"
#include "inference/usage.h"

#include "tests/fuzz/fuzz.h"

#include <string.h>

/* The bytes out for `in`, fed in pieces of the sizes `cuts` gives in turn (cycled; 0 = whole). */
static void run(const uint8_t *in, size_t n, const uint8_t *cuts, size_t ncuts, struct buf *out)
{
    struct usage_strip *f = usage_strip_new();
    CHECK(f);
    size_t at = 0, k = 0;
    while (at < n) {
        size_t step = ncuts ? (size_t)cuts[k++ % ncuts] * 37u % 5000u + 1u : n;
        if (step > n - at)
            step = n - at;
        /* a copy of exactly the piece: a read past it is an ASan report */
        char *piece = malloc(step);
        CHECK(piece);
        memcpy(piece, in + at, step);
        CHECK(usage_strip_feed(f, piece, step, out) == 0);
        free(piece);
        CHECK(usage_strip_held(f) <= USAGE_STRIP_HOLD);
        at += step;
    }
    CHECK(usage_strip_flush(f, out) == 0);
    CHECK(usage_strip_held(f) == 0);
    usage_strip_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf whole, split;
    buf_init(&whole, 1u << 24);
    buf_init(&split, 1u << 24);
    run(data, size, NULL, 0, &whole);
    run(data, size, data, size < 16 ? size : 16, &split);
    CHECK(buf_len(&whole) == buf_len(&split));
    CHECK(memcmp(buf_data(&whole), buf_data(&split), buf_len(&whole)) == 0);
    CHECK(buf_len(&whole) <= size);
    if (!memmem(data, size, "usage", 5)) {
        CHECK(buf_len(&whole) == size);
        CHECK(memcmp(buf_data(&whole), data, size) == 0);
    }
    static const char blank[] = "\n\n\n\n";
    static const char chunk[] =
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n";
    size_t nb = size + sizeof(blank) - 1, nc = nb + sizeof(chunk) - 1;
    uint8_t *with = malloc(nc);
    CHECK(with);
    memcpy(with, data, size);
    memcpy(with + size, blank, sizeof(blank) - 1);
    memcpy(with + nb, chunk, sizeof(chunk) - 1);
    struct buf a, b;
    buf_init(&a, 1u << 24);
    buf_init(&b, 1u << 24);
    run(with, nb, NULL, 0, &a);
    run(with, nc, data, size < 16 ? size : 16, &b);
    CHECK(buf_len(&a) == buf_len(&b));
    CHECK(memcmp(buf_data(&a), buf_data(&b), buf_len(&a)) == 0);
    free(with);
    buf_release(&a);
    buf_release(&b);
    buf_release(&whole);
    buf_release(&split);
    return 0;
}
