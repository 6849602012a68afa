/* mlua_error.c: owns the one way the runtime runs Lua under protection and the one format of a Lua
 * error: the message (a Lua error starts with the service's file:line), then the traceback trimmed
 * of the runtime's own frames (C functions and lualib/) so that what remains points at the
 * service's code. Run-time errors (the scheduler, after lua_resume), load-time errors
 * (services), the OpenAPI document and the test runner (microservice.core.traceback) all use it.
 * Application errors (microservice.error values) are values, not failures: they pass through. */
#include "mlua_error.h"

#include <lauxlib.h>
#include <stdbool.h>
#include <string.h>

#include "mlua_api.h"

/* Replaces the traceback on top of L by the same without the runtime's own frames (C functions
 * and lualib/), so that what remains points at the service's code. */
static void trim_traceback(lua_State *L)
{
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *p = tb, *end = tb + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *q = p;
        while (q < line_end && (*q == '\t' || *q == ' '))
            q++;
        bool internal = p != tb && (strncmp(q, "[C]:", 4) == 0 || strncmp(q, "lualib/", 7) == 0 ||
                                    strncmp(q, "(tail call)", 11) == 0);
        if (!internal) luaL_addlstring(&b, p, (size_t)(line_end - p) + (nl ? 1 : 0));
        p = nl ? nl + 1 : end;
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* The error value on top of co as a string: a __tostring result, or a description. */
static const char *error_text(lua_State *co)
{
    if (!lua_isstring(co, -1) && !luaL_callmeta(co, -1, "__tostring"))
        lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, -1));
    if (!lua_isstring(co, -1)) lua_pushstring(co, "(error object has a bad __tostring)");
    return lua_tostring(co, -1);
}

void mlua_push_traceback(lua_State *L, lua_State *co, int level)
{
    luaL_traceback(L, co, error_text(co), level);
    trim_traceback(L);
}

int mlua_traceback(lua_State *L)
{
    if (mlua_api_is_app_error(L, 1)) return 1;
    int level = (int)luaL_optinteger(L, 2, 1);
    lua_settop(L, 1);
    mlua_push_traceback(L, L, level);
    return 1;
}

int mlua_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs; /* the function */
    lua_pushcfunction(L, mlua_traceback);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return rc;
}
