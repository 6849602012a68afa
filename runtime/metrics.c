/* metrics.c: owns the Prometheus text exposition (format 0.0.4) of the process: per-RPC calls,
 * errors and a latency histogram; gateway responses by status; WAMP sessions, subscriptions and
 * registrations; NATS and PostgreSQL state and queue depths; calls in flight; Lua memory; with
 * --auth, sign-in failures and the limiter's refusals. It only reads what each subsystem counts. */
#include "metrics.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "auth_limit.h"
#include "http_gateway.h"
#include "jetstream.h"
#include "local_dispatch.h"
#include "nats_bridge.h"
#include "pg_pool.h"
#include "scheduler.h"
#include "services.h"
#include "wamp_router.h"

static void put(codec_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* In an ASan build malloc is the sanitizer's; it counts the bytes in use itself (freed memory in
 * its quarantine excluded). Absent otherwise (a weak reference resolves to NULL). */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/* Bytes the process has allocated with malloc and not freed: what a leak makes grow, unlike RSS,
 * which also holds the allocator's free lists (and, under ASan, its quarantine). */
static size_t heap_in_use(void)
{
    if (__sanitizer_get_current_allocated_bytes) return __sanitizer_get_current_allocated_bytes();
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void put(codec_buf *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) codec_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void header(codec_buf *out, const char *name, const char *type, const char *help)
{
    put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef struct rpc_pass {
    codec_buf *out;
    int part;
} rpc_pass;

static void rpc_line(void *u, const rpc_stats *st)
{
    rpc_pass *p = u;
    switch (p->part) {
    case 0:
        put(p->out, "microservice_rpc_calls_total{procedure=\"%s\"} %llu\n", st->subject,
            (unsigned long long)st->calls);
        break;
    case 1:
        put(p->out, "microservice_rpc_errors_total{procedure=\"%s\"} %llu\n", st->subject,
            (unsigned long long)st->errors);
        break;
    default: {
        unsigned long long cum = 0;
        for (int b = 0; b < SERVICES_HIST_BUCKETS; b++) {
            cum += st->hist[b];
            if (b < SERVICES_HIST_BUCKETS - 1)
                put(p->out,
                    "microservice_rpc_duration_seconds_bucket{procedure=\"%s\",le=\"%g\"} %llu\n",
                    st->subject, services_hist_bounds[b], cum);
            else
                put(p->out,
                    "microservice_rpc_duration_seconds_bucket{procedure=\"%s\",le=\"+Inf\"} %llu\n",
                    st->subject, cum);
        }
        put(p->out, "microservice_rpc_duration_seconds_sum{procedure=\"%s\"} %.9f\n", st->subject,
            (double)st->time_ns / 1e9);
        put(p->out, "microservice_rpc_duration_seconds_count{procedure=\"%s\"} %llu\n", st->subject,
            cum);
    }
    }
}

/* Sign-ins: failures, the limiter (--auth-max-failures) and PBKDF2 work; only with --auth. */
static void render_auth(runtime *rt, codec_buf *out)
{
    if (!rt->auth) return;
    auth_limit_stats st;
    auth_limit_get_stats(rt->auth_limit, uv_now(&rt->loop), &st);
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"microservice_auth_failures_total", "counter",
         "Failed sign-ins: WAMP ticket or wampcra, HTTP bearer tokens.", (double)st.failures},
        {"microservice_auth_refusals_total", "counter",
         "Sign-ins refused unchecked: too many failures from the address or for the authid.",
         (double)st.refusals},
        {"microservice_auth_blocked", "gauge",
         "Client addresses and authids whose sign-ins are refused right now.", st.blocked},
        {"microservice_auth_max_failures", "gauge",
         "--auth-max-failures: failures per address or authid within the window (0: no limit).",
         st.max_failures},
        {"microservice_auth_failure_window_seconds", "gauge", "--auth-failure-window.",
         st.window_s},
        {"microservice_auth_derivations_total", "counter",
         "PBKDF2 derivations of WAMP tickets (for known and unknown authids alike).",
         (double)auth_derivations(rt->auth)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        header(out, rows[i].name, rows[i].type, rows[i].help);
        put(out, "%s %.17g\n", rows[i].name, rows[i].value);
    }
}

/* A counter with two labelled series. */
static void counter_pair(codec_buf *out, const char *name, const char *help, const char *label_a,
                         uint64_t a, const char *label_b, uint64_t b)
{
    header(out, name, "counter", help);
    put(out, "%s{%s} %llu\n", name, label_a, (unsigned long long)a);
    put(out, "%s{%s} %llu\n", name, label_b, (unsigned long long)b);
}

void metrics_render(runtime *rt, codec_buf *out)
{
    static const char *const parts[][3] = {
        {"microservice_rpc_calls_total", "counter", "Calls served, by procedure."},
        {"microservice_rpc_errors_total", "counter", "Calls that ended with an error."},
        {"microservice_rpc_duration_seconds", "histogram", "Time from taking a call to its end."},
    };
    for (int i = 0; i < 3; i++) {
        header(out, parts[i][0], parts[i][1], parts[i][2]);
        rpc_pass p = {out, i};
        services_each_rpc(rt->services, NULL, rpc_line, &p);
    }
    if (rt->http) {
        header(out, "microservice_http_responses_total", "counter",
               "Responses of the HTTP gateway, by status.");
        const uint64_t *by = http_gateway_status_counts(rt->http);
        for (int s = 100; s < 600; s++)
            if (by[s])
                put(out, "microservice_http_responses_total{status=\"%d\"} %llu\n", s,
                    (unsigned long long)by[s]);
        const http_gateway_stats *st = http_gateway_get_stats(rt->http);
        header(out, "microservice_http_calls_abandoned_total", "counter",
               "HTTP calls whose client went away (stream reset, connection closed) before the "
               "answer: before they were sent (never on the bus) or while waiting (cancelled).");
        put(out, "microservice_http_calls_abandoned_total{sent=\"false\"} %llu\n",
            (unsigned long long)st->abandoned_unsent);
        put(out, "microservice_http_calls_abandoned_total{sent=\"true\"} %llu\n",
            (unsigned long long)st->abandoned_sent);
        header(out, "microservice_http2_rapid_reset_total", "counter",
               "Connections closed for resetting calls faster than they were answered.");
        put(out, "microservice_http2_rapid_reset_total %llu\n",
            (unsigned long long)st->rapid_reset_conns);
        header(out, "microservice_http1_rearmed_total", "counter",
               "HTTP/1 connections read again after an answer without an epoll_ctl "
               "(--http1-rearm).");
        put(out, "microservice_http1_rearmed_total %llu\n", (unsigned long long)st->rearmed);
        header(out, "microservice_http_calls_in_flight", "gauge",
               "HTTP calls queued or waiting for their reply (--max-http-inflight).");
        put(out, "microservice_http_calls_in_flight %d\n", http_gateway_inflight(rt->http));
    }
    uint64_t local_calls = 0, bus_calls = 0;
    local_dispatch_counters(rt->local, &local_calls, &bus_calls);
    counter_pair(out, "microservice_calls_started_total",
                 "Calls made by this process (HTTP, WAMP, microservice.call), by where they went: "
                 "in-process (--prefer-local) or over NATS.",
                 "path=\"local\"", local_calls, "path=\"bus\"", bus_calls);
    int subs = 0, regs = 0;
    wamp_router_counts(rt->wamp, &subs, &regs);
    header(out, "microservice_wamp_sessions", "gauge", "Open WAMP sessions.");
    put(out, "microservice_wamp_sessions %d\n", wamp_router_sessions(rt->wamp));
    header(out, "microservice_wamp_subscriptions", "gauge", "Subscriptions held by WAMP sessions.");
    put(out, "microservice_wamp_subscriptions %d\n", subs);
    header(out, "microservice_wamp_registrations", "gauge", "Registrations held by WAMP sessions.");
    put(out, "microservice_wamp_registrations %d\n", regs);
    header(out, "microservice_nats_connected", "gauge", "1 when the NATS connection is up.");
    put(out, "microservice_nats_connected %d\n", nats_bridge_connected(rt->nats) ? 1 : 0);
    header(out, "microservice_nats_pending_requests", "gauge", "Requests waiting for a reply.");
    put(out, "microservice_nats_pending_requests %d\n", nats_bridge_pending_requests(rt->nats));
    header(out, "microservice_nats_subscriptions", "gauge", "NATS subscriptions of the process.");
    put(out, "microservice_nats_subscriptions %d\n", nats_bridge_sub_count(rt->nats));
    uint64_t dropped = 0, ign_events = 0, ign_requests = 0;
    nats_bridge_counters(rt->nats, &dropped, &ign_events, &ign_requests);
    header(out, "microservice_nats_dropped_messages_total", "counter",
           "Subscription messages dropped because the queue to the loop was full.");
    put(out, "microservice_nats_dropped_messages_total %llu\n", (unsigned long long)dropped);
    counter_pair(out, "microservice_nats_ignored_messages_total",
                 "Messages refused by the bus rule: events sent to an RPC, requests sent to a "
                 "subscriber.",
                 "kind=\"event_to_rpc\"", ign_events, "kind=\"request_to_subscriber\"",
                 ign_requests);
    header(out, "microservice_postgres_connections_up", "gauge",
           "PostgreSQL connections up (0 without a database).");
    put(out, "microservice_postgres_connections_up %d\n", pg_pool_connections_up(rt->pg));
    header(out, "microservice_postgres_queue_depth", "gauge", "Queries waiting for a connection.");
    put(out, "microservice_postgres_queue_depth %d\n", pg_pool_queue_depth(rt->pg));
    header(out, "microservice_calls_in_flight", "gauge", "Lua coroutines running (calls, spawns).");
    put(out, "microservice_calls_in_flight %d\n", sched_inflight(rt->sched));
    header(out, "microservice_heap_bytes", "gauge",
           "Bytes allocated with malloc and not freed (the Lua heap, LuaJIT's own, is apart).");
    put(out, "microservice_heap_bytes %zu\n", heap_in_use());
    header(out, "microservice_lua_memory_bytes", "gauge", "Memory of the Lua state.");
    put(out, "microservice_lua_memory_bytes %zu\n", rt->lua_mem.used);
    header(out, "microservice_lua_memory_limit_bytes", "gauge",
           "--max-lua-memory: calls are refused above it (0: no limit).");
    put(out, "microservice_lua_memory_limit_bytes %zu\n", rt->lua_mem.limit);
    header(out, "microservice_lua_memory_refusals_total", "counter",
           "Calls refused, and allocations failed, at the Lua memory limits (call: heap over the "
           "limit; too_large: arguments over --max-call-memory; large_args: no room for large "
           "arguments).");
    put(out, "microservice_lua_memory_refusals_total{what=\"call\"} %llu\n",
        (unsigned long long)rt->lua_mem.refused_calls);
    put(out, "microservice_lua_memory_refusals_total{what=\"allocation\"} %llu\n",
        (unsigned long long)rt->lua_mem.failed_allocs);
    put(out, "microservice_lua_memory_refusals_total{what=\"too_large\"} %llu\n",
        (unsigned long long)rt->lua_mem.too_large_calls);
    put(out, "microservice_lua_memory_refusals_total{what=\"large_args\"} %llu\n",
        (unsigned long long)rt->lua_mem.large_refusals);
    header(out, "microservice_lua_memory_large_args_bytes", "gauge",
           "Lua memory the large arguments (over 64 KiB) of the calls in flight took.");
    put(out, "microservice_lua_memory_large_args_bytes %zu\n", rt->lua_mem.large_held);
    header(out, "microservice_lua_memory_large_args_limit_bytes", "gauge",
           "What they may take together (a quarter of the limit; 0: no bound).");
    put(out, "microservice_lua_memory_large_args_limit_bytes %zu\n", rt->lua_mem.large_cap);
    if (rt->js) jetstream_metrics(rt->js, out);
    render_auth(rt, out);
}
