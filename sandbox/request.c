/*
 * Helpers over struct sbx_request: header lookup. The struct itself is
 * filled by sandbox/server.c (from nghttp2 callbacks) or by unit tests.
 */
#include "sandbox/request.h"

#include <string.h>

const char *sbx_request_header(const struct sbx_request *req, const char *name,
                               size_t *len, unsigned *count)
{
    const char *first = NULL;
    size_t first_len = 0;
    unsigned n = 0;
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct sbx_header *h = &req->headers[i];
        if (h->namelen != nl || memcmp(h->name, name, nl) != 0)
            continue;
        if (n++ == 0) {
            first = h->value;
            first_len = h->valuelen;
        }
    }
    if (len)
        *len = first_len;
    if (count)
        *count = n;
    return first;
}
