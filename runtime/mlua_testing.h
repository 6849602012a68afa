/* mlua_testing.h: the parts of microservice.core that the test runner
 * (lualib/microservice_test.lua) needs and services do not: see mlua_testing.c. */
#ifndef MICROSERVICE_MLUA_TESTING_H
#define MICROSERVICE_MLUA_TESTING_H

#include <lua.h>

/* Adds the test functions to the table on top of L (microservice.core). */
void mlua_testing_register(lua_State *L);

#endif
