/* service_hooks.c: owns the tasks of the life-cycle functions of a service table, started(self)
 * and stopped(self): their label, their deadline and the report of how they ended. services.c
 * decides when they run (started before a version's RPCs are served, stopped when a version is
 * replaced or removed and at the drain). */
#include "service_hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "scheduler.h"

typedef struct hook_run {
    hook_done_fn done;
    void *udata;
    char label[160]; /* "<service>.<hook>": the task's label and log tag */
} hook_run;

static void hook_done(task *t, enum task_end how, lua_State *co, int nres)
{
    (void)nres;
    hook_run *h = t->udata;
    if (how == TASK_APP_ERROR) {
        lua_getfield(co, -1, "args");
        if (lua_istable(co, -1))
            lua_rawgeti(co, -1, 1);
        else
            lua_pushnil(co);
        lua_getfield(co, -3, "uri");
        log_error(h->label, "failed: %s: %s" SCHED_TRACE_FMT,
                  lua_isstring(co, -1) ? lua_tostring(co, -1) : "?",
                  lua_isstring(co, -2) ? lua_tostring(co, -2) : "", sched_trace_id(t));
    } else if (how == TASK_CANCELLED || how == TASK_EXPIRED) {
        log_error(h->label, "did not return in time: abandoned" SCHED_TRACE_FMT, sched_trace_id(t));
    } /* a Lua error was logged with its traceback (file:line) by the scheduler */
    if (h->done) h->done(h->udata, how == TASK_OK);
    free(h);
}

int service_hook_run(runtime *rt, lua_State *L, int svc_idx, const char *hook, double timeout,
                     hook_done_fn done, void *udata)
{
    lua_getfield(L, svc_idx, hook);
    lua_getfield(L, svc_idx, "streams"); /* the runner applies them before started */
    bool streams = strcmp(hook, "started") == 0 && lua_istable(L, -1);
    lua_pop(L, 1);
    if (!lua_isfunction(L, -1) && !streams) {
        lua_pop(L, 1);
        return 0;
    }
    hook_run *h = calloc(1, sizeof *h);
    lua_getfield(L, svc_idx, "name");
    if (h) snprintf(h->label, sizeof h->label, "%s.%s", lua_tostring(L, -1), hook);
    lua_pop(L, 1);
    task *t = h ? sched_task_new(rt->sched, hook_done, h, h->label) : NULL;
    if (!t) {
        free(h);
        lua_pop(L, 1);
        log_error("services", "out of memory: %s not run", hook);
        return -1;
    }
    h->done = done;
    h->udata = udata;
    int saved = mlua_memory_begin_unfailing(&rt->lua_mem); /* t->co is not the running one */
    lua_getglobal(L, "require"); /* the runner (lualib/microservice_hooks.lua) */
    lua_pushliteral(L, "microservice.hooks");
    lua_call(L, 1, 1);
    lua_insert(L, -2);
    lua_pushvalue(L, svc_idx);
    lua_xmove(L, t->co, 3); /* the runner, the function and self */
    mlua_memory_end_unfailing(&rt->lua_mem, saved);
    if (timeout > 0) sched_set_deadline(t, timeout);
    sched_start(t, 2);
    return 1;
}
