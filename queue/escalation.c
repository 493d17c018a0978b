/*
 * Escalation checks for absence alerts; see escalation.h for the layout.
 * The decision ("did any device get it?") is made inside Redis, in the same
 * script that removes the schedule entry and writes the escalation, so it
 * is atomic across daemons.
 */
#include "queue/escalation.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define DECIDED_TTL_S "604800"

/*
 * KEYS: schedule zset, data hash, decided marker.
 * ARGV: member, due_ms, data JSON.
 */
static const char schedule_lua[] =
    "if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end\n"
    "local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])\n"
    "if added == 1 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end\n"
    "return added\n";

/*
 * The shared decision. ARGV of both scripts start with: prefix, maxlen,
 * now_ms. decide(member, force) returns the why written, false when a
 * device was reached (schedule dropped), or nil when it must wait. An
 * unreadable record is dropped: one bad entry must not stop every later
 * check (the oldest come first).
 */
#define DECIDE_LUA                                                                   \
    "local function decide(member, due)\n"                                           \
    "  local data = redis.call('HGET', KEYS[2], member)\n"                           \
    "  if not data then redis.call('ZREM', KEYS[1], member) return false end\n"      \
    "  local ok, d = pcall(cjson.decode, data)\n"                                    \
    "  if not ok or type(d) ~= 'table' or type(d.tenant) ~= 'string' or\n"          \
    "     type(d.event) ~= 'string' then\n"                                          \
    "    redis.call('ZREM', KEYS[1], member)\n"                                      \
    "    redis.call('HDEL', KEYS[2], member)\n"                                      \
    "    return false\n"                                                             \
    "  end\n"                                                                        \
    "  local sk = ARGV[1] .. '{' .. d.tenant .. '}:status:' .. d.event\n"            \
    "  local st = redis.call('HVALS', sk)\n"                                         \
    "  local pending = false\n"                                                      \
    "  for _, v in ipairs(st) do\n"                                                  \
    "    if v == 'sent' or v == 'opened' then\n"                                     \
    "      redis.call('ZREM', KEYS[1], member)\n"                                    \
    "      redis.call('HDEL', KEYS[2], member)\n"                                    \
    "      redis.call('SET', ARGV[1] .. '{' .. d.tenant .. '}:escalated:' ..\n"    \
    "        d.event, 'reached', 'EX', " DECIDED_TTL_S ")\n"                          \
    "      return false\n"                                                           \
    "    end\n"                                                                      \
    "    if v == 'retrying' or v == 'held' then pending = true end\n"                \
    "  end\n"                                                                        \
    "  local why\n"                                                                  \
    "  if #st == 0 then why = 'no_device'\n"                                         \
    "  elseif pending then\n"                                                        \
    "    if not due then return nil end\n"                                           \
    "    why = 'not_delivered_in_time'\n"                                            \
    "  else why = 'undeliverable' end\n"                                             \
    "  if redis.call('ZREM', KEYS[1], member) == 0 then return false end\n"          \
    "  redis.call('HDEL', KEYS[2], member)\n"                                        \
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'event', d.event,\n"  \
    "    'tenant', d.tenant, 'student', d.student or '', 'users',\n"                  \
    "    table.concat(d.users or {}, ','), 'why', why, 'at', ARGV[3])\n"              \
    "  redis.call('SET', ARGV[1] .. '{' .. d.tenant .. '}:escalated:' .. d.event,\n"  \
    "    why, 'EX', " DECIDED_TTL_S ")\n"                                             \
    "  return why\n"                                                                 \
    "end\n"

/* KEYS: schedule, data, escalations stream. ARGV: prefix, maxlen, now, member. */
static const char check_now_lua[] =
    DECIDE_LUA
    "if not redis.call('ZSCORE', KEYS[1], ARGV[4]) then return nil end\n"
    "local w = decide(ARGV[4], false)\n"
    "if w then return w end\n"
    "return nil\n";

/* KEYS: schedule, data, escalations stream. ARGV: prefix, maxlen, now, count. */
static const char run_due_lua[] =
    DECIDE_LUA
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, "
    "tonumber(ARGV[4]))\n"
    "local out = {}\n"
    "for _, m in ipairs(due) do\n"
    "  local w = decide(m, true)\n"
    "  if w then out[#out + 1] = string.match(m, '^[^|]*') .. '|' .. w end\n"
    "end\n"
    "return out\n";

static struct redis_script schedule_script, check_now_script, run_due_script;
static int scripts_ready;

void escalation_init(struct redis_conn *c)
{
    if (!scripts_ready) {
        redis_script_init(&schedule_script, schedule_lua);
        redis_script_init(&check_now_script, check_now_lua);
        redis_script_init(&run_due_script, run_due_lua);
        scripts_ready = 1;
    }
    redis_conn_add_script(c, &schedule_script);
    redis_conn_add_script(c, &check_now_script);
    redis_conn_add_script(c, &run_due_script);
}

static char *key(const char *prefix, const char *name)
{
    size_t n = strlen(prefix) + strlen(name) + 1;
    char *k = xmalloc(n);
    snprintf(k, n, "%s%s", prefix, name);
    return k;
}

static char *member(const char *tenant, const char *event_id)
{
    size_t n = strlen(tenant) + strlen(event_id) + 2;
    char *m = xmalloc(n);
    snprintf(m, n, "%s|%s", tenant, event_id);
    return m;
}

int escalation_schedule(struct redis_conn *c, const char *prefix, const char *tenant,
                        const char *event_id, const char *student,
                        const char *const *users, size_t n_users, int64_t due_ms,
                        redisCallbackFn *fn, void *priv)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", tenant);
    cJSON_AddStringToObject(o, "event", event_id);
    cJSON_AddStringToObject(o, "student", student ? student : "");
    cJSON *u = cJSON_AddArrayToObject(o, "users");
    for (size_t i = 0; i < n_users; i++)
        cJSON_AddItemToArray(u, cJSON_CreateString(users[i]));
    char *data = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *kz = key(prefix, "escalate"), *kd = key(prefix, "escalate:data");
    size_t n = strlen(prefix) + strlen(tenant) + strlen(event_id) + 20;
    char kdec[n];
    snprintf(kdec, n, "%s{%s}:escalated:%s", prefix, tenant, event_id);
    char *m = member(tenant, event_id), due[32];
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    const char *argv[] = { kz, kd, kdec, m, due, data };
    int rc = redis_conn_eval(c, &schedule_script, fn, priv, 3, 6, argv, NULL);
    free(kz);
    free(kd);
    free(m);
    cJSON_free(data);
    return rc;
}

static int run(struct redis_conn *c, const struct redis_script *s, const char *prefix,
               long maxlen, int64_t now_ms, const char *last, redisCallbackFn *fn, void *priv)
{
    char *kz = key(prefix, "escalate"), *kd = key(prefix, "escalate:data"),
         *ks = key(prefix, "escalations");
    char ml[24], now[32];
    snprintf(ml, sizeof ml, "%ld", maxlen);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *argv[] = { kz, kd, ks, prefix, ml, now, last };
    int rc = redis_conn_eval(c, s, fn, priv, 3, 7, argv, NULL);
    free(kz);
    free(kd);
    free(ks);
    return rc;
}

int escalation_check_now(struct redis_conn *c, const char *prefix, const char *tenant,
                         const char *event_id, long maxlen, int64_t now_ms,
                         redisCallbackFn *fn, void *priv)
{
    char *m = member(tenant, event_id);
    int rc = run(c, &check_now_script, prefix, maxlen, now_ms, m, fn, priv);
    free(m);
    return rc;
}

int escalation_run_due(struct redis_conn *c, const char *prefix, long maxlen, int64_t now_ms,
                       int count, redisCallbackFn *fn, void *priv)
{
    char cnt[16];
    snprintf(cnt, sizeof cnt, "%d", count);
    return run(c, &run_due_script, prefix, maxlen, now_ms, cnt, fn, priv);
}
