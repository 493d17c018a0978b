/*
 * Per-guardian data: preferences (stored beside the devices), erasure in
 * bounded steps, and the device age sweep. See guardian.h for the layout.
 */
#include "queue/guardian.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "queue/registry.h"

#define TOMBSTONE_TTL_S "2592000"   /* as the registry's logout tombstones */
#define ERASE_BATCH "500"           /* keys or fields looked at per step */

/*
 * KEYS: devices hash, gone hash. ARGV: prefs JSON (with updated_at), occurred_ms.
 * A newer stored set, or an erasure after |occurred_ms|, wins.
 */
static const char prefs_lua[] =
    "local at = tonumber(ARGV[2])\n"
    "local er = redis.call('HGET', KEYS[2], '" GUARDIAN_ERASED_FIELD "')\n"
    "if er and tonumber(er) >= at then return 'stale' end\n"
    "local cur = redis.call('HGET', KEYS[1], '" GUARDIAN_PREFS_FIELD "')\n"
    "if cur then\n"
    "  local ok, c = pcall(cjson.decode, cur)\n"
    "  if ok and type(c) == 'table' and (tonumber(c.updated_at) or 0) > at then\n"
    "    return 'stale'\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], '" GUARDIAN_PREFS_FIELD "', ARGV[1])\n"
    "return 'ok'\n";

/*
 * Erase step 1. KEYS: devices hash, gone hash. ARGV: prefix, tenant, user,
 * occurred_ms. Removes every device registered at or before the erasure
 * (and its token index entry when it still points here) and preferences
 * set at or before it: what a newer event wrote stays, as everywhere in
 * the registry. Adds ":erased" to the tombstones (device ids and times
 * only, which expire after 30 days) so that older events arriving late
 * cannot bring the guardian back.
 */
static const char erase_devices_lua[] =
    "local at = tonumber(ARGV[4])\n"
    "local er = redis.call('HGET', KEYS[2], '" GUARDIAN_ERASED_FIELD "')\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local n = 0\n"
    "for i = 1, #all, 2 do\n"
    "  local f, v = all[i], all[i + 1]\n"
    "  local ok, d = pcall(cjson.decode, v)\n"
    "  if not ok or type(d) ~= 'table' then d = {} end\n"
    "  if (tonumber(d.updated_at) or 0) <= at then\n"
    "    if f ~= '" GUARDIAN_PREFS_FIELD "' then\n"
    "      if type(d.app) == 'string' and type(d.token) == 'string' then\n"
    "        local ik = ARGV[1] .. 'token:' .. d.app .. ':' .. d.token\n"
    "        local o = redis.call('GET', ik)\n"
    "        if o then\n"
    "          local ok2, oo = pcall(cjson.decode, o)\n"
    "          if ok2 and type(oo) == 'table' and oo.tenant == ARGV[2] and\n"
    "             oo.user == ARGV[3] then\n"
    "            redis.call('DEL', ik)\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      n = n + 1\n"
    "    end\n"
    "    redis.call('HDEL', KEYS[1], f)\n"
    "  end\n"
    "end\n"
    "if not er or tonumber(er) < at then er = ARGV[4] end\n"
    "redis.call('HSET', KEYS[2], '" GUARDIAN_ERASED_FIELD "', er)\n"
    "redis.call('EXPIRE', KEYS[2], " TOMBSTONE_TTL_S ")\n"
    "return n\n";

/*
 * Erase step 2, one batch of per-event status hashes. ARGV: cursor, match
 * pattern, user, count. Removes the fields "USER:*". Reply: [cursor, n].
 */
static const char erase_status_lua[] =
    "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[4])\n"
    "local pre = ARGV[3] .. ':'\n"
    "local n = 0\n"
    "for _, k in ipairs(r[2]) do\n"
    "  local fs = redis.call('HKEYS', k)\n"
    "  for _, f in ipairs(fs) do\n"
    "    if string.sub(f, 1, #pre) == pre then\n"
    "      redis.call('HDEL', k, f)\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {r[1], n}\n";

/*
 * Erase step 3, one batch of the retry schedule (retries and held
 * notifications). KEYS: retry zset, lease zset, data hash.
 * ARGV: cursor, tenant, user, count. Reply: [cursor, n].
 */
static const char erase_retries_lua[] =
    "local r = redis.call('HSCAN', KEYS[3], ARGV[1], 'COUNT', ARGV[4])\n"
    "local n = 0\n"
    "local kv = r[2]\n"
    "for i = 1, #kv, 2 do\n"
    "  local ok, d = pcall(cjson.decode, kv[i + 1])\n"
    "  if ok and type(d) == 'table' and d.tenant == ARGV[2] and d.user == ARGV[3] then\n"
    "    redis.call('ZREM', KEYS[1], kv[i])\n"
    "    redis.call('ZREM', KEYS[2], kv[i])\n"
    "    redis.call('HDEL', KEYS[3], kv[i])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return {r[1], n}\n";

/*
 * Erase step 4, one batch of kept requests of given-up deliveries
 * (<prefix>dead:payload:TENANT:USER:...). ARGV: cursor, match pattern,
 * count. Reply: [cursor, n].
 */
static const char erase_dead_lua[] =
    "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])\n"
    "for _, k in ipairs(r[2]) do redis.call('DEL', k) end\n"
    "return {r[1], #r[2]}\n";

/*
 * Device age sweep, one batch. ARGV: cursor, match pattern, cutoff_ms,
 * count, prefix. Reply: [cursor, removed].
 */
static const char prune_lua[] =
    "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[4])\n"
    "local cutoff = tonumber(ARGV[3])\n"
    "local n = 0\n"
    "for _, k in ipairs(r[2]) do\n"
    "  local t, u = string.match(k, '{([^}]*)}:devices:(.*)$')\n"
    "  if t then\n"
    "    local all = redis.call('HGETALL', k)\n"
    "    for i = 1, #all, 2 do\n"
    "      local f, v = all[i], all[i + 1]\n"
    "      if f ~= '" GUARDIAN_PREFS_FIELD "' then\n"
    "        local ok, d = pcall(cjson.decode, v)\n"
    "        if ok and type(d) == 'table' and tonumber(d.updated_at) and\n"
    "           tonumber(d.updated_at) < cutoff then\n"
    "          redis.call('HDEL', k, f)\n"
    "          local gk = ARGV[5] .. '{' .. t .. '}:gone:' .. u\n"
    "          redis.call('HSET', gk, f, d.updated_at)\n"
    "          redis.call('EXPIRE', gk, " TOMBSTONE_TTL_S ")\n"
    "          if d.app and d.token then\n"
    "            local ik = ARGV[5] .. 'token:' .. d.app .. ':' .. d.token\n"
    "            local o = redis.call('GET', ik)\n"
    "            if o then\n"
    "              local ok2, oo = pcall(cjson.decode, o)\n"
    "              if ok2 and type(oo) == 'table' and oo.tenant == t and\n"
    "                 oo.user == u and oo.device == f then\n"
    "                redis.call('DEL', ik)\n"
    "              end\n"
    "            end\n"
    "          end\n"
    "          n = n + 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {r[1], n}\n";

static struct redis_script prefs_script, erase_devices_script, erase_status_script,
    erase_retries_script, erase_dead_script, prune_script;
static int scripts_ready;

void guardian_init(struct redis_conn *c)
{
    if (!scripts_ready) {
        redis_script_init(&prefs_script, prefs_lua);
        redis_script_init(&erase_devices_script, erase_devices_lua);
        redis_script_init(&erase_status_script, erase_status_lua);
        redis_script_init(&erase_retries_script, erase_retries_lua);
        redis_script_init(&erase_dead_script, erase_dead_lua);
        redis_script_init(&prune_script, prune_lua);
        scripts_ready = 1;
    }
    redis_conn_add_script(c, &prefs_script);
    redis_conn_add_script(c, &erase_devices_script);
    redis_conn_add_script(c, &erase_status_script);
    redis_conn_add_script(c, &erase_retries_script);
    redis_conn_add_script(c, &erase_dead_script);
    redis_conn_add_script(c, &prune_script);
}

/* A glob pattern matching |s| literally (Redis MATCH syntax). */
static void glob_escape(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    for (; *s && o + 2 < outlen; s++) {
        if (*s == '*' || *s == '?' || *s == '[' || *s == ']' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
}

/* ---- preferences ---------------------------------------------------------- */

int guardian_set_prefs(struct redis_conn *c, const char *prefix, const struct event *ev,
                       redisCallbackFn *fn, void *priv)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_AddArrayToObject(o, "muted");
    for (int t = 0; t < EVENT_TYPE_COUNT; t++)
        if (ev->muted_mask & (1u << t))
            cJSON_AddItemToArray(m, cJSON_CreateString(event_type_name((enum event_type)t)));
    if (ev->quiet_start_min >= 0 && ev->quiet_end_min >= 0) {
        cJSON *q = cJSON_AddArrayToObject(o, "quiet");
        cJSON_AddItemToArray(q, cJSON_CreateNumber(ev->quiet_start_min));
        cJSON_AddItemToArray(q, cJSON_CreateNumber(ev->quiet_end_min));
    }
    cJSON_AddNumberToObject(o, "updated_at", (double)ev->occurred_at_ms);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char at[32];
    snprintf(at, sizeof at, "%lld", (long long)ev->occurred_at_ms);
    char *kdev = registry_key_user(prefix, "devices", ev->tenant, ev->user);
    char *kgone = registry_key_user(prefix, "gone", ev->tenant, ev->user);
    const char *argv[] = { kdev, kgone, json, at };
    int rc = redis_conn_eval(c, &prefs_script, fn, priv, 2, 4, argv, NULL);
    free(kdev);
    free(kgone);
    cJSON_free(json);
    return rc;
}

int guardian_prefs_parse(const char *json, size_t len, struct guardian_prefs *out)
{
    out->muted_mask = 0;
    out->quiet_start_min = out->quiet_end_min = -1;
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "muted"), *it;
    cJSON_ArrayForEach(it, m) {
        int t = cJSON_IsString(it) ? event_type_from_name(it->valuestring) : -1;
        if (t >= 0 && t < EVENT_TYPE_COUNT && event_is_notification((enum event_type)t))
            out->muted_mask |= 1u << t;
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "quiet");
    if (cJSON_IsArray(q) && cJSON_GetArraySize(q) == 2) {
        const cJSON *a = cJSON_GetArrayItem(q, 0), *b = cJSON_GetArrayItem(q, 1);
        if (cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble >= 0 &&
            a->valuedouble < 1440 && b->valuedouble >= 0 && b->valuedouble < 1440 &&
            a->valueint != b->valueint) {
            out->quiet_start_min = a->valueint;
            out->quiet_end_min = b->valueint;
        }
    }
    cJSON_Delete(o);
    return 0;
}

bool guardian_in_quiet_hours(const struct guardian_prefs *p, int now_min)
{
    int s = p->quiet_start_min, e = p->quiet_end_min;
    if (s < 0 || e < 0 || s == e)
        return false;
    if (s < e)
        return now_min >= s && now_min < e;
    return now_min >= s || now_min < e; /* wraps midnight */
}

/* ---- erasure ---------------------------------------------------------------- */

enum erase_step { ERASE_DEVICES, ERASE_STATUS, ERASE_RETRIES, ERASE_DEAD };

struct guardian_erase {
    struct redis_conn *c;
    char *prefix, *tenant, *user;
    int64_t occurred_ms;
    enum erase_step step;
    char cursor[32];
    size_t removed;
    void (*done)(int rc, size_t removed, void *arg);
    void *arg;
};

static void erase_next(struct guardian_erase *g);

static void erase_finish(struct guardian_erase *g, int rc)
{
    g->done(rc, g->removed, g->arg);
    free(g->prefix);
    free(g->tenant);
    free(g->user);
    free(g);
}

static void on_erase_step(redisAsyncContext *ac, void *r, void *priv)
{
    struct guardian_erase *g = priv;
    redisReply *reply = r;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply)
            log_warn("guardian", "erasing %s/%s failed: %s", g->tenant, g->user, reply->str);
        erase_finish(g, -1);
        return;
    }
    if (g->step == ERASE_DEVICES) {
        if (reply->type == REDIS_REPLY_INTEGER)
            g->removed += (size_t)reply->integer;
        g->step = ERASE_STATUS;
        snprintf(g->cursor, sizeof g->cursor, "0");
        erase_next(g);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        erase_finish(g, -1);
        return;
    }
    if (reply->element[1]->type == REDIS_REPLY_INTEGER)
        g->removed += (size_t)reply->element[1]->integer;
    snprintf(g->cursor, sizeof g->cursor, "%s", reply->element[0]->str);
    if (strcmp(g->cursor, "0") == 0) {
        if (g->step == ERASE_DEAD) {
            erase_finish(g, 0);
            return;
        }
        g->step = g->step == ERASE_STATUS ? ERASE_RETRIES : ERASE_DEAD;
    }
    erase_next(g);
}

/* Send the current step's script; 0, or -1 when it could not be sent. */
static int erase_send(struct guardian_erase *g)
{
    int rc = -1;
    if (g->step == ERASE_DEVICES) {
        char *kdev = registry_key_user(g->prefix, "devices", g->tenant, g->user);
        char *kgone = registry_key_user(g->prefix, "gone", g->tenant, g->user);
        char at[32];
        snprintf(at, sizeof at, "%lld", (long long)g->occurred_ms);
        const char *argv[] = { kdev, kgone, g->prefix, g->tenant, g->user, at };
        rc = redis_conn_eval(g->c, &erase_devices_script, on_erase_step, g, 2, 6, argv, NULL);
        free(kdev);
        free(kgone);
    } else if (g->step == ERASE_STATUS) {
        char ep[600], et[200], pat[900];
        glob_escape(g->prefix, ep, sizeof ep);
        glob_escape(g->tenant, et, sizeof et);
        snprintf(pat, sizeof pat, "%s{%s}:status:*", ep, et);
        const char *argv[] = { g->cursor, pat, g->user, ERASE_BATCH };
        rc = redis_conn_eval(g->c, &erase_status_script, on_erase_step, g, 0, 4, argv, NULL);
    } else if (g->step == ERASE_DEAD) {
        char ep[600], et[200], eu[300], pat[1200];
        glob_escape(g->prefix, ep, sizeof ep);
        glob_escape(g->tenant, et, sizeof et);
        glob_escape(g->user, eu, sizeof eu);
        snprintf(pat, sizeof pat, "%sdead:payload:%s:%s:*", ep, et, eu);
        const char *argv[] = { g->cursor, pat, ERASE_BATCH };
        rc = redis_conn_eval(g->c, &erase_dead_script, on_erase_step, g, 0, 3, argv, NULL);
    } else {
        size_t n = strlen(g->prefix) + 16;
        char kz[n], kl[n], kd[n];
        snprintf(kz, n, "%sretry", g->prefix);
        snprintf(kl, n, "%sretry:lease", g->prefix);
        snprintf(kd, n, "%sretry:data", g->prefix);
        const char *argv[] = { kz, kl, kd, g->cursor, g->tenant, g->user, ERASE_BATCH };
        rc = redis_conn_eval(g->c, &erase_retries_script, on_erase_step, g, 3, 7, argv, NULL);
    }
    return rc;
}

/* Inside a reply callback: the next step, or the end on a send failure. */
static void erase_next(struct guardian_erase *g)
{
    if (erase_send(g) != 0)
        erase_finish(g, -1);
}

int guardian_erase_start(struct redis_conn *c, const char *prefix, const char *tenant,
                         const char *user, int64_t occurred_ms,
                         void (*done)(int rc, size_t removed, void *arg), void *arg)
{
    if (!redis_conn_ready(c))
        return -1;
    struct guardian_erase *g = xcalloc(1, sizeof *g);
    g->c = c;
    g->prefix = xstrdup(prefix);
    g->tenant = xstrdup(tenant);
    g->user = xstrdup(user);
    g->occurred_ms = occurred_ms;
    g->done = done;
    g->arg = arg;
    g->step = ERASE_DEVICES;
    if (erase_send(g) != 0) {
        /* Nothing sent: |done| is not called, as for every other start. */
        free(g->prefix);
        free(g->tenant);
        free(g->user);
        free(g);
        return -1;
    }
    return 0;
}

/* ---- device age sweep --------------------------------------------------------- */

int guardian_prune_step(struct redis_conn *c, const char *prefix, const char *cursor,
                        int64_t cutoff_ms, int count, redisCallbackFn *fn, void *priv)
{
    char ep[600], pat[700], cut[32], cnt[16];
    glob_escape(prefix, ep, sizeof ep);
    snprintf(pat, sizeof pat, "%s{*}:devices:*", ep);
    snprintf(cut, sizeof cut, "%lld", (long long)cutoff_ms);
    snprintf(cnt, sizeof cnt, "%d", count);
    const char *argv[] = { cursor, pat, cut, cnt, prefix };
    return redis_conn_eval(c, &prune_script, fn, priv, 0, 5, argv, NULL);
}
