/* mlua_memory.c: owns the accounting of the Lua heap and the --max-lua-memory policies.
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
 * fails: LuaJIT would call the panic function and the process would end.
 *
 * That is where a call's arguments are decoded (services.c, before the coroutine starts), and JSON
 * amplifies: a body of [0],[0],... takes 22 times its size in Lua memory (LuaJIT spends 64 bytes
 * on any table), so 45 bodies of 900 KB once took the heap past 1 GiB and every other call was
 * refused. The allocator therefore also counts the bytes it hands out (`allocated`, frees not
 * deducted), and the decoder stops once that count grew by more than its budget (codec_meter):
 *   - per call: arguments over call_cap (--max-call-memory, default limit / 8) are refused with
 *     413, "too large once decoded"; the decode stops there, so a refused call costs at most that;
 *   - together: arguments over MLUA_MEMORY_SMALL_ARGS (64 KiB) are large, and the large arguments
 *     of the calls in flight share large_cap (limit / 4); a large call that does not fit is
 *     refused with 503 (retry later) and its decode stops at the room left. Small calls are not
 *     counted there: however many large bodies a client sends, they take at most a quarter of the
 *     limit (plus the garbage of refused decodes, which the collector takes back), so the heap
 *     stays under the limit and calls with small arguments keep being admitted.
 * A call's share is given back when it ends, whatever its Lua code did with the arguments (a
 * script that keeps them past the call is bounded by the limit itself, as any allocation). */
#include "mlua_memory.h"

#include <stdio.h>

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mlua_memory *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize > old && m->resuming > 0 && m->cap && m->used + (nsize - old) > m->cap) {
        m->failed_allocs++;
        return NULL;
    }
    void *p = m->base(m->base_ud, ptr, osize, nsize);
    if (p || nsize == 0) m->used = m->used - old + nsize;
    if (p && nsize > old) m->allocated += nsize - old;
    return p;
}

void mlua_memory_attach(mlua_memory *m, lua_State *L, size_t limit)
{
    m->base = lua_getallocf(L, &m->base_ud);
    m->L = L;
    m->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    m->limit = limit;
    m->cap = limit * 2;
    m->resuming = 0;
    m->allocated = 0;
    m->call_cap = limit / 8;
    m->large_cap = limit / 4;
    m->large_held = 0;
    lua_setallocf(L, counting_alloc, m);
}

void mlua_memory_detach(mlua_memory *m)
{
    if (!m->L) return;
    lua_setallocf(m->L, m->base, m->base_ud);
    m->L = NULL;
}

bool mlua_memory_admit(mlua_memory *m)
{
    if (!m->limit || m->used <= m->limit) return true;
    int saved = mlua_memory_begin_unfailing(m);
    lua_gc(m->L, LUA_GCCOLLECT, 0);
    mlua_memory_end_unfailing(m, saved);
    if (m->used <= m->limit) return true;
    m->refused_calls++;
    return false;
}

size_t mlua_memory_args_budget(const mlua_memory *m)
{
    size_t budget = m->call_cap ? m->call_cap : SIZE_MAX;
    if (m->large_cap) {
        size_t room = m->large_held < m->large_cap ? m->large_cap - m->large_held : 0;
        if (room < MLUA_MEMORY_SMALL_ARGS) room = MLUA_MEMORY_SMALL_ARGS;
        if (room < budget) budget = room;
    }
    return budget;
}

size_t mlua_memory_hold_args(mlua_memory *m, size_t bytes)
{
    if (!m->large_cap || bytes <= MLUA_MEMORY_SMALL_ARGS) return 0;
    m->large_held += bytes;
    return bytes;
}

void mlua_memory_release_args(mlua_memory *m, size_t held)
{
    m->large_held -= held <= m->large_held ? held : m->large_held;
}

int mlua_memory_refuse_args(mlua_memory *m, size_t budget, char *text, size_t len)
{
    if (m->call_cap && budget >= m->call_cap) {
        m->too_large_calls++;
        snprintf(text, len,
                 "request too large once decoded: its arguments take over %zu KiB of Lua memory "
                 "(--max-call-memory)",
                 m->call_cap >> 10);
        return 413;
    }
    m->large_refusals++;
    snprintf(
        text, len,
        "Lua memory for large requests in use (%zu of %zu MiB by calls in flight): retry later",
        m->large_held >> 20, m->large_cap >> 20);
    return 503;
}

int mlua_memory_begin_unfailing(mlua_memory *m)
{
    int saved = m->resuming;
    m->resuming = 0;
    return saved;
}

void mlua_memory_end_unfailing(mlua_memory *m, int saved)
{
    m->resuming = saved;
}
