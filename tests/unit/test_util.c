/*
 * Hot-path helpers of common/util.c: the own SHA-256 against OpenSSL's for
 * every length around the block and padding boundaries, the ids derived
 * from it, and fmt_i64 against printf.
 */
#include "tests/unit/test.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

TEST(sha256_matches_openssl)
{
    unsigned char in[300];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof in; n++) {
        unsigned char a[32], b[32];
        unsigned int bl = 0;
        sha256(in, n, a);
        ASSERT_EQ_INT(1, EVP_Digest(in, n, b, &bl, EVP_sha256(), NULL));
        if (memcmp(a, b, 32) != 0)
            TEST_FAIL_("sha256 differs from OpenSSL for %zu bytes", n);
    }
}

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
    /* The apns-id of a delivery, also the retry id stored in Redis: it must
     * not change between versions. */
    char id[37];
    const char *name = "demo|evt-1|user-1|device-1";
    uuid_from_name(name, strlen(name), id);
    unsigned char md[32];
    unsigned int ml = 0;
    EVP_Digest(name, strlen(name), md, &ml, EVP_sha256(), NULL);
    char want[37];
    snprintf(want, sizeof want, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             md[0], md[1], md[2], md[3], md[4], md[5], (md[6] & 0x0f) | 0x50, md[7],
             (md[8] & 0x3f) | 0x80, md[9], md[10], md[11], md[12], md[13], md[14], md[15]);
    ASSERT_STR_EQ(want, id);
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

TEST_MAIN(T(sha256_matches_openssl), T(sha256_known_answers), T(uuid_from_name_is_stable),
          T(uuid_from_parts_joins_with_the_separator), T(fmt_i64_matches_printf))
