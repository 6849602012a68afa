/* services.c: owns the service scripts and everything they declare: the RPC registry (one NATS
 * queue subscription per RPC, subject and queue group "<service>.<method>"), subscriptions made
 * with microservice.subscribe, and spawned functions. It turns a NATS message into a task (decode
 * the envelope, bind the parameters, start the coroutine) and a task's end into the reply.
 *
 * Reloading a script (service_watch.c decides when): the new version runs first; if it fails, the
 * old one keeps serving. Otherwise each RPC it declares takes the new code (calls in flight keep
 * the function they started with, which stays on their coroutine's stack), new RPCs are
 * subscribed, and RPCs it no longer declares are retired: their subscription drains at once and
 * the entry is freed when its last call ends. Subscriptions the old version made while loading are
 * removed. */
#include "services.h"

#include <dirent.h>
#include <sys/time.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "lua_api.h"
#include "nats_bridge.h"
#include "rpc_binding.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "service_hooks.h"
#include "timers.h"

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
} rpc_entry;

typedef struct lua_sub {
    struct services *svcs;
    int id;
    char *subject;
    int fn_ref;
    nb_sub *sub;
    int tasks; /* running handlers; the entry lives until they end */
    bool unsubscribed;
    char *file;        /* the script that subscribed while loading, or NULL */
    unsigned load_gen; /* which load of that script */
    struct lua_sub *next;
} lua_sub;

/* What a running call needs at its end; owned by the task (its udata). */
typedef struct call_ctx {
    struct services *svcs;
    rpc_entry *rpc;
    lua_sub *sub;
    uint64_t started;         /* uv_hrtime() when the message was taken */
    char authid[AUTH_ID_MAX]; /* the caller, when a trusted gateway signed it; "" otherwise */
    char authrole[AUTH_ROLE_MAX];
    size_t args_held; /* the share of the Lua memory for large arguments it holds (lua_memory.c) */
    services_reply_fn reply_fn; /* an in-process call's reply (local_dispatch.c), or NULL */
    void *reply_udata;
    task *task;                   /* a request taken from NATS, while it runs */
    struct call_ctx *prev, *next; /* on the services' bus_calls list, for SERVICES_CANCEL_SUBJECT */
    bool listed;
    char reply[]; /* reply subject, "" when the message had none */
} call_ctx;

/* Where a reply goes: a NATS reply subject ("" or NULL: nowhere) or, for an in-process call, a
 * function. Both paths build the same bytes and headers, so their semantics cannot drift. */
typedef struct reply_to {
    const char *subject;
    services_reply_fn fn;
    void *udata;
} reply_to;

static reply_to ctx_reply_to(const call_ctx *c)
{
    reply_to to = {c->reply, c->reply_fn, c->reply_udata};
    return to;
}

static bool has_reply(const reply_to *to)
{
    return to->fn || (to->subject && to->subject[0]);
}

#define LOAD_MESSAGES_MAX 16

struct services {
    runtime *rt;
    rpc_entry *rpcs;
    int nrpcs;
    lua_sub *subs;
    int next_sub_id;
    rpc_entry *retired;         /* no longer declared, calls still running */
    struct service_meta *metas; /* one per loaded script */
    const char *loading_file;
    unsigned load_gen;
    struct pending_load *pending; /* versions whose started function runs */
    int load_errors;              /* scripts that failed to load, since start */
    /* the first line of the first LOAD_MESSAGES_MAX of those errors (for `microservice test`) */
    char *load_messages[LOAD_MESSAGES_MAX];
    int nload_messages;
    codec_buf scratch;
    nb_sub *cancel_sub;  /* SERVICES_CANCEL_SUBJECT */
    call_ctx *bus_calls; /* running requests taken from NATS that have a reply subject */
};

static void rpc_release(struct services *s, rpc_entry *e);

static void deliver(struct services *s, const reply_to *to, const char *data, size_t len,
                    const char *const *headers)
{
    if (to->fn)
        to->fn(to->udata, NB_OK, data, len, headers);
    else if (to->subject && to->subject[0])
        nats_bridge_publish(s->rt->nats, to->subject, NULL, data, len, headers);
}

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
    bool superseded; /* a newer version was saved, or the script removed, meanwhile */
    struct pending_load *next;
} pending_load;

static void meta_free(service_meta *m)
{
    free(m->file);
    free(m->name);
    free(m->version);
    free(m->description);
    free(m->metadata_json);
    free(m);
}

static void meta_remove(struct services *s, const char *file)
{
    for (service_meta **p = &s->metas; *p; p = &(*p)->next) {
        if (strcmp((*p)->file, file) == 0) {
            service_meta *m = *p;
            *p = m->next;
            luaL_unref(s->rt->L, LUA_REGISTRYINDEX, m->svc_ref);
            meta_free(m);
            return;
        }
    }
}

static char *field_string(lua_State *L, int idx, const char *key, const char *fallback)
{
    lua_getfield(L, idx, key);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : fallback;
    char *copy = strdup(v);
    lua_pop(L, 1);
    return copy;
}

/* Records (or refreshes) the service table at svc declared by file. Returns the reference of
 * the table it replaces (LUA_NOREF when none), for its stopped function. */
static int meta_update(struct services *s, lua_State *L, int svc, const char *file)
{
    service_meta *old = NULL;
    for (service_meta *m = s->metas; m; m = m->next)
        if (strcmp(m->file, file) == 0) old = m;
    int old_ref = old ? old->svc_ref : LUA_NOREF;
    if (old) old->svc_ref = LUA_NOREF;
    service_meta *m = calloc(1, sizeof *m);
    if (!m) return old_ref;
    lua_pushvalue(L, svc);
    m->svc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->file = strdup(file);
    m->name = field_string(L, svc, "name", "");
    m->version = field_string(L, svc, "version", "0.0.0");
    m->description = field_string(L, svc, "description", "");
    lua_getfield(L, svc, "metadata");
    codec_buf *buf = services_scratch(s);
    codec_error err;
    if (lua_istable(L, -1) && codec_encode(L, -1, buf, 8, &err) == 0 && buf->len &&
        buf->data[0] == '{')
        m->metadata_json = strndup(buf->data, buf->len);
    else
        m->metadata_json = strdup("{}");
    lua_pop(L, 1);
    if (old) {
        memcpy(m->id, old->id, sizeof m->id);
        m->started = old->started;
        meta_remove(s, file);
    } else {
        static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        unsigned char rnd[22];
        if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0) memset(rnd, 7, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            m->id[i] = digits[rnd[i] % 36];
        m->id[22] = '\0';
        struct timeval tv;
        gettimeofday(&tv, NULL);
        m->started = (double)tv.tv_sec + tv.tv_usec / 1e6;
    }
    m->next = s->metas;
    s->metas = m;
    return old_ref;
}

struct services *services_new(runtime *rt)
{
    struct services *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->rt = rt;
    codec_buf_init(&s->scratch);
    return s;
}

const char *services_loading(struct services *s, unsigned *gen)
{
    *gen = s->load_gen;
    return s->loading_file;
}

int services_starting(struct services *s)
{
    int n = 0;
    for (pending_load *p = s->pending; p; p = p->next)
        n++;
    return n;
}

codec_buf *services_scratch(struct services *s)
{
    codec_buf_reset(&s->scratch);
    return &s->scratch;
}

int services_load_errors(struct services *s)
{
    return s->load_errors;
}

/* Keeps the first line of a load error (bounded: the first LOAD_MESSAGES_MAX). */
static void keep_load_message(struct services *s, const char *msg)
{
    if (s->nload_messages >= LOAD_MESSAGES_MAX || !msg) return;
    size_t len = strcspn(msg, "\n");
    char *copy = strndup(msg, len);
    if (copy) s->load_messages[s->nload_messages++] = copy;
}

const char *services_load_message(struct services *s, int i)
{
    return i >= 0 && i < s->nload_messages ? s->load_messages[i] : NULL;
}

int services_rpc_count(struct services *s)
{
    return s->nrpcs;
}

/* ---- replies ---- */

static void reply_error(struct services *s, const reply_to *to, const char *uri, const char *msg,
                        int code)
{
    codec_buf *buf = services_scratch(s);
    if (rpc_error_body(buf, uri, msg) != 0) return;
    char line[256], codetext[16];
    rpc_error_header_text(line, sizeof line, msg);
    snprintf(codetext, sizeof codetext, "%d", code);
    const char *headers[] = {HDR_SERVICE_ERROR, line, HDR_SERVICE_ERROR_CODE, codetext, NULL};
    deliver(s, to, buf->data, buf->len, headers);
}

/* The error value at the top of co (microservice.error or a failed call) as a reply. */
static void reply_app_error(struct services *s, const reply_to *to, lua_State *co)
{
    int e = lua_gettop(co);
    lua_getfield(co, e, "uri");
    const char *uri = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : URI_RUNTIME_ERROR;
    lua_getfield(co, e, "code");
    int code = lua_isnumber(co, -1) ? (int)lua_tointeger(co, -1) : 400;
    if (code < 100 || code > 599) code = 400;
    lua_getfield(co, e, "args");
    lua_getfield(co, e, "kwargs");
    const char *msg = uri;
    if (lua_istable(co, -2)) {
        lua_rawgeti(co, -2, 1);
        if (lua_type(co, -1) == LUA_TSTRING) msg = lua_tostring(co, -1);
        lua_pop(co, 1); /* still referenced by args */
    }
    /* {"error": uri, "args": args, "kwargs": kwargs}, args always an array */
    if (!lua_istable(co, e + 3)) {
        lua_newtable(co);
        lua_replace(co, e + 3);
    }
    if (!lua_getmetatable(co, e + 3)) {
        luaL_getmetatable(co, CODEC_ARRAY_MT);
        lua_setmetatable(co, e + 3);
    } else {
        lua_pop(co, 1);
    }
    if (!lua_istable(co, e + 4)) {
        lua_newtable(co);
        lua_replace(co, e + 4);
    }
    codec_buf *buf = services_scratch(s);
    codec_error err;
    int depth = s->rt->cfg.max_depth;
    if (codec_buf_append(buf, "{\"error\":", 9) || codec_encode_string(buf, uri, strlen(uri)) ||
        codec_buf_append(buf, ",\"args\":", 8) || codec_encode(co, e + 3, buf, depth, &err) ||
        codec_buf_append(buf, ",\"kwargs\":", 10) || codec_encode(co, e + 4, buf, depth, &err) ||
        codec_buf_append(buf, "}", 1)) {
        reply_error(s, to, uri, msg, code);
        return;
    }
    char line[256], codetext[16];
    rpc_error_header_text(line, sizeof line, msg);
    snprintf(codetext, sizeof codetext, "%d", code);
    const char *headers[] = {HDR_SERVICE_ERROR, line, HDR_SERVICE_ERROR_CODE, codetext, NULL};
    deliver(s, to, buf->data, buf->len, headers);
}

static void reply_result(struct services *s, const reply_to *to, lua_State *co, int nres,
                         const char *label)
{
    int base = lua_gettop(co) - nres;
    codec_buf *buf = services_scratch(s);
    codec_error err;
    if (codec_encode_envelope(co, nres >= 1 ? base + 1 : 0, nres >= 2 ? base + 2 : 0, buf,
                              s->rt->cfg.max_depth, &err) == 0) {
        deliver(s, to, buf->data, buf->len, NULL);
        return;
    }
    log_error(label, "cannot encode the result: %s", err.msg);
    char msg[300];
    snprintf(msg, sizeof msg, "cannot encode the result: %s", err.msg);
    reply_error(s, to, URI_RUNTIME_ERROR, msg, 500);
}

static void lua_sub_release(lua_sub *ls);

/* Logs an application error of t that has nobody to answer to. */
static void log_app_error(task *t, lua_State *co)
{
    const char *label = sched_log_tag(t);
    lua_getfield(co, -1, "uri");
    lua_getfield(co, -2, "args");
    const char *msg = "";
    if (lua_istable(co, -1)) {
        lua_rawgeti(co, -1, 1);
        if (lua_type(co, -1) == LUA_TSTRING) msg = lua_tostring(co, -1);
        lua_pop(co, 1);
    }
    log_warn(label, "error %s: %s" SCHED_TRACE_FMT,
             lua_isstring(co, -2) ? lua_tostring(co, -2) : "?", msg, sched_trace_id(t));
    lua_pop(co, 2);
}

const double services_hist_bounds[SERVICES_HIST_BUCKETS - 1] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5,
};

static void record_error(rpc_entry *e, const char *message)
{
    e->errors++;
    if (!message) message = "error";
    size_t n = strlen(message);
    if (n >= sizeof e->last_error) n = sizeof e->last_error - 1;
    memcpy(e->last_error, message, n);
    e->last_error[n] = '\0';
}

/* Counts a finished call: duration, histogram, and the error if it ended with one. */
static void record_call(rpc_entry *e, enum task_end how, lua_State *co, uint64_t ns)
{
    e->calls++;
    e->time_ns += ns;
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < SERVICES_HIST_BUCKETS - 1 && s > services_hist_bounds[b])
        b++;
    e->hist[b]++;
    switch (how) {
    case TASK_OK:
        break;
    case TASK_ERROR:
        record_error(e, lua_tostring(co, -1));
        break;
    case TASK_APP_ERROR:
        lua_getfield(co, -1, "uri");
        record_error(e, lua_tostring(co, -1));
        lua_pop(co, 1);
        break;
    case TASK_CANCELLED:
        record_error(e, "cancelled at shutdown");
        break;
    case TASK_EXPIRED:
        record_error(e, "abandoned: its caller stopped waiting (timeout or gone)");
        break;
    }
}

static void bus_call_unlink(struct services *s, call_ctx *c)
{
    if (!c->listed) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->bus_calls = c->next;
    if (c->next) c->next->prev = c->prev;
    c->listed = false;
}

static void call_done(task *t, enum task_end how, lua_State *co, int nres)
{
    call_ctx *c = t->udata;
    struct services *s = c->svcs;
    bus_call_unlink(s, c);
    if (c->rpc) record_call(c->rpc, how, co, uv_hrtime() - c->started);
    reply_to to = ctx_reply_to(c);
    if (how == TASK_APP_ERROR && !has_reply(&to)) log_app_error(t, co);
    if (how == TASK_EXPIRED && to.fn) { /* in-process: as the bus caller's own timer would say */
        to.fn(to.udata, NB_TIMEOUT, NULL, 0, NULL);
    } else if (has_reply(&to)) {
        switch (how) {
        case TASK_OK:
            reply_result(s, &to, co, nres, t->label);
            break;
        case TASK_ERROR:
            reply_error(s, &to, URI_RUNTIME_ERROR, lua_tostring(co, -1), 500);
            break;
        case TASK_APP_ERROR:
            reply_app_error(s, &to, co);
            break;
        case TASK_CANCELLED:
            reply_error(s, &to, URI_UNAVAILABLE, "the service shut down before the call completed",
                        503);
            break;
        case TASK_EXPIRED:
            reply_error(s, &to, URI_TIMEOUT, "the call's timeout passed", 504);
            break;
        }
    }
    if (c->sub) lua_sub_release(c->sub);
    if (c->rpc) rpc_release(s, c->rpc);
    lua_memory_release_args(&s->rt->lua_mem, c->args_held);
    free(c);
    nats_bridge_kick(s->rt->nats);
}

static call_ctx *call_ctx_new(struct services *s, const char *reply)
{
    size_t n = reply ? strlen(reply) : 0;
    call_ctx *c = malloc(sizeof *c + n + 1);
    if (!c) return NULL;
    c->svcs = s;
    c->rpc = NULL;
    c->sub = NULL;
    c->started = uv_hrtime();
    c->authid[0] = c->authrole[0] = '\0';
    c->args_held = 0;
    c->reply_fn = NULL;
    c->reply_udata = NULL;
    c->task = NULL;
    c->prev = c->next = NULL;
    c->listed = false;
    memcpy(c->reply, reply ? reply : "", n + 1);
    return c;
}

/* Pushes the args and kwargs of the envelope data on co, their Lua memory metered and held by c
 * (lua_memory.c); on a malformed or too large envelope answers (when it can) and returns -1 with
 * nothing pushed. subject names the message in the log. */
static int push_envelope(struct services *s, call_ctx *c, lua_State *co, const char *data,
                         size_t len, const char *subject, const char *label)
{
    codec_error err;
    int rc = -1, code = 400;
    lua_memory *m = &s->rt->lua_mem;
    codec_meter meter = {&m->allocated, lua_memory_args_budget(m)};
    size_t before = m->allocated;
    if (len > s->rt->cfg.body_limit)
        snprintf(err.msg, sizeof err.msg, "body of %zu bytes is over the limit of %zu", len,
                 s->rt->cfg.body_limit);
    else
        rc = codec_decode_envelope_metered(co, data, len, s->rt->cfg.max_depth, &meter, &err);
    if (rc == 0) {
        c->args_held = lua_memory_hold_args(m, m->allocated - before);
        return 0;
    }
    if (rc == CODEC_TOO_LARGE) code = lua_memory_refuse_args(m, meter.max, err.msg, sizeof err.msg);
    reply_to to = ctx_reply_to(c);
    if (has_reply(&to))
        reply_error(s, &to, code == 503 ? URI_UNAVAILABLE : URI_INVALID_ARGUMENT, err.msg, code);
    else
        log_warn(label, "message on %s dropped: %s", subject, err.msg);
    return -1;
}

/* ---- RPCs ---- */

/* The caller's identity, when a gateway holding the same bus_secret signed it for this subject;
 * anything unsigned or forged is ignored (the call runs without an identity). */
static void take_caller(call_ctx *c, task *t, const char *id, const char *role)
{
    if (!id || !role) return;
    snprintf(c->authid, sizeof c->authid, "%s", id);
    snprintf(c->authrole, sizeof c->authrole, "%s", role);
    t->authid = c->authid;
    t->authrole = c->authrole;
}

/* The caller's trace id, when it sent a valid traceparent (else one is made when first needed). */
static void take_trace(task *t, const char *traceparent)
{
    if (traceparent) trace_parse(traceparent, strlen(traceparent), t->trace_id);
}

static const char *msg_header(natsMsg *msg, const char *name)
{
    const char *v = NULL;
    return natsMsgHeader_Get(msg, name, &v) == NATS_OK ? v : NULL;
}

/* One call of e, from NATS or in-process (services_call_local): admission, envelope, deadline,
 * caller, trace, binding, then the task. Answers through in->to itself when the call cannot run.
 * Returns the started task, or NULL. */
static task *rpc_take(rpc_entry *e, const services_call *in, const reply_to *to)
{
    struct services *s = e->svcs;
    if (!lua_memory_admit(&s->rt->lua_mem)) {
        char msg_text[96];
        snprintf(msg_text, sizeof msg_text, "Lua memory limit reached (%zu MiB)",
                 s->rt->lua_mem.limit >> 20);
        e->calls++;
        record_error(e, msg_text);
        if (has_reply(to)) reply_error(s, to, URI_UNAVAILABLE, msg_text, 503);
        return NULL;
    }
    call_ctx *c = call_ctx_new(s, to->subject);
    task *t = c ? sched_task_new(s->rt->sched, call_done, c, e->subject) : NULL;
    if (!t) {
        if (has_reply(to)) reply_error(s, to, URI_UNAVAILABLE, "out of memory", 503);
        free(c);
        return NULL;
    }
    c->reply_fn = to->fn;
    c->reply_udata = to->udata;
    lua_State *co = t->co;
    if (push_envelope(s, c, co, in->data, in->len, e->subject, e->subject) != 0) {
        e->calls++;
        record_error(e, "malformed envelope");
        sched_task_discard(t);
        free(c);
        return NULL;
    }
    /* the caller's timeout, at most --max-call-timeout (also without one) */
    double deadline = s->rt->cfg.max_call_timeout;
    if (in->timeout_s > 0 && in->timeout_s < deadline) deadline = in->timeout_s;
    sched_set_deadline(t, deadline);
    take_caller(c, t, in->authid, in->authrole);
    take_trace(t, in->traceparent);
    /* stack: args kwargs -> args kwargs fn bound... -> fn bound... */
    lua_rawgeti(co, LUA_REGISTRYINDEX, e->fn_ref);
    char err[256];
    int n = rpc_binding_push(&e->binding, co, e->svc_ref, 1, 2, e->subject, err, sizeof err);
    if (n < 0) {
        e->calls++;
        record_error(e, err);
        if (has_reply(to)) reply_error(s, to, URI_INVALID_ARGUMENT, err, 400);
        sched_task_discard(t);
        lua_memory_release_args(&s->rt->lua_mem, c->args_held);
        free(c);
        return NULL;
    }
    lua_remove(co, 1);
    lua_remove(co, 1);
    c->rpc = e;
    e->tasks++;
    if (to->subject && to->subject[0]) { /* its caller may cancel it (SERVICES_CANCEL_SUBJECT) */
        c->task = t;
        c->next = s->bus_calls;
        if (s->bus_calls) s->bus_calls->prev = c;
        s->bus_calls = c;
        c->listed = true;
    }
    sched_start(t, n);
    return t;
}

static void on_rpc_msg(void *udata, natsMsg *msg)
{
    rpc_entry *e = udata;
    struct services *s = e->svcs;
    if (nats_bridge_misdirected(s->rt->nats, msg, true)) return; /* an event never runs an RPC */
    services_call in = {
        natsMsg_GetData(msg),         (size_t)natsMsg_GetDataLength(msg), 0, NULL, NULL,
        msg_header(msg, TRACE_HEADER)};
    const char *timeout = msg_header(msg, NB_HDR_TIMEOUT);
    if (timeout) in.timeout_s = strtod(timeout, NULL) / 1000.0;
    if (!auth_identity_of(s->rt->auth, msg, &in.authid, &in.authrole))
        in.authid = in.authrole = NULL;
    reply_to to = {natsMsg_GetReply(msg), NULL, NULL};
    rpc_take(e, &in, &to); /* the task holds copies of what it needs from msg */
    nats_bridge_release(s->rt->nats, msg);
}

static bool valid_service_name(const char *name)
{
    if (!name[0] || name[0] == '.' || name[strlen(name) - 1] == '.') return false;
    return strpbrk(name, " \t\r\n*>") == NULL;
}

static void rpc_free(rpc_entry *e)
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
    rpc_free(e);
}

static void rpc_release(struct services *s, rpc_entry *e)
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

/* No longer declared: no new calls (the subscription drains), freed after the last one. */
static void rpc_retire(struct services *s, rpc_entry *e)
{
    list_remove(&s->rpcs, e);
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

static rpc_entry *rpc_find(struct services *s, const char *subject)
{
    for (rpc_entry *e = s->rpcs; e; e = e->next)
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
static int declare_rpc(struct services *s, lua_State *L, int svc_idx, const char *subject,
                       const char *file, bool *added)
{
    rpc_entry *e = rpc_find(s, subject);
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
        rpc_free(e);
        return -1;
    }
    const char *prefix = s->rt->cfg.rpc_subject_prefix;
    char bus_subject[600];
    snprintf(bus_subject, sizeof bus_subject, "%s%s", prefix ? prefix : "", subject);
    e->sub = nats_bridge_subscribe_polled(s->rt->nats, bus_subject, bus_subject, on_rpc_msg, e);
    if (!e->sub) log_error(TAG, "%s: %s could not be subscribed", file, bus_subject);
    rpc_probe_subscribe(s, e, bus_subject);
    e->next = s->rpcs;
    s->rpcs = e;
    s->nrpcs++;
    *added = true;
    log_debug(TAG, "%s: RPC %s", file, subject);
    return 0;
}

static bool is_rpc_value(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return false;
    luaL_getmetatable(L, MS_RPC_MT);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

static void unsubscribe_entry(struct services *s, lua_sub *ls);

/* Removes the subscriptions and timers file made while loading: those of load gen (same_gen)
 * or those of every other load. */
static void drop_load_subs(struct services *s, const char *file, unsigned gen, bool same_gen)
{
    for (lua_sub *ls = s->subs, *next; ls; ls = next) {
        next = ls->next;
        if (ls->unsubscribed || !ls->file || strcmp(ls->file, file) != 0) continue;
        if ((ls->load_gen == gen) == same_gen) unsubscribe_entry(s, ls);
    }
    timers_drop_file(s->rt->timers, file, gen, same_gen);
}

/* Runs the stopped function of the service table ref (if it has one) and lets go of the ref. */
static void run_stopped(struct services *s, int ref)
{
    lua_State *L = s->rt->L;
    if (s->rt->cfg.no_hooks) luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (ref == LUA_NOREF || s->rt->cfg.no_hooks) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    service_hook_run(s->rt, L, lua_gettop(L), "stopped", s->rt->cfg.drain_timeout, NULL, NULL);
    lua_pop(L, 1);
}

/* A newer version of path is loading, or path is gone: what still waits on started is dropped. */
static void supersede_pending(struct services *s, const char *path)
{
    for (pending_load *p = s->pending; p; p = p->next)
        if (strcmp(p->path, path) == 0) p->superseded = true;
}

/* Runs the script; on success returns with its table on top of L (and 0). */
static int run_script(struct services *s, const char *path)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    if (luaL_loadfile(L, path) != 0) {
        log_error(TAG, "cannot load %s", lua_tostring(L, -1));
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    s->loading_file = path;
    int rc = lua_pcall(L, 0, 1, top + 1);
    s->loading_file = NULL;
    if (rc != 0) {
        log_error(TAG, "%s failed while loading: %s", path, lua_tostring(L, -1));
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_remove(L, top + 1);
    lua_getfield(L, -1, "name");
    bool ok = lua_istable(L, -2) && lua_type(L, -1) == LUA_TSTRING &&
              valid_service_name(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!ok) {
        log_error(TAG,
                  "%s must return a table with a name (a NATS subject token, e.g. "
                  "{ name = \"greeting_service\" }); the previous version, if any, still serves",
                  path);
        lua_pushfstring(L, "%s must return a table with a name", path);
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    return 0;
}

/* The version at svc (loaded as gen) takes over: its RPCs are declared, the previous version's
 * are retired and its stopped function runs. Returns the number of RPCs. */
static int finish_load(struct services *s, int svc, const char *path, unsigned gen, bool reload)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    lua_getfield(L, svc, "name");
    const char *service = lua_tostring(L, -1);
    /* the subjects this version declares, to retire the others afterwards */
    lua_newtable(L);
    int declared = lua_gettop(L);
    int count = 0, added = 0;
    lua_pushnil(L);
    while (lua_next(L, svc)) {
        if (lua_type(L, -2) == LUA_TSTRING && is_rpc_value(L, -1)) {
            char subject[512];
            snprintf(subject, sizeof subject, "%s.%s", service, lua_tostring(L, -2));
            bool is_new;
            if (declare_rpc(s, L, svc, subject, path, &is_new) == 0) {
                count++;
                added += is_new;
                lua_pushboolean(L, 1);
                lua_setfield(L, declared, subject);
            }
        }
        lua_pop(L, 1);
    }
    int removed = 0;
    for (rpc_entry *e = s->rpcs, *next; e; e = next) {
        next = e->next;
        if (strcmp(e->file, path) != 0) continue;
        lua_getfield(L, declared, e->subject);
        bool still = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!still) {
            rpc_retire(s, e);
            removed++;
        }
    }
    drop_load_subs(s, path, gen, false); /* the previous version's */
    run_stopped(s, meta_update(s, L, svc, path));
    if (reload)
        log_info(TAG, "reloaded %s: service %s with %d RPCs (%d new, %d removed)", path, service,
                 count, added, removed);
    else
        log_info(TAG, "%s: service %s with %d RPCs", path, service, count);
    lua_settop(L, top);
    return count;
}

static void pending_unlink(struct services *s, pending_load *p)
{
    for (pending_load **q = &s->pending; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            return;
        }
    }
}

/* The started function of a pending version ended. */
static void started_done(void *udata, bool ok)
{
    pending_load *p = udata;
    struct services *s = p->s;
    lua_State *L = s->rt->L;
    pending_unlink(s, p);
    if (ok && !p->superseded && !s->rt->shutting_down) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->svc_ref);
        finish_load(s, lua_gettop(L), p->path, p->gen, p->reload);
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
    } else {
        if (!ok) {
            s->load_errors++;
            log_error(TAG, "%s: started failed: %s", p->path,
                      p->reload ? "the previous version still serves" : "its RPCs are not served");
        } else {
            log_info(TAG, "%s: superseded while started ran: this version is dropped", p->path);
        }
        drop_load_subs(s, p->path, p->gen, true);
        if (ok)
            run_stopped(s, p->svc_ref); /* it started: it may have things to release */
        else
            luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
    }
    free(p->path);
    free(p);
}

/* Runs the started function of the version at svc, if it has one (then the version takes over
 * when it returns, and this returns 0), or takes over at once (returns its RPC count). */
static int start_version(struct services *s, int svc, const char *path, unsigned gen, bool reload)
{
    lua_State *L = s->rt->L;
    lua_getfield(L, svc, "started");
    bool has = lua_isfunction(L, -1) && !s->rt->cfg.no_hooks;
    lua_pop(L, 1);
    if (!has) return finish_load(s, svc, path, gen, reload);
    pending_load *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path))) {
        free(p);
        log_error(TAG, "%s: out of memory", path);
        return -1;
    }
    p->s = s;
    p->gen = gen;
    p->reload = reload;
    lua_pushvalue(L, svc);
    p->svc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->next = s->pending;
    s->pending = p;
    /* bounded like a call; started_done may run before this returns */
    if (service_hook_run(s->rt, L, svc, "started", s->rt->cfg.call_timeout, started_done, p) != 1) {
        pending_unlink(s, p);
        luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
        free(p->path);
        free(p);
        return -1;
    }
    return 0;
}

int services_load_file(struct services *s, const char *path, bool reload)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    unsigned gen = ++s->load_gen;
    supersede_pending(s, path);
    int count = run_script(s, path) == 0 ? start_version(s, lua_gettop(L), path, gen, reload) : -1;
    if (count < 0) {
        s->load_errors++;
        drop_load_subs(s, path, gen, true); /* what the failed version subscribed */
    }
    lua_settop(L, top);
    return count;
}

void services_remove_file(struct services *s, const char *path)
{
    int removed = 0;
    for (rpc_entry *e = s->rpcs, *next; e; e = next) {
        next = e->next;
        if (strcmp(e->file, path) == 0) {
            rpc_retire(s, e);
            removed++;
        }
    }
    s->load_gen++;
    supersede_pending(s, path);
    drop_load_subs(s, path, s->load_gen, false);
    for (service_meta *m = s->metas; m; m = m->next) {
        if (strcmp(m->file, path) != 0) continue;
        run_stopped(s, m->svc_ref);
        m->svc_ref = LUA_NOREF;
    }
    meta_remove(s, path);
    log_info(TAG, "%s removed: %d RPCs retired", path, removed);
}

/* A caller abandoned the request whose reply subject is the body: if this process serves it, its
 * task is abandoned as a gone in-process caller's would be. A linear search: cancels are rare
 * (abandoned calls only) and the list is bounded by --max-inflight. */
static void on_cancel_msg(void *udata, natsMsg *msg)
{
    struct services *s = udata;
    const char *reply = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    for (call_ctx *c = s->bus_calls; c && reply && len > 0; c = c->next) {
        if ((size_t)len != strlen(c->reply) || memcmp(c->reply, reply, (size_t)len) != 0) continue;
        sched_abandon(c->task, "its caller went away (cancel message)"); /* frees c */
        break;
    }
    nats_bridge_release(s->rt->nats, msg);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int services_load_dir(struct services *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error(TAG, "cannot read the services folder %s", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        size_t len = strlen(ent->d_name);
        if (len < 5 || ent->d_name[0] == '.' || strcmp(ent->d_name + len - 4, ".lua") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[n++] = strdup(ent->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, compare_names);
    int rpcs = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        int c = names[i] ? services_load_file(s, path, false) : -1;
        if (c > 0) rpcs += c;
        free(names[i]);
    }
    free(names);
    log_info(TAG, "%d RPCs from %s", rpcs, dir);
    if (!s->cancel_sub)
        s->cancel_sub =
            nats_bridge_subscribe(s->rt->nats, SERVICES_CANCEL_SUBJECT, NULL, on_cancel_msg, s);
    nats_bridge_confirm(s->rt->nats);
    return rpcs;
}

/* ---- subscriptions made by scripts ---- */

static void lua_sub_free(lua_sub *ls)
{
    struct services *s = ls->svcs;
    for (lua_sub **p = &s->subs; *p; p = &(*p)->next) {
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

static void lua_sub_release(lua_sub *ls)
{
    if (--ls->tasks == 0 && ls->unsubscribed) lua_sub_free(ls);
}

static void on_sub_msg(void *udata, natsMsg *msg)
{
    lua_sub *ls = udata;
    struct services *s = ls->svcs;
    if (nats_bridge_misdirected(s->rt->nats, msg, false)) return; /* requests are for RPCs */
    if (!lua_memory_admit(&s->rt->lua_mem)) {
        log_warn(ls->subject, "message on %s dropped: Lua memory limit reached (%zu MiB)",
                 natsMsg_GetSubject(msg), s->rt->lua_mem.limit >> 20);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    call_ctx *c = call_ctx_new(s, natsMsg_GetReply(msg));
    task *t = c ? sched_task_new(s->rt->sched, call_done, c, ls->subject) : NULL;
    if (!t) {
        free(c);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    lua_State *co = t->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->fn_ref);
    if (push_envelope(s, c, co, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                      natsMsg_GetSubject(msg), ls->subject) != 0) {
        sched_task_discard(t);
        free(c);
        nats_bridge_release(s->rt->nats, msg);
        return;
    }
    take_trace(t, msg_header(msg, TRACE_HEADER));
    lua_pushstring(co, natsMsg_GetSubject(msg));
    nats_bridge_release(s->rt->nats, msg);
    c->sub = ls;
    ls->tasks++;
    sched_start(t, 3);
}

int services_subscribe(struct services *s, lua_State *L, const char *subject, const char *queue)
{
    int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* first: it may raise (out of memory) */
    lua_sub *ls = calloc(1, sizeof *ls);
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
        lua_sub_free(ls);
        return -1;
    }
    return ls->id;
}

static void unsubscribe_entry(struct services *s, lua_sub *ls)
{
    (void)s;
    if (ls->sub) nb_sub_close(ls->sub);
    ls->sub = NULL;
    ls->unsubscribed = true;
    if (ls->tasks == 0) lua_sub_free(ls);
}

int services_unsubscribe(struct services *s, int id)
{
    for (lua_sub *ls = s->subs; ls; ls = ls->next) {
        if (ls->id != id || ls->unsubscribed) continue;
        unsubscribe_entry(s, ls);
        return 0;
    }
    return -1;
}

/* ---- spawn ---- */

static void spawn_done(task *t, enum task_end how, lua_State *co, int nres)
{
    (void)nres;
    if (how == TASK_APP_ERROR) log_app_error(t, co);
}

int services_spawn(struct services *s, lua_State *L, int fn_idx, int nargs)
{
    task *parent = sched_current(L, NULL);
    task *t = sched_task_new(s->rt->sched, spawn_done, NULL, "spawn");
    if (!t) return -1;
    if (parent) memcpy(t->trace_id, sched_trace_id(parent), sizeof t->trace_id); /* same trace */
    for (int i = 0; i <= nargs; i++)
        lua_pushvalue(L, fn_idx + i);
    int saved = lua_memory_begin_unfailing(&s->rt->lua_mem); /* t->co is not the running one */
    lua_xmove(L, t->co, nargs + 1);
    lua_memory_end_unfailing(&s->rt->lua_mem, saved);
    sched_start_soon(t, nargs);
    return 0;
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
    if (lua_pcall(L, 1, 1, 0) != 0) return NULL;
    lua_getfield(L, -1, "signature");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->rpc_ref);
    if (lua_pcall(L, 1, 1, 0) != 0) return NULL;
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

task *services_call_local(struct services *s, const char *procedure, const services_call *in,
                          services_reply_fn fn, void *udata, bool *found)
{
    rpc_entry *e = rpc_find(s, procedure);
    *found = e && !e->shared; /* shared: balanced with WAMP callees over the bus */
    if (!*found) return NULL;
    reply_to to = {NULL, fn, udata};
    return rpc_take(e, in, &to);
}

bool services_serves_alone(struct services *s, const char *procedure)
{
    rpc_entry *e = rpc_find(s, procedure);
    return e && !e->shared;
}

const char *services_procedure_name(struct services *s, const char *procedure)
{
    rpc_entry *e = rpc_find(s, procedure);
    return e ? e->subject : NULL;
}

int services_bind(struct services *s, lua_State *L, const char *procedure, int args_idx,
                  int kwargs_idx, const char **uri, char *err, size_t errlen)
{
    rpc_entry *e = rpc_find(s, procedure);
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

/* {{name=, version=, description=}, ...}: the loaded services, for the document's info. */
static void push_service_infos(struct services *s, lua_State *L)
{
    lua_newtable(L);
    int i = 0;
    for (service_meta *m = s->metas; m; m = m->next) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, m->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, m->version);
        lua_setfield(L, -2, "version");
        lua_pushstring(L, m->description);
        lua_setfield(L, -2, "description");
        lua_rawseti(L, -2, ++i);
    }
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
    int rc = lua_pcall(L, 1, 1, 0);
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
        push_service_infos(s, L);
        lua_setfield(L, -2, "services");
        lua_pushboolean(L, s->rt->auth != NULL);
        lua_setfield(L, -2, "bearer");
        lua_pushboolean(L, auth_anonymous_role(s->rt->auth) != NULL);
        lua_setfield(L, -2, "anonymous");
        rc = lua_pcall(L, 2, 1, 0);
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

void services_each_service(struct services *s, void (*fn)(void *u, const service_desc *d), void *u)
{
    for (service_meta *m = s->metas; m; m = m->next) {
        service_desc d = {m->name,          m->id,   m->version, m->description,
                          m->metadata_json, m->file, m->started};
        fn(u, &d);
    }
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
    for (lua_sub *ls = s->subs; ls; ls = ls->next) {
        if (ls->sub) nb_sub_drain(ls->sub);
        ls->sub = NULL;
    }
    for (service_meta *m = s->metas; m; m = m->next) { /* the drain waits for them */
        run_stopped(s, m->svc_ref);
        m->svc_ref = LUA_NOREF;
    }
}

void services_free(struct services *s)
{
    if (!s) return;
    while (s->rpcs) {
        rpc_entry *e = s->rpcs;
        s->rpcs = e->next;
        rpc_free(e);
    }
    while (s->retired) {
        rpc_entry *e = s->retired;
        s->retired = e->next;
        rpc_free(e);
    }
    while (s->subs) {
        s->subs->unsubscribed = true;
        lua_sub_free(s->subs);
    }
    while (s->metas) {
        service_meta *m = s->metas;
        s->metas = m->next;
        meta_free(m);
    }
    codec_buf_free(&s->scratch);
    for (int i = 0; i < s->nload_messages; i++)
        free(s->load_messages[i]);
    free(s);
}
