/* caller.c — who is asking, from a request's headers: the request id it brings (or a new
 * one), its API key, the priority class it may have. libmicrohttpd threads. */
#include "core/config.h"
#include "http/request.h"
#include "http/server_int.h"

#include <microhttpd.h>
#include <string.h>
#include <strings.h>

const char *http__bearer(struct MHD_Connection *conn, size_t *len)
{
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    *len = strlen(h);
    while (*len && h[*len - 1] == ' ')
        (*len)--;
    return *len ? h : NULL;
}

const char *http__request_id(struct MHD_Connection *conn, char idbuf[33])
{
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    if (!rid || !request_id_valid(rid)) {
        request_id_new(idbuf);
        rid = idbuf;
    }
    return rid;
}

/* True when auth is off or the Bearer key is known; sets *key (NULL with auth off). */
bool http__authorized(const struct config *cfg, struct MHD_Connection *conn,
                      const struct cfg_key **key)
{
    *key = NULL;
    if (!cfg->auth)
        return true;
    size_t klen = 0;
    const char *bearer = http__bearer(conn, &klen);
    *key = bearer ? config_key_find(cfg, bearer, klen) : NULL;
    return *key != NULL;
}

/* The request's priority class: its key's (normal without auth), or a lower one it asks for
 * with X-Priority (a higher one is not granted). -1 for a value that is none of the three. */
int http__priority(struct MHD_Connection *conn, const struct cfg_key *key)
{
    unsigned base = key ? key->priority : PRIO_NORMAL;
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Priority");
    if (!v)
        return (int)base;
    for (unsigned p = 0; p < PRIO__COUNT; p++)
        if (!strcasecmp(v, config_priority_name(p)))
            return (int)(p > base ? p : base);
    return -1;
}
