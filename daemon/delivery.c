/*
 * Deliveries: build -> send -> decide -> settle, and the retry poller.
 *
 *   delivery_new      copies who/where (tenant, event, user, device, token),
 *                     renders the localized text and builds the provider
 *                     request body once; a retry resends exactly that body.
 *   delivery_start    hands it to the app's APNs or FCM client.
 *   on_push_done      decides: sent / invalid_token / failed (permanent) /
 *                     retry at T (transient, attempts and deadline left) /
 *                     give up (expired or failed, plus a dead letter).
 *   settle_write      one Lua script writes receipt, status and the retry
 *                     schedule together (queue/receipts.h batches the
 *                     settlements of one loop turn into one call). When
 *                     Redis is down the settlement waits in ctx->redo and
 *                     is written when it is back; the job is not
 *                     acknowledged before that.
 *   poller            every 200 ms claims due retries into a lease (Lua),
 *                     while the in-flight window has room, and renews the
 *                     leases of retries still in flight. A lease that runs
 *                     out (the process died) puts the retry back.
 *
 * Strings of a delivery live in one allocation after the struct.
 */
#include "daemon/delivery.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns/client.h"
#include "apns/payload.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/devlimit.h"
#include "daemon/pipeline.h"
#include "daemon/stats.h"
#include "daemon/templates.h"
#include "fcm/client.h"
#include "fcm/message.h"
#include "http2/client.h"
#include "queue/registry.h"

#define BODY_MAX 4096
#define POLL_MS 200
#define CLAIM_MAX 200

enum provider { PROV_NONE = 0, PROV_APNS, PROV_FCM };

struct delivery {
    struct delivery_ctx *ctx;
    void *owner;                  /* job, or NULL for a claimed retry */
    const struct pipeline_app *app;
    enum provider prov;
    const char *tenant, *event_id, *event_type, *user, *device, *platform, *app_name,
        *token, *environment;     /* in the same allocation, after the struct */
    int64_t publish_ms, deadline_ms;
    int attempt;
    char retry_id[37];            /* also the apns-id */
    bool is_retry;                /* holds a lease in the schedule */
    char *token_owned;            /* a newer token from the registry (retries) */
    char *body;                   /* provider request body */
    size_t body_len;
    char collapse_id[65];
    int priority;
    int64_t expiration;
    int64_t hold_until_ms;        /* quiet hours: held until then */
    bool muted;                   /* the guardian muted the type */
    const char *build_error;      /* set when it cannot be sent */
    /* outcome */
    const char *status;
    struct push_result res;
    enum settle_mode mode;
    int64_t due_ms;
    char dead_reason[256];
    bool settled;
    bool done;
    struct delivery *next;        /* ctx->redo */
    struct delivery *rprev, *rnext; /* ctx->retries */
};

static void settle_write(struct delivery *d);

/* ---- policy ------------------------------------------------------------ */

int64_t delivery_backoff_ms(int64_t base_ms, int64_t cap_ms, int attempt,
                            int retry_after_s, double rnd)
{
    int64_t ceiling = base_ms;
    for (int i = 1; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    int64_t d = (int64_t)(rnd * (double)ceiling);
    if (retry_after_s > 0 && d < (int64_t)retry_after_s * 1000)
        d = (int64_t)retry_after_s * 1000;
    return d;
}

int64_t delivery_default_ttl_s(enum event_type t)
{
    switch (t) {
    case EVENT_ABSENCE_ALERT: return 8 * 3600;
    case EVENT_ABSENCE_REPORTED: return 24 * 3600;
    case EVENT_TIMETABLE_CHANGED: return 24 * 3600;
    default: return 7 * 24 * 3600;
    }
}

static double rnd01(void)
{
    return (double)(rand() & 0x7fffffff) / 2147483648.0;
}

/* ---- construction ------------------------------------------------------ */

static const struct pipeline_app *find_app(const struct delivery_ctx *ctx, const char *name)
{
    for (size_t i = 0; name && i < ctx->n_apps; i++)
        if (strcmp(ctx->apps[i].name, name) == 0)
            return &ctx->apps[i];
    return NULL;
}

/* Copy |n| strings into one buffer; dst[i] point into it. */
/* The delivery and its nine strings in one allocation, freed with d. */
static struct delivery *alloc_delivery(struct delivery_ctx *ctx, void *owner,
                                       const char *const ids[9])
{
    size_t len[9], total = 0;
    for (size_t i = 0; i < 9; i++) {
        len[i] = ids[i] ? strlen(ids[i]) : 0;
        total += len[i] + 1;
    }
    struct delivery *d = xmalloc(sizeof *d + total);
    memset(d, 0, sizeof *d);
    d->ctx = ctx;
    d->owner = owner;
    const char **dst[9] = { &d->tenant, &d->event_id, &d->event_type, &d->user,
                            &d->device, &d->platform, &d->app_name, &d->token,
                            &d->environment };
    char *p = (char *)(d + 1);
    for (size_t i = 0; i < 9; i++) {
        if (len[i])
            memcpy(p, ids[i], len[i]);
        p[len[i]] = '\0';
        *dst[i] = p;
        p += len[i] + 1;
    }
    d->app = find_app(ctx, d->app_name);
    if (strcmp(d->platform, "ios") == 0)
        d->prov = d->app && d->app->apns ? PROV_APNS : PROV_NONE;
    else if (strcmp(d->platform, "android") == 0)
        d->prov = d->app && d->app->fcm ? PROV_FCM : PROV_NONE;
    ctx->active++;
    return d;
}

/* Append |s| to out[*n], truncating at outlen - 1 bytes. */
static void put_trunc(char *out, size_t outlen, size_t *n, const char *s)
{
    size_t k = strlen(s);
    if (k > outlen - 1 - *n)
        k = outlen - 1 - *n;
    memcpy(out + *n, s, k);
    *n += k;
    out[*n] = '\0';
}

static void thread_of(const struct event *ev, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    const char *student = ev->thread ? NULL : event_field(ev, "student");
    if (ev->thread) {
        put_trunc(out, outlen, &n, ev->thread);
    } else if (student) {
        put_trunc(out, outlen, &n, "student-");
        put_trunc(out, outlen, &n, student);
    } else {
        put_trunc(out, outlen, &n, event_type_name(ev->type));
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
static void collapse_id(const char *event_id, char out[65])
{
    size_t n = strlen(event_id);
    if (n <= 64)
        memcpy(out, event_id, n + 1);
    else
        sha256_hex(event_id, n, out);
}

static void build_body(struct delivery *d, const struct event *ev, int badge,
                       const char *title, const char *body)
{
    const char *thread = d->ctx->thread; /* set by delivery_new */
    char buf[BODY_MAX + 1024];
    size_t len = 0;
    if (d->prov == PROV_APNS) {
        struct apns_notification n = {
            .title = title, .body = body, .badge = badge,
            .thread_id = thread,
            .interruption_level = ev->type == EVENT_ABSENCE_ALERT ? "time-sensitive" : NULL,
            .sound = "default", .event_id = ev->id, .event_type = d->event_type,
            .tenant = ev->tenant,
        };
        if (apns_payload_build(&n, BODY_MAX, buf, sizeof buf, &len) != 0) {
            d->build_error = "payload does not fit 4096 bytes";
            return;
        }
    } else {
        int64_t left = (d->deadline_ms - now_ms()) / 1000;
        bool high = ev->priority == EVENT_PRIORITY_HIGH ||
                    (ev->priority == EVENT_PRIORITY_DEFAULT &&
                     (ev->type == EVENT_ABSENCE_ALERT || ev->type == EVENT_MESSAGE_NEW));
        struct fcm_notification n = {
            .token = d->token, .title = title, .body = body, .event_id = ev->id,
            .event_type = d->event_type, .tenant = ev->tenant, .thread = thread,
            .high_priority = high, .ttl_s = left > 0 ? left : 0,
            /* A newer message in the thread (or a replay) replaces the one
             * shown; for every other type a replay replaces, not stacks. */
            .collapse_key = ev->type == EVENT_MESSAGE_NEW && ev->thread ? ev->thread : ev->id,
            .channel_id = fcm_message_channel(d->event_type),
            .badge = badge,
        };
        if (fcm_message_build(&n, BODY_MAX, buf, sizeof buf, &len) != 0) {
            d->build_error = "message does not fit 4096 bytes";
            return;
        }
    }
    d->body = xstrndup(buf, len);
    d->body_len = len;
}

struct delivery *delivery_new(struct delivery_ctx *ctx, void *owner, const struct event *ev,
                              int64_t publish_ms, const char *user, int badge,
                              const struct registry_device *dev,
                              const struct delivery_opts *o)
{
    static const struct delivery_opts defaults = { 0 };
    if (o == NULL)
        o = &defaults;
    const char *ids[9] = { ev->tenant, ev->id, event_type_name(ev->type), user,
                           dev->device, dev->platform, dev->app, dev->token,
                           dev->environment ? dev->environment : "production" };
    struct delivery *d = alloc_delivery(ctx, owner, ids);
    d->attempt = 1;
    d->publish_ms = publish_ms;
    int64_t ttl = ev->ttl_s >= 0 ? ev->ttl_s : delivery_default_ttl_s(ev->type);
    d->deadline_ms = ev->ttl_s < 0 && o->deadline_ms > 0 ? o->deadline_ms
                                                         : publish_ms + ttl * 1000;
    d->expiration = d->deadline_ms / 1000;
    d->hold_until_ms = o->hold_until_ms;
    d->muted = o->muted;
    d->priority = apns_priority(ev);
    /* Once per event: every delivery of it has the same thread and
     * collapse id. */
    if (ctx->thread_ev != ev) {
        thread_of(ev, ctx->thread, sizeof ctx->thread);
        collapse_id(ev->id, ctx->collapse);
        ctx->thread_ev = ev;
    }
    memcpy(d->collapse_id, ctx->collapse, sizeof d->collapse_id);
    const char *id_parts[4] = { ev->tenant, ev->id, user, dev->device };
    uuid_from_parts(id_parts, 4, '|', d->retry_id);
    if (d->app == NULL) {
        d->build_error = "unknown app";
        return d;
    }
    if (d->prov == PROV_NONE) {
        d->build_error = "app has no credentials for this platform";
        return d;
    }
    if (d->muted)
        return d; /* never sent: nothing to render */
    const char *title = NULL, *text = NULL;
    const char *locale = templates_resolve_locale(dev->locale, o->default_locale);
    if (templates_render_cached(ctx->render_cache, ctx->templates, ev, locale,
                                o->preview && ev->type == EVENT_MESSAGE_NEW, &title,
                                &text) != 0) {
        d->build_error = "template rendering failed";
        return d;
    }
    build_body(d, ev, badge, title, text);
    return d;
}

void delivery_forget_event(struct delivery_ctx *ctx, const struct event *ev)
{
    templates_cache_forget(ctx->render_cache, ev);
    if (ctx->thread_ev == ev)
        ctx->thread_ev = NULL;
}

void *delivery_owner(const struct delivery *d) { return d->owner; }
bool delivery_settled(const struct delivery *d) { return d->settled; }
const char *delivery_status(const struct delivery *d) { return d->status; }

void delivery_free(struct delivery *d)
{
    if (d == NULL)
        return;
    free(d->token_owned);
    free(d->body);
    free(d);
}

/* ---- retries in flight (claimed from the schedule) ---------------------- */

static void retry_list_add(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    d->rnext = ctx->retries;
    if (ctx->retries)
        ctx->retries->rprev = d;
    ctx->retries = d;
    ctx->n_retries++;
}

static void retry_list_del(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    if (d->rprev)
        d->rprev->rnext = d->rnext;
    else if (ctx->retries == d)
        ctx->retries = d->rnext;
    if (d->rnext)
        d->rnext->rprev = d->rprev;
    d->rprev = d->rnext = NULL;
    ctx->n_retries--;
}

/* The delivery's business is over: tell the owner or free it. */
static void finish(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    d->done = true;
    ctx->active--;
    if (d->owner) {
        ctx->on_done(d, ctx->arg);
        return;
    }
    retry_list_del(d);
    delivery_free(d);
    if (ctx->on_room && !ctx->closed)
        ctx->on_room(ctx->arg);
}

/* ---- sending and deciding ------------------------------------------------ */

static void settle_as(struct delivery *d, const char *status, enum settle_mode mode)
{
    d->status = status;
    d->mode = mode;
    settle_write(d);
}

static void on_push_done(const struct push_result *r, void *user);

/*
 * Over the device's limit (devlimit.h): not sent now but scheduled, durably,
 * for when the limit allows it. Pacing is not an attempt: the resend keeps
 * this attempt's number.
 */
static void pace(struct delivery *d, int64_t at_ms)
{
    memset(&d->res, 0, sizeof d->res);
    d->res.token_timestamp_ms = -1;
    snprintf(d->res.reason, sizeof d->res.reason, "paced: per-device limit of the provider");
    if (at_ms >= d->deadline_ms) {
        snprintf(d->dead_reason, sizeof d->dead_reason,
                 "expired: the device's rate limit allows the next send only after the "
                 "deadline");
        settle_as(d, "expired", SETTLE_GIVE_UP);
        return;
    }
    const char *v[] = { "paced" };
    stats_add(STATS_RETRIES, v, 1);
    d->attempt--;
    d->due_ms = at_ms + (int64_t)(rnd01() * 1000.0);
    settle_as(d, "retrying", SETTLE_RETRY);
}

void delivery_start(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    if (d->muted) {
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "muted by the guardian");
        settle_as(d, "muted", SETTLE_FINAL);
        return;
    }
    if (!d->build_error && d->hold_until_ms > now_ms()) {
        /* Quiet hours: kept in the durable schedule like a retry, sent when
         * they end (attempt 0, so the send is attempt 1). */
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "quiet hours");
        d->attempt = 0;
        d->due_ms = d->hold_until_ms;
        settle_as(d, "held", SETTLE_RETRY);
        return;
    }
    if (!d->build_error && now_ms() >= d->deadline_ms) {
        /* Read (or retried) after its useful life: sending it now would
         * tell a guardian something stale. */
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "deadline passed before sending");
        snprintf(d->dead_reason, sizeof d->dead_reason,
                 "expired before attempt %d could be sent", d->attempt);
        settle_as(d, "expired", SETTLE_GIVE_UP);
        return;
    }
    if (d->build_error) {
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "%s", d->build_error);
        settle_as(d, "failed", SETTLE_FINAL);
        return;
    }
    /* Circuit breaker: while a provider is unreachable, one probe request
     * waits in its pool and the rest become durable retries at once, so a
     * dead provider never fills the in-flight window of the others. */
    const struct h2_pool *pool = d->prov == PROV_APNS
        ? apns_client_pool(d->app->apns, strcmp(d->environment, "sandbox") == 0)
        : fcm_client_pool(d->app->fcm);
    const char *why = NULL;
    if (h2_pool_unreachable(pool, &why) && h2_pool_queued(pool) + h2_pool_inflight(pool) > 0) {
        struct push_result r;
        memset(&r, 0, sizeof r);
        r.outcome = PUSH_TRANSIENT;
        r.token_timestamp_ms = -1;
        r.retry_after_s = -1;
        snprintf(r.reason, sizeof r.reason, "provider unreachable: %s", why);
        ctx->inflight++;
        on_push_done(&r, d);
        return;
    }
    if (d->prov == PROV_FCM && ctx->fcm_limit) {
        int64_t at = devlimit_take(ctx->fcm_limit, d->token, true, now_ms());
        if (at > 0) {
            pace(d, at);
            return;
        }
    }
    char tk[24];
    log_debug("deliver", "%s/%s -> %s/%s %s attempt %d token %s", d->tenant, d->event_id,
              d->user, d->device, d->platform, d->attempt, log_token(d->token, tk, sizeof tk));
    int rc;
    if (d->prov == PROV_APNS) {
        struct apns_request req = {
            .token = d->token,
            .sandbox = strcmp(d->environment, "sandbox") == 0,
            .apns_id = d->retry_id,
            .collapse_id = d->collapse_id,
            .priority = d->priority,
            .expiration = d->expiration,
            .push_type = "alert",
            .payload = d->body,
            .payload_len = d->body_len,
        };
        rc = apns_client_send(d->app->apns, &req, on_push_done, d);
    } else {
        rc = fcm_client_send(d->app->fcm, d->body, d->body_len, on_push_done, d);
    }
    if (rc != 0) {
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "provider client closing");
        /* Not settled: a job's entry stays pending, a retry's lease expires. */
        finish(d);
        return;
    }
    ctx->inflight++;
}

static void decide(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    const struct push_result *r = &d->res;
    switch (r->outcome) {
    case PUSH_SENT:
        settle_as(d, "sent", SETTLE_FINAL);
        return;
    case PUSH_INVALID_TOKEN:
        if (registry_remove_token(ctx->cmd, ctx->keys.prefix, d->tenant, d->user, d->device,
                                  d->app_name, d->token, r->token_timestamp_ms,
                                  NULL, NULL) != 0)
            log_warn("registry", "could not remove a dead token now (Redis down)");
        settle_as(d, "invalid_token", SETTLE_FINAL);
        return;
    case PUSH_PERMANENT:
        settle_as(d, "failed", SETTLE_FINAL);
        return;
    case PUSH_TRANSIENT:
        break;
    }
    int64_t now = now_ms();
    int max_attempts = d->app ? d->app->retry_max_attempts : 1;
    if (now >= d->deadline_ms) {
        snprintf(d->dead_reason, sizeof d->dead_reason,
                 "expired after %d attempt%s; last error: %d %s", d->attempt,
                 d->attempt == 1 ? "" : "s", r->http_status, r->reason);
        settle_as(d, "expired", SETTLE_GIVE_UP);
        return;
    }
    if (d->attempt >= max_attempts) {
        snprintf(d->dead_reason, sizeof d->dead_reason,
                 "gave up after %d attempts; last error: %d %s", d->attempt,
                 r->http_status, r->reason);
        settle_as(d, "failed", SETTLE_GIVE_UP);
        return;
    }
    int64_t wait = delivery_backoff_ms(ctx->retry_base_ms, ctx->retry_cap_ms, d->attempt,
                                       r->retry_after_s, rnd01());
    d->due_ms = now + wait;
    if (d->due_ms >= d->deadline_ms) {
        snprintf(d->dead_reason, sizeof d->dead_reason,
                 "expired: next retry would come after the deadline; last error: %d %s",
                 r->http_status, r->reason);
        settle_as(d, "expired", SETTLE_GIVE_UP);
        return;
    }
    settle_as(d, "retrying", SETTLE_RETRY);
}

static void on_push_done(const struct push_result *r, void *user)
{
    struct delivery *d = user;
    struct delivery_ctx *ctx = d->ctx;
    ctx->inflight--;
    d->res = *r;
    if (ctx->closed) {
        finish(d);
        return;
    }
    const char *prov = d->prov == PROV_APNS ? "apns" : "fcm";
    const char *pv[] = { prov };
    /* Transport errors carry addresses and errno text: one label for all. */
    stats_provider_answer(prov, d->app_name, r->http_status,
                          r->outcome == PUSH_SENT ? "" : r->http_status == 0 ? "transport"
                                                                             : r->reason);
    if (r->http_status != 0)
        stats_observe(STATS_PROVIDER_RTT, pv, (double)r->rtt_ms / 1000.0);
    if (r->outcome == PUSH_SENT)
        stats_observe(STATS_PUBLISH_TO_ACCEPT, pv, (double)(now_ms() - d->publish_ms) / 1000.0);
    if (r->outcome != PUSH_SENT) {
        char tk[24], at[16], st[16];
        snprintf(at, sizeof at, "%d", d->attempt);
        snprintf(st, sizeof st, "%d", r->http_status);
        log_info_kv("deliver",
                    LOG_KV("app", d->app_name, "tenant", d->tenant, "event", d->event_id,
                           "user", d->user, "device", d->device, "provider", prov,
                           "attempt", at, "http_status", st, "reason", r->reason),
                    "%s/%s %s/%s token %s attempt %d: %s (%d %s)", d->tenant, d->event_id,
                    d->user, d->device, log_token(d->token, tk, sizeof tk), d->attempt,
                    push_outcome_name(r->outcome), r->http_status, r->reason);
    }
    decide(d);
}

/* ---- settlement ---------------------------------------------------------- */

static char *retry_data(const struct delivery *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->retry_id);
    cJSON_AddStringToObject(o, "tenant", d->tenant);
    cJSON_AddStringToObject(o, "event", d->event_id);
    cJSON_AddStringToObject(o, "type", d->event_type);
    cJSON_AddStringToObject(o, "user", d->user);
    cJSON_AddStringToObject(o, "device", d->device);
    cJSON_AddStringToObject(o, "platform", d->platform);
    cJSON_AddStringToObject(o, "app", d->app_name);
    cJSON_AddStringToObject(o, "token", d->token);
    cJSON_AddStringToObject(o, "environment", d->environment);
    cJSON_AddNumberToObject(o, "attempt", d->attempt);
    cJSON_AddNumberToObject(o, "published", (double)d->publish_ms);
    cJSON_AddNumberToObject(o, "deadline", (double)d->deadline_ms);
    cJSON_AddStringToObject(o, "collapse_id", d->collapse_id);
    cJSON_AddNumberToObject(o, "priority", d->priority);
    cJSON_AddNumberToObject(o, "expiration", (double)d->expiration);
    cJSON_AddStringToObject(o, "last_error", d->res.reason);
    cJSON_AddStringToObject(o, "body", d->body ? d->body : "");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void on_settled(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct delivery *d = priv;
    struct delivery_ctx *ctx = d->ctx;
    redisReply *reply = reply_;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (ctx->closed) {
            finish(d);
            return;
        }
        log_warn("deliver", "writing the outcome of %s/%s %s/%s failed (%s); will retry",
                 d->tenant, d->event_id, d->user, d->device,
                 reply ? reply->str : "connection lost");
        d->next = ctx->redo;
        ctx->redo = d;
        return;
    }
    d->settled = true;
    stats_delivery(d->app_name, d->platform, d->tenant, d->status);
    if (d->mode == SETTLE_RETRY) {
        const char *v[] = { strcmp(d->status, "held") == 0 ? "held" : "scheduled" };
        stats_add(STATS_RETRIES, v, 1);
    }
    if (d->mode == SETTLE_GIVE_UP) {
        const char *v[] = { "gave_up" };
        stats_add(STATS_RETRIES, v, 1);
        const char *c[] = { strcmp(d->status, "expired") == 0 ? "delivery_expired"
                                                               : "delivery_failed" };
        stats_add(STATS_DEAD_LETTERS, c, 1);
        log_warn_kv("deliver",
                    LOG_KV("app", d->app_name, "tenant", d->tenant, "event", d->event_id,
                           "user", d->user, "device", d->device, "status", d->status),
                    "%s/%s %s/%s: %s", d->tenant, d->event_id, d->user, d->device,
                    d->dead_reason);
    }
    finish(d);
}

static void settle_write(struct delivery *d)
{
    struct delivery_ctx *ctx = d->ctx;
    int64_t now = now_ms();
    struct receipt rc = {
        .event = d->event_id, .tenant = d->tenant, .user = d->user, .device = d->device,
        .platform = d->platform, .app = d->app_name, .status = d->status,
        .attempt = d->attempt, .provider_id = d->res.provider_id,
        .http_status = d->res.http_status, .reason = d->res.reason,
        .latency_ms = now - d->publish_ms, .at_ms = now,
    };
    /* A given-up delivery's dead letter carries the request too, so that
     * `varselctl dead replay` can re-queue exactly that delivery. */
    char *data = d->mode == SETTLE_RETRY || (d->mode == SETTLE_GIVE_UP && d->body)
                     ? retry_data(d) : NULL;
    struct settle_opts opts = {
        .mode = d->mode,
        /* A first attempt has no schedule entry unless it is being created. */
        .retry_id = d->is_retry || d->mode == SETTLE_RETRY ? d->retry_id : NULL,
        .due_ms = d->due_ms,
        .retry_data = data,
        .dead_reason = d->dead_reason,
    };
    int rc2 = receipts_batch_add(ctx->settle_batch, &rc, &opts, on_settled, d);
    if (data)
        cJSON_free(data);
    if (rc2 != 0) {
        /* Redis is down: keep the outcome and write it when it is back. */
        if (ctx->redo == NULL)
            log_warn("deliver", "Redis is unavailable: keeping outcomes in memory until "
                     "it is back (their events stay unacknowledged)");
        d->next = ctx->redo;
        ctx->redo = d;
    }
}

void delivery_ctx_flush(struct delivery_ctx *ctx)
{
    if (ctx->redo)
        log_info("deliver", "writing %zu outcomes kept while Redis was unavailable",
                 delivery_ctx_unwritten(ctx));
    struct delivery *d = ctx->redo;
    ctx->redo = NULL;
    while (d) {
        struct delivery *next = d->next;
        d->next = NULL;
        settle_write(d);
        d = next;
    }
}

void delivery_ctx_abandon(struct delivery_ctx *ctx)
{
    ctx->closed = true;
    receipts_batch_flush(ctx->settle_batch);
    struct delivery *d = ctx->redo;
    ctx->redo = NULL;
    while (d) {
        struct delivery *next = d->next;
        d->next = NULL;
        finish(d);
        d = next;
    }
}

size_t delivery_ctx_unwritten(const struct delivery_ctx *ctx)
{
    size_t n = 0;
    for (const struct delivery *d = ctx->redo; d; d = d->next)
        n++;
    return n;
}

/* ---- the retry poller ---------------------------------------------------- */

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

static struct delivery *from_retry_data(struct delivery_ctx *ctx, const char *id,
                                        const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return NULL;
    }
    const char *ids[9] = { jstr(o, "tenant"), jstr(o, "event"), jstr(o, "type"),
                           jstr(o, "user"), jstr(o, "device"), jstr(o, "platform"),
                           jstr(o, "app"), jstr(o, "token"), jstr(o, "environment") };
    const char *body = jstr(o, "body");
    for (int i = 0; i < 9; i++) {
        if (ids[i] == NULL) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    struct delivery *d = alloc_delivery(ctx, NULL, ids);
    d->is_retry = true;
    snprintf(d->retry_id, sizeof d->retry_id, "%s", id);
    d->attempt = (int)jnum(o, "attempt") + 1;
    d->publish_ms = jnum(o, "published");
    d->deadline_ms = jnum(o, "deadline");
    d->priority = (int)jnum(o, "priority");
    d->expiration = jnum(o, "expiration");
    snprintf(d->collapse_id, sizeof d->collapse_id, "%s",
             jstr(o, "collapse_id") ? jstr(o, "collapse_id") : "");
    snprintf(d->res.reason, sizeof d->res.reason, "%s",
             jstr(o, "last_error") ? jstr(o, "last_error") : "");
    if (body && body[0]) {
        d->body = xstrdup(body);
        d->body_len = strlen(body);
    } else {
        d->build_error = "retry without a request body";
    }
    if (d->app == NULL)
        d->build_error = "unknown app";
    else if (d->prov == PROV_NONE)
        d->build_error = "app has no credentials for this platform";
    cJSON_Delete(o);
    return d;
}

/* Replace the first "token":"OLD" in an FCM body with the new token. */
/* Replace the first "token":"OLD" in an FCM body with the new token.
 * false when the body holds no such text (it is then left alone). FCM
 * tokens are checked at registration to need no JSON escaping. */
static bool fcm_body_swap_token(struct delivery *d, const char *old, const char *neu)
{
    char pat[4200];
    snprintf(pat, sizeof pat, "\"token\":\"%s\"", old);
    char *at = strstr(d->body, pat);
    if (at == NULL)
        return false;
    size_t pre = (size_t)(at - d->body), plen = strlen(pat), nlen = strlen(neu);
    size_t len = d->body_len - plen + nlen + sizeof "\"token\":\"\"";
    char *b = xmalloc(len + 1);
    int n = snprintf(b, len + 1, "%.*s\"token\":\"%s\"%s", (int)pre, d->body, neu,
                     at + plen);
    free(d->body);
    d->body = b;
    d->body_len = (size_t)n;
    return true;
}

static void on_retry_device(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct delivery *d = priv;
    struct delivery_ctx *ctx = d->ctx;
    redisReply *reply = reply_;
    if (ctx->closed || reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        finish(d); /* not settled: the lease runs out and it comes back */
        return;
    }
    struct registry_device cur;
    if (reply->type != REDIS_REPLY_STRING ||
        registry_device_parse(d->device, reply->str, reply->len, &cur) != 0) {
        memset(&d->res, 0, sizeof d->res);
        d->res.token_timestamp_ms = -1;
        snprintf(d->res.reason, sizeof d->res.reason, "device no longer registered");
        settle_as(d, "failed", SETTLE_FINAL);
        return;
    }
    if (strcmp(cur.token, d->token) != 0 && strcmp(cur.app, d->app_name) == 0 &&
        strcmp(cur.platform, d->platform) == 0) {
        /* FCM carries the token in the body: switch only when the body
         * did, so the receipt names the token the request went to. */
        if (d->prov != PROV_FCM || (d->body && fcm_body_swap_token(d, d->token, cur.token))) {
            free(d->token_owned);
            d->token_owned = xstrdup(cur.token);
            d->token = d->token_owned;
        }
    }
    registry_device_clear(&cur);
    delivery_start(d);
}

static void on_claimed(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct delivery_ctx *ctx = priv;
    redisReply *reply = reply_;
    ctx->claiming = false;
    if (ctx->closed || reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY) {
        if (reply->type == REDIS_REPLY_ERROR)
            log_warn("retry", "claiming retries failed: %s", reply->str);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *id = reply->element[i], *data = reply->element[i + 1];
        if (id->type != REDIS_REPLY_STRING || data->type != REDIS_REPLY_STRING)
            continue;
        struct delivery *d = from_retry_data(ctx, id->str, data->str, data->len);
        if (d == NULL) {
            log_error("retry", "unreadable retry entry %s; dropping it", id->str);
            continue;
        }
        const char *v[] = { "claimed" };
        stats_add(STATS_RETRIES, v, 1);
        retry_list_add(d);
        log_debug("retry", "%s/%s %s/%s: attempt %d", d->tenant, d->event_id, d->user,
                  d->device, d->attempt);
        /* The device may have logged out or got a new token meanwhile. */
        if (registry_get_device(ctx->cmd, ctx->keys.prefix, d->tenant, d->user, d->device,
                                on_retry_device, d) != 0)
            finish(d); /* Redis gone: the lease runs out and it comes back */
    }
}

static void on_poll(uv_timer_t *t)
{
    struct delivery_ctx *ctx = t->data;
    if (ctx->closed || !redis_conn_ready(ctx->cmd))
        return;
    uint64_t now = mono_ms();
    if (ctx->n_retries > 0 && now - ctx->last_renew_ms >= (uint64_t)ctx->lease_ms / 3) {
        const char **ids = xmalloc(ctx->n_retries * sizeof *ids);
        size_t n = 0;
        for (struct delivery *d = ctx->retries; d; d = d->rnext)
            ids[n++] = d->retry_id;
        receipts_renew_leases(ctx->cmd, ctx->keys.prefix, now_ms() + ctx->lease_ms, ids, n);
        free(ids);
        ctx->last_renew_ms = now;
    }
    size_t busy = ctx->active + ctx->expanding;
    if (ctx->stopping || ctx->claiming || busy >= ctx->window)
        return;
    size_t room = ctx->window - busy;
    int count = room > CLAIM_MAX ? CLAIM_MAX : (int)room;
    if (receipts_claim_retries(ctx->cmd, ctx->keys.prefix, now_ms(), ctx->lease_ms, count,
                               on_claimed, ctx) == 0)
        ctx->claiming = true;
}

void delivery_ctx_init(struct delivery_ctx *ctx, uv_loop_t *loop)
{
    ctx->loop = loop;
    uv_timer_init(loop, &ctx->timer);
    ctx->timer.data = ctx;
    ctx->last_renew_ms = mono_ms();
    ctx->fcm_limit = devlimit_new(&devlimit_fcm);
    uv_timer_start(&ctx->timer, on_poll, POLL_MS, POLL_MS);
    ctx->settle_batch = receipts_batch_new(loop, ctx->cmd, &ctx->keys);
    ctx->render_cache = templates_cache_new();
}

struct close_req {
    void (*done)(void *);
    void *arg;
};

static void on_timer_closed(uv_handle_t *h)
{
    struct close_req *c = h->data;
    void (*done)(void *) = c->done;
    void *arg = c->arg;
    free(c);
    if (done)
        done(arg);
}

void delivery_ctx_close(struct delivery_ctx *ctx, void (*done)(void *arg), void *arg)
{
    struct close_req *c = xmalloc(sizeof *c);
    c->done = done;
    c->arg = arg;
    receipts_batch_close(ctx->settle_batch);
    ctx->settle_batch = NULL;
    templates_cache_free(ctx->render_cache);
    ctx->render_cache = NULL;
    uv_timer_stop(&ctx->timer);
    devlimit_free(ctx->fcm_limit);
    ctx->fcm_limit = NULL;
    ctx->timer.data = c;
    uv_close((uv_handle_t *)&ctx->timer, on_timer_closed);
}
