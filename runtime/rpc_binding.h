/* rpc_binding.h: binds an RPC's [args, kwargs] to the parameters of its Lua function, by position
 * and by name, as the contract says (self, a trailing kwargs, varargs). */
#ifndef MICROSERVICE_RPC_BINDING_H
#define MICROSERVICE_RPC_BINDING_H

#include <stdbool.h>
#include <stddef.h>
#include <lua.h>

#define RPC_MAX_PARAMS 200 /* LuaJIT's own limit on locals */

typedef struct rpc_binding {
    int nparams;    /* named parameters, varargs excluded */
    char **names;   /* nparams names, owned */
    int self_pos;   /* index of the parameter named self, or -1 */
    int kwargs_pos; /* index of a last parameter named kwargs, or -1 */
    bool vararg;
} rpc_binding;

/* Reads the rpc value at idx (fields params = {names...} and vararg = bool). 0 or -1 with err. */
int rpc_binding_init(rpc_binding *b, lua_State *L, int idx, char *err, size_t errlen);
void rpc_binding_free(rpc_binding *b);

/* Pushes the arguments for a call on co: args_idx is an array table, kwargs_idx a table (absolute
 * indexes); service_ref is the registry reference of the service table (for self). Returns how
 * many values were pushed, or -1 with a message naming the parameter and the procedure. */
int rpc_binding_push(const rpc_binding *b, lua_State *co, int service_ref, int args_idx,
                     int kwargs_idx, const char *procedure, char *err, size_t errlen);

#endif
