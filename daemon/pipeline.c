/*
 * The delivery pipeline: one per varseld process, on one libuv loop.
 *
 *   intake   XREADGROUP on its own Redis connection ("read"), first this
 *            consumer's own pending entries (history, after every
 *            reconnect), then new ones (">"); XAUTOCLAIM on a timer takes
 *            over entries idle longer than claim_idle_ms.
 *   job      one stream entry being worked on. A malformed entry goes to
 *            the dead-letter stream and is acked; a device event updates
 *            the registry and is acked; a notification event is expanded.
 *   expand   the event's status hash (deliveries already final are skipped:
 *            crash replay) and each recipient's devices hash, pipelined on
 *            the command connection; then one delivery per device.
 *   deliver  through the app's provider client (apns/client.h).
 *   settle   receipt + status in one Lua script, dead token removal; the
 *            entry is XACKed only once every delivery of the job is settled
 *            in Redis. A settle write that fails (Redis down) is kept in
 *            memory and written again when Redis is back.
 *
 * Ownership: the pipeline owns its jobs (a doubly linked list); a job owns
 * its entry, event and deliveries. Redis callbacks carry a job or a
 * delivery as |priv|; a job is freed only when no Redis reply and no
 * provider answer for it is outstanding (job->refs == 0).
 */
#include "daemon/pipeline.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns/client.h"
#include "apns/payload.h"
#include "common/log.h"
#include "common/push.h"
#include "common/util.h"
#include "daemon/templates.h"
#include "fcm/client.h"
#include "fcm/message.h"
#include "queue/event.h"
#include "queue/receipts.h"
#include "queue/registry.h"
#include "queue/stream.h"

#define PAYLOAD_MAX 4096

struct job;

struct delivery {
    struct job *job;
    const char *user;            /* borrowed from the event */
    struct registry_device dev;  /* owned */
    const struct pipeline_app *app;
    int attempt;
    char apns_id[37];
    /* outcome, filled at settle time */
    const char *status;
    struct push_result res;
    bool settled;                /* receipt written */
    struct delivery *retry_next; /* on pl->settle_retry */
};

enum job_stage { JOB_NEW, JOB_LOOKUP, JOB_SENDING, JOB_ACKING, JOB_DONE };

struct job {
    struct pipeline *pl;
    struct job *prev, *next;
    struct stream_entry entry;
    struct event *ev;
    enum job_stage stage;
    int refs;                    /* outstanding callbacks that reference it */
    bool redis_failed;           /* a lookup failed: release without ack */
    /* lookup */
    const char **users;          /* distinct recipients (borrowed strings) */
    size_t n_users;
    size_t lookup_next;          /* index of the next reply (0 = status) */
    char **final_keys;           /* "user:device" already final, sorted */
    size_t n_final;
    struct registry_device **devs; /* per user: array of devices */
    size_t *n_devs;
    /* delivery */
    struct delivery **dl;
    size_t n_dl;
    size_t unsettled;
};

struct pipeline {
    uv_loop_t *loop;
    struct pipeline_config cfg;
    char *dead_stream;
    struct redis_conn *rd, *cmd;
    bool group_ready, group_creating;
    bool reading;
    bool history;                /* reading own pending entries */
    char history_id[64];
    bool stopping, closed;
    struct job *jobs;            /* list of active jobs */
    size_t n_jobs;
    size_t inflight;             /* deliveries sent and not settled */
    struct delivery *settle_retry; /* receipts to write again */
    uv_timer_t claim_timer, stop_timer;
    char claim_cursor[64];
    bool claiming;
    uint32_t stop_waited_ms, stop_timeout_ms;
    void (*stop_done)(void *);
    void *stop_arg;
    struct pipeline_stats st;
    int timers_open;
};

static void maybe_read(struct pipeline *pl);
static void job_release(struct job *j);
static void job_check_done(struct job *j);
static void settle_write(struct delivery *d);

/* ---- jobs ------------------------------------------------------------- */

static struct job *job_find(struct pipeline *pl, const char *id)
{
    for (struct job *j = pl->jobs; j; j = j->next)
        if (strcmp(j->entry.id, id) == 0)
            return j;
    return NULL;
}

static struct job *job_new(struct pipeline *pl, struct stream_entry *e)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->pl = pl;
    j->entry = *e;            /* takes ownership */
    memset(e, 0, sizeof *e);
    j->next = pl->jobs;
    if (pl->jobs)
        pl->jobs->prev = j;
    pl->jobs = j;
    pl->n_jobs++;
    return j;
}

static void job_free(struct job *j)
{
    struct pipeline *pl = j->pl;
    if (j->prev)
        j->prev->next = j->next;
    else
        pl->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    pl->n_jobs--;
    for (size_t i = 0; i < j->n_dl; i++) {
        registry_device_clear(&j->dl[i]->dev);
        free(j->dl[i]);
    }
    free(j->dl);
    for (size_t i = 0; i < j->n_final; i++)
        free(j->final_keys[i]);
    free(j->final_keys);
    if (j->devs) {
        for (size_t u = 0; u < j->n_users; u++) {
            for (size_t k = 0; k < j->n_devs[u]; k++)
                registry_device_clear(&j->devs[u][k]);
            free(j->devs[u]);
        }
    }
    free(j->devs);
    free(j->n_devs);
    free(j->users);
    event_free(j->ev);
    stream_entry_free(&j->entry);
    free(j);
}

/* Drop a job without acknowledging it (its entry stays pending). */
static void job_release(struct job *j)
{
    j->stage = JOB_DONE;
    if (j->refs == 0) {
        struct pipeline *pl = j->pl;
        job_free(j);
        if (!pl->closed)
            maybe_read(pl);
    }
}

static void on_ack(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    struct pipeline *pl = j->pl;
    j->refs--;
    if (reply && reply->type != REDIS_REPLY_ERROR) {
        pl->st.acked++;
        log_debug("pipeline", "acked %s", j->entry.id);
    } else if (!pl->closed) {
        log_warn("pipeline", "XACK %s failed (%s): the entry stays pending and is "
                 "skipped when replayed", j->entry.id,
                 reply ? reply->str : "connection lost");
    }
    job_release(j);
}

static void job_ack(struct job *j)
{
    struct pipeline *pl = j->pl;
    j->stage = JOB_ACKING;
    if (stream_ack(pl->cmd, pl->cfg.stream, pl->cfg.group, j->entry.id, on_ack, j) == 0)
        j->refs++;
    else
        job_release(j);
}

/* ---- dead letters and device events ------------------------------------ */

static void on_dead_written(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply && reply->type != REDIS_REPLY_ERROR && !j->pl->closed)
        job_ack(j);
    else
        job_release(j);
}

static void job_dead_letter(struct job *j, const char *code, const char *reason)
{
    struct pipeline *pl = j->pl;
    pl->st.dead++;
    log_warn("pipeline", "dead letter %s: %s: %s", j->entry.id, code, reason);
    if (stream_dead_letter(pl->cmd, pl->dead_stream, pl->cfg.dead_maxlen, pl->cfg.stream,
                           pl->cfg.consumer, &j->entry, code, reason,
                           on_dead_written, j) == 0)
        j->refs++;
    else
        job_release(j);
}

static void on_registry_applied(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (j->pl->closed || reply == NULL) {
        job_release(j);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char reason[256];
        snprintf(reason, sizeof reason, "registry update failed: %.200s", reply->str);
        job_dead_letter(j, "registry_error", reason);
        return;
    }
    log_info("registry", "%s %s/%s device %s: %s", event_type_name(j->ev->type),
             j->ev->tenant, j->ev->user, j->ev->device,
             reply->type == REDIS_REPLY_STRING ? reply->str : "?");
    job_ack(j);
}

static void on_opened_written(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply && reply->type != REDIS_REPLY_ERROR && !j->pl->closed)
        job_ack(j);
    else
        job_release(j);
}

/* ---- expansion --------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool is_final(const struct job *j, const char *user, const char *device)
{
    if (j->n_final == 0)
        return false;
    char key[512];
    snprintf(key, sizeof key, "%s:%s", user, device);
    const char *k = key;
    return bsearch(&k, j->final_keys, j->n_final, sizeof *j->final_keys, cmp_str) != NULL;
}

static void job_send_all(struct job *j);

static void on_lookup(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    size_t idx = j->lookup_next++;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (!j->redis_failed && !j->pl->closed)
            log_warn("pipeline", "lookup for %s failed: %s", j->entry.id,
                     reply ? reply->str : "connection lost");
        j->redis_failed = true;
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        size_t pairs = reply->elements / 2;
        if (idx == 0) {
            j->final_keys = xcalloc(pairs ? pairs : 1, sizeof *j->final_keys);
            for (size_t i = 0; i < pairs; i++) {
                redisReply *f = reply->element[2 * i], *v = reply->element[2 * i + 1];
                if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
                    receipts_status_is_final(v->str))
                    j->final_keys[j->n_final++] = xstrndup(f->str, f->len);
            }
            qsort(j->final_keys, j->n_final, sizeof *j->final_keys, cmp_str);
        } else {
            size_t u = idx - 1;
            j->devs[u] = xcalloc(pairs ? pairs : 1, sizeof **j->devs);
            for (size_t i = 0; i < pairs; i++) {
                redisReply *f = reply->element[2 * i], *v = reply->element[2 * i + 1];
                if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                    continue;
                char *dev = xstrndup(f->str, f->len);
                if (registry_device_parse(dev, v->str, v->len, &j->devs[u][j->n_devs[u]]) == 0)
                    j->n_devs[u]++;
                else
                    log_warn("registry", "skipping unreadable device record %s/%s/%s",
                             j->ev->tenant, j->users[u], dev);
                free(dev);
            }
        }
    }
    if (j->refs > 0)
        return;
    if (j->redis_failed || j->pl->closed || j->pl->stopping) {
        job_release(j);
        return;
    }
    job_send_all(j);
}

static void job_expand(struct job *j)
{
    struct pipeline *pl = j->pl;
    struct event *ev = j->ev;
    j->stage = JOB_LOOKUP;
    j->users = xcalloc(ev->n_recipients ? ev->n_recipients : 1, sizeof *j->users);
    for (size_t i = 0; i < ev->n_recipients; i++) {
        const char *u = ev->recipients[i].user;
        if (ev->type == EVENT_ABSENCE_REPORTED && ev->reported_by &&
            strcmp(u, ev->reported_by) == 0)
            continue; /* never tell the guardian who reported it */
        bool dup = false;
        for (size_t k = 0; k < j->n_users && !dup; k++)
            dup = strcmp(j->users[k], u) == 0;
        if (!dup)
            j->users[j->n_users++] = u;
    }
    j->devs = xcalloc(j->n_users ? j->n_users : 1, sizeof *j->devs);
    j->n_devs = xcalloc(j->n_users ? j->n_users : 1, sizeof *j->n_devs);
    if (receipts_status_lookup(pl->cmd, pl->cfg.prefix, ev->tenant, ev->id, on_lookup, j) != 0) {
        job_release(j);
        return;
    }
    j->refs++;
    for (size_t u = 0; u < j->n_users; u++) {
        if (registry_lookup(pl->cmd, pl->cfg.prefix, ev->tenant, j->users[u], on_lookup, j) != 0) {
            /* Connection gone: replies already queued get NULL; mark failure. */
            j->redis_failed = true;
            break;
        }
        j->refs++;
    }
}

/* ---- delivery ---------------------------------------------------------- */

static const struct pipeline_app *find_app(const struct pipeline *pl, const char *name)
{
    for (size_t i = 0; i < pl->cfg.n_apps; i++)
        if (strcmp(pl->cfg.apps[i].name, name) == 0)
            return &pl->cfg.apps[i];
    return NULL;
}

/* Default time a notification stays useful, per type (seconds). */
static int64_t default_ttl_s(enum event_type t)
{
    switch (t) {
    case EVENT_ABSENCE_ALERT: return 8 * 3600;
    case EVENT_ABSENCE_REPORTED: return 24 * 3600;
    case EVENT_TIMETABLE_CHANGED: return 24 * 3600;
    default: return 7 * 24 * 3600;
    }
}

static int apns_priority(const struct event *ev)
{
    if (ev->priority == EVENT_PRIORITY_HIGH)
        return 10;
    if (ev->priority == EVENT_PRIORITY_NORMAL)
        return 5;
    return ev->type == EVENT_TIMETABLE_CHANGED ? 5 : 10;
}

/* apns-collapse-id: the event id when it fits 64 bytes, else its SHA-256. */
static void collapse_id(const struct event *ev, char out[65])
{
    size_t n = strlen(ev->id);
    if (n <= 64)
        memcpy(out, ev->id, n + 1);
    else
        sha256_hex(ev->id, n, out);
}

static void on_push_done(const struct push_result *r, void *user);

static void settle_now(struct delivery *d, const char *status, int http_status,
                       const char *reason)
{
    d->status = status;
    d->res.http_status = http_status;
    snprintf(d->res.reason, sizeof d->res.reason, "%s", reason);
    d->res.token_timestamp_ms = -1;
    settle_write(d);
}

/* The thread a notification groups under on the phone. */
static void thread_of(const struct event *ev, char *out, size_t outlen)
{
    const char *student = event_field(ev, "student");
    if (ev->thread)
        snprintf(out, outlen, "%s", ev->thread);
    else if (student)
        snprintf(out, outlen, "student-%s", student);
    else
        snprintf(out, outlen, "%s", event_type_name(ev->type));
}

static int badge_of(const struct event *ev, const char *user)
{
    for (size_t i = 0; i < ev->n_recipients; i++)
        if (strcmp(ev->recipients[i].user, user) == 0)
            return ev->recipients[i].badge;
    return -1;
}

static int start_apns(struct job *j, struct delivery *d, const char *title,
                      const char *body)
{
    const struct event *ev = j->ev;
    char thread[160];
    thread_of(ev, thread, sizeof thread);
    struct apns_notification n = {
        .title = title,
        .body = body,
        .badge = badge_of(ev, d->user),
        .thread_id = thread,
        .interruption_level = ev->type == EVENT_ABSENCE_ALERT ? "time-sensitive" : NULL,
        .sound = "default",
        .event_id = ev->id,
        .event_type = event_type_name(ev->type),
        .tenant = ev->tenant,
    };
    char payload[PAYLOAD_MAX + 1];
    size_t plen = 0;
    if (apns_payload_build(&n, PAYLOAD_MAX, payload, sizeof payload, &plen) != 0) {
        settle_now(d, "failed", 0, "payload does not fit 4096 bytes");
        return -1;
    }
    char cid[65];
    collapse_id(ev, cid);
    int64_t ttl = ev->ttl_s >= 0 ? ev->ttl_s : default_ttl_s(ev->type);
    struct apns_request req = {
        .token = d->dev.token,
        .sandbox = d->dev.environment && strcmp(d->dev.environment, "sandbox") == 0,
        .apns_id = d->apns_id,
        .collapse_id = cid,
        .priority = apns_priority(ev),
        .expiration = j->entry.ms / 1000 + ttl,
        .push_type = "alert",
        .payload = payload,
        .payload_len = plen,
    };
    if (apns_client_send(d->app->apns, &req, on_push_done, d) != 0) {
        settle_now(d, "failed", 0, "provider client closing");
        return -1;
    }
    return 0;
}

static int start_fcm(struct job *j, struct delivery *d, const char *title,
                     const char *body)
{
    const struct event *ev = j->ev;
    char thread[160];
    thread_of(ev, thread, sizeof thread);
    int64_t ttl = ev->ttl_s >= 0 ? ev->ttl_s : default_ttl_s(ev->type);
    /* What is left of the notification's useful life after its publish time. */
    int64_t left = ttl - (now_ms() - j->entry.ms) / 1000;
    if (left < 0)
        left = 0;
    bool high = ev->priority == EVENT_PRIORITY_HIGH ||
                (ev->priority == EVENT_PRIORITY_DEFAULT &&
                 (ev->type == EVENT_ABSENCE_ALERT || ev->type == EVENT_MESSAGE_NEW));
    struct fcm_notification n = {
        .token = d->dev.token,
        .title = title,
        .body = body,
        .event_id = ev->id,
        .event_type = event_type_name(ev->type),
        .tenant = ev->tenant,
        .thread = thread,
        .high_priority = high,
        .ttl_s = left,
        /* A newer message in the thread (or a replay) replaces the one shown;
         * for every other type a replay replaces instead of stacking. */
        .collapse_key = ev->type == EVENT_MESSAGE_NEW && ev->thread ? ev->thread : ev->id,
        .channel_id = fcm_message_channel(event_type_name(ev->type)),
    };
    char msg[PAYLOAD_MAX + 1024];
    size_t mlen = 0;
    if (fcm_message_build(&n, PAYLOAD_MAX, msg, sizeof msg, &mlen) != 0) {
        settle_now(d, "failed", 0, "message does not fit 4096 bytes");
        return -1;
    }
    if (fcm_client_send(d->app->fcm, msg, mlen, on_push_done, d) != 0) {
        settle_now(d, "failed", 0, "provider client closing");
        return -1;
    }
    return 0;
}

static void delivery_start(struct job *j, struct delivery *d)
{
    struct pipeline *pl = j->pl;
    const struct event *ev = j->ev;
    char tk[24];
    if (d->app == NULL) {
        settle_now(d, "failed", 0, "unknown app");
        return;
    }
    bool ios = strcmp(d->dev.platform, "ios") == 0;
    bool android = strcmp(d->dev.platform, "android") == 0;
    if ((ios && d->app->apns == NULL) || (android && d->app->fcm == NULL) ||
        (!ios && !android)) {
        settle_now(d, "failed", 0, "app has no credentials for this platform");
        return;
    }
    char *title = NULL, *body = NULL;
    const char *locale = templates_resolve_locale(d->dev.locale, NULL);
    if (templates_render(pl->cfg.templates, ev, locale, &title, &body) != 0) {
        settle_now(d, "failed", 0, "template rendering failed");
        return;
    }
    log_debug("deliver", "%s/%s -> %s/%s %s token %s", ev->tenant, ev->id, d->user,
              d->dev.device, d->dev.platform, log_token(d->dev.token, tk, sizeof tk));
    int rc = ios ? start_apns(j, d, title, body) : start_fcm(j, d, title, body);
    free(title);
    free(body);
    if (rc == 0) {
        j->refs++;
        pl->inflight++;
    }
}

static void job_send_all(struct job *j)
{
    struct pipeline *pl = j->pl;
    const struct event *ev = j->ev;
    size_t total = 0, skipped = 0;
    for (size_t u = 0; u < j->n_users; u++)
        total += j->n_devs[u];
    j->dl = xcalloc(total ? total : 1, sizeof *j->dl);
    for (size_t u = 0; u < j->n_users; u++) {
        for (size_t k = 0; k < j->n_devs[u]; k++) {
            struct registry_device *rd = &j->devs[u][k];
            if (is_final(j, j->users[u], rd->device)) {
                skipped++;
                continue;
            }
            struct delivery *d = xcalloc(1, sizeof *d);
            d->job = j;
            d->user = j->users[u];
            d->dev = *rd;                 /* takes ownership */
            memset(rd, 0, sizeof *rd);
            d->app = find_app(pl, d->dev.app);
            d->attempt = 1;
            char name[600];
            int nl = snprintf(name, sizeof name, "%s|%s|%s|%s", ev->tenant, ev->id,
                              d->user, d->dev.device);
            uuid_from_name(name, (size_t)(nl < (int)sizeof name ? nl : (int)sizeof name - 1),
                           d->apns_id);
            j->dl[j->n_dl++] = d;
        }
    }
    pl->st.skipped += skipped;
    pl->st.deliveries += j->n_dl;
    j->unsettled = j->n_dl;
    j->stage = JOB_SENDING;
    log_info("pipeline", "event %s/%s %s (%s): %zu recipients, %zu deliveries, "
             "%zu already final", ev->tenant, ev->id, event_type_name(ev->type),
             j->entry.id, j->n_users, j->n_dl, skipped);
    if (j->n_dl == 0) {
        job_ack(j);
        return;
    }
    /* Keep the job alive while starting deliveries that settle at once. */
    j->refs++;
    for (size_t i = 0; i < j->n_dl; i++)
        delivery_start(j, j->dl[i]);
    j->refs--;
    job_check_done(j);
}

static void on_push_done(const struct push_result *r, void *user)
{
    struct delivery *d = user;
    struct job *j = d->job;
    struct pipeline *pl = j->pl;
    j->refs--;
    pl->inflight--;
    d->res = *r;
    if (pl->closed) {
        job_check_done(j);
        return;
    }
    switch (r->outcome) {
    case PUSH_SENT: d->status = "sent"; break;
    case PUSH_INVALID_TOKEN: d->status = "invalid_token"; break;
    default: d->status = "failed"; break; /* durable retries: issue #4 */
    }
    char tk[24];
    if (r->outcome == PUSH_SENT)
        log_debug("deliver", "%s/%s %s/%s sent (%llu ms)", j->ev->tenant, j->ev->id,
                  d->user, d->dev.device, (unsigned long long)r->rtt_ms);
    else
        log_info("deliver", "%s/%s %s/%s token %s: %s (%d %s)", j->ev->tenant, j->ev->id,
                 d->user, d->dev.device, log_token(d->dev.token, tk, sizeof tk),
                 d->status, r->http_status, r->reason);
    if (r->outcome == PUSH_INVALID_TOKEN) {
        if (registry_remove_token(pl->cmd, pl->cfg.prefix, j->ev->tenant, d->user,
                                  d->dev.device, d->dev.app, d->dev.token,
                                  r->token_timestamp_ms, NULL, NULL) != 0)
            log_warn("registry", "could not remove dead token %s now (Redis down)", tk);
    }
    settle_write(d);
}

/* ---- settlement -------------------------------------------------------- */

static void on_settled(redisAsyncContext *ac, void *r, void *priv)
{
    struct delivery *d = priv;
    struct job *j = d->job;
    struct pipeline *pl = j->pl;
    redisReply *reply = r;
    j->refs--;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (pl->closed) {
            job_check_done(j);
            return;
        }
        log_warn("pipeline", "writing receipt for %s failed (%s); will retry",
                 j->entry.id, reply ? reply->str : "connection lost");
        d->retry_next = pl->settle_retry;
        pl->settle_retry = d;
        return;
    }
    d->settled = true;
    j->unsettled--;
    if (strcmp(d->status, "sent") == 0)
        pl->st.sent++;
    else if (strcmp(d->status, "invalid_token") == 0)
        pl->st.invalid_token++;
    else
        pl->st.failed++;
    job_check_done(j);
}

static void settle_write(struct delivery *d)
{
    struct job *j = d->job;
    struct pipeline *pl = j->pl;
    int64_t now = now_ms();
    struct receipt rc = {
        .event = j->ev->id,
        .tenant = j->ev->tenant,
        .user = d->user,
        .device = d->dev.device,
        .platform = d->dev.platform ? d->dev.platform : "",
        .app = d->dev.app ? d->dev.app : "",
        .status = d->status,
        .attempt = d->attempt,
        .provider_id = d->res.provider_id,
        .http_status = d->res.http_status,
        .reason = d->res.reason,
        .latency_ms = now - j->entry.ms,
        .at_ms = now,
    };
    if (receipts_settle(pl->cmd, pl->cfg.prefix, pl->cfg.receipts_maxlen,
                        pl->cfg.status_ttl_s, &rc, on_settled, d) == 0) {
        j->refs++;
        return;
    }
    /* Redis is down: keep the outcome and write it when it is back. */
    d->retry_next = pl->settle_retry;
    pl->settle_retry = d;
}

static void flush_settle_retry(struct pipeline *pl)
{
    struct delivery *d = pl->settle_retry;
    pl->settle_retry = NULL;
    while (d) {
        struct delivery *next = d->retry_next;
        d->retry_next = NULL;
        settle_write(d);
        d = next;
    }
}

static void job_check_done(struct job *j)
{
    struct pipeline *pl = j->pl;
    if (j->refs > 0)
        return;
    if (pl->closed || j->stage == JOB_DONE) {
        job_release(j);
        return;
    }
    if (j->stage == JOB_SENDING && j->unsettled == 0)
        job_ack(j);
}

/* ---- intake ------------------------------------------------------------ */

static void job_start(struct pipeline *pl, struct stream_entry *e)
{
    if (job_find(pl, e->id)) {
        stream_entry_free(e);
        return; /* already being worked on here */
    }
    struct job *j = job_new(pl, e);
    pl->st.events++;
    if (j->entry.n_fields == 0) {
        /* Deleted from the stream while pending: nothing to deliver. */
        log_warn("pipeline", "entry %s was deleted while pending; acking", j->entry.id);
        job_ack(j);
        return;
    }
    const struct stream_field *f = stream_entry_field(&j->entry, "event");
    if (f == NULL) {
        job_dead_letter(j, "missing_field", "stream entry has no 'event' field");
        return;
    }
    char reason[256];
    int rc = event_parse(f->value, f->len, &j->ev, reason, sizeof reason);
    if (rc != 0) {
        job_dead_letter(j, event_error_code(rc), reason);
        return;
    }
    switch (j->ev->type) {
    case EVENT_DEVICE_REGISTER:
    case EVENT_DEVICE_UNREGISTER:
        if (registry_apply(pl->cmd, pl->cfg.prefix, j->ev, on_registry_applied, j) == 0)
            j->refs++;
        else
            job_release(j);
        return;
    case EVENT_RECEIPT_OPENED: {
        int64_t now = now_ms();
        struct receipt r = {
            .event = j->ev->event_ref, .tenant = j->ev->tenant, .user = j->ev->user,
            .device = j->ev->device, .platform = "", .app = "", .status = "opened",
            .attempt = 0, .provider_id = "", .http_status = 0, .reason = "",
            .latency_ms = now - j->entry.ms, .at_ms = now,
        };
        if (receipts_settle(pl->cmd, pl->cfg.prefix, pl->cfg.receipts_maxlen,
                            pl->cfg.status_ttl_s, &r, on_opened_written, j) == 0)
            j->refs++;
        else
            job_release(j);
        return;
    }
    default:
        job_expand(j);
        return;
    }
}

static void start_entries(struct pipeline *pl, const redisReply *arr, char *last_id,
                          size_t last_len, size_t *count)
{
    struct stream_entry *v;
    size_t n = stream_parse_entries(arr, &v);
    *count = n;
    if (n && last_id)
        snprintf(last_id, last_len, "%s", v[n - 1].id);
    for (size_t i = 0; i < n; i++)
        job_start(pl, &v[i]);
    free(v);
}

static void create_group(struct pipeline *pl);

static void on_read(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->reading = false;
    if (pl->closed)
        return;
    if (reply == NULL)
        return; /* connection lost; on_ready restarts reading */
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("pipeline", "XREADGROUP: %s", reply->str);
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            pl->group_ready = false;
            create_group(pl);
        }
        return;
    }
    if (pl->stopping)
        return; /* entries read now stay pending for the next start */
    size_t n = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        const redisReply *s = reply->element[0];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
            start_entries(pl, s->element[1], pl->history ? pl->history_id : NULL,
                          sizeof pl->history_id, &n);
    }
    if (pl->history && n == 0) {
        pl->history = false;
        log_info("pipeline", "own pending entries done; reading new entries");
    }
    maybe_read(pl);
}

static bool has_room(const struct pipeline *pl)
{
    return pl->inflight < pl->cfg.inflight_window &&
           pl->n_jobs < (size_t)pl->cfg.batch_size * 4;
}

static void maybe_read(struct pipeline *pl)
{
    if (pl->stopping || pl->closed || !pl->group_ready || pl->reading ||
        !redis_conn_ready(pl->rd) || !redis_conn_ready(pl->cmd) || !has_room(pl))
        return;
    int rc = pl->history
                 ? stream_read(pl->rd, pl->cfg.stream, pl->cfg.group, pl->cfg.consumer,
                               pl->cfg.batch_size, -1, pl->history_id, on_read, pl)
                 : stream_read(pl->rd, pl->cfg.stream, pl->cfg.group, pl->cfg.consumer,
                               pl->cfg.batch_size, pl->cfg.block_ms, ">", on_read, pl);
    if (rc == 0)
        pl->reading = true;
}

static void on_group(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->group_creating = false;
    if (pl->closed || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        log_error("pipeline", "cannot create group %s on %s: %s", pl->cfg.group,
                  pl->cfg.stream, reply->str);
        return;
    }
    if (!pl->group_ready)
        log_info("pipeline", "consumer group %s on %s ready (consumer %s)", pl->cfg.group,
                 pl->cfg.stream, pl->cfg.consumer);
    pl->group_ready = true;
    maybe_read(pl);
}

static void create_group(struct pipeline *pl)
{
    if (pl->group_creating || !redis_conn_ready(pl->cmd))
        return;
    if (stream_create_group(pl->cmd, pl->cfg.stream, pl->cfg.group, on_group, pl) == 0)
        pl->group_creating = true;
}

/* ---- take-over of idle entries, keeping ours fresh ---------------------- */

static void on_autoclaim(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->claiming = false;
    if (pl->closed || pl->stopping || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("pipeline", "XAUTOCLAIM: %s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2)
        return;
    if (reply->element[0]->type == REDIS_REPLY_STRING)
        snprintf(pl->claim_cursor, sizeof pl->claim_cursor, "%s", reply->element[0]->str);
    size_t n = 0;
    start_entries(pl, reply->element[1], NULL, 0, &n);
    if (n)
        log_info("pipeline", "took over %zu idle entries", n);
    /* Redis 7: ids of pending entries deleted from the stream. */
    if (reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_ARRAY) {
        const redisReply *del = reply->element[2];
        for (size_t i = 0; i < del->elements; i++)
            if (del->element[i]->type == REDIS_REPLY_STRING)
                stream_ack(pl->cmd, pl->cfg.stream, pl->cfg.group, del->element[i]->str,
                           NULL, NULL);
    }
}

static void on_claim_timer(uv_timer_t *t)
{
    struct pipeline *pl = t->data;
    if (pl->closed || pl->stopping || !pl->group_ready || !redis_conn_ready(pl->cmd))
        return;
    /* Keep the entries we work on fresh so no other process takes them. */
    if (pl->n_jobs > 0) {
        const char **ids = xmalloc(pl->n_jobs * sizeof *ids);
        size_t n = 0;
        for (struct job *j = pl->jobs; j; j = j->next)
            ids[n++] = j->entry.id;
        stream_touch(pl->cmd, pl->cfg.stream, pl->cfg.group, pl->cfg.consumer, ids, n,
                     NULL, NULL);
        free(ids);
    }
    if (!pl->claiming && has_room(pl)) {
        if (stream_autoclaim(pl->cmd, pl->cfg.stream, pl->cfg.group, pl->cfg.consumer,
                             pl->cfg.claim_idle_ms, pl->claim_cursor, pl->cfg.batch_size,
                             on_autoclaim, pl) == 0)
            pl->claiming = true;
    }
}

/* ---- connections ------------------------------------------------------- */

static void on_cmd_ready(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    create_group(pl);
    flush_settle_retry(pl);
    maybe_read(pl);
}

static void on_rd_ready(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    /* After any reconnect, first re-read this consumer's own pending
     * entries: some may have been released unacknowledged meanwhile. */
    pl->history = true;
    snprintf(pl->history_id, sizeof pl->history_id, "0");
    maybe_read(pl);
}

static void on_conn_down(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    if (c == pl->cmd)
        pl->group_creating = false;
    if (c == pl->rd)
        pl->reading = false;
}

struct pipeline *pipeline_new(uv_loop_t *loop, const struct pipeline_config *cfg)
{
    struct pipeline *pl = xcalloc(1, sizeof *pl);
    pl->loop = loop;
    pl->cfg = *cfg;
    size_t n = strlen(cfg->prefix) + 8;
    pl->dead_stream = xmalloc(n);
    snprintf(pl->dead_stream, n, "%sdead", cfg->prefix);
    snprintf(pl->claim_cursor, sizeof pl->claim_cursor, "0-0");
    snprintf(pl->history_id, sizeof pl->history_id, "0");
    pl->history = true;
    struct redis_conn_config rc = cfg->redis;
    rc.name = "cmd";
    pl->cmd = redis_conn_new(loop, &rc, on_cmd_ready, on_conn_down, pl);
    registry_init(pl->cmd);
    receipts_init(pl->cmd);
    rc.name = "read";
    pl->rd = redis_conn_new(loop, &rc, on_rd_ready, on_conn_down, pl);
    uv_timer_init(loop, &pl->claim_timer);
    pl->claim_timer.data = pl;
    uint64_t every = (uint64_t)(cfg->claim_idle_ms / 3);
    if (every < 100)
        every = 100;
    uv_timer_start(&pl->claim_timer, on_claim_timer, every, every);
    uv_timer_init(loop, &pl->stop_timer);
    pl->stop_timer.data = pl;
    pl->timers_open = 2;
    return pl;
}

void pipeline_set_templates(struct pipeline *pl, const struct templates *t)
{
    pl->cfg.templates = t;
}

static void finish_stop(struct pipeline *pl)
{
    uv_timer_stop(&pl->stop_timer);
    pl->closed = true;
    size_t unsettled = 0;
    for (struct delivery *d = pl->settle_retry; d; d = d->retry_next)
        unsettled++;
    if (pl->inflight || unsettled || pl->n_jobs)
        log_warn("pipeline", "stopping with %zu deliveries in flight, %zu receipts "
                 "unwritten, %zu entries unacknowledged (they stay pending)",
                 pl->inflight, unsettled, pl->n_jobs);
    pl->settle_retry = NULL;
    redis_conn_close(pl->rd);
    redis_conn_close(pl->cmd);
    pl->rd = pl->cmd = NULL;
    if (pl->stop_done)
        pl->stop_done(pl->stop_arg);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct pipeline *pl = t->data;
    pl->stop_waited_ms += 50;
    bool drained = pl->inflight == 0 && pl->settle_retry == NULL;
    for (struct job *j = pl->jobs; j && drained; j = j->next)
        if (j->refs > 0)
            drained = false;
    if (drained || pl->stop_waited_ms >= pl->stop_timeout_ms)
        finish_stop(pl);
}

void pipeline_stop(struct pipeline *pl, uint32_t timeout_ms, void (*done)(void *arg),
                   void *arg)
{
    if (pl->stopping)
        return;
    pl->stopping = true;
    pl->stop_done = done;
    pl->stop_arg = arg;
    pl->stop_timeout_ms = timeout_ms;
    uv_timer_stop(&pl->claim_timer);
    log_info("pipeline", "stopping: %zu deliveries in flight", pl->inflight);
    uv_timer_start(&pl->stop_timer, on_stop_timer, 0, 50);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct pipeline *pl = h->data;
    if (--pl->timers_open == 0) {
        free(pl->dead_stream);
        free(pl);
    }
}

void pipeline_free(struct pipeline *pl)
{
    while (pl->jobs)
        job_free(pl->jobs);
    if (pl->rd)
        redis_conn_close(pl->rd);
    if (pl->cmd)
        redis_conn_close(pl->cmd);
    uv_close((uv_handle_t *)&pl->claim_timer, on_timer_closed);
    uv_close((uv_handle_t *)&pl->stop_timer, on_timer_closed);
}

void pipeline_get_stats(const struct pipeline *pl, struct pipeline_stats *out)
{
    *out = pl->st;
    out->inflight = pl->inflight;
    out->jobs = pl->n_jobs;
}
