/* mlua_api.h: the Lua state of the runtime and the C functions behind require "microservice"
 * (the module microservice.core, wrapped by lualib/microservice.lua). */
#ifndef MICROSERVICE_MLUA_API_H
#define MICROSERVICE_MLUA_API_H

#include <stdbool.h>
#include <lua.h>

#include "runtime.h"

#define MS_ERROR_MT "microservice.error" /* metatable of microservice.error(...) values */
#define MS_RPC_MT "microservice.rpc"     /* metatable of rpc(fn) values */

/* Creates the Lua state: standard libraries, codec, cjson and lualib in package.preload. */
lua_State *mlua_api_new_state(runtime *rt);
/* Is the value at idx a table with the registry's metatable mt (MS_ERROR_MT, MS_RPC_MT)? */
bool mlua_api_is_table_of(lua_State *L, int idx, const char *mt);
/* Is the value at idx an application error (created by microservice.error or a failed call)? */
bool mlua_api_is_app_error(lua_State *L, int idx);
/* Pushes an application error value {uri=, args={message}, kwargs={}, code=} with the code the
 * contract gives uri (rpc_error_code). */
void mlua_api_push_error(lua_State *L, const char *uri, const char *message);
/* The same with the code given (an error reply's Nats-Service-Error-Code). */
void mlua_api_push_error_code(lua_State *L, const char *uri, const char *message, int code);
/* The timeout of a waiting operation that was given none: --call-timeout, or the current call's
 * time left (context().timeout_left) when that is less. */
double mlua_api_default_timeout(lua_State *L);
/* The runtime that owns L (stored in the registry). */
runtime *mlua_api_runtime(lua_State *L);

#endif
