/*
 * Minimal unit-test harness: ASSERT macros that print both values, a test
 * list, and a main() that runs each test in its own forked process with a
 * timeout so one crash or hang fails only that test.
 *
 * Usage in tests/unit/test_foo.c:
 *     #include "tests/unit/test.h"
 *     TEST(parses_empty) { ASSERT_EQ_INT(0, foo_parse("")); }
 *     TEST_MAIN(T(parses_empty))
 *
 * The binary prints one line per test and ends with "N passed, N failed".
 */
#ifndef VARSEL_TEST_H
#define VARSEL_TEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST(name) static void test_##name(void)
#define T(name) { #name, test_##name }

struct test_case {
    const char *name;
    void (*fn)(void);
};

#define TEST_FAIL_(...)                                                        \
    do {                                                                       \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                      \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        exit(1);                                                               \
    } while (0)

#define ASSERT(cond)                                                           \
    do { if (!(cond)) TEST_FAIL_("assertion failed: %s", #cond); } while (0)
#define ASSERT_EQ_INT(exp, act)                                                \
    do {                                                                       \
        long long e_ = (long long)(exp), a_ = (long long)(act);                \
        if (e_ != a_)                                                          \
            TEST_FAIL_("%s == %s: expected %lld, got %lld", #exp, #act, e_, a_); \
    } while (0)
#define ASSERT_NE_INT(exp, act)                                                \
    do {                                                                       \
        long long e_ = (long long)(exp), a_ = (long long)(act);                \
        if (e_ == a_)                                                          \
            TEST_FAIL_("%s != %s: both are %lld", #exp, #act, e_);             \
    } while (0)
#define ASSERT_STR_EQ(exp, act)                                                \
    do {                                                                       \
        const char *e_ = (exp), *a_ = (act);                                   \
        if (e_ == NULL || a_ == NULL || strcmp(e_, a_) != 0)                   \
            TEST_FAIL_("%s == %s: expected \"%s\", got \"%s\"", #exp, #act,    \
                       e_ ? e_ : "(null)", a_ ? a_ : "(null)");                \
    } while (0)
#define ASSERT_STR_CONTAINS(hay, needle)                                       \
    do {                                                                       \
        const char *h_ = (hay), *n_ = (needle);                                \
        if (h_ == NULL || strstr(h_, n_) == NULL)                              \
            TEST_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); \
    } while (0)
#define ASSERT_NULL(p) do { if ((p) != NULL) TEST_FAIL_("%s is not NULL", #p); } while (0)
#define ASSERT_NOT_NULL(p) do { if ((p) == NULL) TEST_FAIL_("%s is NULL", #p); } while (0)

#ifndef TEST_TIMEOUT_S
#define TEST_TIMEOUT_S 60
#endif

static inline int test_run_all_(const struct test_case *tests, size_t n,
                                int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            /* TEST_TIMEOUT_S in the environment overrides it (valgrind). */
            const char *to_ = getenv("TEST_TIMEOUT_S");
            alarm(to_ && atoi(to_) > 0 ? (unsigned)atoi(to_) : TEST_TIMEOUT_S);
            tests[i].fn();
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            printf("ok   %s\n", tests[i].name);
            passed++;
        } else {
            if (WIFSIGNALED(st))
                printf("FAIL %s (signal %d%s)\n", tests[i].name, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? ", timeout" : "");
            else
                printf("FAIL %s (exit %d)\n", tests[i].name, WEXITSTATUS(st));
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define TEST_MAIN(...)                                                         \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const struct test_case tests_[] = { __VA_ARGS__ };              \
        return test_run_all_(tests_, sizeof tests_ / sizeof tests_[0], argc, argv); \
    }

#endif
