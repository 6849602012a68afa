/* commands.h: the subcommands `microservice call`, `list` and `test` (see commands.c). Each takes
 * the arguments after the subcommand's name (argv[0] is the subcommand) and returns the exit code.
 */
#ifndef MICROSERVICE_COMMANDS_H
#define MICROSERVICE_COMMANDS_H

int command_call(int argc, char **argv);
int command_list(int argc, char **argv);
int command_test(int argc, char **argv);
/* auth-secret: a salted secret for the auth file from a password on stdin; auth-token: a new
 * bearer token and the form the auth file stores. */
int command_auth_secret(int argc, char **argv);
int command_auth_token(int argc, char **argv);

#endif
