/*
 * Small shared helpers: base64url, UUIDs, clocks, UTF-8 safe cutting,
 * checked allocation. No state.
 */
#ifndef VARSEL_UTIL_H
#define VARSEL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Allocation that aborts on out-of-memory (the project's OOM policy). */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Wipe a NUL-terminated secret (password, token) and free it; NULL is fine. */
void free_secret(char *s);

/*
 * Base64url without padding (RFC 4648 §5). b64url_encode writes a NUL-
 * terminated string into |out| (needs 4*ceil(n/3)+1 bytes) and returns its
 * length. b64url_decode accepts unpadded (or padded) input and returns the
 * decoded length, or -1 on a bad character or length; |out| needs
 * 3*len/4+3 bytes.
 */
size_t b64url_encode(const unsigned char *in, size_t n, char *out);
long b64url_decode(const char *in, size_t len, unsigned char *out);
/* Standard base64 with padding, for PEM-free uses. Same contracts. */
size_t b64_encode(const unsigned char *in, size_t n, char *out);

/* Lowercase canonical UUID v4 from random bytes into out[37]. */
void uuid_v4(char out[37]);
/*
 * Deterministic lowercase UUID (version 8 layout, XXH3-128 of |name|), so
 * the same delivery always gets the same id. Unique for distinct names,
 * not a cryptographic digest. out[37].
 */
void uuid_from_name(const char *name, size_t len, char out[37]);

/*
 * uuid_from_name of |parts| (at most 16) joined with |sep|, without a
 * format pass: the apns-id of every delivery.
 */
void uuid_from_parts(const char *const *parts, size_t n, char sep, char out[37]);

/* Lowercase hex of SHA-256 of |in| into out[65] (OpenSSL; aborts if the
 * digest is unavailable). */
void sha256_hex(const void *in, size_t n, char out[65]);

/*
 * Decimal text of |v| into |out| (at least 21 bytes), NUL-terminated;
 * returns the length. For hot paths: snprintf's format machinery costs
 * ten times as much for a number.
 */
size_t fmt_i64(char *out, int64_t v);

/* Wall clock in milliseconds / seconds since the epoch. */
int64_t now_ms(void);
int64_t now_s(void);
/* Monotonic clock in milliseconds. */
uint64_t mono_ms(void);

/*
 * Parse an RFC 3339 timestamp ("2026-11-28T08:15:00Z", fractional seconds and
 * ±hh:mm offsets allowed) into milliseconds since the epoch. Returns 0 or -1.
 */
int rfc3339_parse_ms(const char *s, int64_t *out_ms);

/*
 * Largest length <= |max| at which |s| (of length |len|) can be cut without
 * splitting a UTF-8 sequence.
 */
size_t utf8_cut_len(const char *s, size_t len, size_t max);
/*
 * Length of the UTF-8 sequence at |s| (at most |n| bytes, n >= 1), or 0
 * when the bytes there are not a valid one (bad lead byte, truncated,
 * overlong, surrogate, above U+10FFFF).
 */
size_t utf8_seq_len(const unsigned char *s, size_t n);
/* true if |s| is valid UTF-8. */
bool utf8_valid(const char *s, size_t len);

#endif
