/* wamp_internal.h: what the parts of the WAMP router share (wamp_router.c, wamp_session.c,
 * wamp_join.c, wamp_broker.c, wamp_dealer.c) and nothing outside them includes: the message
 * types, the session, router, topic, registration, call and invocation structs, and the functions
 * one part offers the others. */
#ifndef MICROSERVICE_WAMP_INTERNAL_H
#define MICROSERVICE_WAMP_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "auth_limit.h"
#include "codec.h"
#include "nats_bridge.h"
#include "runtime.h"
#include "wamp_codec.h"

#define TAG "wamp"
#define MAX_ID 9007199254740992LL /* 2^53 */

enum {
    HELLO = 1,
    WELCOME = 2,
    ABORT = 3,
    CHALLENGE = 4,
    AUTHENTICATE = 5,
    GOODBYE = 6,
    ERROR = 8,
    PUBLISH = 16,
    PUBLISHED = 17,
    SUBSCRIBE = 32,
    SUBSCRIBED = 33,
    UNSUBSCRIBE = 34,
    UNSUBSCRIBED = 35,
    EVENT = 36,
    CALL = 48,
    CANCEL = 49,
    RESULT = 50,
    REGISTER = 64,
    REGISTERED = 65,
    UNREGISTER = 66,
    UNREGISTERED = 67,
    INVOCATION = 68,
    YIELD = 70,
};

typedef struct session session;
typedef struct wamp_router router;

/* A growable array of pointers (sessions of a topic, topics of a session, ...). */
typedef struct ptrs {
    void **v;
    int n, cap;
} ptrs;

/* What a topic and a registration share (their first member): the router's list they are on,
 * the id SUBSCRIBED / REGISTERED gave, and the sessions holding them (subscribers, callees). */
typedef struct held {
    struct held *next;
    uint64_t id;
    ptrs sessions;
} held;

typedef struct topic {
    held h;
    router *r;
    char *uri;
    char *match;
    char *subject;
    nb_sub *sub;
} topic;

typedef struct registration {
    held h; /* h.sessions: the callees */
    router *r;
    char *procedure;
    char invoke[16]; /* "single", "roundrobin", "random" */
    bool disclose;   /* INVOCATION carries the caller's authid and authrole (disclose_caller) */
    nb_sub *sub;
    nb_sub *probe; /* SERVICES_PROBE_PREFIX<procedure>: answers whether it is shared */
    int rr;
} registration;

/* A session's request waiting on NATS: a CALL's reply, the server's confirmation of a new
 * subscription before SUBSCRIBED / REGISTERED (ack is then that message type, with ack_id), or
 * the probe of a REGISTER (ack REGISTER, procedure set: who else serves it). */
typedef struct pending_call {
    session *s;
    uint64_t request;
    nb_request *req;
    struct local_call *local; /* a CALL run in-process (local_dispatch.h) */
    bool progress;
    int ack;
    uint64_t ack_id;
    char *procedure; /* a REGISTER's probe: the procedure, its invoke policy and disclose_caller */
    char invoke[16];
    bool disclose;
    struct pending_call *next;
} pending_call;

typedef struct invocation {
    session *s;
    uint64_t id;
    char *reply; /* NULL: the caller wanted no answer */
    struct invocation *next;
} invocation;

struct session {
    router *r;
    struct st_h2o_websocket_conn_t *ws; /* only wamp_session.c looks inside */
    enum wamp_serializer ser;
    uint64_t id;
    /* S_CHALLENGED: CHALLENGE sent, waiting for AUTHENTICATE; S_VERIFYING: a ticket is being
     * checked on the thread pool (auth_job) */
    enum { S_OPEN, S_CHALLENGED, S_VERIFYING, S_ESTABLISHED, S_CLOSING } state;
    char authid[AUTH_ID_MAX];
    char authrole[AUTH_ROLE_MAX];
    const char *authmethod; /* static string */
    const auth_user *user;  /* while authenticating; NULL for an unknown authid */
    char *challenge;        /* wampcra: the challenge text sent */
    char *realm;            /* from HELLO, for WELCOME */
    struct auth_job *auth_job;
    /* the client's address (auth_limit_peer), for the limiter of failed sign-ins */
    char peer[AUTH_PEER_MAX];
    int ncalls;  /* calls waiting for their result */
    int nprobes; /* REGISTERs waiting for the bus to say who serves the procedure */
    ptrs topics;
    ptrs regs;
    pending_call *calls;
    invocation *invs;
    int ninvs; /* invocations waiting for this callee's answer (--max-callee-pending) */
    uint64_t next_inv;
    bool dirty, slow;
    codec_buf out_pending; /* frames wslay handed over, not yet written */
    codec_buf out_writing; /* the batch the socket is writing */
    bool close_queued;     /* the close frame is in wslay (after every queued message) */
    uint16_t close_code;   /* S_CLOSING: the close frame to send once the queue is empty */
    const char *close_reason;
    uint64_t close_deadline; /* loop time: a peer that does not read by then is dropped */
    uint64_t join_deadline;  /* loop time: a session not established by then is aborted */
    uint64_t last_activity;  /* loop time of the last message, ping or pong received */
    uint64_t last_ping;      /* loop time of the last ping the router sent (idle_sweep) */
    session *dirty_next;
    session *prev, *next;
};

struct wamp_router {
    runtime *rt;
    session *sessions;
    int nsessions;
    held *topics; /* topic */
    held *regs;   /* registration */
    uint64_t next_sub_id, next_reg_id;
    session *dirty;
    uv_timer_t flush_timer;
    uv_timer_t join_timer; /* runs while some session is not established yet */
    uv_timer_t idle_timer; /* runs while there are sessions (--session-idle-timeout) */
    codec_buf out;
    int auth_jobs; /* tickets being checked on the thread pool */
    bool shutting_down;
};

/* A ticket is checked on libuv's thread pool: PBKDF2 is slow on purpose. The job outlives a
 * session that ends meanwhile (job->s is then NULL). */
typedef struct auth_job {
    uv_work_t work;
    router *r;
    session *s;
    const auth_user *user; /* NULL: unknown authid, checked all the same (decoy salt) */
    char authid[AUTH_ID_MAX];
    char peer[AUTH_PEER_MAX];
    char *ticket;
    bool ok;
} auth_job;

/* wamp_router.c: helpers every part shares, and dispatch */
int wamp_ptrs_add(ptrs *p, void *x);
bool wamp_ptrs_remove(ptrs *p, void *x);
bool wamp_ptrs_has(const ptrs *p, const void *x);
bool wamp_held_unlink_unused(held **list, held *h);
/* UNSUBSCRIBE / UNREGISTER [type, Request|id, Id|id]: the session stops holding the topic or
 * registration with that id (on list; mine is the session's own array of them). Returns it, for
 * the caller to release and acknowledge (*req), or NULL once the message is answered (a protocol
 * violation, or no such id in this session). */
held *wamp_held_leave(session *s, json_t *msg, held *list, ptrs *mine, uint64_t *req);
uint64_t wamp_random_id(void);
bool wamp_get_id(const json_t *msg, size_t i, uint64_t *out);
bool wamp_valid_uri(const char *u, bool allow_empty_parts);
bool wamp_allowed(session *s, enum auth_action action, const char *uri, int type, uint64_t request,
                  bool answer);
int wamp_envelope_split(const char *data, size_t len, json_t **args, json_t **kwargs);
char *wamp_envelope_text(const json_t *msg, size_t ai, size_t *len);
bool wamp_args_ok(const json_t *msg, size_t ai);
bool wamp_request_head(session *s, json_t *msg, const char *shape, uint64_t *req, json_t **opts,
                       json_t **uri);
void wamp_dispatch(session *s, json_t *msg);
void wamp_refuse_extension(session *s, json_t *msg, const char *why);

/* wamp_session.c: sending and closing (the only part that touches wslay) */
void wamp_queue_bytes(session *s, const char *p, size_t n);
void wamp_send_msg(session *s, json_t *msg);
void wamp_send_error(session *s, int type, uint64_t request, const char *uri, const char *message);
void wamp_close_session(session *s, uint16_t code, const char *reason);
void wamp_abort_session(session *s, const char *uri, const char *message);
void wamp_protocol_violation(session *s, const char *message);
/* The largest message the session reads (twice it: see wamp_router_upgrade). */
void wamp_session_limit_messages(session *s, size_t bytes);
/* Ends a session without a close handshake (the peer does not read, or does not answer). */
void wamp_drop_session(session *s);

/* wamp_join.c */
void wamp_on_hello(session *s, json_t *msg);
void wamp_on_authenticate(session *s, json_t *msg);

/* wamp_broker.c */
void wamp_on_subscribe(session *s, json_t *msg);
void wamp_on_unsubscribe(session *s, json_t *msg);
void wamp_on_publish(session *s, json_t *msg);
void wamp_ack_after_flush(session *s, int type, uint64_t request, uint64_t id, bool fresh);
/* The session's subscriptions go (a topic no session holds any more is released). */
void wamp_broker_session_end(session *s);

/* wamp_dealer.c */
void wamp_on_call(session *s, json_t *msg);
void wamp_on_cancel(session *s, json_t *msg);
void wamp_on_register(session *s, json_t *msg);
void wamp_on_unregister(session *s, json_t *msg);
void wamp_on_yield(session *s, json_t *msg);
void wamp_on_error(session *s, json_t *msg);
void wamp_call_unlink(pending_call *c);
/* The session's registrations go, its invocations are answered (the callee left), its calls and
 * probes are canceled. */
void wamp_dealer_session_end(session *s);

#endif
