/* admin.c — the admin API behind [admin] key: POST /admin/reload (the reloader's outcome as
 * JSON) and GET /admin/config (the live configuration, keys masked). libmicrohttpd threads. */
#include "core/buf.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/esc.h"
#include "http/reply.h"
#include "http/server_int.h"
#include "inference/reload.h"
#include "inference/snap.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The JSON answer of POST /admin/reload for `res`. 0, or -1 out of memory. */
static int http__reload_json(struct buf *out, const struct reload_result *res)
{
    int rc;
    if (res->status == 400) {
        /* the envelope's message holds them all; "errors" lists them one by one */
        const struct config_errors *errs = &res->errs;
        struct buf msg;
        buf_init(&msg, 1u << 20);
        int mrc = buf_printf(&msg, "the configuration was not reloaded: ");
        for (size_t i = 0; i < errs->n && mrc == 0; i++)
            mrc = buf_printf(&msg, "%s%s", i ? "; " : "", errs->msgs[i]);
        if (errs->n == 0)
            mrc = mrc || buf_printf(&msg, "out of memory");
        rc = mrc || buf_printf(out, "{\"error\":{\"message\":") ||
             esc_json_buf(out, buf_data(&msg), buf_len(&msg)) ||
             buf_printf(out, ",\"type\":\"invalid_request_error\",\"param\":null,"
                             "\"code\":\"invalid_config\"},\"errors\":[");
        for (size_t i = 0; i < errs->n && rc == 0; i++)
            rc = (i ? buf_printf(out, ",") : 0) ||
                 esc_json_buf(out, errs->msgs[i], strlen(errs->msgs[i]));
        rc = rc || buf_printf(out, "]}");
        buf_release(&msg);
        return rc ? -1 : 0;
    }
    rc = buf_printf(out,
                    "{\"status\":\"reloaded\",\"generation\":%llu,\"backends\":%zu,"
                    "\"keys\":%zu,\"restart_required\":[",
                    (unsigned long long)res->gen, res->n_backends, res->n_keys);
    for (size_t i = 0; i < res->n_restart && rc == 0; i++)
        rc = buf_printf(out, "%s\"%s\"", i ? "," : "", res->restart[i]);
    rc = rc || buf_printf(out, "]}");
    return rc ? -1 : 0;
}

/* The admin endpoints: behind [admin] key; without one the admin API does not exist (404). */
enum MHD_Result http__admin(struct server *s, struct MHD_Connection *conn, enum route route,
                            const char *rid, const struct snap *sn)
{
    const struct config *cfg = sn->cfg;
    if (!cfg->admin_key)
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    size_t klen = 0;
    const char *bearer = http__bearer(conn, &klen);
    if (!bearer || !config_admin_ok(cfg, bearer, klen))
        return http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    if (route == R_ADMIN_RELOAD) {
        struct buf b;
        buf_init(&b, HTTP_DOC_MAX);
        struct reload_result res;
        int status = reloader_run(s->reloader, &res);
        if (status != 500 && http__reload_json(&b, &res) != 0)
            status = 500;
        reload_result_release(&res);
        if (status == 500) {
            buf_release(&b);
            return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
        }
        enum MHD_Result r = http__send(s, conn, (unsigned)status, "application/json", buf_data(&b),
                                       buf_len(&b), rid, 0);
        buf_release(&b);
        return r;
    }
    /* GET /admin/config: the live configuration as --dump-config writes it, keys masked */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    config_dump(cfg, f);
    int bad = ferror(f);
    fclose(f);
    enum MHD_Result r;
    struct MHD_Response *resp =
        bad ? NULL : MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    char gen[24];
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)sn->gen);
    if (!resp) {
        r = http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    } else if (!reply_hdr(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8") ||
               !reply_hdr(resp, "X-Request-ID", rid) ||
               !reply_hdr(resp, "X-Llmgate-Generation", gen)) {
        MHD_destroy_response(resp);
        r = MHD_NO;
    } else {
        r = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp);
        http__count(s, 200);
    }
    free(text);
    return r;
}
