/*
 * queue/registry.c: the device-record parser. The fast path for flat
 * records must agree with the cJSON path on every input, so records that
 * need cJSON (escapes, odd types, duplicates) are parsed both ways here.
 */
#include "tests/unit/test.h"

#include <string.h>

#include "queue/registry.h"

static void expect_dev(const char *json, const char *platform, const char *token,
                       const char *app, const char *locale, const char *env,
                       long long updated_at)
{
    struct registry_device d;
    int rc = registry_device_parse("phone", json, strlen(json), &d);
    if (rc != 0)
        TEST_FAIL_("record not accepted: %s", json);
    ASSERT_STR_EQ("phone", d.device);
    ASSERT_STR_EQ(platform, d.platform);
    ASSERT_STR_EQ(token, d.token);
    ASSERT_STR_EQ(app, d.app);
    if (locale)
        ASSERT_STR_EQ(locale, d.locale);
    else
        ASSERT_NULL(d.locale);
    if (env)
        ASSERT_STR_EQ(env, d.environment);
    else
        ASSERT_NULL(d.environment);
    ASSERT_EQ_INT(updated_at, d.updated_at);
    registry_device_clear(&d);
    ASSERT_NULL(d.device);
}

static void expect_bad(const char *json)
{
    struct registry_device d;
    if (registry_device_parse("phone", json, strlen(json), &d) != -1)
        TEST_FAIL_("record accepted: %s", json);
    ASSERT_NULL(d.device);
}

TEST(flat_records)
{
    expect_dev("{\"platform\":\"ios\",\"token\":\"ab12\",\"app\":\"demo\",\"locale\":\"nb\","
               "\"environment\":\"production\",\"updated_at\":1732800000123}",
               "ios", "ab12", "demo", "nb", "production", 1732800000123LL);
    /* Python's json.dumps spacing, any order, no locale, unknown fields. */
    expect_dev("{ \"updated_at\": 5, \"app\": \"demo\", \"x\": 12, \"platform\": \"android\", "
               "\"token\": \"t\" }", "android", "t", "demo", NULL, NULL, 5);
    expect_dev("{\"platform\":\"ios\",\"token\":\"\",\"app\":\"a\",\"updated_at\":-3}", "ios", "",
               "a", NULL, NULL, -3);
    /* A raw control character stays as it is (cJSON does not refuse it). */
    expect_dev("{\"platform\":\"ios\",\"token\":\"a\tb\",\"app\":\"a\"}", "ios", "a\tb", "a",
               NULL, NULL, 0);
    /* Trailing bytes after the object are ignored, as cJSON does. */
    expect_dev("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\"} x", "ios", "t", "a", NULL,
               NULL, 0);
}

TEST(records_that_need_cjson)
{
    /* Escapes are decoded. */
    expect_dev("{\"platform\":\"ios\",\"token\":\"a\\u0062c\",\"app\":\"d\\\"q\"}", "ios", "abc",
               "d\"q", NULL, NULL, 0);
    /* Fractions and exponents go through the double, like before. */
    expect_dev("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\",\"updated_at\":1.5e3}", "ios",
               "t", "a", NULL, NULL, 1500);
    expect_dev("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\",\"updated_at\":12345678901234567}",
               "ios", "t", "a", NULL, NULL, 12345678901234568LL);
    /* Nested values and literals are skipped by cJSON. */
    expect_dev("{\"meta\":{\"a\":[1,2]},\"ok\":true,\"platform\":\"ios\",\"token\":\"t\","
               "\"app\":\"a\",\"locale\":null}", "ios", "t", "a", NULL, NULL, 0);
    /* A duplicate key: cJSON takes the first. */
    expect_dev("{\"platform\":\"ios\",\"token\":\"t1\",\"token\":\"t2\",\"app\":\"a\"}", "ios",
               "t1", "a", NULL, NULL, 0);
    /* updated_at as a string is not a number. */
    expect_dev("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\",\"updated_at\":\"7\"}", "ios",
               "t", "a", NULL, NULL, 0);
}

TEST(bad_records)
{
    expect_bad("");
    expect_bad("[]");
    expect_bad("\"x\"");
    expect_bad("{}");
    expect_bad("{\"platform\":\"ios\",\"token\":\"t\"}");
    expect_bad("{\"platform\":\"ios\",\"token\":7,\"app\":\"a\"}");
    expect_bad("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\",}");
    expect_bad("{\"platform\":\"ios\",\"token\":\"t\",\"app\":\"a\"");
    expect_bad("{\"platform\":\"ios\",\"token\":\"t");
    expect_bad("not json");
}

TEST_MAIN(T(flat_records), T(records_that_need_cjson), T(bad_records))
