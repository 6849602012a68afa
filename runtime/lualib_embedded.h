/* lualib_embedded.h: the Lua modules compiled into the program (generated from lualib/). */
#ifndef MICROSERVICE_LUALIB_EMBEDDED_H
#define MICROSERVICE_LUALIB_EMBEDDED_H
#include <stddef.h>

struct lualib_module {
    const char *name;      /* module name for require */
    const char *chunkname; /* "@lualib/<file>.lua", so tracebacks name the source */
    const char *source;
    size_t len;
};

extern const struct lualib_module lualib_modules[];

#endif
