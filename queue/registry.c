/*
 * Device registry: Lua scripts for register / logout / dead-token removal,
 * and the parser for stored device records. See registry.h for the layout.
 */
#include "queue/registry.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
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

char *registry_key_user(const char *prefix, const char *kind, const char *tenant,
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
    char *kdev = registry_key_user(prefix, "devices", ev->tenant, ev->user);
    char *kgone = registry_key_user(prefix, "gone", ev->tenant, ev->user);
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
    char *kdev = registry_key_user(prefix, "devices", tenant, user);
    char *kgone = registry_key_user(prefix, "gone", tenant, user);
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
    char *k = registry_key_user(prefix, "devices", tenant, user);
    const char *argv[] = { "HGET", k, device };
    int rc = redis_conn_cmd_argv(c, fn, priv, 3, argv, NULL);
    free(k);
    return rc;
}

int registry_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                    const char *user, redisCallbackFn *fn, void *priv)
{
    char *k = registry_key_user(prefix, "devices", tenant, user);
    const char *argv[] = { "HGETALL", k };
    int rc = redis_conn_cmd_argv(c, fn, priv, 2, argv, NULL);
    free(k);
    return rc;
}

/*
 * A slice's lookups are plain HGETALLs, pipelined, in RESP written here:
 * hiredis's formatter (a printf-like pass per argument) cost more than the
 * lookup itself, and a Lua script that loops over the keys costs Redis
 * three times what native HGETALLs do (its replies go through Lua tables).
 */
size_t registry_lookup_many(struct redis_conn *c, const char *prefix, const char *tenant,
                            const struct event_recipient *users, size_t n,
                            redisCallbackFn *fn, void *priv)
{
    size_t pl = strlen(prefix), tl = strlen(tenant);
    char stack[512];
    for (size_t i = 0; i < n; i++) {
        size_t ul = strlen(users[i].user), kl = pl + tl + 11 + ul;
        size_t need = 40 + kl;
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
        memcpy(o, "}:devices:", 10);
        o += 10;
        memcpy(o, users[i].user, ul);
        o += ul;
        *o++ = '\r';
        *o++ = '\n';
        int rc = redis_conn_cmd_formatted(c, fn, priv, buf, (size_t)(o - buf));
        if (buf != stack)
            free(buf);
        if (rc != 0)
            return i;
    }
    return n;
}

/* ---- device records ----------------------------------------------------- */

enum { F_PLATFORM, F_TOKEN, F_APP, F_LOCALE, F_ENVIRONMENT, F_COUNT };
static const char *const rec_fields[F_COUNT] = { "platform", "token", "app", "locale",
                                                 "environment" };

/* The record's strings in one allocation: device first, so that
 * registry_device_clear frees them all through out->device. */
static void pack_device(struct registry_device *out, const char *device,
                        const char *const val[F_COUNT], const size_t len[F_COUNT])
{
    size_t dl = strlen(device), total = dl + 1;
    for (int i = 0; i < F_COUNT; i++)
        total += val[i] ? len[i] + 1 : 0;
    char *p = xmalloc(total);
    char **dst[F_COUNT] = { &out->platform, &out->token, &out->app, &out->locale,
                            &out->environment };
    memcpy(p, device, dl + 1);
    out->device = p;
    p += dl + 1;
    for (int i = 0; i < F_COUNT; i++) {
        if (!val[i]) {
            *dst[i] = NULL;
            continue;
        }
        memcpy(p, val[i], len[i]);
        p[len[i]] = '\0';
        *dst[i] = p;
        p += len[i] + 1;
    }
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A JSON string without escapes at |p| (on the opening quote): its bytes
 * and the position after the closing quote, or NULL when it needs the full
 * parser. (cJSON keeps raw control characters as they are; so does this.) */
static const char *plain_string(const char *p, const char *end, const char **s, size_t *n)
{
    if (p >= end || *p != '"')
        return NULL;
    p++;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || memchr(p, '\\', (size_t)(q - p)) != NULL)
        return NULL;
    *s = p;
    *n = (size_t)(q - p);
    return q + 1;
}

/* Which record field a key names: F_*, F_COUNT for updated_at, -1 for
 * another key. The names have distinct lengths. */
static int field_of(const char *k, size_t kl)
{
    int f;
    switch (kl) {
    case 3: f = F_APP; break;
    case 5: f = F_TOKEN; break;
    case 6: f = F_LOCALE; break;
    case 8: f = F_PLATFORM; break;
    case 11: f = F_ENVIRONMENT; break;
    case 10: return memcmp(k, "updated_at", 10) == 0 ? F_COUNT : -1;
    default: return -1;
    }
    return memcmp(k, rec_fields[f], kl) == 0 ? f : -1;
}

/*
 * The records varseld and the tools write are flat objects of plain strings
 * and one integer: read those without building a cJSON tree (one parse per
 * device per delivery was 8 % of varseld's instructions). Returns 0 when
 * the fast path understood the whole record, 1 when the record needs
 * cJSON (escapes, nesting, a fraction, a field of another type, a
 * duplicate key), so both paths give the same result.
 */
static int parse_flat(const char *json, size_t len, const char *val[F_COUNT],
                      size_t vlen[F_COUNT], int64_t *updated_at, bool *have_updated)
{
    const char *p = json, *end = json + len;
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{')
        return 1;
    p = skip_ws(p, end);
    if (p < end && *p == '}')
        return 0;
    for (;;) {
        const char *k, *v;
        size_t kl, vl;
        p = plain_string(skip_ws(p, end), end, &k, &kl);
        if (!p)
            return 1;
        p = skip_ws(p, end);
        if (p >= end || *p++ != ':')
            return 1;
        p = skip_ws(p, end);
        if (p >= end)
            return 1;
        int f = field_of(k, kl);
        bool is_updated = f == F_COUNT;
        if (is_updated)
            f = -1;
        if (*p == '"') {
            p = plain_string(p, end, &v, &vl);
            if (!p || is_updated)
                return 1;
            if (f >= 0) {
                if (val[f])
                    return 1; /* duplicate: leave it to cJSON's rule */
                val[f] = v;
                vlen[f] = vl;
            }
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            bool neg = *p == '-';
            if (neg)
                p++;
            int64_t n = 0;
            int digits = 0;
            while (p < end && *p >= '0' && *p <= '9' && digits < 16) {
                n = n * 10 + (*p++ - '0');
                digits++;
            }
            /* More than 15 digits, a fraction or an exponent: cJSON's
             * double decides. */
            if (digits == 0 || digits > 15 ||
                (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9'))))
                return 1;
            if (f >= 0)
                return 1;
            if (is_updated) {
                if (*have_updated)
                    return 1;
                *updated_at = neg ? -n : n;
                *have_updated = true;
            }
        } else {
            return 1; /* true, false, null, objects, arrays */
        }
        p = skip_ws(p, end);
        if (p >= end)
            return 1;
        if (*p == '}')
            return 0;
        if (*p++ != ',')
            return 1;
    }
}

static const char *json_str(const cJSON *o, const char *name, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || !v->valuestring)
        return NULL;
    *len = strlen(v->valuestring);
    return v->valuestring;
}

int registry_device_parse(const char *device, const char *json, size_t len,
                          struct registry_device *out)
{
    memset(out, 0, sizeof *out);
    const char *val[F_COUNT] = { NULL };
    size_t vlen[F_COUNT] = { 0 };
    int64_t updated_at = 0;
    bool have_updated = false;
    if (parse_flat(json, len, val, vlen, &updated_at, &have_updated) == 0) {
        if (!val[F_PLATFORM] || !val[F_TOKEN] || !val[F_APP])
            return -1;
        pack_device(out, device, val, vlen);
        out->updated_at = updated_at;
        return 0;
    }
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    for (int i = 0; i < F_COUNT; i++) {
        val[i] = json_str(o, rec_fields[i], &vlen[i]);
        if (!val[i])
            vlen[i] = 0;
    }
    int rc = -1;
    if (val[F_PLATFORM] && val[F_TOKEN] && val[F_APP]) {
        pack_device(out, device, val, vlen);
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "updated_at");
        out->updated_at = cJSON_IsNumber(u) ? (int64_t)u->valuedouble : 0;
        rc = 0;
    }
    cJSON_Delete(o);
    return rc;
}

void registry_device_clear(struct registry_device *d)
{
    free(d->device); /* the other strings live in the same allocation */
    memset(d, 0, sizeof *d);
}
