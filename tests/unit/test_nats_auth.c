/* test_nats_auth.c: hiding user information of NATS URLs in logs, the checks of the credential
 * options (NKey seeds against a key pair made by nkeys.js). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "nats_auth.h"

static int redacts(const char *in, const char *want)
{
    char out[256];
    nats_auth_redact(in, out, sizeof out);
    return strcmp(out, want) == 0 || diag("%s -> %s, want %s", in, out, want);
}

static int check_seed(const char *content, char *err, size_t errlen)
{
    char path[] = "/tmp/test_nats_auth_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -2;
    if (write(fd, content, strlen(content)) != (ssize_t)strlen(content)) return -2;
    close(fd);
    nats_auth_config a = {.nkey_seed_file = path};
    int rc = nats_auth_check(&a, err, errlen);
    unlink(path);
    return rc;
}

int main(void)
{
    CHECK(redacts("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"));
    CHECK(redacts("nats://alice:secret@h:4222", "nats://alice:***@h:4222"));
    CHECK(redacts("nats://tok3n@h:4222", "nats://***@h:4222"));
    CHECK(redacts("nats://a:p@ss@h:1,tls://b:x@k:2,nats://c:3",
                  "nats://a:***@h:1,tls://b:***@k:2,nats://c:3"));
    CHECK(redacts("a:b@h", "a:***@h"));
    CHECK(redacts("", ""));
    char small[12];
    nats_auth_redact("nats://alice:secret@host:4222", small, sizeof small);
    CHECK(strlen(small) < sizeof small && !strstr(small, "secret"));

    char err[512];
    /* a user key pair from nkeys.js: its seed, and on the next line its public key */
    CHECK(check_seed("SUAJ3MUTAL25UVF5POKZIOF22DAVDX7W5I5OD4UHCI6SESL3LDVCDAQZEQ\n", err,
                     sizeof err) == 0 ||
          diag("%s", err));
    CHECK(check_seed("  SUAJ3MUTAL25UVF5POKZIOF22DAVDX7W5I5OD4UHCI6SESL3LDVCDAQZEQ", err,
                     sizeof err) == 0);
    /* one character changed: the checksum fails */
    CHECK(check_seed("SUAJ3MUTAL25UVF5POKZIOF22DAVDX7W5I5OD4UHCI6SESL3LDVCDAQZEA\n", err,
                     sizeof err) == -1 &&
          strstr(err, "checksum"));
    CHECK(check_seed("UCLNVOF6VJXSKIVMV5WSOYJG5FMPRC6ECDKDT3DQZVYH7FVWVJW4RPKL\n", err,
                     sizeof err) == -1 &&
          strstr(err, "no NKey user seed"));
    CHECK(check_seed("", err, sizeof err) == -1);

    nats_auth_config both = {.user = "u", .token = "t"};
    CHECK(nats_auth_check(&both, err, sizeof err) == -1 && strstr(err, "one of"));
    nats_auth_config pw = {.password = "p"};
    CHECK(nats_auth_check(&pw, err, sizeof err) == -1 && strstr(err, "needs --nats-user"));
    nats_auth_config cert = {.cert_file = "/etc/hostname"};
    CHECK(nats_auth_check(&cert, err, sizeof err) == -1 && strstr(err, "go together"));
    nats_auth_config ca = {.ca_file = "/nonexistent/ca.pem"};
    CHECK(nats_auth_check(&ca, err, sizeof err) == -1 && strstr(err, "No such file"));
    nats_auth_config none = {0};
    CHECK(nats_auth_check(&none, err, sizeof err) == 0);
    return check_summary();
}
