/*
 * Shared helpers: checked allocation (abort on OOM: a push daemon that cannot
 * allocate cannot make progress, and Redis keeps its work), base64url, UUIDs,
 * clocks, RFC 3339 parsing and UTF-8 aware cutting.
 */
#include "common/util.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

void *xcalloc(size_t nmemb, size_t n)
{
    void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu x %zu bytes)\n", nmemb, n);
        abort();
    }
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode_with(const char *alpha, bool pad,
                              const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (pad) { out[o++] = '='; out[o++] = '='; }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        if (pad) out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    return b64_encode_with(b64url_chars, false, in, n, out);
}

size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    return b64_encode_with(b64_chars, true, in, n, out);
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
}

long b64url_decode(const char *in, size_t len, unsigned char *out)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    return (long)o;
}

static void uuid_format(unsigned char b[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

void uuid_v4(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        fprintf(stderr, "RAND_bytes failed\n");
        abort();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
}

/*
 * Name-based ids hash with XXH3-128 (libxxhash): ~120 instructions for an
 * apns-id's ~60 bytes, against ~3,600 for SHA-256 in portable C and
 * ~5,000-8,000 through OpenSSL's EVP. The ids need uniqueness, not
 * secrecy or collision resistance against an adversary: their inputs are
 * the backend's own ids. The layout is RFC 9562's version 8 (custom).
 */
void uuid_from_name(const char *name, size_t len, char out[37])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(name, len));
    unsigned char *b = c.digest;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x80);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
}

void uuid_from_parts(const char *const *parts, size_t n, char sep, char out[37])
{
    char stack[512];
    size_t len[16], total = 0;
    if (n > 16)
        n = 16;
    if (n == 0) {
        uuid_from_name("", 0, out);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        len[i] = strlen(parts[i]);
        total += len[i] + (i ? 1 : 0);
    }
    char *buf = total <= sizeof stack ? stack : xmalloc(total), *o = buf;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = sep;
        memcpy(o, parts[i], len[i]);
        o += len[i];
    }
    uuid_from_name(buf, total, out);
    if (buf != stack)
        free(buf);
}

void sha256_hex(const void *in, size_t n, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (EVP_Digest(in, n, md, &ml, EVP_sha256(), NULL) != 1 || ml != 32) {
        fprintf(stderr, "EVP_Digest(SHA-256) failed\n");
        abort();
    }
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

size_t fmt_i64(char *out, int64_t v)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    /* Negate in unsigned arithmetic so INT64_MIN works too. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100);
        u /= 100;
        p -= 2;
        memcpy(p, pairs + 2 * d, 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * u, 2);
    } else {
        *--p = (char)('0' + u);
    }
    size_t n = 0;
    if (v < 0)
        out[n++] = '-';
    memcpy(out + n, p, (size_t)(e - p));
    n += (size_t)(e - p);
    out[n] = '\0';
    return n;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_s(void) { return (int64_t)time(NULL); }

uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int parse_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int rfc3339_parse_ms(const char *s, int64_t *out_ms)
{
    int Y, M, D, h, mi, se, ms = 0;
    const char *p = s;
    if (parse_digits(&p, 4, &Y) || *p++ != '-' || parse_digits(&p, 2, &M) ||
        *p++ != '-' || parse_digits(&p, 2, &D))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (parse_digits(&p, 2, &h) || *p++ != ':' || parse_digits(&p, 2, &mi) ||
        *p++ != ':' || parse_digits(&p, 2, &se))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || se > 60)
        return -1;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (parse_digits(&p, 2, &oh) || *p++ != ':' || parse_digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    int64_t secs = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + se -
                   (int64_t)off * 60;
    *out_ms = secs * 1000 + ms;
    return 0;
}

size_t utf8_cut_len(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    /* Step back over continuation bytes to the start of a sequence. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}
