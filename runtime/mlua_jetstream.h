/* mlua_jetstream.h: the JetStream functions of microservice.core (see mlua_jetstream.c). */
#ifndef MICROSERVICE_MLUA_JETSTREAM_H
#define MICROSERVICE_MLUA_JETSTREAM_H

#include <lua.h>

/* Adds js_request, js_publish and the rest to the table on top of L. */
void mlua_jetstream_register(lua_State *L);

#endif
