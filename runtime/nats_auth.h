/* nats_auth.h: how a process proves who it is to NATS and secures the link: the --nats-* credential
 * and TLS options (shared by the runtime and the subcommands), their environment defaults, and
 * applying them with the server list to a natsOptions. */
#ifndef MICROSERVICE_NATS_AUTH_H
#define MICROSERVICE_NATS_AUTH_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <nats/nats.h>

#include "runtime.h"

/* Which option, for nats_auth_set; the long option of NATS_AUTH_LONG_OPTIONS(base) has the id
 * base + NATS_AUTH_OPT_*. */
enum {
    NATS_AUTH_OPT_USER,
    NATS_AUTH_OPT_PASSWORD,
    NATS_AUTH_OPT_TOKEN,
    NATS_AUTH_OPT_NKEY,
    NATS_AUTH_OPT_CREDS,
    NATS_AUTH_OPT_TLS,
    NATS_AUTH_OPT_CA,
    NATS_AUTH_OPT_CERT,
    NATS_AUTH_OPT_KEY,
    NATS_AUTH_NOPTS,
};

#define NATS_AUTH_LONG_OPTIONS(base)                                                               \
    {"nats-user", required_argument, NULL, (base) + NATS_AUTH_OPT_USER},                           \
        {"nats-password", required_argument, NULL, (base) + NATS_AUTH_OPT_PASSWORD},               \
        {"nats-token", required_argument, NULL, (base) + NATS_AUTH_OPT_TOKEN},                     \
        {"nats-nkey", required_argument, NULL, (base) + NATS_AUTH_OPT_NKEY},                       \
        {"nats-creds", required_argument, NULL, (base) + NATS_AUTH_OPT_CREDS},                     \
        {"nats-tls", no_argument, NULL, (base) + NATS_AUTH_OPT_TLS},                               \
        {"nats-ca", required_argument, NULL, (base) + NATS_AUTH_OPT_CA},                           \
        {"nats-cert", required_argument, NULL, (base) + NATS_AUTH_OPT_CERT},                       \
    {                                                                                              \
        "nats-key", required_argument, NULL, (base) + NATS_AUTH_OPT_KEY                            \
    }

/* The usage lines of these options, for the --help of every command. */
#define NATS_AUTH_USAGE                                                                            \
    "  --nats-user U, --nats-password P   NATS user and password ($NATS_USER, $NATS_PASSWORD;\n"   \
    "                     also nats://U:P@host in the URL)\n"                                      \
    "  --nats-token T     NATS token ($NATS_TOKEN)\n"                                              \
    "  --nats-nkey FILE   NKey user seed file, SU... ($NATS_NKEY)\n"                               \
    "  --nats-creds FILE  user JWT and seed (.creds) file ($NATS_CREDS)\n"                         \
    "  --nats-tls         require TLS (implied by tls:// URLs and the options below)\n"            \
    "  --nats-ca FILE     CA certificates that sign the server's certificate ($NATS_CA)\n"         \
    "  --nats-cert FILE, --nats-key FILE  client certificate and key for mutual TLS\n"             \
    "                     ($NATS_CERT, $NATS_KEY)\n"

/* Fills a from NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS, NATS_CA, NATS_CERT
 * and NATS_KEY (the empty string counts as unset). */
void nats_auth_from_env(nats_auth_config *a);
/* Sets option `which` (NATS_AUTH_OPT_*) to arg (NULL for --nats-tls). */
void nats_auth_set(nats_auth_config *a, int which, const char *arg);
/* The option named by a command-line word ("--nats-user"), or -1; *has_arg tells whether it takes
 * a value. For commands that read options after positional arguments by hand. */
int nats_auth_lookup(const char *word, bool *has_arg);
/* Checks the combination and that every file named is readable, without nats.c (safe before
 * fork). 0, or -1 with a message in err. */
int nats_auth_check(const nats_auth_config *a, char *err, size_t errlen);
/* Applies the server list ("URL[,URL...]") and a to o: user, password or token, NKey (its public
 * key derived from the seed), credentials file, TLS. 0, or -1 with a message in err. */
int nats_auth_apply(natsOptions *o, const char *urls, const nats_auth_config *a, char *err,
                    size_t errlen);
/* urls with the user information of each URL hidden (alice:***@host, or ***@host for a token),
 * for logs. */
void nats_auth_redact(const char *urls, char *out, size_t outlen);

#endif
