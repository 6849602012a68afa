/* http_gateway.h: the HTTP side (libh2o on the runtime's loop): POST /<service>.<method> to NATS,
 * /healthz, and the static frontend. */
#ifndef MICROSERVICE_HTTP_GATEWAY_H
#define MICROSERVICE_HTTP_GATEWAY_H

#include <stdint.h>

#include "runtime.h"

/* Counters of the gateway, for /metrics. */
typedef struct http_gateway_stats {
    uint64_t abandoned_unsent;  /* calls whose request went away before they were sent */
    uint64_t abandoned_sent;    /* calls whose request went away while waiting for the reply */
    uint64_t rapid_reset_conns; /* connections shut for HTTP/2 rapid reset */
    uint64_t rearmed;           /* HTTP/1 read restarts that needed no epoll_ctl (epoll_rearm.c) */
} http_gateway_stats;

struct http_gateway *http_gateway_new(runtime *rt);
/* Binds and listens on cfg.http_host:http_port and, with a certificate, on cfg.https_host:
 * https_port. 0 or -1 (logged). */
int http_gateway_listen(struct http_gateway *g);
/* Stops accepting and asks open connections to close once their requests are answered. */
void http_gateway_stop_accepting(struct http_gateway *g);
/* Requests still waiting for their reply. */
int http_gateway_inflight(struct http_gateway *g);
/* Responses sent by the gateway, indexed by HTTP status (600 entries). */
const uint64_t *http_gateway_status_counts(struct http_gateway *g);
const http_gateway_stats *http_gateway_get_stats(struct http_gateway *g);
/* Connections still open. */
int http_gateway_connections(struct http_gateway *g);
/* Closes every handle; on_closed runs on the loop when they are all released. */
void http_gateway_close(struct http_gateway *g, void (*on_closed)(void *arg), void *arg);
void http_gateway_free(struct http_gateway *g);

#endif
