/* command_test_watch.h: `microservice test --watch` (see command_test_watch.c). */
#ifndef MICROSERVICE_COMMAND_TEST_WATCH_H
#define MICROSERVICE_COMMAND_TEST_WATCH_H

#include <stdbool.h>

/* Runs `microservice test` with argv (argv[0] is "test", --watch left out) in a child process,
 * then again each time a .lua or .sql file changes in the services folder or in the folders of
 * the test files; returns only on an error (exit code 2). */
int command_test_watch(int argc, char **argv, const char *services_dir, bool services_given,
                       int first_file);

#endif
