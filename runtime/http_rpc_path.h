/* http_rpc_path.h: which HTTP paths are RPC calls, and the NATS subject each one becomes. */
#ifndef MICROSERVICE_HTTP_RPC_PATH_H
#define MICROSERVICE_HTTP_RPC_PATH_H

#include <stddef.h>

/* Longest subject the gateway sends (bytes, without the NUL). */
#define HTTP_RPC_SUBJECT_MAX 255

enum http_rpc_path_result {
    HTTP_RPC_PATH_OK,       /* out holds the subject */
    HTTP_RPC_PATH_NOT_RPC,  /* not of the shape "/<service>.<method>": left to the static files */
    HTTP_RPC_PATH_INVALID,  /* RPC-shaped, but not a subject of literal tokens (400) */
    HTTP_RPC_PATH_RESERVED, /* a system subject ($SRV, $JS, ..., _INBOX.): not reachable (404) */
};

/* Maps a normalized request path (h2o's path_normalized: query string removed, %XX decoded,
 * "." and ".." segments resolved) to its subject: "/<service>.<method>" -> "<service>.<method>".
 * The path is one segment holding a dot, neither first nor last. The subject must be literal
 * tokens: no empty token, no '*' or '>', no space, control character or DEL, at most
 * HTTP_RPC_SUBJECT_MAX bytes, and neither '$'-prefixed nor in _INBOX. On HTTP_RPC_PATH_OK, out (cap
 * bytes) holds the subject, NUL-terminated; otherwise *why (when given) says what is wrong. */
enum http_rpc_path_result http_rpc_path_to_subject(const char *path, size_t len, char *out,
                                                   size_t cap, const char **why);

#endif
