/* auth.h: authentication and authorization from an auth file (--auth FILE): users with salted
 * secrets (WAMP ticket and wampcra), bearer tokens (HTTP), roles with URI patterns per action,
 * and the signed caller identity that travels over NATS. Loaded once at start-up and immutable
 * afterwards, so the slow checks (PBKDF2) may run on libuv's thread pool. See docs/auth.md. */
#ifndef MICROSERVICE_AUTH_H
#define MICROSERVICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#define AUTH_ID_MAX 128   /* authid, with its NUL */
#define AUTH_ROLE_MAX 64  /* authrole, with its NUL */
#define AUTH_SIG_MAX 64   /* a bus signature (base64 of 32 bytes), with its NUL */
#define AUTH_SALT_MAX 256 /* a salt in an auth file, with its NUL */

/* NATS headers of the caller's identity, set by a gateway (HTTP, WAMP) or a calling service. */
#define AUTH_HDR_AUTHID "Microservice-Authid"
#define AUTH_HDR_AUTHROLE "Microservice-Authrole"
#define AUTH_HDR_SIGNATURE "Microservice-Auth-Signature"

#define URI_AUTHENTICATION_FAILED "wamp.error.authentication_failed"
#define URI_NOT_AUTHORIZED "wamp.error.not_authorized"
#define URI_NO_AUTH_METHOD "wamp.error.no_auth_method"

typedef struct auth auth;
typedef struct auth_user auth_user;

enum auth_action { AUTH_CALL, AUTH_REGISTER, AUTH_PUBLISH, AUTH_SUBSCRIBE };

/* Reads and checks the file; on error returns -1 with a message naming the file and the field. */
int auth_load(const char *path, auth **out, char *err, size_t errlen);
void auth_free(auth *a);

const auth_user *auth_user_find(const auth *a, const char *authid);
const char *auth_user_id(const auth_user *u);
const char *auth_user_role(const auth_user *u);
bool auth_user_has_secret(const auth_user *u);
/* The role of callers without credentials, or NULL when they are refused. */
const char *auth_anonymous_role(const auth *a);
/* The user a bearer token belongs to (tokens are stored as SHA-256), or NULL. */
const auth_user *auth_token_find(const auth *a, const char *token, size_t len);

/* WAMP ticket: derives the key from the ticket with the user's salt (PBKDF2-HMAC-SHA256, slow by
 * design: call it off the loop) and compares in constant time. */
bool auth_ticket_ok(const auth_user *u, const char *ticket);

/* WAMP-CRA: the challenge text for a session (JSON as the WAMP spec describes), and the
 * salt/iterations/keylen the client needs to derive its key. u may be NULL (unknown authid):
 * the challenge then carries made-up parameters, so a client cannot tell which users exist. */
char *auth_cra_challenge(const auth *a, const auth_user *u, const char *authid, uint64_t session,
                         char salt[AUTH_SALT_MAX], int *iterations, int *keylen);
/* True when signature is base64(HMAC-SHA256(key, challenge)). u NULL: always false. */
bool auth_cra_verify(const auth_user *u, const char *challenge, const char *signature);

/* Whether role may do action on uri. For AUTH_SUBSCRIBE, uri may be a NATS pattern (with * and
 * >), which must be covered entirely by one allowed pattern. */
bool auth_allowed(const auth *a, const char *role, enum auth_action action, const char *uri);

/* The caller identity over NATS: a signature of (subject, authid, authrole) with the file's
 * bus_secret. Without a bus_secret auth_sign returns false and auth_verify refuses everything. */
bool auth_bus_signing(const auth *a);
bool auth_sign(const auth *a, const char *subject, const char *authid, const char *authrole,
               char out[AUTH_SIG_MAX]);
bool auth_verify(const auth *a, const char *subject, const char *authid, const char *authrole,
                 const char *signature);
/* Writes the identity headers (name, value pairs) of a request on subject into headers and
 * returns how many entries they take: 6, or 0 when there is nothing to sign (no bus_secret or no
 * authid). sig keeps the signature's text; both must live until the request is sent. */
int auth_identity_headers(const auth *a, const char *subject, const char *authid,
                          const char *authrole, char sig[AUTH_SIG_MAX], const char *headers[6]);
/* The caller a message carries, when its headers are signed for the subject it arrived on:
 * true with *authid and *authrole pointing into the message. */
bool auth_identity_of(const auth *a, natsMsg *msg, const char **authid, const char **authrole);

/* A valid identity string for a header: 1..max-1 bytes, printable, no control characters. */
bool auth_identity_valid(const char *s, size_t max);

/* For `microservice auth-secret` and `auth-token`: a new salted secret for a password, and a new
 * random bearer token with its stored form. Both return malloc'd JSON text or NULL. */
char *auth_make_secret(const char *password, int iterations);
char *auth_make_token(void);

#endif
