/* timers.h: microservice.every / microservice.after: functions run on a timer, each run in a task
 * of its own, owned by the version of the script that made them. */
#ifndef MICROSERVICE_TIMERS_H
#define MICROSERVICE_TIMERS_H

#include <stdbool.h>
#include <stdint.h>
#include <lua.h>

#include "runtime.h"

struct timers *timers_new(runtime *rt, int limit);
/* The function on top of L's stack runs after seconds, then every seconds when repeat; pops it.
 * file and gen: the script load that owns it (NULL: none). Returns the timer's id (> 0), or -1
 * with why in err. */
int timers_start(struct timers *ts, lua_State *L, double seconds, bool repeat, const char *file,
                 unsigned gen, char *err, size_t errlen);
/* false when no such timer is active. */
bool timers_cancel(struct timers *ts, int id);
/* Runs and skipped ticks of an active timer; false when it is not. */
bool timers_stats(struct timers *ts, int id, uint64_t *runs, uint64_t *skipped);
/* Cancels the timers of file: those of load gen (same_gen) or those of every other load. */
void timers_drop_file(struct timers *ts, const char *file, unsigned gen, bool same_gen);
/* Cancels every timer (drain): runs in progress finish as tasks. */
void timers_stop(struct timers *ts);
/* After the loop: the structure itself (every timer cancelled and its task ended before). */
void timers_free(struct timers *ts);

#endif
