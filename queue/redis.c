/*
 * Redis connection with reconnect, on hiredis 0.14's async API and libuv
 * adapter.
 *
 * States: IDLE (waiting for the backoff timer) -> [DISCOVERING (asking
 * Sentinel where the master is)] -> RESOLVING (uv_getaddrinfo) -> CONNECTING
 * (redisAsyncConnect to the numeric address) -> [VERIFYING (ROLE must say
 * master)] -> READY. The bracketed states exist only with Sentinel. The one
 * timer of a connection is the backoff in IDLE and the deadline in
 * CONNECTING and VERIFYING: a connect to an address that silently drops
 * packets (a dead master on another machine) would otherwise wait for the
 * kernel's TCP timeout, minutes.
 *
 * hiredis owns and frees the redisAsyncContext after its connect-failure or
 * disconnect callback; we only clear our pointer there. The struct itself is
 * freed after its timer handle closes, so no callback can outlive it.
 */
#include "queue/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "queue/sentinel.h"

#define CONNECT_TIMEOUT_MS 5000 /* connect (and, with Sentinel, ROLE) at most this long */

/*
 * Our own libuv event adapter for hiredis. The one hiredis 0.14 ships drops
 * every poll event with an error status, and libuv reports POLLERR (a
 * refused connect, a reset connection) exactly that way: the connection
 * would hang forever. Here an error status lets hiredis look at the socket
 * itself, so it sees the failure and calls our connect/disconnect callbacks.
 */
struct uv_redis_events {
    redisAsyncContext *ac;     /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
};

/* Exported by hiredis 0.14 (async.c) but not declared in its headers:
 * redisAsyncHandleRead is redisBufferRead followed by this. */
void redisProcessCallbacks(redisAsyncContext *ac);

#define UVR_READ_SIZE (16 * 1024) /* as much as redisBufferRead reads */
#define UVR_FEED_SIZE 1024        /* handed to the reader at a time */

/*
 * What redisAsyncHandleRead does, but handing what was read to the reader
 * 1 KB at a time and taking the replies out after each piece. hiredis 0.14's
 * reader moves the unparsed rest of its buffer to the front every time 1 KB
 * has been parsed; fed 16 KB of pipelined replies at once it moves ~8 bytes
 * per byte received (2,000 instructions per notification in `bench/run.sh
 * cost`). End of file, errors and the connect handshake go through
 * redisAsyncHandleRead, which sees them again and handles them as before.
 */
static void uvr_read(struct uv_redis_events *p)
{
    redisAsyncContext *ac = p->ac;
    redisContext *c = &ac->c;
    if (!(c->flags & REDIS_CONNECTED) || c->err) {
        redisAsyncHandleRead(ac);
        return;
    }
    char buf[UVR_READ_SIZE];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        redisAsyncHandleRead(ac); /* reads 0 or the error again and disconnects */
        return;
    }
    for (ssize_t off = 0; off < n && p->ac == ac;) {
        size_t k = (size_t)(n - off) < UVR_FEED_SIZE ? (size_t)(n - off) : UVR_FEED_SIZE;
        if (redisReaderFeed(c->reader, buf + off, k) != REDIS_OK) {
            redisAsyncHandleRead(ac); /* the reader's error: disconnect as hiredis does */
            return;
        }
        off += (ssize_t)k;
        redisProcessCallbacks(ac); /* may free ac: uvr_cleanup clears p->ac */
    }
}

static void uvr_on_poll(uv_poll_t *h, int status, int events)
{
    struct uv_redis_events *p = h->data;
    if (p->ac == NULL)
        return;
    if (status < 0) {
        if (!(p->ac->c.flags & REDIS_CONNECTED))
            redisAsyncHandleWrite(p->ac); /* connect failed: hiredis checks SO_ERROR */
        else
            redisAsyncHandleRead(p->ac);  /* read() returns the error */
        return;
    }
    if (events & UV_READABLE)
        uvr_read(p);
    if (p->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void uvr_update(struct uv_redis_events *p, int add, int del)
{
    int events = (p->events | add) & ~del;
    /* hiredis asks for write interest on every command; re-arming an
     * unchanged poll would cost an epoll_ctl pair each time. */
    if (events == p->events)
        return;
    p->events = events;
    if (p->events)
        uv_poll_start(&p->poll, p->events, uvr_on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void uvr_add_read(void *d) { uvr_update(d, UV_READABLE, 0); }
static void uvr_del_read(void *d) { uvr_update(d, 0, UV_READABLE); }
static void uvr_add_write(void *d) { uvr_update(d, UV_WRITABLE, 0); }
static void uvr_del_write(void *d) { uvr_update(d, 0, UV_WRITABLE); }

static void uvr_on_close(uv_handle_t *h)
{
    free(h->data);
}

static void uvr_cleanup(void *d)
{
    struct uv_redis_events *p = d;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, uvr_on_close);
}

int redis__attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return -1;
    struct uv_redis_events *p = xcalloc(1, sizeof *p);
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->poll.data = p;
    p->ac = ac;
    ac->ev.addRead = uvr_add_read;
    ac->ev.delRead = uvr_del_read;
    ac->ev.addWrite = uvr_add_write;
    ac->ev.delWrite = uvr_del_write;
    ac->ev.cleanup = uvr_cleanup;
    ac->ev.data = p;
    return 0;
}

enum rstate { R_IDLE, R_DISCOVERING, R_RESOLVING, R_CONNECTING, R_VERIFYING, R_READY, R_CLOSED };

#define MAX_SCRIPTS 64

struct redis_conn {
    uv_loop_t *loop;
    char *name, *host, *user, *password;
    int port, db;
    enum rstate state;
    redisAsyncContext *ac;
    uv_timer_t timer;           /* reconnect backoff */
    uv_getaddrinfo_t gai;
    bool gai_active;
    uint32_t backoff_ms;
    size_t pending;             /* commands awaiting replies */
    redis_conn_event_cb on_ready, on_down;
    void *user_data;
    const struct redis_script *scripts[MAX_SCRIPTS];
    int n_scripts;
    bool closing;
    bool timer_closed;
    uint64_t last_warn_ms;      /* of the last "cannot connect" warning */
    uint64_t last_progress_ms;  /* last reply, or first send after idle */
    uint64_t epoch;             /* connections that became ready */
    /* Sentinel (NULL without): host/port above are then the master's
     * address as last given by a Sentinel, NULL before the first answer. */
    struct sentinel *sentinel;
    char *master_name;
    uint64_t master_changes;    /* the master's address changed */
};

static void start_connect(struct redis_conn *c);
static void on_setup_reply(redisAsyncContext *ac, void *r, void *priv);

static void on_timer(uv_timer_t *t);
static void conn_free(struct redis_conn *c);

static void schedule_reconnect(struct redis_conn *c)
{
    if (c->closing)
        return;
    c->state = R_IDLE;
    uint32_t jitter = c->backoff_ms ? (uint32_t)(rand() % (c->backoff_ms / 2 + 1)) : 0;
    uv_timer_start(&c->timer, on_timer, c->backoff_ms + jitter, 0);
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 100;
    if (c->backoff_ms > 5000)
        c->backoff_ms = 5000;
}

/* Drop a connect still in progress (no hiredis callback fires for it). */
static void abort_connect(struct redis_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    log_warn("redis", "%s: connect to %s:%d abandoned: %s", c->name, c->host, c->port, why);
    if (ac)
        redisAsyncFree(ac);
    schedule_reconnect(c);
}

static void on_timer(uv_timer_t *t)
{
    struct redis_conn *c = t->data;
    switch (c->state) {
    case R_IDLE:
        start_connect(c);
        break;
    case R_CONNECTING:
        abort_connect(c, "no connection within the deadline");
        break;
    case R_VERIFYING:
        redis_conn_reset(c, "no answer to ROLE within the deadline");
        break;
    default:
        break;
    }
}

/* The connection is usable: scripts first, then the owner is told. */
static void become_ready(struct redis_conn *c)
{
    uv_timer_stop(&c->timer);
    for (int i = 0; i < c->n_scripts; i++)
        redisAsyncCommand(c->ac, on_setup_reply, c, "SCRIPT LOAD %s", c->scripts[i]->text);
    c->state = R_READY;
    c->epoch++;
    c->backoff_ms = 0;
    c->last_warn_ms = 0;
    if (c->sentinel)
        log_info("redis", "%s: connected to master %s at %s:%d", c->name, c->master_name,
                 c->host, c->port);
    else
        log_info("redis", "%s: connected to %s:%d", c->name, c->host, c->port);
    if (c->on_ready)
        c->on_ready(c, c->user_data);
}

/* Sentinel: only a master will do; a Sentinel may still name the old one. */
static void on_role(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_conn *c = priv;
    redisReply *reply = r;
    if (reply == NULL || c->state != R_VERIFYING || c->ac != ac)
        return; /* the connection dropped: on_disconnect reconnects */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(reply->element[0]->str, "master") == 0) {
        become_ready(c);
        return;
    }
    char why[160];
    snprintf(why, sizeof why, "%s:%d is not the master (ROLE: %.40s); asking Sentinel again",
             c->host, c->port,
             reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                     reply->element[0]->type == REDIS_REPLY_STRING ? reply->element[0]->str
             : reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
    redis_conn_reset(c, why);
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_conn *c = priv;
    redisReply *reply = r;
    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        log_error("redis", "%s: connection set-up failed: %s", c->name, reply->str);
        redis_conn_reset(c, "set-up command failed");
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    if (c == NULL)
        return;
    if (status != REDIS_OK) {
        /* Say it once, then every 30 s while it lasts. */
        uint64_t now = mono_ms();
        if (c->last_warn_ms == 0 || now - c->last_warn_ms >= 30000) {
            log_warn("redis", "%s: cannot connect to %s:%d: %s (retrying)", c->name,
                     c->host, c->port, ac->errstr);
            c->last_warn_ms = now;
        } else {
            log_debug("redis", "%s: cannot connect to %s:%d: %s", c->name, c->host,
                      c->port, ac->errstr);
        }
        c->ac = NULL; /* hiredis frees it */
        schedule_reconnect(c);
        return;
    }
    /* Set-up commands go first; hiredis keeps them in order. */
    if (c->password) {
        if (c->user)
            redisAsyncCommand(c->ac, on_setup_reply, c, "AUTH %s %s", c->user, c->password);
        else
            redisAsyncCommand(c->ac, on_setup_reply, c, "AUTH %s", c->password);
    }
    if (c->db != 0)
        redisAsyncCommand(c->ac, on_setup_reply, c, "SELECT %d", c->db);
    if (c->sentinel) {
        /* The deadline timer keeps running until ROLE answers. */
        c->state = R_VERIFYING;
        redisAsyncCommand(c->ac, on_role, c, "ROLE");
        return;
    }
    become_ready(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    if (c == NULL)
        return;
    c->ac = NULL; /* hiredis frees it after this callback */
    bool was_ready = c->state == R_READY;
    c->pending = 0;
    if (status != REDIS_OK && !c->closing)
        log_warn("redis", "%s: connection lost: %s", c->name, ac->errstr);
    if (c->closing) {
        c->state = R_CLOSED;
        return;
    }
    schedule_reconnect(c);
    if (was_ready && c->on_down)
        c->on_down(c, c->user_data);
}

/*
 * Reply objects in one allocation each: a string reply with its text, an
 * array with its element vector (hiredis's own functions allocate both
 * separately). A lookup reply of a guardian's devices is an array of 2-6
 * strings, so this halves the allocations of the busiest replies. The
 * objects are the same redisReply structs; hiredis frees them through
 * reader->fn->freeObject after the callback, as before. No caller keeps
 * a reply past its callback or frees one itself.
 */
/* A reply object of |type| with |extra| bytes after it, zeroed but for
 * those, hung into its parent array. */
static redisReply *reply_new(const redisReadTask *task, int type, size_t extra)
{
    redisReply *r = malloc(sizeof *r + extra);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof *r);
    r->type = type;
    if (task->parent != NULL)
        ((redisReply *)task->parent->obj)->element[task->idx] = r;
    return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = reply_new(task, task->type, len + 1);
    if (r == NULL)
        return NULL;
    r->str = (char *)(r + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *reply_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    redisReply *r = reply_new(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
    if (r == NULL)
        return NULL;
    r->elements = n;
    r->element = n ? (redisReply **)(r + 1) : NULL;
    if (n)
        memset(r->element, 0, n * sizeof *r->element); /* freed while partly read */
    return r;
}

static void *reply_integer(const redisReadTask *task, long long value)
{
    redisReply *r = reply_new(task, REDIS_REPLY_INTEGER, 0);
    if (r != NULL)
        r->integer = value;
    return r;
}

static void *reply_nil(const redisReadTask *task)
{
    return reply_new(task, REDIS_REPLY_NIL, 0);
}

static void reply_free(void *reply)
{
    redisReply *r = reply;
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            reply_free(r->element[i]); /* NULL while a reply was still being read */
    free(r);
}

static redisReplyObjectFunctions reply_fns = { reply_string, reply_array, reply_integer,
                                               reply_nil, reply_free };

redisReplyObjectFunctions *redis_reply_functions(void)
{
    return &reply_fns;
}

static void connect_addr(struct redis_conn *c, const char *ip)
{
    c->state = R_CONNECTING;
    uv_timer_start(&c->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
    redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
    if (ac == NULL || ac->err) {
        log_warn("redis", "%s: connect %s:%d failed: %s", c->name, ip, c->port,
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    ac->data = c;
    ac->c.reader->fn = &reply_fns; /* before any byte is read */
    c->ac = ac;
    if (redis__attach(ac, c->loop) != 0) {
        log_warn("redis", "%s: cannot watch the socket", c->name);
        c->ac = NULL;
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct redis_conn *c = req->data;
    c->gai_active = false;
    if (c->closing) {
        uv_freeaddrinfo(res);
        if (c->timer_closed)
            conn_free(c);
        return;
    }
    if (status != 0 || res == NULL) {
        log_warn("redis", "%s: cannot resolve %s: %s", c->name, c->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        schedule_reconnect(c);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    if (res->ai_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    else
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    connect_addr(c, ip);
}

static void resolve(struct redis_conn *c);

/* Sentinel's answer to "where is the master?". */
static void on_master_found(void *priv, const char *host, int port)
{
    struct redis_conn *c = priv;
    if (c->closing || c->state != R_DISCOVERING)
        return;
    if (host == NULL) {
        uint64_t now = mono_ms();
        if (c->last_warn_ms == 0 || now - c->last_warn_ms >= 30000) {
            log_warn("redis", "%s: no Sentinel answered where master %s is (retrying)", c->name,
                     c->master_name);
            c->last_warn_ms = now;
        }
        schedule_reconnect(c);
        return;
    }
    if (c->host == NULL || strcmp(c->host, host) != 0 || c->port != port) {
        if (c->host != NULL) {
            c->master_changes++;
            log_info("redis", "%s: Sentinel: master %s is now at %s:%d (was %s:%d)", c->name,
                     c->master_name, host, port, c->host, c->port);
        }
        free(c->host);
        c->host = xstrdup(host);
        c->port = port;
    }
    resolve(c);
}

/* Sentinel announced where the master is (a failover, or the subscription
 * started): leave an old master at once instead of waiting for errors. */
static void on_master_moved(void *priv, const char *host, int port)
{
    struct redis_conn *c = priv;
    if (c->closing || host == NULL || c->host == NULL)
        return;
    if (strcmp(c->host, host) == 0 && c->port == port)
        return; /* where we are, or are going */
    switch (c->state) {
    case R_READY:
    case R_VERIFYING:
        c->backoff_ms = 0;
        redis_conn_reset(c, "Sentinel announced a new master");
        break;
    case R_CONNECTING:
        c->backoff_ms = 0;
        abort_connect(c, "Sentinel announced a new master");
        break;
    case R_IDLE:
        c->backoff_ms = 0;
        uv_timer_start(&c->timer, on_timer, 0, 0);
        break;
    default:
        break; /* a lookup or resolve is under way; ROLE checks its answer */
    }
}

static void start_connect(struct redis_conn *c)
{
    if (c->closing)
        return;
    if (c->sentinel) {
        c->state = R_DISCOVERING;
        if (sentinel_lookup(c->sentinel, on_master_found, c) != 0)
            schedule_reconnect(c);
        return;
    }
    resolve(c);
}

static void resolve(struct redis_conn *c)
{
    c->state = R_RESOLVING;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rc = uv_getaddrinfo(c->loop, &c->gai, on_resolved, c->host, NULL, &hints);
    if (rc != 0) {
        log_warn("redis", "%s: resolve %s: %s", c->name, c->host, uv_strerror(rc));
        schedule_reconnect(c);
        return;
    }
    c->gai_active = true;
}

struct redis_conn *redis_conn_new(uv_loop_t *loop, const struct redis_conn_config *cfg,
                                  redis_conn_event_cb on_ready,
                                  redis_conn_event_cb on_down, void *user)
{
    struct redis_conn *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->name = xstrdup(cfg->name ? cfg->name : "redis");
    if (cfg->n_sentinels > 0) {
        struct sentinel_config sc = {
            .hosts = cfg->sentinel_hosts, .ports = cfg->sentinel_ports, .n = cfg->n_sentinels,
            .master_name = cfg->master_name, .password = cfg->sentinel_password,
        };
        c->master_name = xstrdup(cfg->master_name);
        c->sentinel = sentinel_new(loop, &sc, c->name, on_master_moved, c);
    } else {
        c->host = xstrdup(cfg->host);
    }
    c->user = cfg->user ? xstrdup(cfg->user) : NULL;
    c->password = cfg->password ? xstrdup(cfg->password) : NULL;
    c->port = cfg->port;
    c->db = cfg->db;
    c->on_ready = on_ready;
    c->on_down = on_down;
    c->user_data = user;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_timer, 0, 0);
    return c;
}

bool redis_conn_ready(const struct redis_conn *c) { return c->state == R_READY; }

uint64_t redis_conn_epoch(const struct redis_conn *c) { return c->epoch; }

uint64_t redis_conn_master_changes(const struct redis_conn *c) { return c->master_changes; }


struct cmd_wrap {
    struct redis_conn *c;
    redisCallbackFn *fn;
    void *priv;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cmd_wrap *w = priv;
    struct redis_conn *c = w->c;
    const redisReply *r = reply;
    if (c->pending > 0 && !c->closing)
        c->pending--;
    c->last_progress_ms = mono_ms();
    /* With Sentinel, a write refused as READONLY means the server was
     * demoted in a failover (UNBLOCKED: our blocking read was cut off for
     * the same reason): find the new master. */
    bool demoted = c->sentinel && r && r->type == REDIS_REPLY_ERROR && r->str &&
                   (strstr(r->str, "READONLY") != NULL || strncmp(r->str, "UNBLOCKED", 9) == 0);
    if (w->fn)
        w->fn(ac, reply, w->priv);
    free(w);
    if (demoted && !c->closing && c->state == R_READY && c->ac == ac)
        redis_conn_reset(c, "the server is no longer the master");
}

int redis_conn_cmd_argv(struct redis_conn *c, redisCallbackFn *fn, void *priv,
                        int argc, const char **argv, const size_t *argvlen)
{
    if (c->state != R_READY || c->ac == NULL)
        return -1;
    struct cmd_wrap *w = xmalloc(sizeof *w);
    w->c = c;
    w->fn = fn;
    w->priv = priv;
    if (redisAsyncCommandArgv(c->ac, on_reply, w, argc, argv, argvlen) != REDIS_OK) {
        free(w);
        return -1;
    }
    if (c->pending++ == 0)
        c->last_progress_ms = mono_ms();
    return 0;
}

int redis_conn_cmd_formatted(struct redis_conn *c, redisCallbackFn *fn, void *priv,
                             const char *cmd, size_t len)
{
    if (c->state != R_READY || c->ac == NULL)
        return -1;
    struct cmd_wrap *w = xmalloc(sizeof *w);
    w->c = c;
    w->fn = fn;
    w->priv = priv;
    if (redisAsyncFormattedCommand(c->ac, on_reply, w, cmd, len) != REDIS_OK) {
        free(w);
        return -1;
    }
    if (c->pending++ == 0)
        c->last_progress_ms = mono_ms();
    return 0;
}

bool redis_conn_stalled(const struct redis_conn *c, uint64_t timeout_ms)
{
    return c->state == R_READY && c->pending > 0 &&
           mono_ms() - c->last_progress_ms > timeout_ms;
}

void redis_conn_reset(struct redis_conn *c, const char *why)
{
    if (c->ac == NULL || (c->ac->c.flags & REDIS_FREEING))
        return; /* no connection, or already going (freed after a callback) */
    if (c->state == R_CONNECTING) {
        abort_connect(c, why); /* not connected: hiredis calls no disconnect */
        return;
    }
    log_warn("redis", "%s: resetting connection: %s", c->name, why);
    /* redisAsyncFree calls pending callbacks with NULL and then the
     * disconnect callback, which schedules the reconnect. */
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
}

static void conn_free(struct redis_conn *c)
{
    free(c->master_name);
    free(c->name);
    free(c->host);
    free(c->user);
    free(c->password);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct redis_conn *c = h->data;
    c->timer_closed = true;
    if (c->gai_active) {
        /* The resolver callback still has to run; it frees |c|. */
        uv_cancel((uv_req_t *)&c->gai);
        return;
    }
    conn_free(c);
}

void redis_conn_close(struct redis_conn *c)
{
    c->closing = true;
    c->on_ready = NULL;
    c->on_down = NULL;
    sentinel_free(c->sentinel);
    c->sentinel = NULL;
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        redisAsyncFree(ac);
        c->ac = NULL;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

void redis_script_init(struct redis_script *s, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[20];
    unsigned int n = 0;
    s->text = text;
    EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL);
    for (int i = 0; i < 20; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
}

void redis_conn_add_script(struct redis_conn *c, const struct redis_script *s)
{
    for (int i = 0; i < c->n_scripts; i++)
        if (c->scripts[i] == s)
            return; /* registered already (several users of one module) */
    if (c->n_scripts >= MAX_SCRIPTS) {
        /* A script left out would fail with NOSCRIPT after every reconnect:
         * a programming error, caught by every test that starts varseld. */
        log_error("redis", "more than %d Lua scripts registered; raise MAX_SCRIPTS",
                  MAX_SCRIPTS);
        abort();
    }
    c->scripts[c->n_scripts++] = s;
    if (c->state == R_READY && c->ac)
        redisAsyncCommand(c->ac, on_setup_reply, c, "SCRIPT LOAD %s", s->text);
}

int redis_conn_eval(struct redis_conn *c, const struct redis_script *s,
                    redisCallbackFn *fn, void *priv, int numkeys, int argc,
                    const char **argv, const size_t *argvlen)
{
    const char *av[64];
    size_t al[64];
    char nk[16];
    if (argc + 3 > 64)
        return -1;
    snprintf(nk, sizeof nk, "%d", numkeys);
    av[0] = "EVALSHA"; al[0] = 7;
    av[1] = s->sha; al[1] = 40;
    av[2] = nk; al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    return redis_conn_cmd_argv(c, fn, priv, argc + 3, av, al);
}
