/*
 * HTTP/1.1 for varsel-sandbox: requests parsed with Debian's libhttp-parser
 * (<http_parser.h>) into the same struct sbx_request the HTTP/2 side
 * produces, and responses serialized for writing. No I/O: the server
 * (sandbox/server.c) feeds decrypted bytes in and writes what comes out,
 * so this module is testable with plain byte strings.
 *
 * Supported: requests split across any number of reads, several requests
 * in one read (pipelining; they are reported in order), keep-alive and
 * "Connection: close", HTTP/1.0, Content-Length and chunked bodies,
 * "Expect: 100-continue". Not supported: Upgrade/CONNECT (the request is
 * reported, then parsing stops and the connection should close after the
 * answer).
 */
#ifndef VARSEL_SANDBOX_HTTP1_H
#define VARSEL_SANDBOX_HTTP1_H

#include "sandbox/request.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbx_http1;

struct sbx_http1_callbacks {
    /*
     * One complete request, in arrival order. |req| (method, path,
     * authority from Host, lowercase header names, body) and everything it
     * points to are borrowed for the call; conn_id and stream_id are 0 (the
     * caller numbers requests). |keep_alive| is false when the client asked
     * to close (Connection: close, HTTP/1.0 without keep-alive) or the
     * connection cannot carry more requests (Upgrade).
     */
    void (*on_request)(void *user, const struct sbx_request *req, bool keep_alive);
    /* The request carries "Expect: 100-continue": the caller may write
     * SBX_HTTP1_CONTINUE before the body arrives. May be NULL. */
    void (*on_continue)(void *user);
};

#define SBX_HTTP1_CONTINUE "HTTP/1.1 100 Continue\r\n\r\n"

/*
 * A parser for one connection. |max_header_bytes| bounds the header list
 * with HTTP/2's accounting (name + value + 32 per field; 0 = no bound):
 * past it, further headers are dropped and req->headers_too_large is set.
 * At most |body_cap| body bytes are stored (body_total counts them all).
 * |cb| and |user| are borrowed.
 */
struct sbx_http1 *sbx_http1_new(size_t max_header_bytes, size_t body_cap,
                                const struct sbx_http1_callbacks *cb, void *user);

/* Free the parser; NULL is allowed. */
void sbx_http1_free(struct sbx_http1 *p);

/*
 * Feed |len| bytes. Complete requests are reported through on_request
 * before this returns. Returns 0, or -1 when the input is not HTTP/1.x
 * (sbx_http1_error() says why): answer 400 with "Connection: close" and
 * close; the parser accepts nothing more. After an Upgrade request further
 * bytes are ignored (returns 0).
 */
int sbx_http1_feed(struct sbx_http1 *p, const uint8_t *data, size_t len);

/* Why the last feed failed ("" if it did not). */
const char *sbx_http1_error(const struct sbx_http1 *p);

/* Requests reported so far. */
uint64_t sbx_http1_requests(const struct sbx_http1 *p);

struct sbx_http1_field {
    const char *name;
    const char *value;
};

/*
 * Serialize a response: status line with the standard reason phrase,
 * |fields| in order, "content-length" (always, 0 without a body), and
 * "connection: close" when |close| is set. Returns a malloc'd buffer and
 * its length in |*outlen|.
 */
char *sbx_http1_response(int status, const struct sbx_http1_field *fields, size_t nfields,
                         const void *body, size_t body_len, bool close, size_t *outlen);

/* "OK", "Not Found", ...; "Unknown" for codes it does not know. */
const char *sbx_http1_reason(int status);

#endif
