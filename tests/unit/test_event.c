/*
 * Tests for queue/event.c: valid events of every type, and every rule of the
 * v1 contract with its error code and reason. Also checks that the parser
 * agrees with the docs: every example in docs/events.md parses, and every
 * event in tests/schema/invalid/ (which docs/events.schema.json rejects too)
 * is rejected. Run from the repo root, as scripts/run-tests.sh does.
 */
#include "tests/unit/test.h"

#include "queue/event.h"
#include "common/util.h"

#include <dirent.h>

#define HDR(type) "{\"v\":1,\"id\":\"ev-1\",\"type\":\"" type "\",\"tenant\":\"oslo\"," \
                  "\"occurred_at\":\"2026-11-28T08:15:00Z\","

static char reason[EVENT_REASON_MAX];

/* Parse |json|; returns the result code, the event (or NULL) in |*ev|. */
static int parse(const char *json, struct event **ev)
{
    reason[0] = 'X';
    reason[1] = '\0';
    int rc = event_parse(json, strlen(json), ev, reason, sizeof reason);
    if (rc == 0) {
        ASSERT_NOT_NULL(*ev);
    } else {
        ASSERT_NULL(*ev);
        ASSERT(reason[0] != 'X' && reason[0] != '\0');
    }
    return rc;
}

/* Expect failure with |code| and a reason containing |needle|. */
static void expect_err(const char *json, int code, const char *needle)
{
    struct event *ev = NULL;
    int rc = parse(json, &ev);
    if (rc != code)
        TEST_FAIL_("%s: expected %s, got %s (%s)", json, event_error_code(code),
                   event_error_code(rc), reason);
    ASSERT_STR_CONTAINS(reason, needle);
}

static struct event *expect_ok(const char *json)
{
    struct event *ev = NULL;
    int rc = parse(json, &ev);
    if (rc != 0)
        TEST_FAIL_("%s: rejected: %s (%s)", json, event_error_code(rc), reason);
    return ev;
}

TEST(message_new_valid)
{
    struct event *ev = expect_ok(HDR("message.new")
        "\"recipients\":[\"u1\",{\"user\":\"u2\",\"badge\":3},{\"user\":\"u3\"}],"
        "\"thread\":\"t-9\",\"sender_name\":\"Kari Nordmann\",\"school_name\":\"Ås skole\","
        "\"subject\":\"Tur\",\"preview\":\"Husk matpakke\",\"ttl_s\":3600,\"priority\":\"high\","
        "\"future_field\":{\"x\":[1,2]}}");
    ASSERT_EQ_INT(EVENT_MESSAGE_NEW, ev->type);
    ASSERT_EQ_INT(1, ev->v);
    ASSERT_STR_EQ("ev-1", ev->id);
    ASSERT_STR_EQ("oslo", ev->tenant);
    ASSERT_EQ_INT(1795853700000LL, ev->occurred_at_ms);
    ASSERT_EQ_INT(3600, ev->ttl_s);
    ASSERT_EQ_INT(EVENT_PRIORITY_HIGH, ev->priority);
    ASSERT_EQ_INT(3, ev->n_recipients);
    ASSERT_STR_EQ("u1", ev->recipients[0].user);
    ASSERT_EQ_INT(-1, ev->recipients[0].badge);
    ASSERT_STR_EQ("u2", ev->recipients[1].user);
    ASSERT_EQ_INT(3, ev->recipients[1].badge);
    ASSERT_EQ_INT(-1, ev->recipients[2].badge);
    ASSERT_STR_EQ("t-9", ev->thread);
    ASSERT_STR_EQ("Kari Nordmann", event_field(ev, "sender_name"));
    ASSERT_STR_EQ("Ås skole", event_field(ev, "school_name"));
    ASSERT_STR_EQ("Husk matpakke", event_field(ev, "preview"));
    ASSERT_NULL(event_field(ev, "ttl_s")); /* not a string */
    ASSERT_NULL(event_field(ev, "nope"));
    ASSERT(event_is_notification(ev->type));
    event_free(ev);
}

TEST(absence_reported_valid)
{
    struct event *ev = expect_ok(HDR("absence.reported")
        "\"recipients\":[\"g2\"],\"student\":\"s1\",\"student_name\":\"Ola\","
        "\"date\":\"2028-02-29\",\"kind\":\"hours\",\"from\":\"08:30\",\"to\":\"11:45\","
        "\"reported_by\":\"g1\"}");
    ASSERT_EQ_INT(EVENT_ABSENCE_REPORTED, ev->type);
    ASSERT_STR_EQ("g1", ev->reported_by);
    ASSERT_STR_EQ("2028-02-29", event_field(ev, "date"));
    ASSERT_EQ_INT(-1, ev->ttl_s);
    ASSERT_EQ_INT(EVENT_PRIORITY_DEFAULT, ev->priority);
    event_free(ev);
}

TEST(absence_alert_valid)
{
    struct event *ev = expect_ok(HDR("absence.alert")
        "\"recipients\":[\"g1\",\"g2\"],\"student\":\"s1\",\"student_name\":\"Ola\","
        "\"date\":\"2026-11-28\",\"lesson\":\"Matte\",\"priority\":\"normal\"}");
    ASSERT_EQ_INT(EVENT_ABSENCE_ALERT, ev->type);
    ASSERT_EQ_INT(2, ev->n_recipients);
    ASSERT_EQ_INT(EVENT_PRIORITY_NORMAL, ev->priority);
    event_free(ev);
    ev = expect_ok(HDR("absence.alert")
        "\"recipients\":[\"g1\"],\"student\":\"s1\",\"student_name\":\"Ola\","
        "\"date\":\"2026-11-28\"}");
    ASSERT_NULL(event_field(ev, "lesson"));
    event_free(ev);
}

TEST(leave_decided_valid)
{
    struct event *ev = expect_ok(HDR("leave.decided")
        "\"recipients\":[\"g1\"],\"student\":\"s1\",\"student_name\":\"Ola\","
        "\"from\":\"2026-12-01\",\"to\":\"2026-12-03T12:00:00+01:00\",\"decision\":\"declined\"}");
    ASSERT_EQ_INT(EVENT_LEAVE_DECIDED, ev->type);
    ASSERT_STR_EQ("declined", event_field(ev, "decision"));
    event_free(ev);
}

TEST(timetable_changed_valid)
{
    struct event *ev = expect_ok(HDR("timetable.changed")
        "\"recipients\":[{\"user\":\"g1\",\"badge\":0}],\"student_name\":\"Ola\","
        "\"date\":\"2026-11-30\",\"summary\":\"Gym flyttet til 3. time\"}");
    ASSERT_EQ_INT(EVENT_TIMETABLE_CHANGED, ev->type);
    ASSERT_EQ_INT(0, ev->recipients[0].badge);
    event_free(ev);
}

TEST(device_register_valid)
{
    struct event *ev = expect_ok(HDR("device.register")
        "\"user\":\"g1\",\"device\":\"inst-1\",\"platform\":\"ios\","
        "\"token\":\"a1B2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90\","
        "\"app\":\"demo\",\"locale\":\"nn\",\"environment\":\"sandbox\"}");
    ASSERT_EQ_INT(EVENT_DEVICE_REGISTER, ev->type);
    ASSERT(!event_is_notification(ev->type));
    ASSERT_STR_EQ("g1", ev->user);
    ASSERT_STR_EQ("inst-1", ev->device);
    ASSERT_STR_EQ("ios", ev->platform);
    ASSERT_STR_EQ("demo", ev->app);
    ASSERT_STR_EQ("nn", ev->locale);
    ASSERT_STR_EQ("sandbox", ev->environment);
    ASSERT_NULL(ev->recipients);
    event_free(ev);

    /* Android, unknown locale ignored, environment defaults to production. */
    ev = expect_ok(HDR("device.register")
        "\"user\":\"g1\",\"device\":\"inst-2\",\"platform\":\"android\","
        "\"token\":\"fcm:APA91b-Hx_y\",\"app\":\"demo.app\",\"locale\":\"sv\"}");
    ASSERT_STR_EQ("android", ev->platform);
    ASSERT_STR_EQ("fcm:APA91b-Hx_y", ev->token);
    ASSERT_NULL(ev->locale);
    ASSERT_STR_EQ("production", ev->environment);
    event_free(ev);

    ev = expect_ok(HDR("device.register")
        "\"user\":\"g1\",\"device\":\"d\",\"platform\":\"android\",\"token\":\"x\","
        "\"app\":\"demo\",\"locale\":7}");
    ASSERT_NULL(ev->locale);
    event_free(ev);
}

TEST(device_unregister_and_receipt_valid)
{
    struct event *ev = expect_ok(HDR("device.unregister") "\"user\":\"g1\",\"device\":\"d1\"}");
    ASSERT_EQ_INT(EVENT_DEVICE_UNREGISTER, ev->type);
    ASSERT_STR_EQ("d1", ev->device);
    event_free(ev);
    ev = expect_ok(HDR("receipt.opened")
        "\"event\":\"ev-0\",\"user\":\"g1\",\"device\":\"d1\"}");
    ASSERT_EQ_INT(EVENT_RECEIPT_OPENED, ev->type);
    ASSERT_STR_EQ("ev-0", ev->event_ref);
    ASSERT_STR_EQ("g1", ev->user);
    event_free(ev);
}

TEST(invalid_json)
{
    expect_err("{\"v\":1,\"id\":", EVENT_ERR_JSON, "invalid JSON near byte");
    /* cJSON reports where it gave up: just after the bad key at byte 8. */
    expect_err("{\"v\":1, x}", EVENT_ERR_JSON, "invalid JSON near byte 9");
    expect_err("", EVENT_ERR_JSON, "invalid JSON");
    expect_err("{\"v\":1} {}", EVENT_ERR_JSON, "near byte 8");
    expect_err("not json", EVENT_ERR_JSON, "invalid JSON near byte 0");
    ASSERT_STR_EQ("invalid_json", event_error_code(EVENT_ERR_JSON));
    /* Input is taken by length: bytes after |len| are not looked at. */
    const char *s = HDR("device.unregister") "\"user\":\"g\",\"device\":\"d\"}garbage";
    struct event *ev = NULL;
    ASSERT_EQ_INT(0, event_parse(s, strlen(s) - 7, &ev, reason, sizeof reason));
    event_free(ev);
}

TEST(not_an_object)
{
    expect_err("[1,2]", EVENT_ERR_INVALID, "must be a JSON object");
    expect_err("\"x\"", EVENT_ERR_INVALID, "must be a JSON object");
}

TEST(too_large)
{
    size_t n = EVENT_MAX_BYTES + 1;
    char *big = xmalloc(n);
    memset(big, ' ', n);
    struct event *ev = NULL;
    ASSERT_EQ_INT(EVENT_ERR_TOO_LARGE, event_parse(big, n, &ev, reason, sizeof reason));
    ASSERT_NULL(ev);
    ASSERT_STR_CONTAINS(reason, "16777217 bytes");
    ASSERT_STR_EQ("too_large", event_error_code(EVENT_ERR_TOO_LARGE));
    free(big);
}

TEST(version)
{
    expect_err("{\"v\":2,\"type\":\"message.new\"}", EVENT_ERR_VERSION, "unsupported version 2");
    expect_err("{\"v\":\"1\"}", EVENT_ERR_VERSION, "must be the number 1");
    expect_err("{\"v\":1.5}", EVENT_ERR_VERSION, "unsupported version 1.5");
    expect_err("{\"type\":\"message.new\"}", EVENT_ERR_MISSING, "missing required field 'v'");
    ASSERT_STR_EQ("unsupported_version", event_error_code(EVENT_ERR_VERSION));
}

TEST(unknown_type)
{
    expect_err("{\"v\":1,\"type\":\"message.nwe\"}", EVENT_ERR_TYPE, "unknown type 'message.nwe'");
    expect_err("{\"v\":1,\"type\":5}", EVENT_ERR_INVALID, "field 'type' must be a string");
    expect_err("{\"v\":1}", EVENT_ERR_MISSING, "missing required field 'type'");
    expect_err("{\"v\":1,\"type\":\"a\\nb\"}", EVENT_ERR_TYPE, "unknown type 'a?b'");
    ASSERT_STR_EQ("unknown_type", event_error_code(EVENT_ERR_TYPE));
    ASSERT_EQ_INT(-1, event_type_from_name("message"));
    ASSERT_EQ_INT(EVENT_RECEIPT_OPENED, event_type_from_name("receipt.opened"));
    ASSERT_STR_EQ("timetable.changed", event_type_name(EVENT_TIMETABLE_CHANGED));
    ASSERT_NULL(event_type_name(EVENT_TYPE_COUNT));
}

TEST(common_fields)
{
    const char *u = "\"user\":\"g\",\"device\":\"d\"}";
    char buf[1024];
#define WITH(hdr) (snprintf(buf, sizeof buf, "%s%s", hdr, u), buf)
    expect_err(WITH("{\"v\":1,\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":\"2026-11-28T08:15:00Z\","),
               EVENT_ERR_MISSING, "missing required field 'id'");
    expect_err(WITH("{\"v\":1,\"id\":\"\",\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":\"2026-11-28T08:15:00Z\","),
               EVENT_ERR_INVALID, "field 'id' must be 1..128 bytes");
    expect_err(WITH("{\"v\":1,\"id\":17,\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":\"2026-11-28T08:15:00Z\","),
               EVENT_ERR_INVALID, "field 'id' must be a string");
    expect_err(WITH("{\"v\":1,\"id\":\"a\\tb\",\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":\"2026-11-28T08:15:00Z\","),
               EVENT_ERR_INVALID, "field 'id' must contain printable ASCII");
    char longid[200];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    char hdr[512];
    snprintf(hdr, sizeof hdr, "{\"v\":1,\"id\":\"%s\",\"type\":\"device.unregister\","
             "\"tenant\":\"oslo\",\"occurred_at\":\"2026-11-28T08:15:00Z\",", longid);
    expect_err(WITH(hdr), EVENT_ERR_INVALID, "got 129");
    longid[128] = '\0';
    snprintf(hdr, sizeof hdr, "{\"v\":1,\"id\":\"%s\",\"type\":\"device.unregister\","
             "\"tenant\":\"oslo\",\"occurred_at\":\"2026-11-28T08:15:00Z\",", longid);
    struct event *ev = expect_ok(WITH(hdr));
    ASSERT_EQ_INT(128, strlen(ev->id));
    event_free(ev);

    expect_err(WITH("{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\","
                    "\"occurred_at\":\"2026-11-28T08:15:00Z\","),
               EVENT_ERR_MISSING, "missing required field 'tenant'");
    static const char *const bad_tenants[] = { "Oslo", "-oslo", "os lo", "", "os/lo",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 65 */ };
    for (size_t i = 0; i < sizeof bad_tenants / sizeof bad_tenants[0]; i++) {
        snprintf(hdr, sizeof hdr, "{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\","
                 "\"tenant\":\"%s\",\"occurred_at\":\"2026-11-28T08:15:00Z\",", bad_tenants[i]);
        expect_err(WITH(hdr), EVENT_ERR_INVALID, "field 'tenant' must be a slug");
    }
    ev = expect_ok(WITH("{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\","
                        "\"tenant\":\"0slo_kommune-1\",\"occurred_at\":\"2026-11-28T08:15:00Z\","));
    event_free(ev);

    expect_err(WITH("{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\",\"tenant\":\"oslo\","),
               EVENT_ERR_MISSING, "missing required field 'occurred_at'");
    expect_err(WITH("{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":\"28.11.2026\","),
               EVENT_ERR_INVALID, "field 'occurred_at' must be an RFC 3339 time");
    expect_err(WITH("{\"v\":1,\"id\":\"e\",\"type\":\"device.unregister\",\"tenant\":\"oslo\","
                    "\"occurred_at\":1764317700,"),
               EVENT_ERR_INVALID, "field 'occurred_at' must be a string");

    expect_err(WITH(HDR("device.unregister") "\"ttl_s\":-1,"), EVENT_ERR_INVALID, "'ttl_s'");
    expect_err(WITH(HDR("device.unregister") "\"ttl_s\":2419201,"), EVENT_ERR_INVALID, "'ttl_s'");
    expect_err(WITH(HDR("device.unregister") "\"ttl_s\":1.5,"), EVENT_ERR_INVALID, "'ttl_s'");
    expect_err(WITH(HDR("device.unregister") "\"ttl_s\":\"60\","), EVENT_ERR_INVALID, "'ttl_s'");
    ev = expect_ok(WITH(HDR("device.unregister") "\"ttl_s\":2419200,"));
    ASSERT_EQ_INT(2419200, ev->ttl_s);
    event_free(ev);
    ev = expect_ok(WITH(HDR("device.unregister") "\"ttl_s\":0,"));
    ASSERT_EQ_INT(0, ev->ttl_s);
    event_free(ev);
    expect_err(WITH(HDR("device.unregister") "\"priority\":\"urgent\","), EVENT_ERR_INVALID,
               "field 'priority' must be 'high' or 'normal', got 'urgent'");
    expect_err(WITH(HDR("device.unregister") "\"priority\":10,"), EVENT_ERR_INVALID,
               "field 'priority' must be a string");
#undef WITH
}

TEST(recipients_rules)
{
    const char *tail = "\"thread\":\"t\",\"sender_name\":\"K\",\"school_name\":\"S\"}";
    char buf[1024];
#define MSG(r) (snprintf(buf, sizeof buf, "%s%s%s", HDR("message.new"), r, tail), buf)
    expect_err(MSG(""), EVENT_ERR_MISSING, "missing required field 'recipients'");
    expect_err(MSG("\"recipients\":[],"), EVENT_ERR_INVALID, "'recipients' must not be empty");
    expect_err(MSG("\"recipients\":\"u1\","), EVENT_ERR_INVALID, "'recipients' must be an array");
    expect_err(MSG("\"recipients\":[\"a\",\"b\",\"c\",7],"), EVENT_ERR_INVALID,
               "field 'recipients[3]' must be a string or {user, badge}");
    expect_err(MSG("\"recipients\":[{\"badge\":1}],"), EVENT_ERR_INVALID,
               "field 'recipients[0]' must be a string or {user, badge}");
    expect_err(MSG("\"recipients\":[{\"user\":\"u\",\"badge\":-1}],"), EVENT_ERR_INVALID,
               "'recipients[0].badge'");
    expect_err(MSG("\"recipients\":[{\"user\":\"u\",\"badge\":\"2\"}],"), EVENT_ERR_INVALID,
               "'recipients[0].badge'");
    expect_err(MSG("\"recipients\":[\"ok\",\"a:b\"],"), EVENT_ERR_INVALID,
               "'recipients[1]' user id must not contain ':'");
    expect_err(MSG("\"recipients\":[\"\"],"), EVENT_ERR_INVALID, "'recipients[0]' user id must be 1..128");
    expect_err(MSG("\"recipients\":[\"\\u0007\"],"), EVENT_ERR_INVALID, "printable");
    expect_err(MSG("\"recipients\":[null],"), EVENT_ERR_INVALID, "'recipients[0]'");
#undef MSG
}

TEST(recipients_limit)
{
    /* EVENT_MAX_RECIPIENTS entries pass, one more fails. */
    size_t n = EVENT_MAX_RECIPIENTS + 1;
    size_t cap = 512 + n * 4;
    char *buf = xmalloc(cap);
    size_t o = (size_t)snprintf(buf, cap, "%s\"recipients\":[", HDR("timetable.changed"));
    for (size_t i = 0; i < n - 1; i++) {
        memcpy(buf + o, "\"u\",", 4);
        o += 4;
    }
    size_t mark = o;
    const char *tail = "\"u\"],\"student_name\":\"O\",\"date\":\"2026-11-30\",\"summary\":\"s\"}";
    strcpy(buf + o, tail);
    struct event *ev = NULL;
    ASSERT_EQ_INT(EVENT_ERR_INVALID, event_parse(buf, strlen(buf), &ev, reason, sizeof reason));
    ASSERT_STR_CONTAINS(reason, "more than 200000");
    /* Drop one entry. */
    strcpy(buf + mark - 4, tail);
    ASSERT_EQ_INT(0, event_parse(buf, strlen(buf), &ev, reason, sizeof reason));
    ASSERT_EQ_INT(EVENT_MAX_RECIPIENTS, ev->n_recipients);
    event_free(ev);
    free(buf);
}

TEST(per_type_required_fields)
{
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"sender_name\":\"K\",\"school_name\":\"S\"}",
               EVENT_ERR_MISSING, "missing required field 'thread'");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"school_name\":\"S\"}",
               EVENT_ERR_MISSING, "missing required field 'sender_name'");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"sender_name\":\"K\"}",
               EVENT_ERR_MISSING, "missing required field 'school_name'");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"sender_name\":3,\"school_name\":\"S\"}",
               EVENT_ERR_INVALID, "field 'sender_name' must be a string");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"sender_name\":\"\",\"school_name\":\"S\"}",
               EVENT_ERR_INVALID, "field 'sender_name' must not be empty");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"sender_name\":\"K\",\"school_name\":\"S\",\"subject\":[]}",
               EVENT_ERR_INVALID, "field 'subject' must be a string");
    expect_err(HDR("message.new") "\"recipients\":[\"u\"],\"thread\":\"t\",\"sender_name\":\"\xff\xfe\",\"school_name\":\"S\"}",
               EVENT_ERR_INVALID, "not valid UTF-8");

    const char *ar = HDR("absence.reported") "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\",";
    char buf[1024];
#define AR(rest) (snprintf(buf, sizeof buf, "%s%s", ar, rest), buf)
    expect_err(AR("\"date\":\"2026-11-28\",\"kind\":\"day\"}"), EVENT_ERR_MISSING,
               "missing required field 'reported_by'");
    expect_err(AR("\"date\":\"2026-11-31\",\"kind\":\"day\",\"reported_by\":\"g\"}"),
               EVENT_ERR_INVALID, "field 'date' must be a date YYYY-MM-DD, got '2026-11-31'");
    expect_err(AR("\"date\":\"2027-02-29\",\"kind\":\"day\",\"reported_by\":\"g\"}"),
               EVENT_ERR_INVALID, "field 'date'");
    expect_err(AR("\"date\":\"2026-11-28\",\"kind\":\"week\",\"reported_by\":\"g\"}"),
               EVENT_ERR_INVALID, "field 'kind' must be 'day' or 'hours', got 'week'");
    expect_err(AR("\"date\":\"2026-11-28\",\"kind\":\"hours\",\"from\":\"24:00\",\"reported_by\":\"g\"}"),
               EVENT_ERR_INVALID, "field 'from' must be a time HH:MM");
    expect_err(AR("\"date\":\"2026-11-28\",\"kind\":\"hours\",\"to\":\"8:30\",\"reported_by\":\"g\"}"),
               EVENT_ERR_INVALID, "field 'to' must be a time HH:MM");
    expect_err(AR("\"date\":\"2026-11-28\",\"kind\":\"day\",\"reported_by\":\"g:1\"}"),
               EVENT_ERR_INVALID, "field 'reported_by' must not contain ':'");
    expect_err(AR("\"kind\":\"day\",\"reported_by\":\"g\"}"), EVENT_ERR_MISSING,
               "missing required field 'date'");
#undef AR

    expect_err(HDR("absence.alert") "\"recipients\":[\"u\"],\"student_name\":\"O\",\"date\":\"2026-11-28\"}",
               EVENT_ERR_MISSING, "missing required field 'student'");
    expect_err(HDR("absence.alert") "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\",\"date\":\"2026-11-28\",\"lesson\":2}",
               EVENT_ERR_INVALID, "field 'lesson' must be a string");

    expect_err(HDR("leave.decided") "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
               "\"from\":\"2026-12-01\",\"to\":\"2026-12-03\",\"decision\":\"maybe\"}",
               EVENT_ERR_INVALID, "field 'decision' must be 'approved' or 'declined'");
    expect_err(HDR("leave.decided") "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
               "\"from\":\"2026-12-01\",\"decision\":\"approved\"}",
               EVENT_ERR_MISSING, "missing required field 'to'");
    expect_err(HDR("leave.decided") "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
               "\"from\":\"tomorrow\",\"to\":\"2026-12-03\",\"decision\":\"approved\"}",
               EVENT_ERR_INVALID, "field 'from' must be a date");

    expect_err(HDR("timetable.changed") "\"recipients\":[\"u\"],\"student_name\":\"O\",\"date\":\"2026-11-30\"}",
               EVENT_ERR_MISSING, "missing required field 'summary'");
    expect_err(HDR("timetable.changed") "\"student_name\":\"O\",\"date\":\"2026-11-30\",\"summary\":\"s\"}",
               EVENT_ERR_MISSING, "missing required field 'recipients'");
}

/* 64 hex digits: an APNs device token of today's size. */
#define TOK64 "a1B2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

TEST(device_register_rules)
{
    const char *h = HDR("device.register") "\"user\":\"g\",\"device\":\"d\",";
    char buf[8192];
#define DR(rest) (snprintf(buf, sizeof buf, "%s%s", h, rest), buf)
    expect_err(DR("\"platform\":\"web\",\"token\":\"x\",\"app\":\"demo\"}"), EVENT_ERR_INVALID,
               "field 'platform' must be 'ios' or 'android', got 'web'");
    expect_err(DR("\"token\":\"" TOK64 "\",\"app\":\"demo\"}"), EVENT_ERR_MISSING,
               "missing required field 'platform'");
    expect_err(DR("\"platform\":\"ios\",\"app\":\"demo\"}"), EVENT_ERR_MISSING,
               "missing required field 'token'");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"" TOK64 "\"}"), EVENT_ERR_MISSING,
               "missing required field 'app'");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"" TOK64 "\",\"app\":\"de mo\"}"),
               EVENT_ERR_INVALID, "field 'app' must match");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"" TOK64 "\",\"app\":\"demo\","
                  "\"environment\":\"dev\"}"),
               EVENT_ERR_INVALID, "field 'environment' must be 'production' or 'sandbox'");
    expect_err(DR("\"platform\":\"android\",\"token\":123,\"app\":\"demo\"}"), EVENT_ERR_INVALID,
               "field 'token' must be a string");
    expect_err(HDR("device.register") "\"device\":\"d\",\"platform\":\"ios\",\"token\":\"" TOK64
               "\",\"app\":\"demo\"}",
               EVENT_ERR_MISSING, "missing required field 'user'");
    expect_err(HDR("device.register") "\"user\":\"g\",\"device\":\"d:1\",\"platform\":\"ios\","
               "\"token\":\"" TOK64 "\",\"app\":\"demo\"}",
               EVENT_ERR_INVALID, "field 'device' must not contain ':'");
#undef DR
}

/* device.register with |platform| and |token|: the result code, the reason in |reason|. */
static int register_with(const char *platform, const char *token)
{
    size_t cap = strlen(token) + 512;
    char *json = xmalloc(cap);
    snprintf(json, cap, "%s\"user\":\"g\",\"device\":\"d\",\"platform\":\"%s\",\"token\":\"%s\","
             "\"app\":\"demo\"}", HDR("device.register"), platform, token);
    struct event *ev = NULL;
    int rc = parse(json, &ev);
    if (rc == 0)
        ASSERT_STR_EQ(token, ev->token);
    event_free(ev);
    free(json);
    return rc;
}

/* |n| copies of |ch| (static buffer, n < 8192). */
static const char *rep(char ch, size_t n)
{
    static char b[8192];
    memset(b, ch, n);
    b[n] = '\0';
    return b;
}

TEST(token_rules_ios)
{
    ASSERT_EQ_INT(0, register_with("ios", TOK64));
    ASSERT_EQ_INT(0, register_with("ios", rep('F', 64)));
    ASSERT_EQ_INT(0, register_with("ios", rep('0', 66)));
    ASSERT_EQ_INT(0, register_with("ios", rep('a', 200)));

    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", rep('a', 62)));
    ASSERT_STR_CONTAINS(reason, "field 'token' must be 64..200 hex digits for ios, got 62 bytes");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", "abcdef01")); /* the old minimum */
    ASSERT_STR_CONTAINS(reason, "got 8 bytes");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", rep('a', 202)));
    ASSERT_STR_CONTAINS(reason, "got 202 bytes");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", ""));
    ASSERT_STR_CONTAINS(reason, "got 0 bytes");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", rep('a', 65)));
    ASSERT_STR_CONTAINS(reason, "field 'token' must be an even number of hex digits for ios, got 65");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", rep('a', 199)));
    ASSERT_STR_CONTAINS(reason, "even number");

    char t[80];
    snprintf(t, sizeof t, "%s", TOK64);
    t[10] = 'g';
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", t));
    ASSERT_STR_CONTAINS(reason, "field 'token' must be hex digits for ios (byte 10 is not)");
    ASSERT(strstr(reason, "a1B2c3d4") == NULL); /* the token is never quoted */
    t[10] = ' ';
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("ios", t));
    ASSERT_STR_CONTAINS(reason, "byte 10 is not");
    /* An FCM token on an iOS device. */
    ASSERT_EQ_INT(EVENT_ERR_INVALID,
                  register_with("ios", "dXhBc2Vfb3RoZXI6:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
                                       "dXhBc2Vfb3RoZXI6APA91bHun4MxP5egoKMwt2KZFB"));
    ASSERT_STR_CONTAINS(reason, "for ios");
}

TEST(token_rules_android)
{
    /* The shape of real FCM registration tokens (and of the harness's). */
    ASSERT_EQ_INT(0, register_with("android", "cAbC-dEf_01234567890AB:APA91bH-x_y"
                                              "z0123456789abcdefghijklmnopqrstuvwxyzABCD"));
    ASSERT_EQ_INT(0, register_with("android", "x"));
    ASSERT_EQ_INT(0, register_with("android", "fcm-token.v2:APA91b"));
    ASSERT_EQ_INT(0, register_with("android", TOK64));
    ASSERT_EQ_INT(0, register_with("android", rep('Z', 4096)));

    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("android", ""));
    ASSERT_STR_CONTAINS(reason, "field 'token' must be 1..4096 bytes for android, got 0");
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("android", rep('Z', 4097)));
    ASSERT_STR_CONTAINS(reason, "got 4097");
    static const char *const bad[] = { "abc/def", "abc def", "abc+def", "abc=", "a\\u00e5b",
                                       "a\\tb", "a\\\"b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("android", bad[i]));
        ASSERT_STR_CONTAINS(reason, "field 'token' must be [A-Za-z0-9_:.-] for android (byte ");
    }
    ASSERT_EQ_INT(EVENT_ERR_INVALID, register_with("android", "secretsecret/x"));
    ASSERT_STR_CONTAINS(reason, "(byte 12 is not)");
    ASSERT(strstr(reason, "secret") == NULL);
}

TEST(unregister_and_receipt_rules)
{
    expect_err(HDR("device.unregister") "\"user\":\"g\"}", EVENT_ERR_MISSING,
               "missing required field 'device'");
    expect_err(HDR("device.unregister") "\"device\":\"d\",\"user\":\"\"}", EVENT_ERR_INVALID,
               "field 'user' must be 1..128 bytes");
    expect_err(HDR("receipt.opened") "\"user\":\"g\",\"device\":\"d\"}", EVENT_ERR_MISSING,
               "missing required field 'event'");
    expect_err(HDR("receipt.opened") "\"event\":{},\"user\":\"g\",\"device\":\"d\"}",
               EVENT_ERR_INVALID, "field 'event' must be a string");
}

TEST(preferences_set_valid)
{
    struct event *ev = expect_ok(HDR("preferences.set")
        "\"user\":\"g1\",\"muted\":[\"timetable.changed\",\"message.new\",\"timetable.changed\"],"
        "\"quiet_hours\":{\"start\":\"21:00\",\"end\":\"07:30\"}}");
    ASSERT_EQ_INT(EVENT_PREFERENCES_SET, ev->type);
    ASSERT(!event_is_notification(ev->type));
    ASSERT_STR_EQ("g1", ev->user);
    ASSERT_EQ_INT((1u << EVENT_TIMETABLE_CHANGED) | (1u << EVENT_MESSAGE_NEW), ev->muted_mask);
    ASSERT_EQ_INT(21 * 60, ev->quiet_start_min);
    ASSERT_EQ_INT(7 * 60 + 30, ev->quiet_end_min);
    ASSERT_NULL(ev->recipients);
    event_free(ev);

    /* Absent: nothing muted, no quiet hours. */
    ev = expect_ok(HDR("preferences.set") "\"user\":\"g1\"}");
    ASSERT_EQ_INT(0, ev->muted_mask);
    ASSERT_EQ_INT(-1, ev->quiet_start_min);
    ASSERT_EQ_INT(-1, ev->quiet_end_min);
    event_free(ev);
    /* null is the same as absent; an empty list mutes nothing. */
    ev = expect_ok(HDR("preferences.set") "\"user\":\"g1\",\"muted\":null,\"quiet_hours\":null}");
    ASSERT_EQ_INT(0, ev->muted_mask);
    ASSERT_EQ_INT(-1, ev->quiet_start_min);
    event_free(ev);
    ev = expect_ok(HDR("preferences.set") "\"user\":\"g1\",\"muted\":[]}");
    ASSERT_EQ_INT(0, ev->muted_mask);
    event_free(ev);

    /* Every notification type can be muted (absence.alert too: accepted, the
     * daemon still delivers it). Quiet hours need not wrap midnight. */
    ev = expect_ok(HDR("preferences.set") "\"user\":\"g1\",\"muted\":[\"message.new\","
                   "\"absence.reported\",\"absence.alert\",\"leave.decided\",\"timetable.changed\"],"
                   "\"quiet_hours\":{\"start\":\"00:00\",\"end\":\"23:59\"}}");
    ASSERT_EQ_INT(0x1f, ev->muted_mask);
    ASSERT(ev->muted_mask & (1u << EVENT_ABSENCE_ALERT));
    ASSERT_EQ_INT(0, ev->quiet_start_min);
    ASSERT_EQ_INT(23 * 60 + 59, ev->quiet_end_min);
    event_free(ev);

    /* Other types leave the preference fields empty. */
    ev = expect_ok(HDR("device.unregister") "\"user\":\"g\",\"device\":\"d\","
                   "\"muted\":[\"message.new\"],\"quiet_hours\":{\"start\":\"21:00\",\"end\":\"07:00\"}}");
    ASSERT_EQ_INT(0, ev->muted_mask);
    ASSERT_EQ_INT(-1, ev->quiet_start_min);
    ASSERT_EQ_INT(-1, ev->quiet_end_min);
    event_free(ev);
}

TEST(preferences_set_rules)
{
    const char *h = HDR("preferences.set") "\"user\":\"g\",";
    char buf[1024];
#define PS(rest) (snprintf(buf, sizeof buf, "%s%s", h, rest), buf)
    expect_err(HDR("preferences.set") "\"muted\":[]}", EVENT_ERR_MISSING,
               "missing required field 'user'");
    expect_err(HDR("preferences.set") "\"user\":\"a:b\"}", EVENT_ERR_INVALID,
               "field 'user' must not contain ':'");
    expect_err(HDR("preferences.set") "\"user\":7}", EVENT_ERR_INVALID,
               "field 'user' must be a string");

    expect_err(PS("\"muted\":\"message.new\"}"), EVENT_ERR_INVALID,
               "field 'muted' must be an array of notification types");
    expect_err(PS("\"muted\":{}}"), EVENT_ERR_INVALID, "field 'muted' must be an array");
    expect_err(PS("\"muted\":[\"message.new\",3]}"), EVENT_ERR_INVALID,
               "field 'muted[1]' must be a string");
    expect_err(PS("\"muted\":[null]}"), EVENT_ERR_INVALID, "field 'muted[0]' must be a string");
    expect_err(PS("\"muted\":[\"message.nwe\"]}"), EVENT_ERR_INVALID,
               "field 'muted[0]' must be a notification type (message.new, absence.reported, "
               "absence.alert, leave.decided, timetable.changed), got 'message.nwe'");
    expect_err(PS("\"muted\":[\"message.new\",\"device.register\"]}"), EVENT_ERR_INVALID,
               "field 'muted[1]' must be a notification type");
    expect_err(PS("\"muted\":[\"user.erase\"]}"), EVENT_ERR_INVALID, "got 'user.erase'");
    expect_err(PS("\"muted\":[\"Message.New\"]}"), EVENT_ERR_INVALID, "'muted[0]'");

    expect_err(PS("\"quiet_hours\":\"21:00-07:00\"}"), EVENT_ERR_INVALID,
               "field 'quiet_hours' must be an object {start, end} or null");
    expect_err(PS("\"quiet_hours\":[\"21:00\",\"07:00\"]}"), EVENT_ERR_INVALID,
               "field 'quiet_hours' must be an object");
    expect_err(PS("\"quiet_hours\":{\"end\":\"07:00\"}}"), EVENT_ERR_MISSING,
               "missing required field 'quiet_hours.start'");
    expect_err(PS("\"quiet_hours\":{\"start\":\"21:00\"}}"), EVENT_ERR_MISSING,
               "missing required field 'quiet_hours.end'");
    expect_err(PS("\"quiet_hours\":{\"start\":\"21:00\",\"end\":null}}"), EVENT_ERR_INVALID,
               "field 'quiet_hours.end' must be a string");
    expect_err(PS("\"quiet_hours\":{\"start\":2100,\"end\":\"07:00\"}}"), EVENT_ERR_INVALID,
               "field 'quiet_hours.start' must be a string");
    static const char *const bad_times[] = { "24:00", "21:60", "7:00", "07:0", "07.00", "",
                                             "07:00:00", "ab:cd", " 7:00" };
    for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
        char rest[128];
        snprintf(rest, sizeof rest, "\"quiet_hours\":{\"start\":\"21:00\",\"end\":\"%s\"}}",
                 bad_times[i]);
        expect_err(PS(rest), EVENT_ERR_INVALID, "field 'quiet_hours.end' must be a time HH:MM");
    }
    expect_err(PS("\"quiet_hours\":{\"start\":\"22:15\",\"end\":\"22:15\"}}"), EVENT_ERR_INVALID,
               "field 'quiet_hours' must have start != end (both are 22:15)");
#undef PS
}

TEST(user_erase)
{
    struct event *ev = expect_ok(HDR("user.erase") "\"user\":\"guardian-17\"}");
    ASSERT_EQ_INT(EVENT_USER_ERASE, ev->type);
    ASSERT(!event_is_notification(ev->type));
    ASSERT_STR_EQ("guardian-17", ev->user);
    ASSERT_NULL(ev->device);
    ASSERT_NULL(ev->recipients);
    ASSERT_EQ_INT(0, ev->muted_mask);
    ASSERT_EQ_INT(-1, ev->quiet_start_min);
    event_free(ev);
    expect_err(HDR("user.erase") "\"device\":\"d\"}", EVENT_ERR_MISSING,
               "missing required field 'user'");
    expect_err(HDR("user.erase") "\"user\":\"\"}", EVENT_ERR_INVALID,
               "field 'user' must be 1..128 bytes, got 0");
    expect_err(HDR("user.erase") "\"user\":\"g:1\"}", EVENT_ERR_INVALID,
               "field 'user' must not contain ':'");
    expect_err(HDR("user.erase") "\"user\":[\"g\"]}", EVENT_ERR_INVALID,
               "field 'user' must be a string");
}

TEST(type_table)
{
    static const char *const names[] = { "message.new", "absence.reported", "absence.alert",
        "leave.decided", "timetable.changed", "device.register", "device.unregister",
        "receipt.opened", "preferences.set", "user.erase" };
    ASSERT_EQ_INT(EVENT_TYPE_COUNT, sizeof names / sizeof names[0]);
    for (int t = 0; t < EVENT_TYPE_COUNT; t++) {
        ASSERT_STR_EQ(names[t], event_type_name((enum event_type)t));
        ASSERT_EQ_INT(t, event_type_from_name(names[t]));
        ASSERT_EQ_INT(t <= EVENT_TIMETABLE_CHANGED, event_is_notification((enum event_type)t));
    }
    ASSERT_EQ_INT(EVENT_RECEIPT_OPENED + 1, EVENT_PREFERENCES_SET);
    ASSERT_EQ_INT(EVENT_PREFERENCES_SET + 1, EVENT_USER_ERASE);
    ASSERT(!event_is_notification(EVENT_TYPE_COUNT));
    ASSERT(!event_is_notification((enum event_type)-1));
    ASSERT_NULL(event_type_name((enum event_type)-1));
    ASSERT_EQ_INT(-1, event_type_from_name("preferences"));
    ASSERT_EQ_INT(-1, event_type_from_name(NULL));
}

/*
 * Unknown fields are ignored for every type, at the top level and inside
 * the objects the contract defines (recipients, quiet_hours).
 */
TEST(unknown_fields_ignored_every_type)
{
#define X "\"zz_future\":{\"a\":[1,null,{\"b\":\"c\"}]},\"x-extra\":\"\\u0007\",\"n\":-1.5,"
    static const char *const evs[] = {
        HDR("message.new") X "\"recipients\":[\"u1\",{\"user\":\"u2\",\"badge\":1,\"extra\":true}],"
            "\"thread\":\"t\",\"sender_name\":\"K\",\"school_name\":\"S\"}",
        HDR("absence.reported") X "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
            "\"date\":\"2026-11-28\",\"kind\":\"day\",\"reported_by\":\"g\",\"reason\":\"x\"}",
        HDR("absence.alert") X "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
            "\"date\":\"2026-11-28\"}",
        HDR("leave.decided") X "\"recipients\":[\"u\"],\"student\":\"s\",\"student_name\":\"O\","
            "\"from\":\"2026-12-01\",\"to\":\"2026-12-02\",\"decision\":\"approved\"}",
        HDR("timetable.changed") X "\"recipients\":[\"u\"],\"student_name\":\"O\","
            "\"date\":\"2026-11-30\",\"summary\":\"s\"}",
        HDR("device.register") X "\"user\":\"g\",\"device\":\"d\",\"platform\":\"ios\","
            "\"token\":\"" TOK64 "\",\"app\":\"demo\",\"os_version\":\"17.1\"}",
        HDR("device.unregister") X "\"user\":\"g\",\"device\":\"d\"}",
        HDR("receipt.opened") X "\"event\":\"e\",\"user\":\"g\",\"device\":\"d\",\"action\":\"tap\"}",
        HDR("preferences.set") X "\"user\":\"g\",\"muted\":[\"message.new\"],"
            "\"quiet_hours\":{\"start\":\"21:00\",\"end\":\"07:00\",\"tz\":\"Europe/Oslo\"}}",
        HDR("user.erase") X "\"user\":\"g\",\"requested_by\":\"admin-1\"}",
    };
#undef X
    ASSERT_EQ_INT(EVENT_TYPE_COUNT, sizeof evs / sizeof evs[0]);
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        struct event *ev = expect_ok(evs[i]);
        ASSERT_EQ_INT(i, ev->type);
        event_free(ev);
    }
}

/* Read all of |path| (NUL-terminated) into a new buffer; NULL on failure. */
static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = xmalloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * Every ```json block of docs/events.md (the tests run from the repo root)
 * parses, and together they show every type.
 */
TEST(docs_examples_parse)
{
    size_t len;
    char *md = slurp("docs/events.md", &len);
    if (md == NULL)
        TEST_FAIL_("cannot read docs/events.md (run from the repo root)");
    unsigned seen = 0;
    int blocks = 0;
    for (char *p = md; (p = strstr(p, "```json\n")) != NULL;) {
        p += 8;
        char *end = strstr(p, "\n```");
        if (end == NULL)
            TEST_FAIL_("docs/events.md: a ```json block is not closed");
        struct event *ev = NULL;
        int rc = event_parse(p, (size_t)(end - p), &ev, reason, sizeof reason);
        if (rc != 0)
            TEST_FAIL_("docs/events.md example %d rejected: %s (%s):\n%.*s", blocks + 1,
                       event_error_code(rc), reason, (int)(end - p), p);
        if (seen & (1u << ev->type))
            fprintf(stderr, "  note: docs/events.md shows %s twice\n", event_type_name(ev->type));
        seen |= 1u << ev->type;
        event_free(ev);
        blocks++;
        p = end + 4;
    }
    for (int t = 0; t < EVENT_TYPE_COUNT; t++)
        if (!(seen & (1u << t)))
            TEST_FAIL_("docs/events.md has no ```json example of %s",
                       event_type_name((enum event_type)t));
    ASSERT_EQ_INT((1u << EVENT_TYPE_COUNT) - 1, seen);
    ASSERT(blocks >= EVENT_TYPE_COUNT);
    free(md);
}

/*
 * tests/schema/invalid/CODE--what.json: whole events with one defect each,
 * which tests/schema/test_schema.py rejects with docs/events.schema.json.
 * The parser must reject each with the code its name starts with.
 */
TEST(schema_invalid_examples_rejected)
{
    const char *dirpath = "tests/schema/invalid";
    DIR *dir = opendir(dirpath);
    if (dir == NULL)
        TEST_FAIL_("cannot open %s (run from the repo root)", dirpath);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 6 || strcmp(de->d_name + nl - 5, ".json") != 0)
            continue;
        const char *sep = strstr(de->d_name, "--");
        if (sep == NULL)
            TEST_FAIL_("%s/%s: the name must be CODE--what.json", dirpath, de->d_name);
        char code[32], path[512];
        snprintf(code, sizeof code, "%.*s", (int)(sep - de->d_name), de->d_name);
        snprintf(path, sizeof path, "%s/%s", dirpath, de->d_name);
        size_t len;
        char *json = slurp(path, &len);
        ASSERT_NOT_NULL(json);
        struct event *ev = NULL;
        int rc = event_parse(json, len, &ev, reason, sizeof reason);
        if (rc == 0)
            TEST_FAIL_("%s: accepted, expected %s", path, code);
        if (strcmp(code, event_error_code(rc)) != 0)
            TEST_FAIL_("%s: expected %s, got %s (%s)", path, code, event_error_code(rc), reason);
        free(json);
        n++;
    }
    closedir(dir);
    ASSERT(n >= 15);
}

TEST(error_codes)
{
    ASSERT_STR_EQ("ok", event_error_code(0));
    ASSERT_STR_EQ("missing_field", event_error_code(EVENT_ERR_MISSING));
    ASSERT_STR_EQ("invalid_field", event_error_code(EVENT_ERR_INVALID));
    ASSERT_STR_EQ("unknown", event_error_code(-99));
    /* A NULL reason buffer is allowed. */
    struct event *ev = NULL;
    ASSERT_EQ_INT(EVENT_ERR_JSON, event_parse("{", 1, &ev, NULL, 0));
    /* A small reason buffer truncates but stays terminated. */
    char small[8];
    ASSERT_EQ_INT(EVENT_ERR_TYPE, event_parse("{\"v\":1,\"type\":\"zzz\"}", 20, &ev, small, sizeof small));
    ASSERT_EQ_INT(7, strlen(small));
    event_free(NULL);
}

/* Dead letters keep ids and structure, never names, texts or whole tokens. */
TEST(redact_keeps_ids_only)
{
    const char *in = "{\"v\":1,\"id\":\"m-1\",\"type\":\"message.new\",\"tenant\":\"oslo\","
                     "\"occurred_at\":\"2026-11-30T08:15:00+01:00\",\"recipients\":[\"g-1\","
                     "{\"user\":\"g-2\",\"badge\":3}],\"thread\":\"t-9\",\"sender_name\":"
                     "\"Lærer Hansen\",\"school_name\":\"Ila skole\",\"subject\":\"Tur\","
                     "\"preview\":\"Husk matpakke\",\"note\":{\"a\":\"syk\"},"
                     "\"token\":\"0123456789abcdef0123\"}";
    char *out = event_redact(in, strlen(in));
    ASSERT_STR_CONTAINS(out, "\"id\":\"m-1\"");
    ASSERT_STR_CONTAINS(out, "\"tenant\":\"oslo\"");
    ASSERT_STR_CONTAINS(out, "\"thread\":\"t-9\"");
    ASSERT_STR_CONTAINS(out, "\"badge\":3");
    ASSERT_STR_CONTAINS(out, "\"sender_name\":\"<redacted: 13 bytes>\"");
    ASSERT_STR_CONTAINS(out, "\"note\":\"<redacted>\"");
    ASSERT_STR_CONTAINS(out, "\"token\":\"01234567\u2026\"");
    ASSERT(strstr(out, "Hansen") == NULL && strstr(out, "Ila") == NULL &&
           strstr(out, "Tur") == NULL && strstr(out, "matpakke") == NULL &&
           strstr(out, "syk") == NULL && strstr(out, "89abcdef") == NULL);
    free(out);
    out = event_redact("{\"name\":\"Kari Nordmann\"", 24);
    ASSERT_STR_EQ("<not a JSON object: 24 bytes>", out);
    free(out);
}

TEST_MAIN(T(redact_keeps_ids_only), T(message_new_valid), T(absence_reported_valid), T(absence_alert_valid),
          T(leave_decided_valid), T(timetable_changed_valid), T(device_register_valid),
          T(device_unregister_and_receipt_valid), T(invalid_json), T(not_an_object),
          T(too_large), T(version), T(unknown_type), T(common_fields), T(recipients_rules),
          T(recipients_limit), T(per_type_required_fields), T(device_register_rules),
          T(token_rules_ios), T(token_rules_android), T(unregister_and_receipt_rules),
          T(preferences_set_valid), T(preferences_set_rules), T(user_erase), T(type_table),
          T(unknown_fields_ignored_every_type), T(docs_examples_parse),
          T(schema_invalid_examples_rejected), T(error_codes))
