/* check_cgienv.c: the Http_* environment of the fork modes (modes/cgi.c, reference 1.8 plus the
 * CONFIG.md fix: request headers never set a variable the watchdog sets itself). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "../suites.h"
#include "cgi.h"

#define MAX_HDRS 8
#define MAX_OUT 16

/* Every result must be NULL-terminated, hold NAME=value strings and have unique names. */
static size_t check_env(char **env)
{
    size_t n = 0;

    ck_assert_ptr_nonnull(env);
    for (; env[n] != NULL; n++) {
        size_t len = strcspn(env[n], "=");
        for (size_t j = 0; j < n; j++) {
            size_t jlen = strcspn(env[j], "=");
            if (jlen == len && memcmp(env[j], env[n], len) == 0)
                ck_abort_msg("duplicate name: %s and %s", env[j], env[n]);
        }
    }
    return n;
}

static const char *env_get(char **env, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; env[i] != NULL; i++) {
        if (strncmp(env[i], name, len) == 0 && env[i][len] == '=')
            return env[i] + len + 1;
    }
    return NULL;
}

static void assert_env_eq(char **env, const char *const *expected)
{
    size_t n = check_env(env);
    size_t i = 0;

    for (; expected[i] != NULL; i++) {
        ck_assert_msg(i < n, "missing entry %zu: %s", i, expected[i]);
        ck_assert_str_eq(env[i], expected[i]);
    }
    ck_assert_msg(n == i, "%zu extra entries, first: %s", n - i, n > i ? env[i] : "");
}

static struct wd_http1_head make_head(const char *method, const char *path, const char *query,
                                      const struct wd_header *hdrs, size_t n, int64_t cl)
{
    struct wd_http1_head h = {
        .method = method,
        .target = path,
        .path = path,
        .query = query,
        .headers = hdrs,
        .nheaders = n,
        .host = "",
        .content_length = cl,
        .http_major = 1,
        .http_minor = 1,
        .keep_alive = true,
    };
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(hdrs[i].name, "Host") == 0) {
            h.host = hdrs[i].value;
            break;
        }
    }
    return h;
}

static char *const base3[] = {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", NULL};

/* ---------------------------------------------------------------- names */

static const struct {
    const char *in, *canon, *env;
} names[] = {
    {"x_under_score", "X_under_score", "Http_X_under_score"},
    {"X.Dot", "X.dot", "Http_X.dot"},
    {"x-1-two", "X-1-Two", "Http_X_1_Two"},
    {"content-type", "Content-Type", "Http_Content_Type"},
    {"CONTENT-TYPE", "Content-Type", "Http_Content_Type"},
    {"X-FORWARDED-FOR", "X-Forwarded-For", "Http_X_Forwarded_For"},
    {"a", "A", "Http_A"},
    {"-a", "-A", "Http__A"},
    {"x--y", "X--Y", "Http_X__Y"},
    {"1abc-2x", "1abc-2x", "Http_1abc_2x"},
    {"WWW-authenticate", "Www-Authenticate", "Http_Www_Authenticate"},
    {"x_y-z.w", "X_y-Z.w", "Http_X_y_Z.w"},
};

START_TEST(test_canonical_name)
{
    char out[64];

    wd_cgi_canonical_name(out, names[_i].in);
    ck_assert_str_eq(out, names[_i].canon);
}
END_TEST

START_TEST(test_header_env_name)
{
    const struct wd_header hdrs[] = {{names[_i].in, "v"}};
    struct wd_http1_head head = make_head("GET", "/", "", hdrs, 1, 0);
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_OW, NULL), 0);
    check_env(env);
    size_t n = strlen(names[_i].env);
    ck_assert_int_eq(strncmp(env[3], names[_i].env, n), 0);
    ck_assert_str_eq(env[3] + n, "=v");
    ck_assert_pstr_eq(env_get(env, names[_i].env), "v");
    free(env);
}
END_TEST

/* ---------------------------------------------------------------- path decoding */

static const struct {
    const char *in, *out;
    int rc;
} paths[] = {
    {"/some/path%20x", "/some/path x", 0},
    {"/a+b", "/a+b", 0},
    {"/%41%2f%2F", "/A//", 0},
    {"/%e2%82%AC", "/\xe2\x82\xac", 0},
    {"/plain", "/plain", 0},
    {"", "", 0},
    {"/%zz", NULL, UV_EINVAL},
    {"/%2", NULL, UV_EINVAL},
    {"/%", NULL, UV_EINVAL},
    {"/%g0", NULL, UV_EINVAL},
    {"/%00", NULL, UV_EINVAL},
};

START_TEST(test_decode_path)
{
    size_t len = strlen(paths[_i].in) + 1;
    char *out = malloc(len); /* exactly the size the header promises is enough */

    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(wd_cgi_decode_path(out, len, paths[_i].in), paths[_i].rc);
    if (paths[_i].rc == 0)
        ck_assert_str_eq(out, paths[_i].out);
    free(out);
}
END_TEST

START_TEST(test_decode_path_small)
{
    char out[4];

    ck_assert_int_eq(wd_cgi_decode_path(out, sizeof(out), "/abc"), UV_ENOBUFS);
    ck_assert_int_eq(wd_cgi_decode_path(out, sizeof(out), "/%41bc"), UV_ENOBUFS);
    ck_assert_int_eq(wd_cgi_decode_path(out, 0, ""), UV_ENOBUFS);
    ck_assert_int_eq(wd_cgi_decode_path(out, sizeof(out), "/%41b"), 0);
    ck_assert_str_eq(out, "/Ab");
}
END_TEST

/* ---------------------------------------------------------------- flavors */

static const struct wd_header get_hdrs[] = {
    {"Host", "example.com"}, {"User-Agent", "curl/8"}, {"Accept", "*/*"}};
static const struct wd_header post_hdrs[] = {
    {"Host", "example.com"}, {"Content-Length", "5"}, {"content-type", "text/plain"}};
static const struct wd_header chunked_hdrs[] = {
    {"Host", "example.com"}, {"Transfer-Encoding", "chunked"}, {"Content-Type", "text/plain"}};

static const struct {
    const char *what;
    enum wd_cgi_flavor flavor;
    const char *method, *path, *query;
    const struct wd_header *hdrs;
    size_t nhdrs;
    int64_t cl;
    const char *expected[MAX_OUT]; /* the whole result, in order */
} flavors[] = {
    {"OW GET",
     WD_CGI_OW,
     "GET",
     "/",
     "",
     get_hdrs,
     3,
     0,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_User_Agent=curl/8", "Http_Accept=*/*",
      "Http_Method=GET", "Http_Path=/"}},
    {"CW GET",
     WD_CGI_CW,
     "GET",
     "/",
     "",
     get_hdrs,
     3,
     0,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_User_Agent=curl/8", "Http_Accept=*/*",
      "Http_Method=GET", "Http_ContentLength=0", "Http_Content_Length=0", "Http_Path=/",
      "Http_Host=example.com"}},
    {"OW POST Content-Length",
     WD_CGI_OW,
     "POST",
     "/fn",
     "x=1",
     post_hdrs,
     3,
     5,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Content_Length=5",
      "Http_Content_Type=text/plain", "Http_Method=POST", "Http_Query=x=1", "Http_Path=/fn"}},
    {"CW POST Content-Length",
     WD_CGI_CW,
     "POST",
     "/fn",
     "x=1",
     post_hdrs,
     3,
     5,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Content_Type=text/plain",
      "Http_Method=POST", "Http_ContentLength=5", "Http_Content_Length=5", "Http_Query=x=1",
      "Http_Path=/fn", "Http_Host=example.com"}},
    {"OW POST chunked",
     WD_CGI_OW,
     "POST",
     "/fn",
     "",
     chunked_hdrs,
     3,
     -1,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Content_Type=text/plain",
      "Http_Method=POST", "Http_Transfer_Encoding=chunked", "Http_Path=/fn"}},
    {"CW POST chunked",
     WD_CGI_CW,
     "POST",
     "/fn",
     "",
     chunked_hdrs,
     3,
     -1,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Content_Type=text/plain",
      "Http_Method=POST", "Http_ContentLength=-1", "Http_Content_Length=-1",
      "Http_Transfer_Encoding=chunked", "Http_Path=/fn", "Http_Host=example.com"}},
    {"OW no headers, empty path",
     WD_CGI_OW,
     "OPTIONS",
     "",
     "",
     NULL,
     0,
     0,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Method=OPTIONS"}},
    {"CW no headers, no host",
     WD_CGI_CW,
     "GET",
     "/",
     "",
     NULL,
     0,
     0,
     {"PATH=/usr/bin", "HOME=/root", "fprocess=cat", "Http_Method=GET", "Http_ContentLength=0",
      "Http_Content_Length=0", "Http_Path=/"}},
};

START_TEST(test_flavor)
{
    struct wd_http1_head head = make_head(flavors[_i].method, flavors[_i].path, flavors[_i].query,
                                          flavors[_i].hdrs, flavors[_i].nhdrs, flavors[_i].cl);
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, flavors[_i].flavor, NULL), 0);
    assert_env_eq(env, flavors[_i].expected);
    free(env);
}
END_TEST

/* ---------------------------------------------------------------- query and path */

static const struct {
    const char *path, *query;
    const char *want_path, *want_query; /* NULL: absent */
} targets[] = {
    {"/", "", "/", NULL},
    {"/", "a=1&b=%20+", "/", "a=1&b=%20+"},
    {"/some/path%20x", "", "/some/path x", NULL},
    {"/a+b", "q", "/a+b", "q"},
    {"/caf%C3%A9/%2F", "", "/caf\xc3\xa9//", NULL},
    {"/bad%zzescape", "", "/bad%zzescape", NULL},
    {"/nul%00", "", "/nul%00", NULL},
    {"/trailing%", "x=%", "/trailing%", "x=%"},
    {"", "", NULL, NULL},
};

START_TEST(test_target)
{
    struct wd_http1_head head = make_head("GET", targets[_i].path, targets[_i].query, NULL, 0, 0);

    for (int f = WD_CGI_OW; f <= WD_CGI_CW; f++) {
        char **env = NULL;
        ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, (enum wd_cgi_flavor)f, NULL), 0);
        check_env(env);
        ck_assert_pstr_eq(env_get(env, "Http_Path"), targets[_i].want_path);
        ck_assert_pstr_eq(env_get(env, "Http_Query"), targets[_i].want_query);
        free(env);
    }
}
END_TEST

/* ---------------------------------------------------------------- headers */

START_TEST(test_repeated_header_first_value)
{
    const struct wd_header hdrs[] = {
        {"X-Foo", "1"}, {"Accept", "a"}, {"x-foo", "2"}, {"X-FOO", "3"}, {"accept", "b"}};
    struct wd_http1_head head = make_head("GET", "/", "", hdrs, 5, 0);
    const char *const want[] = {"PATH=/usr/bin", "HOME=/root",      "fprocess=cat", "Http_X_Foo=1",
                                "Http_Accept=a", "Http_Method=GET", "Http_Path=/",  NULL};
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_OW, NULL), 0);
    assert_env_eq(env, want);
    free(env);
}
END_TEST

START_TEST(test_base_override)
{
    char *const base[] = {"Http_X_Foo=old",  "A=1", "Http_Method=inherited", "Http_Query=inherited",
                          "Http_Accept=old", NULL};
    const struct wd_header hdrs[] = {
        {"X-Foo", "new"}, {"x-foo", "newer"}, {"Query", "evil=1"}, {"Accept", "new"}};
    struct wd_http1_head head = make_head("PUT", "/", "", hdrs, 4, 0);
    /* Replaced in place; the inherited Http_Query stays: nothing in the request sets it. */
    const char *const want[] = {
        "Http_X_Foo=new", "A=1", "Http_Method=PUT", "Http_Query=inherited", "Http_Accept=new",
        "Http_Path=/",    NULL};
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base, &head, WD_CGI_OW, NULL), 0);
    assert_env_eq(env, want);
    free(env);
}
END_TEST

static const struct wd_header evil_hdrs[] = {
    {"Query", "evil=1"},
    {"Path", "/evil"},
    {"Method", "EVIL"},
    {"Host", "evil.example"},
    {"Transfer-Encoding", "gzip"},
    {"content-length", "99"},
    {"ContentLength", "98"},
    {"HOST", "x"},
    {"Http-Query", "ok"},
};

START_TEST(test_reserved_injection)
{
    enum wd_cgi_flavor flavor = (enum wd_cgi_flavor)_i;
    struct wd_http1_head head =
        make_head("GET", "/real", "", evil_hdrs, WD_ARRAY_LEN(evil_hdrs), 0);
    char **env = NULL;

    head.host = "";
    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, flavor, NULL), 0);
    check_env(env);
    ck_assert_ptr_null(env_get(env, "Http_Query"));
    ck_assert_str_eq(env_get(env, "Http_Path"), "/real");
    ck_assert_str_eq(env_get(env, "Http_Method"), "GET");
    ck_assert_ptr_null(env_get(env, "Http_Host"));
    ck_assert_ptr_null(env_get(env, "Http_Transfer_Encoding"));
    /* Canonical form never yields "ContentLength": this one is an ordinary header. */
    ck_assert_str_eq(env_get(env, "Http_Contentlength"), "98");
    ck_assert_str_eq(env_get(env, "Http_Http_Query"), "ok");
    if (flavor == WD_CGI_CW) {
        ck_assert_str_eq(env_get(env, "Http_Content_Length"), "0");
        ck_assert_str_eq(env_get(env, "Http_ContentLength"), "0");
    } else {
        ck_assert_str_eq(env_get(env, "Http_Content_Length"), "99");
        ck_assert_ptr_null(env_get(env, "Http_ContentLength"));
    }
    free(env);
}
END_TEST

START_TEST(test_host_cw_only)
{
    const struct wd_header hdrs[] = {{"Host", "h.example:8080"}};
    struct wd_http1_head head = make_head("GET", "/", "", hdrs, 1, 0);
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_CW, NULL), 0);
    ck_assert_str_eq(env_get(env, "Http_Host"), "h.example:8080");
    free(env);
    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_OW, NULL), 0);
    ck_assert_ptr_null(env_get(env, "Http_Host"));
    free(env);
}
END_TEST

START_TEST(test_extra_wins)
{
    const struct wd_header hdrs[] = {{"X-Foo", "hdr"}};
    struct wd_http1_head head = make_head("GET", "/", "q=1", hdrs, 1, 0);
    char *const extra[] = {"Http_Method=X", "Http_X_Foo=extra", "NEW=1", "PATH=/x",
                           "NEW=2",         "Http_Query=",      NULL};
    const char *const want[] = {"PATH=/x",          "HOME=/root",    "fprocess=cat",
                                "Http_X_Foo=extra", "Http_Method=X", "Http_Query=",
                                "Http_Path=/",      "NEW=2",         NULL};
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_OW, extra), 0);
    assert_env_eq(env, want);
    free(env);
}
END_TEST

START_TEST(test_null_base_and_values)
{
    const struct wd_header hdrs[] = {{"X-Empty", ""}};
    struct wd_http1_head head = make_head("GET", "/", "", hdrs, 1, 0);
    const char *const want[] = {"Http_X_Empty=", "Http_Method=GET", "Http_Path=/", NULL};
    char *const empty[] = {NULL};
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, NULL, &head, WD_CGI_OW, NULL), 0);
    assert_env_eq(env, want);
    free(env);
    ck_assert_int_eq(wd_cgi_build_env(&env, empty, &head, WD_CGI_OW, empty), 0);
    assert_env_eq(env, want);
    free(env);
}
END_TEST

/* Base duplicates collapse (last value, first position); a large input grows the name table. */
START_TEST(test_large_and_base_duplicates)
{
    enum { NBASE = 300, NHDR = 120 };
    char **base = calloc(NBASE + 1, sizeof(char *));
    struct wd_header *hdrs = calloc(NHDR, sizeof(*hdrs));
    char *bufs = calloc(NBASE + 2 * NHDR, 32);
    char **env = NULL;

    ck_assert(base != NULL && hdrs != NULL && bufs != NULL);
    for (int i = 0; i < NBASE; i++) {
        base[i] = bufs + 32 * i;
        /* V0..V149 twice: the second round carries the winning values. */
        snprintf(base[i], 32, "V%d=%d", i % (NBASE / 2), i);
    }
    for (int i = 0; i < NHDR; i++) {
        char *name = bufs + 32 * (NBASE + 2 * i);
        char *value = name + 32;
        /* Every header twice (differently cased): h0..h59. */
        if (i < NHDR / 2)
            snprintf(name, 32, "x-h%d", i);
        else
            snprintf(name, 32, "X-H%d", i - NHDR / 2);
        snprintf(value, 32, "%d", i);
        hdrs[i] = (struct wd_header){name, value};
    }
    struct wd_http1_head head = make_head("GET", "/", "", hdrs, NHDR, 0);

    ck_assert_int_eq(wd_cgi_build_env(&env, base, &head, WD_CGI_CW, NULL), 0);
    size_t n = check_env(env);
    ck_assert_uint_eq(n, NBASE / 2 + NHDR / 2 + 4); /* Method, 2x ContentLength, Path */
    for (int i = 0; i < NBASE / 2; i++) {
        char want[32];
        snprintf(want, sizeof(want), "V%d=%d", i, i + NBASE / 2);
        ck_assert_str_eq(env[i], want);
    }
    for (int i = 0; i < NHDR / 2; i++) {
        char want[32];
        snprintf(want, sizeof(want), "Http_X_H%d=%d", i, i);
        ck_assert_str_eq(env[NBASE / 2 + i], want);
    }
    free(env);
    free(bufs);
    free(hdrs);
    free(base);
}
END_TEST

/* The result is one block: pointers and strings; strings live after the array. */
START_TEST(test_single_allocation)
{
    struct wd_http1_head head = make_head("POST", "/x", "a=b", post_hdrs, 3, 5);
    char **env = NULL;

    ck_assert_int_eq(wd_cgi_build_env(&env, base3, &head, WD_CGI_CW, NULL), 0);
    size_t n = check_env(env);
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_ne(env[i], base3[0]);
        ck_assert((const char *)env[i] > (const char *)&env[n]);
    }
    free(env); /* ASan reports a leak if anything else was allocated */
}
END_TEST

Suite *cgienv_suite(void)
{
    Suite *s = suite_create("cgienv");
    TCase *tc;

    tc = tcase_create("names");
    tcase_add_loop_test(tc, test_canonical_name, 0, WD_ARRAY_LEN(names));
    tcase_add_loop_test(tc, test_header_env_name, 0, WD_ARRAY_LEN(names));
    tcase_add_loop_test(tc, test_decode_path, 0, WD_ARRAY_LEN(paths));
    tcase_add_test(tc, test_decode_path_small);
    suite_add_tcase(s, tc);

    tc = tcase_create("flavors");
    tcase_add_loop_test(tc, test_flavor, 0, WD_ARRAY_LEN(flavors));
    tcase_add_loop_test(tc, test_target, 0, WD_ARRAY_LEN(targets));
    tcase_add_test(tc, test_host_cw_only);
    suite_add_tcase(s, tc);

    tc = tcase_create("precedence");
    tcase_add_test(tc, test_repeated_header_first_value);
    tcase_add_test(tc, test_base_override);
    tcase_add_loop_test(tc, test_reserved_injection, WD_CGI_OW, WD_CGI_CW + 1);
    tcase_add_test(tc, test_extra_wins);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory");
    tcase_add_test(tc, test_null_base_and_values);
    tcase_add_test(tc, test_large_and_base_duplicates);
    tcase_add_test(tc, test_single_allocation);
    suite_add_tcase(s, tc);
    return s;
}
