/*
 * Helpers shared by the tests that run a real varsel-sandbox server in
 * process (test_sandbox_e2e, _fcm, _http1, _server; _oauth for the temp dir): a
 * temporary directory removed at exit, the JSONL record read back, JSON
 * field readers, response headers, TLS contexts from the certgen files and
 * raw TLS connections. Each test binary includes it once
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
#include "http2/tls.h"
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

/* The server SSL_CTX from |dir|/server.pem and server.key (certgen). */
static __attribute__((unused)) SSL_CTX *fixture_server_ctx(const char *dir,
                                                           const char *const *alpn)
{
    char err[256], cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    SSL_CTX *ctx = tls_server_ctx_new(cert, key, alpn, err, sizeof err);
    if (ctx == NULL)
        TEST_FAIL_("server ctx: %s", err);
    return ctx;
}

/* A client SSL_CTX trusting |dir|/ca.pem, offering |alpn|. */
static __attribute__((unused)) SSL_CTX *fixture_client_ctx(const char *dir,
                                                           const char *const *alpn)
{
    char err[256], ca[128];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    SSL_CTX *ctx = tls_client_ctx_new(ca, alpn, NULL, NULL, err, sizeof err);
    if (ctx == NULL)
        TEST_FAIL_("client ctx: %s", err);
    return ctx;
}

/* A raw TLS connection (ALPN h2) to 127.0.0.1:|port| with |cbs| on |loop|,
 * into *|c|; returns the client SSL_CTX, to free when the test is done. */
static __attribute__((unused)) SSL_CTX *fixture_connect(uv_loop_t *loop, const char *dir,
                                                        int port,
                                                        const struct tls_conn_callbacks *cbs,
                                                        void *user, struct tls_conn **c)
{
    static const char *const alpn[] = { "h2", NULL };
    SSL_CTX *ctx = fixture_client_ctx(dir, alpn);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    ASSERT_EQ_INT(0, tls_conn_connect(loop, ctx, (struct sockaddr *)&sa, "localhost", 1, cbs,
                                      user, c));
    return ctx;
}

#endif
