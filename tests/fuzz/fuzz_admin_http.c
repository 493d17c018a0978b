/*
 * libFuzzer target: the admin server's HTTP/1.1 request glue (libhttp-parser
 * callbacks, limits) and its router, fed arbitrary bytes in arbitrary
 * chunks, as a client on the network may send them.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "daemon/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct admin_http h;
    admin_http_init(&h, 4096);
    /* The first byte picks the chunk size, so split requests are covered. */
    size_t chunk = size ? (size_t)data[0] % 17 + 1 : 1;
    const char *p = (const char *)data + (size ? 1 : 0);
    size_t left = size ? size - 1 : 0;
    int requests = 0;
    while (left > 0 && requests < 64) {
        size_t n = left < chunk ? left : chunk;
        size_t used = admin_http_feed(&h, p, n);
        if (h.error)
            break;
        if (h.complete) {
            struct admin_target t;
            admin_route(h.req.url, h.req.url_len, &t);
            admin_http_next(&h);
            requests++;
        }
        if (used == 0 && !h.complete)
            break;
        p += used;
        left -= used;
    }
    return 0;
}
