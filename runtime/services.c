/* services.c: owns the services object's life (creation, drain at shutdown, free) and its scratch
 * buffer. The service scripts and everything they declare are handled by its parts, behind
 * service_internal.h: service_loader.c (running scripts, reloading, what a script says about its
 * service), service_registry.c (the RPC registry and its views: list, OpenAPI, bind),
 * service_calls.c (a NATS message to a task and the task's end to the reply; spawned functions)
 * and service_subscriptions.c (microservice.subscribe). */
#include "services.h"

#include <lauxlib.h>
#include <stdlib.h>

#include "nats_bridge.h"
#include "service_internal.h"

struct services *services_new(runtime *rt)
{
    struct services *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->rt = rt;
    codec_buf_init(&s->scratch);
    return s;
}

codec_buf *services_scratch(struct services *s)
{
    codec_buf_reset(&s->scratch);
    return &s->scratch;
}

/* ---- life cycle ---- */

void services_drain(struct services *s)
{
    if (s->cancel_sub) nb_sub_close(s->cancel_sub);
    s->cancel_sub = NULL;
    for (rpc_entry *e = s->rpcs; e; e = e->next) {
        if (e->sub) nb_sub_drain(e->sub);
        e->sub = NULL; /* the bridge frees it once drained */
        if (e->probe) nb_sub_close(e->probe);
        e->probe = NULL;
    }
    for (service_sub *ls = s->subs; ls; ls = ls->next) {
        if (ls->sub) nb_sub_drain(ls->sub);
        ls->sub = NULL;
    }
    for (service_meta *m = s->metas; m; m = m->next) { /* the drain waits for them */
        service_run_stopped(s, m->svc_ref);
        m->svc_ref = LUA_NOREF;
    }
}

void services_free(struct services *s)
{
    if (!s) return;
    while (s->rpcs) {
        rpc_entry *e = s->rpcs;
        s->rpcs = e->next;
        service_rpc_free(e);
    }
    while (s->retired) {
        rpc_entry *e = s->retired;
        s->retired = e->next;
        service_rpc_free(e);
    }
    while (s->subs) {
        s->subs->unsubscribed = true;
        service_sub_free(s->subs);
    }
    while (s->metas) {
        service_meta *m = s->metas;
        s->metas = m->next;
        service_meta_free(m);
    }
    codec_buf_free(&s->scratch);
    for (int i = 0; i < s->nload_messages; i++)
        free(s->load_messages[i]);
    free(s);
}
