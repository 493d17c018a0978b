/*
 * Settlement scripts. See receipts.h for the keys.
 */
#include "queue/receipts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/*
 * Settling a batch: one EVALSHA for every settlement queued during a loop
 * iteration. hiredis formats each argument of a command with a printf-like
 * formatter, and the per-delivery script took 29 arguments: that was a
 * third of varseld's instructions per notification. Now the settlements
 * travel as one MessagePack argument (lengths, no escaping, nothing to
 * format) and the script loops over them.
 *
 * Each settlement runs in its own pcall, so one that fails (a key of the
 * wrong type) does not stop the others, and the reply is an array with
 * one element per settlement: 1, or the error. Each delivery's writes
 * (receipt, status, schedule, dead letter) happen in one script run, so
 * they stay atomic as before; the batch is only a transport.
 *
 * KEYS: 1 receipts, 2 retry zset, 3 lease zset, 4 retry data, 5 dead stream,
 *       6.. the status hashes of the batch.
 * ARGV: 1 receipts maxlen, 2 status ttl_s, 3 dead maxlen,
 *       5 how long a given-up delivery's request is kept for replay (s, 0 = not),
 *       4 MessagePack array of settlements, each an array of
 *         1 status key index (1 = KEYS[6]), 2 USER:DEVICE, 3 status,
 *         4 mode, 5 retry id ("" none), 6 due_ms, 7 retry data,
 *         8 dead reason, 9.. receipt values: event tenant user device
 *         platform app attempt provider_id http_status reason latency_ms at
 *         (the receipt's status is 3).
 * The status hash's TTL is set once per batch and key (right after the
 * first HSET of that key in the batch).
 */
static const char settle_lua[] =
    "local batch = cmsgpack.unpack(ARGV[4])\n"
    "local ttl_set = {}\n"
    "local function settle(d)\n"
    "  local sk, status, mode, id = KEYS[5 + d[1]], d[3], d[4], d[5]\n"
    "  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', d[9],\n"
    "    'tenant', d[10], 'user', d[11], 'device', d[12], 'platform', d[13],\n"
    "    'app', d[14], 'status', status, 'attempt', d[15], 'provider_id', d[16],\n"
    "    'http_status', d[17], 'reason', d[18], 'latency_ms', d[19], 'at', d[20])\n"
    "  redis.call('HSET', sk, d[2], status)\n"
    "  if not ttl_set[sk] then\n"
    "    redis.call('EXPIRE', sk, ARGV[2])\n"
    "    ttl_set[sk] = true\n"
    "  end\n"
    "  if mode == 'retry' then\n"
    "    redis.call('ZADD', KEYS[2], d[6], id)\n"
    "    redis.call('HSET', KEYS[4], id, d[7])\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    return\n"
    "  end\n"
    "  if id ~= '' then\n"
    "    redis.call('ZREM', KEYS[2], id)\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    redis.call('HDEL', KEYS[4], id)\n"
    "  end\n"
    "  if mode == 'giveup' then\n"
    "    local f = {'reason', d[8], 'code', 'delivery_' .. status, 'event', d[9],\n"
    "      'tenant', d[10], 'user', d[11], 'device', d[12], 'platform', d[13],\n"
    "      'app', d[14], 'status', status, 'attempt', d[15], 'provider_id', d[16],\n"
    "      'http_status', d[17], 'latency_ms', d[19], 'at', d[20]}\n"
    /* The dead letter holds ids only; the request (rendered text, token)
     * is kept beside it for replay, under a key that names tenant and user
     * first so user.erase finds it, and expires. */
    "    if d[7] ~= '' and tonumber(ARGV[5]) > 0 then\n"
    "      local pk = KEYS[5] .. ':payload:' .. d[10] .. ':' .. d[11] .. ':' .. d[12] ..\n"
    "        ':' .. d[9]\n"
    "      redis.call('SET', pk, d[7], 'EX', ARGV[5])\n"
    "      f[#f + 1] = 'original_key'\n"
    "      f[#f + 1] = pk\n"
    "    end\n"
    "    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', unpack(f))\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for i = 1, #batch do\n"
    "  local ok, err = pcall(settle, batch[i])\n"
    "  if ok then\n"
    "    out[i] = 1\n"
    "  elseif type(err) == 'table' then\n"
    "    out[i] = err\n"
    "  else\n"
    "    out[i] = {err = tostring(err)}\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * KEYS: retry zset, lease zset, retry data. ARGV: now, lease_until, count.
 */
static const char claim_lua[] =
    "local now = tonumber(ARGV[1])\n"
    "local n = tonumber(ARGV[3])\n"
    "local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, n)\n"
    "for _, id in ipairs(expired) do\n"
    "  redis.call('ZREM', KEYS[2], id)\n"
    "  redis.call('ZADD', KEYS[1], now, id)\n"
    "end\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, n)\n"
    "local out = {}\n"
    "for _, id in ipairs(due) do\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "  local data = redis.call('HGET', KEYS[3], id)\n"
    "  if data then\n"
    "    redis.call('ZADD', KEYS[2], ARGV[2], id)\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = data\n"
    "  end\n"
    "end\n"
    "return out\n";

static struct redis_script settle_script, claim_script;
static int scripts_ready;

void receipts_init(struct redis_conn *c)
{
    if (!scripts_ready) {
        redis_script_init(&settle_script, settle_lua);
        redis_script_init(&claim_script, claim_lua);
        scripts_ready = 1;
    }
    redis_conn_add_script(c, &settle_script);
    redis_conn_add_script(c, &claim_script);
}

static char *key(const char *prefix, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(suffix) + 1;
    char *k = xmalloc(n);
    snprintf(k, n, "%s%s", prefix, suffix);
    return k;
}

static char *status_key(const char *prefix, const char *tenant, const char *event_id)
{
    size_t n = strlen(prefix) + strlen(tenant) + strlen(event_id) + 16;
    char *k = xmalloc(n);
    snprintf(k, n, "%s{%s}:status:%s", prefix, tenant, event_id);
    return k;
}

/* ---- MessagePack writer (the subset the settle script reads) ------------ */

struct mp_buf {
    char *p;
    size_t len, cap;
};

static char *mp_room(struct mp_buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    return b->p + b->len;
}

static void mp_str(struct mp_buf *b, const char *s, size_t n)
{
    unsigned char *o = (unsigned char *)mp_room(b, n + 5);
    size_t h;
    if (n < 32) {
        o[0] = (unsigned char)(0xa0 | n);
        h = 1;
    } else if (n < 256) {
        o[0] = 0xd9;
        o[1] = (unsigned char)n;
        h = 2;
    } else if (n < 65536) {
        o[0] = 0xda;
        o[1] = (unsigned char)(n >> 8);
        o[2] = (unsigned char)n;
        h = 3;
    } else {
        o[0] = 0xdb;
        o[1] = (unsigned char)(n >> 24);
        o[2] = (unsigned char)(n >> 16);
        o[3] = (unsigned char)(n >> 8);
        o[4] = (unsigned char)n;
        h = 5;
    }
    if (n)
        memcpy(o + h, s, n);
    b->len += h + n;
}

static void mp_cstr(struct mp_buf *b, const char *s)
{
    mp_str(b, s ? s : "", s ? strlen(s) : 0);
}

/* A number as decimal text: the script passes it on to Redis as is. */
static void mp_num(struct mp_buf *b, int64_t v)
{
    char t[24];
    mp_str(b, t, fmt_i64(t, v));
}

/* An array header of 16 elements at most (a settlement has 20). */
static void mp_array16(struct mp_buf *b, unsigned n)
{
    unsigned char *o = (unsigned char *)mp_room(b, 3);
    o[0] = 0xdc;
    o[1] = (unsigned char)(n >> 8);
    o[2] = (unsigned char)n;
    b->len += 3;
}

static void mp_uint(struct mp_buf *b, unsigned v)
{
    unsigned char *o = (unsigned char *)mp_room(b, 3);
    if (v < 128) {
        o[0] = (unsigned char)v;
        b->len += 1;
    } else {
        o[0] = 0xcd;
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
        b->len += 3;
    }
}

/* Append one settlement (the script's layout, above). */
static void encode_settlement(struct mp_buf *b, unsigned key_index, const struct receipt *r,
                              const struct settle_opts *o)
{
    static const char *const modes[] = { "final", "retry", "giveup" };
    size_t ul = strlen(r->user), dl = strlen(r->device);
    mp_array16(b, 20);
    mp_uint(b, key_index);
    /* USER:DEVICE, written in place */
    char field[512];
    if (ul + 1 + dl <= sizeof field) {
        memcpy(field, r->user, ul);
        field[ul] = ':';
        memcpy(field + ul + 1, r->device, dl);
        mp_str(b, field, ul + 1 + dl);
    } else {
        char *f = xmalloc(ul + 1 + dl);
        memcpy(f, r->user, ul);
        f[ul] = ':';
        memcpy(f + ul + 1, r->device, dl);
        mp_str(b, f, ul + 1 + dl);
        free(f);
    }
    mp_cstr(b, r->status);
    mp_cstr(b, modes[o->mode]);
    mp_cstr(b, o->retry_id);
    mp_num(b, o->due_ms);
    mp_cstr(b, o->retry_data);
    mp_cstr(b, o->dead_reason);
    mp_cstr(b, r->event);
    mp_cstr(b, r->tenant);
    mp_str(b, r->user, ul);
    mp_str(b, r->device, dl);
    mp_cstr(b, r->platform);
    mp_cstr(b, r->app);
    mp_num(b, r->attempt);
    mp_cstr(b, r->provider_id);
    mp_num(b, r->http_status);
    mp_cstr(b, r->reason);
    mp_num(b, r->latency_ms);
    mp_num(b, r->at_ms);
}

/* ---- batches --------------------------------------------------------------- */

/* redis_conn_eval takes 61 arguments: 5 fixed keys + 5 ARGV leave 51. */
#define BATCH_MAX_KEYS 48
#define BATCH_MAX_ITEMS 256          /* settlements per script run */
#define BATCH_MAX_BYTES (256 * 1024) /* ... and bytes of MessagePack */
#define ARRAY32_HEADER 5             /* room kept for the outer array header */

struct settle_cb {
    redisCallbackFn *fn;
    void *priv;
};

/* One EVALSHA on its way: the callbacks its reply is for, in order. */
struct sent_batch {
    size_t n;
    struct settle_cb cb[];
};

struct receipts_batch {
    uv_prepare_t prepare;         /* flushes before the loop blocks */
    struct redis_conn *conn;      /* borrowed */
    char *keys[5];                /* receipts, retry, retry:lease, retry:data, dead */
    size_t key_len[5];
    char smaxlen[24], sttl[24], sdmax[24], spttl[24];
    char *prefix;
    size_t prefix_len;
    struct mp_buf blob;           /* array32 header room + settlements */
    struct mp_buf skeys;          /* status keys of this batch, back to back */
    size_t skey_off[BATCH_MAX_KEYS], skey_len[BATCH_MAX_KEYS];
    unsigned n_skeys;
    struct settle_cb *cb;         /* callbacks of this batch */
    size_t n, cap;
    bool armed;                   /* prepare handle started */
    bool closing;
};

static struct sent_batch *sent_new(const struct settle_cb *cb, size_t n)
{
    struct sent_batch *s = xmalloc(sizeof *s + n * sizeof *cb);
    s->n = n;
    memcpy(s->cb, cb, n * sizeof *cb);
    return s;
}

/* The script's reply: one element per settlement. Anything else (the
 * connection dropped, the script failed as a whole) goes to every one. */
static void on_batch_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct sent_batch *s = priv;
    redisReply *reply = reply_;
    static char bad_text[] = "ERR unexpected reply to the settle script";
    static redisReply bad = { .type = REDIS_REPLY_ERROR, .str = bad_text,
                              .len = sizeof bad_text - 1 };
    for (size_t i = 0; i < s->n; i++) {
        redisReply *r = reply;
        if (reply && reply->type == REDIS_REPLY_ARRAY)
            r = i < reply->elements ? reply->element[i] : &bad;
        else if (reply && reply->type != REDIS_REPLY_ERROR)
            r = &bad;
        s->cb[i].fn(ac, r, s->cb[i].priv);
    }
    free(s);
}

/* Send |blob| (settlements from ARRAY32_HEADER on) with |n_skeys| status keys.
 * Returns 0, or -1 when the connection is not ready (nothing was sent). */
static int send_settlements(struct redis_conn *c, char *const fixed[5],
                            const size_t fixed_len[5], const char *smaxlen,
                            const char *sttl, const char *sdmax, const char *spttl,
                            const char *const *skeys,
                            const size_t *skey_len, unsigned n_skeys, struct mp_buf *blob,
                            size_t n, struct sent_batch *s)
{
    /* 5 keys, the status keys, then 5 ARGV: MAXLEN, TTL, dead MAXLEN, the
     * settlements, the dead payload TTL. */
    const char *argv[5 + BATCH_MAX_KEYS + 5];
    size_t argvlen[5 + BATCH_MAX_KEYS + 5];
    int k = 0;
    for (int i = 0; i < 5; i++, k++) {
        argv[k] = fixed[i];
        argvlen[k] = fixed_len[i];
    }
    for (unsigned i = 0; i < n_skeys; i++, k++) {
        argv[k] = skeys[i];
        argvlen[k] = skey_len[i];
    }
    unsigned char *h = (unsigned char *)blob->p;
    h[0] = 0xdd;
    h[1] = (unsigned char)(n >> 24);
    h[2] = (unsigned char)(n >> 16);
    h[3] = (unsigned char)(n >> 8);
    h[4] = (unsigned char)n;
    argv[k] = smaxlen; argvlen[k++] = strlen(smaxlen);
    argv[k] = sttl; argvlen[k++] = strlen(sttl);
    argv[k] = sdmax; argvlen[k++] = strlen(sdmax);
    argv[k] = blob->p; argvlen[k++] = blob->len;
    argv[k] = spttl; argvlen[k++] = strlen(spttl);
    return redis_conn_eval(c, &settle_script, on_batch_reply, s, 5 + (int)n_skeys, k, argv,
                           argvlen);
}

static void batch_reset(struct receipts_batch *b)
{
    b->n = 0;
    b->n_skeys = 0;
    b->skeys.len = 0;
    b->blob.len = ARRAY32_HEADER;
}

void receipts_batch_flush(struct receipts_batch *b)
{
    if (b->n == 0)
        return;
    struct sent_batch *s = sent_new(b->cb, b->n);
    const char *skeys[BATCH_MAX_KEYS];
    for (unsigned i = 0; i < b->n_skeys; i++)
        skeys[i] = b->skeys.p + b->skey_off[i];
    int rc = send_settlements(b->conn, b->keys, b->key_len, b->smaxlen, b->sttl, b->sdmax,
                              b->spttl,
                              skeys, b->skey_len, b->n_skeys, &b->blob, b->n, s);
    batch_reset(b);
    /* Not sent (the connection went down after these were queued): each
     * callback gets NULL, as hiredis does for a command lost with its
     * connection. They may queue new settlements: the batch is empty. */
    if (rc != 0)
        on_batch_reply(NULL, NULL, s);
}

static void on_prepare(uv_prepare_t *h)
{
    struct receipts_batch *b = h->data;
    uv_prepare_stop(h);
    b->armed = false;
    receipts_batch_flush(b);
}

struct receipts_batch *receipts_batch_new(uv_loop_t *loop, struct redis_conn *c,
                                          const struct settle_keys *k)
{
    static const char *const suffix[5] = { "receipts", "retry", "retry:lease",
                                           "retry:data", "dead" };
    struct receipts_batch *b = xcalloc(1, sizeof *b);
    b->conn = c;
    for (int i = 0; i < 5; i++) {
        b->keys[i] = key(k->prefix, suffix[i]);
        b->key_len[i] = strlen(b->keys[i]);
    }
    b->prefix = xstrdup(k->prefix);
    b->prefix_len = strlen(k->prefix);
    fmt_i64(b->smaxlen, k->receipts_maxlen);
    fmt_i64(b->sttl, k->status_ttl_s);
    fmt_i64(b->sdmax, k->dead_maxlen);
    fmt_i64(b->spttl, k->dead_payload_ttl_s);
    mp_room(&b->blob, ARRAY32_HEADER);
    batch_reset(b);
    uv_prepare_init(loop, &b->prepare);
    b->prepare.data = b;
    return b;
}
/*
 * Index (from 1) of the status hash of (|tenant|, |event|) among the
 * batch's keys, adding it when new; 0 when the batch has no room for
 * another key. Deliveries of one event come together, so the last key is
 * checked first.
 */
static unsigned batch_status_key(struct receipts_batch *b, const char *tenant,
                                 const char *event)
{
    size_t tl = strlen(tenant), el = strlen(event);
    size_t len = b->prefix_len + 1 + tl + 8 + el;   /* P{T}:status:E */
    char *k = mp_room(&b->skeys, len);
    char *o = k;
    memcpy(o, b->prefix, b->prefix_len);
    o += b->prefix_len;
    *o++ = '{';
    memcpy(o, tenant, tl);
    o += tl;
    memcpy(o, "}:status:", 9);
    o += 9;
    memcpy(o, event, el);
    len = (size_t)(o + el - k);
    for (unsigned i = b->n_skeys; i-- > 0;)
        if (b->skey_len[i] == len && memcmp(b->skeys.p + b->skey_off[i], k, len) == 0)
            return i + 1;
    if (b->n_skeys == BATCH_MAX_KEYS)
        return 0;
    b->skey_off[b->n_skeys] = b->skeys.len;
    b->skey_len[b->n_skeys] = len;
    b->skeys.len += len;
    return ++b->n_skeys;
}

int receipts_batch_add(struct receipts_batch *b, const struct receipt *r,
                       const struct settle_opts *opts, redisCallbackFn *fn, void *priv)
{
    struct settle_opts none = { SETTLE_FINAL, NULL, 0, NULL, NULL };
    if (b->closing || !redis_conn_ready(b->conn))
        return -1;
    if (opts == NULL)
        opts = &none;
    unsigned ki = batch_status_key(b, r->tenant, r->event);
    if (ki == 0) {
        receipts_batch_flush(b); /* connected: sent, no callback runs now */
        ki = batch_status_key(b, r->tenant, r->event);
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->cb = xrealloc(b->cb, b->cap * sizeof *b->cb);
    }
    b->cb[b->n++] = (struct settle_cb){ fn, priv };
    encode_settlement(&b->blob, ki, r, opts);
    if (b->n >= BATCH_MAX_ITEMS || b->blob.len >= BATCH_MAX_BYTES) {
        receipts_batch_flush(b);
    } else if (!b->armed) {
        uv_prepare_start(&b->prepare, on_prepare);
        b->armed = true;
    }
    return 0;
}

static void on_batch_closed(uv_handle_t *h)
{
    struct receipts_batch *b = h->data;
    for (int i = 0; i < 5; i++)
        free(b->keys[i]);
    free(b->prefix);
    free(b->blob.p);
    free(b->skeys.p);
    free(b->cb);
    free(b);
}

void receipts_batch_close(struct receipts_batch *b)
{
    if (b == NULL || b->closing)
        return;
    receipts_batch_flush(b);
    b->closing = true;
    uv_close((uv_handle_t *)&b->prepare, on_batch_closed);
}

int receipts_settle(struct redis_conn *c, const struct settle_keys *k,
                    const struct receipt *r, const struct settle_opts *opts,
                    redisCallbackFn *fn, void *priv)
{
    static const char *const suffix[5] = { "receipts", "retry", "retry:lease",
                                           "retry:data", "dead" };
    struct settle_opts none = { SETTLE_FINAL, NULL, 0, NULL, NULL };
    if (!redis_conn_ready(c))
        return -1;
    if (opts == NULL)
        opts = &none;
    char *keys[5];
    size_t key_len[5];
    for (int i = 0; i < 5; i++) {
        keys[i] = key(k->prefix, suffix[i]);
        key_len[i] = strlen(keys[i]);
    }
    char *ks = status_key(k->prefix, r->tenant, r->event);
    const char *skeys[1] = { ks };
    size_t skey_len[1] = { strlen(ks) };
    char smaxlen[24], sttl[24], sdmax[24], spttl[24];
    fmt_i64(smaxlen, k->receipts_maxlen);
    fmt_i64(sttl, k->status_ttl_s);
    fmt_i64(sdmax, k->dead_maxlen);
    fmt_i64(spttl, k->dead_payload_ttl_s);
    struct mp_buf blob = { 0 };
    mp_room(&blob, ARRAY32_HEADER);
    blob.len = ARRAY32_HEADER;
    encode_settlement(&blob, 1, r, opts);
    struct settle_cb cb = { fn, priv };
    struct sent_batch *s = sent_new(&cb, 1);
    int rc = send_settlements(c, keys, key_len, smaxlen, sttl, sdmax, spttl, skeys, skey_len, 1,
                              &blob, 1, s);
    if (rc != 0)
        free(s);
    for (int i = 0; i < 5; i++)
        free(keys[i]);
    free(ks);
    free(blob.p);
    return rc;
}

int receipts_claim_retries(struct redis_conn *c, const char *prefix, int64_t now,
                           int64_t lease_ms, int count, redisCallbackFn *fn, void *priv)
{
    char *kz = key(prefix, "retry");
    char *kl = key(prefix, "retry:lease");
    char *kd = key(prefix, "retry:data");
    char snow[24], suntil[24], scount[16];
    snprintf(snow, sizeof snow, "%lld", (long long)now);
    snprintf(suntil, sizeof suntil, "%lld", (long long)(now + lease_ms));
    snprintf(scount, sizeof scount, "%d", count);
    const char *argv[] = { kz, kl, kd, snow, suntil, scount };
    int rc = redis_conn_eval(c, &claim_script, fn, priv, 3, 6, argv, NULL);
    free(kz);
    free(kl);
    free(kd);
    return rc;
}

int receipts_renew_leases(struct redis_conn *c, const char *prefix, int64_t until_ms,
                          const char *const *ids, size_t n)
{
    if (n == 0)
        return 0;
    char *kl = key(prefix, "retry:lease");
    char suntil[24];
    snprintf(suntil, sizeof suntil, "%lld", (long long)until_ms);
    /* ZADD XX: only leases still held (a settled retry is gone). */
    const char **argv = xmalloc((3 + 2 * n) * sizeof *argv);
    size_t k = 0;
    argv[k++] = "ZADD";
    argv[k++] = kl;
    argv[k++] = "XX";
    for (size_t i = 0; i < n; i++) {
        argv[k++] = suntil;
        argv[k++] = ids[i];
    }
    int rc = redis_conn_cmd_argv(c, NULL, NULL, (int)k, argv, NULL);
    free(argv);
    free(kl);
    return rc;
}

int receipts_status_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                           const char *event_id, redisCallbackFn *fn, void *priv)
{
    /* Once per event: written as RESP here (hiredis's formatter and the
     * key's snprintf cost more than the lookup). */
    size_t pl = strlen(prefix), tl = strlen(tenant), el = strlen(event_id);
    size_t kl = pl + tl + el + 10, need = kl + 48;
    char stack[512];
    char *buf = need <= sizeof stack ? stack : xmalloc(need), *o = buf;
    memcpy(o, "*2\r\n$7\r\nHGETALL\r\n$", 18);
    o += 18;
    o += fmt_i64(o, (int64_t)kl);
    *o++ = '\r';
    *o++ = '\n';
    memcpy(o, prefix, pl);
    o += pl;
    *o++ = '{';
    memcpy(o, tenant, tl);
    o += tl;
    memcpy(o, "}:status:", 9);
    o += 9;
    memcpy(o, event_id, el);
    o += el;
    *o++ = '\r';
    *o++ = '\n';
    int rc = redis_conn_cmd_formatted(c, fn, priv, buf, (size_t)(o - buf));
    if (buf != stack)
        free(buf);
    return rc;
}

bool receipts_status_is_settled(const char *status)
{
    return strcmp(status, "sent") == 0 || strcmp(status, "invalid_token") == 0 ||
           strcmp(status, "failed") == 0 || strcmp(status, "expired") == 0 ||
           strcmp(status, "opened") == 0 || strcmp(status, "retrying") == 0 ||
           strcmp(status, "held") == 0 || strcmp(status, "muted") == 0;
}
