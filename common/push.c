/* Names of push outcomes for logs. */
#include "common/push.h"

const char *push_outcome_name(enum push_outcome o)
{
    switch (o) {
    case PUSH_SENT: return "sent";
    case PUSH_INVALID_TOKEN: return "invalid_token";
    case PUSH_TRANSIENT: return "transient";
    case PUSH_PERMANENT: return "permanent";
    }
    return "unknown";
}
