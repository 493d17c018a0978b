/*
 * libFuzzer target: FCM response bodies (fcm/errors.c). Feeds the input to
 * fcm_error_parse and fcm_response_parse_name, classifies it under a few
 * HTTP statuses, and aborts if an invariant breaks (strings unterminated
 * or not UTF-8 safe, outcomes out of range, a 2xx not SENT).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/include/cjson \
 *     tests/fuzz/fuzz_fcm_errors.c fcm/errors.c common/util.c -lcjson -lxxhash -lssl -lcrypto \
 *     -o build/fuzz_fcm_errors
 *   build/fuzz_fcm_errors tests/fuzz/corpus/fcm_errors
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "fcm/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n >= cap)
        abort();
    (void)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fcm_error e;
    int rc = fcm_error_parse(data, size, &e);
    check_str(e.status, sizeof e.status);
    check_str(e.message, sizeof e.message);
    check_str(e.error_code_str, sizeof e.error_code_str);
    if (rc != 0 && (e.error_code != FCM_ERR_NONE || e.status[0] || e.message[0] ||
                    e.token_invalid))
        abort();
    if (e.error_code > FCM_ERR_OTHER)
        abort();
    static const int statuses[] = { 0, 200, 400, 401, 403, 404, 429, 500, 503, 599 };
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        enum fcm_outcome o = fcm_error_classify(statuses[i], rc == 0 ? &e : NULL);
        if (o > FCM_OUTCOME_PERMANENT)
            abort();
        if (statuses[i] == 200 && o != FCM_OUTCOME_SENT)
            abort();
        (void)fcm_outcome_name(o);
    }
    (void)fcm_error_code_name(e.error_code);

    char name[64];
    rc = fcm_response_parse_name(data, size, name, sizeof name);
    check_str(name, sizeof name);
    if (rc != 0 && name[0])
        abort();
    return 0;
}
