/* check_log.c: watchdog/log.c. Text lines byte for byte as of-watchdog prints them, json lines
 * that stay one valid object whatever a client or a handler sends, and the splitting of handler
 * output at max_line. Each test runs in its forked child and points fd 2 at a temp file. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../suites.h"
#include "log.h"

#define MAX_LINES 64
#define BIG_LINE (100 * 1024)
#define FFFD "\xef\xbf\xbd"

/* ---- capturing fd 2 ------------------------------------------------------------------ */

struct capture {
    char *buf; /* owned, NUL-terminated; the '\n's are replaced by NULs */
    size_t len;
    char *line[MAX_LINES];
    size_t n;
};

static int saved_fd = -1;
static FILE *cap_file;

static void setup(void)
{
    wd_log_level = WD_LOG_INFO;
    wd_log_setup(true, WD_LOG_TEXT, false);
}

static void restore_fd(void)
{
    if (saved_fd >= 0) {
        dup2(saved_fd, 2);
        close(saved_fd);
        saved_fd = -1;
    }
    if (cap_file != NULL) {
        fclose(cap_file);
        cap_file = NULL;
    }
}

static void capture_begin(void)
{
    cap_file = tmpfile();
    ck_assert_ptr_nonnull(cap_file);
    saved_fd = dup(2);
    ck_assert_int_ge(saved_fd, 0);
    ck_assert_int_eq(dup2(fileno(cap_file), 2), 2);
}

/* Restores fd 2 and splits what was written into lines. Every line must end in '\n' and no
 * line may hold a NUL byte. */
static void capture_end(struct capture *c)
{
    int fd = fileno(cap_file);
    struct stat st;

    ck_assert_int_eq(fstat(fd, &st), 0);
    c->len = (size_t)st.st_size;
    c->buf = malloc(c->len + 1);
    ck_assert_ptr_nonnull(c->buf);
    ck_assert_int_eq(pread(fd, c->buf, c->len, 0), (ssize_t)c->len);
    c->buf[c->len] = '\0';
    restore_fd();
    ck_assert_uint_eq(strlen(c->buf), c->len);
    ck_assert_msg(c->len == 0 || c->buf[c->len - 1] == '\n', "output does not end in a newline");
    c->n = 0;
    for (char *p = c->buf; *p != '\0';) {
        char *nl = strchr(p, '\n');
        ck_assert_uint_lt(c->n, MAX_LINES);
        *nl = '\0';
        c->line[c->n++] = p;
        p = nl + 1;
    }
}

static void teardown(void)
{
    restore_fd();
}

static void free_capture(struct capture *c)
{
    free(c->buf);
    c->buf = NULL;
}

/* ---- checking lines ------------------------------------------------------------------ */

static bool matches(const char *re, const char *s)
{
    regex_t rx;
    ck_assert_int_eq(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&rx, s, 0, NULL, 0);
    regfree(&rx);
    return rc == 0;
}

#define RE_RFC3339 "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"
#define RE_GO_STAMP "^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} "

/* A second decoder, written apart from log.c's: RFC 3629 UTF-8, by code point ranges. */
static bool valid_utf8(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u != 0) {
        unsigned cp;
        size_t len;
        if (*u < 0x80) {
            u++;
            continue;
        } else if ((*u & 0xe0) == 0xc0) {
            cp = *u & 0x1fu;
            len = 2;
        } else if ((*u & 0xf0) == 0xe0) {
            cp = *u & 0x0fu;
            len = 3;
        } else if ((*u & 0xf8) == 0xf0) {
            cp = *u & 0x07u;
            len = 4;
        } else {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((u[k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (u[k] & 0x3fu);
        }
        static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        u += len;
    }
    return true;
}

/* One output line must be exactly one JSON object in valid UTF-8 with no raw control byte,
 * starting with a well-formed time and a known level. The caller deletes the result. */
static cJSON *parse_line(const char *line)
{
    for (const char *p = line; *p != '\0'; p++)
        ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control byte 0x%02x",
                      (unsigned char)*p);
    ck_assert_msg(valid_utf8(line), "invalid UTF-8 in %.80s", line);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithOpts(line, &end, 1);
    ck_assert_msg(o != NULL, "not JSON: %.200s", line);
    ck_assert(cJSON_IsObject(o));
    ck_assert_msg(strncmp(line, "{\"time\":\"", 9) == 0, "time is not first: %.80s", line);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "time");
    ck_assert(cJSON_IsString(t));
    ck_assert_msg(matches(RE_RFC3339, t->valuestring), "time %s", t->valuestring);
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(o, "level");
    ck_assert(cJSON_IsString(lv));
    ck_assert(matches("^(debug|info|warn|error)$", lv->valuestring));
    return o;
}

static const char *str_field(const cJSON *o, const char *key)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsString(f), "%s is not a string", key);
    return f->valuestring;
}

static double num_field(const cJSON *o, const char *key)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(f), "%s is not a number", key);
    return f->valuedouble;
}

/* The object has exactly these keys, in this order. */
static void assert_keys(const cJSON *o, const char *const *keys)
{
    const cJSON *f = o->child;
    size_t i = 0;
    for (; keys[i] != NULL; i++, f = f->next) {
        ck_assert_msg(f != NULL, "missing key %s", keys[i]);
        ck_assert_str_eq(f->string, keys[i]);
    }
    ck_assert_msg(f == NULL, "extra key %s", f ? f->string : "");
}

/* ---- text ---------------------------------------------------------------------------- */

static const struct {
    const char *what;
    bool callid;
    struct wd_log_req r;
    const char *lines[3]; /* after the "YYYY/MM/DD HH:MM:SS " stamp */
} text_reqs[] = {
    {"plain",
     false,
     {"GET", "/path?x=1&y=%20", 200, 0.012345, 0, 5, "abc", "streaming", NULL},
     {"GET /path?x=1&y=%20 - 200 - ContentLength: 5B (0.0123s)"}},
    {"call id",
     true,
     {"POST", "/", 200, 1.5, 9, 4096, "abc-123", "http", NULL},
     {"POST / - 200 - ContentLength: 4.096kB (1.5000s) [abc-123]"}},
    {"no call id",
     true,
     {"PUT", "/x", 404, 0.0, 0, 65536, NULL, "http", NULL},
     {"PUT /x - 404 - ContentLength: 65.54kB (0.0000s) [none]"}},
    {"call id off",
     false,
     {"DELETE", "/x", 204, 2.0, 0, 300000, "abc-123", "http", NULL},
     {"DELETE /x - 204 - ContentLength: 300kB (2.0000s)"}},
    {"error first",
     false,
     {"GET", "/", 502, 0.25, 0, 0, NULL, "http", "Upstream error: connection refused"},
     {"Upstream error: connection refused", "GET / - 502 - ContentLength: 0B (0.2500s)"}},
    {"error and call id",
     true,
     {"GET", "/", 500, 30.0, 1, 21, "id", "streaming", "exit status 1"},
     {"exit status 1", "GET / - 500 - ContentLength: 21B (30.0000s) [id]"}},
};

START_TEST(test_text_request)
{
    struct capture c;
    size_t want = 0;

    wd_log_setup(true, WD_LOG_TEXT, text_reqs[_i].callid);
    capture_begin();
    wd_log_request(&text_reqs[_i].r);
    capture_end(&c);
    while (want < WD_ARRAY_LEN(text_reqs[_i].lines) && text_reqs[_i].lines[want] != NULL)
        want++;
    ck_assert_uint_eq(c.n, want);
    for (size_t i = 0; i < want; i++) {
        ck_assert_msg(matches(RE_GO_STAMP, c.line[i]), "%s: stamp in %s", text_reqs[_i].what,
                      c.line[i]);
        ck_assert_uint_eq(strlen(c.line[i]), 20 + strlen(text_reqs[_i].lines[i]));
        ck_assert_str_eq(c.line[i] + 20, text_reqs[_i].lines[i]);
    }
    free_capture(&c);
}
END_TEST

static const struct {
    uint64_t bytes;
    const char *out;
} sizes[] = {
    {0, "0B"},          {5, "5B"},
    {999, "999B"},      {1000, "1kB"},
    {4096, "4.096kB"},  {65536, "65.54kB"},
    {300000, "300kB"},  {1500000, "1.5MB"},
    {999999, "1000kB"}, {UINT64_MAX, "18.45EB"},
};

START_TEST(test_human_size)
{
    char out[32];
    wd_log_human_size(out, sizeof out, sizes[_i].bytes);
    ck_assert_str_eq(out, sizes[_i].out);
}
END_TEST

START_TEST(test_text_write)
{
    struct capture c;
    char big[5000];

    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_begin();
    wd_log_info("listening addr=%s port=%d", "0.0.0.0", 8080);
    wd_log_debug("not shown");
    wd_log_warn("%s", big);
    capture_end(&c);
    ck_assert_uint_eq(c.n, 2);
    ck_assert(matches(RE_GO_STAMP "listening addr=0\\.0\\.0\\.0 port=8080$", c.line[0]));
    ck_assert(matches(RE_GO_STAMP, c.line[1]));
    ck_assert_uint_eq(strlen(c.line[1]), 4094); /* cut at 4 KiB, newline kept */
    free_capture(&c);
}
END_TEST

START_TEST(test_level_filter)
{
    static const struct wd_log_req ok = {"GET", "/", 200, 0, 0, 0, NULL, "http", NULL};
    static const struct wd_log_req bad = {"GET", "/", 503, 0, 0, 0, NULL, "http", NULL};
    struct capture c;

    wd_log_level = WD_LOG_WARN;
    capture_begin();
    wd_log_request(&ok);
    wd_log_request(&bad);
    wd_log_setup(true, WD_LOG_JSON, false);
    wd_log_request(&ok);
    wd_log_request(&bad);
    capture_end(&c);
    ck_assert_uint_eq(c.n, 2);
    ck_assert(matches(RE_GO_STAMP "GET / - 503 - ", c.line[0]));
    cJSON *o = parse_line(c.line[1]);
    ck_assert_str_eq(str_field(o, "level"), "warn");
    ck_assert_double_eq(num_field(o, "status"), 503);
    cJSON_Delete(o);
    free_capture(&c);
}
END_TEST

/* ---- json ---------------------------------------------------------------------------- */

START_TEST(test_json_request)
{
    static const struct wd_log_req r = {"POST",     "/fn/x?a=b", 201,         1.2345678, 12,
                                        UINT64_MAX, "abc-123",   "streaming", NULL};
    static const char *const keys[] = {"time",      "level",   "msg",         "method",
                                       "path",      "status",  "duration_ms", "bytes_in",
                                       "bytes_out", "call_id", "mode",        NULL};
    struct capture c;

    wd_log_setup(true, WD_LOG_JSON, false);
    capture_begin();
    wd_log_request(&r);
    capture_end(&c);
    ck_assert_uint_eq(c.n, 1);
    cJSON *o = parse_line(c.line[0]);
    assert_keys(o, keys);
    ck_assert_str_eq(str_field(o, "level"), "info");
    ck_assert_str_eq(str_field(o, "msg"), "request");
    ck_assert_str_eq(str_field(o, "method"), "POST");
    ck_assert_str_eq(str_field(o, "path"), "/fn/x?a=b");
    ck_assert_double_eq(num_field(o, "status"), 201);
    ck_assert_double_eq_tol(num_field(o, "duration_ms"), 1234.568, 1e-9);
    ck_assert_double_eq(num_field(o, "bytes_in"), 12);
    num_field(o, "bytes_out");
    ck_assert_str_eq(str_field(o, "call_id"), "abc-123");
    ck_assert_str_eq(str_field(o, "mode"), "streaming");
    /* Exact number text: 3 decimals, and a uint64 printed whole (cJSON reads it as a double). */
    ck_assert_ptr_nonnull(strstr(c.line[0], ",\"duration_ms\":1234.568,"));
    ck_assert_ptr_nonnull(strstr(c.line[0], ",\"bytes_out\":18446744073709551615,"));
    cJSON_Delete(o);
    free_capture(&c);
}
END_TEST

static const struct {
    struct wd_log_req r;
    const char *level;
    const char *dur;
} json_warn[] = {
    {{"GET", "/", 502, 0.0005, 0, 0, NULL, "http", "Upstream error: refused"}, "warn", "0.500"},
    {{"GET", "/", 200, 0.0, 0, 0, NULL, NULL, "client went away"}, "warn", "0.000"},
    {{"GET", "/", 500, -1.0, 0, 0, NULL, "http", NULL}, "warn", "0.000"},
    {{NULL, NULL, 404, 1e300, 0, 0, NULL, NULL, NULL}, "info", "1000000000000000.000"},
};

START_TEST(test_json_request_warn)
{
    const struct wd_log_req *r = &json_warn[_i].r;
    struct capture c;
    char want[64];

    wd_log_setup(true, WD_LOG_JSON, true);
    capture_begin();
    wd_log_request(r);
    capture_end(&c);
    ck_assert_uint_eq(c.n, 1);
    cJSON *o = parse_line(c.line[0]);
    ck_assert_str_eq(str_field(o, "level"), json_warn[_i].level);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "call_id")));
    ck_assert_double_eq(num_field(o, "status"), r->status);
    snprintf(want, sizeof want, "\"duration_ms\":%s,", json_warn[_i].dur);
    ck_assert_msg(strstr(c.line[0], want) != NULL, "want %s in %s", want, c.line[0]);
    if (r->error != NULL)
        ck_assert_str_eq(str_field(o, "error"), r->error);
    else
        ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "error"));
    if (r->mode == NULL)
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "mode")));
    if (r->method == NULL)
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "method")));
    cJSON_Delete(o);
    free_capture(&c);
}
END_TEST

START_TEST(test_json_write)
{
    static const char *const keys[] = {"time", "level", "msg", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    struct capture c;
    time_t before = time(NULL);

    wd_log_setup(true, WD_LOG_JSON, false);
    wd_log_level = WD_LOG_DEBUG;
    capture_begin();
    wd_log_debug("d %d", 1);
    wd_log_info("listening addr=%s port=%d", "0.0.0.0", 8080);
    wd_log_warn("w");
    wd_log_error("e \"%s\"", "q");
    capture_end(&c);
    time_t after = time(NULL) + 1; /* time() reads a coarse clock: it may lag a tick */
    ck_assert_uint_eq(c.n, 4);
    for (size_t i = 0; i < 4; i++) {
        cJSON *o = parse_line(c.line[i]);
        assert_keys(o, keys);
        ck_assert_str_eq(str_field(o, "level"), levels[i]);
        /* The stamp is UTC and now. */
        struct tm tm = {0};
        ck_assert_ptr_nonnull(strptime(str_field(o, "time"), "%Y-%m-%dT%H:%M:%S", &tm));
        time_t t = timegm(&tm);
        ck_assert_int_ge(t, before);
        ck_assert_int_le(t, after);
        cJSON_Delete(o);
    }
    ck_assert(matches("\"msg\":\"listening addr=0\\.0\\.0\\.0 port=8080\"}$", c.line[1]));
    ck_assert(matches("\"msg\":\"e \\\\\"q\\\\\"\"}$", c.line[3]));
    free_capture(&c);
}
END_TEST

/* ---- hostile input ------------------------------------------------------------------- */

static const struct {
    const char *what, *in;
    const char *out; /* what a JSON reader gets back; NULL: the input itself */
} hostile[] = {
    {"quotes", "say \"hi\" \"", NULL},
    {"backslashes", "C:\\path\\\\ \\u0041 \\", NULL},
    {"CR LF", "a\r\nb\nc\r", NULL},
    {"controls",
     "\x01\x02\x03\x04\x05\x06\x07\x08\t\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"
     "\x1a\x1b[31m\x1c\x1d\x1e\x1f\x7f",
     NULL},
    {"valid UTF-8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf",
     NULL},
    {"stray bytes",
     "a\xff"
     "b\x80"
     "c\xfe",
     "a" FFFD "b" FFFD "c" FFFD},
    {"overlong", "\xc0\xaf\xe0\x80\xaf\xc1\xbf", FFFD FFFD FFFD FFFD FFFD FFFD FFFD},
    {"surrogate", "\xed\xa0\x80x", FFFD FFFD FFFD "x"},
    {"above U+10FFFF", "\xf4\x90\x80\x80\xf5", FFFD FFFD FFFD FFFD FFFD},
    {"truncated", "\xe2\x82", FFFD FFFD},
    {"truncated then ASCII",
     "\xf0\x9f\x98"
     "x\"",
     FFFD FFFD FFFD "x\""},
    {"JSON injection", "x\",\"level\":\"error\",\"y\":\"", NULL},
};

static void assert_hostile_value(const cJSON *o, const char *key, size_t i)
{
    const char *want = hostile[i].out != NULL ? hostile[i].out : hostile[i].in;
    ck_assert_msg(strcmp(str_field(o, key), want) == 0, "%s: %s", hostile[i].what, key);
}

START_TEST(test_hostile_log)
{
    struct wd_log_req r = {hostile[_i].in, hostile[_i].in, 400,           0.1, 0, 0,
                           hostile[_i].in, hostile[_i].in, hostile[_i].in};
    static const char *const fields[] = {"method", "path", "call_id", "mode", "error"};
    struct capture c;

    wd_log_setup(true, WD_LOG_JSON, true);
    capture_begin();
    wd_log_info("%s", hostile[_i].in);
    wd_log_request(&r);
    capture_end(&c);
    ck_assert_uint_eq(c.n, 2);
    cJSON *o = parse_line(c.line[0]);
    assert_hostile_value(o, "msg", (size_t)_i);
    ck_assert_str_eq(str_field(o, "level"), "info");
    cJSON_Delete(o);
    o = parse_line(c.line[1]);
    ck_assert_str_eq(str_field(o, "msg"), "request");
    ck_assert_str_eq(str_field(o, "level"), "warn");
    for (size_t i = 0; i < WD_ARRAY_LEN(fields); i++)
        assert_hostile_value(o, fields[i], (size_t)_i);
    cJSON_Delete(o);
    free_capture(&c);
}
END_TEST

/* Handler output: every '\n' ends a line, and each line is one object. */
START_TEST(test_hostile_handler)
{
    const char *in = hostile[_i].in;
    struct wd_linelog ll;
    struct capture c;
    size_t want = 1;

    for (const char *p = in; *p != '\0'; p++)
        want += *p == '\n';
    wd_log_setup(true, WD_LOG_JSON, false);
    ck_assert_int_eq(wd_linelog_init(&ll, "stderr", 2, 65536), 0);
    ll.call_id = in;
    capture_begin();
    wd_linelog_feed(&ll, in, strlen(in));
    wd_linelog_feed(&ll, "\n", 1);
    wd_linelog_flush(&ll);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, want);
    for (size_t i = 0; i < c.n; i++) {
        cJSON *o = parse_line(c.line[i]);
        ck_assert_str_eq(str_field(o, "stream"), "stderr");
        if (want == 1)
            assert_hostile_value(o, "msg", (size_t)_i);
        assert_hostile_value(o, "call_id", (size_t)_i);
        cJSON_Delete(o);
    }
    free_capture(&c);
}
END_TEST

START_TEST(test_nul_byte)
{
    static const char in[] = "a\0b\x01\n";
    struct wd_linelog ll;
    struct capture c;

    wd_log_setup(true, WD_LOG_JSON, false);
    wd_linelog_init(&ll, "stderr", 2, 0);
    capture_begin();
    wd_linelog_feed(&ll, in, sizeof in - 1);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, 1);
    cJSON_Delete(parse_line(c.line[0]));
    ck_assert_ptr_nonnull(strstr(c.line[0], "\"msg\":\"a\\u0000b\\u0001\","));
    free_capture(&c);
}
END_TEST

/* A 100 KiB line mixing ASCII, quotes, controls and a multibyte character. */
static char *big_line(void)
{
    static const char unit[] = "ab\"\\\x01\xc3\xa9\xff\r\t";
    char *big = malloc(BIG_LINE + 1);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < BIG_LINE; i++)
        big[i] = unit[i % (sizeof unit - 1)];
    big[BIG_LINE] = '\0';
    return big;
}

START_TEST(test_big_line)
{
    char *big = big_line();
    struct wd_log_req r = {"GET", big, 200, 0.1, 0, 0, big, "http", NULL};
    struct wd_linelog ll;
    struct capture c;

    wd_log_setup(true, WD_LOG_JSON, false);
    wd_linelog_init(&ll, "stderr", 2, 65536);
    capture_begin();
    wd_log_info("%s", big);
    wd_log_request(&r);
    wd_linelog_feed(&ll, big, BIG_LINE);
    wd_linelog_feed(&ll, "\n", 1);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, 4);
    cJSON *o[4];
    for (size_t i = 0; i < 4; i++)
        o[i] = parse_line(c.line[i]);
    /* The message is cut at 4 KiB; the request fields are whole. */
    const char *msg = str_field(o[0], "msg");
    ck_assert_uint_gt(strlen(msg), 4000);
    ck_assert_uint_lt(strlen(msg), 4096 * 3);
    ck_assert_str_eq(str_field(o[1], "path"), str_field(o[1], "call_id"));
    ck_assert_uint_gt(strlen(str_field(o[1], "path")), BIG_LINE);
    /* The handler line comes in two pieces: 64 KiB, then the rest. */
    ck_assert_uint_gt(strlen(str_field(o[2], "msg")), 65536 - 8);
    ck_assert_uint_gt(strlen(str_field(o[3], "msg")), BIG_LINE - 65536 - 8);
    for (size_t i = 0; i < 4; i++)
        cJSON_Delete(o[i]);
    free_capture(&c);
    free(big);
}
END_TEST

START_TEST(test_big_line_text)
{
    char *big = big_line();
    struct wd_linelog ll;
    struct capture c;

    wd_log_setup(false, WD_LOG_TEXT, false);
    wd_linelog_init(&ll, "stderr", 2, 65536);
    capture_begin();
    wd_linelog_feed(&ll, big, BIG_LINE);
    wd_linelog_flush(&ll);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, 2);
    ck_assert_uint_eq(c.len, BIG_LINE + 2);
    ck_assert_int_eq(memcmp(c.line[0], big, 65536), 0);
    ck_assert_int_eq(memcmp(c.line[1], big + 65536, BIG_LINE - 65536), 0);
    free_capture(&c);
    free(big);
}
END_TEST

/* ---- handler lines ------------------------------------------------------------------- */

/* max_line 8. "abcdefgh" is exactly max_line: one line whether its '\n' comes in the same
 * read or the next. */
static const char split_in[] = "abcdefghijklmnopqrst\nxy\n\nabcdefgh\nabcdefghijklmnop\nz";
static const char *const split_out[] = {"abcdefgh", "ijklmnop", "qrst",     "xy", "",
                                        "abcdefgh", "abcdefgh", "ijklmnop", "z"};

enum split_format { SPLIT_BARE, SPLIT_PREFIX, SPLIT_JSON, SPLIT_JSON_ID };

static void assert_split(const struct capture *c, enum split_format fmt)
{
    ck_assert_uint_eq(c->n, WD_ARRAY_LEN(split_out));
    for (size_t i = 0; i < c->n; i++) {
        const char *line = c->line[i];
        if (fmt == SPLIT_BARE) {
            ck_assert_str_eq(line, split_out[i]);
        } else if (fmt == SPLIT_PREFIX) {
            ck_assert_msg(matches(RE_GO_STAMP "stderr: ", line), "prefix in %s", line);
            ck_assert_str_eq(line + 28, split_out[i]);
        } else {
            static const char *const keys[] = {"time", "level", "msg", "stream", "call_id", NULL};
            cJSON *o = parse_line(line);
            ck_assert_str_eq(str_field(o, "msg"), split_out[i]);
            ck_assert_str_eq(str_field(o, "stream"), "stderr");
            ck_assert_str_eq(str_field(o, "level"), "info");
            if (fmt == SPLIT_JSON_ID) {
                assert_keys(o, keys);
                ck_assert_str_eq(str_field(o, "call_id"), "req-1");
            } else {
                ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "call_id"));
            }
            cJSON_Delete(o);
        }
    }
}

static void setup_split(struct wd_linelog *ll, enum split_format fmt)
{
    wd_log_setup(fmt != SPLIT_BARE, fmt >= SPLIT_JSON ? WD_LOG_JSON : WD_LOG_TEXT, true);
    wd_linelog_init(ll, "stderr", 2, 8);
    if (fmt == SPLIT_JSON_ID)
        ll->call_id = "req-1";
}

/* _i: the format. Whole, then split in two at every offset, then byte by byte. */
START_TEST(test_split)
{
    const size_t n = sizeof split_in - 1;
    enum split_format fmt = (enum split_format)_i;
    struct wd_linelog ll;
    struct capture c;

    for (size_t cut = 0; cut <= n + 1; cut++) {
        setup_split(&ll, fmt);
        capture_begin();
        if (cut <= n) {
            wd_linelog_feed(&ll, split_in, cut);
            wd_linelog_feed(&ll, split_in + cut, n - cut);
        } else {
            for (size_t i = 0; i < n; i++)
                wd_linelog_feed(&ll, split_in + i, 1);
        }
        wd_linelog_flush(&ll);
        capture_end(&c);
        wd_linelog_free(&ll);
        assert_split(&c, fmt);
        free_capture(&c);
    }
}
END_TEST

/* A piece may end inside a UTF-8 sequence: the cut bytes become U+FFFD, the line stays valid. */
START_TEST(test_split_utf8)
{
    static const char in[] = "a\xc3\xa9\xe2\x82\xac"
                             "b\n"; /* a é € b */
    struct wd_linelog ll;
    struct capture c;

    wd_log_setup(true, WD_LOG_JSON, false);
    wd_linelog_init(&ll, "stderr", 2, 4);
    capture_begin();
    wd_linelog_feed(&ll, in, sizeof in - 1);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, 2);
    cJSON *o = parse_line(c.line[0]);
    ck_assert_str_eq(str_field(o, "msg"), "a\xc3\xa9" FFFD);
    cJSON_Delete(o);
    o = parse_line(c.line[1]);
    ck_assert_str_eq(str_field(o, "msg"), FFFD FFFD "b");
    cJSON_Delete(o);
    free_capture(&c);
}
END_TEST

START_TEST(test_handler_text_prefix)
{
    struct wd_linelog ll;
    struct capture c;

    wd_linelog_init(&ll, "stderr", 2, 0);
    ll.call_id = "ignored-in-text";
    capture_begin();
    wd_linelog_feed(&ll, "hello \"world\"\npartial", 21);
    wd_linelog_flush(&ll);
    capture_end(&c);
    wd_linelog_free(&ll);
    ck_assert_uint_eq(c.n, 2);
    ck_assert(matches(RE_GO_STAMP "stderr: hello \"world\"$", c.line[0]));
    ck_assert(matches(RE_GO_STAMP "stderr: partial$", c.line[1]));
    free_capture(&c);
}
END_TEST

Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc;

    tc = tcase_create("text");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_text_request, 0, WD_ARRAY_LEN(text_reqs));
    tcase_add_loop_test(tc, test_human_size, 0, WD_ARRAY_LEN(sizes));
    tcase_add_test(tc, test_text_write);
    tcase_add_test(tc, test_level_filter);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_json_request);
    tcase_add_loop_test(tc, test_json_request_warn, 0, WD_ARRAY_LEN(json_warn));
    tcase_add_test(tc, test_json_write);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_hostile_log, 0, WD_ARRAY_LEN(hostile));
    tcase_add_loop_test(tc, test_hostile_handler, 0, WD_ARRAY_LEN(hostile));
    tcase_add_test(tc, test_nul_byte);
    tcase_add_test(tc, test_big_line);
    tcase_add_test(tc, test_big_line_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("lines");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_split, SPLIT_BARE, SPLIT_JSON_ID + 1);
    tcase_add_test(tc, test_split_utf8);
    tcase_add_test(tc, test_handler_text_prefix);
    suite_add_tcase(s, tc);

    return s;
}
