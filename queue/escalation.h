/*
 * Escalation of unreported-absence alerts that reached nobody: the backend
 * reads <prefix>escalations and falls back to SMS or a phone call.
 *
 *   <prefix>escalate           zset  TENANT|EVENT -> time the check is due (ms)
 *   <prefix>escalate:data      hash  TENANT|EVENT -> JSON {tenant, event,
 *                                    student, users: [...]} (ids only)
 *   <prefix>{TENANT}:escalated:EVENT  string, 7 days: this alert was decided
 *                                    (escalated or reached a device); a replay
 *                                    of the event schedules nothing again
 *   <prefix>escalations        stream, MAXLEN ~: event tenant student users
 *                                    why at
 *
 * A check reads the alert's status hash (<prefix>{TENANT}:status:EVENT):
 * when a device reached "sent" (or "opened") nothing is written; otherwise
 * one stream entry with why = "no_device" (no recipient had a device),
 * "undeliverable" (every delivery ended without reaching a device) or
 * "not_delivered_in_time" (still retrying when the time was up). Each check
 * is one Lua script that removes the schedule entry it acts on, so several
 * daemons never escalate one alert twice.
 */
#ifndef VARSEL_ESCALATION_H
#define VARSEL_ESCALATION_H

#include <stddef.h>
#include <stdint.h>

#include "queue/redis.h"

void escalation_init(struct redis_conn *c);

/*
 * Schedule the check of one alert at |due_ms| (idempotent: a replay keeps
 * the first schedule, and a decided alert is not scheduled again).
 * |users| are the recipients' ids. Reply: 1 scheduled, 0 already there or
 * decided.
 */
int escalation_schedule(struct redis_conn *c, const char *prefix, const char *tenant,
                        const char *event_id, const char *student,
                        const char *const *users, size_t n_users, int64_t due_ms,
                        redisCallbackFn *fn, void *priv);

/*
 * Check one alert now, before its time: escalates only when there is no
 * hope left (no device, or every delivery final and none sent); otherwise
 * leaves the schedule alone. Reply: the "why" written, or nil.
 */
int escalation_check_now(struct redis_conn *c, const char *prefix, const char *tenant,
                         const char *event_id, long maxlen, int64_t now_ms,
                         redisCallbackFn *fn, void *priv);

/*
 * Run the checks that are due at |now_ms| (at most |count|). Reply: an
 * array with "TENANT|why" per escalation written.
 */
int escalation_run_due(struct redis_conn *c, const char *prefix, long maxlen, int64_t now_ms,
                       int count, redisCallbackFn *fn, void *priv);

#endif
