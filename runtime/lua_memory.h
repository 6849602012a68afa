/* lua_memory.h: the Lua heap's allocator, wrapped around LuaJIT's own: it counts the bytes in use
 * and enforces --max-lua-memory and --max-call-memory (see lua_memory.c for the policies). */
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
    size_t allocated;       /* bytes allocated since attach, frees not deducted: meters a decode */
    size_t call_cap;        /* Lua memory the decoded arguments of one call may take; 0: no bound */
    size_t large_cap;  /* large arguments (see below) of the calls in flight, together; 0: none */
    size_t large_held; /* what the large arguments of the calls in flight took */
    uint64_t too_large_calls; /* refused: arguments over call_cap */
    uint64_t large_refusals;  /* refused: large arguments with large_cap taken */
} lua_memory;

/* Arguments that decode to more than this are "large": they share large_cap. */
#define LUA_MEMORY_SMALL_ARGS ((size_t)64 * 1024)

/* Wraps L's allocator; the bytes L already holds are counted from here on. call_cap is limit / 8
 * and large_cap limit / 4 (0 with no limit); the caller may set call_cap afterwards. */
void lua_memory_attach(lua_memory *m, lua_State *L, size_t limit);
/* Gives L its own allocator back (before lua_close, so that LuaJIT frees its arena). */
void lua_memory_detach(lua_memory *m);
/* Admission of a new call: true when the heap is under the limit, or is once a full collection
 * has run; false (counted in refused_calls) when it is still over. */
bool lua_memory_admit(lua_memory *m);

/* The decoded arguments of a call (lua_memory.c says why and how they are bounded):
 * the bound for the next decode, as a number of bytes `allocated` may grow by; */
size_t lua_memory_args_budget(const lua_memory *m);
/* after a decode that took `bytes`, what the call holds until lua_memory_release_args; */
size_t lua_memory_hold_args(lua_memory *m, size_t bytes);
void lua_memory_release_args(lua_memory *m, size_t held);
/* after a decode stopped at `budget`: counts the refusal, writes its text and returns its code
 * (413: over call_cap; 503: no room left for large arguments now). */
int lua_memory_refuse_args(lua_memory *m, size_t budget, char *text, size_t len);

/* Around code that runs inside a resume but allocates on another Lua state than the running
 * coroutine (a new task's thread, the main state): an error raised there could not unwind
 * cleanly, so nothing fails in between. Returns what lua_memory_end_unfailing wants back. */
int lua_memory_begin_unfailing(lua_memory *m);
void lua_memory_end_unfailing(lua_memory *m, int saved);

#endif
