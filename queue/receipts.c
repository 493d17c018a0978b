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
 * Every string the script unpacks costs Redis ~700 instructions, so the
 * values that repeat across a batch (event id, tenant, platform, app,
 * status, attempt, http_status, reason) are sent once, in a string table
 * S at the end of the batch, and each settlement names them by index; a
 * settlement carries only what varies (user, device, provider_id,
 * latency_ms, at). The fields only a retry or a give-up needs are present
 * only then.
 *
 * Each settlement runs in its own pcall, so one that fails (a key of the
 * wrong type) does not stop the others. Its receipt comes first, then its
 * schedule and dead-letter writes; the status fields of those that
 * succeeded are written at the end, one HSET per status hash (in batch
 * order, so of two settlements of one device the later status stays),
 * then that hash's EXPIRE. A status is thus only written once its
 * receipt and schedule writes are; when a hash's HSET (or EXPIRE) fails,
 * every settlement of that hash is reported failed (their receipts and
 * schedule writes stay, as when a per-settlement HSET failed; the retry of
 * the outcome writes them again). The whole batch is one script run,
 * atomic as before.
 *
 * The receipts stream is trimmed (XTRIM MAXLEN ~) once at the end of the
 * batch instead of with each XADD: the same approximate cap, it may run
 * over by at most one batch until the next one.
 *
 * Reply: the integer N (settlements in the batch) when every one
 * succeeded; otherwise an array with one element per settlement: 1, or
 * the error.
 *
 * KEYS: 1 receipts, 2 retry zset, 3 lease zset, 4 retry data, 5 dead stream,
 *       6.. the status hashes of the batch.
 * ARGV: 1 receipts maxlen, 2 status ttl_s, 3 dead maxlen,
 *       5 how long a given-up delivery's request is kept for replay (s, 0 = not),
 *       4 MessagePack array of N settlements and then S (an array of
 *         strings). A settlement is an array of 14 or 19 elements:
 *          1 status key index (1 = KEYS[6]), 2 event (S index), 3 tenant (S),
 *          4 user, 5 device, 6 platform (S), 7 app (S), 8 status (S),
 *          9 attempt (S), 10 provider_id, 11 http_status (S), 12 reason (S),
 *          13 latency_ms, 14 at
 *         (the receipt's fields in its order; the status field is
 *         USER:DEVICE), and only when the mode is not final or there is a
 *         retry id: 15 mode (0 final, 1 retry, 2 giveup), 16 retry id
 *         ("" none), 17 due_ms, 18 retry data, 19 dead reason.
 */
static const char settle_lua[] =
    "local b = cmsgpack.unpack(ARGV[4])\n"
    "local n = #b - 1\n"
    "local S = b[n + 1]\n"
    "local function receipt(d)\n"
    "  redis.call('XADD', KEYS[1], '*', 'event', S[d[2]],\n"
    "    'tenant', S[d[3]], 'user', d[4], 'device', d[5], 'platform', S[d[6]],\n"
    "    'app', S[d[7]], 'status', S[d[8]], 'attempt', S[d[9]], 'provider_id', d[10],\n"
    "    'http_status', S[d[11]], 'reason', S[d[12]], 'latency_ms', d[13], 'at', d[14])\n"
    "end\n"
    "local function settle(d)\n"
    "  receipt(d)\n"
    "  local mode, id = d[15], d[16]\n"
    "  if mode == 1 then\n"
    "    redis.call('ZADD', KEYS[2], d[17], id)\n"
    "    redis.call('HSET', KEYS[4], id, d[18])\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    return\n"
    "  end\n"
    "  if id ~= '' then\n"
    "    redis.call('ZREM', KEYS[2], id)\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    redis.call('HDEL', KEYS[4], id)\n"
    "  end\n"
    "  if mode == 2 then\n"
    "    local status, ev, tenant, user, device = S[d[8]], S[d[2]], S[d[3]], d[4], d[5]\n"
    "    local f = {'reason', d[19], 'code', 'delivery_' .. status, 'event', ev,\n"
    "      'tenant', tenant, 'user', user, 'device', device, 'platform', S[d[6]],\n"
    "      'app', S[d[7]], 'status', status, 'attempt', S[d[9]], 'provider_id', d[10],\n"
    "      'http_status', S[d[11]], 'latency_ms', d[13], 'at', d[14]}\n"
    /* The dead letter holds ids only; the request (rendered text, token)
     * is kept beside it for replay, under a key that names tenant and user
     * first so user.erase finds it, and expires. */
    "    if d[18] ~= '' and tonumber(ARGV[5]) > 0 then\n"
    "      local pk = KEYS[5] .. ':payload:' .. tenant .. ':' .. user .. ':' .. device ..\n"
    "        ':' .. ev\n"
    "      redis.call('SET', pk, d[18], 'EX', ARGV[5])\n"
    "      f[#f + 1] = 'original_key'\n"
    "      f[#f + 1] = pk\n"
    "    end\n"
    "    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', unpack(f))\n"
    "  end\n"
    "end\n"
    "local function failure(err)\n"
    "  if type(err) == 'table' then return err end\n"
    "  return {err = tostring(err)}\n"
    "end\n"
    "local out, st, order, failed = {}, {}, {}, false\n"
    "for i = 1, n do\n"
    "  local d = b[i]\n"
    "  local ok, err = pcall(#d == 14 and receipt or settle, d)\n"
    "  if ok then\n"
    "    out[i] = 1\n"
    "    local k = d[1]\n"
    "    local t = st[k]\n"
    "    if not t then\n"
    "      t = {}\n"
    "      st[k] = t\n"
    "      order[#order + 1] = k\n"
    "    end\n"
    "    t[#t + 1] = d[4] .. ':' .. d[5]\n"
    "    t[#t + 1] = S[d[8]]\n"
    "  else\n"
    "    out[i] = failure(err)\n"
    "    failed = true\n"
    "  end\n"
    "end\n"
    "for _, k in ipairs(order) do\n"
    "  local sk = KEYS[5 + k]\n"
    "  local ok, err = pcall(redis.call, 'HSET', sk, unpack(st[k]))\n"
    "  if ok then\n"
    "    ok, err = pcall(redis.call, 'EXPIRE', sk, ARGV[2])\n"
    "  end\n"
    "  if not ok then\n"
    "    err = failure(err)\n"
    "    for i = 1, n do\n"
    "      if out[i] == 1 and b[i][1] == k then out[i] = err end\n"
    "    end\n"
    "    failed = true\n"
    "  end\n"
    "end\n"
    /* The receipts stream is trimmed once per batch (MAXLEN ~ per XADD
     * cost Redis ~6 % of a settlement); best effort, like ~ itself. */
    "if n > 0 then pcall(redis.call, 'XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1]) end\n"
    "if not failed then return n end\n"
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

/* An array header for up to 65,535 elements. */
static void mp_array16(struct mp_buf *b, unsigned n)
{
    unsigned char *o = (unsigned char *)mp_room(b, 3);
    if (n < 16) {
        o[0] = (unsigned char)(0x90 | n);
        b->len += 1;
        return;
    }
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

/* ---- the batch's string table (S in the script) --------------------------- */

/* The fields whose values go through the table. */
enum { SF_EVENT, SF_TENANT, SF_PLATFORM, SF_APP, SF_STATUS, SF_ATTEMPT, SF_HTTP,
       SF_REASON, SF_COUNT };

#define STRTAB_MAX 64 /* strings per batch; a full table flushes the batch */

struct strtab {
    struct mp_buf enc;                     /* the strings as MessagePack, back to back */
    size_t off[STRTAB_MAX], len[STRTAB_MAX]; /* each one's bytes in enc */
    unsigned n;
    unsigned last[SF_COUNT];               /* per field: index of its last value */
};

static void strtab_reset(struct strtab *t)
{
    t->n = 0;
    t->enc.len = 0;
    memset(t->last, 0, sizeof t->last);
}

static bool strtab_is(const struct strtab *t, unsigned i, const char *s, size_t n)
{
    return t->len[i - 1] == n && memcmp(t->enc.p + t->off[i - 1], s, n) == 0;
}

/* Index (from 1) of |s| in the table for field |f|, adding it when new;
 * 0 when the table is full. The field's last value is tried first
 * (deliveries of one event come together), then the whole table. */
static unsigned strtab_index(struct strtab *t, unsigned f, const char *s, size_t n)
{
    unsigned i = t->last[f];
    if (i && strtab_is(t, i, s, n))
        return i;
    for (i = 1; i <= t->n; i++)
        if (strtab_is(t, i, s, n))
            return t->last[f] = i;
    if (t->n == STRTAB_MAX)
        return 0;
    mp_str(&t->enc, s, n);
    t->off[t->n] = t->enc.len - n;
    t->len[t->n] = n;
    return t->last[f] = ++t->n;
}

/* Append the table as the batch's last element. */
static void strtab_write(const struct strtab *t, struct mp_buf *b)
{
    mp_array16(b, t->n);
    if (t->enc.len) {
        memcpy(mp_room(b, t->enc.len), t->enc.p, t->enc.len);
        b->len += t->enc.len;
    }
}

/* A settlement's table indexes, in enum order. */
struct settle_refs {
    unsigned s[SF_COUNT];
};

/* Table indexes of |r|'s repeated values; false when the table is full
 * (some of them may have been added). */
static bool settlement_refs(struct strtab *t, const struct receipt *r, struct settle_refs *x)
{
    char attempt[24], http[24];
    size_t al = fmt_i64(attempt, r->attempt), hl = fmt_i64(http, r->http_status);
    const char *reason = r->reason ? r->reason : "";
    return (x->s[SF_EVENT] = strtab_index(t, SF_EVENT, r->event, strlen(r->event))) &&
           (x->s[SF_TENANT] = strtab_index(t, SF_TENANT, r->tenant, strlen(r->tenant))) &&
           (x->s[SF_PLATFORM] =
                strtab_index(t, SF_PLATFORM, r->platform, strlen(r->platform))) &&
           (x->s[SF_APP] = strtab_index(t, SF_APP, r->app, strlen(r->app))) &&
           (x->s[SF_STATUS] = strtab_index(t, SF_STATUS, r->status, strlen(r->status))) &&
           (x->s[SF_ATTEMPT] = strtab_index(t, SF_ATTEMPT, attempt, al)) &&
           (x->s[SF_HTTP] = strtab_index(t, SF_HTTP, http, hl)) &&
           (x->s[SF_REASON] = strtab_index(t, SF_REASON, reason, strlen(reason)));
}

_Static_assert(SETTLE_FINAL == 0 && SETTLE_RETRY == 1 && SETTLE_GIVE_UP == 2,
               "the settle script's mode numbers");

/* Append one settlement (the script's layout, above). */
static void encode_settlement(struct mp_buf *b, unsigned key_index, const struct settle_refs *x,
                              const struct receipt *r, const struct settle_opts *o)
{
    bool ext = o->mode != SETTLE_FINAL || (o->retry_id && o->retry_id[0]);
    mp_array16(b, ext ? 19 : 14);
    mp_uint(b, key_index);
    mp_uint(b, x->s[SF_EVENT]);
    mp_uint(b, x->s[SF_TENANT]);
    mp_cstr(b, r->user);
    mp_cstr(b, r->device);
    mp_uint(b, x->s[SF_PLATFORM]);
    mp_uint(b, x->s[SF_APP]);
    mp_uint(b, x->s[SF_STATUS]);
    mp_uint(b, x->s[SF_ATTEMPT]);
    mp_cstr(b, r->provider_id);
    mp_uint(b, x->s[SF_HTTP]);
    mp_uint(b, x->s[SF_REASON]);
    mp_num(b, r->latency_ms);
    mp_num(b, r->at_ms);
    if (!ext)
        return;
    mp_uint(b, (unsigned)o->mode);
    mp_cstr(b, o->retry_id);
    mp_num(b, o->due_ms);
    mp_cstr(b, o->retry_data);
    mp_cstr(b, o->dead_reason);
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
    struct strtab strs;           /* the repeated values of this batch */
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

redisReply *receipts_batch_reply_for(redisReply *reply, size_t n, size_t i)
{
    static char bad_text[] = "ERR unexpected reply to the settle script";
    static redisReply bad = { .type = REDIS_REPLY_ERROR, .str = bad_text,
                              .len = sizeof bad_text - 1 };
    /* What a settlement's own script run answered before batches. */
    static redisReply ok = { .type = REDIS_REPLY_INTEGER, .integer = 1 };
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        return reply;
    if (reply->type == REDIS_REPLY_INTEGER)
        return reply->integer >= 0 && (unsigned long long)reply->integer == n ? &ok : &bad;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == n)
        return reply->element[i];
    return &bad;
}

/* The script's reply: the count when every settlement succeeded, else one
 * element per settlement. Anything else (the connection dropped, the
 * script failed as a whole) goes to every one. */
static void on_batch_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct sent_batch *s = priv;
    for (size_t i = 0; i < s->n; i++)
        s->cb[i].fn(ac, receipts_batch_reply_for(reply_, s->n, i), s->cb[i].priv);
    free(s);
}

/* Send |blob| (|n| settlements from ARRAY32_HEADER on, then the string
 * table) with |n_skeys| status keys.
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
    size_t elements = n + 1; /* the settlements and the string table */
    h[0] = 0xdd;
    h[1] = (unsigned char)(elements >> 24);
    h[2] = (unsigned char)(elements >> 16);
    h[3] = (unsigned char)(elements >> 8);
    h[4] = (unsigned char)elements;
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
    strtab_reset(&b->strs);
}

void receipts_batch_flush(struct receipts_batch *b)
{
    if (b->n == 0)
        return;
    struct sent_batch *s = sent_new(b->cb, b->n);
    const char *skeys[BATCH_MAX_KEYS];
    for (unsigned i = 0; i < b->n_skeys; i++)
        skeys[i] = b->skeys.p + b->skey_off[i];
    strtab_write(&b->strs, &b->blob);
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
    struct settle_refs x;
    if (ki == 0 || !settlement_refs(&b->strs, r, &x)) {
        /* No room for another status key or string: send what is queued
         * (connected: sent, no callback runs now) and start afresh. */
        receipts_batch_flush(b);
        ki = batch_status_key(b, r->tenant, r->event);
        settlement_refs(&b->strs, r, &x); /* an empty table has room */
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->cb = xrealloc(b->cb, b->cap * sizeof *b->cb);
    }
    b->cb[b->n++] = (struct settle_cb){ fn, priv };
    encode_settlement(&b->blob, ki, &x, r, opts);
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
    free(b->strs.enc.p);
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
