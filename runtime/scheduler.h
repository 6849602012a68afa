/* scheduler.h: Lua coroutines as tasks. Every incoming call, spawned function and subscription
 * delivery runs in its own task; a task that waits on I/O yields through a sched_op, and only the
 * scheduler resumes it. */
#ifndef MICROSERVICE_SCHEDULER_H
#define MICROSERVICE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>
#include <lua.h>

#include "runtime.h"
#include "trace.h"

typedef struct task task;
typedef struct sched_op sched_op;

/* How a task ended, given to its on_done hook. */
enum task_end {
    TASK_OK,        /* returned: its results are on the coroutine's stack */
    TASK_ERROR,     /* raised a Lua error: message (no traceback) on the coroutine's stack */
    TASK_APP_ERROR, /* raised microservice.error(...): the error table on the coroutine's stack */
    TASK_CANCELLED, /* abandoned (shutdown deadline): nothing on the stack */
    TASK_EXPIRED,   /* abandoned at its own deadline (its caller stopped waiting): nothing */
};

/* Called once when the task ends, on the loop thread; nres values are on top of co. After it
 * returns the task is gone. */
typedef void (*task_done_fn)(task *t, enum task_end how, lua_State *co, int nres);

/* A pending operation: embedded first in the structure of whoever waits (timer, NATS request).
 * cancel must make sure the completion never fires and release the operation. */
struct sched_op {
    task *task;
    uint64_t token;
    void (*cancel)(sched_op *op);
};

struct task {
    lua_State *co;
    int ref;        /* registry anchor of co while the task lives */
    uint64_t token; /* bumped at every yield, so a late completion cannot resume */
    sched_op *op;   /* the operation this task waits on, or NULL */
    task_done_fn on_done;
    void *udata;                  /* owned by the on_done hook */
    const char *label;            /* what runs, for logs ("greeting_service.hello"), not owned */
    void (*finalizer)(void *arg); /* runs when the task ends, however it ends */
    void *finalizer_arg;
    uv_timer_t deadline_timer; /* armed by sched_set_deadline */
    uint64_t deadline;         /* loop time (ms) when the caller stops waiting; 0: none */
    const char *authid;        /* the caller, when authenticated; owned with udata */
    const char *authrole;
    char trace_id[TRACE_ID_LEN + 1]; /* W3C trace id of the call; "" until taken or made */
    struct scheduler *sched;
    task *prev, *next; /* in-flight list */
};

struct scheduler *sched_new(runtime *rt);
/* Cancels whatever is left (each op through its own cancel) and frees the coroutine pool. */
void sched_free(struct scheduler *s);

/* A new task with an empty coroutine: push the function and its arguments on t->co, then call
 * sched_start. NULL only when memory is exhausted. */
task *sched_task_new(struct scheduler *s, task_done_fn on_done, void *udata, const char *label);
/* Releases a task that was created but never started (e.g. its arguments were refused). */
void sched_task_discard(task *t);
/* First resume: runs the function on top of t->co with nargs arguments above it. */
void sched_start(task *t, int nargs);

/* Like sched_start, but from the next loop iteration: for tasks started by a running task, so that
 * coroutines never resume one another on the C stack. */
void sched_start_soon(task *t, int nargs);
/* From a C function called by Lua: suspends the current task until the next turn of the loop
 * (sleep(0)); returns what the C function must return. */
int sched_yield_turn(lua_State *L);

/* From a C function called by Lua: the task whose main coroutine is L, or NULL (then, if err is
 * given, a message saying why an operation cannot wait here). */
task *sched_current(lua_State *L, const char **err);
/* Suspends the current task on op: returns what the C function must return (lua_yield). Raises a
 * Lua error when L is not a task's main coroutine. */
int sched_yield_op(lua_State *L, sched_op *op);
/* Completion side. Returns the coroutine to push results on, or NULL when the op no longer owns
 * the task (it must then drop its results): the task was cancelled or expired, or waits on
 * another op (the token check), even when the pooled task and coroutine serve another call now.
 *
 * A completion that fires before the yield (before sched_yield_op, or while the task is still
 * running) gets NULL too and its results are lost: the task then waits on the op until its
 * deadline or a cancel. So a completion always comes from a later loop callback, never from
 * inside the C function that yields; an operation that can finish at once defers its completion
 * to the loop (as sched_yield_turn does) or returns its result without yielding. */
lua_State *sched_op_target(sched_op *op);
/* Resumes op's task with nargs values pushed on sched_op_target(op). */
void sched_op_resume(sched_op *op, int nargs);

/* Sets (or clears, with NULL) the one resource hook of a task, e.g. a reserved database
 * connection to roll back if the task ends inside a transaction. */
void sched_set_finalizer(task *t, void (*fn)(void *arg), void *arg);

/* The task is abandoned (its pending operation cancelled through its hook, on_done called with
 * TASK_EXPIRED) if it is still running after seconds: for calls whose caller gave a timeout. */
void sched_set_deadline(task *t, double seconds);

/* The task's trace id: the one it was given (services.c takes it from the caller's
 * traceparent), else a new one, kept for the task's life. */
const char *sched_trace_id(task *t);
/* The log lines about a task: tagged with its label, ending with its trace id. */
#define SCHED_TRACE_FMT " (trace %s)"
const char *sched_log_tag(const task *t);

/* Abandons t: its pending operation is cancelled through its hook, on_done runs with
 * TASK_CANCELLED. Not for the running task. */
void sched_cancel(task *t);
/* Abandons t as its deadline would (logged with why, on_done with TASK_EXPIRED): its caller
 * stopped waiting. Not for the running task (then nothing happens). */
void sched_abandon(task *t, const char *why);
/* Cancels every in-flight task (shutdown deadline). */
void sched_cancel_all(struct scheduler *s);
int sched_inflight(const struct scheduler *s);
uint64_t sched_started_total(const struct scheduler *s);

#endif
