/*
 * queue/redis.c's reply-object functions (one allocation per object): RESP
 * read through hiredis's reader with them gives the same trees as
 * hiredis's own functions, partial and broken input is freed cleanly
 * (ASan in CI), and nothing outlives freeObject.
 */
#include "tests/unit/test.h"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <string.h>

#include "queue/redis.h"

/* Read |resp| with |fn| (NULL = hiredis's own); the reply or NULL. */
static redisReply *read_with(redisReplyObjectFunctions *fn, const char *resp, size_t len,
                             redisReader **out)
{
    redisReader *r = fn ? redisReaderCreateWithFunctions(fn) : redisReaderCreate();
    ASSERT_NOT_NULL(r);
    ASSERT_EQ_INT(REDIS_OK, redisReaderFeed(r, resp, len));
    void *reply = NULL;
    ASSERT_EQ_INT(REDIS_OK, redisReaderGetReply(r, &reply));
    *out = r;
    return reply;
}

/* Whether two reply trees are equal. */
static int same(const redisReply *a, const redisReply *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case REDIS_REPLY_INTEGER:
        return a->integer == b->integer;
    case REDIS_REPLY_NIL:
        return 1;
    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements)
            return 0;
        for (size_t i = 0; i < a->elements; i++)
            if (!same(a->element[i], b->element[i]))
                return 0;
        return 1;
    default:
        return a->len == b->len && memcmp(a->str, b->str, a->len) == 0 &&
               a->str[a->len] == '\0';
    }
}

static void check_same_as_hiredis(const char *resp)
{
    redisReader *ra, *rb;
    redisReply *a = read_with(redis_reply_functions(), resp, strlen(resp), &ra);
    redisReply *b = read_with(NULL, resp, strlen(resp), &rb);
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    if (!same(a, b))
        TEST_FAIL_("reply trees differ for %s", resp);
    redis_reply_functions()->freeObject(a);
    freeReplyObject(b);
    redisReaderFree(ra);
    redisReaderFree(rb);
}

TEST(same_trees_as_hiredis)
{
    check_same_as_hiredis("+OK\r\n");
    check_same_as_hiredis("-ERR wrong type\r\n");
    check_same_as_hiredis(":-42\r\n");
    check_same_as_hiredis("$-1\r\n");
    check_same_as_hiredis("$0\r\n\r\n");
    check_same_as_hiredis("$5\r\nhello\r\n");
    check_same_as_hiredis("*0\r\n");
    check_same_as_hiredis("*-1\r\n");
    /* A guardian's devices (HGETALL) and a stream read (XREADGROUP):
     * nested arrays with strings, nil and integers. */
    check_same_as_hiredis("*4\r\n$5\r\nphone\r\n$20\r\n{\"platform\":\"ios\"}..\r\n"
                          "$6\r\n:prefs\r\n$2\r\n{}\r\n");
    check_same_as_hiredis("*1\r\n*2\r\n$10\r\nvarsel:evt\r\n*2\r\n*2\r\n$3\r\n1-0\r\n"
                          "*2\r\n$1\r\nv\r\n$3\r\nabc\r\n*2\r\n$3\r\n1-1\r\n$-1\r\n");
    check_same_as_hiredis("*3\r\n:1\r\n-ERR in a script\r\n*0\r\n");
}

TEST(a_large_string_is_copied_whole)
{
    static char resp[70000];
    size_t n = 65536;
    int h = snprintf(resp, sizeof resp, "$%zu\r\n", n);
    memset(resp + h, 'x', n);
    memcpy(resp + h + n, "\r\n", 3);
    check_same_as_hiredis(resp);
}

TEST(partial_and_broken_input_is_freed)
{
    /* An array cut off after its first element: no reply yet; freeing
     * the reader frees the partial tree (leaks show under ASan). */
    redisReader *r = redisReaderCreateWithFunctions(redis_reply_functions());
    const char *part = "*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n";
    ASSERT_EQ_INT(REDIS_OK, redisReaderFeed(r, part, strlen(part)));
    void *reply = NULL;
    ASSERT_EQ_INT(REDIS_OK, redisReaderGetReply(r, &reply));
    ASSERT_NULL(reply);
    redisReaderFree(r);
    /* A protocol error in the middle of an array. */
    r = redisReaderCreateWithFunctions(redis_reply_functions());
    const char *bad = "*2\r\n$3\r\nabc\r\n?junk\r\n";
    ASSERT_EQ_INT(REDIS_OK, redisReaderFeed(r, bad, strlen(bad)));
    ASSERT_EQ_INT(REDIS_ERR, redisReaderGetReply(r, &reply));
    redisReaderFree(r);
}

TEST_MAIN(T(same_trees_as_hiredis), T(a_large_string_is_copied_whole),
          T(partial_and_broken_input_is_freed))
