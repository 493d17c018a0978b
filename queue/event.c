/*
 * The v1 event contract: JSON in, a validated struct event out.
 *
 * Parsing is two steps. cJSON builds the document (cJSON_ParseWithLengthOpts,
 * so the input needs no NUL and we learn the byte where JSON broke); then the
 * validator walks it field by field, keeping pointers into the document
 * rather than copying strings. The first rule that fails decides the result:
 * a stable code (enum event_error) for metrics and dead letters, and a
 * precise human reason naming the field.
 *
 * Rules shared by all types: `v` is the number 1, `id` is 1..128 printable
 * bytes, `type` is known, `tenant` is a slug, `occurred_at` is RFC 3339,
 * optional `ttl_s` (0..28 days) and `priority` (high|normal). Each type then
 * has its own required fields (see the validators near the end): the five
 * notification types carry `recipients`; device.*, receipt.opened,
 * preferences.set and user.erase name one `user`. Unknown fields are ignored
 * so producers can add fields before we read them.
 *
 * "Printable" here means ASCII 0x20..0x7E: ids end up in Redis keys, hash
 * fields and log lines. Free text (names, previews) must be valid UTF-8.
 */
#include "queue/event.h"

#include "common/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[EVENT_TYPE_COUNT] = {
    [EVENT_MESSAGE_NEW] = "message.new",
    [EVENT_ABSENCE_REPORTED] = "absence.reported",
    [EVENT_ABSENCE_ALERT] = "absence.alert",
    [EVENT_LEAVE_DECIDED] = "leave.decided",
    [EVENT_TIMETABLE_CHANGED] = "timetable.changed",
    [EVENT_DEVICE_REGISTER] = "device.register",
    [EVENT_DEVICE_UNREGISTER] = "device.unregister",
    [EVENT_RECEIPT_OPENED] = "receipt.opened",
    [EVENT_PREFERENCES_SET] = "preferences.set",
    [EVENT_USER_ERASE] = "user.erase",
};

const char *event_type_name(enum event_type t)
{
    if ((int)t < 0 || t >= EVENT_TYPE_COUNT)
        return NULL;
    return type_names[t];
}

int event_type_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < EVENT_TYPE_COUNT; i++)
        if (strcmp(name, type_names[i]) == 0)
            return i;
    return -1;
}

bool event_is_notification(enum event_type t)
{
    return t <= EVENT_TIMETABLE_CHANGED && (int)t >= 0;
}

const char *event_error_code(int err)
{
    switch (err) {
    case 0: return "ok";
    case EVENT_ERR_JSON: return "invalid_json";
    case EVENT_ERR_TOO_LARGE: return "too_large";
    case EVENT_ERR_VERSION: return "unsupported_version";
    case EVENT_ERR_TYPE: return "unknown_type";
    case EVENT_ERR_MISSING: return "missing_field";
    case EVENT_ERR_INVALID: return "invalid_field";
    default: return "unknown";
    }
}

const char *event_field(const struct event *ev, const char *name)
{
    if (ev == NULL || ev->json == NULL || name == NULL)
        return NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(ev->json, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

void event_free(struct event *ev)
{
    if (ev == NULL)
        return;
    free(ev->recipients);
    cJSON_Delete(ev->json);
    free(ev);
}

/* ---- validation helpers ------------------------------------------------ */

struct vctx {
    struct event *ev;
    const cJSON *root;
    char *reason;
    size_t reasonlen;
};

static int fail(struct vctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record |code| with a formatted reason; returns |code| for tail calls. */
static int fail(struct vctx *c, int code, const char *fmt, ...)
{
    if (c->reason != NULL && c->reasonlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->reason, c->reasonlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Copy up to 64 bytes of untrusted |s| for quoting in a reason. */
static const char *quote(const char *s, char out[72])
{
    size_t i = 0;
    for (; s[i] != '\0' && i < 64; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

static bool is_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* `[a-z0-9][a-z0-9_-]{0,63}` */
static bool is_slug(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  (i > 0 && (ch == '_' || ch == '-'));
        if (!ok)
            return false;
    }
    return true;
}

/* App names as in the config: `[A-Za-z0-9._-]{1,64}`. */
static bool is_app_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* A calendar date "YYYY-MM-DD" (leap years honoured). */
static bool is_date(const char *s)
{
    static const int mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return !(m == 2 && d == 29 && !leap);
}

/* A wall-clock time "HH:MM". */
static bool is_hhmm(const char *s)
{
    if (strlen(s) != 5 || s[2] != ':')
        return false;
    int h = digits(s, 2), m = digits(s + 3, 2);
    return h >= 0 && h <= 23 && m >= 0 && m <= 59;
}

/* A date, or an RFC 3339 timestamp. */
static bool is_date_or_time(const char *s)
{
    int64_t ms;
    return is_date(s) || rfc3339_parse_ms(s, &ms) == 0;
}

static bool is_hex_digit(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A character of an FCM registration token: base64url, ':' and '.'. */
static bool is_fcm_token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == ':' || ch == '.';
}

/* How a string field is checked after the "is it a string" test. */
enum skind {
    S_TEXT,      /* non-empty valid UTF-8 */
    S_ID,        /* 1..128 printable bytes */
    S_ID_NOCOLON,/* S_ID without ':' (user and device ids) */
    S_DATE,      /* YYYY-MM-DD */
    S_HHMM,      /* HH:MM */
    S_DATE_TIME, /* YYYY-MM-DD or RFC 3339 */
};

static int check_kind(struct vctx *c, const char *name, const char *v, enum skind k)
{
    char q[72];
    size_t n = strlen(v);
    switch (k) {
    case S_TEXT:
        if (n == 0)
            return fail(c, EVENT_ERR_INVALID, "field '%s' must not be empty", name);
        if (!utf8_valid(v, n))
            return fail(c, EVENT_ERR_INVALID, "field '%s' is not valid UTF-8", name);
        return 0;
    case S_ID:
    case S_ID_NOCOLON:
        if (n == 0 || n > EVENT_ID_MAX)
            return fail(c, EVENT_ERR_INVALID, "field '%s' must be 1..%d bytes, got %zu",
                        name, EVENT_ID_MAX, n);
        if (!is_printable(v))
            return fail(c, EVENT_ERR_INVALID,
                        "field '%s' must contain printable ASCII only", name);
        if (k == S_ID_NOCOLON && strchr(v, ':') != NULL)
            return fail(c, EVENT_ERR_INVALID, "field '%s' must not contain ':'", name);
        return 0;
    case S_DATE:
        if (!is_date(v))
            return fail(c, EVENT_ERR_INVALID, "field '%s' must be a date YYYY-MM-DD, got '%s'",
                        name, quote(v, q));
        return 0;
    case S_HHMM:
        if (!is_hhmm(v))
            return fail(c, EVENT_ERR_INVALID, "field '%s' must be a time HH:MM, got '%s'",
                        name, quote(v, q));
        return 0;
    case S_DATE_TIME:
        if (!is_date_or_time(v))
            return fail(c, EVENT_ERR_INVALID,
                        "field '%s' must be a date YYYY-MM-DD or an RFC 3339 time, got '%s'",
                        name, quote(v, q));
        return 0;
    }
    return 0;
}

/*
 * Fetch string field |name| of |obj| into |*out| and check it as |k|.
 * An absent (or null) optional field gives *out = NULL and 0.
 */
static int get_str(struct vctx *c, const cJSON *obj, const char *name, bool required,
                   enum skind k, const char **out)
{
    *out = NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL || (!required && cJSON_IsNull(it))) {
        if (required)
            return fail(c, EVENT_ERR_MISSING, "missing required field '%s'", name);
        return 0;
    }
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field '%s' must be a string", name);
    int rc = check_kind(c, name, it->valuestring, k);
    if (rc == 0)
        *out = it->valuestring;
    return rc;
}

/* A required string that must equal one of the NULL-terminated |choices|. */
static int get_enum(struct vctx *c, const cJSON *obj, const char *name, bool required,
                    const char *const *choices, const char **out)
{
    *out = NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL || (!required && cJSON_IsNull(it))) {
        if (required)
            return fail(c, EVENT_ERR_MISSING, "missing required field '%s'", name);
        return 0;
    }
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field '%s' must be a string", name);
    for (size_t i = 0; choices[i] != NULL; i++) {
        if (strcmp(it->valuestring, choices[i]) == 0) {
            *out = it->valuestring;
            return 0;
        }
    }
    char list[128] = "", q[72];
    size_t o = 0;
    for (size_t i = 0; choices[i] != NULL && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s'%s'", i ? " or " : "", choices[i]);
    return fail(c, EVENT_ERR_INVALID, "field '%s' must be %s, got '%s'", name, list,
                quote(it->valuestring, q));
}

/* A JSON number that is a whole number in [lo, hi]. */
static bool whole_in(const cJSON *it, double lo, double hi, int64_t *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
        return false;
    *out = (int64_t)d;
    return true;
}

/* ---- common envelope --------------------------------------------------- */

static int parse_envelope(struct vctx *c)
{
    struct event *ev = c->ev;
    const cJSON *root = c->root;
    int rc;
    char q[72];

    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "v");
    if (v == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'v'");
    int64_t ver;
    if (!whole_in(v, 1, 1, &ver)) {
        if (cJSON_IsNumber(v))
            return fail(c, EVENT_ERR_VERSION, "unsupported version %g (expected 1)",
                        v->valuedouble);
        return fail(c, EVENT_ERR_VERSION, "unsupported version: field 'v' must be the number 1");
    }
    ev->v = 1;

    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (t == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'type'");
    if (!cJSON_IsString(t) || t->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'type' must be a string");
    int ty = event_type_from_name(t->valuestring);
    if (ty < 0)
        return fail(c, EVENT_ERR_TYPE, "unknown type '%s'", quote(t->valuestring, q));
    ev->type = (enum event_type)ty;

    if ((rc = get_str(c, root, "id", true, S_ID, &ev->id)) != 0)
        return rc;

    const cJSON *tn = cJSON_GetObjectItemCaseSensitive(root, "tenant");
    if (tn == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'tenant'");
    if (!cJSON_IsString(tn) || tn->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'tenant' must be a string");
    if (!is_slug(tn->valuestring))
        return fail(c, EVENT_ERR_INVALID,
                    "field 'tenant' must be a slug [a-z0-9][a-z0-9_-]{0,63}, got '%s'",
                    quote(tn->valuestring, q));
    ev->tenant = tn->valuestring;

    const cJSON *oa = cJSON_GetObjectItemCaseSensitive(root, "occurred_at");
    if (oa == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'occurred_at'");
    if (!cJSON_IsString(oa) || oa->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'occurred_at' must be a string");
    if (rfc3339_parse_ms(oa->valuestring, &ev->occurred_at_ms) != 0)
        return fail(c, EVENT_ERR_INVALID, "field 'occurred_at' must be an RFC 3339 time, got '%s'",
                    quote(oa->valuestring, q));

    ev->ttl_s = -1;
    const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(root, "ttl_s");
    if (ttl != NULL && !cJSON_IsNull(ttl) && !whole_in(ttl, 0, EVENT_TTL_MAX_S, &ev->ttl_s))
        return fail(c, EVENT_ERR_INVALID, "field 'ttl_s' must be a whole number 0..%d",
                    EVENT_TTL_MAX_S);

    static const char *const prios[] = { "high", "normal", NULL };
    const char *prio;
    if ((rc = get_enum(c, root, "priority", false, prios, &prio)) != 0)
        return rc;
    ev->priority = prio == NULL ? EVENT_PRIORITY_DEFAULT
                   : strcmp(prio, "high") == 0 ? EVENT_PRIORITY_HIGH
                                                : EVENT_PRIORITY_NORMAL;
    return 0;
}

/* ---- recipients -------------------------------------------------------- */

static int check_user_id(struct vctx *c, size_t i, const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > EVENT_ID_MAX)
        return fail(c, EVENT_ERR_INVALID, "field 'recipients[%zu]' user id must be 1..%d bytes",
                    i, EVENT_ID_MAX);
    if (!is_printable(u))
        return fail(c, EVENT_ERR_INVALID,
                    "field 'recipients[%zu]' user id must contain printable ASCII only", i);
    if (strchr(u, ':') != NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'recipients[%zu]' user id must not contain ':'",
                    i);
    return 0;
}

static int parse_recipients(struct vctx *c)
{
    struct event *ev = c->ev;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(c->root, "recipients");
    if (arr == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'recipients'");
    if (!cJSON_IsArray(arr))
        return fail(c, EVENT_ERR_INVALID, "field 'recipients' must be an array");
    size_t n = 0;
    for (const cJSON *it = arr->child; it != NULL; it = it->next) {
        if (++n > EVENT_MAX_RECIPIENTS)
            return fail(c, EVENT_ERR_INVALID, "field 'recipients' has more than %d entries",
                        EVENT_MAX_RECIPIENTS);
    }
    if (n == 0)
        return fail(c, EVENT_ERR_INVALID, "field 'recipients' must not be empty");

    ev->recipients = xcalloc(n, sizeof *ev->recipients);
    size_t i = 0;
    for (const cJSON *it = arr->child; it != NULL; it = it->next, i++) {
        struct event_recipient *r = &ev->recipients[i];
        r->badge = -1;
        if (cJSON_IsString(it) && it->valuestring != NULL) {
            r->user = it->valuestring;
        } else if (cJSON_IsObject(it)) {
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(it, "user");
            if (!cJSON_IsString(u) || u->valuestring == NULL)
                return fail(c, EVENT_ERR_INVALID,
                            "field 'recipients[%zu]' must be a string or {user, badge}", i);
            r->user = u->valuestring;
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(it, "badge");
            int64_t badge;
            if (b != NULL && !cJSON_IsNull(b)) {
                if (!whole_in(b, 0, 2147483647.0, &badge))
                    return fail(c, EVENT_ERR_INVALID,
                                "field 'recipients[%zu].badge' must be a whole number >= 0", i);
                r->badge = (int)badge;
            }
        } else {
            return fail(c, EVENT_ERR_INVALID,
                        "field 'recipients[%zu]' must be a string or {user, badge}", i);
        }
        int rc = check_user_id(c, i, r->user);
        if (rc != 0)
            return rc;
    }
    ev->n_recipients = n;
    return 0;
}

/* ---- per-type fields --------------------------------------------------- */

static int parse_message_new(struct vctx *c)
{
    const char *s;
    int rc;
    if ((rc = get_str(c, c->root, "thread", true, S_ID, &c->ev->thread)) ||
        (rc = get_str(c, c->root, "sender_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "school_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "subject", false, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "preview", false, S_TEXT, &s)))
        return rc;
    return 0;
}

static int parse_absence_reported(struct vctx *c)
{
    static const char *const kinds[] = { "day", "hours", NULL };
    const char *s;
    int rc;
    if ((rc = get_str(c, c->root, "student", true, S_ID, &s)) ||
        (rc = get_str(c, c->root, "student_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "date", true, S_DATE, &s)) ||
        (rc = get_enum(c, c->root, "kind", true, kinds, &s)) ||
        (rc = get_str(c, c->root, "from", false, S_HHMM, &s)) ||
        (rc = get_str(c, c->root, "to", false, S_HHMM, &s)) ||
        (rc = get_str(c, c->root, "reported_by", true, S_ID_NOCOLON, &c->ev->reported_by)))
        return rc;
    return 0;
}

static int parse_absence_alert(struct vctx *c)
{
    const char *s;
    int rc;
    if ((rc = get_str(c, c->root, "student", true, S_ID, &s)) ||
        (rc = get_str(c, c->root, "student_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "date", true, S_DATE, &s)) ||
        (rc = get_str(c, c->root, "lesson", false, S_TEXT, &s)))
        return rc;
    return 0;
}

static int parse_leave_decided(struct vctx *c)
{
    static const char *const decisions[] = { "approved", "declined", NULL };
    const char *s;
    int rc;
    if ((rc = get_str(c, c->root, "student", true, S_ID, &s)) ||
        (rc = get_str(c, c->root, "student_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "from", true, S_DATE_TIME, &s)) ||
        (rc = get_str(c, c->root, "to", true, S_DATE_TIME, &s)) ||
        (rc = get_enum(c, c->root, "decision", true, decisions, &s)))
        return rc;
    return 0;
}

static int parse_timetable_changed(struct vctx *c)
{
    const char *s;
    int rc;
    if ((rc = get_str(c, c->root, "student_name", true, S_TEXT, &s)) ||
        (rc = get_str(c, c->root, "date", true, S_DATE, &s)) ||
        (rc = get_str(c, c->root, "summary", true, S_TEXT, &s)))
        return rc;
    return 0;
}

/*
 * The device token's shape for |platform|. iOS: an APNs device token in hex,
 * an even number of 64..200 digits (32 bytes today; Apple says not to assume
 * a size). Android: an FCM registration token, 1..4096 characters of
 * [A-Za-z0-9_:.-] (base64url with ':'; the sandbox's fake also allows '.').
 * Reasons never quote the token: it addresses a guardian's phone.
 */
static int check_token(struct vctx *c, const char *platform, const char *t)
{
    size_t n = strlen(t);
    if (strcmp(platform, "ios") == 0) {
        if (n < EVENT_IOS_TOKEN_MIN || n > EVENT_IOS_TOKEN_MAX)
            return fail(c, EVENT_ERR_INVALID,
                        "field 'token' must be %d..%d hex digits for ios, got %zu bytes",
                        EVENT_IOS_TOKEN_MIN, EVENT_IOS_TOKEN_MAX, n);
        for (size_t i = 0; i < n; i++)
            if (!is_hex_digit(t[i]))
                return fail(c, EVENT_ERR_INVALID,
                            "field 'token' must be hex digits for ios (byte %zu is not)", i);
        if (n % 2 != 0)
            return fail(c, EVENT_ERR_INVALID,
                        "field 'token' must be an even number of hex digits for ios, got %zu",
                        n);
        return 0;
    }
    if (n < 1 || n > EVENT_ANDROID_TOKEN_MAX)
        return fail(c, EVENT_ERR_INVALID,
                    "field 'token' must be 1..%d bytes for android, got %zu",
                    EVENT_ANDROID_TOKEN_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (!is_fcm_token_char(t[i]))
            return fail(c, EVENT_ERR_INVALID,
                        "field 'token' must be [A-Za-z0-9_:.-] for android (byte %zu is not)", i);
    return 0;
}

static int parse_device_register(struct vctx *c)
{
    static const char *const platforms[] = { "ios", "android", NULL };
    static const char *const envs[] = { "production", "sandbox", NULL };
    struct event *ev = c->ev;
    int rc;
    if ((rc = get_str(c, c->root, "user", true, S_ID_NOCOLON, &ev->user)) ||
        (rc = get_str(c, c->root, "device", true, S_ID_NOCOLON, &ev->device)) ||
        (rc = get_enum(c, c->root, "platform", true, platforms, &ev->platform)))
        return rc;

    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(c->root, "token");
    if (tk == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'token'");
    if (!cJSON_IsString(tk) || tk->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'token' must be a string");
    if ((rc = check_token(c, ev->platform, tk->valuestring)) != 0)
        return rc;
    ev->token = tk->valuestring;

    const cJSON *app = cJSON_GetObjectItemCaseSensitive(c->root, "app");
    if (app == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field 'app'");
    if (!cJSON_IsString(app) || app->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field 'app' must be a string");
    if (!is_app_name(app->valuestring)) {
        char q[72];
        return fail(c, EVENT_ERR_INVALID, "field 'app' must match [A-Za-z0-9._-]{1,64}, got '%s'",
                    quote(app->valuestring, q));
    }
    ev->app = app->valuestring;

    /* Unknown or malformed locales fall back to the tenant default later. */
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(c->root, "locale");
    ev->locale = NULL;
    if (cJSON_IsString(lo) && lo->valuestring != NULL &&
        (strcmp(lo->valuestring, "nb") == 0 || strcmp(lo->valuestring, "nn") == 0 ||
         strcmp(lo->valuestring, "en") == 0))
        ev->locale = lo->valuestring;

    if ((rc = get_enum(c, c->root, "environment", false, envs, &ev->environment)) != 0)
        return rc;
    if (ev->environment == NULL)
        ev->environment = "production";
    return 0;
}

static int parse_device_unregister(struct vctx *c)
{
    int rc;
    if ((rc = get_str(c, c->root, "user", true, S_ID_NOCOLON, &c->ev->user)) ||
        (rc = get_str(c, c->root, "device", true, S_ID_NOCOLON, &c->ev->device)))
        return rc;
    return 0;
}

static int parse_receipt_opened(struct vctx *c)
{
    int rc;
    if ((rc = get_str(c, c->root, "event", true, S_ID, &c->ev->event_ref)) ||
        (rc = get_str(c, c->root, "user", true, S_ID_NOCOLON, &c->ev->user)) ||
        (rc = get_str(c, c->root, "device", true, S_ID_NOCOLON, &c->ev->device)))
        return rc;
    return 0;
}

/*
 * preferences.set: `muted`, absent or null for none, else an array of
 * notification type names (duplicates are harmless), into a bit mask.
 */
static int parse_muted(struct vctx *c)
{
    char q[72];
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(c->root, "muted");
    c->ev->muted_mask = 0;
    if (arr == NULL || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return fail(c, EVENT_ERR_INVALID,
                    "field 'muted' must be an array of notification types");
    size_t i = 0;
    for (const cJSON *it = arr->child; it != NULL; it = it->next, i++) {
        if (!cJSON_IsString(it) || it->valuestring == NULL)
            return fail(c, EVENT_ERR_INVALID, "field 'muted[%zu]' must be a string", i);
        int t = event_type_from_name(it->valuestring);
        if (t < 0 || !event_is_notification((enum event_type)t))
            return fail(c, EVENT_ERR_INVALID,
                        "field 'muted[%zu]' must be a notification type (message.new, "
                        "absence.reported, absence.alert, leave.decided, timetable.changed), "
                        "got '%s'", i, quote(it->valuestring, q));
        c->ev->muted_mask |= 1u << t;
    }
    return 0;
}

/* One end of `quiet_hours` ("start" or "end"): "HH:MM" into minutes. */
static int parse_quiet_time(struct vctx *c, const cJSON *obj, const char *key, int *min)
{
    char name[32];
    snprintf(name, sizeof name, "quiet_hours.%s", key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL)
        return fail(c, EVENT_ERR_MISSING, "missing required field '%s'", name);
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return fail(c, EVENT_ERR_INVALID, "field '%s' must be a string", name);
    int rc = check_kind(c, name, it->valuestring, S_HHMM);
    if (rc != 0)
        return rc;
    const char *v = it->valuestring;
    *min = digits(v, 2) * 60 + digits(v + 3, 2);
    return 0;
}

/*
 * preferences.set: `quiet_hours`, absent or null for none, else
 * {"start":"HH:MM","end":"HH:MM"} with start != end; end < start wraps
 * midnight (21:00 -> 07:00).
 */
static int parse_quiet_hours(struct vctx *c)
{
    struct event *ev = c->ev;
    const cJSON *qh = cJSON_GetObjectItemCaseSensitive(c->root, "quiet_hours");
    ev->quiet_start_min = ev->quiet_end_min = -1;
    if (qh == NULL || cJSON_IsNull(qh))
        return 0;
    if (!cJSON_IsObject(qh))
        return fail(c, EVENT_ERR_INVALID,
                    "field 'quiet_hours' must be an object {start, end} or null");
    int start, end, rc;
    if ((rc = parse_quiet_time(c, qh, "start", &start)) != 0 ||
        (rc = parse_quiet_time(c, qh, "end", &end)) != 0)
        return rc;
    if (start == end)
        return fail(c, EVENT_ERR_INVALID,
                    "field 'quiet_hours' must have start != end (both are %02d:%02d)",
                    start / 60, start % 60);
    ev->quiet_start_min = start;
    ev->quiet_end_min = end;
    return 0;
}

static int parse_preferences_set(struct vctx *c)
{
    int rc;
    if ((rc = get_str(c, c->root, "user", true, S_ID_NOCOLON, &c->ev->user)) ||
        (rc = parse_muted(c)) || (rc = parse_quiet_hours(c)))
        return rc;
    return 0;
}

static int parse_user_erase(struct vctx *c)
{
    return get_str(c, c->root, "user", true, S_ID_NOCOLON, &c->ev->user);
}

static int (*const type_parsers[EVENT_TYPE_COUNT])(struct vctx *) = {
    [EVENT_MESSAGE_NEW] = parse_message_new,
    [EVENT_ABSENCE_REPORTED] = parse_absence_reported,
    [EVENT_ABSENCE_ALERT] = parse_absence_alert,
    [EVENT_LEAVE_DECIDED] = parse_leave_decided,
    [EVENT_TIMETABLE_CHANGED] = parse_timetable_changed,
    [EVENT_DEVICE_REGISTER] = parse_device_register,
    [EVENT_DEVICE_UNREGISTER] = parse_device_unregister,
    [EVENT_RECEIPT_OPENED] = parse_receipt_opened,
    [EVENT_PREFERENCES_SET] = parse_preferences_set,
    [EVENT_USER_ERASE] = parse_user_erase,
};

/* ---- entry point ------------------------------------------------------- */

int event_parse(const char *json, size_t len, struct event **out,
                char *reason, size_t reasonlen)
{
    struct event *ev = NULL;
    struct vctx c = { .reason = reason, .reasonlen = reasonlen };
    int rc;

    *out = NULL;
    if (reason != NULL && reasonlen > 0)
        reason[0] = '\0';
    if (len > EVENT_MAX_BYTES)
        return fail(&c, EVENT_ERR_TOO_LARGE, "event is %zu bytes, more than the %u allowed",
                    len, EVENT_MAX_BYTES);
    if (json == NULL || len == 0)
        return fail(&c, EVENT_ERR_JSON, "invalid JSON near byte 0 (empty input)");

    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (doc == NULL) {
        size_t at = (end != NULL && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        return fail(&c, EVENT_ERR_JSON, "invalid JSON near byte %zu", at);
    }
    /* Only whitespace may follow the value (cJSON stops after it). */
    size_t pos = (end != NULL && end >= json && end <= json + len) ? (size_t)(end - json) : len;
    while (pos < len && (json[pos] == ' ' || json[pos] == '\t' || json[pos] == '\n' ||
                         json[pos] == '\r'))
        pos++;
    if (pos < len) {
        cJSON_Delete(doc);
        return fail(&c, EVENT_ERR_JSON, "invalid JSON near byte %zu (data after the value)", pos);
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return fail(&c, EVENT_ERR_INVALID, "event must be a JSON object");
    }

    ev = xcalloc(1, sizeof *ev);
    ev->json = doc;
    ev->ttl_s = -1;
    ev->quiet_start_min = ev->quiet_end_min = -1;
    c.ev = ev;
    c.root = doc;

    if ((rc = parse_envelope(&c)) != 0)
        goto out;
    if (event_is_notification(ev->type) && (rc = parse_recipients(&c)) != 0)
        goto out;
    rc = type_parsers[ev->type](&c);
out:
    if (rc != 0) {
        event_free(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

/* ---- redaction for dead letters --------------------------------------------- */

/* Fields whose values are ids, enums, dates or counts: kept as they are. */
static const char *const keep_fields[] = {
    "v", "id", "type", "tenant", "occurred_at", "ttl_s", "priority", "recipients",
    "thread", "student", "reported_by", "date", "kind", "from", "to", "decision",
    "user", "device", "platform", "app", "locale", "environment", "event", "muted",
    "quiet_hours",
};

static cJSON *redacted_value(const cJSON *v)
{
    char buf[64];
    if (cJSON_IsString(v))
        snprintf(buf, sizeof buf, "<redacted: %zu bytes>", strlen(v->valuestring));
    else
        snprintf(buf, sizeof buf, "<redacted>");
    return cJSON_CreateString(buf);
}

char *event_redact(const char *json, size_t len)
{
    cJSON *o = len <= EVENT_MAX_BYTES ? cJSON_ParseWithLength(json, len) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        char buf[80];
        snprintf(buf, sizeof buf, "<not a JSON object: %zu bytes>", len);
        return xstrdup(buf);
    }
    cJSON *out = cJSON_CreateObject();
    const cJSON *it;
    cJSON_ArrayForEach(it, o) {
        if (it->string == NULL)
            continue;
        bool keep = false;
        for (size_t i = 0; i < sizeof keep_fields / sizeof keep_fields[0] && !keep; i++)
            keep = strcmp(it->string, keep_fields[i]) == 0;
        if (strcmp(it->string, "token") == 0 && cJSON_IsString(it)) {
            char cut[32];
            snprintf(cut, sizeof cut, "%.8s\u2026", it->valuestring);
            cJSON_AddItemToObject(out, it->string, cJSON_CreateString(cut));
        } else if (keep) {
            cJSON_AddItemToObject(out, it->string, cJSON_Duplicate(it, true));
        } else {
            cJSON_AddItemToObject(out, it->string, redacted_value(it));
        }
    }
    cJSON_Delete(o);
    char *s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    char *r = xstrdup(s);
    cJSON_free(s);
    return r;
}
