/*
 * varselctl's Redis side: one synchronous hiredis connection, made on first
 * use (AUTH, SELECT), commands given as argument vectors, key builders
 * following docs/redis.md, and small readers for hash and stream replies.
 */
#include "tools/ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/util.h"

#define CONNECT_TIMEOUT_MS 5000
#define REPLY_TIMEOUT_MS 15000
#define SENTINEL_TIMEOUT_MS 2000   /* to connect to one Sentinel, and for each answer */

/* ---- URL --------------------------------------------------------------------- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decode [s, s+n) into a new string; NULL on a bad escape. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

int ctl_redis_url_parse(const char *url, struct ctl_redis_addr *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "the Redis URL must start with redis:// (no TLS: rediss:// "
                              "is not supported)");
        return -1;
    }
    const char *p = url + sizeof scheme - 1;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                out->user = pct_decode(p, (size_t)(colon - p));
            out->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
            if ((colon > p && out->user == NULL) || out->password == NULL)
                goto bad_userinfo;
        } else {
            /* redis://password@host, as redis-cli takes it */
            out->password = pct_decode(p, (size_t)(at - p));
            if (out->password == NULL)
                goto bad_userinfo;
        }
        p = at + 1;
    }
    const char *hs = p, *he;
    if (*p == '[') {
        he = memchr(p, ']', (size_t)(end - p));
        if (he == NULL) {
            snprintf(err, errlen, "Redis URL: IPv6 host without ']'");
            goto fail;
        }
        hs = p + 1;
        p = he + 1;
    } else {
        he = p + strcspn(p, ":/?#");
        if (he > end)
            he = end;
        p = he;
    }
    if (he == hs) {
        snprintf(err, errlen, "Redis URL: no host");
        goto fail;
    }
    out->host = xstrndup(hs, (size_t)(he - hs));
    if (*p == ':') {
        char *e;
        long port = strtol(p + 1, &e, 10);
        if (e == p + 1 || port < 1 || port > 65535 || (e != end)) {
            snprintf(err, errlen, "Redis URL: bad port");
            goto fail;
        }
        out->port = (int)port;
        p = e;
    } else if (p != end) {
        snprintf(err, errlen, "Redis URL: unexpected text after the host");
        goto fail;
    }
    if (*end == '/' && end[1] != '\0') {
        char *e;
        long db = strtol(end + 1, &e, 10);
        if (e == end + 1 || *e != '\0' || db < 0 || db > 100000) {
            snprintf(err, errlen, "Redis URL: bad database number");
            goto fail;
        }
        out->db = (int)db;
    } else if (*end != '\0' && strcmp(end, "/") != 0) {
        snprintf(err, errlen, "Redis URL: no query or fragment allowed");
        goto fail;
    }
    return 0;
bad_userinfo:
    snprintf(err, errlen, "Redis URL: bad %%-escape in the user or password");
fail:
    ctl_redis_addr_free(out);
    return -1;
}

void ctl_redis_addr_free(struct ctl_redis_addr *a)
{
    free(a->host);
    free(a->user);
    free_secret(a->password);
    for (size_t i = 0; i < a->n_sentinels; i++)
        free(a->sentinel_hosts[i]);
    free(a->sentinel_hosts);
    free(a->sentinel_ports);
    free(a->master_name);
    free_secret(a->sentinel_password);
    memset(a, 0, sizeof *a);
}

/* "host:port", "[v6]:port". */
static const char *host_port(const char *host, int port, char *out, size_t outlen)
{
    snprintf(out, outlen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    return out;
}

const char *ctl_redis_where(const struct ctl *c, char *out, size_t outlen)
{
    return host_port(c->r.host ? c->r.host : "?", c->r.port, out, outlen);
}

/* ---- connection ---------------------------------------------------------------- */

static struct timeval tv_ms(long ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    return tv;
}

static const char *conn_error(const redisContext *rc)
{
    if (rc->err == REDIS_ERR_IO && (errno == EINPROGRESS || errno == EAGAIN ||
                                    errno == EWOULDBLOCK))
        return "timed out";
    return rc->errstr[0] ? rc->errstr : "unknown error";
}

/* Ask one Sentinel where the master is: 0 and c->r.host/port set, or -1
 * and why in |why|. */
static int ask_sentinel(struct ctl *c, size_t i, char *why, size_t whylen)
{
    const struct ctl_redis_addr *a = &c->r;
    redisContext *sc = redisConnectWithTimeout(a->sentinel_hosts[i], a->sentinel_ports[i],
                                               tv_ms(SENTINEL_TIMEOUT_MS));
    if (sc == NULL || sc->err) {
        snprintf(why, whylen, "%s", sc ? conn_error(sc) : "out of memory");
        redisFree(sc);
        return -1;
    }
    redisSetTimeout(sc, tv_ms(SENTINEL_TIMEOUT_MS));
    int rc = -1;
    redisReply *r = NULL;
    if (a->sentinel_password) {
        r = redisCommand(sc, "AUTH %s", a->sentinel_password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "AUTH refused: %s", r ? r->str : conn_error(sc));
            goto out;
        }
        freeReplyObject(r);
    }
    r = redisCommand(sc, "SENTINEL get-master-addr-by-name %s", a->master_name);
    if (r == NULL) {
        snprintf(why, whylen, "%s", conn_error(sc));
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "%s", r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, whylen, "does not know a master named %s", a->master_name);
    } else {
        char *end;
        long port = strtol(r->element[1]->str, &end, 10);
        if (*end != '\0' || port < 1 || port > 65535) {
            snprintf(why, whylen, "answered a bad port");
        } else {
            free(c->r.host);
            c->r.host = xstrdup(r->element[0]->str);
            c->r.port = (int)port;
            rc = 0;
        }
    }
out:
    if (r)
        freeReplyObject(r);
    redisFree(sc);
    return rc;
}

/* The master's address from the first Sentinel that knows it. */
static int find_master(struct ctl *c)
{
    char whys[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < c->r.n_sentinels; i++) {
        char why[256], where[300];
        if (ask_sentinel(c, i, why, sizeof why) == 0)
            return 0;
        host_port(c->r.sentinel_hosts[i], c->r.sentinel_ports[i], where, sizeof where);
        int n = snprintf(whys + used, sizeof whys - used, "%s%s: %s", used ? "; " : "", where,
                         why);
        if (n > 0 && (size_t)n < sizeof whys - used)
            used += (size_t)n;
    }
    ctl_err("no Sentinel gave the address of master %s (%s)", c->r.master_name, whys);
    return -1;
}

/* A Sentinel may lag behind a failover: the server it named must be the
 * master, not a replica that was one. */
static int check_master(redisContext *rc, const char *where)
{
    redisReply *r = redisCommand(rc, "ROLE");
    bool has_role = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                    r->element[0]->type == REDIS_REPLY_STRING;
    const char *role = has_role ? r->element[0]->str : r == NULL ? conn_error(rc)
                     : r->type == REDIS_REPLY_ERROR ? r->str : "no role";
    bool master = has_role && strcmp(role, "master") == 0;
    if (!master)
        ctl_err("Redis at %s, named by Sentinel, is not the master (%s); a failover may be "
                "under way: try again", where, role);
    if (r)
        freeReplyObject(r);
    return master ? 0 : -1;
}

redisContext *ctl_redis(struct ctl *c)
{
    if (c->rc)
        return c->rc;
    if (c->r.n_sentinels > 0 && find_master(c) != 0)
        return NULL;
    char where[300];
    ctl_redis_where(c, where, sizeof where);
    redisContext *rc = redisConnectWithTimeout(c->r.host, c->r.port, tv_ms(CONNECT_TIMEOUT_MS));
    if (rc == NULL) {
        ctl_err("cannot connect to Redis at %s: out of memory", where);
        return NULL;
    }
    if (rc->err) {
        ctl_err("cannot connect to Redis at %s: %s", where, conn_error(rc));
        redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv_ms(REPLY_TIMEOUT_MS));
    if (c->r.password) {
        redisReply *r = c->r.user
            ? redisCommand(rc, "AUTH %s %s", c->r.user, c->r.password)
            : redisCommand(rc, "AUTH %s", c->r.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            ctl_err("Redis at %s refused the login%s%s: %s", where, c->r.user ? " as " : "",
                    c->r.user ? c->r.user : "", r ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(rc);
            return NULL;
        }
        freeReplyObject(r);
    }
    if (c->r.n_sentinels > 0 && check_master(rc, where) != 0) {
        redisFree(rc);
        return NULL;
    }
    if (c->r.db != 0) {
        redisReply *r = redisCommand(rc, "SELECT %d", c->r.db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            ctl_err("Redis at %s: SELECT %d failed: %s", where, c->r.db, r ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(rc);
            return NULL;
        }
        freeReplyObject(r);
    }
    c->rc = rc;
    return rc;
}

void ctl_redis_timeout(struct ctl *c, long ms)
{
    if (c->rc)
        redisSetTimeout(c->rc, tv_ms(ms));
}

redisReply *ctl_cmd(struct ctl *c, bool fail_on_err, int argc, const char **argv,
                    const size_t *lens)
{
    redisContext *rc = ctl_redis(c);
    if (rc == NULL)
        return NULL;
    redisReply *r = redisCommandArgv(rc, argc, argv, lens);
    if (r == NULL) {
        char where[300];
        const char *why = rc->errstr[0] ? rc->errstr : "connection lost";
        if (rc->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
            why = "no reply in time";
        ctl_err("Redis at %s: %s: %s", ctl_redis_where(c, where, sizeof where), argv[0], why);
        /* the connection is unusable after an I/O error */
        redisFree(c->rc);
        c->rc = NULL;
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR && fail_on_err) {
        ctl_err("Redis: %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* ---- keys and replies ------------------------------------------------------------ */

char *ctl_key(const struct ctl *c, const char *suffix)
{
    size_t n = strlen(c->prefix) + strlen(suffix) + 1;
    char *k = xmalloc(n);
    snprintf(k, n, "%s%s", c->prefix, suffix);
    return k;
}

char *ctl_key_tenant(const struct ctl *c, const char *tenant, const char *kind,
                     const char *id)
{
    size_t n = strlen(c->prefix) + strlen(tenant) + strlen(kind) + strlen(id) + 8;
    char *k = xmalloc(n);
    snprintf(k, n, "%s{%s}:%s:%s", c->prefix, tenant, kind, id);
    return k;
}

const redisReply *ctl_hash_get(const redisReply *h, const char *name)
{
    if (h == NULL || h->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i];
        if (k->type == REDIS_REPLY_STRING && strlen(name) == k->len &&
            memcmp(k->str, name, k->len) == 0)
            return h->element[i + 1];
    }
    return NULL;
}

const redisReply *ctl_entry_field(const redisReply *fields, const char *name)
{
    return ctl_hash_get(fields, name);
}

const char *ctl_entry_str(const redisReply *fields, const char *name)
{
    const redisReply *v = ctl_entry_field(fields, name);
    return v && v->type == REDIS_REPLY_STRING ? v->str : "";
}
