/* check_metrics.c: watchdog/metrics.c. Every exposition is read back by a strict parser of the
 * Prometheus text format 0.0.4 (the subset client_golang writes) before any value is asserted:
 * HELP then TYPE then the family's samples, valid names, escaped label values, no duplicate
 * series, cumulative histogram buckets ending in le="+Inf" == _count. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "../suites.h"
#include "buf.h"
#include "metrics.h"

/* ---- the parser ---------------------------------------------------------------------- */

#define MAX_LABELS 8
#define MAX_FAMILIES 64

struct label {
    char name[64];
    char value[2048]; /* unescaped */
};

struct sample {
    char name[128];
    char raw[4096]; /* the labels as printed, without the braces */
    struct label l[MAX_LABELS];
    size_t n_labels;
    double value;
    size_t family;
    int line;
};

struct family {
    char name[128];
    char type[16];
    size_t n_samples;
};

struct parsed {
    struct family fam[MAX_FAMILIES];
    size_t n_fam;
    struct sample *s; /* owned */
    size_t n, cap;
};

static struct wd_metrics *m;
static struct wd_buf text;
static struct parsed px;

/* The parser reports the first problem through REQUIRE(): the message goes to parse_err and
 * try_parse() returns it, so that malformed input can be tested too. */
static jmp_buf parse_jmp;
static char parse_err[512];
static char *parse_copy; /* owned while parsing */

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(parse_err, sizeof(parse_err), __VA_ARGS__);                                   \
            longjmp(parse_jmp, 1);                                                                 \
        }                                                                                          \
    } while (0)

static bool is_name_char(char c, bool is_first, bool allow_colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (allow_colon && c == ':')
        return true;
    return !is_first && c >= '0' && c <= '9';
}

/* A metric (allow_colon) or label name at *p, copied to out; advances *p. */
static void parse_name(const char **p, char *out, size_t cap, bool allow_colon, int line)
{
    size_t n = 0;
    while (is_name_char((*p)[0], n == 0, allow_colon)) {
        REQUIRE(n + 1 < cap, "line %d: name too long", line);
        out[n++] = *(*p)++;
    }
    out[n] = '\0';
    REQUIRE(n > 0, "line %d: expected a name at '%.20s'", line, *p);
}

/* A sample value: a float as Go's ParseFloat reads it, or +Inf, -Inf, NaN. */
static double parse_value(const char *v, int line)
{
    if (strcmp(v, "+Inf") == 0)
        return INFINITY;
    if (strcmp(v, "-Inf") == 0)
        return -INFINITY;
    if (strcmp(v, "NaN") == 0)
        return NAN;
    REQUIRE(v[0] != '\0' && strspn(v, "0123456789.eE+-") == strlen(v), "line %d: bad value '%s'",
            line, v);
    char *end;
    double d = strtod(v, &end);
    REQUIRE(*end == '\0', "line %d: bad value '%s'", line, v);
    return d;
}

static void parse_labels(const char **pp, struct sample *s, int line)
{
    const char *p = *pp;
    const char *start = p;
    for (;;) {
        REQUIRE(s->n_labels < MAX_LABELS, "line %d: too many labels", line);
        struct label *l = &s->l[s->n_labels++];
        parse_name(&p, l->name, sizeof(l->name), false, line);
        REQUIRE(strncmp(l->name, "__", 2) != 0, "line %d: reserved label name", line);
        for (size_t i = 0; i + 1 < s->n_labels; i++)
            REQUIRE(strcmp(s->l[i].name, l->name) != 0, "line %d: label %s twice", line, l->name);
        REQUIRE(p[0] == '=' && p[1] == '"', "line %d: expected =\" after %s", line, l->name);
        p += 2;
        size_t n = 0;
        while (*p != '"') {
            REQUIRE(*p != '\0' && *p != '\n', "line %d: unterminated label value", line);
            char c = *p++;
            if (c == '\\') {
                REQUIRE(*p == '\\' || *p == '"' || *p == 'n', "line %d: bad escape \\%c", line, *p);
                c = *p == 'n' ? '\n' : *p;
                p++;
            }
            REQUIRE(n + 1 < sizeof(l->value), "line %d: label value too long", line);
            l->value[n++] = c;
        }
        l->value[n] = '\0';
        p++;
        if (*p == '}')
            break;
        REQUIRE(*p == ',' && p[1] != '}', "line %d: expected , or } at '%.20s'", line, p);
        p++;
    }
    size_t raw = (size_t)(p - start);
    REQUIRE(raw < sizeof(s->raw), "line %d: labels too long", line);
    memcpy(s->raw, start, raw);
    s->raw[raw] = '\0';
    *pp = p + 1;
}

/* Is `name` a sample name that family f may hold? */
static bool belongs(const struct family *f, const char *name)
{
    if (strcmp(f->type, "histogram") != 0)
        return strcmp(name, f->name) == 0;
    size_t n = strlen(f->name);
    if (strncmp(name, f->name, n) != 0)
        return false;
    return strcmp(name + n, "_bucket") == 0 || strcmp(name + n, "_sum") == 0 ||
           strcmp(name + n, "_count") == 0;
}

static const struct label *find_label(const struct sample *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++) {
        if (strcmp(s->l[i].name, name) == 0)
            return &s->l[i];
    }
    return NULL;
}

/* Same labels, ignoring `skip` (NULL: none) on either side. */
static bool same_labels(const struct sample *a, const struct sample *b, const char *skip)
{
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < a->n_labels; i++) {
        if (skip != NULL && strcmp(a->l[i].name, skip) == 0)
            continue;
        na++;
        const struct label *l = find_label(b, a->l[i].name);
        if (l == NULL || strcmp(l->value, a->l[i].value) != 0)
            return false;
    }
    for (size_t i = 0; i < b->n_labels; i++)
        nb += skip == NULL || strcmp(b->l[i].name, skip) != 0;
    return na == nb;
}

static void parse_sample(struct parsed *p, const char *line, int lineno)
{
    REQUIRE(p->n_fam > 0 && p->fam[p->n_fam - 1].type[0] != '\0', "line %d: sample before any TYPE",
            lineno);
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->s = realloc(p->s, p->cap * sizeof(*p->s));
        REQUIRE(p->s != NULL, "out of memory");
    }
    struct sample *s = &p->s[p->n];
    memset(s, 0, sizeof(*s));
    s->line = lineno;
    s->family = p->n_fam - 1;
    struct family *f = &p->fam[s->family];
    const char *c = line;
    parse_name(&c, s->name, sizeof(s->name), true, lineno);
    REQUIRE(belongs(f, s->name), "line %d: %s outside its family %s", lineno, s->name, f->name);
    if (*c == '{') {
        c++;
        parse_labels(&c, s, lineno);
    }
    REQUIRE(*c == ' ' && c[1] != ' ', "line %d: expected one space before the value", lineno);
    c++;
    REQUIRE(strchr(c, ' ') == NULL, "line %d: trailing fields '%s'", lineno, c);
    s->value = parse_value(c, lineno);

    bool is_bucket =
        strcmp(f->type, "histogram") == 0 && strcmp(s->name + strlen(f->name), "_bucket") == 0;
    const struct label *le = find_label(s, "le");
    REQUIRE(is_bucket == (le != NULL), "line %d: le label where it does not belong", lineno);
    REQUIRE(find_label(s, "quantile") == NULL, "line %d: quantile label", lineno);
    for (size_t i = 0; i < p->n; i++) {
        REQUIRE(strcmp(p->s[i].name, s->name) != 0 || !same_labels(&p->s[i], s, NULL),
                "line %d: duplicate series of line %d", lineno, p->s[i].line);
    }
    f->n_samples++;
    p->n++;
}

/* Each _count series has a _sum and buckets with the same labels, le increasing and ending in
 * +Inf, counts whole, cumulative, and the +Inf one equal to _count; no stray buckets. */
static void check_histograms(const struct parsed *p)
{
    for (size_t fi = 0; fi < p->n_fam; fi++) {
        const struct family *f = &p->fam[fi];
        if (strcmp(f->type, "histogram") != 0)
            continue;
        char count_name[160], sum_name[160], bucket_name[160];
        snprintf(count_name, sizeof(count_name), "%s_count", f->name);
        snprintf(sum_name, sizeof(sum_name), "%s_sum", f->name);
        snprintf(bucket_name, sizeof(bucket_name), "%s_bucket", f->name);
        size_t buckets_seen = 0, buckets_total = 0;
        for (size_t i = 0; i < p->n; i++) {
            if (p->s[i].family == fi && strcmp(p->s[i].name, bucket_name) == 0)
                buckets_total++;
        }
        for (size_t i = 0; i < p->n; i++) {
            const struct sample *cnt = &p->s[i];
            if (cnt->family != fi || strcmp(cnt->name, count_name) != 0)
                continue;
            REQUIRE(cnt->value >= 0 && cnt->value == floor(cnt->value),
                    "line %d: _count not a whole number", cnt->line);
            bool has_sum = false;
            double last_le = -INFINITY, last_n = 0;
            size_t n_buckets = 0;
            for (size_t j = 0; j < p->n; j++) {
                const struct sample *b = &p->s[j];
                if (b->family != fi)
                    continue;
                if (strcmp(b->name, sum_name) == 0 && same_labels(b, cnt, NULL))
                    has_sum = true;
                if (strcmp(b->name, bucket_name) != 0 || !same_labels(b, cnt, "le"))
                    continue;
                double le = parse_value(find_label(b, "le")->value, b->line);
                REQUIRE(le > last_le, "line %d: le not increasing", b->line);
                REQUIRE(b->value >= last_n && b->value == floor(b->value),
                        "line %d: bucket not cumulative", b->line);
                last_le = le;
                last_n = b->value;
                n_buckets++;
            }
            REQUIRE(has_sum, "line %d: no _sum", cnt->line);
            REQUIRE(n_buckets > 0 && isinf(last_le) && last_le > 0,
                    "line %d: no le=\"+Inf\" bucket", cnt->line);
            REQUIRE(last_n == cnt->value, "line %d: +Inf bucket %g != _count %g", cnt->line, last_n,
                    cnt->value);
            buckets_seen += n_buckets;
        }
        REQUIRE(buckets_seen == buckets_total, "%s: buckets without a _count", f->name);
    }
}

static void parse_comment(struct parsed *p, const char *line, int lineno)
{
    bool is_help = strncmp(line, "# HELP ", 7) == 0;
    REQUIRE(is_help || strncmp(line, "# TYPE ", 7) == 0, "line %d: stray comment '%s'", lineno,
            line);
    const char *c = line + 7;
    char name[128];
    parse_name(&c, name, sizeof(name), true, lineno);
    REQUIRE(*c == ' ', "line %d: expected a space after %s", lineno, name);
    c++;
    if (is_help) {
        if (p->n_fam > 0)
            REQUIRE(p->fam[p->n_fam - 1].n_samples > 0, "line %d: family %s is empty", lineno,
                    p->fam[p->n_fam - 1].name);
        for (size_t i = 0; i < p->n_fam; i++)
            REQUIRE(strcmp(p->fam[i].name, name) != 0, "line %d: family %s twice", lineno, name);
        for (const char *h = c; *h != '\0'; h++) {
            if (*h == '\\') {
                REQUIRE(h[1] == '\\' || h[1] == 'n', "line %d: bad escape in HELP", lineno);
                h++;
            }
        }
        REQUIRE(p->n_fam < MAX_FAMILIES, "too many families");
        struct family *f = &p->fam[p->n_fam++];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", name);
        return;
    }
    REQUIRE(p->n_fam > 0, "line %d: TYPE without HELP", lineno);
    struct family *f = &p->fam[p->n_fam - 1];
    REQUIRE(strcmp(f->name, name) == 0 && f->type[0] == '\0',
            "line %d: TYPE %s does not follow its HELP", lineno, name);
    REQUIRE(strcmp(c, "counter") == 0 || strcmp(c, "gauge") == 0 || strcmp(c, "histogram") == 0,
            "line %d: bad type '%s'", lineno, c);
    snprintf(f->type, sizeof(f->type), "%s", c);
}

static void parse_lines(struct parsed *p, const char *buf, size_t len)
{
    REQUIRE(len > 0 && buf[len - 1] == '\n', "exposition does not end in a line feed");
    REQUIRE(memchr(buf, '\0', len) == NULL, "NUL in exposition");
    parse_copy = strndup(buf, len);
    REQUIRE(parse_copy != NULL, "out of memory");
    int lineno = 0;
    char *next;
    for (char *line = parse_copy; line < parse_copy + len; line = next) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        next = nl + 1;
        lineno++;
        REQUIRE(line[0] != '\0', "line %d: empty", lineno);
        if (line[0] == '#')
            parse_comment(p, line, lineno);
        else
            parse_sample(p, line, lineno);
    }
    REQUIRE(p->n_fam > 0 && p->fam[p->n_fam - 1].n_samples > 0, "last family is empty");
    check_histograms(p);
}

/* Parse buf into p. Returns NULL if it is a valid exposition, else what is wrong with it. */
static const char *try_parse(struct parsed *p, const char *buf, size_t len)
{
    free(p->s);
    memset(p, 0, sizeof(*p));
    parse_err[0] = '\0';
    if (setjmp(parse_jmp) == 0)
        parse_lines(p, buf, len);
    free(parse_copy);
    parse_copy = NULL;
    return parse_err[0] != '\0' ? parse_err : NULL;
}

static void parse(struct parsed *p, const char *buf, size_t len)
{
    const char *err = try_parse(p, buf, len);
    ck_assert_msg(err == NULL, "%s in:\n%.*s", err, (int)len, buf);
}

/* ---- helpers ------------------------------------------------------------------------- */

static void setup(void)
{
    ck_assert_int_eq(wd_metrics_new(&m, "streaming"), 0);
    wd_buf_init(&text, 0);
    memset(&px, 0, sizeof(px));
}

static void teardown(void)
{
    wd_metrics_free(m);
    m = NULL;
    wd_buf_free(&text);
    free(px.s);
    memset(&px, 0, sizeof(px));
}

/* Render m afresh into `text` (NUL-terminated) and parse it into px. */
static void render(void)
{
    text.len = 0;
    ck_assert_int_eq(wd_metrics_render(m, &text), 0);
    parse(&px, text.data, text.len);
    ck_assert_int_eq(wd_buf_append(&text, "", 1), 0);
    text.len--;
}

static const struct family *family_of(const char *name)
{
    for (size_t i = 0; i < px.n_fam; i++) {
        if (strcmp(px.fam[i].name, name) == 0)
            return &px.fam[i];
    }
    return NULL;
}

static const struct sample *find(const char *name, const char *raw_labels)
{
    for (size_t i = 0; i < px.n; i++) {
        if (strcmp(px.s[i].name, name) == 0 && strcmp(px.s[i].raw, raw_labels) == 0)
            return &px.s[i];
    }
    return NULL;
}

/* The value of the series name{raw_labels}, which must be there. */
static double value(const char *name, const char *raw_labels)
{
    const struct sample *s = find(name, raw_labels);
    ck_assert_msg(s != NULL, "no series %s{%s} in:\n%s", name, raw_labels, text.data);
    return s->value;
}

static size_t count_series(const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < px.n; i++)
        n += strcmp(px.s[i].name, name) == 0;
    return n;
}

static void assert_type(const char *name, const char *type)
{
    const struct family *f = family_of(name);
    ck_assert_msg(f != NULL, "no family %s", name);
    ck_assert_str_eq(f->type, type);
}

static void assert_line(const char *line)
{
    char want[1024];
    snprintf(want, sizeof(want), "\n%s\n", line);
    ck_assert_msg(strstr(text.data, want) != NULL, "no line '%s' in:\n%s", line, text.data);
}

#define MODE "mode=\"streaming\""
#define DUR "http_request_duration_seconds"
#define QW "fwatchdog_queue_wait_seconds"

static const char *const les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                  "0.5",   "1",    "2.5",   "5",    "10",  "+Inf"};

/* Cumulative counts of the histogram series name{labels}, le by le, against want[]. */
static void assert_buckets(const char *name, const char *labels, const unsigned want[12])
{
    char b[160], raw[512];
    snprintf(b, sizeof(b), "%s_bucket", name);
    for (size_t i = 0; i < WD_ARRAY_LEN(les); i++) {
        snprintf(raw, sizeof(raw), "%s%sle=\"%s\"", labels, labels[0] ? "," : "", les[i]);
        ck_assert_msg(value(b, raw) == want[i], "%s{%s}: %g, want %u", b, raw, value(b, raw),
                      want[i]);
    }
}

/* ---- the parser itself: it must reject what Prometheus would, or the checks prove nothing - */

#define H(n, t) "# HELP " n " h\n# TYPE " n " " t "\n"
#define HIST_OK(extra)                                                                             \
    H("h", "histogram")                                                                            \
    "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n" extra

static const struct {
    const char *what, *in, *err; /* err: a piece of the message, NULL: valid */
} bad[] = {
    {"valid", H("a", "counter") "a 1\n" H("b", "gauge") "b{x=\"1\",y=\"q\\\"\\\\\\n\"} -2.5e-3\n",
     NULL},
    {"valid histogram", HIST_OK(""), NULL},
    {"special values", H("a", "gauge") "a{k=\"1\"} +Inf\na{k=\"2\"} -Inf\na{k=\"3\"} NaN\n", NULL},
    {"no final line feed", H("a", "counter") "a 1", "line feed"},
    {"empty", "", "line feed"},
    {"empty line", H("a", "counter") "a 1\n\n", "empty"},
    {"sample before TYPE", "a 1\n", "before any TYPE"},
    {"TYPE without HELP", "# TYPE a counter\na 1\n", "without HELP"},
    {"other comment", "# hello\n", "stray comment"},
    {"bad type", H("a", "summary") "a 1\n", "bad type"},
    {"TYPE of another name", "# HELP a h\n# TYPE b counter\nb 1\n", "does not follow"},
    {"family twice", H("a", "counter") "a 1\n" H("a", "counter") "a{x=\"1\"} 1\n", "twice"},
    {"empty family", H("a", "counter") H("b", "counter") "b 1\n", "empty"},
    {"empty last family", H("a", "counter") "a 1\n" H("b", "counter"), "empty"},
    {"sample of another family", H("a", "counter") "b 1\n", "outside its family"},
    {"bad metric name", H("a", "counter") "1a 1\n", "expected a name"},
    {"bad label name", H("a", "counter") "a{1x=\"1\"} 1\n", "expected a name"},
    {"reserved label name", H("a", "counter") "a{__x=\"1\"} 1\n", "reserved"},
    {"label twice", H("a", "counter") "a{x=\"1\",x=\"2\"} 1\n", "twice"},
    {"bad escape", H("a", "counter") "a{x=\"\\t\"} 1\n", "bad escape"},
    {"unterminated value", H("a", "counter") "a{x=\"1} 1\n", "unterminated"},
    {"unquoted value", H("a", "counter") "a{x=1} 1\n", "expected =\""},
    {"trailing comma", H("a", "counter") "a{x=\"1\",} 1\n", "expected , or }"},
    {"bad HELP escape", "# HELP a h\\t\n# TYPE a counter\na 1\n", "HELP"},
    {"bad value", H("a", "counter") "a one\n", "bad value"},
    {"hex value", H("a", "counter") "a 0x10\n", "bad value"},
    {"two spaces", H("a", "counter") "a  1\n", "one space"},
    {"timestamp", H("a", "counter") "a 1 1700000000\n", "trailing"},
    {"duplicate series", H("a", "counter") "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 1\n",
     "duplicate"},
    {"le on a counter", H("a", "counter") "a{le=\"1\"} 1\n", "le label"},
    {"bucket without le", H("h", "histogram") "h_bucket 1\nh_sum 1\nh_count 1\n", "le label"},
    {"not cumulative",
     H("h", "histogram") "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n",
     "not cumulative"},
    {"le not increasing",
     H("h", "histogram") "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                         "h_sum 3\nh_count 1\n",
     "le not increasing"},
    {"no +Inf", H("h", "histogram") "h_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n", "+Inf"},
    {"+Inf != count", H("h", "histogram") "h_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 1\n",
     "!= _count"},
    {"no sum", H("h", "histogram") "h_bucket{le=\"+Inf\"} 1\nh_count 1\n", "no _sum"},
    {"stray bucket", HIST_OK("h_bucket{x=\"1\",le=\"+Inf\"} 1\n"), "buckets without a _count"},
    {"fractional count", H("h", "histogram") "h_bucket{le=\"+Inf\"} 1.5\nh_sum 3\nh_count 1.5\n",
     "whole"},
};

START_TEST(test_parser)
{
    const char *err = try_parse(&px, bad[_i].in, strlen(bad[_i].in));
    if (bad[_i].err == NULL) {
        ck_assert_msg(err == NULL, "%s: %s", bad[_i].what, err);
    } else {
        ck_assert_msg(err != NULL, "%s: accepted", bad[_i].what);
        ck_assert_msg(strstr(err, bad[_i].err) != NULL, "%s: '%s', want '%s'", bad[_i].what, err,
                      bad[_i].err);
    }
}
END_TEST

/* ---- format -------------------------------------------------------------------------- */

START_TEST(test_empty)
{
    render();
    /* Only the in-flight gauge of the OpenFaaS three, at 0; empty vectors are left out. */
    assert_type("http_requests_in_flight", "gauge");
    assert_line("http_requests_in_flight 0");
    ck_assert_ptr_null(family_of("http_requests_total"));
    ck_assert_ptr_null(family_of(DUR));
    ck_assert_ptr_null(family_of("fwatchdog_handler_exited_total"));
    ck_assert_double_eq(value("fwatchdog_ready", MODE), 0);
    ck_assert_double_eq(value("fwatchdog_queue_depth", MODE), 0);
    ck_assert_double_eq(value(QW "_count", MODE), 0);
    ck_assert_double_eq(value(QW "_sum", MODE), 0);
    static const unsigned zero[12] = {0};
    assert_buckets(QW, MODE, zero);
    assert_line("# HELP http_requests_in_flight total HTTP requests in-flight");
    ck_assert_uint_eq(wd_metrics_rows(m), 0);
}
END_TEST

static const struct {
    const char *what;
    uint64_t bytes;
    double seconds;
    const char *bytes_text, *sum_text;
} floats[] = {
    {"zero", 0, 0, "0", "0"},
    {"one", 1, 1, "1", "1"},
    {"small", 11, 0.003, "11", "0.003"},
    {"six digits", 123456, 0.0001, "123456", "0.0001"},
    {"1e6", 1000000, 1e-05, "1e+06", "1e-05"},
    {"7 digits", 1234567, 0.1 + 0.2, "1.234567e+06", "0.30000000000000004"},
    {"2^53+1", 9007199254740993ULL, 2.5, "9.007199254740992e+15", "2.5"},
    {"large seconds", 25, 123456.75, "25", "123456.75"},
    {"1e21", 1000, 1e21, "1000", "1e+21"},
};

/* Values are printed as Go's strconv.FormatFloat(v, 'g', -1, 64), as client_golang does. */
START_TEST(test_float_format)
{
    char line[256];
    wd_metrics_bytes(m, floats[_i].bytes, 0);
    wd_metrics_queue_wait(m, floats[_i].seconds);
    render();
    snprintf(line, sizeof(line), "fwatchdog_request_bytes_total{" MODE "} %s",
             floats[_i].bytes_text);
    assert_line(line);
    snprintf(line, sizeof(line), QW "_sum{" MODE "} %s", floats[_i].sum_text);
    assert_line(line);
    assert_line(QW "_count{" MODE "} 1");
    assert_line("fwatchdog_response_bytes_total{" MODE "} 0");
}
END_TEST

START_TEST(test_escape)
{
    const char *mode = "a\"b\\c\nd";
    wd_metrics_free(m);
    ck_assert_int_eq(wd_metrics_new(&m, mode), 0);
    wd_metrics_child_exited(m, 0, 0);
    render();
    assert_line("fwatchdog_ready{mode=\"a\\\"b\\\\c\\nd\"} 0");
    for (size_t i = 0; i < px.n; i++) {
        const struct label *l = find_label(&px.s[i], "mode");
        if (strncmp(px.s[i].name, "fwatchdog_", 10) == 0) {
            ck_assert_ptr_nonnull(l);
            ck_assert_str_eq(l->value, mode);
        }
    }
    ck_assert_double_eq(
        value("fwatchdog_handler_exited_total", "mode=\"a\\\"b\\\\c\\nd\",status=\"0\""), 1);
}
END_TEST

/* A mode label longer than any fixed line buffer. */
START_TEST(test_long_mode)
{
    char mode[2000];
    memset(mode, 'x', sizeof(mode) - 1);
    mode[sizeof(mode) - 1] = '\0';
    mode[7] = '"';
    wd_metrics_free(m);
    ck_assert_int_eq(wd_metrics_new(&m, mode), 0);
    wd_metrics_child_exited(m, -1, SIGKILL);
    wd_metrics_set_ready(m, true);
    render();
    for (size_t i = 0; i < px.n; i++) {
        const struct label *l = find_label(&px.s[i], "mode");
        if (strncmp(px.s[i].name, "fwatchdog_", 10) == 0) {
            ck_assert_ptr_nonnull(l);
            ck_assert_str_eq(l->value, mode);
        }
    }
    ck_assert_uint_eq(count_series("fwatchdog_handler_exited_total"), 1);
    ck_assert_double_eq(px.s[0].value, 1);
    ck_assert_str_eq(find_label(&px.s[0], "status")->value, "SIGKILL");
}
END_TEST

START_TEST(test_null_mode)
{
    wd_metrics_free(m);
    ck_assert_int_eq(wd_metrics_new(&m, NULL), 0);
    render();
    ck_assert_double_eq(value("fwatchdog_queue_depth", "mode=\"\""), 0);
    wd_metrics_free(NULL);
}
END_TEST

static void script(void)
{
    for (int i = 0; i < 3; i++)
        wd_metrics_request(m, "POST", 200, 0.003);
    wd_metrics_request(m, "GET", 500, 0.2);
    wd_metrics_request(m, "FOO", 429, 0);
    wd_metrics_child_exited(m, 0, 0);
    wd_metrics_child_exited(m, -1, SIGTERM);
}

static const char *const family_order[] = {
    "fwatchdog_handler_exited_total",
    "fwatchdog_handler_killed_total",
    "fwatchdog_handler_started_total",
    "fwatchdog_queue_depth",
    "fwatchdog_queue_wait_seconds",
    "fwatchdog_ready",
    "fwatchdog_request_bytes_total",
    "fwatchdog_requests_rejected_total",
    "fwatchdog_requests_timed_out_total",
    "fwatchdog_response_bytes_total",
    "fwatchdog_warm_restarts_total",
    "http_request_duration_seconds",
    "http_requests_in_flight",
    "http_requests_total",
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
};

/* All families, in client_golang's order (by name), the same on every scrape. */
START_TEST(test_family_order)
{
    script();
    for (int pass = 0; pass < 2; pass++) {
        render();
        ck_assert_uint_eq(px.n_fam, WD_ARRAY_LEN(family_order));
        for (size_t i = 0; i < px.n_fam; i++)
            ck_assert_str_eq(px.fam[i].name, family_order[i]);
    }
}
END_TEST

/* Rendering appends to what is in the buffer; on failure the buffer is as it was. */
START_TEST(test_render_append_and_fail)
{
    script();
    ck_assert_int_eq(wd_buf_append(&text, "prefix\n", 7), 0);
    ck_assert_int_eq(wd_metrics_render(m, &text), 0);
    ck_assert_uint_gt(text.len, 7);
    ck_assert_int_eq(memcmp(text.data, "prefix\n", 7), 0);
    parse(&px, text.data + 7, text.len - 7);

    struct wd_buf small;
    wd_buf_init(&small, 300);
    ck_assert_int_eq(wd_buf_append(&small, "abc", 3), 0);
    ck_assert_int_eq(wd_metrics_render(m, &small), UV_E2BIG);
    ck_assert_uint_eq(small.len, 3);
    ck_assert_int_eq(memcmp(small.data, "abc", 3), 0);
    wd_buf_free(&small);
}
END_TEST

/* ---- requests ------------------------------------------------------------------------ */

START_TEST(test_mix)
{
    script();
    wd_metrics_inflight(m, 2);
    wd_metrics_inflight(m, -1);
    render();
    assert_type("http_requests_total", "counter");
    assert_type(DUR, "histogram");
    assert_line("# HELP http_requests_total total HTTP requests processed");
    assert_line("# HELP " DUR " Seconds spent serving HTTP requests.");

    ck_assert_uint_eq(count_series("http_requests_total"), 3);
    ck_assert_double_eq(value("http_requests_total", "code=\"200\",method=\"post\""), 3);
    ck_assert_double_eq(value("http_requests_total", "code=\"500\",method=\"get\""), 1);
    ck_assert_double_eq(value("http_requests_total", "code=\"429\",method=\"unknown\""), 1);
    /* Sorted by code, then method, as client_golang sorts series. */
    assert_line("http_requests_total{code=\"200\",method=\"post\"} 3\n"
                "http_requests_total{code=\"429\",method=\"unknown\"} 1\n"
                "http_requests_total{code=\"500\",method=\"get\"} 1");

    static const unsigned post[12] = {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3};
    static const unsigned get[12] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
    static const unsigned foo[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_buckets(DUR, "code=\"200\",method=\"post\"", post);
    assert_buckets(DUR, "code=\"500\",method=\"get\"", get);
    assert_buckets(DUR, "code=\"429\",method=\"unknown\"", foo);
    ck_assert_uint_eq(count_series(DUR "_bucket"), 3 * 12);
    ck_assert_double_eq(value(DUR "_count", "code=\"200\",method=\"post\""), 3);
    ck_assert_double_eq(value(DUR "_sum", "code=\"200\",method=\"post\""), 0.003 + 0.003 + 0.003);
    ck_assert_double_eq(value(DUR "_sum", "code=\"500\",method=\"get\""), 0.2);
    assert_line(DUR "_sum{code=\"500\",method=\"get\"} 0.2");
    assert_line(DUR "_sum{code=\"429\",method=\"unknown\"} 0");
    assert_line(DUR "_bucket{code=\"500\",method=\"get\",le=\"0.25\"} 1");

    ck_assert_double_eq(value("http_requests_in_flight", ""), 1);
    ck_assert_uint_eq(wd_metrics_rows(m), 3);
}
END_TEST

/* promhttp sanitizeMethod(): exact upper or lower case only. */
static const struct {
    const char *in, *label;
} method_map[] = {
    {"GET", "get"},         {"get", "get"},          {"POST", "post"},     {"put", "put"},
    {"PATCH", "patch"},     {"DELETE", "delete"},    {"HEAD", "head"},     {"OPTIONS", "options"},
    {"CONNECT", "connect"}, {"TRACE", "trace"},      {"NOTIFY", "notify"}, {"Get", "unknown"},
    {"FOO", "unknown"},     {"PROPFIND", "unknown"}, {"", "unknown"},      {"GETX", "unknown"},
};

START_TEST(test_methods)
{
    char raw[128];
    wd_metrics_request(m, method_map[_i].in, 201, 0.01);
    render();
    snprintf(raw, sizeof(raw), "code=\"201\",method=\"%s\"", method_map[_i].label);
    ck_assert_uint_eq(count_series("http_requests_total"), 1);
    ck_assert_double_eq(value("http_requests_total", raw), 1);
}
END_TEST

START_TEST(test_codes)
{
    wd_metrics_request(m, "GET", 500, 1);
    wd_metrics_request(m, "GET", 0, 1); /* no status written: 200, as promhttp */
    wd_metrics_request(m, "GET", 404, 1);
    wd_metrics_request(m, "GET", 1000, 1);
    wd_metrics_request(m, NULL, 404, 1);
    render();
    assert_line("http_requests_total{code=\"1000\",method=\"get\"} 1\n"
                "http_requests_total{code=\"200\",method=\"get\"} 1\n"
                "http_requests_total{code=\"404\",method=\"get\"} 1\n"
                "http_requests_total{code=\"404\",method=\"unknown\"} 1\n"
                "http_requests_total{code=\"500\",method=\"get\"} 1");
    ck_assert_uint_eq(wd_metrics_rows(m), 4);
}
END_TEST

/* Bucket edges: le is "less than or equal". */
START_TEST(test_bucket_edges)
{
    wd_metrics_request(m, "GET", 200, 0.005);
    wd_metrics_request(m, "GET", 200, 0.0050001);
    wd_metrics_request(m, "GET", 200, 10);
    wd_metrics_request(m, "GET", 200, 10.5);
    wd_metrics_request(m, "GET", 200, -1);
    render();
    static const unsigned want[12] = {2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5};
    assert_buckets(DUR, "code=\"200\",method=\"get\"", want);
}
END_TEST

/* ---- gauges and counters ------------------------------------------------------------- */

START_TEST(test_counters)
{
    wd_metrics_queue(m, 1);
    wd_metrics_queue(m, 1);
    wd_metrics_queue(m, 1);
    wd_metrics_queue(m, -1);
    wd_metrics_queue_wait(m, 0.003);
    wd_metrics_queue_wait(m, 0.2);
    wd_metrics_rejected(m);
    wd_metrics_rejected(m);
    wd_metrics_timed_out(m);
    wd_metrics_bytes(m, 11, 5);
    wd_metrics_bytes(m, 100, 0);
    wd_metrics_child_started(m);
    wd_metrics_child_started(m);
    wd_metrics_child_killed(m);
    wd_metrics_warm_restart(m);
    wd_metrics_set_ready(m, true);
    render();
    assert_type("fwatchdog_queue_depth", "gauge");
    assert_type(QW, "histogram");
    assert_type("fwatchdog_ready", "gauge");
    ck_assert_double_eq(value("fwatchdog_queue_depth", MODE), 2);
    static const unsigned wait[12] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2};
    assert_buckets(QW, MODE, wait);
    ck_assert_double_eq(value(QW "_count", MODE), 2);
    ck_assert_double_eq(value(QW "_sum", MODE), 0.003 + 0.2);
    ck_assert_double_eq(value("fwatchdog_requests_rejected_total", MODE), 2);
    ck_assert_double_eq(value("fwatchdog_requests_timed_out_total", MODE), 1);
    ck_assert_double_eq(value("fwatchdog_request_bytes_total", MODE), 111);
    ck_assert_double_eq(value("fwatchdog_response_bytes_total", MODE), 5);
    ck_assert_double_eq(value("fwatchdog_handler_started_total", MODE), 2);
    ck_assert_double_eq(value("fwatchdog_handler_killed_total", MODE), 1);
    ck_assert_double_eq(value("fwatchdog_warm_restarts_total", MODE), 1);
    ck_assert_double_eq(value("fwatchdog_ready", MODE), 1);
    for (size_t i = 0; i < px.n_fam; i++) {
        if (strncmp(px.fam[i].name, "fwatchdog_", 10) == 0 && px.fam[i].type[0] == 'c')
            ck_assert_msg(strstr(px.fam[i].name, "_total") != NULL, "%s", px.fam[i].name);
    }
    wd_metrics_set_ready(m, false);
    wd_metrics_queue(m, -2);
    render();
    ck_assert_double_eq(value("fwatchdog_ready", MODE), 0);
    ck_assert_double_eq(value("fwatchdog_queue_depth", MODE), 0);
}
END_TEST

START_TEST(test_inflight)
{
    wd_metrics_inflight(m, 2);
    wd_metrics_inflight(m, -1);
    render();
    ck_assert_double_eq(value("http_requests_in_flight", ""), 1);
    wd_metrics_inflight(m, -1);
    render();
    assert_line("http_requests_in_flight 0");
}
END_TEST

/* ---- children ------------------------------------------------------------------------ */

START_TEST(test_exits)
{
    wd_metrics_child_exited(m, 0, 0);
    wd_metrics_child_exited(m, 0, 0);
    wd_metrics_child_exited(m, 3, 0);
    wd_metrics_child_exited(m, -1, SIGKILL);
    wd_metrics_child_exited(m, -1, SIGKILL);
    wd_metrics_child_exited(m, -1, SIGSEGV);
    wd_metrics_child_exited(m, -1, 40);
    wd_metrics_child_exited(m, 255, 0);
    render();
    assert_type("fwatchdog_handler_exited_total", "counter");
    ck_assert_uint_eq(count_series("fwatchdog_handler_exited_total"), 6);
    /* Sorted by label value, as client_golang. */
    assert_line("fwatchdog_handler_exited_total{" MODE ",status=\"0\"} 2\n"
                "fwatchdog_handler_exited_total{" MODE ",status=\"255\"} 1\n"
                "fwatchdog_handler_exited_total{" MODE ",status=\"3\"} 1\n"
                "fwatchdog_handler_exited_total{" MODE ",status=\"SIGKILL\"} 2\n"
                "fwatchdog_handler_exited_total{" MODE ",status=\"SIGSEGV\"} 1\n"
                "fwatchdog_handler_exited_total{" MODE ",status=\"signal_40\"} 1");
}
END_TEST

/* ---- process ------------------------------------------------------------------------- */

START_TEST(test_process)
{
    render();
    static const char *const names[] = {
        "process_cpu_seconds_total",  "process_max_fds",
        "process_open_fds",           "process_resident_memory_bytes",
        "process_start_time_seconds", "process_virtual_memory_bytes",
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(names); i++) {
        ck_assert_msg(family_of(names[i]) != NULL, "no %s", names[i]);
        ck_assert_uint_eq(count_series(names[i]), 1);
    }
    assert_type("process_cpu_seconds_total", "counter");
    assert_type("process_start_time_seconds", "gauge");
    double open_fds = value("process_open_fds", "");
    double max_fds = value("process_max_fds", "");
    double rss = value("process_resident_memory_bytes", "");
    double vsz = value("process_virtual_memory_bytes", "");
    double cpu = value("process_cpu_seconds_total", "");
    double start = value("process_start_time_seconds", "");
    double now = (double)time(NULL);
    ck_assert_double_gt(open_fds, 2); /* stdin, stdout, stderr at least */
    ck_assert_double_ge(max_fds, open_fds);
    ck_assert_double_gt(rss, 4096);
    ck_assert_double_ge(vsz, rss);
    ck_assert_double_ge(cpu, 0);
    ck_assert_double_lt(cpu, 3600);
    ck_assert_double_gt(start, now - 3600);
    ck_assert_double_le(start, now + 1);
}
END_TEST

/* ---- limits -------------------------------------------------------------------------- */

/* After one observation per code and method, nothing more is allocated: rows stay put. */
START_TEST(test_no_alloc_after_warmup)
{
    static const int codes[] = {200, 429, 500, 504};
    static const char *const ms[] = {"GET", "POST", "put", "FOO"};
    for (size_t c = 0; c < WD_ARRAY_LEN(codes); c++) {
        for (size_t k = 0; k < WD_ARRAY_LEN(ms); k++)
            wd_metrics_request(m, ms[k], codes[c], 0.001);
    }
    ck_assert_uint_eq(wd_metrics_rows(m), WD_ARRAY_LEN(codes));
    for (int i = 0; i < 10000; i++) {
        wd_metrics_request(m, ms[i % 4], codes[(i / 4) % 4], (double)(i % 20) / 1000.0);
        ck_assert_uint_eq(wd_metrics_rows(m), WD_ARRAY_LEN(codes));
    }
    render();
    double total = 0;
    for (size_t i = 0; i < px.n; i++) {
        if (strcmp(px.s[i].name, "http_requests_total") == 0)
            total += px.s[i].value;
    }
    ck_assert_double_eq(total, 10000 + 16);
    ck_assert_uint_eq(count_series("http_requests_total"), 16);
    ck_assert_double_eq(value("http_requests_total", "code=\"504\",method=\"unknown\""),
                        1 + 10000 / 16);
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc;

    tc = tcase_create("parser");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_parser, 0, WD_ARRAY_LEN(bad));
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_empty);
    tcase_add_loop_test(tc, test_float_format, 0, WD_ARRAY_LEN(floats));
    tcase_add_test(tc, test_escape);
    tcase_add_test(tc, test_long_mode);
    tcase_add_test(tc, test_null_mode);
    tcase_add_test(tc, test_family_order);
    tcase_add_test(tc, test_render_append_and_fail);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mix);
    tcase_add_loop_test(tc, test_methods, 0, WD_ARRAY_LEN(method_map));
    tcase_add_test(tc, test_codes);
    tcase_add_test(tc, test_bucket_edges);
    suite_add_tcase(s, tc);

    tc = tcase_create("gauges");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_counters);
    tcase_add_test(tc, test_inflight);
    suite_add_tcase(s, tc);

    tc = tcase_create("children");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_exits);
    suite_add_tcase(s, tc);

    tc = tcase_create("process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_process);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_no_alloc_after_warmup);
    suite_add_tcase(s, tc);
    return s;
}
