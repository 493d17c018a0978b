/* Local time in named zones; see tz.h for why TZ is switched. */
#include "common/tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char current[80];

static int use_zone(const char *zone)
{
    if (zone == NULL || zone[0] == '\0' || strlen(zone) >= sizeof current - 1)
        return -1;
    if (strcmp(current, zone) != 0) {
        char tzv[sizeof current + 1];
        snprintf(tzv, sizeof tzv, ":%s", zone); /* ":" = a file of the tz database */
        if (setenv("TZ", tzv, 1) != 0)
            return -1;
        tzset();
        snprintf(current, sizeof current, "%s", zone);
    }
    return 0;
}

int tz_local(const char *zone, int64_t epoch_s, struct tm *out)
{
    if (use_zone(zone) != 0)
        return -1;
    time_t t = (time_t)epoch_s;
    return localtime_r(&t, out) ? 0 : -1;
}

int64_t tz_instant(const char *zone, int y, int mon, int day, int minute_of_day)
{
    if (use_zone(zone) != 0)
        return -1;
    struct tm tm = { 0 };
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = minute_of_day / 60;
    tm.tm_min = minute_of_day % 60;
    tm.tm_isdst = -1; /* let the zone decide (summer time) */
    time_t t = mktime(&tm);
    return t == (time_t)-1 ? -1 : (int64_t)t;
}

int64_t tz_next_minute(const char *zone, int64_t epoch_s, int minute_of_day)
{
    struct tm now;
    if (tz_local(zone, epoch_s, &now) != 0)
        return -1;
    int64_t t = tz_instant(zone, now.tm_year + 1900, now.tm_mon + 1, now.tm_mday,
                           minute_of_day);
    if (t >= 0 && t < epoch_s)
        t = tz_instant(zone, now.tm_year + 1900, now.tm_mon + 1, now.tm_mday + 1,
                       minute_of_day);
    return t;
}
