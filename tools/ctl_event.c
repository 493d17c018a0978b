/*
 * `varselctl status TENANT EVENT_ID` and `varselctl send-test TENANT USER`:
 * one event's status hash (<prefix>{TENANT}:status:EVENT, USER:DEVICE ->
 * status) and its receipts in <prefix>receipts (docs/redis.md).
 *
 * status scans the receipts stream backwards (XREVRANGE ... COUNT) in pages,
 * at most --scan entries, so it stays cheap on a stream of a million.
 * send-test remembers the newest receipt id before it publishes, then
 * follows the stream from there with XREAD BLOCK.
 */
#include "tools/ctl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "queue/event.h"

#define SCAN_DEFAULT 10000
#define SCAN_PAGE 1000
#define SEND_TIMEOUT_DEFAULT_S 30.0

static const char *const receipt_header[] = { "TIME", "USER", "DEVICE", "PLATFORM", "STATUS",
                                              "ATTEMPT", "HTTP", "REASON", "LATENCY" };

static bool is_final(const char *st)
{
    return strcmp(st, "sent") == 0 || strcmp(st, "invalid_token") == 0 ||
           strcmp(st, "failed") == 0 || strcmp(st, "expired") == 0 ||
           strcmp(st, "opened") == 0;
}

/* One receipt entry ([id, [f, v...]]) as a table row and a JSON object. */
static void receipt_row(const redisReply *entry, struct ctl_table *t, cJSON *arr)
{
    const char *id = entry->element[0]->str;
    const redisReply *f = entry->element[1];
    int64_t at = strtoll(ctl_entry_str(f, "at"), NULL, 10);
    if (at <= 0)
        at = ctl_id_ms(id);
    char when[40], lat[32];
    const char *l = ctl_entry_str(f, "latency_ms");
    snprintf(lat, sizeof lat, "%s%s", l, l[0] ? " ms" : "");
    if (t) {
        const char *http = ctl_entry_str(f, "http_status");
        ctl_table_add(t, (const char *const[]){
            ctl_time(at, when, sizeof when), ctl_entry_str(f, "user"),
            ctl_entry_str(f, "device"), ctl_entry_str(f, "platform"),
            ctl_entry_str(f, "status"), ctl_entry_str(f, "attempt"),
            strcmp(http, "0") == 0 ? "-" : http, ctl_entry_str(f, "reason"), lat });
    }
    if (arr) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id);
        for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
            const redisReply *k = f->element[i], *v = f->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            static const char *const nums[] = { "attempt", "http_status", "latency_ms", "at" };
            bool num = false;
            for (size_t n = 0; n < 4; n++)
                num = num || strcmp(k->str, nums[n]) == 0;
            char *end;
            double d = strtod(v->str, &end);
            if (num && end != v->str && *end == '\0')
                cJSON_AddNumberToObject(o, k->str, d);
            else
                cJSON_AddItemToObject(o, k->str, ctl_json_str(v->str, v->len));
        }
        cJSON_AddItemToArray(arr, o);
    }
}

static bool entry_ok(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING && e->element[1]->type == REDIS_REPLY_ARRAY;
}

static bool receipt_is(const redisReply *e, const char *tenant, const char *event)
{
    const redisReply *f = e->element[1];
    return strcmp(ctl_entry_str(f, "event"), event) == 0 &&
           strcmp(ctl_entry_str(f, "tenant"), tenant) == 0;
}

static int check_two(const char *cmd, int argc, char **argv, const char *what)
{
    if (argc != 2 || argv[0][0] == '\0' || argv[1][0] == '\0') {
        ctl_err("usage: varselctl %s TENANT %s (see varselctl %s --help)", cmd, what, cmd);
        return CTL_USAGE;
    }
    return CTL_OK;
}

/* ---- status ------------------------------------------------------------------------- */

struct status_row {
    char *user, *device, *status;
};

static int cmp_status_row(const void *a, const void *b)
{
    const struct status_row *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    return c ? c : strcmp(x->device, y->device);
}

int ctl_cmd_status(struct ctl *c, int argc, char **argv)
{
    int rc = check_two("status", argc, argv, "EVENT_ID");
    if (rc != CTL_OK)
        return rc;
    const char *tenant = argv[0], *event = argv[1];
    long scan_max = c->o.scan > 0 ? c->o.scan : SCAN_DEFAULT;
    char *kst = ctl_key_tenant(c, tenant, "status", event);
    redisReply *h = CTL_CMD(c, "HGETALL", kst);
    redisReply *ttl = h ? CTL_CMD(c, "PTTL", kst) : NULL;
    free(kst);
    if (h == NULL || ttl == NULL) {
        if (h)
            freeReplyObject(h);
        return CTL_FAIL;
    }
    size_t n = h->type == REDIS_REPLY_ARRAY ? h->elements / 2 : 0;
    struct status_row *rows = xcalloc(n ? n : 1, sizeof *rows);
    size_t counts[6] = { 0 };
    static const char *const names[] = { "sent", "retrying", "invalid_token", "failed",
                                         "expired", "opened" };
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = h->element[2 * i], *v = h->element[2 * i + 1];
        const char *colon = memchr(f->str, ':', f->len);
        /* USER:DEVICE; user ids never contain ':' (docs/events.md) */
        rows[i].user = colon ? xstrndup(f->str, (size_t)(colon - f->str)) : xstrdup(f->str);
        rows[i].device = colon ? xstrdup(colon + 1) : xstrdup("");
        rows[i].status = xstrndup(v->str ? v->str : "", v->len);
        for (size_t k = 0; k < 6; k++)
            if (strcmp(rows[i].status, names[k]) == 0)
                counts[k]++;
    }
    qsort(rows, n, sizeof *rows, cmp_status_row);
    long long pttl = ttl->type == REDIS_REPLY_INTEGER ? ttl->integer : -2;
    freeReplyObject(h);
    freeReplyObject(ttl);

    /* Receipts, newest first, a page at a time. */
    char *krc = ctl_key(c, "receipts");
    struct ctl_table *t = ctl_table_new(9, receipt_header);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "tenant", ctl_json_str(tenant, strlen(tenant)));
    cJSON_AddItemToObject(doc, "event", ctl_json_str(event, strlen(event)));
    cJSON *sarr = cJSON_AddArrayToObject(doc, "deliveries");
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "user", ctl_json_str(rows[i].user, strlen(rows[i].user)));
        cJSON_AddItemToObject(o, "device", ctl_json_str(rows[i].device, strlen(rows[i].device)));
        cJSON_AddItemToObject(o, "status", ctl_json_str(rows[i].status, strlen(rows[i].status)));
        cJSON_AddItemToArray(sarr, o);
    }
    cJSON *rarr = cJSON_AddArrayToObject(doc, "receipts");
    long scanned = 0;
    size_t found = 0;
    bool whole = false, failed = false;
    char end[64] = "+";
    while (scanned < scan_max) {
        long page = scan_max - scanned < SCAN_PAGE ? scan_max - scanned : SCAN_PAGE;
        char spage[24];
        snprintf(spage, sizeof spage, "%ld", page);
        redisReply *r = CTL_CMD(c, "XREVRANGE", krc, end, "-", "COUNT", spage);
        if (r == NULL) {
            failed = true;
            break;
        }
        size_t got = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i < got; i++) {
            const redisReply *e = r->element[i];
            if (!entry_ok(e) || !receipt_is(e, tenant, event))
                continue;
            receipt_row(e, t, rarr);
            found++;
        }
        scanned += (long)got;
        if ((long)got < page) {
            whole = true;
        } else {
            snprintf(end, sizeof end, "(%s", r->element[got - 1]->element[0]->str);
        }
        freeReplyObject(r);
        if (whole)
            break;
    }
    free(krc);
    cJSON_AddNumberToObject(doc, "receipts_scanned", (double)scanned);
    cJSON_AddBoolToObject(doc, "receipts_complete", whole);
    if (pttl >= 0)
        cJSON_AddNumberToObject(doc, "status_expires_in_s", (double)(pttl / 1000));

    if (failed) {
        ctl_table_free(t);
        cJSON_Delete(doc);
    } else if (c->o.json) {
        ctl_print_json(doc);
        ctl_table_free(t);
    } else {
        cJSON_Delete(doc);
        if (n) {
            printf("event %s/%s: %zu deliver%s", tenant, event, n, n == 1 ? "y" : "ies");
            const char *sep = " (";
            for (size_t k = 0; k < 6; k++) {
                if (counts[k]) {
                    printf("%s%zu %s", sep, counts[k], names[k]);
                    sep = ", ";
                }
            }
            printf("%s\n\n", sep[0] == ',' ? ")" : "");
            struct ctl_table *st = ctl_table_new(3, (const char *const[]){ "USER", "DEVICE",
                                                                           "STATUS" });
            for (size_t i = 0; i < n; i++)
                ctl_table_add(st, (const char *const[]){ rows[i].user, rows[i].device,
                                                         rows[i].status });
            ctl_table_print(st, stdout, 0);
        } else {
            printf("event %s/%s: no status hash (not processed yet, no devices, or expired "
                   "after [redis] status_ttl_s)\n", tenant, event);
        }
        printf("\nreceipts, newest first (%zu found in the newest %ld of %s%s):\n", found,
               scanned, c->prefix, "receipts");
        if (found)
            ctl_table_print(t, stdout, 2);
        else
            ctl_table_free(t);
        if (!whole)
            printf("  (older receipts were not searched: --scan N to look further)\n");
    }
    for (size_t i = 0; i < n; i++) {
        free(rows[i].user);
        free(rows[i].device);
        free(rows[i].status);
    }
    free(rows);
    if (failed)
        return CTL_FAIL;
    if (n == 0 && found == 0) {
        ctl_err("nothing known about event %s/%s", tenant, event);
        return CTL_FAIL;
    }
    return CTL_OK;
}

/* ---- send-test ------------------------------------------------------------------------ */

/* One receipt as a line of fixed columns (send-test prints them as they come). */
static void print_receipt_line(const redisReply *f, const char *id)
{
    int64_t at = strtoll(ctl_entry_str(f, "at"), NULL, 10);
    char when[40], lat[64];
    ctl_time(at > 0 ? at : ctl_id_ms(id), when, sizeof when);
    static const char *const keys[] = { "device", "platform", "status", "attempt", "reason",
                                        "http_status", "latency_ms" };
    char *v[7];
    for (size_t i = 0; i < 7; i++) {
        const char *x = ctl_entry_str(f, keys[i]);
        v[i] = ctl_printable(x, strlen(x), i == 4 ? 120 : 40);
    }
    snprintf(lat, sizeof lat, "%s%s", v[6], v[6][0] ? " ms" : "");
    /* the time of day of the ISO time: HH:MM:SS.mmm */
    printf("  %-12.12s  %-16s  %-8s  %-13s  %-7s  %-4s  %9s  %s\n",
           strlen(when) > 11 ? when + 11 : when, v[0], v[1], v[2], v[3],
           strcmp(v[5], "0") == 0 || v[5][0] == '\0' ? "-" : v[5], lat, v[4]);
    for (size_t i = 0; i < 7; i++)
        free(v[i]);
}

struct dev_state {
    char *device, *platform;
    char status[24];             /* last status seen, "" = none */
};

static char *rfc3339_now(void)
{
    char buf[40];
    ctl_time(now_ms(), buf, sizeof buf);
    return xstrdup(buf);
}

int ctl_cmd_send_test(struct ctl *c, int argc, char **argv)
{
    int rc = check_two("send-test", argc, argv, "USER");
    if (rc != CTL_OK)
        return rc;
    const char *tenant = argv[0], *user = argv[1];
    double timeout = c->o.timeout_s > 0 ? c->o.timeout_s : SEND_TIMEOUT_DEFAULT_S;
    if (c->o.text && !utf8_valid(c->o.text, strlen(c->o.text))) {
        ctl_err("send-test: --text is not valid UTF-8");
        return CTL_USAGE;
    }

    /* The event. */
    char uuid[37], id[64];
    uuid_v4(uuid);
    snprintf(id, sizeof id, "varselctl-test-%s", uuid);
    char *occurred = rfc3339_now();
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddNumberToObject(ev, "v", 1);
    cJSON_AddStringToObject(ev, "id", id);
    cJSON_AddStringToObject(ev, "type", "message.new");
    cJSON_AddStringToObject(ev, "tenant", tenant);
    cJSON_AddStringToObject(ev, "occurred_at", occurred);
    cJSON_AddNumberToObject(ev, "ttl_s", ceil(timeout) < 1 ? 1 : ceil(timeout));
    cJSON *rcp = cJSON_AddArrayToObject(ev, "recipients");
    cJSON_AddItemToArray(rcp, cJSON_CreateString(user));
    cJSON_AddStringToObject(ev, "thread", "varselctl-test");
    cJSON_AddStringToObject(ev, "sender_name", "varsel");
    cJSON_AddStringToObject(ev, "school_name", "test");
    if (c->o.text)
        cJSON_AddStringToObject(ev, "subject", c->o.text);
    free(occurred);
    char *json = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (json == NULL) {
        ctl_err("send-test: out of memory");
        return CTL_FAIL;
    }
    /* What varseld would refuse (a tenant that is no slug, a user id with
     * ':'...) is refused here, with varseld's own reason. */
    char why[EVENT_REASON_MAX];
    struct event *pe = NULL;
    if (event_parse(json, strlen(json), &pe, why, sizeof why) != 0) {
        ctl_err("send-test: varseld would not accept this event: %s", why);
        cJSON_free(json);
        return CTL_USAGE;
    }
    event_free(pe);

    /* The devices the event should reach. */
    char *kdev = ctl_key_tenant(c, tenant, "devices", user);
    redisReply *devs = CTL_CMD(c, "HGETALL", kdev);
    free(kdev);
    if (devs == NULL) {
        cJSON_free(json);
        return CTL_FAIL;
    }
    size_t nd = devs->type == REDIS_REPLY_ARRAY ? devs->elements / 2 : 0;
    if (nd == 0) {
        freeReplyObject(devs);
        cJSON_free(json);
        ctl_err("%s/%s has no registered devices; nothing to send to", tenant, user);
        return CTL_FAIL;
    }
    struct dev_state *ds = xcalloc(nd, sizeof *ds);
    for (size_t i = 0; i < nd; i++) {
        const redisReply *f = devs->element[2 * i], *v = devs->element[2 * i + 1];
        ds[i].device = xstrndup(f->str, f->len);
        cJSON *rec = cJSON_ParseWithLength(v->str, v->len);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(rec, "platform");
        ds[i].platform = xstrdup(cJSON_IsString(p) ? p->valuestring : "?");
        cJSON_Delete(rec);
    }
    freeReplyObject(devs);

    /* Where the receipts stream is now: follow it from there. */
    char *krc = ctl_key(c, "receipts");
    char last[64] = "0-0";
    redisReply *r = CTL_CMD(c, "XREVRANGE", krc, "+", "-", "COUNT", "1");
    if (r == NULL) {
        cJSON_free(json);
        rc = CTL_FAIL;
        goto out;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && entry_ok(r->element[0]))
        snprintf(last, sizeof last, "%s", r->element[0]->element[0]->str);
    freeReplyObject(r);

    r = CTL_CMD(c, "XADD", c->stream, "*", "event", json);
    cJSON_free(json);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        if (r)
            freeReplyObject(r);
        rc = CTL_FAIL;
        goto out;
    }
    char entry[64];
    snprintf(entry, sizeof entry, "%s", r->str);
    freeReplyObject(r);
    if (!c->o.json) {
        printf("published %s/%s to %s as %s; %zu device%s; waiting up to %g s for receipts\n\n",
               tenant, id, c->stream, entry, nd, nd == 1 ? "" : "s", timeout);
        fflush(stdout);
    }

    /* Follow the receipts. */
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "tenant", ctl_json_str(tenant, strlen(tenant)));
    cJSON_AddItemToObject(doc, "user", ctl_json_str(user, strlen(user)));
    cJSON_AddStringToObject(doc, "event", id);
    cJSON_AddStringToObject(doc, "entry", entry);
    cJSON *rarr = cJSON_AddArrayToObject(doc, "receipts");
    uint64_t deadline = mono_ms() + (uint64_t)(timeout * 1000);
    size_t final = 0;
    bool header = false, io_failed = false;
    while (final < nd) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            break;
        long wait = (long)(deadline - now);
        if (wait > 1000)
            wait = 1000;
        char swait[24];
        snprintf(swait, sizeof swait, "%ld", wait);
        ctl_redis_timeout(c, wait + 10000);
        r = CTL_CMD(c, "XREAD", "COUNT", "500", "BLOCK", swait, "STREAMS", krc, last);
        if (r == NULL) {
            io_failed = true;
            break;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
            const redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                const redisReply *e = entries->element[i];
                if (!entry_ok(e))
                    continue;
                snprintf(last, sizeof last, "%s", e->element[0]->str);
                if (!receipt_is(e, tenant, id))
                    continue;
                const redisReply *f = e->element[1];
                const char *dev = ctl_entry_str(f, "device"), *st = ctl_entry_str(f, "status");
                if (!c->o.json) {
                    if (!header)
                        printf("  %-12s  %-16s  %-8s  %-13s  %-7s  %-4s  %9s  %s\n", "TIME",
                               "DEVICE", "PLATFORM", "STATUS", "ATTEMPT", "HTTP", "LATENCY",
                               "REASON");
                    header = true;
                    print_receipt_line(f, e->element[0]->str);
                    fflush(stdout);
                } else {
                    receipt_row(e, NULL, rarr);
                }
                for (size_t k = 0; k < nd; k++) {
                    if (strcmp(ds[k].device, dev) != 0 || strcmp(ctl_entry_str(f, "user"), user))
                        continue;
                    bool was = ds[k].status[0] && is_final(ds[k].status);
                    snprintf(ds[k].status, sizeof ds[k].status, "%s", st);
                    if (!was && is_final(st))
                        final++;
                }
            }
        }
        freeReplyObject(r);
    }
    free(krc);
    krc = NULL;

    /* Fill in from the status hash what the receipts did not say. */
    if (!io_failed) {
        char *kst = ctl_key_tenant(c, tenant, "status", id);
        ctl_redis_timeout(c, 15000);
        redisReply *h = CTL_CMD(c, "HGETALL", kst);
        free(kst);
        for (size_t k = 0; h && k < nd; k++) {
            size_t fl = strlen(user) + strlen(ds[k].device) + 2;
            char *field = xmalloc(fl);
            snprintf(field, fl, "%s:%s", user, ds[k].device);
            const redisReply *v = ctl_hash_get(h, field);
            free(field);
            if (v && v->type == REDIS_REPLY_STRING && !is_final(ds[k].status))
                snprintf(ds[k].status, sizeof ds[k].status, "%s", v->str);
        }
        if (h)
            freeReplyObject(h);
    }
    size_t sent = 0;
    cJSON *darr = cJSON_AddArrayToObject(doc, "devices");
    for (size_t k = 0; k < nd; k++) {
        if (strcmp(ds[k].status, "sent") == 0 || strcmp(ds[k].status, "opened") == 0)
            sent++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "device", ctl_json_str(ds[k].device, strlen(ds[k].device)));
        cJSON_AddStringToObject(o, "platform", ds[k].platform);
        cJSON_AddStringToObject(o, "status", ds[k].status[0] ? ds[k].status : "none");
        cJSON_AddItemToArray(darr, o);
    }
    cJSON_AddBoolToObject(doc, "all_sent", sent == nd);
    if (c->o.json) {
        ctl_print_json(doc);
    } else {
        cJSON_Delete(doc);
        printf("\n%s/%s: %zu of %zu device%s sent", tenant, user, sent, nd, nd == 1 ? "" : "s");
        const char *sep = "; ";
        for (size_t k = 0; k < nd; k++) {
            if (strcmp(ds[k].status, "sent") == 0)
                continue;
            char *d = ctl_printable(ds[k].device, strlen(ds[k].device), 64);
            printf("%s%s: %s", sep, d,
                   ds[k].status[0] ? ds[k].status : "no answer in time");
            free(d);
            sep = ", ";
        }
        printf("\n");
    }
    if (io_failed)
        rc = CTL_FAIL;
    else if (sent != nd) {
        if (final == 0 && !c->o.json)
            ctl_err("no final receipt within %g s: is varseld running and reading %s?", timeout,
                    c->stream);
        rc = CTL_FAIL;
    }
out:
    free(krc);
    for (size_t i = 0; i < nd; i++) {
        free(ds[i].device);
        free(ds[i].platform);
    }
    free(ds);
    return rc;
}
