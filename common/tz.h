/*
 * Local time in a named time zone (IANA names such as Europe/Oslo), for
 * quiet hours and school days. Uses the C library's tz database through
 * the TZ variable: varseld has one thread and formats every log time in
 * UTC, so switching TZ is safe; switching only when the zone differs from
 * the last one keeps tzset from re-reading the zone file per call.
 */
#ifndef VARSEL_TZ_H
#define VARSEL_TZ_H

#include <stdint.h>
#include <time.h>

/* Local broken-down time of |epoch_s| in |zone|. Returns 0 or -1. */
int tz_local(const char *zone, int64_t epoch_s, struct tm *out);

/*
 * The instant (seconds since the epoch) of local date |y|-|mon|-|day|
 * (mon 1..12; day may overflow: mktime normalises it) at |minute_of_day|
 * in |zone|. Returns -1 on error.
 */
int64_t tz_instant(const char *zone, int y, int mon, int day, int minute_of_day);

/*
 * The next instant at or after |epoch_s| when the local clock in |zone|
 * shows |minute_of_day| (today's if still ahead, else tomorrow's).
 */
int64_t tz_next_minute(const char *zone, int64_t epoch_s, int minute_of_day);

#endif
