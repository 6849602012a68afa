/* pg_pool.c: owns the PostgreSQL connections (libpq in non-blocking mode, each socket watched
 * by one uv_poll handle), the FIFO of queries waiting for a connection, reservations for
 * transactions, reconnection with backoff, and the start-up migrations.
 *
 * Nothing here blocks the loop except pg_pool_migrate, which runs before anything is served.
 * Connecting is PQconnectStartParams + PQconnectPoll driven by the poll handle (libpq may change
 * the socket between steps, so the handle follows PQsocket). A query is PQsendQueryParams +
 * PQflush, then PQconsumeInput / PQgetResult as the socket becomes readable. A connection that
 * breaks fails its query with PG_UNAVAILABLE and is replaced; while no connection is up and the
 * last attempt failed, new queries fail at once instead of waiting.
 *
 * Statements on shared connections are prepared by name the first time a connection sees their
 * SQL text (pg_stmts.c), Parse and Bind/Execute in the same sync segment, and from then on run as
 * Bind/Execute only: the server skips parsing and planning. Statements of a reservation (a
 * transaction) stay unnamed, so a cached statement that goes stale (its result type changed by
 * DDL) can be retried unnamed without touching anyone's transaction. */
#include "pg_pool.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pg_stmts.h"

#define TAG "postgres"
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define PIPELINE_DEPTH 16 /* statements in flight on one connection */
#define SESSION_OPTIONS "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=iso_8601"

enum conn_state { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };
enum job_kind { JOB_QUERY, JOB_RESERVE };

struct pg_job {
    pg_pool *pool;
    enum job_kind kind;
    pg_conn *conn; /* the reserved connection it must run on, or the one running it */
    pg_result_fn fn;
    pg_reserve_fn rfn;
    void *udata;
    bool abandoned;
    bool internal_rollback; /* sent by the pool for an abandoned reservation */
    char *sql;
    pg_stmt *stmt;         /* the named statement it runs, or NULL: unnamed */
    unsigned stmt_id;      /* stmt's id when sent (its slot may be reused by then) */
    bool prepares;         /* it sent the Parse of stmt */
    bool prepare_answered; /* the answer to that Parse has come */
    bool prepare_ok;       /* and it was a success */
    bool unnamed;          /* never prepare (a retry after a stale statement) */
    int nparams;
    char **values;
    int *lengths;
    int *formats; /* 0 text, 1 binary */
    pg_job *next;
};

/* A FIFO of jobs (the pool's queue, a connection's statements in flight). */
typedef struct job_fifo {
    pg_job *head, *tail;
    int n;
} job_fifo;

struct pg_conn {
    pg_pool *pool;
    int index;
    PGconn *pg;
    uv_poll_t *poll; /* allocated: closed asynchronously, freed in its close callback */
    int fd;
    int events; /* what poll watches: uv_poll_start costs two epoll_ctl calls, so only changes */
    enum conn_state state;
    bool reserved;
    bool rollback_on_idle; /* reservation abandoned mid-statement */
    bool held_for_reserve; /* takes no new statements until it is empty, then is reserved */
    job_fifo sent;         /* statements sent and not yet answered, in pipeline order */
    PGresult *result;      /* the answer to sent.head so far */
    pg_stmts stmts;        /* its prepared statements */
    uv_timer_t retry;
    int retry_ms;
};

struct pg_pool {
    runtime *rt;
    char *conninfo;
    int size;
    int queue_limit;
    int statements; /* prepared statements per connection at most */
    pg_conn *conns;
    job_fifo queue; /* waiting for a connection */
    int up;         /* connections IDLE or BUSY */
    bool last_attempt_failed;
    bool closing;
    int handles_open;
    void (*on_closed)(void *arg);
    void *on_closed_arg;
};

static void conn_connect(pg_conn *c);
static void dispatch(pg_pool *p);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- jobs ---- */

static void job_free(pg_job *j)
{
    for (int i = 0; i < j->nparams; i++)
        free(j->values[i]);
    free(j->values);
    free(j->lengths);
    free(j->formats);
    free(j->sql);
    free(j);
}

static pg_job *job_new(pg_pool *p, enum job_kind kind, const char *sql, int nparams,
                       const char *const *values, const size_t *lengths, const int *formats)
{
    pg_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->pool = p;
    j->kind = kind;
    if (sql && !(j->sql = strdup(sql))) goto fail;
    if (nparams > 0) {
        j->values = calloc((size_t)nparams, sizeof *j->values);
        j->lengths = calloc((size_t)nparams, sizeof *j->lengths);
        j->formats = calloc((size_t)nparams, sizeof *j->formats);
        if (!j->values || !j->lengths || !j->formats) goto fail;
        if (formats) memcpy(j->formats, formats, sizeof *j->formats * (size_t)nparams);
        j->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (!values[i]) continue;
            size_t n = lengths ? lengths[i] : strlen(values[i]);
            if (!(j->values[i] = malloc(n + 1))) goto fail;
            memcpy(j->values[i], values[i], n);
            j->values[i][n] = '\0';
            j->lengths[i] = (int)n;
        }
    }
    return j;
fail:
    job_free(j); /* what was allocated so far */
    return NULL;
}

/* The one end of every job: its callback (unless abandoned), then it is freed. */
static void job_finish(pg_job *j, enum pg_status st, PGresult *res, const char *msg, pg_conn *rc)
{
    if (!j->abandoned) {
        if (j->kind == JOB_QUERY && j->fn)
            j->fn(j->udata, st, res, msg);
        else if (j->kind == JOB_RESERVE && j->rfn)
            j->rfn(j->udata, st, rc, msg);
        res = NULL;
    }
    if (res) PQclear(res);
    job_free(j);
}

static void fifo_push(job_fifo *q, pg_job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
}

static void fifo_push_front(job_fifo *q, pg_job *j)
{
    j->next = q->head;
    q->head = j;
    if (!q->tail) q->tail = j;
    q->n++;
}

static pg_job *fifo_pop(job_fifo *q)
{
    pg_job *j = q->head;
    if (!j) return NULL;
    q->head = j->next;
    if (!q->head) q->tail = NULL;
    q->n--;
    j->next = NULL;
    return j;
}

static bool fifo_remove(job_fifo *q, pg_job *j)
{
    pg_job *prev = NULL;
    for (pg_job *x = q->head; x; prev = x, x = x->next) {
        if (x != j) continue;
        if (prev)
            prev->next = x->next;
        else
            q->head = x->next;
        if (q->tail == x) q->tail = prev;
        q->n--;
        return true;
    }
    return false;
}

static void fail_queue(pg_pool *p, const char *msg)
{
    pg_job *j;
    while ((j = fifo_pop(&p->queue)))
        job_finish(j, PG_UNAVAILABLE, NULL, msg, NULL);
}

/* ---- the socket ---- */

static void poll_free_cb(uv_handle_t *h)
{
    free(h);
}

static void poll_close(pg_conn *c)
{
    if (!c->poll) return;
    uv_poll_stop(c->poll); /* also drops the fd from epoll before libpq closes it */
    uv_close((uv_handle_t *)c->poll, poll_free_cb);
    c->poll = NULL;
    c->fd = -1;
    c->events = 0;
}

/* Watches the connection's current socket for events. */
static int poll_watch(pg_conn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (fd < 0) return -1;
    if (c->poll && c->fd != fd) poll_close(c);
    if (!c->poll) {
        c->poll = malloc(sizeof *c->poll);
        if (!c->poll || uv_poll_init(&c->pool->rt->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return -1;
        }
        c->poll->data = c;
        c->fd = fd;
    }
    if (c->events == events) return 0;
    int rc = uv_poll_start(c->poll, events, on_poll);
    c->events = rc == 0 ? events : 0;
    return rc;
}

/* ---- connection life ---- */

static void retry_cb(uv_timer_t *t)
{
    conn_connect(t->data);
}

static void conn_down(pg_conn *c, const char *reason)
{
    pg_pool *p = c->pool;
    char why[256]; /* reason may be libpq's message, which PQfinish frees */
    snprintf(why, sizeof why, "%s", reason);
    why[strcspn(why, "\n")] = '\0';
    bool was_up = c->state == C_IDLE || c->state == C_BUSY;
    if (was_up) p->up--;
    poll_close(c);
    if (c->result) PQclear(c->result);
    c->result = NULL;
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    c->state = C_DOWN;
    pg_job *j = c->sent.head;
    c->sent = (job_fifo){0};
    /* a reservation's holder learns at its next statement (PG_UNAVAILABLE) */
    c->reserved = false;
    c->rollback_on_idle = false;
    c->held_for_reserve = false;
    if (was_up && !p->closing) log_warn(TAG, "connection %d lost: %s", c->index, why);
    while (j) {
        pg_job *next = j->next;
        job_finish(j, PG_UNAVAILABLE, NULL, "the database connection was lost", NULL);
        j = next;
    }
    pg_stmts_clear(&c->stmts); /* the server's statements went with the connection */
    if (p->closing) return;
    if (!was_up) p->last_attempt_failed = true;
    if (p->up == 0 && p->last_attempt_failed) fail_queue(p, "the database is unavailable");
    c->retry_ms = c->retry_ms ? (c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2)
                              : RETRY_MIN_MS;
    uv_timer_start(&c->retry, retry_cb, was_up ? 0 : (uint64_t)c->retry_ms, 0);
}

static void conn_ready(pg_conn *c)
{
    pg_pool *p = c->pool;
    PQsetnonblocking(c->pg, 1);
    /* every statement is sent with its own sync point, so statements from different callers
     * share the connection's round trips but not their transactions or errors */
    if (!PQenterPipelineMode(c->pg)) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = C_IDLE;
    c->retry_ms = 0;
    p->up++;
    if (p->last_attempt_failed || p->up == 1)
        log_info(TAG, "connection %d up (%d of %d)", c->index, p->up, p->size);
    p->last_attempt_failed = false;
    poll_watch(c, UV_READABLE); /* notices, and the server closing the connection */
    dispatch(p);
}

static void connect_step(pg_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (poll_watch(c, UV_READABLE) != 0) conn_down(c, "no socket");
        return;
    case PGRES_POLLING_WRITING:
        if (poll_watch(c, UV_WRITABLE) != 0) conn_down(c, "no socket");
        return;
    case PGRES_POLLING_OK:
        conn_ready(c);
        return;
    default: {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c->pg));
        msg[strcspn(msg, "\n")] = '\0';
        log_debug(TAG, "connection %d: connect failed: %s", c->index, msg);
        conn_down(c, msg);
    }
    }
}

static void conn_connect(pg_conn *c)
{
    pg_pool *p = c->pool;
    if (p->closing) return;
    const char *keys[] = {"dbname", "options", "application_name", "connect_timeout", NULL};
    const char *vals[] = {p->conninfo, SESSION_OPTIONS, "microservice", "5", NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_down(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    c->state = C_CONNECTING;
    if (poll_watch(c, UV_WRITABLE) != 0) conn_down(c, "no socket");
}

/* ---- statements ---- */

/* Queues the statement's messages: Bind/Execute of its prepared statement, or Parse (named) and
 * Bind/Execute the first time this connection sees its SQL, or an unnamed statement (in a
 * reservation, when the cache is full, or while another statement's Parse of the same SQL is
 * still unanswered). */
static int send_statement(pg_conn *c, pg_job *j)
{
    const char *const *values = (const char *const *)j->values;
    pg_stmt *st = NULL;
    if (!c->reserved && !j->unnamed && j->sql) {
        st = pg_stmts_find(&c->stmts, j->sql);
        if (!st && (st = pg_stmts_add(&c->stmts, j->sql))) {
            if (!PQsendPrepare(c->pg, st->name, j->sql, 0, NULL)) {
                pg_stmts_forget(&c->stmts, st);
                return 0;
            }
            j->prepares = true;
        } else if (st && st->state != STMT_READY) {
            st = NULL;
        }
    }
    j->stmt = st;
    j->stmt_id = st ? st->id : 0;
    if (!st)
        return PQsendQueryParams(c->pg, j->sql, j->nparams, NULL, values, j->lengths, j->formats,
                                 0);
    return PQsendQueryPrepared(c->pg, st->name, j->nparams, values, j->lengths, j->formats, 0);
}

/* Sends a statement and its sync point; the answer comes back in order (see read_results). */
static void send_job(pg_conn *c, pg_job *j)
{
    if (!send_statement(c, j) || !PQpipelineSync(c->pg)) {
        if (j->prepares) pg_stmts_forget(&c->stmts, j->stmt);
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            job_finish(j, PG_UNAVAILABLE, NULL, "the database connection was lost", NULL);
            conn_down(c, PQerrorMessage(c->pg));
            return;
        }
        job_finish(j, PG_SQL_ERROR, NULL, PQerrorMessage(c->pg), NULL);
        return;
    }
    j->conn = c;
    fifo_push(&c->sent, j);
    c->state = C_BUSY;
    int rc = PQflush(c->pg);
    if (rc < 0 || poll_watch(c, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE) != 0)
        conn_down(c, PQerrorMessage(c->pg));
}

static void send_rollback(pg_conn *c)
{
    pg_job *rb = job_new(c->pool, JOB_QUERY, "ROLLBACK", 0, NULL, NULL, NULL);
    if (!rb) {
        conn_down(c, "out of memory");
        return;
    }
    rb->abandoned = true;
    rb->internal_rollback = true;
    send_job(c, rb);
}

/* "cached plan must not change result type" (DDL changed what the statement returns) or
 * "prepared statement "<its name>" does not exist" (the session ran DEALLOCATE or DISCARD): the
 * server refused cached statement number id for being cached. */
static bool stale_statement(const PGresult *res, unsigned id, bool *exists)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!state || !msg) return false;
    *exists = strcmp(state, "26000") != 0;
    if (!*exists) {
        char quoted[40];
        snprintf(quoted, sizeof quoted, "\"" PG_STMT_NAME "\"", id);
        return strstr(msg, quoted) != NULL;
    }
    return strcmp(state, "0A000") == 0 && strstr(msg, "cached plan must not change");
}

/* Records what the server said of the job's named statement. Returns true when the job was
 * refused for running a stale cached statement and goes back to the queue to run unnamed (it
 * ran on a shared connection, in its own implicit transaction, which the error rolled back). */
static bool statement_settle(pg_conn *c, pg_job *j, bool ok, PGresult *res)
{
    pg_stmt *st = j->stmt;
    j->stmt = NULL;
    if (!st) return false;
    /* an earlier statement may have found it stale and freed its slot (even for another) */
    bool current = st->sql && st->id == j->stmt_id;
    if (j->prepares) {
        if (current && j->prepare_answered && j->prepare_ok)
            st->state = STMT_READY;
        else if (current)
            pg_stmts_forget(&c->stmts, st); /* not on the server */
        return false;
    }
    bool exists = true;
    if (ok || !stale_statement(res, j->stmt_id, &exists)) return false;
    if (current && exists)
        st->state = STMT_DEAD; /* keeps its slot: the server still holds it */
    else if (current)
        pg_stmts_forget(&c->stmts, st);
    if (j->abandoned) return false;
    log_debug(TAG, "connection %d: a cached statement went stale; running it again unnamed",
              c->index);
    j->unnamed = true;
    j->conn = NULL;
    fifo_push_front(&c->pool->queue, j);
    return true;
}

/* The sync point of the oldest statement arrived: it is answered. */
static void statement_done(pg_conn *c)
{
    pg_job *j = fifo_pop(&c->sent);
    PGresult *res = c->result;
    c->result = NULL;
    if (c->sent.n == 0) c->state = C_IDLE;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    bool was_rollback = j->internal_rollback;
    if (statement_settle(c, j, ok, res)) {
        if (res) PQclear(res);
        dispatch(c->pool);
        return;
    }
    job_finish(j, ok ? PG_OK : PG_SQL_ERROR, res, res ? NULL : "no result", NULL);
    if (c->state != C_IDLE) return; /* more in flight, or the callback sent the next one */
    if (c->rollback_on_idle) {
        if (!was_rollback) {
            send_rollback(c); /* the reservation was abandoned: roll back, then release */
            return;
        }
        c->rollback_on_idle = false;
        c->reserved = false;
    }
    dispatch(c->pool);
}

/* Keeps the first error of a statement, else its last result (several statements in one
 * string give several). */
static void keep_result(pg_conn *c, PGresult *r)
{
    if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
        PQclear(r);
        return;
    }
    if (c->result) PQclear(c->result);
    c->result = r;
}

static void read_results(pg_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    if (c->state != C_BUSY) { /* idle: a notice, or the server going away */
        PGnotify *n;
        while ((n = PQnotifies(c->pg)))
            PQfreemem(n);
        if (PQstatus(c->pg) == CONNECTION_BAD) conn_down(c, "closed by the server");
        return;
    }
    /* per statement: its result(s), NULL, then PGRES_PIPELINE_SYNC for its sync point. A NULL
     * ends the results of one statement; two in a row mean nothing more is ready. */
    int nulls = 0;
    while (c->state == C_BUSY && c->sent.head && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (++nulls >= 2) break;
            continue;
        }
        nulls = 0;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            statement_done(c);
            continue;
        }
        pg_job *head = c->sent.head;
        if (head->prepares && !head->prepare_answered) { /* the answer to its Parse */
            head->prepare_answered = true;
            head->prepare_ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            if (head->prepare_ok) {
                PQclear(r);
                continue;
            }
        }
        keep_result(c, r);
    }
    if (c->state == C_BUSY && PQstatus(c->pg) == CONNECTION_BAD)
        conn_down(c, "closed by the server");
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pg_conn *c = h->data;
    if (c->state == C_CONNECTING) {
        connect_step(c);
        return;
    }
    if (status < 0) {
        conn_down(c, uv_strerror(status));
        return;
    }
    if ((events & UV_WRITABLE) && c->state == C_BUSY) {
        int rc = PQflush(c->pg);
        if (rc < 0) {
            conn_down(c, PQerrorMessage(c->pg));
            return;
        }
        if (rc == 0) poll_watch(c, UV_READABLE);
    }
    if ((events & UV_READABLE) && c->state != C_DOWN) read_results(c);
}

/* The least loaded connection that takes shared statements, or NULL. */
static pg_conn *least_loaded(pg_pool *p)
{
    pg_conn *best = NULL;
    for (int i = 0; i < p->size; i++) {
        pg_conn *c = &p->conns[i];
        if ((c->state != C_IDLE && c->state != C_BUSY) || c->reserved || c->held_for_reserve)
            continue;
        if (c->sent.n >= PIPELINE_DEPTH) continue;
        if (!best || c->sent.n < best->sent.n) best = c;
    }
    return best;
}

/* A waiting reservation gets a connection with nothing in flight; if there is none, the least
 * loaded one stops taking statements until it is empty. Returns whether it was granted. */
static bool grant_reservation(pg_pool *p, pg_job *j)
{
    pg_conn *c = NULL;
    bool holding = false;
    for (int i = 0; i < p->size; i++) {
        pg_conn *k = &p->conns[i];
        holding |= k->held_for_reserve;
        if (k->state == C_IDLE && !k->reserved && (!c || k->held_for_reserve)) c = k;
    }
    if (!c) {
        if (!holding) {
            pg_conn *k = least_loaded(p);
            if (k) k->held_for_reserve = true;
        }
        return false;
    }
    for (int i = 0; i < p->size; i++)
        p->conns[i].held_for_reserve = false;
    c->reserved = true;
    fifo_remove(&p->queue, j);
    job_finish(j, PG_OK, NULL, NULL, c);
    return true;
}

/* Hands waiting jobs out in arrival order: statements to the least loaded connection (up to
 * PIPELINE_DEPTH in flight each), reservations to an empty connection. */
static void dispatch(pg_pool *p)
{
    while (p->queue.head) {
        pg_job *j = p->queue.head;
        if (j->kind == JOB_RESERVE) {
            if (!grant_reservation(p, j)) return; /* FIFO: later jobs wait behind it */
            continue;
        }
        pg_conn *c = least_loaded(p);
        if (!c) return;
        send_job(c, fifo_pop(&p->queue));
    }
}

/* ---- public ---- */

pg_pool *pg_pool_new(runtime *rt, const char *conninfo, int size, int queue_limit, int statements)
{
    pg_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->rt = rt;
    p->size = size > 0 ? size : 4;
    p->queue_limit = queue_limit > 0 ? queue_limit : 10000;
    p->statements = statements > 0 ? statements : 0;
    p->conninfo = strdup(conninfo);
    p->conns = calloc((size_t)p->size, sizeof *p->conns);
    if (!p->conninfo || !p->conns) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        return NULL;
    }
    for (int i = 0; i < p->size; i++) {
        pg_conn *c = &p->conns[i];
        c->pool = p;
        c->index = i;
        c->fd = -1;
        pg_stmts_init(&c->stmts, p->statements);
        uv_timer_init(&rt->loop, &c->retry);
        c->retry.data = c;
    }
    p->handles_open = p->size;
    return p;
}

void pg_pool_start(pg_pool *p)
{
    for (int i = 0; i < p->size; i++)
        conn_connect(&p->conns[i]);
}

const char *pg_pool_state(const pg_pool *p)
{
    if (!p) return "off";
    if (p->up > 0) return "connected";
    return p->last_attempt_failed ? "down" : "connecting";
}

int pg_pool_connections_up(const pg_pool *p)
{
    return p ? p->up : 0;
}

int pg_pool_queue_depth(const pg_pool *p)
{
    return p ? p->queue.n : 0;
}

static bool fail_fast(pg_pool *p)
{
    return p->closing || (p->up == 0 && p->last_attempt_failed);
}

pg_job *pg_pool_query(pg_pool *p, pg_conn *conn, const char *sql, int nparams,
                      const char *const *values, const size_t *lengths, const int *formats,
                      pg_result_fn fn, void *udata)
{
    if (fail_fast(p) || (conn && conn->state != C_IDLE && conn->state != C_BUSY)) {
        fn(udata, PG_UNAVAILABLE, NULL, "the database is unavailable");
        return NULL;
    }
    if (conn && conn->state == C_BUSY) {
        fn(udata, PG_UNAVAILABLE, NULL, "a transaction runs one statement at a time");
        return NULL;
    }
    if (!conn && p->queue.n >= p->queue_limit) {
        fn(udata, PG_QUEUE_FULL, NULL, "too many queries waiting for a database connection");
        return NULL;
    }
    pg_job *j = job_new(p, JOB_QUERY, sql, nparams, values, lengths, formats);
    if (!j) {
        fn(udata, PG_UNAVAILABLE, NULL, "out of memory");
        return NULL;
    }
    j->fn = fn;
    j->udata = udata;
    if (conn) {
        send_job(conn, j);
        return conn->sent.tail == j ? j : NULL; /* NULL: it already finished (send failed) */
    }
    fifo_push(&p->queue, j);
    dispatch(p);
    return j;
}

pg_job *pg_pool_reserve(pg_pool *p, pg_reserve_fn fn, void *udata)
{
    if (fail_fast(p)) {
        fn(udata, PG_UNAVAILABLE, NULL, "the database is unavailable");
        return NULL;
    }
    if (p->queue.n >= p->queue_limit) {
        fn(udata, PG_QUEUE_FULL, NULL, "too many queries waiting for a database connection");
        return NULL;
    }
    pg_job *j = job_new(p, JOB_RESERVE, NULL, 0, NULL, NULL, NULL);
    if (!j) {
        fn(udata, PG_UNAVAILABLE, NULL, "out of memory");
        return NULL;
    }
    j->rfn = fn;
    j->udata = udata;
    fifo_push(&p->queue, j);
    dispatch(p);
    return j;
}

void pg_pool_job_abandon(pg_job *j)
{
    if (fifo_remove(&j->pool->queue, j)) {
        job_free(j);
        return;
    }
    j->abandoned = true; /* in flight: finishes on the server, result dropped */
}

void pg_pool_release_rollback(pg_conn *c)
{
    if (!c->reserved) return;
    c->rollback_on_idle = true;
    if (c->state == C_IDLE) send_rollback(c);
}

void pg_pool_release(pg_conn *c)
{
    if (!c->reserved) return;
    if (c->state == C_BUSY) {
        c->rollback_on_idle = true;
        return;
    }
    c->reserved = false;
    dispatch(c->pool);
}

static void handle_closed_cb(uv_handle_t *h)
{
    pg_conn *c = h->data;
    pg_pool *p = c->pool;
    if (--p->handles_open == 0 && p->on_closed) p->on_closed(p->on_closed_arg);
}

void pg_pool_close(pg_pool *p, void (*on_closed)(void *arg), void *arg)
{
    p->closing = true;
    p->on_closed = on_closed;
    p->on_closed_arg = arg;
    fail_queue(p, "the service is shutting down");
    for (int i = 0; i < p->size; i++) {
        pg_conn *c = &p->conns[i];
        conn_down(c, "shutting down");
        uv_timer_stop(&c->retry);
        uv_close((uv_handle_t *)&c->retry, handle_closed_cb);
    }
}

void pg_pool_free(pg_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->size; i++)
        pg_stmts_free(&p->conns[i].stmts);
    free(p->conns);
    free(p->conninfo);
    free(p);
}

/* ---- migrations (start-up, blocking) ---- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NNN_name.sql files of dir, sorted; NULL-terminated, owned by the caller. */
static char **migration_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return calloc(1, sizeof(char *));
    size_t n = 0, cap = 8;
    char **names = calloc(cap + 1, sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".sql") != 0) continue;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (n == cap) {
            char **g = realloc(names, (cap * 2 + 1) * sizeof *names);
            if (!g) break;
            names = g;
            cap *= 2;
        }
        names[n++] = strdup(e->d_name);
        names[n] = NULL;
    }
    closedir(d);
    if (names && n) qsort(names, n, sizeof *names, compare_names);
    return names;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs sql; on failure logs "<what>: <message>" and returns -1. */
static int exec_ok(PGconn *pg, const char *sql, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok) log_error(TAG, "%s: %s", what, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static bool migration_applied(PGconn *pg, const char *version)
{
    const char *params[] = {version};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    bool applied = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    return applied;
}

static int apply_migration(PGconn *pg, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *sql = read_file(path);
    if (!sql) {
        log_error(TAG, "migration %s: cannot read the file", path);
        return -1;
    }
    const char *params[] = {name};
    int rc = exec_ok(pg, "BEGIN", path);
    if (rc == 0) rc = exec_ok(pg, sql, path);
    if (rc == 0) {
        PGresult *r = PQexecParams(pg, "INSERT INTO schema_migrations(version) VALUES ($1)", 1,
                                   NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            log_error(TAG, "%s: recording it failed: %s", path, PQerrorMessage(pg));
            rc = -1;
        }
        PQclear(r);
    }
    if (rc == 0) rc = exec_ok(pg, "COMMIT", path);
    if (rc != 0) {
        PQclear(PQexec(pg, "ROLLBACK"));
    } else {
        log_info(TAG, "migration %s applied", name);
    }
    free(sql);
    return rc;
}

static PGconn *connect_waiting(const char *conninfo, double wait_s)
{
    const char *keys[] = {"dbname", "options", "application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, SESSION_OPTIONS, "microservice-migrate", "5", NULL};
    for (double waited = 0;; waited += 0.25) {
        PGconn *pg = PQconnectdbParams(keys, vals, 1);
        if (PQstatus(pg) == CONNECTION_OK) return pg;
        if (waited >= wait_s) {
            log_error(TAG, "cannot connect for migrations: %s", PQerrorMessage(pg));
            PQfinish(pg);
            return NULL;
        }
        PQfinish(pg);
        usleep(250000);
    }
}

int pg_pool_migrate(const char *conninfo, const char *dir, double wait_s)
{
    PGconn *pg = connect_waiting(conninfo, wait_s);
    if (!pg) return -1;
    PQclear(PQexec(pg, "SET client_min_messages = warning"));
    /* one lock for every process of every deployment sharing this database */
    int rc = exec_ok(pg, "SELECT pg_advisory_lock(7243041113)", "taking the migration lock");
    if (rc == 0)
        rc = exec_ok(pg,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                     "creating schema_migrations");
    char **files = migration_files(dir);
    int applied = 0;
    for (int i = 0; rc == 0 && files && files[i]; i++) {
        if (migration_applied(pg, files[i])) continue;
        rc = apply_migration(pg, dir, files[i]);
        applied += rc == 0;
    }
    for (int i = 0; files && files[i]; i++)
        free(files[i]);
    free(files);
    PQclear(PQexec(pg, "SELECT pg_advisory_unlock(7243041113)"));
    PQfinish(pg);
    if (rc == 0) log_info(TAG, "migrations up to date (%d applied now)", applied);
    return rc;
}
