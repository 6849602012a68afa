/* http_rpc_path.c: owns the mapping from an HTTP path to the NATS subject of an RPC (see
 * http_rpc_path.h). Strict on purpose: the HTTP gateway must only reach literal subjects of
 * services, never a wildcard, a malformed subject or the system subjects ($SRV.*, $JS.*, $SYS.*,
 * _INBOX.*). */
#include "http_rpc_path.h"

#include <string.h>

enum http_rpc_path_result http_rpc_path_to_subject(const char *path, size_t len, char *out,
                                                   size_t cap, const char **why)
{
    const char *unused;
    if (!why) why = &unused;
    *why = NULL;
    /* the shape, as before the strict rules: "/x.y", one segment, not "/.x" nor "/x." */
    if (len < 4 || path[0] != '/' || path[1] == '.' || path[len - 1] == '.' ||
        memchr(path + 1, '/', len - 1) || !memchr(path + 1, '.', len - 1)) {
        *why = "not an RPC path";
        return HTTP_RPC_PATH_NOT_RPC;
    }
    const char *s = path + 1;
    size_t n = len - 1;
    if (n > HTTP_RPC_SUBJECT_MAX || n >= cap) {
        *why = "procedure name too long";
        return HTTP_RPC_PATH_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f) {
            *why = "procedure name with a space or a control character";
            return HTTP_RPC_PATH_INVALID;
        }
        if (c == '*' || c == '>') {
            *why = "procedure name with a wildcard ('*' or '>')";
            return HTTP_RPC_PATH_INVALID;
        }
        if (c == '.' && s[i + 1] == '.') { /* never the last byte: checked above */
            *why = "procedure name with an empty token ('..')";
            return HTTP_RPC_PATH_INVALID;
        }
    }
    if (s[0] == '$' || (n > 6 && memcmp(s, "_INBOX.", 7) == 0)) {
        *why = "system subjects ($-prefixed, _INBOX) are not reachable over HTTP";
        return HTTP_RPC_PATH_RESERVED;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return HTTP_RPC_PATH_OK;
}
