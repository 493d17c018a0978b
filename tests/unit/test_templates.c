/*
 * daemon/templates: loading, validation errors, rendering per locale, the
 * privacy rule (no absence reasons) and locale resolution.
 */
#include "tests/unit/test.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <sys/stat.h>

#include "common/util.h"
#include "daemon/templates.h"
#include "queue/event.h"

/* The shipped templates, found from the working directory or this file. */
static const char *shipped_dir(void)
{
    static char path[4096];
    struct stat st;
    if (stat("config/templates/nb.ini", &st) == 0)
        return "config/templates";
    char file[4096];
    snprintf(file, sizeof file, "%s", __FILE__);
    snprintf(path, sizeof path, "%s/../../config/templates", dirname(file));
    return path;
}

static struct templates *load_shipped(void)
{
    struct templates *t = NULL;
    char err[512] = "";
    int rc = templates_load(shipped_dir(), &t, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "  load error: %s\n", err);
    ASSERT_EQ_INT(0, rc);
    ASSERT_NOT_NULL(t);
    return t;
}

/* A hand-built event of |type| whose top-level fields come from |json|. */
static struct event *mk_event(enum event_type type, const char *json)
{
    struct event *ev = xcalloc(1, sizeof *ev);
    ev->type = type;
    ev->json = cJSON_Parse(json);
    ASSERT_NOT_NULL(ev->json);
    return ev;
}

static void free_event(struct event *ev)
{
    cJSON_Delete(ev->json);
    free(ev);
}

/* Render and check both strings (NULL = don't check). */
static void expect(const struct templates *t, const struct event *ev,
                   const char *locale, const char *title, const char *body)
{
    char *ti = NULL, *bo = NULL;
    ASSERT_EQ_INT(0, templates_render(t, ev, locale, &ti, &bo));
    if (title)
        ASSERT_STR_EQ(title, ti);
    if (body)
        ASSERT_STR_EQ(body, bo);
    ASSERT(utf8_valid(ti, strlen(ti)));
    ASSERT(utf8_valid(bo, strlen(bo)));
    free(ti);
    free(bo);
}

/* ---- temp directories with modified copies of the shipped files ---- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ASSERT_NOT_NULL(f);
    char *data = xmalloc(1 << 16);
    size_t n = fread(data, 1, (1 << 16) - 1, f);
    data[n] = '\0';
    fclose(f);
    return data;
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ASSERT_NOT_NULL(f);
    fputs(content, f);
    fclose(f);
}

static char *copy_dir(void)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/varsel-tpl-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(dir));
    const char *names[] = { "nb.ini", "nn.ini", "en.ini" };
    for (int i = 0; i < 3; i++) {
        char src[4200];
        snprintf(src, sizeof src, "%s/%s", shipped_dir(), names[i]);
        char *data = slurp(src);
        write_file(dir, names[i], data);
        free(data);
    }
    return dir;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/*
 * In |dir|/|file|, replace the first line starting with |prefix| that
 * follows the line "[section]" by |line| (NULL deletes it).
 */
static void edit(const char *dir, const char *file, const char *section,
                 const char *prefix, const char *line)
{
    char path[4200], hdr[128];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(hdr, sizeof hdr, "[%s]\n", section);
    char *data = slurp(path);
    char *sec = strstr(data, hdr);
    ASSERT_NOT_NULL(sec);
    char *p = sec;
    for (;;) {
        p = strchr(p, '\n');
        ASSERT_NOT_NULL(p);
        p++;
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            break;
    }
    char *eol = strchr(p, '\n');
    ASSERT_NOT_NULL(eol);
    size_t outcap = strlen(data) + (line ? strlen(line) : 0) + 2;
    char *out = xmalloc(outcap);
    snprintf(out, outcap, "%.*s%s%s%s", (int)(p - data), data, line ? line : "",
             line ? "\n" : "", eol + 1);
    write_file(dir, file, out);
    free(out);
    free(data);
}

/* Load |dir| expecting failure; every needle must be in the message. */
static void expect_load_error(const char *dir, const char *n1, const char *n2,
                              const char *n3, const char *n4)
{
    struct templates *t = (struct templates *)1;
    char err[1024] = "";
    ASSERT_EQ_INT(-1, templates_load(dir, &t, err, sizeof err));
    ASSERT_NULL(t);
    const char *needles[] = { n1, n2, n3, n4 };
    for (int i = 0; i < 4; i++)
        if (needles[i])
            ASSERT_STR_CONTAINS(err, needles[i]);
}

/* ------------------------------------------------------------------------ */

TEST(loads_shipped_templates)
{
    struct templates *t = load_shipped();
    templates_free(t);
    templates_free(NULL);
}

TEST(message_new_with_subject)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_MESSAGE_NEW,
        "{\"sender_name\":\"Kari Nordmann\",\"school_name\":\"Bø skole\","
        "\"subject\":\"Foreldremøte torsdag\",\"thread\":\"th-1\"}");
    expect(t, ev, "nb", "Kari Nordmann, Bø skole", "Foreldremøte torsdag");
    expect(t, ev, "nn", "Kari Nordmann, Bø skole", "Foreldremøte torsdag");
    expect(t, ev, "en", "Kari Nordmann, Bø skole", "Foreldremøte torsdag");
    free_event(ev);
    templates_free(t);
}

TEST(message_new_without_subject_falls_back)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_MESSAGE_NEW,
        "{\"sender_name\":\"Kari Nordmann\",\"school_name\":\"Bø skole\"}");
    expect(t, ev, "nb", NULL, "Ny melding");
    expect(t, ev, "nn", NULL, "Ny melding");
    expect(t, ev, "en", NULL, "New message");
    free_event(ev);
    /* An empty subject counts as absent. */
    ev = mk_event(EVENT_MESSAGE_NEW,
        "{\"sender_name\":\"Kari\",\"school_name\":\"Bø skole\",\"subject\":\"\"}");
    expect(t, ev, "en", "Kari, Bø skole", "New message");
    free_event(ev);
    templates_free(t);
}

TEST(absence_reported_formats_dates_per_locale)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_ABSENCE_REPORTED,
        "{\"student\":\"s1\",\"student_name\":\"Ola\",\"date\":\"2026-11-28\","
        "\"kind\":\"day\",\"reported_by\":\"u9\"}");
    expect(t, ev, "nb", "Fravær meldt for Ola", "Ola er meldt fraværende 28.11.2026.");
    expect(t, ev, "nn", "Fråvær meldt for Ola", "Ola er meldt fråverande 28.11.2026.");
    expect(t, ev, "en", "Absence reported for Ola",
           "Ola has been reported absent on 28 Nov 2026.");
    free_event(ev);

    /* Hours: times pass through unchanged; a leading zero day in en. */
    ev = mk_event(EVENT_ABSENCE_REPORTED,
        "{\"student_name\":\"Ola\",\"date\":\"2027-01-05\",\"kind\":\"hours\","
        "\"from\":\"10:00\",\"to\":\"12:30\"}");
    expect(t, ev, "nb", NULL, "Ola er meldt fraværende 05.01.2027, 10:00–12:30.");
    expect(t, ev, "en", NULL, "Ola has been reported absent on 5 Jan 2027, 10:00–12:30.");
    free_event(ev);

    /* Not a date: printed as given. */
    ev = mk_event(EVENT_ABSENCE_REPORTED,
        "{\"student_name\":\"Ola\",\"date\":\"2026-13-28\"}");
    expect(t, ev, "nb", NULL, "Ola er meldt fraværende 2026-13-28.");
    free_event(ev);
    templates_free(t);
}

TEST(absence_reason_never_reaches_text)
{
    struct templates *t = load_shipped();
    const char *fields =
        "\"student\":\"s1\",\"student_name\":\"Ola\",\"date\":\"2026-11-28\","
        "\"from\":\"2026-11-28\",\"to\":\"2026-11-29\",\"lesson\":\"2. time\","
        "\"decision\":\"approved\",\"summary\":\"Gym flyttet\","
        "\"sender_name\":\"K\",\"school_name\":\"S\",\"subject\":\"x\","
        "\"reason\":\"SECRET-influensa\",\"note\":\"SECRET-lege\","
        "\"code\":\"SECRET-S1\",\"reason_code\":\"SECRET-M\"";
    char json[1024];
    snprintf(json, sizeof json, "{%s}", fields);
    const char *locs[] = { "nb", "nn", "en" };
    for (int ty = EVENT_MESSAGE_NEW; ty <= EVENT_TIMETABLE_CHANGED; ty++) {
        struct event *ev = mk_event((enum event_type)ty, json);
        for (int l = 0; l < 3; l++) {
            for (int pv = 0; pv < 2; pv++) {
                char *ti = NULL, *bo = NULL;
                ASSERT_EQ_INT(0, templates_render_opts(t, ev, locs[l], pv, &ti, &bo));
                ASSERT_NULL(strstr(ti, "SECRET"));
                ASSERT_NULL(strstr(bo, "SECRET"));
                free(ti);
                free(bo);
            }
        }
        free_event(ev);
    }
    templates_free(t);
}

TEST(template_using_reason_fails_to_load)
{
    char *dir = copy_dir();
    edit(dir, "nb.ini", "absence.reported", "body",
         "body = {student_name} er borte: {reason}");
    expect_load_error(dir, "nb.ini", "[absence.reported]", "body", "'reason'");
    char err[512] = "";
    struct templates *t = NULL;
    templates_load(dir, &t, err, sizeof err);
    ASSERT_STR_CONTAINS(err, "health data");
    /* Also inside a conditional block, and for notes and codes. */
    edit(dir, "nb.ini", "absence.reported", "body",
         "body = {student_name}{?note} ({note}){/note}");
    expect_load_error(dir, "nb.ini", "[absence.reported]", "body", "'note'");
    edit(dir, "nb.ini", "absence.reported", "body", "body = {student_name}");
    edit(dir, "nn.ini", "absence.alert", "title", "title = {!code}x{/code}");
    expect_load_error(dir, "nn.ini", "[absence.alert]", "title", "'code'");
    rm_dir(dir);
}

TEST(field_of_another_type_is_an_error)
{
    char *dir = copy_dir();
    edit(dir, "en.ini", "timetable.changed", "title", "title = {sender_name}");
    expect_load_error(dir, "en.ini", "[timetable.changed]", "title", "'sender_name'");
    edit(dir, "en.ini", "timetable.changed", "title", "title = {student_name}");
    /* preview only in message.new body_preview */
    edit(dir, "en.ini", "message.new", "body =", "body = {preview}");
    expect_load_error(dir, "en.ini", "[message.new]", "body", "'preview'");
    rm_dir(dir);
}

/* A misspelt or invented field is a load error naming file, section, key
 * and field (at start-up and on reload alike: both use templates_load). */
TEST(unknown_field_is_an_error)
{
    char *dir = copy_dir();
    edit(dir, "nb.ini", "absence.alert", "title", "title = Fravær for {studnet_name}");
    expect_load_error(dir, "nb.ini", "[absence.alert]", "title", "'studnet_name'");
    edit(dir, "nb.ini", "absence.alert", "title", "title = Fravær");
    edit(dir, "en.ini", "leave.decided", "body =", "body = {?grade}x{/grade}");
    expect_load_error(dir, "en.ini", "[leave.decided]", "body", "'grade'");
    rm_dir(dir);
}

TEST(syntax_errors)
{
    char *dir = copy_dir();
    edit(dir, "nb.ini", "leave.decided", "body", "body = {?from}fra {from}");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "body", "not closed");
    edit(dir, "nb.ini", "leave.decided", "body", "body = {student_name");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "body", "malformed");
    edit(dir, "nb.ini", "leave.decided", "body", "body = {Student_Name}");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "body", "malformed");
    edit(dir, "nb.ini", "leave.decided", "body", "body = a } b");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "body", "'}'");
    edit(dir, "nb.ini", "leave.decided", "body", "body = x{/from}");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "body", "closes no block");
    edit(dir, "nb.ini", "leave.decided", "body", "body = {student_name}");
    edit(dir, "nb.ini", "leave.decided", "title", "titel = x");
    expect_load_error(dir, "nb.ini", "[leave.decided]", "titel", "unknown key");
    rm_dir(dir);
}

TEST(missing_locale_file_or_section)
{
    char *dir = copy_dir();
    char p[256];
    snprintf(p, sizeof p, "%s/nn.ini", dir);
    unlink(p);
    expect_load_error(dir, "nn.ini", NULL, NULL, NULL);
    rm_dir(dir);

    dir = copy_dir();
    /* Drop the whole [timetable.changed] section of en.ini. */
    char path[256];
    snprintf(path, sizeof path, "%s/en.ini", dir);
    char *data = slurp(path);
    char *sec = strstr(data, "[timetable.changed]");
    ASSERT_NOT_NULL(sec);
    *sec = '\0';
    write_file(dir, "en.ini", data);
    free(data);
    expect_load_error(dir, "en.ini", "missing section", "[timetable.changed]", NULL);

    rm_dir(dir);

    /* A section without body. */
    dir = copy_dir();
    edit(dir, "en.ini", "absence.alert", "body", NULL);
    expect_load_error(dir, "en.ini", "[absence.alert]", "body", "missing key");
    rm_dir(dir);

    struct templates *t = NULL;
    char err[256] = "";
    ASSERT_EQ_INT(-1, templates_load("/nonexistent/varsel", &t, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "nb.ini");
}

TEST(unknown_section_and_missing_words)
{
    char *dir = copy_dir();
    edit(dir, "nb.ini", "words", "declined", NULL);
    expect_load_error(dir, "nb.ini", "[words]", "declined", "missing");
    rm_dir(dir);
    dir = copy_dir();
    edit(dir, "nn.ini", "words", "approved", "[message.nwe]\ntitle = x");
    expect_load_error(dir, "nn.ini", "message.nwe", "unknown section", NULL);
    rm_dir(dir);
}

TEST(duplicate_key_and_continuation_rejected)
{
    char *dir = copy_dir();
    edit(dir, "nb.ini", "absence.alert", "title", "title = Fravær\ntitle = igjen");
    expect_load_error(dir, "nb.ini", "[absence.alert]", "title", "twice");
    rm_dir(dir);
    dir = copy_dir();
    edit(dir, "nb.ini", "absence.alert", "title", "title = Fravær\n  fortsatt");
    expect_load_error(dir, "nb.ini", "[absence.alert]", "title", NULL);
    rm_dir(dir);
}

TEST(over_long_line_is_an_error_not_cut)
{
    char *dir = copy_dir();
    char line[400];
    int n = snprintf(line, sizeof line, "body = {student_name} ");
    while (n < 300)
        line[n++] = 'x';
    line[n] = '\0';
    edit(dir, "en.ini", "timetable.changed", "body", line);
    expect_load_error(dir, "en.ini", "too long", "line ", NULL);
    /* 198 bytes still load. */
    line[198] = '\0';
    edit(dir, "en.ini", "timetable.changed", "body", line);
    struct templates *t = NULL;
    char err[512] = "";
    int rc = templates_load(dir, &t, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err);
    ASSERT_EQ_INT(0, rc);
    struct event *ev = mk_event(EVENT_TIMETABLE_CHANGED, "{\"student_name\":\"Ola\"}");
    char *ti, *bo;
    ASSERT_EQ_INT(0, templates_render(t, ev, "en", &ti, &bo));
    ASSERT_EQ_INT(198 - strlen("body = {student_name} ") + strlen("Ola "), strlen(bo));
    free(ti);
    free(bo);
    free_event(ev);
    templates_free(t);
    rm_dir(dir);
}

TEST(leave_decided_words)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_LEAVE_DECIDED,
        "{\"student_name\":\"Ola\",\"from\":\"2026-12-01\",\"to\":\"2026-12-03\","
        "\"decision\":\"approved\"}");
    expect(t, ev, "nb", "Permisjonssøknad innvilget",
           "Søknaden om permisjon for Ola 01.12.2026–03.12.2026 er innvilget.");
    expect(t, ev, "nn", "Permisjonssøknad innvilga",
           "Søknaden om permisjon for Ola 01.12.2026–03.12.2026 er innvilga.");
    expect(t, ev, "en", "Leave request approved",
           "The leave request for Ola (1 Dec 2026–3 Dec 2026) has been approved.");
    free_event(ev);
    ev = mk_event(EVENT_LEAVE_DECIDED,
        "{\"student_name\":\"Ola\",\"from\":\"2026-12-01\",\"to\":\"2026-12-03\","
        "\"decision\":\"declined\"}");
    expect(t, ev, "nb", "Permisjonssøknad avslått", NULL);
    expect(t, ev, "nn", "Permisjonssøknad avslått", NULL);
    expect(t, ev, "en", "Leave request declined", NULL);
    free_event(ev);
    templates_free(t);
}

TEST(absence_alert_and_timetable)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_ABSENCE_ALERT,
        "{\"student_name\":\"Ola\",\"date\":\"2026-11-28\",\"lesson\":3}");
    expect(t, ev, "nb", "Fravær som ikke er meldt",
           "Ola er registrert fraværende 28.11.2026 (3), men ingen har meldt fravær. "
           "Sjekk at alt er i orden, og kontakt skolen.");
    expect(t, ev, "nn", "Fråvær som ikkje er meldt", NULL);
    free_event(ev);
    ev = mk_event(EVENT_TIMETABLE_CHANGED,
        "{\"student_name\":\"Ola\",\"date\":\"2026-11-30\",\"summary\":\"Gym flyttet til 3. time\"}");
    expect(t, ev, "nb", "Endret timeplan for Ola", "30.11.2026: Gym flyttet til 3. time");
    expect(t, ev, "nn", "Endra timeplan for Ola", NULL);
    free_event(ev);
    ev = mk_event(EVENT_TIMETABLE_CHANGED, "{\"student_name\":\"Ola\"}");
    expect(t, ev, "nn", NULL, "Sjå timeplanen i appen.");
    free_event(ev);
    templates_free(t);
}

TEST(unknown_locale_renders_nb)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_MESSAGE_NEW, "{\"sender_name\":\"K\"}");
    expect(t, ev, NULL, "K", "Ny melding");
    expect(t, ev, "de", "K", "Ny melding");
    expect(t, ev, "en-GB", "K", "New message");
    expect(t, ev, "nn_NO", "K", "Ny melding");
    free_event(ev);
    templates_free(t);
}

TEST(resolve_locale)
{
    ASSERT_STR_EQ("nb", templates_resolve_locale(NULL, NULL));
    ASSERT_STR_EQ("nn", templates_resolve_locale("nn", "en"));
    ASSERT_STR_EQ("en", templates_resolve_locale("de", "en"));
    ASSERT_STR_EQ("en", templates_resolve_locale(NULL, "EN"));
    ASSERT_STR_EQ("nb", templates_resolve_locale("de", "fr"));
    ASSERT_STR_EQ("nb", templates_resolve_locale("no", "nn"));
    ASSERT_STR_EQ("nb", templates_resolve_locale("nb-NO", NULL));
    ASSERT_STR_EQ("nn", templates_resolve_locale("NN_no", NULL));
    ASSERT_STR_EQ("en", templates_resolve_locale("en_GB.UTF-8", NULL));
    ASSERT_STR_EQ("nn", templates_resolve_locale("", "nn"));
    ASSERT_STR_EQ("nn", templates_resolve_locale("nbx", "nn"));
    ASSERT_STR_EQ("nn", templates_resolve_locale("n", "nn"));
}

TEST(preview_only_when_asked)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_MESSAGE_NEW,
        "{\"sender_name\":\"K\",\"school_name\":\"S\",\"subject\":\"Tur\","
        "\"preview\":\"Husk matpakke\"}");
    expect(t, ev, "nb", "K, S", "Tur");
    char *ti, *bo;
    ASSERT_EQ_INT(0, templates_render_opts(t, ev, "nb", true, &ti, &bo));
    ASSERT_STR_EQ("Tur: Husk matpakke", bo);
    free(ti);
    free(bo);
    free_event(ev);
    ev = mk_event(EVENT_MESSAGE_NEW, "{\"sender_name\":\"K\",\"preview\":\"Husk\"}");
    ASSERT_EQ_INT(0, templates_render_opts(t, ev, "en", true, &ti, &bo));
    ASSERT_STR_EQ("Husk", bo);
    free(ti);
    free(bo);
    free_event(ev);
    templates_free(t);
}

TEST(field_values_are_cleaned)
{
    struct templates *t = load_shipped();
    /* newline and tab become spaces (then collapse); invalid UTF-8 → U+FFFD */
    struct event *ev = mk_event(EVENT_MESSAGE_NEW,
        "{\"sender_name\":\"Kari\\nNordmann\",\"school_name\":\"S\","
        "\"subject\":\"a\\t\\tb \\u0001 \xff\"}");
    expect(t, ev, "nb", "Kari Nordmann, S", "a b \xEF\xBF\xBD");
    free_event(ev);
    templates_free(t);
}

TEST(braces_and_long_values)
{
    char *dir = copy_dir();
    edit(dir, "en.ini", "timetable.changed", "title", "title = {{x}} {student_name}");
    struct templates *t = NULL;
    char err[512] = "";
    ASSERT_EQ_INT(0, templates_load(dir, &t, err, sizeof err));
    rm_dir(dir);
    /* A huge summary is cut to TEMPLATES_TEXT_MAX on a character boundary. */
    size_t n = 10000;
    char *big = xmalloc(n * 2 + 200);
    int off = sprintf(big, "{\"student_name\":\"Ola\",\"summary\":\"");
    for (size_t i = 0; i < n; i++) {
        memcpy(big + off, "\xC3\xB8", 2);  /* ø */
        off += 2;
    }
    strcpy(big + off, "\"}");
    struct event *ev = mk_event(EVENT_TIMETABLE_CHANGED, big);
    char *ti, *bo;
    ASSERT_EQ_INT(0, templates_render(t, ev, "en", &ti, &bo));
    ASSERT_STR_EQ("{x} Ola", ti);
    ASSERT(strlen(bo) <= TEMPLATES_TEXT_MAX);
    ASSERT(strlen(bo) > TEMPLATES_TEXT_MAX - 8);
    ASSERT(utf8_valid(bo, strlen(bo)));
    ASSERT_STR_CONTAINS(bo + strlen(bo) - 3, "\xE2\x80\xA6");
    free(ti);
    free(bo);
    free(big);
    free_event(ev);
    templates_free(t);
}

TEST(non_notification_type_fails)
{
    struct templates *t = load_shipped();
    struct event *ev = mk_event(EVENT_DEVICE_REGISTER, "{\"user\":\"u\"}");
    char *ti = (char *)1, *bo = (char *)1;
    ASSERT_EQ_INT(-1, templates_render(t, ev, "nb", &ti, &bo));
    ASSERT_NULL(ti);
    ASSERT_NULL(bo);
    free_event(ev);
    templates_free(t);
}

TEST(works_with_event_parse)
{
    struct templates *t = load_shipped();
    const char *json =
        "{\"v\":1,\"id\":\"e1\",\"type\":\"absence.reported\",\"tenant\":\"bergen\","
        "\"occurred_at\":\"2026-11-28T07:00:00Z\",\"recipients\":[\"u2\"],"
        "\"student\":\"s1\",\"student_name\":\"Ola\",\"date\":\"2026-11-28\","
        "\"kind\":\"day\",\"reported_by\":\"u1\",\"reason\":\"syk\"}";
    struct event *ev = NULL;
    char reason[256] = "";
    int rc = event_parse(json, strlen(json), &ev, reason, sizeof reason);
    if (rc != 0)
        fprintf(stderr, "  event_parse: %s\n", reason);
    ASSERT_EQ_INT(0, rc);
    expect(t, ev, "nn", "Fråvær meldt for Ola", "Ola er meldt fråverande 28.11.2026.");
    event_free(ev);
    templates_free(t);
}

/* The per-event cache renders what templates_render renders, per locale,
 * and forgets an event (or a reloaded set) instead of serving stale text. */
TEST(cached_rendering_per_event_and_locale)
{
    struct templates *t = load_shipped();
    struct templates_cache *c = templates_cache_new();
    struct event *ev = mk_event(EVENT_MESSAGE_NEW,
                                "{\"sender_name\":\"Kari\",\"school_name\":\"Nordnes\","
                                "\"subject\":\"Tur\\u0007 i morgon \\u00e6\"}");
    const char *locs[] = { "nb", "nn", "en", "nb-NO", "xx", "en" };
    const char *first_title[3] = { NULL, NULL, NULL };
    for (size_t i = 0; i < sizeof locs / sizeof locs[0]; i++) {
        const char *ti, *bo;
        char *ti2, *bo2;
        ASSERT_EQ_INT(0, templates_render_cached(c, t, ev, locs[i], false, &ti, &bo));
        ASSERT_EQ_INT(0, templates_render(t, ev, locs[i], &ti2, &bo2));
        ASSERT_STR_EQ(ti2, ti);
        ASSERT_STR_EQ(bo2, bo);
        free(ti2);
        free(bo2);
        /* The same locale comes from the cache: the same pointer. */
        int li = strcmp(templates_resolve_locale(locs[i], NULL), "nb") == 0   ? 0
                 : strcmp(templates_resolve_locale(locs[i], NULL), "nn") == 0 ? 1 : 2;
        if (first_title[li])
            ASSERT(first_title[li] == ti);
        first_title[li] = ti;
    }
    /* Forgotten before it is freed: another event is rendered afresh. */
    templates_cache_forget(c, ev);
    free_event(ev);
    ev = mk_event(EVENT_MESSAGE_NEW, "{\"sender_name\":\"Per\",\"school_name\":\"Sandviken\"}");
    expect(t, ev, "en", NULL, NULL);
    const char *ti, *bo;
    char *ti2, *bo2;
    ASSERT_EQ_INT(0, templates_render_cached(c, t, ev, "en", false, &ti, &bo));
    ASSERT_EQ_INT(0, templates_render(t, ev, "en", &ti2, &bo2));
    ASSERT_STR_EQ(ti2, ti);
    ASSERT_STR_EQ(bo2, bo);
    free(ti2);
    free(bo2);
    /* Another set of templates (a SIGHUP reload) is not served old text. */
    char *dir = copy_dir();
    edit(dir, "en.ini", "message.new", "title", "title = Reloaded {sender_name}");
    struct templates *t2 = NULL;
    char err[512] = "";
    ASSERT_EQ_INT(0, templates_load(dir, &t2, err, sizeof err));
    rm_dir(dir);
    ASSERT_EQ_INT(0, templates_render_cached(c, t2, ev, "en", false, &ti, &bo));
    ASSERT_STR_EQ("Reloaded Per", ti);
    /* A type without texts fails, cached or not. */
    struct event *dev = mk_event(EVENT_DEVICE_REGISTER, "{\"user\":\"u\"}");
    ASSERT_EQ_INT(-1, templates_render_cached(c, t, dev, "nb", false, &ti, &bo));
    ASSERT_NULL(ti);
    templates_cache_forget(c, dev);
    free_event(dev);
    templates_cache_forget(c, ev);
    free_event(ev);
    templates_cache_free(c);
    templates_free(t2);
    templates_free(t);
}

TEST_MAIN(T(unknown_field_is_an_error), T(loads_shipped_templates), T(message_new_with_subject),
          T(message_new_without_subject_falls_back),
          T(absence_reported_formats_dates_per_locale),
          T(absence_reason_never_reaches_text), T(template_using_reason_fails_to_load),
          T(field_of_another_type_is_an_error), T(syntax_errors),
          T(missing_locale_file_or_section), T(unknown_section_and_missing_words),
          T(duplicate_key_and_continuation_rejected),
          T(over_long_line_is_an_error_not_cut), T(leave_decided_words),
          T(absence_alert_and_timetable), T(unknown_locale_renders_nb), T(resolve_locale),
          T(preview_only_when_asked), T(field_values_are_cleaned),
          T(braces_and_long_values), T(non_notification_type_fails),
          T(works_with_event_parse), T(cached_rendering_per_event_and_locale))
