/* check_http1.c: the request parser fed whole, split at every byte offset and one byte at a
 * time. Every run records what the callbacks saw as one text log, so the runs compare as
 * strings. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <check.h>

#include "../suites.h"
#include "http1.h"

#define S(lit) lit, sizeof(lit) - 1
#define LOG_BYTES (256 * 1024)
#define MAX_STOPS 8

static const struct wd_http1_limits limits = {.max_header_bytes = 4096, .max_body_bytes = 1000};

/* What the callbacks saw. `body` collects one message's body until on_end logs it. */
struct rec {
    char log[LOG_BYTES];
    size_t log_len;
    char body[LOG_BYTES];
    size_t body_len;
    int nheads, nbodies, nends;
    int abort_in;                 /* 1 on_head, 2 on_body, 3 on_end return -1 */
    struct wd_http1 *next_in_end; /* call wd_http1_next() from on_end */
};

struct run {
    int rc; /* 0 when every byte was taken, else the error */
    int status;
    const char *reason;
    int finish_rc;
    size_t stops[MAX_STOPS]; /* absolute offsets where messages ended */
    int nstops;
    struct rec rec;
};

static void rec_printf(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_printf(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(r->log + r->log_len, sizeof(r->log) - r->log_len, fmt, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    ck_assert_uint_lt((size_t)n, sizeof(r->log) - r->log_len);
    r->log_len += (size_t)n;
}

static int on_head(void *arg, const struct wd_http1_head *h)
{
    struct rec *r = arg;
    size_t i;

    r->nheads++;
    rec_printf(r, "%s %s|%s|%s|host=%s|cl=%lld|%d.%d|ka=%d|ec=%d|up=%d\n", h->method, h->target,
               h->path, h->query, h->host, (long long)h->content_length, h->http_major,
               h->http_minor, h->keep_alive, h->expect_continue, h->is_upgrade);
    for (i = 0; i < h->nheaders; i++)
        rec_printf(r, "%s: %s\n", h->headers[i].name, h->headers[i].value);
    return r->abort_in == 1 ? -1 : 0;
}

static int on_body(void *arg, const char *at, size_t len)
{
    struct rec *r = arg;

    r->nbodies++;
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_le(len, sizeof(r->body) - r->body_len);
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return r->abort_in == 2 ? -1 : 0;
}

static int on_end(void *arg)
{
    struct rec *r = arg;

    r->nends++;
    rec_printf(r, "body=%.*s\nend\n", (int)r->body_len, r->body);
    r->body_len = 0;
    if (r->next_in_end != NULL)
        wd_http1_next(r->next_in_end);
    return r->abort_in == 3 ? -1 : 0;
}

static const struct wd_http1_cbs cbs = {on_head, on_body, on_end};

/* Feed one piece like server.c does: after a stop, call next() and feed the rest. */
static int feed_piece(struct wd_http1 *p, struct run *r, const char *in, size_t from, size_t to)
{
    while (from < to) {
        size_t used = 0;
        int rc = wd_http1_execute(p, in + from, to - from, &used);

        ck_assert_uint_le(used, to - from);
        from += used;
        if (rc < 0)
            return rc;
        if (rc == WD_HTTP1_STOP) {
            ck_assert_int_lt(r->nstops, MAX_STOPS);
            r->stops[r->nstops++] = from;
            ck_assert(!wd_http1_is_idle(p));
            wd_http1_next(p);
            ck_assert(wd_http1_is_idle(p));
            continue;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(from, to);
    }
    return 0;
}

/* Feed `in` split at `cut` (0: whole), or in pieces of `step` bytes when step > 0. */
static struct run *drive(const struct wd_http1_limits *lim, const char *in, size_t len, size_t cut,
                         size_t step, int abort_in)
{
    struct run *r = calloc(1, sizeof(*r));
    struct wd_http1 *p = NULL;
    size_t pos = 0;

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(wd_http1_new(&p, &cbs, &r->rec, lim), 0);
    r->rec.abort_in = abort_in;
    ck_assert(wd_http1_is_idle(p));
    while (pos < len && r->rc == 0) {
        size_t end = step > 0 ? pos + step : (pos < cut ? cut : len);

        end = end < len ? end : len;
        r->rc = feed_piece(p, r, in, pos, end);
        pos = end;
    }
    r->status = wd_http1_error(p, &r->reason);
    r->finish_rc = wd_http1_finish(p);
    wd_http1_free(p);
    return r;
}

/* The run must match `want` in everything the callbacks and the parser reported. */
static void assert_same(const struct run *got, const struct run *want, size_t cut, size_t step)
{
    ck_assert_msg(strcmp(got->rec.log, want->rec.log) == 0, "cut=%zu step=%zu log:\n%s\nwant:\n%s",
                  cut, step, got->rec.log, want->rec.log);
    ck_assert_int_eq(got->rc < 0, want->rc < 0);
    ck_assert_int_eq(got->status, want->status);
    ck_assert_str_eq(got->reason, want->reason);
    ck_assert_int_eq(got->nstops, want->nstops);
    for (int i = 0; i < got->nstops; i++)
        ck_assert_uint_eq(got->stops[i], want->stops[i]);
    ck_assert_int_eq(got->rec.nheads, want->rec.nheads);
    ck_assert_int_eq(got->rec.nends, want->rec.nends);
}

/* Whole, then every split in two, then one byte at a time: all must equal the whole run. */
static struct run *drive_all(const struct wd_http1_limits *lim, const char *in, size_t len)
{
    struct run *whole = drive(lim, in, len, 0, 0, 0);
    struct run *r;

    for (size_t cut = 1; cut < len; cut++) {
        r = drive(lim, in, len, cut, 0, 0);
        assert_same(r, whole, cut, 0);
        free(r);
    }
    r = drive(lim, in, len, 0, 1, 0);
    assert_same(r, whole, 0, 1);
    free(r);
    return whole;
}

static void check_valid(const struct wd_http1_limits *lim, const char *in, size_t len,
                        const char *want_log)
{
    struct run *r = drive_all(lim, in, len);

    ck_assert_msg(r->rc == 0, "rc=%d status=%d reason=%s", r->rc, r->status, r->reason);
    ck_assert_str_eq(r->rec.log, want_log);
    ck_assert_int_eq(r->nstops, 1);
    ck_assert_uint_eq(r->stops[0], len);
    ck_assert_int_eq(r->finish_rc, 0);
    free(r);
}

/* ---- valid requests ---------------------------------------------------------------------- */

static const struct {
    const char *in;
    size_t len;
    const char *log;
} valid[] = {
    {S("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
     "GET /|/||host=x|cl=0|1.1|ka=1|ec=0|up=0\nHost: x\nbody=\nend\n"},
    {S("POST /fn HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"
       "hello"),
     "POST /fn|/fn||host=h|cl=5|1.1|ka=1|ec=0|up=0\nHost: h\nContent-Length: 5\n"
     "Content-Type: text/plain\nbody=hello\nend\n"},
    {S("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;a=b\r\nhello\r\n1;c\r\n \r\n6;n=\"x y\"\r\nworld!\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"),
     "POST /c|/c||host=h|cl=-1|1.1|ka=1|ec=0|up=0\nHost: h\nTransfer-Encoding: chunked\n"
     "body=hello world!\nend\n"},
    {S("PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked \r\n\r\n"
       "000A\r\n0123456789\r\n00\r\n\r\n"),
     "PUT /c|/c||host=h|cl=-1|1.1|ka=1|ec=0|up=0\nHost: h\nTransfer-Encoding: Chunked\n"
     "body=0123456789\nend\n"},
    /* RFC 9110 9.1: any token is a method; Go passes unknown ones to the handler. */
    {S("FOO / HTTP/1.1\r\nHost: h\r\n\r\n"),
     "FOO /|/||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("M-SEARCH.x /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"),
     "M-SEARCH.x /a|/a||host=h|cl=2|1.1|ka=1|ec=0|up=0\nHost: h\nContent-Length: "
     "2\nbody=hi\nend\n"},
    {S("GET /old HTTP/1.0\r\n\r\n"), "GET /old|/old||host=|cl=0|1.0|ka=0|ec=0|up=0\nbody=\nend\n"},
    {S("GET /ka HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n"),
     "GET /ka|/ka||host=h|cl=0|1.0|ka=1|ec=0|up=0\nConnection: keep-alive\nHost: h\n"
     "body=\nend\n"},
    {S("POST /old HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"),
     "POST /old|/old||host=|cl=2|1.0|ka=0|ec=0|up=0\nContent-Length: 2\n"
     "Expect: 100-continue\nbody=hi\nend\n"},
    {S("GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
     "GET /c|/c||host=h|cl=0|1.1|ka=0|ec=0|up=0\nHost: h\nConnection: close\nbody=\nend\n"},
    {S("POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi"),
     "POST /e|/e||host=h|cl=2|1.1|ka=1|ec=1|up=0\nHost: h\nExpect: 100-Continue\n"
     "Content-Length: 2\nbody=hi\nend\n"},
    {S("GET /q?a=1&b=%20&c HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /q?a=1&b=%20&c|/q|a=1&b=%20&c|host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET /q?a?b HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /q?a?b|/q|a?b|host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET /q? HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /q?|/q||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET //x HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET //x|//x||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET /a/../b%2F HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /a/../b%2F|/a/../b%2F||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nX-A: 4\r\n\r\n"),
     "GET /|/||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nX-A: 1\nx-a: 2\nX-B: 3\nX-A: 4\n"
     "body=\nend\n"},
    {S("GET / HTTP/1.1\r\nHost:h\r\nFoo: \t bar baz \t \r\nE:\r\nF: \r\nU: caf\xc3\xa9\r\n\r\n"),
     "GET /|/||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nFoo: bar baz\nE: \nF: \n"
     "U: caf\xc3\xa9\nbody=\nend\n"},
    {S("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
     "GET /ws|/ws||host=h|cl=0|1.1|ka=1|ec=0|up=1\nHost: h\nConnection: Upgrade\n"
     "Upgrade: websocket\nbody=\nend\n"},
    {S("POST /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
       "Content-Length: 3\r\n\r\nabc"),
     "POST /ws|/ws||host=h|cl=3|1.1|ka=1|ec=0|up=1\nHost: h\nConnection: upgrade\n"
     "Upgrade: h2c\nContent-Length: 3\nbody=abc\nend\n"},
    {S("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
     "OPTIONS *|*||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("GET http://h:8080/p/q?x=1 HTTP/1.1\r\nHost: h:8080\r\n\r\n"),
     "GET http://h:8080/p/q?x=1|/p/q|x=1|host=h:8080|cl=0|1.1|ka=1|ec=0|up=0\nHost: h:8080\n"
     "body=\nend\n"},
    {S("GET HTTPS://h?x HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET HTTPS://h?x|/|x|host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
    {S("\r\n\r\nDELETE /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
     "DELETE /d|/d||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nContent-Length: 0\nbody=\nend\n"},
    {S("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /\xc3\xa9|/\xc3\xa9||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"},
};

START_TEST(test_valid)
{
    check_valid(&limits, valid[_i].in, valid[_i].len, valid[_i].log);
}
END_TEST

/* A head just under the 4096-byte limit: the arena grows several times while it arrives. */
START_TEST(test_valid_long_header)
{
    static const char pre[] = "GET /long HTTP/1.1\r\nHost: h\r\nX-Long: ";
    char in[4096], want[8192];
    size_t n = sizeof(pre) - 1, vlen = sizeof(in) - n - 4;

    memcpy(in, pre, n);
    memset(in + n, 'v', vlen);
    memcpy(in + n + vlen, "\r\n\r\n", 4);
    snprintf(want, sizeof(want),
             "GET /long|/long||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nX-Long: %.*s\n"
             "body=\nend\n",
             (int)vlen, in + n);
    check_valid(&limits, in, sizeof(in), want);
}
END_TEST

/* ---- pipelining ---------------------------------------------------------------------------- */

static const char pipe3[] = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                            "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                            "PUT /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "3\r\nabc\r\n0\r\n\r\n";
#define PIPE1_END (sizeof("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n") - 1)
#define PIPE2_END                                                                                  \
    (PIPE1_END + sizeof("POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello") - 1)

START_TEST(test_pipeline_stops)
{
    struct wd_http1 *p;
    struct rec *r = calloc(1, sizeof(*r));
    size_t used, len = sizeof(pipe3) - 1;

    ck_assert_int_eq(wd_http1_new(&p, &cbs, r, &limits), 0);
    ck_assert_int_eq(wd_http1_execute(p, pipe3, len, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(used, PIPE1_END);
    ck_assert_int_eq(r->nends, 1);
    /* Stopped: nothing more is read until next(). */
    ck_assert_int_eq(wd_http1_execute(p, pipe3 + PIPE1_END, len - PIPE1_END, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(used, 0);
    ck_assert_int_eq(r->nheads, 1);
    wd_http1_next(p);
    ck_assert(wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_execute(p, pipe3 + PIPE1_END, len - PIPE1_END, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(PIPE1_END + used, PIPE2_END);
    ck_assert_int_eq(r->nends, 2);
    wd_http1_next(p);
    ck_assert_int_eq(wd_http1_execute(p, pipe3 + PIPE2_END, len - PIPE2_END, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(PIPE2_END + used, len);
    ck_assert_int_eq(r->nheads, 3);
    ck_assert_int_eq(r->nends, 3);
    ck_assert_str_eq(r->log, "GET /1|/1||host=h|cl=0|1.1|ka=1|ec=0|up=0\nHost: h\nbody=\nend\n"
                             "POST /2|/2||host=h|cl=5|1.1|ka=1|ec=0|up=0\nHost: h\n"
                             "Content-Length: 5\nbody=hello\nend\n"
                             "PUT /3|/3||host=h|cl=-1|1.1|ka=1|ec=0|up=0\nHost: h\n"
                             "Transfer-Encoding: chunked\nbody=abc\nend\n");
    wd_http1_next(p);
    ck_assert_int_eq(wd_http1_finish(p), 0);
    wd_http1_free(p);
    free(r);
}
END_TEST

/* Two and three requests in one buffer, fed in every way. */
START_TEST(test_pipeline_splits)
{
    struct run *r = drive_all(&limits, pipe3, PIPE2_END);

    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->nstops, 2);
    ck_assert_uint_eq(r->stops[0], PIPE1_END);
    ck_assert_uint_eq(r->stops[1], PIPE2_END);
    free(r);
    r = drive_all(&limits, pipe3, sizeof(pipe3) - 1);
    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->nstops, 3);
    ck_assert_uint_eq(r->stops[2], sizeof(pipe3) - 1);
    ck_assert_int_eq(r->rec.nends, 3);
    free(r);
}
END_TEST

/* A 100 KiB head (no limit) frees the big arena at next(); the following request still works. */
START_TEST(test_pipeline_big_then_small)
{
    static const struct wd_http1_limits unlimited = {0, 0};
    static const char small[] = "GET /s HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t big = 100 * 1024, len = big + sizeof(small) - 1;
    char *in = malloc(len);
    struct run *r;
    int n;

    ck_assert_ptr_nonnull(in);
    n = snprintf(in, big, "GET /b HTTP/1.1\r\nHost: h\r\nX: ");
    memset(in + n, 'x', big - (size_t)n - 4);
    memcpy(in + big - 4, "\r\n\r\n", 4);
    memcpy(in + big, small, sizeof(small) - 1);
    for (size_t step = 1000; step <= len; step += len - 1000) {
        r = drive(&unlimited, in, len, 0, step, 0);
        ck_assert_int_eq(r->rc, 0);
        ck_assert_int_eq(r->nstops, 2);
        ck_assert_uint_eq(r->stops[0], big);
        ck_assert_ptr_nonnull(strstr(r->rec.log, "GET /s|/s||host=h"));
        free(r);
    }
    free(in);
}
END_TEST

/* ---- refused requests ------------------------------------------------------------------------ */

static const struct {
    const char *in;
    size_t len;
} bad[] = {
    /* request smuggling: RFC 9112 6.1, 6.3 */
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\nhello")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
       "0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
       "\r\n\r\n0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n")},
    {S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n")},
    {S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")},
    /* field syntax: RFC 9112 2.2, 5.1, 5.2; RFC 9110 5.5 */
    {S("GET / HTTP/1.1\r\n Host: x\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo : bar\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo\t: bar\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\r\n b\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\r\n\tb\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\0b\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFo\x01o: x\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFo(o: x\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\x7f\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\rb\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\nFoo: a\x0b\r\n\r\n")},
    {S("GET / HTTP/1.1\nHost: h\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: h\r\n\n")},
    {S("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")},
    /* Host: RFC 9112 3.2 */
    {S("GET / HTTP/1.1\r\n\r\n")},
    {S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")},
    {S("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n")},
    /* request line: RFC 9112 3 */
    {S("GET /x HTTP/1.2\r\nHost: h\r\n\r\n")},
    {S("GET /x HTTP/2.0\r\nHost: h\r\n\r\n")},
    {S("GET /x RTSP/1.0\r\nHost: h\r\n\r\n")},
    {S("GET /x http/1.1\r\nHost: h\r\n\r\n")},
    {S("GET /x HTTP/1.1 \r\nHost: h\r\n\r\n")},
    {S("GET /x\r\n\r\n")},
    {S("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")},
    {S("CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n")},
    {S("GET x HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET * HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET  / HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("G(T / HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S(" GET / HTTP/1.1\r\nHost: h\r\n\r\n")},
    {S("\r\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")},
};

START_TEST(test_bad)
{
    struct run *r = drive_all(&limits, bad[_i].in, bad[_i].len);

    ck_assert_msg(r->rc < 0, "accepted: %s", r->rec.log);
    ck_assert_int_eq(r->status, 400);
    ck_assert_int_eq(r->rec.nheads, 0);
    ck_assert_int_eq(r->rec.nends, 0);
    ck_assert_int_eq(r->finish_rc, r->rc);
    free(r);
}
END_TEST

/* Refused in the body or trailers: on_head has run, on_end must not. No body limit here. */
static const struct wd_http1_limits no_body_limit = {.max_header_bytes = 4096};

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
static const struct {
    const char *in;
    size_t len;
} bad_body[] = {
    /* RFC 9112 7.1 */
    {S(CHUNKED_HEAD "zz\r\nhello\r\n0\r\n\r\n")},
    {S(CHUNKED_HEAD "5\r\nhelloXX0\r\n\r\n")},
    {S(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n")},
    {S(CHUNKED_HEAD "5\nhello\n0\n\n")},
    {S(CHUNKED_HEAD "5 x\r\nhello\r\n0\r\n\r\n")},
    {S(CHUNKED_HEAD "5;a\x01\r\nhello\r\n0\r\n\r\n")},
    {S(CHUNKED_HEAD "0\r\n\n")},
    {S(CHUNKED_HEAD ";x\r\n\r\n")},
    {S(CHUNKED_HEAD "-1\r\n\r\n")},
    {S(CHUNKED_HEAD "10000000000000000\r\n")},
    {S(CHUNKED_HEAD "0\r\nT: x\r\n y\r\n\r\n")},
    {S(CHUNKED_HEAD "0\r\nT : x\r\n\r\n")},
    {S(CHUNKED_HEAD "0\r\nT: x\ny\r\n\r\n")},
    {S(CHUNKED_HEAD "0\r\nT: \0\r\n\r\n")},
};

START_TEST(test_bad_body)
{
    struct run *r = drive_all(&no_body_limit, bad_body[_i].in, bad_body[_i].len);

    ck_assert_msg(r->rc < 0, "accepted: %s", r->rec.log);
    ck_assert_int_eq(r->status, 400);
    ck_assert_int_eq(r->rec.nheads, 1);
    ck_assert_int_eq(r->rec.nends, 0);
    free(r);
}
END_TEST

/* ---- limits --------------------------------------------------------------------------------- */

/* A head of exactly `len` bytes with one long X field. */
static char *make_head(size_t len)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    char *in = malloc(len);

    ck_assert_ptr_nonnull(in);
    ck_assert_uint_ge(len, sizeof(pre) + 4);
    memcpy(in, pre, sizeof(pre) - 1);
    memset(in + sizeof(pre) - 1, 'a', len - (sizeof(pre) - 1) - 4);
    memcpy(in + len - 4, "\r\n\r\n", 4);
    return in;
}

START_TEST(test_header_limit_exact)
{
    char *in = make_head(4096);
    struct run *r = drive(&limits, in, 4096, 0, 0, 0);

    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->rec.nends, 1);
    free(r);
    free(in);
    in = make_head(4097);
    r = drive_all(&limits, in, 4097);
    ck_assert_int_lt(r->rc, 0);
    ck_assert_int_eq(r->status, 431);
    ck_assert_int_eq(r->rec.nheads, 0);
    free(r);
    free(in);
}
END_TEST

/* The default 1 MiB limit: a 2 MiB head is refused, a 1 KiB one is not. */
START_TEST(test_header_limit_big)
{
    static const struct wd_http1_limits mib = {.max_header_bytes = 1024 * 1024};
    size_t len = 2 * 1024 * 1024;
    char *in = make_head(len);
    struct run *r;

    for (size_t step = 0; step <= 65536; step += 65536) {
        r = drive(&mib, in, len, 0, step, 0);
        ck_assert_int_lt(r->rc, 0);
        ck_assert_int_eq(r->status, 431);
        ck_assert_int_eq(r->rec.nheads, 0);
        free(r);
    }
    free(in);
    in = make_head(1024);
    r = drive(&mib, in, 1024, 0, 0, 0);
    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->rec.nends, 1);
    free(r);
    free(in);
}
END_TEST

/* The trailer section has the same limit as the head. */
START_TEST(test_trailer_limit)
{
    static const char pre[] = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "0\r\nT: ";
    size_t len = sizeof(pre) - 1 + 5000 + 4;
    char *in = malloc(len);
    struct run *r;

    ck_assert_ptr_nonnull(in);
    memcpy(in, pre, sizeof(pre) - 1);
    memset(in + sizeof(pre) - 1, 't', 5000);
    memcpy(in + len - 4, "\r\n\r\n", 4);
    r = drive(&limits, in, len, 0, 0, 0);
    ck_assert_int_lt(r->rc, 0);
    ck_assert_int_eq(r->status, 431);
    ck_assert_int_eq(r->rec.nends, 0);
    free(r);
    free(in);
}
END_TEST

START_TEST(test_body_limit_length)
{
    static const char over[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\nx";
    static const char at[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n";
    char in[sizeof(at) - 1 + 1000];
    struct run *r = drive_all(&limits, over, sizeof(over) - 1);

    ck_assert_int_lt(r->rc, 0);
    ck_assert_int_eq(r->status, 413);
    ck_assert_int_eq(r->rec.nheads, 0);
    ck_assert_int_eq(r->rec.nbodies, 0);
    free(r);
    memcpy(in, at, sizeof(at) - 1);
    memset(in + sizeof(at) - 1, 'b', 1000);
    r = drive(&limits, in, sizeof(in), 0, 0, 0);
    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->rec.nends, 1);
    free(r);
}
END_TEST

/* Chunks of 600 + 600 bytes against a 1000-byte limit: 413 when the second is announced. */
static size_t make_chunked(char *in, size_t first, size_t second)
{
    size_t n = (size_t)sprintf(in,
                               "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "%zx\r\n",
                               first);

    memset(in + n, 'a', first);
    n += first;
    n += (size_t)sprintf(in + n, "\r\n%zx\r\n", second);
    memset(in + n, 'b', second);
    n += second;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\n");
    return n;
}

START_TEST(test_body_limit_chunked)
{
    char *in = malloc(4096);
    size_t len = make_chunked(in, 600, 600);
    struct run *r = drive_all(&limits, in, len);

    ck_assert_int_lt(r->rc, 0);
    ck_assert_int_eq(r->status, 413);
    ck_assert_int_eq(r->rec.nheads, 1);
    ck_assert_int_eq(r->rec.nends, 0);
    ck_assert_uint_le(r->rec.body_len, 1000);
    free(r);
    len = make_chunked(in, 600, 400);
    r = drive(&limits, in, len, 0, 1, 0);
    ck_assert_int_eq(r->rc, 0);
    ck_assert_int_eq(r->rec.nends, 1);
    free(r);
    free(in);
}
END_TEST

/* ---- end of input, idle state, aborts ------------------------------------------------------ */

START_TEST(test_finish_idle)
{
    static const char req[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
    struct rec *r = calloc(1, sizeof(*r));
    struct wd_http1 *p;
    const char *reason;
    size_t used;

    ck_assert_int_eq(wd_http1_new(&p, &cbs, r, &limits), 0);
    ck_assert(wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_finish(p), 0);
    ck_assert_int_eq(wd_http1_execute(p, "\r\n", 2, &used), 0); /* RFC 9112 2.2 */
    ck_assert(wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_execute(p, req, sizeof(req) - 1, &used), WD_HTTP1_STOP);
    ck_assert(!wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_finish(p), 0);
    wd_http1_next(p);
    ck_assert(wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_finish(p), 0);
    wd_http1_free(p);

    /* cut in the head: 400 */
    ck_assert_int_eq(wd_http1_new(&p, &cbs, r, &limits), 0);
    ck_assert_int_eq(wd_http1_execute(p, req, 10, &used), 0);
    ck_assert(!wd_http1_is_idle(p));
    ck_assert_int_lt(wd_http1_finish(p), 0);
    ck_assert_int_eq(wd_http1_error(p, &reason), 400);
    wd_http1_free(p);

    /* cut in the body: the caller decides (status 0) */
    ck_assert_int_eq(wd_http1_new(&p, &cbs, r, &limits), 0);
    ck_assert_int_eq(wd_http1_execute(p, req, sizeof(req) - 3, &used), 0);
    ck_assert_int_lt(wd_http1_finish(p), 0);
    ck_assert_int_eq(wd_http1_error(p, &reason), 0);
    ck_assert_str_ne(reason, "");
    wd_http1_free(p);
    free(r);
}
END_TEST

/* A callback returning < 0 stops parsing with status 0. */
START_TEST(test_abort)
{
    static const char req[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
    struct run *r = drive(&limits, req, sizeof(req) - 1, 0, 0, _i + 1);

    ck_assert_int_lt(r->rc, 0);
    ck_assert_int_eq(r->status, 0);
    ck_assert_int_eq(r->rec.nheads, 1);
    ck_assert_int_eq(r->rec.nends, _i == 2 ? 1 : 0);
    free(r);
}
END_TEST

/* wd_http1_next() called from inside on_end takes effect when execute returns. */
START_TEST(test_next_in_on_end)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct wd_http1 *p;
    size_t used, len = sizeof(pipe3) - 1;

    ck_assert_int_eq(wd_http1_new(&p, &cbs, r, &limits), 0);
    r->next_in_end = p;
    ck_assert_int_eq(wd_http1_execute(p, pipe3, len, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(used, PIPE1_END);
    ck_assert(wd_http1_is_idle(p));
    ck_assert_int_eq(wd_http1_execute(p, pipe3 + PIPE1_END, len - PIPE1_END, &used), WD_HTTP1_STOP);
    ck_assert_uint_eq(PIPE1_END + used, PIPE2_END);
    ck_assert_int_eq(r->nends, 2);
    wd_http1_free(p);
    free(r);
}
END_TEST

Suite *http1_suite(void)
{
    Suite *s = suite_create("http1");
    TCase *tc;

    tc = tcase_create("valid");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_valid, 0, (int)WD_ARRAY_LEN(valid));
    tcase_add_test(tc, test_valid_long_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pipeline_stops);
    tcase_add_test(tc, test_pipeline_splits);
    tcase_add_test(tc, test_pipeline_big_then_small);
    tcase_add_test(tc, test_next_in_on_end);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad, 0, (int)WD_ARRAY_LEN(bad));
    tcase_add_loop_test(tc, test_bad_body, 0, (int)WD_ARRAY_LEN(bad_body));
    tcase_add_loop_test(tc, test_abort, 0, 3);
    tcase_add_test(tc, test_finish_idle);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_header_limit_exact);
    tcase_add_test(tc, test_header_limit_big);
    tcase_add_test(tc, test_trailer_limit);
    tcase_add_test(tc, test_body_limit_length);
    tcase_add_test(tc, test_body_limit_chunked);
    suite_add_tcase(s, tc);
    return s;
}
