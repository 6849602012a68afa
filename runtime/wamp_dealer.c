/* wamp_dealer.c: owns the dealer role of the WAMP router: CALL and CANCEL (this session is the
 * caller: calls waiting for a NATS reply), REGISTER and UNREGISTER (one NATS queue subscription
 * per procedure per process, after a probe of who else serves it on the bus), INVOCATIONs waiting
 * for the callee's YIELD or ERROR. It sends through wamp_session.c and never touches the
 * WebSocket. The behaviour is specified in docs/wamp.md. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "local_dispatch.h"
#include "log.h"
#include "nats_bridge.h"
#include "rpc_error.h"
#include "services.h"
#include "trace.h"
#include "wamp_internal.h"

#define HDR_PROGRESS "Wamp-Progress"
#define HDR_RECEIVE_PROGRESS "Wamp-Receive-Progress"
#define PROBE_TIMEOUT_S                                                                            \
    1.0 /* how long REGISTER waits for the bus to say who serves a procedure                       \
         */

/* ---- calls (this session is the caller) ---- */

void wamp_call_unlink(pending_call *c)
{
    for (pending_call **p = &c->s->calls; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            return;
        }
    }
}

/* An error reply's body {"error": uri, "args": [...], "kwargs": {...}} as an ERROR message. */
static json_t *error_from_reply(uint64_t request, const nb_reply *reply)
{
    const char *code = nb_reply_header(reply, HDR_SERVICE_ERROR_CODE);
    json_t *body = json_loadb(reply->data, reply->len, JSON_ALLOW_NUL, NULL);
    const char *uri = json_string_value(json_object_get(body, "error"));
    json_t *args = json_object_get(body, "args"), *kwargs = json_object_get(body, "kwargs");
    json_t *details = json_object();
    if (code) json_object_set_new(details, "code", json_integer(atoi(code)));
    json_t *e = json_pack("[iiIos[]{}]", ERROR, CALL, (json_int_t)request, details,
                          uri ? uri : URI_RUNTIME_ERROR);
    if (json_is_array(args)) json_array_set(e, 5, args);
    if (json_is_object(kwargs)) json_array_set(e, 6, kwargs);
    if (!uri) {
        const char *text = nb_reply_header(reply, HDR_SERVICE_ERROR);
        json_array_set_new(e, 5, json_pack("[s]", text ? text : "malformed error reply"));
    }
    json_decref(body);
    return e;
}

static void on_call_reply(void *udata, enum nb_status status, const nb_reply *reply)
{
    pending_call *c = udata;
    session *s = c->s;
    bool is_progress = status == NB_OK && nb_reply_header(reply, HDR_PROGRESS);
    if (!is_progress) {
        wamp_call_unlink(c);
        s->ncalls--;
    }
    if (status == NB_OK && nb_reply_header(reply, HDR_SERVICE_ERROR_CODE)) {
        wamp_send_msg(s, error_from_reply(c->request, reply));
    } else if (status == NB_OK) {
        json_t *args, *kwargs;
        if (wamp_envelope_split(reply->data, reply->len, &args, &kwargs) == 0) {
            json_t *details = is_progress ? json_pack("{sb}", "progress", 1) : json_object();
            wamp_send_msg(
                s, json_pack("[iIooo]", RESULT, (json_int_t)c->request, details, args, kwargs));
        } else {
            wamp_send_error(s, CALL, c->request, URI_RUNTIME_ERROR,
                            "the reply is not [args, kwargs]");
        }
    } else if (status == NB_NO_RESPONDERS) {
        wamp_send_error(s, CALL, c->request, URI_NO_SUCH_PROCEDURE,
                        "no service answers this procedure");
    } else if (status == NB_TIMEOUT) {
        wamp_send_error(s, CALL, c->request, URI_TIMEOUT, "no reply within the call timeout");
    } else {
        wamp_send_error(s, CALL, c->request, URI_UNAVAILABLE, "the bus is unavailable");
    }
    if (!is_progress) free(c);
}

void wamp_on_call(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts, *uri;
    if (!wamp_request_head(s, msg,
                           "CALL is [48, Request|id, Options|dict, Procedure|uri, Arguments|list, "
                           "ArgumentsKw|dict]",
                           &req, &opts, &uri))
        return;
    if (!wamp_valid_uri(json_string_value(uri), false)) {
        wamp_send_error(s, CALL, req, "wamp.error.invalid_uri", "not a valid procedure");
        return;
    }
    if (!wamp_allowed(s, AUTH_CALL, json_string_value(uri), CALL, req, true)) return;
    if (s->ncalls >= s->r->rt->cfg.max_session_calls) {
        char text[128];
        snprintf(text, sizeof text, "too many calls in flight in this session (limit %d)",
                 s->r->rt->cfg.max_session_calls);
        wamp_send_error(s, CALL, req, URI_LIMIT_EXCEEDED, text);
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
    char *body = c ? wamp_envelope_text(msg, 4, &len) : NULL;
    if (!body) {
        free(c);
        wamp_send_error(s, CALL, req, URI_RUNTIME_ERROR, "out of memory");
        return;
    }
    c->s = s;
    c->request = req;
    c->progress = progress;
    rpc_handle handle;
    int rc =
        local_dispatch_start(s->r->rt, true, json_string_value(uri), body, len, h ? headers : NULL,
                             s->authid, s->authrole, timeout, on_call_reply, c, &handle);
    c->req = handle.bus;
    c->local = handle.local;
    free(body);
    if (rc != NB_OK) {
        free(c);
        wamp_send_error(s, CALL, req, URI_UNAVAILABLE, "the bus is unavailable");
        return;
    }
    if (progress && c->req) nb_request_allow_progress(c->req, HDR_PROGRESS);
    c->next = s->calls;
    s->calls = c;
    s->ncalls++;
}

void wamp_on_cancel(session *s, json_t *msg)
{
    uint64_t req;
    if (json_array_size(msg) < 2 || !wamp_get_id(msg, 1, &req) ||
        (json_array_size(msg) > 2 && !json_is_object(json_array_get(msg, 2)))) {
        wamp_protocol_violation(s, "CANCEL is [49, CALL.Request|id, Options|dict]");
        return;
    }
    for (pending_call *c = s->calls; c; c = c->next) {
        if (c->request != req || c->ack) continue;
        wamp_call_unlink(c);
        s->ncalls--;
        local_dispatch_cancel(s->r->rt, &(rpc_handle){c->req, c->local});
        wamp_send_error(s, CALL, req, "wamp.error.canceled", "the call was canceled");
        free(c);
        return;
    }
    /* already answered: nothing to do */
}

/* ---- registrations (this session is a callee) ---- */

static registration *reg_find(router *r, const char *procedure)
{
    for (held *h = r->regs; h; h = h->next) {
        registration *g = (registration *)h;
        if (strcmp(g->procedure, procedure) == 0) return g;
    }
    return NULL;
}

static void reg_release(registration *g)
{
    if (!wamp_held_unlink_unused(&g->r->regs, &g->h)) return;
    if (g->sub) nb_sub_close(g->sub);
    if (g->probe) nb_sub_close(g->probe);
    free(g->h.sessions.v);
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
    if (wamp_envelope_split(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &args, &kwargs) !=
        0) {
        json_t *a =
            json_pack("[s]", "expected [args, kwargs] with args an array and kwargs an object");
        reply_error(r, reply, URI_INVALID_ARGUMENT, a, NULL, 400);
        json_decref(a);
        nats_bridge_release(r->rt->nats, m);
        return;
    }
    session *callee = NULL;
    if (g->h.sessions.n > 0) {
        int i = strcmp(g->invoke, "random") == 0
                    ? (int)(wamp_random_id() % (uint64_t)g->h.sessions.n)
                    : g->rr++ % g->h.sessions.n;
        callee = g->h.sessions.v[i];
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
    wamp_send_msg(callee, json_pack("[iIIooo]", INVOCATION, (json_int_t)inv->id,
                                    (json_int_t)g->h.id, details, args, kwargs));
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
    g->h.id = ++r->next_reg_id;
    g->procedure = strdup(procedure);
    snprintf(g->invoke, sizeof g->invoke, "%s", invoke);
    g->disclose = disclose;
    g->h.next = r->regs;
    r->regs = &g->h;
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
              wamp_ptrs_has(&g->h.sessions, s))) {
        wamp_send_error(s, REGISTER, req, "wamp.error.procedure_already_exists",
                        "the procedure is already registered in this process");
        return;
    }
    if (!g) g = reg_new(r, procedure, invoke, disclose);
    if (!g) {
        wamp_send_error(s, REGISTER, req, URI_UNAVAILABLE, "cannot subscribe on NATS");
        return;
    }
    wamp_ptrs_add(&g->h.sessions, s);
    wamp_ptrs_add(&s->regs, g);
    wamp_ack_after_flush(s, REGISTERED, req, g->h.id, fresh);
}

/* The bus's answer to a REGISTER's probe: nobody (no responders), or a server saying whether it
 * shares the procedure. */
static void on_probe_reply(void *udata, enum nb_status status, const nb_reply *reply)
{
    pending_call *c = udata;
    session *s = c->s;
    wamp_call_unlink(c);
    s->nprobes--;
    bool shared = false;
    if (reply) {
        json_t *v = json_loadb(reply->data, reply->len, 0, NULL);
        shared = json_is_true(json_object_get(v, "shared"));
        json_decref(v);
    }
    if (s->state != S_ESTABLISHED) {
        /* closing: nothing more to say */
    } else if (status == NB_NO_RESPONDERS ||
               (status == NB_OK && shared && strcmp(c->invoke, "single") != 0)) {
        register_finish(s, c->request, c->procedure, c->invoke, c->disclose);
    } else if (status == NB_OK) {
        wamp_send_error(s, REGISTER, c->request, "wamp.error.procedure_already_exists",
                        shared
                            ? "the procedure is served on the bus, shared: register it with invoke "
                              "roundrobin or random to share it"
                            : "the procedure is already served on the bus (a service or another "
                              "session), not shared");
    } else {
        wamp_send_error(s, REGISTER, c->request, URI_UNAVAILABLE,
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
        wamp_send_error(s, REGISTER, req, URI_RUNTIME_ERROR, "out of memory");
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
        wamp_send_error(s, REGISTER, req, URI_UNAVAILABLE, "the bus is unavailable");
        return;
    }
    c->next = s->calls;
    s->calls = c;
    s->nprobes++;
}

void wamp_on_register(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) != 4 || !wamp_get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri)) {
        wamp_protocol_violation(s, "REGISTER is [64, Request|id, Options|dict, Procedure|uri]");
        return;
    }
    const char *procedure = json_string_value(uri);
    if (!wamp_valid_uri(procedure, false)) {
        wamp_send_error(s, REGISTER, req, "wamp.error.invalid_uri", "not a valid procedure");
        return;
    }
    if (!wamp_allowed(s, AUTH_REGISTER, procedure, REGISTER, req, true)) return;
    const char *invoke = json_string_value(json_object_get(opts, "invoke"));
    if (!invoke) invoke = "single";
    if (strcmp(invoke, "single") && strcmp(invoke, "roundrobin") && strcmp(invoke, "random")) {
        wamp_send_error(s, REGISTER, req, "wamp.error.invalid_argument",
                        "invoke must be single, roundrobin or random");
        return;
    }
    router *r = s->r;
    if (s->regs.n + s->nprobes >= r->rt->cfg.max_session_regs) {
        wamp_send_error(s, REGISTER, req, URI_LIMIT_EXCEEDED,
                        "too many registrations in this session");
        return;
    }
    bool disclose = json_is_true(json_object_get(opts, "disclose_caller"));
    if (reg_find(r, procedure))
        register_finish(s, req, procedure, invoke, disclose); /* this process serves it already */
    else
        register_probe(s, req, procedure, invoke, disclose);
}

void wamp_on_unregister(session *s, json_t *msg)
{
    uint64_t req;
    registration *g = (registration *)wamp_held_leave(s, msg, s->r->regs, &s->regs, &req);
    if (!g) return;
    reg_release(g);
    wamp_send_msg(s, json_pack("[iI]", UNREGISTERED, (json_int_t)req));
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

void wamp_on_yield(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2);
    if (json_array_size(msg) < 3 || !wamp_get_id(msg, 1, &req) || !json_is_object(opts) ||
        !wamp_args_ok(msg, 3)) {
        wamp_protocol_violation(
            s, "YIELD is [70, INVOCATION.Request|id, Options|dict, Arguments|list, "
               "ArgumentsKw|dict]");
        return;
    }
    bool progress = json_is_true(json_object_get(opts, "progress"));
    invocation *inv = inv_take(s, req, progress);
    if (!inv) return; /* unknown or already answered: WAMP says ignore */
    if (inv->reply) {
        size_t len;
        char *body = wamp_envelope_text(msg, 3, &len);
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

void wamp_on_error(session *s, json_t *msg)
{
    uint64_t req;
    json_t *type = json_array_get(msg, 1), *details = json_array_get(msg, 3),
           *uri = json_array_get(msg, 4);
    if (json_array_size(msg) < 5 || !json_is_integer(type) || !wamp_get_id(msg, 2, &req) ||
        !json_is_object(details) || !json_is_string(uri) || !wamp_args_ok(msg, 5)) {
        wamp_protocol_violation(s,
                                "ERROR is [8, REQUEST.Type|int, REQUEST.Request|id, Details|dict, "
                                "Error|uri, Arguments|list, ArgumentsKw|dict]");
        return;
    }
    if (json_integer_value(type) != INVOCATION) {
        wamp_protocol_violation(s, "a client sends ERROR only for an INVOCATION");
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

void wamp_dealer_session_end(session *s)
{
    router *r = s->r;
    for (int i = 0; i < s->regs.n; i++) {
        registration *g = s->regs.v[i];
        wamp_ptrs_remove(&g->h.sessions, s);
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
            local_dispatch_cancel(s->r->rt, &(rpc_handle){c->req, c->local});
        free(c->procedure);
        free(c);
    }
}
