/* lua_memory.c: owns the accounting of the Lua heap and the --max-lua-memory policies.
 *
 * The allocator wraps LuaJIT's own (lua_getallocf/lua_setallocf), so the arena and its speed stay
 * the same; it keeps the bytes in use, which is exactly LuaJIT's gc.total. Two policies:
 *   - admission: before a new call starts, a heap over the limit gets one full collection; if it
 *     is still over, the call is refused (wamp.error.unavailable, 503) and nothing runs;
 *   - cap: while the scheduler resumes a coroutine, an allocation that would take the heap past
 *     twice the limit fails. LuaJIT then raises "not enough memory" inside that coroutine: the call
 *     ends with an error and the state stays usable. Twice, because the incremental collector
 *     lets garbage grow to twice the live heap (pause 200%) before a cycle completes.
 * Outside a resume (C code pushing values with no protected call around it) an allocation never
 * fails: LuaJIT would call the panic function and the process would end. */
#include "lua_memory.h"

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_memory *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize > old && m->resuming > 0 && m->cap && m->used + (nsize - old) > m->cap) {
        m->failed_allocs++;
        return NULL;
    }
    void *p = m->base(m->base_ud, ptr, osize, nsize);
    if (p || nsize == 0) m->used = m->used - old + nsize;
    return p;
}

void lua_memory_attach(lua_memory *m, lua_State *L, size_t limit)
{
    m->base = lua_getallocf(L, &m->base_ud);
    m->L = L;
    m->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    m->limit = limit;
    m->cap = limit * 2;
    m->resuming = 0;
    lua_setallocf(L, counting_alloc, m);
}

void lua_memory_detach(lua_memory *m)
{
    if (!m->L) return;
    lua_setallocf(m->L, m->base, m->base_ud);
    m->L = NULL;
}

bool lua_memory_admit(lua_memory *m)
{
    if (!m->limit || m->used <= m->limit) return true;
    int saved = lua_memory_begin_unfailing(m);
    lua_gc(m->L, LUA_GCCOLLECT, 0);
    lua_memory_end_unfailing(m, saved);
    if (m->used <= m->limit) return true;
    m->refused_calls++;
    return false;
}

int lua_memory_begin_unfailing(lua_memory *m)
{
    int saved = m->resuming;
    m->resuming = 0;
    return saved;
}

void lua_memory_end_unfailing(lua_memory *m, int saved)
{
    m->resuming = saved;
}
