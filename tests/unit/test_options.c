/* test_options.c: the options table (runtime/options.c): the rows are consistent (unique names,
 * defaults within bounds and as the help says, the environment variable named in the help), the
 * defaults are the ones the runtime always had, environment variables stand in for absent flags,
 * values are parsed and bounded per kind, and every flag of the runtime is in docs/cli.md,
 * the command-line reference. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "options.h"

static void test_rows(void)
{
    CHECK(options_count > 0 && options_count < OPTIONS_MAX);
    for (int i = 0; i < options_count; i++) {
        const option_row *o = &options[i];
        for (int j = 0; j < i; j++)
            CHECK(strcmp(options[j].name, o->name) != 0 || diag("--%s twice", o->name));
        CHECK(o->help && o->help[0]);
        CHECK((o->kind == OPTION_FLAG) == (o->arg == NULL) || diag("--%s: arg", o->name));
        CHECK((o->kind == OPTION_CUSTOM) == (o->parse != NULL) || diag("--%s: parse", o->name));
        bool numeric = o->kind == OPTION_INT || o->kind == OPTION_SIZE ||
                       o->kind == OPTION_DOUBLE || o->kind == OPTION_MEGABYTES;
        if (numeric && !(o->kind == OPTION_MEGABYTES && o->def < 0))
            CHECK((o->def >= o->min && o->def <= o->max) || diag("--%s: default", o->name));
        /* "(default N" in the help says the row's default */
        const char *d = strstr(o->help, "default ");
        if (numeric && d && d[8] >= '0' && d[8] <= '9')
            CHECK(strtod(d + 8, NULL) == o->def || diag("--%s: help says %s", o->name, d));
        if (o->env) { /* the help names the variable; strings and parsed words have one */
            char var[64];
            snprintf(var, sizeof var, "$%s", o->env);
            CHECK(strstr(o->help, var) != NULL || diag("--%s: help lacks %s", o->name, var));
            CHECK(o->kind == OPTION_STRING || o->kind == OPTION_CUSTOM);
        }
    }
}

static void clear_env(void)
{
    for (int i = 0; i < options_count; i++)
        if (options[i].env) unsetenv(options[i].env);
}

/* The defaults of the hand-written runtime_config_defaults the table replaced. */
static void test_defaults(void)
{
    clear_env();
    runtime_config c;
    runtime_config_defaults(&c);
    CHECK(c.http_enabled && strcmp(c.http_host, "127.0.0.1") == 0 && c.http_port == 5000);
    CHECK(strcmp(c.https_host, "127.0.0.1") == 0 && c.https_port == 5443);
    CHECK(!c.tls_cert && !c.tls_key && !c.http_redirect);
    CHECK(strcmp(c.nats_url, "nats://127.0.0.1:4222") == 0);
    CHECK(!c.nats_auth.user && !c.nats_auth.password && !c.nats_auth.token &&
          !c.nats_auth.nkey_seed_file && !c.nats_auth.creds_file && !c.nats_auth.tls &&
          !c.nats_auth.ca_file && !c.nats_auth.cert_file && !c.nats_auth.key_file);
    CHECK(c.postgres == NULL && c.postgres_pool == 4 && c.postgres_wait == 30.0);
    CHECK(strcmp(c.frontend_dir, "./frontend") == 0);
    CHECK(strcmp(c.services_dir, "./services") == 0);
    CHECK(c.workers == 1 && c.body_limit == 1024 * 1024 && c.max_depth == 64);
    CHECK(c.call_timeout == 60.0 && c.drain_timeout == 10.0 && c.max_call_timeout == 300.0);
    CHECK(c.max_inflight == 32768 && c.max_conn_inflight == 100 && c.max_http_inflight == 10000);
    CHECK(c.max_lua_memory == (size_t)1024 * 1024 * 1024 && c.max_call_memory == SIZE_MAX);
    CHECK(c.max_sessions == 10000 && c.max_session_subs == 1000 && c.max_session_regs == 1000);
    CHECK(c.max_session_calls == 1000 && c.join_timeout == 10.0);
    CHECK(c.max_callee_pending == 1000 && c.session_idle_timeout == 300.0);
    CHECK(c.http_client_max == 64 && c.http_client_queue == 10000);
    CHECK(c.auth_file == NULL && c.auth_max_failures == 10);
    CHECK(c.auth_failure_window == 60.0 && c.auth_signature_window == 60.0);
    CHECK(c.watch && !c.reuse_port && !c.no_hooks && !c.rpc_subject_prefix);
}

static void test_environment(void)
{
    clear_env();
    setenv("NATS_URL", "nats://a:4222,nats://b:4222", 1);
    setenv("DATABASE_URL", "postgres://db/x", 1);
    setenv("MICROSERVICE_AUTH", "", 1); /* empty: unset */
    setenv("NATS_TOKEN", "t0k", 1);
    setenv("NATS_USER", "", 1);
    setenv("TLS_CERT", "c.pem", 1);
    runtime_config c;
    runtime_config_defaults(&c);
    CHECK(strcmp(c.nats_url, "nats://a:4222,nats://b:4222") == 0);
    CHECK(c.postgres && strcmp(c.postgres, "postgres://db/x") == 0);
    CHECK(c.auth_file == NULL);
    CHECK(c.nats_auth.token && strcmp(c.nats_auth.token, "t0k") == 0);
    CHECK(c.nats_auth.user == NULL);
    CHECK(c.tls_cert && strcmp(c.tls_cert, "c.pem") == 0 && !c.tls_key);
    /* a flag wins over its variable */
    CHECK(options_set(&c, options_find("nats"), "nats://c:1") == 0);
    CHECK(strcmp(c.nats_url, "nats://c:1") == 0);
    setenv("NATS_URL", "", 1); /* empty: the default */
    runtime_config_defaults(&c);
    CHECK(strcmp(c.nats_url, "nats://127.0.0.1:4222") == 0);
    clear_env();
}

static int set(runtime_config *c, const char *name, const char *arg)
{
    const option_row *o = options_find(name);
    CHECK(o != NULL || diag("no row --%s", name));
    return o ? options_set(c, o, arg) : -1;
}

static void test_values(void)
{
    runtime_config c;
    runtime_config_defaults(&c);
    fprintf(stderr, "(the error messages below are expected)\n");
    CHECK(set(&c, "http", "off") == 0 && !c.http_enabled);
    CHECK(set(&c, "http", "[::1]:8080") == 0 && c.http_enabled);
    CHECK(strcmp(c.http_host, "::1") == 0 && c.http_port == 8080);
    CHECK(set(&c, "http", "nope") == -1);
    CHECK(set(&c, "https", "0.0.0.0:443") == 0 && c.https_port == 443);
    CHECK(set(&c, "https", "0.0.0.0:99999") == -1);
    CHECK(set(&c, "body-limit", "63") == -1 && c.body_limit == 1024 * 1024);
    CHECK(set(&c, "body-limit", "64") == 0 && c.body_limit == 64);
    CHECK(set(&c, "max-conn-inflight", "101") == -1 && set(&c, "max-conn-inflight", "7") == 0);
    CHECK(c.max_conn_inflight == 7);
    CHECK(set(&c, "call-timeout", "0.5") == 0 && c.call_timeout == 0.5);
    CHECK(set(&c, "call-timeout", "0") == -1 && set(&c, "call-timeout", "5x") == -1);
    CHECK(set(&c, "max-lua-memory", "2") == 0 && c.max_lua_memory == 2 * 1024 * 1024);
    CHECK(set(&c, "max-call-memory", "0") == 0 && c.max_call_memory == 0);
    CHECK(set(&c, "max-lua-memory", "-1") == -1);
    CHECK(set(&c, "workers", "auto") == 0 && c.workers >= 1);
    CHECK(set(&c, "workers", "257") == -1 && set(&c, "workers", "3") == 0 && c.workers == 3);
    CHECK(set(&c, "auth", "") == 0 && c.auth_file == NULL);
    CHECK(set(&c, "auth", "users.json") == 0 && strcmp(c.auth_file, "users.json") == 0);
    CHECK(set(&c, "http-redirect", NULL) == 0 && c.http_redirect);
    CHECK(set(&c, "nats-tls", NULL) == 0 && c.nats_auth.tls);
    CHECK(set(&c, "nats-key", "k.pem") == 0 && strcmp(c.nats_auth.key_file, "k.pem") == 0);
    CHECK(set(&c, "log-level", "loud") == -1 && set(&c, "log-level", "warn") == 0);
}

/* getopt_long values map back to their rows; each command gets its rows only. */
static void test_getopt(void)
{
    struct option opts[OPTIONS_MAX];
    int n = options_getopt(opts, OPTIONS_MAX, OPTION_CALL, 500);
    bool nats = false;
    for (int i = 0; i < n; i++) {
        const option_row *o = options_of_getopt(opts[i].val, 500);
        CHECK(o && strcmp(o->name, opts[i].name) == 0 && (o->flags & OPTION_CALL));
        nats |= strcmp(opts[i].name, "nats") == 0;
        CHECK(strcmp(opts[i].name, "postgres") != 0);
    }
    CHECK(nats && n == 10);
    CHECK(options_getopt(opts, OPTIONS_MAX, OPTION_RUNTIME, 0) == options_count);
    CHECK(options_of_getopt(499, 500) == NULL &&
          options_of_getopt(500 + options_count, 500) == NULL);
}

/* "--name" in text, as a whole flag (not the start of a longer one) */
static bool mentions(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(text, "--"); p; p = strstr(p + 2, "--")) {
        char next = p[2 + n];
        if (strncmp(p + 2, name, n) == 0 && !(next == '-' || (next >= 'a' && next <= 'z')))
            return true;
    }
    return false;
}

/* Every flag of the runtime appears in docs/cli.md, the command-line reference. */
static void test_readme(void)
{
    FILE *f = fopen(MICROSERVICE_SOURCE_DIR "/docs/cli.md", "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    for (int i = 0; i < options_count; i++) {
        if (!(options[i].flags & OPTION_RUNTIME)) continue;
        CHECK(mentions(text, options[i].name) || diag("docs/cli.md lacks --%s", options[i].name));
    }
}

int main(void)
{
    test_rows();
    test_defaults();
    test_environment();
    test_values();
    test_getopt();
    test_readme();
    return check_summary();
}
