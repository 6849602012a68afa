/* services.h: the service scripts and what they declare: the RPC registry (one NATS queue
 * subscription per RPC), script subscriptions and spawned functions. */
#ifndef MICROSERVICE_SERVICES_H
#define MICROSERVICE_SERVICES_H

#include <lua.h>
#include <stdbool.h>
#include <stdio.h>

#include "codec.h"
#include "runtime.h"

/* Every process that serves a procedure (a Lua RPC, a WAMP registration) also answers requests
 * on "$MS.PROC.<procedure>" (queue group of the same name) with {"shared": true|false}: a WAMP
 * REGISTER asks there first and is refused when the procedure is served and not shared
 * (docs/wamp.md). A Lua service shares its RPCs with `shared = true` in its table. */
#define SERVICES_PROBE_PREFIX "$MS.PROC."
/* A caller that abandons a request (HTTP client gone, WAMP CANCEL, a cancelled Lua caller)
 * publishes its reply subject here; every process subscribes, and the one serving that request
 * abandons its task (aborting e.g. its outbound HTTP transfer), as an in-process callee would be
 * (docs/local-dispatch.md). */
#define SERVICES_CANCEL_SUBJECT "$MS.CANCEL"

struct services *services_new(runtime *rt);
/* Loads every *.lua in dir. A script that fails is logged with file and line and skipped; the
 * others still start. Returns the number of RPCs registered, or -1 if dir cannot be read. */
int services_load_dir(struct services *s, const char *dir);
/* (Re)loads one script: its RPCs take the new code, new ones are subscribed, those it no longer
 * declares are retired. A script that fails leaves the previous version serving (logged with
 * file:line). Returns the number of RPCs it declares, or -1. */
int services_load_file(struct services *s, const char *path, bool reload);
/* The script is gone: its RPCs are retired and its subscriptions removed. */
void services_remove_file(struct services *s, const char *path);
/* Stops taking new calls: subscriptions drain (what the server already sent is still served). */
void services_drain(struct services *s);
void services_free(struct services *s);

/* The function on top of L's stack is called for every message on subject; pops it. Returns a
 * subscription id, or -1. */
int services_subscribe(struct services *s, lua_State *L, const char *subject, const char *queue);
int services_unsubscribe(struct services *s, int id);
/* Runs the function at fn_idx with the nargs values above it in a new task. 0 or -1. */
int services_spawn(struct services *s, lua_State *L, int fn_idx, int nargs);

/* The script being loaded (NULL when none) and the number of its load. */
const char *services_loading(struct services *s, unsigned *gen);
/* How many service versions wait for their started function to return. */
int services_starting(struct services *s);
/* Of those, the ones loaded with the services folder at start (/healthz is 503 until 0). */
int services_startup_pending(struct services *s);
/* A buffer for encoding on the loop thread; reset at each call. */
codec_buf *services_scratch(struct services *s);
int services_rpc_count(struct services *s);
/* Appends the OpenAPI document of the RPCs (lualib/microservice_openapi.lua). 0 or -1 (err). */
int services_openapi(struct services *s, codec_buf *out, char *err, size_t errlen);
/* Per-RPC statistics, for the NATS service API and /metrics. */
#define SERVICES_HIST_BUCKETS 10                                     /* the last one is +Inf */
extern const double services_hist_bounds[SERVICES_HIST_BUCKETS - 1]; /* seconds */

typedef struct rpc_stats {
    const char *subject; /* "service.method", also the queue group */
    const char *method;
    uint64_t calls, errors, time_ns;
    const char *last_error; /* "" when none */
    const uint32_t *hist;   /* SERVICES_HIST_BUCKETS counts */
} rpc_stats;

typedef struct service_desc {
    const char *name, *id, *version, *description;
    const char *metadata_json; /* a JSON object */
    const char *file;
    double started; /* unix time */
} service_desc;

/* Calls fn for every loaded service (one per script). */
void services_each_service(struct services *s, void (*fn)(void *u, const service_desc *d), void *u);
/* Calls fn for every RPC of file (NULL: of every file). */
void services_each_rpc(struct services *s, const char *file,
                       void (*fn)(void *u, const rpc_stats *st), void *u);
/* How many times a script failed to load since start. */
int services_load_errors(struct services *s);
/* The first line (file:line: message) of the i-th load error (the first 16 are kept), or NULL. */
const char *services_load_message(struct services *s, int i);
/* Prints "procedure(param: type, ...)" for every RPC, sorted (types from the rpc spec's schemas);
 * returns how many. */
int services_print(struct services *s, FILE *out);
/* For in-process calls (tests): pushes the RPC's function and its arguments bound from the tables
 * at args_idx and kwargs_idx (absolute; 0 for none). Returns how many values it pushed, or -1
 * with a message in err and the URI in *uri. */
/* The name of the loaded RPC procedure as the registry owns it (valid while the RPC is loaded), or
 * NULL when no loaded service declares it. */
const char *services_procedure_name(struct services *s, const char *procedure);
/* An in-process call (local_dispatch.c): the reply a NATS caller would get, as a function call.
 * status is NB_OK (data and headers as a bus reply would carry them, valid during the call) or
 * NB_TIMEOUT (the caller's timeout passed: the callee was abandoned). */
typedef void (*services_reply_fn)(void *udata, int status, const char *data, size_t len,
                                  const char *const *headers);
/* What a call brings, from a NATS message or from an in-process caller. */
typedef struct services_call {
    const char *data; /* the envelope [args, kwargs] (JSON) */
    size_t len;
    double timeout_s;              /* how long the caller waits; <= 0: not said */
    const char *authid, *authrole; /* the caller when known (checked or signed); NULL: none */
    const char *traceparent;       /* W3C traceparent of the caller, or NULL */
} services_call;
struct task;
/* Runs procedure's current version in this process through the very path a request from NATS
 * takes (admission, envelope, deadline, binding, metrics); fn gets the reply, once (also when the
 * call is refused before it starts: then this returns NULL). Returns the running task (abandon
 * it with sched_abandon) or NULL; *found is false when no loaded service declares procedure, or
 * its service is shared (then fn is never called). Not from inside a task: the callee starts at
 * once on the C stack. */
/* A loaded Lua service declares procedure and does not share it with WAMP callees (shared =
 * true: calls are balanced over the bus with them). */
bool services_serves_alone(struct services *s, const char *procedure);
struct task *services_call_local(struct services *s, const char *procedure, const services_call *in,
                                 services_reply_fn fn, void *udata, bool *found);
int services_bind(struct services *s, lua_State *L, const char *procedure, int args_idx,
                  int kwargs_idx, const char **uri, char *err, size_t errlen);

#endif
