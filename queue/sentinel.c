/*
 * Redis Sentinel client (see sentinel.h): one lookup link and one watch
 * link, each a hiredis async connection to one Sentinel at a time on this
 * project's libuv adapter (queue/redis.c, redis__attach).
 *
 * A link's redisAsyncContext is owned by hiredis: it is freed after the
 * connect-failure or disconnect callback, or by redisAsyncFree (deferred
 * until the current callback returns when called from one). So a link
 * forgets its context (l->ac = NULL) before letting it go, and every
 * hiredis callback first checks that the context it is about is still the
 * link's current one: late callbacks of a context we let go (NULL replies,
 * the disconnect) are ignored. The struct sentinel is freed only in the
 * close callback of its last timer, which comes after any deferred hiredis
 * free of the same turn.
 *
 *   lookup  timer(0) -> connect to Sentinel i -> AUTH? + SENTINEL
 *           get-master-addr-by-name -> answer: done; error, nil, lost or
 *           STEP_MS without an answer: the next Sentinel; all tried: "none".
 *   watch   connect -> AUTH? + SENTINEL get-master-addr-by-name (reported)
 *           + SUBSCRIBE +switch-master -> messages; lost or no answer in
 *           STEP_MS: the next Sentinel after WATCH_RETRY_MS.
 */
#include "queue/sentinel.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "queue/redis.h"

#define STEP_MS 1500        /* one Sentinel: connect and answer */
#define WATCH_RETRY_MS 1000 /* pause before subscribing again (next Sentinel) */

struct sentinel;

struct link {
    struct sentinel *s;
    redisAsyncContext *ac;      /* current connection, NULL when none */
    uv_timer_t timer;           /* step deadline, or the pause before a try */
    size_t idx;                 /* the Sentinel this link talks to */
};

struct sentinel {
    uv_loop_t *loop;
    char *name;                 /* for logs */
    char *master;
    char *password;             /* never logged */
    char **hosts;
    int *ports;
    size_t n;
    size_t next;                /* the Sentinel to ask first (last good one) */
    struct link lk, w;
    /* lookup */
    bool lk_active;
    size_t lk_tried;
    sentinel_addr_cb lk_cb;
    void *lk_priv;
    /* watch */
    sentinel_addr_cb on_moved;
    void *priv;
    bool w_up;                  /* subscribed */
    uint64_t w_warned_ms;       /* last "cannot subscribe" warning */
    uint64_t auth_warned_ms;    /* last "refused AUTH" error */
    bool closing;
    int open_timers;
};

static void link_on_connect(const redisAsyncContext *ac, int status);
static void link_on_disconnect(const redisAsyncContext *ac, int status);
static void link_failed(struct link *l, const char *why);

/* ---- links ----------------------------------------------------------- */

/* Start connecting |l| to Sentinel |idx|. Returns 0 or -1. */
static int link_connect(struct link *l, size_t idx)
{
    struct sentinel *s = l->s;
    l->idx = idx;
    redisAsyncContext *ac = redisAsyncConnect(s->hosts[idx], s->ports[idx]);
    if (ac == NULL || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        return -1;
    }
    ac->data = l;
    if (redis__attach(ac, s->loop) != 0) {
        redisAsyncFree(ac);
        return -1;
    }
    redisAsyncSetConnectCallback(ac, link_on_connect);
    redisAsyncSetDisconnectCallback(ac, link_on_disconnect);
    l->ac = ac;
    return 0;
}

/* Let the current connection go; its late callbacks are ignored. */
static void link_close(struct link *l)
{
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    if (ac)
        redisAsyncFree(ac);
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    struct link *l = priv;
    redisReply *reply = r;
    if (l->ac != ac || reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return;
    /* The command after it fails too and moves on to the next Sentinel.
     * Every lookup would say it again: once per 30 s is enough. */
    struct sentinel *s = l->s;
    uint64_t now = mono_ms();
    if (s->auth_warned_ms != 0 && now - s->auth_warned_ms < 30000)
        return;
    s->auth_warned_ms = now;
    log_error("sentinel", "%s: Sentinel %s:%d refused AUTH: %s", s->name, s->hosts[l->idx],
              s->ports[l->idx], reply->str);
}

/* ---- lookup ------------------------------------------------------------ */

static void lk_on_start(uv_timer_t *t);

static void lk_finish(struct sentinel *s, const char *host, int port)
{
    uv_timer_stop(&s->lk.timer);
    link_close(&s->lk);
    s->lk_active = false;
    sentinel_addr_cb cb = s->lk_cb;
    s->lk_cb = NULL;
    if (cb)
        cb(s->lk_priv, host, port);
}

/* This Sentinel did not give an address: try the next one, or give up. */
static void lk_advance(struct sentinel *s, const char *why)
{
    link_close(&s->lk);
    log_debug("sentinel", "%s: Sentinel %s:%d: %s", s->name, s->hosts[s->lk.idx],
              s->ports[s->lk.idx], why);
    if (++s->lk_tried >= s->n) {
        lk_finish(s, NULL, 0);
        return;
    }
    s->lk.idx = (s->lk.idx + 1) % s->n;
    uv_timer_start(&s->lk.timer, lk_on_start, 0, 0);
}

static void lk_on_deadline(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    lk_advance(s, "no answer in time");
}

static void lk_on_start(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    if (link_connect(&s->lk, s->lk.idx) != 0) {
        lk_advance(s, "cannot connect");
        return;
    }
    uv_timer_start(&s->lk.timer, lk_on_deadline, STEP_MS, 0);
}

/* Parse [ip, port] as get-master-addr-by-name answers. Returns 0 or -1. */
static int parse_addr(const redisReply *r, char *host, size_t hostlen, int *port)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[0]->len == 0 || r->element[0]->len >= hostlen)
        return -1;
    int p = atoi(r->element[1]->str);
    if (p < 1 || p > 65535)
        return -1;
    memcpy(host, r->element[0]->str, r->element[0]->len + 1);
    *port = p;
    return 0;
}

static void lk_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct link *l = priv;
    struct sentinel *s = l->s;
    redisReply *reply = r;
    if (l->ac != ac || reply == NULL)
        return; /* an old connection, or lost: link_on_disconnect moves on */
    char host[256];
    int port = 0;
    if (parse_addr(reply, host, sizeof host, &port) == 0) {
        s->next = l->idx;
        lk_finish(s, host, port);
        return;
    }
    char why[160];
    if (reply->type == REDIS_REPLY_ERROR)
        snprintf(why, sizeof why, "%.120s", reply->str);
    else
        snprintf(why, sizeof why, "does not know master %.64s", s->master);
    lk_advance(s, why);
}

int sentinel_lookup(struct sentinel *s, sentinel_addr_cb cb, void *priv)
{
    if (s->closing || s->lk_active)
        return -1;
    s->lk_active = true;
    s->lk_cb = cb;
    s->lk_priv = priv;
    s->lk_tried = 0;
    s->lk.idx = s->next;
    uv_timer_start(&s->lk.timer, lk_on_start, 0, 0);
    return 0;
}

/* ---- watch ------------------------------------------------------------- */

static void w_on_start(uv_timer_t *t);

static void w_failed(struct sentinel *s, const char *why)
{
    link_close(&s->w);
    uint64_t now = mono_ms();
    if (s->w_up) {
        log_warn("sentinel", "%s: subscription to Sentinel %s:%d lost: %s; trying the next one",
                 s->name, s->hosts[s->w.idx], s->ports[s->w.idx], why);
    } else if (s->w_warned_ms == 0 || now - s->w_warned_ms >= 30000) {
        log_warn("sentinel", "%s: cannot subscribe to Sentinel %s:%d: %s (retrying)", s->name,
                 s->hosts[s->w.idx], s->ports[s->w.idx], why);
        s->w_warned_ms = now;
    }
    s->w_up = false;
    s->w.idx = (s->w.idx + 1) % s->n;
    uv_timer_start(&s->w.timer, w_on_start, WATCH_RETRY_MS, 0);
}

static void w_on_deadline(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    w_failed(s, "no answer in time");
}

static void w_on_start(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    if (link_connect(&s->w, s->w.idx) != 0) {
        w_failed(s, "cannot connect");
        return;
    }
    uv_timer_start(&s->w.timer, w_on_deadline, STEP_MS, 0);
}

/* The master's address when the subscription starts. */
static void w_on_current(redisAsyncContext *ac, void *r, void *priv)
{
    struct link *l = priv;
    struct sentinel *s = l->s;
    redisReply *reply = r;
    if (l->ac != ac || reply == NULL)
        return;
    char host[256];
    int port = 0;
    if (parse_addr(reply, host, sizeof host, &port) != 0) {
        w_failed(s, reply->type == REDIS_REPLY_ERROR ? reply->str : "does not know the master");
        return;
    }
    uv_timer_stop(&s->w.timer);
    if (!s->w_up)
        log_info("sentinel", "%s: watching master %s through Sentinel %s:%d (now at %s:%d)",
                 s->name, s->master, s->hosts[l->idx], s->ports[l->idx], host, port);
    s->w_up = true;
    s->w_warned_ms = 0;
    if (s->on_moved)
        s->on_moved(s->priv, host, port);
}

/* +switch-master: "NAME OLD_IP OLD_PORT NEW_IP NEW_PORT". */
static void w_on_message(redisAsyncContext *ac, void *r, void *priv)
{
    struct link *l = priv;
    struct sentinel *s = l->s;
    redisReply *reply = r;
    if (l->ac != ac || reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0)
        return;
    char name[256], oldip[256], newip[256];
    int oldport = 0, newport = 0;
    if (sscanf(reply->element[2]->str, "%255s %255s %d %255s %d", name, oldip, &oldport, newip,
               &newport) != 5 || strcmp(name, s->master) != 0 || newport < 1 ||
        newport > 65535)
        return;
    log_info("sentinel", "%s: Sentinel %s:%d: +switch-master %s from %s:%d to %s:%d", s->name,
             s->hosts[l->idx], s->ports[l->idx], name, oldip, oldport, newip, newport);
    /* That Sentinel knows the new master: ask it first from now on. */
    s->next = l->idx;
    if (s->on_moved)
        s->on_moved(s->priv, newip, newport);
}

/* ---- connection callbacks (both links) ----------------------------------- */

static void link_failed(struct link *l, const char *why)
{
    struct sentinel *s = l->s;
    if (s->closing)
        return;
    if (l == &s->lk) {
        if (s->lk_active)
            lk_advance(s, why);
    } else {
        w_failed(s, why);
    }
}

static void link_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    struct link *l = ac->data;
    if (l == NULL || l->ac != ac)
        return;
    struct sentinel *s = l->s;
    if (status != REDIS_OK) {
        l->ac = NULL; /* hiredis frees it */
        char why[160];
        snprintf(why, sizeof why, "%.150s", ac->errstr);
        link_failed(l, why);
        return;
    }
    if (s->password)
        redisAsyncCommand(ac, on_auth, l, "AUTH %s", s->password);
    if (l == &s->lk) {
        redisAsyncCommand(ac, lk_on_reply, l, "SENTINEL get-master-addr-by-name %s", s->master);
    } else {
        redisEnableKeepAlive(&ac->c); /* probes after 15 s idle */
        redisAsyncCommand(ac, w_on_current, l, "SENTINEL get-master-addr-by-name %s", s->master);
        redisAsyncCommand(ac, w_on_message, l, "SUBSCRIBE +switch-master");
    }
}

static void link_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    struct link *l = ac->data;
    if (l == NULL || l->ac != ac)
        return; /* one we let go */
    l->ac = NULL; /* hiredis frees it after this callback */
    char why[160];
    snprintf(why, sizeof why, "%.150s",
             status == REDIS_OK || ac->errstr[0] == '\0' ? "connection closed" : ac->errstr);
    link_failed(l, why);
}

/* ---- life cycle -------------------------------------------------------- */

struct sentinel *sentinel_new(uv_loop_t *loop, const struct sentinel_config *cfg,
                              const char *name, sentinel_addr_cb on_moved, void *priv)
{
    struct sentinel *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->name = xstrdup(name ? name : "redis");
    s->master = xstrdup(cfg->master_name);
    s->password = cfg->password ? xstrdup(cfg->password) : NULL;
    s->n = cfg->n;
    s->hosts = xcalloc(cfg->n, sizeof *s->hosts);
    s->ports = xcalloc(cfg->n, sizeof *s->ports);
    for (size_t i = 0; i < cfg->n; i++) {
        s->hosts[i] = xstrdup(cfg->hosts[i]);
        s->ports[i] = cfg->ports[i];
    }
    s->on_moved = on_moved;
    s->priv = priv;
    s->lk.s = s->w.s = s;
    uv_timer_init(loop, &s->lk.timer);
    uv_timer_init(loop, &s->w.timer);
    s->lk.timer.data = s->w.timer.data = s;
    s->open_timers = 2;
    /* Processes of one deployment share a Sentinel list: start the watch
     * at a different one per process so the subscriptions spread out. */
    s->w.idx = (size_t)rand() % s->n;
    uv_timer_start(&s->w.timer, w_on_start, 0, 0);
    return s;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct sentinel *s = h->data;
    if (--s->open_timers > 0)
        return;
    free_secret(s->password);
    for (size_t i = 0; i < s->n; i++)
        free(s->hosts[i]);
    free(s->hosts);
    free(s->ports);
    free(s->master);
    free(s->name);
    free(s);
}

void sentinel_free(struct sentinel *s)
{
    if (s == NULL)
        return;
    s->closing = true;
    s->lk_cb = NULL;
    s->on_moved = NULL;
    link_close(&s->lk);
    link_close(&s->w);
    uv_timer_stop(&s->lk.timer);
    uv_timer_stop(&s->w.timer);
    uv_close((uv_handle_t *)&s->lk.timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->w.timer, on_timer_closed);
}
