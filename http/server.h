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
struct server;

/* Starts serving cfg->listen with requests handed to `pool`. Both must outlive the server.
 * Returns NULL (and logs why) when the daemon cannot start. */
struct server *server_new(const struct config *cfg, struct pool *pool);

/* Stops accepting new connections (existing ones are served). */
void server_quiesce(struct server *s);

/* Open client connections. */
unsigned server_connections(struct server *s);

/* Stops the daemon: closes every connection. No connection may be suspended (call
 * pool_abort_all and let the pool finish first). Frees the server; NULL is fine. */
void server_free(struct server *s);

#endif
