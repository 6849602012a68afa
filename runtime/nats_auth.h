/* nats_auth.h: how a process proves who it is to NATS and secures the link: checking the
 * credential and TLS settings of nats_auth_config (their --nats-* flags and environment variables
 * are rows of options.c) and applying them with the server list to a natsOptions. */
#ifndef MICROSERVICE_NATS_AUTH_H
#define MICROSERVICE_NATS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <nats/nats.h>

#include "runtime.h"

/* Checks the combination and that every file named is readable, without nats.c (safe before
 * fork). 0, or -1 with a message in err. */
int nats_auth_check(const nats_auth_config *a, char *err, size_t errlen);
/* Applies the server list ("URL[,URL...]") and a to o: user, password or token, NKey (its public
 * key derived from the seed), credentials file, TLS. 0, or -1 with a message in err. */
int nats_auth_apply(natsOptions *o, const char *urls, const nats_auth_config *a, char *err,
                    size_t errlen);
/* natsConnection_Connect, with a sign-in refused because of a nats.c 3.4 defect tried again (see
 * nats_auth.c): use it instead of natsConnection_Connect with options made by nats_auth_apply. */
natsStatus nats_auth_connect(natsConnection **nc, natsOptions *o, const nats_auth_config *a);
/* urls with the user information of each URL hidden (alice:***@host, or ***@host for a token),
 * for logs. */
void nats_auth_redact(const char *urls, char *out, size_t outlen);

#endif
