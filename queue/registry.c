/*
 * Device registry: Lua scripts for register / logout / dead-token removal,
 * and the parser for stored device records. See registry.h for the layout.
 */
#include "queue/registry.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define TOMBSTONE_TTL_S "2592000"

/*
 * KEYS: devices hash, gone hash, token index of the new token.
 * ARGV: device, record JSON, occurred_ms, tenant, user, prefix, app, token.
 */
static const char register_lua[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local at = tonumber(ARGV[3])\n"
    "local gone = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if gone and tonumber(gone) > at then return 'stale' end\n"
    "local er = redis.call('HGET', KEYS[2], ':erased')\n"
    "if er and tonumber(er) >= at then return 'stale' end\n"
    "if cur then\n"
    "  local c = cjson.decode(cur)\n"
    "  if tonumber(c.updated_at) > at then return 'stale' end\n"
    "  if c.token ~= ARGV[8] or c.app ~= ARGV[7] then\n"
    "    local ik = ARGV[6] .. 'token:' .. c.app .. ':' .. c.token\n"
    "    local o = redis.call('GET', ik)\n"
    "    if o then\n"
    "      local oo = cjson.decode(o)\n"
    "      if oo.tenant == ARGV[4] and oo.user == ARGV[5] and oo.device == ARGV[1] then\n"
    "        redis.call('DEL', ik)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local o = redis.call('GET', KEYS[3])\n"
    "if o then\n"
    "  local oo = cjson.decode(o)\n"
    "  if not (oo.tenant == ARGV[4] and oo.user == ARGV[5] and oo.device == ARGV[1]) then\n"
    "    local ok = ARGV[6] .. '{' .. oo.tenant .. '}:devices:' .. oo.user\n"
    "    local od = redis.call('HGET', ok, oo.device)\n"
    "    if od then\n"
    "      local d = cjson.decode(od)\n"
    "      if d.token == ARGV[8] and d.app == ARGV[7] then\n"
    "        if tonumber(d.updated_at) > at then return 'stale' end\n"
    "        redis.call('HDEL', ok, oo.device)\n"
    "        local gk = ARGV[6] .. '{' .. oo.tenant .. '}:gone:' .. oo.user\n"
    "        redis.call('HSET', gk, oo.device, ARGV[3])\n"
    "        redis.call('EXPIRE', gk, " TOMBSTONE_TTL_S ")\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "redis.call('SET', KEYS[3], cjson.encode({tenant=ARGV[4], user=ARGV[5], device=ARGV[1]}))\n"
    "return 'ok'\n";

/*
 * KEYS: devices hash, gone hash. ARGV: device, occurred_ms, tenant, user, prefix.
 */
static const char unregister_lua[] =
    "local at = tonumber(ARGV[2])\n"
    "local gone = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if gone and tonumber(gone) >= at then return 'stale' end\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if cur then\n"
    "  local c = cjson.decode(cur)\n"
    "  if tonumber(c.updated_at) > at then return 'stale' end\n"
    "  local ik = ARGV[5] .. 'token:' .. c.app .. ':' .. c.token\n"
    "  local o = redis.call('GET', ik)\n"
    "  if o then\n"
    "    local oo = cjson.decode(o)\n"
    "    if oo.tenant == ARGV[3] and oo.user == ARGV[4] and oo.device == ARGV[1] then\n"
    "      redis.call('DEL', ik)\n"
    "    end\n"
    "  end\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "end\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[2], " TOMBSTONE_TTL_S ")\n"
    "return 'ok'\n";

/*
 * KEYS: devices hash, gone hash, token index.
 * ARGV: device, token, app, timestamp_ms (-1 = unconditional), now_ms.
 */
static const char remove_lua[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then return 'absent' end\n"
    "local c = cjson.decode(cur)\n"
    "if c.token ~= ARGV[2] or c.app ~= ARGV[3] then return 'moved' end\n"
    "local ts = tonumber(ARGV[4])\n"
    "if ts >= 0 and tonumber(c.updated_at) > ts then return 'reregistered' end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], c.updated_at)\n"
    "redis.call('EXPIRE', KEYS[2], " TOMBSTONE_TTL_S ")\n"
    "local o = redis.call('GET', KEYS[3])\n"
    "if o then\n"
    "  local oo = cjson.decode(o)\n"
    "  if oo.device == ARGV[1] then redis.call('DEL', KEYS[3]) end\n"
    "end\n"
    "return 'removed'\n";

static struct redis_script register_script, unregister_script, remove_script;
static int scripts_ready;

void registry_init(struct redis_conn *c)
{
    if (!scripts_ready) {
        redis_script_init(&register_script, register_lua);
        redis_script_init(&unregister_script, unregister_lua);
        redis_script_init(&remove_script, remove_lua);
        scripts_ready = 1;
    }
    redis_conn_add_script(c, &register_script);
    redis_conn_add_script(c, &unregister_script);
    redis_conn_add_script(c, &remove_script);
}

static char *key_user(const char *prefix, const char *kind, const char *tenant,
                      const char *user)
{
    size_t n = strlen(prefix) + strlen(kind) + strlen(tenant) + strlen(user) + 8;
    char *k = xmalloc(n);
    snprintf(k, n, "%s{%s}:%s:%s", prefix, tenant, kind, user);
    return k;
}

static char *key_token(const char *prefix, const char *app, const char *token)
{
    size_t n = strlen(prefix) + strlen(app) + strlen(token) + 16;
    char *k = xmalloc(n);
    snprintf(k, n, "%stoken:%s:%s", prefix, app, token);
    return k;
}

int registry_apply(struct redis_conn *c, const char *prefix, const struct event *ev,
                   redisCallbackFn *fn, void *priv)
{
    char at[32];
    snprintf(at, sizeof at, "%lld", (long long)ev->occurred_at_ms);
    char *kdev = key_user(prefix, "devices", ev->tenant, ev->user);
    char *kgone = key_user(prefix, "gone", ev->tenant, ev->user);
    int rc;
    if (ev->type == EVENT_DEVICE_REGISTER) {
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "platform", ev->platform);
        cJSON_AddStringToObject(rec, "token", ev->token);
        cJSON_AddStringToObject(rec, "app", ev->app);
        if (ev->locale)
            cJSON_AddStringToObject(rec, "locale", ev->locale);
        cJSON_AddStringToObject(rec, "environment",
                                ev->environment ? ev->environment : "production");
        cJSON_AddNumberToObject(rec, "updated_at", (double)ev->occurred_at_ms);
        char *json = cJSON_PrintUnformatted(rec);
        cJSON_Delete(rec);
        char *ktok = key_token(prefix, ev->app, ev->token);
        const char *argv[] = { kdev, kgone, ktok, ev->device, json, at, ev->tenant,
                               ev->user, prefix, ev->app, ev->token };
        rc = redis_conn_eval(c, &register_script, fn, priv, 3, 11, argv, NULL);
        free(ktok);
        cJSON_free(json);
    } else {
        const char *argv[] = { kdev, kgone, ev->device, at, ev->tenant, ev->user, prefix };
        rc = redis_conn_eval(c, &unregister_script, fn, priv, 2, 7, argv, NULL);
    }
    free(kdev);
    free(kgone);
    return rc;
}

int registry_remove_token(struct redis_conn *c, const char *prefix, const char *tenant,
                          const char *user, const char *device, const char *app,
                          const char *token, int64_t timestamp_ms,
                          redisCallbackFn *fn, void *priv)
{
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)(timestamp_ms < 0 ? -1 : timestamp_ms));
    char *kdev = key_user(prefix, "devices", tenant, user);
    char *kgone = key_user(prefix, "gone", tenant, user);
    char *ktok = key_token(prefix, app, token);
    const char *argv[] = { kdev, kgone, ktok, device, token, app, ts };
    int rc = redis_conn_eval(c, &remove_script, fn, priv, 3, 7, argv, NULL);
    free(kdev);
    free(kgone);
    free(ktok);
    return rc;
}

int registry_get_device(struct redis_conn *c, const char *prefix, const char *tenant,
                        const char *user, const char *device, redisCallbackFn *fn,
                        void *priv)
{
    char *k = key_user(prefix, "devices", tenant, user);
    const char *argv[] = { "HGET", k, device };
    int rc = redis_conn_cmd_argv(c, fn, priv, 3, argv, NULL);
    free(k);
    return rc;
}

int registry_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                    const char *user, redisCallbackFn *fn, void *priv)
{
    char *k = key_user(prefix, "devices", tenant, user);
    const char *argv[] = { "HGETALL", k };
    int rc = redis_conn_cmd_argv(c, fn, priv, 2, argv, NULL);
    free(k);
    return rc;
}

static char *dup_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring ? xstrdup(v->valuestring) : NULL;
}

int registry_device_parse(const char *device, const char *json, size_t len,
                          struct registry_device *out)
{
    memset(out, 0, sizeof *out);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    out->device = xstrdup(device);
    out->platform = dup_str(o, "platform");
    out->token = dup_str(o, "token");
    out->app = dup_str(o, "app");
    out->locale = dup_str(o, "locale");
    out->environment = dup_str(o, "environment");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "updated_at");
    out->updated_at = cJSON_IsNumber(u) ? (int64_t)u->valuedouble : 0;
    cJSON_Delete(o);
    if (!out->platform || !out->token || !out->app) {
        registry_device_clear(out);
        return -1;
    }
    return 0;
}

void registry_device_clear(struct registry_device *d)
{
    free(d->device);
    free(d->platform);
    free(d->token);
    free(d->app);
    free(d->locale);
    free(d->environment);
    memset(d, 0, sizeof *d);
}
