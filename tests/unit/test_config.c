/*
 * Tests for config/config.c: defaults, every value type, the error format
 * (file:line: [section] key: problem), line-length handling, apps, the
 * service-account file, reload checks and the key dump.
 */
#include "tests/unit/test.h"

#include "config/config.h"
#include "common/log.h"
#include "common/util.h"

#include <sys/stat.h>

static char dir[64];
static char cfg_path[128];
static char err[512];

static void write_file(const char *name, const char *content)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *fp = fopen(p, "w");
    ASSERT_NOT_NULL(fp);
    fputs(content, fp);
    fclose(fp);
}

/* A temp dir with a dummy .p8 and a service-account file. */
static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/varsel-cfg-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(dir));
    snprintf(cfg_path, sizeof cfg_path, "%s/varsel.ini", dir);
    write_file("AuthKey.p8", "-----BEGIN PRIVATE KEY-----\nnot checked here\n-----END PRIVATE KEY-----\n");
    write_file("sa.json", "{\"type\":\"service_account\",\"project_id\":\"demo-proj\","
               "\"private_key_id\":\"k1\",\"private_key\":\"-----BEGIN PRIVATE KEY-----\\n\","
               "\"client_email\":\"push@demo-proj.iam.gserviceaccount.com\","
               "\"token_uri\":\"https://oauth2.googleapis.com/token\"}");
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ_INT(0, system(cmd));
}

#define APP_APNS "[app demo]\napns_topic = no.example.Demo\napns_team_id = DEF123GHIJ\n" \
                 "apns_key_id = ABC123DEFG\napns_key_file = AuthKey.p8\n"

/* Load |text| as varsel.ini; returns config_load's result. */
static int load(const char *text, struct config **cfg)
{
    write_file("varsel.ini", text);
    err[0] = '\0';
    int rc = config_load(cfg_path, cfg, err, sizeof err);
    if (rc == 0)
        ASSERT_NOT_NULL(*cfg);
    else
        ASSERT_NULL(*cfg);
    return rc;
}

static struct config *load_ok(const char *text)
{
    struct config *cfg = NULL;
    if (load(text, &cfg) != 0)
        TEST_FAIL_("config rejected: %s", err);
    return cfg;
}

/* Expect a load error equal to "<cfg_path>:<suffix>" (suffix starts at the
 * line number, or ": " for file-level errors). */
static void expect_err(const char *text, const char *suffix)
{
    struct config *cfg = NULL;
    ASSERT_EQ_INT(-1, load(text, &cfg));
    char want[600];
    snprintf(want, sizeof want, "%s:%s", cfg_path, suffix);
    ASSERT_STR_EQ(want, err);
}

TEST(defaults)
{
    setup();
    struct config *cfg = load_ok(APP_APNS);
    ASSERT_EQ_INT(LOG_INFO, cfg->daemon.log_level);
    ASSERT_STR_EQ("config/templates", cfg->daemon.templates_dir);
    ASSERT_EQ_INT(10000, cfg->daemon.shutdown_timeout_ms);
    ASSERT_STR_EQ("redis://127.0.0.1:6379/0", cfg->redis.url);
    ASSERT_STR_EQ("127.0.0.1", cfg->redis.host);
    ASSERT_EQ_INT(6379, cfg->redis.port);
    ASSERT_NULL(cfg->redis.user);
    ASSERT_NULL(cfg->redis.password);
    ASSERT_EQ_INT(0, cfg->redis.db);
    ASSERT_STR_EQ("varsel:events", cfg->redis.stream);
    ASSERT_STR_EQ("varsel", cfg->redis.group);
    char host[256];
    gethostname(host, sizeof host);
    ASSERT_STR_EQ(host, cfg->redis.consumer);
    ASSERT_EQ_INT(30000, cfg->redis.claim_idle_ms);
    ASSERT_STR_EQ("varsel:", cfg->redis.prefix);
    ASSERT_EQ_INT(100, cfg->redis.batch_size);
    ASSERT_EQ_INT(2000, cfg->redis.block_ms);
    ASSERT_EQ_INT(604800, cfg->redis.status_ttl_s);
    ASSERT_EQ_INT(1000000, cfg->redis.receipts_maxlen);
    ASSERT_EQ_INT(100000, cfg->redis.dead_maxlen);
    ASSERT_NULL(cfg->tls.ca_file);
    ASSERT_EQ_INT(2000, cfg->delivery.inflight_window);
    ASSERT_EQ_INT(30000, cfg->delivery.request_timeout_ms);
    ASSERT_EQ_INT(1, cfg->n_apps);
    const struct config_app *a = config_find_app(cfg, "demo");
    ASSERT(a == &cfg->apps[0]);
    ASSERT_NULL(config_find_app(cfg, "Demo"));
    ASSERT(a->apns_enabled);
    ASSERT(!a->fcm_enabled);
    ASSERT_STR_EQ("no.example.Demo", a->apns_topic);
    ASSERT_STR_EQ("DEF123GHIJ", a->apns_team_id);
    ASSERT_STR_EQ("ABC123DEFG", a->apns_key_id);
    char want[256];
    snprintf(want, sizeof want, "%s/AuthKey.p8", cfg->dir);
    ASSERT_STR_EQ(want, a->apns_key_file);
    ASSERT(a->apns_key_file[0] == '/');
    ASSERT_STR_EQ("https://api.push.apple.com", a->apns_url);
    ASSERT_STR_EQ("https://api.sandbox.push.apple.com", a->apns_sandbox_url);
    ASSERT_EQ_INT(2, a->apns_max_connections);
    ASSERT_STR_EQ("https://fcm.googleapis.com", a->fcm_url);
    ASSERT_EQ_INT(4, a->fcm_max_connections);
    ASSERT_EQ_INT(8, a->retry_max_attempts);
    ASSERT_EQ_INT(1, a->line);
    config_free(cfg);
    teardown();
}

TEST(every_key_set)
{
    setup();
    ASSERT_EQ_INT(0, mkdir(strcat(strcpy((char[128]){0}, dir), "/tpl"), 0700));
    write_file("ca.pem", "x");
    struct config *cfg = load_ok(
        "; comment\n# another\n\n"
        "[daemon]\nlog_level = debug\ntemplates_dir = tpl\nshutdown_timeout_ms = 0\n"
        "[redis]\nurl = redis://bob:s%40cret@redis.example:6380/3\nstream = ev\n"
        "group = g\nconsumer = c1\nclaim_idle_ms = 60000\nprefix =\nbatch_size = 10\n"
        "block_ms = 100\nstatus_ttl_s = 3600\nreceipts_maxlen = 5000\ndead_maxlen = 600\n"
        "[tls]\nca_file = ca.pem\n"
        "[delivery]\ninflight_window = 10\nrequest_timeout_ms = 1000\n"
        APP_APNS
        "apns_url = https://127.0.0.1:8443\napns_sandbox_url = https://[::1]:8444/\n"
        "apns_max_connections = 3\nfcm_service_account_file = sa.json\n"
        "fcm_project_id = other\nfcm_url = https://localhost:9443\n"
        "fcm_token_url = https://localhost:9443/token\nfcm_max_connections = 5\n"
        "retry_max_attempts = 3\n"
        "[app other.app_2]\nfcm_service_account_file = sa.json\n");
    ASSERT_EQ_INT(LOG_DEBUG, cfg->daemon.log_level);
    char want[256];
    snprintf(want, sizeof want, "%s/tpl", cfg->dir);
    ASSERT_STR_EQ(want, cfg->daemon.templates_dir);
    ASSERT_EQ_INT(0, cfg->daemon.shutdown_timeout_ms);
    ASSERT_STR_EQ("redis.example", cfg->redis.host);
    ASSERT_EQ_INT(6380, cfg->redis.port);
    ASSERT_STR_EQ("bob", cfg->redis.user);
    ASSERT_STR_EQ("s@cret", cfg->redis.password);
    ASSERT_EQ_INT(3, cfg->redis.db);
    ASSERT_STR_EQ("ev", cfg->redis.stream);
    ASSERT_STR_EQ("c1", cfg->redis.consumer);
    ASSERT_STR_EQ("", cfg->redis.prefix);
    ASSERT_EQ_INT(10, cfg->redis.batch_size);
    ASSERT_EQ_INT(600, cfg->redis.dead_maxlen);
    snprintf(want, sizeof want, "%s/ca.pem", cfg->dir);
    ASSERT_STR_EQ(want, cfg->tls.ca_file);
    ASSERT_EQ_INT(10, cfg->delivery.inflight_window);
    ASSERT_EQ_INT(2, cfg->n_apps);
    const struct config_app *a = config_find_app(cfg, "demo");
    ASSERT(a->apns_enabled && a->fcm_enabled);
    ASSERT_STR_EQ("other", a->fcm_project_id);
    ASSERT_STR_EQ("https://localhost:9443/token", a->fcm_token_url);
    ASSERT_EQ_INT(3, a->retry_max_attempts);
    const struct config_app *b = config_find_app(cfg, "other.app_2");
    ASSERT_NOT_NULL(b);
    ASSERT(!b->apns_enabled && b->fcm_enabled);
    ASSERT_STR_EQ("demo-proj", b->fcm_project_id);
    ASSERT_STR_EQ("https://oauth2.googleapis.com/token", b->fcm_token_url);
    ASSERT_EQ_INT(39, b->line);
    config_free(cfg);
    teardown();
}

TEST(templates_dir_beside_config)
{
    setup();
    char p[128];
    snprintf(p, sizeof p, "%s/templates", dir);
    ASSERT_EQ_INT(0, mkdir(p, 0700));
    struct config *cfg = load_ok(APP_APNS);
    char want[256];
    snprintf(want, sizeof want, "%s/templates", cfg->dir);
    ASSERT_STR_EQ(want, cfg->daemon.templates_dir);
    config_free(cfg);
    teardown();
}

TEST(error_format_names_file_line_key)
{
    setup();
    expect_err("[redis]\n\n\nclaim_idle_ms = abc\n" APP_APNS,
               "4: [redis] claim_idle_ms: expected a whole number of milliseconds, got \"abc\"");
    expect_err("[redis]\nclaim_idle_ms = 12x\n" APP_APNS,
               "2: [redis] claim_idle_ms: expected a whole number of milliseconds, got \"12x\"");
    expect_err("[redis]\nclaim_idle_ms = 999\n" APP_APNS,
               "2: [redis] claim_idle_ms: must be between 1000 and 86400000, got 999");
    expect_err("[redis]\nbatch_size = 99999999999999999999999\n" APP_APNS,
               "2: [redis] batch_size: must be between 1 and 10000, got 99999999999999999999999");
    expect_err("[redis]\nbatch_size = 1.5\n" APP_APNS,
               "2: [redis] batch_size: expected a whole number, got \"1.5\"");
    expect_err("[daemon]\nlog_level = loud\n" APP_APNS,
               "2: [daemon] log_level: expected one of error/warn/info/debug, got \"loud\"");
    expect_err("[daemon]\nlog_levle = info\n" APP_APNS, "2: [daemon] log_levle: unknown key");
    expect_err("[redis]\nstream = a\nstream = b\n" APP_APNS,
               "3: [redis] stream: duplicate key (first set on line 2)");
    expect_err("[redis]\nstream = a\n[daemon]\n[redis]\nstream = b\n" APP_APNS,
               "5: [redis] stream: duplicate key (first set on line 2)");
    expect_err("[redis]\nstream =\n" APP_APNS,
               "2: [redis] stream: empty value (comment the line out to use the default)");
    expect_err("[redis]\nstream = a b\n" APP_APNS,
               "2: [redis] stream: must not contain spaces or control characters, got \"a b\"");
    expect_err("log_level = info\n" APP_APNS, "1: key 'log_level' is outside any section");
    expect_err("[reddis]\n" APP_APNS,
               "1: unknown section [reddis] (expected daemon, redis, tls, delivery, admin, app NAME or tenant NAME)");
    expect_err("[redis\n" APP_APNS, "1: expected ']' to close the section header");
    expect_err("[redis] x\n" APP_APNS, "1: unexpected text after the section header");
    expect_err("[redis]\njust words\n" APP_APNS,
               "2: expected 'key = value', '[section]' or a comment");
    expect_err("[app]\n", "1: [app] needs a name: [app NAME]");
    expect_err("[app de/mo]\n", "1: [app de/mo]: app name must match [A-Za-z0-9._-]{1,64}");
    teardown();
}

TEST(file_errors_name_path)
{
    setup();
    struct config *cfg = NULL;
    ASSERT_EQ_INT(-1, load("[tls]\nca_file = nope.pem\n" APP_APNS, &cfg));
    ASSERT_STR_CONTAINS(err, "/nope.pem\": No such file or directory");
    ASSERT_STR_CONTAINS(err, ":2: [tls] ca_file: ");
    ASSERT_EQ_INT(-1, load("[daemon]\ntemplates_dir = AuthKey.p8\n" APP_APNS, &cfg));
    ASSERT_STR_CONTAINS(err, "AuthKey.p8\": not a directory");
    char p[160];
    snprintf(p, sizeof p, "%s/missing.ini", dir);
    ASSERT_EQ_INT(-1, config_load(p, &cfg, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "missing.ini: cannot read: No such file or directory");
    teardown();
}

TEST(line_length_limit)
{
    setup();
    /* inih (Debian) reads lines of at most 197 characters; longer ones are
     * an error with the line number, never silently cut. */
    char text[1024], longv[400];
    memset(longv, 'x', 250);
    longv[250] = '\0';
    snprintf(text, sizeof text, "[redis]\n; ok\nstream = %s\n" APP_APNS, longv);
    struct config *cfg = NULL;
    ASSERT_EQ_INT(-1, load(text, &cfg));
    char want[256];
    snprintf(want, sizeof want, "%s:3: line is 259 characters long; at most 197 are allowed",
             cfg_path);
    ASSERT_STR_EQ(want, err);
    /* A long comment is just as long. */
    snprintf(text, sizeof text, "; %s\n" APP_APNS, longv);
    ASSERT_EQ_INT(-1, load(text, &cfg));
    ASSERT_STR_CONTAINS(err, ":1: line is 252 characters long");
    /* Exactly 197 characters pass, with the value intact. */
    memset(longv, 'y', 188);
    longv[188] = '\0';
    snprintf(text, sizeof text, "[redis]\nstream = %s\n" APP_APNS, longv); /* 9 + 188 */
    cfg = load_ok(text);
    ASSERT_EQ_INT(188, strlen(cfg->redis.stream));
    config_free(cfg);
    teardown();
}

TEST(syntax_variants)
{
    setup();
    /* BOM, CRLF, indentation, inline comments, "key: value". */
    struct config *cfg = load_ok("\xEF\xBB\xBF[redis]\r\n  stream = s1 ; the stream\r\n"
                                 "\tgroup: g1\r\n  ; indented comment\r\n"
                                 "[ app  demo ]\napns_topic = t\napns_team_id = DEF123GHIJ\n"
                                 "apns_key_id = ABC123DEFG\n   apns_key_file = AuthKey.p8\n");
    ASSERT_STR_EQ("s1", cfg->redis.stream);
    ASSERT_STR_EQ("g1", cfg->redis.group);
    ASSERT_NOT_NULL(config_find_app(cfg, "demo"));
    config_free(cfg);
    /* An indented line is not a continuation of the previous value. */
    expect_err("[redis]\nstream = a\n    more words\n" APP_APNS,
               "3: expected 'key = value', '[section]' or a comment");
    /* NUL bytes are refused. */
    write_file("varsel.ini", "");
    FILE *fp = fopen(cfg_path, "w");
    fwrite("[redis]\nstre\0am = x\n", 1, 20, fp);
    fclose(fp);
    ASSERT_EQ_INT(-1, config_load(cfg_path, &cfg, err, sizeof err));
    ASSERT_STR_CONTAINS(err, ":2: NUL byte in the line");
    teardown();
}

TEST(redis_urls)
{
    setup();
    static const struct { const char *url, *host, *user, *pass; int port, db; } good[] = {
        { "redis://localhost", "localhost", NULL, NULL, 6379, 0 },
        { "redis://10.0.0.5:7000/", "10.0.0.5", NULL, NULL, 7000, 0 },
        { "redis://[::1]:6390/15", "::1", NULL, NULL, 6390, 15 },
        { "redis://:pw@h:1/2", "h", NULL, "pw", 1, 2 },
        { "redis://u:p:w@h:2", "h", "u", "p:w", 2, 0 },
        { "REDIS://u%3Ax:p%25@h", "h", "u:x", "p%", 6379, 0 },
    };
    char text[512];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "[redis]\nurl = %s\n" APP_APNS, good[i].url);
        struct config *cfg = load_ok(text);
        ASSERT_STR_EQ(good[i].url, cfg->redis.url);
        ASSERT_STR_EQ(good[i].host, cfg->redis.host);
        ASSERT_EQ_INT(good[i].port, cfg->redis.port);
        ASSERT_EQ_INT(good[i].db, cfg->redis.db);
        if (good[i].user) ASSERT_STR_EQ(good[i].user, cfg->redis.user);
        else ASSERT_NULL(cfg->redis.user);
        if (good[i].pass) ASSERT_STR_EQ(good[i].pass, cfg->redis.password);
        else ASSERT_NULL(cfg->redis.password);
        config_free(cfg);
    }
    static const struct { const char *url, *why; } bad[] = {
        { "rediss://h:1", "TLS (rediss://) is not supported" },
        { "http://h:1", "expected redis://" },
        { "redis://h:0", "bad host or port" },
        { "redis://h:65536", "bad host or port" },
        { "redis://h:x", "bad host or port" },
        { "redis://[::1", "bad host or port" },
        { "redis://h/x", "database must be a number" },
        { "redis://h/99999", "database must be a number" },
        { "redis://secretpw@h", "user info must be user:password@" },
        { "redis://u:@h", "empty password" },
        { "redis://u:s%zzecret@h", "bad %-escape in the password" },
        { "redis://", "bad host or port" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[redis]\nurl = %s\n" APP_APNS, bad[i].url);
        struct config *cfg = NULL;
        ASSERT_EQ_INT(-1, load(text, &cfg));
        ASSERT_STR_CONTAINS(err, ":2: [redis] url: ");
        ASSERT_STR_CONTAINS(err, bad[i].why);
        /* The URL (and so any password) is never echoed. */
        if (strstr(err, "secret") != NULL)
            TEST_FAIL_("password leaked in \"%s\"", err);
    }
    teardown();
}

TEST(apps_rules)
{
    setup();
    expect_err("[redis]\nstream = s\n", " no [app NAME] section; at least one app is required");
    expect_err("[redis]\n[app demo]\napns_topic = t\napns_team_id = DEF123GHIJ\napns_key_id = ABC123DEFG\n",
               "2: [app demo] apns_key_file: missing (apns_topic, apns_team_id, apns_key_id "
               "and apns_key_file go together)");
    expect_err("[app demo]\napns_url = https://h\nfcm_service_account_file = sa.json\n",
               "1: [app demo] apns_topic: missing (apns_topic, apns_team_id, apns_key_id "
               "and apns_key_file go together)");
    expect_err("[app demo]\nretry_max_attempts = 3\n",
               "1: [app demo]: an app needs the APNs keys (apns_topic, apns_team_id, "
               "apns_key_id, apns_key_file) or fcm_service_account_file, or both");
    expect_err("[app demo]\n", "1: [app demo]: an app needs the APNs keys (apns_topic, "
               "apns_team_id, apns_key_id, apns_key_file) or fcm_service_account_file, or both");
    expect_err("[app demo]\nfcm_project_id = p\n",
               "1: [app demo] fcm_service_account_file: missing (the other fcm_* keys need it)");
    expect_err("[app demo]\napns_team_id = DEF123GHI\n",
               "2: [app demo] apns_team_id: expected exactly 10 characters, got \"DEF123GHI\"");
    expect_err("[app demo]\napns_key_id = ABC-23DEFG\n",
               "2: [app demo] apns_key_id: expected letters and digits only, got \"ABC-23DEFG\"");
    expect_err("[app demo]\napns_url = ftp://x\n",
               "2: [app demo] apns_url: expected an https:// or http:// URL "
               "(scheme://host[:port][/path]), got \"ftp://x\"");
    expect_err("[app demo]\napns_max_connections = 0\n",
               "2: [app demo] apns_max_connections: must be between 1 and 64, got 0");
    expect_err(APP_APNS "apns_topic = again\n",
               "6: [app demo] apns_topic: duplicate key (first set on line 2)");
    struct config *cfg = NULL;
    ASSERT_EQ_INT(-1, load("[app demo]\napns_topic = t\napns_team_id = DEF123GHIJ\n"
                           "apns_key_id = ABC123DEFG\napns_key_file = /nonexistent/k.p8\n", &cfg));
    ASSERT_STR_CONTAINS(err, ":5: [app demo] apns_key_file: cannot use \"/nonexistent/k.p8\": "
                        "No such file or directory");
    /* An unreadable key file (skip as root, who reads everything). */
    if (geteuid() != 0) {
        char p[160];
        snprintf(p, sizeof p, "%s/AuthKey.p8", dir);
        chmod(p, 0);
        ASSERT_EQ_INT(-1, load(APP_APNS, &cfg));
        ASSERT_STR_CONTAINS(err, "Permission denied");
    }
    teardown();
}

TEST(service_account_file)
{
    setup();
    write_file("noproj.json", "{\"client_email\":\"a@b\",\"private_key\":\"k\","
               "\"token_uri\":\"https://t/token\"}");
    write_file("notok.json", "{\"client_email\":\"a@b\",\"private_key\":\"k\",\"project_id\":\"p\"}");
    write_file("nokey.json", "{\"client_email\":\"a@b\",\"project_id\":\"p\"}");
    write_file("bad.json", "{not json");
    struct config *cfg = NULL;
    ASSERT_EQ_INT(-1, load("[app a]\nfcm_service_account_file = noproj.json\n", &cfg));
    ASSERT_STR_CONTAINS(err, ":2: [app a] fcm_service_account_file: \"");
    ASSERT_STR_CONTAINS(err, "noproj.json\" has no \"project_id\"; set fcm_project_id");
    cfg = load_ok("[app a]\nfcm_service_account_file = noproj.json\nfcm_project_id = p2\n");
    ASSERT_STR_EQ("p2", cfg->apps[0].fcm_project_id);
    ASSERT_STR_EQ("https://t/token", cfg->apps[0].fcm_token_url);
    config_free(cfg);
    ASSERT_EQ_INT(-1, load("[app a]\nfcm_service_account_file = notok.json\n", &cfg));
    ASSERT_STR_CONTAINS(err, "has no usable \"token_uri\"; set fcm_token_url");
    ASSERT_EQ_INT(-1, load("[app a]\nfcm_service_account_file = nokey.json\n", &cfg));
    ASSERT_STR_CONTAINS(err, "has no \"private_key\"");
    ASSERT_EQ_INT(-1, load("[app a]\nfcm_service_account_file = bad.json\n", &cfg));
    ASSERT_STR_CONTAINS(err, "is not a JSON object");
    /* The key itself is never echoed. */
    ASSERT(strstr(err, "BEGIN") == NULL);
    teardown();
}

TEST(reload_check)
{
    setup();
    struct config *a = load_ok("[daemon]\nlog_level = info\n[redis]\nurl = redis://h:1\n" APP_APNS);
    struct config *b = load_ok("[daemon]\nlog_level = debug\n[redis]\nurl = redis://h:1\n"
                               APP_APNS);
    char e[256] = "";
    ASSERT_EQ_INT(0, config_reload_check(a, b, e, sizeof e));
    config_free(b);
    /* Values the running pipeline copied at start need a restart. */
    b = load_ok("[daemon]\nlog_level = info\n[redis]\nurl = redis://h:1\n"
                APP_APNS "retry_max_attempts = 2\n");
    ASSERT_EQ_INT(-1, config_reload_check(a, b, e, sizeof e));
    ASSERT_STR_EQ("[app demo] retry_max_attempts changed; restart varseld to apply it", e);
    config_free(b);
    b = load_ok("[redis]\nurl = redis://h:2\n" APP_APNS);
    ASSERT_EQ_INT(-1, config_reload_check(a, b, e, sizeof e));
    ASSERT_STR_EQ("[redis] url changed; restart varseld to apply it", e);
    config_free(b);
    b = load_ok("[redis]\nurl = redis://h:1\n" APP_APNS "[app two]\nfcm_service_account_file = sa.json\n");
    ASSERT_EQ_INT(-1, config_reload_check(a, b, e, sizeof e));
    ASSERT_STR_EQ("[app two] was added; restart varseld to apply it", e);
    ASSERT_EQ_INT(-1, config_reload_check(b, a, e, sizeof e));
    ASSERT_STR_EQ("[app two] was removed; restart varseld to apply it", e);
    config_free(b);
    b = load_ok("[redis]\nurl = redis://h:1\n[app demo]\napns_topic = no.example.Other\n"
                "apns_team_id = DEF123GHIJ\napns_key_id = ABC123DEFG\napns_key_file = AuthKey.p8\n");
    ASSERT_EQ_INT(-1, config_reload_check(a, b, e, sizeof e));
    ASSERT_STR_EQ("[app demo] apns_topic changed; restart varseld to apply it", e);
    config_free(b);
    config_free(a);
    teardown();
}

TEST(dump_keys_lists_table)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    config_dump_keys(fp);
    fclose(fp);
    static const char *const expect[] = {
        "daemon\tlog_level\tenum(error|warn|info|debug)\tinfo\treload\t",
        "redis\tclaim_idle_ms\tint(1000..86400000)\t30000\trestart\t",
        "redis\turl\tredis-url\tredis://127.0.0.1:6379/0\trestart\t",
        "tls\tca_file\tfile\tnone\trestart\t",
        "app NAME\tapns_key_file\tfile\tnone\treload\t",
        "app NAME\tfcm_project_id\tstring\tproject_id from the service-account file\t",
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        ASSERT_STR_CONTAINS(buf, expect[i]);
    int lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    ASSERT_EQ_INT(53, lines);
    free(buf);
}

/* [tenant NAME] sections: defaults, per-tenant values, errors, lookup. */
TEST(tenants)
{
    setup();
    struct config *cfg = load_ok(APP_APNS "[tenant oslo]\ndefault_locale = nn\n"
                                 "message_preview = on\ntimezone = Europe/London\n"
                                 "school_day_end = 15:30\nescalate_after_s = 120\n"
                                 "[tenant bergen]\n");
    ASSERT_EQ_INT(2, cfg->n_tenants);
    const struct config_tenant *t = config_find_tenant(cfg, "oslo");
    ASSERT_STR_EQ("oslo", t->name);
    ASSERT_STR_EQ("nn", config_locales[t->default_locale]);
    ASSERT(t->message_preview);
    ASSERT_STR_EQ("Europe/London", t->timezone);
    ASSERT_EQ_INT(15 * 60 + 30, t->school_day_end_min);
    ASSERT_EQ_INT(120, t->escalate_after_s);
    t = config_find_tenant(cfg, "bergen");
    ASSERT_STR_EQ("nb", config_locales[t->default_locale]);
    ASSERT(!t->message_preview);
    ASSERT_STR_EQ("Europe/Oslo", t->timezone);
    ASSERT_EQ_INT(16 * 60, t->school_day_end_min);
    ASSERT_EQ_INT(300, t->escalate_after_s);
    t = config_find_tenant(cfg, "unknown");
    ASSERT_STR_EQ("*", t->name);
    ASSERT_STR_EQ("Europe/Oslo", t->timezone);
    ASSERT(!t->message_preview);
    config_free(cfg);
    expect_err("[tenant Oslo]\n", "1: [tenant Oslo]: tenant name must match "
               "[a-z0-9][a-z0-9_-]{0,63} (the events' tenant slug)");
    expect_err("[tenant]\n", "1: [tenant] needs a name: [tenant NAME]");
    expect_err("[tenant oslo]\ntimezone = Mars/Olympus\n", "2: [tenant oslo] timezone: unknown "
               "time zone \"Mars/Olympus\" (expected a name such as Europe/Oslo from "
               "/usr/share/zoneinfo)");
    expect_err("[tenant oslo]\ntimezone = ../../etc/passwd\n", "2: [tenant oslo] timezone: "
               "unknown time zone \"../../etc/passwd\" (expected a name such as Europe/Oslo "
               "from /usr/share/zoneinfo)");
    expect_err("[tenant oslo]\nschool_day_end = 25:00\n",
               "2: [tenant oslo] school_day_end: expected a time HH:MM (00:00..23:59), got "
               "\"25:00\"");
    expect_err("[tenant oslo]\ndefault_locale = de\n",
               "2: [tenant oslo] default_locale: expected one of nb/nn/en, got \"de\"");
    expect_err("[tenant oslo]\nescalate_after_s = 5\n",
               "2: [tenant oslo] escalate_after_s: must be between 10 and 86400, got 5");
    expect_err("[tenant oslo]\nmessage_preview = on\nmessage_preview = off\n",
               "3: [tenant oslo] message_preview: duplicate key (first set on line 2)");
}

/* [redis] streams and urgent_stream. */
TEST(streams)
{
    setup();
    struct config *cfg = load_ok(APP_APNS);
    ASSERT_EQ_INT(1, cfg->redis.n_streams);
    ASSERT_STR_EQ("varsel:events", cfg->redis.stream_list[0]);
    ASSERT_STR_EQ("varsel:urgent", cfg->redis.urgent_stream);
    config_free(cfg);
    cfg = load_ok(APP_APNS "[redis]\nstreams = ev:north,ev:south,ev:west\nurgent_stream =\n");
    ASSERT_EQ_INT(3, cfg->redis.n_streams);
    ASSERT_STR_EQ("ev:north", cfg->redis.stream_list[0]);
    ASSERT_STR_EQ("ev:west", cfg->redis.stream_list[2]);
    ASSERT_STR_EQ("ev:north", cfg->redis.stream);
    ASSERT_STR_EQ("", cfg->redis.urgent_stream);
    config_free(cfg);
    expect_err("[redis]\nstreams = a,,b\n", "2: [redis] streams: expected stream names "
               "separated by commas (each 1..512 characters)");
    expect_err("[redis]\nstreams = a,b,a\n", "2: [redis] streams: stream \"a\" is listed twice");
    expect_err("[redis]\nstreams = a,varsel:urgent\n",
               "2: [redis] streams: \"varsel:urgent\" is also the urgent_stream");
    expect_err("[redis]\nstream = a\nstreams = b\n",
               "3: [redis] streams: set either stream or streams, not both");
}

/* The shipped example loads once its key files exist (run from the repo root). */
TEST(example_file_loads)
{
    setup();
    FILE *in = fopen("config/varsel.ini.example", "r");
    ASSERT_NOT_NULL(in);
    char *text = xcalloc(1, 65536);
    size_t n = fread(text, 1, 65535, in);
    fclose(in);
    ASSERT(n > 0 && n < 65535);
    char p[160];
    snprintf(p, sizeof p, "%s/keys", dir);
    ASSERT_EQ_INT(0, mkdir(p, 0700));
    write_file("keys/AuthKey_KEY1234567.p8", "x");
    write_file("keys/demo-firebase.json", "{\"project_id\":\"demo-project\","
               "\"client_email\":\"a@b\",\"private_key\":\"k\","
               "\"token_uri\":\"https://oauth2.googleapis.com/token\"}");
    struct config *cfg = load_ok(text);
    const struct config_app *a = config_find_app(cfg, "demo");
    ASSERT_NOT_NULL(a);
    ASSERT(a->apns_enabled && a->fcm_enabled);
    ASSERT_STR_EQ("demo-project", a->fcm_project_id);
    ASSERT_EQ_INT(LOG_INFO, cfg->daemon.log_level);
    config_free(cfg);
    free(text);
    teardown();
}

/* [redis] sentinels, master_name, sentinel_password, wait_*, consumer_gone_ms. */
TEST(sentinel_and_scaleout_keys)
{
    setup();
    struct config *cfg = load_ok(APP_APNS);
    ASSERT_NULL(cfg->redis.sentinels);
    ASSERT_EQ_INT(0, (int)cfg->redis.n_sentinels);
    ASSERT_EQ_INT(0, cfg->redis.wait_replicas);
    ASSERT_EQ_INT(1000, cfg->redis.wait_timeout_ms);
    ASSERT_EQ_INT(86400000, cfg->redis.consumer_gone_ms);
    config_free(cfg);

    cfg = load_ok("[redis]\nsentinels = 10.0.0.1:26379, 10.0.0.2 ,[fd00::3]:26380\n"
                  "master_name = varsel-main\nsentinel_password = s3cret-pass\n"
                  "wait_replicas = 1\nwait_timeout_ms = 250\nconsumer_gone_ms = 0\n" APP_APNS);
    ASSERT_EQ_INT(3, (int)cfg->redis.n_sentinels);
    ASSERT_STR_EQ("10.0.0.1", cfg->redis.sentinel_hosts[0]);
    ASSERT_EQ_INT(26379, cfg->redis.sentinel_ports[0]);
    ASSERT_STR_EQ("10.0.0.2", cfg->redis.sentinel_hosts[1]);
    ASSERT_EQ_INT(26379, cfg->redis.sentinel_ports[1]); /* the default port */
    ASSERT_STR_EQ("fd00::3", cfg->redis.sentinel_hosts[2]);
    ASSERT_EQ_INT(26380, cfg->redis.sentinel_ports[2]);
    ASSERT_STR_EQ("varsel-main", cfg->redis.master_name);
    ASSERT_STR_EQ("s3cret-pass", cfg->redis.sentinel_password);
    ASSERT_EQ_INT(1, cfg->redis.wait_replicas);
    ASSERT_EQ_INT(250, cfg->redis.wait_timeout_ms);
    ASSERT_EQ_INT(0, cfg->redis.consumer_gone_ms);
    config_free(cfg);

    expect_err("[redis]\nsentinels = sentinel-1:26379\nmaster_name = m\n" APP_APNS,
               "2: [redis] sentinels: address 1: expected ip:port or [ipv6]:port (IP literals; "
               "host names are not resolved)");
    expect_err("[redis]\nsentinels = 10.0.0.1:26379,,10.0.0.2\nmaster_name = m\n" APP_APNS,
               "2: [redis] sentinels: empty address in the list");
    expect_err("[redis]\nsentinels = 10.0.0.1:0\nmaster_name = m\n" APP_APNS,
               "2: [redis] sentinels: address 1: expected ip:port or [ipv6]:port (IP literals; "
               "host names are not resolved)");
    expect_err("[redis]\nsentinels = 10.0.0.1\n" APP_APNS,
               "2: [redis] master_name: required with sentinels");
    expect_err("[redis]\nmaster_name = m\n" APP_APNS, "2: [redis] master_name: needs sentinels");
    expect_err("[redis]\nsentinel_password = abcdef\n" APP_APNS,
               "2: [redis] sentinel_password: needs sentinels");
    expect_err("[redis]\nwait_replicas = 17\n" APP_APNS,
               "2: [redis] wait_replicas: must be between 0 and 16, got 17");
    expect_err("[redis]\nwait_timeout_ms = 20000\n" APP_APNS,
               "2: [redis] wait_timeout_ms: must be between 10 and 10000, got 20000");
    /* A password is never echoed. */
    struct config *bad = NULL;
    ASSERT_EQ_INT(-1, load("[redis]\nsentinels = 10.0.0.1\nmaster_name = m\n"
                           "sentinel_password = has space\n" APP_APNS, &bad));
    ASSERT(strstr(err, "has space") == NULL);

    /* None of them reloads. */
    struct config *a = load_ok(APP_APNS);
    struct config *b = load_ok("[redis]\nwait_replicas = 1\n" APP_APNS);
    char e[256];
    ASSERT_EQ_INT(-1, config_reload_check(a, b, e, sizeof e));
    ASSERT_STR_EQ("[redis] wait_replicas changed; restart varseld to apply it", e);
    config_free(a);
    config_free(b);
    teardown();
}

TEST(url_parse)
{
    struct config_url u;
    ASSERT_EQ_INT(0, config_url_parse("https://api.push.apple.com", &u));
    ASSERT(u.tls);
    ASSERT_STR_EQ("api.push.apple.com", u.host);
    ASSERT_EQ_INT(443, u.port);
    ASSERT_STR_EQ("", u.path);
    ASSERT_EQ_INT(0, config_url_parse("http://[::1]:8080/v1/", &u));
    ASSERT(!u.tls);
    ASSERT_STR_EQ("::1", u.host);
    ASSERT_EQ_INT(8080, u.port);
    ASSERT_STR_EQ("/v1", u.path);
    ASSERT_EQ_INT(-1, config_url_parse("ftp://h", &u));
    ASSERT_EQ_INT(-1, config_url_parse("https://", &u));
    ASSERT_EQ_INT(-1, config_url_parse("https://u:p@h", &u));
    ASSERT_EQ_INT(-1, config_url_parse("https://h?x=1", &u));
    ASSERT_EQ_INT(-1, config_url_parse("https://h:99999", &u));
    ASSERT_EQ_INT(-1, config_url_parse("https://h :1", &u));
}

TEST_MAIN(T(defaults), T(every_key_set), T(templates_dir_beside_config),
          T(error_format_names_file_line_key), T(file_errors_name_path), T(line_length_limit),
          T(syntax_variants), T(redis_urls), T(apps_rules), T(service_account_file),
          T(reload_check), T(dump_keys_lists_table), T(example_file_loads), T(url_parse),
          T(tenants), T(streams), T(sentinel_and_scaleout_keys))
