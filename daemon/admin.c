/*
 * Admin HTTP server: a small HTTP/1.1 server on the daemon's libuv loop.
 *
 * Layers, bottom up:
 *   uv_tcp (one per connection, with one uv_timer for its deadline)
 *     ⇄ admin_http: libhttp-parser, paused after each request, so one
 *       request is in progress per connection and pipelined bytes wait in
 *       the connection's input buffer
 *     ⇄ admin_route: request target → endpoint and decoded arguments
 *     ⇄ handlers[] (the admin surface, all read-only, with which of them
 *       need the token): answer at once (healthz, metrics, stats, the page) or
 *       after a reply on the admin's own Redis connection (events,
 *       devices, the consumer-group check of readyz)
 *
 * A connection is in one state at a time, and its timer means what the
 * state says:
 *   READING  a request is being received; deadline request_timeout_ms from
 *            the start of the state (accept, or the end of the previous
 *            answer), not renewed by partial data: slowloris and idle
 *            keep-alive connections end there.
 *   WAITING  a Redis reply is due; after redis_timeout_ms the client gets
 *            503 and the query is detached (it frees itself when Redis
 *            answers or the connection drops: queue/redis.c calls every
 *            callback once).
 *   WRITING  the answer is being written; reading is stopped, so input is
 *            bounded by the one input buffer; deadline request_timeout_ms.
 *   LINGER   after an answer with "Connection: close": FIN sent, input
 *            read and dropped until EOF or 2 s, then closed, so the client
 *            sees the answer rather than a reset.
 *
 * /metrics and /v1/stats renderings (and the pipeline gauges readyz reads)
 * are reused for RENDER_CACHE_MS: at the series cap one rendering takes
 * milliseconds of the loop, and /metrics needs no token.
 *
 * Ownership: the struct conn embeds its uv_tcp_t and uv_timer_t and is
 * freed in the second close callback, never inside one of its own
 * callbacks. A query points at its connection and the connection at its
 * query; whichever goes first clears the other's pointer. The struct admin
 * counts the handles and connections that still refer to it (|refs|) and
 * is freed after admin_close when that count reaches zero.
 */
#include "daemon/admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/pipeline.h"
#include "daemon/stats.h"
#include "daemon/status_page.h"

#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define IN_CAP 16384               /* input buffer of one connection */
#define LINGER_MS 2000             /* after an answer that closes the connection */
#define BIND_RETRY_MS 10000        /* try to listen again after a failure */
#define GROUP_CACHE_MS 2000        /* readyz re-checks the consumer group this often */
#define GROUP_OVERDUE_MS 10000     /* reset the admin Redis connection after this */
#define MAX_QUERIES 64             /* Redis queries outstanding at most */
#define RENDER_CACHE_MS 250        /* /metrics and /v1/stats are rendered at most this often */

/* ==== request parsing ===================================================== */

static struct admin_http *http_of(http_parser *p)
{
    return CONTAINER_OF(p, struct admin_http, parser);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct admin_request *r = &http_of(p)->req;
    if (r->url_too_long || r->url_len + len > ADMIN_URL_MAX) {
        r->url_too_long = true;
        return 0;
    }
    memcpy(r->url + r->url_len, at, len);
    r->url_len += len;
    r->url[r->url_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct admin_http *h = http_of(p);
    if (h->in_value || h->name_len == SIZE_MAX) {
        h->name_len = 0;
        h->in_value = false;
    }
    /* Names longer than the buffer are not ones we look at. */
    if (h->name_len + len >= sizeof h->name) {
        h->name_len = sizeof h->name;
        return 0;
    }
    memcpy(h->name + h->name_len, at, len);
    h->name_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct admin_http *h = http_of(p);
    struct admin_request *r = &h->req;
    if (!h->in_value) {
        h->in_value = true;
        h->value_is_auth = h->name_len == 13 && strncasecmp(h->name, "authorization", 13) == 0;
        if (h->value_is_auth)
            r->auth_count++;
    }
    if (!h->value_is_auth || r->auth_count != 1)
        return 0;
    if (r->auth_too_long || r->auth_len + len >= sizeof r->auth) {
        r->auth_too_long = true;
        return 0;
    }
    memcpy(r->auth + r->auth_len, at, len);
    r->auth_len += len;
    r->auth[r->auth_len] = '\0';
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct admin_http *h = http_of(p);
    h->headers_done = true;
    h->req.method = (int)p->method;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    (void)at;
    http_of(p)->req.body_bytes += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct admin_http *h = http_of(p);
    h->complete = true;
    h->req.keep_alive = http_should_keep_alive(p) != 0;
    h->req.upgrade = p->upgrade != 0;
    /* One request at a time: the caller resumes with admin_http_next. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void request_reset(struct admin_http *h)
{
    memset(&h->req, 0, sizeof h->req);
    h->msg_bytes = 0;
    h->headers_done = false;
    h->complete = false;
    h->in_value = false;
    h->value_is_auth = false;
    h->name_len = SIZE_MAX; /* "start a new name" */
}

void admin_http_init(struct admin_http *h, size_t max_request)
{
    memset(h, 0, sizeof *h);
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->max_request = max_request ? max_request : ADMIN_MAX_REQUEST;
    request_reset(h);
}

void admin_http_next(struct admin_http *h)
{
    request_reset(h);
    http_parser_pause(&h->parser, 0);
}

size_t admin_http_feed(struct admin_http *h, const char *data, size_t len)
{
    if (h->complete || h->error != 0 || len == 0)
        return 0;
    size_t room = h->max_request - h->msg_bytes;
    size_t n = len < room ? len : room;
    size_t used = n ? http_parser_execute(&h->parser, &parser_settings, data, n) : 0;
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    h->msg_bytes += used;
    if (h->req.url_too_long) {
        h->error = 414;
        return used;
    }
    if (h->complete)
        return used;
    if (e != HPE_OK) {
        h->error = e == HPE_HEADER_OVERFLOW ? 431 : 400;
        return used;
    }
    if (h->msg_bytes >= h->max_request)
        h->error = h->headers_done ? 413 : 431;
    return used;
}

/* ==== routing ============================================================== */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int admin_pct_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return -1;
        if (j + 1 >= outlen)
            return -1;
        out[j++] = (char)c;
    }
    if (outlen == 0)
        return -1;
    out[j] = '\0';
    return (int)j;
}

static bool is_slug(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

struct seg {
    const char *p;
    size_t n;
};

static bool seg_is(const struct seg *s, const char *word)
{
    return s->n == strlen(word) && memcmp(s->p, word, s->n) == 0;
}

/* The "token" parameter of a query string, decoded, into |t|. */
static void query_token(const char *q, size_t n, struct admin_target *t)
{
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        if (eq && eq - q == 5 && memcmp(q, "token", 5) == 0) {
            if (admin_pct_decode(eq + 1, (size_t)(pe - eq - 1), t->query_token,
                                 sizeof t->query_token) >= 0)
                t->has_query_token = true;
            return;
        }
        q = pe + 1;
    }
}

/*
 * The endpoints under "/" (which is the status page): fixed leading
 * segments, then |nargs| percent-decoded arguments, the first a tenant.
 * Who may call them and what answers is the handler table in the server
 * part below.
 */
static const struct route_def {
    enum admin_route_id route;
    const char *fixed[2];
    int nfixed, nargs;
} route_defs[] = {
    { ADMIN_R_HEALTHZ, { "healthz" }, 1, 0 },
    { ADMIN_R_READYZ, { "readyz" }, 1, 0 },
    { ADMIN_R_METRICS, { "metrics" }, 1, 0 },
    { ADMIN_R_STATS, { "v1", "stats" }, 2, 0 },
    { ADMIN_R_EVENT, { "v1", "events" }, 2, 2 },
    { ADMIN_R_DEVICES, { "v1", "devices" }, 2, 2 },
};

int admin_route(const char *url, size_t len, struct admin_target *t)
{
    memset(t, 0, sizeof *t);
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (len == 0 || http_parser_parse_url(url, len, 0, &u) != 0) {
        t->status = 400;
        t->why = "bad request target";
        return -1;
    }
    const char *path = "/";
    size_t plen = 1;
    if (u.field_set & (1 << UF_PATH)) {
        path = url + u.field_data[UF_PATH].off;
        plen = u.field_data[UF_PATH].len;
    }
    if (plen == 0 || path[0] != '/') {
        t->status = 400;
        t->why = "bad request target";
        return -1;
    }
    /* Split into at most 5 raw segments; more means no such endpoint. */
    struct seg sg[5];
    int ns = 0;
    if (plen > 1) {
        const char *p = path + 1, *end = path + plen;
        for (;;) {
            const char *sl = memchr(p, '/', (size_t)(end - p));
            const char *se = sl ? sl : end;
            if (ns == 5) {
                t->route = ADMIN_R_NONE;
                return 0;
            }
            sg[ns].p = p;
            sg[ns].n = (size_t)(se - p);
            ns++;
            if (!sl)
                break;
            p = sl + 1;
        }
    }
    if (ns == 0) {
        t->route = ADMIN_R_PAGE;
        if (u.field_set & (1 << UF_QUERY))
            query_token(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len, t);
        return 0;
    }
    const struct route_def *rd = NULL;
    for (size_t i = 0; i < sizeof route_defs / sizeof route_defs[0] && rd == NULL; i++) {
        const struct route_def *d = &route_defs[i];
        bool match = ns == d->nfixed + d->nargs;
        for (int k = 0; match && k < d->nfixed; k++)
            match = seg_is(&sg[k], d->fixed[k]);
        if (match)
            rd = d;
    }
    t->route = rd ? rd->route : ADMIN_R_NONE;
    if (rd == NULL || rd->nargs == 0)
        return 0;
    for (int i = 0; i < rd->nargs; i++) {
        const struct seg *s = &sg[rd->nfixed + i];
        if (s->n == 0) {
            t->status = 400;
            t->why = "empty path segment";
            return 0;
        }
        if (admin_pct_decode(s->p, s->n, t->arg[i], sizeof t->arg[i]) <= 0) {
            t->status = 400;
            t->why = "bad path segment (escape, control character or length)";
            return 0;
        }
    }
    if (!is_slug(t->arg[0])) {
        t->status = 400;
        t->why = "tenant must match [a-z0-9][a-z0-9_-]{0,63}";
    }
    return 0;
}

bool admin_token_ok(const char *token, const char *hdr, size_t n)
{
    if (token == NULL || hdr == NULL)
        return false;
    size_t i = 0;
    while (i < n && (hdr[i] == ' ' || hdr[i] == '\t'))
        i++;
    if (n - i < 7 || strncasecmp(hdr + i, "bearer", 6) != 0 ||
        (hdr[i + 6] != ' ' && hdr[i + 6] != '\t'))
        return false;
    i += 6;
    while (i < n && (hdr[i] == ' ' || hdr[i] == '\t'))
        i++;
    while (n > i && (hdr[n - 1] == ' ' || hdr[n - 1] == '\t'))
        n--;
    /* Compare digests, so the time taken says nothing about the token. */
    unsigned char a[32], b[32];
    unsigned int la = 0, lb = 0;
    if (EVP_Digest(token, strlen(token), a, &la, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(hdr + i, n - i, b, &lb, EVP_sha256(), NULL) != 1 || la != 32 || lb != 32)
        return false;
    return CRYPTO_memcmp(a, b, 32) == 0;
}

/* ==== the server ========================================================== */

enum cstate { CS_READING, CS_WAITING, CS_WRITING, CS_LINGER, CS_CLOSING };

/*
 * An answer body. Reference-counted because a rendering of /metrics or
 * /v1/stats is kept for RENDER_CACHE_MS and written to every client asking
 * meanwhile: at the series cap a rendering takes milliseconds of the loop,
 * so a flood of scrapes must not render each time.
 */
struct body {
    int refs;
    bool is_static;              /* |data| is not ours to free */
    size_t len;
    char *data;
};

/* Takes ownership of |data| (malloc'd) unless |is_static|; one reference. */
static struct body *body_new(char *data, size_t len, bool is_static)
{
    struct body *b = xmalloc(sizeof *b);
    b->refs = 1;
    b->is_static = is_static;
    b->len = len;
    b->data = data;
    return b;
}

static void body_unref(struct body *b)
{
    if (b == NULL || --b->refs > 0)
        return;
    if (!b->is_static)
        free(b->data);
    free(b);
}

/* A rendering kept for RENDER_CACHE_MS. */
struct render_cache {
    struct body *body;           /* one reference, or NULL */
    uint64_t at_ms;
};

enum lstate { L_CLOSED, L_OPEN, L_CLOSING };

struct query;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;            /* deadline of the current state */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct admin *a;
    struct conn *prev, *next;    /* a->conns */
    struct conn *wnext;          /* a->ready_waiters */
    int handles;                 /* uv handles not yet closed */
    enum cstate state;
    bool reading;                /* uv_read_start in effect */
    bool close_after;            /* end the connection after this answer */
    bool waiting_ready;          /* in a->ready_waiters */
    struct query *query;         /* Redis query in progress */
    struct admin_http http;
    char in[IN_CAP];             /* bytes read and not yet fed to the parser */
    size_t in_len;
    char head[1024];             /* status line and headers being written */
    struct body *body;           /* body being written (one reference) */
};

enum qkind { Q_EVENT, Q_DEVICES };

struct query {
    struct admin *a;
    struct conn *c;              /* NULL once the client went away or timed out */
    enum qkind kind;
    char tenant[ADMIN_SEGMENT_MAX + 1];
    char id[ADMIN_SEGMENT_MAX + 1];
};

struct admin {
    uv_loop_t *loop;
    struct admin_config cfg;     /* strings below are our copies */
    char *host, *token, *stream, *group_name, *prefix, *version;
    char *redis_host, *redis_user, *redis_password;
    uv_tcp_t server;
    enum lstate lstate;
    uv_timer_t retry_timer;      /* bind retries */
    bool bind_failed;            /* the last attempt failed (logged once) */
    struct redis_conn *rc;       /* the admin's own Redis connection */
    struct conn *conns;          /* open connections */
    struct conn *ready_waiters;  /* readyz requests waiting for the group check */
    size_t queries;              /* Redis queries outstanding */
    int refs;                    /* handles and connections not yet freed */
    bool stopping, closing;
    uint64_t started_ms;         /* mono_ms at admin_new */
    uint64_t last_reject_log_ms;
    struct {
        bool inflight;
        uint64_t sent_ms;        /* when the check in flight was sent */
        uint64_t checked_ms;     /* when the last answer came, 0 = none */
        int state;               /* 1 exists, 0 missing, -1 error */
        char why[192];
    } group;
    struct admin_stats st;
    struct render_cache metrics_cache, stats_cache;
    struct {
        uint64_t at_ms;          /* when the pipeline's gauges were read, 0 = never */
        bool up[2];              /* cmd, read */
    } pconn;
};

static void conn_close(struct conn *c);
static void process_input(struct conn *c);
static void start_listen(struct admin *a);

static void admin_unref(struct admin *a)
{
    if (--a->refs > 0 || !a->closing)
        return;
    free(a->host);
    free_secret(a->token);
    free(a->stream);
    free(a->group_name);
    free(a->prefix);
    free(a->version);
    free(a->redis_host);
    free(a->redis_user);
    free_secret(a->redis_password);
    body_unref(a->metrics_cache.body);
    body_unref(a->stats_cache.body);
    free(a);
}

/* ---- answers ------------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void timer_start(struct conn *c, uint32_t ms);

static void on_timer(uv_timer_t *t);

static void start_reading(struct conn *c);

/* Go on after an answer was written: the next request, or the end. */
static void after_answer(struct conn *c)
{
    if (c->close_after || c->a->closing) {
        c->state = CS_LINGER;
        timer_start(c, LINGER_MS);
        /* Send FIN once the answer is out; then drop input until EOF. */
        uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, NULL);
        start_reading(c);
        return;
    }
    c->state = CS_READING;
    admin_http_next(&c->http);
    timer_start(c, c->a->cfg.request_timeout_ms);
    start_reading(c);
    process_input(c);
}

static void on_written(uv_write_t *w, int status)
{
    struct conn *c = CONTAINER_OF(w, struct conn, wreq);
    body_unref(c->body);
    c->body = NULL;
    if (c->state == CS_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    after_answer(c);
}

static void stop_reading(struct conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/*
 * Write one answer. Takes the caller's reference to |body|. |extra| holds
 * further header lines, each ending in CRLF.
 */
static void respond_body(struct conn *c, int status, const char *ctype, struct body *body,
                         const char *extra)
{
    struct admin *a = c->a;
    size_t len = body->len;
    if (c->state == CS_CLOSING) {
        body_unref(body);
        return;
    }
    a->st.requests++;
    if (status < 300)
        a->st.status_2xx++;
    else if (status < 500)
        a->st.status_4xx++;
    else
        a->st.status_5xx++;
    if (!c->http.complete || !c->http.req.keep_alive || c->http.req.upgrade || a->closing)
        c->close_after = true;
    stop_reading(c);
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: varseld\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "%s"
                     "Connection: %s\r\n\r\n",
                     status, reason_phrase(status), ctype, len, extra ? extra : "",
                     c->close_after ? "close" : "keep-alive");
    if (n < 0 || (size_t)n >= sizeof c->head) {
        /* The headers are ours and short; this is a bug, not input. */
        log_error("admin", "answer headers too long");
        body_unref(body);
        conn_close(c);
        return;
    }
    c->body = body;
    c->state = CS_WRITING;
    timer_start(c, a->cfg.request_timeout_ms);
    uv_buf_t bufs[2] = { uv_buf_init(c->head, (unsigned)n),
                         uv_buf_init(body->data, (unsigned)len) };
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, len ? 2 : 1, on_written);
    if (rc != 0) {
        body_unref(body);
        c->body = NULL;
        conn_close(c);
    }
}

/* Write one answer; takes ownership of |data| (malloc'd) unless |is_static|. */
static void respond(struct conn *c, int status, const char *ctype, char *data, size_t len,
                    bool is_static, const char *extra)
{
    respond_body(c, status, ctype, body_new(data, len, is_static), extra);
}

/* Answer with a JSON document (consumed). */
static void respond_json(struct conn *c, int status, cJSON *doc, const char *extra)
{
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (s == NULL) {
        respond(c, 500, "application/json", xstrdup("{\"error\":\"out of memory\"}"), 25,
                false, NULL);
        return;
    }
    respond(c, status, "application/json", s, strlen(s), false, extra);
}

static void respond_error(struct conn *c, int status, const char *msg, const char *extra)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    respond_json(c, status, o, extra);
}

/* ---- connection life ------------------------------------------------------ */

static void timer_start(struct conn *c, uint32_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = CONTAINER_OF(h, struct conn, tcp);
    if (c->state == CS_LINGER) {
        *buf = uv_buf_init(c->in, sizeof c->in); /* dropped anyway */
        return;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof c->in - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = CONTAINER_OF(s, struct conn, tcp);
    if (c->state == CS_CLOSING)
        return;
    if (nread < 0) {
        /* EOF, reset, or no room (UV_ENOBUFS cannot happen while reading:
         * everything read is fed to the parser at once). */
        conn_close(c);
        return;
    }
    if (nread == 0 || c->state == CS_LINGER)
        return;
    c->in_len += (size_t)nread;
    process_input(c);
}

static void start_reading(struct conn *c)
{
    if (c->reading || c->state == CS_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
    else
        conn_close(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles > 0)
        return;
    struct admin *a = c->a;
    free(c);
    admin_unref(a);
}

static void waiters_remove(struct admin *a, struct conn *c)
{
    for (struct conn **pp = &a->ready_waiters; *pp; pp = &(*pp)->wnext) {
        if (*pp == c) {
            *pp = c->wnext;
            break;
        }
    }
    c->wnext = NULL;
    c->waiting_ready = false;
}

/* Close |c| now; it is freed in the last close callback. */
static void conn_close(struct conn *c)
{
    if (c->state == CS_CLOSING)
        return;
    struct admin *a = c->a;
    c->state = CS_CLOSING;
    if (c->waiting_ready)
        waiters_remove(a, c);
    if (c->query) {
        c->query->c = NULL;
        c->query = NULL;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    a->st.open--;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void answer_group_timeout(struct conn *c);

static void on_timer(uv_timer_t *t)
{
    struct conn *c = CONTAINER_OF(t, struct conn, timer);
    struct admin *a = c->a;
    switch (c->state) {
    case CS_READING:
        a->st.timeouts++;
        if (c->http.msg_bytes > 0 || c->in_len > 0) {
            /* A request started and did not finish in time (slowloris). */
            c->close_after = true;
            respond_error(c, 408, "request not complete in time", NULL);
        } else {
            conn_close(c);
        }
        return;
    case CS_WAITING:
        a->st.timeouts++;
        if (c->waiting_ready) {
            waiters_remove(a, c);
            answer_group_timeout(c);
            return;
        }
        if (c->query) {
            c->query->c = NULL;
            c->query = NULL;
        }
        respond_error(c, 503, "redis did not answer in time", NULL);
        return;
    case CS_WRITING:
        a->st.timeouts++;
        conn_close(c);
        return;
    case CS_LINGER:
    case CS_CLOSING:
        conn_close(c);
        return;
    }
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin *a = CONTAINER_OF(server, struct admin, server);
    if (status < 0) {
        log_warn("admin", "accept: %s", uv_strerror(status));
        return;
    }
    if (a->closing || a->st.open >= a->cfg.max_connections) {
        /* Over the limit: take the connection off the backlog and end it. */
        uv_tcp_t *t = xmalloc(sizeof *t);
        uv_tcp_init(a->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0)
            a->st.rejected++;
        uv_close((uv_handle_t *)t, on_reject_closed);
        uint64_t now = mono_ms();
        if (!a->closing && (a->last_reject_log_ms == 0 || now - a->last_reject_log_ms >= 10000)) {
            log_warn("admin", "%zu connections open: closing new ones (%llu so far)",
                     a->st.open, (unsigned long long)a->st.rejected);
            a->last_reject_log_ms = now;
        }
        return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->a = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    a->refs++;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->st.open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    a->st.connections++;
    uv_tcp_nodelay(&c->tcp, 1);
    admin_http_init(&c->http, a->cfg.max_request);
    c->state = CS_READING;
    timer_start(c, a->cfg.request_timeout_ms);
    start_reading(c);
}

/* ---- JSON helpers ----------------------------------------------------------- */

/* A JSON string from |len| bytes; invalid UTF-8 and NUL become U+FFFD. */
static cJSON *json_bytes(const char *s, size_t len)
{
    char *o = xmalloc(len * 3 + 1);
    size_t j = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (c != 0 && n > 0 && i + n <= len && utf8_valid(s + i, n)) {
            memcpy(o + j, s + i, n);
            j += n;
            i += n;
        } else {
            memcpy(o + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        }
    }
    o[j] = '\0';
    cJSON *r = cJSON_CreateString(o);
    free(o);
    return r;
}

/* ---- readiness -------------------------------------------------------------- */

/* Is the pipeline's Redis connection |which| up, as its gauge says? */
static bool pipeline_conn_up(const cJSON *families, const char *which)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(families, "varsel_redis_connected");
    const cJSON *series = cJSON_GetObjectItemCaseSensitive(f, "series");
    const cJSON *s;
    cJSON_ArrayForEach(s, series) {
        const cJSON *lb = cJSON_GetObjectItemCaseSensitive(s, "labels");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(lb, "connection");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "value");
        if (cJSON_IsString(name) && strcmp(name->valuestring, which) == 0)
            return cJSON_IsNumber(v) && v->valuedouble >= 1;
    }
    return false;
}

/* Answer /readyz from what is known now. |group_note| overrides the group
 * check's outcome (e.g. a timeout); NULL uses the cache. */
static void answer_ready(struct conn *c, const char *group_note)
{
    struct admin *a = c->a;
    cJSON *reasons = cJSON_CreateArray();
    char buf[256];
    if (a->stopping)
        cJSON_AddItemToArray(reasons, cJSON_CreateString("shutting down"));
    static const char *const pconns[] = { "cmd", "read" };
    uint64_t now = mono_ms();
    if (a->pconn.at_ms == 0 || now - a->pconn.at_ms > RENDER_CACHE_MS) {
        /* The gauges are the pipeline's word; reading them renders the
         * registry, so not more often than the other renderings. */
        cJSON *stats = stats_render_json();
        const cJSON *fams = cJSON_GetObjectItemCaseSensitive(stats, "families");
        for (size_t i = 0; i < 2; i++)
            a->pconn.up[i] = pipeline_conn_up(fams, pconns[i]);
        cJSON_Delete(stats);
        a->pconn.at_ms = now | 1;
    }
    for (size_t i = 0; i < 2; i++) {
        if (!a->pconn.up[i]) {
            snprintf(buf, sizeof buf, "redis: the pipeline's %s connection is down", pconns[i]);
            cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
        }
    }
    if (!redis_conn_ready(a->rc)) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString("redis: the admin connection is down"));
    } else if (group_note != NULL) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString(group_note));
    } else if (a->group.checked_ms == 0) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString("redis: consumer group not checked yet"));
    } else if (a->group.state != 1) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString(a->group.why));
    }
    for (size_t i = 0; i < a->cfg.n_apps; i++) {
        const struct pipeline_app *ap = &a->cfg.apps[i];
        if (ap->apns == NULL && ap->fcm == NULL) {
            snprintf(buf, sizeof buf, "app %s: no provider client", ap->name);
            cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
        }
    }
    bool ready = cJSON_GetArraySize(reasons) == 0;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", ready);
    cJSON_AddItemToObject(o, "reasons", reasons);
    respond_json(c, ready ? 200 : 503, o, NULL);
}

static void answer_group_timeout(struct conn *c)
{
    char note[128];
    snprintf(note, sizeof note, "redis: no answer to XINFO GROUPS within %u ms",
             c->a->cfg.redis_timeout_ms);
    answer_ready(c, note);
}

/* XINFO GROUPS answered (or the connection dropped: |r| NULL). */
static void on_group_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    struct admin *a = priv;
    const redisReply *reply = r;
    a->group.inflight = false;
    a->group.checked_ms = mono_ms() | 1; /* never 0, which means "unknown" */
    if (reply == NULL) {
        a->group.checked_ms = 0;
        a->group.state = -1;
        snprintf(a->group.why, sizeof a->group.why,
                 "redis: the admin connection dropped during XINFO GROUPS");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        bool nokey = strstr(reply->str, "no such key") != NULL;
        a->group.state = nokey ? 0 : -1;
        if (nokey)
            snprintf(a->group.why, sizeof a->group.why,
                     "redis: stream %.64s does not exist (nor does consumer group %.64s)",
                     a->stream, a->group_name);
        else
            snprintf(a->group.why, sizeof a->group.why, "redis: XINFO GROUPS: %.120s",
                     reply->str);
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        a->group.state = 0;
        for (size_t i = 0; i < reply->elements && a->group.state == 0; i++) {
            const redisReply *g = reply->element[i];
            for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
                const redisReply *key = g->element[k], *v = g->element[k + 1];
                if (key->type == REDIS_REPLY_STRING && strcmp(key->str, "name") == 0 &&
                    v->type == REDIS_REPLY_STRING && strcmp(v->str, a->group_name) == 0)
                    a->group.state = 1;
            }
        }
        if (a->group.state == 0)
            snprintf(a->group.why, sizeof a->group.why,
                     "redis: consumer group %.64s does not exist on stream %.64s",
                     a->group_name, a->stream);
    } else {
        a->group.state = -1;
        snprintf(a->group.why, sizeof a->group.why, "redis: unexpected answer to XINFO GROUPS");
    }
    /* Answer everyone who waited; take the list first, answering may close. */
    struct conn *w = a->ready_waiters;
    a->ready_waiters = NULL;
    while (w) {
        struct conn *next = w->wnext;
        w->wnext = NULL;
        w->waiting_ready = false;
        if (w->state == CS_WAITING)
            answer_ready(w, reply == NULL ? a->group.why : NULL);
        w = next;
    }
}

static void handle_readyz(struct conn *c, const struct admin_target *t)
{
    struct admin *a = c->a;
    uint64_t now = mono_ms();
    if (a->group.inflight && now - a->group.sent_ms > GROUP_OVERDUE_MS) {
        /* Redis accepts commands but does not answer: start afresh. The
         * outstanding callbacks get NULL now, which ends the check. */
        redis_conn_reset(a->rc, "XINFO GROUPS overdue");
    }
    if (!redis_conn_ready(a->rc) ||
        (a->group.checked_ms != 0 && now - a->group.checked_ms <= GROUP_CACHE_MS)) {
        answer_ready(c, NULL);
        return;
    }
    if (!a->group.inflight) {
        const char *argv[] = { "XINFO", "GROUPS", a->stream };
        if (redis_conn_cmd_argv(a->rc, on_group_reply, a, 3, argv, NULL) != 0) {
            answer_ready(c, "redis: cannot send XINFO GROUPS");
            return;
        }
        a->group.inflight = true;
        a->group.sent_ms = now;
    }
    c->wnext = a->ready_waiters;
    a->ready_waiters = c;
    c->waiting_ready = true;
    c->state = CS_WAITING;
    timer_start(c, a->cfg.redis_timeout_ms);
}

/* ---- events and devices ------------------------------------------------------ */

/* Order (field, value) pairs by field, bytewise. */
static int cmp_pair(const void *x, const void *y)
{
    const redisReply *a = ((const redisReply *const *)x)[0];
    const redisReply *b = ((const redisReply *const *)y)[0];
    size_t n = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->str, b->str, n);
    return r != 0 ? r : (a->len > b->len) - (a->len < b->len);
}

/*
 * The field/value pairs of an HGETALL reply, sorted by field: fills |out|
 * (xmalloc'd; field, value, field, value...) and returns the number of
 * pairs, or -1 when the reply is not a well-formed array of strings.
 */
static long sorted_pairs(const redisReply *reply, const redisReply ***out)
{
    *out = NULL;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
        return -1;
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    size_t n = reply->elements / 2;
    if (n == 0)
        return 0;
    const redisReply **pairs = xmalloc(reply->elements * sizeof *pairs);
    memcpy(pairs, reply->element, reply->elements * sizeof *pairs);
    qsort(pairs, n, 2 * sizeof *pairs, cmp_pair);
    *out = pairs;
    return (long)n;
}

/* sorted_pairs, or an error answered: 500 for an unexpected reply, 404 for
 * an empty hash (then <= 0 is returned). */
static long pairs_or_answer(struct conn *c, const redisReply *reply, const redisReply ***out)
{
    long n = sorted_pairs(reply, out);
    if (n < 0)
        respond_error(c, 500, "unexpected answer from redis", NULL);
    else if (n == 0)
        respond_error(c, 404, "not found", NULL);
    return n;
}

static void answer_event(struct conn *c, const struct query *q, const redisReply *reply)
{
    const redisReply **pairs;
    long n = pairs_or_answer(c, reply, &pairs);
    if (n <= 0)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", q->tenant);
    cJSON_AddItemToObject(o, "event", json_bytes(q->id, strlen(q->id)));
    cJSON *arr = cJSON_AddArrayToObject(o, "deliveries");
    for (long i = 0; i < n; i++) {
        const redisReply *f = pairs[2 * i], *v = pairs[2 * i + 1];
        const char *colon = memchr(f->str, ':', f->len);
        size_t ulen = colon ? (size_t)(colon - f->str) : f->len;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "user", json_bytes(f->str, ulen));
        cJSON_AddItemToObject(d, "device", colon ? json_bytes(colon + 1, f->len - ulen - 1)
                                                 : cJSON_CreateString(""));
        cJSON_AddItemToObject(d, "status", json_bytes(v->str, v->len));
        cJSON_AddItemToArray(arr, d);
    }
    free(pairs);
    respond_json(c, 200, o, NULL);
}

/* "abcdefgh…": the first 8 characters of a device token. */
static cJSON *cut_token(const char *tok)
{
    size_t n = utf8_cut_len(tok, strlen(tok), 8);
    char buf[16];
    memcpy(buf, tok, n);
    memcpy(buf + n, "\xE2\x80\xA6", 4); /* U+2026 and the NUL */
    return json_bytes(buf, n + 3);
}

static void answer_devices(struct conn *c, const struct query *q, const redisReply *reply)
{
    const redisReply **pairs;
    long n = pairs_or_answer(c, reply, &pairs);
    if (n <= 0)
        return;
    static const char *const strs[] = { "platform", "app", "locale", "environment" };
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", q->tenant);
    cJSON_AddItemToObject(o, "user", json_bytes(q->id, strlen(q->id)));
    cJSON *arr = cJSON_AddArrayToObject(o, "devices");
    for (long i = 0; i < n; i++) {
        const redisReply *f = pairs[2 * i], *v = pairs[2 * i + 1];
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "device", json_bytes(f->str, f->len));
        cJSON *e = cJSON_ParseWithLength(v->str, v->len);
        if (!cJSON_IsObject(e)) {
            cJSON_AddStringToObject(d, "error", "unreadable registry entry");
        } else {
            /* Copy the known fields only; the token never leaves whole. */
            for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(e, strs[k]);
                if (cJSON_IsString(x))
                    cJSON_AddItemToObject(d, strs[k], json_bytes(x->valuestring,
                                                                 strlen(x->valuestring)));
            }
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(e, "updated_at");
            if (cJSON_IsNumber(u))
                cJSON_AddNumberToObject(d, "updated_at", u->valuedouble);
            else if (cJSON_IsString(u))
                cJSON_AddItemToObject(d, "updated_at", json_bytes(u->valuestring,
                                                                  strlen(u->valuestring)));
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "token");
            if (cJSON_IsString(t))
                cJSON_AddItemToObject(d, "token", cut_token(t->valuestring));
        }
        cJSON_Delete(e);
        cJSON_AddItemToArray(arr, d);
    }
    free(pairs);
    respond_json(c, 200, o, NULL);
}

static void on_query_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    struct query *q = priv;
    const redisReply *reply = r;
    q->a->queries--;
    struct conn *c = q->c;
    if (c != NULL) {
        c->query = NULL;
        if (reply == NULL)
            respond_error(c, 503, "redis connection lost", NULL);
        else if (reply->type == REDIS_REPLY_ERROR)
            respond_error(c, 500, "redis answered with an error", NULL);
        else if (q->kind == Q_EVENT)
            answer_event(c, q, reply);
        else
            answer_devices(c, q, reply);
    }
    free(q);
}

static void start_query(struct conn *c, enum qkind kind, const struct admin_target *t)
{
    struct admin *a = c->a;
    if (!redis_conn_ready(a->rc)) {
        respond_error(c, 503, "redis is not connected", NULL);
        return;
    }
    if (a->queries >= MAX_QUERIES) {
        respond_error(c, 503, "too many redis queries in progress", NULL);
        return;
    }
    struct query *q = xcalloc(1, sizeof *q);
    q->a = a;
    q->c = c;
    q->kind = kind;
    snprintf(q->tenant, sizeof q->tenant, "%s", t->arg[0]);
    snprintf(q->id, sizeof q->id, "%s", t->arg[1]);
    char key[2 * ADMIN_SEGMENT_MAX + 300];
    int n = snprintf(key, sizeof key, "%s{%s}:%s:%s", a->prefix, q->tenant,
                     kind == Q_EVENT ? "status" : "devices", q->id);
    if (n < 0 || (size_t)n >= sizeof key) {
        free(q);
        respond_error(c, 400, "key too long", NULL);
        return;
    }
    const char *argv[] = { "HGETALL", key };
    size_t lens[] = { 7, (size_t)n };
    if (redis_conn_cmd_argv(a->rc, on_query_reply, q, 2, argv, lens) != 0) {
        free(q);
        respond_error(c, 503, "redis is not connected", NULL);
        return;
    }
    a->queries++;
    c->query = q;
    c->state = CS_WAITING;
    timer_start(c, a->cfg.redis_timeout_ms);
}

/* ---- the other endpoints ------------------------------------------------------ */

/* The cached rendering when it is fresh enough, else NULL. Returns a new
 * reference. */
static struct body *cached(struct render_cache *rc)
{
    if (rc->body == NULL || mono_ms() - rc->at_ms > RENDER_CACHE_MS)
        return NULL;
    rc->body->refs++;
    return rc->body;
}

/* Keep |b| in |rc| (the cache takes a reference of its own). */
static void cache_put(struct render_cache *rc, struct body *b)
{
    body_unref(rc->body);
    b->refs++;
    rc->body = b;
    rc->at_ms = mono_ms();
}

static void handle_stats(struct conn *c, const struct admin_target *t)
{
    struct admin *a = c->a;
    struct body *b = cached(&a->stats_cache);
    if (b != NULL) {
        respond_body(c, 200, "application/json", b, NULL);
        return;
    }
    cJSON *root = stats_render_json();
    cJSON_AddNumberToObject(root, "time_ms", (double)now_ms());
    cJSON_AddNumberToObject(root, "uptime_s", (double)(mono_ms() - a->started_ms) / 1000.0);
    cJSON_AddStringToObject(root, "version", a->version);
    if (a->cfg.pipeline != NULL) {
        struct pipeline_stats ps;
        pipeline_get_stats(a->cfg.pipeline, &ps);
        cJSON *p = cJSON_AddObjectToObject(root, "pipeline");
        cJSON_AddNumberToObject(p, "events", (double)ps.events);
        cJSON_AddNumberToObject(p, "dead", (double)ps.dead);
        cJSON_AddNumberToObject(p, "deliveries", (double)ps.deliveries);
        cJSON_AddNumberToObject(p, "sent", (double)ps.sent);
        cJSON_AddNumberToObject(p, "invalid_token", (double)ps.invalid_token);
        cJSON_AddNumberToObject(p, "failed", (double)ps.failed);
        cJSON_AddNumberToObject(p, "skipped", (double)ps.skipped);
        cJSON_AddNumberToObject(p, "acked", (double)ps.acked);
        cJSON_AddNumberToObject(p, "inflight", (double)ps.inflight);
        cJSON_AddNumberToObject(p, "jobs", (double)ps.jobs);
    }
    cJSON *ad = cJSON_AddObjectToObject(root, "admin");
    cJSON_AddNumberToObject(ad, "connections_open", (double)a->st.open);
    cJSON_AddNumberToObject(ad, "connections", (double)a->st.connections);
    cJSON_AddNumberToObject(ad, "rejected", (double)a->st.rejected);
    cJSON_AddNumberToObject(ad, "requests", (double)a->st.requests);
    cJSON_AddNumberToObject(ad, "status_2xx", (double)a->st.status_2xx);
    cJSON_AddNumberToObject(ad, "status_4xx", (double)a->st.status_4xx);
    cJSON_AddNumberToObject(ad, "status_5xx", (double)a->st.status_5xx);
    cJSON_AddNumberToObject(ad, "timeouts", (double)a->st.timeouts);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL) {
        respond_error(c, 500, "out of memory", NULL);
        return;
    }
    b = body_new(text, strlen(text), false);
    cache_put(&a->stats_cache, b);
    respond_body(c, 200, "application/json", b, NULL);
}

static void handle_metrics(struct conn *c, const struct admin_target *t)
{
    struct admin *a = c->a;
    static const char ctype[] = "text/plain; version=0.0.4; charset=utf-8";
    struct body *b = cached(&a->metrics_cache);
    if (b == NULL) {
        size_t len = 0;
        char *text = stats_render_prometheus(&len);
        b = body_new(text, len, false);
        cache_put(&a->metrics_cache, b);
    }
    respond_body(c, 200, ctype, b, NULL);
}

/* The page runs only its own inline script and talks only to this server. */
#define PAGE_HEADERS                                                                  \
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "      \
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'\r\n"                                 \
    "Referrer-Policy: no-referrer\r\n"

static void handle_healthz(struct conn *c, const struct admin_target *t)
{
    respond(c, 200, "text/plain; charset=utf-8", (char *)"ok", 2, true, NULL);
}

static void handle_page(struct conn *c, const struct admin_target *t)
{
    respond(c, 200, "text/html; charset=utf-8", (char *)status_page_html,
            status_page_html_len, true, PAGE_HEADERS);
}

static void handle_event(struct conn *c, const struct admin_target *t)
{
    start_query(c, Q_EVENT, t);
}

static void handle_devices(struct conn *c, const struct admin_target *t)
{
    start_query(c, Q_DEVICES, t);
}

/* The admin surface: every endpoint, whether it needs the token, and its
 * handler. All of them only read. */
static const struct {
    bool open;                   /* served without the token */
    void (*fn)(struct conn *c, const struct admin_target *t);
} handlers[] = {
    [ADMIN_R_PAGE] = { false, handle_page },
    [ADMIN_R_HEALTHZ] = { true, handle_healthz },
    [ADMIN_R_READYZ] = { false, handle_readyz },
    [ADMIN_R_METRICS] = { true, handle_metrics },
    [ADMIN_R_STATS] = { false, handle_stats },
    [ADMIN_R_EVENT] = { false, handle_event },
    [ADMIN_R_DEVICES] = { false, handle_devices },
};

static const char *error_text(int status)
{
    switch (status) {
    case 413: return "request too large";
    case 414: return "request target too long";
    case 431: return "request line and headers too large";
    default: return "malformed request";
    }
}

/* A complete request is in c->http.req: check, route and answer it. */
static void dispatch(struct conn *c)
{
    struct admin *a = c->a;
    const struct admin_request *r = &c->http.req;
    stop_reading(c);
    if (r->method != HTTP_GET) {
        respond_error(c, 405, "method not allowed", "Allow: GET\r\n");
        return;
    }
    struct admin_target t;
    admin_route(r->url, r->url_len, &t);
    if (t.route == ADMIN_R_NONE || handlers[t.route].fn == NULL) {
        if (t.status == 400)
            respond_error(c, 400, t.why, NULL);
        else
            respond_error(c, 404, "not found", NULL);
        return;
    }
    if (!handlers[t.route].open && a->token != NULL) {
        bool ok = r->auth_count == 1 && !r->auth_too_long &&
                  admin_token_ok(a->token, r->auth, r->auth_len);
        if (!ok && r->auth_count == 0 && t.route == ADMIN_R_PAGE && t.has_query_token) {
            char hdr[sizeof t.query_token + 8];
            int n = snprintf(hdr, sizeof hdr, "Bearer %s", t.query_token);
            ok = n > 0 && admin_token_ok(a->token, hdr, (size_t)n);
        }
        if (!ok) {
            respond_error(c, 401, "unauthorized", "WWW-Authenticate: Bearer realm=\"varsel\"\r\n");
            return;
        }
    }
    if (t.status == 400) {
        respond_error(c, 400, t.why, NULL);
        return;
    }
    handlers[t.route].fn(c, &t);
}

/* Feed buffered input to the parser; answer a complete or broken request. */
static void process_input(struct conn *c)
{
    while (c->state == CS_READING && c->in_len > 0) {
        size_t used = admin_http_feed(&c->http, c->in, c->in_len);
        if (used > 0) {
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
        }
        if (c->http.error != 0) {
            c->close_after = true;
            respond_error(c, c->http.error, error_text(c->http.error), NULL);
            return;
        }
        if (c->http.complete) {
            dispatch(c);
            return;
        }
        if (used == 0)
            return;
    }
}

/* ---- listening ------------------------------------------------------------------ */

static void on_retry(uv_timer_t *t)
{
    struct admin *a = CONTAINER_OF(t, struct admin, retry_timer);
    start_listen(a);
}

static void on_server_closed(uv_handle_t *h)
{
    struct admin *a = CONTAINER_OF(h, struct admin, server);
    a->lstate = L_CLOSED;
    a->st.listening = false;
    if (!a->closing)
        uv_timer_start(&a->retry_timer, on_retry, BIND_RETRY_MS, 0);
    admin_unref(a);
}

static void on_retry_timer_closed(uv_handle_t *h)
{
    admin_unref(CONTAINER_OF(h, struct admin, retry_timer));
}

union addr {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
};

static int make_addr(const char *host, int port, union addr *out)
{
    memset(out, 0, sizeof *out);
    if (strchr(host, ':') != NULL)
        return uv_ip6_addr(host, port, &out->v6);
    return uv_ip4_addr(host, port, &out->v4);
}

static void start_listen(struct admin *a)
{
    union addr addr;
    char shown[96];
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(shown, sizeof shown, v6 ? "[%s]:%d" : "%s:%d", a->host, a->cfg.port);
    if (make_addr(a->host, a->cfg.port, &addr) != 0)
        return; /* checked in admin_new */
    uv_tcp_init(a->loop, &a->server);
    a->lstate = L_OPEN;
    a->refs++;
    int rc = uv_tcp_bind(&a->server, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, 128, on_connection);
    if (rc != 0) {
        if (!a->bind_failed)
            log_error("admin", "cannot listen on %s: %s; deliveries go on without the admin "
                      "server, retrying every %d s", shown, uv_strerror(rc), BIND_RETRY_MS / 1000);
        else
            log_debug("admin", "cannot listen on %s: %s", shown, uv_strerror(rc));
        a->bind_failed = true;
        a->lstate = L_CLOSING;
        uv_close((uv_handle_t *)&a->server, on_server_closed);
        return;
    }
    log_info("admin", "listening on http://%s/%s", shown,
             a->token ? " (token required)" : "");
    a->bind_failed = false;
    a->st.listening = true;
}

/* ---- public API ------------------------------------------------------------------- */

static void on_redis_ready(struct redis_conn *rc, void *arg)
{
    (void)rc;
    (void)arg;
}

static void on_redis_down(struct redis_conn *rc, void *arg)
{
    (void)rc;
    struct admin *a = arg;
    a->group.checked_ms = 0;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

int admin_new(uv_loop_t *loop, const struct admin_config *cfg, struct admin **out,
              char *err, size_t errlen)
{
    *out = NULL;
    union addr addr;
    if (cfg->host == NULL || make_addr(cfg->host, cfg->port, &addr) != 0 || cfg->port < 1 ||
        cfg->port > 65535) {
        snprintf(err, errlen, "[admin] listen: not an IP address and port");
        return -1;
    }
    struct admin *a = xcalloc(1, sizeof *a);
    a->loop = loop;
    a->cfg = *cfg;
    a->host = xstrdup(cfg->host);
    a->token = cfg->token && cfg->token[0] ? xstrdup(cfg->token) : NULL;
    a->stream = xstrdup(cfg->stream ? cfg->stream : "varsel:events");
    a->group_name = xstrdup(cfg->group ? cfg->group : "varsel");
    a->prefix = xstrdup(cfg->prefix ? cfg->prefix : "");
    a->version = xstrdup(cfg->version ? cfg->version : "dev");
    a->redis_host = dup_or_null(cfg->redis.host);
    a->redis_user = dup_or_null(cfg->redis.user);
    a->redis_password = dup_or_null(cfg->redis.password);
    a->cfg.host = a->host;
    a->cfg.token = a->token;
    a->cfg.stream = a->stream;
    a->cfg.group = a->group_name;
    a->cfg.prefix = a->prefix;
    a->cfg.version = a->version;
    a->cfg.redis.name = "admin";
    a->cfg.redis.host = a->redis_host;
    a->cfg.redis.user = a->redis_user;
    a->cfg.redis.password = a->redis_password;
    if (a->cfg.max_connections == 0)
        a->cfg.max_connections = ADMIN_MAX_CONNECTIONS;
    if (a->cfg.max_request == 0)
        a->cfg.max_request = ADMIN_MAX_REQUEST;
    if (a->cfg.request_timeout_ms == 0)
        a->cfg.request_timeout_ms = ADMIN_REQUEST_TIMEOUT_MS;
    if (a->cfg.redis_timeout_ms == 0)
        a->cfg.redis_timeout_ms = ADMIN_REDIS_TIMEOUT_MS;
    a->started_ms = mono_ms();
    a->rc = redis_conn_new(loop, &a->cfg.redis, on_redis_ready, on_redis_down, a);
    uv_timer_init(loop, &a->retry_timer);
    a->refs++;
    start_listen(a);
    *out = a;
    return 0;
}

void admin_set_stopping(struct admin *a)
{
    if (a != NULL)
        a->stopping = true;
}

void admin_close(struct admin *a)
{
    if (a == NULL || a->closing)
        return;
    a->closing = true;
    while (a->conns != NULL)
        conn_close(a->conns);
    /* Outstanding query callbacks run now, with NULL, and find no client. */
    redis_conn_close(a->rc);
    a->rc = NULL;
    uv_timer_stop(&a->retry_timer);
    uv_close((uv_handle_t *)&a->retry_timer, on_retry_timer_closed);
    if (a->lstate == L_OPEN) {
        a->lstate = L_CLOSING;
        uv_close((uv_handle_t *)&a->server, on_server_closed);
    }
}

void admin_get_stats(const struct admin *a, struct admin_stats *out)
{
    *out = a->st;
}
