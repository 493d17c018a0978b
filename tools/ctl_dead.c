/*
 * `varselctl dead list` and `varselctl dead replay`: the dead-letter stream
 * <prefix>dead (docs/redis.md) holds two kinds of entries.
 *
 *   event     An entry varseld could not take: code invalid_json,
 *             too_large, unsupported_version, unknown_type, missing_field,
 *             invalid_field or registry_error, with source_stream,
 *             source_id, consumer, at, and the original entry's fields
 *             (normally `event`). Replay publishes a copy of `event` to the
 *             events stream. varseld treats it like any publication: a
 *             delivery whose status is already final is skipped, so nobody
 *             already reached is notified again; an event still malformed
 *             is dead-lettered again (replay says so beforehand).
 *
 *   delivery  One delivery that gave up: code delivery_failed (attempts
 *             used up) or delivery_expired (deadline), with the receipt
 *             fields (event tenant user device platform app status attempt
 *             ...). The original event is not stored with it, so re-sending
 *             needs the provider request varseld built; varseld puts it in
 *             beside the dead letter (key in `original_key`, for
 *             [redis] dead_payload_ttl_s; older ones carry `retry_data`), the same JSON it keeps in
 *             <prefix>retry:data while a retry waits. Replay writes it back
 *             into the durable retry schedule (<prefix>retry due now,
 *             <prefix>retry:data), with the attempt count reset (a fresh
 *             set of attempts) and the device's current token and
 *             environment from the registry; the next retry poll of any
 *             varseld sends it, with the same apns-id and collapse id as
 *             before. One Lua script checks and writes atomically: it does
 *             nothing when the delivery's status is meanwhile sent or
 *             opened (the guardian was reached), when it is already in the
 *             schedule or leased (replayed twice), or when the device is
 *             gone (logged out, token removed); otherwise it sets the
 *             status to "retrying" and appends a "retrying" receipt whose
 *             reason names the dead letter. A delivery past its deadline
 *             is skipped unless --ttl gives it a new one.
 *
 * Dead letters are never deleted by replay: the stream is the record, and
 * the checks above make a second replay harmless.
 */
#include "tools/ctl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "queue/event.h"

#define LIST_DEFAULT 20
#define SINCE_DEFAULT 1000
#define PAGE 500
#define BODY_MAX 4096            /* as daemon/delivery.c: provider request body */
#define REPLAY_TRIES 3           /* device record changed under us: read again */

enum result {
    R_PUBLISHED, R_SCHEDULED, R_REACHED, R_ALREADY,     /* fine */
    R_NOT_FOUND, R_NOT_REPLAYABLE, R_GONE, R_EXPIRED, R_CHANGED, R_ERROR,
};

static const char *const result_names[] = {
    "published", "scheduled", "already_reached", "already_scheduled",
    "not_found", "not_replayable", "device_gone", "expired", "device_changed", "error",
};

static bool result_ok(enum result r) { return r <= R_ALREADY; }

static bool is_delivery(const redisReply *f)
{
    const char *code = ctl_entry_str(f, "code");
    return strncmp(code, "delivery_", 9) == 0;
}

/* A stream id as the user may give it: MS or MS-SEQ. */
static bool valid_id(const char *s)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '\0')
        return true;
    if (*p++ != '-' || !isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    return *p == '\0';
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* What the dead letter is about, one line ("oslo/msg-1 message.new"). */
static char *describe(const redisReply *f)
{
    char buf[600];
    if (is_delivery(f)) {
        snprintf(buf, sizeof buf, "%s/%s -> %s/%s (%s, %s) attempt %s",
                 ctl_entry_str(f, "tenant"), ctl_entry_str(f, "event"),
                 ctl_entry_str(f, "user"), ctl_entry_str(f, "device"),
                 ctl_entry_str(f, "platform"), ctl_entry_str(f, "app"),
                 ctl_entry_str(f, "attempt"));
        return xstrdup(buf);
    }
    const redisReply *ev = ctl_entry_field(f, "event");
    if (ev == NULL || ev->type != REDIS_REPLY_STRING)
        return xstrdup("(entry without an event field)");
    cJSON *o = cJSON_ParseWithLength(ev->str, ev->len);
    size_t orig_len = 0;
    if (sscanf(ev->str, "<not a JSON object: %zu bytes>", &orig_len) == 1) {
        /* varseld's redacted copy of input that was not JSON */
        snprintf(buf, sizeof buf, "(%zu bytes, not a JSON object)", orig_len);
    } else if (!cJSON_IsObject(o)) {
        snprintf(buf, sizeof buf, "(%zu bytes, not a JSON object)", ev->len);
    } else {
        const char *t = jstr(o, "tenant"), *id = jstr(o, "id"), *ty = jstr(o, "type");
        snprintf(buf, sizeof buf, "%s/%s %s", t ? t : "?", id ? id : "?", ty ? ty : "?");
    }
    cJSON_Delete(o);
    return xstrdup(buf);
}

/* One dead letter as JSON: the metadata, kind and what it is about; the
 * event text for an event; the receipt fields (no token) for a delivery. */
static cJSON *dead_json(const redisReply *e)
{
    const redisReply *f = e->element[1];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", e->element[0]->str);
    bool del = is_delivery(f);
    cJSON_AddStringToObject(o, "kind", del ? "delivery" : "event");
    for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "retry_data") == 0 || strcmp(k->str, "token") == 0)
            continue; /* holds the device token */
        if (cJSON_GetObjectItemCaseSensitive(o, k->str))
            continue; /* a duplicate name (an original field called "code"...) */
        cJSON_AddItemToObject(o, k->str, ctl_json_str(v->str, v->len));
    }
    bool replayable = del ? ctl_entry_field(f, "retry_data") != NULL ||
                                ctl_entry_field(f, "original_key") != NULL
                          : ctl_entry_field(f, "event") != NULL;
    cJSON_AddBoolToObject(o, "replayable", replayable);
    return o;
}

static bool entry_ok(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING &&
           (e->element[1]->type == REDIS_REPLY_ARRAY || e->element[1]->type == REDIS_REPLY_NIL);
}

/* ---- list ---------------------------------------------------------------------------- */

static int dead_list(struct ctl *c, int argc, char **argv)
{
    if (argc != 0) {
        ctl_err("usage: varselctl dead list [--since ID | --count N]");
        return CTL_USAGE;
    }
    if (c->o.since && !valid_id(c->o.since)) {
        ctl_err("--since: \"%s\" is not a stream id (MS or MS-SEQ)", c->o.since);
        return CTL_USAGE;
    }
    char *kd = ctl_key(c, "dead");
    char scount[24], start[80];
    redisReply *r;
    if (c->o.since) {
        snprintf(scount, sizeof scount, "%ld", c->o.count > 0 ? c->o.count : SINCE_DEFAULT);
        snprintf(start, sizeof start, "(%s", c->o.since);
        r = CTL_CMD(c, "XRANGE", kd, start, "+", "COUNT", scount);
    } else {
        snprintf(scount, sizeof scount, "%ld", c->o.count > 0 ? c->o.count : LIST_DEFAULT);
        r = CTL_CMD(c, "XREVRANGE", kd, "+", "-", "COUNT", scount);
    }
    redisReply *len = r ? CTL_CMD(c, "XLEN", kd) : NULL;
    free(kd);
    if (r == NULL || len == NULL) {
        if (r)
            freeReplyObject(r);
        return CTL_FAIL;
    }
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    cJSON *arr = cJSON_CreateArray();
    struct ctl_table *t = ctl_table_new(6, (const char *const[]){
        "ID", "TIME", "KIND", "CODE", "WHAT", "REASON" });
    size_t shown = 0;
    for (size_t k = 0; k < n; k++) {
        /* oldest first */
        const redisReply *e = r->element[c->o.since ? k : n - 1 - k];
        if (!entry_ok(e) || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *f = e->element[1];
        cJSON_AddItemToArray(arr, dead_json(e));
        int64_t at = strtoll(ctl_entry_str(f, "at"), NULL, 10);
        char when[40];
        char *what = describe(f);
        char *reason = ctl_printable(ctl_entry_str(f, "reason"), strlen(ctl_entry_str(f, "reason")),
                                     100);
        bool del = is_delivery(f);
        char kind[40];
        snprintf(kind, sizeof kind, "%s%s", del ? "delivery" : "event",
                 del && !ctl_entry_field(f, "retry_data") && !ctl_entry_field(f, "original_key")
                     ? " (no request kept)" : "");
        ctl_table_add(t, (const char *const[]){ e->element[0]->str,
                                                ctl_time(at > 0 ? at : ctl_id_ms(e->element[0]->str),
                                                         when, sizeof when),
                                                kind, ctl_entry_str(f, "code"), what, reason });
        free(what);
        free(reason);
        shown++;
    }
    long long total = len->type == REDIS_REPLY_INTEGER ? len->integer : 0;
    freeReplyObject(r);
    freeReplyObject(len);
    if (c->o.json) {
        ctl_print_json(arr);
        ctl_table_free(t);
    } else {
        cJSON_Delete(arr);
        if (shown) {
            ctl_table_print(t, stdout, 0);
            printf("\n%zu shown, %lld in %sdead. Replay: varselctl dead replay ID...\n", shown,
                   total, c->prefix);
        } else {
            ctl_table_free(t);
            printf("no dead letters%s (%lld in %sdead)\n", c->o.since ? " after that id" : "",
                   total, c->prefix);
        }
    }
    return CTL_OK;
}

/* ---- replay ------------------------------------------------------------------------ */

struct outcome {
    enum result r;
    char detail[512];
};

static enum result say(struct outcome *o, enum result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum result say(struct outcome *o, enum result r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->detail, sizeof o->detail, fmt, ap);
    va_end(ap);
    o->r = r;
    return r;
}

static enum result replay_event_text(struct ctl *c, const char *stream, const redisReply *ev,
                                     struct outcome *o);

/*
 * The original a dead letter names in `original_key` (varseld keeps it
 * beside the ids-only dead letter for [redis] dead_payload_ttl_s): 0 with
 * |*kept| set (free it) or NULL when the letter names none; -1 after say()
 * when it cannot be read or has expired (|what|: "event", "request").
 */
static int kept_original(struct ctl *c, const redisReply *f, const char *what,
                         redisReply **kept, struct outcome *o)
{
    *kept = NULL;
    const redisReply *pk = ctl_entry_field(f, "original_key");
    if (pk == NULL || pk->type != REDIS_REPLY_STRING)
        return 0;
    const char *argv[] = { "GET", pk->str };
    redisReply *r = ctl_cmd(c, true, 2, argv, NULL);
    if (r == NULL) {
        say(o, R_ERROR, "reading the kept %s %s failed", what, pk->str);
        return -1;
    }
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        say(o, R_NOT_REPLAYABLE, "the %s was kept for dead_payload_ttl_s and has expired "
            "(the dead letter holds ids only): publish the event again instead; deliveries "
            "already sent are skipped", what);
        return -1;
    }
    *kept = r;
    return 0;
}

static enum result replay_event(struct ctl *c, const redisReply *f, struct outcome *o)
{
    const redisReply *ev = ctl_entry_field(f, "event");
    redisReply *kept = NULL;
    if (kept_original(c, f, "event", &kept, o) != 0)
        return o->r;
    if (kept) {
        ev = kept;
    } else if (ctl_entry_field(f, "source_id") && ev && ev->type == REDIS_REPLY_STRING &&
               strstr(ev->str, "<redacted") != NULL) {
        return say(o, R_NOT_REPLAYABLE, "the dead letter holds a redacted copy and no "
                   "original was kept ([redis] dead_payload_ttl_s = 0)");
    }
    if (ev == NULL || ev->type != REDIS_REPLY_STRING)
        return say(o, R_NOT_REPLAYABLE, "the entry had no 'event' field: nothing to publish");
    /* Back to the stream it came from (a region's, or the urgent one), unless
     * --stream names another. */
    const char *src = ctl_entry_str(f, "source_stream");
    const char *stream = c->o.stream || src[0] == '\0' ? c->stream : src;
    enum result res = replay_event_text(c, stream, ev, o);
    if (kept)
        freeReplyObject(kept);
    return res;
}

static enum result replay_event_text(struct ctl *c, const char *stream, const redisReply *ev,
                                     struct outcome *o)
{
    char reason[EVENT_REASON_MAX];
    struct event *pe = NULL;
    int prc = event_parse(ev->str, ev->len, &pe, reason, sizeof reason);
    event_free(pe);
    const char *argv[] = { "XADD", stream, "*", "event", ev->str };
    size_t lens[] = { 4, strlen(stream), 1, 5, ev->len };
    redisReply *r = ctl_cmd(c, true, 5, argv, lens);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        if (r)
            freeReplyObject(r);
        return say(o, R_ERROR, "publishing to %s failed", stream);
    }
    if (prc != 0)
        say(o, R_PUBLISHED, "published to %s as %s; still malformed (%s: %s): varseld will "
            "dead-letter it again", stream, r->str, event_error_code(prc), reason);
    else
        say(o, R_PUBLISHED, "published to %s as %s", stream, r->str);
    freeReplyObject(r);
    return o->r;
}

/*
 * KEYS: status hash, devices hash, retry zset, retry data hash, lease zset, receipts.
 * ARGV: 1 USER:DEVICE, 2 device, 3 the device record as read, 4 retry id,
 *       5 retry data, 6 now_ms, 7 status TTL, 8.. receipt field/value pairs.
 */
static const char replay_lua[] =
    "local st = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if st == 'sent' or st == 'opened' then return 'reached' end\n"
    "if redis.call('ZSCORE', KEYS[3], ARGV[4]) or redis.call('ZSCORE', KEYS[5], ARGV[4]) then\n"
    "  return 'scheduled_already'\n"
    "end\n"
    "local cur = redis.call('HGET', KEYS[2], ARGV[2])\n"
    "if not cur then return 'gone' end\n"
    "if cur ~= ARGV[3] then return 'changed' end\n"
    "redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])\n"
    "redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], 'retrying')\n"
    "if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end\n"
    "redis.call('XADD', KEYS[6], '*', unpack(ARGV, 8))\n"
    "return 'scheduled'\n";

/* Set member |k| of |o|, in place when it exists (the order stays). */
static void set_item(cJSON *o, const char *k, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(o, k))
        cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
    else
        cJSON_AddItemToObject(o, k, v);
}

static void set_str(cJSON *o, const char *k, const char *v) { set_item(o, k, cJSON_CreateString(v)); }
static void set_num(cJSON *o, const char *k, double v) { set_item(o, k, cJSON_CreateNumber(v)); }

/* FCM bodies carry the token and a relative ttl: rewrite them. NULL when
 * the body is not the expected {"message":{...}} or too big. */
static char *fcm_body(const char *body, const char *token, long ttl_s)
{
    cJSON *b = cJSON_Parse(body);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(b, "message");
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(b);
        return NULL;
    }
    set_str(m, "token", token);
    cJSON *a = cJSON_GetObjectItemCaseSensitive(m, "android");
    if (ttl_s > 0 && cJSON_IsObject(a)) {
        char t[32];
        snprintf(t, sizeof t, "%lds", ttl_s);
        set_str(a, "ttl", t);
    }
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (s && strlen(s) > BODY_MAX) {
        cJSON_free(s);
        return NULL;
    }
    return s;
}

static enum result replay_delivery(struct ctl *c, const char *dead_id, const redisReply *f,
                                   struct outcome *o)
{
    const redisReply *rd = ctl_entry_field(f, "retry_data"); /* older varseld */
    redisReply *kept = NULL;
    if (kept_original(c, f, "request", &kept, o) != 0)
        return o->r;
    if (kept)
        rd = kept;
    if (rd == NULL || rd->type != REDIS_REPLY_STRING)
        return say(o, R_NOT_REPLAYABLE,
                   "no request kept for this dead letter ([redis] dead_payload_ttl_s = 0, "
                   "or written by an older varseld): publish the event again instead; "
                   "deliveries already sent are skipped");
    cJSON *data = cJSON_ParseWithLength(rd->str, rd->len);
    if (kept)
        freeReplyObject(kept); /* parsed: the JSON tree holds copies */
    rd = NULL;
    const char *tenant = jstr(data, "tenant"), *event = jstr(data, "event");
    const char *user = jstr(data, "user"), *device = jstr(data, "device");
    const char *platform = jstr(data, "platform"), *app = jstr(data, "app");
    const char *token0 = jstr(data, "token"), *body0 = jstr(data, "body");
    if (!cJSON_IsObject(data) || !tenant || !event || !user || !device || !platform || !app ||
        !token0 || !body0 || !body0[0]) {
        cJSON_Delete(data);
        return say(o, R_NOT_REPLAYABLE, "retry_data is not a complete request");
    }

    /* The member in the retry sets: as varseld derives it (delivery.c). */
    char rid[64];
    const char *given = jstr(data, "id");
    if (given == NULL && ctl_entry_field(f, "retry_id"))
        given = ctl_entry_str(f, "retry_id");
    if (given && given[0]) {
        snprintf(rid, sizeof rid, "%s", given);
    } else {
        const char *parts[] = { tenant, event, user, device };
        uuid_from_parts(parts, 4, '|', rid); /* as daemon/delivery.c, never cut */
    }
    int64_t now = now_ms();
    int64_t deadline = jnum(data, "deadline");
    long new_ttl = c->o.ttl_s;
    if (new_ttl > 0) {
        deadline = now + (int64_t)new_ttl * 1000;
        set_num(data, "deadline", (double)deadline);
        set_num(data, "expiration", (double)(deadline / 1000));
    } else if (deadline > 0 && deadline <= now) {
        char when[40];
        cJSON_Delete(data);
        return say(o, R_EXPIRED, "its deadline passed at %s; --ttl S sends it anyway, with a "
                   "new deadline S seconds from now", ctl_time(deadline, when, sizeof when));
    }
    set_num(data, "attempt", 0); /* the poller makes it attempt 1: a fresh set */
    set_str(data, "last_error", "replayed from a dead letter");
    char *kst = ctl_key_tenant(c, tenant, "status", event);
    char *kdev = ctl_key_tenant(c, tenant, "devices", user);
    char *kz = ctl_key(c, "retry"), *kdata = ctl_key(c, "retry:data");
    char *kl = ctl_key(c, "retry:lease"), *krc = ctl_key(c, "receipts");
    size_t fl = strlen(user) + strlen(device) + 2;
    char *field = xmalloc(fl);
    snprintf(field, fl, "%s:%s", user, device);
    char snow[24], sttl[24], slat[24], sreason[160];
    snprintf(snow, sizeof snow, "%lld", (long long)now);
    snprintf(sttl, sizeof sttl, "%lld", (long long)c->status_ttl_s);
    int64_t published = jnum(data, "published");
    snprintf(slat, sizeof slat, "%lld", (long long)(published > 0 ? now - published : 0));
    snprintf(sreason, sizeof sreason, "replayed from dead letter %s", dead_id);
    const char *attempt = ctl_entry_str(f, "attempt");

    /* copies: "token" and "body" are replaced in |data| below */
    char *token = xstrdup(token0), *body = xstrdup(body0);
    enum result res = R_ERROR;
    snprintf(o->detail, sizeof o->detail, "Redis error");
    int tries;
    for (tries = 0; tries < REPLAY_TRIES; tries++) {
        /* The device as registered now. */
        redisReply *cur = CTL_CMD(c, "HGET", kdev, device);
        if (cur == NULL)
            break;
        if (cur->type != REDIS_REPLY_STRING) {
            freeReplyObject(cur);
            res = say(o, R_GONE, "device %s of %s/%s is no longer registered (logged out or "
                      "its token was removed)", device, tenant, user);
            break;
        }
        cJSON *rec = cJSON_ParseWithLength(cur->str, cur->len);
        const char *rp = jstr(rec, "platform"), *ra = jstr(rec, "app"), *rt = jstr(rec, "token");
        const char *re = jstr(rec, "environment");
        if (!rp || !ra || !rt || strcmp(rp, platform) != 0 || strcmp(ra, app) != 0) {
            cJSON_Delete(rec);
            freeReplyObject(cur);
            res = say(o, R_CHANGED, "device %s is now registered for another app or platform",
                      device);
            break;
        }
        bool new_token = strcmp(rt, token) != 0;
        char tk[32];
        ctl_token_cut(rt, tk, sizeof tk);
        set_str(data, "token", rt);
        set_str(data, "environment", re ? re : "production");
        if (strcmp(platform, "android") == 0 && (new_token || new_ttl > 0)) {
            char *nb = fcm_body(body, rt, new_ttl);
            if (nb == NULL) {
                cJSON_Delete(rec);
                freeReplyObject(cur);
                res = say(o, R_NOT_REPLAYABLE, "the stored FCM request cannot be updated");
                break;
            }
            set_str(data, "body", nb);
            cJSON_free(nb);
        }
        cJSON_Delete(rec);
        char *sdata = cJSON_PrintUnformatted(data);
        const char *argv[] = {
            "EVAL", replay_lua, "6", kst, kdev, kz, kdata, kl, krc,
            field, device, cur->str, rid, sdata, snow, sttl,
            "event", event, "tenant", tenant, "user", user, "device", device,
            "platform", platform, "app", app, "status", "retrying",
            "attempt", attempt[0] ? attempt : "0", "provider_id", "", "http_status", "0",
            "reason", sreason, "latency_ms", slat, "at", snow,
        };
        redisReply *r = ctl_cmd(c, true, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
        cJSON_free(sdata);
        freeReplyObject(cur);
        if (r == NULL)
            break;
        const char *ans = r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS
                              ? r->str : "";
        if (strcmp(ans, "changed") == 0) {
            freeReplyObject(r);
            continue; /* registered again between our read and the script: read again */
        }
        if (strcmp(ans, "scheduled") == 0)
            res = say(o, R_SCHEDULED, "in the retry schedule again%s%s (fresh attempts)",
                      new_token ? ", with the device's new token " : "", new_token ? tk : "");
        else if (strcmp(ans, "reached") == 0)
            res = say(o, R_REACHED, "already sent meanwhile: not sent again");
        else if (strcmp(ans, "scheduled_already") == 0)
            res = say(o, R_ALREADY, "already in the retry schedule (replayed before?)");
        else if (strcmp(ans, "gone") == 0)
            res = say(o, R_GONE, "device %s of %s/%s is no longer registered", device, tenant,
                      user);
        else
            res = say(o, R_ERROR, "unexpected answer from the replay script");
        freeReplyObject(r);
        break;
    }
    if (tries == REPLAY_TRIES)
        res = say(o, R_CHANGED, "the device's registration kept changing; try again");
    free(kst);
    free(kdev);
    free(kz);
    free(kdata);
    free(kl);
    free(krc);
    free(field);
    free(token);
    free(body);
    cJSON_Delete(data);
    return res;
}

struct replay_run {
    struct ctl_table *t;
    cJSON *arr;
    size_t ok, failed;
};

static void replay_entry(struct ctl *c, const redisReply *e, struct replay_run *run)
{
    struct outcome o = { R_ERROR, "" };
    const char *id = e->element[0]->str;
    const redisReply *f = e->element[1];
    bool del = f->type == REDIS_REPLY_ARRAY && is_delivery(f);
    char *what = f->type == REDIS_REPLY_ARRAY ? describe(f) : xstrdup("(deleted)");
    if (f->type != REDIS_REPLY_ARRAY)
        say(&o, R_NOT_FOUND, "the entry has no fields");
    else if (del)
        replay_delivery(c, id, f, &o);
    else
        replay_event(c, f, &o);
    if (result_ok(o.r))
        run->ok++;
    else
        run->failed++;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "kind", del ? "delivery" : "event");
    cJSON_AddItemToObject(j, "what", ctl_json_str(what, strlen(what)));
    cJSON_AddStringToObject(j, "result", result_names[o.r]);
    cJSON_AddItemToObject(j, "detail", ctl_json_str(o.detail, strlen(o.detail)));
    cJSON_AddBoolToObject(j, "ok", result_ok(o.r));
    cJSON_AddItemToArray(run->arr, j);
    ctl_table_add(run->t, (const char *const[]){ id, del ? "delivery" : "event", what,
                                                 result_names[o.r], o.detail });
    free(what);
}

static int dead_replay(struct ctl *c, int argc, char **argv)
{
    if ((argc == 0) == (c->o.since == NULL)) {
        ctl_err("usage: varselctl dead replay ID... | --since ID (one or the other)");
        return CTL_USAGE;
    }
    if (c->o.since && !valid_id(c->o.since)) {
        ctl_err("--since: \"%s\" is not a stream id (MS or MS-SEQ)", c->o.since);
        return CTL_USAGE;
    }
    for (int i = 0; i < argc; i++) {
        if (!valid_id(argv[i])) {
            ctl_err("\"%s\" is not a dead-letter id (MS-SEQ, as dead list shows)", argv[i]);
            return CTL_USAGE;
        }
    }
    char *kd = ctl_key(c, "dead");
    struct replay_run run = { ctl_table_new(5, (const char *const[]){ "ID", "KIND", "WHAT",
                                                                      "RESULT", "DETAIL" }),
                              cJSON_CreateArray(), 0, 0 };
    int rc = CTL_OK;
    if (c->o.since) {
        /* Up to the newest entry now: replays that fail again add entries
         * behind it, which this run must not pick up. */
        redisReply *top = CTL_CMD(c, "XREVRANGE", kd, "+", "-", "COUNT", "1");
        if (top == NULL) {
            rc = CTL_FAIL;
            goto out;
        }
        char stop[64] = "";
        if (top->type == REDIS_REPLY_ARRAY && top->elements == 1 && entry_ok(top->element[0]))
            snprintf(stop, sizeof stop, "%s", top->element[0]->element[0]->str);
        freeReplyObject(top);
        char start[80];
        snprintf(start, sizeof start, "(%s", c->o.since);
        while (stop[0]) {
            char spage[16];
            snprintf(spage, sizeof spage, "%d", PAGE);
            redisReply *r = CTL_CMD(c, "XRANGE", kd, start, stop, "COUNT", spage);
            if (r == NULL) {
                rc = CTL_FAIL;
                break;
            }
            size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
            for (size_t i = 0; i < n; i++)
                if (entry_ok(r->element[i]))
                    replay_entry(c, r->element[i], &run);
            if (n > 0)
                snprintf(start, sizeof start, "(%s", r->element[n - 1]->element[0]->str);
            freeReplyObject(r);
            if (n < PAGE)
                break;
        }
    } else {
        for (int i = 0; i < argc; i++) {
            redisReply *r = CTL_CMD(c, "XRANGE", kd, argv[i], argv[i]);
            if (r == NULL) {
                rc = CTL_FAIL;
                break;
            }
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && entry_ok(r->element[0])) {
                replay_entry(c, r->element[0], &run);
            } else {
                run.failed++;
                cJSON *j = cJSON_CreateObject();
                cJSON_AddStringToObject(j, "id", argv[i]);
                cJSON_AddStringToObject(j, "result", result_names[R_NOT_FOUND]);
                cJSON_AddStringToObject(j, "detail", "no such dead letter (trimmed, or a "
                                                     "wrong id)");
                cJSON_AddBoolToObject(j, "ok", false);
                cJSON_AddItemToArray(run.arr, j);
                ctl_table_add(run.t, (const char *const[]){ argv[i], "-", "-",
                                                            result_names[R_NOT_FOUND],
                                                            "no such dead letter (trimmed, or "
                                                            "a wrong id)" });
            }
            freeReplyObject(r);
        }
    }
out:
    free(kd);
    if (c->o.json) {
        ctl_print_json(run.arr);
        ctl_table_free(run.t);
    } else {
        cJSON_Delete(run.arr);
        if (ctl_table_rows(run.t)) {
            ctl_table_print(run.t, stdout, 0);
            printf("\n%zu replayed or nothing to do, %zu not replayed\n", run.ok, run.failed);
        } else {
            ctl_table_free(run.t);
            if (rc == CTL_OK)
                printf("no dead letters after %s\n", c->o.since);
        }
    }
    if (rc == CTL_OK && run.failed)
        rc = CTL_FAIL;
    return rc;
}

int ctl_cmd_dead(struct ctl *c, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "list") == 0) {
        if (c->o.ttl_s > 0) {
            ctl_err("--ttl applies to dead replay only");
            return CTL_USAGE;
        }
        return dead_list(c, argc - 1, argv + 1);
    }
    if (argc >= 1 && strcmp(argv[0], "replay") == 0) {
        if (c->o.count > 0) {
            ctl_err("--count applies to dead list only");
            return CTL_USAGE;
        }
        return dead_replay(c, argc - 1, argv + 1);
    }
    ctl_err("usage: varselctl dead list|replay ... (see varselctl dead --help)");
    return CTL_USAGE;
}
