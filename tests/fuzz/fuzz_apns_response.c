/*
 * libFuzzer target: APNs bodies (apns/payload.c). The input is parsed as
 * an APNs error body (apns_response_parse), and also split at its first
 * NUL byte into a title and a body for apns_payload_build with a limit
 * taken from the input, checking that what comes out is within the limit,
 * valid UTF-8 and valid JSON whose texts are prefixes of the inputs.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/include/cjson \
 *     tests/fuzz/fuzz_apns_response.c apns/payload.c common/util.c -lcjson -lxxhash -lssl -lcrypto \
 *     -o build/fuzz_apns_response
 *   build/fuzz_apns_response tests/fuzz/corpus/apns_response
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apns/payload.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_payload(const uint8_t *data, size_t size)
{
    /* title \0 body; the limit comes from the input's length and last byte */
    char *buf = malloc(size + 2);
    if (!buf)
        return;
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';
    const char *title = buf;
    size_t tl = strlen(title);
    const char *body = tl < size ? buf + tl + 1 : "";
    size_t max = 150 + (size ? data[size - 1] : 0) * 4;

    struct apns_notification n = {
        .title = title, .body = body, .badge = (int)(size % 3) - 1,
        .thread_id = size % 2 ? "th" : NULL, .event_id = "e", .event_type = "message.new",
        .tenant = "t",
    };
    static char out[APNS_PAYLOAD_MAX + 1];
    size_t len = 0;
    if (apns_payload_build(&n, max, out, sizeof out, &len) == 0) {
        if (len > max || len != strlen(out) || !utf8_valid(out, len))
            abort();
        cJSON *j = cJSON_ParseWithLength(out, len);
        if (!j)
            abort();
        cJSON_Delete(j);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char reason[32];
    int64_t ts = 0;
    int rc = apns_response_parse(data, size, reason, sizeof reason, &ts);
    if (strnlen(reason, sizeof reason) >= sizeof reason)
        abort();
    if (rc != 0 && (reason[0] || ts != -1))
        abort();
    if (ts < -1)
        abort();
    check_payload(data, size);
    return 0;
}
