/* http_tls.c: owns the server's TLS configuration: an OpenSSL SSL_CTX (TLS 1.2 and newer, forward
 * secret AEAD ciphers for TLS 1.2) loaded from a PEM certificate chain and key, with ALPN offering
 * h2 then http/1.1 through h2o. h2o does the handshakes on the sockets it accepts. */
#include "http_tls.h"

#include <errno.h>
#include <h2o.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define TAG "tls"

/* The first reason OpenSSL queued (the innermost, such as "no start line"), or a fallback;
 * *mismatch tells whether the key was found not to belong to the certificate. */
static const char *ssl_reason(char *buf, size_t size, const char *fallback, bool *mismatch)
{
    unsigned long first = ERR_get_error();
    for (unsigned long e = first; e != 0; e = ERR_get_error())
        if (mismatch && ERR_GET_LIB(e) == ERR_LIB_X509 &&
            ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            *mismatch = true;
    if (!first) return fallback;
    const char *reason = ERR_reason_error_string(first);
    if (reason) {
        snprintf(buf, size, "%s", reason);
    } else {
        ERR_error_string_n(first, buf, size);
    }
    return buf;
}

static int readable(const char *what, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        log_error(TAG, "cannot read the TLS %s %s: %s", what, file, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

SSL_CTX *http_tls_server_context(const char *cert_file, const char *key_file)
{
    char err[256];
    if (readable("certificate", cert_file) != 0 || readable("key", key_file) != 0) return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_error(TAG, "cannot create a TLS context: %s", ssl_reason(err, sizeof err, "?", NULL));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.2 suites: HTTP/2 forbids the others (RFC 7540 appendix A); 1.3 ones are all fine */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        log_error(TAG, "cannot set the TLS ciphers: %s", ssl_reason(err, sizeof err, "?", NULL));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        log_error(TAG, "cannot load the TLS certificate %s: not a PEM certificate chain (%s)",
                  cert_file, ssl_reason(err, sizeof err, "?", NULL));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        bool mismatch = false;
        const char *why = ssl_reason(err, sizeof err, "?", &mismatch);
        if (mismatch)
            log_error(TAG, "the TLS key %s does not match the certificate %s", key_file, cert_file);
        else
            log_error(TAG, "cannot load the TLS key %s: not a usable PEM private key (%s)",
                      key_file, why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_error(TAG, "the TLS key %s does not match the certificate %s: %s", key_file, cert_file,
                  ssl_reason(err, sizeof err, "key values mismatch", NULL));
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
