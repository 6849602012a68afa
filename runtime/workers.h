/* workers.h: --workers N: a parent that runs N runtime processes sharing the HTTP port. */
#ifndef MICROSERVICE_WORKERS_H
#define MICROSERVICE_WORKERS_H

#include "runtime.h"

/* Forks cfg->workers workers (each a whole runtime with its own loop and Lua state), restarts a
 * worker that dies, forwards SIGTERM/SIGINT and waits for all to drain. Returns the exit code. */
int workers_run(runtime_config *cfg);

#endif
