/* pg_stmts.h: the statements one PostgreSQL connection has prepared (named, cached by SQL text),
 * so a statement that runs again skips the server's parse and plan. Bounded per connection. */
#ifndef MICROSERVICE_PG_STMTS_H
#define MICROSERVICE_PG_STMTS_H

#include <stdbool.h>
#include <stdint.h>

enum pg_stmt_state {
    STMT_PREPARING, /* Parse sent, not yet answered: others send their own unnamed statement */
    STMT_READY,     /* prepared on the server: Bind/Execute only */
    STMT_DEAD,      /* on the server but unusable (its result type changed): keeps its slot */
};

#define PG_STMT_NAME "microservice_%u" /* a statement's name on the server, from its id */

typedef struct pg_stmt {
    uint64_t hash;
    char *sql;
    enum pg_stmt_state state;
    unsigned id; /* the number in its name: a slot reused later has another */
    char name[24];
} pg_stmt;

typedef struct pg_stmts {
    pg_stmt *slots;
    int n, cap;
    unsigned next_id;
} pg_stmts;

/* cap 0: nothing is prepared. */
void pg_stmts_init(pg_stmts *s, int cap);
/* The live entry for sql, or NULL. */
pg_stmt *pg_stmts_find(pg_stmts *s, const char *sql);
/* A new STMT_PREPARING entry for sql, or NULL when the cache is full (or out of memory). */
pg_stmt *pg_stmts_add(pg_stmts *s, const char *sql);
/* Forgets an entry that does not exist on the server (its Parse failed, or it was deallocated):
 * its slot is free again. Pointers to other entries stay valid. */
void pg_stmts_forget(pg_stmts *s, pg_stmt *st);
/* Forgets everything (the connection is gone, and its statements with it). */
void pg_stmts_clear(pg_stmts *s);
void pg_stmts_free(pg_stmts *s);

#endif
