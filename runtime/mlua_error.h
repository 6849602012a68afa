/* mlua_error.h: the one protected-call path for Lua and the one error format (message with the
 * service's file:line first, then the traceback without the runtime's own frames). */
#ifndef MICROSERVICE_MLUA_ERROR_H
#define MICROSERVICE_MLUA_ERROR_H

#include <lua.h>

/* lua_pcall with mlua_traceback as the message handler: on failure the error text on top of L
 * carries the trimmed traceback (an application error value stays as it is). */
int mlua_pcall(lua_State *L, int nargs, int nresults);
/* The message handler (a lua_CFunction, also microservice.core.traceback(message [, level])):
 * returns the message with the trimmed traceback from level (default 1). */
int mlua_traceback(lua_State *L);
/* Pushes on L the error on top of co (a failed coroutine, or L itself) as text with co's trimmed
 * traceback from level. */
void mlua_push_traceback(lua_State *L, lua_State *co, int level);

#endif
