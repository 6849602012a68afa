/* commands.h: the subcommands `microservice call`, `list` and `test` (see commands.c). Each takes
 * the arguments after the subcommand's name (argv[0] is the subcommand) and returns the exit code.
 */
#ifndef MICROSERVICE_COMMANDS_H
#define MICROSERVICE_COMMANDS_H

/* The options of `microservice test`, shown by its --help and by the main --help. */
#define COMMAND_TEST_SYNOPSIS                                                                      \
    "microservice test [FILES...] [--services DIR] [--nats URL] [--postgres URL]\n"                \
    "                         [--timeout S] [--fail-on-skip] [--watch] [--log-level LEVEL]\n"      \
    "                         [NATS OPTIONS as for `call`: --nats-user ... --nats-creds FILE]\n"

#define COMMAND_EVAL_SYNOPSIS                                                                      \
    "microservice eval CODE [--services DIR] [--nats URL] [--postgres URL] [--log-level LEVEL]\n"

#define COMMAND_REPL_SYNOPSIS                                                                      \
    "microservice repl [--services DIR] [--nats URL] [--postgres URL] [--log-level LEVEL]\n"

int command_call(int argc, char **argv);
int command_list(int argc, char **argv);
/* test, eval (argv[0] "eval": one chunk of Lua instead of test files) and repl (argv[0] "repl":
 * chunks read from stdin) */
int command_test(int argc, char **argv);
/* auth-secret: a salted secret for the auth file from a password on stdin; auth-token: a new
 * bearer token and the form the auth file stores. */
int command_auth_secret(int argc, char **argv);
int command_auth_token(int argc, char **argv);

#endif
