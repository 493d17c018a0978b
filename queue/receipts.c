/*
 * Receipts: one Lua script appends the receipt to the receipts stream and
 * records the delivery's status in the event's status hash.
 */
#include "queue/receipts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/*
 * KEYS: receipts stream, status hash.
 * ARGV: maxlen, ttl_s, USER:DEVICE, status, then receipt field/value pairs.
 */
static const char settle_lua[] =
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5))\n"
    "redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[2])\n"
    "return 1\n";

static struct redis_script settle_script;
static int script_ready;

void receipts_init(struct redis_conn *c)
{
    if (!script_ready) {
        redis_script_init(&settle_script, settle_lua);
        script_ready = 1;
    }
    redis_conn_add_script(c, &settle_script);
}

static char *status_key(const char *prefix, const char *tenant, const char *event_id)
{
    size_t n = strlen(prefix) + strlen(tenant) + strlen(event_id) + 16;
    char *k = xmalloc(n);
    snprintf(k, n, "%s{%s}:status:%s", prefix, tenant, event_id);
    return k;
}

int receipts_settle(struct redis_conn *c, const char *prefix, long maxlen, int ttl_s,
                    const struct receipt *r, redisCallbackFn *fn, void *priv)
{
    size_t n = strlen(prefix) + 16;
    char *kr = xmalloc(n);
    snprintf(kr, n, "%sreceipts", prefix);
    char *ks = status_key(prefix, r->tenant, r->event);
    char smaxlen[24], sttl[24], sattempt[16], shttp[16], slat[24], sat[24];
    snprintf(smaxlen, sizeof smaxlen, "%ld", maxlen);
    snprintf(sttl, sizeof sttl, "%d", ttl_s);
    snprintf(sattempt, sizeof sattempt, "%d", r->attempt);
    snprintf(shttp, sizeof shttp, "%d", r->http_status);
    snprintf(slat, sizeof slat, "%lld", (long long)r->latency_ms);
    snprintf(sat, sizeof sat, "%lld", (long long)r->at_ms);
    size_t fl = strlen(r->user) + strlen(r->device) + 2;
    char *field = xmalloc(fl);
    snprintf(field, fl, "%s:%s", r->user, r->device);
    const char *argv[] = {
        kr, ks, smaxlen, sttl, field, r->status,
        "event", r->event, "tenant", r->tenant, "user", r->user,
        "device", r->device, "platform", r->platform, "app", r->app,
        "status", r->status, "attempt", sattempt,
        "provider_id", r->provider_id ? r->provider_id : "",
        "http_status", shttp, "reason", r->reason ? r->reason : "",
        "latency_ms", slat, "at", sat,
    };
    int rc = redis_conn_eval(c, &settle_script, fn, priv, 2,
                             (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    free(kr);
    free(ks);
    free(field);
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

bool receipts_status_is_final(const char *status)
{
    return strcmp(status, "sent") == 0 || strcmp(status, "invalid_token") == 0 ||
           strcmp(status, "failed") == 0 || strcmp(status, "expired") == 0;
}
