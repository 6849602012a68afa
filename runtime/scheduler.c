/* scheduler.c: owns Lua coroutines as tasks: their creation, anchoring in the registry, the one
 * resume function, the yield-for-I/O handshake (operation tokens) and cancellation.
 *
 * No other file resumes a coroutine. An operation (a timer, a NATS request) records itself as the
 * task's pending op with a fresh token; its completion asks sched_op_target() whether it still
 * owns the task, pushes its results and calls sched_op_resume(). Errors never unwind past
 * lua_resume: they are turned into a traceback for the log and a clean end for the caller.
 *
 * Coroutines of finished tasks are kept in a small pool and reused (lua_resetthread from the
 * OpenResty branch of LuaJIT), which saves an allocation and a GC cycle per call. */
#include "scheduler.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lua_api.h"

#define POOL_MAX 1024

struct scheduler {
    runtime *rt;
    task *head; /* in-flight tasks */
    int inflight;
    uint64_t started;
    task *pool[POOL_MAX]; /* finished tasks whose coroutine can be reused */
    int pooled;
};

struct scheduler *sched_new(runtime *rt)
{
    struct scheduler *s = calloc(1, sizeof *s);
    if (s) s->rt = rt;
    return s;
}

static void link_task(struct scheduler *s, task *t)
{
    t->prev = NULL;
    t->next = s->head;
    if (s->head) s->head->prev = t;
    s->head = t;
    s->inflight++;
}

static void unlink_task(struct scheduler *s, task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        s->head = t->next;
    if (t->next) t->next->prev = t->prev;
    s->inflight--;
}

task *sched_task_new(struct scheduler *s, task_done_fn on_done, void *udata, const char *label)
{
    task *t;
    if (s->pooled > 0) {
        t = s->pool[--s->pooled];
    } else {
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        lua_State *L = s->rt->L;
        t->co = lua_newthread(L);
        t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_setexdata(t->co, t);
        uv_timer_init(&s->rt->loop, &t->deadline_timer);
        t->deadline_timer.data = t;
    }
    t->sched = s;
    t->on_done = on_done;
    t->udata = udata;
    t->label = label;
    t->op = NULL;
    t->token++;
    link_task(s, t);
    return t;
}

static void task_free_cb(uv_handle_t *h)
{
    free(h->data);
}

/* The end of every task: back to the pool when the coroutine can be reset, else unanchored. */
static void task_release(task *t)
{
    struct scheduler *s = t->sched;
    if (t->finalizer) {
        void (*fn)(void *) = t->finalizer;
        t->finalizer = NULL;
        fn(t->finalizer_arg);
    }
    unlink_task(s, t);
    t->op = NULL;
    t->token++;
    t->on_done = NULL;
    t->udata = NULL;
    if (t->deadline) uv_timer_stop(&t->deadline_timer);
    t->deadline = 0;
    lua_State *L = s->rt->L;
    if (s->pooled < POOL_MAX) {
        lua_resetthread(L, t->co);
        lua_setexdata(t->co, t);
        s->pool[s->pooled++] = t;
        return;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    uv_close((uv_handle_t *)&t->deadline_timer, task_free_cb);
}

void sched_task_discard(task *t)
{
    task_release(t);
}

static void finish(task *t, enum task_end how, int nres)
{
    if (t->on_done) t->on_done(t, how, t->co, nres);
    task_release(t);
}

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

/* A Lua error ended the task: log it once with its traceback, leave only the message (or the
 * application error table) for the on_done hook. */
static void finish_with_error(task *t)
{
    lua_State *co = t->co;
    lua_State *L = t->sched->rt->L;
    if (lua_api_is_app_error(co, -1)) {
        finish(t, TASK_APP_ERROR, 1);
        return;
    }
    if (!lua_isstring(co, -1) && !luaL_callmeta(co, -1, "__tostring"))
        lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, -1));
    if (!lua_isstring(co, -1)) lua_pushstring(co, "(error object has a bad __tostring)");
    luaL_traceback(L, co, lua_tostring(co, -1), 0);
    trim_traceback(L);
    log_error(t->label ? t->label : "task", "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    finish(t, TASK_ERROR, 1);
}

static void run(task *t, int nargs)
{
    lua_State *co = t->co;
    int rc = lua_resume(co, nargs);
    if (rc == LUA_YIELD) {
        if (t->op) return; /* waits on an operation that will resume it */
        lua_settop(co, 0);
        lua_pushstring(co, "coroutine.yield() called outside a coroutine of the script's own; "
                           "use microservice.sleep or microservice.spawn");
        log_error(t->label ? t->label : "task", "%s", lua_tostring(co, -1));
        finish(t, TASK_ERROR, 1);
        return;
    }
    if (rc == 0) {
        finish(t, TASK_OK, lua_gettop(co));
        return;
    }
    finish_with_error(t);
}

void sched_start(task *t, int nargs)
{
    t->sched->started++;
    run(t, nargs);
}

/* The deferred first resume is itself an operation, so cancellation closes its timer. */
typedef struct start_op {
    sched_op base;
    uv_timer_t timer;
    int nargs;
} start_op;

static void start_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void start_cancel(sched_op *op)
{
    start_op *s = (start_op *)op;
    uv_close((uv_handle_t *)&s->timer, start_free_cb);
}

static void start_cb(uv_timer_t *timer)
{
    start_op *s = timer->data;
    task *t = s->base.task;
    uv_close((uv_handle_t *)&s->timer, start_free_cb);
    if (t->op != &s->base || t->token != s->base.token) return;
    t->op = NULL;
    sched_start(t, s->nargs);
}

void sched_start_soon(task *t, int nargs)
{
    start_op *s = calloc(1, sizeof *s);
    if (!s) { /* no memory for the deferral: start at once */
        sched_start(t, nargs);
        return;
    }
    s->base.cancel = start_cancel;
    s->base.task = t;
    s->base.token = ++t->token;
    s->nargs = nargs;
    t->op = &s->base;
    uv_timer_init(&t->sched->rt->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, start_cb, 0, 0);
}

task *sched_current(lua_State *L, const char **err)
{
    task *t = lua_getexdata(L);
    if (t && t->co == L && t->on_done) return t;
    if (err) {
        *err = t ? "cannot wait inside a coroutine created by the script (coroutine.create/wrap);"
                   " use microservice.spawn for concurrent work"
                 : "cannot wait here: not inside an RPC, a subscription handler or a spawned "
                   "function (service scripts cannot wait while they load)";
    }
    return NULL;
}

int sched_yield_op(lua_State *L, sched_op *op)
{
    const char *err;
    task *t = sched_current(L, &err);
    if (!t) {
        op->cancel(op);
        return luaL_error(L, "%s", err);
    }
    op->task = t;
    op->token = ++t->token;
    t->op = op;
    return lua_yield(L, 0);
}

lua_State *sched_op_target(sched_op *op)
{
    task *t = op->task;
    if (!t || t->op != op || t->token != op->token) return NULL;
    if (lua_status(t->co) != LUA_YIELD) return NULL;
    return t->co;
}

void sched_op_resume(sched_op *op, int nargs)
{
    task *t = op->task;
    t->op = NULL;
    run(t, nargs);
}

static void cancel_task(task *t, enum task_end how)
{
    sched_op *op = t->op;
    t->op = NULL;
    if (op) op->cancel(op);
    lua_settop(t->co, 0);
    finish(t, how, 0);
}

static void deadline_cb(uv_timer_t *timer)
{
    task *t = timer->data;
    if (!t->on_done) return;
    log_info(t->label ? t->label : "task", "abandoned: its caller's timeout passed");
    cancel_task(t, TASK_EXPIRED);
}

void sched_set_deadline(task *t, double seconds)
{
    uint64_t ms = seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
    t->deadline = uv_now(&t->sched->rt->loop) + ms;
    uv_timer_start(&t->deadline_timer, deadline_cb, ms, 0);
}

void sched_cancel_all(struct scheduler *s)
{
    while (s->head)
        cancel_task(s->head, TASK_CANCELLED);
}

void sched_free(struct scheduler *s)
{
    if (!s) return;
    sched_cancel_all(s);
    lua_State *L = s->rt->L;
    for (int i = 0; i < s->pooled; i++) {
        if (L) luaL_unref(L, LUA_REGISTRYINDEX, s->pool[i]->ref);
        uv_close((uv_handle_t *)&s->pool[i]->deadline_timer, task_free_cb);
    }
    free(s);
}

void sched_set_finalizer(task *t, void (*fn)(void *arg), void *arg)
{
    t->finalizer = fn;
    t->finalizer_arg = arg;
}

int sched_inflight(const struct scheduler *s)
{
    return s->inflight;
}

uint64_t sched_started_total(const struct scheduler *s)
{
    return s->started;
}
