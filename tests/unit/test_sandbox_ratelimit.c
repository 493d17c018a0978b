/*
 * Tests of varsel-sandbox's per-key rate limits (sandbox/ratelimit.c) with
 * a hand-driven clock: FCM's real numbers (240/min, 5000/h, collapsible 20
 * +1/180 s) exactly, the wait reported, refusals that take nothing, the
 * mask, per-key state, bounded memory (idle keys forgotten, the least
 * recently used dropped when full), parsing, and the command-line options
 * with the --bench rule. End-to-end checks are in test_sandbox_fcm.c and
 * test_sandbox_e2e.c.
 */
#include "tests/unit/test.h"

#include "sandbox/ratelimit.h"

#include <cJSON.h>
#include <stdio.h>

#define T0 1000000000LL /* an arbitrary start, ms */

static struct sbx_rate_limit rate(const char *spec, const char *prefix)
{
    struct sbx_rate_limit l;
    char err[256];
    if (sbx_rate_parse(spec, prefix, &l, err, sizeof err) != 0)
        TEST_FAIL_("%s: %s", spec, err);
    return l;
}

static int take(struct sbx_rate *r, const char *key, unsigned mask, int64_t now, int64_t *wait)
{
    return sbx_rate_take(r, key, strlen(key), mask, now, wait);
}

TEST(parse_rates)
{
    struct sbx_rate_limit l = rate("240/min", "device");
    ASSERT_EQ_INT(240, l.burst);
    ASSERT_EQ_INT(250000, l.interval_us);
    ASSERT_STR_EQ("device 240/min", l.name);
    ASSERT_STR_EQ("240 per minute", l.text);
    l = rate("5000/h", "device");
    ASSERT_EQ_INT(5000, l.burst);
    ASSERT_EQ_INT(720000, l.interval_us);
    ASSERT_STR_EQ("5000 per hour", l.text);
    l = rate("10/30s", NULL);
    ASSERT_EQ_INT(3000000, l.interval_us);
    ASSERT_STR_EQ("10/30s", l.name);
    ASSERT_STR_EQ("10 per 30 seconds", l.text);
    l = rate("1/s", "");
    ASSERT_EQ_INT(1000000, l.interval_us);
    ASSERT_STR_EQ("1/s", l.name);
    l = rate("3/2h", "x");
    ASSERT_EQ_INT(2400000000LL, l.interval_us);
    ASSERT_STR_EQ("3 per 2 hours", l.text);
    static const char *const bad[] = { "", "0/min", "-1/min", "240", "240/", "240/m",
                                       "240/min ", "/min", "10/0s", "10/25h", "2000000/s",
                                       "1e3/s", "240/minute", "200000000/h" };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (sbx_rate_parse(bad[i], "device", &l, err, sizeof err) != -1)
            TEST_FAIL_("\"%s\" accepted", bad[i]);
        ASSERT(err[0] != '\0');
    }
}

TEST(parse_lists)
{
    struct sbx_rate_limit v[SBX_RATE_MAX_LIST];
    size_t n = 99;
    char err[256];
    ASSERT_EQ_INT(0, sbx_rate_parse_list("240/min,5000/h", "device", v, &n, err, sizeof err));
    ASSERT_EQ_INT(2, n);
    ASSERT_STR_EQ("device 5000/h", v[1].name);
    ASSERT_EQ_INT(0, sbx_rate_parse_list("off", "device", v, &n, err, sizeof err));
    ASSERT_EQ_INT(0, n);
    n = 7;
    ASSERT_EQ_INT(-1, sbx_rate_parse_list("1/s,2/s,3/s,4/s", "d", v, &n, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "at most 3");
    ASSERT_EQ_INT(7, n); /* unchanged on error */
    ASSERT_EQ_INT(-1, sbx_rate_parse_list("240/min,x", "d", v, &n, err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_rate_parse_list(",", "d", v, &n, err, sizeof err));
    ASSERT_EQ_INT(7, n);
}

/* 240/min: 240 at once, the 241st waits exactly one refill (250 ms). */
TEST(fcm_240_per_minute)
{
    struct sbx_rate_limit l = rate("240/min", "device");
    struct sbx_rate *r = sbx_rate_new(&l, 1, 0);
    int64_t wait = -1;
    for (int i = 0; i < 240; i++)
        ASSERT_EQ_INT(-1, take(r, "tok", 1, T0, &wait));
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0, &wait));
    ASSERT_EQ_INT(250, wait);
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0 + 249, &wait));
    ASSERT_EQ_INT(1, wait);
    ASSERT_EQ_INT(-1, take(r, "tok", 1, T0 + 250, &wait)); /* one came back */
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0 + 250, &wait));
    /* a minute later the bucket is full again: 240 more */
    for (int i = 0; i < 240; i++)
        ASSERT_EQ_INT(-1, take(r, "tok", 1, T0 + 60250, &wait));
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0 + 60250, &wait));
    const struct sbx_rate_stats *st = sbx_rate_stats(r);
    ASSERT_EQ_INT(481, st->allowed);
    ASSERT_EQ_INT(4, st->limited[0]);
    sbx_rate_free(r);
}

/* 5000/h on its own: 5000 at once, then one every 720 ms. Together with
 * 240/min, sending at exactly 240/min (one per 250 ms) trips the hourly
 * limit at message 7660: 240/min alone would never refuse it. */
TEST(fcm_5000_per_hour)
{
    struct sbx_rate_limit l[2] = { rate("240/min", "device"), rate("5000/h", "device") };
    struct sbx_rate *r = sbx_rate_new(&l[1], 1, 0);
    int64_t wait = -1;
    for (int i = 0; i < 5000; i++)
        ASSERT_EQ_INT(-1, take(r, "tok", 1, T0, &wait));
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0, &wait));
    ASSERT_EQ_INT(720, wait);
    sbx_rate_free(r);

    r = sbx_rate_new(l, 2, 0);
    int i, got = -1;
    for (i = 0; i < 20000; i++)
        if ((got = take(r, "tok", 3, T0 + 250LL * i, &wait)) >= 0)
            break;
    ASSERT_EQ_INT(1, got); /* the hourly limit refused */
    ASSERT_EQ_INT(7659, i);
    ASSERT(wait > 0 && wait <= 720);
    sbx_rate_free(r);
}

/* FCM's collapsible limit: a burst of 20, then one per 180 s. Only
 * messages that name its bit take from it; a refused request takes from
 * no bucket at all. */
TEST(collapsible_burst_and_mask)
{
    struct sbx_rate_limit l[2];
    l[0] = rate("30/min", "device");
    sbx_rate_collapsible(&l[1], 20, 180);
    ASSERT_STR_EQ("collapsible 20+1/180s", l[1].name);
    ASSERT_STR_EQ("20 collapsible messages in a burst, then 1 per 180 seconds", l[1].text);
    struct sbx_rate *r = sbx_rate_new(l, 2, 0);
    int64_t wait = -1;
    for (int i = 0; i < 20; i++)
        ASSERT_EQ_INT(-1, take(r, "tok", 3, T0, &wait));
    ASSERT_EQ_INT(1, take(r, "tok", 3, T0, &wait));
    ASSERT_EQ_INT(180000, wait);
    for (int i = 0; i < 5; i++)              /* refused: they take nothing */
        ASSERT_EQ_INT(1, take(r, "tok", 3, T0 + 1000, &wait));
    ASSERT_EQ_INT(179000, wait);
    for (int i = 0; i < 10; i++)             /* non-collapsible: 10 of 30 left */
        ASSERT_EQ_INT(-1, take(r, "tok", 1, T0 + 1000, &wait));
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0 + 1000, &wait));
    ASSERT_EQ_INT(-1, take(r, "tok", 3, T0 + 180000, &wait)); /* one came back */
    ASSERT_EQ_INT(1, take(r, "tok", 3, T0 + 180000, &wait));
    ASSERT_EQ_INT(180000, wait);
    /* both refuse: the longest wait is the one reported */
    for (int i = 0; i < 29; i++)
        ASSERT_EQ_INT(-1, take(r, "tok", 1, T0 + 180000, &wait));
    ASSERT_EQ_INT(0, take(r, "tok", 1, T0 + 180000, &wait));
    ASSERT_EQ_INT(2000, wait);
    ASSERT_EQ_INT(1, take(r, "tok", 3, T0 + 180000, &wait));
    ASSERT_EQ_INT(180000, wait);
    sbx_rate_free(r);
}

/* Peeking answers like taking but takes nothing. */
TEST(peek_takes_nothing)
{
    struct sbx_rate_limit l = rate("2/h", "device");
    struct sbx_rate *r = sbx_rate_new(&l, 1, 0);
    int64_t wait;
    for (int i = 0; i < 5; i++)
        ASSERT_EQ_INT(-1, sbx_rate_peek(r, "a", 1, 1, T0, &wait));
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(0, sbx_rate_peek(r, "a", 1, 1, T0, &wait));
    ASSERT_EQ_INT(1800000, wait);
    ASSERT_EQ_INT(2, sbx_rate_stats(r)->allowed);
    ASSERT_EQ_INT(1, sbx_rate_stats(r)->limited[0]);
    sbx_rate_free(r);
}

TEST(keys_are_independent_and_exact)
{
    struct sbx_rate_limit l = rate("2/h", "device");
    struct sbx_rate *r = sbx_rate_new(&l, 1, 0);
    int64_t wait;
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(0, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(-1, take(r, "A", 1, T0, &wait)); /* byte-exact keys */
    ASSERT_EQ_INT(-1, take(r, "ab", 1, T0, &wait));
    ASSERT_EQ_INT(-1, sbx_rate_take(r, "a\0x", 3, 1, T0, &wait));
    ASSERT_EQ_INT(-1, sbx_rate_take(r, "a\0x", 3, 1, T0, &wait));
    ASSERT_EQ_INT(0, sbx_rate_take(r, "a\0x", 3, 1, T0, &wait));
    ASSERT_EQ_INT(4, sbx_rate_stats(r)->keys);
    /* many keys: each its own budget */
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ASSERT_EQ_INT(-1, take(r, key, 1, T0, &wait));
        ASSERT_EQ_INT(-1, take(r, key, 1, T0, &wait));
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ASSERT_EQ_INT(0, take(r, key, 1, T0, &wait));
    }
    ASSERT_EQ_INT(5004, sbx_rate_stats(r)->keys);
    sbx_rate_free(r);
}

/* Keys whose buckets are full again are forgotten as requests arrive, so
 * the table holds only active tokens. */
TEST(idle_keys_are_forgotten)
{
    struct sbx_rate_limit l = rate("60/min", "device");
    struct sbx_rate *r = sbx_rate_new(&l, 1, 100);
    int64_t wait;
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ASSERT_EQ_INT(-1, take(r, key, 1, T0, &wait));
    }
    ASSERT_EQ_INT(50, sbx_rate_stats(r)->keys);
    /* one message refills in 1 s: after that every key is idle, and each
     * request forgets up to two of them */
    for (int i = 0; i < 30; i++)
        ASSERT_EQ_INT(-1, take(r, "busy", 1, T0 + 1000 + i, &wait));
    const struct sbx_rate_stats *st = sbx_rate_stats(r);
    ASSERT_EQ_INT(1, st->keys);
    ASSERT_EQ_INT(50, st->evicted_idle);
    ASSERT_EQ_INT(0, st->evicted_active);
    ASSERT_EQ_INT(50, st->peak_keys); /* two were forgotten before "busy" came */
    /* "busy" (30 taken) is not idle yet; a forgotten key starts full */
    ASSERT_EQ_INT(-1, take(r, "k0", 1, T0 + 2000, &wait));
    ASSERT_EQ_INT(2, st->keys);
    sbx_rate_free(r);
}

/* A full table drops its least recently used key even when that key is
 * not idle (it then starts over with a full bucket): memory stays bounded
 * whatever the clients send. */
TEST(full_table_drops_least_recently_used)
{
    struct sbx_rate_limit l = rate("1/h", "device");
    struct sbx_rate *r = sbx_rate_new(&l, 1, 2);
    int64_t wait;
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0, &wait));
    ASSERT_EQ_INT(-1, take(r, "b", 1, T0, &wait));
    ASSERT_EQ_INT(0, take(r, "a", 1, T0 + 1, &wait)); /* a is now the newest */
    ASSERT_EQ_INT(-1, take(r, "c", 1, T0 + 2, &wait)); /* drops b */
    const struct sbx_rate_stats *st = sbx_rate_stats(r);
    ASSERT_EQ_INT(2, st->keys);
    ASSERT_EQ_INT(1, st->evicted_active);
    ASSERT_EQ_INT(0, take(r, "a", 1, T0 + 3, &wait)); /* still tracked */
    ASSERT_EQ_INT(0, take(r, "c", 1, T0 + 4, &wait));
    ASSERT_EQ_INT(-1, take(r, "b", 1, T0 + 5, &wait)); /* forgotten: full again; drops a */
    ASSERT_EQ_INT(-1, take(r, "a", 1, T0 + 6, &wait));
    ASSERT_EQ_INT(2, st->keys);
    ASSERT_EQ_INT(3, st->evicted_active);
    ASSERT_EQ_INT(2, st->max_keys);
    /* 100,000 distinct keys through a table of 2: never more than 2 kept */
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "t%d", i);
        take(r, key, 1, T0 + 10, &wait);
        ASSERT(st->keys <= 2);
    }
    ASSERT_EQ_INT(2, st->peak_keys);
    sbx_rate_free(r);
}

TEST(summary_json)
{
    struct sbx_rate_limit l[2];
    l[0] = rate("1/min", "device");
    sbx_rate_collapsible(&l[1], 1, 180);
    ASSERT_NULL(sbx_rate_new(l, 0, 0)); /* no limits, no table */
    struct sbx_rate *r = sbx_rate_new(l, 2, 10);
    int64_t wait;
    take(r, "a", 3, T0, &wait);
    take(r, "a", 1, T0, &wait);
    take(r, "b", 3, T0, &wait);
    cJSON *j = sbx_rate_summary(r);
    char *s = cJSON_PrintUnformatted(j);
    ASSERT_STR_EQ("{\"allowed\":2,\"limited\":{\"device 1/min\":1,\"collapsible 1+1/180s\":0},"
                  "\"keys\":2,\"peak_keys\":2,\"max_keys\":10,\"evicted_idle\":0,"
                  "\"evicted_active\":0}", s);
    cJSON_free(s);
    cJSON_Delete(j);
    ASSERT_STR_EQ("collapsible 1+1/180s", sbx_rate_limit_at(r, 1)->name);
    ASSERT_NULL(sbx_rate_limit_at(r, 2));
    sbx_rate_free(r);
    sbx_rate_free(NULL);
}

/* The command-line options: FCM's numbers by default, the APNs default
 * the sandbox's choice, "off", and --bench dropping what was not given. */
TEST(device_limit_options_and_bench)
{
    struct sbx_device_limits l;
    char err[256], desc[256];
    sbx_device_limits_init(&l);
    ASSERT_EQ_INT(2, l.nfcm);
    ASSERT_STR_EQ("device 240/min", l.fcm[0].name);
    ASSERT_STR_EQ("device 5000/h", l.fcm[1].name);
    ASSERT(l.has_collapsible);
    ASSERT_EQ_INT(20, l.collapsible.burst);
    ASSERT_EQ_INT(180000000LL, l.collapsible.interval_us);
    ASSERT_EQ_INT(2, l.napns);
    ASSERT_STR_EQ("device 240/min", l.apns[0].name);
    sbx_device_limits_describe(&l, desc, sizeof desc);
    ASSERT_STR_EQ("FCM 240/min,5000/h, collapsible 20+1/180s; APNs 240/min,5000/h", desc);

    /* --bench alone: everything off */
    struct sbx_device_limits b = l;
    sbx_device_limits_bench(&b);
    ASSERT_EQ_INT(0, b.nfcm);
    ASSERT(!b.has_collapsible);
    ASSERT_EQ_INT(0, b.napns);
    sbx_device_limits_describe(&b, desc, sizeof desc);
    ASSERT_STR_EQ("FCM off, collapsible off; APNs off", desc);

    /* explicit options survive --bench */
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "fcm-device-rate", "10/min", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "fcm-collapsible-refill", "60", err,
                                              sizeof err));
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "apns-device-rate", "off", err, sizeof err));
    sbx_device_limits_bench(&l);
    sbx_device_limits_describe(&l, desc, sizeof desc);
    ASSERT_STR_EQ("FCM 10/min, collapsible 20+1/60s; APNs off", desc);

    sbx_device_limits_init(&l);
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "fcm-collapsible-burst", "off", err,
                                              sizeof err));
    ASSERT(!l.has_collapsible);
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "fcm-collapsible-burst", "5", err,
                                              sizeof err));
    ASSERT(l.has_collapsible);
    ASSERT_STR_EQ("collapsible 5+1/180s", l.collapsible.name);
    ASSERT_EQ_INT(1, sbx_device_limits_option(&l, "fcm-device-rate-limit", "100", err,
                                              sizeof err));
    ASSERT_EQ_INT(1, l.nfcm);
    ASSERT_STR_EQ("device 100/min", l.fcm[0].name);
    ASSERT_EQ_INT(0, sbx_device_limits_option(&l, "fault-rate", "503:5", err, sizeof err));
    static const char *const bad[][2] = {
        { "fcm-device-rate", "fast" }, { "fcm-device-rate", "" },
        { "fcm-collapsible-burst", "-1" }, { "fcm-collapsible-burst", "2000000" },
        { "fcm-collapsible-refill", "0" }, { "fcm-collapsible-refill", "off" },
        { "apns-device-rate", "240/min,5000/h,1/s,2/s" }, { "fcm-device-rate-limit", "0" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (sbx_device_limits_option(&l, bad[i][0], bad[i][1], err, sizeof err) != -1)
            TEST_FAIL_("--%s %s accepted", bad[i][0], bad[i][1]);
        ASSERT_STR_CONTAINS(err, bad[i][0]);
    }
    ASSERT_STR_EQ("device 100/min", l.fcm[0].name); /* errors change nothing */
    for (size_t i = 0; sbx_device_limits_option_names[i]; i++)
        ASSERT(strncmp(sbx_device_limits_option_names[i], "fcm-", 4) == 0 ||
               strncmp(sbx_device_limits_option_names[i], "apns-", 5) == 0);
}

TEST_MAIN(T(parse_rates), T(parse_lists), T(fcm_240_per_minute), T(fcm_5000_per_hour),
          T(collapsible_burst_and_mask), T(peek_takes_nothing), T(keys_are_independent_and_exact),
          T(idle_keys_are_forgotten), T(full_table_drops_least_recently_used), T(summary_json),
          T(device_limit_options_and_bench))
