/* wamp_join.c: owns how a WAMP session joins: HELLO, the CHALLENGE of ticket or wampcra, the
 * AUTHENTICATE (tickets checked on libuv's thread pool, behind the limiter of failed sign-ins)
 * and WELCOME. The behaviour is specified in docs/wamp.md and docs/auth.md. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_limit.h"
#include "log.h"
#include "rpc_error.h"
#include "wamp_internal.h"

/* tickets checked at once (PBKDF2 on the thread pool); more sign-ins are refused */
#define MAX_AUTH_JOBS 64

static json_t *welcome_details(void)
{
    return json_pack("{s{s{s{sbsbsb}}s{s{sbsbsbsb}}}}", "roles", "broker", "features",
                     "publisher_exclusion", 1, "publisher_identification", 1,
                     "pattern_based_subscription", 1, "dealer", "features",
                     "progressive_call_results", 1, "call_timeout", 1, "call_canceling", 1,
                     "shared_registration", 1);
}

static void establish(session *s, const char *authid, const char *authrole, const char *method)
{
    /* from now on messages up to --body-limit (see wamp_router_upgrade) */
    wamp_session_limit_messages(s, s->r->rt->cfg.body_limit);
    snprintf(s->authid, sizeof s->authid, "%s", authid);
    snprintf(s->authrole, sizeof s->authrole, "%s", authrole);
    s->authmethod = method;
    s->state = S_ESTABLISHED;
    s->user = NULL;
    free(s->challenge);
    s->challenge = NULL;
    json_t *d = welcome_details();
    json_object_set_new(d, "realm", json_string(s->realm ? s->realm : ""));
    json_object_set_new(d, "authid", json_string(s->authid));
    json_object_set_new(d, "authrole", json_string(s->authrole));
    json_object_set_new(d, "authmethod", json_string(method));
    json_object_set_new(d, "authprovider", json_string(s->r->rt->auth ? "file" : "none"));
    wamp_send_msg(s, json_pack("[iIo]", WELCOME, (json_int_t)s->id, d));
    log_debug(TAG, "session %llu: %s as %s (%s)", (unsigned long long)s->id, s->authid, s->authrole,
              method);
}

static void auth_failed(session *s, const char *why)
{
    log_info(TAG, "session %llu: authentication of %s failed (%s)", (unsigned long long)s->id,
             s->authid[0] ? s->authid : "?", why);
    wamp_abort_session(s, URI_AUTHENTICATION_FAILED, "authentication failed");
}

#define TOO_MANY_FAILURES "too many failed sign-ins; retry later"

/* Whether the limiter of failed sign-ins lets this session try to sign in as s->authid now;
 * else the session is aborted. */
static bool may_try(session *s)
{
    if (auth_limit_admit(s->r->rt->auth_limit, uv_now(&s->r->rt->loop), s->peer, s->authid))
        return true;
    log_info(TAG, "session %llu: sign-in of %s from %s refused: too many failures",
             (unsigned long long)s->id, s->authid, s->peer[0] ? s->peer : "?");
    wamp_abort_session(s, URI_AUTHENTICATION_FAILED, TOO_MANY_FAILURES);
    return false;
}

/* Sends the CHALLENGE of method (ticket or wampcra) for authid. It looks the same whether
 * authid is a user or not (docs/auth.md). */
static void challenge(session *s, const char *method, const char *authid)
{
    const auth *a = s->r->rt->auth;
    snprintf(s->authid, sizeof s->authid, "%s", authid);
    if (!may_try(s)) return;
    s->user = auth_user_find(a, authid);
    if (s->user && !auth_user_has_secret(s->user)) s->user = NULL; /* a token-only user */
    s->authmethod = strcmp(method, "ticket") == 0 ? "ticket" : "wampcra";
    json_t *extra = json_object();
    if (strcmp(method, "wampcra") == 0) {
        char salt[AUTH_SALT_MAX];
        int iterations, keylen;
        s->challenge = auth_cra_challenge(a, s->user, authid, s->id, salt, &iterations, &keylen);
        if (!s->challenge) {
            json_decref(extra);
            wamp_abort_session(s, URI_AUTHENTICATION_FAILED, "cannot make a challenge");
            return;
        }
        json_object_set_new(extra, "challenge", json_string(s->challenge));
        json_object_set_new(extra, "salt", json_string(salt));
        json_object_set_new(extra, "iterations", json_integer(iterations));
        json_object_set_new(extra, "keylen", json_integer(keylen));
    }
    s->state = S_CHALLENGED;
    wamp_send_msg(s, json_pack("[iso]", CHALLENGE, s->authmethod, extra));
}

void wamp_on_hello(session *s, json_t *msg)
{
    json_t *realm = json_array_get(msg, 1), *details = json_array_get(msg, 2);
    if (json_array_size(msg) != 3 || !json_is_string(realm) || !json_is_object(details) ||
        !wamp_valid_uri(json_string_value(realm), false)) {
        wamp_protocol_violation(s, "HELLO is [1, Realm|uri, Details|dict]");
        return;
    }
    if (s->r->shutting_down) {
        wamp_abort_session(s, "wamp.error.system_shutdown", "the router is shutting down");
        return;
    }
    s->realm = strdup(json_string_value(realm));
    const auth *a = s->r->rt->auth;
    if (!a) {
        establish(s, "anonymous", "anonymous", "anonymous");
        return;
    }
    json_t *methods = json_object_get(details, "authmethods");
    const char *authid = json_string_value(json_object_get(details, "authid"));
    if (methods && !json_is_array(methods)) {
        wamp_protocol_violation(s, "HELLO.Details.authmethods is a list of strings");
        return;
    }
    size_t n = methods ? json_array_size(methods) : 0;
    for (size_t i = 0; i <= n; i++) {
        /* no list at all means anonymous */
        const char *m = i < n    ? json_string_value(json_array_get(methods, i))
                        : n == 0 ? "anonymous"
                                 : NULL;
        if (!m) continue;
        if ((strcmp(m, "ticket") == 0 || strcmp(m, "wampcra") == 0) &&
            auth_identity_valid(authid, AUTH_ID_MAX)) {
            challenge(s, m, authid);
            return;
        }
        if (strcmp(m, "anonymous") == 0 && auth_anonymous_role(a)) {
            establish(s, "anonymous", auth_anonymous_role(a), "anonymous");
            return;
        }
    }
    wamp_abort_session(s, URI_NO_AUTH_METHOD,
                       auth_anonymous_role(a)
                           ? "offer ticket or wampcra (with an authid), or anonymous"
                           : "this router wants ticket or wampcra, with an authid");
}

static void ticket_work(uv_work_t *w)
{
    auth_job *j = w->data;
    j->ok = auth_ticket_ok(j->r->rt->auth, j->user, j->authid, j->ticket);
}

static void ticket_done(uv_work_t *w, int status)
{
    auth_job *j = w->data;
    session *s = j->s;
    j->r->auth_jobs--;
    bool ok = status == 0 && j->ok;
    auth_limit_settle(j->r->rt->auth_limit, uv_now(&j->r->rt->loop), j->peer, j->authid, ok);
    if (s) {
        s->auth_job = NULL;
        if (ok && s->state == S_VERIFYING)
            establish(s, auth_user_id(j->user), auth_user_role(j->user), "ticket");
        else if (s->state == S_VERIFYING)
            auth_failed(s, j->user ? "wrong ticket" : "unknown authid");
    }
    free(j->ticket);
    free(j);
}

void wamp_on_authenticate(session *s, json_t *msg)
{
    json_t *sig = json_array_get(msg, 1);
    if (json_array_size(msg) != 3 || !json_is_string(sig) ||
        !json_is_object(json_array_get(msg, 2))) {
        wamp_protocol_violation(s, "AUTHENTICATE is [5, Signature|string, Extra|dict]");
        return;
    }
    if (!may_try(s)) return; /* failures may have come in since the CHALLENGE */
    auth_limit *lim = s->r->rt->auth_limit;
    uint64_t now = uv_now(&s->r->rt->loop);
    if (strcmp(s->authmethod, "wampcra") == 0) {
        bool ok = auth_cra_verify(s->user, s->challenge, json_string_value(sig)) && s->user;
        auth_limit_charge(lim, now, s->peer, s->authid);
        auth_limit_settle(lim, now, s->peer, s->authid, ok);
        if (ok)
            establish(s, auth_user_id(s->user), auth_user_role(s->user), "wampcra");
        else
            auth_failed(s, s->user ? "wrong signature" : "unknown authid");
        return;
    }
    /* ticket: an unknown authid is checked as well (against its decoy salt), so that the answer
     * takes as long as for a user */
    if (s->r->auth_jobs >= MAX_AUTH_JOBS) {
        log_warn(TAG, "session %llu: %d tickets are being checked already: refused",
                 (unsigned long long)s->id, s->r->auth_jobs);
        wamp_abort_session(s, URI_AUTHENTICATION_FAILED, "too many sign-ins at once, try again");
        return;
    }
    auth_job *j = calloc(1, sizeof *j);
    if (j) j->ticket = strdup(json_string_value(sig));
    if (!j || !j->ticket) {
        free(j);
        wamp_abort_session(s, URI_AUTHENTICATION_FAILED, "out of memory");
        return;
    }
    j->r = s->r;
    j->s = s;
    j->user = s->user;
    snprintf(j->authid, sizeof j->authid, "%s", s->authid);
    snprintf(j->peer, sizeof j->peer, "%s", s->peer);
    j->work.data = j;
    if (uv_queue_work(&s->r->rt->loop, &j->work, ticket_work, ticket_done) != 0) {
        free(j->ticket);
        free(j);
        wamp_abort_session(s, URI_AUTHENTICATION_FAILED, "cannot check the ticket now");
        return;
    }
    /* counted as failed until it succeeds: tickets in flight count against the limit too */
    auth_limit_charge(lim, now, j->peer, j->authid);
    s->auth_job = j;
    s->state = S_VERIFYING;
    s->r->auth_jobs++;
}
