/*
 * Token sets: a text file parsed into a sorted array of lowercase tokens,
 * looked up with bsearch. Sets are immutable; a reload builds a new set and
 * swaps it in, so a lookup never sees a half-loaded file. The watcher keeps
 * the file's (dev, inode, size, mtime) and re-reads only when it changed,
 * at most once a second, because requests call sbx_tokens_file_refresh()
 * on the hot path.
 */
#include "sandbox/tokens.h"

#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct seq_entry {
    struct sbx_token_entry e;
    size_t seq; /* line order, so the last duplicate wins */
};

static int cmp_seq_entry(const void *a, const void *b)
{
    const struct seq_entry *x = a, *y = b;
    int c = strcmp(x->e.token, y->e.token);
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort by token, keeping only the last occurrence of each (last line wins). */
static void dedup_sorted(struct sbx_tokens *set)
{
    if (set->n < 2)
        return;
    struct seq_entry *t = xmalloc(set->n * sizeof *t);
    for (size_t i = 0; i < set->n; i++) {
        t[i].e = set->v[i];
        t[i].seq = i;
    }
    qsort(t, set->n, sizeof *t, cmp_seq_entry);
    size_t w = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (i + 1 < set->n && strcmp(t[i].e.token, t[i + 1].e.token) == 0) {
            free(t[i].e.token); /* a later line has the same token */
            continue;
        }
        set->v[w++] = t[i].e;
    }
    set->n = w;
    free(t);
}

static void lower_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[n] = '\0';
}

/* Parse the optional field of one line for |kind| into |e|. */
static int parse_field(struct sbx_token_entry *e, enum sbx_tokens_kind kind,
                       const char *f, size_t flen)
{
    switch (kind) {
    case SBX_TOKENS_PLAIN:
        return flen == 0 ? 0 : -1;
    case SBX_TOKENS_TIMESTAMP: {
        if (flen == 0)
            return 0;
        int64_t v = 0;
        for (size_t i = 0; i < flen; i++) {
            if (!isdigit((unsigned char)f[i]) || v > INT64_MAX / 10 - 10)
                return -1;
            v = v * 10 + (f[i] - '0');
        }
        e->value = v;
        e->explicit_value = true;
        return 0;
    }
    case SBX_TOKENS_ENV:
        if (flen == 10 && strncmp(f, "production", 10) == 0)
            e->value = SBX_ENV_PRODUCTION;
        else if (flen == 7 && strncmp(f, "sandbox", 7) == 0)
            e->value = SBX_ENV_SANDBOX;
        else
            return -1;
        e->explicit_value = true;
        return 0;
    }
    return -1;
}

struct sbx_tokens *sbx_tokens_parse(const char *text, size_t len,
                                    enum sbx_tokens_kind kind,
                                    const struct sbx_tokens *prev, int64_t now,
                                    char *err, size_t errlen)
{
    struct sbx_tokens *set = xcalloc(1, sizeof *set);
    size_t cap = 0, lineno = 0, pos = 0;

    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        lineno++;
        const char *p = text + pos, *e = text + end;
        pos = end + 1;
        while (p < e && isspace((unsigned char)*p))
            p++;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        if (p == e || *p == '#')
            continue;
        const char *tok = p;
        while (p < e && !isspace((unsigned char)*p))
            p++;
        size_t toklen = (size_t)(p - tok);
        while (p < e && isspace((unsigned char)*p))
            p++;
        const char *field = p;
        size_t flen = (size_t)(e - p);
        for (size_t i = 0; i < flen; i++) {
            if (isspace((unsigned char)field[i])) {
                snprintf(err, errlen, "line %zu: more than two fields", lineno);
                goto fail;
            }
        }
        struct sbx_token_entry ent = { 0 };
        if (parse_field(&ent, kind, field, flen) < 0 ||
            (kind == SBX_TOKENS_ENV && !ent.explicit_value)) {
            snprintf(err, errlen, "line %zu: bad or missing field \"%.*s\"",
                     lineno, (int)(flen > 40 ? 40 : flen), field);
            goto fail;
        }
        ent.token = xmalloc(toklen + 1);
        lower_copy(ent.token, tok, toklen);
        if (kind == SBX_TOKENS_TIMESTAMP && !ent.explicit_value) {
            const struct sbx_token_entry *old = prev ? sbx_tokens_find(prev, ent.token) : NULL;
            ent.value = old ? old->value : now;
        }
        if (set->n == cap) {
            cap = cap ? cap * 2 : 16;
            set->v = xrealloc(set->v, cap * sizeof *set->v);
        }
        set->v[set->n++] = ent;
    }
    dedup_sorted(set);
    return set;
fail:
    sbx_tokens_free(set);
    return NULL;
}

static int cmp_key(const void *key, const void *elem)
{
    const struct sbx_token_entry *e = elem;
    return strcmp(key, e->token);
}

const struct sbx_token_entry *sbx_tokens_find(const struct sbx_tokens *set,
                                              const char *token)
{
    if (set == NULL || set->n == 0 || token == NULL)
        return NULL;
    char buf[256];
    size_t n = strlen(token);
    if (n >= sizeof buf)
        return NULL; /* longer than any token we store lookups for */
    lower_copy(buf, token, n);
    return bsearch(buf, set->v, set->n, sizeof *set->v, cmp_key);
}

void sbx_tokens_free(struct sbx_tokens *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->v[i].token);
    free(set->v);
    free(set);
}

/* Read a whole file; returns a malloc'd buffer or NULL with errno set. */
static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    *len = n;
    return buf;
}

/* Load the file now (the file exists per the caller's stat). */
static int load(struct sbx_tokens_file *f, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = read_file(f->path, &len);
    if (text == NULL) {
        snprintf(err, errlen, "%s: %s", f->path, strerror(errno));
        return -1;
    }
    char perr[160];
    struct sbx_tokens *set = sbx_tokens_parse(text, len, f->kind, f->set, now_ms(),
                                              perr, sizeof perr);
    free(text);
    if (set == NULL) {
        snprintf(err, errlen, "%s: %s", f->path, perr);
        return -1;
    }
    sbx_tokens_free(f->set);
    f->set = set;
    f->reloads++;
    return 0;
}

/* stat() the file; returns 1 if its identity differs from the last one. */
static int changed(struct sbx_tokens_file *f, bool *exists)
{
    struct stat st;
    if (stat(f->path, &st) != 0) {
        *exists = false;
        int was = f->have_stat;
        f->have_stat = false;
        return was;
    }
    *exists = true;
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    int diff = !f->have_stat || st.st_dev != f->dev || st.st_ino != f->ino ||
               st.st_size != f->size || mt != f->mtime_ns;
    f->have_stat = true;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->size = st.st_size;
    f->mtime_ns = mt;
    return diff;
}

int sbx_tokens_file_open(struct sbx_tokens_file *f, const char *path,
                         enum sbx_tokens_kind kind, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    f->kind = kind;
    f->set = xcalloc(1, sizeof *f->set);
    f->last_check_mono = mono_ms();
    bool exists;
    changed(f, &exists);
    if (!exists) {
        log_warn("tokens", "%s does not exist yet; starting with no tokens", path);
        return 0;
    }
    if (load(f, err, errlen) < 0) {
        sbx_tokens_file_close(f);
        return -1;
    }
    log_info("tokens", "loaded %zu tokens from %s", f->set->n, path);
    return 0;
}

int sbx_tokens_file_refresh(struct sbx_tokens_file *f, bool force)
{
    if (f->path == NULL)
        return 0;
    uint64_t now = mono_ms();
    if (!force && now - f->last_check_mono < 1000)
        return 0;
    f->last_check_mono = now;
    bool exists;
    int diff = changed(f, &exists);
    if (!force && !diff)
        return 0;
    if (!exists) {
        if (f->set->n == 0)
            return 0;
        sbx_tokens_free(f->set);
        f->set = xcalloc(1, sizeof *f->set);
        log_info("tokens", "%s removed; now empty", f->path);
        return 1;
    }
    char err[256];
    if (load(f, err, sizeof err) < 0) {
        log_warn("tokens", "reload failed, keeping %zu tokens: %s", f->set->n, err);
        return 0;
    }
    log_info("tokens", "reloaded %zu tokens from %s", f->set->n, f->path);
    return 1;
}

void sbx_tokens_file_close(struct sbx_tokens_file *f)
{
    sbx_tokens_free(f->set);
    free(f->path);
    memset(f, 0, sizeof *f);
}
