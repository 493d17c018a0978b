/*
 * Unit tests for sandbox token files (sandbox/tokens.c): parsing, lookup,
 * duplicate handling, reload on change and the first-seen timestamp rule.
 */
#include "tests/unit/test.h"

#include "common/util.h"
#include "sandbox/tokens.h"

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

static struct sbx_tokens *parse(const char *text, enum sbx_tokens_kind kind,
                                const struct sbx_tokens *prev, int64_t now, char *err)
{
    return sbx_tokens_parse(text, strlen(text), kind, prev, now, err, 160);
}

TEST(plain_parse_and_lookup)
{
    char err[160];
    struct sbx_tokens *s = parse("# dead tokens\n\n  AABB  \ncc11\r\nffff\n", SBX_TOKENS_PLAIN,
                                 NULL, 0, err);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(3, s->n);
    ASSERT_NOT_NULL(sbx_tokens_find(s, "aabb"));
    ASSERT_NOT_NULL(sbx_tokens_find(s, "AaBb"));
    ASSERT_NOT_NULL(sbx_tokens_find(s, "CC11"));
    ASSERT_NOT_NULL(sbx_tokens_find(s, "ffff"));
    ASSERT_NULL(sbx_tokens_find(s, "aab"));
    ASSERT_NULL(sbx_tokens_find(s, "# dead"));
    ASSERT_NULL(sbx_tokens_find(NULL, "aabb"));
    sbx_tokens_free(s);
    ASSERT_NULL(parse("aa bb\n", SBX_TOKENS_PLAIN, NULL, 0, err));
    ASSERT_STR_CONTAINS(err, "line 1");
}

TEST(timestamps_and_defaults)
{
    char err[160];
    struct sbx_tokens *s = parse("aa 1700000000123\nbb\n", SBX_TOKENS_TIMESTAMP, NULL, 5000, err);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(1700000000123LL, sbx_tokens_find(s, "aa")->value);
    ASSERT(sbx_tokens_find(s, "aa")->explicit_value);
    ASSERT_EQ_INT(5000, sbx_tokens_find(s, "bb")->value);
    /* A reload keeps bb's first-seen time; a new token gets the new time. */
    struct sbx_tokens *s2 = parse("bb\ncc\naa 7\n", SBX_TOKENS_TIMESTAMP, s, 9000, err);
    ASSERT_NOT_NULL(s2);
    ASSERT_EQ_INT(5000, sbx_tokens_find(s2, "bb")->value);
    ASSERT_EQ_INT(9000, sbx_tokens_find(s2, "cc")->value);
    ASSERT_EQ_INT(7, sbx_tokens_find(s2, "aa")->value);
    sbx_tokens_free(s);
    sbx_tokens_free(s2);
    ASSERT_NULL(parse("aa 12x\n", SBX_TOKENS_TIMESTAMP, NULL, 0, err));
    ASSERT_NULL(parse("ok\naa 1 2\n", SBX_TOKENS_TIMESTAMP, NULL, 0, err));
    ASSERT_STR_CONTAINS(err, "line 2");
}

TEST(env_kind_requires_field)
{
    char err[160];
    struct sbx_tokens *s = parse("aa sandbox\nbb production\n", SBX_TOKENS_ENV, NULL, 0, err);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(SBX_ENV_SANDBOX, sbx_tokens_find(s, "aa")->value);
    ASSERT_EQ_INT(SBX_ENV_PRODUCTION, sbx_tokens_find(s, "bb")->value);
    sbx_tokens_free(s);
    ASSERT_NULL(parse("aa\n", SBX_TOKENS_ENV, NULL, 0, err));
    ASSERT_NULL(parse("aa development\n", SBX_TOKENS_ENV, NULL, 0, err));
}

TEST(duplicates_last_line_wins)
{
    char err[160];
    struct sbx_tokens *s = parse("aa 1\nbb 2\nAA 3\naa 4\nbb 5\ncc 6\n", SBX_TOKENS_TIMESTAMP,
                                 NULL, 0, err);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(3, s->n);
    ASSERT_EQ_INT(4, sbx_tokens_find(s, "aa")->value);
    ASSERT_EQ_INT(5, sbx_tokens_find(s, "bb")->value);
    ASSERT_EQ_INT(6, sbx_tokens_find(s, "cc")->value);
    sbx_tokens_free(s);
}

TEST(many_tokens_sorted_lookup)
{
    char *text = xmalloc(5000 * 70);
    size_t n = 0;
    for (int i = 0; i < 5000; i++)
        n += (size_t)sprintf(text + n, "%064x\n", i * 7919);
    char err[160];
    struct sbx_tokens *s = sbx_tokens_parse(text, n, SBX_TOKENS_PLAIN, NULL, 0, err, sizeof err);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(5000, s->n);
    char tok[80];
    for (int i = 0; i < 5000; i += 97) {
        sprintf(tok, "%064x", i * 7919);
        ASSERT_NOT_NULL(sbx_tokens_find(s, tok));
        sprintf(tok, "%064x", i * 7919 + 1);
        ASSERT_NULL(sbx_tokens_find(s, tok));
    }
    sbx_tokens_free(s);
    free(text);
}

static void write_file(const char *path, const char *text)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
    ASSERT_EQ_INT(0, rename(tmp, path));
}

TEST(file_watch_reloads_on_change)
{
    char dir[] = "/tmp/sbx-tokens-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/dead.txt", dir);

    struct sbx_tokens_file f;
    ASSERT_EQ_INT(0, sbx_tokens_file_open(&f, path, SBX_TOKENS_TIMESTAMP, err, sizeof err));
    ASSERT_EQ_INT(0, f.set->n); /* missing file = empty */
    write_file(path, "aa 1\n");
    ASSERT_EQ_INT(0, sbx_tokens_file_refresh(&f, false)); /* rate-limited */
    ASSERT_EQ_INT(1, sbx_tokens_file_refresh(&f, true));  /* SIGHUP */
    ASSERT_NOT_NULL(sbx_tokens_find(f.set, "aa"));
    ASSERT_EQ_INT(0, sbx_tokens_file_refresh(&f, false)); /* unchanged */

    write_file(path, "aa 1\nbb 2\n");
    f.last_check_mono -= 1500; /* pretend a second passed */
    ASSERT_EQ_INT(1, sbx_tokens_file_refresh(&f, false));
    ASSERT_NOT_NULL(sbx_tokens_find(f.set, "bb"));
    f.last_check_mono -= 1500;
    ASSERT_EQ_INT(0, sbx_tokens_file_refresh(&f, false));

    /* A broken file keeps the old set. */
    write_file(path, "aa 1 2 3\n");
    f.last_check_mono -= 1500;
    ASSERT_EQ_INT(0, sbx_tokens_file_refresh(&f, false));
    ASSERT_EQ_INT(2, f.set->n);

    /* Removing the file empties the set. */
    unlink(path);
    f.last_check_mono -= 1500;
    ASSERT_EQ_INT(1, sbx_tokens_file_refresh(&f, false));
    ASSERT_EQ_INT(0, f.set->n);
    sbx_tokens_file_close(&f);
    rmdir(dir);
}

TEST(open_rejects_bad_file)
{
    char dir[] = "/tmp/sbx-tokens-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/env.txt", dir);
    write_file(path, "aa sandbox\nbb moon\n");
    struct sbx_tokens_file f;
    ASSERT_EQ_INT(-1, sbx_tokens_file_open(&f, path, SBX_TOKENS_ENV, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "line 2");
    unlink(path);
    rmdir(dir);
}

TEST_MAIN(T(plain_parse_and_lookup), T(timestamps_and_defaults), T(env_kind_requires_field),
          T(duplicates_last_line_wins), T(many_tokens_sorted_lookup),
          T(file_watch_reloads_on_change), T(open_rejects_bad_file))
