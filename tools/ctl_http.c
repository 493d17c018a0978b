/*
 * One GET on varseld's admin API (daemon/admin.h) over a plain TCP socket:
 * connect with a timeout, send an HTTP/1.1 request with
 * "Connection: close" (and "Authorization: Bearer TOKEN" when a token is
 * set), read until the response is complete, parsed by libhttp-parser
 * (chunked bodies included).
 */
#include "tools/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/util.h"

#define HTTP_TIMEOUT_MS 10000
#define HTTP_BODY_MAX (32u << 20)

struct resp {
    char *body;
    size_t len, cap;
    bool done, too_big;
};

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct resp *r = p->data;
    if (r->len + n > HTTP_BODY_MAX) {
        r->too_big = true;
        return -1;
    }
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->body = xrealloc(r->body, r->cap);
    }
    memcpy(r->body + r->len, at, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static int on_complete(http_parser *p)
{
    struct resp *r = p->data;
    r->done = true;
    return 0;
}

/* Connect to host:port within the timeout; returns the socket or -1 with
 * errno-style text in |why|. */
static int dial(const char *host, int port, char *why, size_t whylen)
{
    char sport[16];
    snprintf(sport, sizeof sport, "%d", port);
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    int rc = getaddrinfo(host, sport, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s", gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(why, whylen, "no address");
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd pfd = { fd, POLLOUT, 0 };
            int n = poll(&pfd, 1, HTTP_TIMEOUT_MS);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            snprintf(why, whylen, "%s", n == 0 ? "connection timed out" : strerror(soerr));
        } else {
            snprintf(why, whylen, "%s", strerror(errno));
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        struct timeval tv = { HTTP_TIMEOUT_MS / 1000, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return fd;
}

int ctl_http_get(struct ctl *c, const char *path, char **body, size_t *body_len)
{
    char where[300], why[256];
    bool v6 = strchr(c->admin_host, ':') != NULL;
    snprintf(where, sizeof where, v6 ? "[%s]:%d" : "%s:%d", c->admin_host, c->admin_port);
    *body = NULL;
    *body_len = 0;
    int fd = dial(c->admin_host, c->admin_port, why, sizeof why);
    if (fd < 0) {
        ctl_err("cannot connect to the admin API at %s: %s (is varseld running, and is "
                "[admin] listen or --admin right?)", where, why);
        return -1;
    }
    size_t cap = strlen(path) + strlen(where) + (c->token ? strlen(c->token) : 0) + 200;
    char *req = xmalloc(cap);
    int n = snprintf(req, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: varselctl\r\n"
                     "Accept: application/json\r\nConnection: close\r\n%s%s%s\r\n",
                     path, where, c->token ? "Authorization: Bearer " : "",
                     c->token ? c->token : "", c->token ? "\r\n" : "");
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            ctl_err("admin API at %s: sending the request: %s", where, strerror(errno));
            free(req);
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    memset(req, 0, cap); /* held the token */
    free(req);

    http_parser_settings ps;
    http_parser_settings_init(&ps);
    ps.on_body = on_body;
    ps.on_message_complete = on_complete;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    struct resp r = { 0 };
    p.data = &r;
    char buf[16384];
    const char *fail = NULL;
    while (!r.done) {
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            fail = errno == EAGAIN || errno == EWOULDBLOCK ? "no answer in time" : strerror(errno);
            break;
        }
        size_t used = http_parser_execute(&p, &ps, buf, (size_t)got);
        if (r.too_big) {
            fail = "answer too large";
            break;
        }
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || used != (size_t)got) {
            fail = http_errno_description(HTTP_PARSER_ERRNO(&p));
            break;
        }
        if (got == 0) {
            if (!r.done)
                fail = "connection closed before the answer was complete";
            break;
        }
    }
    close(fd);
    if (fail) {
        ctl_err("admin API at %s: GET %s: %s", where, path, fail);
        free(r.body);
        return -1;
    }
    *body = r.body ? r.body : xstrdup("");
    *body_len = r.len;
    return (int)p.status_code;
}
