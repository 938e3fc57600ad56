/*
 * ttftbench — load generator for OpenAI-compatible chat completion endpoints.
 *
 * Streaming mode (default): opens N concurrent `stream: true` chat completions and measures, per
 * stream, the time to the first SSE `data:` event (TTFT), the gap between consecutive events, the
 * end-to-end time, the number of events (frames in) against what the engine is known to send
 * (frames out), and stalls (a gap over twice the engine's token spacing).
 * Non-stream mode (--no-stream): plain POSTs, per-request latency in microseconds and RPS.
 *
 * Load shapes: closed loop with N slots for --requests R (or --rounds R = N*R), for --duration S,
 * or open loop at --rate QPS (capped at N outstanding; arrivals that find every slot busy are
 * counted as skipped, never queued, so the schedule is not bent by the server).
 *
 * Output: a human table on stdout, then exactly one JSON line (starts with '{') as the last line;
 * with --json only the JSON line. All times in the JSON are integer microseconds.
 *
 * Design: one thread, one curl multi handle driven by curl_multi_socket_action over epoll, so
 * that thousands of mostly idle streams cost nothing per wake-up. Each slot owns one easy handle
 * that is re-added for each request; connections stay in the multi's cache (keep-alive).
 * Latency samples go into fixed-size log-linear histograms (exact below 2.048 ms, 0.1% relative
 * error above), so memory does not grow with the number of requests or events.
 */
#include <curl/curl.h>
#include <json-c/json.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_OK 0
#define BENCH_ERR (-1)

/* Set by SIGINT/SIGTERM: stop, abort what runs, still print the report. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

/* ---------------------------------------------------------------------------------------------
 * Clock
 */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---------------------------------------------------------------------------------------------
 * Histogram: values in microseconds. Buckets 0..2047 are exact; above, each power of two is cut
 * into 1024 buckets. Values past the last octave land in the last bucket (max stays exact).
 */

#define HIST_SUB_BITS 11
#define HIST_EXACT (1u << HIST_SUB_BITS)
#define HIST_HALF (HIST_EXACT / 2)
#define HIST_OCTAVES 26
#define HIST_BUCKETS (HIST_EXACT + HIST_OCTAVES * HIST_HALF)

/* Fields are private to the hist_* functions. */
struct hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t *b;
};

static int hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->b = calloc(HIST_BUCKETS, sizeof(*h->b));
    return h->b ? BENCH_OK : BENCH_ERR;
}

static void hist_release(struct hist *h)
{
    free(h->b);
    h->b = NULL;
}

static size_t hist__index(uint64_t v)
{
    if (v < HIST_EXACT)
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb >= HIST_SUB_BITS + HIST_OCTAVES)
        return HIST_BUCKETS - 1;
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    uint64_t top = v >> shift; /* in [HIST_HALF, HIST_EXACT) */
    return HIST_EXACT + (size_t)(msb - HIST_SUB_BITS) * HIST_HALF + (size_t)(top - HIST_HALF);
}

/* Representative value of a bucket: the exact value, or the middle of its range. */
static uint64_t hist__value(size_t idx)
{
    if (idx < HIST_EXACT)
        return idx;
    size_t rel = idx - HIST_EXACT;
    unsigned msb = (unsigned)(rel / HIST_HALF) + HIST_SUB_BITS;
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    uint64_t top = HIST_HALF + (uint64_t)(rel % HIST_HALF);
    return (top << shift) + ((1ull << shift) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    h->b[hist__index(v)]++;
}

/* Nearest-rank percentile, q in (0, 1]; 0 when empty. Clamped to [min, max]. */
static uint64_t hist_pct(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank >= h->count)
        return h->max;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            if (i == HIST_BUCKETS - 1)
                return h->max; /* the overflow bucket has no upper bound */
            uint64_t v = hist__value(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

static uint64_t hist_mean(const struct hist *h)
{
    return h->count ? h->sum / h->count : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Options and run state
 */

struct opts {
    const char *url;
    const char *key;
    const char *model;
    const char *prompt;
    const char *mock_json;
    const char *body_file;
    unsigned concurrency;
    uint64_t requests; /* 0: not bounded by count */
    unsigned rounds;
    double duration_s; /* 0: not bounded by time */
    double rate;       /* 0: closed loop */
    unsigned max_tokens;
    double expect_gap_ms; /* 0: stalls not measured */
    long expect_events;   /* <0: unknown */
    unsigned warmup;
    double timeout_s;
    double connect_timeout_s;
    double max_time_s;
    double retry_max_s;
    bool stream;
    bool json_only;
    bool allow_fail;
    bool retry_after;
    bool progress;
};

enum slot_state { SLOT_FREE, SLOT_RUNNING, SLOT_RETRY_WAIT };

enum parse_state { PS_BOL, PS_DATA, PS_OTHER };

struct bench;

struct xfer {
    struct bench *b;
    CURL *easy;
    enum slot_state state;
    bool is_retry;
    bool done_seen;
    uint64_t start_us;
    uint64_t last_us;
    uint64_t due_us;
    uint64_t bytes;
    uint32_t events;
    long retry_after_s; /* -1: header absent */
    enum parse_state ps;
    unsigned match; /* chars of "data:" matched at the start of the current line */
    unsigned vlen;  /* chars of the data value kept in val; sizeof(val) + 1: longer */
    char val[8];    /* start of the data value, to recognise [DONE] */
    char errbuf[CURL_ERROR_SIZE];
};

#define MAX_STATUS 1000

struct status_stat {
    uint64_t n;
    struct hist *lat; /* allocated on first use */
};

/* Counters of one measured phase (warm-up gets its own, thrown away). */
struct stats {
    uint64_t started;
    uint64_t ok;
    uint64_t failed;
    uint64_t incomplete; /* 2xx stream that ended without data: [DONE] */
    uint64_t aborted;    /* still running at --max-time */
    uint64_t skipped;    /* open-loop arrivals that found every slot busy */
    uint64_t curl_err[CURL_LAST];
    struct status_stat status[MAX_STATUS];
    uint64_t streaming; /* streams that got their first event */
    uint64_t events_in;
    uint64_t events_expected;
    uint64_t events_mismatch; /* 2xx streams whose event count differs from --expect-events */
    uint64_t stalls;
    uint64_t bytes;
    uint64_t rejected;   /* 429 and 503 */
    uint64_t ra_present; /* ...of which carried a usable Retry-After */
    long ra_min;
    long ra_max;
    uint64_t retry_started;
    uint64_t retry_ok;
    uint64_t retry_status[MAX_STATUS];
    uint64_t retry_curl_err;
    struct hist ttft;
    struct hist gap;
    struct hist e2e;
    struct hist retry_lat;
    uint64_t t0_us;
    uint64_t t1_us;
};

struct bench {
    struct opts o;
    CURLM *multi;
    int epfd;
    uint64_t timer_due_us; /* UINT64_MAX: no curl timer */
    struct xfer *slots;
    unsigned *free_list;
    unsigned nfree;
    unsigned running;
    unsigned waiting_retry;
    char *body;
    size_t body_len;
    struct curl_slist *headers;
    uint64_t stall_us;
    struct stats st;
};

/* ---------------------------------------------------------------------------------------------
 * Stats
 */

static int stats_init(struct stats *s)
{
    memset(s, 0, sizeof(*s));
    if (hist_init(&s->ttft) || hist_init(&s->gap) || hist_init(&s->e2e) || hist_init(&s->retry_lat))
        return BENCH_ERR;
    s->ra_min = -1;
    s->ra_max = -1;
    return BENCH_OK;
}

static void stats_release(struct stats *s)
{
    hist_release(&s->ttft);
    hist_release(&s->gap);
    hist_release(&s->e2e);
    hist_release(&s->retry_lat);
    for (size_t i = 0; i < MAX_STATUS; i++) {
        if (s->status[i].lat) {
            hist_release(s->status[i].lat);
            free(s->status[i].lat);
        }
    }
}

static int stats_clear(struct stats *s)
{
    stats_release(s);
    return stats_init(s);
}

/* ---------------------------------------------------------------------------------------------
 * SSE event counting: a `data:` at the start of a line is one event.
 */

static void xfer__on_event(struct xfer *x, uint64_t t)
{
    struct bench *b = x->b;
    if (!x->is_retry) {
        if (x->events == 0) {
            hist_add(&b->st.ttft, t - x->start_us);
            b->st.streaming++;
        } else {
            uint64_t gap = t - x->last_us;
            hist_add(&b->st.gap, gap);
            if (b->stall_us && gap > b->stall_us)
                b->st.stalls++;
        }
    }
    x->events++;
    x->last_us = t;
}

static void xfer__end_data_line(struct xfer *x)
{
    const char *v = x->val;
    unsigned n = x->vlen;
    if (n > sizeof(x->val))
        return;
    if (n > 0 && v[0] == ' ') {
        v++;
        n--;
    }
    if (n > 0 && v[n - 1] == '\r')
        n--;
    if (n == 6 && memcmp(v, "[DONE]", 6) == 0)
        x->done_seen = true;
}

static void xfer__scan(struct xfer *x, const char *p, size_t len, uint64_t t)
{
    static const char prefix[] = "data:";
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        switch (x->ps) {
        case PS_BOL:
            if (c == prefix[x->match]) {
                if (++x->match == 5) {
                    xfer__on_event(x, t);
                    x->ps = PS_DATA;
                    x->vlen = 0;
                }
            } else if (c == '\n') {
                x->match = 0;
            } else {
                x->ps = PS_OTHER;
            }
            break;
        case PS_DATA:
            if (c == '\n') {
                xfer__end_data_line(x);
                x->ps = PS_BOL;
                x->match = 0;
            } else if (x->vlen < sizeof(x->val)) {
                x->val[x->vlen++] = c;
            } else {
                x->vlen = sizeof(x->val) + 1; /* too long to be [DONE]; stop keeping */
            }
            break;
        case PS_OTHER:
            if (c == '\n') {
                x->ps = PS_BOL;
                x->match = 0;
            }
            break;
        }
    }
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nmemb;
    x->bytes += len;
    if (x->b->o.stream)
        xfer__scan(x, ptr, len, now_us());
    return len;
}

/* Records Retry-After given in seconds; an HTTP-date or garbage counts as absent. */
static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nitems;
    static const char name[] = "retry-after:";
    const size_t nlen = sizeof(name) - 1;
    if (len > nlen && strncasecmp(buf, name, nlen) == 0) {
        char tmp[32];
        size_t vlen = len - nlen;
        if (vlen >= sizeof(tmp))
            vlen = sizeof(tmp) - 1;
        memcpy(tmp, buf + nlen, vlen);
        tmp[vlen] = '\0';
        char *end = NULL;
        errno = 0;
        long v = strtol(tmp, &end, 10);
        while (end && (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t'))
            end++;
        if (errno == 0 && end && end != tmp && *end == '\0' && v >= 0)
            x->retry_after_s = v;
    } else if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        x->retry_after_s = -1; /* a new response (e.g. after 100 Continue) */
    }
    return len;
}

/* ---------------------------------------------------------------------------------------------
 * curl multi <-> epoll glue
 */

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct bench *b = userp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {0};
    ev.data.fd = s;
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(b->epfd, op, s, &ev) != 0) {
        int alt = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        bool retried = (errno == EEXIST || errno == ENOENT) && epoll_ctl(b->epfd, alt, s, &ev) == 0;
        if (!retried)
            fprintf(stderr, "ttftbench: epoll_ctl(%d): %s\n", (int)s, strerror(errno));
    }
    if (!socketp)
        curl_multi_assign(b->multi, s, b);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct bench *b = userp;
    (void)multi;
    if (timeout_ms < 0)
        b->timer_due_us = UINT64_MAX;
    else
        b->timer_due_us = now_us() + (uint64_t)timeout_ms * 1000u;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static int xfer_setup(struct bench *b, struct xfer *x)
{
    x->b = b;
    x->easy = curl_easy_init();
    if (!x->easy)
        return BENCH_ERR;
    CURL *e = x->easy;
    long timeout_ms = (long)(b->o.timeout_s * 1000.0);
    long connect_ms = (long)(b->o.connect_timeout_s * 1000.0);
    curl_easy_setopt(e, CURLOPT_URL, b->o.url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, b->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, b->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    return BENCH_OK;
}

static int xfer_start(struct bench *b, struct xfer *x, bool is_retry)
{
    x->state = SLOT_RUNNING;
    x->is_retry = is_retry;
    x->done_seen = false;
    x->events = 0;
    x->bytes = 0;
    x->retry_after_s = -1;
    x->ps = PS_BOL;
    x->match = 0;
    x->vlen = 0;
    x->errbuf[0] = '\0';
    x->start_us = now_us();
    x->last_us = x->start_us;
    if (curl_multi_add_handle(b->multi, x->easy) != CURLM_OK) {
        x->state = SLOT_FREE;
        return BENCH_ERR;
    }
    b->running++;
    if (is_retry)
        b->st.retry_started++;
    else
        b->st.started++;
    return BENCH_OK;
}

static bool is_2xx(long status)
{
    return status >= 200 && status < 300;
}

static void slot_release(struct bench *b, struct xfer *x)
{
    x->state = SLOT_FREE;
    b->free_list[b->nfree++] = (unsigned)(x - b->slots);
}

static void finish_retry(struct bench *b, struct xfer *x, CURLcode res, long status)
{
    struct stats *s = &b->st;
    if (res != CURLE_OK) {
        s->retry_curl_err++;
    } else {
        if (status >= 0 && status < MAX_STATUS)
            s->retry_status[status]++;
        if (is_2xx(status) && (!b->o.stream || x->done_seen)) {
            s->retry_ok++;
            hist_add(&s->retry_lat, now_us() - x->start_us);
        }
    }
    slot_release(b, x);
}

static void finish(struct bench *b, struct xfer *x, CURLcode res)
{
    struct stats *s = &b->st;
    uint64_t t = now_us();
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(b->multi, x->easy);
    b->running--;
    if (x->is_retry) {
        finish_retry(b, x, res, status);
        return;
    }
    uint64_t lat = t - x->start_us;
    s->bytes += x->bytes;
    s->events_in += x->events;
    if (res != CURLE_OK) {
        s->failed++;
        s->curl_err[res]++;
        if (res != CURLE_OPERATION_TIMEDOUT && !b->o.json_only && s->curl_err[res] == 1)
            fprintf(stderr, "ttftbench: curl error %d: %s\n", (int)res,
                    x->errbuf[0] ? x->errbuf : curl_easy_strerror(res));
        if (b->o.stream && is_2xx(status) && b->o.expect_events >= 0) {
            s->events_expected += (uint64_t)b->o.expect_events;
            s->events_mismatch++;
        }
        slot_release(b, x);
        return;
    }
    if (status >= 0 && status < MAX_STATUS) {
        struct status_stat *ss = &s->status[status];
        ss->n++;
        if (!ss->lat) {
            ss->lat = malloc(sizeof(*ss->lat));
            if (ss->lat && hist_init(ss->lat) != BENCH_OK) {
                free(ss->lat);
                ss->lat = NULL;
            }
        }
        if (ss->lat)
            hist_add(ss->lat, lat);
    }
    if (is_2xx(status)) {
        if (b->o.stream && b->o.expect_events >= 0) {
            s->events_expected += (uint64_t)b->o.expect_events;
            if ((long)x->events != b->o.expect_events)
                s->events_mismatch++;
        }
        if (b->o.stream && !x->done_seen) {
            s->incomplete++;
            s->failed++;
        } else {
            s->ok++;
            hist_add(&s->e2e, lat);
        }
        slot_release(b, x);
        return;
    }
    s->failed++;
    if (status == 429 || status == 503) {
        s->rejected++;
        if (x->retry_after_s >= 0) {
            s->ra_present++;
            if (s->ra_min < 0 || x->retry_after_s < s->ra_min)
                s->ra_min = x->retry_after_s;
            if (x->retry_after_s > s->ra_max)
                s->ra_max = x->retry_after_s;
            if (b->o.retry_after) {
                double wait_s = (double)x->retry_after_s;
                if (wait_s > b->o.retry_max_s)
                    wait_s = b->o.retry_max_s;
                x->state = SLOT_RETRY_WAIT;
                x->due_us = t + (uint64_t)(wait_s * 1e6);
                b->waiting_retry++;
                return;
            }
        }
    }
    slot_release(b, x);
}

static void drain_done(struct bench *b)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(b->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        CURLcode res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            finish(b, x, res);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Main loop of one phase
 */

static void start_due_retries(struct bench *b, uint64_t t, uint64_t *next_due)
{
    *next_due = UINT64_MAX;
    if (b->waiting_retry == 0)
        return;
    for (unsigned i = 0; i < b->o.concurrency; i++) {
        struct xfer *x = &b->slots[i];
        if (x->state != SLOT_RETRY_WAIT)
            continue;
        if (x->due_us <= t) {
            b->waiting_retry--;
            if (xfer_start(b, x, true) != BENCH_OK)
                slot_release(b, x);
        } else if (x->due_us < *next_due) {
            *next_due = x->due_us;
        }
    }
}

/* epoll wait with a microsecond timeout (epoll_pwait2, Linux 5.11); falls back to rounding up
 * to milliseconds. A millisecond floor would add up to 1 ms to every request at concurrency 1. */
static int wait_events(struct bench *b, struct epoll_event *evs, int max, uint64_t wait_us)
{
    static bool no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = {(time_t)(wait_us / 1000000u), (long)(wait_us % 1000000u) * 1000};
        int n = epoll_pwait2(b->epfd, evs, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = true;
    }
    return epoll_wait(b->epfd, evs, max, (int)((wait_us + 999) / 1000));
}

static void print_progress(struct bench *b, uint64_t t)
{
    const struct stats *s = &b->st;
    fprintf(stderr,
            "progress elapsed_s=%.1f running=%u streaming=%" PRIu64 " started=%" PRIu64
            " ok=%" PRIu64 " failed=%" PRIu64 " events=%" PRIu64 "\n",
            (double)(t - s->t0_us) / 1e6, b->running, s->streaming, s->started, s->ok, s->failed,
            s->events_in);
}

/*
 * Runs one phase: `total` requests (0: unbounded) within `duration_s` (0: unbounded), closed
 * loop or at o.rate. Returns when everything started has finished, or at the hard deadline, when
 * transfers still running are removed and counted as aborted.
 */
static void run_phase(struct bench *b, uint64_t total, double duration_s, double rate)
{
    struct stats *s = &b->st;
    uint64_t t0 = now_us();
    uint64_t stop_starts = duration_s > 0 ? t0 + (uint64_t)(duration_s * 1e6) : UINT64_MAX;
    uint64_t deadline = t0 + (uint64_t)(b->o.max_time_s * 1e6);
    uint64_t interval = rate > 0 ? (uint64_t)(1e6 / rate) : 0;
    uint64_t next_arrival = t0;
    uint64_t next_progress = t0 + 500000;
    uint64_t arrivals = 0;
    s->t0_us = t0;
    struct epoll_event evs[512];

    for (;;) {
        uint64_t t = now_us();
        bool may_start = t < stop_starts && (total == 0 || arrivals < total);
        if (may_start && interval == 0) {
            while (b->nfree > 0 && (total == 0 || arrivals < total)) {
                struct xfer *x = &b->slots[b->free_list[--b->nfree]];
                arrivals++;
                if (xfer_start(b, x, false) != BENCH_OK) {
                    slot_release(b, x);
                    s->failed++;
                    break;
                }
            }
        } else if (may_start) {
            while (next_arrival <= t && t < stop_starts && (total == 0 || arrivals < total)) {
                arrivals++;
                next_arrival += interval;
                if (b->nfree == 0) {
                    s->skipped++;
                    continue;
                }
                struct xfer *x = &b->slots[b->free_list[--b->nfree]];
                if (xfer_start(b, x, false) != BENCH_OK) {
                    slot_release(b, x);
                    s->failed++;
                }
            }
        }
        uint64_t next_retry;
        start_due_retries(b, t, &next_retry);

        may_start = t < stop_starts && (total == 0 || arrivals < total);
        if (!may_start && b->running == 0 && b->waiting_retry == 0)
            break;
        if (t >= deadline || stop_signal)
            break;
        if (b->o.progress && t >= next_progress) {
            print_progress(b, t);
            next_progress = t + 500000;
        }

        uint64_t wake = deadline;
        if (b->timer_due_us < wake)
            wake = b->timer_due_us;
        if (next_retry < wake)
            wake = next_retry;
        if (interval && may_start && next_arrival < wake)
            wake = next_arrival;
        if (duration_s > 0 && may_start && stop_starts < wake)
            wake = stop_starts;
        if (b->o.progress && next_progress < wake)
            wake = next_progress;
        t = now_us();
        uint64_t wait_us = wake > t ? wake - t : 0;
        if (wait_us > 1000000)
            wait_us = 1000000;
        int n = wait_events(b, evs, (int)(sizeof(evs) / sizeof(evs[0])), wait_us);
        int still;
        for (int i = 0; i < n; i++) {
            int flags = 0;
            if (evs[i].events & EPOLLIN)
                flags |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
            if (evs[i].events & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(b->multi, evs[i].data.fd, flags, &still);
        }
        if (now_us() >= b->timer_due_us) {
            b->timer_due_us = UINT64_MAX;
            curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &still);
        }
        drain_done(b);
    }

    /* Hard deadline or stop signal: whatever still runs is aborted. */
    for (unsigned i = 0; i < b->o.concurrency; i++) {
        struct xfer *x = &b->slots[i];
        if (x->state == SLOT_RUNNING) {
            curl_multi_remove_handle(b->multi, x->easy);
            b->running--;
            if (!x->is_retry) {
                s->aborted++;
                s->failed++;
            }
            slot_release(b, x);
        } else if (x->state == SLOT_RETRY_WAIT) {
            b->waiting_retry--;
            slot_release(b, x);
        }
    }
    s->t1_us = now_us();
}

/* ---------------------------------------------------------------------------------------------
 * Report
 */

static json_object *hist_json(const struct hist *h, bool with_p90)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "n", json_object_new_int64((int64_t)h->count));
    json_object_object_add(o, "p50", json_object_new_int64((int64_t)hist_pct(h, 0.50)));
    if (with_p90)
        json_object_object_add(o, "p90", json_object_new_int64((int64_t)hist_pct(h, 0.90)));
    json_object_object_add(o, "p95", json_object_new_int64((int64_t)hist_pct(h, 0.95)));
    json_object_object_add(o, "p99", json_object_new_int64((int64_t)hist_pct(h, 0.99)));
    json_object_object_add(o, "max", json_object_new_int64((int64_t)h->max));
    json_object_object_add(o, "min", json_object_new_int64((int64_t)h->min));
    json_object_object_add(o, "mean", json_object_new_int64((int64_t)hist_mean(h)));
    return o;
}

static double elapsed_s(const struct stats *s)
{
    double e = (double)(s->t1_us - s->t0_us) / 1e6;
    return e > 0 ? e : 1e-9;
}

static json_object *report_json(const struct bench *b)
{
    const struct stats *s = &b->st;
    const struct opts *o = &b->o;
    json_object *j = json_object_new_object();
    json_object_object_add(j, "tool", json_object_new_string("ttftbench"));
    json_object_object_add(j, "mode", json_object_new_string(o->stream ? "stream" : "no-stream"));
    json_object_object_add(j, "url", json_object_new_string(o->url));
    json_object_object_add(j, "concurrency", json_object_new_int64(o->concurrency));
    json_object_object_add(j, "rate", json_object_new_double(o->rate));
    json_object_object_add(j, "requests", json_object_new_int64((int64_t)s->started));
    json_object_object_add(j, "ok", json_object_new_int64((int64_t)s->ok));
    json_object_object_add(j, "failed", json_object_new_int64((int64_t)s->failed));
    json_object_object_add(j, "incomplete", json_object_new_int64((int64_t)s->incomplete));
    json_object_object_add(j, "aborted", json_object_new_int64((int64_t)s->aborted));
    json_object_object_add(j, "skipped", json_object_new_int64((int64_t)s->skipped));
    json_object_object_add(j, "stopped_by_signal", json_object_new_boolean(stop_signal != 0));
    json_object_object_add(j, "elapsed_s", json_object_new_double(elapsed_s(s)));
    json_object_object_add(j, "rps", json_object_new_double((double)s->ok / elapsed_s(s)));
    json_object_object_add(j, "bytes", json_object_new_int64((int64_t)s->bytes));

    json_object *st = json_object_new_object();
    json_object *bs = json_object_new_object();
    for (int i = 0; i < MAX_STATUS; i++) {
        if (!s->status[i].n)
            continue;
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        json_object_object_add(st, k, json_object_new_int64((int64_t)s->status[i].n));
        if (s->status[i].lat)
            json_object_object_add(bs, k, hist_json(s->status[i].lat, true));
    }
    json_object_object_add(j, "status", st);
    json_object_object_add(j, "latency_by_status_us", bs);
    json_object *ce = json_object_new_object();
    for (int i = 0; i < CURL_LAST; i++) {
        if (!s->curl_err[i])
            continue;
        json_object_object_add(ce, curl_easy_strerror((CURLcode)i),
                               json_object_new_int64((int64_t)s->curl_err[i]));
    }
    json_object_object_add(j, "curl_errors", ce);

    json_object_object_add(j, o->stream ? "e2e_us" : "latency_us", hist_json(&s->e2e, true));
    if (o->stream) {
        json_object_object_add(j, "ttft_us", hist_json(&s->ttft, true));
        json_object_object_add(j, "gap_us", hist_json(&s->gap, true));
        json_object_object_add(j, "streams_started_events",
                               json_object_new_int64((int64_t)s->streaming));
        json_object_object_add(j, "events_in", json_object_new_int64((int64_t)s->events_in));
        json_object_object_add(
            j, "events_expected",
            o->expect_events >= 0 ? json_object_new_int64((int64_t)s->events_expected) : NULL);
        json_object_object_add(j, "events_mismatch_streams",
                               json_object_new_int64((int64_t)s->events_mismatch));
        json_object_object_add(j, "stall_threshold_us",
                               json_object_new_int64((int64_t)b->stall_us));
        json_object_object_add(j, "stalls",
                               b->stall_us ? json_object_new_int64((int64_t)s->stalls) : NULL);
    }
    json_object *ra = json_object_new_object();
    json_object_object_add(ra, "rejected", json_object_new_int64((int64_t)s->rejected));
    json_object_object_add(ra, "present", json_object_new_int64((int64_t)s->ra_present));
    json_object_object_add(ra, "min_s", json_object_new_int64(s->ra_min));
    json_object_object_add(ra, "max_s", json_object_new_int64(s->ra_max));
    json_object_object_add(j, "retry_after", ra);
    if (o->retry_after) {
        json_object *r = json_object_new_object();
        json_object *rs = json_object_new_object();
        for (int i = 0; i < MAX_STATUS; i++) {
            if (!s->retry_status[i])
                continue;
            char k[16];
            snprintf(k, sizeof(k), "%d", i);
            json_object_object_add(rs, k, json_object_new_int64((int64_t)s->retry_status[i]));
        }
        json_object_object_add(r, "attempted", json_object_new_int64((int64_t)s->retry_started));
        json_object_object_add(r, "ok", json_object_new_int64((int64_t)s->retry_ok));
        json_object_object_add(r, "curl_errors", json_object_new_int64((int64_t)s->retry_curl_err));
        json_object_object_add(r, "status", rs);
        json_object_object_add(r, "latency_us", hist_json(&s->retry_lat, false));
        json_object_object_add(j, "retry", r);
    }
    return j;
}

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static void report_human(const struct bench *b)
{
    const struct stats *s = &b->st;
    const struct opts *o = &b->o;
    printf("ttftbench %s  %s\n", o->stream ? "stream" : "no-stream", o->url);
    printf("  concurrency %u%s, %" PRIu64 " requests in %.2f s, %.1f ok/s\n", o->concurrency,
           o->rate > 0 ? " (open loop)" : "", s->started, elapsed_s(s),
           (double)s->ok / elapsed_s(s));
    printf("  ok %" PRIu64 "  failed %" PRIu64, s->ok, s->failed);
    if (s->incomplete)
        printf("  incomplete %" PRIu64, s->incomplete);
    if (s->aborted)
        printf("  aborted %" PRIu64, s->aborted);
    if (s->skipped)
        printf("  skipped-arrivals %" PRIu64, s->skipped);
    printf("  status:");
    for (int i = 0; i < MAX_STATUS; i++)
        if (s->status[i].n)
            printf(" %d=%" PRIu64, i, s->status[i].n);
    for (int i = 0; i < CURL_LAST; i++)
        if (s->curl_err[i])
            printf(" [%s]=%" PRIu64, curl_easy_strerror((CURLcode)i), s->curl_err[i]);
    printf("\n");
    printf("  %-14s %10s %10s %10s %10s %10s\n", "(ms)", "p50", "p90", "p99", "max", "mean");
    const struct hist *rows[3] = {&s->e2e, &s->ttft, &s->gap};
    const char *names[3] = {o->stream ? "end-to-end" : "latency", "TTFT", "inter-event gap"};
    for (int r = 0; r < (o->stream ? 3 : 1); r++) {
        const struct hist *h = rows[r];
        printf("  %-14s %10.3f %10.3f %10.3f %10.3f %10.3f\n", names[r], ms(hist_pct(h, 0.5)),
               ms(hist_pct(h, 0.9)), ms(hist_pct(h, 0.99)), ms(h->max), ms(hist_mean(h)));
    }
    if (o->stream) {
        printf("  events in %" PRIu64, s->events_in);
        if (o->expect_events >= 0)
            printf(" / sent %" PRIu64 " (%ld per stream), streams with a different count %" PRIu64,
                   s->events_expected, o->expect_events, s->events_mismatch);
        printf("\n");
        if (b->stall_us)
            printf("  stalls %" PRIu64 " (gaps over %.1f ms)\n", s->stalls, ms(b->stall_us));
    }
    for (int i = 0; i < MAX_STATUS; i++) {
        if (!s->status[i].n || is_2xx(i) || !s->status[i].lat)
            continue;
        const struct hist *h = s->status[i].lat;
        printf("  status %d: n=%" PRIu64 " latency p50 %.3f p99 %.3f max %.3f ms\n", i,
               s->status[i].n, ms(hist_pct(h, 0.5)), ms(hist_pct(h, 0.99)), ms(h->max));
    }
    if (s->rejected)
        printf("  Retry-After on %" PRIu64 " of %" PRIu64 " 429/503 (min %ld s, max %ld s)\n",
               s->ra_present, s->rejected, s->ra_min, s->ra_max);
    if (o->retry_after)
        printf("  retried after Retry-After: %" PRIu64 ", got 2xx: %" PRIu64 "\n", s->retry_started,
               s->retry_ok);
}

/* ---------------------------------------------------------------------------------------------
 * Setup
 */

/* ---------------------------------------------------------------------------------------------
 * --self-test: the histogram and the SSE event counter, without a network.
 */

static int self_test_hist(void)
{
    struct hist h;
    int bad = 0;
    if (hist_init(&h) != BENCH_OK)
        return 1;
    for (uint64_t v = 1; v <= 1000000; v++)
        hist_add(&h, v);
    const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double want = qs[i] * 1e6, got = (double)hist_pct(&h, qs[i]);
        if (got < want * 0.999 || got > want * 1.001) {
            fprintf(stderr, "self-test: hist p%.1f = %.0f, want %.0f\n", qs[i] * 100, got, want);
            bad = 1;
        }
    }
    if (hist_pct(&h, 1.0) != 1000000 || h.min != 1 || hist_mean(&h) != 500000)
        bad = 1;
    hist_release(&h);
    if (hist_init(&h) != BENCH_OK)
        return 1;
    for (uint64_t v = 0; v < HIST_EXACT; v++)
        hist_add(&h, v);
    if (hist_pct(&h, 0.5) != HIST_EXACT / 2 - 1)
        bad = 1;
    hist_add(&h, 1ull << 45);
    if (hist_pct(&h, 1.0) != 1ull << 45)
        bad = 1;
    hist_release(&h);
    return bad;
}

static int self_test_sse(void)
{
    static const char stream[] =
        ": keep-alive\n\nevent: x\ndata: {\"a\":1}\n\ndata:{\"b\":\"data: no\"}\r\n\r\n"
        "id: 3\ndata: [DONE]\n\n";
    struct bench b;
    struct xfer x;
    int bad = 0;
    memset(&b, 0, sizeof(b));
    if (stats_init(&b.st) != BENCH_OK)
        return 1;
    b.o.stream = true;
    /* Every way of cutting the stream in two must count 3 events and see [DONE]. */
    for (size_t cut = 0; cut <= sizeof(stream) - 1; cut++) {
        memset(&x, 0, sizeof(x));
        x.b = &b;
        x.ps = PS_BOL;
        xfer__scan(&x, stream, cut, 1);
        xfer__scan(&x, stream + cut, sizeof(stream) - 1 - cut, 2);
        if (x.events != 3 || !x.done_seen) {
            fprintf(stderr, "self-test: sse cut %zu: %u events, done %d\n", cut, x.events,
                    x.done_seen);
            bad = 1;
        }
    }
    memset(&x, 0, sizeof(x));
    x.b = &b;
    x.ps = PS_BOL;
    static const char notdone[] = "data: [DONE]x\n\ndata: [DON\n\n";
    xfer__scan(&x, notdone, sizeof(notdone) - 1, 1);
    if (x.events != 2 || x.done_seen)
        bad = 1;
    stats_release(&b.st);
    return bad;
}

static int self_test(void)
{
    int bad = self_test_hist() | self_test_sse();
    printf("ttftbench self-test: %s\n", bad ? "FAILED" : "ok");
    return bad;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ttftbench --url URL [options]\n"
            "  --url URL              chat completions endpoint (required)\n"
            "  --key K                bearer token\n"
            "  --model M              model name (default mock-model)\n"
            "  --prompt TEXT          user message (default: a short greeting)\n"
            "  --concurrency N        concurrent requests / open slots (default 1)\n"
            "  --requests R           total requests (default: N x rounds)\n"
            "  --rounds R             R requests per slot (default 1)\n"
            "  --duration S           keep starting requests for S seconds\n"
            "  --rate QPS             open loop: start QPS requests per second (cap N)\n"
            "  --max-tokens T         max_tokens in the body (default 16)\n"
            "  --mock JSON            add \"mock\":JSON to the body (mockllm per-request shape)\n"
            "  --body FILE            send this body as is (overrides the above)\n"
            "  --expect-gap-ms G      engine token spacing; a gap over 2G is a stall\n"
            "  --expect-events E      events the engine sends per stream (frames out)\n"
            "  --no-stream            plain POST, per-request latency\n"
            "  --warmup W             W requests first, not counted\n"
            "  --timeout S            per-request timeout (default 120)\n"
            "  --connect-timeout S    connect timeout (default 10)\n"
            "  --max-time S           hard cap on the whole run (default 900)\n"
            "  --retry-after          retry a 429/503 once after its Retry-After\n"
            "  --retry-max S          cap on a Retry-After wait (default 60)\n"
            "  --progress             progress lines on stderr every 0.5 s\n"
            "  --allow-fail           exit 0 even if requests failed\n"
            "  --json                 print only the JSON line\n"
            "  --self-test            check the histogram and the SSE parser, then exit\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || end == s || *end || s[0] == '-')
        return BENCH_ERR;
    *out = (uint64_t)v;
    return BENCH_OK;
}

static int parse_uint(const char *s, unsigned *out, unsigned max)
{
    uint64_t v;
    if (parse_u64(s, &v) || v > max)
        return BENCH_ERR;
    *out = (unsigned)v;
    return BENCH_OK;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !end || end == s || *end || !(v >= 0))
        return BENCH_ERR;
    *out = v;
    return BENCH_OK;
}

enum {
    OPT_URL = 256,
    OPT_KEY,
    OPT_MODEL,
    OPT_PROMPT,
    OPT_CONC,
    OPT_REQ,
    OPT_ROUNDS,
    OPT_DUR,
    OPT_RATE,
    OPT_MAXTOK,
    OPT_MOCK,
    OPT_BODY,
    OPT_GAP,
    OPT_EVENTS,
    OPT_NOSTREAM,
    OPT_WARMUP,
    OPT_TIMEOUT,
    OPT_CTIMEOUT,
    OPT_MAXTIME,
    OPT_RETRY,
    OPT_RETRYMAX,
    OPT_PROGRESS,
    OPT_ALLOWFAIL,
    OPT_JSON,
    OPT_HELP,
    OPT_SELFTEST,
};

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"key", required_argument, NULL, OPT_KEY},
        {"model", required_argument, NULL, OPT_MODEL},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"concurrency", required_argument, NULL, OPT_CONC},
        {"requests", required_argument, NULL, OPT_REQ},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"duration", required_argument, NULL, OPT_DUR},
        {"rate", required_argument, NULL, OPT_RATE},
        {"max-tokens", required_argument, NULL, OPT_MAXTOK},
        {"mock", required_argument, NULL, OPT_MOCK},
        {"body", required_argument, NULL, OPT_BODY},
        {"expect-gap-ms", required_argument, NULL, OPT_GAP},
        {"expect-events", required_argument, NULL, OPT_EVENTS},
        {"no-stream", no_argument, NULL, OPT_NOSTREAM},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CTIMEOUT},
        {"max-time", required_argument, NULL, OPT_MAXTIME},
        {"retry-after", no_argument, NULL, OPT_RETRY},
        {"retry-max", required_argument, NULL, OPT_RETRYMAX},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"allow-fail", no_argument, NULL, OPT_ALLOWFAIL},
        {"json", no_argument, NULL, OPT_JSON},
        {"self-test", no_argument, NULL, OPT_SELFTEST},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->model = "mock-model";
    o->prompt = "Say hello in one short sentence.";
    o->concurrency = 1;
    o->rounds = 1;
    o->max_tokens = 16;
    o->expect_events = -1;
    o->timeout_s = 120;
    o->connect_timeout_s = 10;
    o->max_time_s = 900;
    o->retry_max_s = 60;
    o->stream = true;
    int c;
    int bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        uint64_t u = 0;
        switch (c) {
        case OPT_URL:
            o->url = optarg;
            break;
        case OPT_KEY:
            o->key = optarg;
            break;
        case OPT_MODEL:
            o->model = optarg;
            break;
        case OPT_PROMPT:
            o->prompt = optarg;
            break;
        case OPT_CONC:
            bad = parse_uint(optarg, &o->concurrency, 1000000);
            break;
        case OPT_REQ:
            bad = parse_u64(optarg, &o->requests);
            break;
        case OPT_ROUNDS:
            bad = parse_uint(optarg, &o->rounds, 100000000);
            break;
        case OPT_DUR:
            bad = parse_double(optarg, &o->duration_s);
            break;
        case OPT_RATE:
            bad = parse_double(optarg, &o->rate);
            break;
        case OPT_MAXTOK:
            bad = parse_uint(optarg, &o->max_tokens, 10000000);
            break;
        case OPT_MOCK:
            o->mock_json = optarg;
            break;
        case OPT_BODY:
            o->body_file = optarg;
            break;
        case OPT_GAP:
            bad = parse_double(optarg, &o->expect_gap_ms);
            break;
        case OPT_EVENTS:
            bad = parse_u64(optarg, &u) || u > 1000000000;
            o->expect_events = (long)u;
            break;
        case OPT_NOSTREAM:
            o->stream = false;
            break;
        case OPT_WARMUP:
            bad = parse_uint(optarg, &o->warmup, 100000000);
            break;
        case OPT_TIMEOUT:
            bad = parse_double(optarg, &o->timeout_s);
            break;
        case OPT_CTIMEOUT:
            bad = parse_double(optarg, &o->connect_timeout_s);
            break;
        case OPT_MAXTIME:
            bad = parse_double(optarg, &o->max_time_s);
            break;
        case OPT_RETRY:
            o->retry_after = true;
            break;
        case OPT_RETRYMAX:
            bad = parse_double(optarg, &o->retry_max_s);
            break;
        case OPT_PROGRESS:
            o->progress = true;
            break;
        case OPT_ALLOWFAIL:
            o->allow_fail = true;
            break;
        case OPT_JSON:
            o->json_only = true;
            break;
        case OPT_SELFTEST:
            exit(self_test());
        case 'h':
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            bad = 1;
            break;
        }
        if (bad && c >= OPT_URL)
            fprintf(stderr, "ttftbench: bad value for option: %s\n", optarg ? optarg : "");
    }
    if (bad || optind != argc || !o->url || o->concurrency == 0) {
        if (!bad && !o->url)
            fprintf(stderr, "ttftbench: --url is required\n");
        usage(stderr);
        return BENCH_ERR;
    }
    if (o->requests == 0 && o->duration_s == 0)
        o->requests = (uint64_t)o->concurrency * o->rounds;
    if (o->rate > 0 && o->requests == 0 && o->duration_s == 0)
        o->requests = o->concurrency;
    if (o->max_time_s <= 0)
        o->max_time_s = 900;
    return BENCH_OK;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 1 << 16, n = 0;
    const size_t ceiling = 64u << 20;
    if (!f)
        return NULL;
    buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *nb = cap < ceiling ? realloc(buf, cap * 2 + 1) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int build_body(struct bench *b)
{
    const struct opts *o = &b->o;
    if (o->body_file) {
        b->body = read_file(o->body_file, &b->body_len);
        if (!b->body)
            fprintf(stderr, "ttftbench: cannot read %s: %s\n", o->body_file, strerror(errno));
        return b->body ? BENCH_OK : BENCH_ERR;
    }
    int rc = BENCH_ERR;
    json_object *j = json_object_new_object();
    json_object *msgs = json_object_new_array();
    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string("user"));
    json_object_object_add(m, "content", json_object_new_string(o->prompt));
    json_object_array_add(msgs, m);
    json_object_object_add(j, "model", json_object_new_string(o->model));
    json_object_object_add(j, "messages", msgs);
    json_object_object_add(j, "max_tokens", json_object_new_int64(o->max_tokens));
    json_object_object_add(j, "stream", json_object_new_boolean(o->stream));
    if (o->mock_json) {
        json_object *mock = json_tokener_parse(o->mock_json);
        if (!mock || !json_object_is_type(mock, json_type_object)) {
            fprintf(stderr, "ttftbench: --mock is not a JSON object\n");
            json_object_put(mock);
            goto out;
        }
        json_object_object_add(j, "mock", mock);
    }
    const char *s =
        json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    b->body = strdup(s);
    if (b->body) {
        b->body_len = strlen(b->body);
        rc = BENCH_OK;
    }
out:
    json_object_put(j);
    return rc;
}

static int build_headers(struct bench *b)
{
    struct curl_slist *l = NULL, *n;
    const char *fixed[] = {"Content-Type: application/json", "Expect:",
                           b->o.stream ? "Accept: text/event-stream" : "Accept: application/json"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        n = curl_slist_append(l, fixed[i]);
        if (!n)
            goto fail;
        l = n;
    }
    if (b->o.key) {
        char auth[1024];
        int w = snprintf(auth, sizeof(auth), "Authorization: Bearer %s", b->o.key);
        if (w < 0 || (size_t)w >= sizeof(auth))
            goto fail;
        n = curl_slist_append(l, auth);
        if (!n)
            goto fail;
        l = n;
    }
    b->headers = l;
    return BENCH_OK;
fail:
    curl_slist_free_all(l);
    return BENCH_ERR;
}

static void raise_nofile(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)want + 64)
        fprintf(stderr, "ttftbench: RLIMIT_NOFILE %lu is low for %u connections\n",
                (unsigned long)rl.rlim_cur, want);
}

static void bench_free(struct bench *b)
{
    if (b->slots) {
        for (unsigned i = 0; i < b->o.concurrency; i++) {
            if (b->slots[i].easy)
                curl_easy_cleanup(b->slots[i].easy);
        }
    }
    if (b->multi)
        curl_multi_cleanup(b->multi);
    if (b->epfd >= 0)
        close(b->epfd);
    free(b->slots);
    free(b->free_list);
    free(b->body);
    curl_slist_free_all(b->headers);
    stats_release(&b->st);
}

static int bench_init(struct bench *b)
{
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0)
        return BENCH_ERR;
    b->timer_due_us = UINT64_MAX;
    if (stats_init(&b->st) || build_body(b) || build_headers(b))
        return BENCH_ERR;
    b->multi = curl_multi_init();
    if (!b->multi)
        return BENCH_ERR;
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)b->o.concurrency);
    curl_multi_setopt(b->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    curl_multi_setopt(b->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    b->slots = calloc(b->o.concurrency, sizeof(*b->slots));
    b->free_list = calloc(b->o.concurrency, sizeof(*b->free_list));
    if (!b->slots || !b->free_list)
        return BENCH_ERR;
    for (unsigned i = 0; i < b->o.concurrency; i++) {
        if (xfer_setup(b, &b->slots[i]) != BENCH_OK)
            return BENCH_ERR;
    }
    for (unsigned i = b->o.concurrency; i > 0; i--)
        b->free_list[b->nfree++] = i - 1;
    if (b->o.expect_gap_ms > 0)
        b->stall_us = (uint64_t)(2.0 * b->o.expect_gap_ms * 1000.0);
    return BENCH_OK;
}

int main(int argc, char **argv)
{
    struct bench b;
    int rc = 2;
    memset(&b, 0, sizeof(b));
    b.epfd = -1;
    if (parse_args(argc, argv, &b.o) != BENCH_OK)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    raise_nofile(b.o.concurrency);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 2;
    json_c_set_serialization_double_format("%.3f", JSON_C_OPTION_GLOBAL);
    if (bench_init(&b) != BENCH_OK) {
        fprintf(stderr, "ttftbench: setup failed\n");
        goto out;
    }
    if (b.o.warmup && !stop_signal) {
        run_phase(&b, b.o.warmup, 0, 0);
        if (stats_clear(&b.st) != BENCH_OK)
            goto out;
    }
    run_phase(&b, b.o.requests, b.o.duration_s, b.o.rate);

    json_object *j = report_json(&b);
    if (!b.o.json_only)
        report_human(&b);
    printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(stdout);
    json_object_put(j);
    rc = (b.st.failed > 0 && !b.o.allow_fail) || b.st.ok == 0 ? 1 : 0;
    if (b.st.ok == 0 && b.o.allow_fail && b.st.started > 0)
        rc = 0;
out:
    bench_free(&b);
    curl_global_cleanup();
    return rc;
}
