/* nats_micro.h: the NATS service API ($SRV.PING, $SRV.INFO, $SRV.STATS) for the Lua services. */
#ifndef MICROSERVICE_NATS_MICRO_H
#define MICROSERVICE_NATS_MICRO_H

#include "runtime.h"

struct nats_micro *nats_micro_start(runtime *rt);
/* Unsubscribes and frees (at shutdown, while the NATS connection is still open). */
void nats_micro_stop(struct nats_micro *api);

#endif
