/* mlua_jetstream.c: owns the C side of microservice.jetstream (lualib/microservice_jetstream.lua):
 * the functions of microservice.core it builds JetStream on.
 *
 *   js_request(subject, data, headers, timeout, interruptible) -> status, data, headers, reply
 *     A request through the bridge's inbox (nats_bridge_request: non-blocking, its reply handed
 *     to the loop through the inbox's bounded ring); yields the calling task until the reply,
 *     the timeout or, when interruptible (a consumer's long pull), the drain. status: "ok",
 *     "no_responders", "timeout", "unavailable" or "stopping". headers holds the reply's headers
 *     and its status line (Status, Description) when it has one.
 *   js_publish(subject, data, headers) -> true, or false when the bus is down (acks, naks).
 *   js_envelope(args, kwargs) -> the [args, kwargs] JSON of publish; js_unenvelope(data) ->
 *     args, kwargs, or nil and why. b64decode(s) -> bytes or nil.
 *   js_count(stream, consumer, what, n), js_pending(stream, consumer, n),
 *     js_stream_state(stream, ok), js_stopping(): jetstream.c's bookkeeping.
 *
 * Why requests and not nats.c's js_* / kvStore_* functions: in nats.c 3.4.1 they wait for the
 * server's answer by blocking the calling thread (js_Publish, jsStream_*, kvStore_Get/Put/Update,
 * natsSubscription_Fetch), which on the loop thread would stall every other call; the JetStream
 * API subjects ($JS.API.*) answered through the bridge cost one pending request each instead. */
#include "mlua_jetstream.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jetstream.h"
#include "mlua_api.h"
#include "nats_bridge.h"
#include "scheduler.h"
#include "services.h"

#define MAX_HEADERS 16 /* name, value pairs a request may carry */

typedef struct js_op {
    sched_op base;
    js_wait wait; /* listed in jetstream.c while interruptible */
    bool listed;
    nb_request *req;
    runtime *rt;
} js_op;

static void op_unlist(js_op *o)
{
    if (o->listed) jetstream_wait_remove(o->rt->js, &o->wait);
    o->listed = false;
}

static void op_cancel(sched_op *op)
{
    js_op *o = (js_op *)op;
    op_unlist(o);
    if (o->req) nb_request_cancel(o->req);
    free(o);
}

static void push_headers(lua_State *co, natsMsg *m)
{
    const char **keys = NULL;
    int n = 0;
    lua_newtable(co);
    if (natsMsgHeader_Keys(m, &keys, &n) == NATS_OK) {
        for (int i = 0; i < n; i++) {
            const char *v = NULL;
            if (natsMsgHeader_Get(m, keys[i], &v) != NATS_OK || !v) continue;
            lua_pushstring(co, v);
            lua_setfield(co, -2, keys[i]);
        }
        free((void *)keys);
    }
    const char *status = NULL; /* nats.c keeps the status line apart from the headers */
    if (natsMsgHeader_Get(m, "Status", &status) == NATS_OK && status) {
        lua_pushstring(co, status);
        lua_setfield(co, -2, "Status");
    }
}

/* Pushes the message's data, headers and reply subject (or nil): 3 values. */
static int push_body(lua_State *co, natsMsg *m)
{
    lua_pushlstring(co, natsMsg_GetData(m) ? natsMsg_GetData(m) : "",
                    (size_t)natsMsg_GetDataLength(m));
    push_headers(co, m);
    const char *r = natsMsg_GetReply(m);
    if (r)
        lua_pushstring(co, r);
    else
        lua_pushnil(co);
    return 3;
}

static const char *status_name(enum nb_status st)
{
    switch (st) {
    case NB_OK:
        return "ok";
    case NB_NO_RESPONDERS:
        return "no_responders";
    case NB_TIMEOUT:
        return "timeout";
    default:
        return "unavailable";
    }
}

static void reply_cb(void *udata, enum nb_status st, const nb_reply *reply)
{
    js_op *o = udata;
    o->req = NULL;
    op_unlist(o);
    lua_State *co = sched_op_target(&o->base);
    if (!co) {
        free(o);
        return;
    }
    lua_pushstring(co, status_name(st));
    int n = 1;
    if (reply) n += push_body(co, reply->msg); /* always over the bus: nats-server's API */
    sched_op_resume(&o->base, n);
    free(o);
}

/* The drain: a long pull ends now with "stopping". */
static void op_wake(js_wait *w)
{
    js_op *o = (js_op *)((char *)w - offsetof(js_op, wait));
    o->listed = false;
    if (o->req) nb_request_cancel(o->req);
    o->req = NULL;
    lua_State *co = sched_op_target(&o->base);
    if (co) {
        lua_pushliteral(co, "stopping");
        sched_op_resume(&o->base, 1);
    }
    free(o);
}

/* Reads the optional headers table at idx into all (name, value, ..., NULL). */
static void read_headers(lua_State *L, int idx, const char **all)
{
    int n = 0;
    if (lua_istable(L, idx)) {
        lua_pushnil(L);
        while (lua_next(L, idx) && n < MAX_HEADERS * 2) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
                all[n++] = lua_tostring(L, -2); /* anchored by the table */
                all[n++] = lua_tostring(L, -1);
            }
            lua_pop(L, 1);
        }
    }
    all[n] = NULL;
}

static int core_js_request(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *subject = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *data = luaL_optlstring(L, 2, "", &len);
    double timeout = luaL_optnumber(L, 4, 5.0);
    bool interruptible = lua_toboolean(L, 5);
    const char *err;
    if (!sched_current(L, &err)) return luaL_error(L, "%s", err);
    if (interruptible && jetstream_stopping(rt->js)) {
        lua_pushliteral(L, "stopping");
        return 1;
    }
    const char *headers[MAX_HEADERS * 2 + 1];
    read_headers(L, 3, headers);
    js_op *o = calloc(1, sizeof *o);
    if (!o) return luaL_error(L, "out of memory");
    o->base.cancel = op_cancel;
    o->rt = rt;
    int rc =
        nats_bridge_request(rt->nats, subject, data, len, headers, timeout, reply_cb, o, &o->req);
    if (rc != NB_OK) {
        free(o);
        lua_pushstring(L, status_name(rc));
        return 1;
    }
    if (interruptible) {
        o->wait.wake = op_wake;
        jetstream_wait_add(rt->js, &o->wait);
        o->listed = true;
    }
    return sched_yield_op(L, &o->base);
}

static int core_js_publish(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *subject = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *data = luaL_optlstring(L, 2, "", &len);
    const char *headers[MAX_HEADERS * 2 + 1];
    read_headers(L, 3, headers);
    lua_pushboolean(L, nats_bridge_publish(rt->nats, subject, NULL, data, len, headers) == NB_OK);
    return 1;
}

static int core_js_envelope(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    codec_buf *buf = services_scratch(rt->services);
    codec_error err;
    if (codec_encode_envelope(L, lua_isnoneornil(L, 1) ? 0 : 1, lua_isnoneornil(L, 2) ? 0 : 2, buf,
                              rt->cfg.max_depth, &err) != 0)
        return luaL_error(L, "cannot encode the arguments: %s", err.msg);
    lua_pushlstring(L, buf->data, buf->len);
    return 1;
}

static int core_js_unenvelope(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    size_t len = 0;
    const char *data = luaL_checklstring(L, 1, &len);
    codec_error err;
    if (codec_decode_envelope(L, data, len, rt->cfg.max_depth, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
    }
    return 2;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

static int core_b64decode(lua_State *L)
{
    size_t len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            lua_pushnil(L);
            return 1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)((acc >> bits) & 0xff));
        }
    }
    luaL_pushresult(&b);
    return 1;
}

static int core_js_count(lua_State *L)
{
    static const char *const what[] = {"delivered", "acked", "redelivered", "terminated", NULL};
    runtime *rt = mlua_api_runtime(L);
    const char *stream = luaL_checkstring(L, 1), *consumer = luaL_checkstring(L, 2);
    int which = luaL_checkoption(L, 3, NULL, what);
    jetstream_count(rt->js, stream, consumer, (enum js_counter)which,
                    (uint64_t)luaL_optnumber(L, 4, 1));
    return 0;
}

static int core_js_pending(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    double n = luaL_checknumber(L, 3);
    jetstream_set_pending(rt->js, luaL_checkstring(L, 1), luaL_checkstring(L, 2),
                          n > 0 ? (uint64_t)n : 0);
    return 0;
}

static int core_js_stream_state(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    jetstream_stream_state(rt->js, luaL_checkstring(L, 1), lua_toboolean(L, 2));
    return 0;
}

static int core_js_stopping(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushboolean(L, rt->shutting_down || jetstream_stopping(rt->js));
    return 1;
}

static int core_js_has_bus(lua_State *L)
{
    lua_pushboolean(L, mlua_api_runtime(L)->cfg.nats_url != NULL);
    return 1;
}

static int core_js_limits(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushinteger(L, rt->cfg.max_inflight);
    lua_pushinteger(L, sched_inflight(rt->sched));
    return 2;
}

/* ---- pull consumers: messages on a private inbox, taken by waiting tasks ---- */

/* messages that came for no waiter (a waiter gave up): kept for the next one */
#define PULL_QUEUE 1024
#define PULL_MT "microservice.js_pull"

typedef struct js_pull js_pull;

typedef struct pull_wait {
    sched_op base;
    js_wait wait;
    js_pull *pull;
    uv_timer_t timer;
    struct pull_wait *next;
} pull_wait;

struct js_pull {
    runtime *rt;
    nb_sub *sub;
    char inbox[128];        /* where the server sends what the pulls ask for */
    char next[320];         /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> */
    pull_wait *head, *tail; /* waiting tasks, oldest first */
    natsMsg *queue[PULL_QUEUE];
    int qhead, qlen;
    uint64_t dropped;
};

static void wait_free_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Takes w off its pull's list, its timer and the drain's list; frees it with the timer. */
static void wait_end(pull_wait *w)
{
    js_pull *p = w->pull;
    for (pull_wait **q = &p->head, *prev = NULL; *q; prev = *q, q = &(*q)->next) {
        if (*q != w) continue;
        *q = w->next;
        if (p->tail == w) p->tail = prev;
        break;
    }
    jetstream_wait_remove(p->rt->js, &w->wait);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_free_cb);
}

static void pull_wait_cancel(sched_op *op)
{
    wait_end((pull_wait *)op);
}

/* Resumes the task with a status ("timeout", "stopping", or the server's status code). */
static void wait_resume_status(pull_wait *w, const char *status)
{
    lua_State *co = sched_op_target(&w->base);
    wait_end(w);
    if (!co) return;
    lua_pushstring(co, status);
    sched_op_resume(&w->base, 1);
}

static void pull_timeout_cb(uv_timer_t *t)
{
    wait_resume_status(t->data, "timeout");
}

static void pull_wake(js_wait *jw)
{
    pull_wait *w = (pull_wait *)((char *)jw - offsetof(pull_wait, wait));
    wait_resume_status(w, "stopping");
}

/* Pushes "msg", data, headers, reply subject, subject: 5 values. */
static int push_msg(lua_State *co, natsMsg *m)
{
    lua_pushliteral(co, "msg");
    push_body(co, m);
    lua_pushstring(co, natsMsg_GetSubject(m));
    return 5;
}

/* A message or a status for the pull's inbox, on the loop thread. */
static void pull_msg_cb(void *udata, natsMsg *m)
{
    js_pull *p = udata;
    const char *status = NULL;
    natsMsgHeader_Get(m, "Status", &status);
    if (p->head) {
        pull_wait *w = p->head;
        lua_State *co = sched_op_target(&w->base);
        wait_end(w);
        if (co) {
            int n = status ? (lua_pushstring(co, status), 1) : push_msg(co, m);
            nats_bridge_release(p->rt->nats, m);
            sched_op_resume(&w->base, n);
            return;
        }
    }
    if (status || p->qlen == PULL_QUEUE) { /* a full queue: the server redelivers after ack_wait */
        if (!status) p->dropped++;
        nats_bridge_release(p->rt->nats, m);
        return;
    }
    p->queue[(p->qhead + p->qlen++) % PULL_QUEUE] = m;
}

static js_pull *check_pull(lua_State *L)
{
    js_pull **pp = luaL_checkudata(L, 1, PULL_MT);
    if (!*pp) luaL_error(L, "js_pull: closed");
    return *pp;
}

static void pull_close(js_pull *p)
{
    while (p->head)
        wait_resume_status(p->head, "stopping");
    if (p->sub) nb_sub_close(p->sub);
    while (p->qlen) {
        nats_bridge_release(p->rt->nats, p->queue[p->qhead]);
        p->qhead = (p->qhead + 1) % PULL_QUEUE;
        p->qlen--;
    }
    free(p);
}

/* js_pull_open(stream, consumer) -> a pull handle (closed by :close() or when collected). */
static int core_js_pull_open(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *stream = luaL_checkstring(L, 1), *consumer = luaL_checkstring(L, 2);
    js_pull **pp = lua_newuserdata(L, sizeof *pp);
    *pp = NULL;
    luaL_getmetatable(L, PULL_MT);
    lua_setmetatable(L, -2);
    js_pull *p = calloc(1, sizeof *p);
    if (!p) return luaL_error(L, "out of memory");
    p->rt = rt;
    snprintf(p->inbox, sizeof p->inbox, "%s.js.%llu", nats_bridge_inbox(rt->nats),
             (unsigned long long)jetstream_next_id(rt->js));
    snprintf(p->next, sizeof p->next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, consumer);
    p->sub = nats_bridge_subscribe(rt->nats, p->inbox, NULL, pull_msg_cb, p);
    if (!p->sub) {
        char inbox[sizeof p->inbox];
        memcpy(inbox, p->inbox, sizeof inbox);
        free(p);
        return luaL_error(L, "js_pull: cannot subscribe %s", inbox);
    }
    *pp = p;
    return 1;
}

/* pull:next(expires) -> "msg", data, headers, reply, subject | a status ("timeout", "stopping",
 * "unavailable", "408", "409", ...). Takes a message that came for nobody first, else asks the
 * server for one (batch 1, waiting up to expires seconds) and waits a little longer than that. */
static int pull_next(lua_State *L)
{
    js_pull *p = check_pull(L);
    double expires = luaL_optnumber(L, 2, 5.0);
    const char *err;
    if (!sched_current(L, &err)) return luaL_error(L, "%s", err);
    if (jetstream_stopping(p->rt->js)) {
        lua_pushliteral(L, "stopping");
        return 1;
    }
    if (p->qlen) {
        natsMsg *m = p->queue[p->qhead];
        p->qhead = (p->qhead + 1) % PULL_QUEUE;
        p->qlen--;
        int n = push_msg(L, m);
        nats_bridge_release(p->rt->nats, m);
        return n;
    }
    char body[96];
    int len = snprintf(body, sizeof body, "{\"batch\":1,\"expires\":%.0f}", expires * 1e9);
    if (nats_bridge_publish(p->rt->nats, p->next, p->inbox, body, (size_t)len, NULL) != NB_OK) {
        lua_pushliteral(L, "unavailable");
        return 1;
    }
    pull_wait *w = calloc(1, sizeof *w);
    if (!w) return luaL_error(L, "out of memory");
    w->base.cancel = pull_wait_cancel;
    w->pull = p;
    w->wait.wake = pull_wake;
    uv_timer_init(&p->rt->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, pull_timeout_cb, (uint64_t)(expires * 1000.0) + 2000, 0);
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    jetstream_wait_add(p->rt->js, &w->wait);
    return sched_yield_op(L, &w->base);
}

static int pull_gc(lua_State *L)
{
    js_pull **pp = luaL_checkudata(L, 1, PULL_MT);
    if (*pp) pull_close(*pp);
    *pp = NULL;
    return 0;
}

static int pull_dropped(lua_State *L)
{
    lua_pushnumber(L, (double)check_pull(L)->dropped);
    return 1;
}

static void register_pull(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"next", pull_next}, {"close", pull_gc}, {"dropped", pull_dropped}, {NULL, NULL}};
    luaL_newmetatable(L, PULL_MT);
    lua_newtable(L);
    for (const luaL_Reg *f = methods; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, pull_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

void mlua_jetstream_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"js_request", core_js_request},
        {"js_publish", core_js_publish},
        {"js_envelope", core_js_envelope},
        {"js_unenvelope", core_js_unenvelope},
        {"b64decode", core_b64decode},
        {"js_count", core_js_count},
        {"js_pending", core_js_pending},
        {"js_stream_state", core_js_stream_state},
        {"js_stopping", core_js_stopping},
        {"js_limits", core_js_limits},
        {"js_has_bus", core_js_has_bus},
        {"js_pull_open", core_js_pull_open},
        {NULL, NULL},
    };
    register_pull(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
