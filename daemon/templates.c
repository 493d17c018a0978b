/*
 * Notification templates: what the phone shows, per event type and locale.
 *
 * Architecture. templates_load() reads <dir>/{nb,nn,en}.ini into memory and
 * feeds each through libinih's ini_parse_stream() with our own line reader.
 * The reader counts lines and refuses any line that would not fit the
 * parser's buffer (Debian's libinih silently cuts at 200 bytes), so a long
 * template is an error instead of a truncated text. The INI handler only
 * stores strings; validation runs afterwards over the finished set: every
 * locale defines every notification type, every placeholder names a field
 * from the type's allow-list below, every block is closed, and the [words]
 * section translates every enumerated value we print.
 *
 * Rendering walks the template text once, copying literal text and
 * substituting fields from the event (event_field). The same walker, in
 * validation mode, checks templates at load time, so anything that loads
 * renders without surprises.
 *
 * Template language (docs/templates.md):
 *   {field}            the event's top-level field (dates and words formatted)
 *   {?field}...{/field} only when the field is present and non-empty
 *   {!field}...{/field} only when the field is absent or empty
 *   {{ and }}          literal braces
 *
 * Privacy: the allow-lists never contain absence reasons, notes or codes;
 * health data cannot reach push text through a template. Names that look
 * like such fields get an explicit error message.
 */
#include "daemon/templates.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define N_TYPES 5            /* EVENT_MESSAGE_NEW .. EVENT_TIMETABLE_CHANGED */
#define NAME_MAX_LEN 40      /* longest field name in a placeholder */
#define FILE_MAX (1 << 20)   /* a template file larger than this is a mistake */

enum { LOC_NB = 0, LOC_NN, LOC_EN, LOC_COUNT };
static const char *const locale_names[LOC_COUNT] = { "nb", "nn", "en" };

enum { KEY_TITLE = 0, KEY_BODY, KEY_BODY_PREVIEW, KEY_COUNT };
static const char *const key_names[KEY_COUNT] = { "title", "body", "body_preview" };

/* Section names, indexed by enum event_type (the first five values). */
static const char *const type_sections[N_TYPES] = {
    [EVENT_MESSAGE_NEW] = "message.new",
    [EVENT_ABSENCE_REPORTED] = "absence.reported",
    [EVENT_ABSENCE_ALERT] = "absence.alert",
    [EVENT_LEAVE_DECIDED] = "leave.decided",
    [EVENT_TIMETABLE_CHANGED] = "timetable.changed",
};

/*
 * The fields a template of each type may use: the event's text fields
 * (docs/events.md) that are fit for a lock screen. Ids (student, thread,
 * reported_by) are not text, and absence reasons, notes and codes are
 * health data: they are not here and never may be.
 */
static const char *const allowed_fields[N_TYPES][6] = {
    [EVENT_MESSAGE_NEW] = { "sender_name", "school_name", "subject", NULL },
    [EVENT_ABSENCE_REPORTED] = { "student_name", "date", "kind", "from", "to", NULL },
    [EVENT_ABSENCE_ALERT] = { "student_name", "date", "lesson", NULL },
    [EVENT_LEAVE_DECIDED] = { "student_name", "from", "to", "decision", NULL },
    [EVENT_TIMETABLE_CHANGED] = { "student_name", "date", "summary", NULL },
};

/* Allowed only in message.new's body_preview (a per-tenant option). */
#define PREVIEW_FIELD "preview"

/* Names refused with a privacy message rather than "unknown field". */
static const char *const forbidden_fields[] = {
    "reason", "reason_code", "reasons", "code", "note", "notes", "comment",
    "comments", "description", "diagnosis", "absence_reason", "absence_code",
    "message", "text", "body", NULL
};

/* Enumerated values printed through the locale's [words] section. */
struct word {
    const char *field;
    const char *value;   /* also the key in [words] */
};
static const struct word words[] = {
    { "decision", "approved" },
    { "decision", "declined" },
    { "kind", "day" },
    { "kind", "hours" },
};
#define N_WORDS (sizeof words / sizeof words[0])

/* Fields shown as dates when their value is YYYY-MM-DD. */
static const char *const date_fields[] = { "date", "from", "to", NULL };

static const char *const en_months[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

struct locale_set {
    char *text[N_TYPES][KEY_COUNT];  /* template strings, NULL when unset */
    char *word[N_WORDS];             /* translations from [words] */
};

struct templates {
    struct locale_set loc[LOC_COUNT];
    uint64_t serial;                 /* unique per load: see templates_cache */
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        /* 256 fits most titles and bodies: one allocation per text. */
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_addc(struct buf *b, char c)
{
    buf_add(b, &c, 1);
}

static bool in_list(const char *const *list, const char *name)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


/*
 * Append field text to |b| made safe for a one-line notification: control
 * characters become spaces and invalid UTF-8 bytes become U+FFFD. Runs of
 * text that need no change are appended in one piece (a 3 KB subject used
 * to cost a capacity check and a memcpy per character).
 */
static void buf_add_clean(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7F) {
            i++;
            continue;
        }
        size_t l = c < 0x80 ? 1 : utf8_seq_len(u + i, n - i);
        if (l > 1) {
            i += l;
            continue;
        }
        buf_add(b, s + run, i - run);
        if (l == 0)
            buf_add(b, "\xEF\xBF\xBD", 3);
        else
            buf_addc(b, ' ');
        run = ++i;
    }
    buf_add(b, s + run, i - run);
}

/* ------------------------------------------------------------------------ */
/* Template walker: validation and rendering                                 */

struct walk {
    /* validation mode */
    bool validate;
    enum event_type type;
    int key;
    char *err;
    size_t errlen;
    const char *where;           /* "nb.ini [message.new] body" */
    /* render mode */
    const struct event *ev;
    const struct locale_set *ls;
    int loc;
    struct buf *out;
};

static bool field_allowed(enum event_type type, int key, const char *name)
{
    if (in_list(allowed_fields[type], name))
        return true;
    return type == EVENT_MESSAGE_NEW && key == KEY_BODY_PREVIEW &&
           strcmp(name, PREVIEW_FIELD) == 0;
}

/*
 * The raw value of field |name|: a string, or an integer printed into
 * |num|. NULL when absent.
 */
static const char *field_raw(const struct event *ev, const char *name,
                             char *num, size_t numlen)
{
    const char *v = event_field(ev, name);
    if (v || !ev->json)
        return v;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(ev->json, name);
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (d > -1e15 && d < 1e15 && d == (double)(long long)d)
            snprintf(num, numlen, "%lld", (long long)d);
        else
            snprintf(num, numlen, "%g", d);
        return num;
    }
    return NULL;
}

static bool field_present(const struct event *ev, const char *name)
{
    char num[64];
    const char *v = field_raw(ev, name, num, sizeof num);
    return v && *v;
}

/* Parse "YYYY-MM-DD" exactly; 0 or -1. */
static int parse_date(const char *s, int *y, int *m, int *d)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
            return -1;
    *y = atoi(s);
    *m = (s[5] - '0') * 10 + (s[6] - '0');
    *d = (s[8] - '0') * 10 + (s[9] - '0');
    if (*m < 1 || *m > 12 || *d < 1 || *d > 31)
        return -1;
    return 0;
}

/* Append the display form of field |name| for the walker's locale. */
static void emit_field(struct walk *w, const char *name)
{
    char num[64], tmp[32];
    const char *v = field_raw(w->ev, name, num, sizeof num);
    if (!v)
        return;
    for (size_t i = 0; i < N_WORDS; i++) {
        if (strcmp(words[i].field, name) == 0 && strcmp(words[i].value, v) == 0) {
            buf_add(w->out, w->ls->word[i], strlen(w->ls->word[i]));
            return;
        }
    }
    int y, m, d;
    if (in_list(date_fields, name) && parse_date(v, &y, &m, &d) == 0) {
        if (w->loc == LOC_EN)
            snprintf(tmp, sizeof tmp, "%d %s %04d", d, en_months[m - 1], y);
        else
            snprintf(tmp, sizeof tmp, "%02d.%02d.%04d", d, m, y);
        buf_add(w->out, tmp, strlen(tmp));
        return;
    }
    buf_add_clean(w->out, v, strlen(v));
}

static int walk_error(struct walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int walk_error(struct walk *w, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(w->err, w->errlen, "%s: %s", w->where, msg);
    return -1;
}

/*
 * Walk template text |s| of |n| bytes. In validation mode check syntax and
 * field names (both branches of every block); in render mode append to
 * w->out when |emit| is true. Returns 0 or -1 (validation errors only).
 */
static int walk(struct walk *w, const char *s, size_t n, bool emit)
{
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if ((c == '{' || c == '}') && i + 1 < n && s[i + 1] == c) {
            if (emit)
                buf_addc(w->out, c);
            i += 2;
            continue;
        }
        if (c == '}') {
            if (w->validate)
                return walk_error(w, "unmatched '}' (write '}}' for a brace)");
            i++;
            continue;
        }
        if (c != '{') {
            size_t j = i;
            while (j < n && s[j] != '{' && s[j] != '}')
                j++;
            if (emit)
                buf_add(w->out, s + i, j - i);
            i = j;
            continue;
        }
        /* A tag: '{' [?!/] name '}' */
        size_t j = i + 1;
        char sigil = 0;
        if (j < n && (s[j] == '?' || s[j] == '!' || s[j] == '/'))
            sigil = s[j++];
        size_t ns = j;
        while (j < n && (islower((unsigned char)s[j]) || isdigit((unsigned char)s[j]) ||
                         s[j] == '_'))
            j++;
        size_t nl = j - ns;
        if (j >= n || s[j] != '}' || nl == 0 || nl > NAME_MAX_LEN) {
            if (w->validate) {
                char frag[24];
                size_t fl = n - i < sizeof frag - 1 ? n - i : sizeof frag - 1;
                fl = utf8_cut_len(s + i, n - i, fl);
                memcpy(frag, s + i, fl);
                frag[fl] = '\0';
                return walk_error(w, "malformed placeholder near \"%s\" "
                                  "(fields are {lower_case}; write {{ for a brace)",
                                  frag);
            }
            i++;
            continue;
        }
        char name[NAME_MAX_LEN + 1];
        memcpy(name, s + ns, nl);
        name[nl] = '\0';
        size_t after = j + 1;

        if (sigil == '/') {
            if (w->validate)
                return walk_error(w, "'{/%s}' closes no block", name);
            i = after;
            continue;
        }
        if (w->validate && !field_allowed(w->type, w->key, name)) {
            if (in_list(forbidden_fields, name))
                return walk_error(w, "field '%s' is never allowed in push text "
                                  "(absence reasons, notes and codes are health data)",
                                  name);
            if (strcmp(name, PREVIEW_FIELD) == 0)
                return walk_error(w, "field '%s' is allowed only in message.new "
                                  "body_preview", name);
            return walk_error(w, "field '%s' is not available for this event type "
                              "(see docs/templates.md)", name);
        }
        if (sigil == 0) {
            if (emit)
                emit_field(w, name);
            i = after;
            continue;
        }
        /* A block: find its closing tag. */
        char close[NAME_MAX_LEN + 4];
        snprintf(close, sizeof close, "{/%s}", name);
        const char *end = memmem(s + after, n - after, close, strlen(close));
        if (!end) {
            if (w->validate) {
                char tag[NAME_MAX_LEN + 4];
                snprintf(tag, sizeof tag, "{%c%s}", sigil, name);
                return walk_error(w, "block '%s' is not closed", tag);
            }
            i = after;
            continue;
        }
        size_t inner_len = (size_t)(end - (s + after));
        if (w->validate) {
            if (walk(w, s + after, inner_len, false) != 0)
                return -1;
        } else if (emit) {
            bool present = field_present(w->ev, name);
            if (sigil == '?' ? present : !present)
                walk(w, s + after, inner_len, true);
        }
        i = after + inner_len + strlen(close);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */

/* A line reader for ini_parse_stream over an in-memory file. */
struct reader {
    const char *p, *end;
    int line;            /* number of the line last handed out */
    int limit;           /* longest line the parser takes, newline excluded */
    bool too_long;       /* stopped at an over-long line */
};

static char *reader_next(char *str, int num, void *stream)
{
    struct reader *r = stream;
    if (r->too_long || r->p >= r->end || num < 2)
        return NULL;
    const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    size_t len = nl ? (size_t)(nl - r->p) + 1 : (size_t)(r->end - r->p);
    r->line++;
    /* fgets semantics: at most num-1 bytes, the newline included. */
    if (len > (size_t)num - 1) {
        r->limit = num - 2;
        r->too_long = true;
        return NULL;
    }
    memcpy(str, r->p, len);
    str[len] = '\0';
    r->p += len;
    return str;
}

struct load_ctx {
    struct locale_set *ls;
    const char *file;    /* "nb.ini" */
    struct reader *rd;
    bool failed;
    char *err;
    size_t errlen;
};

static int load_fail(struct load_ctx *c, const char *section, const char *key,
                     const char *msg)
{
    if (!c->failed)
        set_err(c->err, c->errlen, "%s line %d [%s] %s: %s", c->file, c->rd->line,
                section, key, msg);
    c->failed = true;
    return 0;
}

static int load_handler(void *user, const char *section, const char *name,
                        const char *value)
{
    struct load_ctx *c = user;
    char **slot = NULL;
    if (c->failed)
        return 0;
    if (section[0] == '\0')
        return load_fail(c, section, name, "key outside a section");
    if (strcmp(section, "words") == 0) {
        for (size_t i = 0; i < N_WORDS; i++)
            if (strcmp(words[i].value, name) == 0)
                slot = &c->ls->word[i];
        if (!slot)
            return load_fail(c, section, name, "unknown word");
    } else {
        int type = -1, key = -1;
        for (int t = 0; t < N_TYPES; t++)
            if (strcmp(type_sections[t], section) == 0)
                type = t;
        if (type < 0)
            return load_fail(c, section, name, "unknown section (not a notification type)");
        for (int k = 0; k < KEY_COUNT; k++)
            if (strcmp(key_names[k], name) == 0)
                key = k;
        if (key < 0)
            return load_fail(c, section, name,
                             "unknown key (use title, body or body_preview)");
        slot = &c->ls->text[type][key];
    }
    if (*slot)
        return load_fail(c, section, name,
                         "defined twice (continuation lines are not supported)");
    if (value[0] == '\0')
        return load_fail(c, section, name, "empty value");
    *slot = xstrdup(value);
    return 1;
}

static int read_file(const char *path, char **data, size_t *len, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct buf b = { 0 };
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_add(&b, chunk, n);
        if (b.len > FILE_MAX) {
            set_err(err, errlen, "%s: larger than %d bytes", path, FILE_MAX);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        set_err(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc != 0) {
        free(b.p);
        return -1;
    }
    if (!b.p)
        buf_add(&b, "", 0);
    *data = b.p;
    *len = b.len;
    return 0;
}

/* Load one locale file into |ls|; 0 or -1 with |err| set. */
static int load_locale(const char *dir, int loc, struct locale_set *ls, char *err,
                       size_t errlen)
{
    char path[4096], file[16];
    char *data = NULL;
    size_t len = 0;
    int rc = -1;

    snprintf(file, sizeof file, "%s.ini", locale_names[loc]);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path) {
        set_err(err, errlen, "%s: template directory path too long", file);
        return -1;
    }
    if (read_file(path, &data, &len, err, errlen) != 0)
        return -1;
    if (memchr(data, '\0', len)) {
        set_err(err, errlen, "%s: contains a NUL byte", path);
        goto out;
    }
    if (!utf8_valid(data, len)) {
        set_err(err, errlen, "%s: not valid UTF-8", path);
        goto out;
    }

    struct reader rd = { .p = data, .end = data + len };
    struct load_ctx c = { .ls = ls, .file = path, .rd = &rd, .err = err,
                          .errlen = errlen };
    int r = ini_parse_stream(reader_next, &rd, load_handler, &c);
    if (c.failed)
        goto out;
    if (rd.too_long) {
        set_err(err, errlen, "%s line %d: line too long (the INI parser "
                "takes lines of at most %d bytes)", path, rd.line, rd.limit);
        goto out;
    }
    if (r != 0) {
        set_err(err, errlen, "%s line %d: syntax error", path, r);
        goto out;
    }

    /* Completeness and template validation. */
    for (int t = 0; t < N_TYPES; t++) {
        for (int k = 0; k < KEY_COUNT; k++) {
            char where[4200];
            const char *text = ls->text[t][k];
            if (!text) {
                if (k == KEY_BODY_PREVIEW)
                    continue;
                if (!ls->text[t][KEY_TITLE] && !ls->text[t][KEY_BODY])
                    set_err(err, errlen, "%s: missing section [%s]", path,
                            type_sections[t]);
                else
                    set_err(err, errlen, "%s [%s] %s: missing key", path,
                            type_sections[t], key_names[k]);
                goto out;
            }
            snprintf(where, sizeof where, "%s [%s] %s", path, type_sections[t],
                     key_names[k]);
            struct walk w = { .validate = true, .type = (enum event_type)t, .key = k,
                              .err = err, .errlen = errlen, .where = where };
            if (walk(&w, text, strlen(text), false) != 0)
                goto out;
        }
    }
    for (size_t i = 0; i < N_WORDS; i++) {
        if (!ls->word[i]) {
            set_err(err, errlen, "%s [words] %s: missing key (translation of %s=%s)",
                    path, words[i].value, words[i].field, words[i].value);
            goto out;
        }
    }
    rc = 0;
out:
    free(data);
    return rc;
}

int templates_load(const char *dir, struct templates **out, char *err,
                   size_t errlen)
{
    static uint64_t serial;
    struct templates *t = xcalloc(1, sizeof *t);
    t->serial = ++serial;
    *out = NULL;
    for (int loc = 0; loc < LOC_COUNT; loc++) {
        if (load_locale(dir, loc, &t->loc[loc], err, errlen) != 0) {
            templates_free(t);
            return -1;
        }
    }
    *out = t;
    return 0;
}

void templates_free(struct templates *t)
{
    if (!t)
        return;
    for (int loc = 0; loc < LOC_COUNT; loc++) {
        for (int ty = 0; ty < N_TYPES; ty++)
            for (int k = 0; k < KEY_COUNT; k++)
                free(t->loc[loc].text[ty][k]);
        for (size_t i = 0; i < N_WORDS; i++)
            free(t->loc[loc].word[i]);
    }
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Rendering                                                                 */

/*
 * Tidy rendered text in place: trim, collapse runs of spaces (left by
 * absent fields) and cut to TEMPLATES_TEXT_MAX bytes on a UTF-8 boundary
 * with "…". Returns |s|.
 */
static char *tidy(char *s)
{
    size_t r = 0, w = 0, len = strlen(s);
    while (r < len && s[r] == ' ')
        r++;
    for (; r < len; r++) {
        char c = s[r];
        if (c == ' ' && (r + 1 >= len || s[r + 1] == ' '))
            continue;
        s[w++] = c;
    }
    s[w] = '\0';
    if (w > TEMPLATES_TEXT_MAX) {
        size_t cut = utf8_cut_len(s, w, TEMPLATES_TEXT_MAX - 3);
        memcpy(s + cut, "\xE2\x80\xA6", 4);
    }
    return s;
}

static int loc_index(const char *locale)
{
    const char *l = templates_resolve_locale(locale, NULL);
    for (int i = 0; i < LOC_COUNT; i++)
        if (strcmp(l, locale_names[i]) == 0)
            return i;
    return LOC_NB;
}

static char *render_one(const struct templates *t, const struct event *ev, int loc,
                        const char *text)
{
    struct buf b = { 0 };
    struct walk w = { .ev = ev, .ls = &t->loc[loc], .loc = loc, .out = &b };
    buf_add(&b, "", 0);
    walk(&w, text, strlen(text), true);
    return tidy(b.p);
}

int templates_render_opts(const struct templates *t, const struct event *ev,
                          const char *locale, bool preview, char **title,
                          char **body)
{
    *title = NULL;
    *body = NULL;
    if (!t || !ev || (int)ev->type < 0 || (int)ev->type >= N_TYPES)
        return -1;
    int loc = loc_index(locale);
    char *const *texts = t->loc[loc].text[ev->type];
    const char *body_tpl = texts[KEY_BODY];
    if (preview && texts[KEY_BODY_PREVIEW])
        body_tpl = texts[KEY_BODY_PREVIEW];
    char *ti = render_one(t, ev, loc, texts[KEY_TITLE]);
    char *bo = render_one(t, ev, loc, body_tpl);
    if (ti[0] == '\0' && bo[0] == '\0') {
        free(ti);
        free(bo);
        return -1;
    }
    *title = ti;
    *body = bo;
    return 0;
}

int templates_render(const struct templates *t, const struct event *ev,
                     const char *locale, char **title, char **body)
{
    return templates_render_opts(t, ev, locale, false, title, body);
}

/* ------------------------------------------------------------------------ */
/* Rendering once per event and locale                                      */

struct templates_cache {
    const struct templates *t;
    uint64_t serial;             /* t->serial: a set loaded later at the same
                                    address is another set */
    const struct event *ev;      /* whose texts these are; NULL = empty */
    bool preview;                /* rendered with body_preview (the tenant's choice) */
    struct {
        bool done;
        int rc;
        char *title, *body;
    } loc[LOC_COUNT];
};

struct templates_cache *templates_cache_new(void)
{
    return xcalloc(1, sizeof(struct templates_cache));
}

static void cache_clear(struct templates_cache *c)
{
    for (int i = 0; i < LOC_COUNT; i++) {
        free(c->loc[i].title);
        free(c->loc[i].body);
    }
    memset(c, 0, sizeof *c);
}

void templates_cache_free(struct templates_cache *c)
{
    if (c) {
        cache_clear(c);
        free(c);
    }
}

void templates_cache_forget(struct templates_cache *c, const struct event *ev)
{
    if (c && c->ev == ev)
        cache_clear(c);
}

int templates_render_cached(struct templates_cache *c, const struct templates *t,
                            const struct event *ev, const char *locale, bool preview,
                            const char **title, const char **body)
{
    *title = NULL;
    *body = NULL;
    if (!t || !ev)
        return -1;
    if (c->ev != ev || c->t != t || c->serial != t->serial || c->preview != preview) {
        cache_clear(c);
        c->ev = ev;
        c->t = t;
        c->serial = t->serial;
        c->preview = preview;
    }
    int loc = loc_index(locale);
    if (!c->loc[loc].done) {
        c->loc[loc].rc = templates_render_opts(t, ev, locale, preview, &c->loc[loc].title,
                                               &c->loc[loc].body);
        c->loc[loc].done = true;
    }
    if (c->loc[loc].rc != 0)
        return -1;
    *title = c->loc[loc].title;
    *body = c->loc[loc].body;
    return 0;
}

/* Map a locale tag to an index, or -1 when unsupported. */
static int locale_lookup(const char *tag)
{
    char lang[4];
    size_t n = 0;
    if (!tag)
        return -1;
    while (tag[n] && tag[n] != '-' && tag[n] != '_' && tag[n] != '.' && n < 4)
        n++;
    if (n < 2 || n > 3 || (tag[n] && tag[n] != '-' && tag[n] != '_' && tag[n] != '.'))
        return -1;
    for (size_t i = 0; i < n; i++)
        lang[i] = (char)tolower((unsigned char)tag[i]);
    lang[n] = '\0';
    if (strcmp(lang, "nb") == 0 || strcmp(lang, "nob") == 0 || strcmp(lang, "no") == 0 ||
        strcmp(lang, "nor") == 0)
        return LOC_NB;
    if (strcmp(lang, "nn") == 0 || strcmp(lang, "nno") == 0)
        return LOC_NN;
    if (strcmp(lang, "en") == 0 || strcmp(lang, "eng") == 0)
        return LOC_EN;
    return -1;
}

const char *templates_resolve_locale(const char *device_locale,
                                     const char *tenant_default)
{
    int i = locale_lookup(device_locale);
    if (i < 0)
        i = locale_lookup(tenant_default);
    if (i < 0)
        i = LOC_NB;
    return locale_names[i];
}
