/*
 * Redis connection with reconnect, on hiredis 0.14's async API and libuv
 * adapter.
 *
 * States: IDLE (waiting for the backoff timer) -> RESOLVING (uv_getaddrinfo)
 * -> CONNECTING (redisAsyncConnect to the numeric address) -> READY. hiredis
 * owns and frees the redisAsyncContext after its connect-failure or
 * disconnect callback; we only clear our pointer there. The struct itself is
 * freed after its timer handle closes, so no callback can outlive it.
 */
#include "queue/redis.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

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
        redisAsyncHandleRead(p->ac);
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

static int uvr_attach(redisAsyncContext *ac, uv_loop_t *loop)
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

enum rstate { R_IDLE, R_RESOLVING, R_CONNECTING, R_READY, R_CLOSED };

#define MAX_SCRIPTS 16

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
};

static void start_connect(struct redis_conn *c);

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

static void on_timer(uv_timer_t *t)
{
    struct redis_conn *c = t->data;
    start_connect(c);
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
    for (int i = 0; i < c->n_scripts; i++)
        redisAsyncCommand(c->ac, on_setup_reply, c, "SCRIPT LOAD %s", c->scripts[i]->text);
    c->state = R_READY;
    c->backoff_ms = 0;
    c->last_warn_ms = 0;
    log_info("redis", "%s: connected to %s:%d", c->name, c->host, c->port);
    if (c->on_ready)
        c->on_ready(c, c->user_data);
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

static void connect_addr(struct redis_conn *c, const char *ip)
{
    c->state = R_CONNECTING;
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
    c->ac = ac;
    if (uvr_attach(ac, c->loop) != 0) {
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

static void start_connect(struct redis_conn *c)
{
    if (c->closing)
        return;
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
    c->host = xstrdup(cfg->host);
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


struct cmd_wrap {
    struct redis_conn *c;
    redisCallbackFn *fn;
    void *priv;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cmd_wrap *w = priv;
    if (w->c->pending > 0 && !w->c->closing)
        w->c->pending--;
    w->c->last_progress_ms = mono_ms();
    if (w->fn)
        w->fn(ac, reply, w->priv);
    free(w);
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
    if (c->ac == NULL)
        return;
    log_warn("redis", "%s: resetting connection: %s", c->name, why);
    /* redisAsyncFree calls pending callbacks with NULL and then the
     * disconnect callback, which schedules the reconnect. */
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);
}

static void conn_free(struct redis_conn *c)
{
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
    if (c->n_scripts < MAX_SCRIPTS)
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
