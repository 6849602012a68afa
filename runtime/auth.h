/* auth.h: authentication and authorization from an auth file (--auth FILE): users with salted
 * secrets (WAMP ticket and wampcra), bearer tokens (HTTP), roles with URI patterns per action,
 * and the signed caller identity that travels over NATS. Loaded once at start-up and immutable
 * afterwards (but for an atomic counter), so the slow checks (PBKDF2) may run on libuv's thread
 * pool. See docs/auth.md. */
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
#define AUTH_HDR_TIME "Microservice-Auth-Time" /* when it was signed: ms since the epoch */
#define AUTH_TIME_MAX 24                       /* its text, with its NUL */

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
 * design: call it off the loop) and compares in constant time. u NULL (an unknown authid, or a
 * user without a secret): the same derivation runs with authid's decoy parameters (below) and
 * the answer is false, so a ticket for an unknown user takes as long as one for a known user. */
bool auth_ticket_ok(auth *a, const auth_user *u, const char *authid, const char *ticket);
/* PBKDF2 derivations auth_ticket_ok has run (known and unknown authids alike), for /metrics. */
unsigned long long auth_derivations(const auth *a);

/* The salt, iterations and keylen a client is told for authid: the user's own, or for an unknown
 * authid made-up ones of the same shape: base64 of 16 bytes (HMAC of the authid with a key
 * derived from the file's secrets, so stable across restarts and workers), and the iterations
 * and keylen most users of the file have. */
void auth_salt_of(const auth *a, const auth_user *u, const char *authid, char salt[AUTH_SALT_MAX],
                  int *iterations, int *keylen);

/* WAMP-CRA: the challenge text for a session (JSON as the WAMP spec describes, without the role,
 * which WELCOME tells), and the salt/iterations/keylen the client needs to derive its key (see
 * auth_salt_of). u may be NULL (unknown authid): the challenge looks the same. */
char *auth_cra_challenge(const auth *a, const auth_user *u, const char *authid, uint64_t session,
                         char salt[AUTH_SALT_MAX], int *iterations, int *keylen);
/* True when signature is base64(HMAC-SHA256(key, challenge)). u NULL: the same HMAC is computed
 * with a throw-away key and the answer is false. */
bool auth_cra_verify(const auth_user *u, const char *challenge, const char *signature);

/* Whether role may do action on uri. For AUTH_SUBSCRIBE, uri may be a NATS pattern (with * and
 * >), which must be covered entirely by one allowed pattern. */
bool auth_allowed(const auth *a, const char *role, enum auth_action action, const char *uri);

/* The caller identity over NATS: base64(HMAC-SHA256(bus_secret, text)) where text is
 *   "<subject>\n<reply>\n<authid>\n<authrole>\n<time>\n<hex SHA-256 of the body>"
 * (reply "" when none; time: ms since the epoch, in decimal), so a signature holds for one
 * request only: its procedure, its reply subject, its body, and for a limited time. Without a
 * bus_secret auth_sign returns false and auth_verify refuses everything. */
bool auth_bus_signing(const auth *a);
bool auth_sign(const auth *a, const char *subject, const char *reply, const void *body, size_t len,
               const char *authid, const char *authrole, const char *time, char out[AUTH_SIG_MAX]);
/* Also refuses a time further than the signature window (auth_set_signature_window) from now_ms,
 * in the past or in the future (clock skew between processes). */
bool auth_verify(const auth *a, const char *subject, const char *reply, const void *body,
                 size_t len, const char *authid, const char *authrole, const char *time,
                 const char *signature, uint64_t now_ms);
/* How old (or how far ahead) a signature may be; 60 s unless set. Call before use. */
void auth_set_signature_window(auth *a, double seconds);
/* The wall clock in ms since the epoch, as signatures carry it. */
uint64_t auth_now_ms(void);

/* A request's identity headers and the texts they point to; must live until it is sent. */
typedef struct auth_stamp {
    char sig[AUTH_SIG_MAX];
    char time[AUTH_TIME_MAX];
} auth_stamp;
/* Writes the identity headers (name, value pairs) of a request into headers, signed now for its
 * subject, reply subject and body, and returns how many entries they take: 8, or 0 when there
 * is nothing to sign (no bus_secret or no authid). */
int auth_identity_headers(const auth *a, const char *subject, const char *reply, const void *body,
                          size_t len, const char *authid, const char *authrole, auth_stamp *st,
                          const char *headers[8]);
/* The caller a message carries, when its headers are signed for the subject, reply subject and
 * body it arrived with, within the signature window: true with *authid and *authrole pointing
 * into the message. */
bool auth_identity_of(const auth *a, natsMsg *msg, const char **authid, const char **authrole);

/* A valid identity string for a header: 1..max-1 bytes, printable, no control characters. */
bool auth_identity_valid(const char *s, size_t max);

/* For `microservice auth-secret` and `auth-token`: a new salted secret for a password, and a new
 * random bearer token with its stored form. Both return malloc'd JSON text or NULL. */
char *auth_make_secret(const char *password, int iterations);
char *auth_make_token(void);

#endif
