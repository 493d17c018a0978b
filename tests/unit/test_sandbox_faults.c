/*
 * Unit tests for sandbox fault rules (sandbox/faults.c): option parsing,
 * limits, and that the draw honours the configured rates.
 */
#include "tests/unit/test.h"

#include "sandbox/faults.h"

TEST(parses_fault_rate_forms)
{
    struct sbx_faults f;
    char err[256];
    sbx_faults_init(&f, 42);
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "fault-rate", "503:5", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "fault-rate", "429:1.5:30", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "fault-rate", "503:2::Shutdown", err, sizeof err));
    ASSERT_EQ_INT(3, f.n);
    ASSERT_EQ_INT(503, f.rules[0].status);
    ASSERT_EQ_INT(-1, f.rules[0].retry_after_s);
    ASSERT_STR_EQ("", f.rules[0].reason);
    ASSERT_EQ_INT(429, f.rules[1].status);
    ASSERT_EQ_INT(30, f.rules[1].retry_after_s);
    ASSERT(f.rules[1].pct > 1.49 && f.rules[1].pct < 1.51);
    ASSERT_STR_EQ("Shutdown", f.rules[2].reason);
    ASSERT_EQ_INT(-1, f.rules[2].retry_after_s);
    ASSERT_EQ_INT(0, sbx_faults_option(&f, "not-a-fault", "1", err, sizeof err));
}

TEST(rejects_bad_arguments)
{
    struct sbx_faults f;
    char err[256];
    sbx_faults_init(&f, 1);
    const char *bad[] = { "503", "200:5", "600:5", "503:0", "503:101", "503:x", "503:5:-1",
                          "503:5:1:", "abc:5", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ASSERT_EQ_INT(-1, sbx_faults_option(&f, "fault-rate", bad[i], err, sizeof err));
        ASSERT_STR_CONTAINS(err, "fault-rate");
    }
    ASSERT_EQ_INT(-1, sbx_faults_option(&f, "reset-rate", "0", err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_faults_option(&f, "goaway-every", "-3", err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_faults_option(&f, "latency-ms", "fast", err, sizeof err));
    ASSERT_EQ_INT(0, f.n);
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "fault-rate", "503:60", err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_faults_option(&f, "reset-rate", "41", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "100");
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "reset-rate", "40", err, sizeof err));
}

TEST(connection_knobs)
{
    struct sbx_faults f;
    char err[256];
    sbx_faults_init(&f, 1);
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "goaway-every", "100", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "latency-ms", "250", err, sizeof err));
    ASSERT_EQ_INT(100, f.goaway_every);
    ASSERT_EQ_INT(250, f.latency_ms);
    ASSERT_NULL(sbx_faults_pick(&f)); /* no rules: never a fault */
}

TEST(draw_follows_rates)
{
    struct sbx_faults f;
    char err[256];
    sbx_faults_init(&f, 12345);
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "fault-rate", "503:10", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "reset-rate", "5", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "hang-rate", "1", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&f, "rst-stream-rate", "2", err, sizeof err));
    int counts[5] = { 0 };
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        const struct sbx_fault_rule *r = sbx_faults_pick(&f);
        counts[r ? r->kind : 0]++;
    }
    /* Expected 20000 / 10000 / 2000 / 4000, allow ±10%. */
    ASSERT(counts[SBX_FAULT_STATUS] > 18000 && counts[SBX_FAULT_STATUS] < 22000);
    ASSERT(counts[SBX_FAULT_TCP_RESET] > 9000 && counts[SBX_FAULT_TCP_RESET] < 11000);
    ASSERT(counts[SBX_FAULT_HANG] > 1800 && counts[SBX_FAULT_HANG] < 2200);
    ASSERT(counts[SBX_FAULT_RST_STREAM] > 3600 && counts[SBX_FAULT_RST_STREAM] < 4400);
    ASSERT_EQ_INT(counts[SBX_FAULT_STATUS], f.rules[0].fired);
    char buf[32];
    ASSERT_STR_EQ("503", sbx_fault_name(&f.rules[0], buf, sizeof buf));
    ASSERT_STR_EQ("tcp-reset", sbx_fault_name(&f.rules[1], buf, sizeof buf));
}

TEST(hundred_percent_always_fires_and_seed_replays)
{
    struct sbx_faults a, b;
    char err[256];
    sbx_faults_init(&a, 7);
    sbx_faults_init(&b, 7);
    ASSERT_EQ_INT(1, sbx_faults_option(&a, "fault-rate", "500:100", err, sizeof err));
    for (int i = 0; i < 1000; i++)
        ASSERT_NOT_NULL(sbx_faults_pick(&a));
    sbx_faults_init(&a, 7);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ_INT(sbx_faults_rand(&a), sbx_faults_rand(&b));
}

TEST_MAIN(T(parses_fault_rate_forms), T(rejects_bad_arguments), T(connection_knobs),
          T(draw_follows_rates), T(hundred_percent_always_fires_and_seed_replays))
