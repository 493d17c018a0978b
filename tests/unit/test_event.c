/*
 * Tests for queue/event.c: valid events of every type, and every rule of the
 * v1 contract with its error code and reason.
 */
#include "tests/unit/test.h"

#include "queue/event.h"
#include "common/util.h"

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

TEST(device_register_rules)
{
    const char *h = HDR("device.register") "\"user\":\"g\",\"device\":\"d\",";
    char buf[8192];
#define DR(rest) (snprintf(buf, sizeof buf, "%s%s", h, rest), buf)
    expect_err(DR("\"platform\":\"web\",\"token\":\"x\",\"app\":\"demo\"}"), EVENT_ERR_INVALID,
               "field 'platform' must be 'ios' or 'android', got 'web'");
    expect_err(DR("\"token\":\"abcdef01\",\"app\":\"demo\"}"), EVENT_ERR_MISSING,
               "missing required field 'platform'");
    expect_err(DR("\"platform\":\"ios\",\"app\":\"demo\"}"), EVENT_ERR_MISSING,
               "missing required field 'token'");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"abcdef0\",\"app\":\"demo\"}"),
               EVENT_ERR_INVALID, "8..200 hex digits");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"abcdefgh\",\"app\":\"demo\"}"),
               EVENT_ERR_INVALID, "8..200 hex digits");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"abcdef01\"}"), EVENT_ERR_MISSING,
               "missing required field 'app'");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"abcdef01\",\"app\":\"de mo\"}"),
               EVENT_ERR_INVALID, "field 'app' must match");
    expect_err(DR("\"platform\":\"ios\",\"token\":\"abcdef01\",\"app\":\"demo\",\"environment\":\"dev\"}"),
               EVENT_ERR_INVALID, "field 'environment' must be 'production' or 'sandbox'");
    expect_err(DR("\"platform\":\"android\",\"token\":\"\",\"app\":\"demo\"}"), EVENT_ERR_INVALID,
               "1..4096 printable bytes");
    expect_err(DR("\"platform\":\"android\",\"token\":123,\"app\":\"demo\"}"), EVENT_ERR_INVALID,
               "field 'token' must be a string");
    /* ios token length bounds: 200 hex ok, 201 not. */
    char tok[256];
    memset(tok, 'f', 201);
    tok[201] = '\0';
    char rest[512];
    snprintf(rest, sizeof rest, "\"platform\":\"ios\",\"token\":\"%s\",\"app\":\"demo\"}", tok);
    expect_err(DR(rest), EVENT_ERR_INVALID, "got 201 bytes");
    tok[200] = '\0';
    snprintf(rest, sizeof rest, "\"platform\":\"ios\",\"token\":\"%s\",\"app\":\"demo\"}", tok);
    struct event *ev = expect_ok(DR(rest));
    event_free(ev);
    expect_err(HDR("device.register") "\"device\":\"d\",\"platform\":\"ios\",\"token\":\"abcdef01\",\"app\":\"demo\"}",
               EVENT_ERR_MISSING, "missing required field 'user'");
    expect_err(HDR("device.register") "\"user\":\"g\",\"device\":\"d:1\",\"platform\":\"ios\",\"token\":\"abcdef01\",\"app\":\"demo\"}",
               EVENT_ERR_INVALID, "field 'device' must not contain ':'");
#undef DR
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

TEST_MAIN(T(message_new_valid), T(absence_reported_valid), T(absence_alert_valid),
          T(leave_decided_valid), T(timetable_changed_valid), T(device_register_valid),
          T(device_unregister_and_receipt_valid), T(invalid_json), T(not_an_object),
          T(too_large), T(version), T(unknown_type), T(common_fields), T(recipients_rules),
          T(recipients_limit), T(per_type_required_fields), T(device_register_rules),
          T(unregister_and_receipt_rules), T(error_codes))
