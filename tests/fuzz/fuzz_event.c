/*
 * libFuzzer target for the event parser (queue/event.c).
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE \
 *          tests/fuzz/fuzz_event.c queue/event.c common/util.c common/log.c \
 *          $(pkg-config --cflags --libs libcjson openssl libxxhash) -lm -o fuzz_event
 * Run:   ./fuzz_event tests/fuzz/corpus/event
 *
 * Beyond "no crash, no leak" it checks the parser's promises: a result is 0
 * or one of enum event_error with a non-empty reason, and an accepted event
 * has the fields its type requires, a well-formed token (device.register)
 * and consistent preferences (preferences.set; empty for other types).
 */
#include "queue/event.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event *ev = NULL;
    char reason[EVENT_REASON_MAX];
    int rc = event_parse((const char *)data, size, &ev, reason, sizeof reason);
    if (rc != 0) {
        if (ev != NULL || rc < EVENT_ERR_INVALID || rc > EVENT_ERR_JSON || reason[0] == '\0' ||
            strcmp(event_error_code(rc), "unknown") == 0)
            abort();
        return 0;
    }
    if (ev == NULL || ev->v != 1 || ev->id == NULL || ev->tenant == NULL ||
        event_type_name(ev->type) == NULL)
        abort();
    if (event_is_notification(ev->type)) {
        if (ev->n_recipients == 0 || ev->n_recipients > EVENT_MAX_RECIPIENTS)
            abort();
        for (size_t i = 0; i < ev->n_recipients; i++)
            if (ev->recipients[i].user == NULL || strchr(ev->recipients[i].user, ':') != NULL ||
                ev->recipients[i].badge < -1)
                abort();
    } else if (ev->user == NULL) {
        abort();
    }
    if (ev->type == EVENT_DEVICE_REGISTER &&
        (ev->token == NULL || ev->app == NULL || ev->platform == NULL || ev->environment == NULL))
        abort();
    if (ev->type == EVENT_DEVICE_REGISTER) {
        /* ios: 64..200 hex digits, even; android: 1..4096 of [A-Za-z0-9_:.-]. */
        size_t n = strlen(ev->token);
        bool ios = strcmp(ev->platform, "ios") == 0;
        if (ios ? (n < EVENT_IOS_TOKEN_MIN || n > EVENT_IOS_TOKEN_MAX || n % 2 != 0 ||
                   strspn(ev->token, "0123456789abcdefABCDEF") != n)
                : (n < 1 || n > EVENT_ANDROID_TOKEN_MAX ||
                   strspn(ev->token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_:.-") != n))
            abort();
    }
    /* Preferences: only notification types can be muted; quiet hours are
     * both absent or two different minutes of the day. */
    if (ev->type == EVENT_PREFERENCES_SET) {
        if (ev->muted_mask & ~((1u << (EVENT_TIMETABLE_CHANGED + 1)) - 1))
            abort();
        bool none = ev->quiet_start_min == -1 && ev->quiet_end_min == -1;
        if (!none && (ev->quiet_start_min < 0 || ev->quiet_start_min >= 1440 ||
                      ev->quiet_end_min < 0 || ev->quiet_end_min >= 1440 ||
                      ev->quiet_start_min == ev->quiet_end_min))
            abort();
    } else if (ev->muted_mask != 0 || ev->quiet_start_min != -1 || ev->quiet_end_min != -1) {
        abort();
    }
    (void)event_field(ev, "sender_name");
    (void)event_field(ev, "date");
    event_free(ev);
    return 0;
}
