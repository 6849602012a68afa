/* rpc_error.h: the contract's error table (URI and code for each kind of failure) and the error
 * body {"error": uri, "args": [...], "kwargs": {...}} shared by HTTP, NATS and Lua. */
#ifndef MICROSERVICE_RPC_ERROR_H
#define MICROSERVICE_RPC_ERROR_H

#include <stddef.h>

#include "codec.h"

#define URI_INVALID_ARGUMENT "wamp.error.invalid_argument"
#define URI_NO_SUCH_PROCEDURE "wamp.error.no_such_procedure"
#define URI_RUNTIME_ERROR "wamp.error.runtime_error"
#define URI_TIMEOUT "wamp.error.timeout"
#define URI_UNAVAILABLE "wamp.error.unavailable"
#define URI_LIMIT_EXCEEDED "wamp.error.limit_exceeded"
#define URI_CANCELED "wamp.error.canceled"

#define HDR_SERVICE_ERROR "Nats-Service-Error"
#define HDR_SERVICE_ERROR_CODE "Nats-Service-Error-Code"

/* The HTTP-style code the contract gives each URI above (400 for any other URI). */
int rpc_error_code(const char *uri);
/* Appends {"error": uri, "args": [message], "kwargs": {}}. */
int rpc_error_body(codec_buf *out, const char *uri, const char *message);
/* Header values that cannot carry a newline: copies message into out, cut at the first one. */
void rpc_error_header_text(char *out, size_t outlen, const char *message);

#endif
