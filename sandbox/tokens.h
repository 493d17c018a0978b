/*
 * Device-token sets for varsel-sandbox, loaded from plain text files that a
 * test may rewrite while the sandbox runs: dead tokens (--apns-unregistered),
 * malformed-by-decree tokens (--apns-bad-tokens) and the environment each
 * token belongs to (--apns-env-tokens).
 *
 * File format: one token per line, optionally followed by whitespace and one
 * field; blank lines and lines starting with '#' are ignored. Tokens are
 * compared case-insensitively (stored lowercase). What the field means
 * depends on the file kind (enum sbx_tokens_kind).
 */
#ifndef VARSEL_SANDBOX_TOKENS_H
#define VARSEL_SANDBOX_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum sbx_tokens_kind {
    SBX_TOKENS_PLAIN,     /* "TOKEN" only; a second field is an error */
    SBX_TOKENS_TIMESTAMP, /* "TOKEN [TIMESTAMP_MS]"; default: load time */
    SBX_TOKENS_ENV,       /* "TOKEN production|sandbox" (field required) */
};

enum sbx_env { SBX_ENV_PRODUCTION = 0, SBX_ENV_SANDBOX = 1 };

struct sbx_token_entry {
    char *token;     /* lowercase, owned */
    int64_t value;   /* timestamp ms (TIMESTAMP) or enum sbx_env (ENV) */
    bool explicit_value; /* the file gave the field */
};

/* An immutable sorted set of tokens. */
struct sbx_tokens {
    struct sbx_token_entry *v;
    size_t n;
};

/*
 * Parse |text| (|len| bytes) as a token file of |kind| into a new set.
 * For SBX_TOKENS_TIMESTAMP entries without a field the value is taken from
 * |prev| when the token was already there (so reloads keep the first-seen
 * time), else |now_ms|. |prev| may be NULL. Duplicate tokens: the last line
 * wins. Returns the set (caller frees with sbx_tokens_free), or NULL with
 * |err| naming the first bad line.
 */
struct sbx_tokens *sbx_tokens_parse(const char *text, size_t len,
                                    enum sbx_tokens_kind kind,
                                    const struct sbx_tokens *prev, int64_t now_ms,
                                    char *err, size_t errlen);

/* Look |token| up (case-insensitive); returns the entry or NULL. */
const struct sbx_token_entry *sbx_tokens_find(const struct sbx_tokens *set,
                                              const char *token);

/* Free a set; NULL is allowed. */
void sbx_tokens_free(struct sbx_tokens *set);

/*
 * A token file being watched: the current set, reloaded when the file's
 * identity (inode, size, mtime) changes, checked at most once a second, or
 * on demand (SIGHUP). A missing file is an empty set.
 */
struct sbx_tokens_file {
    char *path;                  /* owned */
    enum sbx_tokens_kind kind;
    struct sbx_tokens *set;      /* owned; never NULL after open */
    uint64_t last_check_mono;    /* mono_ms of the last stat() */
    bool have_stat;              /* file existed at last stat */
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    unsigned reloads;            /* successful loads, for logs and tests */
};

/*
 * Start watching |path| and load it now. Returns 0, or -1 with |err| when
 * the file exists but cannot be read or parsed (a missing file is fine: it
 * logs a warning and starts empty). On success the caller owns |f| contents
 * and frees them with sbx_tokens_file_close.
 */
int sbx_tokens_file_open(struct sbx_tokens_file *f, const char *path,
                         enum sbx_tokens_kind kind, char *err, size_t errlen);

/*
 * Reload if |force| is set, or if at least 1000 ms passed since the last
 * check and the file changed. On a parse error the old set stays and a
 * warning is logged. Returns 1 if the set was replaced, 0 if not.
 */
int sbx_tokens_file_refresh(struct sbx_tokens_file *f, bool force);

/* Free what sbx_tokens_file_open allocated. */
void sbx_tokens_file_close(struct sbx_tokens_file *f);

#endif
