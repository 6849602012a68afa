/* service_hooks.h: the started / stopped functions of a service table, each run in a task. */
#ifndef MICROSERVICE_SERVICE_HOOKS_H
#define MICROSERVICE_SERVICE_HOOKS_H

#include <stdbool.h>
#include <lua.h>

#include "runtime.h"

/* Called once when the hook's task ends: ok when the function returned. */
typedef void (*hook_done_fn)(void *udata, bool ok);

/* Runs svc[hook](svc) (svc: the table at svc_idx of L) in a task of its own, abandoned after
 * timeout seconds, labelled "<service>.<hook>". Returns 1 when it started (done runs when it
 * ends, maybe before this returns), 0 when the table has no such function (done does not run),
 * -1 when out of memory (logged; done does not run). */
int service_hook_run(runtime *rt, lua_State *L, int svc_idx, const char *hook, double timeout,
                     hook_done_fn done, void *udata);

#endif
