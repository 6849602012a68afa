/* lua_jetstream.h: the JetStream functions of microservice.core (see lua_jetstream.c). */
#ifndef MICROSERVICE_LUA_JETSTREAM_H
#define MICROSERVICE_LUA_JETSTREAM_H

#include <lua.h>

/* Adds js_request, js_publish and the rest to the table on top of L. */
void lua_jetstream_register(lua_State *L);

#endif
