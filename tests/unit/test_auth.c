/* test_auth.c: the auth file's permissions (URI patterns, covering pattern subscriptions), bearer
 * tokens, tickets, WAMP-CRA (unknown authids indistinguishable), the bus signature (bound to
 * subject, reply subject, body and time), through runtime/auth.h; and the limiter of failed
 * sign-ins, through runtime/auth_limit.h. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "auth_limit.h"
#include "check.h"

static auth *load_text(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/test_auth_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) return NULL;
    close(fd);
    auth *a = NULL;
    if (auth_load(path, &a, err, errlen) != 0) a = NULL;
    unlink(path);
    return a;
}

static void test_patterns(void)
{
    char err[512];
    auth *a = load_text("{\"roles\": {\"r\": {\"call\": [\"svc.*\", \"a.b.c\", \"deep.>\"],"
                        "\"subscribe\": [\"news.*\", \"all.>\"]}, \"none\": {}}}",
                        err, sizeof err);
    CHECK(a != NULL || diag("%s", err));
    if (!a) return;
    CHECK(auth_allowed(a, "r", AUTH_CALL, "svc.hello"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "svc"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "svc.hello.x"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "svcx.hello"));
    CHECK(auth_allowed(a, "r", AUTH_CALL, "a.b.c"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "a.b"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "a.b.cd"));
    CHECK(auth_allowed(a, "r", AUTH_CALL, "deep.x"));
    CHECK(auth_allowed(a, "r", AUTH_CALL, "deep.x.y.z"));
    CHECK(!auth_allowed(a, "r", AUTH_CALL, "deep"));
    CHECK(!auth_allowed(a, "r", AUTH_REGISTER, "svc.hello")); /* an action not listed */
    CHECK(!auth_allowed(a, "none", AUTH_CALL, "svc.hello"));
    CHECK(!auth_allowed(a, "nobody", AUTH_CALL, "svc.hello")); /* a role not listed */
    CHECK(!auth_allowed(a, NULL, AUTH_CALL, "svc.hello"));
    /* pattern subscriptions must be covered entirely */
    CHECK(auth_allowed(a, "r", AUTH_SUBSCRIBE, "news.today"));
    CHECK(auth_allowed(a, "r", AUTH_SUBSCRIBE, "news.*"));
    CHECK(!auth_allowed(a, "r", AUTH_SUBSCRIBE, "news.>"));
    CHECK(!auth_allowed(a, "r", AUTH_SUBSCRIBE, "*.today"));
    CHECK(auth_allowed(a, "r", AUTH_SUBSCRIBE, "all.>"));
    CHECK(auth_allowed(a, "r", AUTH_SUBSCRIBE, "all.*.x"));
    CHECK(!auth_allowed(a, "r", AUTH_SUBSCRIBE, ">"));
    auth_free(a);
    CHECK(auth_allowed(NULL, "x", AUTH_PUBLISH, "anything")); /* authentication off */
}

static void test_refused_files(void)
{
    static const char *bad[] = {
        "[]",
        "{\"roles\": {\"r\": {\"call\": [\"a..b\"]}}}",
        "{\"roles\": {\"r\": {\"call\": [\">.a\"]}}}",
        "{\"roles\": {\"r\": {\"call\": [\"a*\"]}}}",
        "{\"roles\": {\"r\": {\"call\": [\"\"]}}}",
        "{\"roles\": {\"r\": {\"call\": \"a\"}}}",
        "{\"roles\": {}, \"anonymous\": \"ghost\"}",
        "{\"users\": {\"u\": {\"role\": \"r\", \"salt\": \"s\"}}, \"roles\": {\"r\": {}}}",
        "{\"users\": {\"u\": {\"role\": \"r\", \"salt\": \"s\", \"key\": \"k\", \"keylen\": 8}}, "
        "\"roles\": {\"r\": {}}}",
        "{\"users\": {\"u\\n\": {\"role\": \"r\"}}, \"roles\": {\"r\": {}}}",
        "{\"users\": {\"u\": {\"role\": \"r\", \"tokens\": [\"sha256:" /* listed twice */
        "00000000000000000000000000000000000000000000000000000000000000aa\", \"sha256:"
        "00000000000000000000000000000000000000000000000000000000000000aa\"]}}, "
        "\"roles\": {\"r\": {}}}",
        "{\"users\": {}, \"users\": {}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[512] = "";
        auth *a = load_text(bad[i], err, sizeof err);
        CHECK((a == NULL && err[0]) || diag("accepted: %s", bad[i]));
        auth_free(a);
    }
}

/* A base64 text of 16 bytes: 22 characters of the alphabet and "==". */
static bool salt_shape(const char *s)
{
    if (strlen(s) != 24 || strcmp(s + 22, "==") != 0) return false;
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '+' && s[i] != '/') return false;
    return true;
}

/* The keys of a wampcra challenge text, in order, without their values. */
static void challenge_keys(const char *ch, char *out, size_t cap)
{
    out[0] = '\0';
    for (const char *p = ch; (p = strstr(p, "\":")); p += 2) {
        const char *q = p - 1;
        while (q > ch && *q != '"')
            q--;
        snprintf(out + strlen(out), cap - strlen(out), "%.*s,", (int)(p - q - 1), q + 1);
    }
}

/* Unknown authids (and token-only users) look like users: the same challenge keys, no role, a
 * salt of the same shape, the same iterations and keylen, and a ticket runs the same PBKDF2. */
static void test_unknown_users(auth *a, const auth_user *ann)
{
    char salt[AUTH_SALT_MAX], s1[AUTH_SALT_MAX], s2[AUTH_SALT_MAX];
    int it, kl, it1, kl1;
    char *known = auth_cra_challenge(a, ann, "ann", 42, salt, &it, &kl);
    char *c1 = auth_cra_challenge(a, NULL, "ghost", 1, s1, &it1, &kl1);
    char *c2 = auth_cra_challenge(a, NULL, "ghost", 2, s2, &it1, &kl1);
    CHECK(known && c1 && c2);
    if (!known || !c1 || !c2) return;
    CHECK(strstr(known, "\"authid\":\"ann\"") && strstr(known, "\"session\":42"));
    CHECK(!strstr(known, "authrole") && !strstr(c1, "authrole")); /* WELCOME tells the role */
    char k1[256], k2[256];
    challenge_keys(known, k1, sizeof k1);
    challenge_keys(c1, k2, sizeof k2);
    CHECK(strcmp(k1, k2) == 0 || diag("%s vs %s", k1, k2));
    CHECK(it == 100 && kl == 32);
    CHECK(it1 == it && kl1 == kl); /* the file's users have 100 and 32 */
    CHECK(salt_shape(salt) || diag("%s", salt));
    CHECK(salt_shape(s1) || diag("%s", s1));
    CHECK(strcmp(s1, s2) == 0); /* made up, but stable */
    auth_salt_of(a, NULL, "ghost2", s2, &it1, &kl1);
    CHECK(strcmp(s1, s2) != 0 && salt_shape(s2));
    CHECK(!auth_cra_verify(ann, known, "bm9wZQ=="));
    CHECK(!auth_cra_verify(NULL, c1, "bm9wZQ=="));
    free(known);
    free(c1);
    free(c2);
    /* a ticket for an unknown authid runs the same derivation as one for a user */
    unsigned long long before = auth_derivations(a);
    CHECK(!auth_ticket_ok(a, NULL, "ghost", "pw"));
    CHECK(auth_derivations(a) == before + 1);
    CHECK(auth_ticket_ok(a, ann, "ann", "pw"));
    CHECK(auth_derivations(a) == before + 2);
}

/* The bus signature binds subject, reply subject, body, authid, authrole and a time within the
 * window (60 s unless set). */
static void test_bus_signature(auth *a)
{
    char sig[AUTH_SIG_MAX], t[32], old[32], ahead[32];
    uint64_t now = auth_now_ms();
    snprintf(t, sizeof t, "%llu", (unsigned long long)now);
    snprintf(old, sizeof old, "%llu", (unsigned long long)(now - 61000));
    snprintf(ahead, sizeof ahead, "%llu", (unsigned long long)(now + 61000));
    const char *body = "[[1],{}]";
    size_t n = strlen(body);
    CHECK(auth_bus_signing(a) && auth_sign(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, sig));
    CHECK(auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, sig, now));
    CHECK(auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, sig, now + 59000));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, sig, now + 61000));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, sig, now - 61000));
    CHECK(!auth_verify(a, "svc.n", "_INBOX.x.1", body, n, "ann", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.2", body, n, "ann", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", NULL, body, n, "ann", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", "[[2],{}]", n, "ann", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n - 1, "ann", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "anne", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "admin", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann\n", "r", t, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", t, NULL, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", NULL, sig, now));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", "", sig, now));
    /* signed long ago or far ahead: refused even with a valid signature for that time */
    CHECK(auth_sign(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", old, sig));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", old, sig, now));
    CHECK(auth_sign(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", ahead, sig));
    CHECK(!auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", ahead, sig, now));
    auth_set_signature_window(a, 120);
    CHECK(auth_verify(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", ahead, sig, now));
    auth_set_signature_window(a, 60);
    /* the headers a request carries */
    auth_stamp st;
    const char *h[8];
    CHECK(auth_identity_headers(a, "svc.m", "_INBOX.x.1", body, n, "ann", "r", &st, h) == 8);
    CHECK(strcmp(h[4], AUTH_HDR_TIME) == 0 && strcmp(h[6], AUTH_HDR_SIGNATURE) == 0);
    CHECK(auth_verify(a, "svc.m", "_INBOX.x.1", body, n, h[1], h[3], h[5], h[7], auth_now_ms()));
    CHECK(auth_identity_headers(a, "svc.m", "_INBOX.x.1", body, n, NULL, "r", &st, h) == 0);
}

static void test_secrets(void)
{
    char *secret = auth_make_secret("pw", 100);
    char *token = auth_make_token();
    CHECK(secret && token);
    if (!secret || !token) return;
    /* {"token": "<64 hex>", "stored": "sha256:<64 hex>"} */
    char tok[65] = "", stored[72] = "";
    CHECK(sscanf(strstr(token, "\"token\""), "\"token\": \"%64[0-9a-f]\"", tok) == 1);
    CHECK(sscanf(strstr(token, "\"stored\""), "\"stored\": \"%71[0-9a-f:sha]\"", stored) == 1);
    const char *open = strchr(secret, '{') + 1;
    char text[2048];
    snprintf(text, sizeof text,
             "{\"bus_secret\": \"0123456789abcdef\", \"users\": {\"ann\": {\"role\": \"r\", "
             "\"tokens\": [\"%s\"], %.*s}}, \"roles\": {\"r\": {}}}",
             stored, (int)(strrchr(secret, '}') - open), open);
    char err[512];
    auth *a = load_text(text, err, sizeof err);
    CHECK(a != NULL || diag("%s in %s", err, text));
    if (a) {
        const auth_user *u = auth_token_find(a, tok, strlen(tok));
        CHECK(u && strcmp(auth_user_id(u), "ann") == 0);
        CHECK(auth_token_find(a, tok, strlen(tok) - 1) == NULL);
        CHECK(auth_token_find(a, "", 0) == NULL);
        u = auth_user_find(a, "ann");
        CHECK(u && auth_user_has_secret(u));
        CHECK(auth_ticket_ok(a, u, "ann", "pw"));
        CHECK(!auth_ticket_ok(a, u, "ann", "pw "));
        CHECK(!auth_ticket_ok(a, NULL, "pw", "pw"));
        CHECK(auth_user_find(a, "bob") == NULL);
        test_unknown_users(a, u);
        test_bus_signature(a);
        auth_free(a);
    }
    free(secret);
    free(token);
}

/* Two processes reading the same file tell an unknown authid the same salt; another file (other
 * secrets) another one. Without users, the defaults: 10000 iterations, keylen 32. */
static void test_decoys_stable(void)
{
    const char *f1 = "{\"bus_secret\": \"0123456789abcdef\", \"roles\": {}}";
    const char *f2 = "{\"bus_secret\": \"0123456789abcdeF\", \"roles\": {}}";
    char err[512], s1[AUTH_SALT_MAX], s2[AUTH_SALT_MAX], s3[AUTH_SALT_MAX];
    int it, kl;
    auth *a = load_text(f1, err, sizeof err), *b = load_text(f1, err, sizeof err),
         *c = load_text(f2, err, sizeof err);
    CHECK(a && b && c);
    if (a && b && c) {
        auth_salt_of(a, NULL, "who", s1, &it, &kl);
        auth_salt_of(b, NULL, "who", s2, &it, &kl);
        auth_salt_of(c, NULL, "who", s3, &it, &kl);
        CHECK(strcmp(s1, s2) == 0 && strcmp(s1, s3) != 0);
        CHECK(it == 10000 && kl == 32);
    }
    auth_free(a);
    auth_free(b);
    auth_free(c);
}

/* N failures (or checks in flight) from an address or for an authid within the window refuse
 * the next sign-in from it or for it, and nothing else; a success gives its charge back; the
 * window passing lets it in again; the table stays bounded. */
static void test_limit(void)
{
    auth_limit *l = auth_limit_new(3, 10.0);
    uint64_t t = 1000000;
    CHECK(l != NULL);
    if (!l) return;
    for (int i = 0; i < 3; i++) {
        CHECK(auth_limit_admit(l, t, "10.0.0.1", "alice"));
        auth_limit_charge(l, t, "10.0.0.1", "alice");
        auth_limit_settle(l, t, "10.0.0.1", "alice", false);
    }
    CHECK(!auth_limit_admit(l, t + 1, "10.0.0.1", "alice"));
    CHECK(!auth_limit_admit(l, t + 1, "10.0.0.1", "bob"));   /* the address is refused */
    CHECK(!auth_limit_admit(l, t + 1, "10.0.0.2", "alice")); /* and so is the authid */
    CHECK(auth_limit_admit(l, t + 1, "10.0.0.2", "bob"));
    CHECK(auth_limit_admit(l, t + 1, "10.0.0.2", NULL));
    auth_limit_stats st;
    auth_limit_get_stats(l, t + 1, &st);
    CHECK(st.failures == 3 && st.refusals == 3 && st.blocked == 2 && st.max_failures == 3);
    CHECK(st.window_s == 10.0);
    CHECK(auth_limit_admit(l, t + 10000, "10.0.0.1", "alice")); /* the window has passed */
    auth_limit_get_stats(l, t + 10000, &st);
    CHECK(st.blocked == 0);
    /* checks in flight count; a success gives its charge back */
    for (int i = 0; i < 3; i++)
        auth_limit_charge(l, t + 20000, "10.0.0.3", "carol");
    CHECK(!auth_limit_admit(l, t + 20000, "10.0.0.3", NULL));
    auth_limit_settle(l, t + 20000, "10.0.0.3", "carol", true);
    CHECK(auth_limit_admit(l, t + 20000, "10.0.0.3", "carol"));
    /* many keys: the table keeps its size, and recent failures are still counted */
    char key[32];
    for (int i = 0; i < 3 * AUTH_LIMIT_SLOTS; i++) {
        snprintf(key, sizeof key, "user%d", i);
        auth_limit_charge(l, t + 30000, NULL, key);
        auth_limit_settle(l, t + 30000, NULL, key, false);
    }
    for (int i = 0; i < 3; i++)
        auth_limit_charge(l, t + 30001, "10.0.0.9", NULL);
    CHECK(!auth_limit_admit(l, t + 30001, "10.0.0.9", NULL));
    auth_limit_free(l);
    /* 0: no limit */
    l = auth_limit_new(0, 10.0);
    for (int i = 0; i < 100; i++)
        auth_limit_charge(l, t, "10.0.0.1", "alice");
    CHECK(auth_limit_admit(l, t, "10.0.0.1", "alice"));
    auth_limit_free(l);
}

static void test_peer(void)
{
    char out[AUTH_PEER_MAX];
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.0.2.7", &v4.sin_addr);
    auth_limit_peer((struct sockaddr *)&v4, sizeof v4, out);
    CHECK(strcmp(out, "192.0.2.7") == 0 || diag("%s", out));
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &v6.sin6_addr);
    auth_limit_peer((struct sockaddr *)&v6, sizeof v6, out);
    CHECK(strcmp(out, "2001:db8:1:2::/64") == 0 || diag("%s", out));
    inet_pton(AF_INET6, "::ffff:192.0.2.8", &v6.sin6_addr);
    auth_limit_peer((struct sockaddr *)&v6, sizeof v6, out);
    CHECK(strcmp(out, "192.0.2.8") == 0 || diag("%s", out));
    auth_limit_peer((struct sockaddr *)&v4, 0, out);
    CHECK(out[0] == '\0');
}

int main(void)
{
    test_patterns();
    test_refused_files();
    test_secrets();
    test_decoys_stable();
    test_limit();
    test_peer();
    return check_summary();
}
