/* pg_stmts.c: owns one connection's cache of prepared statements: SQL text -> statement name,
 * with the state of its Parse. A fixed array of cap slots (allocated once, so entry pointers held
 * by statements in flight stay valid); lookups compare a hash first. No eviction: libpq 15 has no
 * asynchronous Close of a statement, so once the slots are taken further SQL texts run unnamed. A
 * statement made stale by DDL stays on the server, so its slot stays taken (STMT_DEAD) until the
 * connection is replaced. */
#include "pg_stmts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bits */
static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

void pg_stmts_init(pg_stmts *s, int cap)
{
    *s = (pg_stmts){0};
    s->cap = cap > 0 ? cap : 0;
}

pg_stmt *pg_stmts_find(pg_stmts *s, const char *sql)
{
    if (s->n == 0) return NULL;
    uint64_t h = sql_hash(sql);
    for (int i = 0, seen = 0; i < s->cap && seen < s->n; i++) {
        pg_stmt *st = &s->slots[i];
        if (!st->sql) continue;
        seen++;
        if (st->state != STMT_DEAD && st->hash == h && strcmp(st->sql, sql) == 0) return st;
    }
    return NULL;
}

pg_stmt *pg_stmts_add(pg_stmts *s, const char *sql)
{
    if (s->n >= s->cap) return NULL;
    if (!s->slots && !(s->slots = calloc((size_t)s->cap, sizeof *s->slots))) return NULL;
    pg_stmt *st = NULL;
    for (int i = 0; i < s->cap && !st; i++)
        if (!s->slots[i].sql) st = &s->slots[i];
    if (!st || !(st->sql = strdup(sql))) return NULL;
    st->hash = sql_hash(sql);
    st->state = STMT_PREPARING;
    st->id = s->next_id++;
    snprintf(st->name, sizeof st->name, PG_STMT_NAME, st->id);
    s->n++;
    return st;
}

void pg_stmts_forget(pg_stmts *s, pg_stmt *st)
{
    free(st->sql);
    *st = (pg_stmt){0};
    s->n--;
}

void pg_stmts_clear(pg_stmts *s)
{
    for (int i = 0; s->slots && i < s->cap; i++)
        if (s->slots[i].sql) pg_stmts_forget(s, &s->slots[i]);
}

void pg_stmts_free(pg_stmts *s)
{
    pg_stmts_clear(s);
    free(s->slots);
    s->slots = NULL;
}
