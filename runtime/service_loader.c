/* service_loader.c: owns the loading of service scripts: running a script (its errors logged and
 * kept for `microservice test`), a version taking over from the previous one once its started
 * function returns, removing a script, loading a directory, and what each script's table says
 * about its service (name, version, description, metadata) for the NATS service API.
 *
 * Reloading a script (service_watch.c decides when): the new version runs first; if it fails, the
 * old one keeps serving. Otherwise each RPC it declares takes the new code (calls in flight keep
 * the function they started with, which stays on their coroutine's stack), new RPCs are
 * subscribed, and RPCs it no longer declares are retired: their subscription drains at once and
 * the entry is freed when its last call ends. Subscriptions the old version made while loading are
 * removed. */
#include <dirent.h>
#include <sys/time.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "mlua_api.h"
#include "mlua_error.h"
#include "nats_bridge.h"
#include "rpc_binding.h"
#include "rpc_error.h"
#include "scheduler.h"
#include "service_hooks.h"
#include "service_internal.h"
#include "services.h"
#include "timers.h"

void service_meta_free(service_meta *m)
{
    free(m->file);
    free(m->name);
    free(m->version);
    free(m->description);
    free(m->metadata_json);
    free(m);
}

static void meta_remove(struct services *s, const char *file)
{
    for (service_meta **p = &s->metas; *p; p = &(*p)->next) {
        if (strcmp((*p)->file, file) == 0) {
            service_meta *m = *p;
            *p = m->next;
            luaL_unref(s->rt->L, LUA_REGISTRYINDEX, m->svc_ref);
            service_meta_free(m);
            return;
        }
    }
}

static char *field_string(lua_State *L, int idx, const char *key, const char *fallback)
{
    lua_getfield(L, idx, key);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : fallback;
    char *copy = strdup(v);
    lua_pop(L, 1);
    return copy;
}

/* Records (or refreshes) the service table at svc declared by file. Returns the reference of
 * the table it replaces (LUA_NOREF when none), for its stopped function. */
static int meta_update(struct services *s, lua_State *L, int svc, const char *file)
{
    service_meta *old = NULL;
    for (service_meta *m = s->metas; m; m = m->next)
        if (strcmp(m->file, file) == 0) old = m;
    int old_ref = old ? old->svc_ref : LUA_NOREF;
    if (old) old->svc_ref = LUA_NOREF;
    service_meta *m = calloc(1, sizeof *m);
    if (!m) return old_ref;
    lua_pushvalue(L, svc);
    m->svc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->file = strdup(file);
    m->name = field_string(L, svc, "name", "");
    m->version = field_string(L, svc, "version", "0.0.0");
    m->description = field_string(L, svc, "description", "");
    lua_getfield(L, svc, "metadata");
    codec_buf *buf = services_scratch(s);
    codec_error err;
    if (lua_istable(L, -1) && codec_encode(L, -1, buf, 8, &err) == 0 && buf->len &&
        buf->data[0] == '{')
        m->metadata_json = strndup(buf->data, buf->len);
    else
        m->metadata_json = strdup("{}");
    lua_pop(L, 1);
    if (old) {
        memcpy(m->id, old->id, sizeof m->id);
        m->started = old->started;
        meta_remove(s, file);
    } else {
        static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        unsigned char rnd[22];
        if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0) memset(rnd, 7, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            m->id[i] = digits[rnd[i] % 36];
        m->id[22] = '\0';
        struct timeval tv;
        gettimeofday(&tv, NULL);
        m->started = (double)tv.tv_sec + tv.tv_usec / 1e6;
    }
    m->next = s->metas;
    s->metas = m;
    return old_ref;
}

const char *services_loading(struct services *s, unsigned *gen)
{
    *gen = s->load_gen;
    return s->loading_file;
}

int services_starting(struct services *s)
{
    int n = 0;
    for (pending_load *p = s->pending; p; p = p->next)
        n++;
    return n;
}

int services_startup_pending(struct services *s)
{
    int n = 0;
    for (pending_load *p = s->pending; p; p = p->next)
        n += p->startup;
    return n;
}

int services_load_errors(struct services *s)
{
    return s->load_errors;
}

/* Keeps the first line of a load error (bounded: the first LOAD_MESSAGES_MAX). */
static void keep_load_message(struct services *s, const char *msg)
{
    if (s->nload_messages >= LOAD_MESSAGES_MAX || !msg) return;
    size_t len = strcspn(msg, "\n");
    char *copy = strndup(msg, len);
    if (copy) s->load_messages[s->nload_messages++] = copy;
}

const char *services_load_message(struct services *s, int i)
{
    return i >= 0 && i < s->nload_messages ? s->load_messages[i] : NULL;
}

static bool valid_service_name(const char *name)
{
    if (!name[0] || name[0] == '.' || name[strlen(name) - 1] == '.') return false;
    return strpbrk(name, " \t\r\n*>") == NULL;
}

/* Removes the subscriptions and timers file made while loading: those of load gen (same_gen)
 * or those of every other load. */
static void drop_load_subs(struct services *s, const char *file, unsigned gen, bool same_gen)
{
    for (service_sub *ls = s->subs, *next; ls; ls = next) {
        next = ls->next;
        if (ls->unsubscribed || !ls->file || strcmp(ls->file, file) != 0) continue;
        if ((ls->load_gen == gen) == same_gen) service_unsubscribe_entry(s, ls);
    }
    timers_drop_file(s->rt->timers, file, gen, same_gen);
}

/* Runs the stopped function of the service table ref (if it has one) and lets go of the ref. */
void service_run_stopped(struct services *s, int ref)
{
    lua_State *L = s->rt->L;
    if (s->rt->cfg.no_hooks) luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (ref == LUA_NOREF || s->rt->cfg.no_hooks) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    service_hook_run(s->rt, L, lua_gettop(L), "stopped", s->rt->cfg.drain_timeout, NULL, NULL);
    lua_pop(L, 1);
}

/* A newer version of path is loading, or path is gone: what still waits on started is dropped. */
static void supersede_pending(struct services *s, const char *path)
{
    for (pending_load *p = s->pending; p; p = p->next)
        if (strcmp(p->path, path) == 0) p->superseded = true;
}

/* Runs the script; on success returns with its table on top of L (and 0). */
static int run_script(struct services *s, const char *path)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    if (luaL_loadfile(L, path) != 0) {
        log_error(TAG, "cannot load %s", lua_tostring(L, -1));
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    s->loading_file = path;
    int rc = mlua_pcall(L, 0, 1);
    s->loading_file = NULL;
    if (rc != 0) {
        log_error(TAG, "%s failed while loading: %s", path, lua_tostring(L, -1));
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_getfield(L, -1, "name");
    bool ok = lua_istable(L, -2) && lua_type(L, -1) == LUA_TSTRING &&
              valid_service_name(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!ok) {
        log_error(TAG,
                  "%s must return a table with a name (a NATS subject token, e.g. "
                  "{ name = \"greeting_service\" }); the previous version, if any, still serves",
                  path);
        lua_pushfstring(L, "%s must return a table with a name", path);
        keep_load_message(s, lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    return 0;
}

/* The version at svc (loaded as gen) takes over: its RPCs are declared, the previous version's
 * are retired and its stopped function runs. Returns the number of RPCs. */
static int finish_load(struct services *s, int svc, const char *path, unsigned gen, bool reload)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    lua_getfield(L, svc, "name");
    const char *service = lua_tostring(L, -1);
    /* the subjects this version declares, to retire the others afterwards */
    lua_newtable(L);
    int declared = lua_gettop(L);
    int count = 0, added = 0;
    lua_pushnil(L);
    while (lua_next(L, svc)) {
        if (lua_type(L, -2) == LUA_TSTRING && service_is_rpc_value(L, -1)) {
            char subject[512];
            snprintf(subject, sizeof subject, "%s.%s", service, lua_tostring(L, -2));
            bool is_new;
            if (service_declare_rpc(s, L, svc, subject, path, &is_new) == 0) {
                count++;
                added += is_new;
                lua_pushboolean(L, 1);
                lua_setfield(L, declared, subject);
            }
        }
        lua_pop(L, 1);
    }
    int removed = 0;
    for (rpc_entry *e = s->rpcs, *next; e; e = next) {
        next = e->next;
        if (strcmp(e->file, path) != 0) continue;
        lua_getfield(L, declared, e->subject);
        bool still = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!still) {
            service_rpc_retire(s, e);
            removed++;
        }
    }
    drop_load_subs(s, path, gen, false); /* the previous version's */
    service_run_stopped(s, meta_update(s, L, svc, path));
    if (reload)
        log_info(TAG, "reloaded %s: service %s with %d RPCs (%d new, %d removed)", path, service,
                 count, added, removed);
    else
        log_info(TAG, "%s: service %s with %d RPCs", path, service, count);
    lua_settop(L, top);
    return count;
}

static void pending_unlink(struct services *s, pending_load *p)
{
    for (pending_load **q = &s->pending; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            return;
        }
    }
}

/* The started function of a pending version ended. */
static void started_done(void *udata, bool ok)
{
    pending_load *p = udata;
    struct services *s = p->s;
    lua_State *L = s->rt->L;
    pending_unlink(s, p);
    if (ok && !p->superseded && !s->rt->shutting_down) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->svc_ref);
        finish_load(s, lua_gettop(L), p->path, p->gen, p->reload);
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
    } else {
        if (!ok) {
            s->load_errors++;
            log_error(TAG, "%s: started failed: %s", p->path,
                      p->reload ? "the previous version still serves" : "its RPCs are not served");
        } else {
            log_info(TAG, "%s: superseded while started ran: this version is dropped", p->path);
        }
        drop_load_subs(s, p->path, p->gen, true);
        if (ok)
            service_run_stopped(s, p->svc_ref); /* it started: it may have things to release */
        else
            luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
    }
    free(p->path);
    free(p);
}

/* Runs the started function of the version at svc, if it has one (then the version takes over
 * when it returns, and this returns 0), or takes over at once (returns its RPC count). */
static int start_version(struct services *s, int svc, const char *path, unsigned gen, bool reload)
{
    lua_State *L = s->rt->L;
    lua_getfield(L, svc, "started");
    lua_getfield(L, svc, "streams"); /* declared JetStream streams are applied like started */
    bool has = (lua_isfunction(L, -2) || lua_istable(L, -1)) && !s->rt->cfg.no_hooks;
    lua_pop(L, 2);
    if (!has) return finish_load(s, svc, path, gen, reload);
    pending_load *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path))) {
        free(p);
        log_error(TAG, "%s: out of memory", path);
        return -1;
    }
    p->s = s;
    p->gen = gen;
    p->reload = reload;
    p->startup = s->loading_dir;
    lua_pushvalue(L, svc);
    p->svc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->next = s->pending;
    s->pending = p;
    /* bounded like a call; started_done may run before this returns */
    if (service_hook_run(s->rt, L, svc, "started", s->rt->cfg.call_timeout, started_done, p) != 1) {
        pending_unlink(s, p);
        luaL_unref(L, LUA_REGISTRYINDEX, p->svc_ref);
        free(p->path);
        free(p);
        return -1;
    }
    return 0;
}

int services_load_file(struct services *s, const char *path, bool reload)
{
    lua_State *L = s->rt->L;
    int top = lua_gettop(L);
    unsigned gen = ++s->load_gen;
    supersede_pending(s, path);
    int count = run_script(s, path) == 0 ? start_version(s, lua_gettop(L), path, gen, reload) : -1;
    if (count < 0) {
        s->load_errors++;
        drop_load_subs(s, path, gen, true); /* what the failed version subscribed */
    }
    lua_settop(L, top);
    return count;
}

void services_remove_file(struct services *s, const char *path)
{
    int removed = 0;
    for (rpc_entry *e = s->rpcs, *next; e; e = next) {
        next = e->next;
        if (strcmp(e->file, path) == 0) {
            service_rpc_retire(s, e);
            removed++;
        }
    }
    s->load_gen++;
    supersede_pending(s, path);
    drop_load_subs(s, path, s->load_gen, false);
    for (service_meta *m = s->metas; m; m = m->next) {
        if (strcmp(m->file, path) != 0) continue;
        service_run_stopped(s, m->svc_ref);
        m->svc_ref = LUA_NOREF;
    }
    meta_remove(s, path);
    log_info(TAG, "%s removed: %d RPCs retired", path, removed);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int services_load_dir(struct services *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error(TAG, "cannot read the services folder %s", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        size_t len = strlen(ent->d_name);
        if (len < 5 || ent->d_name[0] == '.' || strcmp(ent->d_name + len - 4, ".lua") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) break;
            names = grown;
        }
        names[n++] = strdup(ent->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, compare_names);
    int rpcs = 0;
    s->loading_dir = true;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        int c = names[i] ? services_load_file(s, path, false) : -1;
        if (c > 0) rpcs += c;
        free(names[i]);
    }
    s->loading_dir = false;
    free(names);
    int starting = services_startup_pending(s);
    if (starting)
        log_info(TAG,
                 "%d RPCs from %s, %d more services starting (their started functions or "
                 "streams run)",
                 rpcs, dir, starting);
    else
        log_info(TAG, "%d RPCs from %s", rpcs, dir);
    if (!s->cancel_sub)
        s->cancel_sub = nats_bridge_subscribe(s->rt->nats, SERVICES_CANCEL_SUBJECT, NULL,
                                              service_on_cancel_msg, s);
    nats_bridge_confirm(s->rt->nats);
    return rpcs;
}

void services_each_service(struct services *s, void (*fn)(void *u, const service_desc *d), void *u)
{
    for (service_meta *m = s->metas; m; m = m->next) {
        service_desc d = {m->name,          m->id,   m->version, m->description,
                          m->metadata_json, m->file, m->started};
        fn(u, &d);
    }
}

/* {{name=, version=, description=}, ...}: the loaded services, for the document's info. */
void service_push_infos(struct services *s, lua_State *L)
{
    lua_newtable(L);
    int i = 0;
    for (service_meta *m = s->metas; m; m = m->next) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, m->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, m->version);
        lua_setfield(L, -2, "version");
        lua_pushstring(L, m->description);
        lua_setfield(L, -2, "description");
        lua_rawseti(L, -2, ++i);
    }
}
