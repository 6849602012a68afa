/* rpc_error.c: owns the mapping from failure to URI and code, and the error body format. */
#include "rpc_error.h"

#include <stdio.h>
#include <string.h>

int rpc_error_code(const char *uri)
{
    static const struct {
        const char *uri;
        int code;
    } table[] = {
        {URI_INVALID_ARGUMENT, 400}, {URI_NO_SUCH_PROCEDURE, 404}, {URI_RUNTIME_ERROR, 500},
        {URI_TIMEOUT, 504},          {URI_UNAVAILABLE, 503},       {URI_LIMIT_EXCEEDED, 429},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(uri, table[i].uri) == 0) return table[i].code;
    return 400;
}

static int append_str(codec_buf *out, const char *s)
{
    return codec_buf_append(out, s, strlen(s));
}

int rpc_error_body(codec_buf *out, const char *uri, const char *message)
{
    if (append_str(out, "{\"error\":") || codec_encode_string(out, uri, strlen(uri)) ||
        append_str(out, ",\"args\":["))
        return -1;
    if (codec_encode_string(out, message, strlen(message)) != 0) {
        /* a message that is not UTF-8 (e.g. bytes from a script) is replaced, never sent raw */
        if (append_str(out, "\"(message is not valid UTF-8)\"")) return -1;
    }
    return append_str(out, "],\"kwargs\":{}}");
}

void rpc_error_header_text(char *out, size_t outlen, const char *message)
{
    snprintf(out, outlen, "%s", message);
    out[strcspn(out, "\r\n")] = '\0';
}
