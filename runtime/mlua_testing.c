/* mlua_testing.c: owns the test-only functions of microservice.core, used by the test runner
 * (lualib/microservice_test.lua) for in-process calls:
 *
 *   core.set_label(procedure | token) -> token   the current task's label (what
 *       microservice.context().procedure and the logs show) becomes the loaded RPC's name, so a
 *       call run in the caller's coroutine looks to the RPC as a real call does; returns the
 *       previous label as a token (light userdata, or nil) to put back the same way. Raises when
 *       no loaded service declares the procedure.
 *   core.has_rpc(procedure) -> boolean  whether a loaded service declares it */
#include "mlua_testing.h"

#include <lauxlib.h>

#include "mlua_api.h"
#include "scheduler.h"
#include "services.h"

static int core_set_label(lua_State *L)
{
    const char *err;
    task *t = sched_current(L, &err);
    if (!t) return luaL_error(L, "%s", err);
    const char *label = NULL;
    if (lua_type(L, 1) == LUA_TSTRING) {
        runtime *rt = mlua_api_runtime(L);
        label = services_procedure_name(rt->services, lua_tostring(L, 1));
        if (!label) return luaL_error(L, "no loaded service declares %s", lua_tostring(L, 1));
    } else if (lua_type(L, 1) == LUA_TLIGHTUSERDATA) {
        label = lua_touserdata(L, 1);
    } else if (!lua_isnoneornil(L, 1)) {
        return luaL_argerror(L, 1, "a procedure or a token of set_label");
    }
    if (t->label)
        lua_pushlightuserdata(L, (void *)t->label);
    else
        lua_pushnil(L);
    t->label = label;
    return 1;
}

static int core_has_rpc(lua_State *L)
{
    runtime *rt = mlua_api_runtime(L);
    lua_pushboolean(L, services_procedure_name(rt->services, luaL_checkstring(L, 1)) != NULL);
    return 1;
}

void mlua_testing_register(lua_State *L)
{
    lua_pushcfunction(L, core_set_label);
    lua_setfield(L, -2, "set_label");
    lua_pushcfunction(L, core_has_rpc);
    lua_setfield(L, -2, "has_rpc");
}
