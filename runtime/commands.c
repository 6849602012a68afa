/* commands.c: owns the subcommands for service authors: `microservice call` (one RPC over NATS
 * from the shell), `microservice list` (the RPCs a services folder declares) and
 * `microservice test` (Lua test files run inside the runtime, see lualib/microservice_test.lua),
 * with `eval` (one chunk) and `repl` (chunks read from stdin) on the same runner.
 *
 * `call` is a short-lived client, so it uses nats.c the simple way (blocking connect and request,
 * no event loop); `test` runs a whole runtime without HTTP. */
#include "commands.h"

#include <getopt.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lualib.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "codec.h"
#include "log.h"
#include "nats_auth.h"
#include "mlua_api.h"
#include "mlua_error.h"
#include "nats_bridge.h"
#include "options.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "services.h"
#include "command_test_watch.h"

/* ---- call ---- */

static void call_usage(FILE *out)
{
    fprintf(out, "usage: microservice call <service>.<method> [ARGS...] [--kw name=value ...]\n"
                 "                         [--nats URL] [--timeout S] [--json] [NATS OPTIONS]\n"
                 "  ARGS and keyword values are JSON when they parse as JSON, else strings.\n"
                 "  Prints the reply [args, kwargs]; exits 1 on an RPC error (printed on stderr\n"
                 "  as `error: URI: message (code)`, then `args: [...]` when there are more than\n"
                 "  one and `kwargs: {...}` when there are any), 2 on a usage error.\n"
                 "NATS OPTIONS (as for the runtime):\n");
    options_usage(out, OPTION_NATS_AUTH);
}

/* A command-line word as a JSON value: itself if it parses, else a string. */
static json_t *word_value(const char *w)
{
    json_t *v = json_loads(w, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(w);
}

/* --kw name=value: kwargs[name] = the value as word_value reads it; -1 (said on stderr) if kv has
 * no name. */
static int add_kw(json_t *kwargs, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "microservice call: --kw wants name=value, got '%s'\n", kv);
        return -1;
    }
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
    json_object_set_new(kwargs, name, word_value(eq + 1));
    return 0;
}

static int print_error_reply(natsMsg *reply)
{
    const char *code = NULL, *text = NULL;
    natsMsgHeader_Get(reply, HDR_SERVICE_ERROR_CODE, &code);
    natsMsgHeader_Get(reply, HDR_SERVICE_ERROR, &text);
    json_t *body =
        json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
    const char *uri = json_string_value(json_object_get(body, "error"));
    const char *msg = json_string_value(json_array_get(json_object_get(body, "args"), 0));
    fprintf(stderr, "error: %s: %s (%s)\n", uri ? uri : URI_RUNTIME_ERROR,
            msg ? msg : (text ? text : "no message"), code ? code : "?");
    /* the rest of the error (its kwargs, further args) says which parameter, which row... */
    json_t *kwargs = json_object_get(body, "kwargs");
    json_t *args = json_object_get(body, "args");
    char *k = json_object_size(kwargs) ? json_dumps(kwargs, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *a = json_array_size(args) > 1 ? json_dumps(args, JSON_COMPACT) : NULL;
    if (a) fprintf(stderr, "args: %s\n", a);
    if (k) fprintf(stderr, "kwargs: %s\n", k);
    free(a);
    free(k);
    json_decref(body);
    return 1;
}

#define OPT_BASE 1000 /* getopt_long value of options[0] */

/* A row of the options table that `call` takes, named by a command-line word ("--nats"). */
static const option_row *call_option(const char *word)
{
    const option_row *o = strncmp(word, "--", 2) == 0 ? options_find(word + 2) : NULL;
    return o && (o->flags & OPTION_CALL) ? o : NULL;
}

int command_call(int argc, char **argv)
{
    struct option opts[OPTIONS_MAX + 5] = {
        {"kw", required_argument, NULL, 'k'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
    };
    options_getopt(opts + 4, OPTIONS_MAX, OPTION_CALL, OPT_BASE); /* --nats, NATS OPTIONS */
    runtime_config cfg; /* for its NATS options and their environment defaults */
    runtime_config_defaults(&cfg);
    char err[512];
    double timeout = 60;
    bool compact = false;
    json_t *args = json_array(), *kwargs = json_object();
    int c, rc = 2;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        const option_row *o = options_of_getopt(c, OPT_BASE);
        if (o) {
            if (options_set(&cfg, o, optarg) != 0) goto out;
            continue;
        }
        switch (c) {
        case 'k':
            if (add_kw(kwargs, optarg) != 0) goto out;
            break;
        case 't':
            timeout = atof(optarg);
            break;
        case 'j':
            compact = true;
            break;
        case 'h':
            call_usage(stdout);
            rc = 0;
            goto out;
        default:
            call_usage(stderr);
            goto out;
        }
    }
    /* the procedure, then positional arguments (options may come after them too) */
    const char *procedure = NULL;
    for (; optind < argc; optind++) {
        const option_row *o = call_option(argv[optind]);
        bool has_arg = o && o->kind != OPTION_FLAG;
        if (o && (!has_arg || optind + 1 < argc)) {
            if (options_set(&cfg, o, has_arg ? argv[++optind] : NULL) != 0) goto out;
        } else if (strcmp(argv[optind], "--kw") == 0 && optind + 1 < argc) {
            if (add_kw(kwargs, argv[++optind]) != 0) goto out;
        } else if (strcmp(argv[optind], "--json") == 0) {
            compact = true;
        } else if (strcmp(argv[optind], "--timeout") == 0 && optind + 1 < argc) {
            timeout = atof(argv[++optind]);
        } else if (!procedure) {
            procedure = argv[optind];
        } else {
            json_array_append_new(args, word_value(argv[optind]));
        }
    }
    if (!procedure || !strchr(procedure, '.') || timeout <= 0) {
        call_usage(stderr);
        goto out;
    }
    const char *url = cfg.nats_url;
    const nats_auth_config *auth = &cfg.nats_auth;
    if (nats_auth_check(auth, err, sizeof err) != 0) {
        fprintf(stderr, "microservice call: %s\n", err);
        goto out;
    }
    json_t *env_v = json_pack("[OO]", args, kwargs);
    char *body = json_dumps(env_v, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(env_v);

    natsConnection *nc = NULL;
    natsOptions *no = NULL;
    natsMsg *req = NULL, *reply = NULL;
    char ms[32];
    snprintf(ms, sizeof ms, "%.0f", timeout * 1000);
    char log_url[2048];
    nats_auth_redact(url, log_url, sizeof log_url);
    natsStatus st = natsOptions_Create(&no);
    if (st == NATS_OK && nats_auth_apply(no, url, auth, err, sizeof err) != 0) {
        fprintf(stderr, "microservice call: %s\n", err);
        rc = 2;
        goto done;
    }
    if (st == NATS_OK) st = natsOptions_SetTimeout(no, 2000);
    if (st == NATS_OK) st = nats_auth_connect(&nc, no, auth);
    if (st != NATS_OK) {
        natsStatus last = NATS_OK;
        const char *detail = nats_GetLastError(&last);
        fprintf(stderr, "error: %s: cannot connect to NATS at %s (%s%s%s)\n", URI_UNAVAILABLE,
                log_url, natsStatus_GetText(st), detail && detail[0] ? ": " : "",
                detail ? detail : "");
        rc = 1;
        goto done;
    }
    st = natsMsg_Create(&req, procedure, NULL, body, (int)strlen(body));
    if (st == NATS_OK) st = natsMsgHeader_Set(req, NB_HDR_TIMEOUT, ms);
    if (st == NATS_OK) st = natsConnection_RequestMsg(&reply, nc, req, (int64_t)(timeout * 1000));
    if (st == NATS_NO_RESPONDERS) {
        fprintf(stderr, "error: %s: no service answers %s\n", URI_NO_SUCH_PROCEDURE, procedure);
        rc = 1;
    } else if (st == NATS_TIMEOUT) {
        fprintf(stderr, "error: %s: no reply within %.3g s\n", URI_TIMEOUT, timeout);
        rc = 1;
    } else if (st != NATS_OK) {
        fprintf(stderr, "error: %s: %s\n", URI_UNAVAILABLE, natsStatus_GetText(st));
        rc = 1;
    } else if (natsMsgHeader_Get(reply, HDR_SERVICE_ERROR_CODE, &(const char *){NULL}) == NATS_OK) {
        rc = print_error_reply(reply);
    } else {
        json_t *v = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply),
                               JSON_DECODE_ANY, NULL);
        char *out = v ? json_dumps(v, (compact ? JSON_COMPACT : JSON_INDENT(2)) |
                                          JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY)
                      : NULL;
        if (out) {
            printf("%s\n", out);
            rc = 0;
        } else {
            fprintf(stderr, "error: %s: the reply is not JSON\n", URI_RUNTIME_ERROR);
            rc = 1;
        }
        free(out);
        json_decref(v);
    }
done:
    natsMsg_Destroy(reply);
    natsMsg_Destroy(req);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(no);
    /* not nats_Close(): its threads could still be unwinding when exit() runs the library's
     * destructors (a crash in natsLib_Release, about one `call` in 2,000 here) */
    nats_CloseAndWait(NATS_CLOSE_WAIT_MS);
    free(body);
out:
    json_decref(args);
    json_decref(kwargs);
    return rc;
}

/* ---- list ---- */

int command_list(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./services";
    if (argc > 2 || (argc > 1 && argv[1][0] == '-')) {
        fprintf(stderr,
                "usage: microservice list [SERVICES_DIR]\n"
                "  prints the RPCs the folder's scripts declare, with their parameters and\n"
                "  the types of their schemas; exits 1 when a script fails to load\n");
        return 2;
    }
    runtime_config cfg;
    runtime_config_defaults(&cfg);
    cfg.http_enabled = false;
    cfg.tls_cert = cfg.tls_key = NULL; /* no HTTPS either */
    cfg.watch = false;
    cfg.services_dir = dir;
    log_set_level(LOG_WARN);
    static runtime rt;
    cfg.nats_url = NULL; /* offline: the scripts are only read */
    cfg.no_hooks = true;
    if (runtime_init(&rt, &cfg) != 0) return 1;
    int n = services_print(rt.services, stdout);
    int load_errors = services_load_errors(rt.services);
    runtime_shutdown(&rt);
    runtime_run(&rt);
    if (load_errors > 0)
        fprintf(stderr, "microservice list: %d service script(s) of %s failed to load (above)\n",
                load_errors, dir);
    return n >= 0 && load_errors == 0 ? 0 : 1;
}

/* ---- test ---- */

static void test_usage(FILE *out)
{
    fprintf(
        out,
        "usage: " COMMAND_TEST_SYNOPSIS
        "  Runs Lua test files inside the runtime, with the services of DIR loaded: in-process\n"
        "  only, or also over NATS with --nats (or NATS_URL). See docs/api/testing.md.\n"
        "  FILES             test files; default: with --services DIR, DIR/../tests/*_test.lua\n"
        "                    and DIR/*_test.lua; without it, tests/services/*_test.lua\n"
        "  --services DIR    the services folder (default ./services); a script that fails\n"
        "                    to load fails the run before any test\n"
        "  --nats URL        also serve the services over NATS (online tests run)\n"
        "  --postgres URL    PostgreSQL for microservice.postgres (migrations applied)\n"
        "  --timeout S       default time a test may take (default 5)\n"
        "  --fail-on-skip    a skipped test fails the run (exit 1)\n"
        "  --log-level LEVEL runtime log level on stderr (default warn)\n"
        "  --watch           run again each time a .lua or .sql file is saved in the\n"
        "                    services folder or the test files' folders (until Ctrl-C)\n"
        "  Prints a report and `N passed, N failed, N skipped`; exits 1 if a test failed.\n"
        "NATS OPTIONS (as for the runtime):\n");
    options_usage(out, OPTION_NATS_AUTH);
}

typedef struct test_run {
    runtime *rt;
    bool fail_on_skip;
    bool eval; /* `microservice eval`: M.eval returns whether the code ran */
    int exit_code;
} test_run;

static void tests_done(task *t, enum task_end how, lua_State *co, int nres)
{
    test_run *tr = t->udata;
    if (how == TASK_OK && tr->eval) {
        tr->exit_code = nres >= 1 && lua_toboolean(co, -nres) ? 0 : 1;
    } else if (how == TASK_OK && nres >= 3) {
        int failed = (int)lua_tointeger(co, -nres + 1);
        int skipped = (int)lua_tointeger(co, -nres + 2);
        tr->exit_code = failed > 0 || (tr->fail_on_skip && skipped > 0) ? 1 : 0;
    } else {
        fprintf(stderr, "microservice test: the test runner failed: %s\n",
                how == TASK_CANCELLED ? "cancelled" : lua_tostring(co, -1));
        tr->exit_code = 2;
    }
    runtime_shutdown(tr->rt);
}

/* --watch: the same command without --watch, run again on every saved file (command_test_watch.c).
 * getopt has moved the options before the files (argv[optind..]). */
static int watch_tests(int argc, char **argv, const runtime_config *cfg, bool services_given)
{
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return 2;
    int n = 0, first_file = optind;
    for (int i = 0; i < argc; i++) {
        if (i < optind && strcmp(argv[i], "--watch") == 0) {
            first_file--;
            continue;
        }
        rest[n++] = argv[i];
    }
    int rc = command_test_watch(n, rest, cfg->services_dir, services_given, first_file);
    free(rest);
    return rc;
}

/* A service script failed to load (logged on stderr with its file:line, and its first line in
 * the report on stdout): the run fails at once, before any test, as one failure per script. */
static int services_failed(runtime *rt)
{
    int n = services_load_errors(rt->services);
    fprintf(stderr, "microservice test: %d service script(s) of %s failed to load (above)\n", n,
            rt->cfg.services_dir);
    printf("%s\n  FAIL (loading the services: %d script(s) failed, no test ran; the errors, "
           "with tracebacks on stderr:)\n",
           rt->cfg.services_dir, n);
    const char *msg;
    for (int i = 0; (msg = services_load_message(rt->services, i)) != NULL; i++)
        printf("    %s\n", msg);
    printf("0 passed, %d failed, 0 skipped\n", n);
    fflush(stdout);
    runtime_shutdown(rt);
    runtime_run(rt);
    return 1;
}

static void eval_usage(FILE *out)
{
    fprintf(out,
            "usage: " COMMAND_EVAL_SYNOPSIS
            "  Runs CODE (a Lua expression, or else a chunk) inside the runtime with the services\n"
            "  of DIR loaded (default ./services) and the globals of test files (call, mock,\n"
            "  assert_*, microservice; see docs/api/testing.md); prints each value it returns\n"
            "  (JSON when it encodes). Exits 1 on an error (printed on stderr).\n"
            "  --nats URL, --postgres URL, --log-level LEVEL and the NATS OPTIONS: as for test.\n");
}

static void repl_usage(FILE *out)
{
    fprintf(out,
            "usage: " COMMAND_REPL_SYNOPSIS
            "  Reads Lua from stdin, line by line, and runs each line as `eval` runs CODE (same\n"
            "  services, globals and options), printing what it returns; what a line defines\n"
            "  (globals, and a `local` at the start of a line) stays for the next lines; an\n"
            "  unfinished line continues on the next; an error is printed (stderr) and the repl\n"
            "  goes on. Ends at the end of stdin or on `.exit` (exit 0). Plain stdin: no line\n"
            "  editing or history (wrap it: `rlwrap microservice repl`); while it waits for a\n"
            "  line, the runtime does nothing else (the services answer nothing meanwhile).\n"
            "  --nats URL, --postgres URL, --log-level LEVEL and the NATS OPTIONS: as for test.\n");
}

/* The --help text of test, eval or repl (argv[0]). */
static void command_usage(const char *name, FILE *out)
{
    if (strcmp(name, "eval") == 0)
        eval_usage(out);
    else if (strcmp(name, "repl") == 0)
        repl_usage(out);
    else
        test_usage(out);
}

int command_test(int argc, char **argv)
{
    struct option opts[OPTIONS_MAX + 9] = {
        {"services", required_argument, NULL, 's'},  {"timeout", required_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
        {"fail-on-skip", no_argument, NULL, 'S'},    {"watch", no_argument, NULL, 'w'},
    };
    options_getopt(opts + 6, OPTIONS_MAX, OPTION_TEST, OPT_BASE); /* --nats, --postgres, NATS */
    const option_row *nats = options_find("nats");
    runtime_config cfg;
    runtime_config_defaults(&cfg);
    cfg.http_enabled = false;
    cfg.tls_cert = cfg.tls_key = NULL; /* no HTTPS either */
    cfg.watch = false;
    cfg.drain_timeout = 0; /* when the runner returns, what is left (a timed-out test) goes */
    const char *env = getenv("NATS_URL");
    bool online = env && env[0];
    double timeout = 5;
    bool fail_on_skip = false, services_given = false, watch = false;
    bool repl = strcmp(argv[0], "repl") == 0;
    bool eval = repl || strcmp(argv[0], "eval") == 0; /* repl: eval line by line */
    log_set_level(LOG_WARN);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const option_row *o = options_of_getopt(c, OPT_BASE);
        if (o) {
            if (options_set(&cfg, o, optarg) != 0) return 2;
            online |= o == nats;
            continue;
        }
        switch (c) {
        case 's':
            cfg.services_dir = optarg;
            services_given = true;
            break;
        case 't':
            timeout = atof(optarg);
            break;
        case 'S':
            fail_on_skip = true;
            break;
        case 'w':
            watch = true;
            break;
        case 'l': {
            int level = log_level_parse(optarg);
            if (level >= 0) log_set_level(level);
            break;
        }
        case 'h':
            command_usage(argv[0], stdout);
            return 0;
        default:
            command_usage(argv[0], stderr);
            return 2;
        }
    }
    char err[512];
    if (nats_auth_check(&cfg.nats_auth, err, sizeof err) != 0) {
        fprintf(stderr, "microservice %s: %s\n", argv[0], err);
        return 2;
    }
    if (eval && (optind != argc - (repl ? 0 : 1) || watch || fail_on_skip)) {
        command_usage(argv[0], stderr);
        return 2;
    }
    if (watch) return watch_tests(argc, argv, &cfg, services_given);
    static runtime rt;
    if (!online) cfg.nats_url = NULL; /* the unit level: no bus */
    /* the integration level: the services under test answer only this run, never a deployment
     * serving the same procedures on the same bus (nor does a deployment get its calls) */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "_MS_TEST.%ld%08lx.", (long)getpid(),
             (unsigned long)(uv_hrtime() & 0xffffffffu));
    if (online) cfg.rpc_subject_prefix = prefix;
    if (runtime_init(&rt, &cfg) != 0) return 2;
    if (services_load_errors(rt.services) > 0) return services_failed(&rt);
    test_run tr = {.rt = &rt, .fail_on_skip = fail_on_skip, .eval = eval, .exit_code = 2};
    task *t = sched_task_new(rt.sched, tests_done, &tr, "test");
    lua_State *co = t->co;
    lua_getglobal(co, "require");
    lua_pushstring(co, "microservice.test");
    if (mlua_pcall(co, 1, 1) != 0) {
        fprintf(stderr, "microservice test: %s\n", lua_tostring(co, -1));
        sched_task_discard(t);
        return 2;
    }
    lua_getfield(co, -1, repl ? "repl" : eval ? "eval" : "main");
    lua_remove(co, -2);
    if (repl) {
        lua_pushnil(co); /* M.repl(_, opts): reads its code from stdin */
    } else if (eval) {
        lua_pushstring(co, argv[optind]);
    } else {
        lua_newtable(co);
        for (int i = optind; i < argc; i++) {
            lua_pushstring(co, argv[i]);
            lua_rawseti(co, -2, i - optind + 1);
        }
    }
    lua_createtable(co, 0, 3);
    if (services_given) {
        lua_pushstring(co, cfg.services_dir);
        lua_setfield(co, -2, "services");
    }
    lua_pushnumber(co, timeout);
    lua_setfield(co, -2, "timeout");
    if (online) {
        lua_pushstring(co, prefix);
        lua_setfield(co, -2, "rpc_prefix");
    }
    lua_pushboolean(co, online);
    lua_setfield(co, -2, "online");
    sched_start_soon(t, 2);
    runtime_run(&rt);
    return tr.exit_code;
}

/* ---- auth-secret, auth-token ---- */

int command_auth_secret(int argc, char **argv)
{
    int iterations = 10000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iterations = atoi(argv[++i]);
        } else {
            fprintf(i == 1 && strcmp(argv[i], "--help") == 0 ? stdout : stderr,
                    "usage: microservice auth-secret [--iterations N]  (password on stdin)\n"
                    "Prints the salt, iterations, keylen and key to put in a user of the auth "
                    "file.\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (iterations < 1 || iterations > 10000000) {
        fprintf(stderr, "microservice auth-secret: --iterations is 1 .. 10000000\n");
        return 2;
    }
    char password[1024];
    if (!fgets(password, sizeof password, stdin)) {
        fprintf(stderr, "microservice auth-secret: no password on stdin\n");
        return 2;
    }
    password[strcspn(password, "\r\n")] = '\0';
    if (!password[0]) {
        fprintf(stderr, "microservice auth-secret: the password is empty\n");
        return 2;
    }
    char *text = auth_make_secret(password, iterations);
    memset(password, 0, sizeof password);
    if (!text) {
        fprintf(stderr, "microservice auth-secret: cannot derive the key\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int command_auth_token(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(strcmp(argv[1], "--help") == 0 ? stdout : stderr,
                "usage: microservice auth-token\nPrints a new bearer token (give it to the "
                "client) and its stored form (put it in a user's \"tokens\").\n");
        return strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    char *text = auth_make_token();
    if (!text) return 1;
    printf("%s\n", text);
    free(text);
    return 0;
}
