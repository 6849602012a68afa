/* wamp_router.c: owns the WAMP sessions on /websocket and what they hold: their NATS-backed
 * subscriptions (one NATS subscription per topic and match per process, shared by its sessions),
 * registrations (one NATS queue subscription per procedure per process), calls waiting for a
 * NATS reply, and invocations waiting for a YIELD. The behaviour is specified in docs/wamp.md.
 *
 * Sending: every outgoing message is encoded for the session's serializer and queued in wslay;
 * the session is then marked dirty and a zero timer flushes all dirty sessions with
 * h2o_websocket_proceed, outside h2o's callbacks (proceed may end a session through the message
 * callback, and h2o forbids closing from inside it). A session whose queue passes its bound is a
 * slow consumer: it is dropped at the next flush.
 *
 * Writing: h2o 2.2's WebSocket helper writes one wslay chunk per socket write (a 2-byte header,
 * then the payload, each waiting for the previous write to complete), which costs two system
 * calls per message and lets a burst outrun any reader. So the router gives wslay its own send
 * callback: frames are appended to the session's pending buffer, written in one piece whenever
 * the socket is idle, and the next batch goes when that write completes. */
#include "wamp_router.h"

#include <h2o/websocket.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_limit.h"
#include "local_dispatch.h"
#include "log.h"
#include "nats_bridge.h"
#include "rpc_error.h"
#include "services.h"
#include "trace.h"
#include "wamp_codec.h"

#define TAG "wamp"
#define MAX_ID 9007199254740992LL        /* 2^53 */
#define OUT_MAX_BYTES (4u * 1024 * 1024) /* queued for one session before it is a slow consumer */
#define JOIN_SWEEP_MS 250                /* how often sessions not yet established are checked */
#define JOIN_MSG_MAX (16u * 1024)        /* largest message before WELCOME (HELLO, AUTHENTICATE) */
/* tickets checked at once (PBKDF2 on the thread pool); more sign-ins are refused */
#define MAX_AUTH_JOBS 64
#define HDR_EXCLUDE "Wamp-Exclude"     /* the publishing session, when it excludes itself */
#define HDR_PUBLISHER "Wamp-Publisher" /* the publishing session, when it discloses itself */
#define HDR_PUBLICATION "Wamp-Publication"
#define HDR_PROGRESS "Wamp-Progress"
#define HDR_RECEIVE_PROGRESS "Wamp-Receive-Progress"
#define PROBE_TIMEOUT_S                                                                            \
    1.0 /* how long REGISTER waits for the bus to say who serves a procedure                       \
         */

enum {
    HELLO = 1,
    WELCOME = 2,
    ABORT = 3,
    CHALLENGE = 4,
    AUTHENTICATE = 5,
    GOODBYE = 6,
    ERROR = 8,
    PUBLISH = 16,
    PUBLISHED = 17,
    SUBSCRIBE = 32,
    SUBSCRIBED = 33,
    UNSUBSCRIBE = 34,
    UNSUBSCRIBED = 35,
    EVENT = 36,
    CALL = 48,
    CANCEL = 49,
    RESULT = 50,
    REGISTER = 64,
    REGISTERED = 65,
    UNREGISTER = 66,
    UNREGISTERED = 67,
    INVOCATION = 68,
    YIELD = 70,
};

typedef struct session session;
typedef struct wamp_router router;

/* A growable array of pointers (sessions of a topic, topics of a session, ...). */
typedef struct ptrs {
    void **v;
    int n, cap;
} ptrs;

typedef struct topic {
    router *r;
    uint64_t id;
    char *uri;
    char *match;
    char *subject;
    nb_sub *sub;
    ptrs sessions;
    struct topic *next;
} topic;

typedef struct registration {
    router *r;
    uint64_t id;
    char *procedure;
    char invoke[16]; /* "single", "roundrobin", "random" */
    bool disclose;   /* INVOCATION carries the caller's authid and authrole (disclose_caller) */
    nb_sub *sub;
    nb_sub *probe; /* SERVICES_PROBE_PREFIX<procedure>: answers whether it is shared */
    ptrs callees;
    int rr;
    struct registration *next;
} registration;

/* A session's request waiting on NATS: a CALL's reply, the server's confirmation of a new
 * subscription before SUBSCRIBED / REGISTERED (ack is then that message type, with ack_id), or
 * the probe of a REGISTER (ack REGISTER, procedure set: who else serves it). */
typedef struct pending_call {
    session *s;
    uint64_t request;
    nb_request *req;
    struct local_call *local; /* a CALL run in-process (local_dispatch.h) */
    bool progress;
    int ack;
    uint64_t ack_id;
    char *procedure; /* a REGISTER's probe: the procedure, its invoke policy and disclose_caller */
    char invoke[16];
    bool disclose;
    struct pending_call *next;
} pending_call;

typedef struct invocation {
    session *s;
    uint64_t id;
    char *reply; /* NULL: the caller wanted no answer */
    struct invocation *next;
} invocation;

struct session {
    router *r;
    h2o_websocket_conn_t *ws;
    enum wamp_serializer ser;
    uint64_t id;
    /* S_CHALLENGED: CHALLENGE sent, waiting for AUTHENTICATE; S_VERIFYING: a ticket is being
     * checked on the thread pool (auth_job) */
    enum { S_OPEN, S_CHALLENGED, S_VERIFYING, S_ESTABLISHED, S_CLOSING } state;
    char authid[AUTH_ID_MAX];
    char authrole[AUTH_ROLE_MAX];
    const char *authmethod; /* static string */
    const auth_user *user;  /* while authenticating; NULL for an unknown authid */
    char *challenge;        /* wampcra: the challenge text sent */
    char *realm;            /* from HELLO, for WELCOME */
    struct auth_job *auth_job;
    /* the client's address (auth_limit_peer), for the limiter of failed sign-ins */
    char peer[AUTH_PEER_MAX];
    int ncalls;  /* calls waiting for their result */
    int nprobes; /* REGISTERs waiting for the bus to say who serves the procedure */
    ptrs topics;
    ptrs regs;
    pending_call *calls;
    invocation *invs;
    int ninvs; /* invocations waiting for this callee's answer (--max-callee-pending) */
    uint64_t next_inv;
    bool dirty, slow;
    codec_buf out_pending; /* frames wslay handed over, not yet written */
    codec_buf out_writing; /* the batch the socket is writing */
    bool close_queued;     /* the close frame is in wslay (after every queued message) */
    uint16_t close_code;   /* S_CLOSING: the close frame to send once the queue is empty */
    const char *close_reason;
    uint64_t close_deadline; /* loop time: a peer that does not read by then is dropped */
    uint64_t join_deadline;  /* loop time: a session not established by then is aborted */
    uint64_t last_activity;  /* loop time of the last message, ping or pong received */
    uint64_t last_ping;      /* loop time of the last ping the router sent (idle_sweep) */
    session *dirty_next;
    session *prev, *next;
};

struct wamp_router {
    runtime *rt;
    session *sessions;
    int nsessions;
    topic *topics;
    registration *regs;
    uint64_t next_sub_id, next_reg_id;
    session *dirty;
    uv_timer_t flush_timer;
    uv_timer_t join_timer; /* runs while some session is not established yet */
    uv_timer_t idle_timer; /* runs while there are sessions (--session-idle-timeout) */
    codec_buf out;
    int auth_jobs; /* tickets being checked on the thread pool */
    bool shutting_down;
};

static void session_end(session *s);
static void join_sweep(uv_timer_t *t);
static void idle_sweep(uv_timer_t *t);
static void ack_after_flush(session *s, int type, uint64_t request, uint64_t id, bool fresh);

/* ---- small helpers ---- */

static int ptrs_add(ptrs *p, void *x)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 4;
        void **v = realloc(p->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = x;
    return 0;
}

static bool ptrs_remove(ptrs *p, void *x)
{
    for (int i = 0; i < p->n; i++) {
        if (p->v[i] != x) continue;
        p->v[i] = p->v[--p->n];
        return true;
    }
    return false;
}

static bool ptrs_has(const ptrs *p, const void *x)
{
    for (int i = 0; i < p->n; i++)
        if (p->v[i] == x) return true;
    return false;
}

static uint64_t random_id(void)
{
    uint64_t x = 0;
    if (uv_random(NULL, NULL, &x, sizeof x, 0, NULL) != 0)
        x = (uint64_t)rand() << 21 ^ (uint64_t)rand();
    return (x & (MAX_ID - 1)) + 1; /* [1, 2^53] */
}

/* An id field: an integer in [1, 2^53]. */
static bool get_id(const json_t *msg, size_t i, uint64_t *out)
{
    json_t *v = json_array_get(msg, i);
    if (!json_is_integer(v)) return false;
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > MAX_ID) return false;
    *out = (uint64_t)n;
    return true;
}

/* Also refuses the system subjects ($-prefixed, such as $SRV and SERVICES_PROBE_PREFIX, and
 * _INBOX.), as the HTTP gateway does. */
static bool valid_uri(const char *u, bool allow_empty_parts)
{
    if (!u[0] || strpbrk(u, " \t\r\n*>#")) return false;
    if (u[0] == '$' || strncmp(u, "_INBOX.", 7) == 0) return false;
    if (!allow_empty_parts && (u[0] == '.' || u[strlen(u) - 1] == '.' || strstr(u, "..")))
        return false;
    return true;
}

/* ---- sending ---- */

/* Ends a session without a close handshake: the peer does not read, or does not answer. */
static void drop_session(session *s)
{
    h2o_websocket_conn_t *ws = s->ws;
    session_end(s);
    h2o_websocket_close(ws);
}

/* For a closing session: queue the close frame once the messages before it are out. Returns
 * false when the session is dropped (or must be checked again later: *again). A peer that reads
 * but never answers the close frame is dropped by idle_sweep. */
static bool close_step(session *s, bool *again)
{
    if (s->state != S_CLOSING || s->close_queued) return true;
    wslay_event_context_ptr ctx = s->ws->ws_ctx;
    bool drained = wslay_event_get_queued_msg_count(ctx) == 0 && s->ws->sock &&
                   !h2o_socket_is_writing(s->ws->sock) && s->out_pending.len == 0;
    if (drained) {
        wslay_event_queue_close(ctx, s->close_code, (const uint8_t *)s->close_reason,
                                strlen(s->close_reason));
        s->close_queued = true;
        return true;
    }
    if (uv_now(&s->r->rt->loop) > s->close_deadline) { /* the peer does not read: drop it */
        drop_session(s);
        return false;
    }
    *again = true;
    return true;
}

static void flush_cb(uv_timer_t *t)
{
    router *r = t->data;
    session *list = r->dirty;
    bool recheck = false;
    r->dirty = NULL;
    while (list) {
        session *s = list;
        list = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
        bool again = false;
        if (!s->slow && !close_step(s, &again)) continue;
        if (again) { /* back on the dirty list before proceed, which may still end it */
            s->dirty = true;
            s->dirty_next = r->dirty;
            r->dirty = s;
            recheck = true;
        }
        if (s->slow) {
            log_warn(TAG, "session %llu closed: slow consumer (over %u bytes queued)",
                     (unsigned long long)s->id, OUT_MAX_BYTES);
            h2o_websocket_conn_t *ws = s->ws;
            session_end(s);
            h2o_websocket_close(ws);
            continue;
        }
        if (s->ws->sock) h2o_websocket_proceed(s->ws); /* may end the session (callback NULL) */
    }
    /* closing sessions whose queue is not out yet are looked at again in a moment */
    if (r->dirty && !uv_is_active((uv_handle_t *)&r->flush_timer))
        uv_timer_start(&r->flush_timer, flush_cb, recheck ? 10 : 0, 0);
}

static void mark_dirty(session *s)
{
    if (s->dirty) return;
    s->dirty = true;
    s->dirty_next = s->r->dirty;
    s->r->dirty = s;
    if (!uv_is_active((uv_handle_t *)&s->r->flush_timer))
        uv_timer_start(&s->r->flush_timer, flush_cb, 0, 0);
}

static size_t queued_bytes(session *s)
{
    return wslay_event_get_queued_msg_length(s->ws->ws_ctx) + s->out_pending.len +
           s->out_writing.len;
}

static void write_batch(session *s);

static void on_batch_written(h2o_socket_t *sock, const char *err)
{
    h2o_websocket_conn_t *ws = sock->data;
    session *s = ws->data;
    codec_buf_reset(&s->out_writing);
    if (err) { /* as h2o does: the connection is over */
        ws->cb(ws, NULL);
        return;
    }
    if (s->out_pending.len) {
        write_batch(s);
        return;
    }
    h2o_websocket_proceed(ws); /* more from wslay, or the end of a closing session */
}

static void write_batch(session *s)
{
    codec_buf t = s->out_writing;
    s->out_writing = s->out_pending;
    s->out_pending = t;
    h2o_iovec_t buf = h2o_iovec_init(s->out_writing.data, s->out_writing.len);
    h2o_socket_write(s->ws->sock, &buf, 1, on_batch_written);
}

/* wslay's send callback: take the frame, start a write if the socket is idle. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)flags;
    h2o_websocket_conn_t *ws = user_data;
    session *s = ws->data;
    if (!ws->sock || codec_buf_append(&s->out_pending, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (!h2o_socket_is_writing(ws->sock)) write_batch(s);
    return (ssize_t)len;
}

static void queue_bytes(session *s, const char *p, size_t n)
{
    if (s->slow) return;
    wslay_event_context_ptr ctx = s->ws->ws_ctx;
    if (queued_bytes(s) + n > OUT_MAX_BYTES) {
        s->slow = true;
        mark_dirty(s);
        return;
    }
    struct wslay_event_msg m = {
        .opcode = s->ser == WAMP_JSON ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME,
        .msg = (const uint8_t *)p,
        .msg_length = n,
    };
    wslay_event_queue_msg(ctx, &m);
    mark_dirty(s);
}

/* Sends msg (a reference is taken over) to the session. */
static void send_msg(session *s, json_t *msg)
{
    codec_buf *out = &s->r->out;
    codec_buf_reset(out);
    if (msg && wamp_encode(s->ser, msg, out) == 0) queue_bytes(s, out->data, out->len);
    json_decref(msg);
}

/* The close frame goes after what is queued (an ABORT, a GOODBYE): wslay sends control frames
 * first and nothing after a close, so the flush queues it once the message queue is empty. */
static void close_session(session *s, uint16_t code, const char *reason)
{
    if (s->state == S_CLOSING) return;
    s->state = S_CLOSING;
    s->close_code = code;
    s->close_reason = reason;
    s->close_deadline = uv_now(&s->r->rt->loop) + 2000;
    mark_dirty(s);
}

static void abort_session(session *s, const char *uri, const char *message)
{
    if (s->state == S_CLOSING) return;
    log_info(TAG, "session %llu aborted: %s: %s", (unsigned long long)s->id, uri, message);
    send_msg(s, json_pack("[i{ss}s]", ABORT, "message", message, uri));
    close_session(s, 1000, "aborted");
}

static void protocol_violation(session *s, const char *message)
{
    abort_session(s, "wamp.error.protocol_violation", message);
}

static void send_error(session *s, int type, uint64_t request, const char *uri, const char *message)
{
    send_msg(s, json_pack("[iiI{}s[s]]", ERROR, type, (json_int_t)request, uri, message));
}

/* ---- the NATS envelope [args, kwargs] ---- */

/* Splits a NATS payload into args and kwargs (new references); -1 if it is not an envelope. */
/* Whether the session's role may do action on uri; when not, answers ERROR not_authorized (if
 * the request wants an answer: a PUBLISH only with acknowledge). */
static bool allowed(session *s, enum auth_action action, const char *uri, int type,
                    uint64_t request, bool answer)
{
    if (auth_allowed(s->r->rt->auth, s->authrole, action, uri)) return true;
    if (!answer) return false;
    static const char *const verbs[] = {"call", "register", "publish", "subscribe to"};
    char text[320];
    snprintf(text, sizeof text, "role %s may not %s %s", s->authrole, verbs[action], uri);
    send_error(s, type, request, URI_NOT_AUTHORIZED, text);
    return false;
}

static int envelope_split(const char *data, size_t len, json_t **args, json_t **kwargs)
{
    *args = *kwargs = NULL;
    json_t *v = len ? json_loadb(data, len, JSON_ALLOW_NUL, NULL) : json_array();
    if (!json_is_array(v) || json_array_size(v) > 2) {
        json_decref(v);
        return -1;
    }
    json_t *a = json_array_get(v, 0), *k = json_array_get(v, 1);
    if ((a && !json_is_array(a)) || (k && !json_is_object(k))) {
        json_decref(v);
        return -1;
    }
    *args = a ? json_incref(a) : json_array();
    *kwargs = k ? json_incref(k) : json_object();
    json_decref(v);
    return 0;
}

/* The JSON text [args, kwargs] for NATS, from message elements ai and ai+1 (optional). */
static char *envelope_text(const json_t *msg, size_t ai, size_t *len)
{
    json_t *a = json_array_get(msg, ai), *k = json_array_get(msg, ai + 1);
    json_t *env = json_pack("[OO]", a ? a : json_array(), k ? k : json_object());
    /* json_pack "O" increfs: the fresh defaults above need their own release */
    if (!a) json_decref(json_array_get(env, 0));
    if (!k) json_decref(json_array_get(env, 1));
    char *text = env ? json_dumps(env, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(env);
    *len = text ? strlen(text) : 0;
    return text;
}

static bool args_ok(const json_t *msg, size_t ai)
{
    json_t *a = json_array_get(msg, ai), *k = json_array_get(msg, ai + 1);
    if (json_array_size(msg) > ai + 2) return false;
    return (!a || json_is_array(a)) && (!k || json_is_object(k));
}

/* ---- publish and subscribe ---- */

static void on_event(void *udata, natsMsg *m)
{
    topic *t = udata;
    json_t *args, *kwargs;
    if (nats_bridge_misdirected(t->r->rt->nats, m, false)) return; /* requests are for RPCs */
    if (envelope_split(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &args, &kwargs) != 0) {
        log_debug(TAG, "event on %s dropped: not an [args, kwargs] envelope",
                  natsMsg_GetSubject(m));
        nats_bridge_release(t->r->rt->nats, m);
        return;
    }
    const char *exclude = NULL, *publisher = NULL, *publication = NULL;
    natsMsgHeader_Get(m, HDR_EXCLUDE, &exclude);
    natsMsgHeader_Get(m, HDR_PUBLISHER, &publisher);
    natsMsgHeader_Get(m, HDR_PUBLICATION, &publication);
    uint64_t excluded = exclude ? strtoull(exclude, NULL, 10) : 0;
    uint64_t pub_session = publisher ? strtoull(publisher, NULL, 10) : 0;
    uint64_t pub_id = publication ? strtoull(publication, NULL, 10) : 0;
    if (pub_id < 1 || pub_id > (uint64_t)MAX_ID) pub_id = random_id();
    json_t *details = json_object();
    if (strcmp(t->match, "exact") != 0)
        json_object_set_new(details, "topic", json_string(natsMsg_GetSubject(m)));
    if (pub_session)
        json_object_set_new(details, "publisher", json_integer((json_int_t)pub_session));
    json_t *ev =
        json_pack("[iIIooo]", EVENT, (json_int_t)t->id, (json_int_t)pub_id, details, args, kwargs);
    /* encode once per serializer, queue for every session but the publisher */
    codec_buf enc[2];
    codec_buf_init(&enc[0]);
    codec_buf_init(&enc[1]);
    bool ok[2] = {wamp_encode(WAMP_JSON, ev, &enc[0]) == 0, false};
    bool msgpack_done = false;
    for (int i = 0; i < t->sessions.n; i++) {
        session *s = t->sessions.v[i];
        if (s->state != S_ESTABLISHED || (excluded && s->id == excluded)) continue;
        if (s->ser == WAMP_MSGPACK && !msgpack_done) {
            ok[1] = wamp_encode(WAMP_MSGPACK, ev, &enc[1]) == 0;
            msgpack_done = true;
        }
        if (ok[s->ser]) queue_bytes(s, enc[s->ser].data, enc[s->ser].len);
    }
    codec_buf_free(&enc[0]);
    codec_buf_free(&enc[1]);
    json_decref(ev);
    nats_bridge_release(t->r->rt->nats, m);
}

/* NATS subject for a topic and match policy, or NULL (refused, *why says so). */
static char *topic_subject(const char *uri, const char *match, const char **why)
{
    if (strcmp(match, "exact") == 0) {
        if (!valid_uri(uri, false)) goto bad;
        return strdup(uri);
    }
    if (strcmp(match, "prefix") == 0) {
        if (!valid_uri(uri, false)) goto bad;
        size_t n = strlen(uri);
        char *sub = malloc(n + 3);
        if (sub) snprintf(sub, n + 3, "%s.>", uri);
        return sub;
    }
    if (strcmp(match, "wildcard") == 0) {
        if (!valid_uri(uri, true)) goto bad;
        /* empty components become *: "a..c" -> "a.*.c", ".b" -> "*.b" */
        size_t n = strlen(uri);
        char *sub = malloc(2 * n + 2), *o = sub;
        if (!sub) return NULL;
        const char *p = uri;
        for (;;) {
            const char *dot = strchr(p, '.');
            size_t part = dot ? (size_t)(dot - p) : strlen(p);
            if (part == 0)
                *o++ = '*';
            else
                memcpy(o, p, part), o += part;
            if (!dot) break;
            *o++ = '.';
            p = dot + 1;
        }
        *o = '\0';
        return sub;
    }
    *why = "unknown match policy (exact, prefix or wildcard)";
    return NULL;
bad:
    *why = "a topic NATS cannot express (empty, or with '*', '>', '#' or whitespace; prefix and "
           "exact topics need every component)";
    return NULL;
}

static topic *topic_find(router *r, const char *uri, const char *match)
{
    for (topic *t = r->topics; t; t = t->next)
        if (strcmp(t->uri, uri) == 0 && strcmp(t->match, match) == 0) return t;
    return NULL;
}

static topic *topic_by_id(router *r, uint64_t id)
{
    for (topic *t = r->topics; t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

static void topic_release(topic *t)
{
    if (t->sessions.n > 0) return;
    router *r = t->r;
    for (topic **p = &r->topics; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    if (t->sub) nb_sub_close(t->sub);
    free(t->sessions.v);
    free(t->uri);
    free(t->match);
    free(t->subject);
    free(t);
}

static void on_subscribe(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) != 4 || !get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri)) {
        protocol_violation(s, "SUBSCRIBE is [32, Request|id, Options|dict, Topic|uri]");
        return;
    }
    const char *match = json_string_value(json_object_get(opts, "match"));
    if (!match) match = "exact";
    const char *why = NULL;
    router *r = s->r;
    topic *t = topic_find(r, json_string_value(uri), match);
    if ((!t || !ptrs_has(&t->sessions, s)) && s->topics.n >= r->rt->cfg.max_session_subs) {
        send_error(s, SUBSCRIBE, req, URI_LIMIT_EXCEEDED, "too many subscriptions in this session");
        return;
    }
    bool fresh = !t;
    char *subject = t ? NULL : topic_subject(json_string_value(uri), match, &why);
    if (!t && !subject) {
        send_error(s, SUBSCRIBE, req, "wamp.error.invalid_uri", why ? why : "out of memory");
        return;
    }
    if (!allowed(s, AUTH_SUBSCRIBE, t ? t->subject : subject, SUBSCRIBE, req, true)) {
        free(subject);
        return;
    }
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) {
            free(subject);
            return;
        }
        t->r = r;
        t->id = ++r->next_sub_id;
        t->uri = strdup(json_string_value(uri));
        t->match = strdup(match);
        t->subject = subject;
        t->sub = nats_bridge_subscribe(r->rt->nats, subject, NULL, on_event, t);
        t->next = r->topics;
        r->topics = t;
        if (!t->sub) {
            topic_release(t);
            send_error(s, SUBSCRIBE, req, "wamp.error.unavailable", "cannot subscribe on NATS");
            return;
        }
    }
    if (!ptrs_has(&t->sessions, s)) {
        ptrs_add(&t->sessions, s);
        ptrs_add(&s->topics, t);
    }
    ack_after_flush(s, SUBSCRIBED, req, t->id, fresh);
}

static void on_unsubscribe(session *s, json_t *msg)
{
    uint64_t req, id;
    if (json_array_size(msg) != 3 || !get_id(msg, 1, &req) || !get_id(msg, 2, &id)) {
        protocol_violation(s, "UNSUBSCRIBE is [34, Request|id, Subscription|id]");
        return;
    }
    topic *t = topic_by_id(s->r, id);
    if (!t || !ptrs_remove(&t->sessions, s)) {
        send_error(s, UNSUBSCRIBE, req, "wamp.error.no_such_subscription",
                   "no such subscription in this session");
        return;
    }
    ptrs_remove(&s->topics, t);
    topic_release(t);
    send_msg(s, json_pack("[iI]", UNSUBSCRIBED, (json_int_t)req));
}

static void on_publish(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) < 4 || !get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri) || !args_ok(msg, 4)) {
        protocol_violation(s,
                           "PUBLISH is [16, Request|id, Options|dict, Topic|uri, Arguments|list, "
                           "ArgumentsKw|dict]");
        return;
    }
    bool ack = json_is_true(json_object_get(opts, "acknowledge"));
    if (!valid_uri(json_string_value(uri), false)) {
        if (ack) send_error(s, PUBLISH, req, "wamp.error.invalid_uri", "not a valid topic");
        return;
    }
    if (!allowed(s, AUTH_PUBLISH, json_string_value(uri), PUBLISH, req, ack)) return;
    uint64_t pub = random_id();
    char pubtext[24], sesstext[24];
    snprintf(pubtext, sizeof pubtext, "%llu", (unsigned long long)pub);
    snprintf(sesstext, sizeof sesstext, "%llu", (unsigned long long)s->id);
    const char *headers[8];
    int h = 0;
    headers[h++] = HDR_PUBLICATION;
    headers[h++] = pubtext;
    if (!json_is_false(json_object_get(opts, "exclude_me"))) {
        headers[h++] = HDR_EXCLUDE;
        headers[h++] = sesstext;
    }
    if (json_is_true(json_object_get(opts, "disclose_me"))) {
        headers[h++] = HDR_PUBLISHER;
        headers[h++] = sesstext;
    }
    headers[h] = NULL;
    size_t len;
    char *body = envelope_text(msg, 4, &len);
    int rc =
        body ? nats_bridge_publish(s->r->rt->nats, json_string_value(uri), NULL, body, len, headers)
             : NB_ERROR;
    free(body);
    if (!ack) return;
    if (rc == NB_OK)
        send_msg(s, json_pack("[iII]", PUBLISHED, (json_int_t)req, (json_int_t)pub));
    else
        send_error(s, PUBLISH, req, URI_UNAVAILABLE, "the bus is unavailable");
}

/* SUBSCRIBED / REGISTERED once the server has the new NATS subscription, so that a publication
 * or call made right after, from anywhere, reaches it. */
static void on_ack_flushed(void *udata, enum nb_status status, natsMsg *reply)
{
    (void)status;
    pending_call *c = udata;
    session *s = c->s;
    if (reply) nats_bridge_release(s->r->rt->nats, reply);
    for (pending_call **p = &s->calls; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    send_msg(s, json_pack("[iII]", c->ack, (json_int_t)c->request, (json_int_t)c->ack_id));
    free(c);
}

static void ack_after_flush(session *s, int type, uint64_t request, uint64_t id, bool fresh)
{
    pending_call *c = fresh ? calloc(1, sizeof *c) : NULL;
    if (c) {
        c->s = s;
        c->request = request;
        c->ack = type;
        c->ack_id = id;
        if (nats_bridge_flush(s->r->rt->nats, 2.0, on_ack_flushed, c, &c->req) == NB_OK) {
            c->next = s->calls;
            s->calls = c;
            return;
        }
        free(c);
    }
    send_msg(s, json_pack("[iII]", type, (json_int_t)request, (json_int_t)id));
}

/* ---- calls (this session is the caller) ---- */

static void call_unlink(pending_call *c)
{
    for (pending_call **p = &c->s->calls; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            return;
        }
    }
}

/* An error reply's body {"error": uri, "args": [...], "kwargs": {...}} as an ERROR message. */
static json_t *error_from_reply(uint64_t request, natsMsg *reply)
{
    const char *code = NULL;
    natsMsgHeader_Get(reply, HDR_SERVICE_ERROR_CODE, &code);
    json_t *body = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply),
                              JSON_ALLOW_NUL, NULL);
    const char *uri = json_string_value(json_object_get(body, "error"));
    json_t *args = json_object_get(body, "args"), *kwargs = json_object_get(body, "kwargs");
    json_t *details = json_object();
    if (code) json_object_set_new(details, "code", json_integer(atoi(code)));
    json_t *e = json_pack("[iiIos[]{}]", ERROR, CALL, (json_int_t)request, details,
                          uri ? uri : URI_RUNTIME_ERROR);
    if (json_is_array(args)) json_array_set(e, 5, args);
    if (json_is_object(kwargs)) json_array_set(e, 6, kwargs);
    if (!uri) {
        const char *text = NULL;
        natsMsgHeader_Get(reply, HDR_SERVICE_ERROR, &text);
        json_array_set_new(e, 5, json_pack("[s]", text ? text : "malformed error reply"));
    }
    json_decref(body);
    return e;
}

static void on_call_reply(void *udata, enum nb_status status, natsMsg *reply)
{
    pending_call *c = udata;
    session *s = c->s;
    const char *progress = NULL;
    bool is_progress =
        status == NB_OK && natsMsgHeader_Get(reply, HDR_PROGRESS, &progress) == NATS_OK;
    if (!is_progress) {
        call_unlink(c);
        s->ncalls--;
    }
    const char *code = NULL;
    if (status == NB_OK && natsMsgHeader_Get(reply, HDR_SERVICE_ERROR_CODE, &code) == NATS_OK) {
        send_msg(s, error_from_reply(c->request, reply));
    } else if (status == NB_OK) {
        json_t *args, *kwargs;
        if (envelope_split(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), &args,
                           &kwargs) == 0) {
            json_t *details = is_progress ? json_pack("{sb}", "progress", 1) : json_object();
            send_msg(s,
                     json_pack("[iIooo]", RESULT, (json_int_t)c->request, details, args, kwargs));
        } else {
            send_error(s, CALL, c->request, URI_RUNTIME_ERROR, "the reply is not [args, kwargs]");
        }
    } else if (status == NB_NO_RESPONDERS) {
        send_error(s, CALL, c->request, URI_NO_SUCH_PROCEDURE, "no service answers this procedure");
    } else if (status == NB_TIMEOUT) {
        send_error(s, CALL, c->request, URI_TIMEOUT, "no reply within the call timeout");
    } else {
        send_error(s, CALL, c->request, URI_UNAVAILABLE, "the bus is unavailable");
    }
    if (reply) nats_bridge_release(s->r->rt->nats, reply);
    if (!is_progress) free(c);
}

static void on_call(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) < 4 || !get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri) || !args_ok(msg, 4)) {
        protocol_violation(s,
                           "CALL is [48, Request|id, Options|dict, Procedure|uri, Arguments|list, "
                           "ArgumentsKw|dict]");
        return;
    }
    if (!valid_uri(json_string_value(uri), false)) {
        send_error(s, CALL, req, "wamp.error.invalid_uri", "not a valid procedure");
        return;
    }
    if (!allowed(s, AUTH_CALL, json_string_value(uri), CALL, req, true)) return;
    if (s->ncalls >= s->r->rt->cfg.max_session_calls) {
        char text[128];
        snprintf(text, sizeof text, "too many calls in flight in this session (limit %d)",
                 s->r->rt->cfg.max_session_calls);
        send_error(s, CALL, req, URI_LIMIT_EXCEEDED, text);
        return;
    }
    double timeout = s->r->rt->cfg.call_timeout;
    json_t *t = json_object_get(opts, "timeout");
    if (json_is_number(t) && json_number_value(t) > 0) timeout = json_number_value(t) / 1000.0;
    if (timeout > s->r->rt->cfg.max_call_timeout) timeout = s->r->rt->cfg.max_call_timeout;
    bool progress = json_is_true(json_object_get(opts, "receive_progress"));
    const char *headers[5];
    int h = 0;
    json_t *tp = json_object_get(opts, TRACE_HEADER); /* the caller's trace goes on */
    char trace_id[TRACE_ID_LEN + 1];
    if (json_is_string(tp) &&
        trace_parse(json_string_value(tp), json_string_length(tp), trace_id)) {
        headers[h++] = TRACE_HEADER;
        headers[h++] = json_string_value(tp);
    }
    if (progress) {
        headers[h++] = HDR_RECEIVE_PROGRESS;
        headers[h++] = "1";
    }
    headers[h] = NULL;
    pending_call *c = calloc(1, sizeof *c);
    size_t len;
    char *body = c ? envelope_text(msg, 4, &len) : NULL;
    if (!body) {
        free(c);
        send_error(s, CALL, req, URI_RUNTIME_ERROR, "out of memory");
        return;
    }
    c->s = s;
    c->request = req;
    c->progress = progress;
    rpc_handle handle;
    int rc = rpc_call_start(s->r->rt, true, json_string_value(uri), body, len, h ? headers : NULL,
                            s->authid, s->authrole, timeout, on_call_reply, c, &handle);
    c->req = handle.bus;
    c->local = handle.local;
    free(body);
    if (rc != NB_OK) {
        free(c);
        send_error(s, CALL, req, URI_UNAVAILABLE, "the bus is unavailable");
        return;
    }
    if (progress && c->req) nb_request_allow_progress(c->req, HDR_PROGRESS);
    c->next = s->calls;
    s->calls = c;
    s->ncalls++;
}

static void on_cancel(session *s, json_t *msg)
{
    uint64_t req;
    if (json_array_size(msg) < 2 || !get_id(msg, 1, &req) ||
        (json_array_size(msg) > 2 && !json_is_object(json_array_get(msg, 2)))) {
        protocol_violation(s, "CANCEL is [49, CALL.Request|id, Options|dict]");
        return;
    }
    for (pending_call *c = s->calls; c; c = c->next) {
        if (c->request != req || c->ack) continue;
        call_unlink(c);
        s->ncalls--;
        rpc_handle_cancel(s->r->rt, &(rpc_handle){c->req, c->local});
        send_error(s, CALL, req, "wamp.error.canceled", "the call was canceled");
        free(c);
        return;
    }
    /* already answered: nothing to do */
}

/* ---- registrations (this session is a callee) ---- */

static registration *reg_find(router *r, const char *procedure)
{
    for (registration *g = r->regs; g; g = g->next)
        if (strcmp(g->procedure, procedure) == 0) return g;
    return NULL;
}

static registration *reg_by_id(router *r, uint64_t id)
{
    for (registration *g = r->regs; g; g = g->next)
        if (g->id == id) return g;
    return NULL;
}

static void reg_release(registration *g)
{
    if (g->callees.n > 0) return;
    router *r = g->r;
    for (registration **p = &r->regs; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
    if (g->sub) nb_sub_close(g->sub);
    if (g->probe) nb_sub_close(g->probe);
    free(g->callees.v);
    free(g->procedure);
    free(g);
}

/* Answers a NATS request (reply may be NULL: nobody waits) with an error. */
static void reply_error(router *r, const char *reply, const char *uri, json_t *args, json_t *kwargs,
                        int code)
{
    if (!reply) return;
    json_t *body =
        json_pack("{s:s, s:o, s:o}", "error", uri, "args", args ? json_incref(args) : json_array(),
                  "kwargs", kwargs ? json_incref(kwargs) : json_object());
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(body);
    if (!text) return;
    const char *message = json_string_value(json_array_get(args, 0));
    char line[256], codetext[16];
    rpc_error_header_text(line, sizeof line, message ? message : uri);
    snprintf(codetext, sizeof codetext, "%d", code);
    const char *headers[] = {HDR_SERVICE_ERROR, line, HDR_SERVICE_ERROR_CODE, codetext, NULL};
    nats_bridge_publish(r->rt->nats, reply, NULL, text, strlen(text), headers);
    free(text);
}

/* The callee has --max-callee-pending invocations unanswered: the caller gets limit_exceeded
 * (429) and the callee is not sent this one. */
static void refuse_busy_callee(router *r, const char *reply, const session *callee, json_t *args,
                               json_t *kwargs)
{
    char text[128];
    snprintf(text, sizeof text, "the callee has %d invocations unanswered (--max-callee-pending)",
             callee->ninvs);
    log_debug(TAG, "session %llu: %s", (unsigned long long)callee->id, text);
    json_t *a = json_pack("[s]", text);
    reply_error(r, reply, URI_LIMIT_EXCEEDED, a, NULL, 429);
    json_decref(a);
    json_decref(args);
    json_decref(kwargs);
}

static void on_invocation_msg(void *udata, natsMsg *m)
{
    registration *g = udata;
    router *r = g->r;
    if (nats_bridge_misdirected(r->rt->nats, m, true)) return; /* an event never runs an RPC */
    const char *reply = natsMsg_GetReply(m);
    json_t *args, *kwargs;
    if (envelope_split(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &args, &kwargs) != 0) {
        json_t *a =
            json_pack("[s]", "expected [args, kwargs] with args an array and kwargs an object");
        reply_error(r, reply, URI_INVALID_ARGUMENT, a, NULL, 400);
        json_decref(a);
        nats_bridge_release(r->rt->nats, m);
        return;
    }
    session *callee = NULL;
    if (g->callees.n > 0) {
        int i = strcmp(g->invoke, "random") == 0 ? (int)(random_id() % (uint64_t)g->callees.n)
                                                 : g->rr++ % g->callees.n;
        callee = g->callees.v[i];
    }
    if (callee && callee->state == S_ESTABLISHED &&
        callee->ninvs >= r->rt->cfg.max_callee_pending) {
        refuse_busy_callee(r, reply, callee, args, kwargs);
        nats_bridge_release(r->rt->nats, m);
        return;
    }
    invocation *inv = callee ? calloc(1, sizeof *inv) : NULL;
    if (!inv || callee->state != S_ESTABLISHED) {
        json_t *a = json_pack("[s]", "the callee left");
        reply_error(r, reply, URI_UNAVAILABLE, a, NULL, 503);
        json_decref(a);
        json_decref(args);
        json_decref(kwargs);
        free(inv);
        nats_bridge_release(r->rt->nats, m);
        return;
    }
    inv->s = callee;
    inv->id = ++callee->next_inv;
    inv->reply = reply ? strdup(reply) : NULL;
    inv->next = callee->invs;
    callee->invs = inv;
    callee->ninvs++;
    const char *rp = NULL;
    json_t *details = json_object();
    if (reply && natsMsgHeader_Get(m, HDR_RECEIVE_PROGRESS, &rp) == NATS_OK)
        json_object_set_new(details, "receive_progress", json_true());
    const char *id = NULL, *role = NULL;
    if (g->disclose && auth_identity_of(r->rt->auth, m, &id, &role)) {
        json_object_set_new(details, "caller_authid", json_string(id));
        json_object_set_new(details, "caller_authrole", json_string(role));
    }
    send_msg(callee, json_pack("[iIIooo]", INVOCATION, (json_int_t)inv->id, (json_int_t)g->id,
                               details, args, kwargs));
    nats_bridge_release(r->rt->nats, m);
}

/* A request on a registration's probe subject: {"shared": true|false}. */
static void on_probe_msg(void *udata, natsMsg *m)
{
    registration *g = udata;
    const char *reply = natsMsg_GetReply(m);
    const char *text =
        strcmp(g->invoke, "single") != 0 ? "{\"shared\":true}" : "{\"shared\":false}";
    if (reply) nats_bridge_publish(g->r->rt->nats, reply, NULL, text, strlen(text), NULL);
    nats_bridge_release(g->r->rt->nats, m);
}

static registration *reg_new(router *r, const char *procedure, const char *invoke, bool disclose)
{
    registration *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->r = r;
    g->id = ++r->next_reg_id;
    g->procedure = strdup(procedure);
    snprintf(g->invoke, sizeof g->invoke, "%s", invoke);
    g->disclose = disclose;
    g->next = r->regs;
    r->regs = g;
    char probe[600];
    snprintf(probe, sizeof probe, SERVICES_PROBE_PREFIX "%s", procedure);
    g->sub = nats_bridge_subscribe(r->rt->nats, procedure, procedure, on_invocation_msg, g);
    g->probe = g->sub ? nats_bridge_subscribe(r->rt->nats, probe, probe, on_probe_msg, g) : NULL;
    if (!g->probe) {
        reg_release(g);
        return NULL;
    }
    return g;
}

/* Registers once the bus has no other server of the procedure (or a shared one): this process's
 * registrations of it are checked again, they may have changed while the probe was out. */
static void register_finish(session *s, uint64_t req, const char *procedure, const char *invoke,
                            bool disclose)
{
    router *r = s->r;
    registration *g = reg_find(r, procedure);
    bool fresh = !g;
    if (g && (strcmp(invoke, "single") == 0 || strcmp(g->invoke, invoke) != 0 ||
              ptrs_has(&g->callees, s))) {
        send_error(s, REGISTER, req, "wamp.error.procedure_already_exists",
                   "the procedure is already registered in this process");
        return;
    }
    if (!g) g = reg_new(r, procedure, invoke, disclose);
    if (!g) {
        send_error(s, REGISTER, req, URI_UNAVAILABLE, "cannot subscribe on NATS");
        return;
    }
    ptrs_add(&g->callees, s);
    ptrs_add(&s->regs, g);
    ack_after_flush(s, REGISTERED, req, g->id, fresh);
}

/* The bus's answer to a REGISTER's probe: nobody (no responders), or a server saying whether it
 * shares the procedure. */
static void on_probe_reply(void *udata, enum nb_status status, natsMsg *reply)
{
    pending_call *c = udata;
    session *s = c->s;
    call_unlink(c);
    s->nprobes--;
    bool shared = false;
    if (reply) {
        json_t *v =
            json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
        shared = json_is_true(json_object_get(v, "shared"));
        json_decref(v);
        nats_bridge_release(s->r->rt->nats, reply);
    }
    if (s->state != S_ESTABLISHED) {
        /* closing: nothing more to say */
    } else if (status == NB_NO_RESPONDERS ||
               (status == NB_OK && shared && strcmp(c->invoke, "single") != 0)) {
        register_finish(s, c->request, c->procedure, c->invoke, c->disclose);
    } else if (status == NB_OK) {
        send_error(s, REGISTER, c->request, "wamp.error.procedure_already_exists",
                   shared ? "the procedure is served on the bus, shared: register it with invoke "
                            "roundrobin or random to share it"
                          : "the procedure is already served on the bus (a service or another "
                            "session), not shared");
    } else {
        send_error(s, REGISTER, c->request, URI_UNAVAILABLE,
                   status == NB_TIMEOUT ? "no answer from the bus on who serves the procedure"
                                        : "the bus is unavailable");
    }
    free(c->procedure);
    free(c);
}

/* Asks the bus whether some process serves the procedure already (SERVICES_PROBE_PREFIX). */
static void register_probe(session *s, uint64_t req, const char *procedure, const char *invoke,
                           bool disclose)
{
    pending_call *c = calloc(1, sizeof *c);
    char probe[600];
    snprintf(probe, sizeof probe, SERVICES_PROBE_PREFIX "%s", procedure);
    if (c) c->procedure = strdup(procedure);
    if (!c || !c->procedure) {
        free(c);
        send_error(s, REGISTER, req, URI_RUNTIME_ERROR, "out of memory");
        return;
    }
    c->s = s;
    c->request = req;
    c->ack = REGISTER;
    snprintf(c->invoke, sizeof c->invoke, "%s", invoke);
    c->disclose = disclose;
    if (nats_bridge_request(s->r->rt->nats, probe, "", 0, NULL, PROBE_TIMEOUT_S, on_probe_reply, c,
                            &c->req) != NB_OK) {
        free(c->procedure);
        free(c);
        send_error(s, REGISTER, req, URI_UNAVAILABLE, "the bus is unavailable");
        return;
    }
    c->next = s->calls;
    s->calls = c;
    s->nprobes++;
}

static void on_register(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) != 4 || !get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri)) {
        protocol_violation(s, "REGISTER is [64, Request|id, Options|dict, Procedure|uri]");
        return;
    }
    const char *procedure = json_string_value(uri);
    if (!valid_uri(procedure, false)) {
        send_error(s, REGISTER, req, "wamp.error.invalid_uri", "not a valid procedure");
        return;
    }
    if (!allowed(s, AUTH_REGISTER, procedure, REGISTER, req, true)) return;
    const char *invoke = json_string_value(json_object_get(opts, "invoke"));
    if (!invoke) invoke = "single";
    if (strcmp(invoke, "single") && strcmp(invoke, "roundrobin") && strcmp(invoke, "random")) {
        send_error(s, REGISTER, req, "wamp.error.invalid_argument",
                   "invoke must be single, roundrobin or random");
        return;
    }
    router *r = s->r;
    if (s->regs.n + s->nprobes >= r->rt->cfg.max_session_regs) {
        send_error(s, REGISTER, req, URI_LIMIT_EXCEEDED, "too many registrations in this session");
        return;
    }
    bool disclose = json_is_true(json_object_get(opts, "disclose_caller"));
    if (reg_find(r, procedure))
        register_finish(s, req, procedure, invoke, disclose); /* this process serves it already */
    else
        register_probe(s, req, procedure, invoke, disclose);
}

static void on_unregister(session *s, json_t *msg)
{
    uint64_t req, id;
    if (json_array_size(msg) != 3 || !get_id(msg, 1, &req) || !get_id(msg, 2, &id)) {
        protocol_violation(s, "UNREGISTER is [66, Request|id, Registration|id]");
        return;
    }
    registration *g = reg_by_id(s->r, id);
    if (!g || !ptrs_remove(&g->callees, s)) {
        send_error(s, UNREGISTER, req, "wamp.error.no_such_registration",
                   "no such registration in this session");
        return;
    }
    ptrs_remove(&s->regs, g);
    reg_release(g);
    send_msg(s, json_pack("[iI]", UNREGISTERED, (json_int_t)req));
}

static invocation *inv_take(session *s, uint64_t id, bool keep)
{
    for (invocation **p = &s->invs; *p; p = &(*p)->next) {
        if ((*p)->id != id) continue;
        invocation *inv = *p;
        if (!keep) {
            *p = inv->next;
            s->ninvs--;
        }
        return inv;
    }
    return NULL;
}

static void on_yield(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2);
    if (json_array_size(msg) < 3 || !get_id(msg, 1, &req) || !json_is_object(opts) ||
        !args_ok(msg, 3)) {
        protocol_violation(s, "YIELD is [70, INVOCATION.Request|id, Options|dict, Arguments|list, "
                              "ArgumentsKw|dict]");
        return;
    }
    bool progress = json_is_true(json_object_get(opts, "progress"));
    invocation *inv = inv_take(s, req, progress);
    if (!inv) return; /* unknown or already answered: WAMP says ignore */
    if (inv->reply) {
        size_t len;
        char *body = envelope_text(msg, 3, &len);
        const char *headers[] = {HDR_PROGRESS, "1", NULL};
        if (body)
            nats_bridge_publish(s->r->rt->nats, inv->reply, NULL, body, len,
                                progress ? headers : NULL);
        free(body);
    }
    if (!progress) {
        free(inv->reply);
        free(inv);
    }
}

static void on_error(session *s, json_t *msg)
{
    uint64_t req;
    json_t *type = json_array_get(msg, 1), *details = json_array_get(msg, 3),
           *uri = json_array_get(msg, 4);
    if (json_array_size(msg) < 5 || !json_is_integer(type) || !get_id(msg, 2, &req) ||
        !json_is_object(details) || !json_is_string(uri) || !args_ok(msg, 5)) {
        protocol_violation(s, "ERROR is [8, REQUEST.Type|int, REQUEST.Request|id, Details|dict, "
                              "Error|uri, Arguments|list, ArgumentsKw|dict]");
        return;
    }
    if (json_integer_value(type) != INVOCATION) {
        protocol_violation(s, "a client sends ERROR only for an INVOCATION");
        return;
    }
    invocation *inv = inv_take(s, req, false);
    if (!inv) return;
    json_t *code = json_object_get(details, "code");
    int status = json_is_integer(code) ? (int)json_integer_value(code) : 400;
    if (status < 100 || status > 599) status = 400;
    reply_error(s->r, inv->reply, json_string_value(uri), json_array_get(msg, 5),
                json_array_get(msg, 6), status);
    free(inv->reply);
    free(inv);
}

/* ---- session life ---- */

static json_t *welcome_details(void)
{
    return json_pack("{s{s{s{sbsbsb}}s{s{sbsbsbsb}}}}", "roles", "broker", "features",
                     "publisher_exclusion", 1, "publisher_identification", 1,
                     "pattern_based_subscription", 1, "dealer", "features",
                     "progressive_call_results", 1, "call_timeout", 1, "call_canceling", 1,
                     "shared_registration", 1);
}

static void establish(session *s, const char *authid, const char *authrole, const char *method)
{
    /* from now on messages up to --body-limit (see wamp_router_upgrade) */
    wslay_event_config_set_max_recv_msg_length(s->ws->ws_ctx, 2 * s->r->rt->cfg.body_limit);
    snprintf(s->authid, sizeof s->authid, "%s", authid);
    snprintf(s->authrole, sizeof s->authrole, "%s", authrole);
    s->authmethod = method;
    s->state = S_ESTABLISHED;
    s->user = NULL;
    free(s->challenge);
    s->challenge = NULL;
    json_t *d = welcome_details();
    json_object_set_new(d, "realm", json_string(s->realm ? s->realm : ""));
    json_object_set_new(d, "authid", json_string(s->authid));
    json_object_set_new(d, "authrole", json_string(s->authrole));
    json_object_set_new(d, "authmethod", json_string(method));
    json_object_set_new(d, "authprovider", json_string(s->r->rt->auth ? "file" : "none"));
    send_msg(s, json_pack("[iIo]", WELCOME, (json_int_t)s->id, d));
    log_debug(TAG, "session %llu: %s as %s (%s)", (unsigned long long)s->id, s->authid, s->authrole,
              method);
}

static void auth_failed(session *s, const char *why)
{
    log_info(TAG, "session %llu: authentication of %s failed (%s)", (unsigned long long)s->id,
             s->authid[0] ? s->authid : "?", why);
    abort_session(s, URI_AUTHENTICATION_FAILED, "authentication failed");
}

#define TOO_MANY_FAILURES "too many failed sign-ins; retry later"

/* Whether the limiter of failed sign-ins lets this session try to sign in as s->authid now;
 * else the session is aborted. */
static bool may_try(session *s)
{
    if (auth_limit_admit(s->r->rt->auth_limit, uv_now(&s->r->rt->loop), s->peer, s->authid))
        return true;
    log_info(TAG, "session %llu: sign-in of %s from %s refused: too many failures",
             (unsigned long long)s->id, s->authid, s->peer[0] ? s->peer : "?");
    abort_session(s, URI_AUTHENTICATION_FAILED, TOO_MANY_FAILURES);
    return false;
}

/* Sends the CHALLENGE of method (ticket or wampcra) for authid. It looks the same whether
 * authid is a user or not (docs/auth.md). */
static void challenge(session *s, const char *method, const char *authid)
{
    const auth *a = s->r->rt->auth;
    snprintf(s->authid, sizeof s->authid, "%s", authid);
    if (!may_try(s)) return;
    s->user = auth_user_find(a, authid);
    if (s->user && !auth_user_has_secret(s->user)) s->user = NULL; /* a token-only user */
    s->authmethod = strcmp(method, "ticket") == 0 ? "ticket" : "wampcra";
    json_t *extra = json_object();
    if (strcmp(method, "wampcra") == 0) {
        char salt[AUTH_SALT_MAX];
        int iterations, keylen;
        s->challenge = auth_cra_challenge(a, s->user, authid, s->id, salt, &iterations, &keylen);
        if (!s->challenge) {
            json_decref(extra);
            abort_session(s, URI_AUTHENTICATION_FAILED, "cannot make a challenge");
            return;
        }
        json_object_set_new(extra, "challenge", json_string(s->challenge));
        json_object_set_new(extra, "salt", json_string(salt));
        json_object_set_new(extra, "iterations", json_integer(iterations));
        json_object_set_new(extra, "keylen", json_integer(keylen));
    }
    s->state = S_CHALLENGED;
    send_msg(s, json_pack("[iso]", CHALLENGE, s->authmethod, extra));
}

static void on_hello(session *s, json_t *msg)
{
    json_t *realm = json_array_get(msg, 1), *details = json_array_get(msg, 2);
    if (json_array_size(msg) != 3 || !json_is_string(realm) || !json_is_object(details) ||
        !valid_uri(json_string_value(realm), false)) {
        protocol_violation(s, "HELLO is [1, Realm|uri, Details|dict]");
        return;
    }
    if (s->r->shutting_down) {
        abort_session(s, "wamp.error.system_shutdown", "the router is shutting down");
        return;
    }
    s->realm = strdup(json_string_value(realm));
    const auth *a = s->r->rt->auth;
    if (!a) {
        establish(s, "anonymous", "anonymous", "anonymous");
        return;
    }
    json_t *methods = json_object_get(details, "authmethods");
    const char *authid = json_string_value(json_object_get(details, "authid"));
    if (methods && !json_is_array(methods)) {
        protocol_violation(s, "HELLO.Details.authmethods is a list of strings");
        return;
    }
    size_t n = methods ? json_array_size(methods) : 0;
    for (size_t i = 0; i <= n; i++) {
        /* no list at all means anonymous */
        const char *m = i < n    ? json_string_value(json_array_get(methods, i))
                        : n == 0 ? "anonymous"
                                 : NULL;
        if (!m) continue;
        if ((strcmp(m, "ticket") == 0 || strcmp(m, "wampcra") == 0) &&
            auth_identity_valid(authid, AUTH_ID_MAX)) {
            challenge(s, m, authid);
            return;
        }
        if (strcmp(m, "anonymous") == 0 && auth_anonymous_role(a)) {
            establish(s, "anonymous", auth_anonymous_role(a), "anonymous");
            return;
        }
    }
    abort_session(s, URI_NO_AUTH_METHOD,
                  auth_anonymous_role(a) ? "offer ticket or wampcra (with an authid), or anonymous"
                                         : "this router wants ticket or wampcra, with an authid");
}

/* A ticket is checked on libuv's thread pool: PBKDF2 is slow on purpose. The job outlives a
 * session that ends meanwhile (job->s is then NULL). */
typedef struct auth_job {
    uv_work_t work;
    router *r;
    session *s;
    const auth_user *user; /* NULL: unknown authid, checked all the same (decoy salt) */
    char authid[AUTH_ID_MAX];
    char peer[AUTH_PEER_MAX];
    char *ticket;
    bool ok;
} auth_job;

static void ticket_work(uv_work_t *w)
{
    auth_job *j = w->data;
    j->ok = auth_ticket_ok(j->r->rt->auth, j->user, j->authid, j->ticket);
}

static void ticket_done(uv_work_t *w, int status)
{
    auth_job *j = w->data;
    session *s = j->s;
    j->r->auth_jobs--;
    bool ok = status == 0 && j->ok;
    auth_limit_settle(j->r->rt->auth_limit, uv_now(&j->r->rt->loop), j->peer, j->authid, ok);
    if (s) {
        s->auth_job = NULL;
        if (ok && s->state == S_VERIFYING)
            establish(s, auth_user_id(j->user), auth_user_role(j->user), "ticket");
        else if (s->state == S_VERIFYING)
            auth_failed(s, j->user ? "wrong ticket" : "unknown authid");
    }
    free(j->ticket);
    free(j);
}

static void on_authenticate(session *s, json_t *msg)
{
    json_t *sig = json_array_get(msg, 1);
    if (json_array_size(msg) != 3 || !json_is_string(sig) ||
        !json_is_object(json_array_get(msg, 2))) {
        protocol_violation(s, "AUTHENTICATE is [5, Signature|string, Extra|dict]");
        return;
    }
    if (!may_try(s)) return; /* failures may have come in since the CHALLENGE */
    auth_limit *lim = s->r->rt->auth_limit;
    uint64_t now = uv_now(&s->r->rt->loop);
    if (strcmp(s->authmethod, "wampcra") == 0) {
        bool ok = auth_cra_verify(s->user, s->challenge, json_string_value(sig)) && s->user;
        auth_limit_charge(lim, now, s->peer, s->authid);
        auth_limit_settle(lim, now, s->peer, s->authid, ok);
        if (ok)
            establish(s, auth_user_id(s->user), auth_user_role(s->user), "wampcra");
        else
            auth_failed(s, s->user ? "wrong signature" : "unknown authid");
        return;
    }
    /* ticket: an unknown authid is checked as well (against its decoy salt), so that the answer
     * takes as long as for a user */
    if (s->r->auth_jobs >= MAX_AUTH_JOBS) {
        log_warn(TAG, "session %llu: %d tickets are being checked already: refused",
                 (unsigned long long)s->id, s->r->auth_jobs);
        abort_session(s, URI_AUTHENTICATION_FAILED, "too many sign-ins at once, try again");
        return;
    }
    auth_job *j = calloc(1, sizeof *j);
    if (j) j->ticket = strdup(json_string_value(sig));
    if (!j || !j->ticket) {
        free(j);
        abort_session(s, URI_AUTHENTICATION_FAILED, "out of memory");
        return;
    }
    j->r = s->r;
    j->s = s;
    j->user = s->user;
    snprintf(j->authid, sizeof j->authid, "%s", s->authid);
    snprintf(j->peer, sizeof j->peer, "%s", s->peer);
    j->work.data = j;
    if (uv_queue_work(&s->r->rt->loop, &j->work, ticket_work, ticket_done) != 0) {
        free(j->ticket);
        free(j);
        abort_session(s, URI_AUTHENTICATION_FAILED, "cannot check the ticket now");
        return;
    }
    /* counted as failed until it succeeds: tickets in flight count against the limit too */
    auth_limit_charge(lim, now, j->peer, j->authid);
    s->auth_job = j;
    s->state = S_VERIFYING;
    s->r->auth_jobs++;
}

static void on_goodbye(session *s, json_t *msg)
{
    if (json_array_size(msg) != 3 || !json_is_object(json_array_get(msg, 1)) ||
        !json_is_string(json_array_get(msg, 2))) {
        protocol_violation(s, "GOODBYE is [6, Details|dict, Reason|uri]");
        return;
    }
    send_msg(s, json_pack("[i{}s]", GOODBYE, "wamp.close.goodbye_and_out"));
    close_session(s, 1000, "goodbye");
}

static void dispatch(session *s, json_t *msg)
{
    json_t *code = json_array_get(msg, 0);
    if (!json_is_array(msg) || !json_is_integer(code)) {
        protocol_violation(s, "a WAMP message is an array starting with its type code");
        return;
    }
    json_int_t type = json_integer_value(code);
    if (s->state == S_OPEN) {
        if (type == HELLO)
            on_hello(s, msg);
        else
            protocol_violation(s, "the first message must be HELLO");
        return;
    }
    if (s->state == S_CHALLENGED || s->state == S_VERIFYING) {
        if (type == AUTHENTICATE && s->state == S_CHALLENGED)
            on_authenticate(s, msg);
        else if (type == ABORT)
            close_session(s, 1000, "aborted");
        else
            protocol_violation(s, "after CHALLENGE the client sends AUTHENTICATE, once");
        return;
    }
    switch (type) {
    case SUBSCRIBE:
        on_subscribe(s, msg);
        break;
    case UNSUBSCRIBE:
        on_unsubscribe(s, msg);
        break;
    case PUBLISH:
        on_publish(s, msg);
        break;
    case CALL:
        on_call(s, msg);
        break;
    case CANCEL:
        on_cancel(s, msg);
        break;
    case REGISTER:
        on_register(s, msg);
        break;
    case UNREGISTER:
        on_unregister(s, msg);
        break;
    case YIELD:
        on_yield(s, msg);
        break;
    case ERROR:
        on_error(s, msg);
        break;
    case GOODBYE:
        on_goodbye(s, msg);
        break;
    case HELLO:
        protocol_violation(s, "HELLO in an established session");
        break;
    default:
        protocol_violation(s, "a message type the router does not accept");
        break;
    }
}

/* Everything a session holds goes: subscriptions, registrations (pending invocations answer at
 * once), calls waiting for replies. The WebSocket itself is closed by the caller. */
static void session_end(session *s)
{
    router *r = s->r;
    for (int i = 0; i < s->topics.n; i++) {
        topic *t = s->topics.v[i];
        ptrs_remove(&t->sessions, s);
        topic_release(t);
    }
    for (int i = 0; i < s->regs.n; i++) {
        registration *g = s->regs.v[i];
        ptrs_remove(&g->callees, s);
        reg_release(g);
    }
    while (s->invs) {
        invocation *inv = s->invs;
        s->invs = inv->next;
        json_t *a = json_pack("[s]", "the callee left");
        reply_error(r, inv->reply, URI_UNAVAILABLE, a, NULL, 503);
        json_decref(a);
        free(inv->reply);
        free(inv);
    }
    while (s->calls) {
        pending_call *c = s->calls;
        s->calls = c->next;
        if (c->ack)
            nb_request_cancel(c->req); /* not a CALL */
        else
            rpc_handle_cancel(s->r->rt, &(rpc_handle){c->req, c->local});
        free(c->procedure);
        free(c);
    }
    if (s->dirty) {
        for (session **p = &r->dirty; *p; p = &(*p)->dirty_next) {
            if (*p == s) {
                *p = s->dirty_next;
                break;
            }
        }
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        r->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    r->nsessions--;
    log_debug(TAG, "session %llu ended", (unsigned long long)s->id);
    if (s->auth_job) s->auth_job->s = NULL; /* it frees itself when the pool is done */
    free(s->challenge);
    free(s->realm);
    codec_buf_free(&s->out_pending);
    codec_buf_free(&s->out_writing);
    free(s->topics.v);
    free(s->regs.v);
    free(s);
}

/* A message that decoded with an unsupported msgpack extension value: a request the router
 * answers (SUBSCRIBE, CALL, ..., PUBLISH with acknowledge) gets ERROR invalid_argument and is
 * dropped; anything else, or a request id that cannot be read, ends the session. */
static void refuse_extension(session *s, json_t *msg, const char *why)
{
    json_t *code = json_array_get(msg, 0);
    json_int_t type = json_is_integer(code) ? json_integer_value(code) : 0;
    uint64_t req;
    bool answerable = type == SUBSCRIBE || type == UNSUBSCRIBE || type == CALL ||
                      type == REGISTER || type == UNREGISTER || type == PUBLISH;
    if (s->state != S_ESTABLISHED || !answerable || !get_id(msg, 1, &req)) {
        protocol_violation(s, why);
        return;
    }
    if (type == PUBLISH && !json_is_true(json_object_get(json_array_get(msg, 2), "acknowledge")))
        return;
    send_error(s, (int)type, req, URI_INVALID_ARGUMENT, why);
}

static void on_ws_message(h2o_websocket_conn_t *ws, const struct wslay_event_on_msg_recv_arg *arg)
{
    session *s = ws->data;
    if (!arg) { /* closed by the peer, or an error: h2o wants us to free the connection */
        session_end(s);
        h2o_websocket_close(ws);
        return;
    }
    s->last_activity = uv_now(&s->r->rt->loop);              /* messages, pings and pongs */
    if (arg->opcode >= 0x8 || s->state == S_CLOSING) return; /* control frames: wslay's job */
    size_t limit = s->state == S_ESTABLISHED ? s->r->rt->cfg.body_limit : JOIN_MSG_MAX;
    if (arg->msg_length > limit) {
        log_info(TAG, "session %llu closed: a message of %zu bytes is over the limit of %zu%s",
                 (unsigned long long)s->id, arg->msg_length, limit,
                 s->state == S_ESTABLISHED ? "" : " before WELCOME");
        close_session(s, 1009, "message too big");
        return;
    }
    bool binary = arg->opcode == WSLAY_BINARY_FRAME;
    if (binary != (s->ser == WAMP_MSGPACK)) {
        protocol_violation(s, s->ser == WAMP_MSGPACK ? "wamp.2.msgpack uses binary frames"
                                                     : "wamp.2.json uses text frames");
        return;
    }
    char err[160] = "";
    bool unsupported = false;
    json_t *msg = wamp_decode_msg(s->ser, (const char *)arg->msg, arg->msg_length,
                                  s->r->rt->cfg.max_depth + 2, WAMP_MAX_VALUES, &unsupported, err,
                                  sizeof err);
    if (!msg) {
        protocol_violation(s, err);
        return;
    }
    if (unsupported)
        refuse_extension(s, msg, err);
    else
        dispatch(s, msg);
    json_decref(msg);
}

/* The first subprotocol of the client's list that we speak, or NULL. */
static const char *choose_protocol(h2o_req_t *req, enum wamp_serializer *ser)
{
    for (ssize_t i = -1; (i = h2o_find_header_by_str(
                              &req->headers, H2O_STRLIT("sec-websocket-protocol"), i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        size_t at = 0;
        while (at < v.len) {
            while (at < v.len && (v.base[at] == ' ' || v.base[at] == ','))
                at++;
            size_t start = at;
            while (at < v.len && v.base[at] != ',' && v.base[at] != ' ')
                at++;
            h2o_iovec_t tok = h2o_iovec_init(v.base + start, at - start);
            if (h2o_memis(tok.base, tok.len, H2O_STRLIT("wamp.2.json"))) {
                *ser = WAMP_JSON;
                return "wamp.2.json";
            }
            if (h2o_memis(tok.base, tok.len, H2O_STRLIT("wamp.2.msgpack"))) {
                *ser = WAMP_MSGPACK;
                return "wamp.2.msgpack";
            }
        }
    }
    return NULL;
}

static void refuse_with(h2o_req_t *req, int status, const char *uri, const char *message);

static void refuse(h2o_req_t *req, const char *message)
{
    refuse_with(req, 400, URI_INVALID_ARGUMENT, message);
}

static void refuse_with(h2o_req_t *req, int status, const char *uri, const char *message)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"args\":[\"%s\"],\"kwargs\":{}}", uri,
                     message);
    req->res.status = status;
    req->res.reason = status == 400 ? "Bad Request" : "Service Unavailable";
    req->res.content_length = (size_t)n;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, (size_t)n);
}

int wamp_router_upgrade(struct wamp_router *r, h2o_req_t *req)
{
    const char *key = NULL;
    if (h2o_is_websocket_handshake(req, &key) != 0 || !key) {
        refuse(req, "GET /websocket is a WebSocket (HTTP/1.1 Upgrade) for WAMP");
        return 0;
    }
    enum wamp_serializer ser;
    const char *proto = choose_protocol(req, &ser);
    if (!proto) {
        refuse(req, "no supported subprotocol: offer wamp.2.json or wamp.2.msgpack");
        return 0;
    }
    if (r->shutting_down) {
        refuse_with(req, 503, URI_UNAVAILABLE, "the router is shutting down");
        return 0;
    }
    if (r->nsessions >= r->rt->cfg.max_sessions) {
        log_warn(TAG, "WebSocket refused: %d sessions already (--max-sessions)", r->nsessions);
        refuse_with(req, 503, URI_UNAVAILABLE, "too many WAMP sessions in this process");
        return 0;
    }
    session *s = calloc(1, sizeof *s);
    if (!s) {
        refuse(req, "out of memory");
        return 0;
    }
    s->r = r;
    s->ser = ser;
    s->id = random_id();
    struct sockaddr_storage peer;
    socklen_t peerlen = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&peer);
    auth_limit_peer((struct sockaddr *)&peer, peerlen, s->peer);
    s->state = S_OPEN;
    s->join_deadline = uv_now(&r->rt->loop) + (uint64_t)(r->rt->cfg.join_timeout * 1000.0);
    if (!uv_is_active((uv_handle_t *)&r->join_timer))
        uv_timer_start(&r->join_timer, join_sweep, JOIN_SWEEP_MS, JOIN_SWEEP_MS);
    s->last_activity = uv_now(&r->rt->loop);
    if (r->rt->cfg.session_idle_timeout > 0 && !uv_is_active((uv_handle_t *)&r->idle_timer)) {
        /* a quarter of the timeout, between 100 ms and 5 s: closed at most 25% late */
        double every = r->rt->cfg.session_idle_timeout * 250.0;
        uint64_t ms = every < 100 ? 100 : every > 5000 ? 5000 : (uint64_t)every;
        uv_timer_start(&r->idle_timer, idle_sweep, ms, ms);
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-protocol"), 0,
                          NULL, proto, strlen(proto));
    s->ws = h2o_upgrade_to_websocket(req, key, s, on_ws_message);
    /* messages up to twice the limit are read whole and refused with a clean close (the peer
     * sees 1009); beyond that wslay stops reading at once, and the peer may only see a reset.
     * Until WELCOME the limit is JOIN_MSG_MAX: an unauthenticated peer holds no more. */
    wslay_event_config_set_max_recv_msg_length(s->ws->ws_ctx, 2 * JOIN_MSG_MAX);
    codec_buf_init(&s->out_pending);
    codec_buf_init(&s->out_writing);
    struct wslay_event_callbacks cbs = s->ws->ws_callbacks;
    cbs.send_callback = ws_send;
    wslay_event_config_set_callbacks(s->ws->ws_ctx, &cbs);
    s->next = r->sessions;
    if (r->sessions) r->sessions->prev = s;
    r->sessions = s;
    r->nsessions++;
    return 0;
}

/* ---- router life ---- */

/* Sessions that did not HELLO (or AUTHENTICATE) within --join-timeout hold a slot of
 * --max-sessions for nothing: they are aborted. The sweep stops when every session is in. */
static void join_sweep(uv_timer_t *t)
{
    router *r = t->data;
    uint64_t now = uv_now(&r->rt->loop);
    bool waiting = false;
    for (session *s = r->sessions; s; s = s->next) {
        if (s->state != S_OPEN && s->state != S_CHALLENGED && s->state != S_VERIFYING) continue;
        if (now < s->join_deadline || s->state == S_VERIFYING) {
            waiting = true;
            continue;
        }
        char text[128];
        snprintf(text, sizeof text, "no %s within %.3g s (--join-timeout)",
                 s->state == S_OPEN ? "HELLO" : "AUTHENTICATE", r->rt->cfg.join_timeout);
        abort_session(s, "wamp.error.timeout", text);
    }
    if (!waiting) uv_timer_stop(t);
}

/* A WebSocket ping to a session quiet for half the idle timeout, once per quiet spell: a live
 * client answers it with a pong (browsers and ws libraries do so by themselves; a browser cannot
 * send pings of its own), which counts as activity. */
static void ping_quiet(session *s, uint64_t now, uint64_t idle_ms)
{
    if (now - s->last_activity < idle_ms / 2 || s->last_ping > s->last_activity || s->slow) return;
    struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = (const uint8_t *)"", .msg_length = 0};
    if (wslay_event_queue_msg(s->ws->ws_ctx, &m) != 0) return;
    s->last_ping = now;
    mark_dirty(s);
}

/* Established sessions that received nothing (no message, ping or pong, not even the pong to the
 * router's own ping) for --session-idle-timeout get GOODBYE wamp.close.timeout and are closed:
 * gone peers, and clients that stopped reading. The sweep stops when no session is left; the next
 * upgrade starts it again. */
static void idle_sweep(uv_timer_t *t)
{
    router *r = t->data;
    uint64_t now = uv_now(&r->rt->loop);
    uint64_t idle_ms = (uint64_t)(r->rt->cfg.session_idle_timeout * 1000.0);
    for (session *s = r->sessions, *next; s; s = next) {
        next = s->next;
        if (s->state == S_CLOSING && s->close_queued && now > s->close_deadline) {
            log_info(TAG, "session %llu dropped: no answer to the close frame",
                     (unsigned long long)s->id);
            drop_session(s);
            continue;
        }
        if (s->state != S_ESTABLISHED) continue;
        if (now - s->last_activity < idle_ms) {
            ping_quiet(s, now, idle_ms);
            continue;
        }
        char text[128];
        snprintf(text, sizeof text, "nothing received for %.3g s (--session-idle-timeout)",
                 r->rt->cfg.session_idle_timeout);
        log_info(TAG, "session %llu closed: %s", (unsigned long long)s->id, text);
        send_msg(s, json_pack("[i{ss}s]", GOODBYE, "message", text, "wamp.close.timeout"));
        close_session(s, 1000, "idle timeout");
    }
    if (!r->sessions) uv_timer_stop(t);
}

struct wamp_router *wamp_router_new(runtime *rt)
{
    router *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->rt = rt;
    codec_buf_init(&r->out);
    uv_timer_init(&rt->loop, &r->flush_timer);
    r->flush_timer.data = r;
    uv_timer_init(&rt->loop, &r->join_timer);
    r->join_timer.data = r;
    uv_timer_init(&rt->loop, &r->idle_timer);
    r->idle_timer.data = r;
    return r;
}

int wamp_router_sessions(const struct wamp_router *r)
{
    return r ? r->nsessions : 0;
}

void wamp_router_counts(const struct wamp_router *r, int *subscriptions, int *registrations)
{
    *subscriptions = *registrations = 0;
    for (const session *s = r ? r->sessions : NULL; s; s = s->next) {
        *subscriptions += s->topics.n;
        *registrations += s->regs.n;
    }
}

void wamp_router_shutdown(struct wamp_router *r)
{
    r->shutting_down = true;
    /* no more events or invocations: the NATS side goes first, so nothing the bridge holds
     * points at a topic or registration any more */
    for (topic *t = r->topics; t; t = t->next) {
        if (t->sub) nb_sub_close(t->sub);
        t->sub = NULL;
    }
    for (registration *g = r->regs; g; g = g->next) {
        if (g->sub) nb_sub_close(g->sub);
        if (g->probe) nb_sub_close(g->probe);
        g->sub = NULL;
        g->probe = NULL;
    }
    for (session *s = r->sessions; s; s = s->next) {
        if (s->state == S_ESTABLISHED)
            send_msg(s, json_pack("[i{ss}s]", GOODBYE, "message", "the router is shutting down",
                                  "wamp.close.system_shutdown"));
        close_session(s, 1001, "shutting down");
    }
}

static void timer_closed(uv_handle_t *h)
{
    (void)h;
}

void wamp_router_close(struct wamp_router *r)
{
    while (r->sessions) {
        session *s = r->sessions;
        h2o_websocket_conn_t *ws = s->ws;
        session_end(s);
        h2o_websocket_close(ws);
    }
    uv_close((uv_handle_t *)&r->flush_timer, timer_closed);
    uv_close((uv_handle_t *)&r->join_timer, timer_closed);
    uv_close((uv_handle_t *)&r->idle_timer, timer_closed);
}

void wamp_router_free(struct wamp_router *r)
{
    if (!r) return;
    codec_buf_free(&r->out);
    free(r);
}
