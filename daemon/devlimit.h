/*
 * Per-device send limits, kept below what the provider enforces so that a
 * burst to one phone is paced by varsel instead of answered with 429s.
 * FCM allows an Android device 240 messages a minute and 5,000 an hour, and
 * collapsible messages (ours all carry a collapse key) a burst of 20 that
 * refills by one every 3 minutes (PROTOCOLS.md, FCM quotas).
 *
 * The table is a fixed-size, direct-mapped cache keyed by a hash of the
 * token: memory stays constant however many devices there are (a fan-out to
 * a million phones touches each once). A device whose slot is taken by
 * another loses its history, so the limiter may let a rare burst through;
 * the provider's 429 (a durable retry after Retry-After) stays the backstop.
 * One process's view only: with several daemons each paces what it sends.
 */
#ifndef VARSEL_DEVLIMIT_H
#define VARSEL_DEVLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct devlimit_config {
    int per_minute;          /* sends a minute, 0 = no limit */
    int per_hour;            /* sends an hour, 0 = no limit */
    int burst;               /* collapsible sends at once, 0 = no limit */
    int64_t refill_ms;       /* one collapsible send comes back this often */
    size_t slots;            /* table size (rounded up to a power of two) */
};

/* FCM's numbers, 65,536 slots (~2.5 MB). */
extern const struct devlimit_config devlimit_fcm;

struct devlimit;

struct devlimit *devlimit_new(const struct devlimit_config *cfg);
void devlimit_free(struct devlimit *l);

/*
 * One send to |token| at |now_ms|: returns 0 and counts it when it may go
 * now, else the time (ms) from which it may, counting nothing.
 */
int64_t devlimit_take(struct devlimit *l, const char *token, bool collapsible,
                      int64_t now_ms);

#endif
