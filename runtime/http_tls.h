/* http_tls.h: the server side of TLS (OpenSSL): one SSL_CTX built from the certificate chain and
 * key. */
#ifndef MICROSERVICE_HTTP_TLS_H
#define MICROSERVICE_HTTP_TLS_H

#include <openssl/ssl.h>

/* TLS 1.2 or newer, ALPN h2 then http/1.1. NULL (logged, naming the file at fault) when the
 * chain or the key cannot be read or they do not belong together. SSL_CTX_free() it. */
SSL_CTX *http_tls_server_context(const char *cert_file, const char *key_file);

#endif
