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
#include "common/tz.h"
#include "common/util.h"
#include "config/config.h"
#include "daemon/delivery.h"
#include "daemon/stats.h"
#include "queue/escalation.h"
#include "queue/event.h"
#include "queue/guardian.h"
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
#define HOUSEKEEPING_MS 1000   /* escalation checks and the device age sweep */
#define PRUNE_EVERY_MS (3600 * 1000)
#define PRUNE_BATCH 200
/* An absence alert published after the end of its school day still gets
 * this long to reach a phone. */
#define ALERT_MIN_LIFE_MS (3600 * 1000)

struct job;
struct pipeline;

/* One stream the group consumes, and this consumer's state on it. */
struct pl_stream {
    char *key;
    bool urgent;                 /* [redis] urgent_stream */
    bool group_ready, group_creating;
    bool history;                /* re-reading own pending entries */
    char history_id[64];
    bool poison_scanned;         /* own pending entries' delivery counts known */
    bool poison_scanning;
    char **poison;               /* sorted ids delivered >= POISON_DELIVERIES times */
    size_t n_poison;
    char claim_cursor[64];
    size_t claiming;             /* an XAUTOCLAIM is out or its entries are being
                                    started: its COUNT (jobs_left); 0 = none */
    bool claim_due;              /* a take-over is due: new entries wait for it */
    struct stream_acker *acker;  /* XACK, after WAIT when replicas must have the writes */
    struct pipeline *pl;
};

/*
 * One XREADGROUP connection: "read" for the bulk streams, "urgent" for the
 * urgent stream. Urgent events have their own connection so that a full
 * in-flight window (a large fan-out) never delays reading them.
 */
struct reader {
    struct pipeline *pl;
    struct redis_conn *conn;
    bool urgent;
    size_t reading;              /* an XREADGROUP is out or its entries are being
                                    started: what it may bring, COUNT x streams
                                    (jobs_left); 0 = none */
    size_t first, n;             /* its streams: pl->streams[first .. first+n) */
};

enum job_stage { JOB_NEW, JOB_SENDING, JOB_ACKING, JOB_DONE };

struct job {
    struct pipeline *pl;
    struct job *prev, *next;
    struct stream_entry entry;
    struct pl_stream *src;       /* the stream it came from */
    bool urgent;                 /* from the urgent stream: jumps the queues */
    struct event *ev;
    enum job_stage stage;
    uint64_t epoch;              /* cmd connection epoch at start (WAIT before XACK) */
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
    struct guardian_prefs *prefs;  /* per slice user: preferences (none: -1s) */
    size_t slice_cap;            /* entries of devs, n_devs, prefs: min(SLICE_USERS, n_users) */
    /* the tenant's settings, copied at expansion (a reload may free them) */
    const char *default_locale;  /* static */
    bool preview;
    char timezone[72];
    int school_day_end_min;
    int64_t escalate_after_s;
    int64_t alert_deadline_ms;   /* absence.alert: end of the school day, else 0 */
    int local_min;               /* minute of the local day at expansion, -1 unknown */
    bool escalation;             /* absence.alert: an escalation check is scheduled */
    /* deliveries */
    size_t outstanding;          /* created, not yet done */
    size_t n_created;
    bool unsettled_lost;         /* a delivery or slice ended without a written outcome */
    bool in_send;                /* job_send_slice is iterating the slice */
    bool waiting;                /* on pl's list of jobs waiting for window room */
    struct job *wnext;
    struct job *hnext;           /* pl->job_hash chain */
    uint32_t hash;               /* of entry.id */
};

struct pipeline {
    uv_loop_t *loop;
    struct pipeline_config cfg;
    char *dead_stream;
    struct redis_conn *cmd;
    struct pl_stream *streams;   /* bulk streams first, then the urgent one */
    size_t n_streams;
    struct reader bulk, urg;     /* urg.conn is NULL without an urgent stream */
    struct stream_member *member; /* consumer-name lease, removal of gone consumers */
    size_t claim_next;           /* stream whose idle entries are claimed next */
    size_t n_urgent_jobs;
    bool stopping, closed;
    struct job *jobs;            /* list of active jobs */
    struct job **job_hash;       /* the same jobs by entry id (job_find) */
    size_t job_hash_size;        /* a power of two, >= n_jobs / 2 */
    struct job *wait_head;       /* jobs waiting for room in the window, urgent first */
    size_t n_jobs;
    struct delivery_ctx dctx;    /* deliveries, settlement, retries */
    uv_timer_t claim_timer, stop_timer, house_timer;
    bool escalating;             /* a due-escalation run is outstanding */
    bool pruning;                /* a sweep step is outstanding */
    bool prune_active;           /* a sweep holds the lock and is running */
    char prune_cursor[32];
    uint64_t last_prune_ms;
    uint32_t stop_waited_ms, stop_timeout_ms;
    uint64_t last_trim_ms, last_poll_ms;
    void (*stop_done)(void *);
    void *stop_arg;
    struct pipeline_stats st;
    int timers_open;
};

static void maybe_read(struct pipeline *pl);
static void job_release(struct job *j);
static size_t window_of(const struct pipeline *pl, bool urgent);
static size_t slice_room(const struct pipeline *pl, const struct job *j);
static void job_check_done(struct job *j);
static void job_send_slice(struct job *j);
static void pipeline_resume(struct pipeline *pl);
static bool is_poison(const struct pl_stream *st, const char *id);

/* ---- jobs ------------------------------------------------------------- */

static uint32_t job_id_hash(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

static void job_hash_grow(struct pipeline *pl)
{
    size_t n = pl->job_hash_size ? pl->job_hash_size * 2 : 256;
    struct job **t = xcalloc(n, sizeof *t);
    for (struct job *j = pl->jobs; j; j = j->next) {
        size_t b = j->hash & (n - 1);
        j->hnext = t[b];
        t[b] = j;
    }
    free(pl->job_hash);
    pl->job_hash = t;
    pl->job_hash_size = n;
}

/* The job of this entry, if one is active: a hash of the entry ids, so that
 * every entry read (fresh, history or claimed) is checked without walking
 * all jobs. */
static struct job *job_find(struct pipeline *pl, const struct pl_stream *src, const char *id)
{
    if (pl->job_hash_size == 0)
        return NULL;
    uint32_t h = job_id_hash(id);
    for (struct job *j = pl->job_hash[h & (pl->job_hash_size - 1)]; j; j = j->hnext)
        if (j->hash == h && j->src == src && strcmp(j->entry.id, id) == 0)
            return j;
    return NULL;
}

static struct job *job_new(struct pipeline *pl, struct pl_stream *src, struct stream_entry *e)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->pl = pl;
    j->src = src;
    j->urgent = src->urgent;
    if (j->urgent)
        pl->n_urgent_jobs++;
    j->epoch = redis_conn_epoch(pl->cmd);
    j->entry = *e;            /* takes ownership */
    memset(e, 0, sizeof *e);
    j->next = pl->jobs;
    if (pl->jobs)
        pl->jobs->prev = j;
    pl->jobs = j;
    pl->n_jobs++;
    j->hash = job_id_hash(j->entry.id);
    if (pl->n_jobs > pl->job_hash_size * 2) {
        job_hash_grow(pl); /* links j too */
    } else {
        size_t b = j->hash & (pl->job_hash_size - 1);
        j->hnext = pl->job_hash[b];
        pl->job_hash[b] = j;
    }
    return j;
}

static void wait_remove(struct pipeline *pl, struct job *j)
{
    struct job **pp = &pl->wait_head;
    while (*pp && *pp != j)
        pp = &(*pp)->wnext;
    if (*pp)
        *pp = j->wnext;
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
    for (struct job **pp = &pl->job_hash[j->hash & (pl->job_hash_size - 1)]; *pp;
         pp = &(*pp)->hnext) {
        if (*pp == j) {
            *pp = j->hnext;
            break;
        }
    }
    if (j->urgent)
        pl->n_urgent_jobs--;
    for (size_t i = 0; i < j->n_final; i++)
        free(j->final_keys[i]);
    free(j->final_keys);
    if (j->devs) {
        for (size_t u = 0; u < j->slice_cap; u++) {
            for (size_t k = 0; j->devs[u] && k < j->n_devs[u]; k++)
                registry_device_clear(&j->devs[u][k]);
            free(j->devs[u]);
        }
    }
    free(j->devs);
    free(j->n_devs);
    free(j->prefs);
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

static void on_ack(void *priv, bool ok, const char *why)
{
    struct job *j = priv;
    struct pipeline *pl = j->pl;
    j->refs--;
    if (ok) {
        pl->st.acked++;
        const char *v[] = { "acked" };
        stats_add(STATS_EVENTS, v, 1);
        log_debug("pipeline", "acked %s", j->entry.id);
    } else if (!pl->closed) {
        log_warn("pipeline", "XACK %s not done (%s): the entry stays pending and is "
                 "replayed, its settled deliveries skipped", j->entry.id, why);
    }
    job_release(j);
}

static void job_ack(struct job *j)
{
    struct pipeline *pl = j->pl;
    j->stage = JOB_ACKING;
    if (stream_acker_ack(j->src->acker, j->entry.id, j->epoch, on_ack, j) == 0) {
        j->refs++;
        return;
    }
    if (!pl->closed)
        log_info("pipeline", "entry %s not acknowledged: Redis is down or the connection "
                 "changed since its writes; it stays pending and is replayed", j->entry.id);
    job_release(j);
}

/* ---- dead letters and device events ------------------------------------ */

/* The job's one write (its dead letter, a receipt.opened settlement) has
 * its answer: acknowledge the entry once it succeeded, else keep it
 * pending for a replay. */
static void on_written_ack(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply && reply->type != REDIS_REPLY_ERROR && !j->pl->closed)
        job_ack(j);
    else
        job_release(j);
}

/*
 * Dead letters hold ids only: the entry's fields are copied redacted
 * (event_redact), and the original is kept beside them for replay under
 * <prefix>dead:payload:STREAM:ID (named by the field original_key) for
 * dead_payload_ttl_s, then expires.
 */
static void job_dead_letter(struct job *j, const char *code, const char *reason)
{
    struct pipeline *pl = j->pl;
    pl->st.dead++;
    const char *v[] = { code };
    stats_add(STATS_DEAD_LETTERS, v, 1);
    log_warn_kv("pipeline", LOG_KV("entry", j->entry.id, "code", code),
                "dead letter %s: %s: %s", j->entry.id, code, reason);
    struct stream_entry red = { .id = j->entry.id, .ms = j->entry.ms };
    red.fields = xcalloc(j->entry.n_fields + 1, sizeof *red.fields);
    char *payload_key = NULL;
    const struct stream_field *orig = stream_entry_field(&j->entry, "event");
    if (orig && pl->cfg.dead_payload_ttl_s > 0) {
        size_t n = strlen(pl->cfg.prefix) + strlen(j->src->key) + strlen(j->entry.id) + 20;
        payload_key = xmalloc(n);
        snprintf(payload_key, n, "%sdead:payload:%s:%s", pl->cfg.prefix, j->src->key,
                 j->entry.id);
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%lld", (long long)pl->cfg.dead_payload_ttl_s);
        const char *argv[] = { "SET", payload_key, orig->value, "EX", ttl };
        size_t lens[] = { 3, strlen(payload_key), orig->len, 2, strlen(ttl) };
        redis_conn_cmd_argv(pl->cmd, NULL, NULL, 5, argv, lens);
    }
    for (size_t i = 0; i < j->entry.n_fields; i++) {
        const struct stream_field *f = &j->entry.fields[i];
        red.fields[i].name = f->name;
        if (strcmp(f->name, "event") == 0) {
            red.fields[i].value = event_redact(f->value, f->len);
        } else {
            char buf[64];
            snprintf(buf, sizeof buf, "<redacted: %zu bytes>", f->len);
            red.fields[i].value = xstrdup(buf);
        }
        red.fields[i].len = strlen(red.fields[i].value);
        red.n_fields++;
    }
    if (payload_key) {
        red.fields[red.n_fields].name = "original_key";
        red.fields[red.n_fields].value = payload_key;
        red.fields[red.n_fields].len = strlen(payload_key);
        red.n_fields++;
    }
    int rc = stream_dead_letter(pl->cmd, pl->dead_stream, pl->cfg.dead_maxlen, j->src->key,
                                pl->cfg.consumer, &red, code, reason, on_written_ack, j);
    for (size_t i = 0; i < j->entry.n_fields; i++)
        free(red.fields[i].value);
    free(red.fields);
    free(payload_key);
    if (rc == 0)
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
    log_info("registry", "%s %s/%s%s%s: %s", event_type_name(j->ev->type),
             j->ev->tenant, j->ev->user, j->ev->device ? " device " : "",
             j->ev->device ? j->ev->device : "",
             reply->type == REDIS_REPLY_STRING ? reply->str : "?");
    job_ack(j);
}

static void on_erased(int rc, size_t removed, void *arg)
{
    struct job *j = arg;
    j->refs--;
    if (rc == 0 && !j->pl->closed) {
        const char *v[] = { j->ev->tenant };
        stats_add(STATS_ERASURES, v, 1);
        log_info_kv("registry", LOG_KV("tenant", j->ev->tenant, "user", j->ev->user),
                    "user.erase %s/%s: %zu records removed", j->ev->tenant, j->ev->user,
                    removed);
        job_ack(j);
    } else {
        job_release(j); /* stays pending; erasing again is harmless */
    }
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
    struct pipeline *pl = j->pl;
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
            if (f->len == sizeof GUARDIAN_PREFS_FIELD - 1 &&
                memcmp(f->str, GUARDIAN_PREFS_FIELD, f->len) == 0) {
                guardian_prefs_parse(v->str, v->len, &j->prefs[u]);
                continue;
            }
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
    pl->dctx.expanding -= j->slice_len;
    if (j->redis_failed || pl->closed || pl->stopping) {
        j->unsettled_lost = true; /* this slice is not delivered: no ack */
        job_check_done(j);
    } else {
        job_send_slice(j);
    }
    /* The lookups no longer count against the window: a job waiting for
     * room may go on now, even when this slice started no delivery (all
     * settled already, or no devices) and so no delivery's end will. */
    pipeline_resume(pl);
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
    size_t room = slice_room(pl, j);
    if (room == 0) {
        /* Wait for room: resumed by pipeline_resume when deliveries end.
         * Urgent jobs queue ahead of every bulk job. */
        if (!j->waiting) {
            j->waiting = true;
            struct job **pp = &pl->wait_head;
            while (*pp && (!j->urgent || (*pp)->urgent))
                pp = &(*pp)->wnext;
            j->wnext = *pp;
            *pp = j;
        }
        return;
    }
    size_t n = j->n_users - j->next_user;
    if (n > j->slice_cap)
        n = j->slice_cap;
    if (n > room)
        n = room; /* a user may have several devices: small overshoot */
    j->slice_base = j->next_user;
    j->slice_len = n;
    j->slice_replies = 0;
    j->next_user += n;
    memset(j->n_devs, 0, n * sizeof *j->n_devs);
    for (size_t i = 0; i < n; i++)
        j->prefs[i] = (struct guardian_prefs){ 0, -1, -1 };
    j->slice_busy = true;
    size_t sent = registry_lookup_many(pl->cmd, pl->cfg.prefix, j->ev->tenant,
                                       &j->users[j->slice_base], n, on_devices, j);
    j->refs += (int)sent;
    if (sent > 0) {
        stats_add(STATS_LOOKUPS, NULL, (double)sent);
        stats_add(STATS_LOOKUP_BATCHES, NULL, 1);
    }
    if (sent < n) {
        /* Connection gone: replies already asked for come back NULL. */
        j->redis_failed = true;
        j->slice_len = sent;
    }
    pl->dctx.expanding += j->slice_len;
    if (j->slice_len == 0 || j->slice_replies == j->slice_len) {
        j->slice_busy = false;
        pl->dctx.expanding -= j->slice_len;
        job_check_done(j);
    }
}

/* Copy what the tenant's section says about this event into the job. */
static void job_tenant_settings(struct job *j)
{
    const struct event *ev = j->ev;
    const struct config_tenant *t = j->pl->cfg.config
        ? config_find_tenant(j->pl->cfg.config, ev->tenant) : NULL;
    j->local_min = -1;
    if (t == NULL) {
        j->default_locale = "nb";
        snprintf(j->timezone, sizeof j->timezone, "Europe/Oslo");
        j->school_day_end_min = 16 * 60;
        j->escalate_after_s = 300;
    } else {
        j->default_locale = config_locales[t->default_locale];
        j->preview = t->message_preview;
        snprintf(j->timezone, sizeof j->timezone, "%s", t->timezone);
        j->school_day_end_min = (int)t->school_day_end_min;
        j->escalate_after_s = t->escalate_after_s;
    }
    int64_t now = now_ms();
    struct tm lt;
    if (tz_local(j->timezone, now / 1000, &lt) == 0)
        j->local_min = lt.tm_hour * 60 + lt.tm_min;
    if (ev->type == EVENT_ABSENCE_ALERT) {
        /* Worth delivering until the end of that school day, local time. */
        const char *date = event_field(ev, "date");
        int y = 0, m = 0, d = 0;
        int64_t end = -1;
        if (date && sscanf(date, "%4d-%2d-%2d", &y, &m, &d) == 3)
            end = tz_instant(j->timezone, y, m, d, j->school_day_end_min);
        int64_t floor_ms = j->entry.ms + ALERT_MIN_LIFE_MS;
        j->alert_deadline_ms = end > 0 && end * 1000 > floor_ms ? end * 1000 : floor_ms;
    }
}

static void on_escalation_scheduled(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply && !j->pl->closed)
            log_warn("pipeline", "scheduling the escalation check of %s/%s failed: %s",
                     j->ev->tenant, j->ev->id, reply->str);
        j->redis_failed = true; /* not acked: a replay schedules it again */
    }
    job_check_done(j);
}

/*
 * absence.alert: schedule the escalation check before anything is sent, so
 * it is durable before the entry can be acknowledged. Returns false when
 * the job was released.
 */
static bool job_schedule_escalation(struct job *j)
{
    struct pipeline *pl = j->pl;
    const struct event *ev = j->ev;
    const char **users = xcalloc(ev->n_recipients ? ev->n_recipients : 1, sizeof *users);
    for (size_t i = 0; i < ev->n_recipients; i++)
        users[i] = ev->recipients[i].user;
    int rc = escalation_schedule(pl->cmd, pl->cfg.prefix, ev->tenant, ev->id,
                                 event_field(ev, "student"), users, ev->n_recipients,
                                 now_ms() + j->escalate_after_s * 1000,
                                 on_escalation_scheduled, j);
    free(users);
    if (rc != 0) {
        job_release(j);
        return false;
    }
    j->refs++;
    j->escalation = true;
    return true;
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
    j->slice_cap = j->n_users < SLICE_USERS ? (j->n_users ? j->n_users : 1) : SLICE_USERS;
    j->devs = xcalloc(j->slice_cap, sizeof *j->devs);
    j->n_devs = xcalloc(j->slice_cap, sizeof *j->n_devs);
    j->prefs = xcalloc(j->slice_cap, sizeof *j->prefs);
    job_tenant_settings(j);
    if (ev->type == EVENT_ABSENCE_ALERT && !job_schedule_escalation(j))
        return;
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

/* The tenant's settings and one guardian's preferences for this event. */
static void job_delivery_opts(struct job *j, const struct guardian_prefs *p,
                              struct delivery_opts *o)
{
    const struct event *ev = j->ev;
    memset(o, 0, sizeof *o);
    o->default_locale = j->default_locale;
    o->preview = j->preview;
    o->deadline_ms = j->alert_deadline_ms;
    /* An unreported absence is urgent: never muted, never held. */
    if (ev->type == EVENT_ABSENCE_ALERT)
        return;
    if (p->muted_mask & (1u << ev->type)) {
        o->muted = true;
        return;
    }
    if (j->local_min >= 0 && guardian_in_quiet_hours(p, j->local_min)) {
        int64_t until = tz_next_minute(j->timezone, now_ms() / 1000, p->quiet_end_min);
        if (until > 0)
            o->hold_until_ms = until * 1000;
    }
}

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
        struct delivery_opts opts;
        job_delivery_opts(j, &j->prefs[u], &opts);
        for (size_t k = 0; k < j->n_devs[u]; k++) {
            struct registry_device *rd = &j->devs[u][k];
            if (is_settled(j, rc->user, rd->device)) {
                skipped++;
                continue;
            }
            struct delivery *d = delivery_new(&pl->dctx, j, ev, j->entry.ms, rc->user,
                                              rc->badge, rd, &opts);
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
        else if (strcmp(st, "failed") == 0 || strcmp(st, "expired") == 0)
            j->pl->st.failed++; /* retrying, held and muted are not failures */
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
    while (!pl->closed && pl->wait_head && slice_room(pl, pl->wait_head) > 0) {
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

static void on_escalation_checked(redisAsyncContext *ac, void *r, void *priv)
{
    struct job *j = priv;
    redisReply *reply = r;
    j->refs--;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        const char *v[] = { j->ev->tenant, reply->str };
        stats_add(STATS_ESCALATIONS, v, 1);
        log_warn_kv("pipeline", LOG_KV("tenant", j->ev->tenant, "event", j->ev->id,
                                       "why", reply->str),
                    "absence alert %s/%s escalated: %s", j->ev->tenant, j->ev->id, reply->str);
    }
    /* Whatever the answer, the scheduled check still covers the alert. */
    if (j->pl->closed)
        job_release(j);
    else
        job_ack(j);
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
        if (j->escalation) {
            /* Nobody reachable: escalate now rather than when the time is up. */
            j->escalation = false;
            if (escalation_check_now(pl->cmd, pl->cfg.prefix, j->ev->tenant, j->ev->id,
                                     pl->cfg.escalations_maxlen, now_ms(),
                                     on_escalation_checked, j) == 0) {
                j->refs++;
                return;
            }
        }
        job_ack(j);
    }
}

/* ---- intake ------------------------------------------------------------ */

static void job_start(struct pipeline *pl, struct pl_stream *src, struct stream_entry *e)
{
    if (job_find(pl, src, e->id)) {
        stream_entry_free(e);
        return; /* already being worked on here */
    }
    struct job *j = job_new(pl, src, e);
    pl->st.events++;
    if (j->entry.n_fields == 0) {
        /* Deleted from the stream while pending: nothing to deliver. */
        log_warn("pipeline", "entry %s was deleted while pending; acking", j->entry.id);
        job_ack(j);
        return;
    }
    if (is_poison(src, j->entry.id)) {
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
    case EVENT_PREFERENCES_SET:
        if (guardian_set_prefs(pl->cmd, pl->cfg.prefix, j->ev, on_registry_applied, j) == 0)
            j->refs++;
        else
            job_release(j);
        return;
    case EVENT_USER_ERASE:
        j->refs++;
        if (guardian_erase_start(pl->cmd, pl->cfg.prefix, j->ev->tenant, j->ev->user,
                                 j->ev->occurred_at_ms, on_erased, j) != 0) {
            j->refs--;
            job_release(j);
        }
        return;
    case EVENT_RECEIPT_OPENED: {
        int64_t now = now_ms();
        struct receipt r = {
            .event = j->ev->event_ref, .tenant = j->ev->tenant, .user = j->ev->user,
            .device = j->ev->device, .platform = "", .app = "", .status = "opened",
            .attempt = 0, .provider_id = "", .http_status = 0, .reason = "",
            .latency_ms = now - j->entry.ms, .at_ms = now,
        };
        /* Through the same batch as every delivery's settlement. */
        if (pl->dctx.settle_batch &&
            receipts_batch_add(pl->dctx.settle_batch, &r, NULL, on_written_ack, j) == 0)
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

/* Start the entries of |arr| read from |st|; |history|: they are this
 * consumer's own pending ones, and the history cursor moves past them. */
static void start_entries(struct pipeline *pl, struct pl_stream *st, const redisReply *arr,
                          bool history, size_t *count)
{
    struct stream_entry *v;
    size_t n = stream_parse_entries(arr, &v);
    *count = n;
    if (n && history)
        snprintf(st->history_id, sizeof st->history_id, "%s", v[n - 1].id);
    for (size_t i = 0; i < n; i++)
        job_start(pl, st, &v[i]);
    free(v);
}

static void create_groups(struct pipeline *pl);

static struct pl_stream *stream_by_key(struct pipeline *pl, const char *key, size_t len)
{
    for (size_t i = 0; i < pl->n_streams; i++)
        if (strlen(pl->streams[i].key) == len && memcmp(pl->streams[i].key, key, len) == 0)
            return &pl->streams[i];
    return NULL;
}

/* Start the entries of a read's reply. Returns false when no read is to
 * follow now (closed, stopping, connection lost, an error). */
static bool read_reply(struct reader *rd, const redisReply *reply)
{
    struct pipeline *pl = rd->pl;
    if (pl->closed)
        return false;
    if (reply == NULL)
        return false; /* connection lost; on_ready restarts reading */
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("pipeline", "XREADGROUP: %s", reply->str);
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            for (size_t i = 0; i < rd->n; i++)
                pl->streams[rd->first + i].group_ready = false;
            create_groups(pl);
        }
        return false;
    }
    if (pl->stopping)
        return false; /* entries read now stay pending for the next start */
    /* One [stream, entries] pair per stream with something (history reads
     * answer for every stream asked, possibly with no entries). */
    size_t got[8] = { 0 };
    bool answered[8] = { false };
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *s = reply->element[i];
            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
                s->element[0]->type != REDIS_REPLY_STRING)
                continue;
            struct pl_stream *st = stream_by_key(pl, s->element[0]->str, s->element[0]->len);
            if (st == NULL)
                continue;
            size_t n = 0, k = (size_t)(st - pl->streams) - rd->first;
            start_entries(pl, st, s->element[1], st->history, &n);
            if (k < 8) {
                got[k] += n;
                answered[k] = true;
            }
        }
    }
    for (size_t k = 0; k < rd->n && k < 8; k++) {
        struct pl_stream *st = &pl->streams[rd->first + k];
        if (st->history && got[k] == 0 && (answered[k] || reply->type != REDIS_REPLY_ARRAY ||
                                           reply->elements == 0)) {
            st->history = false;
            log_info("pipeline", "own pending entries of %s done; reading new entries", st->key);
        }
    }
    return true;
}

static void on_read(redisAsyncContext *ac, void *r, void *priv)
{
    struct reader *rd = priv;
    bool go_on = read_reply(rd, r);
    rd->reading = 0; /* only now: the entries being started count until then */
    if (go_on)
        maybe_read(rd->pl);
}

static size_t window_of(const struct pipeline *pl, bool urgent)
{
    /* Urgent deliveries may use half a window more than bulk ones, so an
     * alert starts at once even while a fan-out keeps the window full. */
    return pl->cfg.inflight_window + (urgent ? pl->cfg.inflight_window / 2 + 1 : 0);
}

/*
 * How many recipients |j| may look up now; 0 = wait for room. A bulk job
 * waits until a low-water mark of room is free (an eighth of the window,
 * at most a slice, or what the job has left), so that a full window is
 * refilled in slices of hundreds of recipients, not one per freed slot:
 * fewer, larger lookup pipelines. Urgent jobs take any room at once.
 * Whenever a job waits, something is in flight (room < window), and its
 * end calls pipeline_resume.
 */
static size_t slice_room(const struct pipeline *pl, const struct job *j)
{
    size_t window = window_of(pl, j->urgent), active = pl->dctx.active + pl->dctx.expanding;
    if (active >= window)
        return 0;
    size_t room = window - active;
    if (!j->urgent) {
        size_t low = pl->cfg.inflight_window / 8, left = j->n_users - j->next_user;
        if (low > SLICE_USERS)
            low = SLICE_USERS;
        if (low > left)
            low = left;
        if (room < low)
            return 0;
    }
    return room;
}

/* Urgent or bulk jobs that may still be taken on: the jobs held at once
 * are bounded (memory), whatever the window. Entries that reads and
 * take-overs still out (or being started) may bring count as held. */
static size_t jobs_left(const struct pipeline *pl, bool urgent)
{
    size_t max = (size_t)pl->cfg.batch_size * 4;
    size_t held = urgent ? pl->n_urgent_jobs : pl->n_jobs - pl->n_urgent_jobs;
    held += (urgent ? &pl->urg : &pl->bulk)->reading;
    for (size_t i = 0; i < pl->n_streams; i++)
        if (pl->streams[i].urgent == urgent)
            held += pl->streams[i].claiming;
    return held < max ? max - held : 0;
}

/* Room to read new bulk entries: the window has room and nothing waits. */
static bool has_room(const struct pipeline *pl)
{
    return pl->dctx.active + pl->dctx.expanding < pl->cfg.inflight_window &&
           pl->wait_head == NULL && jobs_left(pl, false) > 0;
}

static bool urgent_room(const struct pipeline *pl)
{
    return jobs_left(pl, true) > 0;
}

static void free_poison(struct pl_stream *st)
{
    for (size_t i = 0; i < st->n_poison; i++)
        free(st->poison[i]);
    free(st->poison);
    st->poison = NULL;
    st->n_poison = 0;
}

static void on_pending_scan(redisAsyncContext *ac, void *r, void *priv)
{
    struct pl_stream *st = priv;
    struct pipeline *pl = st->pl;
    redisReply *reply = r;
    st->poison_scanning = false;
    if (pl->closed)
        return;
    if (reply == NULL)
        return; /* connection lost: scanned again after the reconnect */
    free_poison(st);
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        st->poison = xcalloc(reply->elements, sizeof *st->poison);
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
                e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[3]->type != REDIS_REPLY_INTEGER)
                continue;
            if (e->element[3]->integer >= POISON_DELIVERIES)
                st->poison[st->n_poison++] = xstrndup(e->element[0]->str, e->element[0]->len);
        }
        qsort(st->poison, st->n_poison, sizeof *st->poison, cmp_str);
        if (st->n_poison)
            log_warn("pipeline", "%zu of this consumer's pending entries on %s were delivered "
                     "%d times or more without being settled; they go to the dead letters",
                     st->n_poison, st->key, POISON_DELIVERIES);
    }
    st->poison_scanned = true;
    maybe_read(pl);
}

static bool is_poison(const struct pl_stream *st, const char *id)
{
    return st->n_poison &&
           bsearch(&id, st->poison, st->n_poison, sizeof *st->poison, cmp_str) != NULL;
}

/* Issue the next XREADGROUP of |rd| if it may read now. */
static void reader_read(struct reader *rd)
{
    struct pipeline *pl = rd->pl;
    if (rd->conn == NULL || rd->reading || !redis_conn_ready(rd->conn) ||
        !redis_conn_ready(pl->cmd) || !(rd->urgent ? urgent_room(pl) : has_room(pl)))
        return;
    bool history = false, scanning = false;
    for (size_t i = 0; i < rd->n; i++) {
        struct pl_stream *st = &pl->streams[rd->first + i];
        if (!st->group_ready)
            return;
        if (!st->history)
            continue;
        history = true;
        if (st->poison_scanned)
            continue;
        /* Before replaying our own pending entries, learn how often each
         * was delivered already (XPENDING's extended form). */
        scanning = true;
        if (!st->poison_scanning) {
            char count[16];
            snprintf(count, sizeof count, "%d", POISON_SCAN_MAX);
            const char *argv[] = { "XPENDING", st->key, pl->cfg.group, "-", "+", count,
                                   pl->cfg.consumer };
            if (redis_conn_cmd_argv(pl->cmd, on_pending_scan, st, 7, argv, NULL) == 0)
                st->poison_scanning = true;
        }
    }
    if (scanning)
        return;
    /* A take-over that is due goes first: entries a dead process left are
     * older than new ones, and new ones would take the room it waits for. */
    for (size_t i = 0; i < rd->n && !history; i++)
        if (pl->streams[rd->first + i].claim_due || pl->streams[rd->first + i].claiming)
            return;
    /* XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s1 .. sk id1 .. idk:
     * while any stream has history, read only those (no BLOCK); then all
     * with ">" and BLOCK. */
    const char *argv[8 + 2 * 8];
    int argc = 0;
    char count[24], block[24];
    snprintf(block, sizeof block, "%d", pl->cfg.block_ms);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = pl->cfg.group;
    argv[argc++] = pl->cfg.consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    if (!history) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    int first_key = argc;
    for (size_t i = 0; i < rd->n && i < 8; i++) {
        struct pl_stream *st = &pl->streams[rd->first + i];
        if (!history || st->history)
            argv[argc++] = st->key;
    }
    int nkeys = argc - first_key;
    for (int i = 0; i < nkeys; i++) {
        struct pl_stream *st = stream_by_key(pl, argv[first_key + i], strlen(argv[first_key + i]));
        argv[argc++] = history ? st->history_id : ">";
    }
    /* COUNT is per stream: all of them together within the bound. */
    size_t per = jobs_left(pl, rd->urgent) / (size_t)nkeys;
    if (per > (size_t)pl->cfg.batch_size)
        per = (size_t)pl->cfg.batch_size;
    if (per == 0)
        return; /* jobs ending make room and call again */
    snprintf(count, sizeof count, "%zu", per);
    if (redis_conn_cmd_argv(rd->conn, on_read, rd, argc, argv, NULL) == 0)
        rd->reading = per * (size_t)nkeys;
}

static void on_group(redisAsyncContext *ac, void *r, void *priv)
{
    struct pl_stream *st = priv;
    struct pipeline *pl = st->pl;
    redisReply *reply = r;
    st->group_creating = false;
    if (pl->closed || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        log_error("pipeline", "cannot create group %s on %s: %s", pl->cfg.group, st->key,
                  reply->str);
        return;
    }
    if (!st->group_ready)
        log_info("pipeline", "consumer group %s on %s%s ready (consumer %s)", pl->cfg.group,
                 st->key, st->urgent ? " (urgent)" : "", pl->cfg.consumer);
    st->group_ready = true;
    maybe_read(pl);
}

static void create_groups(struct pipeline *pl)
{
    if (!redis_conn_ready(pl->cmd))
        return;
    for (size_t i = 0; i < pl->n_streams; i++) {
        struct pl_stream *st = &pl->streams[i];
        if (st->group_ready || st->group_creating)
            continue;
        if (stream_create_group(pl->cmd, st->key, pl->cfg.group, on_group, st) == 0)
            st->group_creating = true;
    }
}

static bool groups_ready(const struct pipeline *pl)
{
    for (size_t i = 0; i < pl->n_streams; i++)
        if (!pl->streams[i].group_ready)
            return false;
    return true;
}

/* ---- take-over of idle entries, keeping ours fresh ---------------------- */

/* Start the entries a take-over's reply brings. */
static void claim_reply(struct pl_stream *st, const redisReply *reply)
{
    struct pipeline *pl = st->pl;
    if (pl->closed || pl->stopping || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("pipeline", "XAUTOCLAIM %s: %s", st->key, reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2)
        return;
    if (reply->element[0]->type == REDIS_REPLY_STRING)
        snprintf(st->claim_cursor, sizeof st->claim_cursor, "%s", reply->element[0]->str);
    /* Until the scan of the pending entries wraps around ("0-0"), there may
     * be more to take over: go on as room allows, before new reads. */
    st->claim_due = strcmp(st->claim_cursor, "0-0") != 0;
    size_t n = 0;
    start_entries(pl, st, reply->element[1], false, &n);
    if (n)
        log_info("pipeline", "took over %zu idle entries of %s", n, st->key);
    /* Redis 7: ids of pending entries deleted from the stream. */
    if (reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_ARRAY) {
        const redisReply *del = reply->element[2];
        for (size_t i = 0; i < del->elements; i++)
            if (del->element[i]->type == REDIS_REPLY_STRING)
                stream_ack(pl->cmd, st->key, pl->cfg.group, del->element[i]->str, NULL, NULL);
    }
}

static void on_autoclaim(redisAsyncContext *ac, void *r, void *priv)
{
    struct pl_stream *st = priv;
    claim_reply(st, r);
    st->claiming = 0; /* only now: the entries being started count until then */
    maybe_read(st->pl); /* more to take over, or new reads resume */
}

/* Issue the take-overs that are due (the timer marks them; a take-over that
 * has not scanned all pending entries yet stays due). Taking over is reading
 * too: only under our own name, and after our own pending entries of that
 * stream (the poison check knows their counts then). Unlike a read of new
 * entries it does not wait for room in the window, only for room among the
 * jobs held, and new entries are not read while one is due: a process busy
 * to its window (a backlog never leaves room to spare) still takes a dead
 * one's entries within about claim_idle_ms, and they queue for the window
 * behind the jobs already read. */
static void claim_due_entries(struct pipeline *pl)
{
    if (pl->stopping || pl->closed || !stream_member_holds_name(pl->member) ||
        !redis_conn_ready(pl->cmd))
        return;
    for (size_t i = 0; i < pl->n_streams; i++) {
        struct pl_stream *st = &pl->streams[i];
        /* No more than the bound on jobs held lets in. */
        size_t left = jobs_left(pl, st->urgent);
        if (!st->claim_due || st->claiming || st->history || !st->group_ready || left == 0)
            continue;
        int count = left < (size_t)pl->cfg.batch_size ? (int)left : pl->cfg.batch_size;
        if (stream_autoclaim(pl->cmd, st->key, pl->cfg.group, pl->cfg.consumer,
                             pl->cfg.claim_idle_ms, st->claim_cursor, count,
                             on_autoclaim, st) == 0) {
            st->claiming = (size_t)count;
            st->claim_due = false;
        }
    }
}

static void maybe_read(struct pipeline *pl)
{
    if (pl->stopping || pl->closed || !stream_member_holds_name(pl->member))
        return;
    claim_due_entries(pl);
    reader_read(&pl->urg);
    reader_read(&pl->bulk);
}

/* ---- figures for /metrics that live in Redis ----------------------------- */

static void on_xinfo(redisAsyncContext *ac, void *r, void *priv)
{
    struct pl_stream *st = priv;
    struct pipeline *pl = st->pl;
    redisReply *reply = r;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return;
    const char *sv[] = { st->key };
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
    for (size_t i = 0; i < pl->n_streams; i++) {
        const char *xinfo[] = { "XINFO", "GROUPS", pl->streams[i].key };
        redis_conn_cmd_argv(pl->cmd, on_xinfo, &pl->streams[i], 3, xinfo, NULL);
    }
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
    const char *c1[] = { "cmd" }, *c2[] = { "read" }, *c3[] = { "urgent" };
    stats_set(STATS_REDIS_CONNECTED, c1, pl->cmd && redis_conn_ready(pl->cmd) ? 1 : 0);
    stats_set(STATS_REDIS_CONNECTED, c2,
              pl->bulk.conn && redis_conn_ready(pl->bulk.conn) ? 1 : 0);
    if (pl->urg.conn)
        stats_set(STATS_REDIS_CONNECTED, c3, redis_conn_ready(pl->urg.conn) ? 1 : 0);
    /* Scale-out and Sentinel figures kept by queue/ (issue #8), summed over
     * the streams. */
    struct stream_acker_counts sum = { 0 };
    for (size_t i = 0; i < pl->n_streams; i++) {
        struct stream_acker_counts ac;
        if (pl->streams[i].acker == NULL)
            continue;
        stream_acker_counts(pl->streams[i].acker, &ac);
        sum.waits_ok += ac.waits_ok;
        sum.waits_short += ac.waits_short;
        sum.waits_failed += ac.waits_failed;
        sum.already_acked += ac.already_acked;
    }
    const char *w1[] = { "ok" }, *w2[] = { "short" }, *w3[] = { "failed" };
    stats_set(STATS_REDIS_WAITS, w1, (double)sum.waits_ok);
    stats_set(STATS_REDIS_WAITS, w2, (double)sum.waits_short);
    stats_set(STATS_REDIS_WAITS, w3, (double)sum.waits_failed);
    stats_set(STATS_ACKS_ALREADY_DONE, NULL, (double)sum.already_acked);
    if (pl->cmd)
        stats_set(STATS_REDIS_MASTER_CHANGES, c1, (double)redis_conn_master_changes(pl->cmd));
    if (pl->bulk.conn)
        stats_set(STATS_REDIS_MASTER_CHANGES, c2,
                  (double)redis_conn_master_changes(pl->bulk.conn));
    if (pl->urg.conn)
        stats_set(STATS_REDIS_MASTER_CHANGES, c3,
                  (double)redis_conn_master_changes(pl->urg.conn));
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
    struct reader *readers[] = { &pl->bulk, &pl->urg };
    for (int i = 0; i < 2; i++)
        if (!pl->closed && readers[i]->conn &&
            redis_conn_stalled(readers[i]->conn, (uint64_t)pl->cfg.block_ms + REDIS_STALL_MS))
            redis_conn_reset(readers[i]->conn, "blocking read overdue");
    if (!pl->closed && pl->cmd && redis_conn_stalled(pl->cmd, REDIS_STALL_MS))
        redis_conn_reset(pl->cmd, "replies overdue");
    if (pl->closed || pl->stopping || !groups_ready(pl) || !redis_conn_ready(pl->cmd))
        return;
    /* Keep the entries we work on fresh so no other process takes them. */
    if (pl->n_jobs > 0) {
        const char **ids = xmalloc(pl->n_jobs * sizeof *ids);
        for (size_t i = 0; i < pl->n_streams; i++) {
            size_t n = 0;
            for (struct job *j = pl->jobs; j; j = j->next)
                if (j->src == &pl->streams[i])
                    ids[n++] = j->entry.id;
            if (n)
                stream_touch(pl->cmd, pl->streams[i].key, pl->cfg.group, pl->cfg.consumer,
                             ids, n, NULL, NULL);
        }
        free(ids);
    }
    uint64_t now = mono_ms();
    if (now - pl->last_poll_ms >= 5000) {
        pl->last_poll_ms = now;
        poll_redis_figures(pl);
    }
    if (pl->cfg.trim_interval_ms > 0 && now - pl->last_trim_ms >= (uint64_t)pl->cfg.trim_interval_ms) {
        pl->last_trim_ms = now;
        for (size_t i = 0; i < pl->n_streams; i++)
            stream_trim(pl->cmd, pl->streams[i].key, on_trimmed, pl);
    }
    /* Take over idle entries: the urgent stream on every tick, the bulk
     * streams in turn. */
    for (size_t i = 0; i < pl->n_streams; i++)
        if (pl->streams[i].urgent || i == pl->claim_next % pl->n_streams)
            pl->streams[i].claim_due = true;
    claim_due_entries(pl);
    pl->claim_next++;
    if (pl->n_streams > 1 && pl->streams[pl->claim_next % pl->n_streams].urgent)
        pl->claim_next++;
}

/* ---- housekeeping: escalations due, device age sweep ---------------------- */

static void on_escalations_run(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->escalating = false;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            char tenant[80];
            const char *bar = strchr(e->str, '|');
            size_t tl = bar ? (size_t)(bar - e->str) : 0;
            snprintf(tenant, sizeof tenant, "%.*s", (int)(tl < 79 ? tl : 79), e->str);
            const char *v[] = { tenant, bar ? bar + 1 : "?" };
            stats_add(STATS_ESCALATIONS, v, 1);
        }
        log_warn("pipeline", "%zu absence alert(s) reached no device in time: escalated",
                 reply->elements);
    } else if (reply && reply->type == REDIS_REPLY_ERROR && !pl->closed) {
        log_warn("pipeline", "escalation check failed: %s", reply->str);
    }
}

static void on_prune_step(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->pruning = false;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        if (reply && reply->type == REDIS_REPLY_ERROR && !pl->closed)
            log_warn("registry", "device age sweep failed: %s", reply->str);
        pl->prune_active = false; /* tried again at the next sweep */
        return;
    }
    if (reply->element[1]->type == REDIS_REPLY_INTEGER && reply->element[1]->integer > 0) {
        stats_add(STATS_PRUNED, NULL, (double)reply->element[1]->integer);
        log_info("registry", "removed %lld device(s) not registered again for %lld days",
                 (long long)reply->element[1]->integer,
                 (long long)(pl->cfg.token_max_age_ms / 86400000));
    }
    snprintf(pl->prune_cursor, sizeof pl->prune_cursor, "%s", reply->element[0]->str);
    if (strcmp(pl->prune_cursor, "0") == 0)
        pl->prune_active = false;
}

static void on_prune_lock(redisAsyncContext *ac, void *r, void *priv)
{
    struct pipeline *pl = priv;
    redisReply *reply = r;
    pl->pruning = false;
    /* SET NX answers OK to the one process that sweeps this hour. */
    if (reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0) {
        pl->prune_active = true;
        snprintf(pl->prune_cursor, sizeof pl->prune_cursor, "0");
    }
}

static void on_house_timer(uv_timer_t *t)
{
    struct pipeline *pl = t->data;
    if (pl->closed || pl->stopping || !redis_conn_ready(pl->cmd))
        return;
    int64_t now = now_ms();
    if (!pl->escalating &&
        escalation_run_due(pl->cmd, pl->cfg.prefix, pl->cfg.escalations_maxlen, now, 100,
                           on_escalations_run, pl) == 0)
        pl->escalating = true;
    if (pl->cfg.token_max_age_ms <= 0 || pl->pruning)
        return;
    if (pl->prune_active) {
        if (guardian_prune_step(pl->cmd, pl->cfg.prefix, pl->prune_cursor,
                                now - pl->cfg.token_max_age_ms, PRUNE_BATCH, on_prune_step,
                                pl) == 0)
            pl->pruning = true;
        return;
    }
    uint64_t mono = mono_ms();
    if (pl->last_prune_ms != 0 && mono - pl->last_prune_ms < PRUNE_EVERY_MS)
        return;
    pl->last_prune_ms = mono;
    /* One sweep per hour across all daemons: whoever takes the lock. */
    size_t n = strlen(pl->cfg.prefix) + 16;
    char lock[n], px[24];
    snprintf(lock, n, "%sprune:lock", pl->cfg.prefix);
    snprintf(px, sizeof px, "%d", PRUNE_EVERY_MS - 60000);
    const char *argv[] = { "SET", lock, pl->cfg.consumer, "NX", "PX", px };
    if (redis_conn_cmd_argv(pl->cmd, on_prune_lock, pl, 6, argv, NULL) == 0)
        pl->pruning = true;
}

/* ---- connections ------------------------------------------------------- */

/* The consumer name was won (start reading) or lost (maybe_read stops). */
static void on_member_change(void *arg)
{
    maybe_read(arg);
}

static void on_cmd_ready(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    stream_member_tick(pl->member); /* reading waits for the consumer name */
    create_groups(pl);
    delivery_ctx_flush(&pl->dctx);
    maybe_read(pl);
}

static void on_rd_ready(struct redis_conn *c, void *user)
{
    struct reader *rd = user;
    struct pipeline *pl = rd->pl;
    /* After any reconnect, first re-read this consumer's own pending
     * entries: some may have been released unacknowledged meanwhile. */
    for (size_t i = 0; i < rd->n; i++) {
        struct pl_stream *st = &pl->streams[rd->first + i];
        st->history = true;
        st->poison_scanned = false;
        snprintf(st->history_id, sizeof st->history_id, "0");
    }
    maybe_read(pl);
}

static void on_cmd_down(struct redis_conn *c, void *user)
{
    struct pipeline *pl = user;
    for (size_t i = 0; i < pl->n_streams; i++)
        pl->streams[i].group_creating = false;
}

static void on_rd_down(struct redis_conn *c, void *user)
{
    struct reader *rd = user;
    rd->reading = 0;
}

struct pipeline *pipeline_new(uv_loop_t *loop, const struct pipeline_config *cfg)
{
    struct pipeline *pl = xcalloc(1, sizeof *pl);
    pl->loop = loop;
    pl->cfg = *cfg;
    size_t n = strlen(cfg->prefix) + 8;
    pl->dead_stream = xmalloc(n);
    snprintf(pl->dead_stream, n, "%sdead", cfg->prefix);
    bool urgent = cfg->urgent_stream && cfg->urgent_stream[0];
    pl->n_streams = cfg->n_streams + (urgent ? 1 : 0);
    pl->streams = xcalloc(pl->n_streams, sizeof *pl->streams);
    for (size_t i = 0; i < pl->n_streams; i++) {
        struct pl_stream *st = &pl->streams[i];
        st->pl = pl;
        st->urgent = i >= cfg->n_streams;
        st->key = xstrdup(st->urgent ? cfg->urgent_stream : cfg->streams[i]);
        st->history = true;
        snprintf(st->history_id, sizeof st->history_id, "0");
        snprintf(st->claim_cursor, sizeof st->claim_cursor, "0-0");
    }
    struct redis_conn_config rc = cfg->redis;
    rc.name = "cmd";
    pl->cmd = redis_conn_new(loop, &rc, on_cmd_ready, on_cmd_down, pl);
    registry_init(pl->cmd);
    receipts_init(pl->cmd);
    stream_init(pl->cmd);
    guardian_init(pl->cmd);
    escalation_init(pl->cmd);
    pl->bulk = (struct reader){ .pl = pl, .first = 0, .n = cfg->n_streams };
    rc.name = "read";
    pl->bulk.conn = redis_conn_new(loop, &rc, on_rd_ready, on_rd_down, &pl->bulk);
    pl->urg = (struct reader){ .pl = pl, .urgent = true, .first = cfg->n_streams,
                               .n = urgent ? 1 : 0 };
    if (urgent) {
        rc.name = "urgent";
        pl->urg.conn = redis_conn_new(loop, &rc, on_rd_ready, on_rd_down, &pl->urg);
    }
    for (size_t i = 0; i < pl->n_streams; i++) {
        struct stream_acker_config acfg = { pl->streams[i].key, cfg->group, cfg->wait_replicas,
                                            cfg->wait_timeout_ms };
        pl->streams[i].acker = stream_acker_new(loop, pl->cmd, &acfg);
    }
    /* The name lease lives as long as entries do before others take them.
     * Gone consumers are swept from the first stream's group (where every
     * process reads). */
    struct stream_member_config mcfg = { pl->streams[0].key, cfg->group, cfg->consumer,
                                         cfg->prefix, cfg->claim_idle_ms,
                                         cfg->consumer_gone_ms };
    pl->member = stream_member_new(loop, pl->cmd, &mcfg, on_member_change, pl);
    uv_timer_init(loop, &pl->claim_timer);
    pl->claim_timer.data = pl;
    uint64_t every = (uint64_t)(cfg->claim_idle_ms / 3);
    if (every < 100)
        every = 100;
    uv_timer_start(&pl->claim_timer, on_claim_timer, every, every);
    uv_timer_init(loop, &pl->stop_timer);
    pl->stop_timer.data = pl;
    uv_timer_init(loop, &pl->house_timer);
    pl->house_timer.data = pl;
    uv_timer_start(&pl->house_timer, on_house_timer, HOUSEKEEPING_MS, HOUSEKEEPING_MS);
    pl->timers_open = 4;
    struct delivery_ctx *dc = &pl->dctx;
    dc->cmd = pl->cmd;
    dc->keys = (struct settle_keys){ cfg->prefix, cfg->receipts_maxlen, cfg->dead_maxlen,
                                     cfg->status_ttl_s, cfg->dead_payload_ttl_s };
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
    redis_conn_close(pl->bulk.conn);
    if (pl->urg.conn)
        redis_conn_close(pl->urg.conn);
    redis_conn_close(pl->cmd);
    pl->bulk.conn = pl->urg.conn = pl->cmd = NULL;
    if (pl->stop_done)
        pl->stop_done(pl->stop_arg);
}

static void on_stop_timer(uv_timer_t *t)
{
    struct pipeline *pl = t->data;
    pl->stop_waited_ms += 50;
    bool drained = pl->dctx.inflight == 0 && delivery_ctx_unwritten(&pl->dctx) == 0 &&
                   pl->dctx.n_retries == 0 && !stream_member_leaving(pl->member);
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
    uv_timer_stop(&pl->house_timer);
    stream_member_leave(pl->member); /* a restart under this name may read at once */
    pl->dctx.stopping = true;
    log_info("pipeline", "stopping: %zu deliveries in flight", pl->dctx.inflight);
    uv_timer_start(&pl->stop_timer, on_stop_timer, 0, 50);
}

static void on_timer_closed_arg(struct pipeline *pl)
{
    if (--pl->timers_open == 0) {
        for (size_t i = 0; i < pl->n_streams; i++) {
            free_poison(&pl->streams[i]);
            free(pl->streams[i].key);
        }
        free(pl->streams);
        free(pl->dead_stream);
        free(pl->job_hash);
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
    if (pl->bulk.conn)
        redis_conn_close(pl->bulk.conn);
    if (pl->urg.conn)
        redis_conn_close(pl->urg.conn);
    if (pl->cmd)
        redis_conn_close(pl->cmd);
    for (size_t i = 0; i < pl->n_streams; i++) {
        stream_acker_free(pl->streams[i].acker); /* after the close: no reply outstanding */
        pl->streams[i].acker = NULL;
    }
    stream_member_free(pl->member);
    pl->member = NULL;
    uv_close((uv_handle_t *)&pl->claim_timer, on_timer_closed);
    uv_close((uv_handle_t *)&pl->stop_timer, on_timer_closed);
    uv_close((uv_handle_t *)&pl->house_timer, on_timer_closed);
    delivery_ctx_close(&pl->dctx, on_dctx_closed, pl);
}

bool pipeline_ready(const struct pipeline *pl)
{
    return !pl->closed && !pl->stopping && groups_ready(pl) && pl->bulk.conn && pl->cmd &&
           redis_conn_ready(pl->bulk.conn) && redis_conn_ready(pl->cmd) &&
           (pl->urg.conn == NULL || redis_conn_ready(pl->urg.conn)) &&
           stream_member_holds_name(pl->member);
}

void pipeline_get_stats(const struct pipeline *pl, struct pipeline_stats *out)
{
    *out = pl->st;
    out->inflight = pl->dctx.inflight;
    out->jobs = pl->n_jobs;
}
