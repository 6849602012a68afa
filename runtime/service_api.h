/* service_api.h: the NATS service API ($SRV.PING, $SRV.INFO, $SRV.STATS) for the Lua services. */
#ifndef MICROSERVICE_SERVICE_API_H
#define MICROSERVICE_SERVICE_API_H

#include "runtime.h"

struct service_api *service_api_start(runtime *rt);
/* Unsubscribes and frees (at shutdown, while the NATS connection is still open). */
void service_api_stop(struct service_api *api);

#endif
