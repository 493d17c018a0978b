/*
 * The admin HTTP server of varseld (docs/admin.md): HTTP/1.1 with
 * keep-alive on the daemon's libuv loop, parsed by libhttp-parser.
 *
 *   GET /healthz                  200 "ok": the loop is alive (no auth)
 *   GET /readyz                   200 or 503 {"ready":false,"reasons":[...]}
 *   GET /metrics                  Prometheus text 0.0.4 (no auth)
 *   GET /v1/stats                 the metrics as JSON, plus "pipeline" and "admin"
 *   GET /v1/events/TENANT/ID      per-device status of one event
 *   GET /v1/devices/TENANT/USER   a user's devices, tokens cut to 8 characters
 *   GET /                         the status page (daemon/status_page.c)
 *
 * With a token configured every endpoint but /healthz and /metrics needs
 * "Authorization: Bearer TOKEN" (the page also takes "/?token=TOKEN").
 * Everything is non-blocking; each connection has bounded buffers, one
 * request in progress at a time and a deadline per state; the number of
 * connections is capped. Redis-backed endpoints use a connection of the
 * admin's own (queue/redis.h), never the pipeline's.
 *
 * The request parsing and routing are exposed below (admin_http_*,
 * admin_route, admin_token_ok) so they can be tested without a socket.
 */
#ifndef VARSEL_ADMIN_H
#define VARSEL_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>
#include <uv.h>

#include "queue/redis.h"

struct pipeline;
struct pipeline_app;

/* Defaults of the limits in struct admin_config (used when a field is 0). */
#define ADMIN_MAX_CONNECTIONS 256       /* more are accepted and closed at once */
#define ADMIN_MAX_REQUEST 16384         /* bytes of one request: line, headers, body */
#define ADMIN_REQUEST_TIMEOUT_MS 10000  /* a whole request must arrive within this */
#define ADMIN_REDIS_TIMEOUT_MS 3000     /* a Redis-backed answer within this, else 503 */
#define ADMIN_URL_MAX 2048              /* longer request targets get 414 */
#define ADMIN_SEGMENT_MAX 256           /* a decoded path segment (tenant, id, user) */

struct admin_config {
    const char *host;            /* IP literal to listen on (no brackets) */
    int port;
    const char *token;           /* bearer token; NULL or "" = no authentication */
    struct redis_conn_config redis; /* for the admin's own connection */
    const char *stream, *group, *prefix; /* as [redis] stream, group, prefix */
    const struct pipeline_app *apps; /* borrowed, |n_apps| of them (readiness) */
    size_t n_apps;
    struct pipeline *pipeline;   /* borrowed, for /v1/stats; may be NULL */
    const char *version;
    size_t max_connections;      /* 0: ADMIN_MAX_CONNECTIONS */
    size_t max_request;          /* 0: ADMIN_MAX_REQUEST */
    uint32_t request_timeout_ms; /* 0: ADMIN_REQUEST_TIMEOUT_MS */
    uint32_t redis_timeout_ms;   /* 0: ADMIN_REDIS_TIMEOUT_MS */
};

struct admin;

/*
 * Start the admin server: connect its Redis connection and listen on
 * host:port. Strings in |cfg| are copied; |apps| and |pipeline| are
 * borrowed until admin_close. When the address cannot be bound, returns 0
 * all the same, logs an error and tries again every 10 s (deliveries never
 * depend on the admin server). Returns -1 only for an address that cannot
 * be used at all (bad literal), with a message in |err|.
 */
int admin_new(uv_loop_t *loop, const struct admin_config *cfg, struct admin **out,
              char *err, size_t errlen);

/* From now on /readyz answers 503 ("shutting down"); the rest keeps working. */
void admin_set_stopping(struct admin *a);

/*
 * Stop listening, close every connection (answers in progress are dropped)
 * and the Redis connection; frees |a| once libuv has closed its handles.
 * NULL is a no-op. |apps| and |pipeline| are not used afterwards.
 */
void admin_close(struct admin *a);

/* Figures of the admin server (also in /v1/stats under "admin"). */
struct admin_stats {
    uint64_t connections;        /* accepted and served */
    uint64_t rejected;           /* accepted over the limit and closed at once */
    uint64_t requests;           /* complete requests answered */
    uint64_t status_2xx, status_4xx, status_5xx;
    uint64_t timeouts;           /* connections closed by a deadline */
    size_t open;                 /* connections open now */
    bool listening;
};
void admin_get_stats(const struct admin *a, struct admin_stats *out);

/* ---- request parsing (exposed for tests) -------------------------------- */

struct admin_request {
    int method;                  /* enum http_method */
    char url[ADMIN_URL_MAX + 1]; /* request target as sent, NUL-terminated */
    size_t url_len;
    char auth[512];              /* the Authorization header's value */
    size_t auth_len;
    int auth_count;              /* Authorization headers seen */
    bool url_too_long, auth_too_long;
    bool keep_alive;             /* http_should_keep_alive at the end */
    bool upgrade;                /* Upgrade/CONNECT: the connection is closed after */
    size_t body_bytes;
};

/*
 * An HTTP/1.x request parser over libhttp-parser: feed bytes, get one
 * complete request at a time. The parser pauses after each request, so
 * pipelined bytes stay with the caller until it asks for the next one.
 */
struct admin_http {
    http_parser parser;
    struct admin_request req;
    size_t max_request;          /* bytes one request may take */
    size_t msg_bytes;            /* bytes of the current request so far */
    bool headers_done;
    bool complete;               /* |req| holds a complete request */
    int error;                   /* 0, or the status to answer: 400, 413, 414, 431 */
    bool in_value;               /* last callback was a header value */
    bool value_is_auth;          /* the current header is Authorization */
    char name[32];               /* current header name (cut) */
    size_t name_len;
};

void admin_http_init(struct admin_http *h, size_t max_request);

/*
 * Feed |len| bytes. Returns how many were used; stops early after a
 * complete request (h->complete) or an error (h->error, the connection is
 * to be answered and closed). Bytes after a complete request are not used:
 * feed them again after admin_http_next.
 */
size_t admin_http_feed(struct admin_http *h, const char *data, size_t len);

/* Forget the completed request and continue with the next one. */
void admin_http_next(struct admin_http *h);

/* ---- routing (exposed for tests) ---------------------------------------- */

enum admin_route_id {
    ADMIN_R_NONE,                /* not found (404) */
    ADMIN_R_PAGE,
    ADMIN_R_HEALTHZ,
    ADMIN_R_READYZ,
    ADMIN_R_METRICS,
    ADMIN_R_STATS,
    ADMIN_R_EVENT,               /* arg[0] tenant, arg[1] event id */
    ADMIN_R_DEVICES,             /* arg[0] tenant, arg[1] user */
};

struct admin_target {
    enum admin_route_id route;
    int status;                  /* 0, or 400 for a bad path (see |why|) */
    const char *why;             /* static text for a 400 */
    char arg[2][ADMIN_SEGMENT_MAX + 1]; /* percent-decoded path segments */
    char query_token[300];       /* "token" query parameter of "/", decoded */
    bool has_query_token;
};

/*
 * Route a request target (origin form "/path?query", or absolute form).
 * Path segments are percent-decoded one by one (so %2F never splits a
 * segment); a bad escape, a control character (also encoded), an empty or
 * too long segment, or a tenant that is not a slug ([a-z0-9][a-z0-9_-]{0,63})
 * give status 400. Returns 0, or -1 when the target cannot be parsed at all
 * (then status is 400 too).
 */
int admin_route(const char *url, size_t len, struct admin_target *out);

/*
 * Does the Authorization header value |hdr| carry |token| ("Bearer" in any
 * case, then blanks, then the token)? Compares in constant time.
 */
bool admin_token_ok(const char *token, const char *hdr, size_t hdr_len);

/* Percent-decode [s, s+n) into |out| (|outlen| bytes incl. NUL). Returns the
 * length, or -1 for a bad escape, a control character or no room. */
int admin_pct_decode(const char *s, size_t n, char *out, size_t outlen);

#endif
