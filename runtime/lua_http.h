/* lua_http.h: the http_request function of microservice.core (see lua_http.c). */
#ifndef MICROSERVICE_LUA_HTTP_H
#define MICROSERVICE_LUA_HTTP_H

#include <lua.h>

/* Adds http_request to the table on top of L. */
void lua_http_register(lua_State *L);

#endif
