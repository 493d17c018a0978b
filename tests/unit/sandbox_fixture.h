/*
 * Helpers shared by the tests that run a real varsel-sandbox server in
 * process (test_sandbox_e2e, test_sandbox_fcm, test_sandbox_http1): a
 * temporary directory removed at exit, the JSONL record read back, JSON
 * field readers and response headers. Each test binary includes it once
 * (static functions; the ones a binary does not use are marked unused).
 */
#ifndef VARSEL_TEST_SANDBOX_FIXTURE_H
#define VARSEL_TEST_SANDBOX_FIXTURE_H

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http2/client.h"
#include "tests/unit/test.h"

static char fixture_dir_path[64];

/* atexit: remove the test's temporary directory (each test is a process). */
static __attribute__((unused)) void fixture_remove_dir(void)
{
    DIR *d = opendir(fixture_dir_path);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", fixture_dir_path, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(fixture_dir_path);
}

/* Make /tmp/NAME-XXXXXX into |out| (at most 64 bytes), removed at exit. */
static __attribute__((unused)) void fixture_tmpdir(const char *name, char *out, size_t outlen)
{
    snprintf(fixture_dir_path, sizeof fixture_dir_path, "/tmp/%s-XXXXXX", name);
    ASSERT_NOT_NULL(mkdtemp(fixture_dir_path));
    atexit(fixture_remove_dir);
    snprintf(out, outlen, "%s", fixture_dir_path);
}

/* Every line of a JSONL record file, each a complete JSON document. */
static __attribute__((unused)) cJSON *fixture_read_jsonl(const char *path)
{
    FILE *f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    cJSON *arr = cJSON_CreateArray();
    static char line[70000];
    while (fgets(line, sizeof line, f)) {
        ASSERT(strchr(line, '\n') != NULL);
        cJSON *o = cJSON_Parse(line);
        ASSERT_NOT_NULL(o);
        cJSON_AddItemToArray(arr, o);
    }
    fclose(f);
    return arr;
}

static __attribute__((unused)) const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static __attribute__((unused)) double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Response header |name| copied into |out| ("" when absent). */
static __attribute__((unused)) void copy_header(const struct h2_response *r, const char *name, char *out, size_t len)
{
    const char *v = h2_response_header(r, name);
    snprintf(out, len, "%s", v ? v : "");
}

#endif
