/* mlua_api.c: owns the Lua state's set-up and the C side of the Lua API (microservice.core):
 * sleep, call, publish, subscribe, spawn, log, json, context. lualib/microservice.lua wraps these
 * into the public API; this file and services.c are the whole C<->Lua boundary.
 *
 * Waiting functions (sleep, call) follow the cosocket pattern: they start the I/O, record a
 * sched_op and yield; the I/O callback pushes the results and resumes through the scheduler. */
#include "mlua_api.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "codec.h"
#include "local_dispatch.h"
#include "log.h"
#include "mlua_error.h"
#include "mlua_http.h"
#include "mlua_jetstream.h"
#include "mlua_postgres.h"
#include "mlua_testing.h"
#include "lualib_embedded.h"
#include "nats_bridge.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "services.h"
#include "timers.h"

int luaopen_cjson(lua_State *L); /* from liblua5.1-cjson.a */

static const char RUNTIME_KEY = 0; /* registry key (its address) for the runtime pointer */

runtime *mlua_api_runtime(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&RUNTIME_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    runtime *rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
}

bool mlua_api_is_table_of(lua_State *L, int idx, const char *mt)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return false;
    luaL_getmetatable(L, mt);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

bool mlua_api_is_app_error(lua_State *L, int idx)
{
    return mlua_api_is_table_of(L, idx, MS_ERROR_MT);
}

void mlua_api_push_error_code(lua_State *L, const char *uri, const char *message, int code)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, uri);
    lua_setfield(L, -2, "uri");
    lua_createtable(L, 1, 0);
    luaL_getmetatable(L, CODEC_ARRAY_MT);
    lua_setmetatable(L, -2);
    lua_pushstring(L, message);
    lua_rawseti(L, -2, 1);
    lua_setfield(L, -2, "args");
    lua_newtable(L);
    lua_setfield(L, -2, "kwargs");
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    luaL_getmetatable(L, MS_ERROR_MT);
    lua_setmetatable(L, -2);
}

void mlua_api_push_error(lua_State *L, const char *uri, const char *message)
{
    mlua_api_push_error_code(L, uri, message, rpc_error_code(uri));
}

double mlua_api_default_timeout(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    double t = rt->cfg.call_timeout;
    task *tk = sched_current(L, NULL);
    if (tk && tk->deadline) {
        uint64_t now = uv_now(&rt->loop);
        double left = tk->deadline > now ? (double)(tk->deadline - now) / 1000.0 : 0.001;
        if (left < t) t = left;
    }
    return t;
}

/* ---- sleep ---- */

typedef struct sleep_op {
    sched_op base;
    uv_timer_t timer;
} sleep_op;

static void sleep_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void sleep_cancel(sched_op *op)
{
    sleep_op *s = (sleep_op *)op;
    uv_close((uv_handle_t *)&s->timer, sleep_free_cb);
}

static void sleep_done_cb(uv_timer_t *timer)
{
    sleep_op *s = timer->data;
    uv_close((uv_handle_t *)&s->timer, sleep_free_cb);
    if (sched_op_target(&s->base)) sched_op_resume(&s->base, 0);
}

static int core_sleep(lua_State *L)
{
    double seconds = luaL_checknumber(L, 1);
    if (!(seconds >= 0)) return luaL_argerror(L, 1, "seconds must be a number >= 0");
    if (seconds < 0.0005) return sched_yield_turn(L); /* sleep(0): the next turn of the loop */
    runtime *rt = mlua_api_runtime(L);
    sleep_op *s = calloc(1, sizeof *s);
    if (!s) return luaL_error(L, "out of memory");
    s->base.cancel = sleep_cancel;
    uv_timer_init(&rt->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, sleep_done_cb, (uint64_t)(seconds * 1000.0 + 0.5), 0);
    return sched_yield_op(L, &s->base);
}

/* ---- call ---- */

typedef struct call_op {
    sched_op base;
    rpc_handle handle; /* in-process or over NATS (local_dispatch.h) */
    runtime *rt;
} call_op;

static void call_cancel(sched_op *op)
{
    call_op *c = (call_op *)op;
    local_dispatch_cancel(c->rt, &c->handle);
    free(c);
}

/* A reply is decoded outside a resume too (before the caller's coroutine goes on): bounded as the
 * arguments of a call are, by --max-call-memory (mlua_memory.c). */
static codec_meter reply_meter(runtime *rt)
{
    codec_meter meter = {&rt->lua_mem.allocated,
                         rt->lua_mem.call_cap ? rt->lua_mem.call_cap : SIZE_MAX};
    return meter;
}

/* Turns an error reply's body {"error": uri, "args": [...], "kwargs": {...}} into an error value
 * (a body too large once decoded: the error header's text alone). */
static void push_remote_error(lua_State *co, runtime *rt, const nb_reply *reply)
{
    const char *code_text = nb_reply_header(reply, HDR_SERVICE_ERROR_CODE);
    int code = code_text ? atoi(code_text) : 500;
    codec_error err;
    codec_meter meter = reply_meter(rt);
    if (codec_decode_metered(co, reply->data, reply->len, rt->cfg.max_depth, &meter, &err) == 0) {
        if (lua_istable(co, -1)) {
            lua_getfield(co, -1, "error");
            if (lua_type(co, -1) == LUA_TSTRING) {
                lua_setfield(co, -2, "uri");
                lua_pushinteger(co, code);
                lua_setfield(co, -2, "code");
                luaL_getmetatable(co, MS_ERROR_MT);
                lua_setmetatable(co, -2);
                return;
            }
            lua_pop(co, 1);
        }
        lua_pop(co, 1);
    }
    const char *text = nb_reply_header(reply, HDR_SERVICE_ERROR);
    mlua_api_push_error_code(co, URI_RUNTIME_ERROR, text ? text : "malformed error reply", code);
}

static void call_reply_cb(void *udata, enum nb_status status, const nb_reply *reply)
{
    call_op *c = udata;
    c->handle.bus = NULL;
    c->handle.local = NULL;
    lua_State *co = sched_op_target(&c->base);
    if (!co) {
        free(c);
        return;
    }
    int nret = 2;
    if (status == NB_OK && nb_reply_header(reply, HDR_SERVICE_ERROR_CODE)) {
        lua_pushboolean(co, 0);
        push_remote_error(co, c->rt, reply);
    } else if (status == NB_OK) {
        codec_error err;
        codec_meter meter = reply_meter(c->rt);
        lua_pushboolean(co, 1);
        int rc = codec_decode_envelope_metered(co, reply->data, reply->len, c->rt->cfg.max_depth,
                                               &meter, &err);
        if (rc == 0) {
            nret = 3;
        } else {
            char text[sizeof err.msg + 8];
            snprintf(text, sizeof text, "%s%s", rc == CODEC_TOO_LARGE ? "reply " : "", err.msg);
            lua_pop(co, 1);
            lua_pushboolean(co, 0);
            mlua_api_push_error(co, URI_RUNTIME_ERROR, text);
        }
    } else {
        lua_pushboolean(co, 0);
        switch (status) {
        case NB_NO_RESPONDERS:
            mlua_api_push_error(co, URI_NO_SUCH_PROCEDURE, "no service answers this procedure");
            break;
        case NB_TIMEOUT:
            mlua_api_push_error(co, URI_TIMEOUT, "no reply within the call timeout");
            break;
        default:
            mlua_api_push_error(co, URI_UNAVAILABLE, "the bus is unavailable");
        }
    }
    sched_op_resume(&c->base, nret);
    free(c);
}

/* Encodes args (idx a) and kwargs (idx k) as an envelope into the shared buffer, or raises. */
static codec_buf *encode_envelope_arg(lua_State *L, runtime *rt, int a, int k)
{
    codec_buf *buf = services_scratch(rt->services);
    codec_error err;
    if (codec_encode_envelope(L, lua_isnoneornil(L, a) ? 0 : a, lua_isnoneornil(L, k) ? 0 : k, buf,
                              rt->cfg.max_depth, &err) != 0) {
        luaL_error(L, "cannot encode the arguments: %s", err.msg);
        return NULL;
    }
    return buf;
}

static int core_call(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *procedure = luaL_checkstring(L, 1);
    /* without a timeout: the caller's time left (so the callee gives up when we do) */
    double timeout = lua_isnoneornil(L, 4) ? mlua_api_default_timeout(L) : luaL_checknumber(L, 4);
    bool allow_local = lua_isnoneornil(L, 5) || lua_toboolean(L, 5); /* opts["local"] */
    const char *err;
    task *t = sched_current(L, &err);
    if (!t) return luaL_error(L, "%s", err);
    codec_buf *buf = encode_envelope_arg(L, rt, 2, 3);
    call_op *c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "out of memory");
    c->base.cancel = call_cancel;
    c->rt = rt;
    /* a call made on behalf of an authenticated caller carries the caller on */
    char traceparent[TRACEPARENT_LEN + 1];
    trace_format(traceparent, sched_trace_id(t)); /* the trace goes on */
    const char *headers[] = {TRACE_HEADER, traceparent, NULL};
    int rc = local_dispatch_start(rt, allow_local, procedure, buf->data, buf->len, headers,
                                  t->authid, t->authrole, timeout, call_reply_cb, c, &c->handle);
    if (rc != NB_OK) {
        free(c);
        lua_pushboolean(L, 0);
        mlua_api_push_error(L, URI_UNAVAILABLE, "the bus is unavailable");
        return 2;
    }
    return sched_yield_op(L, &c->base);
}

/* ---- publish ---- */

static int core_publish(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *subject = luaL_checkstring(L, 1);
    codec_buf *buf = encode_envelope_arg(L, rt, 2, 3);
    task *t = sched_current(L, NULL);
    char traceparent[TRACEPARENT_LEN + 1];
    const char *headers[] = {TRACE_HEADER, traceparent, NULL};
    if (t) trace_format(traceparent, sched_trace_id(t));
    int rc = nats_bridge_publish(rt->nats, subject, NULL, buf->data, buf->len, t ? headers : NULL);
    if (rc != NB_OK) {
        mlua_api_push_error(L, URI_UNAVAILABLE, "the bus is unavailable");
        return lua_error(L);
    }
    return 0;
}

/* ---- subscribe, spawn ---- */

static int core_subscribe(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *subject = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    const char *queue = luaL_optstring(L, 3, NULL);
    lua_pushvalue(L, 2);
    int id = services_subscribe(rt->services, L, subject, queue);
    if (id < 0) return luaL_error(L, "cannot subscribe %s", subject);
    lua_pushinteger(L, id);
    return 1;
}

static int core_unsubscribe(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushboolean(L, services_unsubscribe(rt->services, (int)luaL_checkinteger(L, 1)) == 0);
    return 1;
}

static int core_spawn(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (services_spawn(rt->services, L, 1, lua_gettop(L) - 1) != 0)
        return luaL_error(L, "cannot spawn: out of memory");
    return 0;
}

/* ---- timers ---- */

/* timer_start(seconds, fn, repeat) -> id. Owned by the script loading now, else by the script
 * that defines fn (so that a reload of that script cancels it). */
static int core_timer_start(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    double seconds = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    bool repeat = lua_toboolean(L, 3);
    if (!(seconds >= (repeat ? 0.001 : 0)) || seconds > 1e9)
        return luaL_argerror(
            L, 1, repeat ? "seconds must be a number >= 0.001" : "seconds must be a number >= 0");
    unsigned gen = 0;
    const char *file = services_loading(rt->services, &gen);
    lua_Debug ar;
    if (!file) {
        lua_pushvalue(L, 2);
        if (lua_getinfo(L, ">S", &ar) && ar.source[0] == '@') {
            file = ar.source + 1;
            gen = 0; /* made by a running version: goes at the script's next load */
        }
    }
    lua_pushvalue(L, 2);
    char err[128];
    int id = timers_start(rt->timers, L, seconds, repeat, file, gen, err, sizeof err);
    if (id < 0) return luaL_error(L, "%s", err);
    lua_pushinteger(L, id);
    return 1;
}

static int core_timer_cancel(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushboolean(L, timers_cancel(rt->timers, (int)luaL_checkinteger(L, 1)));
    return 1;
}

/* timer_stats(id) -> runs, skipped | nil (no longer active) */
static int core_timer_stats(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    uint64_t runs, skipped;
    if (!timers_stats(rt->timers, (int)luaL_checkinteger(L, 1), &runs, &skipped)) return 0;
    lua_pushnumber(L, (lua_Number)runs);
    lua_pushnumber(L, (lua_Number)skipped);
    return 2;
}

/* ---- log, json, context ---- */

static int core_log(lua_State *L)
{
    int level = log_level_parse(luaL_checkstring(L, 1));
    const char *msg = luaL_checkstring(L, 2);
    if (level < 0) level = LOG_INFO;
    task *t = lua_getexdata(L);
    if ((int)log_get_level() > level) return 0;
    if (t && t->on_done)
        log_msg(level, sched_log_tag(t), "%s" SCHED_TRACE_FMT, msg, sched_trace_id(t));
    else
        log_msg(level, "lua", "%s", msg);
    return 0;
}

static int core_json_encode(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    luaL_checkany(L, 1);
    codec_buf *buf = services_scratch(rt->services);
    codec_error err;
    if (codec_encode(L, 1, buf, rt->cfg.max_depth, &err) != 0)
        return luaL_error(L, "json.encode: %s", err.msg);
    lua_pushlstring(L, buf->data, buf->len);
    return 1;
}

static int core_json_decode(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    codec_error err;
    if (codec_decode(L, s, len, rt->cfg.max_depth, &err) != 0)
        return luaL_error(L, "json.decode: %s", err.msg);
    return 1;
}

static int core_context(lua_State *L)
{
    task *t = sched_current(L, NULL);
    lua_createtable(L, 0, 2);
    if (t && t->label) {
        lua_pushstring(L, t->label);
        lua_setfield(L, -2, "procedure");
    }
    lua_pushboolean(L, t != NULL);
    lua_setfield(L, -2, "in_task");
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_setfield(L, -2, "pid");
    if (t) {
        lua_pushstring(L, sched_trace_id(t));
        lua_setfield(L, -2, "trace_id");
    }
    if (t && t->authid) {
        lua_pushstring(L, t->authid);
        lua_setfield(L, -2, "authid");
        lua_pushstring(L, t->authrole);
        lua_setfield(L, -2, "authrole");
    }
    if (t && t->deadline) {
        runtime *rt = mlua_api_runtime(L);
        uint64_t now = uv_now(&rt->loop);
        lua_pushnumber(L, t->deadline > now ? (double)(t->deadline - now) / 1000.0 : 0.0);
        lua_setfield(L, -2, "timeout_left");
    }
    return 1;
}

/* bind(procedure, args, kwargs) -> fn, bound arguments...: an in-process call's binding. */
static int core_bind(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *procedure = luaL_checkstring(L, 1);
    lua_settop(L, 3);
    if (lua_isnil(L, 2)) {
        lua_newtable(L);
        lua_replace(L, 2);
    }
    if (lua_isnil(L, 3)) {
        lua_newtable(L);
        lua_replace(L, 3);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *uri = NULL;
    char err[256];
    int n = services_bind(rt->services, L, procedure, 2, 3, &uri, err, sizeof err);
    if (n < 0) {
        mlua_api_push_error(L, uri, err);
        return lua_error(L);
    }
    return n;
}

/* bus_connected() -> true when NATS is connected, or when there is no bus to wait for */
static int core_bus_connected(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushboolean(L, !rt->cfg.nats_url || nats_bridge_connected(rt->nats));
    return 1;
}

static int core_services_starting(lua_State *L)
{
    lua_pushinteger(L, services_starting(mlua_api_runtime(L)->services));
    return 1;
}

static int core_now(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushnumber(L, (double)uv_now(&rt->loop) / 1000.0);
    return 1;
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "uri");
    lua_getfield(L, 1, "args");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        if (lua_isstring(L, -1)) {
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -3), lua_tostring(L, -1));
            return 1;
        }
    }
    lua_pushstring(L, lua_isstring(L, 2) ? lua_tostring(L, 2) : "error");
    return 1;
}

static int open_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sleep", core_sleep},
        {"call", core_call},
        {"publish", core_publish},
        {"subscribe", core_subscribe},
        {"unsubscribe", core_unsubscribe},
        {"spawn", core_spawn},
        {"timer_start", core_timer_start},
        {"timer_cancel", core_timer_cancel},
        {"timer_stats", core_timer_stats},
        {"log", core_log},
        {"json_encode", core_json_encode},
        {"json_decode", core_json_decode},
        {"context", core_context},
        {"now", core_now},
        {"bus_connected", core_bus_connected},
        {"services_starting", core_services_starting},
        {"bind", core_bind},
        {"traceback", mlua_traceback},
        {NULL, NULL},
    };
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    luaL_getmetatable(L, CODEC_ARRAY_MT);
    lua_setfield(L, -2, "array_mt");
    luaL_getmetatable(L, MS_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    luaL_getmetatable(L, MS_RPC_MT);
    lua_setfield(L, -2, "rpc_mt");
    mlua_postgres_register(L);
    mlua_http_register(L);
    mlua_jetstream_register(L);
    mlua_testing_register(L);
    return 1;
}

/* package.preload loader for an embedded lualib module (upvalue: its index). */
static int load_embedded(lua_State *L)
{
    const struct lualib_module *m = &lualib_modules[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbuffer(L, m->source, m->len, m->chunkname) != 0) return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

static void register_preloads(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "microservice.core");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    for (int i = 0; lualib_modules[i].name; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, lualib_modules[i].name);
    }
    lua_pop(L, 2);
}

lua_State *mlua_api_new_state(runtime *rt)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    lua_pushlightuserdata(L, (void *)&RUNTIME_KEY);
    lua_pushlightuserdata(L, rt);
    lua_rawset(L, LUA_REGISTRYINDEX);
    codec_init(L);
    luaL_newmetatable(L, MS_ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, MS_RPC_MT);
    lua_pop(L, 1);
    register_preloads(L);
    return L;
}
