/* log.c: owns the watchdog's stderr. Lines are formatted on the stack and written with one
 * write(2) each, so lines from the watchdog never interleave with each other. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum wd_log_level wd_log_level = WD_LOG_INFO;
static bool prefix_lines = true;

void wd_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fwatchdog: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

void wd_log_setup(bool prefix_handler_lines)
{
    prefix_lines = prefix_handler_lines;
}

static size_t stamp(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return strftime(out, outlen, "%Y/%m/%d %H:%M:%S ", &tm);
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0)
            return; /* nowhere to report a failing stderr */
        p += n;
        len -= (size_t)n;
    }
}

void wd_log_write(enum wd_log_level level, const char *fmt, ...)
{
    char line[4096];
    size_t n = stamp(line, sizeof line);
    va_list ap;
    WD_UNUSED(level);
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    n += (size_t)k < sizeof line - n - 1 ? (size_t)k : sizeof line - n - 2;
    line[n++] = '\n';
    write_all(2, line, n);
}

int wd_linelog_init(struct wd_linelog *ll, const char *stream, int fd, int64_t max_line)
{
    memset(ll, 0, sizeof *ll);
    ll->stream = stream;
    ll->fd = fd;
    /* Negative log_buffer_size means unbounded in OW; we still cap a line at 1 MiB pieces. */
    ll->cap = max_line <= 0 ? 1u << 20 : (size_t)max_line;
    return 0;
}

static void emit(struct wd_linelog *ll, const char *p, size_t len)
{
    char head[64];
    size_t n = 0;
    if (prefix_lines) {
        n = stamp(head, sizeof head);
        n += (size_t)snprintf(head + n, sizeof head - n, "%s: ", ll->stream);
    }
    /* One write per line keeps lines whole when several handlers log at once. */
    char small[8192];
    if (n + len + 1 <= sizeof small) {
        memcpy(small, head, n);
        memcpy(small + n, p, len);
        small[n + len] = '\n';
        write_all(ll->fd, small, n + len + 1);
        return;
    }
    char *big = malloc(n + len + 1);
    if (big == NULL) {
        write_all(ll->fd, head, n);
        write_all(ll->fd, p, len);
        write_all(ll->fd, "\n", 1);
        return;
    }
    memcpy(big, head, n);
    memcpy(big + n, p, len);
    big[n + len] = '\n';
    write_all(ll->fd, big, n + len + 1);
    free(big);
}

void wd_linelog_feed(struct wd_linelog *ll, const char *data, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (ll->len == 0 && nl != NULL && take <= ll->cap) {
            emit(ll, data, take); /* whole line in this read: no copy */
        } else {
            if (ll->buf == NULL) {
                ll->buf = malloc(ll->cap);
                if (ll->buf == NULL)
                    return;
            }
            size_t room = ll->cap - ll->len;
            if (take > room) {
                /* the line does not fit: emit a full piece and go on with the rest */
                memcpy(ll->buf + ll->len, data, room);
                emit(ll, ll->buf, ll->cap);
                ll->len = 0;
                data += room;
                len -= room;
                continue;
            }
            memcpy(ll->buf + ll->len, data, take);
            ll->len += take;
            if (ll->len == ll->cap || nl != NULL) {
                emit(ll, ll->buf, ll->len);
                ll->len = 0;
            }
        }
        data += take;
        len -= take;
        if (nl != NULL) {
            data++;
            len--;
        }
    }
}

void wd_linelog_flush(struct wd_linelog *ll)
{
    if (ll->len > 0)
        emit(ll, ll->buf, ll->len);
    ll->len = 0;
}

void wd_linelog_free(struct wd_linelog *ll)
{
    free(ll->buf);
    ll->buf = NULL;
    ll->len = 0;
}

void wd_log_human_size(char *out, size_t outlen, uint64_t bytes)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    double v = (double)bytes;
    size_t i = 0;
    while (v >= 1000.0 && i + 1 < WD_ARRAY_LEN(units)) {
        v /= 1000.0;
        i++;
    }
    snprintf(out, outlen, "%.4g%s", v, units[i]);
}
