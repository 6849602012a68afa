/* pg_pool.h: a pool of asynchronous libpq connections on the runtime's loop, a bounded FIFO of
 * queries, reserved connections for transactions, and start-up migrations. */
#ifndef MICROSERVICE_PG_POOL_H
#define MICROSERVICE_PG_POOL_H

#include <stdbool.h>
#include <libpq-fe.h>

#include "runtime.h"

typedef struct pg_pool pg_pool;
typedef struct pg_conn pg_conn;
typedef struct pg_job pg_job;

enum pg_status {
    PG_OK,          /* result holds the rows / command status */
    PG_SQL_ERROR,   /* the server refused the statement: result holds SQLSTATE and message */
    PG_UNAVAILABLE, /* no connection to the database (down, broken mid-query, shutting down) */
    PG_QUEUE_FULL,  /* too many queries waiting for a connection */
};

/* Runs once on the loop thread. result is owned by the callee (PQclear), NULL unless PG_OK or
 * PG_SQL_ERROR; message explains the other statuses. */
typedef void (*pg_result_fn)(void *udata, enum pg_status status, PGresult *result,
                             const char *message);
/* A reservation ended: conn is the reserved connection (PG_OK) or NULL. */
typedef void (*pg_reserve_fn)(void *udata, enum pg_status status, pg_conn *conn,
                              const char *message);

/* statements: how many SQL texts each connection prepares at most (0: none, every statement is
 * parsed and planned each time). */
pg_pool *pg_pool_new(runtime *rt, const char *conninfo, int size, int queue_limit, int statements);
/* Starts connecting every connection (asynchronously); failures are retried with backoff. */
void pg_pool_start(pg_pool *p);
/* "off" (no database), "connecting", "connected", "down". */
const char *pg_pool_state(const pg_pool *p);
int pg_pool_queue_depth(const pg_pool *p);
int pg_pool_connections_up(const pg_pool *p);

/* Queues a statement with parameters (values[i] NULL for SQL NULL; formats[i] 0 for text, 1 for
 * binary, or formats NULL for all text); conn is a reserved connection or NULL for any. Returns
 * the job, or NULL when the call failed at once (then fn has already run with the status).
 * Everything given is copied. */
pg_job *pg_pool_query(pg_pool *p, pg_conn *conn, const char *sql, int nparams,
                      const char *const *values, const size_t *lengths, const int *formats,
                      pg_result_fn fn, void *udata);
/* Reserves a connection for a transaction; fn runs when one is free (or at once on failure). */
pg_job *pg_pool_reserve(pg_pool *p, pg_reserve_fn fn, void *udata);
/* fn will not run. A statement already sent completes on the server and its result is dropped
 * (a reserved connection is then rolled back and released). */
void pg_pool_job_abandon(pg_job *job);
/* Gives a reserved connection back (after COMMIT or ROLLBACK). */
void pg_pool_release(pg_conn *conn);
/* Gives back a reserved connection whose holder went away mid-transaction: ROLLBACK first. */
void pg_pool_release_rollback(pg_conn *conn);

/* Applies dir/NNN_name.sql in order (blocking: start-up only, before anything is served),
 * serialized across processes by an advisory lock. Waits up to wait_s for the database.
 * 0, or -1 after logging the file and the database's message. */
int pg_pool_migrate(const char *conninfo, const char *dir, double wait_s);

void pg_pool_close(pg_pool *p, void (*on_closed)(void *arg), void *arg);
void pg_pool_free(pg_pool *p);

#endif
