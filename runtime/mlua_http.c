/* mlua_http.c: owns the Lua face of the outbound HTTP client (microservice.core.http_request):
 * checking the options table, turning it into an hc_request (a json table encoded with the
 * project's codec), the waiting operation of the calling task (aborted with its transfer when the
 * task is cancelled), and the response as a Lua table. lualib/microservice_http.lua wraps it. */
#include "mlua_http.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "http_client.h"
#include "mlua_api.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "services.h"

#define MAX_HEADERS 100
#define MAX_FOLLOW 20
#define DEFAULT_MAX_BODY (16 * 1024 * 1024)

/* ---- the response ---- */

/* One "Name: value" line into t (lower-case name; a repeated name's values joined by ", "). */
static void push_header_line(lua_State *L, const char *p, size_t len)
{
    const char *colon = memchr(p, ':', len);
    if (!colon || colon == p) return;
    char name[256];
    size_t nlen = (size_t)(colon - p);
    if (nlen >= sizeof name) return;
    for (size_t i = 0; i < nlen; i++)
        name[i] = (char)tolower((unsigned char)p[i]);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    lua_pushlstring(L, name, nlen);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isstring(L, -1)) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(end - v));
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(end - v));
    }
    lua_rawset(L, -3);
}

/* {status = n, headers = {name = value}, body = "..."} */
static void push_response(lua_State *L, const hc_response *res)
{
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)res->status);
    lua_setfield(L, -2, "status");
    lua_newtable(L);
    const char *p = res->head, *end = res->head + res->head_len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl + 1 : end;
        push_header_line(L, p, (size_t)(line_end - p));
        p = line_end;
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, res->body, res->body_len);
    lua_setfield(L, -2, "body");
}

/* ---- the waiting operation ---- */

typedef struct http_op {
    sched_op base;
    http_xfer *xfer;
} http_op;

static void op_cancel(sched_op *op)
{
    http_op *o = (http_op *)op;
    if (o->xfer) http_client_xfer_abort(o->xfer);
    free(o);
}

/* Resumes with (true, response) or (false, error). */
static void request_done(void *udata, enum hc_status st, const hc_response *res,
                         const char *message)
{
    http_op *o = udata;
    o->xfer = NULL;
    lua_State *co = sched_op_target(&o->base);
    if (!co) {
        free(o);
        return;
    }
    if (st == HC_OK) {
        lua_pushboolean(co, 1);
        push_response(co, res);
    } else {
        lua_pushboolean(co, 0);
        if (st == HC_TIMEOUT)
            mlua_api_push_error(co, URI_TIMEOUT, message);
        else if (st == HC_TOO_LARGE)
            mlua_api_push_error(co, URI_LIMIT_EXCEEDED, message);
        else
            mlua_api_push_error(co, URI_UNAVAILABLE, message);
    }
    sched_op_resume(&o->base, 2);
    free(o);
}

/* ---- the options ---- */

/* Bad options are returned (false, nil, message), for the Lua side to raise at the caller's
 * line. */
static int bad(lua_State *L, const char *fmt, const char *what)
{
    lua_pushboolean(L, 0);
    lua_pushnil(L);
    lua_pushfstring(L, fmt, what);
    return 3;
}

static bool is_token(const char *s, size_t len)
{
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i])) return false;
    return true;
}

static bool is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return false;
    return true;
}

static const char *const OPTION_NAMES[] = {"method", "url",      "headers", "body",
                                           "json",   "timeout",  "verify",  "ca",
                                           "follow", "max_body", NULL};

/* The first key of the options table (idx 1) that is not an option, or NULL. */
static const char *unknown_option(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        bool known = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; OPTION_NAMES[i] && !known; i++)
                known = strcmp(lua_tostring(L, -1), OPTION_NAMES[i]) == 0;
        if (!known) {
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a name)";
            lua_pop(L, 1);
            return k; /* anchored by the options table */
        }
    }
    return NULL;
}

/* Pushes "Name: value" for every entry of the headers table (idx hidx), anchored on the stack;
 * lines[] points into them. Returns how many, or -1 with *why set. */
static int header_lines(lua_State *L, int hidx, const char **lines, bool *has_type, bool *has_trace,
                        const char **why)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
        size_t klen, vlen;
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1)) {
            *why = "headers must map names to strings";
            return -1;
        }
        const char *k = lua_tolstring(L, -2, &klen), *v = lua_tolstring(L, -1, &vlen);
        if (!is_token(k, klen) || !is_field_value(v, vlen)) {
            *why = "a header name must be a token and a value must have no CR, LF or NUL";
            return -1;
        }
        if (n == MAX_HEADERS) {
            *why = "too many headers (at most 100)";
            return -1;
        }
        if (strcasecmp(k, "content-type") == 0) *has_type = true;
        if (strcasecmp(k, TRACE_HEADER) == 0) *has_trace = true;
        lua_pushfstring(L, "%s: %s", k, v);
        lua_insert(L, -3); /* under the key and the value */
        lines[n++] = lua_tostring(L, -3);
        lua_pop(L, 1);
    }
    return n;
}

/* Reads the numbers and flags of the options table. NULL, or what is wrong. */
static const char *read_limits(lua_State *L, hc_request *req)
{
    lua_getfield(L, 1, "timeout");
    req->timeout = lua_isnil(L, -1) ? mlua_api_default_timeout(L) : lua_tonumber(L, -1);
    if (!lua_isnil(L, -1) && !(lua_isnumber(L, -1) && req->timeout > 0))
        return "timeout must be a number of seconds > 0";
    lua_getfield(L, 1, "verify");
    req->verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) return "verify must be true or false";
    lua_getfield(L, 1, "follow");
    req->follow = (int)lua_tointeger(L, -1);
    if (!lua_isnil(L, -1) &&
        !(lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0 && lua_tonumber(L, -1) <= MAX_FOLLOW))
        return "follow must be a number of redirects from 0 to 20";
    lua_getfield(L, 1, "max_body");
    double mb = lua_isnil(L, -1) ? DEFAULT_MAX_BODY : lua_tonumber(L, -1);
    if (!(mb >= 1 && mb <= 1024.0 * 1024 * 1024)) return "max_body must be a number of bytes > 0";
    req->max_body = (size_t)mb;
    lua_getfield(L, 1, "ca");
    req->ca = lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) return "ca must be a file name";
    lua_pop(L, 5);
    return NULL;
}

/* The body (a string, or a json table encoded) pushed on the stack, or nothing. NULL, or what
 * is wrong. */
static const char *read_body(lua_State *L, runtime *rt, hc_request *req, bool *is_json)
{
    lua_getfield(L, 1, "body");
    lua_getfield(L, 1, "json");
    if (!lua_isnil(L, -1) && !lua_isnil(L, -2)) return "give body or json, not both";
    if (!lua_isnil(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) return "body must be a string (or use json = table)";
        lua_pop(L, 1);
        req->body = lua_tolstring(L, -1, &req->body_len);
        return NULL;
    }
    if (!lua_isnil(L, -1)) {
        codec_error err;
        codec_buf *buf = services_scratch(rt->services);
        if (codec_encode(L, lua_gettop(L), buf, rt->cfg.max_depth, &err) != 0) {
            lua_pushfstring(L, "json: %s", err.msg);
            return lua_tostring(L, -1); /* anchored on the stack */
        }
        lua_pushlstring(L, buf->data, buf->len);
        req->body = lua_tolstring(L, -1, &req->body_len);
        *is_json = true;
    }
    return NULL;
}

static const char *read_method(lua_State *L, hc_request *req)
{
    lua_getfield(L, 1, "method");
    if (lua_isnil(L, -1)) {
        req->method = req->body ? "POST" : "GET";
        return NULL;
    }
    size_t len;
    req->method = lua_tolstring(L, -1, &len);
    if (lua_type(L, -1) != LUA_TSTRING || !is_token(req->method, len))
        return "method must be a name such as \"GET\"";
    return NULL;
}

/* http_request(opts) -> true, res | false, err | false, nil, message (bad options) */
static int core_http_request(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    const char *err;
    if (!sched_current(L, &err)) return luaL_error(L, "%s", err);
    if (!lua_istable(L, 1)) return bad(L, "%s", "the options must be a table");
    lua_settop(L, 1);
    const char *key = unknown_option(L);
    if (key) return bad(L, "unknown option '%s'", key);
    hc_request req = {0};
    lua_getfield(L, 1, "url");
    req.url = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING ||
        (strncasecmp(req.url, "http://", 7) != 0 && strncasecmp(req.url, "https://", 8) != 0))
        return bad(L, "%s", "url must be a string starting with http:// or https://");
    const char *why = read_limits(L, &req);
    if (!why) {
        bool is_json = false;
        why = read_body(L, rt, &req, &is_json);
        if (!why) why = read_method(L, &req);
        const char **lines = lua_newuserdata(L, (MAX_HEADERS + 2) * sizeof *lines);
        bool has_type = false, has_trace = false;
        lua_getfield(L, 1, "headers");
        int hidx = lua_gettop(L);
        if (!why && !lua_isnil(L, hidx) && !lua_istable(L, hidx)) why = "headers must be a table";
        lua_checkstack(L, MAX_HEADERS + 8);
        if (!why && lua_istable(L, hidx))
            req.nheaders = header_lines(L, hidx, lines, &has_type, &has_trace, &why);
        if (!why && is_json && !has_type) lines[req.nheaders++] = "Content-Type: application/json";
        if (!why && !has_trace) { /* the call's trace goes on to the API */
            char tp[TRACEPARENT_LEN + 1];
            trace_format(tp, sched_trace_id(sched_current(L, NULL)));
            lines[req.nheaders++] = lua_pushfstring(L, "%s: %s", TRACE_HEADER, tp);
        }
        req.headers = lines;
    }
    if (why) return bad(L, "%s", why);
    http_op *o = calloc(1, sizeof *o);
    if (!o) return luaL_error(L, "out of memory");
    o->base.cancel = op_cancel;
    char msg[256];
    snprintf(msg, sizeof msg, "the service is shutting down");
    o->xfer =
        rt->httpc ? http_client_request(rt->httpc, &req, request_done, o, msg, sizeof msg) : NULL;
    if (!o->xfer) {
        free(o);
        lua_pushboolean(L, 0);
        mlua_api_push_error(L, URI_UNAVAILABLE, msg);
        return 2;
    }
    return sched_yield_op(L, &o->base);
}

void mlua_http_register(lua_State *L)
{
    lua_pushcfunction(L, core_http_request);
    lua_setfield(L, -2, "http_request");
}
