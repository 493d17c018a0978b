/*
 * One HTTP request as the sandbox's server layer hands it to a fake
 * provider: pseudo-headers, regular headers in arrival order (duplicates
 * kept, names lowercase as HTTP/2 requires) and the body. The provider
 * logic (sandbox/apns.c, later FCM/OAuth) works on this struct only, so it
 * is testable without a network.
 */
#ifndef VARSEL_SANDBOX_REQUEST_H
#define VARSEL_SANDBOX_REQUEST_H

#include <stddef.h>
#include <stdint.h>

struct sbx_header {
    char *name;      /* NUL-terminated, lowercase */
    size_t namelen;
    char *value;     /* NUL-terminated (may contain NULs in theory; use valuelen) */
    size_t valuelen;
};

struct sbx_request {
    const char *method;     /* ":method", NULL if absent */
    const char *path;       /* ":path" */
    const char *scheme;     /* ":scheme" */
    const char *authority;  /* ":authority" or "host" */
    struct sbx_header *headers; /* regular headers in order */
    size_t nheaders;
    const uint8_t *body;    /* stored body bytes (at most the server's cap) */
    size_t body_len;        /* bytes in |body| */
    size_t body_total;      /* bytes received; > body_len when capped */
    int headers_too_large;  /* header list exceeded MAX_HEADER_LIST_SIZE;
                               headers past the limit were dropped */
    uint64_t conn_id;       /* connection number, from 1 */
    int32_t stream_id;      /* HTTP/2 stream id */
};

/*
 * Find regular header |name| (lowercase). Returns the first value or NULL;
 * sets |*count| (may be NULL) to the number of occurrences and |*len| (may
 * be NULL) to the first value's length.
 */
const char *sbx_request_header(const struct sbx_request *req, const char *name,
                               size_t *len, unsigned *count);

#endif
