/* wamp_router.c: owns the WAMP router's life (creation, shutdown, close) and the dispatch of a
 * session's messages to the role that handles them, plus the small helpers every role shares
 * (pointer arrays, ids, URIs, the NATS envelope, the role check). The router's parts, behind
 * wamp_internal.h: wamp_session.c (the WebSocket side: upgrade, sending, close), wamp_join.c
 * (HELLO to WELCOME), wamp_broker.c (publish and subscribe), wamp_dealer.c (calls and
 * registrations). The behaviour is specified in docs/wamp.md. */
#include "wamp_router.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "rpc_error.h"
#include "wamp_internal.h"

/* ---- small helpers ---- */

int wamp_ptrs_add(ptrs *p, void *x)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 4;
        void **v = realloc(p->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = x;
    return 0;
}

bool wamp_ptrs_remove(ptrs *p, void *x)
{
    for (int i = 0; i < p->n; i++) {
        if (p->v[i] != x) continue;
        p->v[i] = p->v[--p->n];
        return true;
    }
    return false;
}

bool wamp_ptrs_has(const ptrs *p, const void *x)
{
    for (int i = 0; i < p->n; i++)
        if (p->v[i] == x) return true;
    return false;
}

static held *held_by_id(held *list, uint64_t id)
{
    for (held *h = list; h; h = h->next)
        if (h->id == id) return h;
    return NULL;
}

bool wamp_held_unlink_unused(held **list, held *h)
{
    if (h->sessions.n > 0) return false;
    for (held **p = list; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    return true;
}

held *wamp_held_leave(session *s, json_t *msg, held *list, ptrs *mine, uint64_t *req)
{
    int type = (int)json_integer_value(json_array_get(msg, 0));
    bool sub = type == UNSUBSCRIBE;
    uint64_t id;
    if (json_array_size(msg) != 3 || !wamp_get_id(msg, 1, req) || !wamp_get_id(msg, 2, &id)) {
        wamp_protocol_violation(s, sub ? "UNSUBSCRIBE is [34, Request|id, Subscription|id]"
                                       : "UNREGISTER is [66, Request|id, Registration|id]");
        return NULL;
    }
    held *h = held_by_id(list, id);
    if (!h || !wamp_ptrs_remove(&h->sessions, s)) {
        wamp_send_error(s, type, *req,
                        sub ? "wamp.error.no_such_subscription" : "wamp.error.no_such_registration",
                        sub ? "no such subscription in this session"
                            : "no such registration in this session");
        return NULL;
    }
    wamp_ptrs_remove(mine, h);
    return h;
}

uint64_t wamp_random_id(void)
{
    uint64_t x = 0;
    if (uv_random(NULL, NULL, &x, sizeof x, 0, NULL) != 0)
        x = (uint64_t)rand() << 21 ^ (uint64_t)rand();
    return (x & (MAX_ID - 1)) + 1; /* [1, 2^53] */
}

/* An id field: an integer in [1, 2^53]. */
bool wamp_get_id(const json_t *msg, size_t i, uint64_t *out)
{
    json_t *v = json_array_get(msg, i);
    if (!json_is_integer(v)) return false;
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > MAX_ID) return false;
    *out = (uint64_t)n;
    return true;
}

/* Also refuses the system subjects ($-prefixed, such as $SRV and SERVICES_PROBE_PREFIX, and
 * _INBOX.), as the HTTP gateway does. */
bool wamp_valid_uri(const char *u, bool allow_empty_parts)
{
    if (!u[0] || strpbrk(u, " \t\r\n*>#")) return false;
    if (u[0] == '$' || strncmp(u, "_INBOX.", 7) == 0) return false;
    if (!allow_empty_parts && (u[0] == '.' || u[strlen(u) - 1] == '.' || strstr(u, "..")))
        return false;
    return true;
}

/* Whether the session's role may do action on uri; when not, answers ERROR not_authorized (if
 * the request wants an answer: a PUBLISH only with acknowledge). */
bool wamp_allowed(session *s, enum auth_action action, const char *uri, int type, uint64_t request,
                  bool answer)
{
    if (auth_allowed(s->r->rt->auth, s->authrole, action, uri)) return true;
    if (!answer) return false;
    static const char *const verbs[] = {"call", "register", "publish", "subscribe to"};
    char text[320];
    snprintf(text, sizeof text, "role %s may not %s %s", s->authrole, verbs[action], uri);
    wamp_send_error(s, type, request, URI_NOT_AUTHORIZED, text);
    return false;
}

/* ---- the NATS envelope [args, kwargs] ---- */

/* Splits a NATS payload into args and kwargs (new references); -1 if it is not an envelope. */
int wamp_envelope_split(const char *data, size_t len, json_t **args, json_t **kwargs)
{
    *args = *kwargs = NULL;
    json_t *v = len ? json_loadb(data, len, JSON_ALLOW_NUL, NULL) : json_array();
    if (!json_is_array(v) || json_array_size(v) > 2) {
        json_decref(v);
        return -1;
    }
    json_t *a = json_array_get(v, 0), *k = json_array_get(v, 1);
    if ((a && !json_is_array(a)) || (k && !json_is_object(k))) {
        json_decref(v);
        return -1;
    }
    *args = a ? json_incref(a) : json_array();
    *kwargs = k ? json_incref(k) : json_object();
    json_decref(v);
    return 0;
}

/* The JSON text [args, kwargs] for NATS, from message elements ai and ai+1 (optional). */
char *wamp_envelope_text(const json_t *msg, size_t ai, size_t *len)
{
    json_t *a = json_array_get(msg, ai), *k = json_array_get(msg, ai + 1);
    json_t *env = json_pack("[OO]", a ? a : json_array(), k ? k : json_object());
    /* json_pack "O" increfs: the fresh defaults above need their own release */
    if (!a) json_decref(json_array_get(env, 0));
    if (!k) json_decref(json_array_get(env, 1));
    char *text = env ? json_dumps(env, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(env);
    *len = text ? strlen(text) : 0;
    return text;
}

bool wamp_args_ok(const json_t *msg, size_t ai)
{
    json_t *a = json_array_get(msg, ai), *k = json_array_get(msg, ai + 1);
    if (json_array_size(msg) > ai + 2) return false;
    return (!a || json_is_array(a)) && (!k || json_is_object(k));
}

/* The head PUBLISH and CALL share, [TYPE, Request|id, Options|dict, Uri|uri, Arguments|list,
 * ArgumentsKw|dict]: its request id, options and URI, or false after a protocol violation that
 * quotes shape. */
bool wamp_request_head(session *s, json_t *msg, const char *shape, uint64_t *req, json_t **opts,
                       json_t **uri)
{
    *opts = json_array_get(msg, 2);
    *uri = json_array_get(msg, 3);
    if (json_array_size(msg) < 4 || !wamp_get_id(msg, 1, req) || !json_is_object(*opts) ||
        !json_is_string(*uri) || !wamp_args_ok(msg, 4)) {
        wamp_protocol_violation(s, shape);
        return false;
    }
    return true;
}

/* ---- dispatch ---- */

static void on_goodbye(session *s, json_t *msg)
{
    if (json_array_size(msg) != 3 || !json_is_object(json_array_get(msg, 1)) ||
        !json_is_string(json_array_get(msg, 2))) {
        wamp_protocol_violation(s, "GOODBYE is [6, Details|dict, Reason|uri]");
        return;
    }
    wamp_send_msg(s, json_pack("[i{}s]", GOODBYE, "wamp.close.goodbye_and_out"));
    wamp_close_session(s, 1000, "goodbye");
}

/* What an established session may send, and the role that handles it. */
static const struct {
    int type;
    void (*fn)(session *s, json_t *msg);
} established[] = {
    {SUBSCRIBE, wamp_on_subscribe},   {UNSUBSCRIBE, wamp_on_unsubscribe},
    {PUBLISH, wamp_on_publish},       {CALL, wamp_on_call},
    {CANCEL, wamp_on_cancel},         {REGISTER, wamp_on_register},
    {UNREGISTER, wamp_on_unregister}, {YIELD, wamp_on_yield},
    {ERROR, wamp_on_error},           {GOODBYE, on_goodbye},
};

void wamp_dispatch(session *s, json_t *msg)
{
    json_t *code = json_array_get(msg, 0);
    if (!json_is_array(msg) || !json_is_integer(code)) {
        wamp_protocol_violation(s, "a WAMP message is an array starting with its type code");
        return;
    }
    json_int_t type = json_integer_value(code);
    if (s->state == S_OPEN) {
        if (type == HELLO)
            wamp_on_hello(s, msg);
        else
            wamp_protocol_violation(s, "the first message must be HELLO");
        return;
    }
    if (s->state == S_CHALLENGED || s->state == S_VERIFYING) {
        if (type == AUTHENTICATE && s->state == S_CHALLENGED)
            wamp_on_authenticate(s, msg);
        else if (type == ABORT)
            wamp_close_session(s, 1000, "aborted");
        else
            wamp_protocol_violation(s, "after CHALLENGE the client sends AUTHENTICATE, once");
        return;
    }
    for (size_t i = 0; i < sizeof established / sizeof established[0]; i++) {
        if (established[i].type == type) {
            established[i].fn(s, msg);
            return;
        }
    }
    wamp_protocol_violation(s, type == HELLO ? "HELLO in an established session"
                                             : "a message type the router does not accept");
}

/* A message that decoded with an unsupported msgpack extension value: a request the router
 * answers (SUBSCRIBE, CALL, ..., PUBLISH with acknowledge) gets ERROR invalid_argument and is
 * dropped; anything else, or a request id that cannot be read, ends the session. */
void wamp_refuse_extension(session *s, json_t *msg, const char *why)
{
    json_t *code = json_array_get(msg, 0);
    json_int_t type = json_is_integer(code) ? json_integer_value(code) : 0;
    uint64_t req;
    bool answerable = type == SUBSCRIBE || type == UNSUBSCRIBE || type == CALL ||
                      type == REGISTER || type == UNREGISTER || type == PUBLISH;
    if (s->state != S_ESTABLISHED || !answerable || !wamp_get_id(msg, 1, &req)) {
        wamp_protocol_violation(s, why);
        return;
    }
    if (type == PUBLISH && !json_is_true(json_object_get(json_array_get(msg, 2), "acknowledge")))
        return;
    wamp_send_error(s, (int)type, req, URI_INVALID_ARGUMENT, why);
}

/* ---- router life ---- */

struct wamp_router *wamp_router_new(runtime *rt)
{
    router *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->rt = rt;
    codec_buf_init(&r->out);
    uv_timer_init(&rt->loop, &r->flush_timer);
    r->flush_timer.data = r;
    uv_timer_init(&rt->loop, &r->join_timer);
    r->join_timer.data = r;
    uv_timer_init(&rt->loop, &r->idle_timer);
    r->idle_timer.data = r;
    return r;
}

int wamp_router_sessions(const struct wamp_router *r)
{
    return r ? r->nsessions : 0;
}

void wamp_router_counts(const struct wamp_router *r, int *subscriptions, int *registrations)
{
    *subscriptions = *registrations = 0;
    for (const session *s = r ? r->sessions : NULL; s; s = s->next) {
        *subscriptions += s->topics.n;
        *registrations += s->regs.n;
    }
}

void wamp_router_shutdown(struct wamp_router *r)
{
    r->shutting_down = true;
    /* no more events or invocations: the NATS side goes first, so nothing the bridge holds
     * points at a topic or registration any more */
    for (held *h = r->topics; h; h = h->next) {
        topic *t = (topic *)h;
        if (t->sub) nb_sub_close(t->sub);
        t->sub = NULL;
    }
    for (held *h = r->regs; h; h = h->next) {
        registration *g = (registration *)h;
        if (g->sub) nb_sub_close(g->sub);
        if (g->probe) nb_sub_close(g->probe);
        g->sub = NULL;
        g->probe = NULL;
    }
    for (session *s = r->sessions; s; s = s->next) {
        if (s->state == S_ESTABLISHED)
            wamp_send_msg(s,
                          json_pack("[i{ss}s]", GOODBYE, "message", "the router is shutting down",
                                    "wamp.close.system_shutdown"));
        wamp_close_session(s, 1001, "shutting down");
    }
}

static void timer_closed(uv_handle_t *h)
{
    (void)h;
}

void wamp_router_close(struct wamp_router *r)
{
    while (r->sessions)
        wamp_drop_session(r->sessions);
    uv_close((uv_handle_t *)&r->flush_timer, timer_closed);
    uv_close((uv_handle_t *)&r->join_timer, timer_closed);
    uv_close((uv_handle_t *)&r->idle_timer, timer_closed);
}

void wamp_router_free(struct wamp_router *r)
{
    if (!r) return;
    codec_buf_free(&r->out);
    free(r);
}
