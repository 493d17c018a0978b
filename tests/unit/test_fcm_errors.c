/*
 * fcm/errors: google.rpc error bodies per errorCode (PROTOCOLS.md §2), the
 * 401 OAuth case, token-naming INVALID_ARGUMENT, garbage, success names.
 */
#include "tests/unit/test.h"

#include "common/util.h"
#include "fcm/errors.h"

/* Parse |s| from an exactly-sized heap copy (ASan catches over-reads). */
static int parse(const char *s, struct fcm_error *e)
{
    size_t n = strlen(s);
    uint8_t *b = xmalloc(n ? n : 1);
    memcpy(b, s, n);
    int rc = fcm_error_parse(b, n, e);
    free(b);
    return rc;
}

#define FCM_DETAIL(code)                                                        \
    "{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\","      \
    "\"errorCode\":\"" code "\"}"

static char body_buf[2048];

/* A google.rpc error body with an FcmError detail. */
static const char *rpc_body(int code, const char *status, const char *message,
                            const char *error_code)
{
    snprintf(body_buf, sizeof body_buf,
             "{\"error\":{\"code\":%d,\"message\":\"%s\",\"status\":\"%s\","
             "\"details\":[{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\","
             "\"errorCode\":\"%s\"}]}}",
             code, message, status, error_code);
    return body_buf;
}

/* Parse a body and classify it with |http|; checks the parsed code too. */
static enum fcm_outcome outcome(int http, const char *body, enum fcm_error_code want)
{
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    ASSERT_EQ_INT(want, e.error_code);
    return fcm_error_classify(http, &e);
}

TEST(unregistered)
{
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(rpc_body(404, "NOT_FOUND", "Requested entity was not found.",
                                    "UNREGISTERED"), &e));
    ASSERT_EQ_INT(404, e.code);
    ASSERT_STR_EQ("NOT_FOUND", e.status);
    ASSERT_STR_EQ("Requested entity was not found.", e.message);
    ASSERT_EQ_INT(FCM_ERR_UNREGISTERED, e.error_code);
    ASSERT_STR_EQ("UNREGISTERED", e.error_code_str);
    ASSERT(!e.token_invalid);
    ASSERT_EQ_INT(FCM_OUTCOME_INVALID_TOKEN, fcm_error_classify(404, &e));
}

TEST(sender_id_mismatch)
{
    ASSERT_EQ_INT(FCM_OUTCOME_INVALID_TOKEN,
                  outcome(403, rpc_body(403, "PERMISSION_DENIED", "SenderId mismatch",
                                        "SENDER_ID_MISMATCH"),
                          FCM_ERR_SENDER_ID_MISMATCH));
}

TEST(invalid_argument_naming_token)
{
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(rpc_body(400, "INVALID_ARGUMENT",
                                    "The registration token is not a valid FCM registration token",
                                    "INVALID_ARGUMENT"), &e));
    ASSERT(e.token_invalid);
    ASSERT_EQ_INT(FCM_OUTCOME_INVALID_TOKEN, fcm_error_classify(400, &e));
}

TEST(invalid_argument_field_violation_on_token)
{
    const char *body =
        "{\"error\":{\"code\":400,\"message\":\"Request contains an invalid argument.\","
        "\"status\":\"INVALID_ARGUMENT\",\"details\":["
        FCM_DETAIL("INVALID_ARGUMENT") ","
        "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"fieldViolations\":"
        "[{\"field\":\"message.token\",\"description\":\"Invalid registration token\"}]}]}}";
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    ASSERT(e.token_invalid);
    ASSERT_EQ_INT(FCM_OUTCOME_INVALID_TOKEN, fcm_error_classify(400, &e));
}

TEST(invalid_argument_other_is_permanent)
{
    const char *body =
        "{\"error\":{\"code\":400,\"message\":\"Invalid value at 'message.data[0].value' "
        "(TYPE_STRING), 12\",\"status\":\"INVALID_ARGUMENT\",\"details\":["
        "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"fieldViolations\":"
        "[{\"field\":\"message.data[0].value\",\"description\":\"Invalid value\"}]},"
        FCM_DETAIL("INVALID_ARGUMENT") "]}}";
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    ASSERT(!e.token_invalid);
    ASSERT_EQ_INT(FCM_ERR_INVALID_ARGUMENT, e.error_code);
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(400, &e));
}

TEST(quota_exceeded)
{
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT,
                  outcome(429, rpc_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded",
                                        "QUOTA_EXCEEDED"), FCM_ERR_QUOTA_EXCEEDED));
}

TEST(unavailable)
{
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT,
                  outcome(503, rpc_body(503, "UNAVAILABLE", "The service is unavailable",
                                        "UNAVAILABLE"), FCM_ERR_UNAVAILABLE));
}

TEST(internal)
{
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT,
                  outcome(500, rpc_body(500, "INTERNAL", "Internal error", "INTERNAL"),
                          FCM_ERR_INTERNAL));
}

TEST(third_party_auth_and_alias)
{
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT,
                  outcome(401, rpc_body(401, "UNAUTHENTICATED", "Auth error from APNS",
                                        "THIRD_PARTY_AUTH_ERROR"), FCM_ERR_THIRD_PARTY_AUTH));
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT,
                  outcome(401, rpc_body(401, "UNAUTHENTICATED", "Auth error from APNS",
                                        "APNS_AUTH_ERROR"), FCM_ERR_THIRD_PARTY_AUTH));
    ASSERT_STR_EQ("THIRD_PARTY_AUTH_ERROR", fcm_error_code_name(FCM_ERR_THIRD_PARTY_AUTH));
}

TEST(unspecified_is_permanent)
{
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT,
                  outcome(500, rpc_body(500, "UNKNOWN", "x", "UNSPECIFIED_ERROR"),
                          FCM_ERR_UNSPECIFIED));
}

TEST(oauth_401_without_fcm_error)
{
    const char *body =
        "{\"error\":{\"code\":401,\"message\":\"Request is missing required authentication "
        "credential. Expected OAuth 2 access token, login cookie or other valid "
        "authentication credential.\",\"status\":\"UNAUTHENTICATED\"}}";
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    ASSERT_EQ_INT(FCM_ERR_NONE, e.error_code);
    ASSERT_STR_EQ("UNAUTHENTICATED", e.status);
    ASSERT_EQ_INT(FCM_OUTCOME_AUTH, fcm_error_classify(401, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_AUTH, fcm_error_classify(401, NULL));
    /* The message is kept, cut to the struct's size. */
    ASSERT_EQ_INT(0, strncmp(e.message, "Request is missing", 18));
}

TEST(permission_denied_is_permanent)
{
    const char *body =
        "{\"error\":{\"code\":403,\"message\":\"Permission 'cloudmessaging.messages.create' "
        "denied on resource\",\"status\":\"PERMISSION_DENIED\"}}";
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(403, &e));
}

TEST(unknown_error_code_falls_back_on_status)
{
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(rpc_body(503, "UNAVAILABLE", "x", "SHINY_NEW_ERROR"), &e));
    ASSERT_EQ_INT(FCM_ERR_OTHER, e.error_code);
    ASSERT_STR_EQ("SHINY_NEW_ERROR", e.error_code_str);
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(503, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(400, &e));
    /* HTTP status unknown (0) or unusual: the body's status decides. */
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(0, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(507, &e));
    ASSERT_EQ_INT(0, parse("{\"error\":{\"status\":\"UNAUTHENTICATED\"}}", &e));
    ASSERT_EQ_INT(FCM_OUTCOME_AUTH, fcm_error_classify(0, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(501, NULL));
}

TEST(garbage_bodies_fall_back_on_http_status)
{
    const char *bad[] = {
        "", "<html><body>502 Bad Gateway</body></html>", "{", "null", "[]", "[1]",
        "{\"error\":5}", "{\"error\":null}", "{\"foo\":{}}", "\"error\"",
        "{\"error\":{\"code\":400", "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fcm_error e;
        memset(&e, 0x5a, sizeof e);
        ASSERT_EQ_INT(-1, parse(bad[i], &e));
        ASSERT_EQ_INT(FCM_ERR_NONE, e.error_code);
        ASSERT_STR_EQ("", e.status);
        ASSERT_STR_EQ("", e.message);
        ASSERT(!e.token_invalid);
        ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(502, &e));
        ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(429, &e));
        ASSERT_EQ_INT(FCM_OUTCOME_AUTH, fcm_error_classify(401, &e));
        ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(404, &e));
        ASSERT_EQ_INT(FCM_OUTCOME_SENT, fcm_error_classify(200, &e));
    }
    struct fcm_error e;
    ASSERT_EQ_INT(-1, fcm_error_parse(NULL, 0, &e));
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(500, NULL));
    ASSERT_EQ_INT(FCM_OUTCOME_PERMANENT, fcm_error_classify(0, NULL));
}

TEST(lenient_shapes)
{
    struct fcm_error e;
    /* Wrong-typed fields are ignored, not fatal. */
    ASSERT_EQ_INT(0, parse("{\"error\":{\"code\":\"x\",\"status\":7,\"message\":[],"
                           "\"details\":{\"a\":1}}}", &e));
    ASSERT_EQ_INT(0, e.code);
    ASSERT_STR_EQ("", e.status);
    ASSERT_EQ_INT(FCM_ERR_NONE, e.error_code);
    /* details entries of odd types; errorCode without @type still counts. */
    ASSERT_EQ_INT(0, parse("{\"error\":{\"code\":404,\"details\":[1,null,\"s\","
                           "{\"errorCode\":\"UNREGISTERED\"}]}}", &e));
    ASSERT_EQ_INT(FCM_ERR_UNREGISTERED, e.error_code);
    /* A detail of another type with an errorCode is not an FcmError. */
    ASSERT_EQ_INT(0, parse("{\"error\":{\"code\":500,\"details\":[{\"@type\":"
                           "\"type.googleapis.com/google.firebase.fcm.v1.ApnsError\","
                           "\"errorCode\":\"UNREGISTERED\"}]}}", &e));
    ASSERT_EQ_INT(FCM_ERR_NONE, e.error_code);
    /* Wrapped in an array. */
    ASSERT_EQ_INT(0, parse("[{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\"}}]", &e));
    ASSERT_STR_EQ("RESOURCE_EXHAUSTED", e.status);
    ASSERT_EQ_INT(FCM_OUTCOME_TRANSIENT, fcm_error_classify(429, &e));
    /* OAuth-style body. */
    ASSERT_EQ_INT(0, parse("{\"error\":\"invalid_grant\",\"error_description\":\"Bad\"}", &e));
    ASSERT_STR_EQ("invalid_grant", e.status);
    ASSERT_STR_EQ("Bad", e.message);
    /* Token message without INVALID_ARGUMENT does not name the token. */
    ASSERT_EQ_INT(0, parse("{\"error\":{\"code\":500,\"status\":\"INTERNAL\",\"message\":"
                           "\"The registration token is not a valid FCM registration token\"}}",
                           &e));
    ASSERT(!e.token_invalid);
    /* Bare 400 INVALID_ARGUMENT naming the token, without details. */
    ASSERT_EQ_INT(0, parse("{\"error\":{\"code\":400,\"status\":\"INVALID_ARGUMENT\",\"message\":"
                           "\"The registration token is not a valid FCM registration token\"}}",
                           &e));
    ASSERT(e.token_invalid);
    ASSERT_EQ_INT(FCM_OUTCOME_INVALID_TOKEN, fcm_error_classify(400, &e));
}

TEST(long_message_is_cut_on_a_boundary)
{
    char body[2000];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":400,\"message\":\"");
    for (int i = 0; i < 600; i++) {
        memcpy(body + n, "\xC3\xB8", 2);
        n += 2;
    }
    snprintf(body + n, sizeof body - (size_t)n, "\"}}");
    struct fcm_error e;
    ASSERT_EQ_INT(0, parse(body, &e));
    size_t l = strlen(e.message);
    ASSERT(l < FCM_ERROR_MESSAGE_MAX);
    ASSERT(l >= FCM_ERROR_MESSAGE_MAX - 3);
    ASSERT(utf8_valid(e.message, l));
}

TEST(success_name)
{
    char name[128];
    const char *b = "{\"name\":\"projects/p/messages/0:1500415314455276%31bd1c9631bd1c96\"}";
    ASSERT_EQ_INT(0, fcm_response_parse_name((const uint8_t *)b, strlen(b), name, sizeof name));
    ASSERT_STR_EQ("projects/p/messages/0:1500415314455276%31bd1c9631bd1c96", name);
    char small[10];
    ASSERT_EQ_INT(0, fcm_response_parse_name((const uint8_t *)b, strlen(b), small, sizeof small));
    ASSERT_STR_EQ("projects/", small);
    /* FCM's pretty-printed form, escapes and extra keys (those go through
     * cJSON) give the same names. */
    const char *same[] = {
        "{\n  \"name\": \"projects/p/messages/42\"\n}\n",
        "{\"name\":\"projects\\/p\\/messages\\/42\"}",
        "{\"other\":true,\"name\":\"projects/p/messages/42\"}",
        "{\"name\":\"projects/p/messages/42\",\"x\":1}",
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        ASSERT_EQ_INT(0, fcm_response_parse_name((const uint8_t *)same[i], strlen(same[i]), name,
                                                 sizeof name));
        ASSERT_STR_EQ("projects/p/messages/42", name);
    }
    const char *bad[] = { "", "{}", "{\"name\":1}", "x", "[\"name\"]", "{\"name\":\"x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(name, "junk");
        ASSERT_EQ_INT(-1, fcm_response_parse_name((const uint8_t *)bad[i], strlen(bad[i]),
                                                  name, sizeof name));
        ASSERT_STR_EQ("", name);
    }
}

TEST(names)
{
    ASSERT_STR_EQ("invalid_token", fcm_outcome_name(FCM_OUTCOME_INVALID_TOKEN));
    ASSERT_STR_EQ("auth", fcm_outcome_name(FCM_OUTCOME_AUTH));
    ASSERT_STR_EQ("UNREGISTERED", fcm_error_code_name(FCM_ERR_UNREGISTERED));
    ASSERT_STR_EQ("", fcm_error_code_name(FCM_ERR_NONE));
}

TEST_MAIN(T(unregistered), T(sender_id_mismatch), T(invalid_argument_naming_token),
          T(invalid_argument_field_violation_on_token), T(invalid_argument_other_is_permanent),
          T(quota_exceeded), T(unavailable), T(internal), T(third_party_auth_and_alias),
          T(unspecified_is_permanent), T(oauth_401_without_fcm_error),
          T(permission_denied_is_permanent), T(unknown_error_code_falls_back_on_status),
          T(garbage_bodies_fall_back_on_http_status), T(lenient_shapes),
          T(long_message_is_cut_on_a_boundary), T(success_name), T(names))
