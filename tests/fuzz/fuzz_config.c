/*
 * libFuzzer target for the config loader (config/config.c) and its URL
 * parser.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE \
 *          tests/fuzz/fuzz_config.c config/config.c common/util.c common/log.c \
 *          $(pkg-config --cflags --libs libcjson inih openssl libxxhash) -lm -o fuzz_config
 * Run:   ./fuzz_config tests/fuzz/corpus/config
 *
 * Each input is written to a private temp file (config_load takes a path)
 * and loaded. The loader must either succeed with at least one app or fail
 * with a message that starts with the file name.
 */
#include "config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void remove_temp(void)
{
    if (path[0] != '\0')
        unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (path[0] == '\0') {
        snprintf(path, sizeof path, "/tmp/varsel-fuzz-config-XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
        atexit(remove_temp);
    }
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        abort();
    if (size > 0 && fwrite(data, 1, size, fp) != size)
        abort();
    fclose(fp);

    struct config *cfg = NULL;
    char err[512];
    err[0] = '\0';
    if (config_load(path, &cfg, err, sizeof err) == 0) {
        if (cfg == NULL || cfg->n_apps == 0 || cfg->redis.host == NULL)
            abort();
        for (size_t i = 0; i < cfg->n_apps; i++)
            if (config_find_app(cfg, cfg->apps[i].name) == NULL ||
                (!cfg->apps[i].apns_enabled && !cfg->apps[i].fcm_enabled))
                abort();
        char rerr[256];
        if (config_reload_check(cfg, cfg, rerr, sizeof rerr) != 0)
            abort();
        config_free(cfg);
    } else if (cfg != NULL || strncmp(err, path, strlen(path)) != 0) {
        abort();
    }

    /* The URL parser on the raw bytes as one string. */
    char url[600];
    size_t n = size < sizeof url - 1 ? size : sizeof url - 1;
    memcpy(url, data, n);
    url[n] = '\0';
    struct config_url u;
    if (config_url_parse(url, &u) == 0 && (u.host[0] == '\0' || u.port < 1 || u.port > 65535))
        abort();
    return 0;
}
