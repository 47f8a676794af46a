/* check_config.c: wd_config_load() and its parsers, driven by envp arrays (never setenv). */
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "../suites.h"
#include "config.h"

#define MAX_ENV 8

/* Builds a NULL-terminated envp on the stack. */
#define ENVP(...) ((char *const[]){__VA_ARGS__, NULL})

static struct wd_config cfg;
static char err[256];

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(err, 0, sizeof(err));
}

static void teardown(void)
{
    wd_config_free(&cfg);
}

static int load(char *const *envp)
{
    return wd_config_load(&cfg, envp, err, sizeof(err));
}

static void assert_loaded(char *const *envp)
{
    int rc = load(envp);
    ck_assert_msg(rc == 0, "load failed: rc=%d err=%s", rc, err);
    ck_assert_str_eq(err, "");
}

/* defaults */

static const struct {
    const char *env[MAX_ENV];
    enum wd_mode_kind mode;
    const char *name;
    uint64_t exec_ms;
} mode_defaults[] = {
    {{"fprocess=cat"}, WD_MODE_STREAMING, "streaming", 30000},
    {{"fprocess=cat", "mode="}, WD_MODE_STREAMING, "streaming", 30000},
    {{"fprocess=cat", "mode=streaming"}, WD_MODE_STREAMING, "streaming", 30000},
    {{"fprocess=cat", "mode=serializing"}, WD_MODE_SERIALIZING, "serializing", 30000},
    {{"fprocess=cat", "mode=classic"}, WD_MODE_CLASSIC, "classic", 0},
    {{"fprocess=node s.js", "mode=http", "upstream_url=http://127.0.0.1:3000"},
     WD_MODE_HTTP,
     "http",
     30000},
    {{"mode=static"}, WD_MODE_STATIC, "static", 30000},
    {{"fprocess=cat", "mode=warm"}, WD_MODE_WARM, "warm", 30000},
};

START_TEST(test_mode_defaults)
{
    assert_loaded((char *const *)mode_defaults[_i].env);
    ck_assert_int_eq(cfg.mode, mode_defaults[_i].mode);
    ck_assert_str_eq(cfg.mode_name, mode_defaults[_i].name);
    ck_assert_uint_eq(cfg.exec_timeout_ms, mode_defaults[_i].exec_ms);
    ck_assert_uint_eq(cfg.write_timeout_ms, 30000);
    ck_assert_uint_eq(cfg.healthcheck_interval_ms, cfg.write_timeout_ms);
    ck_assert_uint_eq(cfg.queue_timeout_ms, cfg.exec_timeout_ms);
}
END_TEST

START_TEST(test_common_defaults)
{
    assert_loaded(ENVP("fprocess=cat"));
    ck_assert_str_eq(cfg.fprocess, "cat");
    ck_assert_uint_eq(cfg.fprocess_argc, 1);
    ck_assert_str_eq(cfg.fprocess_argv[0], "cat");
    ck_assert_ptr_null(cfg.fprocess_argv[1]);
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_ptr_null(cfg.bind_address);
    ck_assert_int_eq(cfg.metrics_port, 8081);
    ck_assert_uint_eq(cfg.read_timeout_ms, 30000);
    ck_assert_uint_eq(cfg.write_timeout_ms, 30000);
    ck_assert_uint_eq(cfg.shutdown_grace_ms, 5000);
    ck_assert(!cfg.suppress_lock);
    ck_assert_ptr_null(cfg.ready_path);
    ck_assert_str_eq(cfg.lock_path, "/tmp/.lock");
    ck_assert_uint_eq(cfg.max_inflight, 0);
    ck_assert_uint_eq(cfg.max_queue, 0);
    ck_assert_uint_eq(cfg.max_body_size, 0);
    ck_assert_uint_eq(cfg.max_header_size, 1048576);
    ck_assert_ptr_null(cfg.content_type);
    ck_assert(cfg.cgi_headers);
    ck_assert(cfg.combine_output);
    ck_assert(!cfg.write_debug);
    ck_assert(!cfg.marshal_request);
    ck_assert(!cfg.debug_headers);
    ck_assert(!cfg.cgi_response);
    ck_assert_int_eq(cfg.rlimits.as_bytes, -1);
    ck_assert_int_eq(cfg.rlimits.cpu_seconds, -1);
    ck_assert_int_eq(cfg.rlimits.nofile, -1);
    ck_assert_int_eq(cfg.rlimits.nproc, -1);
    ck_assert_ptr_null(cfg.upstream_url);
    ck_assert(!cfg.buffer_http);
    ck_assert_int_eq(cfg.restart_policy, WD_RESTART_ALWAYS);
    ck_assert_uint_eq(cfg.workers, 1);
    ck_assert_int_eq(cfg.warm_protocol, WD_WARM_ACTIONLOOP);
    ck_assert(cfg.warm_ack);
    ck_assert_str_eq(cfg.static_path, "/home/app/public");
    ck_assert(cfg.prefix_logs);
    ck_assert_int_eq(cfg.log_buffer_size, 65536);
    ck_assert(!cfg.log_callid);
    ck_assert_int_eq(cfg.log_format, WD_LOG_TEXT);
}
END_TEST

/* Settings whose default is another setting's value. */
static const struct {
    const char *env[MAX_ENV];
    uint64_t write_ms, hc_ms, exec_ms, queue_ms;
} dependent[] = {
    {{"fprocess=cat", "write_timeout=10"}, 10000, 10000, 30000, 30000},
    {{"fprocess=cat", "write_timeout=1m", "healthcheck_interval=0"}, 60000, 0, 30000, 30000},
    {{"fprocess=cat", "healthcheck_interval=2s"}, 30000, 2000, 30000, 30000},
    {{"fprocess=cat", "exec_timeout=5"}, 30000, 30000, 5000, 5000},
    {{"fprocess=cat", "exec_timeout=0"}, 30000, 30000, 0, 0},
    {{"fprocess=cat", "mode=classic", "exec_timeout=7"}, 30000, 30000, 7000, 7000},
    {{"fprocess=cat", "mode=classic", "queue_timeout=2s"}, 30000, 30000, 0, 2000},
    {{"fprocess=cat", "exec_timeout=1s", "queue_timeout=0"}, 30000, 30000, 1000, 0},
    {{"fprocess=cat", "exec_timeout=", "healthcheck_interval="}, 30000, 30000, 30000, 30000},
};

START_TEST(test_dependent_defaults)
{
    assert_loaded((char *const *)dependent[_i].env);
    ck_assert_uint_eq(cfg.write_timeout_ms, dependent[_i].write_ms);
    ck_assert_uint_eq(cfg.healthcheck_interval_ms, dependent[_i].hc_ms);
    ck_assert_uint_eq(cfg.exec_timeout_ms, dependent[_i].exec_ms);
    ck_assert_uint_eq(cfg.queue_timeout_ms, dependent[_i].queue_ms);
}
END_TEST

static const struct {
    const char *tmpdir;
    const char *lock;
} lock_paths[] = {
    {NULL, "/tmp/.lock"},
    {"TMPDIR=", "/tmp/.lock"},
    {"TMPDIR=/var/tmp", "/var/tmp/.lock"},
    {"TMPDIR=/var/tmp/", "/var/tmp/.lock"},
    {"TMPDIR=/var/tmp//", "/var/tmp/.lock"},
    {"TMPDIR=/", "/.lock"},
};

START_TEST(test_lock_path)
{
    assert_loaded(ENVP("fprocess=cat", (char *)lock_paths[_i].tmpdir));
    ck_assert_str_eq(cfg.lock_path, lock_paths[_i].lock);
}
END_TEST

/* Empty means unset; unknown and look-alike names are ignored; the first duplicate wins. */
START_TEST(test_env_lookup)
{
    assert_loaded(ENVP("PORTX=1", "por=2", "port_=3", "xport=4", "fprocess=cat", "port=", "mode=",
                       "static_path=", "workers=", "metrics_port=9", "metrics_port=10"));
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_int_eq(cfg.mode, WD_MODE_STREAMING);
    ck_assert_str_eq(cfg.static_path, "/home/app/public");
    ck_assert_uint_eq(cfg.workers, 1);
    ck_assert_int_eq(cfg.metrics_port, 9);
}
END_TEST

START_TEST(test_free_twice)
{
    struct wd_config zero;

    memset(&zero, 0, sizeof(zero));
    wd_config_free(&cfg); /* zeroed */
    wd_config_free(&cfg);
    wd_config_free(NULL);
    assert_loaded(ENVP("fprocess=a b", "content_type=text/plain", "bind_address=::1"));
    wd_config_free(&cfg);
    ck_assert_int_eq(memcmp(&cfg, &zero, sizeof(cfg)), 0);
    wd_config_free(&cfg);
}
END_TEST

/* values: every setting away from its default */

START_TEST(test_all_values)
{
    assert_loaded(ENVP(
        "fprocess=python3 -u 'my handler.py'", "mode=classic", "port=0", "bind_address=127.0.0.1",
        "metrics_port=0", "read_timeout=1m30s", "write_timeout=250ms", "exec_timeout=2h",
        "healthcheck_interval=0", "shutdown_grace=1.5s", "suppress_lock=TRUE", "ready_path=/ready",
        "max_inflight=10", "max_queue=5", "queue_timeout=100ms", "max_body_size=16M",
        "max_header_size=64k", "content_type=text/plain", "cgi_headers=no", "combine_output=0",
        "write_debug=yes", "marshal_request=1", "debug_headers=True", "cgi_response=true",
        "rlimit_as=1G", "rlimit_cpu=1500ms", "rlimit_nofile=1024", "rlimit_nproc=0",
        "upstream_url=http://127.0.0.1:5000", "buffer_http=true", "restart_policy=on-failure",
        "workers=4", "warm_protocol=nuclio", "warm_ack=false", "static_path=/srv",
        "prefix_logs=false", "log_buffer_size=-1", "log_callid=1", "log_format=json",
        "jwt_auth=false", "TMPDIR=/run/fw/"));
    ck_assert_int_eq(cfg.mode, WD_MODE_CLASSIC);
    ck_assert_str_eq(cfg.fprocess, "python3 -u 'my handler.py'");
    ck_assert_uint_eq(cfg.fprocess_argc, 3);
    ck_assert_str_eq(cfg.fprocess_argv[2], "my handler.py");
    ck_assert_int_eq(cfg.port, 0);
    ck_assert_str_eq(cfg.bind_address, "127.0.0.1");
    ck_assert_int_eq(cfg.metrics_port, 0);
    ck_assert_uint_eq(cfg.read_timeout_ms, 90000);
    ck_assert_uint_eq(cfg.write_timeout_ms, 250);
    ck_assert_uint_eq(cfg.exec_timeout_ms, 7200000);
    ck_assert_uint_eq(cfg.healthcheck_interval_ms, 0);
    ck_assert_uint_eq(cfg.shutdown_grace_ms, 1500);
    ck_assert(cfg.suppress_lock);
    ck_assert_str_eq(cfg.ready_path, "/ready");
    ck_assert_str_eq(cfg.lock_path, "/run/fw/.lock");
    ck_assert_uint_eq(cfg.max_inflight, 10);
    ck_assert_uint_eq(cfg.max_queue, 5);
    ck_assert_uint_eq(cfg.queue_timeout_ms, 100);
    ck_assert_uint_eq(cfg.max_body_size, 16777216);
    ck_assert_uint_eq(cfg.max_header_size, 65536);
    ck_assert_str_eq(cfg.content_type, "text/plain");
    ck_assert(!cfg.cgi_headers);
    ck_assert(!cfg.combine_output);
    ck_assert(cfg.write_debug);
    ck_assert(cfg.marshal_request);
    ck_assert(cfg.debug_headers);
    ck_assert(cfg.cgi_response);
    ck_assert_int_eq(cfg.rlimits.as_bytes, 1073741824);
    ck_assert_int_eq(cfg.rlimits.cpu_seconds, 2);
    ck_assert_int_eq(cfg.rlimits.nofile, 1024);
    ck_assert_int_eq(cfg.rlimits.nproc, 0);
    ck_assert_str_eq(cfg.upstream_url, "http://127.0.0.1:5000");
    ck_assert(cfg.buffer_http);
    ck_assert_int_eq(cfg.restart_policy, WD_RESTART_ON_FAILURE);
    ck_assert_uint_eq(cfg.workers, 4);
    ck_assert_int_eq(cfg.warm_protocol, WD_WARM_NUCLIO);
    ck_assert(!cfg.warm_ack);
    ck_assert_str_eq(cfg.static_path, "/srv");
    ck_assert(!cfg.prefix_logs);
    ck_assert_int_eq(cfg.log_buffer_size, -1);
    ck_assert(cfg.log_callid);
    ck_assert_int_eq(cfg.log_format, WD_LOG_JSON);
}
END_TEST

static const struct {
    const char *env;
    int64_t log_buffer_size, cpu_seconds;
    int restart_policy;
} more_values[] = {
    {"log_buffer_size=4096", 4096, -1, WD_RESTART_ALWAYS},
    {"log_buffer_size=-100", -100, -1, WD_RESTART_ALWAYS},
    {"rlimit_cpu=10", 65536, 10, WD_RESTART_ALWAYS},
    {"rlimit_cpu=1ms", 65536, 1, WD_RESTART_ALWAYS},
    {"rlimit_cpu=0", 65536, 0, WD_RESTART_ALWAYS},
    {"rlimit_cpu=2m", 65536, 120, WD_RESTART_ALWAYS},
    {"restart_policy=never", 65536, -1, WD_RESTART_NEVER},
    {"restart_policy=always", 65536, -1, WD_RESTART_ALWAYS},
};

START_TEST(test_more_values)
{
    assert_loaded(ENVP("fprocess=cat", (char *)more_values[_i].env));
    ck_assert_int_eq(cfg.log_buffer_size, more_values[_i].log_buffer_size);
    ck_assert_int_eq(cfg.rlimits.cpu_seconds, more_values[_i].cpu_seconds);
    ck_assert_int_eq(cfg.restart_policy, more_values[_i].restart_policy);
}
END_TEST

/* aliases */

START_TEST(test_function_process_wins)
{
    assert_loaded(ENVP("fprocess=one", "function_process=two 'x y'"));
    ck_assert_str_eq(cfg.fprocess, "two 'x y'");
    ck_assert_uint_eq(cfg.fprocess_argc, 2);
    ck_assert_str_eq(cfg.fprocess_argv[0], "two");
    ck_assert_str_eq(cfg.fprocess_argv[1], "x y");
}
END_TEST

START_TEST(test_function_process_alone)
{
    assert_loaded(ENVP("function_process=two"));
    ck_assert_str_eq(cfg.fprocess, "two");
}
END_TEST

START_TEST(test_fprocess_when_alias_empty)
{
    assert_loaded(ENVP("fprocess=one", "function_process="));
    ck_assert_str_eq(cfg.fprocess, "one");
}
END_TEST

static const struct {
    const char *env[MAX_ENV];
    const char *url;
} upstreams[] = {
    {{"upstream_url=http://a:1"}, "http://a:1"},
    {{"http_upstream_url=http://b:2"}, "http://b:2"},
    {{"upstream_url=http://a:1", "http_upstream_url=http://b:2"}, "http://b:2"},
    {{"http_upstream_url=http://b:2", "upstream_url=http://a:1"}, "http://b:2"},
    {{"upstream_url=http://a:1", "http_upstream_url="}, "http://a:1"},
};

START_TEST(test_upstream_alias)
{
    const char *const *e = upstreams[_i].env;
    assert_loaded(ENVP("fprocess=srv", "mode=http", (char *)e[0], (char *)e[1]));
    ck_assert_str_eq(cfg.upstream_url, upstreams[_i].url);
}
END_TEST

static const struct {
    const char *env[MAX_ENV];
    int port;
} ports[] = {
    {{"port=9000"}, 9000},
    {{"PORT=9001"}, 9001},
    {{"port=9000", "PORT=9001"}, 9000},
    {{"PORT=9001", "port=9000"}, 9000},
    {{"port=", "PORT=9001"}, 9001},
    {{"port=9000", "PORT=junk"}, 9000}, /* only the value in effect is parsed */
    {{"port=0"}, 0},
    {{"port=65535"}, 65535},
};

START_TEST(test_port_alias)
{
    const char *const *e = ports[_i].env;
    assert_loaded(ENVP("fprocess=cat", (char *)e[0], (char *)e[1]));
    ck_assert_int_eq(cfg.port, ports[_i].port);
}
END_TEST

static const struct {
    const char *env[MAX_ENV];
    int rc;
    bool buffer;
    const char *needle;
} buffers[] = {
    {{NULL}, 0, false, NULL},
    {{"buffer_http=true"}, 0, true, NULL},
    {{"http_buffer_req_body=1"}, 0, true, NULL},
    {{"buffer_http=false", "http_buffer_req_body=true"}, 0, true, NULL},
    {{"buffer_http=yes", "http_buffer_req_body=false"}, 0, true, NULL},
    {{"buffer_http=0", "http_buffer_req_body=no"}, 0, false, NULL},
    {{"buffer_http=false"}, 0, false, NULL},
    {{"buffer_http=maybe", "http_buffer_req_body=true"}, UV_EINVAL, false, "buffer_http"},
    {{"buffer_http=true", "http_buffer_req_body=maybe"}, UV_EINVAL, false, "http_buffer_req_body"},
};

START_TEST(test_buffer_alias)
{
    const char *const *e = buffers[_i].env;
    int rc = load(ENVP("fprocess=cat", (char *)e[0], (char *)e[1]));
    ck_assert_int_eq(rc, buffers[_i].rc);
    if (rc == 0)
        ck_assert(cfg.buffer_http == buffers[_i].buffer);
    else
        ck_assert_ptr_nonnull(strstr(err, buffers[_i].needle));
}
END_TEST

/* durations */

static const struct {
    const char *in;
    int rc;
    uint64_t ms;
} durations[] = {
    {"10", 0, 10000},
    {"0", 0, 0},
    {"250ms", 0, 250},
    {"1.5s", 0, 1500},
    {"1m30s", 0, 90000},
    {"2h", 0, 7200000},
    {"1h30m", 0, 5400000},
    {"1.5h", 0, 5400000},
    {".5s", 0, 500},
    {"5.s", 0, 5000},
    {"0s", 0, 0},
    {"0.0s", 0, 0},
    {"1us", 0, 1},
    {"1ns", 0, 1},
    {"1000000ns", 0, 1},
    {"1000001ns", 0, 2},
    {"3\xc2\xb5s", 0, 1},
    {"3\xce\xbcs", 0, 1},
    {"1s500ms", 0, 1500},
    {"007", 0, 7000},
    {"9223372036", 0, UINT64_C(9223372036000)},
    {"2562047h", 0, UINT64_C(2562047) * 3600000},
    {"-1", UV_EINVAL, 0},
    {"-2s", UV_EINVAL, 0},
    {"+2s", UV_EINVAL, 0},
    {"1.5", UV_EINVAL, 0},
    {"abc", UV_EINVAL, 0},
    {"", UV_EINVAL, 0},
    {"10x", UV_EINVAL, 0},
    {"10S", UV_EINVAL, 0},
    {"s", UV_EINVAL, 0},
    {".s", UV_EINVAL, 0},
    {"1m30", UV_EINVAL, 0},
    {"1..5s", UV_EINVAL, 0},
    {" 10", UV_EINVAL, 0},
    {"10 ", UV_EINVAL, 0},
    {"10s ", UV_EINVAL, 0},
    {"9223372037", UV_EINVAL, 0},
    {"2562048h", UV_EINVAL, 0},
    {"99999999999999999999s", UV_EINVAL, 0},
    {"18446744073709551616", UV_EINVAL, 0},
    {"2562047h2562047h", UV_EINVAL, 0},
};

START_TEST(test_duration)
{
    uint64_t ms = 42;
    ck_assert_msg(wd_parse_duration(durations[_i].in, &ms) == durations[_i].rc, "input \"%s\"",
                  durations[_i].in);
    if (durations[_i].rc == 0)
        ck_assert_uint_eq(ms, durations[_i].ms);
    else
        ck_assert_uint_eq(ms, 42);
}
END_TEST

/* sizes */

static const struct {
    const char *in;
    int rc;
    uint64_t bytes;
} sizes[] = {
    {"64k", 0, 65536},
    {"64K", 0, 65536},
    {"16M", 0, 16777216},
    {"16m", 0, 16777216},
    {"1G", 0, 1073741824},
    {"2T", 0, UINT64_C(2199023255552)},
    {"1KiB", 0, 1024},
    {"1Ki", 0, 1024},
    {"1kB", 0, 1024},
    {"100", 0, 100},
    {"100B", 0, 100},
    {"0", 0, 0},
    {"18446744073709551615", 0, UINT64_MAX},
    {"16777215T", 0, UINT64_C(16777215) << 40},
    {"", UV_EINVAL, 0},
    {"abc", UV_EINVAL, 0},
    {"k", UV_EINVAL, 0},
    {"10x", UV_EINVAL, 0},
    {"-1", UV_EINVAL, 0},
    {"1.5M", UV_EINVAL, 0},
    {"1 K", UV_EINVAL, 0},
    {"1KiBB", UV_EINVAL, 0},
    {"1i", UV_EINVAL, 0},
    {"1P", UV_EINVAL, 0},
    {"18446744073709551616", UV_EINVAL, 0},
    {"16777216T", UV_EINVAL, 0},
};

START_TEST(test_size)
{
    uint64_t bytes = 42;
    ck_assert_msg(wd_parse_size(sizes[_i].in, &bytes) == sizes[_i].rc, "input \"%s\"",
                  sizes[_i].in);
    if (sizes[_i].rc == 0)
        ck_assert_uint_eq(bytes, sizes[_i].bytes);
    else
        ck_assert_uint_eq(bytes, 42);
}
END_TEST

/* bools */

static const struct {
    const char *in;
    int rc;
    bool value;
} bools[] = {
    {"true", 0, true},    {"TRUE", 0, true},        {"True", 0, true},       {"1", 0, true},
    {"yes", 0, true},     {"YES", 0, true},         {"false", 0, false},     {"FALSE", 0, false},
    {"0", 0, false},      {"no", 0, false},         {"No", 0, false},        {"", UV_EINVAL, 0},
    {"t", UV_EINVAL, 0},  {"f", UV_EINVAL, 0},      {"on", UV_EINVAL, 0},    {"off", UV_EINVAL, 0},
    {"2", UV_EINVAL, 0},  {"truee", UV_EINVAL, 0},  {" true", UV_EINVAL, 0}, {"y", UV_EINVAL, 0},
    {"01", UV_EINVAL, 0}, {"true\n", UV_EINVAL, 0},
};

START_TEST(test_bool)
{
    bool b = !bools[_i].value;
    ck_assert_msg(wd_parse_bool(bools[_i].in, &b) == bools[_i].rc, "input \"%s\"", bools[_i].in);
    if (bools[_i].rc == 0)
        ck_assert(b == bools[_i].value);
}
END_TEST

/* argv */

static const struct {
    const char *in;
    int rc;
    size_t argc;
    const char *argv[4];
} argvs[] = {
    {"a b", 0, 2, {"a", "b"}},
    {"'a b' c", 0, 2, {"a b", "c"}},
    {"\"a \\\"b\\\"\" c", 0, 2, {"a \"b\"", "c"}},
    {"a\\ b", 0, 1, {"a b"}},
    {"a   b", 0, 2, {"a", "b"}},
    {"a\tb\t\tc", 0, 3, {"a", "b", "c"}},
    {"  a  ", 0, 1, {"a"}},
    {"x '' y", 0, 3, {"x", "", "y"}},
    {"''", 0, 1, {""}},
    {"\"\"", 0, 1, {""}},
    {"a'b'\"c\"d", 0, 1, {"abcd"}},
    {"\"$HOME\" `id`", 0, 2, {"$HOME", "`id`"}},
    {"\"a\\nb\"", 0, 1, {"a\\nb"}},
    {"'a\\b'", 0, 1, {"a\\b"}},
    {"a\\\\b", 0, 1, {"a\\b"}},
    {"\"\\$x \\`y\\` \\\\\"", 0, 1, {"$x `y` \\"}},
    {"a \\\n b", 0, 2, {"a", "b"}},
    {"sh -c 'echo \"hi there\"'", 0, 3, {"sh", "-c", "echo \"hi there\""}},
    {"'abc", UV_EINVAL, 0, {NULL}},
    {"\"abc", UV_EINVAL, 0, {NULL}},
    {"abc\\", UV_EINVAL, 0, {NULL}},
    {"\"a\\\"", UV_EINVAL, 0, {NULL}},
    {"", UV_EINVAL, 0, {NULL}},
    {" \t ", UV_EINVAL, 0, {NULL}},
};

START_TEST(test_argv)
{
    char **argv = NULL;
    size_t argc = 99, i;
    int rc = wd_split_argv(argvs[_i].in, &argv, &argc);

    ck_assert_msg(rc == argvs[_i].rc, "input \"%s\": rc %d", argvs[_i].in, rc);
    if (rc != 0) {
        ck_assert_ptr_null(argv);
        ck_assert_uint_eq(argc, 0);
        return;
    }
    ck_assert_uint_eq(argc, argvs[_i].argc);
    for (i = 0; i < argc; i++)
        ck_assert_str_eq(argv[i], argvs[_i].argv[i]);
    ck_assert_ptr_null(argv[argc]);
    free(argv); /* one allocation: a leak here fails the test under ASan */
}
END_TEST

/* errors */

static const struct {
    const char *env[MAX_ENV];
    const char *needle;
} errors[] = {
    {{"fprocess=cat", "mode=inproc"},
     "mode=inproc is an of-watchdog library mode and not supported by fwatchdog"},
    {{"fprocess=cat", "mode=afterburn"}, "mode=afterburn"},
    {{"fprocess=cat", "mode=lambda"},
     "mode: unknown value \"lambda\" (want streaming, serializing, classic, http, static or warm)"},
    {{"fprocess=cat", "mode=Streaming"}, "mode: unknown value"},
    {{"fprocess=cat", "jwt_auth=true"}, "jwt_auth"},
    {{"fprocess=cat", "jwt_auth=1"}, "not implemented"},
    {{"fprocess=cat", "jwt_auth=maybe"}, "jwt_auth: invalid boolean"},
    {{NULL}, "fprocess: required for mode=streaming (set fprocess or function_process)"},
    {{"mode=classic"}, "fprocess: required for mode=classic"},
    {{"mode=warm", "fprocess="}, "fprocess: required for mode=warm"},
    {{"fprocess=   "}, "fprocess: no command"},
    {{"fprocess='abc"}, "fprocess: unterminated single quote"},
    {{"fprocess=\"abc"}, "fprocess: unterminated double quote"},
    {{"fprocess=ok", "function_process=abc\\"}, "function_process: trailing backslash"},
    {{"fprocess=srv", "mode=http"},
     "upstream_url: required for mode=http (set upstream_url or http_upstream_url)"},
    {{"fprocess=cat", "write_timeout=0"}, "write_timeout: invalid value \"0\" (must be over 0s)"},
    {{"fprocess=cat", "write_timeout=0ms"}, "write_timeout"},
    {{"fprocess=cat", "log_buffer_size=0"}, "log_buffer_size: invalid value \"0\""},
    {{"fprocess=cat", "log_buffer_size=-0"}, "log_buffer_size"},
    {{"fprocess=cat", "log_buffer_size=abc"}, "log_buffer_size: invalid integer"},
    {{"fprocess=cat", "log_buffer_size=64k"}, "log_buffer_size"},
    {{"fprocess=cat", "workers=0"}, "workers: invalid value \"0\""},
    {{"fprocess=cat", "workers=-1"}, "workers"},
    {{"fprocess=cat", "restart_policy=sometimes"},
     "restart_policy: unknown value \"sometimes\" (want always, on-failure or never)"},
    {{"fprocess=cat", "warm_protocol=grpc"}, "warm_protocol"},
    {{"fprocess=cat", "log_format=xml"}, "log_format: unknown value \"xml\" (want text or json)"},
    {{"fprocess=cat", "port=abc"}, "port: invalid port \"abc\" (want an integer from 0 to 65535)"},
    {{"fprocess=cat", "port=65536"}, "port"},
    {{"fprocess=cat", "port=-1"}, "port"},
    {{"fprocess=cat", "port= 80"}, "port"},
    {{"fprocess=cat", "PORT=x"}, "PORT"},
    {{"fprocess=cat", "metrics_port=70000"}, "metrics_port"},
    {{"fprocess=cat", "read_timeout=abc"},
     "read_timeout: invalid duration \"abc\" (want seconds like 30 or a Go duration like 250ms, "
     "1m30s)"},
    {{"fprocess=cat", "exec_timeout=-1"}, "exec_timeout"},
    {{"fprocess=cat", "healthcheck_interval=1.5"}, "healthcheck_interval"},
    {{"fprocess=cat", "shutdown_grace=10x"}, "shutdown_grace"},
    {{"fprocess=cat", "queue_timeout=-2s"}, "queue_timeout"},
    {{"fprocess=cat", "write_timeout=soon"}, "write_timeout: invalid duration"},
    {{"fprocess=cat", "suppress_lock=maybe"},
     "suppress_lock: invalid boolean \"maybe\" (want true, false, 1, 0, yes or no)"},
    {{"fprocess=cat", "cgi_headers=2"}, "cgi_headers"},
    {{"fprocess=cat", "combine_output=on"}, "combine_output"},
    {{"fprocess=cat", "write_debug=t"}, "write_debug"},
    {{"fprocess=cat", "marshal_request=y"}, "marshal_request"},
    {{"fprocess=cat", "debug_headers=x"}, "debug_headers"},
    {{"fprocess=cat", "cgi_response=x"}, "cgi_response"},
    {{"fprocess=cat", "prefix_logs=x"}, "prefix_logs"},
    {{"fprocess=cat", "warm_ack=x"}, "warm_ack"},
    {{"fprocess=cat", "log_callid=x"}, "log_callid"},
    {{"fprocess=cat", "buffer_http=x"}, "buffer_http"},
    {{"fprocess=cat", "http_buffer_req_body=x"}, "http_buffer_req_body"},
    {{"fprocess=cat", "max_inflight=-1"},
     "max_inflight: invalid integer \"-1\" (want a non-negative integer like 10)"},
    {{"fprocess=cat", "max_queue=abc"}, "max_queue"},
    {{"fprocess=cat", "max_body_size=1.5M"}, "max_body_size: invalid size \"1.5M\""},
    {{"fprocess=cat", "max_header_size=abc"}, "max_header_size"},
    {{"fprocess=cat", "rlimit_as=abc"}, "rlimit_as"},
    {{"fprocess=cat", "rlimit_as=9223372036854775808"}, "rlimit_as"},
    {{"fprocess=cat", "rlimit_cpu=abc"}, "rlimit_cpu: invalid duration"},
    {{"fprocess=cat", "rlimit_nofile=-1"}, "rlimit_nofile"},
    {{"fprocess=cat", "rlimit_nproc=x"}, "rlimit_nproc"},
    {{"fprocess=cat", "write_debug=a\nb"}, "write_debug: invalid boolean \"a\\x0ab\""},
    {{"fprocess=cat", "content_type=x", "write_debug=\"q\""},
     "write_debug: invalid boolean "
     "\"\\\"q\\\"\""},
};

START_TEST(test_error)
{
    struct wd_config zero;
    int rc = load((char *const *)errors[_i].env);

    memset(&zero, 0, sizeof(zero));
    ck_assert_int_eq(rc, UV_EINVAL);
    ck_assert_msg(strstr(err, errors[_i].needle) != NULL, "err \"%s\" lacks \"%s\"", err,
                  errors[_i].needle);
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_uint_lt(strlen(err), sizeof(err) - 1);
    /* Nothing is left allocated or half-set. */
    ck_assert_int_eq(memcmp(&cfg, &zero, sizeof(cfg)), 0);
}
END_TEST

START_TEST(test_error_long_value)
{
    char env[600] = "fprocess=";
    int rc;

    memset(env + 9, 'x', 500);
    env[509] = '\'';
    rc = load(ENVP(env));
    ck_assert_int_eq(rc, UV_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "fprocess: unterminated single quote in \"xxx"));
    ck_assert_ptr_nonnull(strstr(err, "...\""));
    ck_assert_ptr_nonnull(strstr(err, "(want shell-like quoting"));
}
END_TEST

START_TEST(test_error_small_buffer)
{
    char small[8];

    memset(small, 'z', sizeof(small));
    ck_assert_int_eq(wd_config_load(&cfg, ENVP("port=x"), small, sizeof(small)), UV_EINVAL);
    ck_assert_str_eq(small, "port: i");
    ck_assert_int_eq(wd_config_load(&cfg, ENVP("port=x"), NULL, 0), UV_EINVAL);
    ck_assert_int_eq(wd_config_load(&cfg, NULL, err, sizeof(err)), UV_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "fprocess: required"));
}
END_TEST

/* describe */

static const char *const names[] = {
    "fprocess",
    "function_process",
    "mode",
    "port",
    "PORT",
    "bind_address",
    "metrics_port",
    "read_timeout",
    "write_timeout",
    "exec_timeout",
    "healthcheck_interval",
    "shutdown_grace",
    "suppress_lock",
    "ready_path",
    "max_inflight",
    "max_queue",
    "queue_timeout",
    "max_body_size",
    "max_header_size",
    "content_type",
    "cgi_headers",
    "combine_output",
    "write_debug",
    "marshal_request",
    "debug_headers",
    "cgi_response",
    "rlimit_as",
    "rlimit_cpu",
    "rlimit_nofile",
    "rlimit_nproc",
    "upstream_url",
    "http_upstream_url",
    "buffer_http",
    "http_buffer_req_body",
    "restart_policy",
    "workers",
    "warm_protocol",
    "warm_ack",
    "static_path",
    "prefix_logs",
    "log_buffer_size",
    "log_callid",
    "log_format",
    "jwt_auth",
    "TMPDIR",
};

static char *described;

static void describe_setup(void)
{
    size_t len = 0;
    FILE *f = open_memstream(&described, &len);

    ck_assert_ptr_nonnull(f);
    wd_config_describe(f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_uint_gt(len, 0);
}

static void describe_teardown(void)
{
    free(described);
    described = NULL;
}

/* The line whose name column ("  a, b   default   help") lists name, or NULL. */
static const char *find_setting_line(const char *name)
{
    size_t n = strlen(name);
    const char *line;

    for (line = described; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        const char *col = line + 2;
        const char *col_end = strstr(col, "  ");
        if (strncmp(line, "  ", 2) == 0 && col_end != NULL && (end == NULL || col_end < end)) {
            const char *p = col;
            while (p < col_end) {
                const char *comma = strstr(p, ", ");
                const char *tok_end = comma != NULL && comma < col_end ? comma : col_end;
                if ((size_t)(tok_end - p) == n && strncmp(p, name, n) == 0)
                    return line;
                p = tok_end + 2;
            }
        }
        line = end != NULL ? end + 1 : NULL;
    }
    return NULL;
}

START_TEST(test_describe_names)
{
    ck_assert_msg(find_setting_line(names[_i]) != NULL, "--help lacks %s:\n%s", names[_i],
                  described);
}
END_TEST

static const struct {
    const char *name, *def;
} described_defaults[] = {
    {"port", "8080"},
    {"metrics_port", "8081"},
    {"read_timeout", "30s"},
    {"max_header_size", "1M"},
    {"static_path", "/home/app/public"},
    {"log_buffer_size", "65536"},
    {"workers", "1"},
    {"TMPDIR", "/tmp"},
    {"mode", "streaming"},
    {"restart_policy", "always"},
};

START_TEST(test_describe_defaults)
{
    const char *line = find_setting_line(described_defaults[_i].name);
    const char *end;
    char *copy;

    ck_assert_ptr_nonnull(line);
    end = strchr(line, '\n');
    ck_assert_ptr_nonnull(end);
    copy = strndup(line, (size_t)(end - line));
    ck_assert_msg(strstr(copy, described_defaults[_i].def) != NULL, "line \"%s\" lacks %s", copy,
                  described_defaults[_i].def);
    free(copy);
}
END_TEST

START_TEST(test_describe_usage)
{
    ck_assert_ptr_nonnull(
        strstr(described, "Usage: fwatchdog [-version|--version] [-run-healthcheck] [--help]\n"));
    ck_assert_int_eq(described[strlen(described) - 1], '\n');
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("defaults");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_mode_defaults, 0, WD_ARRAY_LEN(mode_defaults));
    tcase_add_test(tc, test_common_defaults);
    tcase_add_loop_test(tc, test_dependent_defaults, 0, WD_ARRAY_LEN(dependent));
    tcase_add_loop_test(tc, test_lock_path, 0, WD_ARRAY_LEN(lock_paths));
    tcase_add_test(tc, test_env_lookup);
    tcase_add_test(tc, test_free_twice);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_all_values);
    tcase_add_loop_test(tc, test_more_values, 0, WD_ARRAY_LEN(more_values));
    suite_add_tcase(s, tc);

    tc = tcase_create("aliases");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_function_process_wins);
    tcase_add_test(tc, test_function_process_alone);
    tcase_add_test(tc, test_fprocess_when_alias_empty);
    tcase_add_loop_test(tc, test_upstream_alias, 0, WD_ARRAY_LEN(upstreams));
    tcase_add_loop_test(tc, test_port_alias, 0, WD_ARRAY_LEN(ports));
    tcase_add_loop_test(tc, test_buffer_alias, 0, WD_ARRAY_LEN(buffers));
    suite_add_tcase(s, tc);

    tc = tcase_create("durations");
    tcase_add_loop_test(tc, test_duration, 0, WD_ARRAY_LEN(durations));
    suite_add_tcase(s, tc);

    tc = tcase_create("sizes");
    tcase_add_loop_test(tc, test_size, 0, WD_ARRAY_LEN(sizes));
    suite_add_tcase(s, tc);

    tc = tcase_create("bools");
    tcase_add_loop_test(tc, test_bool, 0, WD_ARRAY_LEN(bools));
    suite_add_tcase(s, tc);

    tc = tcase_create("argv");
    tcase_add_loop_test(tc, test_argv, 0, WD_ARRAY_LEN(argvs));
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_error, 0, WD_ARRAY_LEN(errors));
    tcase_add_test(tc, test_error_long_value);
    tcase_add_test(tc, test_error_small_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("describe");
    tcase_add_checked_fixture(tc, describe_setup, describe_teardown);
    tcase_add_loop_test(tc, test_describe_names, 0, WD_ARRAY_LEN(names));
    tcase_add_loop_test(tc, test_describe_defaults, 0, WD_ARRAY_LEN(described_defaults));
    tcase_add_test(tc, test_describe_usage);
    suite_add_tcase(s, tc);

    return s;
}
