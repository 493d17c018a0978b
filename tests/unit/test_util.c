/*
 * Hot-path helpers of common/util.c: SHA-256 hex (OpenSSL), the name-based
 * ids (XXH3-128) and fmt_i64 against printf.
 */
#include "tests/unit/test.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/util.h"

#define KNOWN_ID "73671c7b-d11d-89c7-a9b7-95403a080585"

TEST(sha256_known_answers)
{
    char hex[65];
    sha256_hex("", 0, hex);
    ASSERT_STR_EQ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex);
    sha256_hex("abc", 3, hex);
    ASSERT_STR_EQ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex);
}

TEST(uuid_from_name_is_stable)
{
    /* The apns-id of a delivery, also the retry id stored in Redis: a
     * replay must derive the same id, so the derivation is pinned here. */
    char id[37];
    const char *name = "demo|evt-1|user-1|device-1";
    uuid_from_name(name, strlen(name), id);
    ASSERT_STR_EQ(KNOWN_ID, id);
    /* The same bytes as XXH3-128 in canonical (big-endian) order, with the
     * version (8) and variant (10xx) bits set. */
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(name, strlen(name)));
    const unsigned char *md = c.digest;
    char want[37];
    snprintf(want, sizeof want, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             md[0], md[1], md[2], md[3], md[4], md[5], (md[6] & 0x0f) | 0x80, md[7],
             (md[8] & 0x3f) | 0x80, md[9], md[10], md[11], md[12], md[13], md[14], md[15]);
    ASSERT_STR_EQ(want, id);
    ASSERT_EQ_INT('8', id[14]);
    ASSERT(strchr("89ab", id[19]) != NULL);
}

TEST(uuid_from_name_has_no_collisions_in_a_large_fanout)
{
    /* One event to 200,000 recipients: every apns-id differs. */
    enum { N = 200000 };
    char(*ids)[37] = malloc(sizeof *ids * N);
    ASSERT(ids != NULL);
    for (int i = 0; i < N; i++) {
        char user[32], dev[32];
        snprintf(user, sizeof user, "guardian-%06d", i);
        snprintf(dev, sizeof dev, "device-%06d-ios", i);
        const char *parts[] = { "oslo", "msg-20261130-0001", user, dev };
        uuid_from_parts(parts, 4, '|', ids[i]);
    }
    qsort(ids, N, sizeof *ids, (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            TEST_FAIL_("two recipients got the apns-id %s", ids[i]);
    free(ids);
}

TEST(uuid_from_parts_joins_with_the_separator)
{
    const char *parts[] = { "demo", "evt-1", "user-1", "device-1" };
    char a[37], b[37];
    uuid_from_parts(parts, 4, '|', a);
    const char *name = "demo|evt-1|user-1|device-1";
    uuid_from_name(name, strlen(name), b);
    ASSERT_STR_EQ(b, a);
    /* Longer than the stack buffer. */
    char big[700];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *p2[] = { "t", big };
    uuid_from_parts(p2, 2, '|', a);
    char joined[704];
    snprintf(joined, sizeof joined, "t|%s", big);
    uuid_from_name(joined, strlen(joined), b);
    ASSERT_STR_EQ(b, a);
}

TEST(fmt_i64_matches_printf)
{
    const int64_t v[] = { 0, 1, -1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, -12345,
                          -10, -99, -100, 1732800000000LL, 10000000000000000LL,
                          INT64_MAX, INT64_MIN, INT32_MAX, INT32_MIN };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char a[24], b[24];
        size_t n = fmt_i64(a, v[i]);
        snprintf(b, sizeof b, "%" PRId64, v[i]);
        ASSERT_STR_EQ(b, a);
        ASSERT_EQ_INT((long long)strlen(b), (long long)n);
    }
}

TEST_MAIN(T(sha256_known_answers), T(uuid_from_name_is_stable),
          T(uuid_from_name_has_no_collisions_in_a_large_fanout),
          T(uuid_from_parts_joins_with_the_separator), T(fmt_i64_matches_printf))
