/* rpc_binding.c: owns parameter binding. Positional args fill the parameters in order (self and a
 * trailing kwargs are skipped), keyword args fill them by name; a parameter named self gets the
 * service table; a last parameter named kwargs gets the keywords no parameter took; a vararg
 * function takes the extra positionals. Unknown keywords, a parameter given twice and too many
 * positionals are refused with a message that names the parameter and the procedure. */
#include "rpc_binding.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rpc_binding_free(rpc_binding *b)
{
    for (int i = 0; i < b->nparams; i++)
        free(b->names[i]);
    free(b->names);
    memset(b, 0, sizeof *b);
}

int rpc_binding_init(rpc_binding *b, lua_State *L, int idx, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    b->self_pos = b->kwargs_pos = -1;
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    lua_getfield(L, idx, "vararg");
    b->vararg = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "params");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        snprintf(err, errlen, "rpc value has no params table");
        return -1;
    }
    int n = (int)lua_objlen(L, -1);
    if (n > RPC_MAX_PARAMS) n = RPC_MAX_PARAMS;
    b->names = calloc(n ? n : 1, sizeof *b->names);
    for (int i = 0; b->names && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        const char *name = lua_tostring(L, -1);
        b->names[i] = strdup(name ? name : "?");
        lua_pop(L, 1);
        if (!b->names[i]) break;
        b->nparams = i + 1;
        if (strcmp(b->names[i], "self") == 0 && b->self_pos < 0) b->self_pos = i;
    }
    lua_pop(L, 1);
    if (!b->names || b->nparams != n) {
        rpc_binding_free(b);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (n > 0 && strcmp(b->names[n - 1], "kwargs") == 0 && b->self_pos != n - 1)
        b->kwargs_pos = n - 1;
    return 0;
}

static bool is_special(const rpc_binding *b, int i)
{
    return i == b->self_pos || i == b->kwargs_pos;
}

/* Names are compared with their length: a keyword with a NUL inside matches no parameter. */
static int find_param(const rpc_binding *b, const char *name, size_t len)
{
    for (int i = 0; i < b->nparams; i++)
        if (!is_special(b, i) && strlen(b->names[i]) == len && memcmp(b->names[i], name, len) == 0)
            return i;
    return -1;
}

static int find_key(const rpc_binding *b, lua_State *co, int idx)
{
    size_t len;
    const char *name = lua_tolstring(co, idx, &len);
    return find_param(b, name, len);
}

static int fillable_count(const rpc_binding *b)
{
    int n = 0;
    for (int i = 0; i < b->nparams; i++)
        n += !is_special(b, i);
    return n;
}

/* Pushes a table of the keywords that no parameter took. */
static void push_leftover(const rpc_binding *b, lua_State *co, int kwargs_idx)
{
    lua_newtable(co);
    lua_pushnil(co);
    while (lua_next(co, kwargs_idx)) {
        if (lua_type(co, -2) == LUA_TSTRING && find_key(b, co, -2) >= 0) {
            lua_pop(co, 1);
            continue;
        }
        lua_pushvalue(co, -2);
        lua_insert(co, -2);
        lua_rawset(co, -4);
    }
}

int rpc_binding_push(const rpc_binding *b, lua_State *co, int service_ref, int args_idx,
                     int kwargs_idx, const char *procedure, char *err, size_t errlen)
{
    int pos_of[RPC_MAX_PARAMS]; /* 1-based index into args, 0 = not given by position */
    char by_kw[RPC_MAX_PARAMS];
    memset(pos_of, 0, sizeof(int) * (size_t)b->nparams);
    memset(by_kw, 0, (size_t)b->nparams);

    int nargs = (int)lua_objlen(co, args_idx);
    int next_arg = 1;
    for (int i = 0; i < b->nparams && next_arg <= nargs; i++)
        if (!is_special(b, i)) pos_of[i] = next_arg++;
    int extra = nargs - next_arg + 1;
    if (extra > 0 && !b->vararg) {
        snprintf(err, errlen, "too many positional arguments for %s: it takes %d, got %d",
                 procedure, fillable_count(b), nargs);
        return -1;
    }

    lua_pushnil(co);
    while (lua_next(co, kwargs_idx)) {
        lua_pop(co, 1);
        if (lua_type(co, -1) != LUA_TSTRING) {
            lua_pop(co, 1);
            snprintf(err, errlen, "keyword argument names of %s must be strings", procedure);
            return -1;
        }
        const char *key = lua_tostring(co, -1);
        int i = find_key(b, co, -1);
        if (i < 0 && b->kwargs_pos < 0) {
            snprintf(err, errlen, "unknown keyword argument '%s' for %s", key, procedure);
            lua_pop(co, 1);
            return -1;
        }
        if (i >= 0 && pos_of[i]) {
            snprintf(err, errlen, "parameter '%s' of %s given both by position and by keyword", key,
                     procedure);
            lua_pop(co, 1);
            return -1;
        }
        if (i >= 0) by_kw[i] = 1;
    }

    if (!lua_checkstack(co, b->nparams + (extra > 0 ? extra : 0) + 8)) {
        snprintf(err, errlen, "too many arguments for %s", procedure);
        return -1;
    }
    for (int i = 0; i < b->nparams; i++) {
        if (i == b->self_pos)
            lua_rawgeti(co, LUA_REGISTRYINDEX, service_ref);
        else if (i == b->kwargs_pos)
            push_leftover(b, co, kwargs_idx);
        else if (pos_of[i])
            lua_rawgeti(co, args_idx, pos_of[i]);
        else if (by_kw[i])
            lua_getfield(co, kwargs_idx, b->names[i]);
        else
            lua_pushnil(co);
    }
    for (int k = next_arg; k <= nargs; k++)
        lua_rawgeti(co, args_idx, k);
    return b->nparams + (extra > 0 ? extra : 0);
}
