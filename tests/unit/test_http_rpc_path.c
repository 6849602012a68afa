/* test_http_rpc_path.c: the HTTP path -> NATS subject mapping of the gateway
 * (runtime/http_rpc_path.c). */
#include <string.h>

#include "check.h"
#include "http_rpc_path.h"

static enum http_rpc_path_result map(const char *path, char *out, size_t cap)
{
    const char *why = NULL;
    enum http_rpc_path_result r = http_rpc_path_to_subject(path, strlen(path), out, cap, &why);
    if (r != HTTP_RPC_PATH_OK && (!why || !why[0])) {
        diag("no reason given for %s", path);
        failed++;
    }
    return r;
}

static int maps_to(const char *path, const char *subject)
{
    char out[HTTP_RPC_SUBJECT_MAX + 1];
    enum http_rpc_path_result r = map(path, out, sizeof out);
    if (r != HTTP_RPC_PATH_OK) return diag("%s: refused (%d), wanted %s", path, r, subject);
    if (strcmp(out, subject) != 0) return diag("%s: got %s, wanted %s", path, out, subject);
    return 1;
}

static int gives(const char *path, enum http_rpc_path_result want)
{
    char out[HTTP_RPC_SUBJECT_MAX + 1];
    enum http_rpc_path_result r = map(path, out, sizeof out);
    return r == want ? 1 : diag("%s: got %d, wanted %d", path, r, want);
}

int main(void)
{
    CHECK(maps_to("/greeting_service.hello", "greeting_service.hello"));
    CHECK(maps_to("/a.b", "a.b"));
    CHECK(maps_to("/a.b.c", "a.b.c"));
    CHECK(maps_to("/svc.with-dash_and:colon", "svc.with-dash_and:colon"));
    CHECK(maps_to("/caf\xc3\xa9.m", "caf\xc3\xa9.m")); /* UTF-8 is a literal token too */
    CHECK(maps_to("/a$.b", "a$.b"));                   /* '$' only matters first */
    CHECK(maps_to("/a._INBOX", "a._INBOX"));
    CHECK(maps_to("/_INBOXES.x", "_INBOXES.x"));

    /* not RPC-shaped: left to the static files, as before */
    CHECK(gives("", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/index.html/", HTTP_RPC_PATH_NOT_RPC)); /* trailing slash: a folder */
    CHECK(gives("/a.b/", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/dir/app.js", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/healthz", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/.hidden", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/a.", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("a.b", HTTP_RPC_PATH_NOT_RPC));
    CHECK(gives("/ab", HTTP_RPC_PATH_NOT_RPC));

    /* RPC-shaped but not a subject of literal tokens: 400 */
    CHECK(gives("/a..b", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.*", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.>", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/*.b", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.b*c", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a b.c", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.b\t", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.b\r\nX: y", HTTP_RPC_PATH_INVALID));
    CHECK(gives("/a.b\x7f", HTTP_RPC_PATH_INVALID));
    {
        const char nul[] = "/a.b\0c";
        char out[64];
        CHECK(http_rpc_path_to_subject(nul, sizeof nul - 1, out, sizeof out, NULL) ==
              HTTP_RPC_PATH_INVALID);
    }

    /* system subjects: 404, as if nothing served them */
    CHECK(gives("/$SRV.PING", HTTP_RPC_PATH_RESERVED));
    CHECK(gives("/$JS.API.INFO", HTTP_RPC_PATH_RESERVED));
    CHECK(gives("/$SYS.REQ.SERVER.PING", HTTP_RPC_PATH_RESERVED));
    CHECK(gives("/_INBOX.abc", HTTP_RPC_PATH_RESERVED));
    CHECK(gives("/_INBOX.abc.def", HTTP_RPC_PATH_RESERVED));

    /* bounded length, and never past the caller's buffer */
    char path[HTTP_RPC_SUBJECT_MAX + 3], out[HTTP_RPC_SUBJECT_MAX + 1];
    path[0] = '/';
    memset(path + 1, 'a', HTTP_RPC_SUBJECT_MAX + 1);
    path[5] = '.';
    path[HTTP_RPC_SUBJECT_MAX + 2] = '\0';
    CHECK(gives(path, HTTP_RPC_PATH_INVALID)); /* one byte too long */
    path[HTTP_RPC_SUBJECT_MAX + 1] = '\0';
    CHECK(gives(path, HTTP_RPC_PATH_OK)); /* exactly the longest */
    CHECK(http_rpc_path_to_subject(path, strlen(path), out, 10, NULL) == HTTP_RPC_PATH_INVALID);
    CHECK(http_rpc_path_to_subject("/a.b", 4, out, 3, NULL) == HTTP_RPC_PATH_INVALID);
    CHECK(http_rpc_path_to_subject("/a.b", 4, out, 4, NULL) == HTTP_RPC_PATH_OK &&
          strcmp(out, "a.b") == 0);
    return check_summary();
}
