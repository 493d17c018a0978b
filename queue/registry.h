/*
 * Device registry in Redis (docs/redis.md):
 *   <prefix>{TENANT}:devices:USER   hash DEVICE -> JSON {platform, token, app,
 *                                   locale, environment, updated_at}
 *   <prefix>{TENANT}:gone:USER      hash DEVICE -> updated_at of the logout
 *                                   or removal (tombstone, expires after 30 d)
 *   <prefix>token:APP:TOKEN         JSON {tenant, user, device}: who holds a
 *                                   token now (reverse index)
 * Every change runs as one Lua script, so it is atomic, and carries the
 * event's occurred_at: an update older than what is stored never overwrites
 * it (replays and several daemons may reorder events).
 */
#ifndef VARSEL_REGISTRY_H
#define VARSEL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "queue/event.h"
#include "queue/redis.h"

/* Scripts used by this module; registers them with |c| (call once per conn). */
void registry_init(struct redis_conn *c);

/*
 * Apply a device.register or device.unregister event. |fn| receives the
 * script's reply: "ok", "stale" (an newer update is stored) or an error;
 * NULL when the connection dropped. Returns 0 or -1 (not connected).
 */
int registry_apply(struct redis_conn *c, const char *prefix, const struct event *ev,
                   redisCallbackFn *fn, void *priv);

/*
 * Remove a dead token after the provider said so. When |timestamp_ms| >= 0
 * (APNs 410), the device is kept if it registered again after that time.
 * Reply: "removed", "reregistered", "absent" or "moved".
 */
int registry_remove_token(struct redis_conn *c, const char *prefix, const char *tenant,
                          const char *user, const char *device, const char *app,
                          const char *token, int64_t timestamp_ms,
                          redisCallbackFn *fn, void *priv);

/* "<prefix>{TENANT}:KIND:USER" (kind "devices" or "gone"), malloc'd. */
char *registry_key_user(const char *prefix, const char *kind, const char *tenant,
                        const char *user);

/* HGET of one device's record (nil when it logged out or was removed). */
int registry_get_device(struct redis_conn *c, const char *prefix, const char *tenant,
                        const char *user, const char *device, redisCallbackFn *fn,
                        void *priv);

/* HGETALL of one user's devices hash. */
int registry_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                    const char *user, redisCallbackFn *fn, void *priv);

/*
 * HGETALL of the devices hash of each of |n| recipients, pipelined, as
 * registry_lookup for each but without hiredis's formatter. |fn| is called
 * once per recipient, in order, with that recipient's reply (an array, an
 * error, or NULL when the connection dropped). Returns how many lookups
 * were sent: n, or fewer when the connection is not ready (|fn| is never
 * called for the others).
 */
size_t registry_lookup_many(struct redis_conn *c, const char *prefix, const char *tenant,
                            const struct event_recipient *users, size_t n,
                            redisCallbackFn *fn, void *priv);

/* One device as stored. The strings share one allocation owned by the
 * struct (starting at |device|): free them with registry_device_clear. */
struct registry_device {
    char *device, *platform, *token, *app, *locale, *environment;
    int64_t updated_at;
};

/*
 * Parse one field/value pair of the devices hash. Returns 0, or -1 for a
 * value that is not a device record (it is then skipped and logged).
 */
int registry_device_parse(const char *device, const char *json, size_t len,
                          struct registry_device *out);
void registry_device_clear(struct registry_device *d);

#endif
