/* timers.c: owns the timers of microservice.every / microservice.after: their uv_timer handles,
 * the registry reference of each function, the task of the run in progress (one at a time: a tick
 * that comes while the previous run goes on is skipped and counted) and which script load owns
 * each timer (services.c drops a version's timers when the script is reloaded or removed).
 *
 * A timer lives until it is cancelled (by :cancel(), its version going away, the drain, or the
 * one run of an `after`), its handle is closed and its last run has ended. When its version goes
 * away, a run in progress is cancelled too (its pending operation, e.g. an HTTP transfer, is
 * aborted); after :cancel() and at the drain it finishes. */
#include "timers.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mlua_api.h"
#include "scheduler.h"

#define TAG "timers"

typedef struct ms_timer {
    struct timers *owner;
    int id;
    uv_timer_t uv;
    int fn_ref;
    char *file; /* the script that owns it, or NULL */
    unsigned gen;
    bool repeat;
    bool running;   /* a run's task is in flight */
    task *run;      /* that task */
    bool cancelled; /* no more runs; unlinked */
    bool closed;    /* the uv handle is closed */
    uint64_t runs, skipped;
    char label[128]; /* the task label: "timer <file>:<line>" */
    struct ms_timer *next;
} ms_timer;

struct timers {
    runtime *rt;
    ms_timer *list; /* active timers */
    int count, limit, next_id;
    bool stopped; /* draining: no new timers */
};

struct timers *timers_new(runtime *rt, int limit)
{
    struct timers *ts = calloc(1, sizeof *ts);
    if (!ts) return NULL;
    ts->rt = rt;
    ts->limit = limit;
    return ts;
}

static void maybe_free(ms_timer *t)
{
    if (!t->cancelled || t->running || !t->closed) return;
    free(t->file);
    free(t);
}

static void timer_closed(uv_handle_t *h)
{
    ms_timer *t = h->data;
    t->closed = true;
    maybe_free(t);
}

static void timer_cancel(ms_timer *t)
{
    struct timers *ts = t->owner;
    for (ms_timer **p = &ts->list; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    ts->count--;
    t->cancelled = true;
    if (ts->rt->L) luaL_unref(ts->rt->L, LUA_REGISTRYINDEX, t->fn_ref);
    uv_close((uv_handle_t *)&t->uv, timer_closed);
}

static void run_done(task *tk, enum task_end how, lua_State *co, int nres)
{
    (void)nres;
    ms_timer *t = tk->udata;
    if (how == TASK_APP_ERROR) {
        lua_getfield(co, -1, "uri");
        lua_getfield(co, -2, "args");
        if (lua_istable(co, -1))
            lua_rawgeti(co, -1, 1);
        else
            lua_pushnil(co);
        log_error(t->label, "%s: %s" SCHED_TRACE_FMT, lua_tostring(co, -3),
                  lua_isstring(co, -1) ? lua_tostring(co, -1) : "", sched_trace_id(tk));
        lua_pop(co, 3);
    } else if (how == TASK_CANCELLED && t->cancelled) {
        log_info(t->label, "run cancelled" SCHED_TRACE_FMT, sched_trace_id(tk));
    } /* a Lua error was logged with its traceback by the scheduler */
    t->running = false;
    t->run = NULL;
    maybe_free(t);
}

static void on_tick(uv_timer_t *h)
{
    ms_timer *t = h->data;
    struct timers *ts = t->owner;
    if (t->running) {
        t->skipped++;
        log_debug(t->label, "tick skipped: the previous run goes on (%llu skipped)",
                  (unsigned long long)t->skipped);
        return;
    }
    task *tk = sched_task_new(ts->rt->sched, run_done, t, t->label);
    if (!tk) {
        log_error(t->label, "out of memory: run skipped");
        return;
    }
    t->running = true;
    t->run = tk;
    t->runs++;
    lua_rawgeti(tk->co, LUA_REGISTRYINDEX, t->fn_ref);
    if (!t->repeat) timer_cancel(t); /* its one run: the function is on the task's stack */
    sched_start(tk, 0);
}

/* "timer services/x.lua:12" from the function on top of L. */
static void set_label(ms_timer *t, lua_State *L)
{
    lua_Debug ar;
    lua_pushvalue(L, -1);
    if (lua_getinfo(L, ">S", &ar) && ar.source[0] == '@')
        snprintf(t->label, sizeof t->label, "timer %s:%d", ar.source + 1, ar.linedefined);
    else
        snprintf(t->label, sizeof t->label, "timer");
}

int timers_start(struct timers *ts, lua_State *L, double seconds, bool repeat, const char *file,
                 unsigned gen, char *err, size_t errlen)
{
    if (ts->stopped) {
        snprintf(err, errlen, "the service is shutting down");
        lua_pop(L, 1);
        return -1;
    }
    if (ts->count >= ts->limit) {
        snprintf(err, errlen, "too many timers (%d)", ts->limit);
        lua_pop(L, 1);
        return -1;
    }
    ms_timer *t = calloc(1, sizeof *t);
    if (!t || (file && !(t->file = strdup(file)))) {
        free(t);
        snprintf(err, errlen, "out of memory");
        lua_pop(L, 1);
        return -1;
    }
    set_label(t, L);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->owner = ts;
    t->id = ++ts->next_id;
    t->gen = gen;
    t->repeat = repeat;
    uv_timer_init(&ts->rt->loop, &t->uv);
    t->uv.data = t;
    uint64_t ms = (uint64_t)(seconds * 1000.0 + 0.5);
    uv_timer_start(&t->uv, on_tick, ms, repeat ? (ms ? ms : 1) : 0);
    t->next = ts->list;
    ts->list = t;
    ts->count++;
    return t->id;
}

static ms_timer *find(struct timers *ts, int id)
{
    for (ms_timer *t = ts->list; t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

bool timers_cancel(struct timers *ts, int id)
{
    ms_timer *t = find(ts, id);
    if (!t) return false;
    timer_cancel(t);
    return true;
}

bool timers_stats(struct timers *ts, int id, uint64_t *runs, uint64_t *skipped)
{
    ms_timer *t = find(ts, id);
    if (!t) return false;
    *runs = t->runs;
    *skipped = t->skipped;
    return true;
}

void timers_drop_file(struct timers *ts, const char *file, unsigned gen, bool same_gen)
{
    int n = 0;
    for (ms_timer *t = ts->list, *next; t; t = next) {
        next = t->next;
        if (!t->file || strcmp(t->file, file) != 0 || (t->gen == gen) != same_gen) continue;
        timer_cancel(t);
        if (t->run) sched_cancel(t->run); /* its run is of the version that goes */
        n++;
    }
    if (n) log_info(TAG, "%s: %d timer%s cancelled", file, n, n == 1 ? "" : "s");
}

void timers_stop(struct timers *ts)
{
    if (!ts) return;
    ts->stopped = true;
    while (ts->list)
        timer_cancel(ts->list);
}

void timers_free(struct timers *ts)
{
    free(ts);
}
