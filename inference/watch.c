/* watch.c — a worker's deadlines and watches: clients that leave while a job waits, queue
 * and request deadlines, clients that stopped reading, streams whose engine went silent. */
#include "inference/worker_int.h"

#include "core/clock.h"
#include "core/log.h"
#include "inference/router.h"

#include <errno.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* ---------------------------------------------------------------------------------------- */
/* client hang-up watch (queued and waiting-for-headers phases)                             */

void worker__watch(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    job__watch_locked(job, w->epfd);
    pthread_mutex_unlock(&job->lock);
}

/* An event on a watched client socket. Returns true when the client is gone (the job must
 * end), false when it is not, or the watch ended earlier in this batch.
 *
 * EPOLLHUP or EPOLLERR: gone (its kernel reset the connection). EPOLLRDHUP alone is the
 * client's FIN, which is either a client that left or one that half-closed after its request
 * (shutdown(SHUT_WR), legal HTTP, still reading). Before any response byte, an HTTP/1.1
 * client is asked: an interim "100 Continue" (RFC 9110 15.2: a client must accept a 1xx it
 * did not expect) is written to it; a client that left answers that with a reset (EPOLLHUP),
 * a half-closed one reads it and waits on. Once a response is under way, a client that left
 * resets the next bytes written. Either way the watch then waits for EPOLLHUP/EPOLLERR only.
 * An HTTP/1.0 client cannot be asked: its FIN is taken as gone. */
bool worker__client_event(struct job *job, uint32_t events)
{
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    bool gone = false;
    pthread_mutex_lock(&job->lock);
    if (job->watch_epfd < 0) {
        pthread_mutex_unlock(&job->lock);
        return false;
    }
    if ((events & (EPOLLHUP | EPOLLERR)) || (!job->http11 && !job->responded))
        gone = true;
    else if (!job->watch_hup_only) {
        if (!job->responded && !job->probed) {
            job->probed = true;
            ssize_t n = send(job->client_fd, probe, sizeof(probe) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            gone = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
        }
        job->watch_hup_only = true;
        struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)(uintptr_t)job};
        epoll_ctl(job->watch_epfd, EPOLL_CTL_MOD, job->client_fd, &ev);
    }
    if (gone)
        job->client_gone = true;
    pthread_mutex_unlock(&job->lock);
    return gone;
}

/* Starts watching the clients of transfers that have waited WORKER_WATCH_DELAY_NS for their
 * engine (those answered by then are just dropped from the list). */
void worker__watch_young(struct worker *w, uint64_t now)
{
    struct job *job;
    while ((job = w->young_head) != NULL && (now - job->w_started_ns >= WORKER_WATCH_DELAY_NS ||
                                             w->aborting || atomic_load(&w->quit))) {
        w->young_head = job->w_young_next;
        if (!w->young_head)
            w->young_tail = NULL;
        job->w_young_next = NULL;
        if (job->wstate == JW_RUNNING)
            worker__watch(w, job); /* only if still suspended waiting for us */
        job_unref(job);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* deadlines, stalled clients, silent streams                                               */

void worker__expire_waiting(struct worker *w, uint64_t now)
{
    struct heap_node *top;
    while ((top = heap_top(&w->waits)) != NULL && top->key <= now) {
        struct job *job = (struct job *)(void *)((char *)top - offsetof(struct job, w_wait));
        enum lg_err err = now >= job->deadline_ns ? LGE_TIMEOUT : LGE_QUEUE_TIMEOUT;
        worker__end(w, job, err, NULL);
    }
}

/* request_s ran out for a transfer that is still bounded by it: 504, or an SSE error event
 * when the stream's headers were relayed already. */
void worker__expire_deadlines(struct worker *w, uint64_t now)
{
    struct heap_node *top;
    while ((top = heap_top(&w->deadlines)) != NULL && top->key <= now) {
        struct job *job = caa_container_of(top, struct job, w_deadline);
        atomic_fetch_add(&w->pool->upstream_errors, 1);
        worker__end(w, job, LGE_TIMEOUT, NULL); /* teardown takes it out of the heap */
    }
}

/* Whether the client of a response under way has taken none of the bytes waiting for it for
 * client_send_timeout_s (nginx's send_timeout: the time between two successive takes while
 * there is something to take). Then it is cut, so that a client that stopped reading does not
 * hold its engine permit (its transfer paused on a full buffer) for as long as it likes.
 * Sampled once a scan: a take is seen as a change of job->taken, which the content reader
 * counts (no clock read per chunk). Caller holds job->lock. */
static bool worker__send_stalled_locked(struct job *job, uint64_t now)
{
    bool waiting = job->responded && !job->client_gone && buf_len(&job->out) > 0;
    if (!waiting || !job->w_send_waiting || job->taken != job->w_taken_seen) {
        /* the clock starts at the first scan that sees bytes waiting (they may have come just
         * before it: never early, at most a scan late), and again at every take seen */
        job->w_send_waiting = waiting;
        job->w_taken_seen = job->taken;
        job->w_send_since_ns = now;
        return false;
    }
    return now - job->w_send_since_ns >= (uint64_t)job->snap->cfg->client_send_timeout_s * NS_PER_S;
}

/* Cuts a client that stopped taking its response (worker__send_stalled_locked): the connection
 * is shut down (libmicrohttpd then closes it), the transfer torn down and the permit freed. */
static void worker__cut_client(struct worker *w, struct job *job)
{
    pthread_mutex_lock(&job->lock);
    if (!job->client_gone && job->client_fd >= 0)
        shutdown(job->client_fd, SHUT_RDWR); /* open: the completion callback has not run */
    pthread_mutex_unlock(&job->lock);
    atomic_fetch_add(&w->pool->send_timeouts, 1);
    atomic_fetch_add(&w->pool->client_aborts, 1);
    log_info("request %s: the client took no response byte for client_send_timeout_s (%u s): "
             "cut",
             job->request_id, job->snap->cfg->client_send_timeout_s);
    worker__end(w, job, LGE_CLIENT_CLOSED, NULL);
}

/* Once a second over the running transfers: start watching the clients of streams waiting
 * for their next token (a client that leaves an idle stream is noticed without a syscall per
 * token), cut clients that stopped reading (client_send_timeout_s), and end the streams whose
 * engine went silent. A stream that left the deadline heap (its first byte came) is bounded
 * by request_s between two bytes: one that keeps flowing is never cut, one that stopped ends
 * with an SSE timeout event. A transfer paused for a slow client is not silent. */
void worker__watch_idle(struct worker *w, uint64_t now)
{
    if (now < w->next_watch_ns)
        return;
    w->next_watch_ns = now + WORKER_WATCH_SCAN_NS;
    struct job *next;
    for (struct job *job = w->running.head; job; job = next) {
        next = job->w_next;
        uint64_t idle_ns = (uint64_t)job->snap->cfg->request_s * NS_PER_S;
        pthread_mutex_lock(&job->lock);
        if (job->headers_ready)
            job__watch_locked(job, w->epfd); /* only if suspended and not watched yet */
        bool stalled = !heap_node_linked(&job->w_deadline) && !job->up_paused &&
                       now - job->w_last_byte_ns >= idle_ns;
        bool send_stalled = worker__send_stalled_locked(job, now);
        pthread_mutex_unlock(&job->lock);
        if (send_stalled) {
            worker__cut_client(w, job);
        } else if (stalled) {
            atomic_fetch_add(&w->pool->upstream_errors, 1);
            worker__end(w, job, LGE_TIMEOUT, "the inference engine stopped sending the stream");
        }
    }
}
