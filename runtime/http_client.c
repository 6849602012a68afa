/* http_client.c: owns outbound HTTP(S): the one libcurl multi handle of the process (and so its
 * connection cache: keep-alive and HTTP/2 reuse), the uv_poll handle of every socket libcurl
 * asks to watch, the one uv_timer libcurl asks for, the transfers in progress (at most
 * max_active) and the bounded FIFO of the others, each with its deadline.
 *
 * Why libcurl: it is the client made for exactly this (HTTP/1.1 and HTTP/2, TLS verification with
 * the system's or a given CA, redirects on request, a connection cache, size limits) and its
 * multi-socket API lets the runtime's loop do all the waiting: libcurl only says which sockets to
 * watch and when to wake it. DNS goes through its threaded resolver (Debian's build is
 * AsynchDNS), so a lookup never blocks the loop. h2o's client would need redirects, limits and
 * pooling built around it.
 *
 * libcurl is never called from inside one of its own callbacks: completions are read with
 * curl_multi_info_read after curl_multi_socket_action has returned, and only then do the done
 * callbacks (which resume Lua, which may start or abort transfers) run. */
#include "http_client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "log.h"

#define TAG "http-client"
#define MAX_HEAD (256 * 1024) /* bytes of response header lines */
#define SWEEP_MS 50           /* how often queued requests are checked for their deadline */

typedef struct poll_ctx {
    http_client *c;
    uv_poll_t poll;
    curl_socket_t fd;
    struct poll_ctx *prev, *next;
} poll_ctx;

struct http_xfer {
    http_client *c;
    CURL *easy;
    struct curl_slist *headers;
    hc_done_fn fn;
    void *udata;
    uint64_t deadline; /* loop time, ms */
    size_t max_body;
    codec_buf head, body;
    bool too_large, head_too_large;
    bool active; /* in the multi handle (else queued) */
    char errbuf[CURL_ERROR_SIZE];
    http_xfer *prev, *next;
};

typedef struct xfer_list {
    http_xfer *head, *tail;
    int n;
} xfer_list;

struct http_client {
    runtime *rt;
    CURLM *multi;
    uv_timer_t timer; /* libcurl's */
    uv_timer_t sweep; /* the queue's deadlines */
    int max_active, queue_limit;
    xfer_list active, queue;
    poll_ctx *polls;
    int open_handles;
    bool closing;
};

/* ---- lists ---- */

static void list_push(xfer_list *l, http_xfer *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
}

static void list_remove(xfer_list *l, http_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

/* ---- handles ---- */

static void handle_closed(uv_handle_t *h)
{
    http_client *c = h->data;
    if (h->type == UV_POLL) {
        c = ((poll_ctx *)h->data)->c;
        free(h->data);
    }
    if (--c->open_handles == 0 && c->closing) free(c);
}

static void poll_close(poll_ctx *p)
{
    http_client *c = p->c;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->polls = p->next;
    if (p->next) p->next->prev = p->prev;
    uv_close((uv_handle_t *)&p->poll, handle_closed);
}

static void check_done(http_client *c);

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_ctx *p = h->data;
    http_client *c = p->c;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(c->multi, p->fd, flags, &running);
    check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what libcurl wants, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    http_client *c = userp;
    poll_ctx *p = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (p) {
            curl_multi_assign(c->multi, s, NULL);
            poll_close(p);
        }
        return 0;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p || uv_poll_init_socket(&c->rt->loop, &p->poll, s) != 0) {
            free(p);
            log_error(TAG, "cannot watch socket %d", (int)s);
            return -1;
        }
        p->c = c;
        p->fd = s;
        p->poll.data = p;
        p->next = c->polls;
        if (c->polls) c->polls->prev = p;
        c->polls = p;
        c->open_handles++;
        curl_multi_assign(c->multi, s, p);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&p->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    http_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* CURLMOPT_TIMERFUNCTION: wake libcurl in ms (-1: never). */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    http_client *c = userp;
    if (ms < 0)
        uv_timer_stop(&c->timer);
    else /* 1, not 0: a 0 ms timer started in a timer callback would run in the same pass */
        uv_timer_start(&c->timer, on_timer, ms > 0 ? (uint64_t)ms : 1, 0);
    return 0;
}

/* ---- transfers ---- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    http_xfer *x = arg;
    size_t len = size * n;
    if (x->body.len + len > x->max_body) {
        x->too_large = true;
        return 0;
    }
    return codec_buf_append(&x->body, data, len) == 0 ? len : 0;
}

/* Keeps the header lines of the last response only (a redirect or a 100 starts a new one). */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    http_xfer *x = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        codec_buf_reset(&x->head);
        return len;
    }
    if (len <= 2) return len; /* the blank line */
    if (x->head.len + len > MAX_HEAD) {
        x->head_too_large = true;
        return 0;
    }
    return codec_buf_append(&x->head, data, len) == 0 ? len : 0;
}

static void xfer_free(http_xfer *x)
{
    if (x->easy) curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    codec_buf_free(&x->head);
    codec_buf_free(&x->body);
    free(x);
}

static uint64_t now_ms(http_client *c)
{
    return uv_now(&c->rt->loop);
}

/* Moves x into the multi handle with the time it has left. 0, or -1 (x stays where it was). */
static int xfer_start(http_xfer *x)
{
    http_client *c = x->c;
    uint64_t now = now_ms(c);
    long left = x->deadline > now ? (long)(x->deadline - now) : 1;
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, left);
    if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) return -1;
    x->active = true;
    list_push(&c->active, x);
    return 0;
}

static void start_queued(http_client *c)
{
    while (!c->closing && c->queue.head && c->active.n < c->max_active) {
        http_xfer *x = c->queue.head;
        list_remove(&c->queue, x);
        if (xfer_start(x) != 0) { /* out of memory: back at the head, the sweep times it out */
            x->prev = NULL;
            x->next = c->queue.head;
            if (c->queue.head)
                c->queue.head->prev = x;
            else
                c->queue.tail = x;
            c->queue.head = x;
            c->queue.n++;
            break;
        }
    }
    if (!c->queue.head) uv_timer_stop(&c->sweep);
}

/* Out of the multi handle or the queue. */
static void xfer_detach(http_xfer *x)
{
    http_client *c = x->c;
    if (x->active) {
        curl_multi_remove_handle(c->multi, x->easy);
        list_remove(&c->active, x);
        x->active = false;
    } else {
        list_remove(&c->queue, x);
    }
}

static void xfer_fail(http_xfer *x, enum hc_status st, const char *message)
{
    xfer_detach(x);
    x->fn(x->udata, st, NULL, message);
    xfer_free(x);
}

static void xfer_finish(http_xfer *x, CURLcode rc)
{
    char msg[CURL_ERROR_SIZE + 64];
    if (rc == CURLE_OK) {
        hc_response res = {0};
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &res.status);
        res.head = x->head.data ? x->head.data : "";
        res.head_len = x->head.len;
        res.body = x->body.data ? x->body.data : "";
        res.body_len = x->body.len;
        xfer_detach(x);
        x->fn(x->udata, HC_OK, &res, NULL);
        xfer_free(x);
        return;
    }
    if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(msg, sizeof msg, "the response body is larger than max_body (%zu bytes)",
                 x->max_body);
        xfer_fail(x, HC_TOO_LARGE, msg);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof msg, "no response within the timeout (%s)",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        xfer_fail(x, HC_TIMEOUT, msg);
    } else if (x->head_too_large) {
        snprintf(msg, sizeof msg, "the response headers are larger than %d bytes", MAX_HEAD);
        xfer_fail(x, HC_UNAVAILABLE, msg);
    } else {
        snprintf(msg, sizeof msg, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        xfer_fail(x, HC_UNAVAILABLE, msg);
    }
}

static void check_done(http_client *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURLcode rc = m->data.result;
        http_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x) xfer_finish(x, rc);
    }
    start_queued(c);
}

/* Queued requests whose deadline passed before a slot freed. */
static void on_sweep(uv_timer_t *t)
{
    http_client *c = t->data;
    uint64_t now = now_ms(c);
    http_xfer *x = c->queue.head;
    while (x) {
        http_xfer *next = x->next;
        if (x->deadline <= now)
            xfer_fail(x, HC_TIMEOUT,
                      "no response within the timeout (waited for a free slot: "
                      "--http-client-max transfers were in progress)");
        x = next;
    }
    if (!c->queue.head) uv_timer_stop(&c->sweep);
}

/* ---- requests ---- */

static int set_method(http_xfer *x, const hc_request *req)
{
    CURL *e = x->easy;
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body) != CURLE_OK) return -1;
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
        return 0;
    }
    if (strcmp(req->method, "GET") == 0) return 0;
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return 0;
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    return 0;
}

static int set_headers(http_xfer *x, const hc_request *req)
{
    /* no "Expect: 100-continue" pause before a large body */
    x->headers = curl_slist_append(NULL, "Expect:");
    for (int i = 0; x->headers && i < req->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(x->headers, req->headers[i]);
        if (!l) return -1;
        x->headers = l;
    }
    return x->headers && curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers) == CURLE_OK ? 0
                                                                                               : -1;
}

/* The easy handle of a request. 0, or -1 with err. */
static int xfer_setup(http_xfer *x, const hc_request *req, char *err, size_t errlen)
{
    CURL *e = x->easy;
    CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, req->url);
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (rc == CURLE_OK && req->ca) rc = curl_easy_setopt(e, CURLOPT_CAINFO, req->ca);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "microservice");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* HTTPS: wait for a connection being set up to say (by ALPN) whether it multiplexes (HTTP/2)
     * rather than open another. Not for plain HTTP (always HTTP/1.1 here): there libcurl would
     * learn it only from the first response, so a slow first request would hold the others. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(req->url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->verify ? 2L : 0L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, req->follow > 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)req->follow);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (set_method(x, req) != 0 || set_headers(x, req) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

http_xfer *http_client_request(http_client *c, const hc_request *req, hc_done_fn fn, void *udata,
                               char *err, size_t errlen)
{
    if (c->closing) {
        snprintf(err, errlen, "the service is shutting down");
        return NULL;
    }
    if (c->active.n >= c->max_active && c->queue.n >= c->queue_limit) {
        snprintf(err, errlen, "too many outbound HTTP requests waiting (%d in progress, %d queued)",
                 c->active.n, c->queue.n);
        return NULL;
    }
    http_xfer *x = calloc(1, sizeof *x);
    if (!x || !(x->easy = curl_easy_init())) {
        free(x);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    x->c = c;
    x->fn = fn;
    x->udata = udata;
    x->max_body = req->max_body;
    double ms = req->timeout * 1000.0;
    x->deadline = now_ms(c) + (uint64_t)(ms < 1 ? 1 : ms > 1e12 ? 1e12 : ms);
    codec_buf_init(&x->head);
    codec_buf_init(&x->body);
    if (xfer_setup(x, req, err, errlen) != 0) {
        xfer_free(x);
        return NULL;
    }
    if (c->active.n < c->max_active && xfer_start(x) == 0) return x;
    list_push(&c->queue, x);
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    return x;
}

void http_client_xfer_abort(http_xfer *x)
{
    http_client *c = x->c;
    xfer_detach(x);
    xfer_free(x);
    start_queued(c);
}

int http_client_active(const http_client *c)
{
    return c ? c->active.n : 0;
}

int http_client_queued(const http_client *c)
{
    return c ? c->queue.n : 0;
}

/* ---- life ---- */

http_client *http_client_new(runtime *rt, int max_active, int queue_limit)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error(TAG, "libcurl cannot be initialized");
        return NULL;
    }
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_ASYNCHDNS))
        log_warn(TAG, "libcurl %s resolves names synchronously: a DNS lookup blocks the loop",
                 v->version);
    http_client *c = calloc(1, sizeof *c);
    if (!c || !(c->multi = curl_multi_init())) {
        free(c);
        log_error(TAG, "out of memory");
        return NULL;
    }
    c->rt = rt;
    c->max_active = max_active > 0 ? max_active : 64;
    c->queue_limit = queue_limit >= 0 ? queue_limit : 10000;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_active);
    uv_timer_init(&rt->loop, &c->timer);
    uv_timer_init(&rt->loop, &c->sweep);
    c->timer.data = c->sweep.data = c;
    c->open_handles = 2;
    return c;
}

void http_client_close(http_client *c)
{
    if (!c || c->closing) return;
    c->closing = true; /* what the done callbacks below try to start is refused */
    while (c->queue.head)
        xfer_fail(c->queue.head, HC_UNAVAILABLE, "the service is shutting down");
    while (c->active.head)
        xfer_fail(c->active.head, HC_UNAVAILABLE, "the service is shutting down");
    curl_multi_cleanup(c->multi); /* closes the cached connections */
    c->multi = NULL;
    while (c->polls)
        poll_close(c->polls);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->sweep, handle_closed);
}
