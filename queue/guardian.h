/*
 * Per-guardian data beyond devices: notification preferences, erasure and
 * the pruning of devices that stopped registering. Layout (docs/redis.md):
 *
 *   <prefix>{TENANT}:devices:USER   field ":prefs" -> JSON {muted: [type, ...],
 *                                   quiet: [start_min, end_min] (absent: none),
 *                                   updated_at}. Device ids never contain ':',
 *                                   so the field cannot clash with a device, and
 *                                   the one HGETALL that finds a guardian's
 *                                   devices brings the preferences along.
 *   <prefix>{TENANT}:gone:USER      field ":erased" -> occurred_at of the last
 *                                   user.erase: older registrations and
 *                                   preferences arriving late are refused.
 *
 * Every write is one Lua script that compares occurred_at, like the registry.
 */
#ifndef VARSEL_GUARDIAN_H
#define VARSEL_GUARDIAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/event.h"
#include "queue/redis.h"

#define GUARDIAN_PREFS_FIELD ":prefs"   /* in the devices hash */
#define GUARDIAN_ERASED_FIELD ":erased" /* in the tombstones (gone) hash */

struct guardian_prefs {
    unsigned muted_mask;        /* bit (1u << enum event_type) per muted type */
    int quiet_start_min;        /* minutes after local midnight, -1: no quiet hours */
    int quiet_end_min;
};

/* Register the scripts with |c| (once per connection object). */
void guardian_init(struct redis_conn *c);

/*
 * Store the preferences of a preferences.set event (replacing what is
 * stored unless that is newer). Reply: "ok", "stale" or an error.
 */
int guardian_set_prefs(struct redis_conn *c, const char *prefix, const struct event *ev,
                       redisCallbackFn *fn, void *priv);

/* Parse the ":prefs" value; returns 0 or -1 (then |out| means "none"). */
int guardian_prefs_parse(const char *json, size_t len, struct guardian_prefs *out);

/* True when minute-of-day |now_min| falls in the quiet hours of |p| (which
 * may wrap midnight: 21:00-07:00). */
bool guardian_in_quiet_hours(const struct guardian_prefs *p, int now_min);

/*
 * Erase everything stored about one guardian: devices and their token
 * index entries, preferences, the per-event statuses of the guardian's
 * deliveries, held or scheduled retries, and the requests kept for replay of
 * the guardian's given-up deliveries (<prefix>dead:payload:TENANT:USER:...).
 * Runs as a series of bounded
 * steps (SCAN / HSCAN in batches), so Redis is never blocked for long.
 * Returns -1 when nothing could be sent (|done| is then never called);
 * otherwise |done| gets 0 later when all is erased, -1 when a step failed
 * (the caller keeps the event pending; erasing again is harmless). The
 * object frees itself.
 */
struct guardian_erase;
int guardian_erase_start(struct redis_conn *c, const char *prefix, const char *tenant,
                         const char *user, int64_t occurred_ms,
                         void (*done)(int rc, size_t removed, void *arg), void *arg);

/*
 * One step of the device age sweep: SCAN |count| keys from |cursor| over
 * every tenant's devices hashes and remove devices whose updated_at is
 * older than |cutoff_ms| (with their token index entry and a tombstone).
 * Reply: [next cursor, devices removed].
 */
int guardian_prune_step(struct redis_conn *c, const char *prefix, const char *cursor,
                        int64_t cutoff_ms, int count, redisCallbackFn *fn, void *priv);

#endif
