/* server.h — the HTTP front end: libmicrohttpd with its internal epoll thread pool and
 * suspend/resume; routing, auth, body limits, validation, error envelopes, and the streaming
 * response adapter that hands engine bytes to clients as they arrive.
 *
 * Threads: server_new/server_free/server_* lifecycle on the main thread; everything else runs
 * on libmicrohttpd's threads. See docs/ARCHITECTURE.md. */
#ifndef LG_SERVER_H
#define LG_SERVER_H

struct config;
struct pool;
struct reloader;
struct server;
struct snap;

/* Adds what the HTTP side derives from a configuration (GET /v1/models documents, the model
 * pools of GET /v1/queue) to a prepared, unpublished snapshot. 0, or -1 out of memory. */
int server_prepare(struct snap *sn);

/* Starts serving cfg->listen (the [server] keys of the configuration published at start) with
 * requests handed to `pool` and POST /admin/reload to `reloader`, which must both outlive the
 * server. Returns NULL (and logs why) when the daemon cannot start. */
struct server *server_new(const struct config *cfg, struct pool *pool, struct reloader *reloader);

/* The first step of a drain ([timeouts] drain_grace_s): GET /ready answers 503 "draining" from
 * now on, so that a balancer's health check takes the instance out, while every request, on
 * new connections and kept-alive ones, is still served as before. */
void server_grace(struct server *s);

/* Stops accepting new connections (the listening socket is closed; includes server_grace).
 * Existing connections are served to their end, but every reply from now on carries
 * `Connection: close`, and keep-alive connections are closed as soon as they are idle (those
 * idle now at once), so that their clients reconnect elsewhere. */
void server_quiesce(struct server *s);

/* Open client connections. */
unsigned server_connections(struct server *s);

/* Stops the daemon: closes every connection. No connection may be suspended (call
 * pool_abort_all and let the pool finish first). Frees the server; NULL is fine. */
void server_free(struct server *s);

#endif
