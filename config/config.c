/*
 * Configuration loading: libinih for the INI syntax, one key table for the
 * meaning.
 *
 * Debian's libinih 55 cuts lines longer than INI_MAX_LINE (200) silently and
 * gives its handler no line number. So we never let inih read the file:
 * config_load reads it into memory and feeds it through ini_parse_stream
 * with our own line reader, which
 *   - counts lines, so the handler knows where it is;
 *   - rejects a line that would not fit inih's buffer instead of cutting it;
 *   - strips leading blanks, which also turns off inih's multi-line values
 *     (an indented line is an ordinary line here);
 *   - checks section headers and key lines itself, so every syntax error gets
 *     a precise message, and ends the parse at the first error.
 * inih still does the splitting of "key = value", trimming and inline
 * " ;" comments.
 *
 * The table `keys` lists every key once: section, name, type, field offset,
 * default, reload flag, description. The handler looks keys up there,
 * defaults are applied from it, config_reload_check compares fields through
 * it and config_dump_keys prints it for the documentation check.
 */
#include "config/config.h"

#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_FILE_MAX (1u << 20)      /* a config file over 1 MiB is a mistake */
#define SERVICE_ACCOUNT_MAX (1u << 20)

enum ksect {
    SEC_NONE = -1, SEC_DAEMON, SEC_REDIS, SEC_TLS, SEC_DELIVERY, SEC_ADMIN,
    SEC_APP,     /* [app NAME] */
    SEC_TENANT,  /* [tenant NAME] */
};

static const char *const sect_names[] = { "daemon", "redis", "tls", "delivery", "admin",
                                          "app", "tenant" };

/* Sections that carry a name and exist once per name. */
static bool named_sect(int s)
{
    return s == SEC_APP || s == SEC_TENANT;
}

enum ktype {
    K_STRING,    /* length min..max; extra: NULL, "alnum" */
    K_INT,       /* min..max; extra: unit for messages ("milliseconds") */
    K_BOOL,      /* true/false, yes/no, on/off, 1/0 */
    K_ENUM,      /* extra: "a|b|c", stored as the int index */
    K_URL,       /* http(s) URL, see config_url_parse */
    K_REDIS_URL, /* redis://..., also fills host, port, user, password, db */
    K_FILE,      /* path of a readable file, resolved against the config dir */
    K_DIR,       /* path of a directory, resolved against the config dir */
    K_LISTEN,    /* "IPv4:port", "[IPv6]:port", "off" or empty; fills config_admin */
    K_TZ,        /* an IANA time zone name found under /usr/share/zoneinfo */
    K_HHMM,      /* a local time "HH:MM", stored as int64 minutes after midnight */
    K_ADDRS,     /* "ip:port,[ip6]:port,..." (IP literals); fills the sentinel arrays */
};

static const char *const type_names[] = { "string", "int", "bool", "enum", "url",
                                          "redis-url", "file", "dir", "listen", "timezone",
                                          "HH:MM", "addresses" };

struct key {
    enum ksect sect;
    const char *name;
    enum ktype type;
    size_t off;          /* into struct config, or struct config_app for SEC_APP */
    const char *def;     /* value text applied when the key is absent; NULL: none */
    const char *def_doc; /* default as documented when |def| is NULL (computed) */
    bool reload;         /* may change on SIGHUP without a restart */
    int64_t min, max;    /* K_INT range; K_STRING length */
    const char *extra;   /* see enum ktype */
    const char *desc;
};

#define G(field) offsetof(struct config, field)
#define A(field) offsetof(struct config_app, field)
#define T(field) offsetof(struct config_tenant, field)
#define I64MAX INT64_MAX

static const struct key keys[] = {
    /* [daemon] */
    { SEC_DAEMON, "log_level", K_ENUM, G(daemon.log_level), "info", NULL, true, 0, 0,
      "error|warn|info|debug", "least important level that is logged" },
    { SEC_DAEMON, "log_format", K_ENUM, G(daemon.log_format), "text", NULL, true, 0, 0,
      "text|json", "log lines as text or as one JSON object per line" },
    { SEC_DAEMON, "templates_dir", K_DIR, G(daemon.templates_dir), NULL,
      "templates/ beside the config file if it exists, else config/templates", false, 0, 0,
      NULL, "directory with the nb/nn/en notification templates" },
    { SEC_DAEMON, "shutdown_timeout_ms", K_INT, G(daemon.shutdown_timeout_ms), "10000", NULL,
      false, 0, 3600000, "milliseconds", "on SIGTERM, how long in-flight deliveries may finish" },
    { SEC_DAEMON, "token_max_age_days", K_INT, G(daemon.token_max_age_days), "270", NULL,
      false, 0, 3650, "days",
      "devices not registered again for this long are removed (0 = never)" },

    /* [redis] */
    { SEC_REDIS, "url", K_REDIS_URL, G(redis.url), "redis://127.0.0.1:6379/0", NULL, false, 0,
      0, NULL, "redis://[user:password@]host:port[/db]; host may be a name, IPv4 or [IPv6]" },
    { SEC_REDIS, "stream", K_STRING, G(redis.stream), "varsel:events", NULL, false, 1, 512,
      NULL, "stream the events are read from (used as written, no prefix)" },
    { SEC_REDIS, "streams", K_STRING, G(redis.streams), NULL, "the value of stream", false,
      1, 4096, NULL,
      "several event streams, comma-separated (e.g. one per region); replaces stream" },
    { SEC_REDIS, "urgent_stream", K_STRING, G(redis.urgent_stream), "varsel:urgent", NULL,
      false, 0, 512, NULL,
      "stream of urgent events, read on its own connection ahead of all bulk work; empty = none" },
    { SEC_REDIS, "group", K_STRING, G(redis.group), "varsel", NULL, false, 1, 256, NULL,
      "consumer group shared by all varseld processes" },
    { SEC_REDIS, "consumer", K_STRING, G(redis.consumer), NULL, "the host name", false, 1,
      256, NULL, "consumer name of this process within the group (unique per process)" },
    { SEC_REDIS, "claim_idle_ms", K_INT, G(redis.claim_idle_ms), "30000", NULL, false, 1000,
      86400000, "milliseconds", "take over pending entries of other consumers idle this long" },
    { SEC_REDIS, "prefix", K_STRING, G(redis.prefix), "varsel:", NULL, false, 0, 256, NULL,
      "put before every key the daemon writes" },
    { SEC_REDIS, "batch_size", K_INT, G(redis.batch_size), "100", NULL, false, 1, 10000,
      NULL, "entries read per XREADGROUP" },
    { SEC_REDIS, "block_ms", K_INT, G(redis.block_ms), "2000", NULL, false, 1, 300000,
      "milliseconds", "XREADGROUP BLOCK time when the stream is empty" },
    { SEC_REDIS, "status_ttl_s", K_INT, G(redis.status_ttl_s), "604800", NULL, false, 60,
      31536000, "seconds", "lifetime of the per-event status hashes" },
    { SEC_REDIS, "receipts_maxlen", K_INT, G(redis.receipts_maxlen), "1000000", NULL, false,
      100, 1000000000, NULL, "approximate cap (MAXLEN ~) of the receipts stream" },
    { SEC_REDIS, "dead_maxlen", K_INT, G(redis.dead_maxlen), "100000", NULL, false, 100,
      1000000000, NULL, "approximate cap (MAXLEN ~) of the dead-letter stream" },
    { SEC_REDIS, "dead_payload_ttl_s", K_INT, G(redis.dead_payload_ttl_s), "604800", NULL,
      false, 0, 31536000, "seconds",
      "how long the original of a dead letter (which may hold names and text) is kept "
      "for replay; the dead letter itself holds ids only; 0 = not kept" },
    { SEC_REDIS, "escalations_maxlen", K_INT, G(redis.escalations_maxlen), "100000", NULL,
      false, 100, 1000000000, NULL, "approximate cap (MAXLEN ~) of the escalations stream" },
    { SEC_REDIS, "trim_interval_ms", K_INT, G(redis.trim_interval_ms), "10000", NULL,
      false, 0, 86400000, "milliseconds",
      "how often the events stream is trimmed below what every group still needs; 0 = never" },
    { SEC_REDIS, "sentinels", K_ADDRS, G(redis.sentinels), NULL, "none", false, 0, 0, NULL,
      "Sentinel addresses (ip:port, [ipv6]:port, comma-separated): find and follow the master "
      "through them instead of url's host and port" },
    { SEC_REDIS, "master_name", K_STRING, G(redis.master_name), NULL, "none", false, 1, 256,
      NULL, "name of the master in Sentinel (sentinel monitor NAME ...); needs sentinels" },
    { SEC_REDIS, "sentinel_password", K_STRING, G(redis.sentinel_password), NULL, "none",
      false, 1, 512, "visible", "password of the Sentinels (their requirepass)" },
    { SEC_REDIS, "wait_replicas", K_INT, G(redis.wait_replicas), "0", NULL, false, 0, 16, NULL,
      "before XACK, WAIT until this many replicas have the entry's writes; 0 = no WAIT" },
    { SEC_REDIS, "wait_timeout_ms", K_INT, G(redis.wait_timeout_ms), "1000", NULL, false, 10,
      10000, "milliseconds", "how long one WAIT may take; fewer replicas by then: no XACK yet" },
    { SEC_REDIS, "consumer_gone_ms", K_INT, G(redis.consumer_gone_ms), "86400000", NULL, false,
      0, 2592000000, "milliseconds",
      "remove other consumers idle this long with nothing pending and no live process; 0 = never" },

    /* [tls] */
    { SEC_TLS, "ca_file", K_FILE, G(tls.ca_file), NULL, "none", false, 0, 0, NULL,
      "PEM file of extra trusted CAs, added to the system store" },

    /* [delivery] */
    { SEC_DELIVERY, "inflight_window", K_INT, G(delivery.inflight_window), "2000", NULL,
      false, 1, 1000000, NULL, "deliveries in flight at most (the back-pressure window)" },
    { SEC_DELIVERY, "request_timeout_ms", K_INT, G(delivery.request_timeout_ms), "30000",
      NULL, false, 100, 600000, "milliseconds",
      "time allowed for one provider request, from sending to the answer" },
    { SEC_DELIVERY, "retry_base_ms", K_INT, G(delivery.retry_base_ms), "2000", NULL, false,
      10, 3600000, "milliseconds",
      "first backoff step of a transient failure (full jitter, doubling per attempt)" },
    { SEC_DELIVERY, "retry_max_delay_ms", K_INT, G(delivery.retry_max_delay_ms), "600000",
      NULL, false, 100, 86400000, "milliseconds",
      "largest backoff step; a provider's Retry-After is honoured above it" },
    { SEC_DELIVERY, "retry_lease_ms", K_INT, G(delivery.retry_lease_ms), "120000", NULL,
      false, 1000, 3600000, "milliseconds",
      "how long a claimed retry belongs to one process before another may take it" },

    /* [admin] */
    { SEC_ADMIN, "listen", K_LISTEN, G(admin.listen), "127.0.0.1:9470", NULL, false, 0, 0, NULL,
      "address of the admin HTTP server (IPv4:port or [IPv6]:port); off or empty: none" },
    { SEC_ADMIN, "token", K_STRING, G(admin.token), NULL, "none", false, 16, 256, "visible",
      "bearer token required by every admin endpoint but /healthz and /metrics" },

    /* [tenant NAME] */
    { SEC_TENANT, "default_locale", K_ENUM, T(default_locale), "nb", NULL, true, 0, 0,
      "nb|nn|en", "language of devices that registered no locale" },
    { SEC_TENANT, "message_preview", K_BOOL, T(message_preview), "off", NULL, true, 0, 0,
      NULL, "message.new shows the message preview on the lock screen" },
    { SEC_TENANT, "timezone", K_TZ, T(timezone), "Europe/Oslo", NULL, true, 0, 0, NULL,
      "time zone of quiet hours and of the school day" },
    { SEC_TENANT, "school_day_end", K_HHMM, T(school_day_end_min), "16:00", NULL, true, 0, 0,
      NULL, "absence.alert notifications expire at this local time on the absence's date" },
    { SEC_TENANT, "escalate_after_s", K_INT, T(escalate_after_s), "300", NULL, true, 10,
      86400, "seconds",
      "an absence.alert that reached no device by then is written to the escalations stream" },

    /* [app NAME] */
    { SEC_APP, "apns_topic", K_STRING, A(apns_topic), NULL, "none", false, 1, 255, NULL,
      "APNs topic: the app's bundle id" },
    { SEC_APP, "apns_team_id", K_STRING, A(apns_team_id), NULL, "none", true, 10, 10,
      "alnum", "Apple developer team id (10 characters), the JWT iss" },
    { SEC_APP, "apns_key_id", K_STRING, A(apns_key_id), NULL, "none", true, 10, 10, "alnum",
      "id of the APNs auth key (10 characters), the JWT kid" },
    { SEC_APP, "apns_key_file", K_FILE, A(apns_key_file), NULL, "none", true, 0, 0, NULL,
      "the APNs auth key (.p8, PKCS#8 EC P-256)" },
    { SEC_APP, "apns_url", K_URL, A(apns_url), "https://api.push.apple.com", NULL, false, 0, 0,
      NULL, "APNs endpoint for production tokens" },
    { SEC_APP, "apns_sandbox_url", K_URL, A(apns_sandbox_url),
      "https://api.sandbox.push.apple.com", NULL, false, 0, 0, NULL,
      "APNs endpoint for development tokens (environment sandbox)" },
    { SEC_APP, "apns_max_connections", K_INT, A(apns_max_connections), "2", NULL, false, 1,
      64, NULL, "HTTP/2 connections to APNs per endpoint" },
    { SEC_APP, "fcm_service_account_file", K_FILE, A(fcm_service_account_file), NULL, "none",
      true, 0, 0, NULL, "Google service-account JSON key for FCM" },
    { SEC_APP, "fcm_project_id", K_STRING, A(fcm_project_id), NULL,
      "project_id from the service-account file", false, 1, 255, NULL,
      "Firebase project id" },
    { SEC_APP, "fcm_url", K_URL, A(fcm_url), "https://fcm.googleapis.com", NULL, false, 0, 0,
      NULL, "FCM HTTP v1 endpoint" },
    { SEC_APP, "fcm_token_url", K_URL, A(fcm_token_url), NULL,
      "token_uri from the service-account file", false, 0, 0, NULL,
      "OAuth2 token endpoint" },
    { SEC_APP, "fcm_max_connections", K_INT, A(fcm_max_connections), "4", NULL, false, 1, 64,
      NULL, "HTTP/2 connections to FCM" },
    { SEC_APP, "retry_max_attempts", K_INT, A(retry_max_attempts), "8", NULL, false, 1, 100,
      NULL, "attempts per delivery (the first included) before it is dead-lettered" },
};

#define N_KEYS (sizeof keys / sizeof keys[0])
#define MAX_KEYS 64
_Static_assert(N_KEYS <= MAX_KEYS, "raise MAX_KEYS");

/* The APNs keys that must be given together. */
static const char *const apns_group[] = { "apns_topic", "apns_team_id", "apns_key_id",
                                          "apns_key_file" };

/* Per named section parse bookkeeping: where each key was set (0 = not set). */
struct app_seen {
    int line[MAX_KEYS];
};

const char *const config_locales[3] = { "nb", "nn", "en" };

struct pstate {
    struct config *cfg;
    const char *buf;       /* whole file */
    size_t len, pos;       /* size and read position */
    int line;              /* line most recently handed to inih */
    int sect;              /* enum ksect of the current section */
    size_t app;            /* current app or tenant index when named_sect(sect) */
    int seen[MAX_KEYS];    /* line each global key was set on, 0 = not set */
    struct app_seen *app_seen; /* parallel to cfg->apps */
    size_t apps_cap;
    struct app_seen *tenant_seen; /* parallel to cfg->tenants */
    size_t tenants_cap;
    bool failed;
    char *err;
    size_t errlen;
};

/* ---- errors ------------------------------------------------------------ */

static void perr(struct pstate *ps, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error as "FILE:LINE: message" (or "FILE: message"). */
static void perr(struct pstate *ps, int line, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    if (ps->err == NULL || ps->errlen == 0)
        return;
    int n = line > 0 ? snprintf(ps->err, ps->errlen, "%s:%d: ", ps->cfg->path, line)
                     : snprintf(ps->err, ps->errlen, "%s: ", ps->cfg->path);
    if (n < 0 || (size_t)n >= ps->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* "redis" or "app demo", for messages. */
static const char *sect_label(const struct pstate *ps, int sect, size_t app, char *buf,
                              size_t buflen)
{
    if (sect == SEC_APP)
        snprintf(buf, buflen, "app %s", ps->cfg->apps[app].name);
    else if (sect == SEC_TENANT)
        snprintf(buf, buflen, "tenant %s", ps->cfg->tenants[app].name);
    else if (sect >= 0)
        snprintf(buf, buflen, "%s", sect_names[sect]);
    else
        snprintf(buf, buflen, "(none)");
    return buf;
}

/* Copy at most 80 bytes of a value for an error message. */
static const char *shown(const char *v, char out[96])
{
    size_t i = 0;
    for (; v[i] != '\0' && i < 80; i++)
        out[i] = ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
    if (v[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

/* ---- URLs -------------------------------------------------------------- */

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

/*
 * Parse "host[:port]" or "[v6][:port]" in [s, s+n) into |host| and |*port|
 * (left unchanged when absent). Returns 0 or -1.
 */
static int parse_hostport(const char *s, size_t n, char *host, size_t hostlen, int *port)
{
    const char *hend, *p;
    const char *end = s + n;
    if (n == 0)
        return -1;
    if (s[0] == '[') {
        hend = memchr(s, ']', n);
        if (hend == NULL || hend == s + 1)
            return -1;
        for (const char *q = s + 1; q < hend; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                  (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.'))
                return -1;
        if ((size_t)(hend - s - 1) >= hostlen)
            return -1;
        memcpy(host, s + 1, (size_t)(hend - s - 1));
        host[hend - s - 1] = '\0';
        p = hend + 1;
    } else {
        hend = s;
        while (hend < end && *hend != ':')
            hend++;
        if (hend == s || (size_t)(hend - s) >= hostlen)
            return -1;
        for (const char *q = s; q < hend; q++)
            if (!host_char(*q))
                return -1;
        memcpy(host, s, (size_t)(hend - s));
        host[hend - s] = '\0';
        p = hend;
    }
    if (p == end)
        return 0;
    if (*p != ':' || p + 1 == end || end - p > 6)
        return -1;
    int v = 0;
    for (p++; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

int config_url_parse(const char *url, struct config_url *out)
{
    memset(out, 0, sizeof *out);
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        out->tls = true;
        out->port = 443;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        out->port = 80;
        p = url + 7;
    } else {
        return -1;
    }
    if (strpbrk(p, "?#@ \t") != NULL)
        return -1;
    const char *slash = strchr(p, '/');
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    if (parse_hostport(p, alen, out->host, sizeof out->host, &out->port) != 0)
        return -1;
    if (slash != NULL) {
        size_t plen = strlen(slash);
        while (plen > 0 && slash[plen - 1] == '/')
            plen--;
        if (plen >= sizeof out->path)
            return -1;
        memcpy(out->path, slash, plen);
        out->path[plen] = '\0';
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode [s, s+n) into a new string; NULL on a bad escape or NUL. */
static char *pct_decode(const char *s, size_t n)
{
    char *o = xmalloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (n - i < 3) {
                free(o);
                return NULL;
            }
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                free(o);
                return NULL;
            }
            o[j++] = (char)(a << 4 | b);
            i += 2;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

/*
 * Parse a Redis URL into the redis section. Returns 0, or -1 with a reason
 * (which never repeats the password) in |why|.
 */
static int parse_redis_url(const char *url, struct config_redis *r, char *why, size_t whylen)
{
    char host[256];
    int port = 6379, db = 0;
    char *user = NULL, *pass = NULL;

    if (strncasecmp(url, "rediss://", 9) == 0) {
        snprintf(why, whylen, "TLS (rediss://) is not supported (hiredis 0.14 has no TLS)");
        return -1;
    }
    if (strncasecmp(url, "redis://", 8) != 0) {
        snprintf(why, whylen, "expected redis://[user:password@]host:port[/db]");
        return -1;
    }
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < p + alen; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            snprintf(why, whylen, "user info must be user:password@ or :password@");
            return -1;
        }
        if (colon > p && (user = pct_decode(p, (size_t)(colon - p))) == NULL) {
            snprintf(why, whylen, "bad %%-escape in the user name");
            return -1;
        }
        if (at == colon + 1 || (pass = pct_decode(colon + 1, (size_t)(at - colon - 1))) == NULL) {
            snprintf(why, whylen, at == colon + 1 ? "empty password" : "bad %%-escape in the password");
            free(user);
            return -1;
        }
        alen -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (parse_hostport(p, alen, host, sizeof host, &port) != 0) {
        snprintf(why, whylen, "bad host or port (expected host:port, IPv6 as [addr]:port)");
        goto fail;
    }
    if (slash != NULL && slash[1] != '\0') {
        const char *d = slash + 1;
        if (strlen(d) > 5 || strspn(d, "0123456789") != strlen(d)) {
            snprintf(why, whylen, "database must be a number 0..65535 after the '/'");
            goto fail;
        }
        db = atoi(d);
        if (db > 65535) {
            snprintf(why, whylen, "database must be a number 0..65535 after the '/'");
            goto fail;
        }
    }
    free(r->host);
    free(r->user);
    free(r->password);
    r->host = xstrdup(host);
    r->port = port;
    r->user = user;
    r->password = pass;
    r->db = db;
    return 0;
fail:
    free(user);
    free(pass);
    return -1;
}

/*
 * Parse an [admin] listen value into |a|: "off" or "" disable the server;
 * otherwise an IP literal and a port, "127.0.0.1:9470" or "[::1]:9470" (no
 * host names: the address is bound as written). Returns 0 or -1.
 */
static int parse_listen(const char *v, struct config_admin *a)
{
    a->enabled = false;
    a->loopback = false;
    a->host[0] = '\0';
    a->port = 0;
    if (v[0] == '\0' || strcasecmp(v, "off") == 0)
        return 0;
    char host[sizeof a->host];
    int port = 0;
    if (parse_hostport(v, strlen(v), host, sizeof host, &port) != 0 || port == 0)
        return -1;
    unsigned char bin[16];
    if (v[0] == '[') {
        if (inet_pton(AF_INET6, host, bin) != 1)
            return -1;
        static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        a->loopback = memcmp(bin, &in6addr_loopback, 16) == 0 ||
                      (memcmp(bin, v4mapped, 12) == 0 && bin[12] == 127);
    } else {
        if (inet_pton(AF_INET, host, bin) != 1)
            return -1;
        a->loopback = bin[0] == 127;
    }
    memcpy(a->host, host, sizeof host);
    a->port = port;
    a->enabled = true;
    return 0;
}

static void free_sentinels(struct config_redis *r)
{
    for (size_t i = 0; i < r->n_sentinels; i++)
        free(r->sentinel_hosts[i]);
    free(r->sentinel_hosts);
    free(r->sentinel_ports);
    r->sentinel_hosts = NULL;
    r->sentinel_ports = NULL;
    r->n_sentinels = 0;
}

/*
 * Parse "ip:port, [ip6]:port, ..." into the Sentinel arrays of |r|. The
 * port defaults to 26379. Addresses must be IP literals: hiredis would
 * resolve a name with a blocking getaddrinfo. Returns 0, or -1 with a
 * reason in |why|.
 */
static int parse_addrs(const char *v, struct config_redis *r, char *why, size_t whylen)
{
    char **hosts = xcalloc(CONFIG_SENTINELS_MAX, sizeof *hosts);
    int *ports = xcalloc(CONFIG_SENTINELS_MAX, sizeof *ports);
    size_t n = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = p + strcspn(p, ",");
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        char host[64];
        int port = 26379;
        unsigned char bin[16];
        if (e == p) {
            snprintf(why, whylen, "empty address in the list");
            goto fail;
        }
        if (n == CONFIG_SENTINELS_MAX) {
            snprintf(why, whylen, "at most %d addresses", CONFIG_SENTINELS_MAX);
            goto fail;
        }
        if (parse_hostport(p, (size_t)(e - p), host, sizeof host, &port) != 0 ||
            inet_pton(p[0] == '[' ? AF_INET6 : AF_INET, host, bin) != 1) {
            snprintf(why, whylen, "address %zu: expected ip:port or [ipv6]:port (IP literals; "
                     "host names are not resolved)", n + 1);
            goto fail;
        }
        hosts[n] = xstrdup(host);
        ports[n++] = port;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    free_sentinels(r);
    r->sentinel_hosts = hosts;
    r->sentinel_ports = ports;
    r->n_sentinels = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free(hosts[i]);
    free(hosts);
    free(ports);
    return -1;
}

/* ---- values ------------------------------------------------------------ */

static void *field_ptr(void *base, const struct key *k)
{
    return (char *)base + k->off;
}

/* |v| resolved against the config directory, newly allocated. */
static char *resolve_path(const struct config *cfg, const char *v)
{
    if (v[0] == '/')
        return xstrdup(v);
    size_t n = strlen(cfg->dir) + strlen(v) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", cfg->dir, v);
    return p;
}

static void set_string(void *base, const struct key *k, char *v)
{
    char **dst = field_ptr(base, k);
    free(*dst);
    *dst = v;
}

/*
 * Parse |value| for key |k| into the struct at |base|. |line| and |label|
 * are for messages. Returns 0, or -1 after perr().
 */
static int set_value(struct pstate *ps, const struct key *k, void *base, const char *value,
                     int line, const char *label)
{
    char sh[96], why[160];
    size_t vlen = strlen(value);

    if (vlen == 0 && !((k->type == K_STRING || k->type == K_LISTEN) && k->min == 0)) {
        perr(ps, line, "[%s] %s: empty value (comment the line out to use the default)",
             label, k->name);
        return -1;
    }
    switch (k->type) {
    case K_STRING:
        if ((int64_t)vlen < k->min || (int64_t)vlen > k->max) {
            if (k->min == k->max)
                perr(ps, line, "[%s] %s: expected exactly %lld characters, got \"%s\"", label,
                     k->name, (long long)k->min, shown(value, sh));
            else
                perr(ps, line, "[%s] %s: expected %lld..%lld characters, got %zu", label,
                     k->name, (long long)k->min, (long long)k->max, vlen);
            return -1;
        }
        for (size_t i = 0; i < vlen; i++) {
            unsigned char c = (unsigned char)value[i];
            bool alnum = k->extra && strcmp(k->extra, "alnum") == 0;
            bool visible = k->extra && strcmp(k->extra, "visible") == 0;
            bool ok = alnum ? (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
                                  (c >= 'a' && c <= 'z')
                      : visible ? c > 0x20 && c < 0x7f
                                : c > 0x20 && c != 0x7f;
            if (!ok) {
                /* A secret (visible-only) is never echoed. */
                if (visible)
                    perr(ps, line, "[%s] %s: expected printable ASCII without spaces", label,
                         k->name);
                else
                    perr(ps, line, "[%s] %s: %s, got \"%s\"", label, k->name,
                         alnum ? "expected letters and digits only"
                               : "must not contain spaces or control characters",
                         shown(value, sh));
                return -1;
            }
        }
        set_string(base, k, xstrdup(value));
        return 0;
    case K_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        bool digits_only = strspn(value + (value[0] == '-'), "0123456789") ==
                               vlen - (value[0] == '-') && vlen > (size_t)(value[0] == '-');
        if (!digits_only || end == value || *end != '\0') {
            perr(ps, line, "[%s] %s: expected a whole number%s%s, got \"%s\"", label, k->name,
                 k->extra ? " of " : "", k->extra ? k->extra : "", shown(value, sh));
            return -1;
        }
        if (errno == ERANGE || v < k->min || v > k->max) {
            perr(ps, line, "[%s] %s: must be between %lld and %lld, got %s", label, k->name,
                 (long long)k->min, (long long)k->max, shown(value, sh));
            return -1;
        }
        *(int64_t *)field_ptr(base, k) = (int64_t)v;
        return 0;
    }
    case K_BOOL: {
        static const char *const yes[] = { "true", "yes", "on", "1" };
        static const char *const no[] = { "false", "no", "off", "0" };
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(bool *)field_ptr(base, k) = strcasecmp(value, yes[i]) == 0;
                return 0;
            }
        }
        perr(ps, line, "[%s] %s: expected true or false, got \"%s\"", label, k->name,
             shown(value, sh));
        return -1;
    }
    case K_ENUM: {
        int idx = 0;
        for (const char *c = k->extra; *c; idx++) {
            size_t n = strcspn(c, "|");
            if (n == vlen && strncmp(c, value, n) == 0) {
                *(int *)field_ptr(base, k) = idx;
                return 0;
            }
            c += n;
            if (*c == '|')
                c++;
        }
        char choices[128];
        snprintf(choices, sizeof choices, "%s", k->extra);
        for (char *c = choices; *c; c++)
            if (*c == '|')
                *c = '/';
        perr(ps, line, "[%s] %s: expected one of %s, got \"%s\"", label, k->name, choices,
             shown(value, sh));
        return -1;
    }
    case K_URL: {
        struct config_url u;
        if (config_url_parse(value, &u) != 0) {
            perr(ps, line, "[%s] %s: expected an https:// or http:// URL "
                 "(scheme://host[:port][/path]), got \"%s\"", label, k->name, shown(value, sh));
            return -1;
        }
        set_string(base, k, xstrdup(value));
        return 0;
    }
    case K_REDIS_URL:
        /* The URL may hold a password: never echo it. */
        if (parse_redis_url(value, &ps->cfg->redis, why, sizeof why) != 0) {
            perr(ps, line, "[%s] %s: %s", label, k->name, why);
            return -1;
        }
        set_string(base, k, xstrdup(value));
        return 0;
    case K_ADDRS:
        if (parse_addrs(value, &ps->cfg->redis, why, sizeof why) != 0) {
            perr(ps, line, "[%s] %s: %s", label, k->name, why);
            return -1;
        }
        set_string(base, k, xstrdup(value));
        return 0;
    case K_LISTEN:
        if (parse_listen(value, &ps->cfg->admin) != 0) {
            perr(ps, line, "[%s] %s: expected IPv4:port, [IPv6]:port or off, got \"%s\"",
                 label, k->name, shown(value, sh));
            return -1;
        }
        set_string(base, k, xstrdup(value));
        return 0;
    case K_TZ: {
        /* The zone must exist in the tz database the C library reads. */
        bool ok = vlen <= 64 && value[0] != '/' && strstr(value, "..") == NULL &&
                  strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                "0123456789/_+-") == vlen;
        if (ok) {
            char path[128];
            snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", value);
            struct stat st;
            ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        }
        if (!ok) {
            perr(ps, line, "[%s] %s: unknown time zone \"%s\" (expected a name such as "
                 "Europe/Oslo from /usr/share/zoneinfo)", label, k->name, shown(value, sh));
            return -1;
        }
        set_string(base, k, xstrdup(value));
        return 0;
    }
    case K_HHMM: {
        int hh = -1, mm = -1;
        if (vlen != 5 || value[2] != ':' || sscanf(value, "%2d:%2d", &hh, &mm) != 2 ||
            strspn(value, "0123456789:") != 5 || hh < 0 || hh > 23 || mm < 0 || mm > 59) {
            perr(ps, line, "[%s] %s: expected a time HH:MM (00:00..23:59), got \"%s\"", label,
                 k->name, shown(value, sh));
            return -1;
        }
        *(int64_t *)field_ptr(base, k) = hh * 60 + mm;
        return 0;
    }
    case K_FILE:
    case K_DIR: {
        char *path = resolve_path(ps->cfg, value);
        struct stat st;
        const char *problem = NULL;
        if (stat(path, &st) != 0)
            problem = strerror(errno);
        else if (k->type == K_DIR && !S_ISDIR(st.st_mode))
            problem = "not a directory";
        else if (k->type == K_FILE && !S_ISREG(st.st_mode))
            problem = "not a regular file";
        else if (access(path, k->type == K_DIR ? (R_OK | X_OK) : R_OK) != 0)
            problem = strerror(errno);
        if (problem != NULL) {
            perr(ps, line, "[%s] %s: cannot use \"%s\": %s", label, k->name, shown(path, sh),
                 problem);
            free(path);
            return -1;
        }
        set_string(base, k, path);
        return 0;
    }
    }
    return -1;
}

/* ---- sections and the inih callbacks ----------------------------------- */

static bool valid_app_name(const char *s, size_t n)
{
    if (n == 0 || n > CONFIG_APP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Find or add the app |name|; returns its index. */
static size_t app_index(struct pstate *ps, const char *name, size_t n, int line)
{
    struct config *cfg = ps->cfg;
    for (size_t i = 0; i < cfg->n_apps; i++)
        if (strlen(cfg->apps[i].name) == n && memcmp(cfg->apps[i].name, name, n) == 0)
            return i;
    if (cfg->n_apps == ps->apps_cap) {
        ps->apps_cap = ps->apps_cap ? ps->apps_cap * 2 : 4;
        cfg->apps = xrealloc(cfg->apps, ps->apps_cap * sizeof *cfg->apps);
        ps->app_seen = xrealloc(ps->app_seen, ps->apps_cap * sizeof *ps->app_seen);
    }
    struct config_app *a = &cfg->apps[cfg->n_apps];
    memset(a, 0, sizeof *a);
    memset(&ps->app_seen[cfg->n_apps], 0, sizeof ps->app_seen[0]);
    a->name = xstrndup(name, n);
    a->line = line;
    return cfg->n_apps++;
}

/* Find or add the tenant |name|; returns its index. */
static size_t tenant_index(struct pstate *ps, const char *name, size_t n, int line)
{
    struct config *cfg = ps->cfg;
    for (size_t i = 0; i < cfg->n_tenants; i++)
        if (strlen(cfg->tenants[i].name) == n && memcmp(cfg->tenants[i].name, name, n) == 0)
            return i;
    if (cfg->n_tenants == ps->tenants_cap) {
        ps->tenants_cap = ps->tenants_cap ? ps->tenants_cap * 2 : 4;
        cfg->tenants = xrealloc(cfg->tenants, ps->tenants_cap * sizeof *cfg->tenants);
        ps->tenant_seen = xrealloc(ps->tenant_seen, ps->tenants_cap * sizeof *ps->tenant_seen);
    }
    struct config_tenant *t = &cfg->tenants[cfg->n_tenants];
    memset(t, 0, sizeof *t);
    memset(&ps->tenant_seen[cfg->n_tenants], 0, sizeof ps->tenant_seen[0]);
    t->name = xstrndup(name, n);
    t->line = line;
    return cfg->n_tenants++;
}

/* A tenant slug as events carry it: [a-z0-9][a-z0-9_-]{0,63}. */
static bool valid_tenant_name(const char *s, size_t n)
{
    if (n == 0 || n > CONFIG_TENANT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '-'));
        if (!ok)
            return false;
    }
    return true;
}

/* Handle a "[...]" line (already left-stripped, |n| bytes). */
static void section_line(struct pstate *ps, const char *s, size_t n)
{
    const char *close = memchr(s, ']', n);
    if (close == NULL) {
        perr(ps, ps->line, "expected ']' to close the section header");
        return;
    }
    const char *rest = close + 1, *end = s + n;
    while (rest < end && (*rest == ' ' || *rest == '\t'))
        rest++;
    if (rest < end && *rest != ';' && *rest != '#') {
        perr(ps, ps->line, "unexpected text after the section header");
        return;
    }
    const char *a = s + 1, *b = close;
    while (a < b && (*a == ' ' || *a == '\t'))
        a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
        b--;
    size_t len = (size_t)(b - a);
    for (int i = SEC_DAEMON; i < SEC_APP; i++) {
        if (strlen(sect_names[i]) == len && memcmp(a, sect_names[i], len) == 0) {
            ps->sect = i;
            return;
        }
    }
    if (len > 4 && memcmp(a, "app", 3) == 0 && (a[3] == ' ' || a[3] == '\t')) {
        const char *nm = a + 4;
        while (nm < b && (*nm == ' ' || *nm == '\t'))
            nm++;
        if (!valid_app_name(nm, (size_t)(b - nm))) {
            perr(ps, ps->line, "[%.*s]: app name must match [A-Za-z0-9._-]{1,%d}",
                 (int)(len > 80 ? 80 : len), a, CONFIG_APP_NAME_MAX);
            return;
        }
        ps->sect = SEC_APP;
        ps->app = app_index(ps, nm, (size_t)(b - nm), ps->line);
        return;
    }
    if (len == 3 && memcmp(a, "app", 3) == 0) {
        perr(ps, ps->line, "[app] needs a name: [app NAME]");
        return;
    }
    if (len > 7 && memcmp(a, "tenant", 6) == 0 && (a[6] == ' ' || a[6] == '\t')) {
        const char *nm = a + 7;
        while (nm < b && (*nm == ' ' || *nm == '\t'))
            nm++;
        if (!valid_tenant_name(nm, (size_t)(b - nm))) {
            perr(ps, ps->line, "[%.*s]: tenant name must match [a-z0-9][a-z0-9_-]{0,%d} "
                 "(the events' tenant slug)", (int)(len > 80 ? 80 : len), a,
                 CONFIG_TENANT_NAME_MAX - 1);
            return;
        }
        ps->sect = SEC_TENANT;
        ps->app = tenant_index(ps, nm, (size_t)(b - nm), ps->line);
        return;
    }
    if (len == 6 && memcmp(a, "tenant", 6) == 0) {
        perr(ps, ps->line, "[tenant] needs a name: [tenant NAME]");
        return;
    }
    perr(ps, ps->line, "unknown section [%.*s] (expected daemon, redis, tls, delivery, admin, "
         "app NAME or tenant NAME)", (int)(len > 80 ? 80 : len), a);
}

/* True when a "key = value" line has a separator inih will find. */
static bool has_separator(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' || s[i] == ':')
            return true;
        if (s[i] == ';' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
            return false;
    }
    return false;
}

/*
 * inih's line source: hands out one line at a time (see the comment at the
 * top). Returns NULL at the end of the buffer or after an error, which ends
 * ini_parse_stream.
 */
static char *line_reader(char *str, int num, void *stream)
{
    struct pstate *ps = stream;
    if (ps->failed || ps->pos >= ps->len)
        return NULL;
    const char *s = ps->buf + ps->pos;
    size_t left = ps->len - ps->pos;
    const char *nl = memchr(s, '\n', left);
    size_t n = nl ? (size_t)(nl - s) : left;
    ps->pos += n + (nl ? 1 : 0);
    ps->line++;
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (ps->line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        n -= 3;
    }
    if (memchr(s, '\0', n) != NULL) {
        perr(ps, ps->line, "NUL byte in the line");
        return NULL;
    }
    /* inih needs room for "\r\n\0" after the text. */
    if (num < 4 || n > (size_t)num - 3) {
        perr(ps, ps->line, "line is %zu characters long; at most %d are allowed", n,
             num < 4 ? 0 : num - 3);
        return NULL;
    }
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    if (n > 0 && *s == '[')
        section_line(ps, s, n);
    else if (n > 0 && *s != ';' && *s != '#' && !has_separator(s, n))
        perr(ps, ps->line, "expected 'key = value', '[section]' or a comment");
    if (ps->failed)
        return NULL;
    memcpy(str, s, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

static const struct key *find_key(int sect, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if ((int)keys[i].sect == sect && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* inih's handler: one "name = value" in the current section. */
static int key_handler(void *user, const char *section, const char *name, const char *value)
{
    struct pstate *ps = user;
    char label[96], sh[96];
    (void)section; /* we track sections ourselves (with full app names) */
    if (ps->failed)
        return 1;
    if (ps->sect == SEC_NONE) {
        perr(ps, ps->line, "key '%s' is outside any section", shown(name, sh));
        return 1;
    }
    sect_label(ps, ps->sect, ps->app, label, sizeof label);
    const struct key *k = find_key(ps->sect, name);
    if (k == NULL) {
        perr(ps, ps->line, "[%s] %s: unknown key", label, shown(name, sh));
        return 1;
    }
    size_t ki = (size_t)(k - keys);
    int *seen = ps->sect == SEC_APP      ? &ps->app_seen[ps->app].line[ki]
                : ps->sect == SEC_TENANT ? &ps->tenant_seen[ps->app].line[ki]
                                         : &ps->seen[ki];
    if (*seen != 0) {
        perr(ps, ps->line, "[%s] %s: duplicate key (first set on line %d)", label, k->name,
             *seen);
        return 1;
    }
    *seen = ps->line;
    void *base = ps->sect == SEC_APP      ? (void *)&ps->cfg->apps[ps->app]
                 : ps->sect == SEC_TENANT ? (void *)&ps->cfg->tenants[ps->app]
                                          : (void *)ps->cfg;
    set_value(ps, k, base, value, ps->line, label);
    return 1;
}

/* ---- after the file: defaults and cross-key rules ---------------------- */

/* Read a whole file (at most |max| bytes) into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t max, size_t *len, char *why, size_t whylen)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(why, whylen, "%s", strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(max + 2);
    size_t n = fread(buf, 1, max + 1, fp);
    bool bad = ferror(fp);
    fclose(fp);
    if (bad || n > max) {
        snprintf(why, whylen, bad ? "read error" : "file larger than %zu bytes", max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Take project_id / token_uri from the service-account file when unset. */
static void fill_from_service_account(struct pstate *ps, struct config_app *a, int line,
                                      const char *label)
{
    char why[128], sh[96];
    size_t len = 0;
    char *buf = read_file(a->fcm_service_account_file, SERVICE_ACCOUNT_MAX, &len, why,
                          sizeof why);
    if (buf == NULL) {
        perr(ps, line, "[%s] fcm_service_account_file: cannot read \"%s\": %s", label,
             shown(a->fcm_service_account_file, sh), why);
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(doc)) {
        perr(ps, line, "[%s] fcm_service_account_file: \"%s\" is not a JSON object", label,
             shown(a->fcm_service_account_file, sh));
        goto out;
    }
    static const char *const needed[] = { "client_email", "private_key" };
    for (size_t i = 0; i < 2; i++) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, needed[i]))) {
            perr(ps, line, "[%s] fcm_service_account_file: \"%s\" has no \"%s\"", label,
                 shown(a->fcm_service_account_file, sh), needed[i]);
            goto out;
        }
    }
    if (a->fcm_project_id == NULL) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(doc, "project_id");
        if (!cJSON_IsString(p) || p->valuestring[0] == '\0') {
            perr(ps, line, "[%s] fcm_service_account_file: \"%s\" has no \"project_id\"; "
                 "set fcm_project_id", label, shown(a->fcm_service_account_file, sh));
            goto out;
        }
        a->fcm_project_id = xstrdup(p->valuestring);
    }
    if (a->fcm_token_url == NULL) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "token_uri");
        struct config_url u;
        if (!cJSON_IsString(t) || config_url_parse(t->valuestring, &u) != 0) {
            perr(ps, line, "[%s] fcm_service_account_file: \"%s\" has no usable \"token_uri\"; "
                 "set fcm_token_url", label, shown(a->fcm_service_account_file, sh));
            goto out;
        }
        a->fcm_token_url = xstrdup(t->valuestring);
    }
out:
    cJSON_Delete(doc);
}

static void finish_app(struct pstate *ps, size_t idx)
{
    struct config_app *a = &ps->cfg->apps[idx];
    const int *seen = ps->app_seen[idx].line;
    char label[96];
    sect_label(ps, SEC_APP, idx, label, sizeof label);

    bool any_apns = false, any_fcm = false;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].sect != SEC_APP || seen[i] == 0)
            continue;
        if (strncmp(keys[i].name, "apns_", 5) == 0)
            any_apns = true;
        if (strncmp(keys[i].name, "fcm_", 4) == 0)
            any_fcm = true;
    }
    if (any_apns) {
        for (size_t g = 0; g < sizeof apns_group / sizeof apns_group[0]; g++) {
            const struct key *k = find_key(SEC_APP, apns_group[g]);
            if (seen[k - keys] == 0) {
                perr(ps, a->line, "[%s] %s: missing (apns_topic, apns_team_id, apns_key_id "
                     "and apns_key_file go together)", label, k->name);
                return;
            }
        }
        a->apns_enabled = true;
    }
    const struct key *sa = find_key(SEC_APP, "fcm_service_account_file");
    if (any_fcm && seen[sa - keys] == 0) {
        perr(ps, a->line, "[%s] fcm_service_account_file: missing (the other fcm_* keys "
             "need it)", label);
        return;
    }
    if (!any_apns && !any_fcm) {
        perr(ps, a->line, "[%s]: an app needs the APNs keys (apns_topic, apns_team_id, "
             "apns_key_id, apns_key_file) or fcm_service_account_file, or both", label);
        return;
    }
    for (size_t i = 0; i < N_KEYS && !ps->failed; i++)
        if (keys[i].sect == SEC_APP && seen[i] == 0 && keys[i].def != NULL)
            set_value(ps, &keys[i], a, keys[i].def, 0, label);
    if (any_fcm && !ps->failed) {
        fill_from_service_account(ps, a, seen[sa - keys], label);
        a->fcm_enabled = !ps->failed;
    }
}

/* Defaults for the keys a tenant section left out (|seen| NULL: none set). */
static void finish_tenant(struct pstate *ps, struct config_tenant *t, const int *seen,
                          const char *label)
{
    for (size_t i = 0; i < N_KEYS && !ps->failed; i++)
        if (keys[i].sect == SEC_TENANT && (seen == NULL || seen[i] == 0) && keys[i].def)
            set_value(ps, &keys[i], t, keys[i].def, 0, label);
}

/* Split [redis] streams (or take stream) into the list of bulk streams. */
static void finish_streams(struct pstate *ps)
{
    struct config_redis *r = &ps->cfg->redis;
    const char *src = r->streams ? r->streams : r->stream;
    const struct key *k = find_key(SEC_REDIS, r->streams ? "streams" : "stream");
    int line = ps->seen[k - keys];
    r->stream_list = xcalloc(strlen(src) / 2 + 2, sizeof *r->stream_list);
    for (const char *p = src; !ps->failed;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n > 512) {
            perr(ps, line, "[redis] %s: expected stream names separated by commas (each "
                 "1..512 characters)", k->name);
            return;
        }
        char *name = xstrndup(p, n);
        for (size_t i = 0; i < r->n_streams; i++) {
            if (strcmp(r->stream_list[i], name) == 0) {
                perr(ps, line, "[redis] %s: stream \"%.80s\" is listed twice", k->name, name);
                free(name);
                return;
            }
        }
        if (r->urgent_stream && strcmp(r->urgent_stream, name) == 0) {
            perr(ps, line, "[redis] %s: \"%.80s\" is also the urgent_stream", k->name, name);
            free(name);
            return;
        }
        r->stream_list[r->n_streams++] = name;
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (!ps->failed && r->streams && r->n_streams > 0) {
        /* `stream` names the first one (logs, varselctl). */
        free(r->stream);
        r->stream = xstrdup(r->stream_list[0]);
    }
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void finish(struct pstate *ps)
{
    struct config *cfg = ps->cfg;
    for (size_t i = 0; i < N_KEYS && !ps->failed; i++) {
        if (named_sect(keys[i].sect) || ps->seen[i] != 0 || keys[i].def == NULL)
            continue;
        set_value(ps, &keys[i], cfg, keys[i].def, 0, sect_names[keys[i].sect]);
    }
    if (ps->failed)
        return;
    if (ps->seen[find_key(SEC_REDIS, "stream") - keys] && cfg->redis.streams) {
        perr(ps, ps->seen[find_key(SEC_REDIS, "streams") - keys],
             "[redis] streams: set either stream or streams, not both");
        return;
    }
    finish_streams(ps);
    cfg->tenant_default.name = xstrdup("*");
    finish_tenant(ps, &cfg->tenant_default, NULL, "tenant defaults");
    for (size_t i = 0; i < cfg->n_tenants && !ps->failed; i++) {
        char label[96];
        finish_tenant(ps, &cfg->tenants[i], ps->tenant_seen[i].line,
                      sect_label(ps, SEC_TENANT, i, label, sizeof label));
    }
    if (ps->failed)
        return;
    {
        /* Sentinel keys go together. */
        const struct key *ks = find_key(SEC_REDIS, "sentinels");
        const struct key *km = find_key(SEC_REDIS, "master_name");
        const struct key *kp = find_key(SEC_REDIS, "sentinel_password");
        if (cfg->redis.sentinels != NULL && cfg->redis.master_name == NULL) {
            perr(ps, ps->seen[ks - keys], "[redis] master_name: required with sentinels");
            return;
        }
        if (cfg->redis.sentinels == NULL && cfg->redis.master_name != NULL) {
            perr(ps, ps->seen[km - keys], "[redis] master_name: needs sentinels");
            return;
        }
        if (cfg->redis.sentinels == NULL && cfg->redis.sentinel_password != NULL) {
            perr(ps, ps->seen[kp - keys], "[redis] sentinel_password: needs sentinels");
            return;
        }
    }
    if (cfg->redis.consumer == NULL) {
        char host[256];
        if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
            snprintf(host, sizeof host, "varseld");
        host[sizeof host - 1] = '\0';
        cfg->redis.consumer = xstrdup(host);
    }
    if (cfg->daemon.templates_dir == NULL) {
        char *beside = resolve_path(cfg, "templates");
        if (is_dir(beside)) {
            cfg->daemon.templates_dir = beside;
        } else {
            free(beside);
            cfg->daemon.templates_dir = xstrdup("config/templates");
        }
    }
    if (cfg->admin.enabled && !cfg->admin.loopback && cfg->admin.token == NULL) {
        const struct key *lk = find_key(SEC_ADMIN, "listen");
        perr(ps, ps->seen[lk - keys], "[admin] token: required when [admin] listen (%s) is "
             "not a loopback address", cfg->admin.listen);
        return;
    }
    if (cfg->n_apps == 0) {
        perr(ps, 0, "no [app NAME] section; at least one app is required");
        return;
    }
    for (size_t i = 0; i < cfg->n_apps && !ps->failed; i++)
        finish_app(ps, i);
}

/* ---- public API -------------------------------------------------------- */

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    struct config *cfg = xcalloc(1, sizeof *cfg);
    struct pstate ps = { .cfg = cfg, .sect = SEC_NONE, .err = err, .errlen = errlen };
    char *buf = NULL, why[128];
    int rc = -1;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    cfg->path = xstrdup(path);
    /* Directory of the file, absolute, for relative paths inside it. */
    char *slash = strrchr(cfg->path, '/');
    char *dir = slash == NULL ? xstrdup(".")
                : slash == cfg->path ? xstrdup("/")
                                     : xstrndup(cfg->path, (size_t)(slash - cfg->path));
    char *abs = realpath(dir, NULL);
    free(dir);
    if (abs == NULL) {
        perr(&ps, 0, "cannot resolve the config directory: %s", strerror(errno));
        goto out;
    }
    cfg->dir = xstrdup(abs);
    free(abs);

    size_t len = 0;
    buf = read_file(path, CONFIG_FILE_MAX, &len, why, sizeof why);
    if (buf == NULL) {
        perr(&ps, 0, "cannot read: %s", why);
        goto out;
    }
    ps.buf = buf;
    ps.len = len;
    int r = ini_parse_stream(line_reader, &ps, key_handler, &ps);
    if (r != 0 && !ps.failed)
        perr(&ps, r > 0 ? r : 0, "syntax error");
    if (!ps.failed)
        finish(&ps);
    if (!ps.failed)
        rc = 0;
out:
    free(buf);
    free(ps.app_seen);
    free(ps.tenant_seen);
    if (rc != 0) {
        config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

/* Free the string fields |base| holds for keys of section kind |sect|
 * (SEC_APP, SEC_TENANT, or SEC_NONE for the global sections). */
static void free_fields(void *base, int sect)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        if (named_sect(k->sect) ? (int)k->sect != sect : sect != SEC_NONE)
            continue;
        if (k->type == K_STRING || k->type == K_URL || k->type == K_REDIS_URL ||
            k->type == K_FILE || k->type == K_DIR || k->type == K_LISTEN || k->type == K_TZ ||
            k->type == K_ADDRS) {
            char **p = field_ptr(base, k);
            free(*p);
            *p = NULL;
        }
    }
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_apps; i++) {
        free_fields(&cfg->apps[i], SEC_APP);
        free(cfg->apps[i].name);
    }
    free(cfg->apps);
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        free_fields(&cfg->tenants[i], SEC_TENANT);
        free(cfg->tenants[i].name);
    }
    free(cfg->tenants);
    free_fields(&cfg->tenant_default, SEC_TENANT);
    free(cfg->tenant_default.name);
    for (size_t i = 0; i < cfg->redis.n_streams; i++)
        free(cfg->redis.stream_list[i]);
    free(cfg->redis.stream_list);
    if (cfg->admin.token != NULL)
        explicit_bzero(cfg->admin.token, strlen(cfg->admin.token));
    if (cfg->redis.sentinel_password != NULL)
        explicit_bzero(cfg->redis.sentinel_password, strlen(cfg->redis.sentinel_password));
    free_fields(cfg, SEC_NONE);
    free_sentinels(&cfg->redis);
    free(cfg->redis.host);
    free(cfg->redis.user);
    free_secret(cfg->redis.password);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

const struct config_tenant *config_find_tenant(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_tenants; i++)
        if (strcmp(cfg->tenants[i].name, name) == 0)
            return &cfg->tenants[i];
    return &cfg->tenant_default;
}

const struct config_app *config_find_app(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_apps; i++)
        if (strcmp(cfg->apps[i].name, name) == 0)
            return &cfg->apps[i];
    return NULL;
}

/* True when key |k| holds the same value in |a| and |b|. */
static bool same_value(const struct key *k, const void *a, const void *b)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->type) {
    case K_INT:
        return *(const int64_t *)pa == *(const int64_t *)pb;
    case K_BOOL:
        return *(const bool *)pa == *(const bool *)pb;
    case K_ENUM:
        return *(const int *)pa == *(const int *)pb;
    default: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        if (sa == NULL || sb == NULL)
            return sa == sb;
        return strcmp(sa, sb) == 0;
    }
    }
}

int config_reload_check(const struct config *old_cfg, const struct config *new_cfg,
                        char *err, size_t errlen)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        if (named_sect(k->sect) || k->reload || same_value(k, old_cfg, new_cfg))
            continue;
        snprintf(err, errlen, "[%s] %s changed; restart varseld to apply it",
                 sect_names[k->sect], k->name);
        return -1;
    }
    for (size_t i = 0; i < old_cfg->n_apps; i++) {
        if (config_find_app(new_cfg, old_cfg->apps[i].name) == NULL) {
            snprintf(err, errlen, "[app %s] was removed; restart varseld to apply it",
                     old_cfg->apps[i].name);
            return -1;
        }
    }
    for (size_t j = 0; j < new_cfg->n_apps; j++) {
        const struct config_app *na = &new_cfg->apps[j];
        const struct config_app *oa = config_find_app(old_cfg, na->name);
        if (oa == NULL) {
            snprintf(err, errlen, "[app %s] was added; restart varseld to apply it", na->name);
            return -1;
        }
        for (size_t i = 0; i < N_KEYS; i++) {
            const struct key *k = &keys[i];
            if (k->sect != SEC_APP || k->reload || same_value(k, oa, na))
                continue;
            snprintf(err, errlen, "[app %s] %s changed; restart varseld to apply it", na->name,
                     k->name);
            return -1;
        }
    }
    return 0;
}

void config_dump_keys(FILE *fp)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        char type[96];
        if (k->type == K_INT)
            snprintf(type, sizeof type, "int(%lld..%lld)", (long long)k->min, (long long)k->max);
        else if (k->type == K_ENUM)
            snprintf(type, sizeof type, "enum(%s)", k->extra);
        else
            snprintf(type, sizeof type, "%s", type_names[k->type]);
        fprintf(fp, "%s\t%s\t%s\t%s\t%s\t%s\n",
                k->sect == SEC_APP ? "app NAME" : k->sect == SEC_TENANT ? "tenant NAME"
                                                                        : sect_names[k->sect],
                k->name, type, k->def ? k->def : k->def_doc ? k->def_doc : "none",
                k->reload ? "reload" : "restart", k->desc);
    }
}
