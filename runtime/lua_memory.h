/* lua_memory.h: the Lua heap's allocator, wrapped around LuaJIT's own: it counts the bytes in use
 * and enforces --max-lua-memory (see lua_memory.c for the two policies). */
#ifndef MICROSERVICE_LUA_MEMORY_H
#define MICROSERVICE_LUA_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <lua.h>

typedef struct lua_memory {
    lua_Alloc base; /* LuaJIT's allocator, which does the work */
    void *base_ud;
    lua_State *L; /* while attached */
    size_t used;  /* bytes of the Lua heap (what collectgarbage("count") says) */
    size_t limit; /* new calls are refused above it, after a full collection; 0: no limit */
    size_t cap;   /* allocations while a coroutine is resumed fail above it (2 x limit) */
    int resuming; /* > 0 while the scheduler resumes a coroutine: allocations may fail */
    uint64_t failed_allocs; /* allocations refused at the cap */
    uint64_t refused_calls; /* calls refused at admission */
} lua_memory;

/* Wraps L's allocator; the bytes L already holds are counted from here on. */
void lua_memory_attach(lua_memory *m, lua_State *L, size_t limit);
/* Gives L its own allocator back (before lua_close, so that LuaJIT frees its arena). */
void lua_memory_detach(lua_memory *m);
/* Admission of a new call: true when the heap is under the limit, or is once a full collection
 * has run; false (counted in refused_calls) when it is still over. */
bool lua_memory_admit(lua_memory *m);

/* Around code that runs inside a resume but allocates on another Lua state than the running
 * coroutine (a new task's thread, the main state): an error raised there could not unwind
 * cleanly, so nothing fails in between. Returns what lua_memory_end_unfailing wants back. */
int lua_memory_begin_unfailing(lua_memory *m);
void lua_memory_end_unfailing(lua_memory *m, int saved);

#endif
