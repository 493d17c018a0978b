/*
 * Unit tests for the sandbox request record (sandbox/record.c): payload
 * encoding and the JSON-lines file format.
 */
#include "tests/unit/test.h"

#include "sandbox/record.h"

#include <cJSON.h>
#include <stdio.h>

static char *payload_str(const char *body, size_t len, bool *is_json)
{
    cJSON *p = sbx_record_payload((const uint8_t *)body, len, is_json);
    ASSERT_NOT_NULL(p);
    char *s = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    return s;
}

TEST(payload_encodings)
{
    bool js;
    char *s = payload_str("{\"aps\":{\"alert\":\"hi\"}} \n", 24, &js);
    ASSERT(js);
    ASSERT_STR_EQ("{\"aps\":{\"alert\":\"hi\"}}", s);
    cJSON_free(s);
    s = payload_str("{\"a\":1} trailing", 16, &js); /* not JSON as a whole */
    ASSERT(!js);
    ASSERT_STR_EQ("\"{\\\"a\\\":1} trailing\"", s);
    cJSON_free(s);
    s = payload_str("plain text \xc3\xa6\xc3\xb8\xc3\xa5", 17, &js);
    ASSERT(!js);
    ASSERT_STR_EQ("\"plain text \xc3\xa6\xc3\xb8\xc3\xa5\"", s);
    cJSON_free(s);
    s = payload_str("\xff\x00\x01", 3, &js);
    ASSERT(!js);
    ASSERT_STR_EQ("{\"base64\":\"/wAB\"}", s);
    cJSON_free(s);
    s = payload_str("{\"a\":1}\0x", 9, &js); /* embedded NUL */
    ASSERT(!js);
    ASSERT_STR_CONTAINS(s, "base64");
    cJSON_free(s);
    s = payload_str("", 0, &js);
    ASSERT(!js);
    ASSERT_STR_EQ("\"\"", s);
    cJSON_free(s);
}

TEST(lines_are_appended_whole)
{
    char path[] = "/tmp/sbx-record-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    ASSERT_EQ_INT(0, sbx_record_write(NULL, NULL)); /* recording off */
    char err[256];
    struct sbx_record *r = sbx_record_open(path, err, sizeof err);
    ASSERT_NOT_NULL(r);
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "i", i);
        cJSON_AddStringToObject(o, "text", "line\nbreak");
        ASSERT_EQ_INT(0, sbx_record_write(r, o));
        cJSON_Delete(o);
    }
    ASSERT_EQ_INT(3, sbx_record_lines(r));
    sbx_record_close(r);
    r = sbx_record_open(path, err, sizeof err); /* reopen appends */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "i", 3);
    sbx_record_write(r, o);
    cJSON_Delete(o);
    sbx_record_close(r);

    FILE *f = fopen(path, "r");
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        ASSERT(line[strlen(line) - 1] == '\n');
        cJSON *p = cJSON_Parse(line);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ_INT(n, cJSON_GetObjectItem(p, "i")->valueint);
        cJSON_Delete(p);
        n++;
    }
    fclose(f);
    ASSERT_EQ_INT(4, n);
    unlink(path);
    ASSERT_NULL(sbx_record_open("/nonexistent-dir/x", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "/nonexistent-dir/x");
}

TEST_MAIN(T(payload_encodings), T(lines_are_appended_whole))
