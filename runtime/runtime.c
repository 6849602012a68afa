/* runtime.c: owns the runtime struct and the order of things: start-up (Lua, NATS, services,
 * HTTP), signals, and the drain on SIGTERM/SIGINT:
 *   1. stop accepting HTTP connections and drain the RPC subscriptions (what the server already
 *      sent is still served);
 *   2. wait until no call is in flight, bounded by --drain-timeout; what is left is cancelled and
 *      answered 503;
 *   3. drain and close NATS (queued replies are flushed), then HTTP, then the loop ends. */
#include "runtime.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_limit.h"
#include "http_client.h"
#include "http_gateway.h"
#include "jetstream.h"
#include "local_dispatch.h"
#include "log.h"
#include "mlua_api.h"
#include "nats_auth.h"
#include "nats_bridge.h"
#include "options.h"
#include "pg_pool.h"
#include "scheduler.h"
#include "nats_micro.h"
#include "service_watch.h"
#include "services.h"
#include "timers.h"
#include "wamp_router.h"

#define TAG "runtime"

/* The defaults of the flags come from the options table (options.c); these fields have none. */
void runtime_config_defaults(runtime_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    options_defaults(cfg);
    cfg->services_dir = "./services";
    cfg->postgres_wait = 30.0;
    cfg->watch = true;
}

static void on_signal(uv_signal_t *h, int signum)
{
    runtime *rt = h->data;
    if (rt->shutting_down) {
        log_warn(TAG, "second %s: exiting at once", signum == SIGINT ? "SIGINT" : "SIGTERM");
        exit(1);
    }
    log_info(TAG, "%s: draining (up to %.1f s)", signum == SIGINT ? "SIGINT" : "SIGTERM",
             rt->cfg.drain_timeout);
    runtime_shutdown(rt);
}

/* A worker sharing the port listens once it can answer: when the bus is ready, or (see
 * listen_without_bus) when the RPCs it serves itself are all it can answer. */
static void listen_when_ready(void *arg)
{
    runtime *rt = arg;
    if (rt->shutting_down || !rt->http || rt->listening) return;
    uv_timer_stop(&rt->listen_timer);
    if (http_gateway_listen(rt->http) != 0) {
        log_error(TAG, "cannot listen: this worker stops");
        runtime_shutdown(rt);
        return;
    }
    rt->listening = true;
}

/* How long a worker that serves RPCs in-process waits for the bus before it listens anyway: its
 * own RPCs answer without NATS (local_dispatch.h), so a bus that is down at start-up must not
 * keep every worker off the port. */
#define LISTEN_WITHOUT_BUS_MS 3000

static void listen_without_bus(uv_timer_t *t)
{
    runtime *rt = t->data;
    if (rt->listening || nats_bridge_ready(rt->nats)) return;
    log_warn(TAG,
             "NATS is not reachable after %d s: listening anyway; the %d RPCs served here answer "
             "in-process, calls of others get 503 until the bus is back",
             LISTEN_WITHOUT_BUS_MS / 1000, services_rpc_count(rt->services));
    listen_when_ready(rt);
}

/* The bus pauses its intake while --max-inflight calls run (resumed by nats_bridge_kick). */
static bool intake_full(void *arg)
{
    runtime *rt = arg;
    return sched_inflight(rt->sched) >= rt->cfg.max_inflight;
}

/* Helpers shared by services live in DIR/lib (never loaded as services): first on package.path,
 * so require "name" finds DIR/lib/name.lua or DIR/lib/name/init.lua. */
static void add_lib_path(lua_State *L, const char *dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lib/?.lua;%s/lib/?/init.lua;%s", dir, dir,
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

int runtime_init(runtime *rt, const runtime_config *cfg)
{
    memset(rt, 0, sizeof *rt);
    rt->cfg = *cfg;
    if (uv_loop_init(&rt->loop) != 0) return -1;
    if (cfg->auth_file) {
        char err[512];
        if (auth_load(cfg->auth_file, &rt->auth, err, sizeof err) != 0) {
            log_error(TAG, "--auth %s", err);
            return -1;
        }
        auth_set_signature_window(rt->auth, cfg->auth_signature_window);
        rt->auth_limit = auth_limit_new(cfg->auth_max_failures, cfg->auth_failure_window);
        if (!rt->auth_limit) {
            log_error(TAG, "out of memory at start-up");
            return -1;
        }
        log_info(TAG, "authentication on (%s)%s", cfg->auth_file,
                 auth_bus_signing(rt->auth) ? ""
                                            : "; no bus_secret: callers' identities do not reach "
                                              "services over NATS");
    }
    rt->L = mlua_api_new_state(rt);
    if (rt->L) mlua_memory_attach(&rt->lua_mem, rt->L, cfg->max_lua_memory);
    if (rt->L && cfg->max_call_memory != SIZE_MAX) rt->lua_mem.call_cap = cfg->max_call_memory;
    rt->sched = rt->L ? sched_new(rt) : NULL;
    rt->nats = rt->sched ? nats_bridge_new(rt) : NULL;
    if (rt->nats) nats_bridge_set_pause(rt->nats, intake_full, rt);
    rt->services = rt->nats ? services_new(rt) : NULL;
    rt->httpc =
        rt->services ? http_client_new(rt, cfg->http_client_max, cfg->http_client_queue) : NULL;
    rt->timers = rt->httpc ? timers_new(rt, 10000) : NULL;
    rt->js = rt->timers ? jetstream_new(rt) : NULL;
    rt->local = rt->js ? local_dispatch_new(rt) : NULL;
    if (!rt->local) {
        log_error(TAG, "out of memory at start-up");
        return -1;
    }
    if (cfg->postgres) {
        /* before any RPC is subscribed: the services find their schema in place */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/migrations", cfg->services_dir);
        if (pg_pool_migrate(cfg->postgres, dir, cfg->postgres_wait) != 0) return -1;
        rt->pg =
            pg_pool_new(rt, cfg->postgres, cfg->postgres_pool, 10000, cfg->postgres_statements);
        if (!rt->pg) return -1;
        pg_pool_start(rt->pg);
    }
    if (cfg->nats_url && nats_bridge_connect(rt->nats) != 0) return -1;
    add_lib_path(rt->L, cfg->services_dir);
    if (services_load_dir(rt->services, cfg->services_dir) < 0) return -1;
    if (cfg->watch) rt->watch = service_watch_start(rt);
    if (cfg->nats_url) rt->srv_api = nats_micro_start(rt);
    if (cfg->http_enabled || cfg->tls_cert) {
        rt->wamp = wamp_router_new(rt);
        rt->http = rt->wamp ? http_gateway_new(rt) : NULL;
        if (!rt->http) return -1;
        if (cfg->reuse_port && cfg->nats_url) {
            /* a worker shares the port: it takes connections only once it can answer them, so
             * the kernel keeps sending them to the others while it starts (or restarts) */
            nats_bridge_on_ready(rt->nats, listen_when_ready, rt);
        } else if (http_gateway_listen(rt->http) != 0) {
            return -1;
        } else {
            rt->listening = true;
        }
    }
    uv_signal_init(&rt->loop, &rt->sigint);
    uv_signal_init(&rt->loop, &rt->sigterm);
    rt->sigint.data = rt->sigterm.data = rt;
    uv_signal_start(&rt->sigint, on_signal, SIGINT);
    uv_signal_start(&rt->sigterm, on_signal, SIGTERM);
    uv_timer_init(&rt->loop, &rt->drain_timer);
    rt->drain_timer.data = rt;
    uv_timer_init(&rt->loop, &rt->listen_timer);
    rt->listen_timer.data = rt;
    if (rt->http && !rt->listening && cfg->prefer_local && services_rpc_count(rt->services) > 0)
        uv_timer_start(&rt->listen_timer, listen_without_bus, LISTEN_WITHOUT_BUS_MS, 0);
    return 0;
}

bool runtime_idle(runtime *rt)
{
    if (sched_inflight(rt->sched) > 0) return false;
    if (rt->http && http_gateway_inflight(rt->http) > 0) return false;
    return nats_bridge_sub_count(rt->nats) == 0;
}

static void handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void http_closed(void *arg)
{
    runtime *rt = arg;
    rt->finished = true;
    http_client_close(rt->httpc); /* frees itself once its handles are closed */
    rt->httpc = NULL;
    local_dispatch_close(rt->local); /* the same */
    rt->local = NULL;
    uv_close((uv_handle_t *)&rt->sigint, handle_closed);
    uv_close((uv_handle_t *)&rt->sigterm, handle_closed);
    uv_close((uv_handle_t *)&rt->drain_timer, handle_closed);
    uv_close((uv_handle_t *)&rt->listen_timer, handle_closed);
    log_info(TAG, "stopped");
    /* a connection that would not close keeps the loop alive: do not wait for it */
    if (rt->http && http_gateway_connections(rt->http) > 0) uv_stop(&rt->loop);
}

static void pg_closed(void *arg)
{
    runtime *rt = arg;
    if (rt->wamp) wamp_router_close(rt->wamp); /* sessions that did not answer the close */
    if (rt->http)
        http_gateway_close(rt->http, http_closed, rt);
    else
        http_closed(rt);
}

static void nats_closed(void *arg)
{
    runtime *rt = arg;
    if (rt->pg)
        pg_pool_close(rt->pg, pg_closed, rt);
    else
        pg_closed(rt);
}

static void drain_tick(uv_timer_t *t)
{
    runtime *rt = t->data;
    bool idle = runtime_idle(rt);
    if (!idle && uv_now(&rt->loop) < rt->drain_deadline) return;
    uv_timer_stop(t);
    if (!idle && sched_inflight(rt->sched) > 0) {
        log_warn(TAG, "drain deadline reached: cancelling %d calls in flight",
                 sched_inflight(rt->sched));
        sched_cancel_all(rt->sched);
    }
    nats_bridge_close(rt->nats, nats_closed, rt);
}

void runtime_shutdown(runtime *rt)
{
    if (rt->shutting_down) return;
    rt->shutting_down = true;
    if (rt->http) http_gateway_stop_accepting(rt->http);
    if (rt->wamp) wamp_router_shutdown(rt->wamp);
    service_watch_stop(rt->watch); /* no reload while draining */
    rt->watch = NULL;
    nats_micro_stop(rt->srv_api);
    rt->srv_api = NULL;
    services_drain(rt->services);
    timers_stop(rt->timers);    /* runs in progress finish like calls */
    jetstream_shutdown(rt->js); /* durable consumers stop pulling */
    rt->drain_deadline = uv_now(&rt->loop) + (uint64_t)(rt->cfg.drain_timeout * 1000.0);
    uv_timer_start(&rt->drain_timer, drain_tick, 0, 10);
}

/* What keeps uv_loop_close from closing, counted by type (as Neovim's log_uv_handles): says
 * which subsystem left a handle. */
typedef struct handle_census {
    int total, count[UV_HANDLE_TYPE_MAX], active[UV_HANDLE_TYPE_MAX], closing[UV_HANDLE_TYPE_MAX];
} handle_census;

static void count_handle(uv_handle_t *h, void *arg)
{
    handle_census *c = arg;
    uv_handle_type type = uv_handle_get_type(h);
    if ((int)type < 0 || type >= UV_HANDLE_TYPE_MAX) type = UV_UNKNOWN_HANDLE;
    c->total++;
    c->count[type]++;
    c->active[type] += uv_is_active(h) != 0;
    c->closing[type] += uv_is_closing(h) != 0;
}

static void log_open_handles(uv_loop_t *loop)
{
    handle_census c = {0};
    uv_walk(loop, count_handle, &c);
    char list[1024] = "";
    size_t used = 0;
    for (int t = 0; t < UV_HANDLE_TYPE_MAX && used < sizeof list; t++) {
        if (!c.count[t]) continue;
        const char *name = uv_handle_type_name((uv_handle_type)t);
        int n = snprintf(list + used, sizeof list - used, "%s%d %s (%d active, %d closing)",
                         used ? ", " : "", c.count[t], name ? name : "unknown", c.active[t],
                         c.closing[t]);
        if (n < 0) break;
        used += (size_t)n;
    }
    log_debug(TAG, "loop closed with %d handles still open: %s", c.total, list);
}

int runtime_run(runtime *rt)
{
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    /* Everything of ours is closed; anything left belongs to a library that keeps a handle. */
    int rc = rt->finished ? rt->exit_code : 1;
    sched_free(rt->sched);
    rt->sched = NULL;
    timers_free(rt->timers); /* after the tasks of its runs */
    rt->timers = NULL;
    services_free(rt->services);
    rt->services = NULL;
    jetstream_free(rt->js);
    rt->js = NULL;
    http_gateway_free(rt->http);
    rt->http = NULL;
    wamp_router_free(rt->wamp);
    rt->wamp = NULL;
    mlua_memory_detach(&rt->lua_mem);
    lua_close(rt->L);
    rt->L = NULL;
    nats_bridge_free(rt->nats);
    rt->nats = NULL;
    local_dispatch_close(rt->local); /* when the loop ended without the shutdown path */
    rt->local = NULL;
    uv_run(&rt->loop, UV_RUN_NOWAIT); /* close callbacks of what was just freed */
    pg_pool_free(rt->pg);
    rt->pg = NULL;
    auth_free(rt->auth);
    rt->auth = NULL;
    auth_limit_free(rt->auth_limit);
    rt->auth_limit = NULL;
    if (uv_loop_close(&rt->loop) != 0) log_open_handles(&rt->loop);
    /* waits for nats.c's threads: exit() must not run the library's destructors under them */
    if (nats_CloseAndWait(NATS_CLOSE_WAIT_MS) == NATS_TIMEOUT)
        log_warn(TAG, "nats.c's threads did not end within %d ms", NATS_CLOSE_WAIT_MS);
    return rc;
}
