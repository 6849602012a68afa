/* local_dispatch.c: owns the choice between an in-process call and a call over NATS, and the
 * in-process calls themselves (issue 13).
 *
 * Why: when the gateway and the Lua service share a process, the bus round trip (two hops
 * through nats-server, which shares the cores) is most of the cost of a call. Like Moleculer's
 * preferLocal, a call of a procedure that a Lua service of this process declares (its current
 * version) runs here; anything else (another process's RPC, a WAMP callee, --prefer-local off,
 * a per-call local = false) goes over NATS as before.
 *
 * The same semantics either way: the callee runs through services_call_local, the function that
 * also serves a request taken from NATS (the envelope is decoded from the encoded body, so the
 * callee gets copies of the caller's tables; binding, schemas, Lua memory admission, deadline
 * from the caller's timeout, metrics, $SRV.STATS). Its reply is the bytes and headers a bus reply
 * would carry, handed over as an nb_reply (no natsMsg, which nats.c would free on its collector
 * thread), so the callers read both the same way. The caller's
 * identity is handed over as is: inside one process there is nothing to sign.
 *
 * A call is started in the check phase of the loop turn in which it was made, never on the
 * caller's C stack: a Lua caller is a running coroutine (coroutines never resume one another),
 * and the gateway and WAMP expect the reply after the start returns. The queue is emptied at
 * every turn; what it holds is bounded by the callers' own limits (HTTP calls in flight, calls
 * per WAMP session, tasks).
 *
 * Admission: with --max-inflight calls already running, a new call goes over the bus, where it
 * waits like any other (the intake is paused) or another process serves it. A procedure removed
 * by a reload between the call and its start goes over the bus too. */
#include "local_dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "scheduler.h"
#include "services.h"
#include "trace.h"

#define TAG "local"

struct local_call {
    local_dispatch *ld;
    nb_reply_fn fn; /* NULL once cancelled */
    void *udata;
    task *task;      /* the callee while it runs */
    nb_request *bus; /* sent over the bus after all (the procedure went away before the start) */
    bool starting;   /* inside services_call_local: a reply then only marks it done */
    bool done;
    struct local_call *next; /* the start queue */
    double timeout_s;
    bool has_caller;
    char authid[AUTH_ID_MAX], authrole[AUTH_ROLE_MAX];
    char traceparent[TRACEPARENT_LEN + 1];
    size_t len;
    char *subject; /* in buf, after the data */
    char buf[];
};

struct local_dispatch {
    runtime *rt;
    uv_check_t check; /* starts the queued calls */
    uv_idle_t idle;   /* keeps the poll phase from blocking while calls are queued */
    local_call *head, *tail;
    uint64_t local_calls, bus_calls;
    int open_handles;
    bool closing;
};

static void idle_cb(uv_idle_t *h)
{
    (void)h;
}

/* The callee's reply (services.h): to the caller as an nb_reply without a message, read as a
 * bus reply is (nats_bridge.h). */
static void local_reply(void *udata, int status, const char *data, size_t len,
                        const char *const *headers)
{
    local_call *lc = udata;
    nb_reply_fn fn = lc->fn;
    void *u = lc->udata;
    lc->task = NULL;
    if (lc->starting)
        lc->done = true; /* freed by start_one */
    else
        free(lc);
    if (!fn) return; /* the caller went away */
    if (status != NB_OK) {
        fn(u, status, NULL);
        return;
    }
    nb_reply reply = {NULL, data, len, headers};
    fn(u, NB_OK, &reply);
}

static void bus_reply(void *udata, enum nb_status status, const nb_reply *reply)
{
    local_call *lc = udata;
    nb_reply_fn fn = lc->fn;
    void *u = lc->udata;
    free(lc);
    fn(u, status, reply);
}

/* The procedure is gone (a reload removed it since the call was made): over the bus. */
static void start_on_bus(local_dispatch *ld, local_call *lc)
{
    const char *headers[] = {TRACE_HEADER, lc->traceparent, NULL};
    int rc = nats_bridge_request_as(
        ld->rt->nats, lc->subject, lc->buf, lc->len, lc->traceparent[0] ? headers : NULL,
        lc->has_caller ? lc->authid : NULL, lc->has_caller ? lc->authrole : NULL, lc->timeout_s,
        bus_reply, lc, &lc->bus);
    ld->bus_calls++;
    if (rc == NB_OK) return;
    nb_reply_fn fn = lc->fn;
    void *u = lc->udata;
    free(lc);
    fn(u, rc, NULL);
}

static void start_one(local_dispatch *ld, local_call *lc)
{
    services_call in = {lc->buf,
                        lc->len,
                        lc->timeout_s,
                        lc->has_caller ? lc->authid : NULL,
                        lc->has_caller ? lc->authrole : NULL,
                        lc->traceparent[0] ? lc->traceparent : NULL};
    bool found;
    lc->starting = true;
    task *t = services_call_local(ld->rt->services, lc->subject, &in, local_reply, lc, &found);
    lc->starting = false;
    if (lc->done) { /* answered already (refused, or the callee did not wait on anything) */
        free(lc);
        return;
    }
    if (!found) {
        start_on_bus(ld, lc);
        return;
    }
    lc->task = t;
}

/* Calls queued while this pass runs (a callee's reply resumes its caller, which may call again)
 * are started in the same pass, up to this many rounds, so a loop of calls does not wait for a
 * turn of the loop per call, nor starve the loop. */
#define CHECK_ROUNDS 64

static void check_cb(uv_check_t *h)
{
    local_dispatch *ld = h->data;
    for (int round = 0; round < CHECK_ROUNDS && ld->head; round++) {
        local_call *list = ld->head;
        ld->head = ld->tail = NULL;
        while (list) {
            local_call *lc = list;
            list = lc->next;
            lc->next = NULL;
            if (!lc->fn)
                free(lc); /* cancelled before it started */
            else
                start_one(ld, lc);
        }
    }
    if (!ld->head) {
        uv_idle_stop(&ld->idle);
        uv_check_stop(&ld->check);
    }
}

local_dispatch *local_dispatch_new(runtime *rt)
{
    local_dispatch *ld = calloc(1, sizeof *ld);
    if (!ld) return NULL;
    ld->rt = rt;
    uv_check_init(&rt->loop, &ld->check);
    uv_idle_init(&rt->loop, &ld->idle);
    ld->check.data = ld->idle.data = ld;
    ld->open_handles = 2;
    return ld;
}

static void handle_closed(uv_handle_t *h)
{
    local_dispatch *ld = h->data;
    if (--ld->open_handles == 0) free(ld);
}

void local_dispatch_close(local_dispatch *ld)
{
    if (!ld || ld->closing) return;
    ld->closing = true;
    while (ld->head) { /* nothing is queued by now (the drain waited); never leak */
        local_call *lc = ld->head;
        ld->head = lc->next;
        if (lc->fn) lc->fn(lc->udata, NB_UNAVAILABLE, NULL);
        free(lc);
    }
    uv_close((uv_handle_t *)&ld->check, handle_closed);
    uv_close((uv_handle_t *)&ld->idle, handle_closed);
}

/* In-process when allowed, on, not in `microservice test --nats` (its RPCs live on private
 * subjects there), a loaded Lua service declares subject and does not share it with WAMP callees
 * (shared = true asks for balancing over the bus), and --max-inflight is not reached. */
bool local_dispatch_runs_here(runtime *rt, bool allow_local, const char *subject)
{
    local_dispatch *ld = rt->local;
    return allow_local && ld && !ld->closing && rt->cfg.prefer_local &&
           !rt->cfg.rpc_subject_prefix && sched_inflight(rt->sched) < rt->cfg.max_inflight &&
           services_serves_alone(rt->services, subject);
}

static const char *header_value(const char *const *headers, const char *name)
{
    for (int i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        if (strcasecmp(headers[i], name) == 0) return headers[i + 1];
    return NULL;
}

static local_call *local_call_new(local_dispatch *ld, const char *subject, const char *data,
                                  size_t len, const char *const *headers, const char *authid,
                                  const char *authrole, double timeout_s)
{
    size_t slen = strlen(subject);
    local_call *lc = malloc(sizeof *lc + len + slen + 1);
    if (!lc) return NULL;
    memset(lc, 0, sizeof *lc);
    lc->ld = ld;
    lc->timeout_s = timeout_s;
    lc->len = len;
    if (len) memcpy(lc->buf, data, len);
    lc->subject = lc->buf + len;
    memcpy(lc->subject, subject, slen + 1);
    if (authid && authrole) {
        lc->has_caller = true;
        snprintf(lc->authid, sizeof lc->authid, "%s", authid);
        snprintf(lc->authrole, sizeof lc->authrole, "%s", authrole);
    }
    const char *tp = header_value(headers, TRACE_HEADER);
    if (tp) snprintf(lc->traceparent, sizeof lc->traceparent, "%s", tp);
    return lc;
}

int local_dispatch_start(runtime *rt, bool allow_local, const char *subject, const char *data,
                         size_t len, const char *const *headers, const char *authid,
                         const char *authrole, double timeout_s, nb_reply_fn fn, void *udata,
                         rpc_handle *out)
{
    out->bus = NULL;
    out->local = NULL;
    local_dispatch *ld = rt->local;
    if (!local_dispatch_runs_here(rt, allow_local, subject)) {
        if (ld) ld->bus_calls++;
        return nats_bridge_request_as(rt->nats, subject, data, len, headers, authid, authrole,
                                      timeout_s, fn, udata, &out->bus);
    }
    local_call *lc = local_call_new(ld, subject, data, len, headers, authid, authrole, timeout_s);
    if (!lc) return NB_ERROR;
    lc->fn = fn;
    lc->udata = udata;
    if (ld->tail)
        ld->tail->next = lc;
    else
        ld->head = lc;
    ld->tail = lc;
    if (!uv_is_active((uv_handle_t *)&ld->check)) {
        uv_check_start(&ld->check, check_cb);
        uv_idle_start(&ld->idle, idle_cb);
    }
    ld->local_calls++;
    out->local = lc;
    return NB_OK;
}

/* Over the bus, the serving process is told (services.h, SERVICES_CANCEL_SUBJECT): it abandons
 * the call as an in-process callee would be. Best effort: lost with the bus, like the request. */
static void cancel_bus(runtime *rt, nb_request *r)
{
    char reply[160];
    int n = nb_request_reply_subject(r, reply, sizeof reply);
    nb_request_cancel(r);
    if (n > 0 && (size_t)n < sizeof reply)
        nats_bridge_publish(rt->nats, SERVICES_CANCEL_SUBJECT, NULL, reply, (size_t)n, NULL);
}

bool local_dispatch_cancel(runtime *rt, rpc_handle *h)
{
    bool on_bus = h->bus != NULL;
    if (h->bus) cancel_bus(rt, h->bus);
    local_call *lc = h->local;
    h->bus = NULL;
    h->local = NULL;
    if (!lc) return on_bus;
    lc->fn = NULL; /* queued: freed when the queue is taken; running: freed by its reply */
    if (lc->bus) {
        cancel_bus(rt, lc->bus);
        free(lc);
        return true;
    }
    if (lc->task) {
        /* its pending operation (e.g. an outbound HTTP transfer) is aborted; local_reply frees
         * lc. A callee running right now (it cancelled its own caller) ends by itself. */
        sched_abandon(lc->task, "its caller went away (timeout, cancel or disconnect)");
        return true;
    }
    return false; /* still queued: it never started */
}

void local_dispatch_counters(const local_dispatch *ld, uint64_t *local_calls, uint64_t *bus_calls)
{
    *local_calls = ld ? ld->local_calls : 0;
    *bus_calls = ld ? ld->bus_calls : 0;
}
