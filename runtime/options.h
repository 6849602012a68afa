/* options.h: the command-line options of the runtime as one table (as Redis's config.c): each row
 * is one flag with its kind, the runtime_config field it sets, its bounds, its default, the
 * environment variable that stands in for it and its help. The defaults, the environment lookup,
 * the getopt_long entries, the value parsing and its error messages and the usage text are all
 * made from the rows; `call` and `test` take the rows they share with the runtime from here. */
#ifndef MICROSERVICE_OPTIONS_H
#define MICROSERVICE_OPTIONS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "runtime.h"

enum option_kind {
    OPTION_STRING,    /* const char *: the argument itself */
    OPTION_FLAG,      /* bool set to true; takes no argument */
    OPTION_INT,       /* int in [min, max] */
    OPTION_SIZE,      /* size_t in [min, max] */
    OPTION_DOUBLE,    /* double in [min, max] (seconds) */
    OPTION_MEGABYTES, /* size_t: bytes, given in megabytes in [min, max] */
    OPTION_CUSTOM,    /* the row's parse function */
};

/* Which commands take a row (option_row.flags), and how it reads. */
enum {
    OPTION_RUNTIME = 1 << 0,       /* `microservice [OPTIONS] [SERVICES_DIR]` */
    OPTION_CALL = 1 << 1,          /* `microservice call` */
    OPTION_TEST = 1 << 2,          /* `microservice test`, `eval`, `repl` */
    OPTION_NATS_AUTH = 1 << 3,     /* listed under "NATS OPTIONS" in the help of call and test */
    OPTION_EMPTY_IS_NULL = 1 << 4, /* a string: "" (flag or environment) means unset */
};

typedef struct option_row option_row;
struct option_row {
    const char *name; /* the flag without "--" */
    enum option_kind kind;
    size_t offset;       /* of the field in runtime_config */
    double min, max;     /* numeric kinds */
    double def;          /* default of the numeric kinds; OPTION_MEGABYTES < 0: SIZE_MAX */
    const char *def_str; /* default of a string; of a custom row: parsed at start */
    const char *env;     /* a variable that, set and not empty, replaces the default */
    const char *arg;     /* the argument in the usage ("N", "FILE"); NULL: none (a flag) */
    unsigned flags;   /* the commands that take it (OPTION_RUNTIME | ...), OPTION_EMPTY_IS_NULL */
    const char *help; /* the usage text; "\n" starts an indented line */
    /* the message after "microservice: --NAME " for a bad value (one %s: the value); NULL:
     * "microservice: bad value '%s' for --NAME" */
    const char *bad;
    int (*parse)(runtime_config *cfg, const option_row *o, const char *arg); /* OPTION_CUSTOM */
};

#define OPTIONS_MAX 128 /* rows the table may grow to (getopt arrays are sized by it) */

extern const option_row options[];
extern const int options_count;

/* Every row's default, replaced by its environment variable when that is set. */
void options_defaults(runtime_config *cfg);
/* The row of a flag name (without "--"), or NULL. */
const option_row *options_find(const char *name);
/* Sets o's field from arg (NULL for a flag). 0, or -1 after saying on stderr what it wants. */
int options_set(runtime_config *cfg, const option_row *o, const char *arg);
/* Writes the getopt_long entries of the rows of `commands` into out (at most max); the entry of
 * options[i] has the value base + i. Returns how many. */
int options_getopt(struct option *out, int max, unsigned commands, int base);
/* The row of a getopt_long value made by options_getopt with this base, or NULL. */
const option_row *options_of_getopt(int val, int base);
/* "[--name ARG] ..." of the rows of `commands`, wrapped at 100 columns, each line after the first
 * indented by indent spaces. */
void options_synopsis(FILE *out, unsigned commands, int indent);
/* One entry per row of `commands`: "  --name ARG", then its help in a column. */
void options_usage(FILE *out, unsigned commands);

#endif
