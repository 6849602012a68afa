/* local_dispatch.h: where a call goes (issue 13). A call whose procedure a Lua service of this
 * process serves runs in-process (no NATS message, no thread hop); any other goes over NATS as
 * before. The HTTP gateway, WAMP CALL and microservice.call all start calls here. */
#ifndef MICROSERVICE_LOCAL_DISPATCH_H
#define MICROSERVICE_LOCAL_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nats_bridge.h"
#include "runtime.h"

typedef struct local_dispatch local_dispatch;
typedef struct local_call local_call;

/* A call in progress: one of the two is set (both NULL once it ended or never started). */
typedef struct rpc_handle {
    nb_request *bus;
    local_call *local;
} rpc_handle;

local_dispatch *local_dispatch_new(runtime *rt);
/* Closes its loop handles (at the end of the shutdown); frees itself once they are closed. */
void local_dispatch_close(local_dispatch *ld);

/* Starts a call of subject with the envelope data: in-process when allow_local, --prefer-local is
 * on and a loaded Lua service declares subject, else nats_bridge_request_as (same arguments,
 * same contract: fn runs later, exactly once unless cancelled, with an nb_reply that lives for
 * the callback only). Returns NB_OK, or what nats_bridge_request_as returned
 * (then fn never runs). */
int local_dispatch_start(runtime *rt, bool allow_local, const char *subject, const char *data,
                         size_t len, const char *const *headers, const char *authid,
                         const char *authrole, double timeout_s, nb_reply_fn fn, void *udata,
                         rpc_handle *out);
/* True when local_dispatch_start would run this call in-process (see local_dispatch.c). */
bool local_dispatch_runs_here(runtime *rt, bool allow_local, const char *subject);
/* The caller is gone: fn will not run. An in-process callee is cancelled (its pending operation,
 * e.g. an outbound HTTP transfer, is aborted); over the bus, the serving process is told to do
 * the same (SERVICES_CANCEL_SUBJECT). Safe on an empty handle; not after fn ran. Returns whether
 * the call had reached a callee or the bus (false: it was still waiting to start). */
bool local_dispatch_cancel(runtime *rt, rpc_handle *h);

/* Calls taken in-process and sent over the bus since start, for /metrics. */
void local_dispatch_counters(const local_dispatch *ld, uint64_t *local_calls, uint64_t *bus_calls);

#endif
