/*
 * HTTP/1.1 request parsing and response formatting (see http1.h).
 *
 * Architecture: one http_parser per connection in request mode. Its data
 * callbacks may deliver the URL, a header name or a header value in
 * several pieces (a request split across reads), so each goes into a
 * growing buffer and a header is committed when the next name starts or the
 * headers end. on_message_complete turns the buffers into a struct
 * sbx_request, reports it and resets them for the next request on the
 * connection (keep-alive, pipelining).
 */
#include "sandbox/http1.h"

#include "common/util.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *s;
    size_t n, cap;
};

struct sbx_http1 {
    http_parser parser;
    http_parser_settings settings;
    const struct sbx_http1_callbacks *cb;
    void *user;
    size_t max_header_bytes, body_cap;
    /* the request being read */
    struct sbuf url, name, value;
    bool in_value;                  /* last piece was a header value */
    struct sbx_header *hdrs;
    size_t nhdrs, caphdrs;
    size_t header_bytes;
    bool headers_too_large;
    uint8_t *body;
    size_t body_len, body_alloc, body_total;
    /* connection */
    bool failed, upgraded;
    char error[160];
    uint64_t requests;
};

static void sbuf_add(struct sbuf *b, const char *at, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + len + 1)
            cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->n, at, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void sbuf_reset(struct sbuf *b)
{
    b->n = 0;
    if (b->s)
        b->s[0] = '\0';
}

/* Commit the header in name/value (if any). */
static void commit_header(struct sbx_http1 *p)
{
    if (p->name.n == 0) {
        sbuf_reset(&p->value);
        return;
    }
    /* Counted even when dropped, as the HTTP/2 side counts them. */
    p->header_bytes += p->name.n + p->value.n + 32;
    if (p->max_header_bytes && p->header_bytes > p->max_header_bytes) {
        p->headers_too_large = true;
    } else {
        if (p->nhdrs == p->caphdrs) {
            p->caphdrs = p->caphdrs ? p->caphdrs * 2 : 16;
            p->hdrs = xrealloc(p->hdrs, p->caphdrs * sizeof *p->hdrs);
        }
        struct sbx_header *h = &p->hdrs[p->nhdrs++];
        h->name = xstrndup(p->name.s, p->name.n);
        for (size_t i = 0; i < p->name.n; i++)
            h->name[i] = (char)tolower((unsigned char)h->name[i]);
        h->namelen = p->name.n;
        /* Trailing whitespace of a value is not part of it (RFC 9112). */
        size_t vl = p->value.n;
        while (vl > 0 && (p->value.s[vl - 1] == ' ' || p->value.s[vl - 1] == '\t'))
            vl--;
        h->value = xstrndup(p->value.n ? p->value.s : "", vl);
        h->valuelen = vl;
    }
    sbuf_reset(&p->name);
    sbuf_reset(&p->value);
}

static void reset_request(struct sbx_http1 *p)
{
    sbuf_reset(&p->url);
    sbuf_reset(&p->name);
    sbuf_reset(&p->value);
    p->in_value = false;
    for (size_t i = 0; i < p->nhdrs; i++) {
        free(p->hdrs[i].name);
        free(p->hdrs[i].value);
    }
    p->nhdrs = 0;
    p->header_bytes = 0;
    p->headers_too_large = false;
    p->body_len = 0;
    p->body_total = 0;
}

static int on_message_begin(http_parser *hp)
{
    reset_request(hp->data);
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct sbx_http1 *p = hp->data;
    if (p->url.n + len > 64 * 1024)
        return 1;
    sbuf_add(&p->url, at, len);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct sbx_http1 *p = hp->data;
    if (p->in_value) {
        commit_header(p);
        p->in_value = false;
    }
    sbuf_add(&p->name, at, len);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct sbx_http1 *p = hp->data;
    p->in_value = true;
    sbuf_add(&p->value, at, len);
    return 0;
}

static const char *find_header(const struct sbx_http1 *p, const char *name)
{
    for (size_t i = 0; i < p->nhdrs; i++)
        if (strcmp(p->hdrs[i].name, name) == 0)
            return p->hdrs[i].value;
    return NULL;
}

static int on_headers_complete(http_parser *hp)
{
    struct sbx_http1 *p = hp->data;
    commit_header(p);
    p->in_value = false;
    const char *expect = find_header(p, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && p->cb->on_continue)
        p->cb->on_continue(p->user);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct sbx_http1 *p = hp->data;
    p->body_total += len;
    if (p->body_len >= p->body_cap)
        return 0;
    size_t n = p->body_cap - p->body_len < len ? p->body_cap - p->body_len : len;
    if (p->body_len + n > p->body_alloc) {
        size_t cap = p->body_alloc ? p->body_alloc : 1024;
        while (cap < p->body_len + n)
            cap *= 2;
        if (cap > p->body_cap)
            cap = p->body_cap;
        p->body = xrealloc(p->body, cap);
        p->body_alloc = cap;
    }
    memcpy(p->body + p->body_len, at, n);
    p->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct sbx_http1 *p = hp->data;
    bool keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
    struct sbx_request req = {
        .method = http_method_str((enum http_method)hp->method),
        .path = p->url.n ? p->url.s : "",
        .scheme = "https",
        .authority = find_header(p, "host"),
        .headers = p->hdrs,
        .nheaders = p->nhdrs,
        .body = p->body,
        .body_len = p->body_len,
        .body_total = p->body_total,
        .headers_too_large = p->headers_too_large,
    };
    p->requests++;
    p->cb->on_request(p->user, &req, keep_alive);
    reset_request(p);
    return 0;
}

struct sbx_http1 *sbx_http1_new(size_t max_header_bytes, size_t body_cap,
                                const struct sbx_http1_callbacks *cb, void *user)
{
    struct sbx_http1 *p = xcalloc(1, sizeof *p);
    http_parser_init(&p->parser, HTTP_REQUEST);
    p->parser.data = p;
    http_parser_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_value = on_header_value;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    p->cb = cb;
    p->user = user;
    p->max_header_bytes = max_header_bytes;
    p->body_cap = body_cap;
    return p;
}

void sbx_http1_free(struct sbx_http1 *p)
{
    if (p == NULL)
        return;
    reset_request(p);
    free(p->url.s);
    free(p->name.s);
    free(p->value.s);
    free(p->hdrs);
    free(p->body);
    free(p);
}

int sbx_http1_feed(struct sbx_http1 *p, const uint8_t *data, size_t len)
{
    if (p->failed)
        return -1;
    if (p->upgraded)
        return 0;
    size_t n = http_parser_execute(&p->parser, &p->settings, (const char *)data, len);
    if (p->parser.upgrade) {
        p->upgraded = true;
        return 0;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&p->parser);
    if (e != HPE_OK || n != len) {
        p->failed = true;
        snprintf(p->error, sizeof p->error, "%s (%s)", http_errno_name(e),
                 http_errno_description(e));
        return -1;
    }
    return 0;
}

const char *sbx_http1_error(const struct sbx_http1 *p)
{
    return p->error;
}

uint64_t sbx_http1_requests(const struct sbx_http1 *p)
{
    return p->requests;
}

const char *sbx_http1_reason(int status)
{
    switch (status) {
#define XX(num, name, string) case num: return #string;
    HTTP_STATUS_MAP(XX)
#undef XX
    default: return "Unknown";
    }
}

char *sbx_http1_response(int status, const struct sbx_http1_field *fields, size_t nfields,
                         const void *body, size_t body_len, bool close, size_t *outlen)
{
    size_t cap = 128 + body_len;
    for (size_t i = 0; i < nfields; i++)
        cap += strlen(fields[i].name) + strlen(fields[i].value) + 4;
    char *out = xmalloc(cap);
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n", status, sbx_http1_reason(status));
    size_t o = (size_t)n;
    for (size_t i = 0; i < nfields; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s: %s\r\n", fields[i].name, fields[i].value);
    o += (size_t)snprintf(out + o, cap - o, "content-length: %zu\r\n", body_len);
    if (close)
        o += (size_t)snprintf(out + o, cap - o, "connection: close\r\n");
    o += (size_t)snprintf(out + o, cap - o, "\r\n");
    if (body_len > 0) {
        memcpy(out + o, body, body_len);
        o += body_len;
    }
    *outlen = o;
    return out;
}
