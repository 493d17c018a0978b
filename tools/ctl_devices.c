/*
 * `varselctl devices TENANT USER` and `varselctl tokens purge TENANT USER`:
 * the device registry of docs/redis.md (queue/registry.h):
 *   <prefix>{TENANT}:devices:USER  hash DEVICE -> {"platform","token","app",
 *                                  "locale","environment","updated_at"}
 *   <prefix>{TENANT}:gone:USER     hash DEVICE -> ms of the logout/removal
 *   <prefix>token:APP:TOKEN        {"tenant","user","device"}
 * Tokens are never printed whole, in tables or in JSON.
 */
#include "tools/ctl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* updated_at as stored: a number (ms), or a numeric string. */
static int64_t jms(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    if (cJSON_IsString(v))
        return strtoll(v->valuestring, NULL, 10);
    return 0;
}

static int check_ids(const char *cmd, int argc, char **argv, const char *second)
{
    if (argc != 2) {
        ctl_err("usage: varselctl %s TENANT %s (see varselctl %s --help)", cmd, second,
                strncmp(cmd, "tokens", 6) == 0 ? "tokens" : cmd);
        return CTL_USAGE;
    }
    if (argv[0][0] == '\0' || argv[1][0] == '\0') {
        ctl_err("%s: TENANT and %s must not be empty", cmd, second);
        return CTL_USAGE;
    }
    return CTL_OK;
}

/* ---- devices --------------------------------------------------------------------- */

int ctl_cmd_devices(struct ctl *c, int argc, char **argv)
{
    int rc = check_ids("devices", argc, argv, "USER");
    if (rc != CTL_OK)
        return rc;
    const char *tenant = argv[0], *user = argv[1];
    char *kdev = ctl_key_tenant(c, tenant, "devices", user);
    char *kgone = ctl_key_tenant(c, tenant, "gone", user);
    redisReply *devs = CTL_CMD(c, "HGETALL", kdev);
    redisReply *gone = devs ? CTL_CMD(c, "HGETALL", kgone)
                            : NULL;
    free(kdev);
    free(kgone);
    if (devs == NULL || gone == NULL) {
        if (devs)
            freeReplyObject(devs);
        return CTL_FAIL;
    }
    size_t n = devs->type == REDIS_REPLY_ARRAY ? devs->elements / 2 : 0;
    size_t ng = gone->type == REDIS_REPLY_ARRAY ? gone->elements / 2 : 0;

    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "tenant", ctl_json_str(tenant, strlen(tenant)));
    cJSON_AddItemToObject(doc, "user", ctl_json_str(user, strlen(user)));
    cJSON *arr = cJSON_AddArrayToObject(doc, "devices");
    struct ctl_table *t = ctl_table_new(7, (const char *const[]){
        "DEVICE", "PLATFORM", "APP", "ENVIRONMENT", "LOCALE", "TOKEN", "UPDATED" });
    size_t shown_devs = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = devs->element[2 * i], *v = devs->element[2 * i + 1];
        if (f->len > 0 && f->str[0] == ':') {
            /* ":prefs" (device ids never start with ':'): the preferences */
            if (strcmp(f->str, ":prefs") == 0) {
                cJSON *p = cJSON_ParseWithLength(v->str, v->len);
                if (p)
                    cJSON_AddItemToObject(doc, "preferences", p);
                if (!c->o.json)
                    printf("%s/%s preferences: %.*s\n", tenant, user, (int)v->len, v->str);
            }
            continue;
        }
        shown_devs++;
        cJSON *rec = cJSON_ParseWithLength(v->str, v->len);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "device", ctl_json_str(f->str, f->len));
        char tk[32], when[40];
        if (!cJSON_IsObject(rec)) {
            cJSON_AddStringToObject(o, "error", "unreadable registry entry");
            ctl_table_add(t, (const char *const[]){ f->str, "?", "?", "?", "?",
                                                    "(unreadable entry)", "-" });
        } else {
            const char *plat = jstr(rec, "platform"), *app = jstr(rec, "app");
            const char *env = jstr(rec, "environment"), *loc = jstr(rec, "locale");
            ctl_token_cut(jstr(rec, "token"), tk, sizeof tk);
            int64_t upd = jms(rec, "updated_at");
            const char *fields[][2] = { { "platform", plat }, { "app", app },
                                        { "environment", env }, { "locale", loc } };
            for (size_t k = 0; k < 4; k++)
                if (fields[k][1])
                    cJSON_AddItemToObject(o, fields[k][0],
                                          ctl_json_str(fields[k][1], strlen(fields[k][1])));
            cJSON_AddStringToObject(o, "token", tk);
            cJSON_AddNumberToObject(o, "updated_at", (double)upd);
            ctl_table_add(t, (const char *const[]){ f->str, plat ? plat : "-", app ? app : "-",
                                                    env ? env : "production", loc ? loc : "-",
                                                    tk, ctl_time(upd, when, sizeof when) });
        }
        cJSON_Delete(rec);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON *garr = cJSON_AddArrayToObject(doc, "removed");
    struct ctl_table *tg = ctl_table_new(2, (const char *const[]){ "DEVICE", "REMOVED OR LOGGED OUT" });
    for (size_t i = 0; i < ng; i++) {
        const redisReply *f = gone->element[2 * i], *v = gone->element[2 * i + 1];
        int64_t at = v->type == REDIS_REPLY_STRING ? strtoll(v->str, NULL, 10) : 0;
        char when[40];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "device", ctl_json_str(f->str, f->len));
        cJSON_AddNumberToObject(o, "at", (double)at);
        cJSON_AddItemToArray(garr, o);
        ctl_table_add(tg, (const char *const[]){ f->str, ctl_time(at, when, sizeof when) });
    }
    freeReplyObject(devs);
    freeReplyObject(gone);

    if (c->o.json) {
        ctl_print_json(doc);
        ctl_table_free(t);
        ctl_table_free(tg);
    } else {
        cJSON_Delete(doc);
        if (shown_devs) {
            printf("%s/%s: %zu device%s\n\n", tenant, user, shown_devs,
                   shown_devs == 1 ? "" : "s");
            ctl_table_print(t, stdout, 0);
        } else {
            ctl_table_free(t);
        }
        if (ng) {
            printf("%sremoved or logged out (tombstones, kept 30 days):\n",
                   shown_devs ? "\n" : "");
            ctl_table_print(tg, stdout, 2);
        } else {
            ctl_table_free(tg);
        }
    }
    if (n == 0)
        ctl_err("%s/%s has no registered devices", tenant, user);
    return n ? CTL_OK : CTL_FAIL;
}

/* ---- tokens purge ------------------------------------------------------------------ */

/*
 * KEYS: devices hash, gone hash. ARGV: prefix, tenant, user, now_ms, tombstone TTL.
 * For every device: delete its token index if it still points at this
 * (tenant, user, device), leave a tombstone dated now (or keep a later
 * one); then delete the devices hash. Returns one {device, platform, app,
 * first 8 characters of the token, 1 if the index was removed} per device.
 * Unreadable records are purged as well.
 */
static const char purge_lua[] =
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local now = tonumber(ARGV[4])\n"
    "local out = {}\n"
    "for i = 1, #all, 2 do\n"
    "  local dev, raw = all[i], all[i + 1]\n"
    "  if string.sub(dev, 1, 1) ~= ':' then\n"
    "  local plat, app, tok, idx = '', '', '', 0\n"
    "  local ok, c = pcall(cjson.decode, raw)\n"
    "  if ok and type(c) == 'table' then\n"
    "    if type(c.platform) == 'string' then plat = c.platform end\n"
    "    if type(c.app) == 'string' then app = c.app end\n"
    "    if type(c.token) == 'string' then tok = c.token end\n"
    "    if app ~= '' and tok ~= '' then\n"
    "      local ik = ARGV[1] .. 'token:' .. app .. ':' .. tok\n"
    "      local o = redis.call('GET', ik)\n"
    "      if o then\n"
    "        local ok2, oo = pcall(cjson.decode, o)\n"
    "        if ok2 and type(oo) == 'table' and oo.tenant == ARGV[2] and oo.user == ARGV[3]\n"
    "           and oo.device == dev then\n"
    "          redis.call('DEL', ik)\n"
    "          idx = 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local g = tonumber(redis.call('HGET', KEYS[2], dev) or '0') or 0\n"
    "  if g < now then redis.call('HSET', KEYS[2], dev, ARGV[4]) end\n"
    "  out[#out + 1] = {dev, plat, app, string.sub(tok, 1, 8), idx}\n"
    "  end\n"
    "end\n"
    "if #all > 0 then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[5])\n"
    "end\n"
    "return out\n";

int ctl_cmd_tokens(struct ctl *c, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "purge") != 0) {
        ctl_err("usage: varselctl tokens purge TENANT USER (see varselctl tokens --help)");
        return CTL_USAGE;
    }
    int rc = check_ids("tokens purge", argc - 1, argv + 1, "USER");
    if (rc != CTL_OK)
        return rc;
    const char *tenant = argv[1], *user = argv[2];
    char *kdev = ctl_key_tenant(c, tenant, "devices", user);
    char *kgone = ctl_key_tenant(c, tenant, "gone", user);
    char snow[24], sttl[24];
    snprintf(snow, sizeof snow, "%lld", (long long)now_ms());
    snprintf(sttl, sizeof sttl, "%d", CTL_TOMBSTONE_TTL_S);
    const char *args[] = { "EVAL", purge_lua, "2", kdev, kgone, c->prefix, tenant, user,
                           snow, sttl };
    redisReply *r = ctl_cmd(c, true, (int)(sizeof args / sizeof args[0]), args, NULL);
    free(kdev);
    free(kgone);
    if (r == NULL)
        return CTL_FAIL;
    if (r->type != REDIS_REPLY_ARRAY) {
        ctl_err("tokens purge: unexpected reply from Redis");
        freeReplyObject(r);
        return CTL_FAIL;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "tenant", ctl_json_str(tenant, strlen(tenant)));
    cJSON_AddItemToObject(doc, "user", ctl_json_str(user, strlen(user)));
    cJSON_AddNumberToObject(doc, "tombstone_at", (double)strtoll(snow, NULL, 10));
    cJSON *arr = cJSON_AddArrayToObject(doc, "purged");
    struct ctl_table *t = ctl_table_new(5, (const char *const[]){
        "DEVICE", "PLATFORM", "APP", "TOKEN", "TOKEN INDEX" });
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 5)
            continue;
        const char *dev = e->element[0]->str ? e->element[0]->str : "";
        const char *plat = e->element[1]->str ? e->element[1]->str : "";
        const char *app = e->element[2]->str ? e->element[2]->str : "";
        const char *tok8 = e->element[3]->str ? e->element[3]->str : "";
        bool idx = e->element[4]->type == REDIS_REPLY_INTEGER && e->element[4]->integer == 1;
        char tk[32];
        if (tok8[0])
            snprintf(tk, sizeof tk, "%s\xE2\x80\xA6", tok8);
        else
            snprintf(tk, sizeof tk, "-");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "device", ctl_json_str(dev, e->element[0]->len));
        cJSON_AddItemToObject(o, "platform", ctl_json_str(plat, strlen(plat)));
        cJSON_AddItemToObject(o, "app", ctl_json_str(app, strlen(app)));
        cJSON_AddStringToObject(o, "token", tk);
        cJSON_AddBoolToObject(o, "token_index_removed", idx);
        cJSON_AddItemToArray(arr, o);
        ctl_table_add(t, (const char *const[]){ dev, plat[0] ? plat : "?", app[0] ? app : "?",
                                                tk, idx ? "removed" : "(pointed elsewhere)" });
    }
    size_t n = r->elements;
    freeReplyObject(r);
    /* The rest of the guardian's data (preferences, statuses, held and
     * scheduled deliveries) is erased by varseld: publish user.erase. */
    char eid[64], uid[37], at[40];
    uuid_v4(uid);
    snprintf(eid, sizeof eid, "erase-%s", uid);
    time_t secs = (time_t)(now_ms() / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON *eo = cJSON_CreateObject();
    cJSON_AddNumberToObject(eo, "v", 1);
    cJSON_AddStringToObject(eo, "id", eid);
    cJSON_AddStringToObject(eo, "type", "user.erase");
    cJSON_AddStringToObject(eo, "tenant", tenant);
    cJSON_AddStringToObject(eo, "occurred_at", at);
    cJSON_AddStringToObject(eo, "user", user);
    char *ev = cJSON_PrintUnformatted(eo);
    cJSON_Delete(eo);
    const char *xa[] = { "XADD", c->stream, "*", "event", ev };
    redisReply *xr = ctl_cmd(c, true, 5, xa, NULL);
    cJSON_free(ev);
    bool queued = xr && xr->type == REDIS_REPLY_STRING;
    if (xr)
        freeReplyObject(xr);
    cJSON_AddBoolToObject(doc, "erase_queued", queued);
    if (!queued)
        ctl_err("tokens purge: could not publish user.erase to %s; preferences, statuses "
                "and held deliveries were not erased", c->stream);
    else if (!c->o.json)
        printf("user.erase for %s/%s published to %s (preferences, statuses and held or "
               "scheduled deliveries follow)\n", tenant, user, c->stream);
    if (c->o.json) {
        ctl_print_json(doc);
        ctl_table_free(t);
    } else {
        cJSON_Delete(doc);
        if (n) {
            printf("purged %zu device%s of %s/%s (tombstones dated now):\n\n", n,
                   n == 1 ? "" : "s", tenant, user);
            ctl_table_print(t, stdout, 0);
        } else {
            ctl_table_free(t);
        }
    }
    if (n == 0) {
        ctl_err("%s/%s has no registered devices; nothing purged", tenant, user);
        return CTL_FAIL;
    }
    return CTL_OK;
}
