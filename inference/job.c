/* job.c — see job.h. */
#include "inference/job.h"

#include "inference/snap.h"
#include "inference/usage.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <sys/epoll.h>

const char *const job_paths[JOB__ENDPOINTS] = {"/v1/chat/completions", "/v1/completions",
                                               "/v1/embeddings"};

struct job *job_new(size_t max_body, size_t max_stream)
{
    struct job *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    if (pthread_mutex_init(&job->lock, NULL) != 0) {
        free(job);
        return NULL;
    }
    atomic_init(&job->refs, 1);
    job->client_fd = -1;
    job->watch_epfd = -1;
    job->park_epfd = -1;
    job->backend = -1;
    job->content_length = -1;
    job->up_clen = -1;
    job->usage_tokens = -1;
    buf_init(&job->body, max_body);
    buf_init(&job->out, max_stream);
    sse_scan_init(&job->sse);
    job->m_submit.type = JM_SUBMIT;
    job->m_cancel.type = JM_CANCEL;
    job->m_unpause.type = JM_UNPAUSE;
    job->m_grant.type = JM_GRANT;
    job->m_submit.job = job->m_cancel.job = job->m_unpause.job = job->m_grant.job = job;
    return job;
}

void job_ref(struct job *job)
{
    atomic_fetch_add_explicit(&job->refs, 1, memory_order_relaxed);
}

void job_settle(struct job *job)
{
    if (!job->lim_taken || !job->limits || job->lim_settled)
        return;
    job->lim_settled = true;
    if (!job->w_sent && job->usage_tokens < 0 && job->lim.took_request)
        limits_refund_request(job->limits, job->key); /* no engine saw it */
    if (job->usage_tokens >= 0)
        limits_reconcile(job->limits, job->key, job->lim.taken_tokens, (uint64_t)job->usage_tokens);
    else if (!job->w_sent)
        limits_reconcile(job->limits, job->key, job->lim.taken_tokens, 0);
    else if (job->stream && job->up_status >= 200 && job->up_status < 300 && job->events)
        /* a stream without usage (an engine not to be asked, or one that ignored the
         * question): about a token per event (vLLM, llama.cpp and Ollama send one each) */
        limits_reconcile(job->limits, job->key, job->lim.taken_tokens,
                         job->prompt_est + job->events);
}

void job_unref(struct job *job)
{
    if (!job || atomic_fetch_sub_explicit(&job->refs, 1, memory_order_acq_rel) != 1)
        return;
    job_settle(job); /* a job the worker never had */
    job_release_body(job);
    buf_release(&job->out);
    free(job->w_tail);
    usage_strip_free(job->w_strip);
    free(job->model);
    pthread_mutex_destroy(&job->lock);
    snap_put(job->snap);
    free(job);
}

void job_release_body(struct job *job)
{
    buf_release(&job->body);
    if (job->body_mem && job->body_mem_held)
        atomic_fetch_sub_explicit(job->body_mem, job->body_mem_held, memory_order_relaxed);
    job->body_mem_held = 0;
}

void job__watch_locked(struct job *job, int epfd)
{
    if (job->client_fd < 0 || job->watch_epfd >= 0 || !(job->suspended || job->parked) ||
        job->h_closed)
        return;
    /* EPOLLHUP and EPOLLERR are always reported; EPOLLRDHUP (the client's FIN) is a question
     * the worker answers (worker__client_event) and then stops asking */
    struct epoll_event ev = {.events = job->watch_hup_only ? 0u : (uint32_t)EPOLLRDHUP,
                             .data.u64 = (uint64_t)(uintptr_t)job};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, job->client_fd, &ev) == 0)
        job->watch_epfd = epfd;
}

void job__resume_locked(struct job *job)
{
    if (job->watch_epfd >= 0) {
        epoll_ctl(job->watch_epfd, EPOLL_CTL_DEL, job->client_fd, NULL);
        job->watch_epfd = -1;
    }
    if (job->suspended) {
        job->suspended = false;
        job->resume_pending = true;
    }
    if (job->parked) {
        job->parked = false;
        if (!job->h_closed && job->unpark)
            job->unpark(job); /* the connection is open: its close waits for this lock */
    }
}

void job__unlock(struct job *job)
{
    bool resume = job->resume_pending;
    job->resume_pending = false;
    pthread_mutex_unlock(&job->lock);
    if (resume)
        MHD_resume_connection(job->conn);
}
