/* test_rpc_path.c: the HTTP path -> NATS subject mapping of the gateway (runtime/rpc_path.c). */
#include <string.h>

#include "check.h"
#include "rpc_path.h"

static enum rpc_path_result map(const char *path, char *out, size_t cap)
{
    const char *why = NULL;
    enum rpc_path_result r = rpc_path_to_subject(path, strlen(path), out, cap, &why);
    if (r != RPC_PATH_OK && (!why || !why[0])) {
        diag("no reason given for %s", path);
        failed++;
    }
    return r;
}

static int maps_to(const char *path, const char *subject)
{
    char out[RPC_SUBJECT_MAX + 1];
    enum rpc_path_result r = map(path, out, sizeof out);
    if (r != RPC_PATH_OK) return diag("%s: refused (%d), wanted %s", path, r, subject);
    if (strcmp(out, subject) != 0) return diag("%s: got %s, wanted %s", path, out, subject);
    return 1;
}

static int gives(const char *path, enum rpc_path_result want)
{
    char out[RPC_SUBJECT_MAX + 1];
    enum rpc_path_result r = map(path, out, sizeof out);
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
    CHECK(gives("", RPC_PATH_NOT_RPC));
    CHECK(gives("/", RPC_PATH_NOT_RPC));
    CHECK(gives("/index.html/", RPC_PATH_NOT_RPC)); /* trailing slash: a folder */
    CHECK(gives("/a.b/", RPC_PATH_NOT_RPC));
    CHECK(gives("/dir/app.js", RPC_PATH_NOT_RPC));
    CHECK(gives("/healthz", RPC_PATH_NOT_RPC));
    CHECK(gives("/.hidden", RPC_PATH_NOT_RPC));
    CHECK(gives("/a.", RPC_PATH_NOT_RPC));
    CHECK(gives("a.b", RPC_PATH_NOT_RPC));
    CHECK(gives("/ab", RPC_PATH_NOT_RPC));

    /* RPC-shaped but not a subject of literal tokens: 400 */
    CHECK(gives("/a..b", RPC_PATH_INVALID));
    CHECK(gives("/a.*", RPC_PATH_INVALID));
    CHECK(gives("/a.>", RPC_PATH_INVALID));
    CHECK(gives("/*.b", RPC_PATH_INVALID));
    CHECK(gives("/a.b*c", RPC_PATH_INVALID));
    CHECK(gives("/a b.c", RPC_PATH_INVALID));
    CHECK(gives("/a.b\t", RPC_PATH_INVALID));
    CHECK(gives("/a.b\r\nX: y", RPC_PATH_INVALID));
    CHECK(gives("/a.b\x7f", RPC_PATH_INVALID));
    {
        const char nul[] = "/a.b\0c";
        char out[64];
        CHECK(rpc_path_to_subject(nul, sizeof nul - 1, out, sizeof out, NULL) == RPC_PATH_INVALID);
    }

    /* system subjects: 404, as if nothing served them */
    CHECK(gives("/$SRV.PING", RPC_PATH_RESERVED));
    CHECK(gives("/$JS.API.INFO", RPC_PATH_RESERVED));
    CHECK(gives("/$SYS.REQ.SERVER.PING", RPC_PATH_RESERVED));
    CHECK(gives("/_INBOX.abc", RPC_PATH_RESERVED));
    CHECK(gives("/_INBOX.abc.def", RPC_PATH_RESERVED));

    /* bounded length, and never past the caller's buffer */
    char path[RPC_SUBJECT_MAX + 3], out[RPC_SUBJECT_MAX + 1];
    path[0] = '/';
    memset(path + 1, 'a', RPC_SUBJECT_MAX + 1);
    path[5] = '.';
    path[RPC_SUBJECT_MAX + 2] = '\0';
    CHECK(gives(path, RPC_PATH_INVALID)); /* one byte too long */
    path[RPC_SUBJECT_MAX + 1] = '\0';
    CHECK(gives(path, RPC_PATH_OK)); /* exactly the longest */
    CHECK(rpc_path_to_subject(path, strlen(path), out, 10, NULL) == RPC_PATH_INVALID);
    CHECK(rpc_path_to_subject("/a.b", 4, out, 3, NULL) == RPC_PATH_INVALID);
    CHECK(rpc_path_to_subject("/a.b", 4, out, 4, NULL) == RPC_PATH_OK && strcmp(out, "a.b") == 0);
    return check_summary();
}
