/* mlua_postgres.c: owns the Lua face of the PostgreSQL pool (microservice.core.pg_*): turning Lua
 * arguments into text parameters, rows into Lua tables by column type, SQL errors into error
 * values carrying the SQLSTATE, and the reserved connection of a transaction (released, with a
 * ROLLBACK, if its task ends without COMMIT). lualib/microservice_postgres.lua wraps it. */
#include "mlua_postgres.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "mlua_api.h"
#include "pg_pool.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "services.h"

#define PG_ERROR_MT "microservice.postgres.error"
#define MAX_PARAMS 1000

/* PostgreSQL type OIDs (pg_type.h) that convert to something other than a string. */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
    OID_JSONB = 3802,
};

/* ---- values ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* bytea in hex output format: \x4869 -> "Hi" */
static void push_bytea(lua_State *L, const char *v, size_t len)
{
    if (len < 2 || v[0] != '\\' || v[1] != 'x') {
        lua_pushlstring(L, v, len);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 2; i + 1 < len; i += 2) {
        int hi = hexval(v[i]), lo = hexval(v[i + 1]);
        if (hi < 0 || lo < 0) break;
        luaL_addchar(&b, (char)(hi * 16 + lo));
    }
    luaL_pushresult(&b);
}

/* "2026-11-28 14:30:00.5+00" (DateStyle ISO, TimeZone UTC) -> "2026-11-28T14:30:00.5Z" */
static void push_timestamp(lua_State *L, const char *v, size_t len)
{
    char buf[64];
    if (len >= sizeof buf || len < 19 || v[10] != ' ') {
        lua_pushlstring(L, v, len);
        return;
    }
    memcpy(buf, v, len);
    buf[10] = 'T';
    if (len > 3 && strcmp(v + len - 3, "+00") == 0) {
        buf[len - 3] = 'Z';
        len -= 2;
    } else if (len > 3 && (v[len - 3] == '+' || v[len - 3] == '-')) {
        memcpy(buf + len, ":00", 3); /* +05 -> +05:00 */
        len += 3;
    }
    lua_pushlstring(L, buf, len);
}

static void push_int8(lua_State *L, const char *v, size_t len)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    const long long limit = 9007199254740992LL; /* 2^53: beyond it a double is not exact */
    if (n >= -limit && n <= limit)
        lua_pushnumber(L, (lua_Number)n);
    else
        lua_pushlstring(L, v, len);
}

static void push_value(lua_State *L, const PGresult *r, int row, int col, int max_depth)
{
    if (PQgetisnull(r, row, col)) {
        lua_pushlightuserdata(L, NULL);
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    size_t len = (size_t)PQgetlength(r, row, col);
    switch (PQftype(r, col)) {
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        break;
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
        lua_pushnumber(L, strtod(v, NULL));
        break;
    case OID_INT8:
        push_int8(L, v, len);
        break;
    case OID_BYTEA:
        push_bytea(L, v, len);
        break;
    case OID_TIMESTAMP:
    case OID_TIMESTAMPTZ:
        push_timestamp(L, v, len);
        break;
    case OID_JSON:
    case OID_JSONB: {
        codec_error err;
        if (codec_decode(L, v, len, max_depth, &err) != 0) lua_pushlstring(L, v, len);
        break;
    }
    default: /* text, varchar, uuid, numeric (exact as a string), date, arrays... */
        lua_pushlstring(L, v, len);
    }
}

/* Pushes rows (an array of tables keyed by column name) and the affected-row count. The column
 * names are made Lua strings once, on the stack below the rows, not once per row (PostgreSQL's
 * 1,664 columns at most fit LuaJIT's stack; if it cannot grow, names are made per row). */
static void push_result(lua_State *L, const PGresult *r, int max_depth)
{
    int nrows = PQntuples(r), ncols = PQnfields(r);
    bool once = ncols > 0 && lua_checkstack(L, ncols + 8);
    int names = lua_gettop(L) + 1;
    for (int c = 0; once && c < ncols; c++)
        lua_pushstring(L, PQfname(r, c));
    lua_createtable(L, nrows, 0);
    luaL_getmetatable(L, CODEC_ARRAY_MT);
    lua_setmetatable(L, -2);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int c = 0; c < ncols; c++) {
            if (!once) {
                push_value(L, r, i, c, max_depth);
                lua_setfield(L, -2, PQfname(r, c));
                continue;
            }
            lua_pushvalue(L, names + c);
            push_value(L, r, i, c, max_depth);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, i + 1);
    }
    if (once) { /* the rows take the first name's slot; the other names go */
        lua_replace(L, names);
        lua_settop(L, names);
    }
    const char *affected = PQcmdTuples((PGresult *)r);
    lua_pushnumber(L, affected[0] ? strtod(affected, NULL) : nrows);
}

/* {sqlstate=, message=, detail=, hint=} with a __tostring that shows SQLSTATE and message only. */
static void push_sql_error(lua_State *L, const PGresult *r, const char *fallback)
{
    lua_createtable(L, 0, 4);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    lua_pushstring(L, state ? state : "XX000");
    lua_setfield(L, -2, "sqlstate");
    lua_pushstring(L, msg ? msg : (fallback ? fallback : "unknown database error"));
    lua_setfield(L, -2, "message");
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (detail) {
        lua_pushstring(L, detail);
        lua_setfield(L, -2, "detail");
    }
    luaL_getmetatable(L, PG_ERROR_MT);
    lua_setmetatable(L, -2);
}

static int pg_error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "sqlstate");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "postgres error %s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
    return 1;
}

/* ---- the waiting operation ---- */

typedef struct pg_op {
    sched_op base;
    pg_job *job;
    runtime *rt;
    bool done;         /* finished before the task could yield */
    pg_conn *conn;     /* a reservation granted before the task could yield */
    char message[200]; /* why, when it did */
} pg_op;

static void op_cancel(sched_op *op)
{
    pg_op *o = (pg_op *)op;
    if (o->job) pg_pool_job_abandon(o->job);
    free(o);
}

/* Pushes (false, wamp.error.unavailable with message); returns 2. */
static int push_unavailable(lua_State *L, const char *message)
{
    lua_pushboolean(L, 0);
    mlua_api_push_error(L, URI_UNAVAILABLE, message);
    return 2;
}

/* The one start of both completion handlers: marks o answered and returns the coroutine to
 * resume, or NULL when the pool answered before the task could yield (a failure, or a free
 * connection): the yielding side then reads o itself, and why is kept for it. */
static lua_State *op_answered(pg_op *o, const char *why)
{
    o->job = NULL;
    o->done = true;
    lua_State *co = sched_op_target(&o->base);
    if (!co)
        snprintf(o->message, sizeof o->message, "%s", why ? why : "the database is unavailable");
    return co;
}

/* The one end: resumes the task with the n values pushed on its coroutine; o is gone after. */
static void op_resume(pg_op *o, int n)
{
    sched_op_resume(&o->base, n);
    free(o);
}

/* Resumes with (true, rows, count) or (false, error). */
static void query_done(void *udata, enum pg_status st, PGresult *res, const char *message)
{
    pg_op *o = udata;
    lua_State *co =
        op_answered(o, res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : message);
    if (co && st == PG_OK) {
        lua_pushboolean(co, 1);
        push_result(co, res, o->rt->cfg.max_depth);
        op_resume(o, 3);
    } else if (co && st == PG_SQL_ERROR) {
        lua_pushboolean(co, 0);
        push_sql_error(co, res, message);
        op_resume(o, 2);
    } else if (co) {
        op_resume(o, push_unavailable(co, message));
    }
    if (res) PQclear(res);
}

static pg_pool *pool_of(lua_State *L, runtime **rtp)
{
    runtime *rt = mlua_api_runtime(L);
    *rtp = rt;
    return rt->pg;
}

/* Replaces the argument at idx with its parameter text (a string), or nil for SQL NULL: nil and
 * null are NULL, booleans and numbers their text, strings themselves, tables their JSON. Raises
 * before anything is allocated, so a bad argument leaks nothing. */
static void param_to_text(lua_State *L, int idx, runtime *rt)
{
    char buf[32];
    int n;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TSTRING:
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL) break;
        lua_pushnil(L);
        lua_replace(L, idx);
        return;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        lua_replace(L, idx);
        return;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (d == (double)(long long)d && d > -9.2e18 && d < 9.2e18)
            n = snprintf(buf, sizeof buf, "%lld", (long long)d);
        else
            n = snprintf(buf, sizeof buf, "%.17g", d);
        lua_pushlstring(L, buf, (size_t)n);
        lua_replace(L, idx);
        return;
    }
    case LUA_TTABLE: {
        codec_error err;
        codec_buf *json = services_scratch(rt->services);
        if (codec_encode(L, idx, json, rt->cfg.max_depth, &err) != 0)
            luaL_error(L, "parameter $%d: %s", idx - 2, err.msg);
        lua_pushlstring(L, json->data, json->len);
        lua_replace(L, idx);
        return;
    }
    }
    luaL_error(L, "parameter $%d: cannot send a %s to PostgreSQL", idx - 2, luaL_typename(L, idx));
}

/* The end of a pg_* function: the failure it already had, or a yield until the pool answers. */
static int yield_unless_done(lua_State *L, pg_op *o)
{
    if (o->done) {
        push_unavailable(L, o->message);
        free(o);
        return 2;
    }
    return sched_yield_op(L, &o->base);
}

/* pg_query(conn_or_nil, sql, ...) -> true, rows, count | false, err */
static int core_pg_query(lua_State *L)
{
    runtime *rt;
    pg_pool *p = pool_of(L, &rt);
    pg_conn *conn = lua_touserdata(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    const char *err;
    if (!sched_current(L, &err)) return luaL_error(L, "%s", err);
    if (!p) return push_unavailable(L, "no database is configured (--postgres or DATABASE_URL)");
    int nparams = lua_gettop(L) - 2;
    if (nparams > MAX_PARAMS) return luaL_error(L, "too many parameters (%d)", nparams);
    for (int i = 0; i < nparams; i++)
        param_to_text(L, i + 3, rt);
    /* arrays on the Lua stack (collected with it); the pool copies what they point to */
    size_t n = nparams > 0 ? (size_t)nparams : 1;
    const char **vals = lua_newuserdata(L, n * sizeof *vals);
    size_t *lens = lua_newuserdata(L, n * sizeof *lens);
    int *formats = lua_newuserdata(L, n * sizeof *formats);
    for (int i = 0; i < nparams; i++) {
        vals[i] = lua_tolstring(L, i + 3, &lens[i]); /* NULL for nil: SQL NULL */
        /* bytes that are not UTF-8 go in binary format: a bytea takes them as they are (a
         * text column refuses them either way) */
        formats[i] = vals[i] && !codec_utf8_valid(vals[i], lens[i]);
    }
    pg_op *o = calloc(1, sizeof *o);
    if (!o) return luaL_error(L, "out of memory");
    o->base.cancel = op_cancel;
    o->rt = rt;
    /* a synchronous failure runs query_done before the yield: it then only records it */
    o->job = pg_pool_query(p, conn, sql, nparams, vals, lens, formats, query_done, o);
    return yield_unless_done(L, o);
}

/* ---- transactions ---- */

static void release_on_task_end(void *arg)
{
    pg_conn *conn = arg;
    /* the task ended inside a transaction (cancelled): roll back and give the connection back */
    pg_pool_release_rollback(conn);
}

static void reserve_done(void *udata, enum pg_status st, pg_conn *conn, const char *message)
{
    pg_op *o = udata;
    lua_State *co = op_answered(o, message ? message : "unavailable");
    if (!co) {
        o->conn = conn;
        return;
    }
    if (st != PG_OK) {
        op_resume(o, push_unavailable(co, message));
        return;
    }
    sched_set_finalizer(o->base.task, release_on_task_end, conn);
    lua_pushboolean(co, 1);
    lua_pushlightuserdata(co, conn);
    op_resume(o, 2);
}

/* pg_reserve() -> true, conn | false, err (the caller then sends BEGIN on conn) */
static int core_pg_reserve(lua_State *L)
{
    runtime *rt;
    pg_pool *p = pool_of(L, &rt);
    const char *err;
    if (!sched_current(L, &err)) return luaL_error(L, "%s", err);
    if (!p) return push_unavailable(L, "no database is configured (--postgres or DATABASE_URL)");
    pg_op *o = calloc(1, sizeof *o);
    if (!o) return luaL_error(L, "out of memory");
    o->base.cancel = op_cancel;
    o->rt = rt;
    o->job = pg_pool_reserve(p, reserve_done, o);
    if (o->done && o->conn) {
        sched_set_finalizer(sched_current(L, NULL), release_on_task_end, o->conn);
        lua_pushboolean(L, 1);
        lua_pushlightuserdata(L, o->conn);
        free(o);
        return 2;
    }
    return yield_unless_done(L, o);
}

/* pg_release(conn): after COMMIT or ROLLBACK. */
static int core_pg_release(lua_State *L)
{
    pg_conn *conn = lua_touserdata(L, 1);
    task *t = sched_current(L, NULL);
    if (t) sched_set_finalizer(t, NULL, NULL);
    if (conn) pg_pool_release(conn);
    return 0;
}

static int core_pg_state(lua_State *L)
{
    runtime *rt;
    pg_pool *p = pool_of(L, &rt);
    lua_pushstring(L, pg_pool_state(p));
    return 1;
}

void mlua_postgres_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"pg_query", core_pg_query},
        {"pg_reserve", core_pg_reserve},
        {"pg_release", core_pg_release},
        {"pg_state", core_pg_state},
        {NULL, NULL},
    };
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    luaL_newmetatable(L, PG_ERROR_MT);
    lua_pushcfunction(L, pg_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_setfield(L, -2, "pg_error_mt");
}
