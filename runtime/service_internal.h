/* service_internal.h: what the parts of the services object share (services.c, service_loader.c,
 * service_registry.c, service_calls.c, service_subscriptions.c) and nothing outside them includes:
 * the RPC entry, the script subscription, the call context, the services struct, the service
 * metadata and the pending loads, and the functions one part offers the others. */
#ifndef MICROSERVICE_SERVICE_INTERNAL_H
#define MICROSERVICE_SERVICE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "codec.h"
#include "nats_bridge.h"
#include "rpc_binding.h"
#include "scheduler.h"
#include "services.h"

#define TAG "services"

typedef struct rpc_entry {
    struct services *svcs;
    char *subject; /* "<service>.<method>", also the queue group and the task label */
    rpc_binding binding;
    int fn_ref;
    int svc_ref;
    int rpc_ref; /* the rpc value itself (params, spec), for the API description */
    nb_sub *sub;
    nb_sub *probe; /* SERVICES_PROBE_PREFIX<subject>: says whether the RPC is shared */
    bool shared;   /* the service table says shared = true: WAMP callees may join */
    uint64_t calls, errors;
    uint64_t time_ns;                     /* total processing time */
    uint32_t hist[SERVICES_HIST_BUCKETS]; /* calls by duration (services_hist_bounds) */
    char last_error[200];
    char *method;
    char *file;    /* the script that declares it */
    int tasks;     /* calls running; a retired entry is freed when this reaches 0 */
    bool retired;  /* no longer declared: on the retired list */
    bool draining; /* its subscription may still deliver what the server sent before */
    struct rpc_entry *next;
    struct rpc_entry *hash_next; /* its bucket of services.rpc_index */
} rpc_entry;

typedef struct service_sub {
    struct services *svcs;
    int id;
    char *subject;
    int fn_ref;
    nb_sub *sub;
    int tasks; /* running handlers; the entry lives until they end */
    bool unsubscribed;
    char *file;        /* the script that subscribed while loading, or NULL */
    unsigned load_gen; /* which load of that script */
    struct service_sub *next;
} service_sub;

/* What a running call needs at its end; owned by the task (its udata). */
typedef struct call_ctx {
    struct services *svcs;
    rpc_entry *rpc;
    service_sub *sub;
    uint64_t started;         /* uv_hrtime() when the message was taken */
    char authid[AUTH_ID_MAX]; /* the caller, when a trusted gateway signed it; "" otherwise */
    char authrole[AUTH_ROLE_MAX];
    size_t args_held; /* the share of the Lua memory for large arguments it holds (mlua_memory.c) */
    services_reply_fn reply_fn; /* an in-process call's reply (local_dispatch.c), or NULL */
    void *reply_udata;
    task *task;                   /* a request taken from NATS, while it runs */
    struct call_ctx *prev, *next; /* on the services' bus_calls list, for SERVICES_CANCEL_SUBJECT */
    bool listed;
    char reply[]; /* reply subject, "" when the message had none */
} call_ctx;

#define LOAD_MESSAGES_MAX 16

/* Buckets of the index of declared RPCs by subject: every call served here looks its procedure
 * up, so the lookup stays short with hundreds of RPCs. */
#define SERVICES_RPC_BUCKETS 512

struct services {
    runtime *rt;
    rpc_entry *rpcs;
    int nrpcs;
    rpc_entry *rpc_index[SERVICES_RPC_BUCKETS]; /* the entries of rpcs by subject */
    service_sub *subs;
    int next_sub_id;
    rpc_entry *retired;         /* no longer declared, calls still running */
    struct service_meta *metas; /* one per loaded script */
    const char *loading_file;
    unsigned load_gen;
    struct pending_load *pending; /* versions whose started function runs */
    bool loading_dir;             /* services_load_dir runs: its loads are the start-up's */
    int load_errors;              /* scripts that failed to load, since start */
    /* the first line of the first LOAD_MESSAGES_MAX of those errors (for `microservice test`) */
    char *load_messages[LOAD_MESSAGES_MAX];
    int nload_messages;
    codec_buf scratch;
    nb_sub *cancel_sub;  /* SERVICES_CANCEL_SUBJECT */
    call_ctx *bus_calls; /* running requests taken from NATS that have a reply subject */
};

/* What a script's table says about its service, for the NATS service API. */
typedef struct service_meta {
    char *file, *name, *version, *description, *metadata_json;
    char id[24]; /* this process's instance of the service */
    double started;
    int svc_ref; /* the service table, for its stopped function; LUA_NOREF once used */
    struct service_meta *next;
} service_meta;

/* A version whose started function runs: it takes over when started returns. */
typedef struct pending_load {
    struct services *s;
    char *path;
    unsigned gen;
    int svc_ref;
    bool reload;
    bool startup;    /* loaded with the services folder at start: /healthz waits for it */
    bool superseded; /* a newer version was saved, or the script removed, meanwhile */
    struct pending_load *next;
} pending_load;

/* service_loader.c: loading scripts */
void service_meta_free(service_meta *m);
void service_push_infos(struct services *s, lua_State *L);
void service_run_stopped(struct services *s, int ref);

/* service_registry.c: the RPC registry */
int service_declare_rpc(struct services *s, lua_State *L, int svc_idx, const char *subject,
                        const char *file, bool *added);
bool service_is_rpc_value(lua_State *L, int idx);
rpc_entry *service_rpc_find(struct services *s, const char *subject);
void service_rpc_free(rpc_entry *e);
void service_rpc_release(struct services *s, rpc_entry *e);
void service_rpc_retire(struct services *s, rpc_entry *e);

/* service_calls.c: calls and their replies */
call_ctx *service_call_ctx_new(struct services *s, const char *reply);
void service_call_done(task *t, enum task_end how, lua_State *co, int nres);
void service_on_rpc_msg(void *udata, natsMsg *msg);
void service_on_cancel_msg(void *udata, natsMsg *msg);
int service_push_envelope(struct services *s, call_ctx *c, lua_State *co, const char *data,
                          size_t len, const char *subject, const char *label);
void service_take_trace(task *t, const char *traceparent);
const char *service_msg_header(natsMsg *msg, const char *name);

/* service_subscriptions.c: microservice.subscribe */
void service_sub_free(service_sub *ls);
void service_sub_release(service_sub *ls);
void service_unsubscribe_entry(struct services *s, service_sub *ls);

#endif
