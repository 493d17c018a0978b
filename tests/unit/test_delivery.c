/*
 * Retry policy of daemon/delivery.c: full-jitter backoff bounds, the cap,
 * Retry-After as a floor, and the per-type useful lifetime.
 */
#include "tests/unit/test.h"

#include "daemon/delivery.h"

TEST(backoff_full_jitter_bounds)
{
    /* The ceiling doubles per attempt: 1000, 2000, 4000, ... */
    for (int attempt = 1; attempt <= 6; attempt++) {
        int64_t ceiling = 1000LL << (attempt - 1);
        ASSERT_EQ_INT(0, delivery_backoff_ms(1000, 600000, attempt, -1, 0.0));
        int64_t hi = delivery_backoff_ms(1000, 600000, attempt, -1, 0.999999);
        ASSERT(hi < ceiling && hi >= ceiling - 1);
        ASSERT_EQ_INT(ceiling / 2, delivery_backoff_ms(1000, 600000, attempt, -1, 0.5));
    }
}

TEST(backoff_capped)
{
    ASSERT_EQ_INT(5000, delivery_backoff_ms(1000, 10000, 30, -1, 0.5));
    ASSERT(delivery_backoff_ms(1000, 10000, 100, -1, 0.999) < 10000);
    /* No overflow for absurd attempt numbers. */
    ASSERT(delivery_backoff_ms(2000, 600000, 1000000, -1, 0.999) < 600000);
}

TEST(retry_after_is_a_floor)
{
    ASSERT_EQ_INT(30000, delivery_backoff_ms(1000, 600000, 1, 30, 0.1));
    /* Above the cap too: the provider's word wins. */
    ASSERT_EQ_INT(900000, delivery_backoff_ms(1000, 600000, 3, 900, 0.9));
    /* A smaller Retry-After does not shorten a longer draw. */
    ASSERT_EQ_INT(4000, delivery_backoff_ms(1000, 600000, 4, 1, 0.5));
}

TEST(default_ttl_per_type)
{
    ASSERT_EQ_INT(8 * 3600, delivery_default_ttl_s(EVENT_ABSENCE_ALERT));
    ASSERT_EQ_INT(24 * 3600, delivery_default_ttl_s(EVENT_ABSENCE_REPORTED));
    ASSERT_EQ_INT(7 * 24 * 3600, delivery_default_ttl_s(EVENT_MESSAGE_NEW));
    ASSERT(delivery_default_ttl_s(EVENT_TIMETABLE_CHANGED) < delivery_default_ttl_s(EVENT_LEAVE_DECIDED));
}

TEST_MAIN(T(backoff_full_jitter_bounds), T(backoff_capped), T(retry_after_is_a_floor),
          T(default_ttl_per_type))
