/* test_lua_memory.c: the Lua heap's allocator (runtime/lua_memory.c): the count matches LuaJIT's,
 * an allocation past the cap fails only inside a resume (LUA_ERRMEM, the state usable after it),
 * and admission collects once before it refuses. */
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

#include "check.h"
#include "lua_memory.h"

#define MB (1024 * 1024)

static size_t gc_total(lua_State *L)
{
    return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* Resumes a new coroutine running `code` as the scheduler does; returns lua_resume's code. */
static int resume(lua_memory *m, lua_State *L, const char *code, const char **msg)
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
    lua_memory m;
    memset(&m, 0, sizeof m);
    lua_memory_attach(&m, L, 8 * MB);
    CHECK(m.used == gc_total(L));
    CHECK(m.cap == 16 * MB);
    CHECK(lua_memory_admit(&m));

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
    CHECK(!lua_memory_admit(&m));
    CHECK(m.refused_calls == 1);
    lua_pushnil(L);
    lua_setglobal(L, "held"); /* garbage now: admission collects it and admits */
    CHECK(m.used > m.limit);
    CHECK(lua_memory_admit(&m));
    CHECK(m.used < m.limit);

    /* no limit: nothing fails */
    m.limit = m.cap = 0;
    CHECK(resume(&m, L,
                 "local t, c = {}, string.rep('x', 1000) for i = 1, 20000 do t[i] = c .. i end",
                 &msg) == 0);
    CHECK(lua_memory_admit(&m));

    lua_memory_detach(&m);
    lua_close(L);
    return check_summary();
}
