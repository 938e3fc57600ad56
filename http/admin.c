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
#include <pthread.h>
#include <stdbool.h>
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

/* A POST /admin/reload waiting for the reloader's thread, its connection suspended. */
struct admin_wait {
    struct MHD_Connection *conn;
    struct server *s;
    char rid[65];
    int status; /* 200, 400, 500; 503 when the reloader took nothing (draining) */
    bool done;
    struct buf body; /* the JSON answer */
    struct admin_wait *next;
};

char http__admin_mark;

/* Takes conn's wait out of the list (admin_lock held). */
static struct admin_wait *http__admin_unlink(struct server *s, struct MHD_Connection *conn)
{
    for (struct admin_wait **pp = &s->admin_waits; *pp; pp = &(*pp)->next) {
        struct admin_wait *w = *pp;
        if (w->conn == conn) {
            *pp = w->next;
            return w;
        }
    }
    return NULL;
}

static void http__admin_release(struct admin_wait *w)
{
    buf_release(&w->body);
    free(w);
}

/* The reloader's thread, when the reload ends: the answer, then the connection resumed. Its
 * wait cannot be freed before: only a resumed connection reaches it. */
static void http__admin_done(void *arg, struct reload_result *res)
{
    struct admin_wait *w = arg;
    int status = res->status;
    if (status != 500 && http__reload_json(&w->body, res) != 0)
        status = 500;
    struct MHD_Connection *conn = w->conn;
    pthread_mutex_lock(&w->s->admin_lock);
    w->status = status;
    w->done = true;
    pthread_mutex_unlock(&w->s->admin_lock);
    MHD_resume_connection(conn);
}

/* POST /admin/reload: loading, binding and the grace period run on the reloader's thread, not
 * on this event thread (which serves other connections meanwhile). */
static enum MHD_Result http__admin_reload(struct server *s, struct MHD_Connection *conn,
                                          const char *rid, void **con_cls)
{
    struct admin_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, rid, 0);
    w->conn = conn;
    w->s = s;
    snprintf(w->rid, sizeof(w->rid), "%s", rid);
    buf_init(&w->body, HTTP_DOC_MAX);
    pthread_mutex_lock(&s->admin_lock);
    w->next = s->admin_waits;
    s->admin_waits = w;
    pthread_mutex_unlock(&s->admin_lock);
    /* suspended before the hand-over: the reloader only ever resumes a suspended connection */
    MHD_suspend_connection(conn);
    *con_cls = &http__admin_mark;
    if (reloader_submit(s->reloader, http__admin_done, w) != 0) {
        pthread_mutex_lock(&s->admin_lock);
        w->status = 503;
        w->done = true;
        pthread_mutex_unlock(&s->admin_lock);
        MHD_resume_connection(conn);
    }
    return MHD_YES;
}

enum MHD_Result http__admin_resumed(struct server *s, struct MHD_Connection *conn, void **con_cls)
{
    pthread_mutex_lock(&s->admin_lock);
    struct admin_wait *w = http__admin_unlink(s, conn);
    if (w && !w->done) { /* not ours to be woken for: wait on */
        w->next = s->admin_waits;
        s->admin_waits = w;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&s->admin_lock);
        return MHD_YES;
    }
    pthread_mutex_unlock(&s->admin_lock);
    *con_cls = NULL;
    if (!w)
        return MHD_NO;
    enum MHD_Result r;
    if (w->status == 503)
        r = http__error(s, conn, LGE_DRAINING, NULL, NULL, w->rid, 1000);
    else if (w->status == 500)
        r = http__error(s, conn, LGE_INTERNAL, "out of memory", NULL, w->rid, 0);
    else
        r = http__send(s, conn, (unsigned)w->status, "application/json", buf_data(&w->body),
                       buf_len(&w->body), w->rid, 0);
    http__admin_release(w);
    return r;
}

void http__admin_gone(struct server *s, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&s->admin_lock);
    struct admin_wait *w = http__admin_unlink(s, conn);
    pthread_mutex_unlock(&s->admin_lock);
    if (w)
        http__admin_release(w);
}

void http__admin_free(struct server *s)
{
    while (s->admin_waits) {
        struct admin_wait *w = s->admin_waits;
        s->admin_waits = w->next;
        http__admin_release(w);
    }
}

/* The admin endpoints: behind [admin] key; without one the admin API does not exist (404). */
enum MHD_Result http__admin(struct server *s, struct MHD_Connection *conn, enum route route,
                            const char *rid, const struct snap *sn, void **con_cls)
{
    const struct config *cfg = sn->cfg;
    if (!cfg->admin_key)
        return http__error(s, conn, LGE_NOT_FOUND, NULL, NULL, rid, 0);
    size_t klen = 0;
    const char *bearer = http__bearer(conn, &klen);
    if (!bearer || !config_admin_ok(cfg, bearer, klen))
        return http__error(s, conn, LGE_UNAUTHORIZED, NULL, NULL, rid, 0);
    if (route == R_ADMIN_RELOAD)
        return http__admin_reload(s, conn, rid, con_cls);
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
