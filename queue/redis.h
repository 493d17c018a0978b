/*
 * One asynchronous Redis connection (hiredis 0.14 + its libuv adapter) that
 * reconnects by itself. Host names are resolved with uv_getaddrinfo (never
 * the blocking resolver inside redisAsyncConnect); AUTH and SELECT are sent
 * first on every new connection.
 *
 * Commands sent while the connection is down fail at once (redis_conn_cmd
 * returns -1, the callback is not called). A connection that drops calls
 * every outstanding callback once with a NULL reply (hiredis's rule), then
 * on_down, then reconnects with exponential backoff and calls on_ready again.
 * A connect that does not complete within a few seconds is abandoned and
 * retried the same way.
 *
 * With Sentinel (n_sentinels > 0) the address is not configured but asked
 * of the Sentinels before every connect (queue/sentinel.h), and the server
 * must answer ROLE with "master" before the connection counts as ready. The
 * connection follows a failover: it reconnects when a Sentinel announces
 * +switch-master for its master, and when a reply says the server has become
 * a replica (READONLY).
 */
#ifndef VARSEL_REDIS_H
#define VARSEL_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct redis_conn;

struct redis_conn_config {
    const char *name;      /* for logs: "read", "cmd" */
    const char *host;      /* name, IPv4 or IPv6 literal; unused with Sentinel */
    int port;
    const char *user;      /* NULL for the default user */
    const char *password;  /* NULL for none */
    int db;
    /* Sentinel: the master is found through these (IP literals). */
    const char *const *sentinel_hosts;
    const int *sentinel_ports;
    size_t n_sentinels;    /* 0: connect to host:port directly */
    const char *master_name;
    const char *sentinel_password; /* NULL for none */
};

/* Called when the connection is ready for commands, and when it went down. */
typedef void (*redis_conn_event_cb)(struct redis_conn *c, void *user);

/*
 * Create a connection object and start connecting. Copies |cfg|. Never
 * fails (it keeps trying until redis_conn_close).
 */
struct redis_conn *redis_conn_new(uv_loop_t *loop, const struct redis_conn_config *cfg,
                                  redis_conn_event_cb on_ready,
                                  redis_conn_event_cb on_down, void *user);

/* true between on_ready and on_down. */
bool redis_conn_ready(const struct redis_conn *c);

/*
 * Counts the connections that became ready, so 1 after the first on_ready.
 * Writes sent under one epoch went over one connection: a WAIT sent later
 * under the same epoch covers them, one sent under another epoch does not.
 */
uint64_t redis_conn_epoch(const struct redis_conn *c);

/* How often the connection moved to another master (Sentinel failovers). */
uint64_t redis_conn_master_changes(const struct redis_conn *c);

/*
 * Send a command. |fn| gets the reply (borrowed: valid only during the
 * call), or NULL when the connection dropped before it came. Returns 0, or
 * -1 when the connection is not ready (|fn| is then never called).
 */
int redis_conn_cmd_argv(struct redis_conn *c, redisCallbackFn *fn, void *priv,
                        int argc, const char **argv, const size_t *argvlen);

/*
 * Send one command already in RESP form (|len| bytes, copied), for hot
 * paths that build it faster than hiredis's printf-like formatter. Same
 * contract as redis_conn_cmd_argv.
 */
int redis_conn_cmd_formatted(struct redis_conn *c, redisCallbackFn *fn, void *priv,
                             const char *cmd, size_t len);

/*
 * true when replies are outstanding and none has come for |timeout_ms|
 * (hiredis 0.14 has no command timeout: a Redis that hangs, or a network
 * that silently drops packets, would otherwise stall us forever).
 */
bool redis_conn_stalled(const struct redis_conn *c, uint64_t timeout_ms);

/*
 * Drop the current connection (outstanding callbacks get NULL) and
 * reconnect after the backoff; used when a reply is overdue.
 */
void redis_conn_reset(struct redis_conn *c, const char *why);

/* Disconnect for good: outstanding callbacks get NULL; frees |c| once libuv
 * has closed its handles. No callbacks of redis_conn_new fire afterwards. */
void redis_conn_close(struct redis_conn *c);

/*
 * Lua scripts run with EVALSHA. Every script registered here is loaded with
 * SCRIPT LOAD at the start of each new connection, before any other command
 * (so a Redis restart or failover, which empties the script cache, is
 * covered). |s| must outlive the connection.
 */
struct redis_script {
    const char *text;
    char sha[41];
};
void redis_script_init(struct redis_script *s, const char *text);
void redis_conn_add_script(struct redis_conn *c, const struct redis_script *s);
/* |argv| holds the KEYS then the ARGV of the script; |numkeys| of them are keys. */
int redis_conn_eval(struct redis_conn *c, const struct redis_script *s,
                    redisCallbackFn *fn, void *priv, int numkeys, int argc,
                    const char **argv, const size_t *argvlen);

/*
 * For queue/sentinel.c only: watch |ac|'s socket on |loop| with this
 * module's event adapter (hiredis 0.14's own libuv adapter hangs on
 * POLLERR). Returns 0, or -1 when |ac| already has an adapter.
 */
int redis__attach(redisAsyncContext *ac, uv_loop_t *loop);

/* The reply-object functions varseld's connections read with (one
 * allocation per reply object); exposed for tests. */
redisReplyObjectFunctions *redis_reply_functions(void);

#endif
