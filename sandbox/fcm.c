/*
 * FCM HTTP v1 validation (see fcm.h for the contract and the order).
 *
 * Architecture: the FCM v1 request schema is a set of static tables
 * (struct msgdef: fields with a type, a repeated flag, a nested message or
 * enum). walk_msg() checks a parsed cJSON body against them the way
 * Google's proto-JSON front end does and collects every error with its
 * field path ("message.data[0].value"); only if the body passes do FCM's
 * own checks run, each answering on the first failure. Error bodies are
 * printed like Google's (two-space indented JSON) by print_json().
 */
#include "sandbox/fcm.h"

#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the schema ------------------------------------------------------------ */

enum ftype { T_STRING, T_BOOL, T_INT32, T_FLOAT, T_ENUM, T_DURATION, T_TIMESTAMP, T_MSG, T_MAP,
             T_STRUCT };

struct enumdef {
    const char *type;              /* short proto name, e.g. "AndroidMessagePriority" */
    const char *const *values;     /* in number order */
    size_t n;
};

struct msgdef;

struct field {
    const char *name;              /* proto (snake_case) name */
    enum ftype type;
    bool repeated;
    const struct msgdef *msg;      /* T_MSG */
    const struct enumdef *en;      /* T_ENUM */
    bool target;                   /* member of Message's oneof "target" */
};

struct msgdef {
    const char *type;              /* "google.firebase.fcm.v1.Notification" */
    const struct field *fields;
    size_t n;
};

#define NF(a) (sizeof(a) / sizeof((a)[0]))
#define S(n) { n, T_STRING, false, NULL, NULL, false }
#define SR(n) { n, T_STRING, true, NULL, NULL, false }
#define B(n) { n, T_BOOL, false, NULL, NULL, false }
#define I32(n) { n, T_INT32, false, NULL, NULL, false }
#define FL(n) { n, T_FLOAT, false, NULL, NULL, false }
#define E(n, e) { n, T_ENUM, false, NULL, &e, false }
#define D(n) { n, T_DURATION, false, NULL, NULL, false }
#define DR(n) { n, T_DURATION, true, NULL, NULL, false }
#define TS(n) { n, T_TIMESTAMP, false, NULL, NULL, false }
#define M(n, m) { n, T_MSG, false, &m, NULL, false }
#define MAP(n) { n, T_MAP, false, NULL, NULL, false }
#define ST(n) { n, T_STRUCT, false, NULL, NULL, false }
#define TGT(n) { n, T_STRING, false, NULL, NULL, true }
#define MSG(var, type, fields) \
    static const struct msgdef var = { "google.firebase.fcm.v1." type, fields, NF(fields) }

static const char *const prio_values[] = { "NORMAL", "HIGH" };
static const struct enumdef android_priority = { "AndroidMessagePriority", prio_values,
                                                 NF(prio_values) };
static const char *const notif_prio_values[] = {
    "PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW", "PRIORITY_DEFAULT",
    "PRIORITY_HIGH", "PRIORITY_MAX",
};
static const struct enumdef notification_priority = { "AndroidNotification.NotificationPriority",
                                                      notif_prio_values, NF(notif_prio_values) };
static const char *const visibility_values[] = { "VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC",
                                                 "SECRET" };
static const struct enumdef visibility = { "AndroidNotification.Visibility", visibility_values,
                                           NF(visibility_values) };
static const char *const proxy_values[] = { "PROXY_UNSPECIFIED", "ALLOW", "DENY",
                                            "IF_PRIORITY_LOWERED" };
static const struct enumdef proxy = { "AndroidNotification.Proxy", proxy_values,
                                      NF(proxy_values) };

static const struct field notification_f[] = { S("title"), S("body"), S("image") };
MSG(notification_m, "Notification", notification_f);
static const struct field fcm_options_f[] = { S("analytics_label") };
MSG(fcm_options_m, "FcmOptions", fcm_options_f);
MSG(android_fcm_options_m, "AndroidFcmOptions", fcm_options_f);
static const struct field color_f[] = { FL("red"), FL("green"), FL("blue"), FL("alpha") };
static const struct msgdef color_m = { "google.type.Color", color_f, NF(color_f) };
static const struct field light_f[] = { M("color", color_m), D("light_on_duration"),
                                        D("light_off_duration") };
MSG(light_m, "LightSettings", light_f);
static const struct field android_notification_f[] = {
    S("title"), S("body"), S("icon"), S("color"), S("sound"), S("tag"), S("click_action"),
    S("body_loc_key"), SR("body_loc_args"), S("title_loc_key"), SR("title_loc_args"),
    S("channel_id"), S("ticker"), B("sticky"), TS("event_time"), B("local_only"),
    E("notification_priority", notification_priority), B("default_sound"),
    B("default_vibrate_timings"), B("default_light_settings"), DR("vibrate_timings"),
    E("visibility", visibility), I32("notification_count"), M("light_settings", light_m),
    S("image"), B("bypass_proxy_notification"), E("proxy", proxy),
};
MSG(android_notification_m, "AndroidNotification", android_notification_f);
static const struct field android_f[] = {
    S("collapse_key"), E("priority", android_priority), D("ttl"), S("restricted_package_name"),
    MAP("data"), M("notification", android_notification_m),
    M("fcm_options", android_fcm_options_m), B("direct_boot_ok"), B("restricted_satellite_ok"),
    B("bandwidth_constrained_ok"),
};
MSG(android_m, "AndroidConfig", android_f);
static const struct field webpush_options_f[] = { S("link"), S("analytics_label") };
MSG(webpush_options_m, "WebpushFcmOptions", webpush_options_f);
static const struct field webpush_f[] = { MAP("headers"), MAP("data"), ST("notification"),
                                          M("fcm_options", webpush_options_m) };
MSG(webpush_m, "WebpushConfig", webpush_f);
static const struct field apns_options_f[] = { S("analytics_label"), S("image") };
MSG(apns_options_m, "ApnsFcmOptions", apns_options_f);
static const struct field apns_f[] = { MAP("headers"), ST("payload"),
                                       M("fcm_options", apns_options_m),
                                       S("live_activity_token") };
MSG(apns_m, "ApnsConfig", apns_f);
static const struct field message_f[] = {
    S("name"), MAP("data"), M("notification", notification_m), M("android", android_m),
    M("webpush", webpush_m), M("apns", apns_m), M("fcm_options", fcm_options_m),
    TGT("token"), TGT("topic"), TGT("condition"),
};
MSG(message_m, "Message", message_f);
static const struct field request_f[] = { B("validate_only"), M("message", message_m) };
MSG(request_m, "SendMessageRequest", request_f);

/* ---- error collection -------------------------------------------------------- */

#define MAX_ERRORS 20

struct errs {
    struct sbx_fcm_violation *v;
    size_t n;
};

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Takes ownership of |desc|. */
static void add_error(struct errs *e, const char *field, char *desc)
{
    if (e->n >= MAX_ERRORS) {
        free(desc);
        return;
    }
    e->v = xrealloc(e->v, (e->n + 1) * sizeof *e->v);
    e->v[e->n].field = xstrdup(field);
    e->v[e->n].description = desc;
    e->n++;
}

/* "Unknown name" style errors: |what| after the colon. */
static void err_name(struct errs *e, const char *path, const char *name, const char *what)
{
    if (path[0])
        add_error(e, path, xasprintf("Invalid JSON payload received. Unknown name \"%s\" at "
                                     "'%s': %s", name, path, what));
    else
        add_error(e, "", xasprintf("Invalid JSON payload received. Unknown name \"%s\": %s",
                                   name, what));
}

/* A JSON value as Google prints it in "Invalid value" errors. */
static char *render(const cJSON *v)
{
    if (cJSON_IsString(v))
        return xasprintf("\"%s\"", v->valuestring);
    if (cJSON_IsBool(v))
        return xstrdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNull(v))
        return xstrdup("null");
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == (double)(long long)d && d > -1e15 && d < 1e15)
            return xasprintf("%lld", (long long)d);
        return xasprintf("%.15g", d);
    }
    if (cJSON_IsObject(v))
        return xstrdup("Starting an object on a scalar field");
    return xstrdup("Starting a list on a scalar field");
}

static void err_value(struct errs *e, const char *path, const char *type, const cJSON *v)
{
    char *r = render(v);
    add_error(e, path, xasprintf("Invalid value at '%s' (%s), %s", path, type, r));
    free(r);
}

/* ---- value checks -------------------------------------------------------------- */

/* protobuf Duration in JSON: ^\d+(\.\d{1,9})?s$ (negative ones are not
 * FCM-valid anyway), at most 315576000000 s. Sets |*seconds|. */
static bool duration_ok(const char *s, double *seconds)
{
    const char *p = s;
    size_t digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (digits == 0 || digits > 12)
        return false;
    if (*p == '.') {
        p++;
        size_t frac = 0;
        while (isdigit((unsigned char)*p)) {
            p++;
            frac++;
        }
        if (frac < 1 || frac > 9)
            return false;
    }
    if (p[0] != 's' || p[1] != '\0')
        return false;
    double d = strtod(s, NULL);
    if (d > 315576000000.0)
        return false;
    if (seconds)
        *seconds = d;
    return true;
}

static bool int32_ok(const cJSON *v)
{
    double d;
    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
    } else if (cJSON_IsString(v) && v->valuestring[0]) {
        char *end;
        errno = 0;
        long long ll = strtoll(v->valuestring, &end, 10);
        if (errno || *end)
            return false;
        d = (double)ll;
    } else {
        return false;
    }
    return d == (double)(long long)d && d >= -2147483648.0 && d <= 2147483647.0;
}

static bool float_ok(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return true;
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return false;
    if (!strcmp(v->valuestring, "NaN") || !strcmp(v->valuestring, "Infinity") ||
        !strcmp(v->valuestring, "-Infinity"))
        return true;
    char *end;
    strtod(v->valuestring, &end);
    return *end == '\0';
}

static bool enum_ok(const struct enumdef *en, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        for (size_t i = 0; i < en->n; i++)
            if (strcasecmp(v->valuestring, en->values[i]) == 0)
                return true;
        return false;
    }
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        return d == (double)(long long)d && d >= 0 && d < (double)en->n;
    }
    return false;
}

/* ---- the walk ------------------------------------------------------------------- */

static void walk_msg(struct errs *e, const struct msgdef *m, const cJSON *obj, const char *path);

static const char *scalar_type(const struct field *f, char *buf, size_t len)
{
    switch (f->type) {
    case T_STRING: return "TYPE_STRING";
    case T_BOOL: return "TYPE_BOOL";
    case T_INT32: return "TYPE_INT32";
    case T_FLOAT: return "TYPE_FLOAT";
    case T_ENUM:
        snprintf(buf, len, "type.googleapis.com/google.firebase.fcm.v1.%s", f->en->type);
        return buf;
    case T_DURATION: return "type.googleapis.com/google.protobuf.Duration";
    case T_TIMESTAMP: return "type.googleapis.com/google.protobuf.Timestamp";
    case T_STRUCT: return "type.googleapis.com/google.protobuf.Struct";
    case T_MSG:
        snprintf(buf, len, "type.googleapis.com/%s", f->msg->type);
        return buf;
    case T_MAP: return "TYPE_MESSAGE";
    }
    return "TYPE_MESSAGE";
}

/* One non-repeated value |v| (not null, not an array) of field |f| at |path|. */
static void walk_value(struct errs *e, const struct field *f, const cJSON *v, const char *path)
{
    char tbuf[160];
    bool ok = false;
    switch (f->type) {
    case T_STRING: ok = cJSON_IsString(v); break;
    case T_BOOL: ok = cJSON_IsBool(v); break;
    case T_INT32: ok = int32_ok(v); break;
    case T_FLOAT: ok = float_ok(v); break;
    case T_ENUM: ok = enum_ok(f->en, v); break;
    case T_DURATION: ok = cJSON_IsString(v) && duration_ok(v->valuestring, NULL); break;
    case T_TIMESTAMP: {
        int64_t ms;
        ok = cJSON_IsString(v) && rfc3339_parse_ms(v->valuestring, &ms) == 0;
        break;
    }
    case T_STRUCT: ok = cJSON_IsObject(v); break;
    case T_MSG:
        if (cJSON_IsObject(v)) {
            walk_msg(e, f->msg, v, path);
            return;
        }
        break;
    case T_MAP: break; /* handled by walk_map */
    }
    if (!ok)
        err_value(e, path, scalar_type(f, tbuf, sizeof tbuf), v);
}

/* map<string,string>: an object whose values are strings. */
static void walk_map(struct errs *e, const struct msgdef *owner, const struct field *f,
                     const cJSON *v, const char *path)
{
    if (!cJSON_IsObject(v)) {
        /* The map's entry type, e.g. google.firebase.fcm.v1.Message.DataEntry. */
        char type[160], camel[64];
        size_t o = 0;
        bool up = true;
        for (const char *p = f->name; *p && o + 1 < sizeof camel; p++) {
            if (*p == '_') {
                up = true;
                continue;
            }
            camel[o++] = up ? (char)toupper((unsigned char)*p) : *p;
            up = false;
        }
        camel[o] = '\0';
        snprintf(type, sizeof type, "type.googleapis.com/%s.%sEntry", owner->type, camel);
        err_value(e, path, type, v);
        return;
    }
    size_t i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char ipath[320];
        snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
        if (cJSON_IsArray(it)) {
            char vpath[340];
            snprintf(vpath, sizeof vpath, "%s", ipath);
            err_name(e, vpath, "value", "Proto field is not repeating, cannot start list.");
            continue;
        }
        if (!cJSON_IsString(it)) {
            char vpath[340];
            snprintf(vpath, sizeof vpath, "%s.value", ipath);
            err_value(e, vpath, "TYPE_STRING", it);
        }
    }
}

/* Field |name| of |m|, by proto name or lowerCamelCase JSON name. */
static const struct field *find_field(const struct msgdef *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *p = m->fields[i].name, *q = name;
        if (strcmp(p, q) == 0)
            return &m->fields[i];
        /* lowerCamelCase: "analytics_label" == "analyticsLabel" */
        while (*p && *q) {
            if (*p == '_' && p[1] && *q == toupper((unsigned char)p[1]) && islower((unsigned char)p[1])) {
                p += 2;
                q++;
                continue;
            }
            if (*p != *q)
                break;
            p++;
            q++;
        }
        if (*p == '\0' && *q == '\0')
            return &m->fields[i];
    }
    return NULL;
}

static void walk_msg(struct errs *e, const struct msgdef *m, const cJSON *obj, const char *path)
{
    const struct field *target = NULL;
    for (const cJSON *it = obj->child; it; it = it->next) {
        const struct field *f = find_field(m, it->string);
        if (f == NULL) {
            err_name(e, path, it->string, "Cannot find field.");
            continue;
        }
        if (cJSON_IsNull(it))
            continue;
        char fpath[300];
        if (path[0])
            snprintf(fpath, sizeof fpath, "%s.%s", path, f->name);
        else
            snprintf(fpath, sizeof fpath, "%s", f->name);
        if (f->target) {
            if (target != NULL && target != f) {
                add_error(e, path, xasprintf("Invalid JSON payload received. Oneof field "
                                             "'target' is already set. Cannot set '%s'",
                                             f->name));
                continue;
            }
            target = f;
        }
        if (cJSON_IsArray(it) && !f->repeated) {
            err_name(e, path, it->string, "Proto field is not repeating, cannot start list.");
            continue;
        }
        if (f->repeated) {
            char tbuf[160];
            if (!cJSON_IsArray(it)) {
                err_value(e, fpath, scalar_type(f, tbuf, sizeof tbuf), it);
                continue;
            }
            size_t i = 0;
            for (const cJSON *el = it->child; el; el = el->next, i++) {
                char ipath[320];
                snprintf(ipath, sizeof ipath, "%s[%zu]", fpath, i);
                if (cJSON_IsNull(el) || cJSON_IsArray(el))
                    err_value(e, ipath, scalar_type(f, tbuf, sizeof tbuf), el);
                else
                    walk_value(e, f, el, ipath);
            }
            continue;
        }
        if (f->type == T_MAP)
            walk_map(e, m, f, it, fpath);
        else
            walk_value(e, f, it, fpath);
    }
}

/* ---- results ------------------------------------------------------------------ */

static const char MISSING_CRED[] =
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.";
static const char INVALID_CRED[] =
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.";
static const char BAD_TOKEN[] = "The registration token is not a valid FCM registration token";

void sbx_fcm_result_clear(struct sbx_fcm_result *r)
{
    free(r->message);
    for (size_t i = 0; i < r->nviolations; i++) {
        free(r->violations[i].field);
        free(r->violations[i].description);
    }
    free(r->violations);
    free(r->quota_subject);
    free(r->quota_description);
    free(r->target);
    cJSON_Delete(r->body);
    memset(r, 0, sizeof *r);
}

/* Drop the answer part of |r| (keeps project, target, body, sizes). */
static void reset_answer(struct sbx_fcm_result *r)
{
    free(r->message);
    r->message = NULL;
    for (size_t i = 0; i < r->nviolations; i++) {
        free(r->violations[i].field);
        free(r->violations[i].description);
    }
    free(r->violations);
    r->violations = NULL;
    r->nviolations = 0;
    free(r->quota_subject);
    free(r->quota_description);
    r->quota_subject = r->quota_description = NULL;
    r->error_code = NULL;
    r->bad_request = false;
    r->www_authenticate = false;
    r->body_kind = SBX_FCM_BODY_JSON;
    r->name[0] = '\0';
}

static int set_error(struct sbx_fcm_result *r, int status, const char *grpc, const char *message,
                     const char *error_code)
{
    reset_answer(r);
    r->status = status;
    r->grpc_status = grpc;
    r->message = xstrdup(message);
    r->error_code = error_code;
    return status;
}

/* Add one BadRequest field violation. */
static void add_violation(struct sbx_fcm_result *r, const char *field, const char *desc)
{
    r->bad_request = true;
    r->violations = xrealloc(r->violations, (r->nviolations + 1) * sizeof *r->violations);
    r->violations[r->nviolations].field = xstrdup(field);
    r->violations[r->nviolations].description = xstrdup(desc);
    r->nviolations++;
}

static void html_escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < outlen; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '&': rep = "&amp;"; break;
        case '"': rep = "&quot;"; break;
        }
        if (rep) {
            size_t l = strlen(rep);
            memcpy(out + o, rep, l);
            o += l;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

char *sbx_google_error_page(int status, const char *method, const char *path)
{
    char p[1200], m[64];
    html_escape(p, sizeof p, path ? path : "/");
    html_escape(m, sizeof m, method ? method : "");
    const char *title = status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
                                                                     : "Error";
    char text[1500];
    if (status == 404)
        snprintf(text, sizeof text,
                 "The requested URL <code>%s</code> was not found on this server.", p);
    else if (status == 405)
        snprintf(text, sizeof text,
                 "The request method <code>%s</code> is inappropriate for the URL "
                 "<code>%s</code>.", m, p);
    else
        snprintf(text, sizeof text, "The server cannot process the request.");
    return xasprintf("<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
                     "  <meta name=viewport content=\"initial-scale=1, minimum-scale=1, "
                     "width=device-width\">\n"
                     "  <title>Error %d (%s)!!1</title>\n"
                     "  <p><b>%d.</b> <ins>That\xe2\x80\x99s an error.</ins>\n"
                     "  <p>%s  <ins>That\xe2\x80\x99s all we know.</ins>\n",
                     status, title, status, text);
}

/* /v1/projects/{project}/messages:send (query string ignored). */
static bool parse_path(const char *path, char *project, size_t plen)
{
    static const char pre[] = "/v1/projects/", post[] = "/messages:send";
    if (path == NULL || strncmp(path, pre, sizeof pre - 1) != 0)
        return false;
    const char *p = path + sizeof pre - 1;
    const char *slash = strchr(p, '/');
    if (slash == NULL || slash == p || (size_t)(slash - p) >= plen)
        return false;
    const char *rest = slash;
    size_t rl = strcspn(rest, "?");
    if (rl != sizeof post - 1 || strncmp(rest, post, rl) != 0)
        return false;
    memcpy(project, p, (size_t)(slash - p));
    project[slash - p] = '\0';
    return true;
}

bool sbx_fcm_token_well_formed(const char *token, size_t len, size_t min_len)
{
    if (min_len == 0)
        min_len = SBX_FCM_TOKEN_MIN_LEN;
    if (len < min_len || len > SBX_FCM_TOKEN_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (!isalnum(c) && c != '_' && c != ':' && c != '-' && c != '.')
            return false;
    }
    return true;
}

static bool topic_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '%';
}

static bool topic_ok(const char *t)
{
    if (!*t || strlen(t) > 900)
        return false;
    for (; *t; t++)
        if (!topic_char((unsigned char)*t))
            return false;
    return true;
}

/* Condition grammar: expr := term (("&&" | "||") term)*;
 * term := "!"? ( "'" topic "'" "in" "topics" | "(" expr ")" ). */
struct cond {
    const char *p;
    int topics;
    int depth;
};

static void cond_ws(struct cond *c)
{
    while (*c->p == ' ' || *c->p == '\t')
        c->p++;
}

static bool cond_expr(struct cond *c);

static bool cond_term(struct cond *c)
{
    cond_ws(c);
    if (*c->p == '!') {
        c->p++;
        cond_ws(c);
    }
    if (*c->p == '(') {
        if (++c->depth > 16)
            return false;
        c->p++;
        if (!cond_expr(c))
            return false;
        cond_ws(c);
        if (*c->p != ')')
            return false;
        c->p++;
        c->depth--;
        return true;
    }
    if (*c->p != '\'')
        return false;
    const char *start = ++c->p;
    while (topic_char((unsigned char)*c->p))
        c->p++;
    if (c->p == start || *c->p != '\'')
        return false;
    c->p++;
    c->topics++;
    cond_ws(c);
    if (strncmp(c->p, "in", 2) != 0)
        return false;
    c->p += 2;
    if (*c->p != ' ' && *c->p != '\t')
        return false;
    cond_ws(c);
    if (strncmp(c->p, "topics", 6) != 0)
        return false;
    c->p += 6;
    return true;
}

static bool cond_expr(struct cond *c)
{
    if (!cond_term(c))
        return false;
    for (;;) {
        cond_ws(c);
        if (strncmp(c->p, "&&", 2) == 0 || strncmp(c->p, "||", 2) == 0) {
            c->p += 2;
            if (!cond_term(c))
                return false;
            continue;
        }
        return true;
    }
}

bool sbx_fcm_condition_valid(const char *cond)
{
    struct cond c = { cond, 0, 0 };
    if (!cond_expr(&c))
        return false;
    cond_ws(&c);
    return *c.p == '\0' && c.topics >= 1 && c.topics <= 5;
}

/* Data keys FCM reserves: "from", "message_type", anything starting with
 * "google" or "gcm". Returns the first reserved key of map |data| or NULL. */
static const char *reserved_key(const cJSON *data)
{
    if (!cJSON_IsObject(data))
        return NULL;
    for (const cJSON *it = data->child; it; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "from") || !strcmp(k, "message_type") || !strncmp(k, "google", 6) ||
            !strncmp(k, "gcm", 3))
            return k;
    }
    return NULL;
}

/* Case-insensitive lookup of a proto field by either name spelling. */
static const cJSON *get(const cJSON *o, const struct msgdef *m, const char *name)
{
    if (!cJSON_IsObject(o))
        return NULL;
    const cJSON *found = NULL;
    for (const cJSON *it = o->child; it; it = it->next) {
        const struct field *f = find_field(m, it->string);
        if (f && strcmp(f->name, name) == 0 && !cJSON_IsNull(it))
            found = it; /* the last one wins, as in proto JSON */
    }
    return found;
}

/* Bytes counted against the size limit: the compact JSON of the parts an
 * Android device receives (data, notification, android, fcm_options). */
static size_t payload_size(const cJSON *msg)
{
    cJSON *o = cJSON_CreateObject();
    static const char *const parts[] = { "data", "notification", "android", "fcm_options" };
    for (size_t i = 0; i < NF(parts); i++) {
        const cJSON *v = get(msg, &message_m, parts[i]);
        if (v)
            cJSON_AddItemToObject(o, parts[i], cJSON_Duplicate(v, true));
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s == NULL)
        abort();
    size_t n = strlen(s);
    cJSON_free(s);
    return n;
}

/* Parse the body; on failure fill |r| with Google's parse error. */
static cJSON *parse_body(const struct sbx_request *req, struct sbx_fcm_result *r)
{
    const char *b = (const char *)req->body;
    size_t len = req->body_len;
    size_t i = 0;
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
        i++;
    if (i == len)
        return cJSON_CreateObject(); /* an empty body is an empty request */
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(b, len, &end, false);
    if (j != NULL) {
        const char *p = end, *stop = b + len;
        while (p < stop && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p == stop)
            return j;
        cJSON_Delete(j);
        j = NULL;
        end = p; /* point at the trailing garbage */
    }
    /* Google quotes the line with the bad token and a caret under it. */
    size_t pos = end && end >= b && end <= b + len ? (size_t)(end - b) : 0;
    size_t ls = pos, le = pos;
    while (ls > 0 && b[ls - 1] != '\n' && pos - ls < 40)
        ls--;
    while (le < len && b[le] != '\n' && b[le] != '\r' && le - pos < 40)
        le++;
    char *line = xstrndup(b + ls, le - ls);
    if (!utf8_valid(line, le - ls) || memchr(line, '\0', le - ls))
        line[0] = '\0';
    char *desc = xasprintf("Invalid JSON payload received. Unexpected token.\n%s\n%*s^", line,
                           (int)(pos - ls), "");
    free(line);
    set_error(r, 400, "INVALID_ARGUMENT", desc, NULL);
    add_violation(r, "", desc);
    free(desc);
    return NULL;
}

int sbx_fcm_validate(const struct sbx_fcm_config *cfg, const struct sbx_request *req,
                     enum sbx_fcm_auth auth, const char *auth_project,
                     struct sbx_fcm_result *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    if (!parse_path(req->path, r->project, sizeof r->project)) {
        r->project[0] = '\0';
        set_error(r, 404, NULL, "", NULL);
        free(r->message);
        r->message = sbx_google_error_page(404, req->method, req->path);
        r->body_kind = SBX_FCM_BODY_HTML_404;
        return r->status;
    }
    if (req->method == NULL || strcmp(req->method, "POST") != 0) {
        set_error(r, 405, NULL, "", NULL);
        free(r->message);
        r->message = sbx_google_error_page(405, req->method, req->path);
        r->body_kind = SBX_FCM_BODY_HTML_405;
        return r->status;
    }
    if (auth == SBX_FCM_AUTH_MISSING || auth == SBX_FCM_AUTH_INVALID) {
        set_error(r, 401, "UNAUTHENTICATED",
                  auth == SBX_FCM_AUTH_MISSING ? MISSING_CRED : INVALID_CRED, NULL);
        r->www_authenticate = true;
        return r->status;
    }
    bool project_ok;
    if (auth == SBX_FCM_AUTH_OK) {
        project_ok = auth_project && strcmp(auth_project, r->project) == 0;
    } else {
        project_ok = cfg->nprojects == 0;
        for (size_t i = 0; i < cfg->nprojects; i++)
            if (strcmp(cfg->projects[i], r->project) == 0)
                project_ok = true;
    }
    if (!project_ok) {
        char *m = xasprintf("Permission 'cloudmessaging.messages.create' denied on resource "
                            "'//cloudresourcemanager.googleapis.com/projects/%s' (or it may not "
                            "exist).", r->project);
        set_error(r, 403, "PERMISSION_DENIED", m, NULL);
        free(m);
        return r->status;
    }

    /* Proto-JSON parse: every error at once, BadRequest only. */
    cJSON *body = parse_body(req, r);
    if (body == NULL)
        return r->status;
    r->body = body;
    if (!cJSON_IsObject(body)) {
        const char *d = "Invalid JSON payload received. Root element must be a message.";
        set_error(r, 400, "INVALID_ARGUMENT", d, NULL);
        add_violation(r, "", d);
        return r->status;
    }
    struct errs e = { 0 };
    walk_msg(&e, &request_m, body, "");
    if (e.n > 0) {
        size_t total = 1;
        for (size_t i = 0; i < e.n; i++)
            total += strlen(e.v[i].description) + 1;
        char *msg = xmalloc(total);
        msg[0] = '\0';
        for (size_t i = 0; i < e.n; i++) {
            if (i)
                strcat(msg, "\n");
            strcat(msg, e.v[i].description);
        }
        set_error(r, 400, "INVALID_ARGUMENT", msg, NULL);
        free(msg);
        r->bad_request = true;
        r->violations = e.v;
        r->nviolations = e.n;
        return r->status;
    }

    const cJSON *vo = get(body, &request_m, "validate_only");
    r->validate_only = cJSON_IsTrue(vo);
    const cJSON *msg = get(body, &request_m, "message");
    static const char *const targets[] = { "token", "topic", "condition" };
    const cJSON *target = NULL;
    for (size_t i = 0; i < NF(targets) && msg; i++) {
        const cJSON *t = get(msg, &message_m, targets[i]);
        if (cJSON_IsString(t) && t->valuestring[0]) {
            target = t;
            r->target_kind = targets[i];
            r->target = xstrdup(t->valuestring);
        }
    }
    const char *invalid_arg = "Request contains an invalid argument.";
    if (target == NULL) {
        const char *d = "Recipient of the message is not set.";
        set_error(r, 400, "INVALID_ARGUMENT", d, "INVALID_ARGUMENT");
        add_violation(r, "message", d);
        return r->status;
    }
    bool is_token = strcmp(r->target_kind, "token") == 0;
    bool is_topic = strcmp(r->target_kind, "topic") == 0;
    if (is_topic && !topic_ok(r->target)) {
        set_error(r, 400, "INVALID_ARGUMENT", invalid_arg, "INVALID_ARGUMENT");
        add_violation(r, "message.topic", "Invalid topic name");
        return r->status;
    }
    if (!is_token && !is_topic && !sbx_fcm_condition_valid(r->target)) {
        set_error(r, 400, "INVALID_ARGUMENT", invalid_arg, "INVALID_ARGUMENT");
        add_violation(r, "message.condition", "Invalid condition expression");
        return r->status;
    }
    if (is_token && (!sbx_fcm_token_well_formed(r->target, strlen(r->target), cfg->token_min_len) ||
                     (cfg->invalid_tokens && sbx_tokens_find(cfg->invalid_tokens, r->target)))) {
        set_error(r, 400, "INVALID_ARGUMENT", BAD_TOKEN, "INVALID_ARGUMENT");
        return r->status;
    }
    const cJSON *android = get(msg, &message_m, "android");
    const cJSON *ck = get(android, &android_m, "collapse_key");
    r->collapsible = cJSON_IsString(ck) && ck->valuestring[0] != '\0';
    const char *rk = reserved_key(get(msg, &message_m, "data"));
    const char *rk_field = "message.data";
    if (rk == NULL) {
        rk = reserved_key(get(android, &android_m, "data"));
        rk_field = "message.android.data";
    }
    if (rk != NULL) {
        char *d = xasprintf("Invalid data payload key: %s", rk);
        set_error(r, 400, "INVALID_ARGUMENT", d, "INVALID_ARGUMENT");
        add_violation(r, rk_field, d);
        free(d);
        return r->status;
    }
    const cJSON *ttl = get(android, &android_m, "ttl");
    double ttl_s = 0;
    if (cJSON_IsString(ttl) && duration_ok(ttl->valuestring, &ttl_s) && ttl_s > SBX_FCM_TTL_MAX_S) {
        const char *d = "The value of message.android.ttl is too long: the maximum is "
                        "2419200s (28 days).";
        set_error(r, 400, "INVALID_ARGUMENT", invalid_arg, "INVALID_ARGUMENT");
        add_violation(r, "message.android.ttl", d);
        return r->status;
    }
    r->payload_bytes = payload_size(msg);
    size_t limit = is_topic ? (cfg->max_topic_payload ? cfg->max_topic_payload
                                                      : SBX_FCM_MAX_TOPIC_PAYLOAD)
                            : (cfg->max_payload ? cfg->max_payload : SBX_FCM_MAX_PAYLOAD);
    if (r->payload_bytes > limit) {
        set_error(r, 400, "INVALID_ARGUMENT", "Android message is too big", "INVALID_ARGUMENT");
        return r->status;
    }
    if (is_token) {
        if (cfg->unregistered && sbx_tokens_find(cfg->unregistered, r->target))
            return set_error(r, 404, "NOT_FOUND", "Requested entity was not found.",
                             "UNREGISTERED");
        if (cfg->sender_mismatch && sbx_tokens_find(cfg->sender_mismatch, r->target))
            return set_error(r, 403, "PERMISSION_DENIED", "SenderId mismatch",
                             "SENDER_ID_MISMATCH");
        if (cfg->third_party_auth && sbx_tokens_find(cfg->third_party_auth, r->target))
            return set_error(r, 401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                             "THIRD_PARTY_AUTH_ERROR");
    }
    if (r->validate_only)
        snprintf(r->name, sizeof r->name, "projects/%s/messages/fake_message_id", r->project);
    return r->status;
}

/* ---- injected errors ------------------------------------------------------------ */

static const char *canonical_status(int status)
{
    switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 409: return "ABORTED";
    case 429: return "RESOURCE_EXHAUSTED";
    case 499: return "CANCELLED";
    case 500: return "INTERNAL";
    case 501: return "UNIMPLEMENTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "UNKNOWN" : "FAILED_PRECONDITION";
    }
}

void sbx_fcm_set_fault(struct sbx_fcm_result *r, int status, const char *error_code)
{
    const char *grpc = canonical_status(status), *msg, *code = NULL;
    switch (status) {
    case 400: msg = "Request contains an invalid argument."; code = "INVALID_ARGUMENT"; break;
    case 401: msg = "Auth error from APNS or Web Push Service"; code = "THIRD_PARTY_AUTH_ERROR"; break;
    case 403: msg = "SenderId mismatch"; code = "SENDER_ID_MISMATCH"; break;
    case 404: msg = "Requested entity was not found."; code = "UNREGISTERED"; break;
    case 429: msg = "Quota exceeded."; code = "QUOTA_EXCEEDED"; break;
    case 500: msg = "Internal error encountered."; code = "INTERNAL"; break;
    case 503: msg = "The service is currently unavailable."; code = "UNAVAILABLE"; break;
    case 504: msg = "Deadline expired before operation could complete."; break;
    default: msg = status >= 500 ? "Unknown error." : "Request failed."; break;
    }
    set_error(r, status, grpc, msg, error_code && error_code[0] ? error_code : code);
    if (status == 429) {
        char *d = xasprintf("Quota exceeded for quota metric 'Messages' and limit 'Messages per "
                            "minute' of service 'fcm.googleapis.com' for consumer 'project:%s'.",
                            r->project);
        free(r->message);
        r->message = d;
        r->quota_subject = xasprintf("project:%s", r->project);
        r->quota_description = xstrdup("Message rate exceeded.");
    }
}

void sbx_fcm_set_quota(struct sbx_fcm_result *r, bool device, const char *limit)
{
    set_error(r, 429, "RESOURCE_EXHAUSTED",
              device ? "Quota exceeded for the device: too many messages to one device."
                     : "Quota exceeded for the project: too many messages.", "QUOTA_EXCEEDED");
    r->quota_subject = device ? xstrdup("device") : xasprintf("project:%s", r->project);
    r->quota_description = xasprintf("%s message rate exceeded (limit: %s).",
                                     device ? "Device" : "Project", limit);
}

const char *sbx_fcm_reason(const struct sbx_fcm_result *r)
{
    if (r->body_kind == SBX_FCM_BODY_HTML_404)
        return "NOT_FOUND";
    if (r->body_kind == SBX_FCM_BODY_HTML_405)
        return "METHOD_NOT_ALLOWED";
    if (r->error_code)
        return r->error_code;
    return r->grpc_status;
}

void sbx_fcm_message_name(const char *project, int64_t now_us, char *out, size_t outlen)
{
    uint32_t h = 2166136261u;
    for (const char *p = project; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(out, outlen, "projects/%s/messages/0:%016lld%%%08x%08x", project,
             (long long)now_us, h, h);
}

/* ---- Google-style JSON printing (two-space indent, "key": value) ---------- */

struct buf {
    char *s;
    size_t n, cap;
};

static void put(struct buf *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void indent(struct buf *b, int depth)
{
    for (int i = 0; i < depth; i++)
        puts_(b, "  ");
}

static void put_string(struct buf *b, const char *s)
{
    cJSON *tmp = cJSON_CreateString(s);
    char *q = cJSON_PrintUnformatted(tmp);
    cJSON_Delete(tmp);
    if (q == NULL)
        abort();
    puts_(b, q);
    cJSON_free(q);
}

static void print_value(struct buf *b, const cJSON *v, int depth)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        bool obj = cJSON_IsObject(v);
        if (v->child == NULL) {
            puts_(b, obj ? "{}" : "[]");
            return;
        }
        puts_(b, obj ? "{\n" : "[\n");
        for (const cJSON *it = v->child; it; it = it->next) {
            indent(b, depth + 1);
            if (obj) {
                put_string(b, it->string);
                puts_(b, ": ");
            }
            print_value(b, it, depth + 1);
            puts_(b, it->next ? ",\n" : "\n");
        }
        indent(b, depth);
        puts_(b, obj ? "}" : "]");
        return;
    }
    if (cJSON_IsString(v)) {
        put_string(b, v->valuestring);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (s == NULL)
        abort();
    puts_(b, s);
    cJSON_free(s);
}

static char *print_json(const cJSON *v, size_t *len)
{
    struct buf b = { 0 };
    print_value(&b, v, 0);
    puts_(&b, "\n");
    *len = b.n;
    return b.s;
}

char *sbx_fcm_response_body(const struct sbx_fcm_result *r, size_t *len,
                            const char **content_type)
{
    if (r->body_kind != SBX_FCM_BODY_JSON) {
        *content_type = "text/html; charset=UTF-8";
        char *s = xstrdup(r->message ? r->message : "");
        *len = strlen(s);
        return s;
    }
    *content_type = "application/json; charset=UTF-8";
    cJSON *o = cJSON_CreateObject();
    if (r->status == 200) {
        cJSON_AddStringToObject(o, "name", r->name);
    } else {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddNumberToObject(e, "code", r->status);
        cJSON_AddStringToObject(e, "message", r->message ? r->message : "");
        cJSON_AddStringToObject(e, "status", r->grpc_status ? r->grpc_status : "UNKNOWN");
        if (r->bad_request || r->error_code || r->quota_subject) {
            cJSON *details = cJSON_AddArrayToObject(e, "details");
            if (r->bad_request) {
                cJSON *d = cJSON_CreateObject();
                cJSON_AddStringToObject(d, "@type", "type.googleapis.com/google.rpc.BadRequest");
                cJSON *fv = cJSON_AddArrayToObject(d, "fieldViolations");
                for (size_t i = 0; i < r->nviolations; i++) {
                    cJSON *v = cJSON_CreateObject();
                    if (r->violations[i].field[0])
                        cJSON_AddStringToObject(v, "field", r->violations[i].field);
                    cJSON_AddStringToObject(v, "description", r->violations[i].description);
                    cJSON_AddItemToArray(fv, v);
                }
                cJSON_AddItemToArray(details, d);
            }
            if (r->error_code) {
                cJSON *d = cJSON_CreateObject();
                cJSON_AddStringToObject(d, "@type",
                                        "type.googleapis.com/google.firebase.fcm.v1.FcmError");
                cJSON_AddStringToObject(d, "errorCode", r->error_code);
                cJSON_AddItemToArray(details, d);
            }
            if (r->quota_subject) {
                cJSON *d = cJSON_CreateObject();
                cJSON_AddStringToObject(d, "@type", "type.googleapis.com/google.rpc.QuotaFailure");
                cJSON *vs = cJSON_AddArrayToObject(d, "violations");
                cJSON *v = cJSON_CreateObject();
                cJSON_AddStringToObject(v, "subject", r->quota_subject);
                cJSON_AddStringToObject(v, "description",
                                        r->quota_description ? r->quota_description : "");
                cJSON_AddItemToArray(vs, v);
                cJSON_AddItemToArray(details, d);
            }
        }
    }
    char *s = print_json(o, len);
    cJSON_Delete(o);
    return s;
}
