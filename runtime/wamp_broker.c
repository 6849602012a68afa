/* wamp_broker.c: owns the broker role of the WAMP router: SUBSCRIBE, UNSUBSCRIBE and PUBLISH,
 * the topics (one NATS subscription per topic and match policy per process, shared by its
 * sessions), EVENTs to the subscribers, and the acknowledgements (SUBSCRIBED, REGISTERED) sent
 * once the NATS server has a new subscription. It sends through wamp_session.c and never touches
 * the WebSocket. The behaviour is specified in docs/wamp.md. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nats_bridge.h"
#include "rpc_error.h"
#include "wamp_internal.h"

#define HDR_EXCLUDE "Wamp-Exclude"     /* the publishing session, when it excludes itself */
#define HDR_PUBLISHER "Wamp-Publisher" /* the publishing session, when it discloses itself */
#define HDR_PUBLICATION "Wamp-Publication"

/* ---- publish and subscribe ---- */

static void on_event(void *udata, natsMsg *m)
{
    topic *t = udata;
    json_t *args, *kwargs;
    if (nats_bridge_misdirected(t->r->rt->nats, m, false)) return; /* requests are for RPCs */
    if (wamp_envelope_split(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &args, &kwargs) !=
        0) {
        log_debug(TAG, "event on %s dropped: not an [args, kwargs] envelope",
                  natsMsg_GetSubject(m));
        nats_bridge_release(t->r->rt->nats, m);
        return;
    }
    const char *exclude = NULL, *publisher = NULL, *publication = NULL;
    natsMsgHeader_Get(m, HDR_EXCLUDE, &exclude);
    natsMsgHeader_Get(m, HDR_PUBLISHER, &publisher);
    natsMsgHeader_Get(m, HDR_PUBLICATION, &publication);
    uint64_t excluded = exclude ? strtoull(exclude, NULL, 10) : 0;
    uint64_t pub_session = publisher ? strtoull(publisher, NULL, 10) : 0;
    uint64_t pub_id = publication ? strtoull(publication, NULL, 10) : 0;
    if (pub_id < 1 || pub_id > (uint64_t)MAX_ID) pub_id = wamp_random_id();
    json_t *details = json_object();
    if (strcmp(t->match, "exact") != 0)
        json_object_set_new(details, "topic", json_string(natsMsg_GetSubject(m)));
    if (pub_session)
        json_object_set_new(details, "publisher", json_integer((json_int_t)pub_session));
    json_t *ev = json_pack("[iIIooo]", EVENT, (json_int_t)t->h.id, (json_int_t)pub_id, details,
                           args, kwargs);
    /* encode once per serializer, queue for every session but the publisher */
    codec_buf enc[2];
    codec_buf_init(&enc[0]);
    codec_buf_init(&enc[1]);
    bool ok[2] = {wamp_encode(WAMP_JSON, ev, &enc[0]) == 0, false};
    bool msgpack_done = false;
    for (int i = 0; i < t->h.sessions.n; i++) {
        session *s = t->h.sessions.v[i];
        if (s->state != S_ESTABLISHED || (excluded && s->id == excluded)) continue;
        if (s->ser == WAMP_MSGPACK && !msgpack_done) {
            ok[1] = wamp_encode(WAMP_MSGPACK, ev, &enc[1]) == 0;
            msgpack_done = true;
        }
        if (ok[s->ser]) wamp_queue_bytes(s, enc[s->ser].data, enc[s->ser].len);
    }
    codec_buf_free(&enc[0]);
    codec_buf_free(&enc[1]);
    json_decref(ev);
    nats_bridge_release(t->r->rt->nats, m);
}

/* NATS subject for a topic and match policy, or NULL (refused, *why says so). */
static char *topic_subject(const char *uri, const char *match, const char **why)
{
    if (strcmp(match, "exact") == 0) {
        if (!wamp_valid_uri(uri, false)) goto bad;
        return strdup(uri);
    }
    if (strcmp(match, "prefix") == 0) {
        if (!wamp_valid_uri(uri, false)) goto bad;
        size_t n = strlen(uri);
        char *sub = malloc(n + 3);
        if (sub) snprintf(sub, n + 3, "%s.>", uri);
        return sub;
    }
    if (strcmp(match, "wildcard") == 0) {
        if (!wamp_valid_uri(uri, true)) goto bad;
        /* empty components become *: "a..c" -> "a.*.c", ".b" -> "*.b" */
        size_t n = strlen(uri);
        char *sub = malloc(2 * n + 2), *o = sub;
        if (!sub) return NULL;
        const char *p = uri;
        for (;;) {
            const char *dot = strchr(p, '.');
            size_t part = dot ? (size_t)(dot - p) : strlen(p);
            if (part == 0)
                *o++ = '*';
            else
                memcpy(o, p, part), o += part;
            if (!dot) break;
            *o++ = '.';
            p = dot + 1;
        }
        *o = '\0';
        return sub;
    }
    *why = "unknown match policy (exact, prefix or wildcard)";
    return NULL;
bad:
    *why = "a topic NATS cannot express (empty, or with '*', '>', '#' or whitespace; prefix and "
           "exact topics need every component)";
    return NULL;
}

static topic *topic_find(router *r, const char *uri, const char *match)
{
    for (held *h = r->topics; h; h = h->next) {
        topic *t = (topic *)h;
        if (strcmp(t->uri, uri) == 0 && strcmp(t->match, match) == 0) return t;
    }
    return NULL;
}

static void topic_release(topic *t)
{
    if (!wamp_held_unlink_unused(&t->r->topics, &t->h)) return;
    if (t->sub) nb_sub_close(t->sub);
    free(t->h.sessions.v);
    free(t->uri);
    free(t->match);
    free(t->subject);
    free(t);
}

void wamp_on_subscribe(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts = json_array_get(msg, 2), *uri = json_array_get(msg, 3);
    if (json_array_size(msg) != 4 || !wamp_get_id(msg, 1, &req) || !json_is_object(opts) ||
        !json_is_string(uri)) {
        wamp_protocol_violation(s, "SUBSCRIBE is [32, Request|id, Options|dict, Topic|uri]");
        return;
    }
    const char *match = json_string_value(json_object_get(opts, "match"));
    if (!match) match = "exact";
    const char *why = NULL;
    router *r = s->r;
    topic *t = topic_find(r, json_string_value(uri), match);
    if ((!t || !wamp_ptrs_has(&t->h.sessions, s)) && s->topics.n >= r->rt->cfg.max_session_subs) {
        wamp_send_error(s, SUBSCRIBE, req, URI_LIMIT_EXCEEDED,
                        "too many subscriptions in this session");
        return;
    }
    bool fresh = !t;
    char *subject = t ? NULL : topic_subject(json_string_value(uri), match, &why);
    if (!t && !subject) {
        wamp_send_error(s, SUBSCRIBE, req, "wamp.error.invalid_uri", why ? why : "out of memory");
        return;
    }
    if (!wamp_allowed(s, AUTH_SUBSCRIBE, t ? t->subject : subject, SUBSCRIBE, req, true)) {
        free(subject);
        return;
    }
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) {
            free(subject);
            return;
        }
        t->r = r;
        t->h.id = ++r->next_sub_id;
        t->uri = strdup(json_string_value(uri));
        t->match = strdup(match);
        t->subject = subject;
        t->sub = nats_bridge_subscribe(r->rt->nats, subject, NULL, on_event, t);
        t->h.next = r->topics;
        r->topics = &t->h;
        if (!t->sub) {
            topic_release(t);
            wamp_send_error(s, SUBSCRIBE, req, "wamp.error.unavailable",
                            "cannot subscribe on NATS");
            return;
        }
    }
    if (!wamp_ptrs_has(&t->h.sessions, s)) {
        wamp_ptrs_add(&t->h.sessions, s);
        wamp_ptrs_add(&s->topics, t);
    }
    wamp_ack_after_flush(s, SUBSCRIBED, req, t->h.id, fresh);
}

void wamp_on_unsubscribe(session *s, json_t *msg)
{
    uint64_t req;
    topic *t = (topic *)wamp_held_leave(s, msg, s->r->topics, &s->topics, &req);
    if (!t) return;
    topic_release(t);
    wamp_send_msg(s, json_pack("[iI]", UNSUBSCRIBED, (json_int_t)req));
}

void wamp_on_publish(session *s, json_t *msg)
{
    uint64_t req;
    json_t *opts, *uri;
    if (!wamp_request_head(s, msg,
                           "PUBLISH is [16, Request|id, Options|dict, Topic|uri, Arguments|list, "
                           "ArgumentsKw|dict]",
                           &req, &opts, &uri))
        return;
    bool ack = json_is_true(json_object_get(opts, "acknowledge"));
    if (!wamp_valid_uri(json_string_value(uri), false)) {
        if (ack) wamp_send_error(s, PUBLISH, req, "wamp.error.invalid_uri", "not a valid topic");
        return;
    }
    if (!wamp_allowed(s, AUTH_PUBLISH, json_string_value(uri), PUBLISH, req, ack)) return;
    uint64_t pub = wamp_random_id();
    char pubtext[24], sesstext[24];
    snprintf(pubtext, sizeof pubtext, "%llu", (unsigned long long)pub);
    snprintf(sesstext, sizeof sesstext, "%llu", (unsigned long long)s->id);
    const char *headers[8];
    int h = 0;
    headers[h++] = HDR_PUBLICATION;
    headers[h++] = pubtext;
    if (!json_is_false(json_object_get(opts, "exclude_me"))) {
        headers[h++] = HDR_EXCLUDE;
        headers[h++] = sesstext;
    }
    if (json_is_true(json_object_get(opts, "disclose_me"))) {
        headers[h++] = HDR_PUBLISHER;
        headers[h++] = sesstext;
    }
    headers[h] = NULL;
    size_t len;
    char *body = wamp_envelope_text(msg, 4, &len);
    int rc =
        body ? nats_bridge_publish(s->r->rt->nats, json_string_value(uri), NULL, body, len, headers)
             : NB_ERROR;
    free(body);
    if (!ack) return;
    if (rc == NB_OK)
        wamp_send_msg(s, json_pack("[iII]", PUBLISHED, (json_int_t)req, (json_int_t)pub));
    else
        wamp_send_error(s, PUBLISH, req, URI_UNAVAILABLE, "the bus is unavailable");
}

void wamp_broker_session_end(session *s)
{
    for (int i = 0; i < s->topics.n; i++) {
        topic *t = s->topics.v[i];
        wamp_ptrs_remove(&t->h.sessions, s);
        topic_release(t);
    }
}

/* ---- acknowledgements ---- */

/* SUBSCRIBED / REGISTERED once the server has the new NATS subscription, so that a publication
 * or call made right after, from anywhere, reaches it. */
static void on_ack_flushed(void *udata, enum nb_status status, const nb_reply *reply)
{
    (void)status;
    (void)reply;
    pending_call *c = udata;
    session *s = c->s;
    wamp_call_unlink(c);
    wamp_send_msg(s, json_pack("[iII]", c->ack, (json_int_t)c->request, (json_int_t)c->ack_id));
    free(c);
}

void wamp_ack_after_flush(session *s, int type, uint64_t request, uint64_t id, bool fresh)
{
    pending_call *c = fresh ? calloc(1, sizeof *c) : NULL;
    if (c) {
        c->s = s;
        c->request = request;
        c->ack = type;
        c->ack_id = id;
        if (nats_bridge_flush(s->r->rt->nats, 2.0, on_ack_flushed, c, &c->req) == NB_OK) {
            c->next = s->calls;
            s->calls = c;
            return;
        }
        free(c);
    }
    wamp_send_msg(s, json_pack("[iII]", type, (json_int_t)request, (json_int_t)id));
}
