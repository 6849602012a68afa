/* http_gateway.c: owns libh2o on the runtime's loop: the listener, h2o's configuration and
 * context, the accepted connections, and the requests waiting for a NATS reply.
 *
 * POST /<service>.<method> is validated here (so a malformed body never crosses the bus) and
 * becomes a NATS request with the body as it came; the reply's body goes back as it came, with the
 * status taken from its Nats-Service-Error-Code header. A request whose client goes away is noticed
 * through a shared allocation in the request's pool: its dispose callback cancels the pending
 * NATS request, so no reply is ever written to a freed request. h2o itself answers 413 over the
 * body limit (max_request_entity_size).
 *
 * Calls over the bus are not published from h2o's on_req: they are queued and sent by a uv_prepare
 * handle (the turn's end), i.e. once the loop turn has read (and h2o has parsed) everything that
 * arrived. An HTTP/2 stream reset in the same turn (RST_STREAM right after HEADERS) disposes its
 * call while queued: it never reaches the bus (an HTTP/2 call served in-process waits the same way,
 * then starts in the next check phase). An HTTP/1 call served in-process is handed to
 * local_dispatch at once, which starts it in the check phase of the same turn, so it is usually
 * answered in the turn its request came; the turn's end then re-arms the connection
 * (epoll_rearm.c: no epoll_ctl per request). HTTP/2 rapid reset: a connection
 * whose calls end by reset (before their answer) more than RESET_BUDGET times and more often than
 * they are answered is shut when it opens the next one (h2o 2.2 has no public GOAWAY: shutdown(2)
 * makes h2o see the end of the socket and close the connection, which disposes its calls), logged
 * once and counted.
 *
 * With a certificate a second listener speaks TLS (http_tls.c; h2 or http/1.1 by ALPN, so WSS too)
 * into the same h2o context; with --http-redirect the plain one answers 308 to it, except /healthz
 * which health checkers probe in plain HTTP. */
#include "http_gateway.h"

#include <errno.h>
#include <h2o.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "auth.h"
#include "auth_limit.h"
#include "codec.h"
#include "jetstream.h"
#include "epoll_rearm.h"
#include "local_dispatch.h"
#include "log.h"
#include "nats_bridge.h"
#include "pg_pool.h"
#include "rpc_error.h"
#include "http_rpc_path.h"
#include "scheduler.h"
#include "trace.h"
#include "services.h"
#include "metrics.h"
#include "http_tls.h"
#include "wamp_router.h"

#define TAG "http"
#define LISTEN_BACKLOG 4096
#define CONN_BUCKETS 256
/* h2o 2.2 runs at most this many requests of one connection at a time (HTTP/2 streams): with
 * --max-conn-inflight at it, the limit cannot be reached and calls are not counted. */
#define H2O_STREAMS_PER_CONN 100
/* Calls of one connection that may end by reset before it is taken for a rapid reset attack. */
#define RESET_BUDGET 100

/* h2o's socket takes over handle->data, so the gateway is found through this wrapper. */
typedef struct gw_conn {
    uv_tcp_t tcp; /* first: the handle h2o closes is this struct */
    struct http_gateway *gw;
    struct gw_conn *prev, *next;
    int fd;            /* the socket's descriptor, its key in http_gateway.by_fd; -1: none */
    uint64_t resets;   /* calls whose request went away before the answer (stream reset) */
    uint64_t answered; /* calls answered */
    bool cut;          /* shut for rapid reset */
    bool rearm;        /* on http_gateway.rearm: answered in the turn its request came */
    struct gw_conn *rearm_next;
} gw_conn;

/* Calls in flight on one connection (HTTP/2 multiplexes them), keyed by h2o's connection id,
 * which is never reused: nothing here points at a connection, so its end needs no hook. An entry
 * exists while its count is above 0, i.e. while a call of its connection holds it. */
typedef struct conn_calls {
    uint64_t id;
    int count;
    struct conn_calls *next;
} conn_calls;

struct http_gateway {
    runtime *rt;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;     /* plain */
    h2o_accept_ctx_t tls_accept_ctx; /* the same context and hosts, with the SSL_CTX */
    SSL_CTX *ssl_ctx;                /* NULL without a certificate */
    bool ctx_ready;
    uv_tcp_t listener, tls_listener;
    bool listening, tls_listening;
    uv_timer_t close_timer;
    int connections;
    uint64_t by_status[600]; /* responses of the gateway by status */
    struct gw_conn *conns;   /* every accepted connection, until h2o closes it */
    gw_conn **by_fd;         /* the open connections by descriptor, to find a request's one */
    int by_fd_len;
    int inflight;                       /* calls queued or waiting for their reply */
    struct gw_call *queue, *queue_tail; /* calls to send at the end of the loop turn */
    uv_prepare_t turn_end;              /* the end of each loop turn, right before the poll */
    bool turn_end_closed;
    uint64_t turn;  /* loop turns (polls) so far */
    gw_conn *rearm; /* HTTP/1 connections to hand to epoll_rearm_stream at the turn's end */
    struct gw_call *watched; /* pending calls of plain HTTP/1 connections (see peer_check) */
    uv_timer_t peer_timer;   /* runs peer_check while calls are watched */
    bool use_rearm;          /* --http1-rearm and a libuv that epoll_rearm knows */
    http_gateway_stats stats;
    conn_calls *conn_calls[CONN_BUCKETS]; /* see conn_calls */
    uint64_t close_started;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

struct gw_handler {
    h2o_handler_t super;
    struct http_gateway *gw;
};

enum call_state { CALL_DONE, CALL_QUEUED, CALL_PENDING };

/* One request on its way to NATS; lives in the request's pool (see the top of the file). */
typedef struct gw_call {
    struct http_gateway *gw;
    h2o_req_t *req;
    gw_conn *conn;     /* NULL if not found; valid while the request is */
    rpc_handle handle; /* in-process or over NATS (local_dispatch.h) */
    conn_calls *cc;    /* its connection's count, held while queued or pending */
    enum call_state state;
    struct gw_call *prev, *next;   /* the queue, while queued */
    uint64_t turn;                 /* the loop turn in which the request came */
    char *subject;                 /* in the request's pool */
    const char *authid, *authrole; /* the caller (NULL: auth is off) */
    const char *trace[3];          /* the request's traceparent header, or {NULL} */
    double timeout;
    bool watch;                              /* plain HTTP/1: its client's close is looked for */
    struct gw_call *watch_prev, *watch_next; /* http_gateway.watched, while pending */
    uint64_t since;                          /* when it was sent (loop ms) */
} gw_call;

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static void respond_typed(struct http_gateway *gw, h2o_req_t *req, int status, const char *type,
                          const char *body, size_t len)
{
    gw->by_status[status >= 100 && status < 600 ? status : 0]++;
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    h2o_send_inline(req, body, len);
}

static void respond(struct http_gateway *gw, h2o_req_t *req, int status, const char *body,
                    size_t len)
{
    respond_typed(gw, req, status, "application/json", body, len);
}

static void respond_error_status(struct http_gateway *gw, h2o_req_t *req, int status,
                                 const char *uri, const char *message)
{
    codec_buf *buf = services_scratch(gw->rt->services);
    if (rpc_error_body(buf, uri, message) != 0) {
        respond(gw, req, 500, "{}", 2);
        return;
    }
    respond(gw, req, status, buf->data, buf->len);
}

static void respond_error(struct http_gateway *gw, h2o_req_t *req, const char *uri,
                          const char *message)
{
    respond_error_status(gw, req, rpc_error_code(uri), uri, message);
}

/* ---- the RPC route ---- */

static bool over_tls(h2o_req_t *req);

/* The count of connection id, created at 0 when absent (NULL without memory). */
static conn_calls *conn_calls_get(struct http_gateway *gw, uint64_t id)
{
    conn_calls **head = &gw->conn_calls[id % CONN_BUCKETS];
    for (conn_calls *c = *head; c; c = c->next)
        if (c->id == id) return c;
    conn_calls *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->id = id;
    c->next = *head;
    *head = c;
    return c;
}

/* Frees the entry once no call holds it. */
static void conn_calls_forget(struct http_gateway *gw, conn_calls *cc)
{
    if (cc->count > 0) return;
    for (conn_calls **p = &gw->conn_calls[cc->id % CONN_BUCKETS]; *p; p = &(*p)->next) {
        if (*p == cc) {
            *p = cc->next;
            break;
        }
    }
    free(cc);
}

static void conn_calls_put(struct http_gateway *gw, conn_calls *cc)
{
    cc->count--;
    conn_calls_forget(gw, cc);
}

static void queue_unlink(struct http_gateway *gw, gw_call *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        gw->queue = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        gw->queue_tail = call->prev;
    call->prev = call->next = NULL;
}

static void unwatch(gw_call *call)
{
    struct http_gateway *gw = call->gw;
    if (call->watch_prev)
        call->watch_prev->watch_next = call->watch_next;
    else if (gw->watched == call)
        gw->watched = call->watch_next;
    if (call->watch_next) call->watch_next->watch_prev = call->watch_prev;
    call->watch_prev = call->watch_next = NULL;
}

/* A queued or pending call ends: answered, refused, or its request went away. */
static void call_end(gw_call *call)
{
    if (call->state == CALL_QUEUED) queue_unlink(call->gw, call);
    if (call->watch) unwatch(call);
    call->state = CALL_DONE;
    call->gw->inflight--;
    if (call->cc) conn_calls_put(call->gw, call->cc);
    call->cc = NULL;
}

/* The client went away before the reply: the callee is cancelled, the call counted and ended. */
static void call_abandon(gw_call *call)
{
    if (call->state == CALL_QUEUED) {
        call->gw->stats.abandoned_unsent++; /* it never reaches the bus */
    } else if (local_dispatch_cancel(call->gw->rt, &call->handle)) {
        call->gw->stats.abandoned_sent++;
    } else {
        call->gw->stats.abandoned_unsent++; /* in-process, cancelled before it started */
    }
    call_end(call);
}

static void call_dispose(void *p)
{
    gw_call *call = p;
    if (call->state == CALL_DONE) return;
    /* a stream reset, or the connection closed */
    if (call->conn) call->conn->resets++;
    call_abandon(call);
}

/* The connections answered in the loop turn in which their request came: h2o has started reading
 * them again (its write callbacks ran before this), and the loop has not polled since it stopped,
 * so epoll still watches them (epoll_rearm.c). */
static void rearm_connections(struct http_gateway *gw)
{
    while (gw->rearm) {
        gw_conn *c = gw->rearm;
        gw->rearm = c->rearm_next;
        c->rearm_next = NULL;
        c->rearm = false;
        if (epoll_rearm_stream((uv_stream_t *)&c->tcp)) gw->stats.rearmed++;
    }
}

/* An HTTP/1 connection answered in the turn its request came (h2o stopped reading it for the
 * request in that turn) is re-armed at the turn's end. */
static void rearm_later(struct http_gateway *gw, gw_conn *c, h2o_req_t *req, uint64_t turn)
{
    if (!gw->use_rearm || !c || c->rearm || turn != gw->turn || req->version >= 0x200) return;
    c->rearm = true;
    c->rearm_next = gw->rearm;
    gw->rearm = c;
}

static void forget_rearm(struct http_gateway *gw, gw_conn *c)
{
    for (gw_conn **p = &gw->rearm; c->rearm && *p; p = &(*p)->rearm_next) {
        if (*p != c) continue;
        *p = c->rearm_next;
        c->rearm = false;
    }
}

static int reply_status(const nb_reply *reply)
{
    const char *code = nb_reply_header(reply, HDR_SERVICE_ERROR_CODE);
    if (!code) return 200;
    int status = atoi(code);
    return (status >= 200 && status <= 599) ? status : 500;
}

static void on_reply(void *udata, enum nb_status status, const nb_reply *reply)
{
    gw_call *call = udata;
    struct http_gateway *gw = call->gw;
    call_end(call);
    if (call->conn) call->conn->answered++;
    h2o_req_t *req = call->req;
    rearm_later(gw, call->conn, req, call->turn);
    switch (status) {
    case NB_OK:
        respond(gw, req, reply_status(reply), reply->data, reply->len);
        break;
    case NB_NO_RESPONDERS:
        respond_error(gw, req, URI_NO_SUCH_PROCEDURE, "no service answers this procedure");
        break;
    case NB_TIMEOUT:
        respond_error(gw, req, URI_TIMEOUT, "no reply within the call timeout");
        break;
    case NB_UNAVAILABLE:
        respond_error(gw, req, URI_UNAVAILABLE, "the bus is unavailable");
        break;
    default:
        respond_error(gw, req, URI_RUNTIME_ERROR, "the request could not be sent");
    }
}

/* ?timeout=SECONDS overrides the default call timeout (bounded to [0.001, --max-call-timeout]). */
static double request_timeout(struct http_gateway *gw, h2o_req_t *req)
{
    double timeout = gw->rt->cfg.call_timeout, max = gw->rt->cfg.max_call_timeout;
    if (req->query_at == SIZE_MAX) return timeout;
    const char *q = req->path.base + req->query_at + 1;
    size_t qlen = req->path.len - req->query_at - 1;
    char buf[128];
    snprintf(buf, sizeof buf, "%.*s", (int)(qlen < sizeof buf ? qlen : sizeof buf - 1), q);
    for (char *tok = strtok(buf, "&"); tok; tok = strtok(NULL, "&")) {
        if (strncmp(tok, "timeout=", 8) != 0) continue;
        char *end;
        double v = strtod(tok + 8, &end);
        if (end != tok + 8 && v > 0) timeout = v < 0.001 ? 0.001 : v > max ? max : v;
    }
    return timeout;
}

/* An Authorization header's token, checked through the limiter of failed sign-ins (by client
 * address): the user, or NULL after answering 429 (too many failures) or 401 itself. */
static const auth_user *bearer_user(struct http_gateway *gw, h2o_req_t *req, h2o_iovec_t v)
{
    runtime *rt = gw->rt;
    struct sockaddr_storage ss;
    char peer[AUTH_PEER_MAX];
    socklen_t sslen = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    auth_limit_peer((struct sockaddr *)&ss, sslen, peer);
    uint64_t now = uv_now(&rt->loop);
    if (!auth_limit_admit(rt->auth_limit, now, peer, NULL)) {
        respond_error_status(gw, req, 429, URI_AUTHENTICATION_FAILED,
                             "too many failed sign-ins from this address; retry later");
        return NULL;
    }
    const auth_user *u = NULL;
    if (v.len > 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")))
        u = auth_token_find(rt->auth, v.base + 7, v.len - 7);
    if (!u) {
        auth_limit_charge(rt->auth_limit, now, peer, NULL);
        auth_limit_settle(rt->auth_limit, now, peer, NULL, false);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"microservice\", error=\"invalid_token\""));
        respond_error_status(gw, req, 401, URI_AUTHENTICATION_FAILED,
                             "the bearer token is not valid");
    }
    return u;
}

/* The caller of an RPC when authentication is on: a bearer token's user, else the anonymous role
 * if the auth file has one. Answers 401, 403 or 429 itself and returns false when the call may
 * not go on; on success sets the caller's authid and authrole (NULL: none, auth is off). */
static bool authorize_call(struct http_gateway *gw, h2o_req_t *req, const char *subject,
                           const char **authid_out, const char **role_out)
{
    const auth *a = gw->rt->auth;
    *authid_out = *role_out = NULL;
    if (!a) return true;
    const char *authid = "anonymous", *role = auth_anonymous_role(a);
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        const auth_user *u = bearer_user(gw, req, req->headers.entries[i].value);
        if (!u) return false;
        authid = auth_user_id(u);
        role = auth_user_role(u);
    } else if (!role) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"microservice\""));
        respond_error_status(gw, req, 401, URI_AUTHENTICATION_FAILED,
                             "authentication required: Authorization: Bearer <token>");
        return false;
    }
    if (!auth_allowed(a, role, AUTH_CALL, subject)) {
        char msg[320];
        snprintf(msg, sizeof msg, "role %s may not call %s", role, subject);
        respond_error_status(gw, req, 403, URI_NOT_AUTHORIZED, msg);
        return false;
    }
    *authid_out = authid;
    *role_out = role;
    return true;
}

/* A plain HTTP/1 client that closes its connection while its call runs: h2o 2.2 does not read the
 * connection during a request, so it would only see the close when it writes the answer. Every
 * PEER_CHECK_MS the sockets of the calls pending for that long are peeked at: the end of the
 * stream (or a reset) abandons the call like a stream reset does, and answers 499 (nginx's "client
 * closed request", counted in the responses by status; nobody reads it: the write fails and h2o
 * closes the connection). A socket with unread bytes (a pipelined request, or TLS records) tells
 * nothing and is left alone. */
#define PEER_CHECK_MS 1000

static void peer_gone(gw_call *call)
{
    call_abandon(call);
    respond_error_status(call->gw, call->req, 499, URI_CANCELED,
                         "the client closed the connection");
}

static bool peer_closed(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void peer_check(uv_timer_t *t)
{
    struct http_gateway *gw = t->data;
    uint64_t now = uv_now(t->loop);
    gw_call *call = gw->watched;
    while (call) {
        gw_call *next = call->watch_next; /* peer_gone unlinks call */
        if (now - call->since >= PEER_CHECK_MS && call->conn->fd >= 0 &&
            peer_closed(call->conn->fd))
            peer_gone(call);
        call = next;
    }
    if (!gw->watched) uv_timer_stop(t);
}

static void watch(struct http_gateway *gw, gw_call *call)
{
    call->since = uv_now(&gw->rt->loop);
    call->watch_prev = NULL;
    call->watch_next = gw->watched;
    if (gw->watched) gw->watched->watch_prev = call;
    gw->watched = call;
    if (!uv_is_active((uv_handle_t *)&gw->peer_timer) && !gw->turn_end_closed)
        uv_timer_start(&gw->peer_timer, peer_check, PEER_CHECK_MS, PEER_CHECK_MS);
}

/* Publishes a queued call; answers the request itself when it cannot be sent. */
static void send_call(gw_call *call)
{
    struct http_gateway *gw = call->gw;
    int rc = local_dispatch_start(gw->rt, true, call->subject, call->req->entity.base,
                                  call->req->entity.len, call->trace[0] ? call->trace : NULL,
                                  call->authid, call->authrole, call->timeout, on_reply, call,
                                  &call->handle);
    if (rc == NB_OK) {
        call->state = CALL_PENDING;
        if (call->watch && call->conn) watch(gw, call);
        return;
    }
    call_end(call);
    respond_error(gw, call->req, rc == NB_UNAVAILABLE ? URI_UNAVAILABLE : URI_RUNTIME_ERROR,
                  rc == NB_UNAVAILABLE ? "the bus is unavailable"
                                       : "the request could not be sent");
}

/* Every call still queued (its request did not go away) is sent. Answering one that fails may
 * let h2o run more requests, which queue behind. */
static void flush_calls(struct http_gateway *gw)
{
    while (gw->queue) {
        gw_call *call = gw->queue;
        queue_unlink(gw, call);
        call->state = CALL_PENDING; /* not queued any more; send_call settles it */
        send_call(call);
    }
}

/* The end of every loop turn, right before the poll. */
static void on_turn_end(uv_prepare_t *p)
{
    struct http_gateway *gw = p->data;
    flush_calls(gw);
    rearm_connections(gw);
    gw->turn++;
}

/* A call waits for the end of the turn, so that an HTTP/2 stream reset read in the same turn
 * cancels it before it is sent (and one in-process waits for the next turn's check phase, so a
 * reset read by that poll cancels it too). An HTTP/1 call served in-process has no reset to wait
 * for: it goes to local_dispatch at once, which starts it in the check phase of this turn, so it
 * is answered in the turn its request came (and the connection is re-armed). */
static void queue_call(struct http_gateway *gw, gw_call *call)
{
    if (gw->turn_end_closed ||
        (call->req->version < 0x200 && local_dispatch_runs_here(gw->rt, true, call->subject))) {
        call->state = CALL_PENDING;
        send_call(call);
        return;
    }
    call->state = CALL_QUEUED;
    call->prev = gw->queue_tail;
    call->next = NULL;
    if (gw->queue_tail)
        gw->queue_tail->next = call;
    else
        gw->queue = call;
    gw->queue_tail = call;
}

/* The accepted connection a request came on (NULL if not known). */
static gw_conn *conn_of(struct http_gateway *gw, h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    return fd >= 0 && fd < gw->by_fd_len ? gw->by_fd[fd] : NULL;
}

static void shut_connection(gw_conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
}

/* HTTP/2 rapid reset (CVE-2023-44487): true when the connection's calls end by reset more than
 * RESET_BUDGET times and more often than they are answered. The connection is then shut once:
 * h2o sees its end and closes it, disposing (and cancelling) what it still holds. */
static bool resets_too_fast(struct http_gateway *gw, gw_conn *c, h2o_req_t *req)
{
    if (c->cut) return true;
    if (c->resets <= RESET_BUDGET || c->resets <= c->answered) return false;
    c->cut = true;
    gw->stats.rapid_reset_conns++;
    struct sockaddr_storage sa;
    char peer[NI_MAXHOST] = "?";
    socklen_t len = req->conn->callbacks->get_peername
                        ? req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa)
                        : 0;
    if (len > 0 && h2o_socket_getnumerichost((struct sockaddr *)&sa, len, peer) == SIZE_MAX)
        snprintf(peer, sizeof peer, "?");
    log_warn(TAG,
             "HTTP/2 rapid reset: the connection of %s reset %llu calls before their answer "
             "(%llu answered); closing it",
             peer, (unsigned long long)c->resets, (unsigned long long)c->answered);
    shut_connection(c);
    return true;
}

/* Refuses the call (answering it) while the process or the connection is at its limit. */
static bool call_admitted(struct http_gateway *gw, h2o_req_t *req, gw_conn *conn)
{
    char msg[160];
    if (gw->inflight >= gw->rt->cfg.max_http_inflight) {
        snprintf(msg, sizeof msg,
                 "too many HTTP calls in flight in this process (limit %d, --max-http-inflight)",
                 gw->rt->cfg.max_http_inflight);
        respond_error(gw, req, URI_UNAVAILABLE, msg);
        return false;
    }
    if (conn && resets_too_fast(gw, conn, req)) {
        respond_error(gw, req, URI_LIMIT_EXCEEDED,
                      "too many calls reset on this connection (HTTP/2 rapid reset)");
        return false;
    }
    return true;
}

/* A valid traceparent of the request goes on to the service (appended to the headers). */
/* A valid traceparent of the request goes on with the call: headers[0..1] (in the request's
 * pool), else headers[0] = NULL. */
static void forward_trace(h2o_req_t *req, const char *headers[3])
{
    char id[TRACE_ID_LEN + 1];
    headers[0] = NULL;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT(TRACE_HEADER), -1);
    if (i < 0) return;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (!trace_parse(v.base, v.len, id)) return;
    headers[0] = TRACE_HEADER;
    headers[1] = h2o_strdup(&req->pool, v.base, v.len).base;
    headers[2] = NULL;
}

static int handle_rpc(struct http_gateway *gw, h2o_req_t *req, const char *subject)
{
    gw_conn *conn = conn_of(gw, req);
    if (!call_admitted(gw, req, conn)) return 0;
    const char *authid, *authrole;
    if (!authorize_call(gw, req, subject, &authid, &authrole)) return 0;
    codec_error err;
    if (codec_decode_envelope(NULL, req->entity.base, req->entity.len, gw->rt->cfg.max_depth,
                              &err) != 0) {
        respond_error(gw, req, URI_INVALID_ARGUMENT, err.msg);
        return 0;
    }
    conn_calls *cc = NULL;
    if (gw->rt->cfg.max_conn_inflight < H2O_STREAMS_PER_CONN &&
        !(cc = conn_calls_get(gw, req->conn->id))) {
        respond_error(gw, req, URI_UNAVAILABLE, "out of memory");
        return 0;
    }
    if (cc && cc->count >= gw->rt->cfg.max_conn_inflight) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "too many calls in flight on this connection (limit %d, --max-conn-inflight)",
                 gw->rt->cfg.max_conn_inflight);
        respond_error(gw, req, URI_LIMIT_EXCEEDED, msg);
        return 0; /* cc holds a call of the same connection: it stays */
    }
    gw_call *call = h2o_mem_alloc_shared(&req->pool, sizeof *call, call_dispose);
    memset(call, 0, sizeof *call);
    call->gw = gw;
    call->req = req;
    call->conn = conn;
    call->subject = h2o_strdup(&req->pool, subject, SIZE_MAX).base;
    call->authid = authid; /* the auth file's strings, which live as long as the process */
    call->authrole = authrole;
    forward_trace(req, call->trace);
    call->timeout = request_timeout(gw, req);
    call->watch = req->version < 0x200 && !over_tls(req);
    call->turn = gw->turn;
    call->cc = cc;
    if (cc) cc->count++;
    gw->inflight++;
    queue_call(gw, call);
    return 0;
}

static bool frontend_has(struct http_gateway *gw, h2o_iovec_t path)
{
    char file[4096];
    struct stat st;
    snprintf(file, sizeof file, "%s%.*s", gw->rt->cfg.frontend_dir, (int)path.len, path.base);
    return stat(file, &st) == 0 && S_ISREG(st.st_mode);
}

static void respond_health(struct http_gateway *gw, h2o_req_t *req)
{
    runtime *rt = gw->rt;
    const char *pg = pg_pool_state(rt->pg);
    /* With the bus down, the RPCs served here still answer in-process (local_dispatch.h): the
     * process stays in the balancer's pool ("degraded", 200) and says which part is down. */
    char streams[1024]; /* JetStream streams it cannot reach, named */
    int unreachable = jetstream_health(rt->js, streams, sizeof streams);
    bool bus = nats_bridge_ready(rt->nats);
    bool local = rt->cfg.prefer_local && services_rpc_count(rt->services) > 0;
    /* services of the start-up load whose started function (or streams) still runs */
    int starting = services_startup_pending(rt->services);
    bool ok = (bus || local) && !rt->shutting_down && (!rt->pg || strcmp(pg, "connected") == 0) &&
              unreachable == 0 && starting == 0;
    char body[1536];
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"%s\",\"nats\":\"%s\",\"postgres\":\"%s\",\"rpcs\":%d,"
                     "\"services_starting\":%d,\"local_dispatch\":%s,\"inflight\":%d,"
                     "\"http_inflight\":%d,\"shutting_down\":%s%s}",
                     !ok   ? "unavailable"
                     : bus ? "ok"
                           : "degraded",
                     nats_bridge_state(rt->nats), pg, services_rpc_count(rt->services), starting,
                     rt->cfg.prefer_local ? "true" : "false", sched_inflight(rt->sched),
                     gw->inflight, rt->shutting_down ? "true" : "false", streams);
    respond(gw, req, ok ? 200 : 503, body, (size_t)n);
}

static bool over_tls(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    return sock && h2o_socket_get_ssl_protocol_version(sock) != NULL;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* 308 to https://<host of the request>:<https port><path and query>. */
static void redirect_to_https(struct http_gateway *gw, h2o_req_t *req)
{
    runtime_config *cfg = &gw->rt->cfg;
    h2o_iovec_t host = req->authority;
    bool ipv6 = false;
    if (req->hostconf && host.base == req->hostconf->authority.hostport.base) {
        host = h2o_iovec_init(cfg->https_host, strlen(cfg->https_host)); /* no Host header */
        ipv6 = memchr(host.base, ':', host.len) != NULL;
    } else if (host.len > 0 && host.base[0] == '[') { /* [v6]:port */
        const char *end = memchr(host.base, ']', host.len);
        if (!end)
            host.len = 0;
        else
            host = h2o_iovec_init(host.base + 1, (size_t)(end - host.base) - 1);
        ipv6 = true;
    } else {
        const char *colon = memchr(host.base, ':', host.len);
        if (colon) host.len = (size_t)(colon - host.base);
    }
    bool ok = host.len > 0 && host.len < 256;
    for (size_t i = 0; ok && i < host.len; i++)
        ok = host_char(host.base[i]) || (ipv6 && (host.base[i] == ':' || host.base[i] == '%'));
    if (!ok) {
        respond_error_status(gw, req, 400, URI_INVALID_ARGUMENT, "bad Host header");
        return;
    }
    h2o_iovec_t path =
        req->path.len > 0 && req->path.base[0] == '/' ? req->path : h2o_iovec_init("/", 1);
    char port[16] = "";
    if (cfg->https_port != 443) snprintf(port, sizeof port, ":%d", cfg->https_port);
    size_t cap = host.len + path.len + 32;
    char *location = h2o_mem_alloc_pool(&req->pool, cap);
    int n = snprintf(location, cap, "https://%s%.*s%s%s%.*s", ipv6 ? "[" : "", (int)host.len,
                     host.base, ipv6 ? "]" : "", port, (int)path.len, path.base);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, location, (size_t)n);
    respond_typed(gw, req, 308, "text/plain", H2O_STRLIT("use https\n"));
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct http_gateway *gw = ((struct gw_handler *)self)->gw;
    h2o_iovec_t path = req->path_normalized;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/healthz"))) {
        respond_health(gw, req);
        return 0;
    }
    if (gw->rt->cfg.http_redirect && !over_tls(req)) {
        redirect_to_https(gw, req);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/metrics"))) {
        codec_buf *buf = services_scratch(gw->rt->services);
        metrics_render(gw->rt, buf);
        respond_typed(gw, req, 200, "text/plain; version=0.0.4; charset=utf-8", buf->data,
                      buf->len);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/openapi.json"))) {
        codec_buf *buf = services_scratch(gw->rt->services);
        char err[256];
        if (services_openapi(gw->rt->services, buf, err, sizeof err) != 0) {
            log_error(TAG, "openapi.json: %s", err);
            respond_error_status(gw, req, 500, URI_RUNTIME_ERROR, "the API description failed");
            return 0;
        }
        respond(gw, req, 200, buf->data, buf->len);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/websocket")))
        return wamp_router_upgrade(gw->rt->wamp, req);
    char subject[HTTP_RPC_SUBJECT_MAX + 1];
    const char *why;
    enum http_rpc_path_result route =
        http_rpc_path_to_subject(path.base, path.len, subject, sizeof subject, &why);
    if (route == HTTP_RPC_PATH_NOT_RPC) return -1;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        if (frontend_has(gw, path)) return -1; /* a static file such as /app.js */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST"));
        respond_error_status(gw, req, 405, URI_INVALID_ARGUMENT, "method not allowed: use POST");
        return 0;
    }
    if (route ==
        HTTP_RPC_PATH_RESERVED) { /* as if nothing served it: system subjects stay hidden */
        respond_error_status(gw, req, 404, URI_NO_SUCH_PROCEDURE, why);
        return 0;
    }
    if (route == HTTP_RPC_PATH_INVALID) {
        respond_error_status(gw, req, 400, URI_INVALID_ARGUMENT, why);
        return 0;
    }
    return handle_rpc(gw, req, subject);
}

/* ---- connections ---- */

static void connection_closed(uv_handle_t *h)
{
    gw_conn *conn = (gw_conn *)h;
    struct http_gateway *gw = conn->gw;
    if (conn->fd >= 0 && gw->by_fd[conn->fd] == conn) gw->by_fd[conn->fd] = NULL;
    forget_rearm(gw, conn);
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        gw->conns = conn->next;
    if (conn->next) conn->next->prev = conn->prev;
    gw->connections--;
    free(conn);
}

/* Files the connection under its descriptor (descriptors are unique among open sockets). */
static int index_by_fd(struct http_gateway *gw, gw_conn *conn)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) != 0 || fd < 0) return -1;
    if (fd >= gw->by_fd_len) {
        int len = fd < 512 ? 1024 : fd * 2;
        gw_conn **grown = realloc(gw->by_fd, sizeof *grown * (size_t)len);
        if (!grown) return -1;
        memset(grown + gw->by_fd_len, 0, sizeof *grown * (size_t)(len - gw->by_fd_len));
        gw->by_fd = grown;
        gw->by_fd_len = len;
    }
    gw->by_fd[fd] = conn;
    conn->fd = fd;
    return 0;
}

static void on_accept(uv_stream_t *listener, int status)
{
    struct http_gateway *gw = listener->data;
    if (status != 0) return;
    gw_conn *conn = calloc(1, sizeof *conn);
    if (!conn) return;
    uv_tcp_init(listener->loop, &conn->tcp);
    conn->gw = gw;
    conn->fd = -1;
    conn->next = gw->conns;
    if (gw->conns) gw->conns->prev = conn;
    gw->conns = conn;
    gw->connections++;
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0 || index_by_fd(gw, conn) != 0) {
        uv_close((uv_handle_t *)&conn->tcp, connection_closed);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, connection_closed);
    /* over TLS h2o does the handshake first; one that fails closes the socket */
    h2o_accept(listener == (uv_stream_t *)&gw->tls_listener ? &gw->tls_accept_ctx : &gw->accept_ctx,
               sock);
}

struct http_gateway *http_gateway_new(runtime *rt)
{
    struct http_gateway *gw = calloc(1, sizeof *gw);
    if (!gw) return NULL;
    gw->rt = rt;
    if (rt->cfg.tls_cert) {
        gw->ssl_ctx = http_tls_server_context(rt->cfg.tls_cert, rt->cfg.tls_key);
        if (!gw->ssl_ctx) {
            free(gw);
            return NULL;
        }
    }
    h2o_config_init(&gw->config);
    gw->config.max_request_entity_size = rt->cfg.body_limit;
    h2o_hostconf_t *host =
        h2o_config_register_host(&gw->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *root = h2o_config_register_path(host, "/", 0);
    struct gw_handler *handler = (void *)h2o_create_handler(root, sizeof *handler);
    handler->super.on_req = on_req;
    handler->gw = gw;
    struct stat st;
    if (rt->cfg.frontend_dir && stat(rt->cfg.frontend_dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        static const char *index_files[] = {"index.html", NULL};
        h2o_file_register(root, rt->cfg.frontend_dir, index_files, NULL, 0);
    } else {
        log_info(TAG, "no frontend folder at %s; GET / is 404", rt->cfg.frontend_dir);
    }
    h2o_context_init(&gw->ctx, &rt->loop, &gw->config);
    gw->ctx_ready = true;
    gw->accept_ctx.ctx = &gw->ctx;
    gw->accept_ctx.hosts = gw->config.hosts;
    gw->tls_accept_ctx = gw->accept_ctx;
    gw->tls_accept_ctx.ssl_ctx = gw->ssl_ctx;
    uv_timer_init(&rt->loop, &gw->close_timer);
    gw->close_timer.data = gw;
    uv_timer_init(&rt->loop, &gw->peer_timer);
    gw->peer_timer.data = gw;
    uv_unref((uv_handle_t *)&gw->peer_timer); /* the calls keep the process alive, not this */
    uv_prepare_init(&rt->loop, &gw->turn_end);
    gw->turn_end.data = gw;
    uv_prepare_start(&gw->turn_end, on_turn_end);
    uv_unref((uv_handle_t *)&gw->turn_end); /* it keeps nothing alive */
    gw->use_rearm = rt->cfg.http1_rearm && epoll_rearm_supported();
    return gw;
}

static int listen_on(struct http_gateway *g, uv_tcp_t *listener, bool *listening,
                     const char *scheme, const char *host, int port)
{
    runtime *rt = g->rt;
    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0) {
        log_error(TAG, "bad listen address %s:%d: %s", host, port, uv_strerror(rc));
        return -1;
    }
    uv_tcp_init_ex(&rt->loop, listener, addr.ss_family);
    listener->data = g;
    *listening = true;
    if (rt->cfg.reuse_port) { /* workers: each listens, the kernel spreads the connections */
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)listener, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    rc = uv_tcp_bind(listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)listener, LISTEN_BACKLOG, on_accept);
    if (rc != 0) {
        log_error(TAG, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        return -1;
    }
    log_info(TAG, "listening on %s://%s:%d", scheme, host, port);
    return 0;
}

int http_gateway_listen(struct http_gateway *g)
{
    runtime_config *cfg = &g->rt->cfg;
    if (cfg->http_enabled &&
        listen_on(g, &g->listener, &g->listening, "http", cfg->http_host, cfg->http_port) != 0)
        return -1;
    if (g->ssl_ctx && listen_on(g, &g->tls_listener, &g->tls_listening, "https", cfg->https_host,
                                cfg->https_port) != 0)
        return -1;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    (void)h;
}

void http_gateway_stop_accepting(struct http_gateway *g)
{
    if (g->listening) {
        g->listening = false;
        uv_close((uv_handle_t *)&g->listener, listener_closed);
    }
    if (g->tls_listening) {
        g->tls_listening = false;
        uv_close((uv_handle_t *)&g->tls_listener, listener_closed);
    }
    if (g->ctx_ready) h2o_context_request_shutdown(&g->ctx);
}

int http_gateway_inflight(struct http_gateway *g)
{
    return g->inflight;
}

int http_gateway_connections(struct http_gateway *g)
{
    return g->connections;
}

const uint64_t *http_gateway_status_counts(struct http_gateway *g)
{
    return g->by_status;
}

const http_gateway_stats *http_gateway_get_stats(struct http_gateway *g)
{
    return &g->stats;
}

static void close_timer_closed(uv_handle_t *h)
{
    struct http_gateway *gw = h->data;
    if (gw->on_closed) gw->on_closed(gw->on_closed_arg);
}

static void peer_timer_closed(uv_handle_t *h)
{
    struct http_gateway *gw = h->data;
    uv_close((uv_handle_t *)&gw->close_timer, close_timer_closed);
}

static void turn_end_closed(uv_handle_t *h)
{
    struct http_gateway *gw = h->data;
    uv_close((uv_handle_t *)&gw->peer_timer, peer_timer_closed);
}

/* Ends idle keep-alive connections (h2o 2.2 leaves HTTP/1 ones open after a shutdown request):
 * with its socket shut, h2o sees the end of the stream and closes the connection itself. */
static void shut_connections(struct http_gateway *gw)
{
    for (struct gw_conn *c = gw->conns; c; c = c->next)
        shut_connection(c);
}

/* Waits for the connections to close before h2o's context goes away: those finishing a response
 * for up to 1 s, then the rest are shut, again at every tick (shutdown(2) is idempotent, and a
 * connection h2o was not reading from at the first one is caught at a later one), for up to 2 s
 * more. */
static void close_tick(uv_timer_t *t)
{
    struct http_gateway *gw = t->data;
    uint64_t waited = uv_now(t->loop) - gw->close_started;
    if (gw->connections > 0 && waited > 1000) shut_connections(gw);
    if (gw->connections > 0 && waited <= 3000) return;
    uv_timer_stop(t);
    if (gw->connections == 0) {
        /* h2o_context_request_shutdown armed HTTP/2's GOAWAY timer; with no connection left
         * it has nothing to do, and h2o_context_dispose insists that no timer is armed */
        h2o_timeout_entry_t *goaway = &gw->ctx.http2._graceful_shutdown_timeout;
        if (h2o_timeout_is_linked(goaway)) h2o_timeout_unlink(goaway);
        h2o_context_dispose(&gw->ctx);
        gw->ctx_ready = false;
    } else {
        log_warn(TAG, "%d connections still open at exit", gw->connections);
    }
    flush_calls(gw); /* calls of connections still open: the bus is closed, 503 */
    gw->turn_end_closed = true;
    uv_close((uv_handle_t *)&gw->turn_end, turn_end_closed);
}

void http_gateway_close(struct http_gateway *g, void (*on_closed)(void *arg), void *arg)
{
    g->on_closed = on_closed;
    g->on_closed_arg = arg;
    http_gateway_stop_accepting(g);
    g->close_started = uv_now(&g->rt->loop);
    uv_timer_start(&g->close_timer, close_tick, 0, 20);
}

void http_gateway_free(struct http_gateway *g)
{
    if (!g) return;
    for (int b = 0; b < CONN_BUCKETS; b++) { /* connections h2o never closed */
        while (g->conn_calls[b]) {
            conn_calls *c = g->conn_calls[b];
            g->conn_calls[b] = c->next;
            free(c);
        }
    }
    free(g->by_fd);
    if (!g->ctx_ready) h2o_config_dispose(&g->config);
    SSL_CTX_free(g->ssl_ctx); /* the connections' SSL objects held their own references */
    free(g);
}
