/* libFuzzer target for http/request.c's request ids: invariants, not just "no crash".
 *
 * The input is a client's X-Request-ID (libmicrohttpd hands it over as a C string: the bytes up
 * to the first NUL). For every input:
 *   (a) request_id_valid accepts exactly 1..64 bytes of [A-Za-z0-9._:-], as an independent
 *       table-free check here decides, and reads nothing past the NUL (the id is copied into
 *       an exactly sized buffer);
 *   (b) an accepted id is safe to echo as an HTTP header value and in a log line: only
 *       visible ASCII (0x21..0x7e), so no CR, LF, NUL, blank, control byte or byte >= 0x80;
 *   (c) the answer depends only on the bytes before the NUL;
 *   (d) request_id_new writes 32 lowercase hex digits and a NUL, which request_id_valid
 *       accepts, and two ids in a row differ. */
#include "http/request.h"

#include "tests/fuzz/fuzz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [A-Za-z0-9._:-] by ranges of the byte's value, not by the comparisons request.c makes. */
static int ref_char_ok(unsigned char c)
{
    static const char extra[] = "._:-";
    if (c >= 0x80)
        return 0;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return 1;
    if (c >= '0' && c <= '9')
        return 1;
    return c != 0 && memchr(extra, c, sizeof(extra) - 1) != NULL;
}

static int ref_valid(const unsigned char *s, size_t n)
{
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!ref_char_ok(s[i]))
            return 0;
    return 1;
}

static int header_safe(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;

    /* (a) */
    char *id = malloc(n + 1); /* exactly the string: a read past its NUL is an ASan report */
    CHECK(id);
    memcpy(id, data, n);
    id[n] = '\0';
    bool ok = request_id_valid(id);
    CHECK(ok == (ref_valid(data, n) != 0));
    /* (b) */
    if (ok)
        CHECK(n >= 1 && n <= 64 && header_safe(data, n));
    free(id);

    /* (c) the whole input with what follows a NUL: the same answer */
    if (nul) {
        char *all = malloc(size);
        CHECK(all);
        memcpy(all, data, size);
        CHECK(request_id_valid(all) == ok);
        free(all);
    }

    /* (d) */
    char a[33], b[33];
    memset(a, 'X', sizeof(a));
    request_id_new(a);
    request_id_new(b);
    CHECK(a[32] == '\0' && strlen(a) == 32);
    for (int i = 0; i < 32; i++)
        CHECK((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    CHECK(request_id_valid(a) && strcmp(a, b) != 0);
    return 0;
}
