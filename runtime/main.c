/* main.c: owns the command line (flags, environment defaults, usage) and the process start. */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/crypto.h>
#include <string.h>

#include "auth.h"
#include "commands.h"
#include "log.h"
#include "nats_auth.h"
#include "runtime.h"
#include "tls.h"
#include "workers.h"

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: microservice [--http HOST:PORT|off] [--nats URL[,URL...]] [--postgres CONNINFO]\n"
        "                    [--postgres-pool N] [--tls-cert FILE --tls-key FILE]\n"
        "                    [--https HOST:PORT] [--http-redirect]\n"
        "                    [--frontend DIR] [--workers N] [--log-level LEVEL]\n"
        "                    [--call-timeout S] [--drain-timeout S] [--body-limit BYTES]\n"
        "                    [--max-depth N] [--max-inflight N] [--max-conn-inflight N]\n"
        "                    [--max-lua-memory MB] [--max-call-memory MB] [--auth FILE]\n"
        "                    [--auth-max-failures N] [--auth-failure-window S]\n"
        "                    [--auth-signature-window S]\n"
        "                    [--max-callee-pending N] [--session-idle-timeout S]\n"
        "                    [--max-http-inflight N] [--max-call-timeout S]\n"
        "                    [--http-client-max N] [--http-client-queue N]\n"
        "                    [--prefer-local on|off]\n"
        "                    [--nats-user U --nats-password P] [--nats-token T] [--nats-nkey "
        "FILE]\n"
        "                    [--nats-creds FILE] [--nats-tls] [--nats-ca FILE]\n"
        "                    [--nats-cert FILE --nats-key FILE] [SERVICES_DIR]\n"
        "\n"
        "  --http HOST:PORT   HTTP gateway, frontend and /websocket (default 127.0.0.1:5000);\n"
        "                     'off': no plain listener (with neither it nor TLS, services only)\n"
        "  --tls-cert FILE    PEM certificate chain (default $TLS_CERT): also serve HTTPS,\n"
        "                     HTTP/2 by ALPN, and WSS\n"
        "  --tls-key FILE     its PEM private key (default $TLS_KEY)\n"
        "  --https HOST:PORT  the TLS listener (default 127.0.0.1:5443)\n"
        "  --http-redirect    plain HTTP answers 308 to https://, except /healthz\n"
        "  --nats URL         NATS server(s) (default $NATS_URL or "
        "nats://127.0.0.1:4222)\n" NATS_AUTH_USAGE
        "  --postgres CONN    PostgreSQL conninfo or URL (default $DATABASE_URL); the migrations\n"
        "                     in SERVICES_DIR/migrations are applied at start-up\n"
        "  --postgres-pool N  database connections (default 4)\n"
        "  --frontend DIR     static files served at / (default ./frontend)\n"
        "  --workers N|auto   worker processes sharing the port (default 1; auto: one per core)\n"
        "  --log-level L      debug, info, warn or error (default info)\n"
        "  --call-timeout S   default RPC timeout in seconds (default 60)\n"
        "  --max-call-timeout S  longest timeout a caller may ask for (HTTP ?timeout=, WAMP\n"
        "                     options.timeout, Microservice-Timeout of a NATS request); longer\n"
        "                     ones are lowered to it (default 300)\n"
        "  --drain-timeout S  how long SIGTERM waits for calls in flight (default 10)\n"
        "  --body-limit B     largest request body in bytes (default 1048576)\n"
        "  --max-depth N      deepest JSON nesting accepted (default 64)\n"
        "  --max-inflight N   concurrent calls before NATS intake pauses (default 32768)\n"
        "  --max-sessions N   WAMP sessions per process (default 10000)\n"
        "  --max-subscriptions N, --max-registrations N\n"
        "                     per WAMP session (default 1000 each)\n"
        "  --max-conn-inflight N  RPC calls in flight on one HTTP connection, 1 to 100\n"
        "                     (HTTP/2 streams; default 100); more are answered 429\n"
        "  --max-http-inflight N  HTTP calls in flight in the process; more are answered 503\n"
        "                     (default 10000)\n"
        "  --max-lua-memory MB  Lua heap: new calls are refused (503) while it is over MB after\n"
        "                     a full collection; a call that grows it past 2 x MB fails with\n"
        "                     'out of memory' (default 1024; 0: no limit)\n"
        "  --max-call-memory MB  Lua memory the decoded arguments of one call may take; more:\n"
        "                     413 (default: a eighth of --max-lua-memory; 0: no bound)\n"
        "  --http-client-max N  outbound HTTP requests (microservice.http) in progress at once\n"
        "                     (default 64)\n"
        "  --http-client-queue N  more outbound HTTP requests that wait for one of them, in order\n"
        "                     (default 10000); beyond, a request fails at once (unavailable)\n"
        "  --prefer-local on|off  a call of an RPC that a Lua service of this process serves\n"
        "                     runs in-process, not over NATS (default on, or\n"
        "                     $MICROSERVICE_PREFER_LOCAL); see docs/local-dispatch.md\n"
        "  --max-session-calls N  calls in flight per WAMP session (default 1000)\n"
        "  --join-timeout S   seconds a WebSocket may take to HELLO and authenticate (default 10)\n"
        "  --max-callee-pending N  invocations waiting for one WAMP callee; more are refused\n"
        "                     with wamp.error.limit_exceeded (default 1000)\n"
        "  --session-idle-timeout S  seconds a WAMP session may send nothing (no message, ping\n"
        "                     or pong) before it is closed (default 300; 0: never)\n"
        "  --auth FILE        users, tokens and roles (default $MICROSERVICE_AUTH; none: every\n"
        "                     caller may do everything); see docs/auth.md\n"
        "  --auth-max-failures N  failed sign-ins per client address and per authid within\n"
        "                     the failure window; more are refused until it has passed\n"
        "                     (default 10; 0: no limit)\n"
        "  --auth-failure-window S  seconds of that window (default 60)\n"
        "  --auth-signature-window S  how old (or how far ahead, for clock skew) a caller\n"
        "                     identity signed on the bus may be (default 60)\n"
        "  SERVICES_DIR       folder of *.lua service scripts (default ./services)\n"
        "\n"
        "       microservice call <service>.<method> [ARGS...] [--kw name=value ...]\n"
        "       microservice list [SERVICES_DIR]\n"
        "       " COMMAND_TEST_SYNOPSIS "       " COMMAND_EVAL_SYNOPSIS
        "       " COMMAND_REPL_SYNOPSIS
        "       microservice auth-secret [--iterations N]   (reads a password on stdin)\n"
        "       microservice auth-token\n"
        "  (each with --help)\n");
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

static int parse_http(runtime_config *cfg, const char *arg)
{
    if (strcmp(arg, "off") == 0) {
        cfg->http_enabled = false;
        return 0;
    }
    if (parse_hostport(arg, cfg->http_host, sizeof cfg->http_host, &cfg->http_port) != 0) return -1;
    cfg->http_enabled = true;
    return 0;
}

static int parse_number(const char *arg, double min, double max, double *out)
{
    char *end;
    double v = strtod(arg, &end);
    if (end == arg || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* A flag in megabytes (0 to 1 TiB) into bytes; on error says what the flag wants. */
static int parse_megabytes(const char *arg, const char *flag, const char *zero_means, size_t *out)
{
    double v;
    if (parse_number(arg, 0, 1 << 20, &v) != 0) {
        fprintf(stderr, "microservice: %s wants megabytes (0: %s), got '%s'\n", flag, zero_means,
                arg);
        return -1;
    }
    *out = (size_t)(v * 1024 * 1024);
    return 0;
}

/* TLS_CERT and TLS_KEY stand in for absent flags; the cert and the key come together. */
static int check_tls_args(runtime_config *cfg, bool https_given)
{
    const char *env_cert = getenv("TLS_CERT"), *env_key = getenv("TLS_KEY");
    if (!cfg->tls_cert && env_cert && env_cert[0]) cfg->tls_cert = env_cert;
    if (!cfg->tls_key && env_key && env_key[0]) cfg->tls_key = env_key;
    if (!cfg->tls_cert != !cfg->tls_key) {
        fprintf(stderr, "microservice: --tls-cert and --tls-key go together (missing %s)\n",
                cfg->tls_cert ? "--tls-key" : "--tls-cert");
        return -1;
    }
    if (https_given && !cfg->tls_cert) {
        fprintf(stderr, "microservice: --https needs --tls-cert FILE and --tls-key FILE\n");
        return -1;
    }
    if (cfg->http_redirect && (!cfg->tls_cert || !cfg->http_enabled)) {
        fprintf(stderr, "microservice: --http-redirect needs --tls-cert/--tls-key and a plain "
                        "--http listener\n");
        return -1;
    }
    return 0;
}

/* The default call timeout fits under the maximum: lowered to it, unless both were given. */
static int check_call_timeouts(runtime_config *cfg, bool call_timeout_given)
{
    if (cfg->call_timeout <= cfg->max_call_timeout) return 0;
    if (call_timeout_given) {
        fprintf(stderr, "microservice: --call-timeout %g is over --max-call-timeout %g\n",
                cfg->call_timeout, cfg->max_call_timeout);
        return -1;
    }
    cfg->call_timeout = cfg->max_call_timeout;
    return 0;
}

enum {
    OPT_HTTP = 1000,
    OPT_NATS,
    OPT_POSTGRES,
    OPT_POSTGRES_POOL,
    OPT_FRONTEND,
    OPT_WORKERS,
    OPT_LOG_LEVEL,
    OPT_CALL_TIMEOUT,
    OPT_DRAIN_TIMEOUT,
    OPT_BODY_LIMIT,
    OPT_MAX_DEPTH,
    OPT_MAX_INFLIGHT,
    OPT_MAX_SESSIONS,
    OPT_MAX_SUBSCRIPTIONS,
    OPT_MAX_REGISTRATIONS,
    OPT_MAX_SESSION_CALLS,
    OPT_JOIN_TIMEOUT,
    OPT_AUTH,
    OPT_HTTPS,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_HTTP_REDIRECT,
    OPT_MAX_CONN_INFLIGHT,
    OPT_MAX_LUA_MEMORY,
    OPT_MAX_CALL_MEMORY,
    OPT_AUTH_MAX_FAILURES,
    OPT_AUTH_FAILURE_WINDOW,
    OPT_AUTH_SIGNATURE_WINDOW,
    OPT_MAX_CALLEE_PENDING,
    OPT_SESSION_IDLE_TIMEOUT,
    OPT_MAX_HTTP_INFLIGHT,
    OPT_MAX_CALL_TIMEOUT,
    OPT_HTTP_CLIENT_MAX,
    OPT_HTTP_CLIENT_QUEUE,
    OPT_PREFER_LOCAL,
    OPT_NATS_AUTH, /* NATS_AUTH_NOPTS ids from here */
};

static int parse_args(int argc, char **argv, runtime_config *cfg)
{
    static const struct option opts[] = {
        {"http", required_argument, NULL, OPT_HTTP},
        {"nats", required_argument, NULL, OPT_NATS},
        {"postgres", required_argument, NULL, OPT_POSTGRES},
        {"postgres-pool", required_argument, NULL, OPT_POSTGRES_POOL},
        {"frontend", required_argument, NULL, OPT_FRONTEND},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"call-timeout", required_argument, NULL, OPT_CALL_TIMEOUT},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
        {"body-limit", required_argument, NULL, OPT_BODY_LIMIT},
        {"max-depth", required_argument, NULL, OPT_MAX_DEPTH},
        {"max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT},
        {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
        {"max-subscriptions", required_argument, NULL, OPT_MAX_SUBSCRIPTIONS},
        {"max-registrations", required_argument, NULL, OPT_MAX_REGISTRATIONS},
        {"max-session-calls", required_argument, NULL, OPT_MAX_SESSION_CALLS},
        {"join-timeout", required_argument, NULL, OPT_JOIN_TIMEOUT},
        {"auth", required_argument, NULL, OPT_AUTH},
        {"https", required_argument, NULL, OPT_HTTPS},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"http-redirect", no_argument, NULL, OPT_HTTP_REDIRECT},
        {"max-conn-inflight", required_argument, NULL, OPT_MAX_CONN_INFLIGHT},
        {"max-lua-memory", required_argument, NULL, OPT_MAX_LUA_MEMORY},
        {"max-call-memory", required_argument, NULL, OPT_MAX_CALL_MEMORY},
        {"auth-max-failures", required_argument, NULL, OPT_AUTH_MAX_FAILURES},
        {"auth-failure-window", required_argument, NULL, OPT_AUTH_FAILURE_WINDOW},
        {"auth-signature-window", required_argument, NULL, OPT_AUTH_SIGNATURE_WINDOW},
        {"max-callee-pending", required_argument, NULL, OPT_MAX_CALLEE_PENDING},
        {"session-idle-timeout", required_argument, NULL, OPT_SESSION_IDLE_TIMEOUT},
        {"max-http-inflight", required_argument, NULL, OPT_MAX_HTTP_INFLIGHT},
        {"max-call-timeout", required_argument, NULL, OPT_MAX_CALL_TIMEOUT},
        {"http-client-max", required_argument, NULL, OPT_HTTP_CLIENT_MAX},
        {"http-client-queue", required_argument, NULL, OPT_HTTP_CLIENT_QUEUE},
        {"prefer-local", required_argument, NULL, OPT_PREFER_LOCAL},
        NATS_AUTH_LONG_OPTIONS(OPT_NATS_AUTH),
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    double v;
    bool https_given = false, call_timeout_given = false;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HTTP:
            if (parse_http(cfg, optarg) != 0) {
                fprintf(stderr, "microservice: --http wants HOST:PORT or off, got '%s'\n", optarg);
                return -1;
            }
            break;
        case OPT_NATS:
            cfg->nats_url = optarg;
            break;
        case OPT_POSTGRES:
            cfg->postgres = optarg;
            break;
        case OPT_POSTGRES_POOL:
            if (parse_number(optarg, 1, 256, &v) != 0) goto bad_number;
            cfg->postgres_pool = (int)v;
            break;
        case OPT_FRONTEND:
            cfg->frontend_dir = optarg;
            break;
        case OPT_WORKERS:
            if (strcmp(optarg, "auto") == 0) {
                cfg->workers = (int)uv_available_parallelism();
                break;
            }
            if (parse_number(optarg, 1, 256, &v) != 0) goto bad_number;
            cfg->workers = (int)v;
            break;
        case OPT_LOG_LEVEL: {
            int level = log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "microservice: --log-level wants debug, info, warn or error\n");
                return -1;
            }
            log_set_level(level);
            break;
        }
        case OPT_CALL_TIMEOUT:
            if (parse_number(optarg, 0.001, 86400, &cfg->call_timeout) != 0) goto bad_number;
            call_timeout_given = true;
            break;
        case OPT_MAX_CALL_TIMEOUT:
            if (parse_number(optarg, 0.001, 86400, &cfg->max_call_timeout) != 0) goto bad_number;
            break;
        case OPT_MAX_HTTP_INFLIGHT:
            if (parse_number(optarg, 1, 1 << 22, &v) != 0) goto bad_number;
            cfg->max_http_inflight = (int)v;
            break;
        case OPT_DRAIN_TIMEOUT:
            if (parse_number(optarg, 0, 86400, &cfg->drain_timeout) != 0) goto bad_number;
            break;
        case OPT_BODY_LIMIT:
            if (parse_number(optarg, 64, 1 << 30, &v) != 0) goto bad_number;
            cfg->body_limit = (size_t)v;
            break;
        case OPT_MAX_DEPTH:
            if (parse_number(optarg, 1, 1000, &v) != 0) goto bad_number;
            cfg->max_depth = (int)v;
            break;
        case OPT_MAX_SESSIONS:
            if (parse_number(optarg, 1, 1 << 20, &v) != 0) goto bad_number;
            cfg->max_sessions = (int)v;
            break;
        case OPT_MAX_SUBSCRIPTIONS:
            if (parse_number(optarg, 1, 1 << 20, &v) != 0) goto bad_number;
            cfg->max_session_subs = (int)v;
            break;
        case OPT_MAX_REGISTRATIONS:
            if (parse_number(optarg, 1, 1 << 20, &v) != 0) goto bad_number;
            cfg->max_session_regs = (int)v;
            break;
        case OPT_JOIN_TIMEOUT:
            if (parse_number(optarg, 0.1, 3600, &cfg->join_timeout) != 0) goto bad_number;
            break;
        case OPT_MAX_CALLEE_PENDING:
            if (parse_number(optarg, 1, 1 << 20, &v) != 0) goto bad_number;
            cfg->max_callee_pending = (int)v;
            break;
        case OPT_SESSION_IDLE_TIMEOUT:
            if (parse_number(optarg, 0, 86400, &cfg->session_idle_timeout) != 0) goto bad_number;
            break;
        case OPT_MAX_SESSION_CALLS:
            if (parse_number(optarg, 1, 1 << 20, &v) != 0) goto bad_number;
            cfg->max_session_calls = (int)v;
            break;
        case OPT_AUTH:
            cfg->auth_file = optarg[0] ? optarg : NULL;
            break;
        case OPT_MAX_INFLIGHT:
            if (parse_number(optarg, 1, 1 << 22, &v) != 0) goto bad_number;
            cfg->max_inflight = (int)v;
            break;
        case OPT_HTTPS:
            if (parse_hostport(optarg, cfg->https_host, sizeof cfg->https_host, &cfg->https_port) !=
                0) {
                fprintf(stderr, "microservice: --https wants HOST:PORT, got '%s'\n", optarg);
                return -1;
            }
            https_given = true;
            break;
        case OPT_TLS_CERT:
            cfg->tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            cfg->tls_key = optarg;
            break;
        case OPT_HTTP_REDIRECT:
            cfg->http_redirect = true;
            break;
        case OPT_MAX_CONN_INFLIGHT:
            if (parse_number(optarg, 1, 100, &v) != 0) {
                fprintf(stderr,
                        "microservice: --max-conn-inflight wants 1 to 100 (h2o lets an HTTP/2 "
                        "client open at most 100 streams at a time), got '%s'\n",
                        optarg);
                return -1;
            }
            cfg->max_conn_inflight = (int)v;
            break;
        case OPT_MAX_LUA_MEMORY:
            if (parse_megabytes(optarg, "--max-lua-memory", "no limit", &cfg->max_lua_memory))
                return -1;
            break;
        case OPT_MAX_CALL_MEMORY:
            if (parse_megabytes(optarg, "--max-call-memory", "no bound", &cfg->max_call_memory))
                return -1;
            break;
        case OPT_AUTH_MAX_FAILURES:
            if (parse_number(optarg, 0, 1 << 20, &v) != 0) goto bad_number;
            cfg->auth_max_failures = (int)v;
            break;
        case OPT_AUTH_FAILURE_WINDOW:
            if (parse_number(optarg, 0.1, 86400, &cfg->auth_failure_window) != 0) goto bad_number;
            break;
        case OPT_AUTH_SIGNATURE_WINDOW:
            if (parse_number(optarg, 1, 86400, &cfg->auth_signature_window) != 0) goto bad_number;
            break;
        case OPT_HTTP_CLIENT_MAX:
            if (parse_number(optarg, 1, 100000, &v) != 0) goto bad_number;
            cfg->http_client_max = (int)v;
            break;
        case OPT_HTTP_CLIENT_QUEUE:
            if (parse_number(optarg, 0, 1 << 20, &v) != 0) goto bad_number;
            cfg->http_client_queue = (int)v;
            break;
        case OPT_PREFER_LOCAL:
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "microservice: --prefer-local wants on or off, got '%s'\n", optarg);
                return -1;
            }
            cfg->prefer_local = strcmp(optarg, "on") == 0;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            if (c >= OPT_NATS_AUTH && c < OPT_NATS_AUTH + NATS_AUTH_NOPTS) {
                nats_auth_set(&cfg->nats_auth, c - OPT_NATS_AUTH, optarg);
                break;
            }
            usage(stderr);
            return -1;
        }
        continue;
    bad_number:
        fprintf(stderr, "microservice: bad value '%s' for --%s\n", optarg, opts[c - OPT_HTTP].name);
        return -1;
    }
    if (optind < argc) cfg->services_dir = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "microservice: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (check_tls_args(cfg, https_given) != 0) return -1;
    if (check_call_timeouts(cfg, call_timeout_given) != 0) return -1;
    char err[512];
    if (nats_auth_check(&cfg->nats_auth, err, sizeof err) != 0) {
        fprintf(stderr, "microservice: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* OpenSSL must not free its globals at exit: nats_Close() (nats.c 3.4.1, with TLS) frees
     * OpenSSL's compression-method stack itself; since libcurl initialises libssl too, OpenSSL's
     * own exit handler then freed that stack a second time (a crash at exit, seen under ASan in
     * every runtime that used NATS TLS). The process ends right after: nothing is lost. */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    if (argc > 1 && strcmp(argv[1], "call") == 0) return command_call(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "list") == 0) return command_list(argc - 1, argv + 1);
    if (argc > 1 && (strcmp(argv[1], "test") == 0 || strcmp(argv[1], "eval") == 0 ||
                     strcmp(argv[1], "repl") == 0))
        return command_test(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "auth-secret") == 0)
        return command_auth_secret(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "auth-token") == 0)
        return command_auth_token(argc - 1, argv + 1);
    runtime_config cfg;
    runtime_config_defaults(&cfg);
    if (parse_args(argc, argv, &cfg) != 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    /* Replies of 100 kB and more are allocated and freed at every request; by default glibc
     * hands the top of the heap back to the kernel each time and faults it in again at the next
     * request (16% of the CPU in a get_things profile, see bench/README.md). Keep it. */
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    if (cfg.tls_cert) { /* a bad certificate stops the start, not each worker in a loop */
        SSL_CTX *tls = tls_server_context(cfg.tls_cert, cfg.tls_key);
        if (!tls) {
            log_error("runtime", "start-up failed");
            return 1;
        }
        SSL_CTX_free(tls);
    }
    if (cfg.auth_file && cfg.workers > 1) { /* the same for the auth file */
        struct auth *a;
        char err[512];
        if (auth_load(cfg.auth_file, &a, err, sizeof err) != 0) {
            log_error("runtime", "--auth %s", err);
            return 1;
        }
        auth_free(a);
    }
    if (cfg.workers > 1) return workers_run(&cfg);
    static runtime rt; /* big (loop, handles); lives for the whole process */
    if (runtime_init(&rt, &cfg) != 0) {
        log_error("runtime", "start-up failed");
        return 1;
    }
    return runtime_run(&rt);
}
