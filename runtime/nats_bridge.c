/* nats_bridge.c: owns the nats.c connection (on the libuv loop through nats.c's adapter), every
 * subscription, the queue that hands their messages to the loop, the request inbox and its table
 * of pending replies.
 *
 * The thread boundary. nats.c reads and parses the socket on the loop thread, but it runs
 * asynchronous subscription callbacks and connection-state callbacks on threads of its own. Lua
 * and h2o must only be touched on the loop thread, and delivery must cost per message, never per
 * subscription per loop turn (a process may hold tens of thousands of idle WAMP topics), so:
 *   - Queued subscriptions (the default: WAMP topics and registrations, Lua
 *     microservice.subscribe, $SRV): asynchronous nats.c subscriptions with global message
 *     delivery (one nats.c delivery thread for all of them, not one thread per subscription).
 *     The callback appends (subscription, message) to ONE bounded queue (EVENT_QUEUE messages and
 *     EVENT_QUEUE_BYTES bytes over all subscriptions) under a mutex and wakes the loop with
 *     uv_async_send; the loop's uv_check takes the queue in batches (DRAIN_BUDGET per turn; a
 *     uv_idle handle keeps the loop turning while a backlog remains). An idle subscription costs
 *     nothing per turn. When the queue is full the message is dropped, counted
 *     (microservice_nats_dropped_messages_total) and logged once per burst, as the inbox does.
 *     End of a subscription: nats.c may still call the callback after an unsubscribe, and the
 *     queue may still hold its messages, so an nb_sub is freed on the loop only when nats.c said
 *     it is done with every nats.c subscription made for it (natsSubscription_SetOnCompleteCB:
 *     "opened" == "completed", which also covers the subscriptions a lost connection closed
 *     while new ones were opened) and the queue holds nothing for it ("queued" == 0). A closed
 *     nb_sub never calls its handler again; a drained one (an unsubscribe, see nb_sub_drain)
 *     delivers what is queued, then on_gone.
 *   - Polled subscriptions (nats_bridge_subscribe_polled: the RPC endpoints the operator's Lua
 *     services declare, a number bounded by the operator's code) stay synchronous: nats.c queues
 *     their messages (bounded by the subscription's pending limits; beyond them it drops and
 *     reports a slow consumer) and the uv_check drains them right after each poll phase with no
 *     thread hop at all, which keeps the HTTP -> Lua RPC path at one thread hop (the reply).
 *     The cost per turn is per declared RPC, which the operator controls; nothing a client does
 *     creates one.
 *   - The request inbox has to be asynchronous: nats.c turns a "no responders" status into an
 *     error without the message for synchronous subscriptions, so we would not know which request
 *     it answered. Its callback (nats.c thread) appends to a bounded ring under a mutex and wakes
 *     the loop with uv_async_send; the loop takes the whole ring in one batch. When the ring is
 *     full the reply is dropped (counted) and its request times out.
 *   - The intake pause (--max-inflight) stops taking from both: nats.c's pending limits and the
 *     queue's bound then decide what is dropped.
 *   - Connection-state callbacks only wake the loop (uv_async); the loop reads the state itself.
 * Nothing here blocks the loop: requests are a publish plus an entry in the pending table, with a
 * uv_timer for the timeout.
 *
 * The bus rule (nats_bridge_misdirected): a message with a reply subject is a request, one
 * without is an event; RPC handlers take requests only and subscribers events only. */
#include "nats_bridge.h"

#include <nats/adapters/libuv.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "log.h"
#include "nats_auth.h"
#include "nats_probe.h"

#define TAG "nats"
#define SUB_PENDING_MSGS 65536
#define SUB_PENDING_BYTES (64 * 1024 * 1024)
#define DRAIN_BUDGET 512 /* messages per loop iteration, over all subscriptions */
#define INBOX_RING 65536
#define EVENT_QUEUE 65536                    /* messages queued for the loop, all subscriptions */
#define EVENT_QUEUE_BYTES (64 * 1024 * 1024) /* and their bytes */
#define QUEUE_BATCH 64                       /* taken under the mutex at once */
#define PROBE_TIMEOUT_S 2.0
#define RETRY_MS 250      /* while no server is reachable */
#define RETRY_MAX_MS 5000 /* the longest wait after a server refused us */
#define RELEASE_BATCH 1024
#define FINISH_TIMEOUT_MS 2000 /* at close, the longest wait for nats.c's on-complete callbacks */

struct nb_sub {
    nats_bridge *nb;
    natsSubscription *sub;
    nb_msg_fn fn;
    void *udata;
    char *subject;
    char *queue;                  /* NULL: no queue group */
    bool polled;                  /* synchronous, drained by check_cb (see the top comment) */
    bool drain_requested;         /* nb_sub_drain was called */
    bool closed;                  /* nb_sub_close was called (queued): fn never runs again */
    void (*on_gone)(void *udata); /* after the last delivery, when the subscription is freed */
    bool dead;                    /* nats.c closed it: nothing more will come */
    /* queued subscriptions, under nb->q_mu: */
    int opened;    /* nats.c subscriptions made for it */
    int completed; /* of them, those nats.c is done with (on-complete callback) */
    int queued;    /* its messages in the queue */
    bool in_done;  /* on nb->done: to be looked at by reap_subs */
    nb_sub *done_next;
    nb_sub *prev, *next;
};

typedef struct {
    nb_sub *s;
    natsMsg *m;
} queue_entry;

struct nb_request {
    nats_bridge *nb;
    uint64_t id;
    uv_timer_t timer;
    nb_reply_fn fn;
    void *udata;
    const char *progress_header; /* see nb_request_allow_progress; NULL: none */
    nb_request *hnext;           /* hash chain */
};

struct nats_bridge {
    runtime *rt;
    natsOptions *opts;
    natsConnection *nc;
    char inbox[64]; /* "_INBOX.<nuid>" */
    natsSubscription *inbox_sub;
    uint64_t next_id;

    /* pending requests: id -> request, chained hash table (ids are sequential) */
    nb_request **buckets;
    size_t nbuckets;
    int pending;

    /* subscriptions: polled ones (drained one by one from check_handle) and queued ones */
    nb_sub *subs;
    nb_sub *qsubs;
    int nsubs; /* both kinds, until freed */

    /* the queue of queued subscriptions: written by nats.c's delivery thread, taken by the loop */
    pthread_mutex_t q_mu;
    queue_entry *q;
    size_t q_head, q_len, q_bytes;
    uint64_t q_dropped;       /* since the last log line */
    uint64_t q_dropped_total; /* for /metrics */
    nb_sub *done;             /* subscriptions that may have become free-able */
    int live;                 /* nats.c async subscriptions not completed yet (inbox included) */
    uint64_t slow_consumer;   /* nats.c's own slow-consumer reports (async error handler) */
    atomic_bool q_work;       /* any of the above changed: the loop takes the mutex only then */
    uv_async_t sub_async;
    bool finishing; /* closed: waiting for nats.c to complete the last subscriptions */
    bool abandoned; /* it did not in time: nb is never freed (nats.c may still call it) */

    /* messages refused by the bus rule (see nats_bridge_misdirected) */
    uint64_t ignored_events, ignored_requests;
    uv_check_t check_handle;
    uv_idle_t idle_handle;

    /* inbox ring: written by nats.c's thread, taken by the loop */
    pthread_mutex_t ring_mu;
    natsMsg **ring;
    size_t ring_len;
    uint64_t ring_dropped;
    uv_async_t inbox_async;

    /* connection state: nats.c threads only raise flags and wake the loop */
    uv_async_t state_async;
    atomic_bool closed_seen;
    bool was_connected;
    bool ever_connected;
    bool confirmed;
    nb_request *probe;

    /* finding a server for the first connection (see nats_bridge_connect) */
    uv_timer_t retry_timer;
    nats_probe prober;
    bool retry_logged;
    int retry_ms;         /* the next wait after a refused connection, doubling to RETRY_MAX_MS */
    char last_error[512]; /* the last refusal logged, to log each new one once */
    char log_url[2048];   /* cfg.nats_url without passwords or tokens, for logs */

    natsMsg *released[RELEASE_BATCH]; /* see nats_bridge_release */
    int nreleased;

    void (*on_ready)(void *arg); /* see nats_bridge_on_ready */
    void *on_ready_arg;

    nb_pause_fn pause; /* see nats_bridge_set_pause; NULL: never paused */
    void *pause_udata;

    bool closing;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
    int handles_open;
};

static void fail_all_pending(nats_bridge *nb, enum nb_status status);
static void send_probe(nats_bridge *nb);

/* ---- pending table ---- */

static int table_grow(nats_bridge *nb)
{
    size_t n = nb->nbuckets ? nb->nbuckets * 2 : 1024;
    nb_request **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < nb->nbuckets; i++) {
        nb_request *r = nb->buckets[i];
        while (r) {
            nb_request *next = r->hnext;
            r->hnext = b[r->id & (n - 1)];
            b[r->id & (n - 1)] = r;
            r = next;
        }
    }
    free(nb->buckets);
    nb->buckets = b;
    nb->nbuckets = n;
    return 0;
}

static int table_put(nats_bridge *nb, nb_request *r)
{
    if ((size_t)nb->pending >= nb->nbuckets && table_grow(nb) != 0) return -1;
    nb_request **slot = &nb->buckets[r->id & (nb->nbuckets - 1)];
    r->hnext = *slot;
    *slot = r;
    nb->pending++;
    return 0;
}

static nb_request *table_find(nats_bridge *nb, uint64_t id)
{
    if (!nb->nbuckets) return NULL;
    for (nb_request *r = nb->buckets[id & (nb->nbuckets - 1)]; r; r = r->hnext)
        if (r->id == id) return r;
    return NULL;
}

/* Removes and returns the request with that id, or NULL. */
static nb_request *table_take(nats_bridge *nb, uint64_t id)
{
    if (!nb->nbuckets) return NULL;
    nb_request **p = &nb->buckets[id & (nb->nbuckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        if ((*p)->id == id) {
            nb_request *r = *p;
            *p = r->hnext;
            nb->pending--;
            return r;
        }
    }
    return NULL;
}

/* ---- requests ---- */

static void request_free_cb(uv_handle_t *h)
{
    free(h->data);
}

const char *nb_reply_header(const nb_reply *r, const char *name)
{
    const char *v = NULL;
    if (r->msg) return natsMsgHeader_Get(r->msg, name, &v) == NATS_OK ? v : NULL;
    for (int i = 0; r->headers && r->headers[i] && r->headers[i + 1]; i += 2)
        if (strcasecmp(r->headers[i], name) == 0) return r->headers[i + 1];
    return NULL;
}

/* Hands a message to fn as an nb_reply (NULL without one), then releases it. */
static void reply_to(nats_bridge *nb, nb_reply_fn fn, void *udata, enum nb_status status,
                     natsMsg *msg)
{
    nb_reply view = {msg, NULL, 0, NULL};
    if (msg) {
        view.data = natsMsg_GetData(msg);
        view.len = (size_t)natsMsg_GetDataLength(msg);
    }
    if (fn) fn(udata, status, msg ? &view : NULL);
    if (msg) nats_bridge_release(nb, msg);
}

/* The one end of every request: out of the table, timer closed, memory freed with the timer. */
static void request_end(nb_request *r, enum nb_status status, natsMsg *reply)
{
    nb_reply_fn fn = r->fn;
    void *udata = r->udata;
    nats_bridge *nb = r->nb;
    if (nb->probe == r) nb->probe = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, request_free_cb);
    reply_to(nb, fn, udata, status, reply);
}

static void request_timeout_cb(uv_timer_t *t)
{
    nb_request *r = t->data;
    nb_request *taken = table_take(r->nb, r->id);
    if (taken) request_end(taken, NB_TIMEOUT, NULL);
}

void nb_request_allow_progress(nb_request *r, const char *header)
{
    r->progress_header = header;
}

int nb_request_reply_subject(const nb_request *r, char *out, size_t size)
{
    return snprintf(out, size, "%s.%llu", r->nb->inbox, (unsigned long long)r->id);
}

void nb_request_cancel(nb_request *r)
{
    nb_request *taken = table_take(r->nb, r->id);
    if (!taken) return;
    taken->fn = NULL;
    request_end(taken, NB_ERROR, NULL);
}

static int publish_msg(nats_bridge *nb, const char *subject, const char *reply, const char *data,
                       size_t len, const char *const *headers)
{
    natsStatus st;
    if ((!headers || !headers[0]) && !reply) {
        st = natsConnection_Publish(nb->nc, subject, data, (int)len);
    } else if (!headers || !headers[0]) {
        st = natsConnection_PublishRequest(nb->nc, subject, reply, data, (int)len);
    } else {
        natsMsg *m = NULL;
        st = natsMsg_Create(&m, subject, reply, data, (int)len);
        for (int i = 0; st == NATS_OK && headers[i] && headers[i + 1]; i += 2)
            st = natsMsgHeader_Set(m, headers[i], headers[i + 1]);
        if (st == NATS_OK) st = natsConnection_PublishMsg(nb->nc, m);
        natsMsg_Destroy(m);
    }
    if (st == NATS_OK) return NB_OK;
    if (!nats_bridge_connected(nb)) return NB_UNAVAILABLE;
    log_warn(TAG, "publish to %s failed: %s", subject, natsStatus_GetText(st));
    return NB_ERROR;
}

int nats_bridge_publish(nats_bridge *nb, const char *subject, const char *reply, const char *data,
                        size_t len, const char *const *headers)
{
    if (!nb->nc || nb->closing || !nats_bridge_connected(nb)) return NB_UNAVAILABLE;
    return publish_msg(nb, subject, reply, data, len, headers);
}

static nb_request *request_new(nats_bridge *nb, double timeout_s, nb_reply_fn fn, void *udata)
{
    nb_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->nb = nb;
    r->id = ++nb->next_id;
    r->fn = fn;
    r->udata = udata;
    if (table_put(nb, r) != 0) {
        free(r);
        return NULL;
    }
    uv_timer_init(&nb->rt->loop, &r->timer);
    r->timer.data = r;
    uint64_t ms = timeout_s <= 0 ? 1 : (uint64_t)(timeout_s * 1000.0 + 0.5);
    uv_timer_start(&r->timer, request_timeout_cb, ms ? ms : 1, 0);
    return r;
}

int nats_bridge_request(nats_bridge *nb, const char *subject, const char *data, size_t len,
                        const char *const *headers, double timeout_s, nb_reply_fn fn, void *udata,
                        nb_request **out)
{
    return nats_bridge_request_as(nb, subject, data, len, headers, NULL, NULL, timeout_s, fn, udata,
                                  out);
}

int nats_bridge_request_as(nats_bridge *nb, const char *subject, const char *data, size_t len,
                           const char *const *headers, const char *authid, const char *authrole,
                           double timeout_s, nb_reply_fn fn, void *udata, nb_request **out)
{
    *out = NULL;
    if (!nb->nc || nb->closing || !nats_bridge_connected(nb)) return NB_UNAVAILABLE;
    nb_request *r = request_new(nb, timeout_s, fn, udata);
    if (!r) return NB_ERROR;
    char reply[96], ms[32];
    snprintf(reply, sizeof reply, "%s.%llu", nb->inbox, (unsigned long long)r->id);
    snprintf(ms, sizeof ms, "%.0f", timeout_s * 1000.0);
    const char *all[28];
    int n = 0;
    for (int i = 0; headers && headers[i] && headers[i + 1] && n < 16; i += 2) {
        all[n++] = headers[i];
        all[n++] = headers[i + 1];
    }
    auth_stamp stamp;
    if (authid)
        n += auth_identity_headers(nb->rt->auth, subject, reply, data, len, authid, authrole,
                                   &stamp, all + n);
    all[n++] = NB_HDR_TIMEOUT;
    all[n++] = ms;
    all[n] = NULL;
    int rc = publish_msg(nb, subject, reply, data, len, all);
    if (rc != NB_OK) {
        table_take(nb, r->id);
        r->fn = NULL;
        request_end(r, rc, NULL);
        return rc;
    }
    *out = r;
    return NB_OK;
}

int nats_bridge_pending_requests(nats_bridge *nb)
{
    return nb->pending;
}

const char *nats_bridge_inbox(nats_bridge *nb)
{
    return nb->inbox;
}

static void fail_all_pending(nats_bridge *nb, enum nb_status status)
{
    for (size_t i = 0; i < nb->nbuckets; i++) {
        while (nb->buckets[i]) {
            nb_request *r = nb->buckets[i];
            nb->buckets[i] = r->hnext;
            nb->pending--;
            request_end(r, status, NULL);
        }
    }
}

/* ---- the inbox: nats.c thread -> ring -> loop ---- */

static void inbox_msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    nats_bridge *nb = closure;
    bool queued = false;
    pthread_mutex_lock(&nb->ring_mu);
    if (nb->ring_len < INBOX_RING) {
        nb->ring[nb->ring_len++] = msg;
        queued = true;
    } else {
        nb->ring_dropped++;
    }
    pthread_mutex_unlock(&nb->ring_mu);
    if (!queued) natsMsg_Destroy(msg);
    uv_async_send(&nb->inbox_async);
}

static void deliver_reply(nats_bridge *nb, natsMsg *msg)
{
    const char *subject = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subject, '.');
    uint64_t id = dot ? strtoull(dot + 1, NULL, 10) : 0;
    const char *progress = NULL;
    nb_request *r = table_find(nb, id);
    if (r && r->progress_header && r->fn &&
        natsMsgHeader_Get(msg, r->progress_header, &progress) == NATS_OK) {
        reply_to(nb, r->fn, r->udata, NB_OK, msg); /* progress: the request stays pending */
        return;
    }
    r = table_take(nb, id);
    if (!r) { /* late (timed out or cancelled) */
        nats_bridge_release(nb, msg);
        return;
    }
    if (natsMsg_IsNoResponders(msg)) {
        nats_bridge_release(nb, msg);
        request_end(r, NB_NO_RESPONDERS, NULL);
        return;
    }
    request_end(r, NB_OK, msg);
}

static void inbox_async_cb(uv_async_t *a)
{
    nats_bridge *nb = a->data;
    natsMsg *batch[256];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&nb->ring_mu);
        n = nb->ring_len < 256 ? nb->ring_len : 256;
        /* take from the front to keep replies in arrival order */
        memcpy(batch, nb->ring, n * sizeof *batch);
        memmove(nb->ring, nb->ring + n, (nb->ring_len - n) * sizeof *batch);
        nb->ring_len -= n;
        uint64_t dropped = nb->ring_dropped;
        nb->ring_dropped = 0;
        pthread_mutex_unlock(&nb->ring_mu);
        if (dropped)
            log_warn(TAG, "inbox queue full: %llu replies dropped", (unsigned long long)dropped);
        if (n == 0) break;
        for (size_t i = 0; i < n; i++)
            deliver_reply(nb, batch[i]);
    }
}

/* ---- subscriptions ---- */

static nb_sub **list_of(nats_bridge *nb, nb_sub *s)
{
    return s->polled ? &nb->subs : &nb->qsubs;
}

static void sub_free(nb_sub *s)
{
    nats_bridge *nb = s->nb;
    if (s->prev)
        s->prev->next = s->next;
    else
        *list_of(nb, s) = s->next;
    if (s->next) s->next->prev = s->prev;
    nb->nsubs--;
    natsSubscription_Destroy(s->sub);
    if (s->on_gone) s->on_gone(s->udata);
    free(s->subject);
    free(s->queue);
    free(s);
}

/* ---- queued subscriptions: nats.c's delivery thread -> queue -> loop ---- */

/* Caller holds q_mu. s goes on the list reap_subs looks at. */
static void mark_done_locked(nb_sub *s)
{
    if (s->in_done) return;
    s->in_done = true;
    s->done_next = s->nb->done;
    s->nb->done = s;
    atomic_store(&s->nb->q_work, true);
}

static void mark_done(nb_sub *s)
{
    nats_bridge *nb = s->nb;
    pthread_mutex_lock(&nb->q_mu);
    mark_done_locked(s);
    pthread_mutex_unlock(&nb->q_mu);
    uv_async_send(&nb->sub_async);
}

static size_t msg_bytes(natsMsg *m)
{
    const char *reply = natsMsg_GetReply(m);
    return (size_t)natsMsg_GetDataLength(m) + strlen(natsMsg_GetSubject(m)) +
           (reply ? strlen(reply) : 0) + 64;
}

/* nats.c's delivery thread. */
static void queued_msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    nb_sub *s = closure;
    nats_bridge *nb = s->nb;
    size_t bytes = msg_bytes(msg);
    bool queued = false;
    pthread_mutex_lock(&nb->q_mu);
    if (nb->q_len < EVENT_QUEUE && nb->q_bytes + bytes <= EVENT_QUEUE_BYTES) {
        nb->q[(nb->q_head + nb->q_len) % EVENT_QUEUE] = (queue_entry){s, msg};
        nb->q_len++;
        nb->q_bytes += bytes;
        s->queued++;
        queued = true;
        atomic_store(&nb->q_work, true);
    } else {
        nb->q_dropped++;
        nb->q_dropped_total++;
    }
    pthread_mutex_unlock(&nb->q_mu);
    if (!queued) natsMsg_Destroy(msg);
    uv_async_send(&nb->sub_async);
}

/* nats.c's delivery thread, once per nats.c subscription: nothing more comes from it. */
static void sub_complete_cb(void *closure)
{
    nb_sub *s = closure;
    nats_bridge *nb = s->nb;
    pthread_mutex_lock(&nb->q_mu);
    if (s->completed < s->opened) { /* defensive: see nb_sub_drain */
        s->completed++;
        nb->live--;
    }
    mark_done_locked(s);
    /* under the mutex: once the loop sees live == 0 it may close the handle and free nb */
    uv_async_send(&nb->sub_async);
    pthread_mutex_unlock(&nb->q_mu);
}

static void inbox_complete_cb(void *closure)
{
    nats_bridge *nb = closure;
    pthread_mutex_lock(&nb->q_mu);
    nb->live--;
    uv_async_send(&nb->sub_async); /* under the mutex, as in sub_complete_cb */
    pthread_mutex_unlock(&nb->q_mu);
}

/* nats.c's own reports (its thread): only counted, logged by the loop. */
static void async_error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    nats_bridge *nb = closure;
    if (err != NATS_SLOW_CONSUMER) return;
    pthread_mutex_lock(&nb->q_mu);
    nb->slow_consumer++;
    atomic_store(&nb->q_work, true);
    pthread_mutex_unlock(&nb->q_mu);
    uv_async_send(&nb->sub_async);
}

static bool sub_freeable_locked(nb_sub *s)
{
    return (s->closed || s->drain_requested) && s->completed == s->opened && s->queued == 0;
}

/* Frees the queued subscriptions nats.c and the queue are done with. Loop thread. */
static void reap_subs(nats_bridge *nb)
{
    pthread_mutex_lock(&nb->q_mu);
    nb_sub *list = nb->done;
    nb->done = NULL;
    nb_sub *freeable = NULL;
    while (list) {
        nb_sub *s = list;
        list = s->done_next;
        s->in_done = false;
        if (sub_freeable_locked(s)) {
            s->done_next = freeable;
            freeable = s;
        }
    }
    uint64_t slow = nb->slow_consumer;
    nb->slow_consumer = 0;
    pthread_mutex_unlock(&nb->q_mu);
    if (slow)
        log_warn(TAG, "slow consumer: nats.c dropped messages of a subscription (%llu reports)",
                 (unsigned long long)slow);
    while (freeable) {
        nb_sub *s = freeable;
        freeable = s->done_next;
        sub_free(s);
    }
}

/* Takes up to max entries from the front of the queue; returns how many. */
static size_t queue_take(nats_bridge *nb, queue_entry *out, size_t max, bool *more)
{
    pthread_mutex_lock(&nb->q_mu);
    size_t n = nb->q_len < max ? nb->q_len : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = nb->q[(nb->q_head + i) % EVENT_QUEUE];
        nb->q_bytes -= msg_bytes(out[i].m);
        if (--out[i].s->queued == 0 && (out[i].s->closed || out[i].s->drain_requested))
            mark_done_locked(out[i].s);
    }
    nb->q_head = (nb->q_head + n) % EVENT_QUEUE;
    nb->q_len -= n;
    *more = nb->q_len > 0;
    uint64_t dropped = nb->q_dropped;
    nb->q_dropped = 0;
    pthread_mutex_unlock(&nb->q_mu);
    if (dropped)
        log_warn(TAG, "subscription queue full (%d messages or %d MiB): %llu messages dropped",
                 EVENT_QUEUE, EVENT_QUEUE_BYTES >> 20, (unsigned long long)dropped);
    return n;
}

/* Delivers up to budget queued messages; returns how many it took. */
static int drain_queue(nats_bridge *nb, int budget, bool *backlog)
{
    int n = 0;
    queue_entry batch[QUEUE_BATCH];
    while (n < budget) {
        size_t max = (size_t)(budget - n) < QUEUE_BATCH ? (size_t)(budget - n) : QUEUE_BATCH;
        bool more = false;
        size_t got = queue_take(nb, batch, max, &more);
        for (size_t i = 0; i < got; i++) {
            /* a handler may close a subscription whose messages follow in this batch; it is
             * freed by reap_subs only, at the next check */
            if (batch[i].s->closed)
                nats_bridge_release(nb, batch[i].m);
            else
                batch[i].s->fn(batch[i].s->udata, batch[i].m);
        }
        n += (int)got;
        if (!more) return n;
    }
    *backlog = true;
    return n;
}

/* Releases every queued message (the connection is closed: nobody will take them). */
static void queue_discard(nats_bridge *nb)
{
    queue_entry batch[QUEUE_BATCH];
    bool more = true;
    while (more) {
        size_t got = queue_take(nb, batch, QUEUE_BATCH, &more);
        for (size_t i = 0; i < got; i++)
            natsMsg_Destroy(batch[i].m);
    }
}

/* ---- polled subscriptions, drained on the loop thread ---- */

/* Delivers up to budget messages of one subscription; returns how many it delivered. */
static int drain_one(nb_sub *s, int budget, bool *backlog)
{
    int n = 0;
    while (n < budget) {
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, s->sub, 0);
        if (st == NATS_OK) {
            n++;
            s->fn(s->udata, m);
            continue;
        }
        if (st == NATS_SLOW_CONSUMER) {
            log_warn(TAG, "subscription %s: slow consumer, nats.c dropped messages", s->subject);
            continue;
        }
        if (st != NATS_TIMEOUT || !natsSubscription_IsValid(s->sub)) s->dead = true;
        return n;
    }
    int pending = 0;
    if (natsSubscription_GetPending(s->sub, &pending, NULL) == NATS_OK && pending > 0)
        *backlog = true;
    return n;
}

/* An active idle handle only keeps the poll phase from blocking while a backlog remains. */
static void idle_cb(uv_idle_t *h)
{
    (void)h;
}

static bool intake_paused(nats_bridge *nb)
{
    return nb->pause && nb->pause(nb->pause_udata);
}

/* A drained subscription is done once nats.c says so and we took every message it holds. */
static bool sub_finished(nb_sub *s)
{
    /* without a connection a drain never completes, and nothing more can arrive */
    if (s->drain_requested && !nats_bridge_connected(s->nb)) return true;
    if (s->dead || !s->sub || !natsSubscription_IsValid(s->sub)) return s->drain_requested;
    if (!s->drain_requested) return false;
    int pending = 0;
    natsSubscription_GetPending(s->sub, &pending, NULL);
    return pending == 0 && natsSubscription_DrainCompletionStatus(s->sub) != NATS_ILLEGAL_STATE;
}

static void release_all(nats_bridge *nb)
{
    for (int i = 0; i < nb->nreleased; i++)
        natsMsg_Destroy(nb->released[i]);
    nb->nreleased = 0;
}

void nats_bridge_release(nats_bridge *nb, natsMsg *msg)
{
    if (nb->nreleased == RELEASE_BATCH) release_all(nb);
    nb->released[nb->nreleased++] = msg;
}

static void maybe_finish_close(nats_bridge *nb);

static void check_cb(uv_check_t *h)
{
    nats_bridge *nb = h->data;
    release_all(nb); /* what the callbacks of this turn freed, before taking more */
    if (nb->finishing) {
        maybe_finish_close(nb);
        return;
    }
    /* an idle turn costs one atomic exchange here, whatever the number of subscriptions */
    bool work = atomic_exchange(&nb->q_work, false);
    if (work) reap_subs(nb);
    if (intake_paused(nb)) {
        /* resumed by nats_bridge_kick when a call ends */
        if (work) atomic_store(&nb->q_work, true); /* the queue was not taken */
        uv_idle_stop(&nb->idle_handle);
        return;
    }
    bool backlog = false;
    int budget = DRAIN_BUDGET;
    if (work) {
        budget -= drain_queue(nb, DRAIN_BUDGET, &backlog);
        if (backlog) atomic_store(&nb->q_work, true);
    }
    for (nb_sub *s = nb->subs; s;) {
        nb_sub *next = s->next;
        if (intake_paused(nb)) {
            uv_idle_stop(&nb->idle_handle);
            return;
        }
        if (!s->sub || s->dead) {
            /* not open yet (no connection so far), or closed by nats.c */
        } else if (budget > 0) {
            budget -= drain_one(s, budget, &backlog);
        } else {
            backlog = true;
        }
        if (sub_finished(s)) sub_free(s);
        s = next;
    }
    if (backlog)
        uv_idle_start(&nb->idle_handle, idle_cb);
    else
        uv_idle_stop(&nb->idle_handle);
}

/* The loop wakes up for the queue: check_cb, right after the poll phase, takes it. */
static void sub_async_cb(uv_async_t *a)
{
    (void)a;
}

void nats_bridge_set_pause(nats_bridge *nb, nb_pause_fn fn, void *udata)
{
    nb->pause = fn;
    nb->pause_udata = udata;
}

void nats_bridge_kick(nats_bridge *nb)
{
    if (!nb->closing && nb->nsubs > 0) uv_idle_start(&nb->idle_handle, idle_cb);
}

static natsStatus open_polled(nb_sub *s)
{
    nats_bridge *nb = s->nb;
    natsStatus st = s->queue
                        ? natsConnection_QueueSubscribeSync(&s->sub, nb->nc, s->subject, s->queue)
                        : natsConnection_SubscribeSync(&s->sub, nb->nc, s->subject);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(s->sub, SUB_PENDING_MSGS, SUB_PENDING_BYTES);
    return st;
}

static natsStatus open_queued(nb_sub *s)
{
    nats_bridge *nb = s->nb;
    natsStatus st =
        s->queue
            ? natsConnection_QueueSubscribe(&s->sub, nb->nc, s->subject, s->queue, queued_msg_cb, s)
            : natsConnection_Subscribe(&s->sub, nb->nc, s->subject, queued_msg_cb, s);
    if (st != NATS_OK) return st;
    st = natsSubscription_SetOnCompleteCB(s->sub, sub_complete_cb, s);
    if (st != NATS_OK) {
        /* closed already (the connection went away at once): nats.c delivers nothing more */
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
        return st;
    }
    pthread_mutex_lock(&nb->q_mu);
    s->opened++;
    nb->live++;
    pthread_mutex_unlock(&nb->q_mu);
    return natsSubscription_SetPendingLimits(s->sub, SUB_PENDING_MSGS, SUB_PENDING_BYTES);
}

/* Creates the nats.c subscription of s (once a connection exists). */
static int sub_open(nb_sub *s)
{
    natsStatus st = s->polled ? open_polled(s) : open_queued(s);
    if (st != NATS_OK) {
        log_error(TAG, "cannot subscribe %s: %s", s->subject, natsStatus_GetText(st));
        if (s->sub) natsSubscription_Unsubscribe(s->sub);
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
        s->dead = true;
        return -1;
    }
    log_debug(TAG, "subscribed %s (queue %s)", s->subject, s->queue ? s->queue : "-");
    return 0;
}

static nb_sub *subscribe(nats_bridge *nb, const char *subject, const char *queue, nb_msg_fn fn,
                         void *udata, bool polled)
{
    if (nb->closing) return NULL;
    nb_sub *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->subject = strdup(subject);
    s->queue = queue ? strdup(queue) : NULL;
    s->nb = nb;
    s->fn = fn;
    s->udata = udata;
    s->polled = polled;
    nb_sub **list = list_of(nb, s);
    s->next = *list;
    if (*list) (*list)->prev = s;
    *list = s;
    nb->nsubs++;
    if (!s->subject || (queue && !s->queue) || (nb->nc && sub_open(s) != 0)) {
        /* a queued one may have messages queued already: freed once nats.c is done with it */
        s->closed = true;
        if (polled)
            sub_free(s);
        else
            mark_done(s);
        return NULL;
    }
    return s;
}

nb_sub *nats_bridge_subscribe(nats_bridge *nb, const char *subject, const char *queue, nb_msg_fn fn,
                              void *udata)
{
    return subscribe(nb, subject, queue, fn, udata, false);
}

nb_sub *nats_bridge_subscribe_polled(nats_bridge *nb, const char *subject, const char *queue,
                                     nb_msg_fn fn, void *udata)
{
    return subscribe(nb, subject, queue, fn, udata, true);
}

void nb_sub_drain_notify(nb_sub *s, void (*on_gone)(void *udata))
{
    s->on_gone = on_gone;
    nb_sub_drain(s);
}

void nb_sub_drain(nb_sub *s)
{
    if (s->drain_requested) return;
    s->drain_requested = true;
    if (!s->sub) { /* never opened: nothing to drain */
        s->dead = true;
        if (!s->polled) mark_done(s);
        return;
    }
    if (!s->polled) {
        /* An unsubscribe, not a nats.c drain: nats.c 3.4.1 calls the on-complete callback twice
         * when a subscription it delivers through the pool is drained twice (ours, then the
         * connection's drain at shutdown), and a second call could come after the free. What
         * the queue already holds is still delivered. */
        natsSubscription_Unsubscribe(s->sub);
        mark_done(s);
        return;
    }
    natsStatus st = natsSubscription_Drain(s->sub);
    if (st != NATS_OK) { /* not connected: nothing more will come */
        natsSubscription_Unsubscribe(s->sub);
    }
    nats_bridge_kick(s->nb);
}

void nb_sub_close(nb_sub *s)
{
    if (s->sub) natsSubscription_Unsubscribe(s->sub);
    if (s->polled) {
        sub_free(s);
        return;
    }
    s->closed = true;
    s->on_gone = NULL; /* the caller is done with udata */
    mark_done(s);
}

int nats_bridge_sub_count(nats_bridge *nb)
{
    return nb->nsubs;
}

bool nats_bridge_misdirected(nats_bridge *nb, natsMsg *msg, bool want_request)
{
    const char *reply = natsMsg_GetReply(msg);
    bool request = reply && reply[0];
    if (request == want_request) return false;
    if (want_request)
        nb->ignored_events++;
    else
        nb->ignored_requests++;
    log_debug(TAG, "%s on %s ignored: %s", request ? "request" : "event", natsMsg_GetSubject(msg),
              want_request ? "an RPC takes requests only" : "a subscriber takes events only");
    nats_bridge_release(nb, msg);
    return true;
}

void nats_bridge_counters(nats_bridge *nb, uint64_t *dropped, uint64_t *ignored_events,
                          uint64_t *ignored_requests)
{
    pthread_mutex_lock(&nb->q_mu);
    *dropped = nb->q_dropped_total;
    pthread_mutex_unlock(&nb->q_mu);
    *ignored_events = nb->ignored_events;
    *ignored_requests = nb->ignored_requests;
}

/* ---- connection state ---- */

static void wake_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    nats_bridge *nb = closure;
    uv_async_send(&nb->state_async);
}

static void closed_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    nats_bridge *nb = closure;
    atomic_store(&nb->closed_seen, true);
    uv_async_send(&nb->state_async);
}

bool nats_bridge_connected(nats_bridge *nb)
{
    return nb->nc && natsConnection_Status(nb->nc) == NATS_CONN_STATUS_CONNECTED;
}

bool nats_bridge_ready(nats_bridge *nb)
{
    return nb->confirmed && nats_bridge_connected(nb);
}

const char *nats_bridge_state(nats_bridge *nb)
{
    if (!nb->nc) return nb->closing ? "closed" : "connecting";
    switch (natsConnection_Status(nb->nc)) {
    case NATS_CONN_STATUS_CONNECTED:
        return "connected";
    case NATS_CONN_STATUS_CONNECTING:
        return "connecting";
    case NATS_CONN_STATUS_RECONNECTING:
        return nb->ever_connected ? "reconnecting" : "connecting";
    case NATS_CONN_STATUS_DRAINING_SUBS:
    case NATS_CONN_STATUS_DRAINING_PUBS:
        return "draining";
    case NATS_CONN_STATUS_CLOSED:
        return "closed";
    default:
        return "disconnected";
    }
}

static void probe_done(void *udata, enum nb_status status, const nb_reply *reply)
{
    (void)reply;
    nats_bridge *nb = udata;
    if (status == NB_OK) {
        if (!nb->confirmed)
            log_info(TAG, "ready: %d subscriptions confirmed by the server", nb->nsubs);
        nb->confirmed = true;
        void (*ready)(void *) = nb->on_ready;
        nb->on_ready = NULL; /* once */
        if (ready) ready(nb->on_ready_arg);
    } else if (status == NB_TIMEOUT && nats_bridge_connected(nb)) {
        send_probe(nb);
    }
}

/* A message to our own inbox: when it comes back, the server has processed every SUB sent
 * before it on this connection. */
int nats_bridge_flush(nats_bridge *nb, double timeout_s, nb_reply_fn fn, void *udata,
                      nb_request **out)
{
    *out = NULL;
    if (!nb->nc || nb->closing || !nats_bridge_connected(nb)) return NB_UNAVAILABLE;
    nb_request *r = request_new(nb, timeout_s, fn, udata);
    if (!r) return NB_ERROR;
    char subject[96];
    snprintf(subject, sizeof subject, "%s.%llu", nb->inbox, (unsigned long long)r->id);
    if (publish_msg(nb, subject, NULL, NULL, 0, NULL) != NB_OK) {
        table_take(nb, r->id);
        r->fn = NULL;
        request_end(r, NB_ERROR, NULL);
        return NB_UNAVAILABLE;
    }
    *out = r;
    return NB_OK;
}

static void send_probe(nats_bridge *nb)
{
    if (nb->probe) return;
    nats_bridge_flush(nb, PROBE_TIMEOUT_S, probe_done, nb, &nb->probe);
}

void nats_bridge_on_ready(nats_bridge *nb, void (*fn)(void *arg), void *arg)
{
    nb->on_ready = fn;
    nb->on_ready_arg = arg;
}

void nats_bridge_confirm(nats_bridge *nb)
{
    nb->confirmed = false;
    if (nb->probe) nb_request_cancel(nb->probe);
    send_probe(nb);
}

static void finish_close(nats_bridge *nb);
static void finish_timeout_cb(uv_timer_t *t);
static int connect_now(nats_bridge *nb);
static void connect_retry_later(nats_bridge *nb, int ms, bool unreachable);
static void probe_found(void *arg);
static void probe_none(void *arg);
static void probe_stopped(void *arg);

/* The end of one nats.c connection, once nothing of nats.c calls us any more: the inbox, the
 * connection, and the messages the ring and the release batch still hold. The subscriptions'
 * handles are the caller's business (kept for a new connection, or freed). */
static void destroy_connection(nats_bridge *nb)
{
    natsSubscription_Destroy(nb->inbox_sub);
    nb->inbox_sub = NULL;
    natsConnection_Destroy(nb->nc);
    nb->nc = NULL;
    inbox_async_cb(&nb->inbox_async); /* release what the ring still holds */
    release_all(nb);
}

/* nats.c closed the connection by itself: it stops reconnecting when a server refuses the
 * credentials twice in a row. Start again from scratch, as at start-up: the subscriptions are
 * opened again on the next connection. */
static void connection_lost(nats_bridge *nb)
{
    const char *text = NULL;
    natsStatus st = natsConnection_GetLastError(nb->nc, &text);
    log_error(TAG, "the NATS client gave up the connection (%s%s%s); connecting again",
              natsStatus_GetText(st), text && text[0] ? ": " : "", text ? text : "");
    atomic_store(&nb->closed_seen, false);
    nb->was_connected = false;
    nb->confirmed = false;
    fail_all_pending(nb, NB_UNAVAILABLE);
    for (nb_sub *s = nb->subs; s; s = s->next) {
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
        s->dead = s->drain_requested; /* a drained one is freed by the next check */
    }
    for (nb_sub *s = nb->qsubs; s; s = s->next) { /* nats.c completes each (sub_complete_cb) */
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
    }
    destroy_connection(nb);
    nb->last_error[0] = '\0';
    nb->retry_ms = 0;
    connect_retry_later(nb, RETRY_MS, false);
}

static void state_async_cb(uv_async_t *a)
{
    nats_bridge *nb = a->data;
    if (atomic_load(&nb->closed_seen)) {
        if (nb->closing)
            finish_close(nb);
        else if (nb->nc)
            connection_lost(nb);
        return;
    }
    bool connected = nats_bridge_connected(nb);
    if (connected && !nb->was_connected) {
        char buf[256], url[256] = "?";
        if (natsConnection_GetConnectedUrl(nb->nc, buf, sizeof buf) == NATS_OK)
            nats_auth_redact(buf, url, sizeof url);
        log_info(TAG, "%s %s", nb->ever_connected ? "reconnected to" : "connected to", url);
        nb->ever_connected = true;
        nb->was_connected = true;
        send_probe(nb);
    } else if (!connected && nb->was_connected && !nb->closing) {
        nb->was_connected = false;
        nb->confirmed = false;
        log_warn(TAG, "disconnected (%s); %d pending requests fail as unavailable",
                 nats_bridge_state(nb), nb->pending);
        fail_all_pending(nb, NB_UNAVAILABLE);
    }
}

/* ---- life cycle ---- */

nats_bridge *nats_bridge_new(runtime *rt)
{
    nats_bridge *nb = calloc(1, sizeof *nb);
    if (!nb) return NULL;
    nb->rt = rt;
    nb->ring = calloc(INBOX_RING, sizeof *nb->ring);
    if (!nb->ring) {
        free(nb);
        return NULL;
    }
    nb->q = calloc(EVENT_QUEUE, sizeof *nb->q);
    if (!nb->q) {
        free(nb->ring);
        free(nb);
        return NULL;
    }
    pthread_mutex_init(&nb->ring_mu, NULL);
    pthread_mutex_init(&nb->q_mu, NULL);
    uv_check_init(&rt->loop, &nb->check_handle);
    uv_idle_init(&rt->loop, &nb->idle_handle);
    uv_async_init(&rt->loop, &nb->inbox_async, inbox_async_cb);
    uv_async_init(&rt->loop, &nb->state_async, state_async_cb);
    uv_async_init(&rt->loop, &nb->sub_async, sub_async_cb);
    uv_timer_init(&rt->loop, &nb->retry_timer);
    nb->check_handle.data = nb->idle_handle.data = nb;
    nb->inbox_async.data = nb->state_async.data = nb->sub_async.data = nb;
    nb->retry_timer.data = nb;
    nb->prober = (nats_probe){.loop = &rt->loop,
                              .urls = rt->cfg.nats_url,
                              .on_found = probe_found,
                              .on_none = probe_none,
                              .on_stopped = probe_stopped,
                              .arg = nb};
    nb->handles_open = 6;
    uv_check_start(&nb->check_handle, check_cb);
    return nb;
}

static natsStatus configure(nats_bridge *nb)
{
    natsOptions *o = nb->opts;
    char err[512];
    if (nats_auth_apply(o, nb->rt->cfg.nats_url, &nb->rt->cfg.nats_auth, err, sizeof err) != 0) {
        log_error(TAG, "%s", err);
        return NATS_INVALID_ARG;
    }
    natsStatus st = natsOptions_SetEventLoop(o, &nb->rt->loop, natsLibuv_Attach, natsLibuv_Read,
                                             natsLibuv_Write, natsLibuv_Detach);
    /* without SendAsap every flush waits about 1 ms in nats.c's flusher thread */
    if (st == NATS_OK) st = natsOptions_SetSendAsap(o, true);
    /* one delivery thread for every asynchronous subscription, not one thread each */
    if (st == NATS_OK) st = natsOptions_UseGlobalMessageDelivery(o, true);
    if (st == NATS_OK) st = natsOptions_SetErrorHandler(o, async_error_cb, nb);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(o, 250);
    if (st == NATS_OK) st = natsOptions_SetTimeout(o, 2000);
    if (st == NATS_OK) st = natsOptions_SetDisconnectedCB(o, wake_cb, nb);
    if (st == NATS_OK) st = natsOptions_SetReconnectedCB(o, wake_cb, nb);
    if (st == NATS_OK) st = natsOptions_SetClosedCB(o, closed_cb, nb);
    return st;
}

/* A URL answered the connect probe (nats_probe.c): connect to it. */
static void probe_found(void *arg)
{
    nats_bridge *nb = arg;
    if (connect_now(nb) == 0) return;
    connect_retry_later(nb, nb->retry_ms ? nb->retry_ms : RETRY_MS, false);
}

/* Every URL was tried, none answered. */
static void probe_none(void *arg)
{
    connect_retry_later(arg, RETRY_MS, true);
}

/* After nats_bridge_close: the probe's last handle is closed. */
static void probe_stopped(void *arg)
{
    nats_bridge *nb = arg;
    if (--nb->handles_open == 0 && nb->on_closed) nb->on_closed(nb->on_closed_arg);
}

static void retry_timer_cb(uv_timer_t *t)
{
    nats_bridge *nb = t->data;
    nats_probe_start(&nb->prober);
}

static void connect_retry_later(nats_bridge *nb, int ms, bool unreachable)
{
    if (nb->closing) return;
    if (!nb->retry_logged && unreachable) {
        log_warn(TAG, "%s not reachable yet; retrying in the background", nb->log_url);
        nb->retry_logged = true;
    }
    uv_timer_start(&nb->retry_timer, retry_timer_cb, (uint64_t)ms, 0);
}

static int open_inbox(nats_bridge *nb)
{
    char wildcard[80];
    snprintf(wildcard, sizeof wildcard, "%s.*", nb->inbox);
    natsStatus st = natsConnection_Subscribe(&nb->inbox_sub, nb->nc, wildcard, inbox_msg_cb, nb);
    if (st == NATS_OK) st = natsSubscription_SetOnCompleteCB(nb->inbox_sub, inbox_complete_cb, nb);
    if (st == NATS_OK) {
        pthread_mutex_lock(&nb->q_mu);
        nb->live++;
        pthread_mutex_unlock(&nb->q_mu);
    }
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(nb->inbox_sub, SUB_PENDING_MSGS, SUB_PENDING_BYTES);
    if (st != NATS_OK) {
        log_error(TAG, "cannot subscribe the request inbox: %s", natsStatus_GetText(st));
        return -1;
    }
    return 0;
}

static int connect_now(nats_bridge *nb)
{
    natsStatus st = nats_auth_connect(&nb->nc, nb->opts, &nb->rt->cfg.nats_auth);
    if (st != NATS_OK) {
        /* A server answered but refused us (credentials, TLS): the same cause is logged once and
         * retried with a growing wait, as the server's configuration may still change. */
        natsStatus last = NATS_OK;
        const char *detail = nats_GetLastError(&last);
        char reason[sizeof nb->last_error];
        snprintf(reason, sizeof reason, "%s%s%s%s", natsStatus_GetText(st),
                 detail && detail[0] ? ": " : "", detail ? detail : "",
                 st == NATS_SSL_ERROR ? " (certificate verify failed? --nats-ca names the CA of "
                                        "the server's certificate)"
                                      : "");
        nb->retry_ms = nb->retry_ms ? nb->retry_ms * 2 : RETRY_MS;
        if (nb->retry_ms > RETRY_MAX_MS) nb->retry_ms = RETRY_MAX_MS;
        if (strcmp(reason, nb->last_error) != 0) {
            log_error(TAG, "connecting to %s failed: %s; retrying (every %d s at most)",
                      nb->log_url, reason, RETRY_MAX_MS / 1000);
            snprintf(nb->last_error, sizeof nb->last_error, "%s", reason);
        } else {
            log_debug(TAG, "connecting to %s failed again: %s", nb->log_url, reason);
        }
        nb->nc = NULL;
        return -1;
    }
    nb->retry_ms = 0;
    nb->last_error[0] = '\0';
    if (open_inbox(nb) != 0) return -1;
    log_debug(TAG, "opening %d subscriptions", nb->nsubs);
    for (nb_sub *s = nb->subs; s; s = s->next)
        if (!s->sub && !s->dead) sub_open(s);
    for (nb_sub *s = nb->qsubs; s; s = s->next)
        if (!s->sub && !s->dead && !s->closed && !s->drain_requested) sub_open(s);
    uv_async_send(&nb->state_async); /* logs "connected" and confirms the subscriptions */
    return 0;
}

int nats_bridge_connect(nats_bridge *nb)
{
    natsLibuv_Init();
    natsLibuv_SetThreadLocalLoop(&nb->rt->loop);
    nats_auth_redact(nb->rt->cfg.nats_url, nb->log_url, sizeof nb->log_url);
    natsStatus st = natsOptions_Create(&nb->opts);
    if (st == NATS_OK) st = configure(nb);
    if (st != NATS_OK) {
        log_error(TAG, "bad NATS options (%s): %s", nb->log_url, natsStatus_GetText(st));
        return -1;
    }
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK) return -1;
    snprintf(nb->inbox, sizeof nb->inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    char host[256], port[16];
    if (nats_probe_url_host_port(nb->rt->cfg.nats_url, 0, host, sizeof host, port, sizeof port) !=
        0) {
        log_error(TAG, "bad NATS URL: %s", nb->log_url);
        return -1;
    }
    nats_probe_start(&nb->prober);
    return 0;
}

static void handle_closed_cb(uv_handle_t *h)
{
    nats_bridge *nb = h->data;
    if (--nb->handles_open == 0 && nb->on_closed) nb->on_closed(nb->on_closed_arg);
}

static void close_handles(nats_bridge *nb)
{
    uv_close((uv_handle_t *)&nb->check_handle, handle_closed_cb);
    uv_close((uv_handle_t *)&nb->idle_handle, handle_closed_cb);
    uv_close((uv_handle_t *)&nb->inbox_async, handle_closed_cb);
    uv_close((uv_handle_t *)&nb->state_async, handle_closed_cb);
    uv_close((uv_handle_t *)&nb->sub_async, handle_closed_cb);
    uv_close((uv_handle_t *)&nb->retry_timer, handle_closed_cb);
}

/* On the loop after nats.c said the connection is closed: nothing of nats.c calls us any more. */
static void finish_close(nats_bridge *nb)
{
    if (!nb->closing || !nb->nc) return;
    fail_all_pending(nb, NB_UNAVAILABLE);
    while (nb->subs)
        sub_free(nb->subs);
    for (nb_sub *s = nb->qsubs; s; s = s->next) {
        s->closed = true;
        mark_done(s);
    }
    destroy_connection(nb);
    nb->finishing = true;
    uv_timer_start(&nb->retry_timer, finish_timeout_cb, FINISH_TIMEOUT_MS, 0);
    maybe_finish_close(nb);
}

/* The handles close once nats.c completed every asynchronous subscription: it calls nothing of
 * ours after that. Runs again from check_cb (woken by sub_complete_cb) until then. */
static void maybe_finish_close(nats_bridge *nb)
{
    queue_discard(nb);
    reap_subs(nb);
    pthread_mutex_lock(&nb->q_mu);
    bool done = nb->qsubs == NULL && nb->live <= 0;
    pthread_mutex_unlock(&nb->q_mu);
    if (!done) return;
    nb->finishing = false;
    close_handles(nb);
    log_info(TAG, "connection closed");
}

static void finish_timeout_cb(uv_timer_t *t)
{
    nats_bridge *nb = t->data;
    if (!nb->finishing) return;
    pthread_mutex_lock(&nb->q_mu);
    int live = nb->live;
    pthread_mutex_unlock(&nb->q_mu);
    log_warn(TAG, "nats.c did not complete %d subscriptions in %d ms; closing without them", live,
             FINISH_TIMEOUT_MS);
    nb->finishing = false;
    nb->abandoned = true;
    close_handles(nb);
}

void nats_bridge_close(nats_bridge *nb, void (*on_closed)(void *arg), void *arg)
{
    nb->closing = true;
    bool probing = nats_probe_stop(&nb->prober);
    nb->on_closed = on_closed;
    nb->on_closed_arg = arg;
    if (!nb->nc) { /* never connected: only our own handles to close */
        atomic_store(&nb->closed_seen, true);
        if (probing) nb->handles_open++; /* the probe ends by itself (probe_stopped) */
        while (nb->subs)
            sub_free(nb->subs);
        while (nb->qsubs) /* never opened: nats.c never had them */
            sub_free(nb->qsubs);
        close_handles(nb);
        return;
    }
    /* Drain flushes every reply we already queued and then closes; closed_cb follows. */
    natsStatus st = NATS_ILLEGAL_STATE;
    if (nats_bridge_connected(nb)) st = natsConnection_DrainTimeout(nb->nc, 2000);
    if (st != NATS_OK) natsConnection_Close(nb->nc);
}

void nats_bridge_free(nats_bridge *nb)
{
    if (!nb) return;
    release_all(nb);
    if (nb->abandoned) return; /* see finish_timeout_cb: a leak at exit, not a use after free */
    if (nb->opts) natsOptions_Destroy(nb->opts);
    pthread_mutex_destroy(&nb->ring_mu);
    pthread_mutex_destroy(&nb->q_mu);
    free(nb->ring);
    free(nb->q);
    free(nb->buckets);
    free(nb);
}
