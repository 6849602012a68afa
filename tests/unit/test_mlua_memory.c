/* test_mlua_memory.c: the Lua heap's allocator (runtime/mlua_memory.c): the count matches LuaJIT's,
 * an allocation past the cap fails only inside a resume (LUA_ERRMEM, the state usable after it),
 * admission collects once before it refuses, and the budgets of decoded call arguments. */
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

#include "check.h"
#include "mlua_memory.h"

#define MB (1024 * 1024)

static size_t gc_total(lua_State *L)
{
    return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* Resumes a new coroutine running `code` as the scheduler does; returns lua_resume's code. */
static int resume(mlua_memory *m, lua_State *L, const char *code, const char **msg)
{
    lua_State *co = lua_newthread(L);
    if (luaL_loadstring(co, code) != 0) return -1;
    m->resuming++;
    int rc = lua_resume(co, 0);
    m->resuming--;
    *msg = lua_tostring(co, -1);
    lua_pop(L, 1); /* the thread */
    return rc;
}

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    mlua_memory m;
    memset(&m, 0, sizeof m);
    mlua_memory_attach(&m, L, 8 * MB);
    CHECK(m.used == gc_total(L));
    CHECK(m.cap == 16 * MB);
    CHECK(mlua_memory_admit(&m));

    const char *msg = NULL;
    const char *greedy =
        "local t, c = {}, string.rep('x', 1000) for i = 1, 1e6 do t[i] = c .. i end";
    for (int round = 0; round < 3; round++) {
        int rc = resume(&m, L, greedy, &msg);
        CHECK(rc == LUA_ERRMEM || diag("round %d: rc %d", round, rc));
        CHECK((msg && strcmp(msg, "not enough memory") == 0) || diag("message %s", msg));
        CHECK(m.used <= m.cap);
        CHECK(m.failed_allocs == (uint64_t)round + 1);
        lua_gc(L, LUA_GCCOLLECT, 0);
        CHECK(m.used < 4 * MB);
        CHECK(m.used == gc_total(L));
        CHECK(resume(&m, L, "local t = {} for i = 1, 1000 do t[i] = tostring(i) end return #t",
                     &msg) == 0);
    }

    /* outside a resume nothing fails: 20 MB are kept (a table of strings: a single big string
     * would also leave LuaJIT's string buffer that big, halved at each collection only) */
    CHECK(luaL_dostring(
              L, "held = {} for i = 1, 20000 do held[i] = string.rep('y', 999) .. i end") == 0);
    CHECK(m.used > m.cap);
    lua_settop(L, 0);
    CHECK(!mlua_memory_admit(&m));
    CHECK(m.refused_calls == 1);
    lua_pushnil(L);
    lua_setglobal(L, "held"); /* garbage now: admission collects it and admits */
    CHECK(m.used > m.limit);
    CHECK(mlua_memory_admit(&m));
    CHECK(m.used < m.limit);

    /* the decoded arguments of calls: per call (413) and large ones together (503) */
    CHECK(m.call_cap == MB && m.large_cap == 2 * MB);
    size_t before = m.allocated;
    CHECK(luaL_dostring(L, "local t = {} for i = 1, 1000 do t[i] = {} end") == 0);
    CHECK(m.allocated - before >= 64000); /* counted, frees or not */
    char text[200];
    CHECK(mlua_memory_args_budget(&m) == MB);
    CHECK(mlua_memory_hold_args(&m, MLUA_MEMORY_SMALL_ARGS) == 0); /* small: not counted */
    size_t h1 = mlua_memory_hold_args(&m, MB), h2 = mlua_memory_hold_args(&m, MB / 2);
    CHECK(h1 == MB && h2 == MB / 2 && m.large_held == MB + MB / 2);
    CHECK(mlua_memory_args_budget(&m) == MB / 2); /* the room left */
    CHECK(mlua_memory_refuse_args(&m, MB / 2, text, sizeof text) == 503);
    CHECK(strstr(text, "retry later") != NULL || diag("%s", text));
    CHECK(mlua_memory_hold_args(&m, MB / 2) == MB / 2);
    CHECK(mlua_memory_args_budget(&m) == MLUA_MEMORY_SMALL_ARGS); /* small calls still fit */
    mlua_memory_release_args(&m, h1);
    CHECK(mlua_memory_args_budget(&m) == MB);
    CHECK(mlua_memory_refuse_args(&m, MB, text, sizeof text) == 413);
    CHECK(strstr(text, "too large once decoded") != NULL || diag("%s", text));
    CHECK(m.too_large_calls == 1 && m.large_refusals == 1);
    mlua_memory_release_args(&m, h2);
    mlua_memory_release_args(&m, MB / 2);
    CHECK(m.large_held == 0);

    /* no limit: nothing fails */
    m.limit = m.cap = m.call_cap = m.large_cap = 0;
    CHECK(resume(&m, L,
                 "local t, c = {}, string.rep('x', 1000) for i = 1, 20000 do t[i] = c .. i end",
                 &msg) == 0);
    CHECK(mlua_memory_admit(&m));
    CHECK(mlua_memory_args_budget(&m) == SIZE_MAX);
    CHECK(mlua_memory_hold_args(&m, 100 * MB) == 0);

    mlua_memory_detach(&m);
    lua_close(L);
    return check_summary();
}
