/*
 * Request record: JSON lines on an O_APPEND file descriptor, one write(2)
 * per line so concurrent readers never see interleaved or half lines.
 */
#include "sandbox/record.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sbx_record {
    int fd;
    char *path;
    uint64_t lines;
    bool error_logged;
};

struct sbx_record *sbx_record_open(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open record file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct sbx_record *rec = xcalloc(1, sizeof *rec);
    rec->fd = fd;
    rec->path = xstrdup(path);
    return rec;
}

int sbx_record_write(struct sbx_record *rec, const cJSON *obj)
{
    if (rec == NULL)
        return 0;
    char *s = cJSON_PrintUnformatted(obj);
    if (s == NULL)
        abort(); /* cJSON only fails on OOM */
    size_t len = strlen(s);
    char *line = xmalloc(len + 1);
    memcpy(line, s, len);
    line[len++] = '\n';
    cJSON_free(s);
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t n = write(rec->fd, line + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (!rec->error_logged)
                log_error("record", "write to %s failed: %s", rec->path,
                          n < 0 ? strerror(errno) : "short write");
            rec->error_logged = true;
            rc = -1;
            break;
        }
        off += (size_t)n;
    }
    free(line);
    if (rc == 0)
        rec->lines++;
    return rc;
}

uint64_t sbx_record_lines(const struct sbx_record *rec)
{
    return rec ? rec->lines : 0;
}

void sbx_record_close(struct sbx_record *rec)
{
    if (rec == NULL)
        return;
    close(rec->fd);
    free(rec->path);
    free(rec);
}

cJSON *sbx_record_payload(const uint8_t *body, size_t len, bool *is_json)
{
    *is_json = false;
    if (body == NULL || len == 0)
        return cJSON_CreateString("");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)body, len, &end, false);
    if (j != NULL) {
        /* cJSON stops after the first value: only whitespace may follow. */
        const char *p = end, *stop = (const char *)body + len;
        while (p < stop && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p == stop) {
            *is_json = true;
            return j;
        }
        cJSON_Delete(j);
    }
    if (memchr(body, '\0', len) == NULL && utf8_valid((const char *)body, len)) {
        char *s = xstrndup((const char *)body, len);
        cJSON *str = cJSON_CreateString(s);
        free(s);
        return str;
    }
    char *b = xmalloc(4 * ((len + 2) / 3) + 1);
    b64_encode(body, len, b);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "base64", b);
    free(b);
    return o;
}
