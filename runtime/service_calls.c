/* service_calls.c: owns the tasks that run a service's code for a request: a NATS message on an
 * RPC's subject becomes a task (decode the envelope, bind the parameters, start the coroutine) and
 * the task's end becomes the reply (result, error body and headers), counted in the RPC's
 * statistics. Also spawned functions (microservice.spawn). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "mlua_api.h"
#include "mlua_error.h"
#include "nats_bridge.h"
#include "rpc_binding.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "service_hooks.h"
#include "service_internal.h"
#include "services.h"
#include "timers.h"
#include "trace.h"

/* Where a reply goes: a NATS reply subject ("" or NULL: nowhere) or, for an in-process call, a
 * function. Both paths build the same bytes and headers, so their semantics cannot drift. */
typedef struct reply_to {
    const char *subject;
    services_reply_fn fn;
    void *udata;
} reply_to;

static reply_to ctx_reply_to(const call_ctx *c)
{
    reply_to to = {c->reply, c->reply_fn, c->reply_udata};
    return to;
}

static bool has_reply(const reply_to *to)
{
    return to->fn || (to->subject && to->subject[0]);
}

static void deliver(struct services *s, const reply_to *to, const char *data, size_t len,
                    const char *const *headers)
{
    if (to->fn)
        to->fn(to->udata, NB_OK, data, len, headers);
    else if (to->subject && to->subject[0])
        nats_bridge_publish(s->rt->nats, to->subject, NULL, data, len, headers);
}

/* ---- replies ---- */

static void reply_error(struct services *s, const reply_to *to, const char *uri, const char *msg,
                        int code)
{
    codec_buf *buf = services_scratch(s);
    if (rpc_error_body(buf, uri, msg) != 0) return;
    char line[256], codetext[16];
    rpc_error_header_text(line, sizeof line, msg);
    snprintf(codetext, sizeof codetext, "%d", code);
    const char *headers[] = {HDR_SERVICE_ERROR, line, HDR_SERVICE_ERROR_CODE, codetext, NULL};
    deliver(s, to, buf->data, buf->len, headers);
}

/* The error value at the top of co (microservice.error or a failed call) as a reply. */
static void reply_app_error(struct services *s, const reply_to *to, lua_State *co)
{
    int e = lua_gettop(co);
    lua_getfield(co, e, "uri");
    const char *uri = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : URI_RUNTIME_ERROR;
    lua_getfield(co, e, "code");
    int code = lua_isnumber(co, -1) ? (int)lua_tointeger(co, -1) : 400;
    if (code < 100 || code > 599) code = 400;
    lua_getfield(co, e, "args");
    lua_getfield(co, e, "kwargs");
    const char *msg = uri;
    if (lua_istable(co, -2)) {
        lua_rawgeti(co, -2, 1);
        if (lua_type(co, -1) == LUA_TSTRING) msg = lua_tostring(co, -1);
        lua_pop(co, 1); /* still referenced by args */
    }
    /* {"error": uri, "args": args, "kwargs": kwargs}, args always an array */
    if (!lua_istable(co, e + 3)) {
        lua_newtable(co);
        lua_replace(co, e + 3);
    }
    if (!lua_getmetatable(co, e + 3)) {
        luaL_getmetatable(co, CODEC_ARRAY_MT);
        lua_setmetatable(co, e + 3);
    } else {
        lua_pop(co, 1);
    }
    if (!lua_istable(co, e + 4)) {
        lua_newtable(co);
        lua_replace(co, e + 4);
    }
    codec_buf *buf = services_scratch(s);
    codec_error err;
    int depth = s->rt->cfg.max_depth;
    if (codec_buf_append(buf, "{\"error\":", 9) || codec_encode_string(buf, uri, strlen(uri)) ||
        codec_buf_append(buf, ",\"args\":", 8) || codec_encode(co, e + 3, buf, depth, &err) ||
        codec_buf_append(buf, ",\"kwargs\":", 10) || codec_encode(co, e + 4, buf, depth, &err) ||
        codec_buf_append(buf, "}", 1)) {
        reply_error(s, to, uri, msg, code);
        return;
    }
    char line[256], codetext[16];
    rpc_error_header_text(line, sizeof line, msg);
    snprintf(codetext, sizeof codetext, "%d", code);
    const char *headers[] = {HDR_SERVICE_ERROR, line, HDR_SERVICE_ERROR_CODE, codetext, NULL};
    deliver(s, to, buf->data, buf->len, headers);
}

static void reply_result(struct services *s, const reply_to *to, lua_State *co, int nres,
                         const char *label)
{
    int base = lua_gettop(co) - nres;
    codec_buf *buf = services_scratch(s);
    codec_error err;
    if (codec_encode_envelope(co, nres >= 1 ? base + 1 : 0, nres >= 2 ? base + 2 : 0, buf,
                              s->rt->cfg.max_depth, &err) == 0) {
        deliver(s, to, buf->data, buf->len, NULL);
        return;
    }
    log_error(label, "cannot encode the result: %s", err.msg);
    char msg[300];
    snprintf(msg, sizeof msg, "cannot encode the result: %s", err.msg);
    reply_error(s, to, URI_RUNTIME_ERROR, msg, 500);
}

/* Logs an application error of t that has nobody to answer to. */
static void log_app_error(task *t, lua_State *co)
{
    const char *label = sched_log_tag(t);
    lua_getfield(co, -1, "uri");
    lua_getfield(co, -2, "args");
    const char *msg = "";
    if (lua_istable(co, -1)) {
        lua_rawgeti(co, -1, 1);
        if (lua_type(co, -1) == LUA_TSTRING) msg = lua_tostring(co, -1);
        lua_pop(co, 1);
    }
    log_warn(label, "error %s: %s" SCHED_TRACE_FMT,
             lua_isstring(co, -2) ? lua_tostring(co, -2) : "?", msg, sched_trace_id(t));
    lua_pop(co, 2);
}

const double services_hist_bounds[SERVICES_HIST_BUCKETS - 1] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5,
};

static void record_error(rpc_entry *e, const char *message)
{
    e->errors++;
    if (!message) message = "error";
    size_t n = strlen(message);
    if (n >= sizeof e->last_error) n = sizeof e->last_error - 1;
    memcpy(e->last_error, message, n);
    e->last_error[n] = '\0';
}

/* Counts a finished call: duration, histogram, and the error if it ended with one. */
static void record_call(rpc_entry *e, enum task_end how, lua_State *co, uint64_t ns)
{
    e->calls++;
    e->time_ns += ns;
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < SERVICES_HIST_BUCKETS - 1 && s > services_hist_bounds[b])
        b++;
    e->hist[b]++;
    switch (how) {
    case TASK_OK:
        break;
    case TASK_ERROR:
        record_error(e, lua_tostring(co, -1));
        break;
    case TASK_APP_ERROR:
        lua_getfield(co, -1, "uri");
        record_error(e, lua_tostring(co, -1));
        lua_pop(co, 1);
        break;
    case TASK_CANCELLED:
        record_error(e, "cancelled at shutdown");
        break;
    case TASK_EXPIRED:
        record_error(e, "abandoned: its caller stopped waiting (timeout or gone)");
        break;
    }
}

static void bus_call_unlink(struct services *s, call_ctx *c)
{
    if (!c->listed) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->bus_calls = c->next;
    if (c->next) c->next->prev = c->prev;
    c->listed = false;
}

void service_call_done(task *t, enum task_end how, lua_State *co, int nres)
{
    call_ctx *c = t->udata;
    struct services *s = c->svcs;
    bus_call_unlink(s, c);
    if (c->rpc) record_call(c->rpc, how, co, uv_hrtime() - c->started);
    reply_to to = ctx_reply_to(c);
    if (how == TASK_APP_ERROR && !has_reply(&to)) log_app_error(t, co);
    if (how == TASK_EXPIRED && to.fn) { /* in-process: as the bus caller's own timer would say */
        to.fn(to.udata, NB_TIMEOUT, NULL, 0, NULL);
    } else if (has_reply(&to)) {
        switch (how) {
        case TASK_OK:
            reply_result(s, &to, co, nres, t->label);
            break;
        case TASK_ERROR:
            reply_error(s, &to, URI_RUNTIME_ERROR, lua_tostring(co, -1), 500);
            break;
        case TASK_APP_ERROR:
            reply_app_error(s, &to, co);
            break;
        case TASK_CANCELLED:
            reply_error(s, &to, URI_UNAVAILABLE, "the service shut down before the call completed",
                        503);
            break;
        case TASK_EXPIRED:
            reply_error(s, &to, URI_TIMEOUT, "the call's timeout passed", 504);
            break;
        }
    }
    if (c->sub) service_sub_release(c->sub);
    if (c->rpc) service_rpc_release(s, c->rpc);
    mlua_memory_release_args(&s->rt->lua_mem, c->args_held);
    free(c);
    nats_bridge_kick(s->rt->nats);
}

call_ctx *service_call_ctx_new(struct services *s, const char *reply)
{
    size_t n = reply ? strlen(reply) : 0;
    call_ctx *c = malloc(sizeof *c + n + 1);
    if (!c) return NULL;
    c->svcs = s;
    c->rpc = NULL;
    c->sub = NULL;
    c->started = uv_hrtime();
    c->authid[0] = c->authrole[0] = '\0';
    c->args_held = 0;
    c->reply_fn = NULL;
    c->reply_udata = NULL;
    c->task = NULL;
    c->prev = c->next = NULL;
    c->listed = false;
    memcpy(c->reply, reply ? reply : "", n + 1);
    return c;
}

/* Pushes the args and kwargs of the envelope data on co, their Lua memory metered and held by c
 * (mlua_memory.c); on a malformed or too large envelope answers (when it can) and returns -1 with
 * nothing pushed. subject names the message in the log. */
int service_push_envelope(struct services *s, call_ctx *c, lua_State *co, const char *data,
                          size_t len, const char *subject, const char *label)
{
    codec_error err;
    int rc = -1, code = 400;
    mlua_memory *m = &s->rt->lua_mem;
    codec_meter meter = {&m->allocated, mlua_memory_args_budget(m)};
    size_t before = m->allocated;
    if (len > s->rt->cfg.body_limit)
        snprintf(err.msg, sizeof err.msg, "body of %zu bytes is over the limit of %zu", len,
                 s->rt->cfg.body_limit);
    else
        rc = codec_decode_envelope_metered(co, data, len, s->rt->cfg.max_depth, &meter, &err);
    if (rc == 0) {
        c->args_held = mlua_memory_hold_args(m, m->allocated - before);
        return 0;
    }
    if (rc == CODEC_TOO_LARGE)
        code = mlua_memory_refuse_args(m, meter.max, err.msg, sizeof err.msg);
    reply_to to = ctx_reply_to(c);
    if (has_reply(&to))
        reply_error(s, &to, code == 503 ? URI_UNAVAILABLE : URI_INVALID_ARGUMENT, err.msg, code);
    else
        log_warn(label, "message on %s dropped: %s", subject, err.msg);
    return -1;
}

/* ---- RPCs ---- */

/* The caller's identity, when a gateway holding the same bus_secret signed it for this subject;
 * anything unsigned or forged is ignored (the call runs without an identity). */
static void take_caller(call_ctx *c, task *t, const char *id, const char *role)
{
    if (!id || !role) return;
    snprintf(c->authid, sizeof c->authid, "%s", id);
    snprintf(c->authrole, sizeof c->authrole, "%s", role);
    t->authid = c->authid;
    t->authrole = c->authrole;
}

/* The caller's trace id, when it sent a valid traceparent (else one is made when first needed). */
void service_take_trace(task *t, const char *traceparent)
{
    if (traceparent) trace_parse(traceparent, strlen(traceparent), t->trace_id);
}

const char *service_msg_header(natsMsg *msg, const char *name)
{
    const char *v = NULL;
    return natsMsgHeader_Get(msg, name, &v) == NATS_OK ? v : NULL;
}

/* One call of e, from NATS or in-process (services_call_local): admission, envelope, deadline,
 * caller, trace, binding, then the task. Answers through in->to itself when the call cannot run.
 * Returns the started task, or NULL. */
static task *rpc_take(rpc_entry *e, const services_call *in, const reply_to *to)
{
    struct services *s = e->svcs;
    if (!mlua_memory_admit(&s->rt->lua_mem)) {
        char msg_text[96];
        snprintf(msg_text, sizeof msg_text, "Lua memory limit reached (%zu MiB)",
                 s->rt->lua_mem.limit >> 20);
        e->calls++;
        record_error(e, msg_text);
        if (has_reply(to)) reply_error(s, to, URI_UNAVAILABLE, msg_text, 503);
        return NULL;
    }
    call_ctx *c = service_call_ctx_new(s, to->subject);
    task *t = c ? sched_task_new(s->rt->sched, service_call_done, c, e->subject) : NULL;
    if (!t) {
        if (has_reply(to)) reply_error(s, to, URI_UNAVAILABLE, "out of memory", 503);
        free(c);
        return NULL;
    }
    c->reply_fn = to->fn;
    c->reply_udata = to->udata;
    lua_State *co = t->co;
    if (service_push_envelope(s, c, co, in->data, in->len, e->subject, e->subject) != 0) {
        e->calls++;
        record_error(e, "malformed envelope");
        sched_task_discard(t);
        free(c);
        return NULL;
    }
    /* the caller's timeout, at most --max-call-timeout (also without one) */
    double deadline = s->rt->cfg.max_call_timeout;
    if (in->timeout_s > 0 && in->timeout_s < deadline) deadline = in->timeout_s;
    sched_set_deadline(t, deadline);
    take_caller(c, t, in->authid, in->authrole);
    service_take_trace(t, in->traceparent);
    /* stack: args kwargs -> args kwargs fn bound... -> fn bound... */
    lua_rawgeti(co, LUA_REGISTRYINDEX, e->fn_ref);
    char err[256];
    int n = rpc_binding_push(&e->binding, co, e->svc_ref, 1, 2, e->subject, err, sizeof err);
    if (n < 0) {
        e->calls++;
        record_error(e, err);
        if (has_reply(to)) reply_error(s, to, URI_INVALID_ARGUMENT, err, 400);
        sched_task_discard(t);
        mlua_memory_release_args(&s->rt->lua_mem, c->args_held);
        free(c);
        return NULL;
    }
    lua_remove(co, 1);
    lua_remove(co, 1);
    c->rpc = e;
    e->tasks++;
    if (to->subject && to->subject[0]) { /* its caller may cancel it (SERVICES_CANCEL_SUBJECT) */
        c->task = t;
        c->next = s->bus_calls;
        if (s->bus_calls) s->bus_calls->prev = c;
        s->bus_calls = c;
        c->listed = true;
    }
    sched_start(t, n);
    return t;
}

void service_on_rpc_msg(void *udata, natsMsg *msg)
{
    rpc_entry *e = udata;
    struct services *s = e->svcs;
    if (nats_bridge_misdirected(s->rt->nats, msg, true)) return; /* an event never runs an RPC */
    services_call in = {natsMsg_GetData(msg),
                        (size_t)natsMsg_GetDataLength(msg),
                        0,
                        NULL,
                        NULL,
                        service_msg_header(msg, TRACE_HEADER)};
    const char *timeout = service_msg_header(msg, NB_HDR_TIMEOUT);
    if (timeout) in.timeout_s = strtod(timeout, NULL) / 1000.0;
    if (!auth_identity_of(s->rt->auth, msg, &in.authid, &in.authrole))
        in.authid = in.authrole = NULL;
    reply_to to = {natsMsg_GetReply(msg), NULL, NULL};
    rpc_take(e, &in, &to); /* the task holds copies of what it needs from msg */
    nats_bridge_release(s->rt->nats, msg);
}

/* A caller abandoned the request whose reply subject is the body: if this process serves it, its
 * task is abandoned as a gone in-process caller's would be. A linear search: cancels are rare
 * (abandoned calls only) and the list is bounded by --max-inflight. */
void service_on_cancel_msg(void *udata, natsMsg *msg)
{
    struct services *s = udata;
    const char *reply = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    for (call_ctx *c = s->bus_calls; c && reply && len > 0; c = c->next) {
        if ((size_t)len != strlen(c->reply) || memcmp(c->reply, reply, (size_t)len) != 0) continue;
        sched_abandon(c->task, "its caller went away (cancel message)"); /* frees c */
        break;
    }
    nats_bridge_release(s->rt->nats, msg);
}

task *services_call_local(struct services *s, const char *procedure, const services_call *in,
                          services_reply_fn fn, void *udata, bool *found)
{
    rpc_entry *e = service_rpc_find(s, procedure);
    *found = e && !e->shared; /* shared: balanced with WAMP callees over the bus */
    if (!*found) return NULL;
    reply_to to = {NULL, fn, udata};
    return rpc_take(e, in, &to);
}

bool services_serves_alone(struct services *s, const char *procedure)
{
    rpc_entry *e = service_rpc_find(s, procedure);
    return e && !e->shared;
}

/* ---- spawn ---- */

static void spawn_done(task *t, enum task_end how, lua_State *co, int nres)
{
    (void)nres;
    if (how == TASK_APP_ERROR) log_app_error(t, co);
}

int services_spawn(struct services *s, lua_State *L, int fn_idx, int nargs)
{
    task *parent = sched_current(L, NULL);
    task *t = sched_task_new(s->rt->sched, spawn_done, NULL, "spawn");
    if (!t) return -1;
    if (parent) memcpy(t->trace_id, sched_trace_id(parent), sizeof t->trace_id); /* same trace */
    for (int i = 0; i <= nargs; i++)
        lua_pushvalue(L, fn_idx + i);
    int saved = mlua_memory_begin_unfailing(&s->rt->lua_mem); /* t->co is not the running one */
    lua_xmove(L, t->co, nargs + 1);
    mlua_memory_end_unfailing(&s->rt->lua_mem, saved);
    sched_start_soon(t, nargs);
    return 0;
}
