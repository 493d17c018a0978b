/* Per-device send limits (daemon/devlimit.c) with FCM's numbers. */
#include "tests/unit/test.h"

#include "daemon/devlimit.h"

#define T0 1800000000000LL

/* 20 collapsible sends at once, then one per 3 minutes. */
TEST(collapsible_burst_then_refill)
{
    struct devlimit *l = devlimit_new(&devlimit_fcm);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", true, T0 + i));
    int64_t at = devlimit_take(l, "tok-a", true, T0 + 100);
    ASSERT_EQ_INT(T0 + 180000, at);
    /* Refused sends are not counted: asking again changes nothing. */
    ASSERT_EQ_INT(T0 + 180000, devlimit_take(l, "tok-a", true, T0 + 200));
    /* Not collapsible: only the per-minute limit applies. */
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", false, T0 + 300));
    /* One comes back after 3 minutes, one more after 6. */
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", true, T0 + 180000));
    ASSERT_EQ_INT(T0 + 360000, devlimit_take(l, "tok-a", true, T0 + 180001));
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", true, T0 + 360000));
    /* Another device is not affected. */
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-b", true, T0 + 100));
    devlimit_free(l);
}

/* 240 a minute, whatever the kind. */
TEST(per_minute_limit)
{
    struct devlimit *l = devlimit_new(&devlimit_fcm);
    for (int i = 0; i < 240; i++)
        ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", false, T0 + i * 10));
    ASSERT_EQ_INT(T0 + 60000, devlimit_take(l, "tok-a", false, T0 + 5000));
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", false, T0 + 60000));
    devlimit_free(l);
}

/* 5,000 an hour. */
TEST(per_hour_limit)
{
    struct devlimit_config c = devlimit_fcm;
    c.per_minute = 0;
    struct devlimit *l = devlimit_new(&c);
    for (int i = 0; i < 5000; i++)
        ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", false, T0 + i));
    ASSERT_EQ_INT(T0 + 3600000, devlimit_take(l, "tok-a", false, T0 + 6000));
    devlimit_free(l);
}

/* A full bucket does not bank time: after an hour of silence still 20. */
TEST(full_bucket_does_not_bank)
{
    struct devlimit *l = devlimit_new(&devlimit_fcm);
    ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", true, T0));
    int64_t t = T0 + 3600000;
    for (int i = 0; i < 20; i++)
        ASSERT_EQ_INT(0, devlimit_take(l, "tok-a", true, t));
    ASSERT(devlimit_take(l, "tok-a", true, t) > t);
    devlimit_free(l);
}

/* Memory is fixed: a million devices reuse the same slots. */
TEST(many_devices_fixed_table)
{
    struct devlimit_config c = devlimit_fcm;
    c.slots = 1024;
    struct devlimit *l = devlimit_new(&c);
    char tok[32];
    for (int i = 0; i < 1000000; i++) {
        snprintf(tok, sizeof tok, "t%d", i);
        ASSERT_EQ_INT(0, devlimit_take(l, tok, true, T0 + i));
    }
    devlimit_free(l);
}

TEST_MAIN(T(collapsible_burst_then_refill), T(per_minute_limit), T(per_hour_limit),
          T(full_bucket_does_not_bank), T(many_devices_fixed_table))
