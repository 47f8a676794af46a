/* static.c: mode `static`, files under static_path served as of-watchdog does (Go's
 * http.FileServer): index.html for directories, the same redirects, HEAD, conditional requests
 * (Last-Modified, ETag), one byte range, Content-Type from the extension, Go's error texts.
 *
 * Safety: the path is percent-decoded, NUL bytes and `..` segments are refused (404), and every
 * lookup is resolved by the kernel beneath a directory fd opened at start (openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so no symlink can lead outside static_path. Kernels
 * without openat2 get realpath() plus a prefix check. Directory listings are never produced.
 *
 * Speed and memory: path lookup, fstat and close run on the loop thread (metadata of cached
 * inodes, as nginx does). Files up to 64 KiB are read at once with pread into one buffer of the
 * mode state, reused by every request (wd_res_write copies). Larger files are streamed in 64 KiB
 * pieces read on libuv's threadpool (uv_fs_read) into one buffer per job, one piece at a time,
 * and reading stops while wd_res_write reports a deep socket queue.
 * It never touches a socket: it talks to the server through mode.h only. */
#include "cgi.h"
#include "mode.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <uv.h>

#include "config.h"
#include "log.h"

#define CHUNK ((size_t)64 * 1024)
#define OPEN_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) /* a FIFO must not block */

struct static_job;

/* Created by start(), freed by stop() once the last job is gone (jobs borrow rootfd). */
struct static_state {
    struct wd_app *app;
    int rootfd;              /* O_PATH fd of static_path; -1 when missing: every request 404 */
    bool use_openat2;        /* false: kernel without openat2, realpath fallback */
    char *root_real;         /* realpath of static_path, for the fallback */
    char *small;             /* CHUNK bytes: whole small files, reused by every request */
    struct static_job *jobs; /* every live job, for stop() */
    bool is_stopping;
    wd_done_cb stop_done;
    void *stop_arg;
};

/* One request. Created in on_headers, freed by job_maybe_free once the response is over (req
 * NULL), no threadpool work or read is in flight, and no callback of ours is on the stack.
 * `req` is borrowed: NULL once we ended the response or the server aborted us. */
struct static_job {
    struct static_state *st;
    struct wd_req *req;
    struct static_job *prev, *next;
    uv_fs_t fs;
    bool is_busy;       /* fs is owned by the threadpool */
    int depth;          /* our callbacks on the stack: never free under them */
    bool waiting_drain; /* wd_res_write said 1: read again on on_drain */
    bool want_dir;      /* the decoded path ends with '/' */
    bool is_dir;        /* the path named a directory (then fd/sb are its index.html) */
    int err;            /* lookup result: 0 or -errno */
    int fd;             /* owned, -1 when none */
    struct stat sb;
    int64_t off, left; /* what remains to send */
    char *buf;         /* CHUNK bytes for streaming a large file, allocated once */
    char lm[40], etag[64], crange[96];
    char rel[PATH_MAX]; /* lookup path relative to the root, "." for the root; last member */
};

/* ---- helpers ------------------------------------------------------------------------- */

static const char *header_value(const struct wd_http1_head *head, const char *name)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, name) == 0)
            return head->headers[i].value;
    }
    return NULL;
}

/* Go's built-in table (mime.builtinTypesLower) plus common web types; the rest is binary. */
static const char *content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"txt", "text/plain; charset=utf-8"},
        {"md", "text/markdown; charset=utf-8"},
        {"csv", "text/csv; charset=utf-8"},
        {"xml", "text/xml; charset=utf-8"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"avif", "image/avif"},
        {"ico", "image/vnd.microsoft.icon"},
        {"wasm", "application/wasm"},
        {"pdf", "application/pdf"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"ttf", "font/ttf"},
        {"otf", "font/otf"},
        {"mp4", "video/mp4"},
        {"webm", "video/webm"},
        {"mp3", "audio/mpeg"},
        {"zip", "application/zip"},
        {"gz", "application/gzip"},
        {"tar", "application/x-tar"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash : name, '.');
    if (dot != NULL) {
        for (size_t i = 0; i < WD_ARRAY_LEN(types); i++) {
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
        }
    }
    return "application/octet-stream";
}

/* Percent-decode `path` and turn it into a lookup path relative to the root ("." for the root),
 * dropping empty and `.` segments. Returns 0, 400 (bad escape) or 404 (NUL byte, a `..`
 * segment, too long). Segments are checked after decoding, so `%2e%2e` and `%2f` gain nothing. */
static int clean_path(const char *path, char *rel, size_t cap, bool *want_dir, bool *is_index)
{
    char dec[PATH_MAX];
    if (path[0] != '/')
        return 404;
    int rc = wd_cgi_decode_path(dec, sizeof dec, path); /* refuses %00 and bad escapes */
    if (rc == UV_ENOBUFS || (rc < 0 && strstr(path, "%00") != NULL))
        return 404;
    if (rc < 0)
        return 400;
    size_t n = strlen(dec);
    *want_dir = dec[n - 1] == '/';
    *is_index = n >= 11 && strcmp(dec + n - 11, "/index.html") == 0;
    size_t o = 0;
    char *save = NULL;
    for (char *seg = strtok_r(dec, "/", &save); seg != NULL; seg = strtok_r(NULL, "/", &save)) {
        if (strcmp(seg, ".") == 0)
            continue;
        if (strcmp(seg, "..") == 0)
            return 404;
        size_t sl = strlen(seg);
        if (o + sl + 2 > cap)
            return 404;
        if (o > 0)
            rel[o++] = '/';
        memcpy(rel + o, seg, sl);
        o += sl;
    }
    if (o == 0)
        rel[o++] = '.';
    rel[o] = '\0';
    return 0;
}

static void http_time(char *out, size_t cap, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms. */
static bool parse_http_time(const char *s, time_t *out)
{
    static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                          "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < WD_ARRAY_LEN(formats); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(s, formats[i], &tm);
        if (end != NULL && *end == '\0') {
            *out = timegm(&tm);
            return true;
        }
    }
    return false;
}

/* Does the entity-tag list `list` (RFC 9110 8.8.3) name `etag`? Weak comparison ignores W/. */
static bool etag_match(const char *list, const char *etag, bool weak)
{
    const char *p = list;
    size_t elen = strlen(etag);
    while (*p != '\0') {
        p += strspn(p, " \t,");
        if (*p == '*')
            return true;
        bool is_weak = strncmp(p, "W/", 2) == 0;
        if (is_weak)
            p += 2;
        if (*p != '"')
            return false;
        const char *q = strchr(p + 1, '"');
        if (q == NULL)
            return false;
        if ((weak || !is_weak) && (size_t)(q + 1 - p) == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = q + 1;
    }
    return false;
}

/* Digits only, no sign, no overflow. */
static bool parse_i64(const char *s, size_t n, int64_t *out)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

enum range_result { RANGE_NONE, RANGE_ONE, RANGE_INVALID, RANGE_NO_OVERLAP };

/* RFC 9110 14.1.2, parsed as Go's parseRange, but one range only: a list is answered with the
 * whole file (RANGE_NONE). */
static enum range_result parse_range(const char *h, int64_t size, int64_t *first, int64_t *len)
{
    if (strncmp(h, "bytes=", 6) != 0)
        return RANGE_INVALID;
    h += 6;
    if (strchr(h, ',') != NULL)
        return RANGE_NONE;
    const char *dash = strchr(h, '-');
    if (dash == NULL)
        return RANGE_INVALID;
    int64_t a, b;
    bool has_a = strspn(h, " \t") < (size_t)(dash - h);
    if (!has_a) { /* suffix: the last b bytes */
        if (!parse_i64(dash + 1, strlen(dash + 1), &b))
            return RANGE_INVALID;
        if (b == 0)
            return RANGE_NO_OVERLAP;
        if (b > size)
            b = size;
        *first = size - b;
        *len = b;
        return RANGE_ONE;
    }
    if (!parse_i64(h, (size_t)(dash - h), &a))
        return RANGE_INVALID;
    if (a >= size)
        return RANGE_NO_OVERLAP;
    *first = a;
    if (dash[1 + strspn(dash + 1, " \t")] == '\0') {
        *len = size - a;
        return RANGE_ONE;
    }
    if (!parse_i64(dash + 1, strlen(dash + 1), &b) || b < a)
        return RANGE_INVALID;
    if (b >= size)
        b = size - 1;
    *len = b - a + 1;
    return RANGE_ONE;
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void state_free(struct static_state *st)
{
    if (st->rootfd >= 0)
        close(st->rootfd);
    free(st->root_real);
    free(st->small);
    free(st);
}

static void job_maybe_free(struct static_job *job)
{
    if (job->req != NULL || job->is_busy || job->depth > 0)
        return;
    struct static_state *st = job->st;
    if (job->fd >= 0)
        close(job->fd);
    WD_LIST_REMOVE(st->jobs, job);
    free(job->buf);
    free(job);
    if (st->is_stopping && st->jobs == NULL) {
        wd_done_cb done = st->stop_done;
        void *arg = st->stop_arg;
        state_free(st);
        done(arg);
    }
}

/* ---- answers ------------------------------------------------------------------------- */

/* Whole answer, then let the request go. */
static void respond(struct static_job *job, int status, const struct wd_header *h, size_t n,
                    const char *body)
{
    struct wd_req *req = job->req;
    job->req = NULL;
    wd_res_send(req, status, h, n, body, body ? strlen(body) : 0);
}

/* Go's http.Error, with FileServer's texts. */
static void respond_error(struct static_job *job, int status)
{
    const char *body = status == 404   ? "404 page not found\n"
                       : status == 403 ? "403 Forbidden\n"
                       : status == 400 ? "400 Bad Request\n"
                                       : "500 Internal Server Error\n";
    struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"},
                            {"X-Content-Type-Options", "nosniff"}};
    respond(job, status, h, WD_ARRAY_LEN(h), body);
}

/* Go's localRedirect: 301 to a relative reference, the query kept. The last segment is copied
 * from the raw (still encoded) path, so no decoded byte can reach a header. */
static void redirect(struct static_job *job, const char *prefix, bool with_base)
{
    const struct wd_http1_head *head = job->req->head;
    const char *path = head->path;
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t beg = end;
    while (beg > 0 && path[beg - 1] != '/')
        beg--;
    char loc[PATH_MAX + 64];
    size_t seglen = with_base ? end - beg : 0;
    if (seglen + strlen(head->query) + 16 > sizeof loc) {
        respond_error(job, 404);
        return;
    }
    const char *dot = with_base && memchr(path + beg, ':', seglen) && prefix[0] == '\0' ? "./" : "";
    snprintf(loc, sizeof loc, "%s%s%.*s%s%s%s", prefix, dot, (int)seglen, path + beg,
             with_base && prefix[0] == '\0' ? "/" : "", head->query[0] ? "?" : "", head->query);
    struct wd_header h[] = {{"Location", loc}};
    respond(job, 301, h, 1, NULL);
}

/* Go's serveContent: Content-Range only when the range is valid but outside the file. */
static void respond_416(struct static_job *job, int64_t size)
{
    struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"},
                            {"X-Content-Type-Options", "nosniff"},
                            {"Content-Range", job->crange}};
    snprintf(job->crange, sizeof job->crange, "bytes */%lld", (long long)size);
    respond(job, 416, h, size < 0 ? 2 : 3,
            size < 0 ? "invalid range\n" : "invalid range: failed to overlap\n");
}

/* ---- streaming ----------------------------------------------------------------------- */

static void read_next(struct static_job *job);

static void finish_stream(struct static_job *job, const char *error)
{
    struct wd_req *req = job->req;
    job->req = NULL;
    if (error != NULL) {
        wd_req_note_error(req, error);
        wd_res_abort(req);
    } else {
        wd_res_end(req);
    }
}

static void on_read(uv_fs_t *fs)
{
    struct static_job *job = fs->data;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    job->is_busy = false;
    job->depth++;
    if (job->req == NULL) {
        /* aborted meanwhile */
    } else if (n <= 0) {
        finish_stream(job, n < 0 ? "static: read failed" : "static: file shrank while sent");
    } else {
        job->off += n;
        job->left -= n;
        int rc = wd_res_write(job->req, job->buf, (size_t)n);
        if (job->req == NULL) {
            /* the write ended the connection and on_abort ran */
        } else if (rc < 0) {
            finish_stream(job, "static: connection gone");
        } else if (job->left == 0) {
            finish_stream(job, NULL);
        } else if (rc == 1) {
            job->waiting_drain = true;
        } else {
            read_next(job);
        }
    }
    job->depth--;
    job_maybe_free(job);
}

static void read_next(struct static_job *job)
{
    if (job->buf == NULL && (job->buf = malloc(CHUNK)) == NULL) {
        finish_stream(job, "static: out of memory");
        return;
    }
    size_t want = job->left < (int64_t)CHUNK ? (size_t)job->left : CHUNK;
    uv_buf_t b = uv_buf_init(job->buf, (unsigned int)want);
    job->fs.data = job;
    int rc = uv_fs_read(job->st->app->loop, &job->fs, job->fd, &b, 1, job->off, on_read);
    if (rc < 0) {
        uv_fs_req_cleanup(&job->fs);
        finish_stream(job, "static: read failed");
        return;
    }
    job->is_busy = true;
}

/* The whole (remaining) body at once: read on the loop thread into the shared buffer. */
static void send_small(struct static_job *job)
{
    char *buf = job->st->small;
    size_t want = (size_t)job->left, got = 0;
    while (got < want) {
        ssize_t r = pread(job->fd, buf + got, want - got, (off_t)(job->off + (int64_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            finish_stream(job, r < 0 ? "static: read failed" : "static: file shrank while sent");
            return;
        }
        got += (size_t)r;
    }
    job->off += (int64_t)got;
    job->left = 0;
    int rc = wd_res_write(job->req, buf, got);
    if (job->req == NULL)
        return; /* the write ended the connection and on_abort ran */
    finish_stream(job, rc < 0 ? "static: connection gone" : NULL);
}

/* serveContent: preconditions, range, then the headers and the body. */
static void serve_file(struct static_job *job)
{
    const struct wd_http1_head *head = job->req->head;
    const struct stat *sb = &job->sb;
    bool is_get = strcmp(head->method, "GET") == 0 || job->req->is_head;
    int64_t size = sb->st_size;
    bool has_lm = sb->st_mtime != 0;
    http_time(job->lm, sizeof job->lm, sb->st_mtime);
    snprintf(job->etag, sizeof job->etag, "\"%llx-%llx\"", (unsigned long long)size,
             (unsigned long long)sb->st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)sb->st_mtim.tv_nsec);
    struct wd_header h[6];
    size_t n = 0;
    if (has_lm)
        h[n++] = (struct wd_header){"Last-Modified", job->lm};
    h[n++] = (struct wd_header){"ETag", job->etag};

    /* Go's checkPreconditions, in its order. */
    const char *im = header_value(head, "If-Match");
    const char *ius = header_value(head, "If-Unmodified-Since");
    const char *inm = header_value(head, "If-None-Match");
    const char *ims = header_value(head, "If-Modified-Since");
    time_t t;
    if ((im != NULL && !etag_match(im, job->etag, false)) ||
        (im == NULL && ius != NULL && has_lm && parse_http_time(ius, &t) && sb->st_mtime > t)) {
        respond(job, 412, h, n, NULL);
        return;
    }
    if (inm != NULL && etag_match(inm, job->etag, true)) {
        if (is_get)
            respond(job, 304, &h[has_lm ? 1 : 0], 1, NULL); /* ETag only, as Go */
        else
            respond(job, 412, h, n, NULL);
        return;
    }
    if (inm == NULL && ims != NULL && is_get && has_lm && parse_http_time(ims, &t) &&
        sb->st_mtime <= t) {
        respond(job, 304, &h[1], 1, NULL);
        return;
    }
    const char *range = header_value(head, "Range");
    const char *ir = header_value(head, "If-Range");
    if (range != NULL && ir != NULL && is_get) {
        bool keep = ir[0] == '"' || strncmp(ir, "W/", 2) == 0
                        ? etag_match(ir, job->etag, false)
                        : has_lm && parse_http_time(ir, &t) && t == sb->st_mtime;
        if (!keep)
            range = NULL;
    }

    int status = 200;
    job->off = 0;
    job->left = size;
    if (range != NULL) {
        int64_t from = 0, len = size;
        switch (parse_range(range, size, &from, &len)) {
        case RANGE_NONE:
            break;
        case RANGE_ONE:
            status = 206;
            job->off = from;
            job->left = len;
            snprintf(job->crange, sizeof job->crange, "bytes %lld-%lld/%lld", (long long)from,
                     (long long)(from + len - 1), (long long)size);
            h[n++] = (struct wd_header){"Content-Range", job->crange};
            break;
        case RANGE_NO_OVERLAP:
            if (size == 0)
                break; /* Go: an empty file ignores the range (200, not 416) */
            respond_416(job, size);
            return;
        case RANGE_INVALID:
            respond_416(job, -1);
            return;
        }
    }
    h[n++] = (struct wd_header){"Content-Type", content_type(job->rel)};
    h[n++] = (struct wd_header){"Accept-Ranges", "bytes"};
    if (wd_res_start(job->req, status, h, n, job->left) < 0 || job->req == NULL) {
        if (job->req != NULL)
            finish_stream(job, "static: connection gone");
        return;
    }
    if (job->req->is_head || job->left == 0)
        finish_stream(job, NULL);
    else if (job->left <= (int64_t)CHUNK)
        send_small(job);
    else
        read_next(job);
}

/* ---- lookups, on the loop thread ----------------------------------------------------- */

/* Open `rel` beneath the root. Returns an fd or -errno; EXDEV/ELOOP mean "leads outside". */
static int open_beneath(const struct static_state *st, const char *rel)
{
    if (st->use_openat2) {
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = OPEN_FLAGS;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        long fd = syscall(SYS_openat2, st->rootfd, rel, &how, sizeof how);
        return fd < 0 ? -errno : (int)fd;
    }
    /* Fallback: resolve every symlink, check the prefix, then open without following. A
     * rename racing this check could still swap a directory; openat2 has no such window. */
    char full[PATH_MAX * 2], real[PATH_MAX];
    snprintf(full, sizeof full, "%s/%s", st->root_real, rel);
    if (realpath(full, real) == NULL)
        return -errno;
    size_t rl = strlen(st->root_real);
    if (strncmp(real, st->root_real, rl) != 0 || (real[rl] != '/' && real[rl] != '\0' && rl > 1))
        return -EXDEV;
    int fd = open(real, OPEN_FLAGS | O_NOFOLLOW);
    return fd < 0 ? -errno : fd;
}

static int lookup(struct static_job *job, const char *rel)
{
    int fd = open_beneath(job->st, rel);
    if (fd < 0)
        return fd;
    if (fstat(fd, &job->sb) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    job->fd = fd;
    return 0;
}

static void do_lookup(struct static_job *job)
{
    job->err = lookup(job, job->rel);
    if (job->err < 0 || !S_ISDIR(job->sb.st_mode) || !job->want_dir)
        return;
    /* A directory asked with its slash: serve its index.html, or 404 (no listings). */
    job->is_dir = true;
    close(job->fd);
    job->fd = -1;
    char index[PATH_MAX + 16];
    snprintf(index, sizeof index, "%s/index.html", job->rel);
    job->err = lookup(job, strcmp(job->rel, ".") == 0 ? "index.html" : index);
    if (job->err == 0)
        snprintf(job->rel, sizeof job->rel, "index.html"); /* for the Content-Type */
}

static void answer(struct static_job *job)
{
    if (job->err < 0) {
        int e = job->err;
        if (e == UV_EACCES || e == UV_EPERM) {
            respond_error(job, 403);
        } else if (e == UV_ENOENT || e == UV_ENOTDIR || e == UV_EXDEV || e == UV_ELOOP ||
                   e == UV_ENAMETOOLONG || e == UV_ENXIO || e == UV_EINVAL) {
            respond_error(job, 404);
        } else {
            wd_req_note_error(job->req, uv_strerror(e));
            respond_error(job, 500);
        }
    } else if (S_ISDIR(job->sb.st_mode) && !job->is_dir) {
        redirect(job, "", true); /* /dir -> dir/ */
    } else if (!S_ISREG(job->sb.st_mode)) {
        respond_error(job, 404); /* FIFO, device, socket, or an index.html that is not a file */
    } else if (job->want_dir && !job->is_dir) {
        redirect(job, "../", true); /* /file/ -> ../file */
    } else {
        serve_file(job);
    }
}

/* ---- the mode interface -------------------------------------------------------------- */

static void on_headers(void *state, struct wd_req *req)
{
    struct static_state *st = state;
    struct static_job *job = malloc(sizeof *job);
    if (job == NULL) {
        wd_res_send(req, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    memset(job, 0, offsetof(struct static_job, rel)); /* rel is written before it is read */
    job->rel[0] = '\0';
    job->st = st;
    job->req = req;
    job->fd = -1;
    req->mode_data = job;
    WD_LIST_PUSH(st->jobs, job);
}

static void on_body(struct wd_req *req, const char *at, size_t len)
{
    WD_UNUSED(req); /* any method is served as GET; a body is read and dropped */
    WD_UNUSED(at);
    WD_UNUSED(len);
}

/* The answer starts once the request is read, so a POST keeps its connection alive. */
static void on_end(struct wd_req *req)
{
    struct static_job *job = req->mode_data;
    struct static_state *st = job->st;
    bool is_index = false;
    job->depth++;
    int rc = clean_path(req->head->path, job->rel, sizeof job->rel, &job->want_dir, &is_index);
    if (rc != 0 || st->rootfd < 0) {
        respond_error(job, rc != 0 ? rc : 404);
    } else if (is_index) {
        redirect(job, "./", false); /* Go: .../index.html -> ./ */
    } else {
        do_lookup(job);
        answer(job);
    }
    job->depth--;
    job_maybe_free(job);
}

static void on_drain(struct wd_req *req)
{
    struct static_job *job = req->mode_data;
    if (job == NULL || !job->waiting_drain || job->is_busy)
        return;
    job->waiting_drain = false;
    job->depth++;
    read_next(job);
    job->depth--;
    job_maybe_free(job);
}

static void on_abort(struct wd_req *req)
{
    struct static_job *job = req->mode_data;
    if (job == NULL)
        return;
    job->req = NULL;
    job_maybe_free(job);
}

static int start(struct wd_app *app, void **state)
{
    struct static_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return UV_ENOMEM;
    st->app = app;
    st->rootfd = -1;
    st->small = malloc(CHUNK);
    if (st->small == NULL) {
        free(st);
        return UV_ENOMEM;
    }
    const char *path = app->cfg->static_path;
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        wd_log_warn("static_path %s: %s: every request will get 404", path, strerror(errno));
    } else {
        st->rootfd = fd;
        st->root_real = realpath(path, NULL);
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        long probe = syscall(SYS_openat2, fd, ".", &how, sizeof how);
        int probe_err = probe < 0 ? errno : 0;
        if (probe >= 0)
            close((int)probe);
        /* ENOSYS: kernel < 5.6; EPERM: an old seccomp profile. Anything else (EACCES on the
         * directory itself) says openat2 exists. */
        st->use_openat2 = probe_err != ENOSYS && probe_err != EPERM;
        if (!st->use_openat2 && st->root_real == NULL) {
            wd_log_warn("static_path %s: cannot resolve: every request will get 404", path);
            close(fd);
            st->rootfd = -1;
        } else if (!st->use_openat2) {
            wd_log_warn("openat2 unavailable (%s): using realpath checks", strerror(probe_err));
        }
        if (st->rootfd >= 0)
            wd_log_info("Serving files from: %s", path);
    }
    *state = st;
    return 0;
}

static void stop(void *state, wd_done_cb done, void *arg)
{
    struct static_state *st = state;
    if (st->jobs == NULL) {
        state_free(st);
        done(arg);
        return;
    }
    /* Jobs still streaming with a read on the threadpool: the last one's free frees the state. */
    st->is_stopping = true;
    st->stop_done = done;
    st->stop_arg = arg;
}

const struct wd_mode wd_mode_static = {
    .name = "static",
    .start = start,
    .on_headers = on_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_drain = on_drain,
    .on_abort = on_abort,
    .stop = stop,
};
