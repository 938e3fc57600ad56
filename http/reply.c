/* reply.c — see reply.h. */
#include "http/reply.h"

#include "core/log.h"
#include "http/request.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

const char *reply_reason(unsigned status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Service Unavailable";
    }
}

void reply_retry_values(uint64_t ms, char secs[24], char millis[24])
{
    snprintf(secs, 24, "%llu", (unsigned long long)((ms + 999) / 1000));
    snprintf(millis, 24, "%llu", (unsigned long long)ms);
}

size_t reply_raw(char *out, size_t cap, enum lg_err e, const char *message, uint64_t retry_ms)
{
    char body[512], id[33], retry[96] = "";
    size_t blen = err_envelope(body, sizeof(body), e, message, NULL);
    const struct err_info *ei = err_info(e);
    request_id_new(id);
    if (retry_ms) {
        char secs[24], millis[24];
        reply_retry_values(retry_ms, secs, millis);
        snprintf(retry, sizeof(retry), "Retry-After: %s\r\nretry-after-ms: %s\r\n", secs, millis);
    }
    int h = snprintf(out, cap,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-Request-ID: %s\r\n%s\r\n",
                     ei->status, reply_reason(ei->status), blen, id, retry);
    if (h <= 0 || (size_t)h + blen > cap)
        return 0;
    memcpy(out + h, body, blen);
    return (size_t)h + blen;
}

bool reply_hdr(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) == MHD_YES)
        return true;
    log_warn("cannot add the response header %s", name);
    return false;
}

bool reply_retry_after(struct MHD_Response *r, uint64_t ms)
{
    char secs[24], millis[24];
    reply_retry_values(ms, secs, millis);
    return reply_hdr(r, MHD_HTTP_HEADER_RETRY_AFTER, secs) &&
           reply_hdr(r, "retry-after-ms", millis);
}
