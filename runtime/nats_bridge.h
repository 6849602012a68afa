/* nats_bridge.h: the NATS connection of the process, its subscriptions, the request inbox with
 * its pending replies, and the hand-off of every message to the loop thread. */
#ifndef MICROSERVICE_NATS_BRIDGE_H
#define MICROSERVICE_NATS_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <nats/nats.h>

#include "runtime.h"

enum nb_status {
    NB_OK = 0,
    NB_NO_RESPONDERS, /* nobody subscribes the subject */
    NB_TIMEOUT,       /* no reply in time */
    NB_UNAVAILABLE,   /* the bus is down (or went down while waiting) */
    NB_ERROR,         /* anything else nats.c refused (logged) */
};

/* Every request carries how long (ms) its caller waits; a service abandons the call after it. */
#define NB_HDR_TIMEOUT "Microservice-Timeout"

/* How long a process that used nats.c waits for the library's threads at exit (nats_CloseAndWait,
 * once every connection is destroyed). */
#define NATS_CLOSE_WAIT_MS 2000

typedef struct nats_bridge nats_bridge;
typedef struct nb_sub nb_sub;
typedef struct nb_request nb_request;

/* A message for a subscription, on the loop thread. The callee owns msg (natsMsg_Destroy). */
typedef void (*nb_msg_fn)(void *udata, natsMsg *msg);
/* A reply as its reader sees it, whether it came over the bus (msg is the message; data, len and
 * headers are read from it) or from a callee of this process (local_dispatch.c: msg is NULL;
 * headers is name, value, ..., NULL). It lives for the reply callback only: its maker frees it
 * after the callback returns, so a reader copies what it keeps. */
typedef struct nb_reply {
    natsMsg *msg;
    const char *data;
    size_t len;
    const char *const *headers;
} nb_reply;
/* The value of the reply's header name, or NULL. */
const char *nb_reply_header(const nb_reply *r, const char *name);

/* The end of a request, on the loop thread, exactly once unless cancelled (a progress reply, see
 * nb_request_allow_progress, comes before it). reply is non-NULL for NB_OK only. */
typedef void (*nb_reply_fn)(void *udata, enum nb_status status, const nb_reply *reply);

nats_bridge *nats_bridge_new(runtime *rt);
/* Starts connecting; an unreachable server is retried in the background. -1 on a bad URL. */
int nats_bridge_connect(nats_bridge *nb);
bool nats_bridge_connected(nats_bridge *nb);
/* Connected, and every subscription made so far is known to be registered by the server. */
bool nats_bridge_ready(nats_bridge *nb);
/* "connecting", "connected", "reconnecting", "disconnected", "draining", "closed". */
const char *nats_bridge_state(nats_bridge *nb);
/* fn(arg) runs once, the first time the bridge becomes ready. */
void nats_bridge_on_ready(nats_bridge *nb, void (*fn)(void *arg), void *arg);
/* Asks the server to confirm every subscription made so far (see nats_bridge_ready). */
void nats_bridge_confirm(nats_bridge *nb);
/* A round trip through the server on this connection (a message to our own inbox): fn runs with
 * NB_OK once the server has processed everything sent before, e.g. a new subscription. Same
 * contract as nats_bridge_request. */
int nats_bridge_flush(nats_bridge *nb, double timeout_s, nb_reply_fn fn, void *udata,
                      nb_request **out);

/* queue may be NULL. fn runs on the loop thread. Costs nothing while idle: nats.c hands each
 * message to one queue shared by every subscription (bounded; beyond it messages are dropped,
 * counted and logged) that the loop takes in batches. */
nb_sub *nats_bridge_subscribe(nats_bridge *nb, const char *subject, const char *queue, nb_msg_fn fn,
                              void *udata);
/* The same, read by polling nats.c on every loop turn (no thread hop, but a cost per turn): only
 * for the RPC endpoints the operator's services declare, never for anything a client creates.
 * At most the configured number of messages pend in nats.c (beyond that nats.c drops them and
 * reports a slow consumer). */
nb_sub *nats_bridge_subscribe_polled(nats_bridge *nb, const char *subject, const char *queue,
                                     nb_msg_fn fn, void *udata);
/* Removes interest but keeps delivering what the server already sent (a queued subscription: what
 * its queue already holds); frees itself when done. */
void nb_sub_drain(nb_sub *s);
/* Like nb_sub_drain; on_gone(udata) runs once nothing more will be delivered (the subscription
 * is freed), so that udata can outlive the last delivery. */
void nb_sub_drain_notify(nb_sub *s, void (*on_gone)(void *udata));
/* Unsubscribes at once and frees. */
void nb_sub_close(nb_sub *s);
/* Subscriptions still open or draining. */
int nats_bridge_sub_count(nats_bridge *nb);
/* The bus rule: a message with a reply subject is a request, one without is an event. RPC
 * handlers pass want_request true, subscribers false. Returns true (the message is released and
 * counted) when msg is not of that kind: the handler must ignore it. */
bool nats_bridge_misdirected(nats_bridge *nb, natsMsg *msg, bool want_request);
/* For /metrics: messages dropped because the subscription queue was full, events refused by RPC
 * handlers, requests refused by subscribers. */
void nats_bridge_counters(nats_bridge *nb, uint64_t *dropped, uint64_t *ignored_events,
                          uint64_t *ignored_requests);
/* Asked at every loop turn whether to stop taking messages from the subscriptions for now (the
 * runtime pauses while --max-inflight calls run); while it says true nothing is taken, and
 * nats.c buffers (then drops, as a slow consumer). fn NULL: never paused. */
typedef bool (*nb_pause_fn)(void *udata);
void nats_bridge_set_pause(nats_bridge *nb, nb_pause_fn fn, void *udata);
/* The intake may have been paused (see nats_bridge_set_pause); call when that may have ended. */
void nats_bridge_kick(nats_bridge *nb);

/* headers: NULL or a NULL-terminated list of name, value pairs. Returns NB_OK, NB_UNAVAILABLE
 * or NB_ERROR. */
int nats_bridge_publish(nats_bridge *nb, const char *subject, const char *reply, const char *data,
                        size_t len, const char *const *headers);
/* Never blocks: sends and returns; fn runs later. When the bus is down, returns NB_UNAVAILABLE
 * at once and fn never runs. */
int nats_bridge_request(nats_bridge *nb, const char *subject, const char *data, size_t len,
                        const char *const *headers, double timeout_s, nb_reply_fn fn, void *udata,
                        nb_request **out);
/* The same, on behalf of a caller: when authid is not NULL and the auth file has a bus_secret,
 * the request carries the caller's identity signed for its subject, its reply subject (known
 * only here) and its body (auth_identity_headers). */
int nats_bridge_request_as(nats_bridge *nb, const char *subject, const char *data, size_t len,
                           const char *const *headers, const char *authid, const char *authrole,
                           double timeout_s, nb_reply_fn fn, void *udata, nb_request **out);
/* Replies carrying the header name are progress: fn runs for each and the request stays
 * pending until a reply without it (or the timeout). */
void nb_request_allow_progress(nb_request *r, const char *header);
/* fn will not run; safe from inside other callbacks. */
void nb_request_cancel(nb_request *r);
/* The reply subject of a pending request (what its server answers to); returns its length. */
int nb_request_reply_subject(const nb_request *r, char *out, size_t size);
int nats_bridge_pending_requests(nats_bridge *nb);
/* Where this connection's requests get their replies ("_INBOX.<nuid>"). */
const char *nats_bridge_inbox(nats_bridge *nb);

/* Frees a message nats.c delivered, at the end of this loop turn: nats.c hands each freed message
 * to its collector thread and wakes it when its list was empty, so freeing a turn's messages
 * together costs one wake-up instead of one per message. Loop thread only. */
void nats_bridge_release(nats_bridge *nb, natsMsg *msg);

/* Flushes what is queued, closes the connection and every handle; on_closed runs on the loop once
 * everything is released. */
void nats_bridge_close(nats_bridge *nb, void (*on_closed)(void *arg), void *arg);
void nats_bridge_free(nats_bridge *nb);

#endif
