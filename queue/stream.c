/*
 * Redis Streams commands for the consumer group, and the parser that copies
 * entries out of hiredis replies (replies die when their callback returns).
 */
#include "queue/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/*
 * Trim the events stream below what every consumer group still needs: the
 * smallest of each group's oldest pending id and last-delivered id. Other
 * groups on the same stream are respected. KEYS: stream. Reply: the number
 * of entries removed (approximate trimming: whole macro nodes only).
 */
static const char trim_lua[] =
    "local function parse(id)\n"
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  return tonumber(ms), tonumber(seq)\n"
    "end\n"
    "local function less(a, b)\n"
    "  local am, as = parse(a)\n"
    "  local bm, bs = parse(b)\n"
    "  return am < bm or (am == bm and as < bs)\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"
    "if #groups == 0 then return 0 end\n"
    "local min = nil\n"
    "for _, g in ipairs(groups) do\n"
    "  local name, last\n"
    "  for i = 1, #g, 2 do\n"
    "    if g[i] == 'name' then name = g[i + 1] end\n"
    "    if g[i] == 'last-delivered-id' then last = g[i + 1] end\n"
    "  end\n"
    "  if last and (min == nil or less(last, min)) then min = last end\n"
    "  local p = redis.call('XPENDING', KEYS[1], name)\n"
    "  if p[1] > 0 and (min == nil or less(p[2], min)) then min = p[2] end\n"
    "end\n"
    "if min == nil or min == '0-0' then return 0 end\n"
    "return redis.call('XTRIM', KEYS[1], 'MINID', '~', min)\n";

static struct redis_script trim_script;
static int trim_ready;

void stream_init(struct redis_conn *c)
{
    if (!trim_ready) {
        redis_script_init(&trim_script, trim_lua);
        trim_ready = 1;
    }
    redis_conn_add_script(c, &trim_script);
}

int stream_trim(struct redis_conn *c, const char *stream, redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { stream };
    return redis_conn_eval(c, &trim_script, fn, priv, 1, 1, argv, NULL);
}

void stream_entry_free(struct stream_entry *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n_fields; i++) {
        free(e->fields[i].name);
        free(e->fields[i].value);
    }
    free(e->fields);
    free(e->id);
    memset(e, 0, sizeof *e);
}

const struct stream_field *stream_entry_field(const struct stream_entry *e, const char *name)
{
    for (size_t i = 0; i < e->n_fields; i++)
        if (strcmp(e->fields[i].name, name) == 0)
            return &e->fields[i];
    return NULL;
}

static int64_t id_ms(const char *id)
{
    return (int64_t)strtoll(id, NULL, 10);
}

size_t stream_parse_entries(const redisReply *arr, struct stream_entry **out)
{
    *out = NULL;
    if (arr == NULL || arr->type != REDIS_REPLY_ARRAY || arr->elements == 0)
        return 0;
    struct stream_entry *v = xcalloc(arr->elements, sizeof *v);
    size_t n = 0;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *ent = arr->element[i];
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 1 ||
            ent->element[0]->type != REDIS_REPLY_STRING)
            continue;
        struct stream_entry *e = &v[n++];
        e->id = xstrndup(ent->element[0]->str, ent->element[0]->len);
        e->ms = id_ms(e->id);
        if (ent->elements < 2 || ent->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *kv = ent->element[1];
        size_t nf = kv->elements / 2;
        e->fields = xcalloc(nf ? nf : 1, sizeof *e->fields);
        for (size_t f = 0; f < nf; f++) {
            const redisReply *k = kv->element[2 * f], *val = kv->element[2 * f + 1];
            if (k->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
                continue;
            struct stream_field *sf = &e->fields[e->n_fields++];
            sf->name = xstrndup(k->str, k->len);
            sf->value = xstrndup(val->str, val->len);
            sf->len = val->len;
        }
    }
    *out = v;
    return n;
}

int stream_create_group(struct redis_conn *c, const char *stream, const char *group,
                        redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { "XGROUP", "CREATE", stream, group, "0", "MKSTREAM" };
    return redis_conn_cmd_argv(c, fn, priv, 6, argv, NULL);
}

int stream_read(struct redis_conn *c, const char *stream, const char *group,
                const char *consumer, int count, int block_ms, const char *id,
                redisCallbackFn *fn, void *priv)
{
    char scount[16], sblock[16];
    snprintf(scount, sizeof scount, "%d", count);
    snprintf(sblock, sizeof sblock, "%d", block_ms);
    const char *argv[12];
    int n = 0;
    argv[n++] = "XREADGROUP";
    argv[n++] = "GROUP";
    argv[n++] = group;
    argv[n++] = consumer;
    argv[n++] = "COUNT";
    argv[n++] = scount;
    if (block_ms >= 0) {
        argv[n++] = "BLOCK";
        argv[n++] = sblock;
    }
    argv[n++] = "STREAMS";
    argv[n++] = stream;
    argv[n++] = id;
    return redis_conn_cmd_argv(c, fn, priv, n, argv, NULL);
}

int stream_autoclaim(struct redis_conn *c, const char *stream, const char *group,
                     const char *consumer, long min_idle_ms, const char *start,
                     int count, redisCallbackFn *fn, void *priv)
{
    char sidle[24], scount[16];
    snprintf(sidle, sizeof sidle, "%ld", min_idle_ms);
    snprintf(scount, sizeof scount, "%d", count);
    const char *argv[] = { "XAUTOCLAIM", stream, group, consumer, sidle, start,
                           "COUNT", scount };
    return redis_conn_cmd_argv(c, fn, priv, 8, argv, NULL);
}

int stream_touch(struct redis_conn *c, const char *stream, const char *group,
                 const char *consumer, const char *const *ids, size_t n,
                 redisCallbackFn *fn, void *priv)
{
    const char **argv = xmalloc((n + 6) * sizeof *argv);
    int k = 0;
    argv[k++] = "XCLAIM";
    argv[k++] = stream;
    argv[k++] = group;
    argv[k++] = consumer;
    argv[k++] = "0";
    for (size_t i = 0; i < n; i++)
        argv[k++] = ids[i];
    argv[k++] = "JUSTID";
    int rc = redis_conn_cmd_argv(c, fn, priv, k, argv, NULL);
    free(argv);
    return rc;
}

int stream_ack(struct redis_conn *c, const char *stream, const char *group,
               const char *id, redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { "XACK", stream, group, id };
    return redis_conn_cmd_argv(c, fn, priv, 4, argv, NULL);
}

int stream_dead_letter(struct redis_conn *c, const char *dead_stream, long maxlen,
                       const char *source_stream, const char *consumer,
                       const struct stream_entry *e, const char *code,
                       const char *reason, redisCallbackFn *fn, void *priv)
{
    char smax[24], sat[24];
    snprintf(smax, sizeof smax, "%ld", maxlen);
    snprintf(sat, sizeof sat, "%lld", (long long)now_ms());
    size_t n = 18 + 2 * e->n_fields;
    const char **argv = xmalloc(n * sizeof *argv);
    size_t *lens = xmalloc(n * sizeof *lens);
    size_t k = 0;
#define ARG(s) do { argv[k] = (s); lens[k] = strlen(s); k++; } while (0)
    ARG("XADD"); ARG(dead_stream); ARG("MAXLEN"); ARG("~"); ARG(smax); ARG("*");
    ARG("reason"); ARG(reason); ARG("code"); ARG(code);
    ARG("source_stream"); ARG(source_stream); ARG("source_id"); ARG(e->id);
    ARG("consumer"); ARG(consumer); ARG("at"); ARG(sat);
#undef ARG
    for (size_t i = 0; i < e->n_fields; i++) {
        argv[k] = e->fields[i].name;
        lens[k++] = strlen(e->fields[i].name);
        argv[k] = e->fields[i].value;
        lens[k++] = e->fields[i].len;
    }
    int rc = redis_conn_cmd_argv(c, fn, priv, (int)k, argv, lens);
    free(argv);
    free(lens);
    return rc;
}

/* ---- acknowledgement ------------------------------------------------------ */

#define WAIT_RETRY_MS 1000   /* pause after WAIT counted too few replicas */
#define SHORT_LOG_MS 10000   /* say it at most this often */

struct ack_req {
    struct ack_req *next;
    struct stream_acker *a;
    stream_ack_cb cb;
    void *priv;
    uint64_t epoch;
    char id[];                   /* the entry id */
};

struct stream_acker {
    struct redis_conn *c;
    char *stream, *group;
    int wait_replicas, wait_timeout_ms;
    struct ack_req *head, *tail; /* waiting for a WAIT, in order */
    struct ack_req *batch;       /* covered by the WAIT in flight */
    bool waiting;                /* a WAIT is outstanding */
    uint64_t wait_epoch;         /* the epoch it was sent under */
    uint64_t retry_at_ms;        /* mono: no WAIT before this after a short one */
    uint64_t short_logged_ms;
    uv_timer_t timer;
    struct stream_acker_counts n;
};

static void acker_pump(struct stream_acker *a);

struct stream_acker *stream_acker_new(uv_loop_t *loop, struct redis_conn *c,
                                      const struct stream_acker_config *cfg)
{
    struct stream_acker *a = xcalloc(1, sizeof *a);
    a->c = c;
    a->stream = xstrdup(cfg->stream);
    a->group = xstrdup(cfg->group);
    a->wait_replicas = cfg->wait_replicas;
    a->wait_timeout_ms = cfg->wait_timeout_ms;
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    return a;
}

static void req_done(struct ack_req *q, bool ok, const char *why)
{
    stream_ack_cb cb = q->cb;
    void *priv = q->priv;
    free(q);
    cb(priv, ok, why);
}

/* Fail every request of list |q| (they stay pending in the stream). */
static void fail_list(struct ack_req *q, const char *why)
{
    while (q) {
        struct ack_req *next = q->next;
        req_done(q, false, why);
        q = next;
    }
}

static void on_xack(redisAsyncContext *ac, void *r, void *priv)
{
    struct ack_req *q = priv;
    redisReply *reply = r;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        req_done(q, false, reply ? reply->str : "connection lost");
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        /* Not pending any more: another consumer finished it (it took the
         * entry over while we worked on it), or the XACK of an earlier run
         * was acknowledged by a master that is gone. Worth a line: with
         * healthy consumers it does not happen. */
        q->a->n.already_acked++;
        log_info("stream", "XACK %s: the entry was no longer pending", q->id);
    }
    req_done(q, true, NULL);
}

static int send_xack(struct stream_acker *a, struct ack_req *q)
{
    const char *argv[] = { "XACK", a->stream, a->group, q->id };
    return redis_conn_cmd_argv(a->c, on_xack, q, 4, argv, NULL);
}

static void on_wait(redisAsyncContext *ac, void *r, void *priv)
{
    struct stream_acker *a = priv;
    redisReply *reply = r;
    struct ack_req *batch = a->batch;
    a->batch = NULL;
    a->waiting = false;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        a->n.waits_failed++;
        fail_list(batch, reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                  : "connection lost during WAIT");
        acker_pump(a);
        return;
    }
    if (reply->integer < a->wait_replicas) {
        a->n.waits_short++;
        uint64_t now = mono_ms();
        if (a->short_logged_ms == 0 || now - a->short_logged_ms >= SHORT_LOG_MS) {
            size_t n = 0;
            for (struct ack_req *q = batch; q; q = q->next)
                n++;
            log_warn("stream", "WAIT: %lld of %d replicas have the writes within %d ms; "
                     "%zu entries stay unacknowledged until enough do (trying again every %d ms)",
                     (long long)reply->integer, a->wait_replicas, a->wait_timeout_ms, n,
                     WAIT_RETRY_MS);
            a->short_logged_ms = now;
        }
        /* Back to the front of the queue, in order. */
        struct ack_req *last = batch;
        while (last && last->next)
            last = last->next;
        if (last) {
            last->next = a->head;
            if (a->head == NULL)
                a->tail = last;
            a->head = batch;
        }
        a->retry_at_ms = now + WAIT_RETRY_MS;
        acker_pump(a);
        return;
    }
    a->n.waits_ok++;
    a->short_logged_ms = 0;
    while (batch) {
        struct ack_req *next = batch->next;
        batch->next = NULL;
        /* WAIT covers only what was written on the connection it ran on. */
        if (batch->epoch != a->wait_epoch)
            req_done(batch, false, "the Redis connection changed since the entry's writes");
        else if (send_xack(a, batch) != 0)
            req_done(batch, false, "connection lost");
        batch = next;
    }
    acker_pump(a);
}

/* WAIT for everything queued now. Returns 0, or -1 (nothing changed). */
static int send_wait(struct stream_acker *a)
{
    char n[16], ms[16];
    snprintf(n, sizeof n, "%d", a->wait_replicas);
    snprintf(ms, sizeof ms, "%d", a->wait_timeout_ms);
    const char *argv[] = { "WAIT", n, ms };
    if (redis_conn_cmd_argv(a->c, on_wait, a, 3, argv, NULL) != 0)
        return -1;
    a->waiting = true;
    a->wait_epoch = redis_conn_epoch(a->c);
    a->batch = a->head;
    a->head = a->tail = NULL;
    return 0;
}

static void on_acker_timer(uv_timer_t *t)
{
    acker_pump(t->data);
}

/*
 * Send the next WAIT if requests are queued and none is outstanding.
 * Requests from an earlier connection fail here: nothing can tell any more
 * whether their writes reached a replica.
 */
static void acker_pump(struct stream_acker *a)
{
    if (a->waiting || a->head == NULL)
        return;
    uint64_t epoch = redis_conn_epoch(a->c);
    struct ack_req **pp = &a->head, *stale = NULL, *prev = NULL;
    while (*pp) {
        struct ack_req *q = *pp;
        if (q->epoch != epoch || !redis_conn_ready(a->c)) {
            *pp = q->next;
            q->next = stale;
            stale = q;
        } else {
            prev = q;
            pp = &q->next;
        }
    }
    a->tail = prev;
    if (stale)
        fail_list(stale, "the Redis connection changed since the entry's writes");
    if (a->head == NULL)
        return;
    uint64_t now = mono_ms();
    if (now < a->retry_at_ms) {
        uv_timer_start(&a->timer, on_acker_timer, a->retry_at_ms - now, 0);
        return;
    }
    if (send_wait(a) != 0) {
        struct ack_req *all = a->head;
        a->head = a->tail = NULL;
        fail_list(all, "connection lost");
    }
}

int stream_acker_ack(struct stream_acker *a, const char *id, uint64_t epoch,
                     stream_ack_cb cb, void *priv)
{
    if (!redis_conn_ready(a->c))
        return -1;
    if (a->wait_replicas > 0 && epoch != redis_conn_epoch(a->c))
        return -1;
    size_t n = strlen(id) + 1;
    struct ack_req *q = xcalloc(1, sizeof *q + n);
    q->a = a;
    q->cb = cb;
    q->priv = priv;
    q->epoch = epoch;
    memcpy(q->id, id, n);
    if (a->wait_replicas == 0) {
        if (send_xack(a, q) != 0) {
            free(q);
            return -1;
        }
        return 0;
    }
    if (a->tail)
        a->tail->next = q;
    else
        a->head = q;
    a->tail = q;
    /* No callback may run inside this call: anything that cannot be sent
     * now is left to the timer (acker_pump). */
    if (a->waiting)
        return 0;
    uint64_t now = mono_ms();
    if (now >= a->retry_at_ms && send_wait(a) == 0)
        return 0;
    uv_timer_start(&a->timer, on_acker_timer, a->retry_at_ms > now ? a->retry_at_ms - now : 0, 0);
    return 0;
}

void stream_acker_counts(const struct stream_acker *a, struct stream_acker_counts *out)
{
    *out = a->n;
}

static void on_acker_closed(uv_handle_t *h)
{
    struct stream_acker *a = h->data;
    free(a->stream);
    free(a->group);
    free(a);
}

void stream_acker_free(struct stream_acker *a)
{
    if (a == NULL)
        return;
    struct ack_req *lists[2] = { a->head, a->batch };
    for (int i = 0; i < 2; i++) {
        for (struct ack_req *q = lists[i], *next; q; q = next) {
            next = q->next;
            free(q);
        }
    }
    a->head = a->tail = a->batch = NULL;
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, on_acker_closed);
}

/* ---- membership ------------------------------------------------------------ */

#define SWEEP_MAX 64         /* candidates per sweep */
#define NAME_WARN_MS 30000

/* KEYS: lease. ARGV: our value, lifetime ms. 1 when the name is ours now,
 * else the holder's value. */
static const char lease_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == false or v == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return v\n";

/* KEYS: lease. ARGV: our value. Drops the lease if it is still ours. */
static const char leave_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

/*
 * KEYS: stream, then the lease key of each candidate. ARGV: group, gone_ms,
 * then the candidates' names (in KEYS order). A candidate is removed only if,
 * now, it has nothing pending, has been idle gone_ms and nobody holds its
 * name. Reply: the names removed.
 */
static const char sweep_lua[] =
    "local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "if not ok then return {} end\n"
    "local info = {}\n"
    "for _, c in ipairs(cs) do\n"
    "  local name, pending, idle\n"
    "  for i = 1, #c, 2 do\n"
    "    if c[i] == 'name' then name = c[i + 1]\n"
    "    elseif c[i] == 'pending' then pending = c[i + 1]\n"
    "    elseif c[i] == 'idle' then idle = c[i + 1] end\n"
    "  end\n"
    "  if name then info[name] = {pending, idle} end\n"
    "end\n"
    "local gone = tonumber(ARGV[2])\n"
    "local removed = {}\n"
    "for i = 3, #ARGV do\n"
    "  local c = info[ARGV[i]]\n"
    "  if c and c[1] == 0 and c[2] >= gone and redis.call('EXISTS', KEYS[i - 1]) == 0 then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])\n"
    "    removed[#removed + 1] = ARGV[i]\n"
    "  end\n"
    "end\n"
    "return removed\n";

static struct redis_script lease_script, leave_script, sweep_script;
static int member_scripts_ready;

struct stream_member {
    struct redis_conn *c;
    char *stream, *group, *consumer, *prefix;
    char *lease_key;             /* <prefix>consumer:<group>:<consumer> */
    char *value;                 /* "HOST PID RANDOM": who holds it */
    int64_t lease_ms, gone_ms;
    bool holds;                  /* the lease is ours ... */
    uint64_t held_epoch;         /* ... as renewed on this connection */
    bool asking, sweeping, left;
    bool leaving;                /* the lease's DEL awaits its reply */
    uv_timer_t timer;            /* renewal (or, without the name, another try) */
    uint64_t last_sweep_ms, warned_ms;
    uint64_t renewed_ms;         /* mono: last renewal sent */
    void (*on_change)(void *arg);
    void *arg;
};

static char *lease_key_of(const struct stream_member *m, const char *consumer)
{
    size_t n = strlen(m->prefix) + strlen(m->group) + strlen(consumer) + 16;
    char *k = xmalloc(n);
    snprintf(k, n, "%sconsumer:%s:%s", m->prefix, m->group, consumer);
    return k;
}

static void on_member_timer(uv_timer_t *t)
{
    stream_member_tick(t->data);
}

struct stream_member *stream_member_new(uv_loop_t *loop, struct redis_conn *c,
                                        const struct stream_member_config *cfg,
                                        void (*on_change)(void *arg), void *arg)
{
    if (!member_scripts_ready) {
        redis_script_init(&lease_script, lease_lua);
        redis_script_init(&leave_script, leave_lua);
        redis_script_init(&sweep_script, sweep_lua);
        member_scripts_ready = 1;
    }
    redis_conn_add_script(c, &lease_script);
    redis_conn_add_script(c, &leave_script);
    redis_conn_add_script(c, &sweep_script);
    struct stream_member *m = xcalloc(1, sizeof *m);
    m->c = c;
    m->stream = xstrdup(cfg->stream);
    m->group = xstrdup(cfg->group);
    m->consumer = xstrdup(cfg->consumer);
    m->prefix = xstrdup(cfg->prefix);
    m->lease_key = lease_key_of(m, m->consumer);
    m->lease_ms = cfg->lease_ms;
    m->gone_ms = cfg->gone_ms;
    m->on_change = on_change;
    m->arg = arg;
    char host[128] = "?";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    char rnd[37];
    uuid_v4(rnd); /* any unguessable, unique text will do */
    size_t n = strlen(host) + strlen(rnd) + 32;
    m->value = xmalloc(n);
    snprintf(m->value, n, "%s %ld %s", host, (long)getpid(), rnd);
    /* Renew three times per lifetime; without the name, try every second
     * so a name freed by a clean stop is taken at once. */
    uint64_t every = (uint64_t)m->lease_ms / 3;
    if (every > 1000)
        every = 1000;
    if (every < 100)
        every = 100;
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    uv_timer_start(&m->timer, on_member_timer, every, every);
    return m;
}

bool stream_member_holds_name(const struct stream_member *m)
{
    return m->holds && !m->left && m->held_epoch == redis_conn_epoch(m->c);
}

static void on_lease(redisAsyncContext *ac, void *r, void *priv)
{
    struct stream_member *m = priv;
    redisReply *reply = r;
    m->asking = false;
    if (reply == NULL || m->left)
        return; /* connection lost: asked again after the reconnect */
    bool was = stream_member_holds_name(m);
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        m->holds = true;
        m->held_epoch = redis_conn_epoch(m->c);
        m->warned_ms = 0;
    } else if (reply->type == REDIS_REPLY_STRING) {
        m->holds = false;
        uint64_t now = mono_ms();
        if (was) {
            log_error("stream", "consumer name %s was taken by another process (%s) while "
                      "this one could not renew it; no longer reading", m->consumer, reply->str);
            m->warned_ms = now;
        } else if (m->warned_ms == 0 || now - m->warned_ms >= NAME_WARN_MS) {
            log_error("stream", "consumer name %s is in use by another process (%s); waiting "
                      "until it stops or its lease (%lld ms) runs out. Give every process its "
                      "own [redis] consumer", m->consumer, reply->str, (long long)m->lease_ms);
            m->warned_ms = now;
        }
    } else {
        log_warn("stream", "consumer name lease: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    if (was != stream_member_holds_name(m) && m->on_change)
        m->on_change(m->arg);
}

static void on_swept(redisAsyncContext *ac, void *r, void *priv)
{
    struct stream_member *m = priv;
    redisReply *reply = r;
    m->sweeping = false;
    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("stream", "removing gone consumers: %s", reply->str);
        return;
    }
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            log_info("stream", "removed consumer %s from group %s: nothing pending, idle "
                     "%lld ms or more, and no process holds its name", reply->element[i]->str,
                     m->group, (long long)m->gone_ms);
}

static void on_consumers(redisAsyncContext *ac, void *r, void *priv)
{
    struct stream_member *m = priv;
    redisReply *reply = r;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || m->left) {
        m->sweeping = false;
        return;
    }
    const char *names[SWEEP_MAX];
    size_t n = 0;
    for (size_t i = 0; i < reply->elements && n < SWEEP_MAX; i++) {
        const redisReply *e = reply->element[i];
        const char *name = NULL;
        long long pending = -1, idle = -1;
        for (size_t k = 0; e->type == REDIS_REPLY_ARRAY && k + 1 < e->elements; k += 2) {
            const redisReply *key = e->element[k], *v = e->element[k + 1];
            if (key->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(key->str, "name") == 0 && v->type == REDIS_REPLY_STRING)
                name = v->str;
            else if (strcmp(key->str, "pending") == 0 && v->type == REDIS_REPLY_INTEGER)
                pending = v->integer;
            else if (strcmp(key->str, "idle") == 0 && v->type == REDIS_REPLY_INTEGER)
                idle = v->integer;
        }
        if (name && strcmp(name, m->consumer) != 0 && pending == 0 && idle >= m->gone_ms)
            names[n++] = name;
    }
    if (n == 0) {
        m->sweeping = false;
        return;
    }
    /* KEYS: stream + n leases; ARGV: group, gone_ms + n names. */
    const char *argv[2 * SWEEP_MAX + 3];
    char *keys[SWEEP_MAX];
    char sgone[24];
    snprintf(sgone, sizeof sgone, "%lld", (long long)m->gone_ms);
    size_t k = 0;
    argv[k++] = m->stream;
    for (size_t i = 0; i < n; i++)
        argv[k++] = keys[i] = lease_key_of(m, names[i]);
    argv[k++] = m->group;
    argv[k++] = sgone;
    for (size_t i = 0; i < n; i++)
        argv[k++] = names[i];
    if (redis_conn_eval(m->c, &sweep_script, on_swept, m, (int)n + 1, (int)k, argv, NULL) != 0)
        m->sweeping = false;
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
}

void stream_member_tick(struct stream_member *m)
{
    if (m->left || !redis_conn_ready(m->c))
        return;
    uint64_t now = mono_ms();
    /* Holding the name, renewing at a third of the lifetime is enough. */
    bool renew_due = !stream_member_holds_name(m) ||
                     now - m->renewed_ms >= (uint64_t)m->lease_ms / 3;
    if (!m->asking && renew_due) {
        m->renewed_ms = now;
        char sms[24];
        snprintf(sms, sizeof sms, "%lld", (long long)m->lease_ms);
        const char *argv[] = { m->lease_key, m->value, sms };
        if (redis_conn_eval(m->c, &lease_script, on_lease, m, 1, 3, argv, NULL) == 0)
            m->asking = true;
    }
    if (m->gone_ms <= 0 || m->sweeping)
        return;
    uint64_t every = (uint64_t)m->gone_ms / 2;
    if (every > 60000)
        every = 60000;
    if (every < 1000)
        every = 1000;
    if (m->last_sweep_ms != 0 && now - m->last_sweep_ms < every)
        return;
    m->last_sweep_ms = now;
    const char *argv[] = { "XINFO", "CONSUMERS", m->stream, m->group };
    if (redis_conn_cmd_argv(m->c, on_consumers, m, 4, argv, NULL) == 0)
        m->sweeping = true;
}

static void on_left(redisAsyncContext *ac, void *r, void *priv)
{
    struct stream_member *m = priv;
    m->leaving = false;
}

void stream_member_leave(struct stream_member *m)
{
    if (m->left)
        return;
    m->left = true;
    uv_timer_stop(&m->timer);
    if (!m->holds || !redis_conn_ready(m->c))
        return;
    const char *argv[] = { m->lease_key, m->value };
    if (redis_conn_eval(m->c, &leave_script, on_left, m, 1, 2, argv, NULL) == 0)
        m->leaving = true;
}

bool stream_member_leaving(const struct stream_member *m)
{
    return m->leaving;
}

static void on_member_closed(uv_handle_t *h)
{
    struct stream_member *m = h->data;
    free(m->stream);
    free(m->group);
    free(m->consumer);
    free(m->prefix);
    free(m->lease_key);
    free(m->value);
    free(m);
}

void stream_member_free(struct stream_member *m)
{
    if (m == NULL)
        return;
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, on_member_closed);
}
