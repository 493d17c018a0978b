/*
 * varseld configuration: an INI file (see config/varsel.ini.example and
 * docs/configuration.md) loaded into struct config.
 *
 * One table in config.c describes every key (section, name, type, field,
 * default, reload-safe flag, description); loading, defaults, validation,
 * reload checks and config_dump_keys are all driven by it. Errors name the
 * file, the line and the key:
 *   varsel.ini:12: [redis] claim_idle_ms: expected a whole number of
 *   milliseconds, got "abc"
 *
 * All strings in the structs are owned by the struct config and freed by
 * config_free. Whole numbers are int64_t. Relative paths in the file
 * (apns_key_file, fcm_service_account_file, ca_file, templates_dir) are
 * resolved against the directory of the config file and stored absolute.
 */
#ifndef VARSEL_CONFIG_H
#define VARSEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_APP_NAME_MAX 64 /* [app NAME]: [A-Za-z0-9._-]{1,64} */
#define CONFIG_TENANT_NAME_MAX 64 /* [tenant NAME]: the tenant slug of events */
#define CONFIG_SENTINELS_MAX 16 /* [redis] sentinels: addresses at most */

struct config_daemon {
    int log_level;              /* enum log_level (common/log.h); reload-safe */
    int log_format;             /* enum log_format (common/log.h): text, json; reload-safe */
    char *templates_dir;        /* directory of nb/nn/en templates */
    int64_t shutdown_timeout_ms;/* SIGTERM drain limit */
    int64_t token_max_age_days; /* prune devices not re-registered this long; 0 = never */
};

struct config_redis {
    char *url;                  /* as written: redis://[user:password@]host:port[/db] */
    char *host;                 /* name, IPv4 or IPv6 (without brackets) */
    int port;                   /* 1..65535, 6379 when the URL has none */
    char *user;                 /* ACL user, NULL when absent */
    char *password;             /* NULL when absent; never log it */
    int db;                     /* SELECT index, 0 when absent */
    char *stream;               /* event stream key, used as written */
    char *streams;              /* as written: comma-separated list, NULL = |stream| */
    char **stream_list;         /* the bulk streams to consume (>= 1), owned */
    size_t n_streams;
    char *urgent_stream;        /* served first on its own connection; "" = none */
    char *group;                /* consumer group */
    char *consumer;             /* consumer name (default: host name) */
    int64_t claim_idle_ms;      /* XAUTOCLAIM entries idle this long */
    char *prefix;               /* put before every key the daemon writes */
    int64_t batch_size;         /* entries per XREADGROUP */
    int64_t block_ms;           /* XREADGROUP BLOCK */
    int64_t status_ttl_s;       /* TTL of per-event status hashes */
    int64_t receipts_maxlen;    /* MAXLEN ~ of the receipts stream */
    int64_t dead_maxlen;        /* MAXLEN ~ of the dead-letter stream */
    int64_t escalations_maxlen; /* MAXLEN ~ of the escalations stream */
    int64_t dead_payload_ttl_s; /* how long a dead letter's original is kept for replay */
    int64_t trim_interval_ms;   /* XTRIM MINID of the events stream, 0 = never */
    /* Scale-out and high availability (docs/deployment.md) */
    char *sentinels;            /* as written: "ip:port,ip:port"; NULL = no Sentinel */
    char **sentinel_hosts;      /* parsed: IP literals (IPv6 without brackets) */
    int *sentinel_ports;
    size_t n_sentinels;
    char *master_name;          /* the master's name in Sentinel */
    char *sentinel_password;    /* Sentinel's requirepass; never log it */
    int64_t wait_replicas;      /* WAIT for this many replicas before XACK */
    int64_t wait_timeout_ms;    /* WAIT's timeout */
    int64_t consumer_gone_ms;   /* remove consumers idle this long (nothing pending,
                                   no live process); 0 = never */
};

struct config_tls {
    char *ca_file;              /* extra trusted CAs (PEM), NULL when unset */
};

struct config_delivery {
    int64_t inflight_window;    /* deliveries in flight at most (back-pressure) */
    int64_t request_timeout_ms; /* one provider request, send to answer */
    int64_t retry_base_ms;      /* first backoff step (full jitter) */
    int64_t retry_max_delay_ms; /* cap of the backoff step */
    int64_t retry_lease_ms;     /* a claimed retry's lease */
};

struct config_admin {
    char *listen;               /* as written; "off" or "" = no admin server */
    char *token;                /* bearer token, NULL when unset; never log it */
    bool enabled;               /* listen names an address */
    char host[64];              /* IP literal of listen, without brackets */
    int port;                   /* 1..65535 */
    bool loopback;              /* host is in 127.0.0.0/8 or ::1 */
};

struct config_app {
    char *name;                 /* NAME of [app NAME] */
    int line;                   /* line of the section header (for messages) */
    bool apns_enabled;          /* the APNs group is complete */
    bool fcm_enabled;           /* fcm_service_account_file is set */

    char *apns_topic;           /* bundle id, apns-topic */
    char *apns_team_id;         /* 10 characters, JWT iss */
    char *apns_key_id;          /* 10 characters, JWT kid */
    char *apns_key_file;        /* .p8 path (absolute), readable */
    char *apns_url;             /* production endpoint */
    char *apns_sandbox_url;     /* development endpoint (environment=sandbox) */
    int64_t apns_max_connections;

    char *fcm_service_account_file; /* service-account JSON path (absolute) */
    char *fcm_project_id;       /* from the file unless set */
    char *fcm_url;              /* FCM v1 base URL */
    char *fcm_token_url;        /* OAuth2 token endpoint, from token_uri unless set */
    int64_t fcm_max_connections;

    int64_t retry_max_attempts; /* attempts per delivery, first one included */
};

/* [tenant NAME]: how one municipality's notifications look and behave.
 * Tenants without a section get the defaults (config->tenant_default). */
struct config_tenant {
    char *name;                 /* the events' `tenant` slug; "*" for the defaults */
    int line;                   /* line of the section header, 0 for the defaults */
    int default_locale;         /* 0 nb, 1 nn, 2 en: when a device has no locale */
    bool message_preview;       /* message.new may show the preview text */
    char *timezone;             /* IANA zone name, e.g. Europe/Oslo */
    int64_t school_day_end_min; /* minutes after local midnight; absence.alert expiry */
    int64_t escalate_after_s;   /* absence.alert with no device sent this long: escalate */
};

struct config {
    char *path;                 /* the file as given to config_load */
    char *dir;                  /* absolute directory of the file */
    struct config_daemon daemon;
    struct config_redis redis;
    struct config_tls tls;
    struct config_delivery delivery;
    struct config_admin admin;
    struct config_app *apps;    /* owned array, in file order */
    size_t n_apps;              /* >= 1 */
    struct config_tenant *tenants; /* owned array, in file order (may be empty) */
    size_t n_tenants;
    struct config_tenant tenant_default; /* for tenants without a section */
};

/* A parsed http(s) URL, for the provider endpoints. */
struct config_url {
    bool tls;                   /* https */
    char host[256];             /* without brackets for IPv6 */
    int port;                   /* explicit or 443 / 80 */
    char path[512];             /* "" or starting with '/', no trailing '/' */
};

/*
 * Load and validate |path|. On success returns 0 and a new config in |*out|
 * (free with config_free). On failure returns -1, sets |*out| to NULL and
 * writes the first error into |err| ("FILE:LINE: [section] key: problem", or
 * "FILE: problem" when no line applies). Reads the .p8 and service-account
 * files only to check that they exist (and, for the service account, to take
 * project_id and token_uri); keys are loaded by their modules.
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Free |cfg| and everything it owns; NULL is a no-op. */
void config_free(struct config *cfg);

/* The [app NAME] section called |name|, or NULL. */
const struct config_app *config_find_app(const struct config *cfg, const char *name);

/* The [tenant NAME] of |name|, or the defaults when it has no section. */
const struct config_tenant *config_find_tenant(const struct config *cfg, const char *name);

/* The locale names of config_tenant.default_locale, by index. */
extern const char *const config_locales[3];

/*
 * Can |new_cfg| replace |old_cfg| on SIGHUP? Returns 0 when only reload-safe
 * keys differ, else -1 with |err| naming the first non-reloadable key that
 * changed ("[redis] url changed; restart to apply"), or the app that was
 * added or removed.
 */
int config_reload_check(const struct config *old_cfg, const struct config *new_cfg,
                        char *err, size_t errlen);

/*
 * Print the key table, one key per line, tab-separated:
 *   section <TAB> key <TAB> type <TAB> default <TAB> reload|restart <TAB> description
 * App keys print with section "app NAME". Used by scripts/check-config-docs.sh
 * and `varseld --config-keys`.
 */
void config_dump_keys(FILE *fp);

/*
 * Parse an http:// or https:// URL "scheme://host[:port][/path]" (host may
 * be "[v6]"). Returns 0, or -1 for another scheme, an empty host, a bad
 * port, user info, a query or fragment, or a part too long.
 */
int config_url_parse(const char *url, struct config_url *out);

#endif
