/* mlua_memory.h: the Lua heap's allocator, wrapped around LuaJIT's own: it counts the bytes in use
 * and enforces --max-lua-memory and --max-call-memory (see mlua_memory.c for the policies). */
#ifndef MICROSERVICE_MLUA_MEMORY_H
#define MICROSERVICE_MLUA_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <lua.h>

typedef struct mlua_memory {
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
} mlua_memory;

/* Arguments that decode to more than this are "large": they share large_cap. */
#define MLUA_MEMORY_SMALL_ARGS ((size_t)64 * 1024)

/* Wraps L's allocator; the bytes L already holds are counted from here on. call_cap is limit / 8
 * and large_cap limit / 4 (0 with no limit); the caller may set call_cap afterwards. */
void mlua_memory_attach(mlua_memory *m, lua_State *L, size_t limit);
/* Gives L its own allocator back (before lua_close, so that LuaJIT frees its arena). */
void mlua_memory_detach(mlua_memory *m);
/* Admission of a new call: true when the heap is under the limit, or is once a full collection
 * has run; false (counted in refused_calls) when it is still over. */
bool mlua_memory_admit(mlua_memory *m);

/* The decoded arguments of a call (mlua_memory.c says why and how they are bounded):
 * the bound for the next decode, as a number of bytes `allocated` may grow by; */
size_t mlua_memory_args_budget(const mlua_memory *m);
/* after a decode that took `bytes`, what the call holds until mlua_memory_release_args; */
size_t mlua_memory_hold_args(mlua_memory *m, size_t bytes);
void mlua_memory_release_args(mlua_memory *m, size_t held);
/* after a decode stopped at `budget`: counts the refusal, writes its text and returns its code
 * (413: over call_cap; 503: no room left for large arguments now). */
int mlua_memory_refuse_args(mlua_memory *m, size_t budget, char *text, size_t len);

/* Around code that runs inside a resume but allocates on another Lua state than the running
 * coroutine (a new task's thread, the main state): an error raised there could not unwind
 * cleanly, so nothing fails in between. Returns what mlua_memory_end_unfailing wants back. */
int mlua_memory_begin_unfailing(mlua_memory *m);
void mlua_memory_end_unfailing(mlua_memory *m, int saved);

#endif
