/* service_registry.c: owns the RPC registry: one entry per RPC a loaded script declares, with its
 * NATS queue subscription (subject and queue group "<service>.<method>"), its probe subject (is it
 * shared with WAMP callees), its binding and counters; retiring entries a new version no longer
 * declares; and the registry's views for the command line, the gateway and tests (list, OpenAPI
 * document, bind, per-RPC statistics). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "mlua_api.h"
#include "mlua_error.h"
#include "nats_bridge.h"
#include "rpc_binding.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "service_hooks.h"
#include "service_internal.h"
#include "services.h"
#include "timers.h"

int services_rpc_count(struct services *s)
{
    return s->nrpcs;
}

void service_rpc_free(rpc_entry *e)
{
    lua_State *L = e->svcs->rt->L;
    if (L && e->fn_ref > 0) { /* 0: never set (luaL_ref starts at 1) */
        luaL_unref(L, LUA_REGISTRYINDEX, e->fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, e->svc_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, e->rpc_ref);
    }
    rpc_binding_free(&e->binding);
    free(e->subject);
    free(e->method);
    free(e->file);
    free(e);
}

static void list_remove(rpc_entry **head, rpc_entry *e)
{
    for (rpc_entry **p = head; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            return;
        }
    }
}

/* A retired entry goes when no call runs and its subscription can deliver nothing more. */
static void rpc_maybe_free(struct services *s, rpc_entry *e)
{
    if (!e->retired || e->tasks > 0 || e->draining) return;
    list_remove(&s->retired, e);
    service_rpc_free(e);
}

void service_rpc_release(struct services *s, rpc_entry *e)
{
    e->tasks--;
    rpc_maybe_free(s, e);
}

static void rpc_sub_gone(void *udata)
{
    rpc_entry *e = udata;
    e->sub = NULL;
    e->draining = false;
    rpc_maybe_free(e->svcs, e);
}

/* The bucket of services.rpc_index that holds subject. */
static rpc_entry **rpc_bucket(struct services *s, const char *subject)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)subject; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->rpc_index[h % SERVICES_RPC_BUCKETS];
}

static void rpc_index_remove(struct services *s, rpc_entry *e)
{
    for (rpc_entry **p = rpc_bucket(s, e->subject); *p; p = &(*p)->hash_next) {
        if (*p != e) continue;
        *p = e->hash_next;
        e->hash_next = NULL;
        return;
    }
}

/* No longer declared: no new calls (the subscription drains), freed after the last one. */
void service_rpc_retire(struct services *s, rpc_entry *e)
{
    list_remove(&s->rpcs, e);
    rpc_index_remove(s, e);
    s->nrpcs--;
    e->retired = true;
    e->next = s->retired;
    s->retired = e;
    log_info(TAG, "%s: RPC %s removed", e->file, e->subject);
    if (e->probe) nb_sub_close(e->probe);
    e->probe = NULL;
    if (e->sub) {
        e->draining = true;
        nb_sub_drain_notify(e->sub, rpc_sub_gone); /* may call rpc_sub_gone at once */
        return;
    }
    rpc_maybe_free(s, e);
}

rpc_entry *service_rpc_find(struct services *s, const char *subject)
{
    for (rpc_entry *e = *rpc_bucket(s, subject); e; e = e->hash_next)
        if (strcmp(e->subject, subject) == 0) return e;
    return NULL;
}

/* The rpc value on top of L becomes e's code (binding, function, service table at svc_idx). */
static int rpc_set_code(rpc_entry *e, lua_State *L, int svc_idx)
{
    char err[128];
    rpc_binding b;
    if (rpc_binding_init(&b, L, -1, err, sizeof err) != 0) {
        log_error(TAG, "%s: %s: %s", e->file, e->subject, err);
        return -1;
    }
    if (e->binding.names || e->binding.nparams) rpc_binding_free(&e->binding);
    e->binding = b;
    if (e->fn_ref > 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, e->fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, e->svc_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, e->rpc_ref);
    }
    lua_pushvalue(L, -1);
    e->rpc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "fn");
    e->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, svc_idx);
    e->svc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* The service table at svc_idx says shared = true. */
static bool service_shared(lua_State *L, int svc_idx)
{
    lua_getfield(L, svc_idx, "shared");
    bool yes = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return yes;
}

/* A request on the RPC's probe subject: {"shared": true|false}. */
static void on_probe_msg(void *udata, natsMsg *msg)
{
    rpc_entry *e = udata;
    const char *reply = natsMsg_GetReply(msg);
    const char *text = e->shared ? "{\"shared\":true}" : "{\"shared\":false}";
    if (reply) nats_bridge_publish(e->svcs->rt->nats, reply, NULL, text, strlen(text), NULL);
    nats_bridge_release(e->svcs->rt->nats, msg);
}

static void rpc_probe_subscribe(struct services *s, rpc_entry *e, const char *bus_subject)
{
    char probe[700];
    snprintf(probe, sizeof probe, SERVICES_PROBE_PREFIX "%s", bus_subject);
    e->probe = nats_bridge_subscribe(s->rt->nats, probe, probe, on_probe_msg, e);
    if (!e->probe) log_error(TAG, "%s: %s could not be subscribed", e->file, probe);
}

/* Declares subject for file with the rpc value on top of L: new code for an RPC this file already
 * declares, or a new subscribed RPC. */
int service_declare_rpc(struct services *s, lua_State *L, int svc_idx, const char *subject,
                        const char *file, bool *added)
{
    rpc_entry *e = service_rpc_find(s, subject);
    *added = false;
    if (e && strcmp(e->file, file) != 0) {
        log_error(TAG, "%s: %s is already declared by %s; skipped", file, subject, e->file);
        return -1;
    }
    if (e) {
        e->shared = service_shared(L, svc_idx);
        return rpc_set_code(e, L, svc_idx);
    }
    e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->svcs = s;
    e->subject = strdup(subject);
    e->method = strdup(strrchr(subject, '.') ? strrchr(subject, '.') + 1 : subject);
    e->file = strdup(file);
    e->shared = service_shared(L, svc_idx);
    if (!e->subject || !e->method || !e->file || rpc_set_code(e, L, svc_idx) != 0) {
        service_rpc_free(e);
        return -1;
    }
    const char *prefix = s->rt->cfg.rpc_subject_prefix;
    char bus_subject[600];
    snprintf(bus_subject, sizeof bus_subject, "%s%s", prefix ? prefix : "", subject);
    e->sub =
        nats_bridge_subscribe_polled(s->rt->nats, bus_subject, bus_subject, service_on_rpc_msg, e);
    if (!e->sub) log_error(TAG, "%s: %s could not be subscribed", file, bus_subject);
    rpc_probe_subscribe(s, e, bus_subject);
    e->next = s->rpcs;
    s->rpcs = e;
    rpc_entry **bucket = rpc_bucket(s, e->subject);
    e->hash_next = *bucket;
    *bucket = e;
    s->nrpcs++;
    *added = true;
    log_debug(TAG, "%s: RPC %s", file, subject);
    return 0;
}

bool service_is_rpc_value(lua_State *L, int idx)
{
    return mlua_api_is_table_of(L, idx, MS_RPC_MT);
}

/* ---- for the command line and tests ---- */

static int compare_rpcs(const void *a, const void *b)
{
    return strcmp((*(rpc_entry *const *)a)->subject, (*(rpc_entry *const *)b)->subject);
}

/* The active RPCs sorted by subject, in an array the caller frees; NULL without memory. */
static rpc_entry **sorted_rpcs(struct services *s, int *n)
{
    rpc_entry **v = calloc((size_t)s->nrpcs + 1, sizeof *v);
    if (!v) return NULL;
    *n = 0;
    for (rpc_entry *e = s->rpcs; e; e = e->next)
        v[(*n)++] = e;
    qsort(v, (size_t)*n, sizeof *v, compare_rpcs);
    return v;
}

/* "(name: T, ...)" from require("microservice.schema").signature(rpc) pushed on L, or NULL. */
static const char *rpc_signature(lua_State *L, rpc_entry *e)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "microservice.schema");
    if (mlua_pcall(L, 1, 1) != 0) return NULL;
    lua_getfield(L, -1, "signature");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->rpc_ref);
    if (mlua_pcall(L, 1, 1) != 0) return NULL;
    return lua_tostring(L, -1);
}

int services_print(struct services *s, FILE *out)
{
    int n;
    rpc_entry **v = sorted_rpcs(s, &n);
    if (!v) return -1;
    lua_State *L = s->rt->L;
    for (int i = 0; i < n; i++) {
        int top = lua_gettop(L);
        const char *sig = rpc_signature(L, v[i]);
        if (sig) {
            fprintf(out, "%s%s\n", v[i]->subject, sig);
            lua_settop(L, top);
            continue;
        }
        lua_settop(L, top);
        fprintf(out, "%s(", v[i]->subject);
        for (int p = 0; p < v[i]->binding.nparams; p++)
            fprintf(out, "%s%s", p ? ", " : "", v[i]->binding.names[p]);
        fprintf(out, "%s)\n",
                v[i]->binding.vararg ? (v[i]->binding.nparams ? ", ..." : "...") : "");
    }
    free(v);
    return n;
}

const char *services_procedure_name(struct services *s, const char *procedure)
{
    rpc_entry *e = service_rpc_find(s, procedure);
    return e ? e->subject : NULL;
}

int services_bind(struct services *s, lua_State *L, const char *procedure, int args_idx,
                  int kwargs_idx, const char **uri, char *err, size_t errlen)
{
    rpc_entry *e = service_rpc_find(s, procedure);
    if (!e) {
        *uri = URI_NO_SUCH_PROCEDURE;
        snprintf(err, errlen, "no loaded service declares %s", procedure);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->fn_ref);
    int n =
        rpc_binding_push(&e->binding, L, e->svc_ref, args_idx, kwargs_idx, e->subject, err, errlen);
    if (n < 0) {
        lua_pop(L, 1);
        *uri = URI_INVALID_ARGUMENT;
        return -1;
    }
    return n + 1;
}

/* The API description: require("microservice.openapi").document(rpcs, opts) with rpcs an array
 * of { procedure = "svc.method", rpc = <rpc value> } sorted by procedure and opts saying whether
 * bearer tokens are checked; it returns JSON text. */
int services_openapi(struct services *s, codec_buf *out, char *err, size_t errlen)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    int n;
    rpc_entry **v = sorted_rpcs(s, &n);
    if (!v) return -1;
    lua_getglobal(L, "require");
    lua_pushstring(L, "microservice.openapi");
    int rc = mlua_pcall(L, 1, 1);
    if (rc == 0) {
        lua_getfield(L, -1, "document");
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, v[i]->subject);
            lua_setfield(L, -2, "procedure");
            lua_rawgeti(L, LUA_REGISTRYINDEX, v[i]->rpc_ref);
            lua_setfield(L, -2, "rpc");
            lua_rawseti(L, -2, i + 1);
        }
        lua_createtable(L, 0, 3);
        service_push_infos(s, L);
        lua_setfield(L, -2, "services");
        lua_pushboolean(L, s->rt->auth != NULL);
        lua_setfield(L, -2, "bearer");
        lua_pushboolean(L, auth_anonymous_role(s->rt->auth) != NULL);
        lua_setfield(L, -2, "anonymous");
        rc = mlua_pcall(L, 2, 1);
    }
    free(v);
    size_t len;
    const char *text = rc == 0 ? lua_tolstring(L, -1, &len) : NULL;
    if (!text) {
        snprintf(err, errlen, "%s", rc ? lua_tostring(L, -1) : "document() returned no text");
        lua_settop(L, top);
        return -1;
    }
    codec_buf_reset(out); /* document() may have used the same scratch buffer */
    rc = codec_buf_append(out, text, len);
    lua_settop(L, top);
    return rc;
}

void services_each_rpc(struct services *s, const char *file,
                       void (*fn)(void *u, const rpc_stats *st), void *u)
{
    for (rpc_entry *e = s->rpcs; e; e = e->next) {
        if (file && strcmp(e->file, file) != 0) continue;
        rpc_stats st = {e->subject, e->method,     e->calls, e->errors,
                        e->time_ns, e->last_error, e->hist};
        fn(u, &st);
    }
}
