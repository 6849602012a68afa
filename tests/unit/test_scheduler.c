/* test_scheduler.c: the scheduler (runtime/scheduler.c) on a real libuv loop and LuaJIT state,
 * with no bus and no HTTP: a completion after the task's deadline is dropped by the token check,
 * cancel before completion, sched_start_soon order, sleep(0) lets timers advance, a pooled
 * coroutine keeps no stale finalizer or identity, and a completion that fires before the yield
 * is dropped (see scheduler.h). The operations are timers written here, as mlua_api.c's are. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"
#include "runtime.h"
#include "scheduler.h"

static runtime rt;

/* ---- a timer operation: wait_ms(ms, value) yields, then returns value ---- */

typedef struct timer_op {
    sched_op base; /* first: the scheduler sees a sched_op */
    uv_timer_t timer;
    int value;
    bool keep_on_cancel; /* a careless operation: its completion still fires after a cancel */
} timer_op;

static int completions_dropped, completions_delivered, cancels;
static bool careless_ops; /* the next ops keep their completion after a cancel */
static timer_op *last_op; /* the op made last */

static void timer_op_free(uv_handle_t *h)
{
    free(h->data);
}

/* The completion: it may resume the task only while it still owns it (token check). */
static void timer_op_fire(uv_timer_t *h)
{
    timer_op *op = h->data;
    lua_State *co = sched_op_target(&op->base);
    uv_close((uv_handle_t *)&op->timer, timer_op_free);
    if (!co) {
        completions_dropped++;
        return;
    }
    completions_delivered++;
    lua_pushinteger(co, op->value);
    sched_op_resume(&op->base, 1);
}

static void timer_op_cancel(sched_op *base)
{
    timer_op *op = (timer_op *)base;
    cancels++;
    if (op->keep_on_cancel) return; /* left to the token check */
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, timer_op_free);
}

static timer_op *timer_op_new(lua_State *L)
{
    timer_op *op = calloc(1, sizeof *op);
    op->base.cancel = timer_op_cancel;
    op->value = (int)luaL_optinteger(L, 2, 0);
    op->keep_on_cancel = careless_ops;
    uv_timer_init(&rt.loop, &op->timer);
    op->timer.data = op;
    last_op = op;
    return op;
}

/* wait_ms(ms, value); ms < 0: the test completes the op itself (timer_op_fire) */
static int l_wait_ms(lua_State *L)
{
    timer_op *op = timer_op_new(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    if (ms >= 0) uv_timer_start(&op->timer, timer_op_fire, (uint64_t)ms, 0);
    return sched_yield_op(L, &op->base);
}

/* Completes its operation at once, before yielding on it: the completion must be dropped. */
static int l_complete_then_wait(lua_State *L)
{
    timer_op *op = timer_op_new(L);
    op->base.task = sched_current(L, NULL);
    op->base.token = op->base.task->token;
    CHECK(sched_op_target(&op->base) == NULL); /* not waiting yet */
    return sched_yield_op(L, &op->base);       /* waits until its deadline (timer never started) */
}

static int l_sleep0(lua_State *L)
{
    return sched_yield_turn(L);
}

/* ---- tasks ---- */

typedef struct outcome {
    int ended;
    enum task_end how;
    int nres;
    lua_Integer first; /* first result, when an integer */
} outcome;

static void on_done(task *t, enum task_end how, lua_State *co, int nres)
{
    outcome *o = t->udata;
    o->ended++;
    o->how = how;
    o->nres = nres;
    o->first = nres > 0 ? lua_tointeger(co, -nres) : 0;
}

/* A task running the Lua function `body(...)` with the integer args, not yet started. */
static task *new_task(const char *body, outcome *o, const char *label)
{
    task *t = sched_task_new(rt.sched, on_done, o, label);
    if (luaL_loadstring(t->co, body) != 0) {
        diag("%s", lua_tostring(t->co, -1));
        exit(1);
    }
    return t;
}

static void run_loop(void)
{
    uv_run(&rt.loop, UV_RUN_DEFAULT);
}

static void test_late_completion_dropped(void)
{
    outcome a = {0}, b = {0};
    careless_ops = true; /* the deadline's cancel leaves the op's completion to come */
    task *t = new_task("return wait_ms(-1, 1)", &a, "late");
    lua_State *co = t->co;
    sched_set_deadline(t, 0.01);
    sched_start(t, 0);
    careless_ops = false;
    timer_op *late = last_op;
    run_loop(); /* the deadline: nothing else is pending */
    CHECK(a.ended == 1 && a.how == TASK_EXPIRED && a.nres == 0);
    CHECK(cancels == 1 && completions_dropped == 0);

    /* the same task and coroutine, from the pool, now wait on another operation: the old
     * completion, coming now, finds them waiting and must not resume them */
    task *u = new_task("return wait_ms(1, 2)", &b, "reused");
    CHECK(u == t && u->co == co);
    sched_start(u, 0);
    timer_op_fire(&late->timer);
    CHECK(completions_dropped == 1 && completions_delivered == 0 && b.ended == 0);
    run_loop();
    CHECK(completions_delivered == 1);
    CHECK(b.ended == 1 && b.how == TASK_OK && b.nres == 1 && b.first == 2);
    CHECK(a.ended == 1);
    CHECK(sched_inflight(rt.sched) == 0);
}

static void test_cancel_before_completion(void)
{
    outcome a = {0};
    int delivered = completions_delivered, dropped = completions_dropped, cancelled = cancels;
    task *t = new_task("return wait_ms(10000, 3)", &a, "cancelled");
    sched_start(t, 0);
    CHECK(a.ended == 0 && sched_inflight(rt.sched) == 1);
    sched_cancel(t);
    CHECK(a.ended == 1 && a.how == TASK_CANCELLED && a.nres == 0);
    CHECK(cancels == cancelled + 1);
    CHECK(sched_inflight(rt.sched) == 0);
    run_loop(); /* returns at once: the timer was stopped and closed by the cancel */
    CHECK(completions_delivered == delivered && completions_dropped == dropped);
    CHECK(a.ended == 1);
}

static void test_start_soon_order(void)
{
    outcome o[3] = {{0}};
    CHECK(luaL_dostring(rt.L, "order = {}") == 0);
    for (int i = 0; i < 3; i++) {
        task *t = new_task("table.insert(order, ...)", &o[i], "soon");
        lua_pushinteger(t->co, i + 1);
        sched_start_soon(t, 1);
    }
    CHECK(luaL_dostring(rt.L, "return #order") == 0);
    CHECK(lua_tointeger(rt.L, -1) == 0); /* none started before the loop turns */
    lua_pop(rt.L, 1);
    run_loop();
    CHECK(luaL_dostring(rt.L, "return table.concat(order, ',')") == 0);
    CHECK(strcmp(lua_tostring(rt.L, -1), "1,2,3") == 0 ||
          diag("order: %s", lua_tostring(rt.L, -1)));
    lua_pop(rt.L, 1);
    CHECK(o[0].ended == 1 && o[1].ended == 1 && o[2].ended == 1 && o[2].how == TASK_OK);
}

static bool timer_fired;

static void on_timer(uv_timer_t *h)
{
    timer_fired = true;
    uv_close((uv_handle_t *)h, NULL);
}

static int l_timer_fired(lua_State *L)
{
    lua_pushboolean(L, timer_fired);
    return 1;
}

static void test_sleep0_lets_timers_advance(void)
{
    outcome a = {0};
    static uv_timer_t timer;
    uv_timer_init(&rt.loop, &timer);
    uv_timer_start(&timer, on_timer, 5, 0);
    uint64_t start = uv_now(&rt.loop);
    /* bounded, so that a sleep(0) that starves timers fails the check instead of hanging */
    task *t = new_task("local n = 0\n"
                       "while not timer_fired() and n < 10000000 do sleep0(); n = n + 1 end\n"
                       "return n",
                       &a, "spinner");
    sched_start(t, 0);
    CHECK(a.ended == 0); /* it yielded on its first sleep(0) */
    run_loop();
    CHECK(timer_fired);
    CHECK(a.ended == 1 && a.how == TASK_OK && a.first > 0 && a.first < 10000000);
    CHECK(uv_now(&rt.loop) >= start + 5);
}

static int finalized;

static void finalizer(void *arg)
{
    (void)arg;
    finalized++;
}

static void test_pooled_coroutine_is_clean(void)
{
    outcome a = {0}, b = {0};
    task *t = new_task("return wait_ms(1, 4)", &a, "first");
    sched_set_finalizer(t, finalizer, NULL);
    t->authid = "alice";
    t->authrole = "admin";
    sched_trace_id(t);
    lua_State *co = t->co;
    sched_start(t, 0);
    run_loop();
    CHECK(a.ended == 1 && a.how == TASK_OK && a.first == 4);
    CHECK(finalized == 1);

    task *u = new_task("return ...", &b, "second");
    CHECK(u == t && u->co == co); /* the pool gave the same task and coroutine back */
    CHECK(u->finalizer == NULL && u->authid == NULL && u->authrole == NULL);
    CHECK(u->trace_id[0] == '\0' && u->op == NULL && u->deadline == 0);
    CHECK(strcmp(sched_log_tag(u), "second") == 0);
    CHECK(lua_getexdata(co) == u && lua_status(co) == 0);
    CHECK(lua_gettop(co) == 1); /* only the function just loaded */
    lua_pushinteger(co, 5);
    sched_start(u, 1);
    CHECK(b.ended == 1 && b.how == TASK_OK && b.first == 5);
    CHECK(finalized == 1); /* the first task's finalizer did not run again */

    /* an error ends a task too: its coroutine goes back to the pool usable */
    outcome c = {0}, d = {0};
    t = new_task("error('boom')", &c, "failing");
    sched_start(t, 0); /* logs the error with its traceback, once */
    CHECK(c.ended == 1 && c.how == TASK_ERROR);
    t = new_task("return 6", &d, "after");
    sched_start(t, 0);
    CHECK(d.ended == 1 && d.how == TASK_OK && d.first == 6);
}

static void test_completion_before_yield(void)
{
    outcome a = {0};
    int delivered = completions_delivered;
    task *t = new_task("return complete_then_wait()", &a, "early");
    sched_set_deadline(t, 0.01);
    sched_start(t, 0);
    CHECK(a.ended == 0); /* the early completion did not end it: it waits */
    run_loop();
    CHECK(a.ended == 1 && a.how == TASK_EXPIRED);
    CHECK(completions_delivered == delivered);
}

int main(void)
{
    memset(&rt, 0, sizeof rt);
    log_set_level(LOG_WARN);
    CHECK(uv_loop_init(&rt.loop) == 0);
    rt.L = luaL_newstate();
    luaL_openlibs(rt.L);
    mlua_memory_attach(&rt.lua_mem, rt.L, 0);
    rt.sched = sched_new(&rt);
    lua_register(rt.L, "wait_ms", l_wait_ms);
    lua_register(rt.L, "complete_then_wait", l_complete_then_wait);
    lua_register(rt.L, "sleep0", l_sleep0);
    lua_register(rt.L, "timer_fired", l_timer_fired);

    test_late_completion_dropped();
    test_cancel_before_completion();
    test_start_soon_order();
    test_sleep0_lets_timers_advance();
    test_pooled_coroutine_is_clean();
    test_completion_before_yield();

    sched_free(rt.sched);
    run_loop(); /* the close callbacks of the scheduler's handles */
    mlua_memory_detach(&rt.lua_mem);
    lua_close(rt.L);
    CHECK(uv_loop_close(&rt.loop) == 0); /* no handle left behind */
    return check_summary();
}
