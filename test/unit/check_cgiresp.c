/* check_cgiresp.c: the CGI response head at the start of a handler's stdout (modes/cgi.c,
 * cgi_response=true). Every input is also fed split at every byte offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../suites.h"
#include "cgi.h"

#define MAX_EXP 6
#define NO_LIMIT 0

struct exp_header {
    const char *name, *value;
};

/* rc: the head length, or UV_EINVAL. end: how many bytes decide the result (the head length,
 * or for a malformed head the bytes up to its blank line). */
static const struct {
    const char *what, *in;
    int rc;
    size_t end;
    int status;
    struct exp_header hdrs[MAX_EXP];
} heads[] = {
    {"CRLF",
     "Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-Foo: bar\r\n\r\nbody",
     63,
     63,
     404,
     {{"Content-Type", "text/plain"}, {"X-Foo", "bar"}}},
    {"LF",
     "Status: 404 Not Found\nContent-Type: text/plain\nX-Foo: bar\n\nbody",
     59,
     59,
     404,
     {{"Content-Type", "text/plain"}, {"X-Foo", "bar"}}},
    {"mixed line ends",
     "X-A: 1\r\nX-B: 2\n\r\nbody\r\n\r\n",
     17,
     17,
     200,
     {{"X-A", "1"}, {"X-B", "2"}}},
    {"status without reason", "Status: 201\n\n", 13, 13, 201, {{NULL, NULL}}},
    {"status lower case, tab reason", "status: 503\tBusy\r\n\r\n", 20, 20, 503, {{NULL, NULL}}},
    {"status 200 and 999", "Status: 200\nStatus: 999\n\n", 25, 25, 999, {{NULL, NULL}}},
    {"location gives 302", "Location: /elsewhere\n\n", 22, 22, 302, {{"Location", "/elsewhere"}}},
    {"location with status",
     "Location: /y\nStatus: 301 Moved\n\n",
     32,
     32,
     301,
     {{"Location", "/y"}}},
    {"status before location",
     "Status: 303\r\nlocation: http://a/\r\n\r\n",
     36,
     36,
     303,
     {{"location", "http://a/"}}},
    {"empty head LF", "\nbody", 1, 1, 200, {{NULL, NULL}}},
    {"empty head CRLF", "\r\nbody\n\n", 2, 2, 200, {{NULL, NULL}}},
    {"values trimmed, names as written",
     "x-lower:   spaced \t \nX-Empty:\nX-Inner: a  b\n\n",
     45,
     45,
     200,
     {{"x-lower", "spaced"}, {"X-Empty", ""}, {"X-Inner", "a  b"}}},
    {"framing headers dropped",
     "Content-Length: 5\nTRANSFER-ENCODING: chunked\nconnection: close\nX-Keep: 1\n\n",
     74,
     74,
     200,
     {{"X-Keep", "1"}}},
    {"token chars and obs-text",
     "X!#$%&'*+-.^_`|~9: caf\xc3\xa9 \"q\"\n\n",
     30,
     30,
     200,
     {{"X!#$%&'*+-.^_`|~9", "caf\xc3\xa9 \"q\""}}},
    {"colon in value", "X-Url: http://h:1/\n\n", 20, 20, 200, {{"X-Url", "http://h:1/"}}},
    /* malformed */
    {"no colon", "X-A: 1\nno colon here\n\n", UV_EINVAL, 22, 0, {{NULL, NULL}}},
    {"body without head", "hello world\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    {"empty name", ": value\n\n", UV_EINVAL, 9, 0, {{NULL, NULL}}},
    {"space in name", "Bad Name: x\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    {"space before colon", "Status : 404\n\n", UV_EINVAL, 14, 0, {{NULL, NULL}}},
    {"folded line", "X-A: 1\n folded\n\n", UV_EINVAL, 16, 0, {{NULL, NULL}}},
    {"status letters", "Status: abc\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    {"status two digits", "Status: 99\n\n", UV_EINVAL, 12, 0, {{NULL, NULL}}},
    {"status below 100", "Status: 099\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    /* 1xx is not a final answer: the client would be left without a response. */
    {"status 101", "Status: 101\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    {"status 199", "Status: 199 x\n\n", UV_EINVAL, 15, 0, {{NULL, NULL}}},
    {"status four digits", "Status: 1000\n\n", UV_EINVAL, 14, 0, {{NULL, NULL}}},
    {"status glued reason", "Status: 404x\n\n", UV_EINVAL, 14, 0, {{NULL, NULL}}},
    {"status empty", "Status:\r\n\r\n", UV_EINVAL, 11, 0, {{NULL, NULL}}},
    {"status signed", "Status: +40\n\n", UV_EINVAL, 13, 0, {{NULL, NULL}}},
    {"CR inside value", "X-A: a\rb\n\n", UV_EINVAL, 10, 0, {{NULL, NULL}}},
    {"control byte in value", "X-A: a\x01\n\n", UV_EINVAL, 9, 0, {{NULL, NULL}}},
    {"DEL in value", "X-A: a\x7f\n\n", UV_EINVAL, 9, 0, {{NULL, NULL}}},
    {"lone CR line", "\r\r\n\r\n", UV_EINVAL, 5, 0, {{NULL, NULL}}},
};

static void assert_head(const struct wd_cgi_head *h, int rc, size_t i)
{
    ck_assert_int_eq(rc, heads[i].rc);
    if (rc < 0) {
        ck_assert_ptr_null(h->storage);
        ck_assert_uint_eq(h->nheaders, 0);
        return;
    }
    ck_assert_int_eq(h->status, heads[i].status);
    size_t n = 0;
    for (; n < MAX_EXP && heads[i].hdrs[n].name != NULL; n++) {
        ck_assert_uint_gt(h->nheaders, n);
        ck_assert_str_eq(h->headers[n].name, heads[i].hdrs[n].name);
        ck_assert_str_eq(h->headers[n].value, heads[i].hdrs[n].value);
    }
    ck_assert_uint_eq(h->nheaders, n);
    if (n == 0)
        ck_assert_ptr_null(h->storage);
}

/* Parse the first len bytes from a heap copy of exactly that size (ASan sees over-reads). */
static int parse_prefix(struct wd_cgi_head *h, const char *in, size_t len, size_t max_bytes)
{
    char *copy = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, in, len);
    int rc = wd_cgi_parse_head(h, copy, len, max_bytes);
    free(copy); /* the result must not point into the input */
    return rc;
}

START_TEST(test_head)
{
    struct wd_cgi_head h;
    size_t len = strlen(heads[_i].in);

    memset(&h, 0xa5, sizeof(h)); /* the parser must not trust what is there */
    int rc = parse_prefix(&h, heads[_i].in, len, NO_LIMIT);
    assert_head(&h, rc, _i);
    wd_cgi_head_free(&h);
    ck_assert_ptr_null(h.storage);
    wd_cgi_head_free(&h); /* twice is harmless */
}
END_TEST

START_TEST(test_head_split)
{
    size_t len = strlen(heads[_i].in);

    ck_assert_uint_le(heads[_i].end, len);
    for (size_t k = 0; k <= len; k++) {
        struct wd_cgi_head h;
        int rc = parse_prefix(&h, heads[_i].in, k, 4096);
        if (k < heads[_i].end) {
            ck_assert_msg(rc == 0, "offset %zu: rc %d", k, rc);
            ck_assert_ptr_null(h.storage);
            ck_assert_uint_eq(h.nheaders, 0);
        } else {
            assert_head(&h, rc, _i);
        }
        wd_cgi_head_free(&h);
    }
}
END_TEST

/* ---------------------------------------------------------------- limits */

static const struct {
    const char *in;
    size_t len, max_bytes;
    int rc;
} limits[] = {
    {"X-A: 1\n", 7, 7, 0},                /* incomplete, at the limit: wait */
    {"X-A: 1\n", 7, 6, UV_EINVAL},        /* incomplete, over the limit */
    {"X-A: 1\n\n", 8, 8, 8},              /* complete, exactly the limit */
    {"X-A: 1\n\n", 8, 7, UV_EINVAL},      /* complete but longer than the limit */
    {"X-A: 1\n\nlong body", 17, 8, 8},    /* body bytes past the limit do not count */
    {"X-A: 1\r\n\r\n", 10, 9, UV_EINVAL}, /* CRLF counts */
    {"no blank line yet", 17, 0, 0},      /* 0: no limit */
    {"\n", 1, 1, 1},                      /* an empty head fits any limit >= its size */
    {"", 0, 1, 0},                        /* nothing yet */
    {"\r", 1, 1, 0},                      /* maybe the start of an empty CRLF head */
    {"X-A: 1\n\r", 8, 16, 0},             /* maybe a CRLF blank line */
    {"abcdefghijklmnopqrstuvwxyz", 26, 25, UV_EINVAL},
};

START_TEST(test_limits)
{
    struct wd_cgi_head h;

    int rc = parse_prefix(&h, limits[_i].in, limits[_i].len, limits[_i].max_bytes);
    ck_assert_int_eq(rc, limits[_i].rc);
    wd_cgi_head_free(&h);
}
END_TEST

/* Build n header lines (and optionally dropped framing lines) followed by a blank line. */
static char *many_headers(size_t n, bool with_dropped)
{
    size_t cap = n * 24 + 128;
    char *buf = malloc(cap);
    size_t len = 0;

    ck_assert_ptr_nonnull(buf);
    if (with_dropped)
        len += (size_t)snprintf(buf + len, cap - len, "Content-Length: 1\nConnection: x\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "X-H%zu: v%zu\r\n", i, i);
    snprintf(buf + len, cap - len, "Status: 202\r\n\r\n");
    return buf;
}

START_TEST(test_header_count)
{
    struct wd_cgi_head h;
    char *buf = many_headers(64, true);
    size_t len = strlen(buf);

    ck_assert_int_eq(wd_cgi_parse_head(&h, buf, len, NO_LIMIT), (int)len);
    ck_assert_int_eq(h.status, 202);
    ck_assert_uint_eq(h.nheaders, 64);
    ck_assert_str_eq(h.headers[0].name, "X-H0");
    ck_assert_str_eq(h.headers[63].name, "X-H63");
    ck_assert_str_eq(h.headers[63].value, "v63");
    wd_cgi_head_free(&h);
    free(buf);

    buf = many_headers(65, false);
    ck_assert_int_eq(wd_cgi_parse_head(&h, buf, strlen(buf), NO_LIMIT), UV_EINVAL);
    ck_assert_ptr_null(h.storage);
    ck_assert_uint_eq(h.nheaders, 0);
    wd_cgi_head_free(&h);
    free(buf);
}
END_TEST

START_TEST(test_free_zeroed)
{
    struct wd_cgi_head h;

    memset(&h, 0, sizeof(h));
    wd_cgi_head_free(&h);
    wd_cgi_head_free(NULL);
    ck_assert_ptr_null(h.storage);
}
END_TEST

Suite *cgiresp_suite(void)
{
    Suite *s = suite_create("cgiresp");
    TCase *tc;

    tc = tcase_create("heads");
    tcase_add_loop_test(tc, test_head, 0, WD_ARRAY_LEN(heads));
    tcase_add_loop_test(tc, test_head_split, 0, WD_ARRAY_LEN(heads));
    tcase_add_test(tc, test_free_zeroed);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_loop_test(tc, test_limits, 0, WD_ARRAY_LEN(limits));
    tcase_add_test(tc, test_header_count);
    suite_add_tcase(s, tc);
    return s;
}
