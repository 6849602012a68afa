/* mlua_postgres.h: the pg_* functions of microservice.core (see mlua_postgres.c). */
#ifndef MICROSERVICE_MLUA_POSTGRES_H
#define MICROSERVICE_MLUA_POSTGRES_H

#include <lua.h>

/* Adds pg_query, pg_reserve, pg_release, pg_state and pg_error_mt to the table on top of L. */
void mlua_postgres_register(lua_State *L);

#endif
