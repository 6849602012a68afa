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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mlua_api.h"
#include "mlua_error.h"

#define POOL_MAX 1024

struct scheduler {
    runtime *rt;
    task *head; /* in-flight tasks */
    int inflight;
    uint64_t started;
    task *pool[POOL_MAX]; /* finished tasks whose coroutine can be reused */
    int pooled;
    struct soon_op *soon_head, *soon_tail; /* see sched_start_soon */
    uv_check_t soon_check;
    uv_idle_t soon_idle;
    int open_handles; /* while closing */
};

struct scheduler *sched_new(runtime *rt)
{
    struct scheduler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->rt = rt;
    uv_check_init(&rt->loop, &s->soon_check);
    uv_idle_init(&rt->loop, &s->soon_idle);
    s->soon_check.data = s->soon_idle.data = s;
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
        int saved = mlua_memory_begin_unfailing(&s->rt->lua_mem); /* L may not be the running one */
        t->co = lua_newthread(L);
        t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        mlua_memory_end_unfailing(&s->rt->lua_mem, saved);
        lua_setexdata(t->co, t);
        uv_timer_init(&s->rt->loop, &t->deadline_timer);
        t->deadline_timer.data = t;
    }
    t->sched = s;
    t->on_done = on_done;
    t->udata = udata;
    t->label = label;
    t->authid = t->authrole = NULL;
    t->trace_id[0] = '\0';
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

/* A Lua error ended the task: log it once with its traceback, leave only the message (or the
 * application error table) for the on_done hook. */
static void finish_with_error(task *t)
{
    lua_State *co = t->co;
    lua_State *L = t->sched->rt->L;
    if (mlua_api_is_app_error(co, -1)) {
        finish(t, TASK_APP_ERROR, 1);
        return;
    }
    mlua_push_traceback(L, co, 0);
    log_error(sched_log_tag(t), "%s" SCHED_TRACE_FMT, lua_tostring(L, -1), sched_trace_id(t));
    lua_pop(L, 1);
    finish(t, TASK_ERROR, 1);
}

/* After a resume in which the heap hit its cap (see mlua_memory.c): LuaJIT's "not enough memory"
 * said with the limit it hit. */
static void explain_oom(task *t, int rc)
{
    lua_State *co = t->co;
    mlua_memory *m = &t->sched->rt->lua_mem;
    if (rc != LUA_ERRMEM && !(rc == LUA_ERRRUN && lua_type(co, -1) == LUA_TSTRING &&
                              strcmp(lua_tostring(co, -1), "not enough memory") == 0))
        return;
    lua_pop(co, 1);
    lua_pushfstring(co, "out of memory: the Lua heap reached %d MiB (twice --max-lua-memory %d)",
                    (int)(m->cap >> 20), (int)(m->limit >> 20));
}

static void run_once(task *t, int nargs, bool *oom)
{
    lua_State *co = t->co;
    mlua_memory *m = &t->sched->rt->lua_mem;
    uint64_t failed = m->failed_allocs;
    m->resuming++;
    int rc = lua_resume(co, nargs);
    m->resuming--;
    *oom = m->failed_allocs != failed;
    if (*oom && rc != 0 && rc != LUA_YIELD) explain_oom(t, rc);
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

/* One resume of t; when an allocation hit the cap, the garbage the call left (its own data, now
 * unreachable) is collected at once. */
static void run(task *t, int nargs)
{
    runtime *rt = t->sched->rt;
    bool oom = false;
    run_once(t, nargs, &oom);
    if (oom && rt->lua_mem.resuming == 0) lua_gc(rt->L, LUA_GCCOLLECT, 0);
}

void sched_start(task *t, int nargs)
{
    t->sched->started++;
    run(t, nargs);
}

/* "Next turn": the deferred first resume of a spawned task and sleep(0) are operations queued
 * for the next turn of the loop (a uv_check after the poll phase, with a uv_idle keeping the poll
 * from blocking while the queue is not empty). A 0 ms timer would not do: libuv 1.44 runs a timer
 * started from a timer callback in the same pass, so a loop of sleep(0) would never let the
 * clock, or anything else, move. */
typedef struct soon_op {
    sched_op base;
    int nargs;
    bool start;     /* first resume (spawn) rather than a resume after sleep(0) */
    bool cancelled; /* freed by the next pass */
    struct soon_op *next;
} soon_op;

static void soon_cancel(sched_op *op)
{
    ((soon_op *)op)->cancelled = true;
}

static void soon_idle_cb(uv_idle_t *h)
{
    (void)h;
}

static void soon_check_cb(uv_check_t *h)
{
    struct scheduler *s = h->data;
    soon_op *list = s->soon_head;
    s->soon_head = s->soon_tail = NULL;
    while (list) {
        soon_op *o = list;
        list = o->next;
        task *t = o->base.task;
        if (!o->cancelled && t->op == &o->base && t->token == o->base.token) {
            t->op = NULL;
            if (o->start)
                sched_start(t, o->nargs);
            else if (lua_status(t->co) == LUA_YIELD)
                run(t, 0);
        }
        free(o);
    }
    if (!s->soon_head) {
        uv_idle_stop(&s->soon_idle);
        uv_check_stop(&s->soon_check);
    }
}

static int soon_push(task *t, bool start, int nargs)
{
    struct scheduler *s = t->sched;
    soon_op *o = calloc(1, sizeof *o);
    if (!o) return -1;
    o->base.cancel = soon_cancel;
    o->base.task = t;
    o->base.token = ++t->token;
    o->start = start;
    o->nargs = nargs;
    t->op = &o->base;
    if (s->soon_tail)
        s->soon_tail->next = o;
    else
        s->soon_head = o;
    s->soon_tail = o;
    uv_check_start(&s->soon_check, soon_check_cb);
    uv_idle_start(&s->soon_idle, soon_idle_cb);
    return 0;
}

void sched_start_soon(task *t, int nargs)
{
    if (soon_push(t, true, nargs) != 0) sched_start(t, nargs); /* no memory: start at once */
}

int sched_yield_turn(lua_State *L)
{
    const char *err;
    task *t = sched_current(L, &err);
    if (!t) return luaL_error(L, "%s", err);
    if (soon_push(t, false, 0) != 0) return luaL_error(L, "out of memory");
    return lua_yield(L, 0);
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
    log_info(sched_log_tag(t), "abandoned: its caller's timeout passed" SCHED_TRACE_FMT,
             sched_trace_id(t));
    cancel_task(t, TASK_EXPIRED);
}

void sched_set_deadline(task *t, double seconds)
{
    uint64_t ms = seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
    t->deadline = uv_now(&t->sched->rt->loop) + ms;
    uv_timer_start(&t->deadline_timer, deadline_cb, ms, 0);
}

const char *sched_trace_id(task *t)
{
    if (!t->trace_id[0]) trace_new_id(t->trace_id);
    return t->trace_id;
}

const char *sched_log_tag(const task *t)
{
    return t->label ? t->label : "task";
}

void sched_abandon(task *t, const char *why)
{
    if (!t->on_done || lua_status(t->co) != LUA_YIELD) return;
    log_info(sched_log_tag(t), "abandoned: %s" SCHED_TRACE_FMT, why, sched_trace_id(t));
    cancel_task(t, TASK_EXPIRED);
}

void sched_cancel(task *t)
{
    if (t->on_done && lua_status(t->co) == LUA_YIELD) cancel_task(t, TASK_CANCELLED);
}

void sched_cancel_all(struct scheduler *s)
{
    while (s->head)
        cancel_task(s->head, TASK_CANCELLED);
}

static void sched_handle_closed(uv_handle_t *h)
{
    struct scheduler *s = h->data;
    if (--s->open_handles == 0) free(s);
}

void sched_free(struct scheduler *s)
{
    if (!s) return;
    sched_cancel_all(s);
    while (s->soon_head) { /* cancelled above: only memory is left */
        struct soon_op *o = s->soon_head;
        s->soon_head = o->next;
        free(o);
    }
    lua_State *L = s->rt->L;
    for (int i = 0; i < s->pooled; i++) {
        if (L) luaL_unref(L, LUA_REGISTRYINDEX, s->pool[i]->ref);
        uv_close((uv_handle_t *)&s->pool[i]->deadline_timer, task_free_cb);
    }
    s->open_handles = 2;
    uv_close((uv_handle_t *)&s->soon_check, sched_handle_closed);
    uv_close((uv_handle_t *)&s->soon_idle, sched_handle_closed);
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
