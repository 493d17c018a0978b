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
 *   deliver  daemon/delivery.c builds, sends and settles each delivery
 *            (receipt + status, or a durably scheduled retry); the entry is
 *            XACKed only once every delivery of the job is settled in Redis.
 *            The retry poller there resends due retries.
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

#include "common/log.h"
#include "common/util.h"
#include "daemon/delivery.h"
#include "daemon/stats.h"
#include "queue/event.h"
#include "queue/receipts.h"
#include "queue/registry.h"
#include "queue/stream.h"


#define SLICE_USERS 256  /* recipients looked up at a time */
#define REDIS_STALL_MS 15000 /* a Redis reply later than this means a dead link */
/* An entry of ours delivered this often without being settled is taken to
 * crash or wedge the daemon: it is dead-lettered ("poison") instead of
 * being replayed forever. */
#define POISON_DELIVERIES 20
#define POISON_SCAN_MAX 10000

struct job;

enum job_stage { JOB_NEW, JOB_SENDING, JOB_ACKING, JOB_DONE };

struct job {
    struct pipeline *pl;
    struct job *prev, *next;
    struct stream_entry entry;
    struct event *ev;
    enum job_stage stage;
    int refs;                    /* outstanding callbacks that reference it */
    bool redis_failed;           /* a lookup failed: release without ack */
    /* expansion, a slice of recipients at a time */
    struct event_recipient *users; /* distinct recipients, sorted (borrowed strings) */
    size_t n_users;
    size_t next_user;            /* first recipient not yet looked up */
    size_t slice_base, slice_len, slice_replies;
    bool slice_busy;             /* device lookups of a slice outstanding */
    char **final_keys;           /* "user:device" already settled, sorted */
    size_t n_final;
    struct registry_device **devs; /* per slice user: its devices */
    size_t *n_devs;
    /* deliveries */
    size_t outstanding;          /* created, not yet done */
    size_t n_created;
    bool unsettled_lost;         /* a delivery or slice ended without a written outcome */
    bool in_send;                /* job_send_slice is iterating the slice */
    bool waiting;                /* on pl's list of jobs waiting for window room */
    struct job *wnext;
};

struct pipeline {
    uv_loop_t *loop;
    struct pipeline_config cfg;
    char *dead_stream;
    struct redis_conn *rd, *cmd;
    bool group_ready, group_creating;
    bool reading;
    bool history;                /* reading own pending entries */
    bool poison_scanned;         /* own pending entries' delivery counts known */
    bool poison_scanning;
    char **poison;               /* sorted ids delivered >= POISON_DELIVERIES times */
    size_t n_poison;
    char history_id[64];
    bool stopping, closed;
    struct job *jobs;            /* list of active jobs */
    struct job *wait_head, *wait_tail; /* jobs waiting for room in the window */
    size_t n_jobs;
    size_t expanding;            /* recipients whose device lookups are out:
                                    counted in the window with dctx.active */
    struct delivery_ctx dctx;    /* deliveries, settlement, retries */
    uv_timer_t claim_timer, stop_timer;
    char claim_cursor[64];
    bool claiming;
    uint32_t stop_waited_ms, stop_timeout_ms;
    uint64_t last_trim_ms, last_poll_ms;
    void (*stop_done)(void *);
    void *stop_arg;
    struct pipeline_stats st;
    int timers_open;
};

static void maybe_read(struct pipeline *pl);
static void job_release(struct job *j);
static void job_check_done(struct job *j);
static void job_send_slice(struct job *j);
static void pipeline_resume(struct pipeline *pl);
static bool is_poison(const struct pipeline *pl, const char *id);

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

static void wait_remove(struct pipeline *pl, struct job *j)
{
    struct job **pp = &pl->wait_head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->wnext;
    }
    if (*pp) {
        *pp = j->wnext;
        if (pl->wait_tail == j)
            pl->wait_tail = prev;
    }
    j->waiting = false;
    j->wnext = NULL;
}

static void job_free(struct job *j)
{
    struct pipeline *pl = j->pl;
    if (j->waiting)
        wait_remove(pl, j);
    if (j->prev)
        j->prev->next = j->next;
    else
        pl->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    pl->n_jobs--;
    for (size_t i = 0; i < j->n_final; i++)
        free(j->final_keys[i]);
    free(j->final_keys);
    if (j->devs) {
        for (size_t u = 0; u < SLICE_USERS; u++) {
            for (size_t k = 0; j->devs[u] && k < j->n_devs[u]; k++)
                registry_device_clear(&j->devs[u][k]);
            free(j->devs[u]);
        }
    }
    free(j->devs);
    free(j->n_devs);
    free(j->users);
    delivery_forget_event(&pl->dctx, j->ev);
    event_free(j->ev);
    stream_entry_free(&j->entry);
    free(j);
}

/* Drop a job without acknowledging it (its entry stays pending). */
static void job_release(struct job *j)
{
    if (j->stage != JOB_ACKING && j->stage != JOB_DONE) {
        const char *v[] = { "released" };
        stats_add(STATS_EVENTS, v, 1);
    }
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
        const char *v[] = { "acked" };
        stats_add(STATS_EVENTS, v, 1);
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
    const char *v[] = { code };
    stats_add(STATS_DEAD_LETTERS, v, 1);
    log_warn_kv("pipeline", LOG_KV("entry", j->entry.id, "code", code),
                "dead letter %s: %s: %s", j->entry.id, code, reason);
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

static bool is_settled(const struct job *j, const char *user, const char *device)
{
    if (j->n_final == 0)
        return false;
    char key[512];
    snprintf(key, sizeof key, "%s:%s", user, device);
    const char *k = key;
    return bsearch(&k, j->final_keys, j->n_final, sizeof *j->final_keys, cmp_str) != NULL;
}

static int cmp_rcpt(const void *a, const void *b)
{
    const struct event_recipient *x = a, *y = b;
    return strcmp(x->user, y->user);
}

static void job_next_slice(struct job *j);

static void on_status(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (!j->pl->closed)
            log_warn("pipeline", "status lookup for %s failed: %s", j->entry.id,
                     reply ? reply->str : "connection lost");
        j->redis_failed = true;
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        size_t pairs = reply->elements / 2;
        j->final_keys = xcalloc(pairs ? pairs : 1, sizeof *j->final_keys);
        for (size_t i = 0; i < pairs; i++) {
            redisReply *f = reply->element[2 * i], *v = reply->element[2 * i + 1];
            if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
                receipts_status_is_settled(v->str))
                j->final_keys[j->n_final++] = xstrndup(f->str, f->len);
        }
        qsort(j->final_keys, j->n_final, sizeof *j->final_keys, cmp_str);
    }
    job_next_slice(j);
}

static void on_devices(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    size_t u = j->slice_replies++;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (!j->redis_failed && !j->pl->closed)
            log_warn("pipeline", "device lookup for %s failed: %s", j->entry.id,
                     reply ? reply->str : "connection lost");
        j->redis_failed = true;
    } else if (reply->type == REDIS_REPLY_ARRAY && u < j->slice_len) {
        size_t pairs = reply->elements / 2;
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
                         j->ev->tenant, j->users[j->slice_base + u].user, dev);
            free(dev);
        }
    }
    if (j->slice_replies < j->slice_len)
        return;
    j->slice_busy = false;
    j->pl->expanding -= j->slice_len;
    if (j->redis_failed || j->pl->closed || j->pl->stopping) {
        j->unsettled_lost = true; /* this slice is not delivered: no ack */
        job_check_done(j);
        return;
    }
    job_send_slice(j);
}

/*
 * Look up the devices of the next slice of recipients, while the in-flight
 * window has room. A large event (a snow-day message to every guardian) is
 * expanded a slice at a time, so memory follows the window, not the
 * number of recipients.
 */
static void job_next_slice(struct job *j)
{
    struct pipeline *pl = j->pl;
    if (j->slice_busy || j->redis_failed || pl->closed || pl->stopping ||
        j->next_user >= j->n_users) {
        job_check_done(j);
        return;
    }
    if (j->in_send)
        return; /* job_send_slice calls again when its loop is done */
    /* Recipients being looked up count too: otherwise every waiting job
     * takes the same room while the lookups are out, and a burst of
     * settlements let the window overshoot many times over. */
    size_t window = pl->cfg.inflight_window, active = pl->dctx.active + pl->expanding;
    if (active >= window) {
        /* Wait for room: resumed by pipeline_resume when deliveries end. */
        if (!j->waiting) {
            j->waiting = true;
            if (pl->wait_tail)
                pl->wait_tail->wnext = j;
            else
                pl->wait_head = j;
            pl->wait_tail = j;
        }
        return;
    }
    size_t n = j->n_users - j->next_user;
    if (n > SLICE_USERS)
        n = SLICE_USERS;
    if (n > window - active)
        n = window - active; /* a user may have several devices: small overshoot */
    j->slice_base = j->next_user;
    j->slice_len = n;
    j->slice_replies = 0;
    j->next_user += n;
    memset(j->n_devs, 0, SLICE_USERS * sizeof *j->n_devs);
    j->slice_busy = true;
    size_t sent = registry_lookup_many(pl->cmd, pl->cfg.prefix, j->ev->tenant,
                                       &j->users[j->slice_base], n, on_devices, j);
    j->refs += (int)sent;
    if (sent < n) {
        /* Connection gone: replies already asked for come back NULL. */
        j->redis_failed = true;
        j->slice_len = sent;
    }
    pl->expanding += j->slice_len;
    if (j->slice_len == 0 || j->slice_replies == j->slice_len) {
        j->slice_busy = false;
        pl->expanding -= j->slice_len;
        job_check_done(j);
    }
}

static void job_expand(struct job *j)
{
    struct pipeline *pl = j->pl;
    struct event *ev = j->ev;
    j->stage = JOB_SENDING;
    /* Distinct recipients, never the guardian who reported an absence. */
    j->users = xcalloc(ev->n_recipients ? ev->n_recipients : 1, sizeof *j->users);
    for (size_t i = 0; i < ev->n_recipients; i++) {
        if (ev->type == EVENT_ABSENCE_REPORTED && ev->reported_by &&
            strcmp(ev->recipients[i].user, ev->reported_by) == 0)
            continue;
        j->users[j->n_users++] = ev->recipients[i];
    }
    qsort(j->users, j->n_users, sizeof *j->users, cmp_rcpt);
    size_t w = 0;
    for (size_t i = 0; i < j->n_users; i++)
        if (w == 0 || strcmp(j->users[w - 1].user, j->users[i].user) != 0)
            j->users[w++] = j->users[i];
    j->n_users = w;
    j->devs = xcalloc(SLICE_USERS, sizeof *j->devs);
    j->n_devs = xcalloc(SLICE_USERS, sizeof *j->n_devs);
    log_info_kv("pipeline", LOG_KV("tenant", ev->tenant, "event", ev->id,
                                   "type", event_type_name(ev->type), "entry", j->entry.id),
                "event %s/%s %s (%s): %zu recipients", ev->tenant, ev->id,
             event_type_name(ev->type), j->entry.id, j->n_users);
    if (receipts_status_lookup(pl->cmd, pl->cfg.prefix, ev->tenant, ev->id, on_status, j) != 0) {
        job_release(j);
        return;
    }
    j->refs++;
}

/* ---- delivery ---------------------------------------------------------- */

static void job_send_slice(struct job *j)
{
    struct pipeline *pl = j->pl;
    const struct event *ev = j->ev;
    size_t skipped = 0, created = 0;
    /* A guard keeps the job alive while deliveries settle at once. */
    j->refs++;
    j->in_send = true;
    for (size_t u = 0; u < j->slice_len; u++) {
        const struct event_recipient *rc = &j->users[j->slice_base + u];
        for (size_t k = 0; k < j->n_devs[u]; k++) {
            struct registry_device *rd = &j->devs[u][k];
            if (is_settled(j, rc->user, rd->device)) {
                skipped++;
                continue;
            }
            struct delivery *d = delivery_new(&pl->dctx, j, ev, j->entry.ms, rc->user,
                                              rc->badge, rd);
            created++;
            j->outstanding++;
            j->refs++;
            delivery_start(d);
        }
        for (size_t k = 0; k < j->n_devs[u]; k++)
            registry_device_clear(&j->devs[u][k]);
        free(j->devs[u]);
        j->devs[u] = NULL;
        j->n_devs[u] = 0;
    }
    j->in_send = false;
    j->n_created += created;
    pl->st.skipped += skipped;
    pl->st.deliveries += created;
    if (created || skipped)
        log_debug("pipeline", "event %s/%s: %zu deliveries started, %zu already settled",
                  ev->tenant, ev->id, created, skipped);
    j->refs--;
    job_next_slice(j);
}

/* delivery.c: a delivery of a job is done (settled, or released at close). */
static void on_delivery_done(struct delivery *d, void *arg)
{
    struct job *j = delivery_owner(d);
    j->refs--;
    j->outstanding--;
    if (delivery_settled(d)) {
        const char *st = delivery_status(d);
        if (strcmp(st, "sent") == 0)
            j->pl->st.sent++;
        else if (strcmp(st, "invalid_token") == 0)
            j->pl->st.invalid_token++;
        else if (strcmp(st, "retrying") != 0)
            j->pl->st.failed++;
    } else {
        j->unsettled_lost = true;
    }
    struct pipeline *pl = j->pl;
    delivery_free(d);
    if (j->next_user < j->n_users && !j->slice_busy && !j->waiting)
        job_next_slice(j);
    else
        job_check_done(j);
    pipeline_resume(pl);
}

/* Room in the window: let waiting jobs expand their next slice, then read. */
static void pipeline_resume(struct pipeline *pl)
{
    while (!pl->closed && pl->wait_head &&
           pl->dctx.active + pl->expanding < pl->cfg.inflight_window) {
        struct job *j = pl->wait_head;
        wait_remove(pl, j);
        job_next_slice(j);
    }
    if (!pl->closed && pl->wait_head == NULL)
        maybe_read(pl);
}

static void on_room(void *arg)
{
    pipeline_resume(arg);
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
    if (j->stage != JOB_SENDING)
        return;
    if (j->redis_failed || j->unsettled_lost ||
        (pl->stopping && j->next_user < j->n_users)) {
        /* Some delivery has no written outcome: the entry stays pending and
         * a replay finishes it (settled deliveries are skipped). */
        job_release(j);
        return;
    }
    if (j->next_user >= j->n_users && j->outstanding == 0 && !j->slice_busy) {
        log_info("pipeline", "event %s/%s done: %zu deliveries", j->ev->tenant, j->ev->id,
                 j->n_created);
        job_ack(j);
    }
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
    if (is_poison(pl, j->entry.id)) {
        char why[160];
        snprintf(why, sizeof why, "delivered %d times or more without being settled (the "
                 "daemon may crash or hang on it); replay it with varselctl once fixed",
                 POISON_DELIVERIES);
        job_dead_letter(j, "poison", why);
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
        if (receipts_settle(pl->cmd, &pl->dctx.keys, &r, NULL, on_opened_written, j) == 0)
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
    return pl->dctx.active + pl->expanding < pl->cfg.inflight_window &&
           pl->wait_head == NULL && pl->n_jobs < (size_t)pl->cfg.batch_size * 4;
}

static void free_poison(struct pipeline *pl)
{
    for (size_t i = 0; i < pl->n_poison; i++)
        free(pl->poison[i]);
    free(pl->poison);
    pl->poison = NULL;
    pl->n_poison = 0;
}

static void on_pending_scan(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->poison_scanning = false;
    if (pl->closed)
        return;
    if (reply == NULL)
        return; /* connection lost: scanned again after the reconnect */
    free_poison(pl);
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        pl->poison = xcalloc(reply->elements, sizeof *pl->poison);
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
                e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[3]->type != REDIS_REPLY_INTEGER)
                continue;
            if (e->element[3]->integer >= POISON_DELIVERIES)
                pl->poison[pl->n_poison++] = xstrndup(e->element[0]->str, e->element[0]->len);
        }
        qsort(pl->poison, pl->n_poison, sizeof *pl->poison, cmp_str);
        if (pl->n_poison)
            log_warn("pipeline", "%zu of this consumer's pending entries were delivered %d "
                     "times or more without being settled; they go to the dead letters",
                     pl->n_poison, POISON_DELIVERIES);
    }
    pl->poison_scanned = true;
    maybe_read(pl);
}

static bool is_poison(const struct pipeline *pl, const char *id)
{
    return pl->n_poison &&
           bsearch(&id, pl->poison, pl->n_poison, sizeof *pl->poison, cmp_str) != NULL;
}

static void maybe_read(struct pipeline *pl)
{
    if (pl->stopping || pl->closed || !pl->group_ready || pl->reading ||
        !redis_conn_ready(pl->rd) || !redis_conn_ready(pl->cmd) || !has_room(pl))
        return;
    if (pl->history && !pl->poison_scanned) {
        /* Before replaying our own pending entries, learn how often each
         * was delivered already (XPENDING's extended form). */
        if (!pl->poison_scanning) {
            char count[16];
            snprintf(count, sizeof count, "%d", POISON_SCAN_MAX);
            const char *argv[] = { "XPENDING", pl->cfg.stream, pl->cfg.group, "-", "+",
                                   count, pl->cfg.consumer };
            if (redis_conn_cmd_argv(pl->cmd, on_pending_scan, pl, 7, argv, NULL) == 0)
                pl->poison_scanning = true;
        }
        return;
    }
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

/* ---- figures for /metrics that live in Redis ----------------------------- */

static void on_xinfo(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return;
    const char *sv[] = { pl->cfg.stream };
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *g = reply->element[i];
        if (g->type != REDIS_REPLY_ARRAY)
            continue;
        bool ours = false;
        long long lag = -1, pending = -1;
        for (size_t k = 0; k + 1 < g->elements; k += 2) {
            const redisReply *key = g->element[k], *v = g->element[k + 1];
            if (key->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(key->str, "name") == 0 && v->type == REDIS_REPLY_STRING)
                ours = strcmp(v->str, pl->cfg.group) == 0;
            else if (strcmp(key->str, "lag") == 0 && v->type == REDIS_REPLY_INTEGER)
                lag = v->integer;
            else if (strcmp(key->str, "pending") == 0 && v->type == REDIS_REPLY_INTEGER)
                pending = v->integer;
        }
        if (!ours)
            continue;
        if (lag >= 0)
            stats_set(STATS_STREAM_LAG, sv, (double)lag);
        if (pending >= 0)
            stats_set(STATS_STREAM_PENDING, sv, (double)pending);
    }
}

static void on_retry_depth(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        double n = 0;
        for (int i = 0; i < 2; i++)
            if (reply->element[i]->type == REDIS_REPLY_INTEGER)
                n += (double)reply->element[i]->integer;
        stats_set(STATS_RETRY_DEPTH, NULL, n);
        if (reply->element[2]->type == REDIS_REPLY_INTEGER)
            stats_set(STATS_DEAD_LENGTH, NULL, (double)reply->element[2]->integer);
    }
}

/* Every few seconds: group lag and pending, retry schedule, dead letters. */
static void poll_redis_figures(struct pipeline *pl)
{
    const char *xinfo[] = { "XINFO", "GROUPS", pl->cfg.stream };
    redis_conn_cmd_argv(pl->cmd, on_xinfo, pl, 3, xinfo, NULL);
    size_t n = strlen(pl->cfg.prefix) + 16;
    char kz[n], kl[n], kd[n];
    snprintf(kz, n, "%sretry", pl->cfg.prefix);
    snprintf(kl, n, "%sretry:lease", pl->cfg.prefix);
    snprintf(kd, n, "%sdead", pl->cfg.prefix);
    /* One script-free round trip: a MULTI would need three replies too. */
    static const char lua[] =
        "return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), "
        "redis.call('XLEN', KEYS[3])}";
    const char *ev[] = { "EVAL", lua, "3", kz, kl, kd };
    redis_conn_cmd_argv(pl->cmd, on_retry_depth, pl, 6, ev, NULL);
}

/* Collector for stats.h: values this pipeline knows in memory. */
static void collect_pipeline(void *arg)
{
    struct pipeline *pl = arg;
    stats_set(STATS_INFLIGHT, NULL, (double)pl->dctx.inflight);
    stats_set(STATS_JOBS, NULL, (double)pl->n_jobs);
    const char *c1[] = { "cmd" }, *c2[] = { "read" };
    stats_set(STATS_REDIS_CONNECTED, c1, pl->cmd && redis_conn_ready(pl->cmd) ? 1 : 0);
    stats_set(STATS_REDIS_CONNECTED, c2, pl->rd && redis_conn_ready(pl->rd) ? 1 : 0);
}

static void on_trimmed(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("pipeline", "trimming the events stream failed: %s", reply->str);
    else if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        log_debug("pipeline", "trimmed %lld entries from the events stream",
                  (long long)reply->integer);
}

static void on_claim_timer(uv_timer_t *t)
{
    struct pipeline *pl = t->data;
    /* Watchdogs: the blocking read must return within block_ms, commands
     * within a few seconds; otherwise the connection is dead or hung. */
    if (!pl->closed && pl->rd &&
        redis_conn_stalled(pl->rd, (uint64_t)pl->cfg.block_ms + REDIS_STALL_MS))
        redis_conn_reset(pl->rd, "blocking read overdue");
    if (!pl->closed && pl->cmd && redis_conn_stalled(pl->cmd, REDIS_STALL_MS))
        redis_conn_reset(pl->cmd, "replies overdue");
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
    uint64_t now = mono_ms();
    if (now - pl->last_poll_ms >= 5000) {
        pl->last_poll_ms = now;
        poll_redis_figures(pl);
    }
    if (pl->cfg.trim_interval_ms > 0 && now - pl->last_trim_ms >= (uint64_t)pl->cfg.trim_interval_ms) {
        pl->last_trim_ms = now;
        stream_trim(pl->cmd, pl->cfg.stream, on_trimmed, pl);
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
    delivery_ctx_flush(&pl->dctx);
    maybe_read(pl);
}

static void on_rd_ready(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    /* After any reconnect, first re-read this consumer's own pending
     * entries: some may have been released unacknowledged meanwhile. */
    pl->history = true;
    pl->poison_scanned = false;
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
    stream_init(pl->cmd);
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
    pl->timers_open = 3;
    struct delivery_ctx *dc = &pl->dctx;
    dc->cmd = pl->cmd;
    dc->keys = (struct settle_keys){ cfg->prefix, cfg->receipts_maxlen, cfg->dead_maxlen,
                                     cfg->status_ttl_s };
    dc->apps = cfg->apps;
    dc->n_apps = cfg->n_apps;
    dc->templates = cfg->templates;
    dc->retry_base_ms = cfg->retry_base_ms;
    dc->retry_cap_ms = cfg->retry_cap_ms;
    dc->lease_ms = cfg->retry_lease_ms;
    dc->window = cfg->inflight_window;
    dc->on_done = on_delivery_done;
    dc->on_room = on_room;
    dc->arg = pl;
    delivery_ctx_init(dc, loop);
    stats_add_collector(collect_pipeline, pl);
    return pl;
}

void pipeline_set_templates(struct pipeline *pl, const struct templates *t)
{
    pl->cfg.templates = t;
    pl->dctx.templates = t;
}

static void finish_stop(struct pipeline *pl)
{
    uv_timer_stop(&pl->stop_timer);
    pl->closed = true;
    size_t unwritten = delivery_ctx_unwritten(&pl->dctx);
    if (pl->dctx.inflight || unwritten || pl->n_jobs)
        log_warn("pipeline", "stopping with %zu deliveries in flight, %zu outcomes "
                 "unwritten, %zu entries unacknowledged (they stay pending; claimed "
                 "retries return to the schedule when their lease ends)",
                 pl->dctx.inflight, unwritten, pl->n_jobs);
    delivery_ctx_abandon(&pl->dctx);
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
    bool drained = pl->dctx.inflight == 0 && delivery_ctx_unwritten(&pl->dctx) == 0 &&
                   pl->dctx.n_retries == 0;
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
    pl->dctx.stopping = true;
    log_info("pipeline", "stopping: %zu deliveries in flight", pl->dctx.inflight);
    uv_timer_start(&pl->stop_timer, on_stop_timer, 0, 50);
}

static void on_timer_closed_arg(struct pipeline *pl)
{
    if (--pl->timers_open == 0) {
        free_poison(pl);
        free(pl->dead_stream);
        free(pl);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    on_timer_closed_arg(h->data);
}

static void on_dctx_closed(void *arg)
{
    on_timer_closed_arg(arg);
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
    delivery_ctx_close(&pl->dctx, on_dctx_closed, pl);
}

bool pipeline_ready(const struct pipeline *pl)
{
    return !pl->closed && !pl->stopping && pl->group_ready && pl->rd && pl->cmd &&
           redis_conn_ready(pl->rd) && redis_conn_ready(pl->cmd);
}

void pipeline_get_stats(const struct pipeline *pl, struct pipeline_stats *out)
{
    *out = pl->st;
    out->inflight = pl->dctx.inflight;
    out->jobs = pl->n_jobs;
}
