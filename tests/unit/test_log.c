/*
 * common/log: JSON escaping, the text and JSON line formats, structured
 * context, token cutting and the repeat rate limit (with a fake clock).
 */
#include "tests/unit/test.h"

#include <cjson/cJSON.h>

#include "common/log.h"

/* ---- capture --------------------------------------------------------------- */

#define CAP_MAX 64
static char *lines[CAP_MAX];
static size_t n_lines;

static void sink(const char *line, size_t len, void *arg)
{
    (void)arg;
    if (n_lines >= CAP_MAX)
        TEST_FAIL_("more than %d lines logged", CAP_MAX);
    if (len == 0 || line[len - 1] != '\n')
        TEST_FAIL_("line does not end in a newline");
    for (size_t i = 0; i + 1 < len; i++)
        if (line[i] == '\n')
            TEST_FAIL_("newline inside a line: %.*s", (int)len, line);
    lines[n_lines] = strndup(line, len - 1);
    n_lines++;
}

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }

static void setup(enum log_format fmt, unsigned limit)
{
    n_lines = 0;
    fake_now = 100000;
    log_set_sink(sink, NULL);
    log_set_clock(fake_clock);
    log_set_format(fmt);
    log_set_program("testprog");
    log_set_level(LOG_DEBUG);
    log_set_rate_limit(limit);
}

static cJSON *parse_line(size_t i)
{
    ASSERT(i < n_lines);
    cJSON *o = cJSON_Parse(lines[i]);
    if (!cJSON_IsObject(o))
        TEST_FAIL_("line %zu is not a JSON object: %s", i, lines[i]);
    return o;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void escape_eq(const char *in, size_t inlen, const char *expect)
{
    char out[256];
    size_t n = log_json_escape(out, sizeof out, in, inlen);
    ASSERT_EQ_INT(strlen(expect), n);
    ASSERT_STR_EQ(expect, out);
}

/* ---- escaping -------------------------------------------------------------- */

TEST(escape_specials)
{
    escape_eq("plain", 5, "plain");
    escape_eq("a\"b\\c", 5, "a\\\"b\\\\c");
    escape_eq("l1\nl2\r\t", 7, "l1\\nl2\\r\\t");
    escape_eq("\b\f", 2, "\\b\\f");
    escape_eq("\x01\x1f\x7f", 3, "\\u0001\\u001f\\u007f");
    escape_eq("a\0b", 3, "a\\u0000b");
    escape_eq("/", 1, "/");
}

TEST(escape_utf8)
{
    escape_eq("bl\xC3\xA5" "b\xC3\xA6r", 8, "bl\xC3\xA5" "b\xC3\xA6r");   /* blåbær */
    escape_eq("\xE2\x80\xA6", 3, "\xE2\x80\xA6");                   /* … */
    escape_eq("\xF0\x9F\x93\xB1", 4, "\xF0\x9F\x93\xB1");           /* 📱 */
    /* invalid: stray continuation, truncated, overlong, surrogate, > U+10FFFF */
    escape_eq("\x80x", 2, "\xEF\xBF\xBDx");
    escape_eq("a\xC3", 2, "a\xEF\xBF\xBD");
    escape_eq("\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD");
    escape_eq("\xE0\x80\xAF", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    escape_eq("\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    escape_eq("\xF4\x90\x80\x80", 4,
              "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    escape_eq("\xFF", 1, "\xEF\xBF\xBD");
    /* a cut sequence is one U+FFFD, then what follows */
    escape_eq("\xE2\x82x", 3, "\xEF\xBF\xBDx");
    escape_eq("\xF0\x9F\x93", 3, "\xEF\xBF\xBD");
}

TEST(escape_never_splits_an_escape)
{
    char out[8];
    /* "ab" + \u0001 (6 bytes) does not fit in 7 + NUL: it is left out whole */
    size_t n = log_json_escape(out, sizeof out, "ab\x01z", 4);
    ASSERT_EQ_INT(2, n);
    ASSERT_STR_EQ("ab", out);
    n = log_json_escape(out, 4, "a\"b", 3);
    ASSERT_EQ_INT(3, n);
    ASSERT_STR_EQ("a\\\"", out);
    n = log_json_escape(out, 3, "a\xC3\xA5", 3); /* å needs 2, only 1 left */
    ASSERT_EQ_INT(1, n);
    ASSERT_STR_EQ("a", out);
    n = log_json_escape(out, 1, "abc", 3);
    ASSERT_EQ_INT(0, n);
    ASSERT_STR_EQ("", out);
}

/* ---- line formats ---------------------------------------------------------- */

TEST(parse_format)
{
    enum log_format f;
    ASSERT_EQ_INT(0, log_parse_format("json", &f));
    ASSERT_EQ_INT(LOG_FORMAT_JSON, f);
    ASSERT_EQ_INT(0, log_parse_format("text", &f));
    ASSERT_EQ_INT(LOG_FORMAT_TEXT, f);
    ASSERT_EQ_INT(-1, log_parse_format("JSON", &f));
    ASSERT_EQ_INT(-1, log_parse_format("", &f));
    ASSERT_STR_EQ("warn", log_level_name(LOG_WARN));
}

TEST(text_line)
{
    setup(LOG_FORMAT_TEXT, 0);
    log_warn("apns", "connection lost (app=%s): %s", "demo", "reset");
    log_info_kv("daemon", LOG_KV("app", "demo", "why", "two words", "empty", ""),
                "started %d", 3);
    ASSERT_EQ_INT(2, n_lines);
    /* 2026-11-28T14:00:00.123Z warn testprog apns: ... */
    ASSERT_EQ_INT(24, strchr(lines[0], ' ') - lines[0]);
    ASSERT(lines[0][10] == 'T' && lines[0][23] == 'Z');
    ASSERT_STR_EQ(" warn testprog apns: connection lost (app=demo): reset", lines[0] + 24);
    ASSERT_STR_EQ(" info testprog daemon: started 3 app=demo why=\"two words\" empty=\"\"",
                  lines[1] + 24);
}

TEST(json_line)
{
    setup(LOG_FORMAT_JSON, 0);
    log_error_kv("pipeline",
                 LOG_KV("tenant", "oslo", "msg", "clash", "token",
                        "0123456789abcdef0123456789abcdef", "quote", "say \"hi\"\n"),
                 "dead letter %s: %s", "1-0", "bad \"json\"\t\x01");
    ASSERT_EQ_INT(1, n_lines);
    cJSON *o = parse_line(0);
    ASSERT_STR_EQ("error", jstr(o, "level"));
    ASSERT_STR_EQ("testprog", jstr(o, "program"));
    ASSERT_STR_EQ("pipeline", jstr(o, "tag"));
    ASSERT_STR_EQ("dead letter 1-0: bad \"json\"\t\x01", jstr(o, "msg"));
    ASSERT_STR_EQ("oslo", jstr(o, "tenant"));
    ASSERT_STR_EQ("clash", jstr(o, "_msg"));
    ASSERT_STR_EQ("say \"hi\"\n", jstr(o, "quote"));
    /* never the whole token */
    ASSERT_STR_EQ("01234567...", jstr(o, "token"));
    ASSERT(strstr(lines[0], "89abcdef0123") == NULL);
    const char *ts = jstr(o, "ts");
    ASSERT_NOT_NULL(ts);
    ASSERT_EQ_INT(24, strlen(ts));
    ASSERT(ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    /* members in a fixed order: ts first */
    ASSERT(strncmp(lines[0], "{\"ts\":\"", 7) == 0);
    cJSON_Delete(o);
}

TEST(json_line_with_invalid_utf8_is_valid)
{
    setup(LOG_FORMAT_JSON, 0);
    log_warn_kv("redis", LOG_KV("reply", "\xFF\xFEx"), "reply: %s", "\xC3(\xE2\x82");
    cJSON *o = parse_line(0);
    ASSERT_STR_EQ("reply: \xEF\xBF\xBD(\xEF\xBF\xBD", jstr(o, "msg"));
    ASSERT_STR_EQ("\xEF\xBF\xBD\xEF\xBF\xBDx", jstr(o, "reply"));
    cJSON_Delete(o);
}

TEST(json_line_cut_stays_valid)
{
    setup(LOG_FORMAT_JSON, 0);
    /* a message of control bytes (6x when escaped) and context far over
     * the line buffer: the line is cut, but stays one valid JSON object */
    static char big[8000], val[1500];
    memset(big, '\x01', sizeof big - 1);
    memset(val, '"', sizeof val - 1);
    const char *kv[41];
    for (int i = 0; i < 20; i++) {
        static char keys[20][16];
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        kv[2 * i] = keys[i];
        kv[2 * i + 1] = val;
    }
    kv[40] = NULL;
    log_write_kv(LOG_INFO, "t", kv, "%s", big);
    ASSERT_EQ_INT(1, n_lines);
    ASSERT(strlen(lines[0]) < 16384);
    cJSON *o = parse_line(0);
    ASSERT_EQ_INT(2047, strlen(jstr(o, "msg")));
    ASSERT_NOT_NULL(jstr(o, "k0"));
    cJSON_Delete(o);
}

TEST(level_filter)
{
    setup(LOG_FORMAT_TEXT, 0);
    log_set_level(LOG_WARN);
    log_info("x", "hidden");
    log_debug_kv("x", LOG_KV("a", "b"), "hidden");
    log_warn("x", "shown");
    log_error("x", "shown");
    ASSERT_EQ_INT(2, n_lines);
}

/* ---- rate limit ------------------------------------------------------------ */

TEST(rate_limit_drops_repeats_and_summarises)
{
    setup(LOG_FORMAT_TEXT, 5);
    for (int i = 0; i < 100; i++) {
        log_warn("pipeline", "XACK %s failed", "1-0");
        fake_now += 5; /* 100 lines in 0.5 s */
    }
    ASSERT_EQ_INT(5, n_lines);
    fake_now += 600; /* the window is over */
    log_warn("pipeline", "XACK %s failed", "2-0");
    ASSERT_EQ_INT(7, n_lines);
    ASSERT_STR_CONTAINS(lines[5], " warn testprog pipeline: \xE2\x80\xA6 95 similar messages "
                                  "suppressed (format \"XACK %s failed\")");
    ASSERT_STR_CONTAINS(lines[6], "XACK 2-0 failed");
}

TEST(rate_limit_is_per_tag_and_format)
{
    setup(LOG_FORMAT_TEXT, 3);
    for (int i = 0; i < 10; i++) {
        log_error("a", "same %d", i);
        log_error("b", "same %d", i);
        log_error("a", "other %d", i);
    }
    ASSERT_EQ_INT(9, n_lines);
}

TEST(rate_limit_new_window_admits_again)
{
    setup(LOG_FORMAT_TEXT, 2);
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 2; i++)
            log_info("x", "tick");
        fake_now += 1000;
    }
    /* exactly at the limit: nothing dropped, no summaries */
    ASSERT_EQ_INT(6, n_lines);
    for (size_t i = 0; i < n_lines; i++)
        ASSERT(strstr(lines[i], "suppressed") == NULL);
}

TEST(rate_limit_flush)
{
    setup(LOG_FORMAT_JSON, 2);
    for (int i = 0; i < 10; i++)
        log_error("redis", "down");
    ASSERT_EQ_INT(2, n_lines);
    log_flush_suppressed(false); /* window not over yet: nothing */
    ASSERT_EQ_INT(2, n_lines);
    fake_now += 1000;
    log_flush_suppressed(false);
    ASSERT_EQ_INT(3, n_lines);
    cJSON *o = parse_line(2);
    ASSERT_STR_EQ("error", jstr(o, "level"));
    ASSERT_STR_EQ("redis", jstr(o, "tag"));
    ASSERT_STR_CONTAINS(jstr(o, "msg"), "8 similar messages suppressed");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "suppressed");
    ASSERT(cJSON_IsNumber(n));
    ASSERT_EQ_INT(8, n->valuedouble);
    cJSON_Delete(o);
    log_flush_suppressed(true); /* nothing left */
    ASSERT_EQ_INT(3, n_lines);
    /* at exit, all pending summaries come out, window over or not */
    for (int i = 0; i < 5; i++)
        log_error("redis", "down");
    log_flush_suppressed(true);
    ASSERT_EQ_INT(6, n_lines);
    ASSERT_STR_CONTAINS(lines[5], "3 similar messages suppressed");
}

TEST(rate_limit_summary_comes_with_other_lines)
{
    setup(LOG_FORMAT_TEXT, 1);
    for (int i = 0; i < 4; i++)
        log_warn("a", "storm");
    fake_now += 1500;
    log_info("b", "something else");
    ASSERT_EQ_INT(3, n_lines);
    ASSERT_STR_CONTAINS(lines[1], "a: \xE2\x80\xA6 3 similar messages suppressed");
    ASSERT_STR_CONTAINS(lines[2], "b: something else");
}

TEST(rate_limit_many_formats)
{
    /* Far more distinct (tag, format) pairs than slots: slots are recycled
     * (with their summaries) and nothing breaks. */
    setup(LOG_FORMAT_TEXT, 1);
    log_set_sink(NULL, NULL);
    FILE *devnull = freopen("/dev/null", "w", stderr);
    ASSERT_NOT_NULL(devnull);
    char fmt[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(fmt, sizeof fmt, "format %d", i % 2000);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
        log_write(LOG_INFO, "t", fmt, 0);
        log_write(LOG_INFO, "t", fmt, 0);
#pragma GCC diagnostic pop
    }
    log_flush_suppressed(true);
}

TEST(rate_limit_off)
{
    setup(LOG_FORMAT_TEXT, 0);
    for (int i = 0; i < 50; i++)
        log_info("x", "again");
    ASSERT_EQ_INT(50, n_lines);
}

TEST(token)
{
    char buf[24];
    ASSERT_STR_EQ("abcdef01...", log_token("abcdef0123456789", buf, sizeof buf));
    ASSERT_STR_EQ("(none)", log_token(NULL, buf, sizeof buf));
}

TEST_MAIN(T(escape_specials), T(escape_utf8), T(escape_never_splits_an_escape),
          T(parse_format), T(text_line), T(json_line), T(json_line_with_invalid_utf8_is_valid),
          T(json_line_cut_stays_valid), T(level_filter),
          T(rate_limit_drops_repeats_and_summarises), T(rate_limit_is_per_tag_and_format),
          T(rate_limit_new_window_admits_again), T(rate_limit_flush),
          T(rate_limit_summary_comes_with_other_lines), T(rate_limit_many_formats),
          T(rate_limit_off), T(token))
