/* log.c: owns the watchdog's stderr. Lines are formatted on the stack (a json line that does
 * not fit takes one malloc) and written with one write(2) each, so lines from the watchdog
 * never interleave with each other. The text format must stay byte for byte what of-watchdog
 * prints: it goes through snprintf only. Json lines use our own escaper rather than cJSON:
 * cJSON copies invalid UTF-8 through, stops at a NUL byte, prints doubles as %.17g and builds
 * a tree per line. This file touches no libuv handle and nothing but fds 1 and 2. */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum wd_log_level wd_log_level = WD_LOG_INFO;
static bool prefix_lines = true;
static enum wd_log_format log_format = WD_LOG_TEXT;
static bool log_callid;

void wd_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fwatchdog: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

void wd_log_setup(bool prefix_handler_lines, enum wd_log_format format, bool callid)
{
    prefix_lines = prefix_handler_lines;
    log_format = format;
    log_callid = callid;
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

/* ---- json ---------------------------------------------------------------------------- */

/* The length of the well-formed UTF-8 sequence at p (2 to 4 bytes), or 0. Unicode 15, table
 * 3-7: no overlong forms, no surrogates (ED A0..BF), nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

/* Copies k bytes to out + *o if they fit in cap (out == NULL: only counts). */
static bool put(char *out, size_t cap, size_t *o, const char *src, size_t k)
{
    if (out != NULL) {
        if (k > cap - *o)
            return false;
        memcpy(out + *o, src, k);
    }
    *o += k;
    return true;
}

/* Writes s[0..n) as the inside of a JSON string (RFC 8259 7): '"', '\\', C0 controls and DEL
 * are escaped, well-formed UTF-8 is copied, and each other byte becomes \ufffd. Stops before an
 * escape that would not fit in `cap`, so the result is never cut inside one. out == NULL only
 * counts. Returns the bytes written (or needed). */
static size_t json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            size_t k = run - i;
            if (out != NULL && k > cap - o) {
                put(out, cap, &o, s + i, cap - o); /* a cut between ASCII bytes is fine */
                break;
            }
            put(out, cap, &o, s + i, k);
            i = run;
            continue;
        }
        unsigned char c = u[i];
        size_t k;
        bool fits;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            fits = put(out, cap, &o, esc, 2);
            k = 1;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            fits = put(out, cap, &o, c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t", 2);
            k = 1;
        } else if (c < 0x80) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            fits = put(out, cap, &o, esc, 6);
            k = 1;
        } else if ((k = utf8_seq(u + i, n - i)) > 0) {
            fits = put(out, cap, &o, s + i, k);
        } else {
            fits = put(out, cap, &o, "\\ufffd", 6);
            k = 1;
        }
        if (!fits)
            break;
        i += k;
    }
    return o;
}

/* One "key": value of a json line. val == NULL writes null; is_number copies val as is. */
struct jfield {
    const char *key;
    const char *val;
    size_t len;
    bool is_number;
};

/* A json line being built in buf; cap leaves room for the closing "}\n". */
struct jline {
    char *buf;
    size_t len, cap;
};

static void jl_put(struct jline *j, const char *p, size_t n)
{
    memcpy(j->buf + j->len, p, n);
    j->len += n;
}

/* Appends ,"key":value. A field that does not fit is left out whole, and a string that does
 * not fit is cut between two characters, so a line stays one valid object even when memory
 * runs out. */
static void jl_field(struct jline *j, const struct jfield *f)
{
    size_t klen = strlen(f->key);
    size_t room = j->cap - j->len;
    size_t head = klen + 4; /* ,"key": */
    size_t min = f->val == NULL ? 4 : f->is_number ? f->len : 2;
    if (room < head + min)
        return;
    jl_put(j, ",\"", 2);
    jl_put(j, f->key, klen);
    jl_put(j, "\":", 2);
    if (f->val == NULL) {
        jl_put(j, "null", 4);
    } else if (f->is_number) {
        jl_put(j, f->val, f->len);
    } else {
        jl_put(j, "\"", 1);
        j->len += json_escape(j->buf + j->len, room - head - 2, f->val, f->len);
        jl_put(j, "\"", 1);
    }
}

/* {"time":"2026-11-30T20:22:21.123Z","level":"error"}\n is 52 bytes. */
#define JSON_HEAD_MAX 64

/* Builds and writes one line: time and level, then the fields in order. */
static void write_json(int fd, enum wd_log_level level, const struct jfield *f, size_t nf)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    char stack[8192];
    size_t need = JSON_HEAD_MAX;
    for (size_t i = 0; i < nf; i++) {
        need += strlen(f[i].key) + 4;
        if (f[i].val == NULL)
            need += 4;
        else if (f[i].is_number)
            need += f[i].len;
        else
            need += 2 + json_escape(NULL, 0, f[i].val, f[i].len);
    }
    char *heap = need > sizeof stack ? malloc(need) : NULL;
    struct jline j = {heap != NULL ? heap : stack, 0, heap != NULL ? need : sizeof stack};
    j.cap -= 2;

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    j.len = strftime(j.buf, j.cap, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    int k = snprintf(j.buf + j.len, j.cap - j.len, ".%03dZ\",\"level\":\"%s\"",
                     (int)(ts.tv_nsec / 1000000),
                     (unsigned)level < WD_ARRAY_LEN(levels) ? levels[level] : "info");
    if (k > 0)
        j.len += (size_t)k;
    for (size_t i = 0; i < nf; i++)
        jl_field(&j, &f[i]);
    j.buf[j.len++] = '}';
    j.buf[j.len++] = '\n';
    write_all(fd, j.buf, j.len);
    free(heap);
}

static struct jfield jstr(const char *key, const char *val)
{
    struct jfield f = {key, val, val != NULL ? strlen(val) : 0, false};
    return f;
}

static struct jfield jnum(const char *key, const char *num, int len)
{
    struct jfield f = {key, num, len > 0 ? (size_t)len : 0, true};
    return f;
}

/* ---- the watchdog's own lines -------------------------------------------------------- */

void wd_log_write(enum wd_log_level level, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    if (log_format == WD_LOG_JSON) {
        va_start(ap, fmt);
        int k = vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        struct jfield msg = {"msg", line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1,
                             false};
        write_json(2, level, &msg, 1);
        return;
    }
    size_t n = stamp(line, sizeof line);
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    n += (size_t)k < sizeof line - n - 1 ? (size_t)k : sizeof line - n - 2;
    line[n++] = '\n';
    write_all(2, line, n);
}

void wd_log_request(const struct wd_log_req *r)
{
    enum wd_log_level level = (r->status >= 500 || r->error != NULL) ? WD_LOG_WARN : WD_LOG_INFO;
    if (level < wd_log_level)
        return;
    if (log_format == WD_LOG_JSON) {
        char status[16], dur[32], in[24], out[24];
        /* Clamp so that NaN, a clock step back or a silly value still prints a short number. */
        double ms = r->seconds * 1000.0;
        if (!(ms >= 0.0))
            ms = 0.0;
        else if (ms > 1e15)
            ms = 1e15;
        struct jfield f[] = {
            jstr("msg", "request"),
            jstr("method", r->method),
            jstr("path", r->path),
            jnum("status", status, snprintf(status, sizeof status, "%d", r->status)),
            jnum("duration_ms", dur, snprintf(dur, sizeof dur, "%.3f", ms)),
            jnum("bytes_in", in, snprintf(in, sizeof in, "%" PRIu64, r->bytes_in)),
            jnum("bytes_out", out, snprintf(out, sizeof out, "%" PRIu64, r->bytes_out)),
            jstr("call_id", r->call_id),
            jstr("mode", r->mode),
            jstr("error", r->error),
        };
        write_json(2, level, f, WD_ARRAY_LEN(f) - (r->error == NULL));
        return;
    }
    if (r->error != NULL)
        wd_log_write(level, "%s", r->error);
    char size[32];
    wd_log_human_size(size, sizeof size, r->bytes_out);
    const char *method = r->method != NULL ? r->method : "";
    const char *path = r->path != NULL ? r->path : "";
    if (log_callid)
        wd_log_write(level, "%s %s - %d - ContentLength: %s (%.4fs) [%s]", method, path, r->status,
                     size, r->seconds, r->call_id != NULL ? r->call_id : "none");
    else
        wd_log_write(level, "%s %s - %d - ContentLength: %s (%.4fs)", method, path, r->status, size,
                     r->seconds);
}

/* ---- handler output ------------------------------------------------------------------ */

int wd_linelog_init(struct wd_linelog *ll, const char *stream, int fd, int64_t max_line)
{
    memset(ll, 0, sizeof *ll);
    ll->stream = stream;
    ll->fd = fd;
    /* Negative log_buffer_size means unbounded in OW; we still cap a line at 1 MiB pieces. */
    ll->cap = max_line <= 0 ? 1u << 20 : (size_t)max_line;
    return 0;
}

static void emit_json(const struct wd_linelog *ll, const char *p, size_t len)
{
    struct jfield f[] = {
        {"msg", p, len, false},
        jstr("stream", ll->stream),
        jstr("call_id", ll->call_id),
    };
    write_json(ll->fd, WD_LOG_INFO, f, WD_ARRAY_LEN(f) - (ll->call_id == NULL));
}

static void emit(const struct wd_linelog *ll, const char *p, size_t len)
{
    if (log_format == WD_LOG_JSON) {
        emit_json(ll, p, len);
        return;
    }
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
        /* A line of exactly cap bytes was emitted when it filled the buffer; its '\n' arriving
         * in a later read must not make an empty line (one read or two give the same lines). */
        if (ll->is_split && data[0] == '\n') {
            ll->is_split = false;
            data++;
            len--;
            continue;
        }
        ll->is_split = false;
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
                ll->is_split = nl == NULL;
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
    ll->is_split = false;
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
