/* fuzz_path.c: libFuzzer target for the HTTP path -> NATS subject mapping
 * (runtime/http_rpc_path.c). Each input is a request path, mapped both as it comes and after h2o's
 * own normalization (what the gateway passes: query string cut, %XX decoded, dot segments
 * resolved). Every answer is checked against an independent statement of the rules: a path is
 * accepted exactly when it is
 * "/" + a subject of literal tokens, the subject is the path minus its slash, and the output buffer
 * (allocated to the exact capacity, so ASan sees any overflow) is never written past. */
#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_rpc_path.h"

static bool rpc_shaped(const char *p, size_t n)
{
    return n >= 4 && p[0] == '/' && p[1] != '.' && p[n - 1] != '.' && !memchr(p + 1, '/', n - 1) &&
           memchr(p + 1, '.', n - 1);
}

/* The subject rules, stated token by token. */
static bool literal_subject(const char *s, size_t n)
{
    if (n == 0 || n > HTTP_RPC_SUBJECT_MAX) return false;
    if (s[0] == '$' || (n >= 7 && memcmp(s, "_INBOX.", 7) == 0)) return false;
    size_t start = 0, tokens = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            unsigned char c = (unsigned char)s[i];
            if (c <= ' ' || c == 0x7f || c == '*' || c == '>' || c == '/') return false;
            continue;
        }
        if (i == start) return false; /* empty token */
        tokens++;
        start = i + 1;
    }
    return tokens >= 2;
}

static void check(const char *p, size_t n, size_t cap)
{
    char *out = malloc(cap);
    if (!out) abort();
    const char *why = NULL;
    enum http_rpc_path_result r = http_rpc_path_to_subject(p, n, out, cap, &why);
    bool shaped = rpc_shaped(p, n);
    bool fits = shaped && n - 1 < cap;
    bool valid = shaped && literal_subject(p + 1, n - 1);
    if (!shaped && r != HTTP_RPC_PATH_NOT_RPC) abort();
    if (shaped && r == HTTP_RPC_PATH_NOT_RPC) abort();
    if ((r == HTTP_RPC_PATH_OK) != (valid && fits)) abort(); /* accepted exactly when valid */
    if (r == HTTP_RPC_PATH_OK) {
        if (strlen(out) != n - 1 || memcmp(out, p + 1, n - 1) != 0) abort(); /* from the input */
        if (!literal_subject(out, strlen(out))) abort();
        if (why) abort();
    } else if (!why || !why[0]) {
        abort(); /* every refusal says why */
    }
    if (r == HTTP_RPC_PATH_RESERVED && p[1] != '$' && memcmp(p + 1, "_INBOX.", 7) != 0) abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    check(p, size, HTTP_RPC_SUBJECT_MAX + 1);
    if (size > 0) check(p, size, 1 + data[0] % 16); /* small buffers */
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    size_t query_at, *norm_indexes;
    h2o_iovec_t norm = h2o_url_normalize_path(&pool, p, size, &query_at, &norm_indexes);
    check(norm.base, norm.len, HTTP_RPC_SUBJECT_MAX + 1);
    h2o_mem_clear_pool(&pool);
    return 0;
}
