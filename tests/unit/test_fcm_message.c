/*
 * fcm/message: the v1 message layout, string-only data, android block,
 * ttl formatting, the 4096-byte limit and escaping.
 */
#include "tests/unit/test.h"

#include <cjson/cJSON.h>

#include "common/util.h"
#include "fcm/message.h"

static struct fcm_notification base(void)
{
    struct fcm_notification n = {
        .token = "fcm-token-abc:APA91b",
        .title = "Kari, Bø skule",
        .body = "Foreldremøte",
        .event_id = "e1",
        .event_type = "message.new",
        .tenant = "bergen",
        .thread = "th-9",
        .high_priority = true,
        .ttl_s = 3600,
        .collapse_key = "th-9",
        .channel_id = "messages",
    };
    return n;
}

static char *build(const struct fcm_notification *n, size_t max, size_t *len)
{
    char *out = xmalloc(8192);
    size_t l = 0;
    ASSERT_EQ_INT(0, fcm_message_build(n, max, out, 8192, &l));
    ASSERT_EQ_INT(strlen(out), l);
    ASSERT(l <= max);
    ASSERT(utf8_valid(out, l));
    cJSON *j = cJSON_ParseWithLength(out, l);
    ASSERT_NOT_NULL(j);
    cJSON_Delete(j);
    if (len)
        *len = l;
    return out;
}

/* message.<a>.<b> as a string, or NULL when absent. Caller frees. */
static char *get(const char *json, const char *a, const char *b, const char *c)
{
    cJSON *j = cJSON_Parse(json);
    ASSERT_NOT_NULL(j);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (a)
        v = cJSON_GetObjectItemCaseSensitive(v, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    if (c)
        v = cJSON_GetObjectItemCaseSensitive(v, c);
    char *s = cJSON_IsString(v) ? xstrdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

TEST(full_layout)
{
    struct fcm_notification n = base();
    char *out = build(&n, FCM_MESSAGE_MAX, NULL);
    ASSERT_STR_EQ("{\"message\":{\"token\":\"fcm-token-abc:APA91b\","
                  "\"notification\":{\"title\":\"Kari, Bø skule\",\"body\":\"Foreldremøte\"},"
                  "\"data\":{\"event\":\"e1\",\"type\":\"message.new\",\"thread\":\"th-9\","
                  "\"tenant\":\"bergen\"},"
                  "\"android\":{\"priority\":\"HIGH\",\"ttl\":\"3600s\",\"collapse_key\":\"th-9\","
                  "\"notification\":{\"tag\":\"th-9\",\"channel_id\":\"messages\"}}}}", out);
    free(out);
}

TEST(data_values_are_strings_and_optional)
{
    struct fcm_notification n = base();
    n.thread = NULL;
    n.high_priority = false;
    n.collapse_key = "e1";
    n.channel_id = "absence";
    char *out = build(&n, FCM_MESSAGE_MAX, NULL);
    cJSON *j = cJSON_Parse(out);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "message"), "data");
    ASSERT(cJSON_IsObject(data));
    ASSERT_EQ_INT(3, cJSON_GetArraySize(data));
    for (cJSON *it = data->child; it; it = it->next)
        ASSERT(cJSON_IsString(it));
    ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(data, "thread"));
    cJSON_Delete(j);
    char *p = get(out, "android", "priority", NULL);
    ASSERT_STR_EQ("NORMAL", p);
    free(p);
    p = get(out, "android", "notification", "tag");
    ASSERT_STR_EQ("e1", p);
    free(p);
    free(out);

    /* No data at all: no data object. No collapse key, no channel. */
    n.event_id = n.event_type = n.tenant = NULL;
    n.collapse_key = n.channel_id = NULL;
    n.ttl_s = -1;
    out = build(&n, FCM_MESSAGE_MAX, NULL);
    ASSERT_NULL(strstr(out, "\"data\""));
    ASSERT_NULL(strstr(out, "ttl"));
    ASSERT_NULL(strstr(out, "collapse_key"));
    ASSERT_STR_CONTAINS(out, "\"android\":{\"priority\":\"NORMAL\"}}}");
    free(out);
}

TEST(ttl_is_a_duration)
{
    struct fcm_notification n = base();
    n.ttl_s = 0;
    char *out = build(&n, FCM_MESSAGE_MAX, NULL);
    char *t = get(out, "android", "ttl", NULL);
    ASSERT_STR_EQ("0s", t);
    free(t);
    free(out);
    n.ttl_s = 99999999;   /* capped at 28 days */
    out = build(&n, FCM_MESSAGE_MAX, NULL);
    t = get(out, "android", "ttl", NULL);
    ASSERT_STR_EQ("2419200s", t);
    free(t);
    free(out);
}

TEST(escaping_round_trips)
{
    struct fcm_notification n = base();
    n.title = "\"Hei\" \\ på\tdeg";
    n.body = "linje\nto \x02 😀";
    n.thread = "t\"1";
    char *out = build(&n, FCM_MESSAGE_MAX, NULL);
    char *t = get(out, "notification", "title", NULL);
    char *b = get(out, "notification", "body", NULL);
    char *th = get(out, "data", "thread", NULL);
    ASSERT_STR_EQ(n.title, t);
    ASSERT_STR_EQ(n.body, b);
    ASSERT_STR_EQ(n.thread, th);
    free(t);
    free(b);
    free(th);
    free(out);
}

TEST(size_limit_cuts_body_then_title)
{
    struct fcm_notification n = base();
    n.body = "";
    size_t fixed;
    char *out = build(&n, FCM_MESSAGE_MAX, &fixed);
    free(out);

    /* Exactly the limit: untouched. */
    size_t bl = FCM_MESSAGE_MAX - fixed;
    char *body = xmalloc(bl + 1);
    memset(body, 'y', bl);
    body[bl] = '\0';
    n.body = body;
    size_t len;
    out = build(&n, FCM_MESSAGE_MAX, &len);
    ASSERT_EQ_INT(FCM_MESSAGE_MAX, len);
    free(out);
    free(body);

    /* Lots of ø: cut on a boundary with "…". */
    body = xmalloc(10001);
    for (int i = 0; i < 5000; i++)
        memcpy(body + 2 * i, "\xC3\xB8", 2);
    body[10000] = '\0';
    n.body = body;
    for (size_t max = FCM_MESSAGE_MAX - 5; max <= FCM_MESSAGE_MAX; max++) {
        out = build(&n, max, &len);
        ASSERT(len + 2 > max);
        char *b = get(out, "notification", "body", NULL);
        size_t l = strlen(b);
        ASSERT_STR_EQ("\xE2\x80\xA6", b + l - 3);
        ASSERT_EQ_INT(0, (l - 3) % 2);
        char *t = get(out, "notification", "title", NULL);
        ASSERT_STR_EQ(n.title, t);
        free(t);
        free(b);
        free(out);
    }
    /* Title too long as well: body empty, title cut. */
    n.title = body;
    out = build(&n, FCM_MESSAGE_MAX, &len);
    char *b = get(out, "notification", "body", NULL);
    char *t = get(out, "notification", "title", NULL);
    ASSERT_STR_EQ("", b);
    ASSERT_STR_EQ("\xE2\x80\xA6", t + strlen(t) - 3);
    free(t);
    free(b);
    free(out);
    free(body);
}

TEST(failures)
{
    struct fcm_notification n = base();
    char buf[64];
    size_t len = 5;
    ASSERT_EQ_INT(-1, fcm_message_build(&n, FCM_MESSAGE_MAX, buf, sizeof buf, &len));
    ASSERT_EQ_INT(0, len);
    char big[8192];
    ASSERT_EQ_INT(-1, fcm_message_build(&n, 100, big, sizeof big, &len));
    n.token = "";
    ASSERT_EQ_INT(-1, fcm_message_build(&n, FCM_MESSAGE_MAX, big, sizeof big, &len));
    n.token = NULL;
    ASSERT_EQ_INT(-1, fcm_message_build(&n, FCM_MESSAGE_MAX, big, sizeof big, &len));
}

TEST(channels)
{
    ASSERT_STR_EQ("messages", fcm_message_channel("message.new"));
    ASSERT_STR_EQ("absence", fcm_message_channel("absence.reported"));
    ASSERT_STR_EQ("absence_urgent", fcm_message_channel("absence.alert"));
    ASSERT_STR_EQ("leave", fcm_message_channel("leave.decided"));
    ASSERT_STR_EQ("timetable", fcm_message_channel("timetable.changed"));
    ASSERT_NULL(fcm_message_channel("device.register"));
    ASSERT_NULL(fcm_message_channel(NULL));
}

/* Consecutive messages that differ only by token reuse the last tail; each
 * must equal the message built with nothing remembered, including when the
 * texts are cut (the cut depends on the token's escaped length). */
TEST(token_only_changes_match_fresh_builds)
{
    static char big[6000];
    memset(big, 'a', sizeof big - 1);
    const char *tokens[] = { "tok-1", "tok-2", "t\"3", "a-much-longer-token-value-4", "tok-5" };
    for (int cut = 0; cut < 2; cut++) {
        char *want[5];
        size_t wl[5];
        for (int i = 0; i < 5; i++) {
            struct fcm_notification other = base();
            other.title = "something else entirely";
            free(build(&other, FCM_MESSAGE_MAX, NULL)); /* forget the last */
            struct fcm_notification n = base();
            n.token = tokens[i];
            if (cut)
                n.body = big;
            want[i] = build(&n, FCM_MESSAGE_MAX, &wl[i]);
        }
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < 5; i++) {
                struct fcm_notification n = base();
                n.token = tokens[i];
                if (cut)
                    n.body = big;
                size_t l;
                char *got = build(&n, FCM_MESSAGE_MAX, &l);
                ASSERT_EQ_INT((long long)wl[i], (long long)l);
                ASSERT_STR_EQ(want[i], got);
                free(got);
            }
        }
        for (int i = 0; i < 5; i++)
            free(want[i]);
    }
}

/* The recipient's unread count is notification_count; one recipient's is
 * never reused for the next (the message tail is memoised per inputs). */
TEST(badge_is_per_recipient)
{
    struct fcm_notification n = base();
    size_t l;
    n.badge = 3;
    char *a = build(&n, 4096, &l);
    ASSERT_STR_CONTAINS(a, "\"notification_count\":3");
    n.token = "fcm-token-def:APA91b";
    n.badge = 7;
    char *b = build(&n, 4096, &l);
    ASSERT_STR_CONTAINS(b, "\"notification_count\":7");
    n.badge = 0;
    char *c = build(&n, 4096, &l);
    ASSERT(strstr(c, "notification_count") == NULL);
    free(a);
    free(b);
    free(c);
}

TEST_MAIN(T(badge_is_per_recipient), T(token_only_changes_match_fresh_builds), T(full_layout), T(data_values_are_strings_and_optional), T(ttl_is_a_duration),
          T(escaping_round_trips), T(size_limit_cuts_body_then_title), T(failures),
          T(channels))
