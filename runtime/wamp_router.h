/* wamp_router.h: the WAMP v2 router on /websocket, whose realm is NATS (see docs/wamp.md). */
#ifndef MICROSERVICE_WAMP_ROUTER_H
#define MICROSERVICE_WAMP_ROUTER_H

#include <h2o.h>

#include "runtime.h"

struct wamp_router *wamp_router_new(runtime *rt);
/* For GET /websocket: upgrades (or refuses with 400); always handles the request. */
int wamp_router_upgrade(struct wamp_router *r, h2o_req_t *req);
int wamp_router_sessions(const struct wamp_router *r);
/* Subscriptions and registrations held by the sessions. */
void wamp_router_counts(const struct wamp_router *r, int *subscriptions, int *registrations);
/* SIGTERM: NATS subscriptions drain, every session gets GOODBYE (system_shutdown) and a close. */
void wamp_router_shutdown(struct wamp_router *r);
/* Closes what is left (sessions that did not answer the close) and the router's handles. */
void wamp_router_close(struct wamp_router *r);
void wamp_router_free(struct wamp_router *r);

#endif
