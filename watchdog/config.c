/* config.c: the environment contract (../shared/reference/CONFIG.md) turned into a
 * struct wd_config. One static table, settings[], drives both wd_config_load() and
 * wd_config_describe(), so the --help text and the parser cannot drift apart.
 *
 * Owns: the table, the value parsers, and the strings of struct wd_config.
 * Must not: log, read environ or call getenv (it only sees the envp it is given), or call libuv
 * (only its error constants are used). */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* Durations are kept as Go does, in int64 nanoseconds, before they become milliseconds. */
#define NS_MAX ((uint64_t)INT64_MAX)
#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)

/* Marks the durations whose default depends on another setting; resolved in finish(). */
#define MS_UNSET UINT64_MAX

#define DURATION_WANT "want seconds like 30 or a Go duration like 250ms, 1m30s"
#define SIZE_WANT "want bytes like 1048576 or a number with a binary suffix like 64k, 16M, 1G"
#define BOOL_WANT "want true, false, 1, 0, yes or no"
#define UINT_WANT "want a non-negative integer like 10"
#define ARGV_WANT "want shell-like quoting: 'a b', \"a b\", a\\ b"

/* Enum fields are written through an int *: the enums must have its size. */
_Static_assert(sizeof(enum wd_mode_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum wd_restart_policy) == sizeof(int), "enum size");
_Static_assert(sizeof(enum wd_warm_protocol) == sizeof(int), "enum size");
_Static_assert(sizeof(enum wd_log_format) == sizeof(int), "enum size");

enum kind {
    K_STR,       /* char *, heap copy */
    K_BOOL,      /* bool */
    K_DURATION,  /* uint64_t milliseconds */
    K_SIZE,      /* uint64_t bytes */
    K_UINT,      /* uint64_t, plain non-negative integer */
    K_PORT,      /* int, 0..65535 */
    K_ENUM,      /* int-sized enum, one of choices[] */
    K_RLIM_SIZE, /* int64_t bytes */
    K_RLIM_SECS, /* int64_t whole seconds from a duration, rounded up */
    K_RLIM_UINT, /* int64_t, plain non-negative integer */
    K_CUSTOM,    /* set() does the work */
};

/* How a setting with two names picks its value. */
enum alias_rule {
    NAME_WINS,   /* name if set, else alias */
    ALIAS_WINS,  /* alias if set, else name */
    EITHER_TRUE, /* booleans: true if either is true */
};

struct choice {
    const char *name;
    int value;
    const char *refusal; /* non-NULL: a known value we refuse, with this reason */
};

typedef int (*setter_fn)(struct wd_config *cfg, const char *var, const char *val, char *err,
                         size_t errlen);

struct setting {
    const char *name;
    const char *alias; /* NULL, or a second name chosen by rule */
    enum alias_rule rule;
    enum kind kind;
    size_t offset;                /* field in struct wd_config; unused by K_CUSTOM */
    const char *def;              /* parsed like a value when unset; NULL keeps the initial */
    const char *def_text;         /* for --help when def alone would mislead */
    bool is_positive;             /* 0 is an error (K_DURATION, K_UINT) */
    const struct choice *choices; /* K_ENUM: NULL-name terminated */
    setter_fn set;                /* K_CUSTOM */
    const char *help;
};

static int set_fprocess(struct wd_config *cfg, const char *var, const char *val, char *err,
                        size_t errlen);
static int set_jwt_auth(struct wd_config *cfg, const char *var, const char *val, char *err,
                        size_t errlen);
static int set_log_buffer_size(struct wd_config *cfg, const char *var, const char *val, char *err,
                               size_t errlen);
static int set_tmpdir(struct wd_config *cfg, const char *var, const char *val, char *err,
                      size_t errlen);

static const struct choice modes[] = {
    {"streaming", WD_MODE_STREAMING, NULL},
    {"serializing", WD_MODE_SERIALIZING, NULL},
    {"classic", WD_MODE_CLASSIC, NULL},
    {"http", WD_MODE_HTTP, NULL},
    {"static", WD_MODE_STATIC, NULL},
    {"warm", WD_MODE_WARM, NULL},
    {"inproc", -1, "is an of-watchdog library mode and not supported by fwatchdog"},
    {"afterburn", -1, "was never implemented by of-watchdog and is not supported by fwatchdog"},
    {NULL, 0, NULL},
};

static const struct choice restart_policies[] = {
    {"always", WD_RESTART_ALWAYS, NULL},
    {"on-failure", WD_RESTART_ON_FAILURE, NULL},
    {"never", WD_RESTART_NEVER, NULL},
    {NULL, 0, NULL},
};

static const struct choice warm_protocols[] = {
    {"actionloop", WD_WARM_ACTIONLOOP, NULL},
    {"nuclio", WD_WARM_NUCLIO, NULL},
    {NULL, 0, NULL},
};

static const struct choice log_formats[] = {
    {"text", WD_LOG_TEXT, NULL},
    {"json", WD_LOG_JSON, NULL},
    {NULL, 0, NULL},
};

#define F(field) offsetof(struct wd_config, field)
/* ROW() columns: name, alias, rule, kind, field offset, default (parsed like a value when unset),
 * default shown by --help (NULL: the default), 0 refused, choices, setter, help. The S_ macros
 * are the common shapes. */
#define ROW(n, a, r, k, o, d, dt, pos, ch, set, h)                                                 \
    {                                                                                              \
        n, a, r, k, o, d, dt, pos, ch, set, h                                                      \
    }
#define S_STR(n, f, d, dt, h) ROW(n, NULL, NAME_WINS, K_STR, F(f), d, dt, false, NULL, NULL, h)
#define S_BOOL(n, f, d, h) ROW(n, NULL, NAME_WINS, K_BOOL, F(f), d, NULL, false, NULL, NULL, h)
#define S_DURATION(n, f, d, dt, h)                                                                 \
    ROW(n, NULL, NAME_WINS, K_DURATION, F(f), d, dt, false, NULL, NULL, h)
#define S_SIZE(n, f, d, h) ROW(n, NULL, NAME_WINS, K_SIZE, F(f), d, NULL, false, NULL, NULL, h)
#define S_UINT(n, f, d, h) ROW(n, NULL, NAME_WINS, K_UINT, F(f), d, NULL, false, NULL, NULL, h)
#define S_PORT(n, f, d, h) ROW(n, NULL, NAME_WINS, K_PORT, F(f), d, NULL, false, NULL, NULL, h)
#define S_ENUM(n, f, ch, d, h) ROW(n, NULL, NAME_WINS, K_ENUM, F(f), d, NULL, false, ch, NULL, h)
#define S_RLIMIT(n, k, f, h) ROW(n, NULL, NAME_WINS, k, F(f), NULL, "unset", false, NULL, NULL, h)
#define S_CUSTOM(n, set, d, h) ROW(n, NULL, NAME_WINS, K_CUSTOM, 0, d, NULL, false, NULL, set, h)

/* The order is the --help order. Settings are independent of each other while they are read;
 * finish() applies the defaults that depend on other settings and the cross-checks. */
static const struct setting settings[] = {
    /* Process and mode */
    ROW("fprocess", "function_process", ALIAS_WINS, K_CUSTOM, 0, NULL, "required", false, NULL,
        set_fprocess, "command (not for static); shell-like quoting"),
    S_ENUM("mode", mode, modes, "streaming", "streaming|serializing|classic|http|static|warm"),
    ROW("port", "PORT", NAME_WINS, K_PORT, F(port), "8080", NULL, false, NULL, NULL,
        "main listener port; 0 picks a free one"),
    S_STR("bind_address", bind_address, NULL, "all interfaces", "listener address, e.g. 127.0.0.1"),
    S_PORT("metrics_port", metrics_port, "8081", "Prometheus /metrics port; 0 disables it"),

    /* Timeouts and shutdown */
    S_DURATION("read_timeout", read_timeout_ms, "30s", NULL,
               "to receive a request; keep-alive idle timeout"),
    ROW("write_timeout", NULL, NAME_WINS, K_DURATION, F(write_timeout_ms), "30s", NULL, true, NULL,
        NULL, "to send a response; shutdown drain deadline"),
    S_DURATION("exec_timeout", exec_timeout_ms, NULL, "30s, classic 0",
               "per-request deadline; 0 means none"),
    S_DURATION("healthcheck_interval", healthcheck_interval_ms, NULL, "= write_timeout",
               "unready but serving after SIGTERM; 0: no wait"),
    S_DURATION("shutdown_grace", shutdown_grace_ms, "5s", NULL,
               "warm children's SIGTERM to SIGKILL delay"),

    /* Health, readiness, lock file */
    S_BOOL("suppress_lock", suppress_lock, "false", "no lock file; health does not require it"),
    S_STR("ready_path", ready_path, NULL, "unset", "handler path asked by /_/ready"),
    S_CUSTOM("TMPDIR", set_tmpdir, "/tmp", "directory of the lock file $TMPDIR/.lock"),

    /* Admission control */
    S_UINT("max_inflight", max_inflight, "0", "concurrent requests; 0 means unlimited"),
    S_UINT("max_queue", max_queue, "0", "waiting beyond max_inflight, then 429"),
    S_DURATION("queue_timeout", queue_timeout_ms, NULL, "= exec_timeout",
               "longest wait in the queue, then 429"),
    S_SIZE("max_body_size", max_body_size, "0", "larger request bodies get 413; 0: unlimited"),
    S_SIZE("max_header_size", max_header_size, "1M", "larger request headers get 431"),

    /* Fork modes */
    S_STR("content_type", content_type, NULL, "by mode", "fork modes' response Content-Type"),
    S_BOOL("cgi_headers", cgi_headers, "true", "classic: Http_* environment for the handler"),
    S_BOOL("combine_output", combine_output, "true",
           "classic: stderr joins stdout in the response"),
    S_BOOL("write_debug", write_debug, "false", "classic: log query, path and output"),
    S_BOOL("marshal_request", marshal_request, "false", "classic: stdin is a JSON envelope"),
    S_BOOL("debug_headers", debug_headers, "false", "classic: print request and response headers"),
    S_BOOL("cgi_response", cgi_response, "false", "handler output may start with CGI headers"),
    S_RLIMIT("rlimit_as", K_RLIM_SIZE, rlimits.as_bytes, "RLIMIT_AS of each handler (size)"),
    S_RLIMIT("rlimit_cpu", K_RLIM_SECS, rlimits.cpu_seconds,
             "RLIMIT_CPU of each handler (duration)"),
    S_RLIMIT("rlimit_nofile", K_RLIM_UINT, rlimits.nofile, "RLIMIT_NOFILE of each handler"),
    S_RLIMIT("rlimit_nproc", K_RLIM_UINT, rlimits.nproc, "RLIMIT_NPROC of each handler"),

    /* Warm modes */
    ROW("upstream_url", "http_upstream_url", ALIAS_WINS, K_STR, F(upstream_url), NULL,
        "required in http", false, NULL, NULL, "http: URL of the warm HTTP server"),
    ROW("buffer_http", "http_buffer_req_body", EITHER_TRUE, K_BOOL, F(buffer_http), "false", NULL,
        false, NULL, NULL, "http: read whole body, send Content-Length"),
    S_ENUM("restart_policy", restart_policy, restart_policies, "always",
           "warm child exit: always, on-failure or never"),
    ROW("workers", NULL, NAME_WINS, K_UINT, F(workers), "1", NULL, true, NULL, NULL,
        "warm: number of children, one request each"),
    S_ENUM("warm_protocol", warm_protocol, warm_protocols, "actionloop",
           "warm: actionloop or nuclio"),
    S_BOOL("warm_ack", warm_ack, "true", "actionloop: wait for {\"ok\":true} on fd 3"),
    S_STR("static_path", static_path, "/home/app/public", NULL, "static: directory served"),

    /* Logging */
    S_BOOL("prefix_logs", prefix_logs, "true", "prefix handler output with time and stream"),
    S_CUSTOM("log_buffer_size", set_log_buffer_size, "65536",
             "longest log line kept whole; <0 unbounded"),
    S_BOOL("log_callid", log_callid, "false", "append [<X-Call-Id>] to request log lines"),
    S_ENUM("log_format", log_format, log_formats, "text", "text or json"),

    /* Refused */
    S_CUSTOM("jwt_auth", set_jwt_auth, "false", "OpenFaaS JWT auth: unsupported, true refused"),
};

#undef S_CUSTOM
#undef S_RLIMIT
#undef S_ENUM
#undef S_UINT
#undef S_PORT
#undef S_SIZE
#undef S_DURATION
#undef S_BOOL
#undef S_STR
#undef ROW
#undef F

/* Error reporting */

/* Writes val into buf as a quoted, printable, one-line string, shortened if very long. */
static const char *show(const char *val, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    const size_t max_in = 64;
    size_t i;

    buf[o++] = '"';
    for (i = 0; val[i] != '\0'; i++) {
        unsigned char c = (unsigned char)val[i];
        if (i == max_in || o + 8 >= len) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

WD_PRINTF(3, 4)
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return UV_EINVAL;
}

/* "var: invalid <what> "<val>" (<accepted>)" */
static int fail_value(char *err, size_t errlen, const char *var, const char *what, const char *val,
                      const char *accepted)
{
    char shown[128];

    return fail(err, errlen, "%s: invalid %s %s (%s)", var, what, show(val, shown, sizeof(shown)),
                accepted);
}

/* Value parsers */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Non-empty run of decimal digits up to max, nothing else. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (s == NULL || !is_digit(*s))
        return UV_EINVAL;
    for (; is_digit(*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (max - d) / 10)
            return UV_EINVAL;
        v = v * 10 + d;
    }
    if (*s != '\0')
        return UV_EINVAL;
    *out = v;
    return 0;
}

static uint64_t duration_unit(const char *u, size_t len)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},           {"us", 1000},    {"\xc2\xb5s", 1000}, /* U+00B5 micro sign, as Go
                                                                      accepts */
        {"\xce\xbcs", 1000}, /* U+03BC Greek small mu, as Go accepts */
        {"ms", NS_PER_MS},   {"s", NS_PER_S}, {"m", 60 * NS_PER_S}, {"h", 3600 * NS_PER_S},
    };
    size_t i;

    for (i = 0; i < WD_ARRAY_LEN(units); i++) {
        if (strlen(units[i].name) == len && memcmp(units[i].name, u, len) == 0)
            return units[i].ns;
    }
    return 0;
}

/* A bare non-negative integer is seconds (CW/OW readconfig), anything else is Go's
 * time.ParseDuration syntax without a sign. Limits and fraction handling follow Go: the total
 * must fit int64 nanoseconds, and fraction digits beyond what fits are dropped. */
int wd_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t total = 0, secs;
    const char *p = s;

    if (s == NULL || *s == '\0')
        return UV_EINVAL;
    if (parse_uint(s, NS_MAX / NS_PER_S, &secs) == 0) {
        *ms = secs * 1000;
        return 0;
    }
    while (*p != '\0') {
        uint64_t v = 0, frac = 0, unit;
        double scale = 1;
        bool has_digits = false;
        const char *u;

        for (; is_digit(*p); p++) {
            uint64_t d = (uint64_t)(*p - '0');
            if (v > (NS_MAX - d) / 10)
                return UV_EINVAL;
            v = v * 10 + d;
            has_digits = true;
        }
        if (*p == '.') {
            for (p++; is_digit(*p); p++) {
                if (frac <= (NS_MAX - 9) / 10) {
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
                has_digits = true;
            }
        }
        if (!has_digits)
            return UV_EINVAL;
        for (u = p; *p != '\0' && *p != '.' && !is_digit(*p); p++) {
        }
        unit = duration_unit(u, (size_t)(p - u));
        if (unit == 0 || v > NS_MAX / unit)
            return UV_EINVAL;
        v *= unit;
        if (frac > 0) {
            double f = (double)frac * ((double)unit / scale);
            if (f >= (double)(NS_MAX - v))
                return UV_EINVAL;
            v += (uint64_t)f;
        }
        if (v > NS_MAX - total)
            return UV_EINVAL;
        total += v;
    }
    /* Round up, so that a non-zero duration never becomes "none". */
    *ms = total / NS_PER_MS + (total % NS_PER_MS != 0);
    return 0;
}

/* Bytes, or a number with a binary suffix k/m/g/t (either case) optionally followed by i, iB
 * or B ("64k", "16M", "1GiB"). A bare "B" is accepted too ("100B"). */
int wd_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v = 0;
    unsigned shift = 0;
    const char *p = s;

    if (s == NULL || !is_digit(*s))
        return UV_EINVAL;
    for (; is_digit(*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return UV_EINVAL;
        v = v * 10 + d;
    }
    switch (*p) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift > 0) {
        p++;
        if (*p == 'i')
            p++;
    }
    if (*p == 'B' || *p == 'b')
        p++;
    if (*p != '\0' || v > (UINT64_MAX >> shift))
        return UV_EINVAL;
    *bytes = v << shift;
    return 0;
}

int wd_parse_bool(const char *s, bool *out)
{
    static const char *const truths[] = {"true", "1", "yes"};
    static const char *const lies[] = {"false", "0", "no"};
    size_t i;

    if (s == NULL)
        return UV_EINVAL;
    for (i = 0; i < WD_ARRAY_LEN(truths); i++) {
        if (strcasecmp(s, truths[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, lies[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return UV_EINVAL;
}

/* Shell-like word splitting */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* One pass over s, as POSIX sh quote removal does it (XCU 2.2), without any expansion. With
 * argv == NULL it only counts words and bytes; otherwise it copies the words into buf. On error
 * *why says what is wrong. */
static int tokenize(const char *s, char **argv, char *buf, size_t *argc, size_t *nbytes,
                    const char **why)
{
    size_t n = 0, o = 0;
    const char *p = s;

    for (;;) {
        bool has_word = false; /* something was copied, or a quote was opened */
        size_t start = o;

        while (is_blank(*p))
            p++;
        if (*p == '\0')
            break;
        while (*p != '\0' && !is_blank(*p)) {
            char c = *p++;
            if (c == '\\') {
                if (*p == '\0') {
                    *why = "trailing backslash";
                    return UV_EINVAL;
                }
                c = *p++;
                if (c == '\n') /* line continuation */
                    continue;
            } else if (c == '\'') {
                has_word = true;
                for (; *p != '\''; p++) {
                    if (*p == '\0') {
                        *why = "unterminated single quote";
                        return UV_EINVAL;
                    }
                    if (argv != NULL)
                        buf[o] = *p;
                    o++;
                }
                p++;
                continue;
            } else if (c == '"') {
                has_word = true;
                while (*p != '"') {
                    char d = *p++;
                    if (d == '\0') {
                        *why = "unterminated double quote";
                        return UV_EINVAL;
                    }
                    if (d == '\\' && *p == '\n') {
                        p++;
                        continue;
                    }
                    if (d == '\\' && (*p == '"' || *p == '\\' || *p == '$' || *p == '`'))
                        d = *p++;
                    if (argv != NULL)
                        buf[o] = d;
                    o++;
                }
                p++;
                continue;
            }
            has_word = true;
            if (argv != NULL)
                buf[o] = c;
            o++;
        }
        if (!has_word)
            continue;
        if (argv != NULL) {
            argv[n] = buf + start;
            buf[o] = '\0';
        }
        o++;
        n++;
    }
    if (n == 0) {
        *why = "no command";
        return UV_EINVAL;
    }
    if (argv != NULL)
        argv[n] = NULL;
    *argc = n;
    *nbytes = o;
    return 0;
}

static int split_argv(const char *s, char ***argv_out, size_t *argc_out, const char **why)
{
    size_t argc = 0, nbytes = 0, ptrs;
    char **argv;
    int rc;

    *argv_out = NULL;
    *argc_out = 0;
    if (s == NULL) {
        *why = "no command";
        return UV_EINVAL;
    }
    rc = tokenize(s, NULL, NULL, &argc, &nbytes, why);
    if (rc < 0)
        return rc;
    ptrs = (argc + 1) * sizeof(char *);
    argv = malloc(ptrs + nbytes);
    if (argv == NULL)
        return UV_ENOMEM;
    rc = tokenize(s, argv, (char *)argv + ptrs, &argc, &nbytes, why);
    if (rc < 0) {
        free(argv);
        return rc;
    }
    *argv_out = argv;
    *argc_out = argc;
    return 0;
}

int wd_split_argv(const char *s, char ***argv_out, size_t *argc_out)
{
    const char *why = NULL;

    return split_argv(s, argv_out, argc_out, &why);
}

/* Setters for the settings that do not fit a plain field */

static int set_fprocess(struct wd_config *cfg, const char *var, const char *val, char *err,
                        size_t errlen)
{
    const char *why = "invalid";
    int rc;

    rc = split_argv(val, &cfg->fprocess_argv, &cfg->fprocess_argc, &why);
    if (rc == UV_ENOMEM)
        return fail(err, errlen, "%s: out of memory", var);
    if (rc < 0) {
        char shown[128];
        return fail(err, errlen, "%s: %s in %s (%s)", var, why, show(val, shown, sizeof(shown)),
                    ARGV_WANT);
    }
    cfg->fprocess = strdup(val);
    if (cfg->fprocess == NULL)
        return fail(err, errlen, "%s: out of memory", var);
    return 0;
}

static int set_jwt_auth(struct wd_config *cfg, const char *var, const char *val, char *err,
                        size_t errlen)
{
    bool on = false;

    WD_UNUSED(cfg);
    if (wd_parse_bool(val, &on) < 0)
        return fail_value(err, errlen, var, "boolean", val, BOOL_WANT);
    if (on)
        return fail(err, errlen,
                    "%s: OpenFaaS for Enterprises JWT authentication is not implemented by "
                    "fwatchdog; refusing to serve unauthenticated (unset %s or set it to false)",
                    var, var);
    return 0;
}

static int set_log_buffer_size(struct wd_config *cfg, const char *var, const char *val, char *err,
                               size_t errlen)
{
    static const char want[] =
        "want a positive number of bytes, or a negative number for unbounded";
    bool is_negative = val[0] == '-';
    uint64_t v;

    if (parse_uint(val + is_negative, INT64_MAX, &v) < 0)
        return fail_value(err, errlen, var, "integer", val, want);
    if (v == 0)
        return fail_value(err, errlen, var, "value", val, want);
    cfg->log_buffer_size = is_negative ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int set_tmpdir(struct wd_config *cfg, const char *var, const char *val, char *err,
                      size_t errlen)
{
    static const char file[] = "/.lock";
    size_t len = strlen(val);

    while (len > 0 && val[len - 1] == '/')
        len--;
    cfg->lock_path = malloc(len + sizeof(file));
    if (cfg->lock_path == NULL)
        return fail(err, errlen, "%s: out of memory", var);
    memcpy(cfg->lock_path, val, len);
    memcpy(cfg->lock_path + len, file, sizeof(file));
    return 0;
}

/* Loading */

static const char *env_get(char *const *envp, const char *name)
{
    size_t len = strlen(name);

    if (envp == NULL)
        return NULL;
    for (; *envp != NULL; envp++) {
        /* The first occurrence wins, as with getenv(3). Empty counts as unset (CW). */
        if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
            return (*envp)[len + 1] != '\0' ? *envp + len + 1 : NULL;
    }
    return NULL;
}

static void choices_list(const struct choice *c, char *buf, size_t len)
{
    size_t o = 0, n = 0, i;

    for (i = 0; c[i].name != NULL; i++) {
        if (c[i].refusal == NULL)
            n++;
    }
    buf[0] = '\0';
    for (i = 0; c[i].name != NULL && o < len; i++) {
        if (c[i].refusal != NULL)
            continue;
        n--;
        o += (size_t)snprintf(buf + o, len - o, "%s%s", c[i].name,
                              n > 1    ? ", "
                              : n == 1 ? " or "
                                       : "");
    }
}

static int set_enum(const struct setting *s, int *field, const char *var, const char *val,
                    char *err, size_t errlen)
{
    char list[160], shown[128];
    const struct choice *c;

    for (c = s->choices; c->name != NULL; c++) {
        if (strcmp(c->name, val) != 0)
            continue;
        if (c->refusal != NULL)
            return fail(err, errlen, "%s=%s %s", var, c->name, c->refusal);
        *field = c->value;
        return 0;
    }
    choices_list(s->choices, list, sizeof(list));
    return fail(err, errlen, "%s: unknown value %s (want %s)", var, show(val, shown, sizeof(shown)),
                list);
}

/* Parses one value into the field of setting s. var is the name the value came from. */
static int apply(struct wd_config *cfg, const struct setting *s, const char *var, const char *val,
                 char *err, size_t errlen)
{
    void *field = (char *)cfg + s->offset;
    uint64_t u;
    bool b;

    switch (s->kind) {
    case K_STR: {
        char *copy = strdup(val);
        if (copy == NULL)
            return fail(err, errlen, "%s: out of memory", var);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case K_BOOL:
        if (wd_parse_bool(val, &b) < 0)
            return fail_value(err, errlen, var, "boolean", val, BOOL_WANT);
        *(bool *)field = b;
        return 0;
    case K_DURATION:
        if (wd_parse_duration(val, &u) < 0)
            return fail_value(err, errlen, var, "duration", val, DURATION_WANT);
        if (s->is_positive && u == 0)
            return fail_value(err, errlen, var, "value", val, "must be over 0s");
        *(uint64_t *)field = u;
        return 0;
    case K_SIZE:
        if (wd_parse_size(val, &u) < 0)
            return fail_value(err, errlen, var, "size", val, SIZE_WANT);
        *(uint64_t *)field = u;
        return 0;
    case K_UINT:
        if (parse_uint(val, UINT64_MAX, &u) < 0)
            return fail_value(err, errlen, var, "integer", val, UINT_WANT);
        if (s->is_positive && u == 0)
            return fail_value(err, errlen, var, "value", val, "want an integer of at least 1");
        *(uint64_t *)field = u;
        return 0;
    case K_PORT:
        if (parse_uint(val, 65535, &u) < 0)
            return fail_value(err, errlen, var, "port", val, "want an integer from 0 to 65535");
        *(int *)field = (int)u;
        return 0;
    case K_ENUM:
        return set_enum(s, field, var, val, err, errlen);
    case K_RLIM_SIZE:
        if (wd_parse_size(val, &u) < 0 || u > INT64_MAX)
            return fail_value(err, errlen, var, "size", val, SIZE_WANT);
        *(int64_t *)field = (int64_t)u;
        return 0;
    case K_RLIM_SECS:
        if (wd_parse_duration(val, &u) < 0)
            return fail_value(err, errlen, var, "duration", val, DURATION_WANT);
        *(int64_t *)field = (int64_t)(u / 1000 + (u % 1000 != 0));
        return 0;
    case K_RLIM_UINT:
        if (parse_uint(val, INT64_MAX, &u) < 0)
            return fail_value(err, errlen, var, "integer", val, UINT_WANT);
        *(int64_t *)field = (int64_t)u;
        return 0;
    case K_CUSTOM:
        return s->set(cfg, var, val, err, errlen);
    }
    return fail(err, errlen, "%s: internal error: unknown setting kind", var);
}

/* buffer_http style: true if either name is true; each one that is set must be valid. */
static int load_either(struct wd_config *cfg, const struct setting *s, char *const *envp, char *err,
                       size_t errlen)
{
    const char *vars[] = {s->name, s->alias};
    bool any_set = false, result = false;
    size_t i;

    for (i = 0; i < WD_ARRAY_LEN(vars); i++) {
        const char *val = env_get(envp, vars[i]);
        bool b;
        if (val == NULL)
            continue;
        if (wd_parse_bool(val, &b) < 0)
            return fail_value(err, errlen, vars[i], "boolean", val, BOOL_WANT);
        any_set = true;
        result = result || b;
    }
    if (!any_set)
        return apply(cfg, s, s->name, s->def, err, errlen);
    *(bool *)((char *)cfg + s->offset) = result;
    return 0;
}

/* Only the value in effect is parsed: a losing alias is ignored, valid or not. */
static int load_setting(struct wd_config *cfg, const struct setting *s, char *const *envp,
                        char *err, size_t errlen)
{
    const char *var = s->name;
    const char *val = env_get(envp, s->name);

    if (s->alias != NULL && s->rule == EITHER_TRUE)
        return load_either(cfg, s, envp, err, errlen);
    if (s->alias != NULL) {
        const char *alt = env_get(envp, s->alias);
        if (alt != NULL && (val == NULL || s->rule == ALIAS_WINS)) {
            val = alt;
            var = s->alias;
        }
    }
    if (val == NULL) {
        if (s->def == NULL)
            return 0;
        val = s->def;
    }
    return apply(cfg, s, var, val, err, errlen);
}

static const char *mode_name(enum wd_mode_kind mode)
{
    const struct choice *c;

    for (c = modes; c->name != NULL; c++) {
        if (c->refusal == NULL && c->value == (int)mode)
            return c->name;
    }
    return "unknown";
}

/* Defaults that depend on other settings, and checks across settings. */
static int finish(struct wd_config *cfg, char *err, size_t errlen)
{
    cfg->mode_name = mode_name(cfg->mode);
    if (cfg->exec_timeout_ms == MS_UNSET)
        cfg->exec_timeout_ms = cfg->mode == WD_MODE_CLASSIC ? 0 : 30000; /* CW 0, OW 30s */
    if (cfg->healthcheck_interval_ms == MS_UNSET)
        cfg->healthcheck_interval_ms = cfg->write_timeout_ms;
    if (cfg->queue_timeout_ms == MS_UNSET)
        cfg->queue_timeout_ms = cfg->exec_timeout_ms;
    if (cfg->fprocess == NULL && cfg->mode != WD_MODE_STATIC)
        return fail(err, errlen,
                    "fprocess: required for mode=%s (set fprocess or function_process)",
                    cfg->mode_name);
    if (cfg->upstream_url == NULL && cfg->mode == WD_MODE_HTTP)
        return fail(err, errlen,
                    "upstream_url: required for mode=http (set upstream_url or http_upstream_url)");
    return 0;
}

int wd_config_load(struct wd_config *cfg, char *const *envp, char *err, size_t errlen)
{
    size_t i;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->rlimits.as_bytes = -1;
    cfg->rlimits.cpu_seconds = -1;
    cfg->rlimits.nofile = -1;
    cfg->rlimits.nproc = -1;
    cfg->exec_timeout_ms = MS_UNSET;
    cfg->healthcheck_interval_ms = MS_UNSET;
    cfg->queue_timeout_ms = MS_UNSET;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    for (i = 0; i < WD_ARRAY_LEN(settings); i++) {
        rc = load_setting(cfg, &settings[i], envp, err, errlen);
        if (rc < 0)
            goto fail_cfg;
    }
    rc = finish(cfg, err, errlen);
    if (rc < 0)
        goto fail_cfg;
    return 0;

fail_cfg:
    wd_config_free(cfg);
    return rc;
}

/* Frees every owned string and zeroes cfg, so a second call is harmless. */
void wd_config_free(struct wd_config *cfg)
{
    size_t i;

    if (cfg == NULL)
        return;
    for (i = 0; i < WD_ARRAY_LEN(settings); i++) {
        if (settings[i].kind == K_STR)
            free(*(char **)((char *)cfg + settings[i].offset));
    }
    free(cfg->fprocess);
    free(cfg->fprocess_argv);
    free(cfg->lock_path);
    memset(cfg, 0, sizeof(*cfg));
}

static const char *default_text(const struct setting *s)
{
    return s->def_text != NULL ? s->def_text : s->def != NULL ? s->def : "unset";
}

static void setting_names(const struct setting *s, char *buf, size_t len)
{
    if (s->alias != NULL)
        snprintf(buf, len, "%s, %s", s->name, s->alias);
    else
        snprintf(buf, len, "%s", s->name);
}

/* One line per setting: names, default and meaning in aligned columns separated by at least
 * two spaces (the README's table is generated from this output). */
void wd_config_describe(FILE *out)
{
    char names[64];
    int name_w = 8, def_w = 7;
    size_t i;

    for (i = 0; i < WD_ARRAY_LEN(settings); i++) {
        int n;
        setting_names(&settings[i], names, sizeof(names));
        n = (int)strlen(names);
        name_w = n > name_w ? n : name_w;
        n = (int)strlen(default_text(&settings[i]));
        def_w = n > def_w ? n : def_w;
    }
    fputs(
        "Usage: fwatchdog [-version|--version] [-run-healthcheck] [--help]\n"
        "\n"
        "Settings are environment variables; an empty value counts as unset.\n"
        "Durations: seconds (30) or Go syntax (250ms, 1m30s). Sizes: bytes or 64k, 16M, 1G.\n"
        "Booleans: true/false, 1/0, yes/no. An invalid value stops fwatchdog with exit status 1.\n"
        "\n",
        out);
    fprintf(out, "  %-*s  %-*s  %s\n", name_w, "VARIABLE", def_w, "DEFAULT", "MEANING");
    for (i = 0; i < WD_ARRAY_LEN(settings); i++) {
        setting_names(&settings[i], names, sizeof(names));
        fprintf(out, "  %-*s  %-*s  %s\n", name_w, names, def_w, default_text(&settings[i]),
                settings[i].help);
    }
}
