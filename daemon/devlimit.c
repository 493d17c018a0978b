/* Per-device send limits; see devlimit.h for the model. */
#include "daemon/devlimit.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

const struct devlimit_config devlimit_fcm = {
    .per_minute = 240, .per_hour = 5000, .burst = 20, .refill_ms = 180000, .slots = 65536,
};

/* Fixed windows (minute, hour) and a token bucket for collapsible sends. */
struct slot {
    uint64_t key;            /* 0 = empty */
    int64_t minute_start, hour_start;
    int32_t minute_count, hour_count;
    int32_t tokens;          /* collapsible sends left */
    int64_t refilled_at;     /* last time the bucket was topped up */
};

struct devlimit {
    struct devlimit_config cfg;
    struct slot *slots;
    size_t mask;
};

/* FNV-1a, then a final mix: tokens are already random, this only spreads. */
static uint64_t hash_token(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;
}

struct devlimit *devlimit_new(const struct devlimit_config *cfg)
{
    struct devlimit *l = xcalloc(1, sizeof *l);
    l->cfg = *cfg;
    size_t n = 1;
    while (n < cfg->slots)
        n <<= 1;
    l->slots = xcalloc(n, sizeof *l->slots);
    l->mask = n - 1;
    return l;
}

void devlimit_free(struct devlimit *l)
{
    if (l == NULL)
        return;
    free(l->slots);
    free(l);
}

int64_t devlimit_take(struct devlimit *l, const char *token, bool collapsible,
                      int64_t now_ms)
{
    uint64_t key = hash_token(token);
    struct slot *s = &l->slots[key & l->mask];
    if (s->key != key) {
        /* A new device (or the slot's former one is forgotten). */
        memset(s, 0, sizeof *s);
        s->key = key;
        s->minute_start = s->hour_start = s->refilled_at = now_ms;
        s->tokens = l->cfg.burst;
    }
    if (now_ms - s->minute_start >= 60000) {
        s->minute_start = now_ms;
        s->minute_count = 0;
    }
    if (now_ms - s->hour_start >= 3600000) {
        s->hour_start = now_ms;
        s->hour_count = 0;
    }
    if (l->cfg.burst > 0 && l->cfg.refill_ms > 0 && s->tokens < l->cfg.burst) {
        int64_t back = (now_ms - s->refilled_at) / l->cfg.refill_ms;
        if (back > 0) {
            s->tokens = back >= l->cfg.burst - s->tokens ? l->cfg.burst
                                                          : s->tokens + (int32_t)back;
            s->refilled_at += back * l->cfg.refill_ms;
        }
    }
    if (s->tokens >= l->cfg.burst)
        s->refilled_at = now_ms; /* a full bucket does not bank time */
    int64_t until = 0;
    if (l->cfg.per_minute > 0 && s->minute_count >= l->cfg.per_minute)
        until = s->minute_start + 60000;
    if (l->cfg.per_hour > 0 && s->hour_count >= l->cfg.per_hour &&
        s->hour_start + 3600000 > until)
        until = s->hour_start + 3600000;
    if (collapsible && l->cfg.burst > 0 && s->tokens <= 0 &&
        s->refilled_at + l->cfg.refill_ms > until)
        until = s->refilled_at + l->cfg.refill_ms;
    if (until > now_ms)
        return until;
    s->minute_count++;
    s->hour_count++;
    if (collapsible && l->cfg.burst > 0)
        s->tokens--;
    return 0;
}
