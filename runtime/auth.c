/* auth.c: owns the auth file's contents once loaded: users (sorted by authid), bearer tokens
 * (sorted by their SHA-256), roles and their URI patterns, the anonymous role and the bus secret,
 * plus the cryptography around them (OpenSSL's libcrypto: PBKDF2, HMAC, SHA-256, random bytes).
 *
 * The file (JSON):
 *   { "bus_secret": "...", "anonymous": "guest",
 *     "users": { "alice": { "role": "admin", "salt": "...", "iterations": 10000, "keylen": 32,
 *                           "key": "<base64 PBKDF2-HMAC-SHA256(password, salt)>",
 *                           "tokens": ["sha256:<hex>"] } },
 *     "roles": { "admin": { "call": [">"], "register": [">"], "publish": [">"],
 *                           "subscribe": [">"] } } }
 * The key is what Autobahn's auth_cra.derive_key computes, so the same secret serves WAMP-CRA
 * (the key signs the challenge) and tickets (the ticket is derived again and compared). Unknown
 * authids get made-up salts and the same PBKDF2 work, so they look like users. The caller's
 * identity on NATS is signed per request (subject, reply subject, body, time).
 * Nothing here changes after auth_load (and auth_set_signature_window at start-up) but an atomic
 * counter of derivations: every function is safe to call from libuv's thread pool. */
#include "auth.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PATTERNS 1024
#define MAX_KEYLEN 64
#define DEFAULT_ITERATIONS 10000
#define DEFAULT_KEYLEN 32
#define DECOY_SALT_BYTES 16 /* as auth_make_secret's salts: base64 of 16 bytes */
#define DEFAULT_SIGNATURE_WINDOW_MS 60000

struct auth_user {
    char *authid;
    char *role;
    char *salt; /* NULL: no secret (a token-only user) */
    int iterations;
    int keylen;
    char *key; /* base64 of the derived key */
};

typedef struct token {
    unsigned char hash[32];
    const auth_user *user;
    const char *owner; /* while loading only: the authid, until the users are sorted */
} token;

typedef struct role {
    char *name;
    char **patterns[4]; /* by enum auth_action */
    int npatterns[4];
} role;

struct auth {
    auth_user *users;
    int nusers;
    token *tokens;
    int ntokens;
    role *roles;
    int nroles;
    char *anonymous;
    char *bus_secret;
    /* the made-up salts of unknown authids: HMAC(decoy_key, authid), decoy_key a digest of the
     * file's secrets; and the iterations and keylen most users have */
    unsigned char decoy_key[32];
    int decoy_iterations, decoy_keylen;
    uint64_t signature_window_ms;
    atomic_ullong derivations; /* PBKDF2 runs of auth_ticket_ok (thread pool) */
};

static const char *const ACTIONS[4] = {"call", "register", "publish", "subscribe"};

/* ---- small helpers ---- */

static char *b64(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out) EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static bool hmac_b64(const void *key, size_t keylen, const void *msg, size_t n, char *out,
                     size_t cap)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, n, mac, &maclen)) return false;
    if (cap < 4 * ((maclen + 2) / 3) + 1) return false;
    EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
    return true;
}

static bool equal_ct(const char *a, const char *b)
{
    size_t n = strlen(a);
    return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

static char *derive_key(const char *secret, const char *salt, int iterations, int keylen)
{
    unsigned char key[MAX_KEYLEN];
    if (keylen <= 0 || keylen > MAX_KEYLEN) return NULL;
    if (!PKCS5_PBKDF2_HMAC(secret, (int)strlen(secret), (const unsigned char *)salt,
                           (int)strlen(salt), iterations, EVP_sha256(), keylen, key))
        return NULL;
    char *out = b64(key, (size_t)keylen);
    OPENSSL_cleanse(key, sizeof key);
    return out;
}

bool auth_identity_valid(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

/* ---- URI patterns: dot-separated, "*" one component, ">" the rest (as NATS subjects) ---- */

static bool pattern_valid(const char *p)
{
    if (!p[0]) return false;
    for (const char *c = p;;) {
        const char *dot = strchr(c, '.');
        size_t n = dot ? (size_t)(dot - c) : strlen(c);
        if (n == 0) return false;
        if (n == 1 && *c == '>' && dot) return false; /* ">" only last */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)c[i] <= ' ' || ((c[i] == '*' || c[i] == '>') && n != 1))
                return false;
        if (!dot) return true;
        c = dot + 1;
    }
}

/* Whether every subject that pattern q matches is matched by pattern p. */
static bool pattern_covers(const char *p, const char *q)
{
    for (;;) {
        const char *pd = strchr(p, '.'), *qd = strchr(q, '.');
        size_t pn = pd ? (size_t)(pd - p) : strlen(p), qn = qd ? (size_t)(qd - q) : strlen(q);
        if (pn == 1 && *p == '>') return qn > 0;
        if (qn == 1 && *q == '>') return false;
        if (pn == 1 && *p == '*') {
            if (qn == 0) return false;
        } else if (pn != qn || memcmp(p, q, pn) != 0 || (qn == 1 && *q == '*')) {
            return false;
        }
        if (!pd || !qd) return !pd && !qd;
        p = pd + 1;
        q = qd + 1;
    }
}

/* ---- loading ---- */

static int fail(char *err, size_t errlen, const char *path, const char *fmt, const char *a,
                const char *b)
{
    char what[256];
    snprintf(what, sizeof what, fmt, a ? a : "", b ? b : "");
    snprintf(err, errlen, "%s: %s", path, what);
    return -1;
}

static char *dup_string(json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int load_roles(auth *a, json_t *roles, const char *path, char *err, size_t errlen)
{
    if (!roles) return 0;
    if (!json_is_object(roles)) return fail(err, errlen, path, "roles must be an object", 0, 0);
    a->roles = calloc(json_object_size(roles) + 1, sizeof *a->roles);
    if (!a->roles) return fail(err, errlen, path, "out of memory", 0, 0);
    const char *name;
    json_t *def;
    json_object_foreach(roles, name, def)
    {
        if (!json_is_object(def) || !auth_identity_valid(name, AUTH_ROLE_MAX))
            return fail(err, errlen, path, "roles.%s must be an object with a valid name", name, 0);
        role *r = &a->roles[a->nroles++];
        r->name = strdup(name);
        const char *key;
        json_t *list;
        json_object_foreach(def, key, list)
        {
            int act = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(key, ACTIONS[i]) == 0) act = i;
            if (act < 0)
                return fail(err, errlen, path,
                            "roles.%s.%s: the actions are call, register, publish and subscribe",
                            name, key);
            if (!json_is_array(list) || json_array_size(list) > MAX_PATTERNS)
                return fail(err, errlen, path, "roles.%s.%s must be an array of URI patterns", name,
                            key);
            r->patterns[act] = calloc(json_array_size(list) + 1, sizeof(char *));
            if (!r->patterns[act]) return fail(err, errlen, path, "out of memory", 0, 0);
            size_t i;
            json_t *p;
            json_array_foreach(list, i, p)
            {
                if (!json_is_string(p) || !pattern_valid(json_string_value(p)))
                    return fail(err, errlen, path,
                                "roles.%s.%s: a pattern is dot-separated components, '*' for "
                                "one and a final '>' for the rest",
                                name, key);
                r->patterns[act][r->npatterns[act]++] = strdup(json_string_value(p));
            }
        }
    }
    return 0;
}

static const role *role_find(const auth *a, const char *name)
{
    for (int i = 0; name && i < a->nroles; i++)
        if (strcmp(a->roles[i].name, name) == 0) return &a->roles[i];
    return NULL;
}

static bool hex_decode(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return false;
        out[i] = (unsigned char)v;
    }
    return true;
}

static int load_user(auth *a, auth_user *u, const char *id, json_t *def, const char *path,
                     char *err, size_t errlen)
{
    if (!json_is_object(def) || !auth_identity_valid(id, AUTH_ID_MAX))
        return fail(err, errlen, path, "users.%s must be an object with a valid authid", id, 0);
    u->authid = strdup(id);
    u->role = dup_string(json_object_get(def, "role"));
    if (!u->role || !role_find(a, u->role))
        return fail(err, errlen, path, "users.%s.role must name a role of \"roles\"", id, 0);
    json_t *salt = json_object_get(def, "salt"), *key = json_object_get(def, "key");
    if (salt || key) {
        json_t *it = json_object_get(def, "iterations"), *kl = json_object_get(def, "keylen");
        u->salt = dup_string(salt);
        u->key = dup_string(key);
        u->iterations = it ? (int)json_integer_value(it) : 1000;
        u->keylen = kl ? (int)json_integer_value(kl) : 32;
        if (!u->salt || !u->key || strlen(u->salt) >= AUTH_SALT_MAX || u->iterations < 1 ||
            u->iterations > 10000000 || u->keylen < 16 || u->keylen > MAX_KEYLEN)
            return fail(err, errlen, path,
                        "users.%s: a secret is salt, key (strings), iterations (1..10^7) and "
                        "keylen (16..64); `microservice auth-secret` makes one",
                        id, 0);
    }
    json_t *tokens = json_object_get(def, "tokens");
    if (tokens && !json_is_array(tokens))
        return fail(err, errlen, path, "users.%s.tokens must be an array", id, 0);
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t)
    {
        const char *s = json_string_value(t);
        token *k = &a->tokens[a->ntokens];
        if (!s || strncmp(s, "sha256:", 7) != 0 || !hex_decode(s + 7, k->hash, 32))
            return fail(err, errlen, path,
                        "users.%s.tokens: each is \"sha256:<64 hex digits>\"; "
                        "`microservice auth-token` makes one",
                        id, 0);
        a->ntokens++;
    }
    return 0;
}

static int by_authid(const void *x, const void *y)
{
    return strcmp(((const auth_user *)x)->authid, ((const auth_user *)y)->authid);
}

static int by_hash(const void *x, const void *y)
{
    return memcmp(((const token *)x)->hash, ((const token *)y)->hash, 32);
}

static int load_users(auth *a, json_t *users, const char *path, char *err, size_t errlen)
{
    if (!users) return 0;
    if (!json_is_object(users)) return fail(err, errlen, path, "users must be an object", 0, 0);
    size_t ntok = 0;
    const char *id;
    json_t *def;
    json_object_foreach(users, id, def) ntok += json_array_size(json_object_get(def, "tokens"));
    a->users = calloc(json_object_size(users) + 1, sizeof *a->users);
    a->tokens = calloc(ntok + 1, sizeof *a->tokens);
    if (!a->users || !a->tokens) return fail(err, errlen, path, "out of memory", 0, 0);
    json_object_foreach(users, id, def)
    {
        int first = a->ntokens;
        if (load_user(a, &a->users[a->nusers++], id, def, path, err, errlen) != 0) return -1;
        for (int i = first; i < a->ntokens; i++)
            a->tokens[i].owner = id; /* lives with users */
    }
    qsort(a->users, (size_t)a->nusers, sizeof *a->users, by_authid);
    for (int i = 0; i < a->ntokens; i++)
        a->tokens[i].user = auth_user_find(a, a->tokens[i].owner);
    qsort(a->tokens, (size_t)a->ntokens, sizeof *a->tokens, by_hash);
    for (int i = 1; i < a->ntokens; i++)
        if (memcmp(a->tokens[i].hash, a->tokens[i - 1].hash, 32) == 0)
            return fail(err, errlen, path, "the same token is listed twice", 0, 0);
    return 0;
}

/* The most frequent value of the users' iterations (which = 0) or keylens (1), or dflt. */
static int most_common(const auth *a, int which, int dflt)
{
    int best = dflt, best_n = 0;
    for (int i = 0; i < a->nusers; i++) {
        if (!a->users[i].salt) continue;
        int v = which ? a->users[i].keylen : a->users[i].iterations, n = 0;
        for (int j = 0; j < a->nusers; j++)
            if (a->users[j].salt && (which ? a->users[j].keylen : a->users[j].iterations) == v) n++;
        if (n > best_n) {
            best = v;
            best_n = n;
        }
    }
    return best;
}

/* The decoy key is a digest of what only the file holds (the bus secret, the users' keys): the
 * same in every process and worker reading the same file, unknown outside, so an unknown authid
 * gets the same made-up salt everywhere and at every attempt. */
static void make_decoys(auth *a)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = sizeof a->decoy_key;
    static const char tag[] = "microservice decoy salts\n";
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, tag, sizeof tag);
    if (a->bus_secret) EVP_DigestUpdate(md, a->bus_secret, strlen(a->bus_secret) + 1);
    for (int i = 0; i < a->nusers; i++)
        if (a->users[i].key) EVP_DigestUpdate(md, a->users[i].key, strlen(a->users[i].key) + 1);
    EVP_DigestFinal_ex(md, a->decoy_key, &n);
    EVP_MD_CTX_free(md);
    a->decoy_iterations = most_common(a, 0, DEFAULT_ITERATIONS);
    a->decoy_keylen = most_common(a, 1, DEFAULT_KEYLEN);
    a->signature_window_ms = DEFAULT_SIGNATURE_WINDOW_MS;
}

int auth_load(const char *path, auth **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line > 0)
            snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        else /* not read at all: jansson's text names the file and the reason */
            snprintf(err, errlen, "%s", jerr.text);
        return -1;
    }
    auth *a = calloc(1, sizeof *a);
    int rc = a ? 0 : fail(err, errlen, path, "out of memory", 0, 0);
    const char *key;
    json_t *v;
    if (rc == 0 && !json_is_object(root)) rc = fail(err, errlen, path, "not a JSON object", 0, 0);
    if (rc == 0) {
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "users") && strcmp(key, "roles") && strcmp(key, "anonymous") &&
                strcmp(key, "bus_secret")) {
                rc = fail(err, errlen, path,
                          "unknown field \"%s\" (users, roles, anonymous, bus_secret)", key, 0);
                break;
            }
        }
    }
    if (rc == 0) rc = load_roles(a, json_object_get(root, "roles"), path, err, errlen);
    if (rc == 0) rc = load_users(a, json_object_get(root, "users"), path, err, errlen);
    if (rc == 0) {
        v = json_object_get(root, "anonymous");
        if (v && !json_is_null(v) && (!json_is_string(v) || !role_find(a, json_string_value(v))))
            rc =
                fail(err, errlen, path, "anonymous must be null or name a role of \"roles\"", 0, 0);
        else
            a->anonymous = dup_string(v);
    }
    if (rc == 0) {
        v = json_object_get(root, "bus_secret");
        if (v && (!json_is_string(v) || strlen(json_string_value(v)) < 16))
            rc = fail(err, errlen, path, "bus_secret must be a string of 16 characters or more", 0,
                      0);
        else
            a->bus_secret = dup_string(v);
    }
    if (rc == 0) make_decoys(a);
    json_decref(root);
    if (rc != 0) {
        auth_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

void auth_free(auth *a)
{
    if (!a) return;
    for (int i = 0; i < a->nusers; i++) {
        auth_user *u = &a->users[i];
        free(u->authid);
        free(u->role);
        free(u->salt);
        if (u->key) OPENSSL_cleanse(u->key, strlen(u->key));
        free(u->key);
    }
    for (int i = 0; i < a->nroles; i++) {
        for (int k = 0; k < 4; k++) {
            for (int j = 0; j < a->roles[i].npatterns[k]; j++)
                free(a->roles[i].patterns[k][j]);
            free(a->roles[i].patterns[k]);
        }
        free(a->roles[i].name);
    }
    if (a->bus_secret) OPENSSL_cleanse(a->bus_secret, strlen(a->bus_secret));
    free(a->bus_secret);
    free(a->anonymous);
    free(a->users);
    free(a->tokens);
    free(a->roles);
    free(a);
}

/* ---- lookups ---- */

const auth_user *auth_user_find(const auth *a, const char *authid)
{
    if (!a || !authid || !a->nusers) return NULL;
    auth_user k = {.authid = (char *)authid};
    return bsearch(&k, a->users, (size_t)a->nusers, sizeof *a->users, by_authid);
}

const char *auth_user_id(const auth_user *u)
{
    return u->authid;
}

const char *auth_user_role(const auth_user *u)
{
    return u->role;
}

bool auth_user_has_secret(const auth_user *u)
{
    return u && u->salt;
}

const char *auth_anonymous_role(const auth *a)
{
    return a ? a->anonymous : NULL;
}

const auth_user *auth_token_find(const auth *a, const char *tok, size_t len)
{
    if (!a || !a->ntokens || len == 0) return NULL;
    token k;
    sha256(tok, len, k.hash);
    const token *t = bsearch(&k, a->tokens, (size_t)a->ntokens, sizeof *a->tokens, by_hash);
    return t ? t->user : NULL;
}

bool auth_allowed(const auth *a, const char *rolename, enum auth_action action, const char *uri)
{
    if (!a) return true; /* authentication off: everything is allowed */
    const role *r = role_find(a, rolename);
    for (int i = 0; r && i < r->npatterns[action]; i++)
        if (pattern_covers(r->patterns[action][i], uri)) return true;
    return false;
}

/* ---- WAMP ticket and CRA ---- */

void auth_salt_of(const auth *a, const auth_user *u, const char *authid, char salt[AUTH_SALT_MAX],
                  int *iterations, int *keylen)
{
    if (u && u->salt) {
        snprintf(salt, AUTH_SALT_MAX, "%s", u->salt);
        *iterations = u->iterations;
        *keylen = u->keylen;
        return;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), a->decoy_key, sizeof a->decoy_key, (const unsigned char *)authid,
              strlen(authid), mac, &maclen))
        memset(mac, 0, sizeof mac);
    EVP_EncodeBlock((unsigned char *)salt, mac, DECOY_SALT_BYTES);
    *iterations = a->decoy_iterations;
    *keylen = a->decoy_keylen;
}

bool auth_ticket_ok(auth *a, const auth_user *u, const char *authid, const char *ticket)
{
    if (!a || !authid || !ticket) return false;
    if (u && !u->salt) u = NULL; /* a token-only user: like an unknown one */
    char salt[AUTH_SALT_MAX];
    int iterations, keylen;
    auth_salt_of(a, u, authid, salt, &iterations, &keylen);
    atomic_fetch_add(&a->derivations, 1);
    char *key = derive_key(ticket, salt, iterations, keylen);
    if (!key) return false;
    /* an unknown authid is compared with a text of the same length that no key equals ('*' is
     * not base64), so both paths take the same time */
    char decoy[4 * ((MAX_KEYLEN + 2) / 3) + 1];
    size_t n = strlen(key);
    memset(decoy, '*', n);
    decoy[n] = '\0';
    bool ok = equal_ct(key, u ? u->key : decoy) && u;
    OPENSSL_cleanse(key, n);
    free(key);
    return ok;
}

unsigned long long auth_derivations(const auth *a)
{
    return a ? atomic_load(&a->derivations) : 0;
}

char *auth_cra_challenge(const auth *a, const auth_user *u, const char *authid, uint64_t session,
                         char salt[AUTH_SALT_MAX], int *iterations, int *keylen)
{
    unsigned char nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) return NULL;
    char *nonce64 = b64(nonce, sizeof nonce);
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* no authrole: it would tell a known user (its role) from an unknown one */
    json_t *c =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "authid", authid, "authmethod", "wampcra",
                  "authprovider", "file", "nonce", nonce64 ? nonce64 : "", "timestamp", stamp,
                  "session", (json_int_t)(session & 0x1fffffffffffffULL));
    free(nonce64);
    char *text = c ? json_dumps(c, JSON_COMPACT) : NULL;
    json_decref(c);
    auth_salt_of(a, u, authid, salt, iterations, keylen);
    return text;
}

bool auth_cra_verify(const auth_user *u, const char *challenge, const char *signature)
{
    char expect[AUTH_SIG_MAX];
    static const char throwaway[] = "an unknown authid";
    if (!challenge || !signature) return false;
    const char *key = u && u->key ? u->key : throwaway;
    if (!hmac_b64(key, strlen(key), challenge, strlen(challenge), expect, sizeof expect))
        return false;
    return equal_ct(expect, signature) && key != throwaway;
}

/* ---- the identity on the bus ---- */

bool auth_bus_signing(const auth *a)
{
    return a && a->bus_secret;
}

void auth_set_signature_window(auth *a, double seconds)
{
    if (a && seconds > 0) a->signature_window_ms = (uint64_t)(seconds * 1000.0);
}

uint64_t auth_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool auth_sign(const auth *a, const char *subject, const char *reply, const void *body, size_t len,
               const char *authid, const char *authrole, const char *time, char out[AUTH_SIG_MAX])
{
    if (!auth_bus_signing(a)) return false;
    unsigned char digest[32];
    char hex[65];
    sha256(body ? body : "", body ? len : 0, digest);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (!reply) reply = "";
    size_t cap = strlen(subject) + strlen(reply) + strlen(authid) + strlen(authrole) +
                 strlen(time) + sizeof hex + 8;
    char *text = malloc(cap);
    if (!text) return false;
    int n =
        snprintf(text, cap, "%s\n%s\n%s\n%s\n%s\n%s", subject, reply, authid, authrole, time, hex);
    bool ok =
        n > 0 && hmac_b64(a->bus_secret, strlen(a->bus_secret), text, (size_t)n, out, AUTH_SIG_MAX);
    free(text);
    return ok;
}

/* A signing time: 1 to 15 decimal digits (ms since the epoch), within the window of now. */
static bool time_fresh(const auth *a, const char *time, uint64_t now_ms)
{
    size_t n = time ? strlen(time) : 0;
    if (n == 0 || n > 15 || strspn(time, "0123456789") != n) return false;
    uint64_t t = strtoull(time, NULL, 10);
    return t <= now_ms + a->signature_window_ms && now_ms <= t + a->signature_window_ms;
}

bool auth_verify(const auth *a, const char *subject, const char *reply, const void *body,
                 size_t len, const char *authid, const char *authrole, const char *time,
                 const char *signature, uint64_t now_ms)
{
    char expect[AUTH_SIG_MAX];
    if (!signature || !auth_bus_signing(a) || !auth_identity_valid(authid, AUTH_ID_MAX) ||
        !auth_identity_valid(authrole, AUTH_ROLE_MAX) || !time_fresh(a, time, now_ms))
        return false;
    return auth_sign(a, subject, reply, body, len, authid, authrole, time, expect) &&
           equal_ct(expect, signature);
}

int auth_identity_headers(const auth *a, const char *subject, const char *reply, const void *body,
                          size_t len, const char *authid, const char *authrole, auth_stamp *st,
                          const char *headers[8])
{
    if (!authid || !authrole) return 0;
    snprintf(st->time, sizeof st->time, "%llu", (unsigned long long)auth_now_ms());
    if (!auth_sign(a, subject, reply, body, len, authid, authrole, st->time, st->sig)) return 0;
    headers[0] = AUTH_HDR_AUTHID;
    headers[1] = authid;
    headers[2] = AUTH_HDR_AUTHROLE;
    headers[3] = authrole;
    headers[4] = AUTH_HDR_TIME;
    headers[5] = st->time;
    headers[6] = AUTH_HDR_SIGNATURE;
    headers[7] = st->sig;
    return 8;
}

bool auth_identity_of(const auth *a, natsMsg *msg, const char **authid, const char **authrole)
{
    const char *sig = NULL, *time = NULL;
    return auth_bus_signing(a) && natsMsgHeader_Get(msg, AUTH_HDR_SIGNATURE, &sig) == NATS_OK &&
           natsMsgHeader_Get(msg, AUTH_HDR_TIME, &time) == NATS_OK &&
           natsMsgHeader_Get(msg, AUTH_HDR_AUTHID, authid) == NATS_OK &&
           natsMsgHeader_Get(msg, AUTH_HDR_AUTHROLE, authrole) == NATS_OK &&
           auth_verify(a, natsMsg_GetSubject(msg), natsMsg_GetReply(msg), natsMsg_GetData(msg),
                       (size_t)natsMsg_GetDataLength(msg), *authid, *authrole, time, sig,
                       auth_now_ms());
}

/* ---- making secrets and tokens ---- */

char *auth_make_secret(const char *password, int iterations)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) return NULL;
    char *salt = b64(raw, sizeof raw);
    char *key = salt ? derive_key(password, salt, iterations, 32) : NULL;
    json_t *o = key ? json_pack("{s:s, s:i, s:i, s:s}", "salt", salt, "iterations", iterations,
                                "keylen", 32, "key", key)
                    : NULL;
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    free(salt);
    free(key);
    return text;
}

char *auth_make_token(void)
{
    unsigned char raw[32], hash[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return NULL;
    char tok[65], hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(tok + 2 * i, 3, "%02x", raw[i]);
    sha256(tok, 64, hash);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    char *out = malloc(256);
    if (out)
        snprintf(out, 256, "{\n  \"token\": \"%s\",\n  \"stored\": \"sha256:%s\"\n}", tok, hex);
    return out;
}
