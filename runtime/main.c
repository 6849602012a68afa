/* main.c: owns the process start: the subcommand, the command line read through the options
 * table (options.c), the checks across options, then one runtime or the workers. */
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
#include "options.h"
#include "runtime.h"
#include "http_tls.h"
#include "workers.h"

static void usage(FILE *out)
{
    fputs("usage: microservice", out);
    options_synopsis(out, OPTION_RUNTIME, 19);
    fputs(" [SERVICES_DIR]\n\n", out);
    options_usage(out, OPTION_RUNTIME);
    fputs("  SERVICES_DIR       folder of *.lua service scripts (default ./services)\n"
          "\n"
          "       microservice call <service>.<method> [ARGS...] [--kw name=value ...]\n"
          "       microservice list [SERVICES_DIR]\n"
          "       " COMMAND_TEST_SYNOPSIS "       " COMMAND_EVAL_SYNOPSIS
          "       " COMMAND_REPL_SYNOPSIS
          "       microservice auth-secret [--iterations N]   (reads a password on stdin)\n"
          "       microservice auth-token\n"
          "  (each with --help)\n",
          out);
}

/* The cert and the key come together (TLS_CERT and TLS_KEY stand in for absent flags). */
static int check_tls_args(runtime_config *cfg, bool https_given)
{
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

#define OPT_BASE 1000 /* getopt_long value of options[0] */

static int parse_args(int argc, char **argv, runtime_config *cfg)
{
    struct option opts[OPTIONS_MAX + 2];
    int n = options_getopt(opts, OPTIONS_MAX, OPTION_RUNTIME, OPT_BASE);
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n] = (struct option){NULL, 0, NULL, 0};
    const option_row *https = options_find("https"), *call_timeout = options_find("call-timeout");
    bool https_given = false, call_timeout_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const option_row *o = options_of_getopt(c, OPT_BASE);
        if (o) {
            if (options_set(cfg, o, optarg) != 0) return -1;
            https_given |= o == https;
            call_timeout_given |= o == call_timeout;
            continue;
        }
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        usage(stderr);
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
        SSL_CTX *tls = http_tls_server_context(cfg.tls_cert, cfg.tls_key);
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
