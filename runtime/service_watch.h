/* service_watch.h: hot reload: the services folder watched with libuv file-system events. */
#ifndef MICROSERVICE_SERVICE_WATCH_H
#define MICROSERVICE_SERVICE_WATCH_H

#include "runtime.h"

/* Starts watching cfg.services_dir (and its migrations/ folder). NULL if it cannot (logged). */
struct service_watch *service_watch_start(runtime *rt);
/* Closes the watchers (asynchronously) and frees itself once they are closed. */
void service_watch_stop(struct service_watch *w);

#endif
