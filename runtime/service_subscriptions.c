/* service_subscriptions.c: owns the subscriptions scripts make with microservice.subscribe: one
 * NATS subscription each, a task per message (through service_calls.c), and their removal on
 * unsubscribe or when the script that made them while loading is reloaded or removed. */
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
#include "trace.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "service_hooks.h"
#include "service_internal.h"
#include "services.h"
#include "timers.h"

void service_sub_free(service_sub *ls)
{
    struct services *s = ls->svcs;
    for (service_sub **p = &s->subs; *p; p = &(*p)->next) {
        if (*p == ls) {
            *p = ls->next;
            break;
        }
    }
    if (s->rt->L) luaL_unref(s->rt->L, LUA_REGISTRYINDEX, ls->fn_ref);
    free(ls->subject);
    free(ls->file);
    free(ls);
}

void service_sub_release(service_sub *ls)
{
    if (--ls->tasks == 0 && ls->unsubscribed) service_sub_free(ls);
}

static void on_sub_msg(void *udata, natsMsg *msg)
{
    service_sub *ls = udata;
    struct services *s = ls->svcs;
    if (nats_bridge_misdirected(s->rt->nats, msg, false)) return; /* requests are for RPCs */
    if (!mlua_memory_admit(&s->rt->lua_mem)) {
        log_warn(ls->subject, "message on %s dropped: Lua memory limit reached (%zu MiB)",
                 natsMsg_GetSubject(msg), s->rt->lua_mem.limit >> 20);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    call_ctx *c = service_call_ctx_new(s, natsMsg_GetReply(msg));
    task *t = c ? sched_task_new(s->rt->sched, service_call_done, c, ls->subject) : NULL;
    if (!t) {
        free(c);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    lua_State *co = t->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->fn_ref);
    if (service_push_envelope(s, c, co, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                              natsMsg_GetSubject(msg), ls->subject) != 0) {
        sched_task_discard(t);
        free(c);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    service_take_trace(t, service_msg_header(msg, TRACE_HEADER));
    lua_pushstring(co, natsMsg_GetSubject(msg));
    nats_bridge_release(s->rt->nats, msg);
    c->sub = ls;
    ls->tasks++;
    sched_start(t, 3);
}

int services_subscribe(struct services *s, lua_State *L, const char *subject, const char *queue)
{
    int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* first: it may raise (out of memory) */
    service_sub *ls = calloc(1, sizeof *ls);
    if (!ls || !(ls->subject = strdup(subject))) {
        free(ls);
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
        return -1;
    }
    ls->svcs = s;
    ls->id = ++s->next_sub_id;
    ls->fn_ref = fn_ref;
    if (s->loading_file) { /* made by a script while it loads: goes when it is reloaded */
        ls->file = strdup(s->loading_file);
        ls->load_gen = s->load_gen;
    }
    ls->sub = nats_bridge_subscribe(s->rt->nats, subject, queue, on_sub_msg, ls);
    ls->next = s->subs;
    s->subs = ls;
    if (!ls->sub) {
        ls->unsubscribed = true;
        service_sub_free(ls);
        return -1;
    }
    return ls->id;
}

void service_unsubscribe_entry(struct services *s, service_sub *ls)
{
    (void)s;
    if (ls->sub) nb_sub_close(ls->sub);
    ls->sub = NULL;
    ls->unsubscribed = true;
    if (ls->tasks == 0) service_sub_free(ls);
}

int services_unsubscribe(struct services *s, int id)
{
    for (service_sub *ls = s->subs; ls; ls = ls->next) {
        if (ls->id != id || ls->unsubscribed) continue;
        service_unsubscribe_entry(s, ls);
        return 0;
    }
    return -1;
}
