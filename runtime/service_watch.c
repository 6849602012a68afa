/* service_watch.c: owns hot reload's side of the file system: a libuv fs-event handle on the
 * services folder and one on its migrations/ folder, a short debounce (editors write a file in
 * several steps: truncate, write, rename), and the table of scripts as last seen (mtime, size,
 * inode). When the folder settles, every *.lua that is new or changed is (re)loaded through
 * services_load_file and every one that disappeared is removed; a new migration is only logged,
 * since migrations are applied at start-up. A change in DIR/lib (helpers shared by the scripts,
 * on package.path) reloads every script. */
#include "service_watch.h"

#include <dirent.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "mlua_error.h"
#include "nats_bridge.h"
#include "services.h"

#define TAG "services"
#define DEBOUNCE_MS 100

typedef struct seen_file {
    char *name;
    struct timespec mtime;
    off_t size;
    ino_t ino;
    bool present; /* in the latest scan */
} seen_file;

struct service_watch {
    runtime *rt;
    uv_fs_event_t dir_event, mig_event, lib_event;
    bool mig_watched, lib_changed;
    uv_timer_t debounce;
    seen_file *files;
    int nfiles, cap;
    char **migrations; /* names present at start or already reported */
    int nmig;
    int open_handles;
};

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n > k && name[0] != '.' && strcmp(name + n - k, suffix) == 0;
}

static seen_file *find_file(struct service_watch *w, const char *name)
{
    for (int i = 0; i < w->nfiles; i++)
        if (strcmp(w->files[i].name, name) == 0) return &w->files[i];
    return NULL;
}

static seen_file *add_file(struct service_watch *w, const char *name)
{
    if (w->nfiles == w->cap) {
        int cap = w->cap ? w->cap * 2 : 16;
        seen_file *f = realloc(w->files, sizeof *f * (size_t)cap);
        if (!f) return NULL;
        w->files = f;
        w->cap = cap;
    }
    seen_file *f = &w->files[w->nfiles];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    if (!f->name) return NULL;
    w->nfiles++;
    return f;
}

static bool same_stat(const seen_file *f, const struct stat *st)
{
    return f->mtime.tv_sec == st->st_mtim.tv_sec && f->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           f->size == st->st_size && f->ino == st->st_ino;
}

static void remember(seen_file *f, const struct stat *st)
{
    f->mtime = st->st_mtim;
    f->size = st->st_size;
    f->ino = st->st_ino;
}

/* Compares the folder with what was seen; (re)loads and removes. With act false it only records
 * (the start-up load already happened). */
static void scan_scripts(struct service_watch *w, bool act)
{
    const char *dir = w->rt->cfg.services_dir;
    DIR *d = opendir(dir);
    if (!d) return;
    for (int i = 0; i < w->nfiles; i++)
        w->files[i].present = false;
    bool changed = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".lua")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        seen_file *f = find_file(w, e->d_name);
        bool is_new = !f;
        if (!f && !(f = add_file(w, e->d_name))) continue;
        f->present = true;
        if (!is_new && same_stat(f, &st)) continue;
        remember(f, &st);
        if (act) {
            services_load_file(w->rt->services, path, !is_new);
            changed = true;
        }
    }
    closedir(d);
    for (int i = 0; i < w->nfiles;) {
        if (w->files[i].present) {
            i++;
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, w->files[i].name);
        if (act) {
            services_remove_file(w->rt->services, path);
            changed = true;
        }
        free(w->files[i].name);
        w->files[i] = w->files[--w->nfiles];
    }
    if (changed) nats_bridge_confirm(w->rt->nats);
}

static bool known_migration(struct service_watch *w, const char *name)
{
    for (int i = 0; i < w->nmig; i++)
        if (strcmp(w->migrations[i], name) == 0) return true;
    return false;
}

static void scan_migrations(struct service_watch *w, bool report)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/migrations", w->rt->cfg.services_dir);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".sql") || known_migration(w, e->d_name)) continue;
        char **m = realloc(w->migrations, sizeof *m * (size_t)(w->nmig + 1));
        if (!m) break;
        w->migrations = m;
        if (!(m[w->nmig] = strdup(e->d_name))) break;
        w->nmig++;
        if (report)
            log_warn(TAG,
                     "migration %s/%s was added while running: it is applied at the next "
                     "restart, not now",
                     dir, e->d_name);
    }
    closedir(d);
}

/* A helper of DIR/lib changed: the modules required from there are forgotten and every script is
 * loaded again (each takes the new helper; which script required what is not tracked). */
static void reload_for_lib(struct service_watch *w)
{
    lua_State *L = w->rt->L;
    static const char forget[] =
        "local lib = ... .. '/lib/?.lua;' .. ... .. '/lib/?/init.lua'\n"
        "for name in pairs(package.loaded) do\n"
        "  if type(name) == 'string' and package.searchpath(name, lib) then\n"
        "    package.loaded[name] = nil\n"
        "  end\n"
        "end\n";
    if (luaL_loadbuffer(L, forget, sizeof forget - 1, "=lib reload") != 0 ||
        (lua_pushstring(L, w->rt->cfg.services_dir), mlua_pcall(L, 1, 0)) != 0) {
        log_warn(TAG, "reloading the helpers of lib/: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    log_info(TAG, "%s/lib changed: reloading every script", w->rt->cfg.services_dir);
    for (int i = 0; i < w->nfiles; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", w->rt->cfg.services_dir, w->files[i].name);
        services_load_file(w->rt->services, path, true);
    }
    nats_bridge_confirm(w->rt->nats);
}

static void debounce_cb(uv_timer_t *t)
{
    struct service_watch *w = t->data;
    if (w->lib_changed) {
        w->lib_changed = false;
        reload_for_lib(w);
    }
    scan_scripts(w, true);
    scan_migrations(w, true);
}

static void on_change(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)filename;
    (void)events;
    struct service_watch *w = h->data;
    if (status < 0) {
        log_warn(TAG, "watching %s: %s", w->rt->cfg.services_dir, uv_strerror(status));
        return;
    }
    uv_timer_start(&w->debounce, debounce_cb, DEBOUNCE_MS, 0); /* restarts the wait */
}

static void on_lib_change(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct service_watch *w = h->data;
    if (status == 0) w->lib_changed = true;
    on_change(h, filename, events, status);
}

struct service_watch *service_watch_start(runtime *rt)
{
    struct service_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->rt = rt;
    uv_timer_init(&rt->loop, &w->debounce);
    uv_fs_event_init(&rt->loop, &w->dir_event);
    uv_fs_event_init(&rt->loop, &w->mig_event);
    uv_fs_event_init(&rt->loop, &w->lib_event);
    w->debounce.data = w->dir_event.data = w->mig_event.data = w->lib_event.data = w;
    w->open_handles = 4;
    int rc = uv_fs_event_start(&w->dir_event, on_change, rt->cfg.services_dir, 0);
    if (rc != 0)
        log_warn(TAG, "cannot watch %s (%s): no hot reload", rt->cfg.services_dir, uv_strerror(rc));
    char mig[4096];
    snprintf(mig, sizeof mig, "%s/migrations", rt->cfg.services_dir);
    struct stat st;
    if (stat(mig, &st) == 0 && S_ISDIR(st.st_mode))
        w->mig_watched = uv_fs_event_start(&w->mig_event, on_change, mig, 0) == 0;
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/lib", rt->cfg.services_dir);
    if (stat(lib, &st) == 0 && S_ISDIR(st.st_mode))
        uv_fs_event_start(&w->lib_event, on_lib_change, lib, 0);
    scan_scripts(w, false);
    scan_migrations(w, false);
    return w;
}

static void handle_closed(uv_handle_t *h)
{
    struct service_watch *w = h->data;
    if (--w->open_handles > 0) return;
    for (int i = 0; i < w->nfiles; i++)
        free(w->files[i].name);
    free(w->files);
    for (int i = 0; i < w->nmig; i++)
        free(w->migrations[i]);
    free(w->migrations);
    free(w);
}

void service_watch_stop(struct service_watch *w)
{
    if (!w) return;
    uv_close((uv_handle_t *)&w->debounce, handle_closed);
    uv_close((uv_handle_t *)&w->dir_event, handle_closed);
    uv_close((uv_handle_t *)&w->mig_event, handle_closed);
    uv_close((uv_handle_t *)&w->lib_event, handle_closed);
}
