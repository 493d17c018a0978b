/*
 * Settlement scripts. See receipts.h for the keys.
 */
#include "queue/receipts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/*
 * KEYS: receipts, status hash, retry zset, lease zset, retry data, dead stream.
 * ARGV: 1 maxlen, 2 ttl_s, 3 USER:DEVICE, 4 status, 5 mode, 6 retry id ("" none),
 *       7 due_ms, 8 retry data, 9 dead maxlen, 10 dead reason,
 *       11.. receipt field/value pairs.
 */
static const char settle_lua[] =
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 11))\n"
    "redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[2])\n"
    "local id = ARGV[6]\n"
    "if ARGV[5] == 'retry' then\n"
    "  redis.call('ZADD', KEYS[3], ARGV[7], id)\n"
    "  redis.call('HSET', KEYS[5], id, ARGV[8])\n"
    "  redis.call('ZREM', KEYS[4], id)\n"
    "else\n"
    "  if id ~= '' then\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    redis.call('ZREM', KEYS[4], id)\n"
    "    redis.call('HDEL', KEYS[5], id)\n"
    "  end\n"
    "  if ARGV[5] == 'giveup' then\n"
    "    local f = {'reason', ARGV[10], 'code', 'delivery_' .. ARGV[4]}\n"
    "    for i = 11, #ARGV, 2 do\n"
    "      if ARGV[i] ~= 'reason' then\n"
    "        f[#f + 1] = ARGV[i]\n"
    "        f[#f + 1] = ARGV[i + 1]\n"
    "      end\n"
    "    end\n"
    "    if ARGV[8] ~= '' then\n"
    "      f[#f + 1] = 'retry_data'\n"
    "      f[#f + 1] = ARGV[8]\n"
    "    end\n"
    "    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', unpack(f))\n"
    "  end\n"
    "end\n"
    "return 1\n";

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

int receipts_settle(struct redis_conn *c, const struct settle_keys *k,
                    const struct receipt *r, const struct settle_opts *opts,
                    redisCallbackFn *fn, void *priv)
{
    static const char *const modes[] = { "final", "retry", "giveup" };
    struct settle_opts none = { SETTLE_FINAL, NULL, 0, NULL, NULL };
    if (opts == NULL)
        opts = &none;
    char *kr = key(k->prefix, "receipts");
    char *ks = status_key(k->prefix, r->tenant, r->event);
    char *kz = key(k->prefix, "retry");
    char *kl = key(k->prefix, "retry:lease");
    char *kd = key(k->prefix, "retry:data");
    char *kdead = key(k->prefix, "dead");
    char smaxlen[24], sttl[24], sdue[24], sdmax[24], sattempt[16], shttp[16], slat[24], sat[24];
    snprintf(smaxlen, sizeof smaxlen, "%ld", k->receipts_maxlen);
    snprintf(sttl, sizeof sttl, "%d", k->status_ttl_s);
    snprintf(sdue, sizeof sdue, "%lld", (long long)opts->due_ms);
    snprintf(sdmax, sizeof sdmax, "%ld", k->dead_maxlen);
    snprintf(sattempt, sizeof sattempt, "%d", r->attempt);
    snprintf(shttp, sizeof shttp, "%d", r->http_status);
    snprintf(slat, sizeof slat, "%lld", (long long)r->latency_ms);
    snprintf(sat, sizeof sat, "%lld", (long long)r->at_ms);
    size_t fl = strlen(r->user) + strlen(r->device) + 2;
    char *field = xmalloc(fl);
    snprintf(field, fl, "%s:%s", r->user, r->device);
    const char *argv[] = {
        kr, ks, kz, kl, kd, kdead,
        smaxlen, sttl, field, r->status, modes[opts->mode],
        opts->retry_id ? opts->retry_id : "", sdue,
        opts->retry_data ? opts->retry_data : "", sdmax,
        opts->dead_reason ? opts->dead_reason : "",
        "event", r->event, "tenant", r->tenant, "user", r->user,
        "device", r->device, "platform", r->platform, "app", r->app,
        "status", r->status, "attempt", sattempt,
        "provider_id", r->provider_id ? r->provider_id : "",
        "http_status", shttp, "reason", r->reason ? r->reason : "",
        "latency_ms", slat, "at", sat,
    };
    int rc = redis_conn_eval(c, &settle_script, fn, priv, 6,
                             (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    free(kr);
    free(ks);
    free(kz);
    free(kl);
    free(kd);
    free(kdead);
    free(field);
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
    char *k = status_key(prefix, tenant, event_id);
    const char *argv[] = { "HGETALL", k };
    int rc = redis_conn_cmd_argv(c, fn, priv, 2, argv, NULL);
    free(k);
    return rc;
}

bool receipts_status_is_settled(const char *status)
{
    return strcmp(status, "sent") == 0 || strcmp(status, "invalid_token") == 0 ||
           strcmp(status, "failed") == 0 || strcmp(status, "expired") == 0 ||
           strcmp(status, "opened") == 0 || strcmp(status, "retrying") == 0 ||
           strcmp(status, "held") == 0 || strcmp(status, "muted") == 0;
}
