/* check_warmproto.c: mode warm's wire formats (modes/warmproto.c): base64, UTF-8, the request
 * line for actionloop and Nuclio, and the answer decoding rules of the README's "Mode warm". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../suites.h"
#include "buf.h"
#include "warmproto.h"

static const char *hdr(const struct wd_warm_reply *r, const char *name, int nth)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0 && nth-- == 0)
            return r->headers[i].value;
    }
    return NULL;
}

START_TEST(base64_round_trip)
{
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        struct wd_buf b, d;
        wd_buf_init(&b, 0);
        wd_buf_init(&d, 0);
        ck_assert_int_eq(wd_base64_encode(&b, plain[i], strlen(plain[i])), 0);
        ck_assert_uint_eq(b.len, strlen(coded[i]));
        ck_assert(b.len == 0 || memcmp(b.data, coded[i], b.len) == 0);
        ck_assert_int_eq(wd_base64_decode(&d, coded[i], strlen(coded[i])), 0);
        ck_assert_uint_eq(d.len, strlen(plain[i]));
        ck_assert(d.len == 0 || memcmp(d.data, plain[i], d.len) == 0);
        wd_buf_free(&b);
        wd_buf_free(&d);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    struct wd_buf b, d;
    wd_buf_init(&b, 0);
    wd_buf_init(&d, 0);
    ck_assert_int_eq(wd_base64_encode(&b, all, sizeof all), 0);
    ck_assert_int_eq(wd_base64_decode(&d, b.data, b.len), 0);
    ck_assert_uint_eq(d.len, sizeof all);
    ck_assert(memcmp(d.data, all, sizeof all) == 0);
    wd_buf_free(&b);
    wd_buf_free(&d);
}
END_TEST

START_TEST(base64_rejects)
{
    static const char *bad[] = {"Zm9v!", "Z", "Zm 9v", "Zm9v\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct wd_buf d;
        wd_buf_init(&d, 0);
        ck_assert_msg(wd_base64_decode(&d, bad[i], strlen(bad[i])) == -1, "%s", bad[i]);
        wd_buf_free(&d);
    }
}
END_TEST

START_TEST(utf8_validity)
{
    ck_assert(wd_utf8_is_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    ck_assert(!wd_utf8_is_valid("\xff\xfe", 2));
    ck_assert(!wd_utf8_is_valid("\xc0\xaf", 2));         /* overlong '/' */
    ck_assert(!wd_utf8_is_valid("\xed\xa0\x80", 3));     /* surrogate */
    ck_assert(!wd_utf8_is_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    ck_assert(!wd_utf8_is_valid("\xe2\x82", 2));         /* cut short */
    ck_assert(!wd_utf8_is_valid("a\0b", 3));             /* NUL: cannot go through cJSON */
}
END_TEST

static const struct wd_header req_headers[] = {
    {"Content-Type", "text/plain"},
    {"X-Multi", "a"},
    {"x-multi", "b"},
};

static struct wd_http1_head make_head(const char *query)
{
    struct wd_http1_head h = {
        .method = "POST",
        .target = "/a/b?x=1&y=two+words&z=%41",
        .path = "/a/b",
        .query = query,
        .headers = req_headers,
        .nheaders = 3,
    };
    return h;
}

static cJSON *encode_q(bool nuclio, const char *body, size_t len, const char *query)
{
    struct wd_http1_head h = make_head(query);
    struct wd_warm_event ev = {
        .head = &h,
        .body = body,
        .body_len = len,
        .call_id = "call-1",
        .deadline_ms = 1700000030000,
        .now_ms = 1700000000000,
        .action_name = "fn",
        .namespace_name = "ns",
    };
    struct wd_buf out;
    wd_buf_init(&out, 0);
    int rc = nuclio ? wd_warm_encode_nuclio(&out, &ev) : wd_warm_encode_actionloop(&out, &ev);
    ck_assert_int_eq(rc, 0);
    ck_assert(out.len > 0 && out.data[out.len - 1] == '\n');
    ck_assert_ptr_null(memchr(out.data, '\n', out.len - 1)); /* exactly one line */
    cJSON *root = cJSON_ParseWithLength(out.data, out.len);
    ck_assert_ptr_nonnull(root);
    wd_buf_free(&out);
    return root;
}

static cJSON *encode(bool nuclio, const char *body, size_t len)
{
    return encode_q(nuclio, body, len, "x=1&y=two+words&z=%41");
}

static const char *str_at(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", key);
    return v->valuestring;
}

START_TEST(actionloop_request)
{
    cJSON *root = encode(false, "h\xc3\xa9llo\nworld", 12);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "value");
    ck_assert_str_eq(str_at(v, "__ow_method"), "post");
    ck_assert_str_eq(str_at(v, "__ow_path"), "/a/b");
    ck_assert_str_eq(str_at(v, "__ow_query"), "x=1&y=two+words&z=%41");
    ck_assert_str_eq(str_at(v, "__ow_body"), "h\xc3\xa9llo\nworld");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(v, "__ow_isBase64Encoded")));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "__ow_headers");
    ck_assert_str_eq(str_at(h, "content-type"), "text/plain");
    ck_assert_str_eq(str_at(h, "x-multi"), "a, b");
    ck_assert_int_eq(cJSON_GetArraySize(h), 2);
    ck_assert_str_eq(str_at(root, "activation_id"), "call-1");
    ck_assert_str_eq(str_at(root, "deadline"), "1700000030000");
    ck_assert_str_eq(str_at(root, "action_name"), "fn");
    ck_assert_str_eq(str_at(root, "namespace"), "ns");
    cJSON_Delete(root);

    root = encode(false, "\xff\x00\x01", 3);
    v = cJSON_GetObjectItemCaseSensitive(root, "value");
    ck_assert_str_eq(str_at(v, "__ow_body"), "/wAB");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "__ow_isBase64Encoded")));
    cJSON_Delete(root);
}
END_TEST

START_TEST(nuclio_event)
{
    cJSON *root = encode(true, "\xff\x00\x01", 3);
    ck_assert_str_eq(str_at(root, "id"), "call-1");
    ck_assert_str_eq(str_at(root, "method"), "POST");
    ck_assert_str_eq(str_at(root, "path"), "/a/b");
    ck_assert_str_eq(str_at(root, "url"), "/a/b?x=1&y=two+words&z=%41");
    ck_assert_str_eq(str_at(root, "body"), "/wAB");
    ck_assert_str_eq(str_at(root, "content-type"), "text/plain");
    ck_assert_str_eq(str_at(root, "content_type"), "text/plain");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "fields");
    ck_assert_str_eq(str_at(f, "x"), "1");
    ck_assert_str_eq(str_at(f, "y"), "two words");
    ck_assert_str_eq(str_at(f, "z"), "A");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "headers");
    ck_assert_str_eq(str_at(h, "X-Multi"), "a, b");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(root, "size")->valuedouble, 3);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(root, "timestamp")->valuedouble,
                        1700000000.0);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "trigger");
    ck_assert_str_eq(str_at(t, "kind"), "http");
    cJSON_Delete(root);

    /* first value wins; keys are case-sensitive; an empty key is left out; order kept */
    root = encode_q(true, "", 0, "b=1&a=1&A=2&a=3&=4&c&%FF=raw");
    f = cJSON_GetObjectItemCaseSensitive(root, "fields");
    ck_assert_int_eq(cJSON_GetArraySize(f), 5);
    ck_assert_str_eq(f->child->string, "b");
    ck_assert_str_eq(str_at(f, "a"), "1");
    ck_assert_str_eq(str_at(f, "A"), "2");
    ck_assert_str_eq(str_at(f, "c"), "");
    ck_assert_str_eq(str_at(f, "%FF"), "raw"); /* not text once decoded: kept as sent */
    ck_assert_str_eq(str_at(root, "body"), "");
    cJSON_Delete(root);
}
END_TEST

static void decode_ok(const char *line, struct wd_warm_reply *r)
{
    int rc = wd_warm_decode_actionloop(line, strlen(line), r);
    ck_assert_msg(rc == 0, "%s: %s", line, r->err);
}

static void decode_bad(const char *line)
{
    struct wd_warm_reply r;
    ck_assert_msg(wd_warm_decode_actionloop(line, strlen(line), &r) == -1, "%s", line);
    ck_assert(r.err[0] != '\0');
    wd_warm_reply_free(&r);
}

START_TEST(actionloop_answers)
{
    struct wd_warm_reply r;
    decode_ok("{\"statusCode\":201,\"headers\":{\"Set-Cookie\":[\"a=1\",\"b=2\"],\"X-N\":7},"
              "\"body\":\"hi\"}",
              &r);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(hdr(&r, "Set-Cookie", 0), "a=1");
    ck_assert_str_eq(hdr(&r, "Set-Cookie", 1), "b=2");
    ck_assert_str_eq(hdr(&r, "X-N", 0), "7");
    ck_assert_str_eq(hdr(&r, "Content-Type", 0), "text/plain; charset=utf-8");
    ck_assert_uint_eq(r.body_len, 2);
    ck_assert_str_eq(r.body, "hi");
    wd_warm_reply_free(&r);

    decode_ok("{\"headers\":{\"content-type\":\"image/png\"},\"body\":\"/wAB\"}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 3);
    ck_assert(memcmp(r.body, "\xff\x00\x01", 3) == 0);
    wd_warm_reply_free(&r);

    decode_ok("{\"headers\":{\"Content-Type\":\"application/problem+json\"},\"body\":\"{}\"}", &r);
    ck_assert_str_eq(r.body, "{}"); /* textual: not decoded */
    wd_warm_reply_free(&r);

    decode_ok("{\"body\":{\"a\":[1,2]}}", &r);
    ck_assert_str_eq(r.body, "{\"a\":[1,2]}");
    ck_assert_str_eq(hdr(&r, "Content-Type", 0), "application/json");
    wd_warm_reply_free(&r);

    decode_ok("{\"greeting\":\"hi\"}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"greeting\":\"hi\"}");
    ck_assert_str_eq(hdr(&r, "Content-Type", 0), "application/json");
    wd_warm_reply_free(&r);

    decode_ok("[1,2]", &r);
    ck_assert_str_eq(r.body, "[1,2]");
    wd_warm_reply_free(&r);

    decode_ok("{\"statusCode\":204}", &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert_uint_eq(r.body_len, 0);
    wd_warm_reply_free(&r);

    decode_bad("not json");
    decode_bad("42");
    decode_bad("\"text\"");
    decode_bad("{\"statusCode\":700}");
    decode_bad("{\"statusCode\":20.5}");
    decode_bad("{\"statusCode\":\"200\"}");
    decode_bad("{\"headers\":{\"X-A\":\"a\\r\\nX-Evil: 1\"},\"body\":\"\"}");
    decode_bad("{\"headers\":{\"Bad Name\":\"a\"}}");
    decode_bad("{\"headers\":{\"content-type\":\"image/png\"},\"body\":\"not base64!\"}");
    decode_bad("{\"headers\":[1]}");
}
END_TEST

START_TEST(nuclio_replies)
{
    struct wd_warm_reply r;
    const char *s =
        "{\"status_code\":418,\"content_type\":\"text/x-tea\",\"headers\":{\"X-A\":\"1\"},"
        "\"body\":\"tea\",\"body_encoding\":\"text\"}";
    ck_assert_int_eq(wd_warm_decode_nuclio(s, strlen(s), &r), 0);
    ck_assert_int_eq(r.status, 418);
    ck_assert_str_eq(hdr(&r, "Content-Type", 0), "text/x-tea");
    ck_assert_str_eq(hdr(&r, "X-A", 0), "1");
    ck_assert_str_eq(r.body, "tea");
    wd_warm_reply_free(&r);

    s = "[{\"body\":\"/wAB\",\"body_encoding\":\"base64\",\"content_type\":\"text/plain\"}]";
    ck_assert_int_eq(wd_warm_decode_nuclio(s, strlen(s), &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 3);
    ck_assert(memcmp(r.body, "\xff\x00\x01", 3) == 0);
    wd_warm_reply_free(&r);

    s = "{\"status_code\":200";
    ck_assert_int_eq(wd_warm_decode_nuclio(s, strlen(s), &r), -1);
    wd_warm_reply_free(&r);
}
END_TEST

START_TEST(ack_log_metric)
{
    ck_assert(wd_warm_is_ack("{\"ok\":true}", 11));
    ck_assert(!wd_warm_is_ack("{\"ok\":false}", 12));
    ck_assert(!wd_warm_is_ack("ok", 2));

    struct wd_buf b;
    enum wd_log_level lv = WD_LOG_DEBUG;
    wd_buf_init(&b, 0);
    const char *s = "{\"level\":\"warning\",\"message\":\"hot\",\"with\":{\"t\":42,\"u\":\"x\"}}";
    ck_assert_int_eq(wd_warm_nuclio_log(s, strlen(s), &lv, &b), 0);
    ck_assert_int_eq(lv, WD_LOG_WARN);
    ck_assert_str_eq(b.data, "hot t=42 u=x");
    wd_buf_free(&b);
    ck_assert_int_eq(wd_warm_nuclio_log("{}", 2, &lv, &b), -1);

    double d = 0;
    ck_assert_int_eq(wd_warm_nuclio_duration("{\"duration\":0.25}", 17, &d), 0);
    ck_assert_double_eq(d, 0.25);
    ck_assert_int_eq(wd_warm_nuclio_duration("{\"duration\":-1}", 15, &d), -1);
}
END_TEST

Suite *warmproto_suite(void)
{
    Suite *s = suite_create("warmproto");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, base64_round_trip);
    tcase_add_test(tc, base64_rejects);
    tcase_add_test(tc, utf8_validity);
    tcase_add_test(tc, actionloop_request);
    tcase_add_test(tc, nuclio_event);
    tcase_add_test(tc, actionloop_answers);
    tcase_add_test(tc, nuclio_replies);
    tcase_add_test(tc, ack_log_metric);
    suite_add_tcase(s, tc);
    return s;
}
