/* runtime.h: the one runtime struct. Every piece of mutable state of the process hangs off it:
 * the loop, the Lua state and each subsystem, which owns its own handles and allocations. */
#ifndef MICROSERVICE_RUNTIME_H
#define MICROSERVICE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>
#include <lua.h>

#include "mlua_memory.h"

/* Credentials and TLS for the NATS connection (see nats_auth.h); NULL: not set. */
typedef struct nats_auth_config {
    const char *user, *password; /* also accepted as nats://user:password@host in the URL */
    const char *token;
    const char *nkey_seed_file; /* NKey user seed (SU...); the public key is derived from it */
    const char *creds_file;     /* user JWT and seed (.creds) */
    bool tls;                   /* require TLS (also implied by tls:// URLs, ca, cert) */
    const char *ca_file;        /* CA certificates for the server's certificate */
    const char *cert_file, *key_file; /* client certificate (mutual TLS) */
} nats_auth_config;

typedef struct runtime_config {
    bool http_enabled;
    char http_host[256];
    int http_port;
    const char *tls_cert; /* PEM certificate chain; NULL: no HTTPS listener */
    const char *tls_key;  /* PEM private key */
    char https_host[256];
    int https_port;
    bool http_redirect;   /* the plain listener answers 308 to https (except /healthz) */
    const char *nats_url; /* one URL or a comma-separated list; NULL: no bus (offline) */
    nats_auth_config nats_auth;
    const char *postgres;    /* NULL: no database */
    int postgres_pool;       /* connections */
    int postgres_statements; /* prepared statements per connection (0: none) */
    double postgres_wait;    /* seconds to wait for the database at start-up (migrations) */
    const char *frontend_dir;
    const char *services_dir;
    /* `microservice test --nats`: RPCs served on PREFIX<procedure> only (NULL: as named) */
    const char *rpc_subject_prefix;
    int workers;
    size_t body_limit;           /* bytes, HTTP and NATS request bodies */
    int max_depth;               /* JSON nesting */
    double call_timeout;         /* seconds, default for HTTP and Lua calls */
    double drain_timeout;        /* seconds, for SIGTERM */
    int max_inflight;            /* concurrent RPC coroutines before NATS intake pauses */
    int max_sessions;            /* WAMP sessions per process */
    int max_session_subs;        /* subscriptions per WAMP session */
    int max_session_regs;        /* registrations per WAMP session */
    int max_session_calls;       /* calls in flight per WAMP session */
    double join_timeout;         /* seconds for a WAMP client to HELLO (and authenticate) */
    int max_callee_pending;      /* invocations waiting for one WAMP callee's answer */
    double session_idle_timeout; /* seconds a WAMP session may send nothing; 0: no limit */
    const char *auth_file;       /* NULL: authentication off */
    bool watch;                  /* hot reload of the services folder */
    bool reuse_port;             /* SO_REUSEPORT on the HTTP listeners (workers share them) */
    /* failed sign-ins per client address or authid within the window (seconds); 0: no limit */
    int auth_max_failures;
    double auth_failure_window;
    /* seconds a caller identity signed on the bus stays valid, either way (clock skew) */
    double auth_signature_window;
    /* RPC calls in flight on one HTTP connection (HTTP/2 streams) */
    int max_conn_inflight;
    /* HTTP calls in flight in the process (waiting to be sent or for their reply); 503 beyond */
    int max_http_inflight;
    /* seconds: the longest timeout a caller may ask for (HTTP ?timeout=, WAMP options.timeout,
     * the Microservice-Timeout of a request taken from NATS); longer ones are lowered to it */
    double max_call_timeout;
    /* bytes of Lua heap above which calls are refused (twice: allocations fail); 0: no limit */
    size_t max_lua_memory;
    /* Lua memory the decoded arguments of one call may take (413 beyond); 0: no bound;
     * SIZE_MAX: max_lua_memory / 8 */
    size_t max_call_memory;
    int http_client_max;   /* outbound HTTP transfers at once */
    int http_client_queue; /* more outbound HTTP requests waiting for one of them */
    bool no_hooks;         /* the services' started / stopped are not run (`microservice list`) */
    bool prefer_local;     /* calls of RPCs served here run in-process (local_dispatch.h) */
    bool http1_rearm;      /* HTTP/1 read restarts without epoll_ctl (epoll_rearm.h) */
} runtime_config;

struct scheduler;
struct nats_bridge;
struct http_gateway;
struct services;
struct pg_pool;
struct wamp_router;
struct service_watch;
struct nats_micro;
struct auth;
struct auth_limit;
struct http_client;
struct timers;
struct jetstream;
struct local_dispatch;

typedef struct runtime {
    uv_loop_t loop;
    lua_State *L;
    mlua_memory lua_mem; /* L's allocator: heap accounting and --max-lua-memory */
    runtime_config cfg;
    struct scheduler *sched;
    struct nats_bridge *nats;
    struct http_gateway *http;
    struct services *services;
    struct pg_pool *pg;          /* NULL without a database */
    struct wamp_router *wamp;    /* NULL with neither HTTP nor HTTPS */
    struct service_watch *watch; /* hot reload; NULL when not watching */
    struct nats_micro *srv_api;  /* $SRV.*; NULL without a bus */
    struct auth *auth;           /* NULL: authentication off */
    /* failed sign-ins (auth_limit.h); NULL when authentication is off */
    struct auth_limit *auth_limit;
    struct http_client *httpc;    /* outbound HTTP (microservice.http) */
    struct timers *timers;        /* microservice.every / after */
    struct jetstream *js;         /* JetStream bookkeeping (jetstream.h) */
    struct local_dispatch *local; /* in-process calls (local_dispatch.h) */
    uv_signal_t sigint, sigterm;
    uv_timer_t drain_timer;
    uv_timer_t listen_timer; /* a worker listens without the bus after a while (runtime.c) */
    bool listening;          /* the HTTP gateway listens */
    uint64_t drain_deadline; /* uv_now() ms */
    bool shutting_down;
    bool finished; /* set once every subsystem is closed */
    int exit_code;
} runtime;

void runtime_config_defaults(runtime_config *cfg);
/* Builds every subsystem in order; on failure logs why, cleans up and returns -1. */
int runtime_init(runtime *rt, const runtime_config *cfg);
/* Runs the loop until shutdown completes; returns the process exit code. */
int runtime_run(runtime *rt);
/* SIGTERM path: stop accepting, let in-flight work finish (bounded), drain NATS, then stop. */
void runtime_shutdown(runtime *rt);
/* True when nothing is in flight any more (used by the drain). */
bool runtime_idle(runtime *rt);

#endif
