/*
 * apns/payload: body layout, optional keys, JSON escaping, the 4096-byte
 * limit with UTF-8 safe cutting, and the error body parser.
 */
#include "tests/unit/test.h"

#include <cjson/cJSON.h>

#include "apns/payload.h"
#include "common/util.h"

static struct apns_notification base(void)
{
    struct apns_notification n = {
        .title = "Kari, Bø skule",
        .body = "Foreldremøte",
        .badge = -1,
        .event_id = "e1",
        .event_type = "message.new",
        .tenant = "bergen",
    };
    return n;
}

/* Build into a fresh buffer; asserts valid UTF-8 + JSON; caller frees. */
static char *build(const struct apns_notification *n, size_t max, size_t *len)
{
    char *out = xmalloc(8192);
    size_t l = 0;
    ASSERT_EQ_INT(0, apns_payload_build(n, max, out, 8192, &l));
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

/* The decoded alert.<key> of a body. Caller frees. */
static char *alert_field(const char *json, const char *key)
{
    cJSON *j = cJSON_Parse(json);
    ASSERT_NOT_NULL(j);
    cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "aps");
    cJSON *alert = cJSON_GetObjectItemCaseSensitive(aps, "alert");
    cJSON *v = cJSON_GetObjectItemCaseSensitive(alert, key);
    ASSERT(cJSON_IsString(v));
    char *s = xstrdup(v->valuestring);
    cJSON_Delete(j);
    return s;
}

TEST(basic_layout)
{
    struct apns_notification n = base();
    n.thread_id = "th-9";
    char *out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_STR_EQ("{\"aps\":{\"alert\":{\"title\":\"Kari, Bø skule\",\"body\":\"Foreldremøte\"},"
                  "\"sound\":\"default\",\"thread-id\":\"th-9\"},"
                  "\"v\":{\"event\":\"e1\",\"type\":\"message.new\",\"tenant\":\"bergen\","
                  "\"thread\":\"th-9\"}}", out);
    free(out);
}

TEST(badge_sound_and_interruption_level)
{
    struct apns_notification n = base();
    char *out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_NULL(strstr(out, "badge"));
    ASSERT_NULL(strstr(out, "interruption-level"));
    ASSERT_NULL(strstr(out, "thread"));
    free(out);

    n.badge = 0;
    out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_STR_CONTAINS(out, "\"badge\":0,");
    free(out);
    n.badge = 17;
    n.interruption_level = "time-sensitive";
    n.sound = "";
    out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_STR_CONTAINS(out, "},\"badge\":17,\"interruption-level\":\"time-sensitive\"}");
    ASSERT_NULL(strstr(out, "sound"));
    free(out);
    n.sound = "bell.caf";
    out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_STR_CONTAINS(out, "\"sound\":\"bell.caf\"");
    free(out);
}

TEST(escaping)
{
    struct apns_notification n = base();
    n.title = "\"quoted\" \\ back/slash";
    n.body = "line1\nline2\ttab\r\b\f\x01\x1f\x7f Bø 😀";
    char *out = build(&n, APNS_PAYLOAD_MAX, NULL);
    ASSERT_STR_CONTAINS(out, "\"title\":\"\\\"quoted\\\" \\\\ back/slash\"");
    ASSERT_STR_CONTAINS(out, "\"body\":\"line1\\nline2\\ttab\\r\\b\\f\\u0001\\u001f\x7f Bø 😀\"");
    char *t = alert_field(out, "title");
    char *b = alert_field(out, "body");
    ASSERT_STR_EQ(n.title, t);
    ASSERT_STR_EQ(n.body, b);
    free(t);
    free(b);
    free(out);
}

TEST(invalid_utf8_becomes_replacement)
{
    struct apns_notification n = base();
    /* stray continuation, truncated sequence, overlong '/', surrogate */
    n.body = "a\x80" "b\xC3" "c\xC0\xAF" "d\xED\xA0\x80" "e";
    n.tenant = "x\xff";
    char *out = build(&n, APNS_PAYLOAD_MAX, NULL);
    char *b = alert_field(out, "body");
    ASSERT_STR_EQ("a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD"
                  "d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "e", b);
    ASSERT_STR_CONTAINS(out, "\"tenant\":\"x\xEF\xBF\xBD\"");
    free(b);
    free(out);
}

TEST(escaped_len_matches_output)
{
    const char *s = "\"\\\n\x01 øé😀\x80";
    size_t e = apns_payload_escaped_len(s, strlen(s));
    char buf[128];
    struct apns_payload_writer w = { .out = buf, .cap = sizeof buf };
    apns_payload_put_text(&w, s, strlen(s), false);
    ASSERT(apns_payload_finish(&w));
    ASSERT_EQ_INT(e + 2, w.len);
    ASSERT_EQ_INT(2 + 2 + 2 + 6 + 1 + 2 + 2 + 4 + 3, e);
}

/* A body of |n| ASCII 'x'. */
static char *xs(size_t n)
{
    char *s = xmalloc(n + 1);
    memset(s, 'x', n);
    s[n] = '\0';
    return s;
}

TEST(exactly_max_fits_uncut)
{
    struct apns_notification n = base();
    n.body = "";
    size_t fixed;
    char *out = build(&n, APNS_PAYLOAD_MAX, &fixed);
    free(out);
    char *body = xs(APNS_PAYLOAD_MAX - fixed);
    n.body = body;
    size_t len;
    out = build(&n, APNS_PAYLOAD_MAX, &len);
    ASSERT_EQ_INT(APNS_PAYLOAD_MAX, len);
    char *b = alert_field(out, "body");
    ASSERT_STR_EQ(body, b);    /* not cut */
    free(b);
    free(out);
    free(body);

    /* One byte more: cut, ends with "…", still within the limit. */
    body = xs(APNS_PAYLOAD_MAX - fixed + 1);
    n.body = body;
    out = build(&n, APNS_PAYLOAD_MAX, &len);
    ASSERT(len <= APNS_PAYLOAD_MAX);
    ASSERT(len >= APNS_PAYLOAD_MAX - 3);
    b = alert_field(out, "body");
    size_t bl = strlen(b);
    ASSERT_STR_EQ("\xE2\x80\xA6", b + bl - 3);
    ASSERT_EQ_INT(0, strncmp(b, body, bl - 3));
    char *t = alert_field(out, "title");
    ASSERT_STR_EQ(n.title, t);
    free(t);
    free(b);
    free(out);
    free(body);
}

/*
 * For every limit in a range, a body of repeated |unit| is cut on a
 * character boundary: valid UTF-8, a prefix of whole units plus "…".
 */
static void cut_never_splits(const char *unit, bool whole_units)
{
    size_t ul = strlen(unit), count = 3000;
    char *body = xmalloc(ul * count + 1);
    for (size_t i = 0; i < count; i++)
        memcpy(body + i * ul, unit, ul);
    body[ul * count] = '\0';
    struct apns_notification n = base();
    n.body = body;
    for (size_t max = 300; max < 340; max++) {
        size_t len;
        char *out = build(&n, max, &len);
        ASSERT(len <= max);
        ASSERT(len + 4 > max);   /* used the room it had */
        char *b = alert_field(out, "body");
        size_t bl = strlen(b);
        ASSERT(bl >= 3);
        ASSERT_STR_EQ("\xE2\x80\xA6", b + bl - 3);
        if (whole_units)
            ASSERT_EQ_INT(0, (bl - 3) % ul);
        ASSERT_EQ_INT(0, memcmp(b, body, bl - 3));
        free(b);
        free(out);
    }
    free(body);
}

TEST(cut_never_splits_o_slash) { cut_never_splits("ø", true); }
TEST(cut_never_splits_emoji) { cut_never_splits("😀", true); }
TEST(cut_never_splits_mixed) { cut_never_splits("aø€😀", false); }

TEST(cut_counts_escapes)
{
    /* Each '"' takes 2 bytes and each \x01 takes 6 once escaped. */
    char body[2001];
    for (int i = 0; i < 2000; i++)
        body[i] = (i % 2) ? '"' : '\x01';
    body[2000] = '\0';
    struct apns_notification n = base();
    n.body = body;
    for (size_t max = 200; max < 220; max++) {
        size_t len;
        char *out = build(&n, max, &len);
        ASSERT(len <= max);
        ASSERT(len + 6 > max);
        free(out);
    }
}

TEST(title_cut_after_body)
{
    struct apns_notification n = base();
    char *title = xs(5000), *body = xs(5000);
    memcpy(title, "Tittel ", 7);
    n.title = title;
    n.body = body;
    size_t len;
    char *out = build(&n, APNS_PAYLOAD_MAX, &len);
    ASSERT(len <= APNS_PAYLOAD_MAX);
    ASSERT(len >= APNS_PAYLOAD_MAX - 3);
    char *b = alert_field(out, "body");
    char *t = alert_field(out, "title");
    ASSERT_STR_EQ("", b);
    ASSERT_STR_EQ("\xE2\x80\xA6", t + strlen(t) - 3);
    ASSERT_EQ_INT(0, strncmp(t, "Tittel xxx", 10));
    free(b);
    free(t);
    free(out);

    /* Short title, long body: only the body is cut. */
    n.title = "Kort";
    out = build(&n, 500, &len);
    t = alert_field(out, "title");
    ASSERT_STR_EQ("Kort", t);
    free(t);
    free(out);
    free(title);
    free(body);
}

TEST(trailing_space_dropped_before_ellipsis)
{
    struct apns_notification n = base();
    n.body = "";
    size_t fixed;
    char *out = build(&n, APNS_PAYLOAD_MAX, &fixed);
    free(out);
    /* Room for "abc " + "…" exactly: the space goes. */
    n.body = "abc defghijkl";
    out = build(&n, fixed + 4 + 3, NULL);
    char *b = alert_field(out, "body");
    ASSERT_STR_EQ("abc\xE2\x80\xA6", b);
    free(b);
    free(out);
}

TEST(fails_when_even_empty_texts_do_not_fit)
{
    struct apns_notification n = base();
    n.body = "";
    n.title = "";
    size_t fixed;
    char *out = build(&n, APNS_PAYLOAD_MAX, &fixed);
    free(out);
    char buf[8192];
    size_t len = 99;
    n.title = "Tittel";
    n.body = "Tekst";
    ASSERT_EQ_INT(0, apns_payload_build(&n, fixed, buf, sizeof buf, &len));
    ASSERT_EQ_INT(fixed, len);
    ASSERT_EQ_INT(-1, apns_payload_build(&n, fixed - 1, buf, sizeof buf, &len));
    ASSERT_EQ_INT(0, len);
    ASSERT_STR_EQ("", buf);
}

TEST(outcap_too_small)
{
    struct apns_notification n = base();
    char buf[4096];
    size_t len;
    ASSERT_EQ_INT(0, apns_payload_build(&n, APNS_PAYLOAD_MAX, buf, sizeof buf, &len));
    size_t need = len;
    char *small = xmalloc(need);   /* no room for the NUL */
    ASSERT_EQ_INT(-1, apns_payload_build(&n, APNS_PAYLOAD_MAX, small, need, &len));
    free(small);
    small = xmalloc(need + 1);
    ASSERT_EQ_INT(0, apns_payload_build(&n, APNS_PAYLOAD_MAX, small, need + 1, &len));
    ASSERT_EQ_INT(need, len);
    free(small);
}

TEST(fit_unit)
{
    struct apns_payload_cut c;
    ASSERT_EQ_INT(-1, apns_payload_fit(100, 99, "a", "b", &c));
    ASSERT_EQ_INT(0, apns_payload_fit(100, 102, "a", "b", &c));
    ASSERT_EQ_INT(1, c.title_len);
    ASSERT_EQ_INT(1, c.body_len);
    ASSERT(!c.title_ellipsis && !c.body_ellipsis);
    /* room for title + "…" */
    ASSERT_EQ_INT(0, apns_payload_fit(100, 104, "a", "bcdef", &c));
    ASSERT_EQ_INT(0, c.body_len);
    ASSERT(c.body_ellipsis);
    /* room for the title only */
    ASSERT_EQ_INT(0, apns_payload_fit(100, 102, "ab", "cdef", &c));
    ASSERT_EQ_INT(2, c.title_len);
    ASSERT_EQ_INT(0, c.body_len);
    ASSERT(!c.body_ellipsis && !c.title_ellipsis);
    /* less than an ellipsis left: empty title */
    ASSERT_EQ_INT(0, apns_payload_fit(100, 102, "abcdef", "x", &c));
    ASSERT_EQ_INT(0, c.title_len);
    ASSERT(!c.title_ellipsis);
    ASSERT_EQ_INT(0, apns_payload_fit(0, 5, NULL, NULL, &c));
}

/* ---- error bodies ------------------------------------------------------ */

static int parse(const char *s, char *reason, size_t rl, int64_t *ts)
{
    /* Copy without a NUL so ASan catches any over-read. */
    size_t n = strlen(s);
    uint8_t *b = xmalloc(n ? n : 1);
    memcpy(b, s, n);
    int rc = apns_response_parse(b, n, reason, rl, ts);
    free(b);
    return rc;
}

TEST(response_reason_and_timestamp)
{
    char r[64];
    int64_t ts = 0;
    ASSERT_EQ_INT(0, parse("{\"reason\":\"Unregistered\",\"timestamp\":1764319200123}",
                           r, sizeof r, &ts));
    ASSERT_STR_EQ("Unregistered", r);
    ASSERT_EQ_INT(1764319200123LL, ts);
    ASSERT_EQ_INT(0, parse("{\"reason\":\"BadDeviceToken\"}", r, sizeof r, &ts));
    ASSERT_STR_EQ("BadDeviceToken", r);
    ASSERT_EQ_INT(-1, ts);
    ASSERT_EQ_INT(0, parse(" {\"timestamp\":\"1500\", \"reason\":\"ExpiredToken\", \"x\":[1]} ",
                           r, sizeof r, &ts));
    ASSERT_STR_EQ("ExpiredToken", r);
    ASSERT_EQ_INT(1500, ts);
    ASSERT_EQ_INT(0, parse("{\"reason\":\"Shutdown\",\"timestamp\":null}", r, sizeof r, &ts));
    ASSERT_EQ_INT(-1, ts);
    ASSERT_EQ_INT(0, parse("{\"reason\":\"X\",\"timestamp\":-5}", r, sizeof r, &ts));
    ASSERT_EQ_INT(-1, ts);
}

TEST(response_truncates_reason)
{
    char r[6];
    int64_t ts;
    ASSERT_EQ_INT(0, parse("{\"reason\":\"TooManyRequests\"}", r, sizeof r, &ts));
    ASSERT_STR_EQ("TooMa", r);
    ASSERT_EQ_INT(0, parse("{\"reason\":\"abcdé\"}", r, sizeof r, &ts));
    ASSERT_STR_EQ("abcd", r);   /* é not split */
    ASSERT_EQ_INT(0, parse("{\"reason\":\"x\"}", NULL, 0, NULL));
}

TEST(response_garbage)
{
    char r[64];
    int64_t ts = 7;
    const char *bad[] = {
        "", "x", "{", "null", "[]", "\"reason\"", "{\"reason\":5}",
        "{\"reason\":null}", "{\"timestamp\":1}", "{\"reason\":\"a\"",
        "Maximum active streams violated for this endpoint.",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(r, "junk");
        ts = 7;
        ASSERT_EQ_INT(-1, parse(bad[i], r, sizeof r, &ts));
        ASSERT_STR_EQ("", r);
        ASSERT_EQ_INT(-1, ts);
    }
    ASSERT_EQ_INT(-1, apns_response_parse(NULL, 0, r, sizeof r, &ts));
    /* Length is honoured: valid JSON followed by bytes outside len. */
    const char *s = "{\"reason\":\"BadTopic\"}garbage";
    ASSERT_EQ_INT(0, apns_response_parse((const uint8_t *)s, 21, r, sizeof r, &ts));
    ASSERT_STR_EQ("BadTopic", r);
}

/* The last build is remembered: asking again gives the same bytes, and
 * any change of input (badge, NULL against "", a longer limit, a smaller
 * buffer) is built afresh, never served from memory. */
TEST(repeated_builds_match_fresh_ones)
{
    struct apns_notification a = base(), b = base();
    b.badge = 3;
    size_t la, lb;
    char *xa = build(&a, 4096, &la), *xb = build(&b, 4096, &lb);
    ASSERT(strstr(xa, "\"badge\"") == NULL);
    ASSERT_STR_CONTAINS(xb, "\"badge\":3");
    for (int i = 0; i < 3; i++) {
        size_t l;
        char *x = build(&a, 4096, &l);
        ASSERT_STR_EQ(xa, x);
        free(x);
        x = build(&a, 4096, &l);
        ASSERT_STR_EQ(xa, x);
        free(x);
        x = build(&b, 4096, &l);
        ASSERT_STR_EQ(xb, x);
        free(x);
    }
    /* sound NULL ("default") and "" (no key) differ. */
    a.sound = "";
    size_t l;
    char *x = build(&a, 4096, &l);
    ASSERT(strstr(x, "sound") == NULL);
    free(x);
    a.sound = NULL;
    x = build(&a, 4096, &l);
    ASSERT_STR_CONTAINS(x, "\"sound\":\"default\"");
    free(x);
    /* Same inputs, another limit or buffer: built again. */
    char small[16];
    ASSERT_EQ_INT(-1, apns_payload_build(&a, 4096, small, sizeof small, &l));
    ASSERT_EQ_INT(0, (int)l);
    ASSERT_EQ_INT(-1, apns_payload_build(&a, 20, xa, 8192, &l));
    x = build(&a, 4096, &l);
    ASSERT_STR_CONTAINS(x, "\"sound\":\"default\"");
    free(x);
    free(xa);
    free(xb);
}

TEST_MAIN(T(basic_layout), T(badge_sound_and_interruption_level), T(escaping),
          T(invalid_utf8_becomes_replacement), T(escaped_len_matches_output),
          T(exactly_max_fits_uncut), T(cut_never_splits_o_slash),
          T(cut_never_splits_emoji), T(cut_never_splits_mixed), T(cut_counts_escapes),
          T(title_cut_after_body), T(trailing_space_dropped_before_ellipsis),
          T(fails_when_even_empty_texts_do_not_fit), T(outcap_too_small), T(fit_unit),
          T(response_reason_and_timestamp), T(response_truncates_reason),
          T(response_garbage), T(repeated_builds_match_fresh_ones))
