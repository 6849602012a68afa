/* mlua_http.h: the http_request function of microservice.core (see mlua_http.c). */
#ifndef MICROSERVICE_MLUA_HTTP_H
#define MICROSERVICE_MLUA_HTTP_H

#include <lua.h>

/* Adds http_request to the table on top of L. */
void mlua_http_register(lua_State *L);

#endif
