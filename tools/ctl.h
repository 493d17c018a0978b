/*
 * varselctl internals shared by its files:
 *
 *   varselctl.c   main: options, help, where Redis and the admin API are
 *   ctl_redis.c   the synchronous Redis connection (hiredis), URL parsing
 *   ctl_http.c    GET on the admin API over a plain socket (http_parser)
 *   ctl_out.c     tables, times, printable cells, error messages
 *   ctl_stats.c   `stats`
 *   ctl_event.c   `status`, `send-test`
 *   ctl_devices.c `devices`, `tokens purge`
 *   ctl_dead.c    `dead list`, `dead replay`
 *
 * Every command returns an exit code: CTL_OK, CTL_FAIL (the command failed
 * or found nothing) or CTL_USAGE. Errors go to stderr as
 * "varselctl: <what>"; results go to stdout, as tables or (--json) as one
 * JSON document.
 */
#ifndef VARSEL_CTL_H
#define VARSEL_CTL_H

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CTL_OK 0
#define CTL_FAIL 1
#define CTL_USAGE 2

#define CTL_DEFAULT_REDIS "redis://127.0.0.1:6379/0"
#define CTL_DEFAULT_PREFIX "varsel:"
#define CTL_DEFAULT_STREAM "varsel:events"
#define CTL_DEFAULT_ADMIN "127.0.0.1:9470"
#define CTL_DEFAULT_STATUS_TTL_S 604800    /* [redis] status_ttl_s default */
#define CTL_TOMBSTONE_TTL_S 2592000        /* as queue/registry.c: 30 days */

/* Where Redis is: the parts of a redis:// URL. Strings owned. */
struct ctl_redis_addr {
    char *host;                  /* without brackets */
    int port;
    char *user, *password;       /* NULL when absent; the password is never printed */
    int db;
    /* [redis] sentinels of --config: the master is asked for there (host
     * and port above are then filled in on connecting) */
    char **sentinel_hosts;       /* IP literals */
    int *sentinel_ports;
    size_t n_sentinels;
    char *master_name;
    char *sentinel_password;     /* never printed */
};

/* Options of all commands (each command uses its own). */
struct ctl_opts {
    const char *redis_url, *prefix, *stream, *admin, *token, *config_path;
    bool json;
    bool help;
    const char *text;            /* send-test --text */
    double timeout_s;            /* send-test --timeout; < 0 = default */
    const char *since;           /* dead list/replay --since */
    long count;                  /* dead list --count; < 0 = default */
    long scan;                   /* status --scan: receipts looked at; < 0 = default */
    long ttl_s;                  /* dead replay --ttl: new deadline; < 0 = keep */
};

struct ctl {
    struct ctl_opts o;
    /* resolved from options, --config, the environment and defaults */
    struct ctl_redis_addr r;
    char *prefix, *stream;       /* owned */
    char admin_host[256];
    int admin_port;
    char *token;                 /* owned, NULL = none */
    int64_t status_ttl_s;
    redisContext *rc;            /* NULL until ctl_redis() */
};

/* ---- output (ctl_out.c) ---------------------------------------------------- */

/* "varselctl: " + message on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A table printed with columns padded to their widest cell (display width:
 * UTF-8 characters), two blanks apart, header first. Cells are copied and
 * made printable (control bytes and invalid UTF-8 become '?').
 */
struct ctl_table;
struct ctl_table *ctl_table_new(size_t ncols, const char *const *header);
void ctl_table_add(struct ctl_table *t, const char *const *cells);
size_t ctl_table_rows(const struct ctl_table *t);
/* Print to |fp| with |indent| blanks in front of every line; frees |t|. */
void ctl_table_print(struct ctl_table *t, FILE *fp, int indent);
void ctl_table_free(struct ctl_table *t);

/* A copy of |s| (|len| bytes) safe for a terminal: control bytes and bad
 * UTF-8 become '?', cut to |max| characters with "…" (0 = no limit). */
char *ctl_printable(const char *s, size_t len, size_t max);

/* "2026-11-28T14:00:00.123Z" for |ms| since the epoch (UTC); "-" for <= 0. */
const char *ctl_time(int64_t ms, char *out, size_t outlen);
/* Milliseconds from a stream id "1732780800000-0" (0 when not one). */
int64_t ctl_id_ms(const char *id);
/* A device token as it may be shown: first 8 characters and "…". */
const char *ctl_token_cut(const char *token, char *out, size_t outlen);

/* Print |doc| (pretty, with a newline) and free it. */
void ctl_print_json(cJSON *doc);
/* cJSON string from |len| bytes that may not be valid UTF-8 (bad bytes become U+FFFD). */
cJSON *ctl_json_str(const char *s, size_t len);

/* ---- Redis (ctl_redis.c) --------------------------------------------------- */

/* Parse redis://[user:password@]host[:port][/db]. Returns 0, or -1 with a
 * message (never containing the password) in |err|. */
int ctl_redis_url_parse(const char *url, struct ctl_redis_addr *out, char *err, size_t errlen);
void ctl_redis_addr_free(struct ctl_redis_addr *a);
/* "host:port" / "[v6]:port" for messages. */
const char *ctl_redis_where(const struct ctl *c, char *out, size_t outlen);

/* The connection, made (AUTH, SELECT) on first use; NULL after printing
 * "cannot connect to Redis at HOST:PORT: why". With Sentinels the master's
 * address is asked for first (each Sentinel in turn), and the server found
 * must say it is a master (ROLE). */
redisContext *ctl_redis(struct ctl *c);
/* Set the reply timeout (for blocking reads). */
void ctl_redis_timeout(struct ctl *c, long ms);

/*
 * Run a command given as |argc| strings (|lens| may be NULL for C strings).
 * Returns the reply (free with freeReplyObject), or NULL after printing
 * the I/O error; an error reply is returned as it is unless |fail_on_err|,
 * in which case it is printed ("Redis: ERR ...") and NULL returned.
 */
redisReply *ctl_cmd(struct ctl *c, bool fail_on_err, int argc, const char **argv,
                    const size_t *lens);

/* ctl_cmd with the arguments written out: CTL_CMD(c, "HGET", key, field);
 * errors are printed and give NULL. */
#define CTL_CMD(c, ...)                                                        \
    ctl_cmd((c), true, (int)(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(const char *)), \
            (const char *[]){ __VA_ARGS__ }, NULL)

/* Key builders (malloc'd): <prefix>SUFFIX, <prefix>{TENANT}:KIND:ID. */
char *ctl_key(const struct ctl *c, const char *suffix);
char *ctl_key_tenant(const struct ctl *c, const char *tenant, const char *kind,
                     const char *id);

/* A hash reply (HGETALL) as pairs: value of field |name|, or NULL. */
const redisReply *ctl_hash_get(const redisReply *h, const char *name);
/* Field |name| of one stream entry's flat field array, or NULL. */
const redisReply *ctl_entry_field(const redisReply *fields, const char *name);
/* Its value as a C string ("" when absent or not a string). */
const char *ctl_entry_str(const redisReply *fields, const char *name);

/* ---- admin API (ctl_http.c) ------------------------------------------------ */

/*
 * GET |path| from the admin API with the bearer token if any. Returns the
 * HTTP status (and the body, malloc'd, in |*body|), or -1 after printing
 * why the request failed ("cannot connect to the admin API at ...").
 */
int ctl_http_get(struct ctl *c, const char *path, char **body, size_t *body_len);

/* ---- commands -------------------------------------------------------------- */

int ctl_cmd_stats(struct ctl *c, int argc, char **argv);
int ctl_cmd_status(struct ctl *c, int argc, char **argv);
int ctl_cmd_send_test(struct ctl *c, int argc, char **argv);
int ctl_cmd_devices(struct ctl *c, int argc, char **argv);
int ctl_cmd_tokens(struct ctl *c, int argc, char **argv);
int ctl_cmd_dead(struct ctl *c, int argc, char **argv);

/* Print the help of |cmd| ("dead", "tokens", ...) to |fp|; false if unknown. */
bool ctl_help(const char *cmd, FILE *fp);

#endif
