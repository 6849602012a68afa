/* wamp_session.c: owns a WAMP session's WebSocket side: the upgrade of GET /websocket, the
 * messages received (wslay's callback, then dispatch in wamp_router.c), sending, flushing, the
 * close handshake, abort, the end of a session (what its roles hold is released by the broker and
 * the dealer), and the sweeps of sessions that do not join or go quiet. It is the only part of
 * the router that touches wslay (wamp_join.c asks it to raise the message limit on WELCOME).
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
#include <h2o/websocket.h>
#include <stdlib.h>
#include <string.h>

#include "auth_limit.h"
#include "log.h"
#include "rpc_error.h"
#include "wamp_internal.h"
#include "wamp_router.h"

#define OUT_MAX_BYTES (4u * 1024 * 1024) /* queued for one session before it is a slow consumer */
#define JOIN_SWEEP_MS 250                /* how often sessions not yet established are checked */
#define JOIN_MSG_MAX (16u * 1024)        /* largest message before WELCOME (HELLO, AUTHENTICATE) */

static void session_end(session *s);
static void join_sweep(uv_timer_t *t);
static void idle_sweep(uv_timer_t *t);

/* ---- sending ---- */

/* Ends a session without a close handshake: the peer does not read, or does not answer. */
void wamp_drop_session(session *s)
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
        wamp_drop_session(s);
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

void wamp_queue_bytes(session *s, const char *p, size_t n)
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
void wamp_send_msg(session *s, json_t *msg)
{
    codec_buf *out = &s->r->out;
    codec_buf_reset(out);
    if (msg && wamp_encode(s->ser, msg, out) == 0) wamp_queue_bytes(s, out->data, out->len);
    json_decref(msg);
}

/* The close frame goes after what is queued (an ABORT, a GOODBYE): wslay sends control frames
 * first and nothing after a close, so the flush queues it once the message queue is empty. */
void wamp_close_session(session *s, uint16_t code, const char *reason)
{
    if (s->state == S_CLOSING) return;
    s->state = S_CLOSING;
    s->close_code = code;
    s->close_reason = reason;
    s->close_deadline = uv_now(&s->r->rt->loop) + 2000;
    mark_dirty(s);
}

void wamp_abort_session(session *s, const char *uri, const char *message)
{
    if (s->state == S_CLOSING) return;
    log_info(TAG, "session %llu aborted: %s: %s", (unsigned long long)s->id, uri, message);
    wamp_send_msg(s, json_pack("[i{ss}s]", ABORT, "message", message, uri));
    wamp_close_session(s, 1000, "aborted");
}

void wamp_protocol_violation(session *s, const char *message)
{
    wamp_abort_session(s, "wamp.error.protocol_violation", message);
}

void wamp_send_error(session *s, int type, uint64_t request, const char *uri, const char *message)
{
    wamp_send_msg(s, json_pack("[iiI{}s[s]]", ERROR, type, (json_int_t)request, uri, message));
}

/* ---- session life ---- */

void wamp_session_limit_messages(session *s, size_t bytes)
{
    wslay_event_config_set_max_recv_msg_length(s->ws->ws_ctx, 2 * bytes);
}

/* Everything a session holds goes: subscriptions, registrations (pending invocations answer at
 * once), calls waiting for replies. The WebSocket itself is closed by the caller. */
static void session_end(session *s)
{
    router *r = s->r;
    wamp_broker_session_end(s);
    wamp_dealer_session_end(s);
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
        wamp_close_session(s, 1009, "message too big");
        return;
    }
    bool binary = arg->opcode == WSLAY_BINARY_FRAME;
    if (binary != (s->ser == WAMP_MSGPACK)) {
        wamp_protocol_violation(s, s->ser == WAMP_MSGPACK ? "wamp.2.msgpack uses binary frames"
                                                          : "wamp.2.json uses text frames");
        return;
    }
    char err[160] = "";
    bool unsupported = false;
    json_t *msg = wamp_decode_msg(s->ser, (const char *)arg->msg, arg->msg_length,
                                  s->r->rt->cfg.max_depth + 2, WAMP_MAX_VALUES, &unsupported, err,
                                  sizeof err);
    if (!msg) {
        wamp_protocol_violation(s, err);
        return;
    }
    if (unsupported)
        wamp_refuse_extension(s, msg, err);
    else
        wamp_dispatch(s, msg);
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
    s->id = wamp_random_id();
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
        wamp_abort_session(s, "wamp.error.timeout", text);
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
            wamp_drop_session(s);
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
        wamp_send_msg(s, json_pack("[i{ss}s]", GOODBYE, "message", text, "wamp.close.timeout"));
        wamp_close_session(s, 1000, "idle timeout");
    }
    if (!r->sessions) uv_timer_stop(t);
}
