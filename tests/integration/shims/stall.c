/* stall.c — an LD_PRELOAD shim for the shutdown tests: makes an inference worker stuck in a
 * call, as a worker blocked in a library would be. While the file named by STALL_FILE exists,
 * curl_multi_remove_handle (which a worker calls when it ends a transfer, e.g. when the drain
 * aborts a stream) sleeps STALL_MS first. Built by test_shutdown.py; never part of llmgate. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *easy)
{
    static CURLMcode (*real)(CURLM *, CURL *);
    if (!real)
        real = (CURLMcode(*)(CURLM *, CURL *))dlsym(RTLD_NEXT, "curl_multi_remove_handle");
    const char *file = getenv("STALL_FILE"), *ms = getenv("STALL_MS");
    if (file && ms && access(file, F_OK) == 0) {
        long n = strtol(ms, NULL, 10);
        struct timespec ts = {.tv_sec = n / 1000, .tv_nsec = (n % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real(multi, easy);
}
