/* test_auth.c: the auth file's permissions (URI patterns, covering pattern subscriptions), bearer
 * tokens, tickets, WAMP-CRA and the bus signature, through runtime/auth.h only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
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
        CHECK(auth_ticket_ok(u, "pw"));
        CHECK(!auth_ticket_ok(u, "pw "));
        CHECK(!auth_ticket_ok(NULL, "pw"));
        CHECK(auth_user_find(a, "bob") == NULL);
        /* WAMP-CRA: the challenge names the user; only the right key signs it */
        char salt[AUTH_SALT_MAX];
        int it, kl;
        char *ch = auth_cra_challenge(a, u, "ann", 42, salt, &it, &kl);
        CHECK(ch && strstr(ch, "\"authid\":\"ann\"") && strstr(ch, "\"session\":42"));
        CHECK(it == 100 && kl == 32);
        CHECK(!auth_cra_verify(u, ch, "bm9wZQ=="));
        CHECK(!auth_cra_verify(NULL, ch, "bm9wZQ=="));
        free(ch);
        char s1[AUTH_SALT_MAX], s2[AUTH_SALT_MAX];
        char *c1 = auth_cra_challenge(a, NULL, "ghost", 1, s1, &it, &kl);
        char *c2 = auth_cra_challenge(a, NULL, "ghost", 2, s2, &it, &kl);
        CHECK(c1 && c2 && strcmp(s1, s2) == 0 && s1[0]); /* made up, but stable */
        free(c1);
        free(c2);
        /* the bus signature binds subject, authid and authrole */
        char sig[AUTH_SIG_MAX];
        CHECK(auth_bus_signing(a) && auth_sign(a, "svc.m", "ann", "r", sig));
        CHECK(auth_verify(a, "svc.m", "ann", "r", sig));
        CHECK(!auth_verify(a, "svc.n", "ann", "r", sig));
        CHECK(!auth_verify(a, "svc.m", "anne", "r", sig));
        CHECK(!auth_verify(a, "svc.m", "ann", "admin", sig));
        CHECK(!auth_verify(a, "svc.m", "ann\n", "r", sig));
        CHECK(!auth_verify(a, "svc.m", "ann", "r", NULL));
        auth_free(a);
    }
    free(secret);
    free(token);
}

int main(void)
{
    test_patterns();
    test_refused_files();
    test_secrets();
    return check_summary();
}
