/* lua_postgres.h: the pg_* functions of microservice.core (see lua_postgres.c). */
#ifndef MICROSERVICE_LUA_POSTGRES_H
#define MICROSERVICE_LUA_POSTGRES_H

#include <lua.h>

/* Adds pg_query, pg_reserve, pg_release, pg_state and pg_error_mt to the table on top of L. */
void lua_postgres_register(lua_State *L);

#endif
