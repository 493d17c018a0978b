/*
 * Tests of varsel-sandbox's FCM HTTP v1 fake.
 *
 * Pure part (sandbox/fcm.c): every error text and body shape in the order
 * of checks — HTML 404/405, 401 missing/invalid, 403 project, proto-JSON
 * parse errors (unknown names, wrong types, enums, Durations, oneof, all at
 * once), FCM's own checks (recipient, topic, condition, token format,
 * reserved keys, ttl, size), the token tables, validate_only, injected
 * faults and the Google-style JSON layout.
 *
 * End to end (sandbox/server.c + fcm_service.c + oauth_service.c
 * in-process, varsel's own HTTP/2 client over TLS on 127.0.0.1): a token
 * from /token then a send, expired and unknown bearers, 100-stream limit
 * and the GOAWAY "exceeded_max_concurrent_streams" for a client that
 * overruns it, ":scheme: https:" accepted (firebase-admin), faults, the
 * per-device limits (collapsible burst of 20, the 241st message, per
 * token, none in bench mode), token-file reloads and the record.
 */
#include "tests/unit/test.h"
#include "tests/unit/sandbox_fixture.h"

#include "common/certgen.h"
#include "common/jws.h"
#include "common/util.h"
#include "http2/client.h"
#include "http2/tls.h"
#include "sandbox/fcm.h"
#include "sandbox/fcm_service.h"
#include "sandbox/oauth_service.h"
#include "sandbox/server.h"

#include <cJSON.h>
#include <dirent.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>

#define PROJECT "demo-proj"
#define PATH "/v1/projects/" PROJECT "/messages:send"
#define TOKEN_A "cAbCdEfGhIjKlMnOpQrStUv:APA91bHvalidtokenvalidtoken0123456789"
#define TOKEN_B "bBbBbBbBbBbBbBbBbBbBbB:APA91bHsecondtokensecondtoken01234567"
#define EMAIL "sa@" PROJECT ".iam.gserviceaccount.com"
#define KID "0123456789abcdef0123456789abcdef01234567"

/* ---- pure validation ------------------------------------------------------- */

struct rq {
    struct sbx_request r;
    struct sbx_header h[8];
    char body[16384];
};

static struct rq *rq(const char *method, const char *path, const char *body)
{
    static struct rq q;
    memset(&q, 0, sizeof q);
    q.r.method = method;
    q.r.path = path;
    q.r.scheme = "https";
    q.r.authority = "fcm.googleapis.com";
    q.r.headers = q.h;
    snprintf(q.body, sizeof q.body, "%s", body ? body : "");
    q.r.body = (const uint8_t *)q.body;
    q.r.body_len = q.r.body_total = strlen(q.body);
    return &q;
}

static struct sbx_fcm_config cfg;
static struct sbx_fcm_result res;

static int send_body(const char *body)
{
    sbx_fcm_result_clear(&res);
    return sbx_fcm_validate(&cfg, &rq("POST", PATH, body)->r, SBX_FCM_AUTH_OK, PROJECT, &res);
}

/* The response body parsed (caller frees). */
static cJSON *body_json(void)
{
    size_t len;
    const char *ct;
    char *b = sbx_fcm_response_body(&res, &len, &ct);
    ASSERT_STR_EQ("application/json; charset=UTF-8", ct);
    ASSERT_EQ_INT(strlen(b), len);
    cJSON *j = cJSON_Parse(b);
    ASSERT_NOT_NULL(j);
    free(b);
    return j;
}

/* Assert a 400 INVALID_ARGUMENT parse error with exactly |message|, one
 * BadRequest violation per line on |fields| ("" = no field), no FcmError. */
static void expect_parse_error(const char *body, const char *message, const char *const *fields,
                               size_t nfields)
{
    ASSERT_EQ_INT(400, send_body(body));
    ASSERT_STR_EQ("INVALID_ARGUMENT", res.grpc_status);
    ASSERT_STR_EQ(message, res.message);
    ASSERT_NULL(res.error_code);
    ASSERT(res.bad_request);
    ASSERT_EQ_INT(nfields, res.nviolations);
    for (size_t i = 0; i < nfields; i++)
        ASSERT_STR_EQ(fields[i], res.violations[i].field);
    cJSON *j = body_json();
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    ASSERT_EQ_INT(400, jnum(e, "code"));
    const cJSON *details = cJSON_GetObjectItem(e, "details");
    ASSERT_EQ_INT(1, cJSON_GetArraySize(details));
    const cJSON *d = cJSON_GetArrayItem(details, 0);
    ASSERT_STR_EQ("type.googleapis.com/google.rpc.BadRequest", jstr(d, "@type"));
    const cJSON *fv = cJSON_GetObjectItem(d, "fieldViolations");
    ASSERT_EQ_INT(nfields, cJSON_GetArraySize(fv));
    for (size_t i = 0; i < nfields; i++) {
        const cJSON *v = cJSON_GetArrayItem(fv, (int)i);
        if (fields[i][0])
            ASSERT_STR_EQ(fields[i], jstr(v, "field"));
        else
            ASSERT_NULL(cJSON_GetObjectItem(v, "field"));
        ASSERT_NOT_NULL(jstr(v, "description"));
    }
    cJSON_Delete(j);
}

static void expect_semantic(const char *body, const char *message, const char *field)
{
    ASSERT_EQ_INT(400, send_body(body));
    ASSERT_STR_EQ("INVALID_ARGUMENT", res.grpc_status);
    ASSERT_STR_EQ(message, res.message);
    ASSERT_STR_EQ("INVALID_ARGUMENT", res.error_code);
    if (field) {
        ASSERT(res.bad_request);
        ASSERT_EQ_INT(1, res.nviolations);
        ASSERT_STR_EQ(field, res.violations[0].field);
    } else {
        ASSERT(!res.bad_request);
    }
}

#define MSG(fields) "{\"message\":{\"token\":\"" TOKEN_A "\"" fields "}}"

TEST(paths_and_methods)
{
    ASSERT_EQ_INT(404, sbx_fcm_validate(&cfg, &rq("POST", "/v1/projects/" PROJECT "/messages:sendx",
                                                  "{}")->r, SBX_FCM_AUTH_OK, PROJECT, &res));
    ASSERT_EQ_INT(SBX_FCM_BODY_HTML_404, res.body_kind);
    ASSERT_STR_EQ("NOT_FOUND", sbx_fcm_reason(&res));
    size_t len;
    const char *ct;
    char *b = sbx_fcm_response_body(&res, &len, &ct);
    ASSERT_STR_EQ("text/html; charset=UTF-8", ct);
    ASSERT_STR_CONTAINS(b, "<title>Error 404 (Not Found)!!1</title>");
    ASSERT_STR_CONTAINS(b, "The requested URL <code>/v1/projects/demo-proj/messages:sendx</code> "
                           "was not found on this server.");
    free(b);
    sbx_fcm_result_clear(&res);
    static const char *const bad[] = { "/", "/v1/projects//messages:send", "/v1/projects/p",
                                       "/v1/projects/p/messages:send/x", "/v2/projects/p/messages:send",
                                       "/batch", NULL };
    for (int i = 0; bad[i]; i++) {
        ASSERT_EQ_INT(404, sbx_fcm_validate(&cfg, &rq("POST", bad[i], "{}")->r, SBX_FCM_AUTH_OK,
                                            PROJECT, &res));
        sbx_fcm_result_clear(&res);
    }
    /* A query string is not part of the path. */
    ASSERT_EQ_INT(200, sbx_fcm_validate(&cfg, &rq("POST", PATH "?alt=json", MSG(""))->r,
                                        SBX_FCM_AUTH_OK, PROJECT, &res));
    sbx_fcm_result_clear(&res);
    ASSERT_EQ_INT(405, sbx_fcm_validate(&cfg, &rq("GET", PATH, NULL)->r, SBX_FCM_AUTH_OK, PROJECT,
                                        &res));
    ASSERT_STR_EQ("METHOD_NOT_ALLOWED", sbx_fcm_reason(&res));
    b = sbx_fcm_response_body(&res, &len, &ct);
    ASSERT_STR_CONTAINS(b, "The request method <code>GET</code> is inappropriate for the URL "
                           "<code>/v1/projects/demo-proj/messages:send</code>.");
    free(b);
    /* Paths are HTML-escaped. */
    sbx_fcm_result_clear(&res);
    sbx_fcm_validate(&cfg, &rq("POST", "/<script>&", NULL)->r, SBX_FCM_AUTH_OK, PROJECT, &res);
    b = sbx_fcm_response_body(&res, &len, &ct);
    ASSERT_STR_CONTAINS(b, "<code>/&lt;script&gt;&amp;</code>");
    free(b);
    sbx_fcm_result_clear(&res);
}

TEST(authentication_and_project)
{
    const struct sbx_request *r = &rq("POST", PATH, MSG(""))->r;
    ASSERT_EQ_INT(401, sbx_fcm_validate(&cfg, r, SBX_FCM_AUTH_MISSING, NULL, &res));
    ASSERT_STR_EQ("UNAUTHENTICATED", res.grpc_status);
    ASSERT_STR_EQ("Request is missing required authentication credential. Expected OAuth 2 access "
                  "token, login cookie or other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                  res.message);
    ASSERT_NULL(res.error_code);
    ASSERT(res.www_authenticate);
    cJSON *j = body_json();
    ASSERT_NULL(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "details"));
    cJSON_Delete(j);
    sbx_fcm_result_clear(&res);
    ASSERT_EQ_INT(401, sbx_fcm_validate(&cfg, r, SBX_FCM_AUTH_INVALID, NULL, &res));
    ASSERT_STR_EQ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
                  "login cookie or other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                  res.message);
    ASSERT_STR_EQ("UNAUTHENTICATED", sbx_fcm_reason(&res));
    sbx_fcm_result_clear(&res);
    /* Auth comes before the body: a bad body without credentials is 401. */
    ASSERT_EQ_INT(401, sbx_fcm_validate(&cfg, &rq("POST", PATH, "nonsense")->r,
                                        SBX_FCM_AUTH_MISSING, NULL, &res));
    sbx_fcm_result_clear(&res);
    ASSERT_EQ_INT(403, sbx_fcm_validate(&cfg, r, SBX_FCM_AUTH_OK, "other-proj", &res));
    ASSERT_STR_EQ("PERMISSION_DENIED", res.grpc_status);
    ASSERT_STR_EQ("Permission 'cloudmessaging.messages.create' denied on resource "
                  "'//cloudresourcemanager.googleapis.com/projects/demo-proj' (or it may not "
                  "exist).", res.message);
    ASSERT_NULL(res.error_code);
    sbx_fcm_result_clear(&res);
    /* Bench (auth skipped): any project, or only the configured ones. */
    r = &rq("POST", PATH, MSG(""))->r;
    ASSERT_EQ_INT(200, sbx_fcm_validate(&cfg, r, SBX_FCM_AUTH_SKIPPED, NULL, &res));
    sbx_fcm_result_clear(&res);
    const char *projects[] = { "other-proj" };
    struct sbx_fcm_config c2 = cfg;
    c2.projects = projects;
    c2.nprojects = 1;
    ASSERT_EQ_INT(403, sbx_fcm_validate(&c2, r, SBX_FCM_AUTH_SKIPPED, NULL, &res));
    sbx_fcm_result_clear(&res);
}

TEST(body_not_json)
{
    static const char *const none[] = { "" };
    expect_parse_error("{\"message\":{\"token\": x}}",
                       "Invalid JSON payload received. Unexpected token.\n"
                       "{\"message\":{\"token\": x}}\n"
                       "                     ^", none, 1);
    expect_parse_error("{\"message\":{}} trailing",
                       "Invalid JSON payload received. Unexpected token.\n"
                       "{\"message\":{}} trailing\n"
                       "               ^", none, 1);
    expect_parse_error("[1,2]", "Invalid JSON payload received. Root element must be a message.",
                       none, 1);
    /* An empty body is an empty request: no recipient. */
    expect_semantic("", "Recipient of the message is not set.", "message");
    expect_semantic("{}", "Recipient of the message is not set.", "message");
    expect_semantic("{\"message\":{\"token\":\"\"}}", "Recipient of the message is not set.",
                    "message");
}

TEST(unknown_names)
{
    static const char *const f1[] = { "message" };
    expect_parse_error(MSG(",\"foo\":1"),
                       "Invalid JSON payload received. Unknown name \"foo\" at 'message': "
                       "Cannot find field.", f1, 1);
    static const char *const f0[] = { "" };
    expect_parse_error("{\"msg\":{}}",
                       "Invalid JSON payload received. Unknown name \"msg\": Cannot find field.",
                       f0, 1);
    static const char *const f2[] = { "message.android.notification" };
    expect_parse_error(MSG(",\"android\":{\"notification\":{\"chanel_id\":\"x\"}}"),
                       "Invalid JSON payload received. Unknown name \"chanel_id\" at "
                       "'message.android.notification': Cannot find field.", f2, 1);
    /* Names are case-sensitive: proto names or lowerCamelCase only. */
    static const char *const f3[] = { "message" };
    expect_parse_error(MSG(",\"Notification\":{}"),
                       "Invalid JSON payload received. Unknown name \"Notification\" at "
                       "'message': Cannot find field.", f3, 1);
    /* An array for a singular field. */
    expect_parse_error(MSG(",\"notification\":[]"),
                       "Invalid JSON payload received. Unknown name \"notification\" at "
                       "'message': Proto field is not repeating, cannot start list.", f3, 1);
}

TEST(wrong_types)
{
    static const char *const d0[] = { "message.data[0].value" };
    expect_parse_error(MSG(",\"data\":{\"n\":12}"),
                       "Invalid value at 'message.data[0].value' (TYPE_STRING), 12", d0, 1);
    static const char *const d1[] = { "message.data[1].value" };
    expect_parse_error(MSG(",\"data\":{\"a\":\"ok\",\"b\":true}"),
                       "Invalid value at 'message.data[1].value' (TYPE_STRING), true", d1, 1);
    expect_parse_error(MSG(",\"data\":{\"a\":{\"x\":1}}"),
                       "Invalid value at 'message.data[0].value' (TYPE_STRING), Starting an "
                       "object on a scalar field", d0, 1);
    expect_parse_error(MSG(",\"data\":{\"a\":1.5}"),
                       "Invalid value at 'message.data[0].value' (TYPE_STRING), 1.5", d0, 1);
    static const char *const t[] = { "message.token" };
    expect_parse_error("{\"message\":{\"token\":12345}}",
                       "Invalid value at 'message.token' (TYPE_STRING), 12345", t, 1);
    static const char *const n[] = { "message.notification" };
    expect_parse_error(MSG(",\"notification\":\"hi\""),
                       "Invalid value at 'message.notification' "
                       "(type.googleapis.com/google.firebase.fcm.v1.Notification), \"hi\"", n, 1);
    static const char *const dm[] = { "message.data" };
    expect_parse_error(MSG(",\"data\":\"x\""),
                       "Invalid value at 'message.data' "
                       "(type.googleapis.com/google.firebase.fcm.v1.Message.DataEntry), \"x\"",
                       dm, 1);
    static const char *const vo[] = { "validate_only" };
    expect_parse_error("{\"validate_only\":\"yes\",\"message\":{\"token\":\"" TOKEN_A "\"}}",
                       "Invalid value at 'validate_only' (TYPE_BOOL), \"yes\"", vo, 1);
    static const char *const la[] = { "message.android.notification.body_loc_args[1]" };
    expect_parse_error(MSG(",\"android\":{\"notification\":{\"body_loc_args\":[\"a\",2]}}"),
                       "Invalid value at 'message.android.notification.body_loc_args[1]' "
                       "(TYPE_STRING), 2", la, 1);
    static const char *const ls[] = { "message.android.notification.body_loc_args" };
    expect_parse_error(MSG(",\"android\":{\"notification\":{\"body_loc_args\":\"a\"}}"),
                       "Invalid value at 'message.android.notification.body_loc_args' "
                       "(TYPE_STRING), \"a\"", ls, 1);
    static const char *const nc[] = { "message.android.notification.notification_count" };
    expect_parse_error(MSG(",\"android\":{\"notification\":{\"notification_count\":1.5}}"),
                       "Invalid value at 'message.android.notification.notification_count' "
                       "(TYPE_INT32), 1.5", nc, 1);
    static const char *const et[] = { "message.android.notification.event_time" };
    expect_parse_error(MSG(",\"android\":{\"notification\":{\"event_time\":\"yesterday\"}}"),
                       "Invalid value at 'message.android.notification.event_time' "
                       "(type.googleapis.com/google.protobuf.Timestamp), \"yesterday\"", et, 1);
    static const char *const ap[] = { "message.apns.payload" };
    expect_parse_error(MSG(",\"apns\":{\"payload\":\"x\"}"),
                       "Invalid value at 'message.apns.payload' "
                       "(type.googleapis.com/google.protobuf.Struct), \"x\"", ap, 1);
}

TEST(enums_and_durations)
{
    static const char *const p[] = { "message.android.priority" };
    expect_parse_error(MSG(",\"android\":{\"priority\":\"URGENT\"}"),
                       "Invalid value at 'message.android.priority' "
                       "(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
                       "\"URGENT\"", p, 1);
    expect_parse_error(MSG(",\"android\":{\"priority\":2}"),
                       "Invalid value at 'message.android.priority' "
                       "(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), 2",
                       p, 1);
    /* Case-insensitive names and enum numbers are fine. */
    ASSERT_EQ_INT(200, send_body(MSG(",\"android\":{\"priority\":\"high\"}")));
    ASSERT_EQ_INT(200, send_body(MSG(",\"android\":{\"priority\":\"Normal\"}")));
    ASSERT_EQ_INT(200, send_body(MSG(",\"android\":{\"priority\":1}")));
    ASSERT_EQ_INT(200, send_body(MSG(",\"android\":{\"notification\":{\"visibility\":\"public\","
                                     "\"notification_priority\":\"PRIORITY_HIGH\"}}")));
    static const char *const t[] = { "message.android.ttl" };
    static const char *const bad[] = { "3.5", "3.5S", "-1s", "s", "1.s", "1.1234567890s", "1e3s",
                                       " 3s", "3s ", NULL };
    for (int i = 0; bad[i]; i++) {
        char body[256], msg[256];
        snprintf(body, sizeof body, MSG(",\"android\":{\"ttl\":\"%s\"}"), bad[i]);
        snprintf(msg, sizeof msg, "Invalid value at 'message.android.ttl' "
                 "(type.googleapis.com/google.protobuf.Duration), \"%s\"", bad[i]);
        expect_parse_error(body, msg, t, 1);
    }
    expect_parse_error(MSG(",\"android\":{\"ttl\":3600}"),
                       "Invalid value at 'message.android.ttl' "
                       "(type.googleapis.com/google.protobuf.Duration), 3600", t, 1);
    static const char *const good[] = { "0s", "3s", "3.5s", "3.123456789s", "2419200s",
                                        "2419199.999999999s", NULL };
    for (int i = 0; good[i]; i++) {
        char body[256];
        snprintf(body, sizeof body, MSG(",\"android\":{\"ttl\":\"%s\"}"), good[i]);
        ASSERT_EQ_INT(200, send_body(body));
    }
    /* Over 28 days: a valid Duration, refused by FCM. */
    expect_semantic(MSG(",\"android\":{\"ttl\":\"2419201s\"}"),
                    "Request contains an invalid argument.", "message.android.ttl");
    expect_semantic(MSG(",\"android\":{\"ttl\":\"2419200.5s\"}"),
                    "Request contains an invalid argument.", "message.android.ttl");
}

TEST(several_errors_at_once)
{
    static const char *const f[] = { "message", "message.data[0].value", "message.android" };
    expect_parse_error(MSG(",\"foo\":1,\"data\":{\"a\":1},\"android\":{\"bar\":{}}"),
                       "Invalid JSON payload received. Unknown name \"foo\" at 'message': Cannot "
                       "find field.\n"
                       "Invalid value at 'message.data[0].value' (TYPE_STRING), 1\n"
                       "Invalid JSON payload received. Unknown name \"bar\" at 'message.android': "
                       "Cannot find field.", f, 3);
}

TEST(one_target_only)
{
    static const char *const f[] = { "message" };
    expect_parse_error("{\"message\":{\"token\":\"" TOKEN_A "\",\"topic\":\"news\"}}",
                       "Invalid JSON payload received. Oneof field 'target' is already set. "
                       "Cannot set 'topic'", f, 1);
    expect_parse_error("{\"message\":{\"condition\":\"'a' in topics\",\"token\":\"" TOKEN_A "\"}}",
                       "Invalid JSON payload received. Oneof field 'target' is already set. "
                       "Cannot set 'token'", f, 1);
    /* A null member does not count. */
    ASSERT_EQ_INT(200, send_body("{\"message\":{\"token\":\"" TOKEN_A "\",\"topic\":null}}"));
    expect_semantic("{\"message\":{\"notification\":{\"title\":\"t\"}}}",
                    "Recipient of the message is not set.", "message");
    /* Recipient check: BadRequest first, then FcmError. */
    cJSON *j = body_json();
    const cJSON *details = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "details");
    ASSERT_EQ_INT(2, cJSON_GetArraySize(details));
    ASSERT_STR_EQ("type.googleapis.com/google.rpc.BadRequest",
                  jstr(cJSON_GetArrayItem(details, 0), "@type"));
    ASSERT_STR_EQ("type.googleapis.com/google.firebase.fcm.v1.FcmError",
                  jstr(cJSON_GetArrayItem(details, 1), "@type"));
    ASSERT_STR_EQ("INVALID_ARGUMENT", jstr(cJSON_GetArrayItem(details, 1), "errorCode"));
    cJSON_Delete(j);
}

TEST(camel_case_names)
{
    ASSERT_EQ_INT(200, send_body("{\"validateOnly\":true,\"message\":{\"token\":\"" TOKEN_A "\","
                                 "\"fcmOptions\":{\"analyticsLabel\":\"l\"},\"android\":{"
                                 "\"collapseKey\":\"c\",\"restrictedPackageName\":\"no.x\","
                                 "\"directBootOk\":true,\"notification\":{\"channelId\":\"m\","
                                 "\"clickAction\":\"A\",\"bodyLocArgs\":[\"a\"],"
                                 "\"notificationCount\":\"3\",\"eventTime\":"
                                 "\"2026-11-28T12:00:00Z\",\"vibrateTimings\":[\"1s\",\"0.5s\"],"
                                 "\"lightSettings\":{\"color\":{\"red\":1,\"alpha\":0.5},"
                                 "\"lightOnDuration\":\"1s\"}}},"
                                 "\"apns\":{\"headers\":{\"apns-priority\":\"10\"},\"payload\":"
                                 "{\"aps\":{\"badge\":1}},\"fcmOptions\":{\"image\":\"https://x\"}},"
                                 "\"webpush\":{\"headers\":{\"TTL\":\"60\"},\"notification\":"
                                 "{\"title\":\"t\",\"n\":1},\"fcmOptions\":{\"link\":\"https://x\"}}}}"));
    ASSERT(res.validate_only);
    ASSERT_STR_EQ("projects/demo-proj/messages/fake_message_id", res.name);
    /* The same with snake_case. */
    ASSERT_EQ_INT(200, send_body("{\"validate_only\":false,\"message\":{\"token\":\"" TOKEN_A "\","
                                 "\"fcm_options\":{\"analytics_label\":\"l\"},\"android\":{"
                                 "\"collapse_key\":\"c\",\"notification\":{\"channel_id\":\"m\","
                                 "\"tag\":\"t\"}}}}"));
    ASSERT(!res.validate_only);
    ASSERT_STR_EQ("", res.name); /* the service names real sends */
    ASSERT_STR_EQ("token", res.target_kind);
    ASSERT_STR_EQ(TOKEN_A, res.target);
}

TEST(topics_and_conditions)
{
    ASSERT_EQ_INT(200, send_body("{\"message\":{\"topic\":\"news-1_a.b~c%20\"}}"));
    ASSERT_STR_EQ("topic", res.target_kind);
    expect_semantic("{\"message\":{\"topic\":\"/topics/news\"}}",
                    "Request contains an invalid argument.", "message.topic");
    expect_semantic("{\"message\":{\"topic\":\"a b\"}}", "Request contains an invalid argument.",
                    "message.topic");
    ASSERT_EQ_INT(200, send_body("{\"message\":{\"condition\":\"'a' in topics && ('b' in topics "
                                 "|| !('c' in topics))\"}}"));
    ASSERT_STR_EQ("condition", res.target_kind);
    expect_semantic("{\"message\":{\"condition\":\"'a' in topics &&\"}}",
                    "Request contains an invalid argument.", "message.condition");
    ASSERT(sbx_fcm_condition_valid("'a' in topics"));
    ASSERT(sbx_fcm_condition_valid("'a' in topics||'b' in topics"));
    ASSERT(sbx_fcm_condition_valid("!'a' in topics"));
    ASSERT(sbx_fcm_condition_valid("'a' in topics && 'b' in topics && 'c' in topics && "
                                   "'d' in topics && 'e' in topics"));
    ASSERT(!sbx_fcm_condition_valid("'a' in topics && 'b' in topics && 'c' in topics && "
                                    "'d' in topics && 'e' in topics && 'f' in topics"));
    ASSERT(!sbx_fcm_condition_valid("a in topics"));
    ASSERT(!sbx_fcm_condition_valid("'a' in topic"));
    ASSERT(!sbx_fcm_condition_valid("'a' intopics"));
    ASSERT(!sbx_fcm_condition_valid("('a' in topics"));
    ASSERT(!sbx_fcm_condition_valid("'a' in topics)"));
    ASSERT(!sbx_fcm_condition_valid("''"));
    ASSERT(!sbx_fcm_condition_valid(""));
}

TEST(token_format)
{
    const char *bad_text = "The registration token is not a valid FCM registration token";
    expect_semantic("{\"message\":{\"token\":\"short\"}}", bad_text, NULL);
    /* FcmError only, no BadRequest (as FCM answers). */
    cJSON *j = body_json();
    const cJSON *details = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "details");
    ASSERT_EQ_INT(1, cJSON_GetArraySize(details));
    ASSERT_STR_EQ("INVALID_ARGUMENT", jstr(cJSON_GetArrayItem(details, 0), "errorCode"));
    cJSON_Delete(j);
    expect_semantic("{\"message\":{\"token\":\"" TOKEN_A " x\"}}", bad_text, NULL);
    expect_semantic("{\"message\":{\"token\":\"" TOKEN_A "/\"}}", bad_text, NULL);
    ASSERT(sbx_fcm_token_well_formed(TOKEN_A, strlen(TOKEN_A), 0));
    ASSERT(sbx_fcm_token_well_formed("0123456789abcdef0123456789abcdef", 32, 0));
    ASSERT(!sbx_fcm_token_well_formed("0123456789abcdef0123456789abcde", 31, 0));
    ASSERT(sbx_fcm_token_well_formed("0123456789", 10, 10));
    /* The invalid-token file decides too. */
    char err[128];
    struct sbx_tokens *inv = sbx_tokens_parse(TOKEN_A "\n", strlen(TOKEN_A) + 1, SBX_TOKENS_PLAIN,
                                              NULL, 0, err, sizeof err);
    ASSERT_NOT_NULL(inv);
    cfg.invalid_tokens = inv;
    expect_semantic(MSG(""), bad_text, NULL);
    cfg.invalid_tokens = NULL;
    sbx_tokens_free(inv);
}

TEST(reserved_data_keys)
{
    static const char *const keys[] = { "from", "message_type", "google.c.a.e", "google",
                                        "gcm.notification.title", "gcmx", NULL };
    for (int i = 0; keys[i]; i++) {
        char body[256], msg[128];
        snprintf(body, sizeof body, MSG(",\"data\":{\"ok\":\"1\",\"%s\":\"x\"}"), keys[i]);
        snprintf(msg, sizeof msg, "Invalid data payload key: %s", keys[i]);
        expect_semantic(body, msg, "message.data");
    }
    expect_semantic(MSG(",\"android\":{\"data\":{\"from\":\"x\"}}"), "Invalid data payload key: from",
                    "message.android.data");
    ASSERT_EQ_INT(200, send_body(MSG(",\"data\":{\"fromage\":\"x\",\"notification\":\"y\"}")));
}

/* A message whose size as measured is exactly |n| bytes. */
static const char *sized(const char *target, size_t n)
{
    static char body[12000];
    /* {"data":{"k":"<pad>"}} = 17 bytes + pad */
    ASSERT(n > 17 && n - 17 < 9000);
    static char pad[9000];
    memset(pad, 'x', n - 17);
    pad[n - 17] = '\0';
    snprintf(body, sizeof body, "{\"message\":{%s,\"data\":{\"k\":\"%s\"}}}", target, pad);
    return body;
}

TEST(size_limits)
{
    ASSERT_EQ_INT(200, send_body(sized("\"token\":\"" TOKEN_A "\"", 4096)));
    ASSERT_EQ_INT(4096, res.payload_bytes);
    expect_semantic(sized("\"token\":\"" TOKEN_A "\"", 4097), "Android message is too big", NULL);
    ASSERT_EQ_INT(4097, res.payload_bytes);
    ASSERT_EQ_INT(200, send_body(sized("\"topic\":\"news\"", 2048)));
    expect_semantic(sized("\"topic\":\"news\"", 2049), "Android message is too big", NULL);
    ASSERT_EQ_INT(200, send_body(sized("\"condition\":\"'a' in topics\"", 4096)));
    /* The target, apns and webpush parts are not counted. */
    char body[12000];
    static char pad[5000];
    memset(pad, 'y', 4500);
    pad[4500] = '\0';
    snprintf(body, sizeof body, "{\"message\":{\"token\":\"" TOKEN_A "\",\"apns\":{\"payload\":"
             "{\"aps\":{\"alert\":\"%s\"}}}}}", pad);
    ASSERT_EQ_INT(200, send_body(body));
}

TEST(token_tables)
{
    char err[128];
    struct sbx_tokens *dead = sbx_tokens_parse(TOKEN_A "\n", strlen(TOKEN_A) + 1, SBX_TOKENS_PLAIN,
                                               NULL, 0, err, sizeof err);
    struct sbx_tokens *other = sbx_tokens_parse(TOKEN_B "\n", strlen(TOKEN_B) + 1,
                                                SBX_TOKENS_PLAIN, NULL, 0, err, sizeof err);
    cfg.unregistered = dead;
    cfg.sender_mismatch = other;
    ASSERT_EQ_INT(404, send_body(MSG("")));
    ASSERT_STR_EQ("NOT_FOUND", res.grpc_status);
    ASSERT_STR_EQ("Requested entity was not found.", res.message);
    ASSERT_STR_EQ("UNREGISTERED", res.error_code);
    ASSERT_STR_EQ("UNREGISTERED", sbx_fcm_reason(&res));
    /* Exactly Google's layout. */
    size_t len;
    const char *ct;
    char *b = sbx_fcm_response_body(&res, &len, &ct);
    ASSERT_STR_EQ("{\n  \"error\": {\n    \"code\": 404,\n    \"message\": \"Requested entity was "
                  "not found.\",\n    \"status\": \"NOT_FOUND\",\n    \"details\": [\n      {\n"
                  "        \"@type\": \"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\n"
                  "        \"errorCode\": \"UNREGISTERED\"\n      }\n    ]\n  }\n}\n", b);
    free(b);
    /* Dry runs check the token too. */
    ASSERT_EQ_INT(404, send_body("{\"validate_only\":true,\"message\":{\"token\":\"" TOKEN_A "\"}}"));
    ASSERT_EQ_INT(403, send_body("{\"message\":{\"token\":\"" TOKEN_B "\"}}"));
    ASSERT_STR_EQ("PERMISSION_DENIED", res.grpc_status);
    ASSERT_STR_EQ("SenderId mismatch", res.message);
    ASSERT_STR_EQ("SENDER_ID_MISMATCH", res.error_code);
    cfg.sender_mismatch = NULL;
    cfg.third_party_auth = other;
    ASSERT_EQ_INT(401, send_body("{\"message\":{\"token\":\"" TOKEN_B "\"}}"));
    ASSERT_STR_EQ("UNAUTHENTICATED", res.grpc_status);
    ASSERT_STR_EQ("Auth error from APNS or Web Push Service", res.message);
    ASSERT_STR_EQ("THIRD_PARTY_AUTH_ERROR", res.error_code);
    ASSERT(!res.www_authenticate);
    /* Topic targets ignore the token tables; validation errors win over them. */
    ASSERT_EQ_INT(200, send_body("{\"message\":{\"topic\":\"news\"}}"));
    ASSERT_EQ_INT(400, send_body(MSG(",\"data\":{\"from\":\"x\"}")));
    cfg.unregistered = cfg.third_party_auth = NULL;
    sbx_tokens_free(dead);
    sbx_tokens_free(other);
}

TEST(success_body_and_names)
{
    ASSERT_EQ_INT(200, send_body(MSG("")));
    ASSERT_NULL(sbx_fcm_reason(&res));
    sbx_fcm_message_name(PROJECT, 1500415314455276LL, res.name, sizeof res.name);
    ASSERT_STR_EQ("projects/demo-proj/messages/0:1500415314455276%", "projects/demo-proj/messages/"
                  "0:1500415314455276%");
    ASSERT(strncmp(res.name, "projects/demo-proj/messages/0:1500415314455276%", 47) == 0);
    ASSERT_EQ_INT(47 + 16, strlen(res.name));
    ASSERT(strncmp(res.name + 47, res.name + 55, 8) == 0); /* a repeated tag, as Google's */
    size_t len;
    const char *ct;
    char *b = sbx_fcm_response_body(&res, &len, &ct);
    char want[256];
    snprintf(want, sizeof want, "{\n  \"name\": \"%s\"\n}\n", res.name);
    ASSERT_STR_EQ(want, b);
    free(b);
    ASSERT_NOT_NULL(res.body); /* the parsed request, for the record */
    ASSERT_STR_EQ(TOKEN_A, jstr(cJSON_GetObjectItem(res.body, "message"), "token"));
}

TEST(injected_faults)
{
    ASSERT_EQ_INT(200, send_body(MSG("")));
    sbx_fcm_set_fault(&res, 429, NULL);
    ASSERT_EQ_INT(429, res.status);
    ASSERT_STR_EQ("RESOURCE_EXHAUSTED", res.grpc_status);
    ASSERT_STR_EQ("QUOTA_EXCEEDED", res.error_code);
    cJSON *j = body_json();
    const cJSON *details = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "details");
    ASSERT_EQ_INT(2, cJSON_GetArraySize(details));
    const cJSON *qf = cJSON_GetArrayItem(details, 1);
    ASSERT_STR_EQ("type.googleapis.com/google.rpc.QuotaFailure", jstr(qf, "@type"));
    ASSERT_STR_EQ("project:demo-proj",
                  jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(qf, "violations"), 0), "subject"));
    cJSON_Delete(j);
    ASSERT_STR_EQ(TOKEN_A, res.target); /* request fields survive */
    sbx_fcm_set_fault(&res, 503, NULL);
    ASSERT_STR_EQ("UNAVAILABLE", res.grpc_status);
    ASSERT_STR_EQ("The service is currently unavailable.", res.message);
    ASSERT_STR_EQ("UNAVAILABLE", res.error_code);
    ASSERT_NULL(res.quota_subject);
    sbx_fcm_set_fault(&res, 500, NULL);
    ASSERT_STR_EQ("INTERNAL", res.grpc_status);
    ASSERT_STR_EQ("Internal error encountered.", res.message);
    ASSERT_STR_EQ("INTERNAL", res.error_code);
    sbx_fcm_set_fault(&res, 503, "INTERNAL");
    ASSERT_STR_EQ("UNAVAILABLE", res.grpc_status);
    ASSERT_STR_EQ("INTERNAL", res.error_code);
    sbx_fcm_set_fault(&res, 502, NULL);
    ASSERT_NULL(res.error_code);
    ASSERT_STR_EQ("UNKNOWN", res.grpc_status);
    sbx_fcm_set_fault(&res, 404, NULL);
    ASSERT_STR_EQ("UNREGISTERED", res.error_code);
    sbx_fcm_set_quota(&res, true, "240 per minute");
    ASSERT_EQ_INT(429, res.status);
    ASSERT_STR_EQ("RESOURCE_EXHAUSTED", res.grpc_status);
    ASSERT_STR_EQ("QUOTA_EXCEEDED", res.error_code);
    ASSERT_STR_EQ("device", res.quota_subject);
    ASSERT_STR_EQ("Device message rate exceeded (limit: 240 per minute).",
                  res.quota_description);
    ASSERT_STR_EQ("Quota exceeded for the device: too many messages to one device.", res.message);
    sbx_fcm_set_quota(&res, false, "600000 per minute");
    ASSERT_STR_EQ("project:" PROJECT, res.quota_subject);
    ASSERT_STR_CONTAINS(res.quota_description, "Project message rate exceeded");
}

/* FCM marks a message collapsible by android.collapse_key (either
 * spelling); apns-collapse-id and webpush Topic do not count. */
TEST(collapsible_messages)
{
    static const struct {
        const char *message;
        bool collapsible;
    } cases[] = {
        { "\"android\":{\"collapse_key\":\"score\"}", true },
        { "\"android\":{\"collapseKey\":\"score\"}", true },
        { "\"android\":{\"collapse_key\":\"\"}", false },
        { "\"android\":{\"collapse_key\":null}", false },
        { "\"android\":{\"priority\":\"high\"}", false },
        { "\"notification\":{\"title\":\"t\"}", false },
        { "\"apns\":{\"headers\":{\"apns-collapse-id\":\"c\"}}", false },
        { "\"webpush\":{\"headers\":{\"Topic\":\"c\"}}", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"message\":{\"token\":\"%s\",%s}}", TOKEN_A,
                 cases[i].message);
        ASSERT_EQ_INT(200, send_body(body));
        if (res.collapsible != cases[i].collapsible)
            TEST_FAIL_("case %zu (%s): collapsible %d", i, cases[i].message, res.collapsible);
    }
}

/* ---- end to end ------------------------------------------------------------ */

struct result {
    int status, error;
    char body[2048], retry_after[16], www_auth[128], ctype[64];
};

#define MAXREQ 400

struct fx {
    uv_loop_t loop;
    char dir[64], record_path[128], dead_path[128];
    SSL_CTX *sctx, *cctx;
    struct sbx_server *srv;
    struct sbx_fcm_service fcm;
    struct sbx_oauth_service oauth;
    struct sbx_oauth_account acct;
    struct sbx_faults faults;
    struct sbx_record *rec;
    struct sbx_tokens_file dead;
    EVP_PKEY *priv;
    int port;
    bool limits_on;                 /* apply |limits| (else no rate limits) */
    unsigned project_rate;          /* --fcm-project-rate-limit */
    struct sbx_device_limits limits;
    int64_t expires_in;
    char bearer[300];
    struct h2_pool *pool;
    struct result res[MAXREQ];
    int submitted, done;
    struct h2_pool_stats pool_stats;
};

static struct fx F;

static void fx_setup(void (*tune)(struct fx *))
{
    memset(&F, 0, sizeof F);
    ASSERT_EQ_INT(0, uv_loop_init(&F.loop));
    fixture_tmpdir("sbx-fcm", F.dir, sizeof F.dir);
    char err[256], key[128], pub[128], spec[300];
    ASSERT_EQ_INT(0, certgen_ca_and_server(F.dir, err, sizeof err));
    snprintf(key, sizeof key, "%s/sa.key", F.dir);
    snprintf(pub, sizeof pub, "%s/sa.pub.pem", F.dir);
    ASSERT_EQ_INT(0, certgen_rsa_key(key, pub, err, sizeof err));
    F.priv = jws_load_private_key_file(key, err, sizeof err);
    ASSERT_NOT_NULL(F.priv);
    snprintf(spec, sizeof spec, "%s:%s:%s:%s", pub, KID, EMAIL, PROJECT);
    ASSERT_EQ_INT(0, sbx_oauth_account_load(&F.acct, spec, err, sizeof err));

    static const char *const salpn[] = { "h2", "http/1.1", NULL };
    static const char *const calpn[] = { "h2", NULL };
    F.sctx = fixture_server_ctx(F.dir, salpn);
    F.cctx = fixture_client_ctx(F.dir, calpn);
    snprintf(F.record_path, sizeof F.record_path, "%s/record.jsonl", F.dir);
    F.rec = sbx_record_open(F.record_path, err, sizeof err);
    ASSERT_NOT_NULL(F.rec);
    snprintf(F.dead_path, sizeof F.dead_path, "%s/dead.txt", F.dir);
    ASSERT_EQ_INT(0, sbx_tokens_file_open(&F.dead, F.dead_path, SBX_TOKENS_PLAIN, err, sizeof err));
    sbx_faults_init(&F.faults, 7);
    if (tune)
        tune(&F);

    struct sbx_oauth_service_options oopt = {
        .accounts = &F.acct, .naccounts = 1, .record = F.rec, .expires_in_s = F.expires_in,
    };
    sbx_oauth_service_init(&F.oauth, &oopt);
    struct sbx_fcm_service_options fopt = {
        .oauth = &F.oauth, .faults = &F.faults, .record = F.rec, .unregistered = &F.dead,
        .project_rate_per_min = F.project_rate,
    };
    if (F.limits_on) {
        memcpy(fopt.device_limits, F.limits.fcm, sizeof fopt.device_limits);
        fopt.ndevice_limits = F.limits.nfcm;
        if (F.limits.has_collapsible)
            fopt.collapsible = F.limits.collapsible;
    }
    sbx_fcm_service_init(&F.fcm, &fopt);
    F.srv = sbx_server_new(&F.loop, F.sctx);
    F.port = sbx_server_listen(F.srv, "fcm", "127.0.0.1:0", &F.fcm.svc, err, sizeof err);
    ASSERT(F.port > 0);
}

static void on_server_closed(void *arg)
{
    cJSON *line = cJSON_CreateObject();
    cJSON *sum = sbx_server_summary(F.srv);
    cJSON_AddItemToObject(sum, "fcm", sbx_fcm_service_counts(&F.fcm));
    if (F.fcm.device_rate)
        cJSON_AddItemToObject(sum, "fcm_device", sbx_rate_summary(F.fcm.device_rate));
    if (F.fcm.project_rate)
        cJSON_AddItemToObject(sum, "fcm_project", sbx_rate_summary(F.fcm.project_rate));
    cJSON_AddItemToObject(sum, "oauth", sbx_oauth_service_summary(&F.oauth));
    cJSON_AddItemToObject(line, "summary", sum);
    sbx_record_write(F.rec, line);
    cJSON_Delete(line);
}

static void fx_teardown(void)
{
    sbx_server_shutdown(F.srv, on_server_closed, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&F.loop));
    sbx_server_free(F.srv);
    sbx_fcm_service_clear(&F.fcm);
    sbx_oauth_service_clear(&F.oauth);
    sbx_record_close(F.rec);
    sbx_tokens_file_close(&F.dead);
    sbx_oauth_account_clear(&F.acct);
    SSL_CTX_free(F.sctx);
    SSL_CTX_free(F.cctx);
    EVP_PKEY_free(F.priv);
}

static void on_pool_closed(void *arg)
{
    uv_stop(&F.loop);
}

static void on_done(const struct h2_response *r, void *user)
{
    struct result *res_ = &F.res[(intptr_t)user];
    res_->status = r->status;
    res_->error = r->error;
    copy_header(r, "retry-after", res_->retry_after, sizeof res_->retry_after);
    copy_header(r, "www-authenticate", res_->www_auth, sizeof res_->www_auth);
    copy_header(r, "content-type", res_->ctype, sizeof res_->ctype);
    snprintf(res_->body, sizeof res_->body, "%.*s", (int)r->body_len, (const char *)r->body);
    if (++F.done == F.submitted) {
        h2_pool_get_stats(F.pool, &F.pool_stats);
        h2_pool_close(F.pool, on_pool_closed, NULL);
    }
}

static void pool_open(int max_connections)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", F.port);
    struct h2_pool_config c = {
        .name = "test", .url = url, .ssl_ctx = F.cctx, .max_connections = max_connections,
        .initial_max_streams = 100, .request_timeout_ms = 10000, .connect_timeout_ms = 5000,
        .max_attempts = 3,
    };
    F.pool = h2_pool_new(&F.loop, &c);
    ASSERT_NOT_NULL(F.pool);
    F.submitted = F.done = 0;
    memset(F.res, 0, sizeof F.res);
}

static void submit(const char *method, const char *path, const char *ctype, const char *auth,
                   const char *body)
{
    struct h2_header h[2];
    size_t n = 0;
    if (ctype)
        h[n++] = (struct h2_header){ "content-type", ctype, 0 };
    if (auth)
        h[n++] = (struct h2_header){ "authorization", auth, H2_HDR_NO_INDEX };
    ASSERT(F.submitted < MAXREQ);
    ASSERT_EQ_INT(0, h2_pool_submit(F.pool, method, path, h, n, (const uint8_t *)body,
                                    body ? strlen(body) : 0, on_done,
                                    (void *)(intptr_t)F.submitted));
    F.submitted++;
}

static void send_msg(const char *token)
{
    char body[512];
    snprintf(body, sizeof body, "{\"message\":{\"token\":\"%s\",\"notification\":{\"title\":\"t\"},"
             "\"data\":{\"event\":\"e1\"},\"android\":{\"priority\":\"high\",\"ttl\":\"60s\"}}}",
             token);
    submit("POST", PATH, "application/json", F.bearer[0] ? F.bearer : NULL, body);
}

static void run_batch(void)
{
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(F.submitted, F.done);
}

static char *make_assertion(const char *aud, long long iat)
{
    char claims[512];
    snprintf(claims, sizeof claims, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"%s\",\"iat\":%lld,"
             "\"exp\":%lld}", EMAIL, SBX_OAUTH_SCOPE_FCM, aud, iat, iat + 3600);
    char *jwt = jws_compact_sign("RS256", F.priv, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\""
                                 KID "\"}", claims);
    ASSERT_NOT_NULL(jwt);
    return jwt;
}

/* A token straight from the service's table (no HTTP round trip). */
static void quick_bearer(void)
{
    char tok[SBX_OAUTH_TOKEN_MAX];
    sbx_oauth_tokens_issue(F.oauth.tokens, &F.acct, now_ms(), 3600 * 1000, tok);
    snprintf(F.bearer, sizeof F.bearer, "Bearer %s", tok);
}

static const char *jpath(const cJSON *o, const char *a, const char *b)
{
    return jstr(cJSON_GetObjectItem(o, a), b);
}

TEST(e2e_token_then_send_over_h2)
{
    fx_setup(NULL);
    pool_open(1);
    char self_aud[80], form[4096];
    snprintf(self_aud, sizeof self_aud, "https://127.0.0.1:%d/token", F.port);
    char *jwt = make_assertion(self_aud, now_s());
    snprintf(form, sizeof form, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3A"
             "jwt-bearer&assertion=%s", jwt);
    submit("POST", "/token", "application/x-www-form-urlencoded", NULL, form);
    submit("GET", "/token", NULL, NULL, NULL);
    run_batch();
    free(jwt);
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_STR_EQ("application/json; charset=utf-8", F.res[0].ctype);
    cJSON *tok = cJSON_Parse(F.res[0].body);
    ASSERT_NOT_NULL(tok);
    ASSERT_EQ_INT(3599, jnum(tok, "expires_in"));
    ASSERT_STR_EQ("Bearer", jstr(tok, "token_type"));
    snprintf(F.bearer, sizeof F.bearer, "Bearer %s", jstr(tok, "access_token"));
    cJSON_Delete(tok);
    ASSERT_EQ_INT(405, F.res[1].status);
    ASSERT_STR_CONTAINS(F.res[1].body, "The request method <code>GET</code> is inappropriate");

    pool_open(1);
    send_msg(TOKEN_A);
    char lower[sizeof F.bearer]; /* the scheme is case-insensitive */
    snprintf(lower, sizeof lower, "bearer %.280s", F.bearer + 7);
    submit("POST", PATH, "application/json", lower, "{\"message\":{\"topic\":\"news\"}}");
    submit("POST", "/v1/projects/other/messages:send", "application/json", F.bearer,
           "{\"message\":{\"topic\":\"news\"}}");
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    cJSON *ok = cJSON_Parse(F.res[0].body);
    const char *name = jstr(ok, "name");
    ASSERT(strncmp(name, "projects/demo-proj/messages/0:", 30) == 0);
    ASSERT_EQ_INT(200, F.res[1].status);
    ASSERT_EQ_INT(403, F.res[2].status);
    ASSERT_STR_CONTAINS(F.res[2].body, "\"status\": \"PERMISSION_DENIED\"");
    char saved_name[192];
    snprintf(saved_name, sizeof saved_name, "%s", name);
    cJSON_Delete(ok);
    fx_teardown();

    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it, *l0 = NULL, *l405 = NULL;
    cJSON_ArrayForEach(it, rec) {
        if (jstr(it, "provider") && strcmp(jstr(it, "provider"), "oauth") == 0) {
            if (jnum(it, "status") == 200)
                l0 = it;
            else
                l405 = it;
        }
    }
    ASSERT_NOT_NULL(l0);
    ASSERT_NOT_NULL(l405);
    ASSERT_STR_EQ("oauth", jstr(l0, "provider"));
    ASSERT_EQ_INT(200, jnum(l0, "status"));
    ASSERT_STR_EQ(EMAIL, jstr(l0, "iss"));
    ASSERT_STR_EQ(self_aud, jstr(l0, "aud"));
    ASSERT_STR_EQ("h2", jstr(l0, "http"));
    ASSERT_STR_EQ(F.bearer + 7, jstr(l0, "access_token"));
    ASSERT_STR_EQ("METHOD_NOT_ALLOWED", jstr(l405, "error"));
    /* The FCM lines can be in any order on the connection: find the token one. */
    const cJSON *fl = NULL;
    cJSON_ArrayForEach(it, rec)
        if (jstr(it, "token") && strcmp(jstr(it, "token"), TOKEN_A) == 0)
            fl = it;
    ASSERT_NOT_NULL(fl);
    ASSERT_STR_EQ("fcm", jstr(fl, "provider"));
    ASSERT_EQ_INT(200, jnum(fl, "status"));
    ASSERT(cJSON_IsNull(cJSON_GetObjectItem(fl, "reason")));
    ASSERT_STR_EQ(PROJECT, jstr(fl, "project"));
    ASSERT_STR_EQ("h2", jstr(fl, "http"));
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(fl, "authorization_ok")));
    ASSERT_STR_EQ(EMAIL, jstr(fl, "account"));
    ASSERT_STR_EQ(saved_name, jstr(fl, "message_name"));
    ASSERT_STR_EQ(TOKEN_A, jpath(cJSON_GetObjectItem(fl, "payload"), "message", "token"));
    ASSERT_STR_EQ("high", jstr(cJSON_GetObjectItem(cJSON_GetObjectItem(
                      cJSON_GetObjectItem(fl, "payload"), "message"), "android"), "priority"));
    ASSERT(jnum(fl, "at") > 1.7e12);
    const cJSON *sum = cJSON_GetObjectItem(cJSON_GetArrayItem(rec, cJSON_GetArraySize(rec) - 1),
                                           "summary");
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(sum, "fcm"), "200"));
    ASSERT_EQ_INT(1, jnum(cJSON_GetObjectItem(sum, "fcm"), "PERMISSION_DENIED"));
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(sum, "oauth"), "requests"));
    ASSERT_EQ_INT(1, jnum(cJSON_GetObjectItem(sum, "oauth"), "tokens_issued"));
    cJSON_Delete(rec);
}

static void tune_short_tokens(struct fx *fx)
{
    fx->expires_in = 1;
}

TEST(e2e_bearer_missing_unknown_expired)
{
    fx_setup(tune_short_tokens);
    char tok[SBX_OAUTH_TOKEN_MAX];
    /* Valid for 3 s: long enough for the first send even under valgrind. */
    sbx_oauth_tokens_issue(F.oauth.tokens, &F.acct, now_ms(), 3000, tok);
    pool_open(1);
    snprintf(F.bearer, sizeof F.bearer, "Bearer %s", tok);
    send_msg(TOKEN_A); /* valid for three seconds */
    F.bearer[0] = '\0';
    send_msg(TOKEN_A); /* no authorization */
    submit("POST", PATH, "application/json", "Bearer ya29.c.unknown", "{}");
    submit("POST", PATH, "application/json", "Basic dXNlcjpwYXNz", "{}");
    submit("POST", PATH, "application/json", "Bearer ", "{}");
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_EQ_INT(401, F.res[1].status);
    ASSERT_STR_CONTAINS(F.res[1].body, "Request is missing required authentication credential");
    ASSERT_STR_EQ("Bearer realm=\"https://accounts.google.com/\"", F.res[1].www_auth);
    ASSERT_EQ_INT(401, F.res[2].status);
    ASSERT_STR_CONTAINS(F.res[2].body, "Request had invalid authentication credentials");
    ASSERT_STR_CONTAINS(F.res[2].www_auth, "error=\"invalid_token\"");
    ASSERT_EQ_INT(401, F.res[3].status);
    ASSERT_STR_CONTAINS(F.res[3].body, "Request had invalid authentication credentials");
    ASSERT_EQ_INT(401, F.res[4].status);
    ASSERT_STR_CONTAINS(F.res[4].body, "missing required authentication credential");
    usleep(3100 * 1000);
    pool_open(1);
    snprintf(F.bearer, sizeof F.bearer, "Bearer %s", tok);
    send_msg(TOKEN_A);
    run_batch();
    ASSERT_EQ_INT(401, F.res[0].status);
    ASSERT_STR_CONTAINS(F.res[0].body, "\"message\": \"Request had invalid authentication "
                                       "credentials.");
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it;
    int expired = 0, missing = 0, unknown = 0, malformed = 0;
    cJSON_ArrayForEach(it, rec) {
        const char *a = jstr(it, "auth");
        if (a == NULL)
            continue;
        expired += strcmp(a, "expired") == 0;
        missing += strcmp(a, "missing") == 0;
        unknown += strcmp(a, "unknown") == 0;
        malformed += strcmp(a, "malformed") == 0;
        if (jnum(it, "status") == 401)
            ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(it, "authorization_ok")));
    }
    ASSERT_EQ_INT(1, expired);
    ASSERT_EQ_INT(2, missing);
    ASSERT_EQ_INT(1, unknown);
    ASSERT_EQ_INT(1, malformed);
    cJSON_Delete(rec);
}

TEST(e2e_hundred_streams_per_connection)
{
    fx_setup(NULL);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 300; i++)
        send_msg(TOKEN_A);
    run_batch();
    for (int i = 0; i < 300; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    const struct sbx_server_stats *st = sbx_server_stats(F.srv);
    ASSERT_EQ_INT(1, st->connections);
    ASSERT(st->max_streams_seen > 1);
    ASSERT(st->max_streams_seen <= SBX_FCM_MAX_STREAMS);
    ASSERT_EQ_INT(0, F.pool_stats.refused);
    fx_teardown();
}

/* ---- raw HTTP/2: over the limit, :scheme ----------------------------------- */

struct raw {
    struct tls_conn *c;
    uint8_t in[1 << 16];
    size_t inlen;
    int nstreams;            /* HEADERS to open at once (no END_STREAM) */
    const char *scheme;
    bool closed;
};

static size_t frame_hdr(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(sid >> 24);
    p[6] = (uint8_t)(sid >> 16);
    p[7] = (uint8_t)(sid >> 8);
    p[8] = (uint8_t)sid;
    return 9;
}

static size_t hpack_lit(uint8_t *p, const char *name, const char *value)
{
    size_t n = 0, nl = strlen(name), vl = strlen(value);
    ASSERT(nl < 127 && vl < 127);
    p[n++] = 0x00;
    p[n++] = (uint8_t)nl;
    memcpy(p + n, name, nl);
    n += nl;
    p[n++] = (uint8_t)vl;
    memcpy(p + n, value, vl);
    return n + vl;
}

static size_t headers_frame(uint8_t *out, uint32_t sid, const char *scheme, bool end)
{
    uint8_t block[512];
    size_t b = 0;
    b += hpack_lit(block + b, ":method", "POST");
    b += hpack_lit(block + b, ":scheme", scheme);
    b += hpack_lit(block + b, ":authority", "fcm.googleapis.com");
    b += hpack_lit(block + b, ":path", PATH);
    size_t n = frame_hdr(out, b, NGHTTP2_HEADERS,
                         NGHTTP2_FLAG_END_HEADERS | (end ? NGHTTP2_FLAG_END_STREAM : 0), sid);
    memcpy(out + n, block, b);
    return n + b;
}

static void raw_open(struct tls_conn *c, void *user)
{
    struct raw *r = user;
    static uint8_t buf[1 << 16];
    size_t n = 0;
    memcpy(buf, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    n += NGHTTP2_CLIENT_MAGIC_LEN;
    n += frame_hdr(buf + n, 0, NGHTTP2_SETTINGS, 0, 0);
    /* Acknowledge the server's SETTINGS (MAX_CONCURRENT_STREAMS 100) first:
     * the server applies the limit when it reads this ACK. */
    n += frame_hdr(buf + n, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
    if (r->scheme) {
        n += headers_frame(buf + n, 1, r->scheme, true);
    } else {
        for (int i = 0; i < r->nstreams; i++)
            n += headers_frame(buf + n, (uint32_t)(2 * i + 1), "https", false);
    }
    ASSERT_EQ_INT(0, tls_conn_write(c, buf, n));
}

static void raw_data(struct tls_conn *c, const uint8_t *d, size_t len, void *user)
{
    struct raw *r = user;
    size_t n = len < sizeof r->in - r->inlen ? len : sizeof r->in - r->inlen;
    memcpy(r->in + r->inlen, d, n);
    r->inlen += n;
    /* :scheme case: close once the stream is answered or reset. */
    if (r->scheme) {
        for (size_t off = 0; off + 9 <= r->inlen;) {
            size_t flen = (size_t)r->in[off] << 16 | (size_t)r->in[off + 1] << 8 | r->in[off + 2];
            uint8_t type = r->in[off + 3], flags = r->in[off + 4];
            if (type == NGHTTP2_RST_STREAM ||
                ((type == NGHTTP2_HEADERS || type == NGHTTP2_DATA) &&
                 (flags & NGHTTP2_FLAG_END_STREAM))) {
                tls_conn_close(c, 0, "done");
                return;
            }
            off += 9 + flen;
        }
    }
}

static void raw_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    struct raw *r = user;
    r->closed = true;
    uv_stop(&F.loop);
}

static void raw_run(struct raw *r)
{
    static const struct tls_conn_callbacks cbs = { raw_open, raw_data, raw_close };
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port, &cbs, r, &r->c);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT(r->closed);
    SSL_CTX_free(ctx);
}

/* Find frames of |type| in |r|'s input; returns how many, |first| = offset. */
static int find_frames(const struct raw *r, uint8_t type, size_t *first)
{
    int count = 0;
    for (size_t off = 0; off + 9 <= r->inlen;) {
        size_t len = (size_t)r->in[off] << 16 | (size_t)r->in[off + 1] << 8 | r->in[off + 2];
        if (r->in[off + 3] == type) {
            if (count++ == 0 && first)
                *first = off;
        }
        off += 9 + len;
    }
    return count;
}

TEST(e2e_over_the_limit_gets_google_goaway)
{
    fx_setup(NULL);
    static struct raw r;
    memset(&r, 0, sizeof r);
    r.nstreams = 101;
    raw_run(&r);
    size_t off = 0;
    ASSERT_EQ_INT(1, find_frames(&r, NGHTTP2_GOAWAY, &off)); /* exactly one */
    size_t len = (size_t)r.in[off] << 16 | (size_t)r.in[off + 1] << 8 | r.in[off + 2];
    const uint8_t *p = r.in + off + 9;
    uint32_t last = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    uint32_t code = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    ASSERT_EQ_INT(NGHTTP2_PROTOCOL_ERROR, code);
    ASSERT_EQ_INT(199, last); /* the 100th stream */
    ASSERT_EQ_INT(8 + strlen("exceeded_max_concurrent_streams"), len);
    ASSERT(memcmp(p + 8, "exceeded_max_concurrent_streams", len - 8) == 0);
    ASSERT_EQ_INT(100, sbx_server_stats(F.srv)->max_streams_seen);
    ASSERT_EQ_INT(1, sbx_server_stats(F.srv)->goaways);
    fx_teardown();
}

TEST(e2e_exactly_one_hundred_is_fine)
{
    fx_setup(NULL);
    static struct raw r;
    memset(&r, 0, sizeof r);
    r.nstreams = 100;
    /* No GOAWAY: the connection stays until shutdown closes it. */
    static const struct tls_conn_callbacks cbs = { raw_open, raw_data, raw_close };
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port, &cbs, &r, &r.c);
    for (int i = 0; i < 50 && sbx_server_stats(F.srv)->max_streams_seen < 100; i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    ASSERT_EQ_INT(100, sbx_server_stats(F.srv)->max_streams_seen);
    ASSERT_EQ_INT(0, find_frames(&r, NGHTTP2_GOAWAY, NULL));
    ASSERT_EQ_INT(0, find_frames(&r, NGHTTP2_RST_STREAM, NULL));
    tls_conn_close(r.c, 0, "done");
    uv_run(&F.loop, UV_RUN_DEFAULT);
    SSL_CTX_free(ctx);
    fx_teardown();
}

TEST(e2e_scheme_with_colon_is_accepted)
{
    /* firebase-admin-node's sendEach sends ":scheme: https:"; Google answers,
     * nghttp2 (and so Node's own http2 server) resets the stream. */
    static const char *const ok[] = { "https:", "https", "http", NULL };
    for (int i = 0; ok[i]; i++) {
        fx_setup(NULL);
        static struct raw r;
        memset(&r, 0, sizeof r);
        r.scheme = ok[i];
        raw_run(&r);
        ASSERT_EQ_INT(0, find_frames(&r, NGHTTP2_RST_STREAM, NULL));
        ASSERT_EQ_INT(1, find_frames(&r, NGHTTP2_HEADERS, NULL)); /* the 401 answer */
        fx_teardown();
        cJSON *rec = fixture_read_jsonl(F.record_path);
        ASSERT_STR_EQ(ok[i], jstr(cJSON_GetArrayItem(rec, 0), "scheme"));
        ASSERT_EQ_INT(401, jnum(cJSON_GetArrayItem(rec, 0), "status"));
        cJSON_Delete(rec);
    }
    static const char *const bad[] = { "https::", "ht tp", "1http", ":", NULL };
    for (int i = 0; bad[i]; i++) {
        fx_setup(NULL);
        static struct raw r;
        memset(&r, 0, sizeof r);
        r.scheme = bad[i];
        raw_run(&r);
        size_t off = 0;
        ASSERT_EQ_INT(1, find_frames(&r, NGHTTP2_RST_STREAM, &off));
        const uint8_t *p = r.in + off + 9;
        ASSERT_EQ_INT(NGHTTP2_PROTOCOL_ERROR, p[3]);
        fx_teardown();
    }
}

/* ---- faults, rate limits, token files --------------------------------------- */

static void tune_faults(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "fault-rate", "429:100:30", err, sizeof err));
}

TEST(e2e_quota_fault_with_retry_after)
{
    fx_setup(tune_faults);
    quick_bearer();
    pool_open(1);
    send_msg(TOKEN_A);
    send_msg("bad token"); /* errors are not replaced by faults */
    submit("POST", PATH, "application/json", F.bearer,
           "{\"validate_only\":true,\"message\":{\"token\":\"" TOKEN_A "\"}}");
    run_batch();
    ASSERT_EQ_INT(429, F.res[0].status);
    ASSERT_STR_EQ("30", F.res[0].retry_after);
    ASSERT_STR_CONTAINS(F.res[0].body, "\"errorCode\": \"QUOTA_EXCEEDED\"");
    ASSERT_STR_CONTAINS(F.res[0].body, "google.rpc.QuotaFailure");
    ASSERT_EQ_INT(400, F.res[1].status);
    ASSERT_STR_EQ("", F.res[1].retry_after);
    ASSERT_EQ_INT(200, F.res[2].status); /* dry runs are not sends */
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it, *l429 = NULL;
    cJSON_ArrayForEach(it, rec)
        if (jnum(it, "status") == 429)
            l429 = it;
    ASSERT_NOT_NULL(l429);
    ASSERT_STR_EQ("QUOTA_EXCEEDED", jstr(l429, "reason"));
    ASSERT_STR_EQ("429", jstr(l429, "fault"));
    ASSERT_EQ_INT(30, jnum(l429, "retry_after"));
    cJSON_Delete(rec);
}

static void tune_unavailable(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "fault-rate", "503:100", err, sizeof err));
}

TEST(e2e_unavailable_without_retry_after)
{
    fx_setup(tune_unavailable);
    quick_bearer();
    pool_open(1);
    send_msg(TOKEN_A);
    run_batch();
    ASSERT_EQ_INT(503, F.res[0].status);
    ASSERT_STR_EQ("", F.res[0].retry_after);
    ASSERT_STR_CONTAINS(F.res[0].body, "\"status\": \"UNAVAILABLE\"");
    ASSERT_STR_CONTAINS(F.res[0].body, "\"errorCode\": \"UNAVAILABLE\"");
    fx_teardown();
}

/* The limits as the command line sets them (defaults, then |name| |arg|). */
static void limits_option(struct fx *fx, const char *name, const char *arg)
{
    char err[256];
    if (!fx->limits_on) {
        sbx_device_limits_init(&fx->limits);
        fx->limits_on = true;
    }
    if (name && sbx_device_limits_option(&fx->limits, name, arg, err, sizeof err) != 1)
        TEST_FAIL_("--%s %s: %s", name, arg, err);
}

static void tune_device_rate(struct fx *fx)
{
    limits_option(fx, "fcm-device-rate-limit", "2"); /* older spelling of 2/min */
}

TEST(e2e_device_rate_limit)
{
    fx_setup(tune_device_rate);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 3; i++)
        send_msg(TOKEN_A);
    send_msg(TOKEN_B); /* another device has its own budget */
    run_batch();
    int ok = 0, limited = 0;
    for (int i = 0; i < 3; i++) {
        ok += F.res[i].status == 200;
        if (F.res[i].status == 429) {
            limited++;
            ASSERT_STR_CONTAINS(F.res[i].body, "\"subject\": \"device\"");
            ASSERT(atoi(F.res[i].retry_after) >= 1 && atoi(F.res[i].retry_after) <= 30);
        }
    }
    ASSERT_EQ_INT(2, ok);
    ASSERT_EQ_INT(1, limited);
    ASSERT_EQ_INT(200, F.res[3].status);
    fx_teardown();
}

static void send_collapsible(const char *token)
{
    char body[512];
    snprintf(body, sizeof body, "{\"message\":{\"token\":\"%s\",\"data\":{\"sync\":\"1\"},"
             "\"android\":{\"collapse_key\":\"sync\",\"priority\":\"high\"}}}", token);
    submit("POST", PATH, "application/json", F.bearer, body);
}

static const cJSON *summary_of(const cJSON *rec)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, rec)
        if (cJSON_GetObjectItem(it, "summary"))
            return cJSON_GetObjectItem(it, "summary");
    return NULL;
}

static void tune_default_limits(struct fx *fx)
{
    limits_option(fx, NULL, NULL); /* FCM's numbers: 240/min, 5000/h, 20 +1/180 s */
}

/* (a) FCM's collapsible burst with the default numbers: 20 collapsible
 * messages to one token pass, the 21st is 429 QUOTA_EXCEEDED with
 * Retry-After; a non-collapsible message to that token still passes. */
TEST(e2e_collapsible_burst_of_twenty)
{
    fx_setup(tune_default_limits);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 21; i++)
        send_collapsible(TOKEN_A);
    run_batch();
    for (int i = 0; i < 20; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    ASSERT_EQ_INT(429, F.res[20].status);
    ASSERT_STR_EQ("180", F.res[20].retry_after); /* one message back in 3 min */
    ASSERT_STR_EQ("application/json; charset=UTF-8", F.res[20].ctype);
    cJSON *body = cJSON_Parse(F.res[20].body);
    ASSERT_NOT_NULL(body);
    const cJSON *e = cJSON_GetObjectItem(body, "error");
    ASSERT_EQ_INT(429, jnum(e, "code"));
    ASSERT_STR_EQ("RESOURCE_EXHAUSTED", jstr(e, "status"));
    ASSERT_STR_EQ("Quota exceeded for the device: too many messages to one device.",
                  jstr(e, "message"));
    const cJSON *d = cJSON_GetObjectItem(e, "details");
    ASSERT_EQ_INT(2, cJSON_GetArraySize(d));
    const cJSON *fe = cJSON_GetArrayItem(d, 0), *qf = cJSON_GetArrayItem(d, 1);
    ASSERT_STR_EQ("type.googleapis.com/google.firebase.fcm.v1.FcmError", jstr(fe, "@type"));
    ASSERT_STR_EQ("QUOTA_EXCEEDED", jstr(fe, "errorCode"));
    ASSERT_STR_EQ("type.googleapis.com/google.rpc.QuotaFailure", jstr(qf, "@type"));
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItem(qf, "violations"), 0);
    ASSERT_STR_EQ("device", jstr(v, "subject"));
    ASSERT_STR_EQ("Device message rate exceeded (limit: 20 collapsible messages in a burst, "
                  "then 1 per 180 seconds).", jstr(v, "description"));
    cJSON_Delete(body);

    pool_open(1);
    send_msg(TOKEN_A);          /* not collapsible: only 21 of 240/min used */
    send_collapsible(TOKEN_A);  /* still over the burst */
    send_collapsible(TOKEN_B);  /* another token has its own burst */
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_EQ_INT(429, F.res[1].status);
    ASSERT(atoi(F.res[1].retry_after) >= 179 && atoi(F.res[1].retry_after) <= 180);
    ASSERT_EQ_INT(200, F.res[2].status);
    fx_teardown();

    cJSON *rec = fixture_read_jsonl(F.record_path);
    int n429 = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, rec) {
        if (jnum(it, "status") != 429)
            continue;
        n429++;
        ASSERT_STR_EQ("QUOTA_EXCEEDED", jstr(it, "reason"));
        ASSERT_STR_EQ(TOKEN_A, jstr(it, "token"));
        ASSERT_STR_EQ("collapsible 20+1/180s", jstr(it, "rate_limit"));
        ASSERT(jnum(it, "retry_after") >= 179);
        ASSERT_NULL(cJSON_GetObjectItem(it, "fault"));
        ASSERT_NULL(jstr(it, "message_name"));
    }
    ASSERT_EQ_INT(2, n429);
    const cJSON *sum = summary_of(rec);
    ASSERT_NOT_NULL(sum);
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(sum, "fcm"), "QUOTA_EXCEEDED"));
    const cJSON *dev = cJSON_GetObjectItem(sum, "fcm_device");
    ASSERT_EQ_INT(22, jnum(dev, "allowed"));
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(dev, "limited"), "collapsible 20+1/180s"));
    ASSERT_EQ_INT(0, jnum(cJSON_GetObjectItem(dev, "limited"), "device 240/min"));
    ASSERT_EQ_INT(2, jnum(dev, "keys"));
    cJSON_Delete(rec);
}

static void tune_240_per_hour(struct fx *fx)
{
    /* FCM's 240/min count, refilled one per 15 s instead of one per 250 ms,
     * so however slow the batch, nothing comes back during it. */
    limits_option(fx, "fcm-device-rate", "240/h");
}

/* (b) the 241st message to one token is 429; (c) another token is not
 * affected. */
TEST(e2e_241st_message_to_a_token_is_429)
{
    fx_setup(tune_240_per_hour);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 241; i++)
        send_msg(TOKEN_A);
    send_msg(TOKEN_B);
    run_batch();
    int ok = 0, limited = -1;
    for (int i = 0; i < 241; i++) {
        if (F.res[i].status == 200)
            ok++;
        else if (F.res[i].status == 429 && limited < 0)
            limited = i;
        else
            TEST_FAIL_("request %d: status %d", i, F.res[i].status);
    }
    ASSERT_EQ_INT(240, ok);
    ASSERT_EQ_INT(240, limited); /* answered in order on one connection */
    ASSERT(atoi(F.res[240].retry_after) >= 14 && atoi(F.res[240].retry_after) <= 15);
    ASSERT_STR_CONTAINS(F.res[240].body, "\"errorCode\": \"QUOTA_EXCEEDED\"");
    ASSERT_STR_CONTAINS(F.res[240].body, "(limit: 240 per hour)");
    ASSERT_EQ_INT(200, F.res[241].status);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it, *l429 = NULL;
    cJSON_ArrayForEach(it, rec)
        if (jnum(it, "status") == 429)
            l429 = it;
    ASSERT_NOT_NULL(l429);
    ASSERT_STR_EQ("device 240/h", jstr(l429, "rate_limit"));
    cJSON_Delete(rec);
}

static void tune_three_per_hour(struct fx *fx)
{
    limits_option(fx, "fcm-device-rate", "3/h");
    limits_option(fx, "fcm-collapsible-burst", "off");
}

/* (c) per token: one token over its limit, the others untouched; topics
 * and dry runs take nothing. */
TEST(e2e_device_limit_is_per_token)
{
    fx_setup(tune_three_per_hour);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 4; i++)
        send_msg(TOKEN_A);
    for (int i = 0; i < 3; i++)
        send_msg(TOKEN_B);
    for (int i = 0; i < 5; i++)
        send_collapsible(TOKEN_B "x"); /* collapsible limit off: only 3/h */
    submit("POST", PATH, "application/json", F.bearer,
           "{\"validate_only\":true,\"message\":{\"token\":\"" TOKEN_A "\"}}");
    submit("POST", PATH, "application/json", F.bearer, "{\"message\":{\"topic\":\"news\"}}");
    run_batch();
    int expect[] = { 200, 200, 200, 429, 200, 200, 200, 200, 200, 200, 429, 429, 200, 200 };
    for (int i = 0; i < 14; i++)
        if (F.res[i].status != expect[i])
            TEST_FAIL_("request %d: status %d, want %d", i, F.res[i].status, expect[i]);
    fx_teardown();
}

static void tune_project_rate(struct fx *fx)
{
    limits_option(fx, "fcm-device-rate", "3/h");
    fx->project_rate = 2;
}

/* The per-project limit after the per-device one; a message the project
 * limit refuses takes nothing from its token's budget. */
TEST(e2e_project_limit_takes_nothing_from_the_device)
{
    fx_setup(tune_project_rate);
    quick_bearer();
    pool_open(1);
    send_msg(TOKEN_A);
    send_msg(TOKEN_B);
    send_msg(TOKEN_A);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_EQ_INT(200, F.res[1].status);
    ASSERT_EQ_INT(429, F.res[2].status);
    ASSERT_STR_CONTAINS(F.res[2].body, "\"subject\": \"project:" PROJECT "\"");
    ASSERT_STR_CONTAINS(F.res[2].body, "(limit: 2 per minute)");
    ASSERT_STR_EQ("30", F.res[2].retry_after);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it, *l429 = NULL;
    cJSON_ArrayForEach(it, rec)
        if (jnum(it, "status") == 429)
            l429 = it;
    ASSERT_NOT_NULL(l429);
    ASSERT_STR_EQ("project 2/min", jstr(l429, "rate_limit"));
    const cJSON *sum = summary_of(rec);
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(sum, "fcm_device"), "allowed"));
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(sum, "fcm_project"), "allowed"));
    ASSERT_EQ_INT(1, jnum(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "fcm_project"),
                                              "limited"), "project 2/min"));
    cJSON_Delete(rec);
}

static void tune_bench(struct fx *fx)
{
    limits_option(fx, NULL, NULL);
    sbx_device_limits_bench(&fx->limits); /* what --bench does */
}

/* (d) --bench: no per-device limits, so 300 messages (collapsible too) to
 * one token all pass. */
TEST(e2e_bench_has_no_device_limits)
{
    fx_setup(tune_bench);
    ASSERT_NULL(F.fcm.device_rate);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 300; i++)
        if (i % 2)
            send_collapsible(TOKEN_A);
        else
            send_msg(TOKEN_A);
    run_batch();
    for (int i = 0; i < 300; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    fx_teardown();
}

TEST(e2e_unregistered_file_reload)
{
    fx_setup(NULL);
    quick_bearer();
    pool_open(1);
    send_msg(TOKEN_B);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    FILE *f = fopen(F.dead_path, "w");
    ASSERT_NOT_NULL(f);
    fprintf(f, "# dead\n%s\n", TOKEN_B);
    fclose(f);
    sbx_tokens_file_refresh(&F.dead, true); /* what SIGHUP does */
    pool_open(1);
    send_msg(TOKEN_B);
    send_msg(TOKEN_A);
    run_batch();
    ASSERT_EQ_INT(404, F.res[0].status);
    ASSERT_STR_CONTAINS(F.res[0].body, "\"errorCode\": \"UNREGISTERED\"");
    ASSERT_EQ_INT(200, F.res[1].status);
    fx_teardown();
}

static void tune_goaway(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "goaway-every", "5", err, sizeof err));
}

TEST(e2e_goaway_every_n_client_retries)
{
    fx_setup(tune_goaway);
    quick_bearer();
    pool_open(1);
    for (int i = 0; i < 30; i++)
        send_msg(TOKEN_A);
    run_batch();
    for (int i = 0; i < 30; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    ASSERT(sbx_server_stats(F.srv)->goaways >= 5);
    ASSERT(F.pool_stats.goaways >= 5);
    fx_teardown();
}

TEST_MAIN(T(paths_and_methods), T(authentication_and_project), T(body_not_json),
          T(unknown_names), T(wrong_types), T(enums_and_durations), T(several_errors_at_once),
          T(one_target_only), T(camel_case_names), T(topics_and_conditions), T(token_format),
          T(reserved_data_keys), T(size_limits), T(token_tables), T(success_body_and_names),
          T(injected_faults), T(collapsible_messages), T(e2e_token_then_send_over_h2), T(e2e_bearer_missing_unknown_expired),
          T(e2e_hundred_streams_per_connection), T(e2e_over_the_limit_gets_google_goaway),
          T(e2e_exactly_one_hundred_is_fine), T(e2e_scheme_with_colon_is_accepted),
          T(e2e_quota_fault_with_retry_after), T(e2e_unavailable_without_retry_after),
          T(e2e_device_rate_limit), T(e2e_collapsible_burst_of_twenty),
          T(e2e_241st_message_to_a_token_is_429), T(e2e_device_limit_is_per_token),
          T(e2e_project_limit_takes_nothing_from_the_device),
          T(e2e_bench_has_no_device_limits), T(e2e_unregistered_file_reload),
          T(e2e_goaway_every_n_client_retries))
