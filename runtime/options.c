/* options.c: owns the table of command-line options (see options.h) and what is made from it:
 * defaults, environment lookup, getopt_long entries, parsing and bounds, usage text. Adding a
 * flag is adding a row (and a field in runtime_config); nothing else repeats its name. */
#include "options.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define FIELD(f) offsetof(runtime_config, f)
#define MB_MAX (1 << 20) /* megabytes: up to 1 TiB */
/* the NATS credentials and TLS: every command that connects takes them */
#define NATS_AUTH_FLAGS (OPTION_RUNTIME | OPTION_CALL | OPTION_TEST | OPTION_NATS_AUTH)
#define NATS_AUTH_ROW(flag, f, var, argname, text)                                                 \
    {                                                                                              \
        .name = flag, .kind = OPTION_STRING, .offset = FIELD(nats_auth.f), .env = var,             \
        .arg = argname, .flags = NATS_AUTH_FLAGS, .help = text                                     \
    }

/* HOST:PORT or [IPV6]:PORT */
static int parse_hostport(const char *arg, char *host, size_t hostsize, int *port_out)
{
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg) return -1;
    size_t hostlen = (size_t)(colon - arg);
    if (arg[0] == '[' && hostlen >= 2 && arg[hostlen - 1] == ']') { /* [::1]:5000 */
        arg++;
        hostlen -= 2;
    }
    if (hostlen >= hostsize) return -1;
    memcpy(host, arg, hostlen);
    host[hostlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    *port_out = (int)port;
    return 0;
}

static int parse_http(runtime_config *cfg, const option_row *o, const char *arg)
{
    (void)o;
    if (strcmp(arg, "off") == 0) {
        cfg->http_enabled = false;
        return 0;
    }
    if (parse_hostport(arg, cfg->http_host, sizeof cfg->http_host, &cfg->http_port) != 0) return -1;
    cfg->http_enabled = true;
    return 0;
}

static int parse_https(runtime_config *cfg, const option_row *o, const char *arg)
{
    (void)o;
    return parse_hostport(arg, cfg->https_host, sizeof cfg->https_host, &cfg->https_port);
}

static int parse_number(const char *arg, double min, double max, double *out)
{
    char *end;
    double v = strtod(arg, &end);
    if (end == arg || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static int parse_workers(runtime_config *cfg, const option_row *o, const char *arg)
{
    double v;
    if (strcmp(arg, "auto") == 0) {
        cfg->workers = (int)uv_available_parallelism();
        return 0;
    }
    if (parse_number(arg, o->min, o->max, &v) != 0) return -1;
    cfg->workers = (int)v;
    return 0;
}

/* on or off, into the row's bool field; the message of a bad value is the row's. */
static int parse_on_off(runtime_config *cfg, const option_row *o, const char *arg)
{
    if (strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0) return -1;
    *(bool *)((char *)cfg + o->offset) = strcmp(arg, "on") == 0;
    return 0;
}

/* The log level is the logger's, not the config's: set at once, as the flag is read. */
static int parse_log_level(runtime_config *cfg, const option_row *o, const char *arg)
{
    (void)cfg;
    (void)o;
    int level = log_level_parse(arg);
    if (level < 0) return -1;
    log_set_level(level);
    return 0;
}

/* clang-format off */
const option_row options[] = {
    {.name = "http", .kind = OPTION_CUSTOM, .parse = parse_http, .def_str = "127.0.0.1:5000",
     .arg = "HOST:PORT|off", .flags = OPTION_RUNTIME, .bad = "wants HOST:PORT or off, got '%s'",
     .help = "HTTP gateway, frontend and /websocket (default 127.0.0.1:5000);\n"
             "'off': no plain listener (with neither it nor TLS, services only)"},
    {.name = "tls-cert", .kind = OPTION_STRING, .offset = FIELD(tls_cert), .env = "TLS_CERT",
     .arg = "FILE", .flags = OPTION_RUNTIME,
     .help = "PEM certificate chain (default $TLS_CERT): also serve HTTPS,\n"
             "HTTP/2 by ALPN, and WSS; with --tls-key"},
    {.name = "tls-key", .kind = OPTION_STRING, .offset = FIELD(tls_key), .env = "TLS_KEY",
     .arg = "FILE", .flags = OPTION_RUNTIME, .help = "its PEM private key (default $TLS_KEY)"},
    {.name = "https", .kind = OPTION_CUSTOM, .parse = parse_https, .def_str = "127.0.0.1:5443",
     .arg = "HOST:PORT", .flags = OPTION_RUNTIME, .bad = "wants HOST:PORT, got '%s'",
     .help = "the TLS listener (default 127.0.0.1:5443)"},
    {.name = "http-redirect", .kind = OPTION_FLAG, .offset = FIELD(http_redirect),
     .flags = OPTION_RUNTIME, .help = "plain HTTP answers 308 to https://, except /healthz"},
    {.name = "nats", .kind = OPTION_STRING, .offset = FIELD(nats_url),
     .def_str = "nats://127.0.0.1:4222", .env = "NATS_URL", .arg = "URL[,URL...]",
     .flags = OPTION_RUNTIME | OPTION_CALL | OPTION_TEST,
     .help = "NATS server(s) (default $NATS_URL or nats://127.0.0.1:4222)"},
    NATS_AUTH_ROW("nats-user", user, "NATS_USER", "U",
                  "NATS user ($NATS_USER; also nats://U:P@host in the URL)"),
    NATS_AUTH_ROW("nats-password", password, "NATS_PASSWORD", "P", "its password ($NATS_PASSWORD)"),
    NATS_AUTH_ROW("nats-token", token, "NATS_TOKEN", "T", "NATS token ($NATS_TOKEN)"),
    NATS_AUTH_ROW("nats-nkey", nkey_seed_file, "NATS_NKEY", "FILE",
                  "NKey user seed file, SU... ($NATS_NKEY)"),
    NATS_AUTH_ROW("nats-creds", creds_file, "NATS_CREDS", "FILE",
                  "user JWT and seed (.creds) file ($NATS_CREDS)"),
    {.name = "nats-tls", .kind = OPTION_FLAG, .offset = FIELD(nats_auth.tls),
     .flags = NATS_AUTH_FLAGS,
     .help = "require TLS (implied by tls:// URLs and the options below)"},
    NATS_AUTH_ROW("nats-ca", ca_file, "NATS_CA", "FILE",
                  "CA certificates that sign the server's certificate ($NATS_CA)"),
    NATS_AUTH_ROW("nats-cert", cert_file, "NATS_CERT", "FILE",
                  "client certificate for mutual TLS, with --nats-key ($NATS_CERT)"),
    NATS_AUTH_ROW("nats-key", key_file, "NATS_KEY", "FILE", "its private key ($NATS_KEY)"),
    {.name = "postgres", .kind = OPTION_STRING, .offset = FIELD(postgres), .env = "DATABASE_URL",
     .arg = "CONN", .flags = OPTION_RUNTIME | OPTION_TEST,
     .help = "PostgreSQL conninfo or URL (default $DATABASE_URL); the migrations\n"
             "in SERVICES_DIR/migrations are applied at start-up"},
    {.name = "postgres-pool", .kind = OPTION_INT, .offset = FIELD(postgres_pool), .min = 1,
     .max = 256, .def = 4, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "database connections (default 4)"},
    {.name = "postgres-statements", .kind = OPTION_INT, .offset = FIELD(postgres_statements),
     .min = 0, .max = 100000, .def = 256, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "SQL texts each connection prepares and reuses (default 256;\n"
             "0: every statement is parsed and planned each time)"},
    {.name = "frontend", .kind = OPTION_STRING, .offset = FIELD(frontend_dir),
     .def_str = "./frontend", .arg = "DIR", .flags = OPTION_RUNTIME,
     .help = "static files served at / (default ./frontend)"},
    {.name = "workers", .kind = OPTION_CUSTOM, .parse = parse_workers, .min = 1, .max = 256,
     .def_str = "1", .arg = "N|auto", .flags = OPTION_RUNTIME,
     .help = "worker processes sharing the port (default 1; auto: one per core)"},
    {.name = "log-level", .kind = OPTION_CUSTOM, .parse = parse_log_level, .arg = "LEVEL",
     .flags = OPTION_RUNTIME, .bad = "wants debug, info, warn or error",
     .help = "debug, info, warn or error (default info)"},
    {.name = "call-timeout", .kind = OPTION_DOUBLE, .offset = FIELD(call_timeout), .min = 0.001,
     .max = 86400, .def = 60, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "default RPC timeout in seconds (default 60)"},
    {.name = "max-call-timeout", .kind = OPTION_DOUBLE, .offset = FIELD(max_call_timeout),
     .min = 0.001, .max = 86400, .def = 300, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "longest timeout a caller may ask for (HTTP ?timeout=, WAMP\n"
             "options.timeout, Microservice-Timeout of a NATS request); longer\n"
             "ones are lowered to it (default 300)"},
    {.name = "drain-timeout", .kind = OPTION_DOUBLE, .offset = FIELD(drain_timeout), .min = 0,
     .max = 86400, .def = 10, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "how long SIGTERM waits for calls in flight (default 10)"},
    {.name = "body-limit", .kind = OPTION_SIZE, .offset = FIELD(body_limit), .min = 64,
     .max = 1 << 30, .def = 1048576, .arg = "BYTES", .flags = OPTION_RUNTIME,
     .help = "largest request body in bytes (default 1048576)"},
    {.name = "max-depth", .kind = OPTION_INT, .offset = FIELD(max_depth), .min = 1, .max = 1000,
     .def = 64, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "deepest JSON nesting accepted (default 64)"},
    {.name = "max-inflight", .kind = OPTION_INT, .offset = FIELD(max_inflight), .min = 1,
     .max = 1 << 22, .def = 32768, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "concurrent calls before NATS intake pauses (default 32768)"},
    {.name = "max-sessions", .kind = OPTION_INT, .offset = FIELD(max_sessions), .min = 1,
     .max = 1 << 20, .def = 10000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "WAMP sessions per process (default 10000)"},
    {.name = "max-subscriptions", .kind = OPTION_INT, .offset = FIELD(max_session_subs), .min = 1,
     .max = 1 << 20, .def = 1000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "subscriptions per WAMP session (default 1000)"},
    {.name = "max-registrations", .kind = OPTION_INT, .offset = FIELD(max_session_regs), .min = 1,
     .max = 1 << 20, .def = 1000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "registrations per WAMP session (default 1000)"},
    {.name = "max-conn-inflight", .kind = OPTION_INT, .offset = FIELD(max_conn_inflight),
     .min = 1, .max = 100, .def = 100, .arg = "N", .flags = OPTION_RUNTIME,
     .bad = "wants 1 to 100 (h2o lets an HTTP/2 client open at most 100 streams at a time), "
            "got '%s'",
     .help = "RPC calls in flight on one HTTP connection, 1 to 100\n"
             "(HTTP/2 streams; default 100); more are answered 429"},
    {.name = "max-http-inflight", .kind = OPTION_INT, .offset = FIELD(max_http_inflight),
     .min = 1, .max = 1 << 22, .def = 10000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "HTTP calls in flight in the process; more are answered 503\n"
             "(default 10000)"},
    {.name = "max-lua-memory", .kind = OPTION_MEGABYTES, .offset = FIELD(max_lua_memory),
     .min = 0, .max = MB_MAX, .def = 1024, .arg = "MB", .flags = OPTION_RUNTIME,
     .bad = "wants megabytes (0: no limit), got '%s'",
     .help = "Lua heap: new calls are refused (503) while it is over MB after\n"
             "a full collection; a call that grows it past 2 x MB fails with\n"
             "'out of memory' (default 1024; 0: no limit)"},
    {.name = "max-call-memory", .kind = OPTION_MEGABYTES, .offset = FIELD(max_call_memory),
     .min = 0, .max = MB_MAX, .def = -1, .arg = "MB", .flags = OPTION_RUNTIME,
     .bad = "wants megabytes (0: no bound), got '%s'",
     .help = "Lua memory the decoded arguments of one call may take; more:\n"
             "413 (default: a eighth of --max-lua-memory; 0: no bound)"},
    {.name = "http-client-max", .kind = OPTION_INT, .offset = FIELD(http_client_max), .min = 1,
     .max = 100000, .def = 64, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "outbound HTTP requests (microservice.http) in progress at once\n"
             "(default 64)"},
    {.name = "http-client-queue", .kind = OPTION_INT, .offset = FIELD(http_client_queue),
     .min = 0, .max = 1 << 20, .def = 10000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "more outbound HTTP requests that wait for one of them, in order\n"
             "(default 10000); beyond, a request fails at once (unavailable)"},
    {.name = "prefer-local", .kind = OPTION_CUSTOM, .parse = parse_on_off,
     .offset = FIELD(prefer_local), .def_str = "on",
     .env = "MICROSERVICE_PREFER_LOCAL", .arg = "on|off", .flags = OPTION_RUNTIME,
     .bad = "wants on or off, got '%s'",
     .help = "a call of an RPC that a Lua service of this process serves\n"
             "runs in-process, not over NATS (default on, or\n"
             "$MICROSERVICE_PREFER_LOCAL); see docs/local-dispatch.md"},
    {.name = "http1-rearm", .kind = OPTION_CUSTOM, .parse = parse_on_off,
     .offset = FIELD(http1_rearm), .def_str = "on", .env = "MICROSERVICE_HTTP1_REARM",
     .arg = "on|off", .flags = OPTION_RUNTIME, .bad = "wants on or off, got '%s'",
     .help = "keep an HTTP/1 connection registered in epoll while h2o pauses\n"
             "reading it for a request answered at once: no epoll_ctl per\n"
             "request (default on, or $MICROSERVICE_HTTP1_REARM); see\n"
             "docs/operations.md"},
    {.name = "max-session-calls", .kind = OPTION_INT, .offset = FIELD(max_session_calls),
     .min = 1, .max = 1 << 20, .def = 1000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "calls in flight per WAMP session (default 1000)"},
    {.name = "join-timeout", .kind = OPTION_DOUBLE, .offset = FIELD(join_timeout), .min = 0.1,
     .max = 3600, .def = 10, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "seconds a WebSocket may take to HELLO and authenticate (default 10)"},
    {.name = "max-callee-pending", .kind = OPTION_INT, .offset = FIELD(max_callee_pending),
     .min = 1, .max = 1 << 20, .def = 1000, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "invocations waiting for one WAMP callee; more are refused\n"
             "with wamp.error.limit_exceeded (default 1000)"},
    {.name = "session-idle-timeout", .kind = OPTION_DOUBLE, .offset = FIELD(session_idle_timeout),
     .min = 0, .max = 86400, .def = 300, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "seconds a WAMP session may send nothing (no message, ping\n"
             "or pong) before it is closed (default 300; 0: never)"},
    {.name = "auth", .kind = OPTION_STRING, .offset = FIELD(auth_file), .env = "MICROSERVICE_AUTH",
     .arg = "FILE", .flags = OPTION_RUNTIME | OPTION_EMPTY_IS_NULL,
     .help = "users, tokens and roles (default $MICROSERVICE_AUTH; none: every\n"
             "caller may do everything); see docs/auth.md"},
    {.name = "auth-max-failures", .kind = OPTION_INT, .offset = FIELD(auth_max_failures),
     .min = 0, .max = 1 << 20, .def = 10, .arg = "N", .flags = OPTION_RUNTIME,
     .help = "failed sign-ins per client address and per authid within\n"
             "the failure window; more are refused until it has passed\n"
             "(default 10; 0: no limit)"},
    {.name = "auth-failure-window", .kind = OPTION_DOUBLE, .offset = FIELD(auth_failure_window),
     .min = 0.1, .max = 86400, .def = 60, .arg = "S", .flags = OPTION_RUNTIME,
     .help = "seconds of that window (default 60)"},
    {.name = "auth-signature-window", .kind = OPTION_DOUBLE,
     .offset = FIELD(auth_signature_window), .min = 1, .max = 86400, .def = 60, .arg = "S",
     .flags = OPTION_RUNTIME,
     .help = "how old (or how far ahead, for clock skew) a caller\n"
             "identity signed on the bus may be (default 60)"},
};
/* clang-format on */

const int options_count = (int)(sizeof options / sizeof options[0]);

static void *field(runtime_config *cfg, const option_row *o)
{
    return (char *)cfg + o->offset;
}

/* The value without checks or messages: 0, or -1 when arg is not a value of the row. */
static int set_value(runtime_config *cfg, const option_row *o, const char *arg)
{
    double v = 0;
    if (o->kind != OPTION_STRING && o->kind != OPTION_FLAG && o->kind != OPTION_CUSTOM &&
        parse_number(arg, o->min, o->max, &v) != 0)
        return -1;
    switch (o->kind) {
    case OPTION_STRING:
        *(const char **)field(cfg, o) = (o->flags & OPTION_EMPTY_IS_NULL) && !arg[0] ? NULL : arg;
        return 0;
    case OPTION_FLAG:
        *(bool *)field(cfg, o) = true;
        return 0;
    case OPTION_INT:
        *(int *)field(cfg, o) = (int)v;
        return 0;
    case OPTION_SIZE:
        *(size_t *)field(cfg, o) = (size_t)v;
        return 0;
    case OPTION_DOUBLE:
        *(double *)field(cfg, o) = v;
        return 0;
    case OPTION_MEGABYTES:
        *(size_t *)field(cfg, o) = (size_t)(v * 1024 * 1024);
        return 0;
    case OPTION_CUSTOM:
        return o->parse(cfg, o, arg);
    }
    return -1;
}

static void set_default(runtime_config *cfg, const option_row *o)
{
    switch (o->kind) {
    case OPTION_STRING:
        *(const char **)field(cfg, o) = o->def_str;
        break;
    case OPTION_FLAG:
        *(bool *)field(cfg, o) = false;
        break;
    case OPTION_INT:
        *(int *)field(cfg, o) = (int)o->def;
        break;
    case OPTION_SIZE:
        *(size_t *)field(cfg, o) = (size_t)o->def;
        break;
    case OPTION_DOUBLE:
        *(double *)field(cfg, o) = o->def;
        break;
    case OPTION_MEGABYTES:
        *(size_t *)field(cfg, o) = o->def < 0 ? SIZE_MAX : (size_t)(o->def * 1024 * 1024);
        break;
    case OPTION_CUSTOM:
        if (o->def_str) o->parse(cfg, o, o->def_str);
        break;
    }
}

void options_defaults(runtime_config *cfg)
{
    for (int i = 0; i < options_count; i++) {
        const option_row *o = &options[i];
        set_default(cfg, o);
        const char *env = o->env ? getenv(o->env) : NULL;
        if (env && env[0] && set_value(cfg, o, env) != 0)
            fprintf(stderr, "microservice: $%s: bad value '%s' (ignored)\n", o->env, env);
    }
}

const option_row *options_find(const char *name)
{
    for (int i = 0; i < options_count; i++)
        if (strcmp(options[i].name, name) == 0) return &options[i];
    return NULL;
}

int options_set(runtime_config *cfg, const option_row *o, const char *arg)
{
    if (set_value(cfg, o, arg) == 0) return 0;
    if (o->bad) {
        fprintf(stderr, "microservice: --%s ", o->name);
        fprintf(stderr, o->bad, arg);
        fputc('\n', stderr);
    } else {
        fprintf(stderr, "microservice: bad value '%s' for --%s\n", arg, o->name);
    }
    return -1;
}

int options_getopt(struct option *out, int max, unsigned commands, int base)
{
    int n = 0;
    for (int i = 0; i < options_count && n < max; i++) {
        if (!(options[i].flags & commands)) continue;
        out[n++] = (struct option){options[i].name,
                                   options[i].kind == OPTION_FLAG ? no_argument : required_argument,
                                   NULL, base + i};
    }
    return n;
}

const option_row *options_of_getopt(int val, int base)
{
    return val >= base && val < base + options_count ? &options[val - base] : NULL;
}

void options_synopsis(FILE *out, unsigned commands, int indent)
{
    int col = indent;
    for (int i = 0; i < options_count; i++) {
        const option_row *o = &options[i];
        if (!(o->flags & commands)) continue;
        int len = (int)strlen(o->name) + 5 + (o->arg ? (int)strlen(o->arg) + 1 : 0);
        if (col + len > 100) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        }
        col += fprintf(out, " [--%s%s%s]", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    }
}

void options_usage(FILE *out, unsigned commands)
{
    for (int i = 0; i < options_count; i++) {
        const option_row *o = &options[i];
        if (!(o->flags & commands)) continue;
        int len = fprintf(out, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "%*s", len < 19 ? 21 - len : 2, "");
        for (const char *p = o->help; *p;) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(out, "%.*s\n", n, p);
            if (!nl) break;
            fprintf(out, "%21s", "");
            p = nl + 1;
        }
    }
}
