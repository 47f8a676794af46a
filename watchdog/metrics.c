/* metrics.c: the counters behind /metrics and the Prometheus text format 0.0.4 they are
 * rendered in. It owns struct wd_metrics and writes only into the caller's wd_buf; it never does
 * network I/O or logs, and reads /proc only while rendering.
 *
 * Output follows what client_golang (as used by the OpenFaaS watchdogs) prints: families sorted
 * by name, series sorted by label values, empty vectors left out, label names in sorted order
 * with `le` last, values in Go's shortest 'g' form, bucket counts and _count as integers
 * (prometheus/common expfmt text_create.go). */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"

/* client_golang DefBuckets, and their `le` labels as Go prints them. */
static const double bounds[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
static const char *const bound_labels[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                           "0.5",   "1",    "2.5",   "5",    "10"};
#define N_BOUNDS WD_ARRAY_LEN(bounds)

/* promhttp sanitizeMethod(): only these, spelled all upper or all lower case, keep their name;
 * everything else is "unknown". Sorted by label so rows render in client_golang's order. */
static const struct {
    const char *upper, *lower;
} methods[] = {
    {"CONNECT", "connect"}, {"DELETE", "delete"},   {"GET", "get"},     {"HEAD", "head"},
    {"NOTIFY", "notify"},   {"OPTIONS", "options"}, {"PATCH", "patch"}, {"POST", "post"},
    {"PUT", "put"},         {"TRACE", "trace"},
};
#define METHOD_UNKNOWN WD_ARRAY_LEN(methods)
#define N_METHODS (WD_ARRAY_LEN(methods) + 1)

/* Names for the signals a handler usually dies of; others are "signal_<N>". */
static const struct {
    int sig;
    const char *name;
} signal_names[] = {
    {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGXCPU, "SIGXCPU"},
    {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"},
};

#define N_EXIT_CODES 256
#define MAX_SIGNAL 64

/* Bucket counts are stored non-cumulative (buckets[i]: observations in (bounds[i-1],
 * bounds[i]]); the +Inf bucket is `count`. Rendering sums them up. */
struct histo {
    uint64_t buckets[N_BOUNDS];
    uint64_t count;
    double sum;
};

/* One status code's series, one histogram per method slot; its count is also the value of
 * http_requests_total. Allocated by row_get() the first time the code is seen, freed by
 * wd_metrics_free(). */
struct code_row {
    int code;
    char code_str[12];
    struct histo methods[N_METHODS];
};

/* Created by wd_metrics_new(), freed by wd_metrics_free(); owned by main.c. */
struct wd_metrics {
    char *mode_label;       /* owned: `mode="<name>"`, escaped, ready to print */
    struct code_row **rows; /* owned, sorted by code_str (strcmp), as client_golang sorts */
    size_t n_rows, cap_rows;
    int64_t in_flight, queue_depth;
    struct histo queue_wait;
    uint64_t rejected, timed_out, started, killed, warm_restarts;
    uint64_t workers_ready, reported_n;
    bool has_workers;
    double reported_sum;
    uint64_t bytes_in, bytes_out;
    uint64_t exits[N_EXIT_CODES];
    uint64_t signals[MAX_SIGNAL + 1];
    bool is_ready;
    long long btime; /* /proc/stat btime, read once; 0 = not read yet */
};

/* ---- observing ----------------------------------------------------------------------- */

static void histo_observe(struct histo *h, double v)
{
    /* client_golang: the first bucket whose upper bound is >= v (sort.SearchFloat64s). */
    size_t i = 0;
    while (i < N_BOUNDS && !(v <= bounds[i]))
        i++;
    if (i < N_BOUNDS)
        h->buckets[i]++;
    h->count++;
    h->sum += v;
}

static size_t method_slot(const char *method)
{
    if (method == NULL)
        return METHOD_UNKNOWN;
    for (size_t i = 0; i < WD_ARRAY_LEN(methods); i++) {
        if (strcmp(method, methods[i].upper) == 0 || strcmp(method, methods[i].lower) == 0)
            return i;
    }
    return METHOD_UNKNOWN;
}

/* The row for `code`, allocated and inserted in order on first sight. NULL when out of memory. */
static struct code_row *row_get(struct wd_metrics *m, int code)
{
    for (size_t i = 0; i < m->n_rows; i++) {
        if (m->rows[i]->code == code)
            return m->rows[i];
    }
    if (m->n_rows == m->cap_rows) {
        size_t cap = m->cap_rows ? m->cap_rows * 2 : 8;
        struct code_row **rows = realloc(m->rows, cap * sizeof(struct code_row *));
        if (rows == NULL)
            return NULL;
        m->rows = rows;
        m->cap_rows = cap;
    }
    struct code_row *row = calloc(1, sizeof(*row));
    if (row == NULL)
        return NULL;
    row->code = code;
    snprintf(row->code_str, sizeof(row->code_str), "%d", code);
    size_t at = 0;
    while (at < m->n_rows && strcmp(m->rows[at]->code_str, row->code_str) < 0)
        at++;
    memmove(&m->rows[at + 1], &m->rows[at], (m->n_rows - at) * sizeof(struct code_row *));
    m->rows[at] = row;
    m->n_rows++;
    return row;
}

void wd_metrics_request(struct wd_metrics *m, const char *method, int code, double seconds)
{
    if (code == 0)
        code = 200; /* promhttp sanitizeCode(): no WriteHeader means 200 */
    struct code_row *row = row_get(m, code);
    if (row == NULL)
        return;
    histo_observe(&row->methods[method_slot(method)], seconds);
}

void wd_metrics_inflight(struct wd_metrics *m, int delta)
{
    m->in_flight += delta;
}

void wd_metrics_queue(struct wd_metrics *m, int delta)
{
    m->queue_depth += delta;
}

void wd_metrics_queue_wait(struct wd_metrics *m, double seconds)
{
    histo_observe(&m->queue_wait, seconds);
}

void wd_metrics_rejected(struct wd_metrics *m)
{
    m->rejected++;
}

void wd_metrics_timed_out(struct wd_metrics *m)
{
    m->timed_out++;
}

void wd_metrics_bytes(struct wd_metrics *m, uint64_t in, uint64_t out)
{
    m->bytes_in += in;
    m->bytes_out += out;
}

void wd_metrics_child_started(struct wd_metrics *m)
{
    m->started++;
}

void wd_metrics_child_exited(struct wd_metrics *m, int exit_status, int term_signal)
{
    if (term_signal > 0 && term_signal <= MAX_SIGNAL)
        m->signals[term_signal]++;
    else if (exit_status >= 0)
        m->exits[exit_status & 0xff]++; /* a wait status holds only the low 8 bits */
}

void wd_metrics_child_killed(struct wd_metrics *m)
{
    m->killed++;
}

void wd_metrics_warm_restart(struct wd_metrics *m)
{
    m->warm_restarts++;
}

void wd_metrics_workers_ready(struct wd_metrics *m, size_t n)
{
    m->has_workers = true;
    m->workers_ready = n;
}

void wd_metrics_reported_duration(struct wd_metrics *m, double seconds)
{
    m->reported_n++;
    m->reported_sum += seconds;
}

void wd_metrics_set_ready(struct wd_metrics *m, bool is_ready)
{
    m->is_ready = is_ready;
}

size_t wd_metrics_rows(const struct wd_metrics *m)
{
    return m->n_rows;
}

/* ---- life cycle ---------------------------------------------------------------------- */

/* `name="value"`, the value escaped as text format 0.0.4 wants: backslash, double quote and line
 * feed. */
static char *make_label(const char *name, const char *s)
{
    size_t n = strlen(name) + 4;
    for (const char *p = s; *p != '\0'; p++)
        n += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
    char *out = malloc(n);
    if (out == NULL)
        return NULL;
    char *o = stpcpy(out, name);
    *o++ = '=';
    *o++ = '"';
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            *o++ = '\\';
            *o++ = *p;
        } else if (*p == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else {
            *o++ = *p;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

int wd_metrics_new(struct wd_metrics **out, const char *mode_name)
{
    struct wd_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UV_ENOMEM;
    m->mode_label = make_label("mode", mode_name != NULL ? mode_name : "");
    if (m->mode_label == NULL) {
        free(m);
        return UV_ENOMEM;
    }
    *out = m;
    return 0;
}

void wd_metrics_free(struct wd_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_rows; i++)
        free(m->rows[i]);
    free(m->rows);
    free(m->mode_label);
    free(m);
}

/* ---- text ---------------------------------------------------------------------------- */

/* Go's strconv.FormatFloat(v, 'g', -1, 64) as expfmt writeFloat() uses it: the shortest decimal
 * that reads back as v, in exponent form when the decimal exponent is < -4 or >= 6 (Go uses 6 for
 * the shortest form), the exponent with at least two digits, as C's %e prints it. */
static void format_float(double v, char *out, size_t cap)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        snprintf(out, cap, "0"); /* -0 too, as writeFloat */
        return;
    }
    char e[40];
    int prec = 0;
    for (; prec < 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    const char *x = strchr(e, 'e');
    int exp = x != NULL ? (int)strtol(x + 1, NULL, 10) : 0;
    if (exp < -4 || exp >= 6)
        snprintf(out, cap, "%s", e);
    else
        snprintf(out, cap, "%.*f", prec > exp ? prec - exp : 0, v);
}

/* Rendering appends through this; the first error sticks and later appends do nothing. */
struct out {
    struct wd_buf *b;
    int rc;
};

static void WD_PRINTF(2, 3) put(struct out *o, const char *fmt, ...)
{
    if (o->rc < 0)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) {
        o->rc = UV_EINVAL;
        return;
    }
    if ((size_t)n < sizeof(line)) {
        o->rc = wd_buf_append(o->b, line, (size_t)n);
        return;
    }
    /* A longer line (a long mode name): format it again, in place. */
    int rc = wd_buf_reserve(o->b, (size_t)n + 1);
    if (rc < 0) {
        o->rc = rc;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(o->b->data + o->b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->b->len += (size_t)n;
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{labels} value`, or `name value` when labels is "". */
static void sample(struct out *o, const char *name, const char *labels, double v)
{
    char num[40];
    format_float(v, num, sizeof(num));
    if (labels[0] != '\0')
        put(o, "%s{%s} %s\n", name, labels, num);
    else
        put(o, "%s %s\n", name, num);
}

static void histogram(struct out *o, const char *name, const char *labels, const struct histo *h)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        cum += h->buckets[i];
        put(o, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, labels, sep, bound_labels[i], cum);
    }
    put(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, h->count);
    char num[40];
    format_float(h->sum, num, sizeof(num));
    if (labels[0] != '\0') {
        put(o, "%s_sum{%s} %s\n", name, labels, num);
        put(o, "%s_count{%s} %" PRIu64 "\n", name, labels, h->count);
    } else {
        put(o, "%s_sum %s\n", name, num);
        put(o, "%s_count %" PRIu64 "\n", name, h->count);
    }
}

/* A family with one series labelled only by mode. */
static void mode_family(struct out *o, const char *mode, const char *name, const char *type,
                        const char *help, double v)
{
    family(o, name, type, help);
    sample(o, name, mode, v);
}

#define STATUS_LEN 24

struct exit_series {
    char status[STATUS_LEN];
    uint64_t n;
};

static int cmp_exit_series(const void *a, const void *b)
{
    return strcmp(((const struct exit_series *)a)->status, ((const struct exit_series *)b)->status);
}

static void render_exits(struct out *o, const struct wd_metrics *m)
{
    struct exit_series s[N_EXIT_CODES + MAX_SIGNAL] = {0};
    size_t n = 0;
    for (int code = 0; code < N_EXIT_CODES; code++) {
        if (m->exits[code] == 0)
            continue;
        snprintf(s[n].status, STATUS_LEN, "%d", code);
        s[n++].n = m->exits[code];
    }
    for (int sig = 1; sig <= MAX_SIGNAL; sig++) {
        if (m->signals[sig] == 0)
            continue;
        snprintf(s[n].status, STATUS_LEN, "signal_%d", sig);
        for (size_t i = 0; i < WD_ARRAY_LEN(signal_names); i++) {
            if (signal_names[i].sig == sig)
                snprintf(s[n].status, STATUS_LEN, "%s", signal_names[i].name);
        }
        s[n++].n = m->signals[sig];
    }
    if (n == 0)
        return; /* an empty vector: client_golang leaves the family out */
    qsort(s, n, sizeof(s[0]), cmp_exit_series); /* client_golang sorts series by label value */
    const char *name = "fwatchdog_handler_exited_total";
    family(o, name, "counter", "Handler processes that ended, by exit code or signal.");
    char num[40];
    for (size_t i = 0; i < n; i++) {
        format_float((double)s[i].n, num, sizeof(num));
        put(o, "%s{%s,status=\"%s\"} %s\n", name, m->mode_label, s[i].status, num);
    }
}

static void request_labels(char *labels, size_t cap, const struct code_row *row, size_t k)
{
    snprintf(labels, cap, "code=\"%s\",method=\"%s\"", row->code_str,
             k == METHOD_UNKNOWN ? "unknown" : methods[k].lower);
}

/* The OpenFaaS watchdogs' three families (of-watchdog metrics/http.go), help texts verbatim. */
static void render_http(struct out *o, const struct wd_metrics *m)
{
    char labels[64];
    bool is_empty = true;
    for (size_t r = 0; r < m->n_rows && is_empty; r++) {
        for (size_t k = 0; k < N_METHODS && is_empty; k++)
            is_empty = m->rows[r]->methods[k].count == 0;
    }
    const char *dur = "http_request_duration_seconds";
    if (!is_empty)
        family(o, dur, "histogram", "Seconds spent serving HTTP requests.");
    for (size_t r = 0; r < m->n_rows; r++) {
        for (size_t k = 0; k < N_METHODS; k++) {
            const struct code_row *row = m->rows[r];
            if (row->methods[k].count == 0)
                continue;
            request_labels(labels, sizeof(labels), row, k);
            histogram(o, dur, labels, &row->methods[k]);
        }
    }
    /* Always there: the peers set it to 0 at start. */
    family(o, "http_requests_in_flight", "gauge", "total HTTP requests in-flight");
    sample(o, "http_requests_in_flight", "", (double)m->in_flight);
    const char *total = "http_requests_total";
    if (!is_empty)
        family(o, total, "counter", "total HTTP requests processed");
    for (size_t r = 0; r < m->n_rows; r++) {
        for (size_t k = 0; k < N_METHODS; k++) {
            const struct code_row *row = m->rows[r];
            if (row->methods[k].count == 0)
                continue;
            request_labels(labels, sizeof(labels), row, k);
            sample(o, total, labels, (double)row->methods[k].count);
        }
    }
}

/* ---- process_*: client_golang's process collector on Linux (procfs) ------------------ */

/* A small /proc file, whole and NUL-terminated. Returns its length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Fields of /proc/self/stat we use, numbered as in proc(5). */
#define STAT_UTIME 14
#define STAT_STIME 15
#define STAT_STARTTIME 22
#define STAT_VSIZE 23
#define STAT_RSS 24

/* Parse /proc/<pid>/stat text into f[STAT_UTIME..STAT_RSS]. The command name (field 2) is in
 * parentheses and may itself hold spaces and parentheses, so fields are counted from the last
 * ')'. Returns false on anything unexpected. */
static bool parse_stat(const char *text, long long f[STAT_RSS + 1])
{
    const char *p = strrchr(text, ')');
    if (p == NULL)
        return false;
    p++;
    for (int field = 3; field <= STAT_RSS; field++) {
        if (*p != ' ')
            return false;
        p++;
        if (field == 3) { /* state: one letter */
            while (*p != '\0' && *p != ' ')
                p++;
            continue;
        }
        char *end;
        errno = 0;
        f[field] = strtoll(p, &end, 10);
        if (end == p || errno != 0)
            return false;
        p = end;
    }
    return true;
}

/* /proc/stat "btime": boot time in seconds since the epoch. 0 when unknown. The file can be
 * long (one "intr" line with hundreds of numbers), so it is read a line piece at a time. */
static long long read_btime(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return 0;
    char line[256];
    bool is_line_start = true;
    long long btime = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        bool was_line_start = is_line_start;
        is_line_start = strchr(line, '\n') != NULL;
        if (was_line_start && strncmp(line, "btime ", 6) == 0) {
            btime = strtoll(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return btime;
}

/* Entries in /proc/self/fd (the directory's own fd included, as procfs counts it). -1 on error. */
static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

static void render_process(struct out *o, struct wd_metrics *m)
{
    char text[1024];
    long long f[STAT_RSS + 1] = {0};
    bool has_stat = read_small("/proc/self/stat", text, sizeof(text)) > 0 && parse_stat(text, f);
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0)
        tck = 100;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    if (m->btime == 0)
        m->btime = read_btime();

    if (has_stat) {
        const char *name = "process_cpu_seconds_total";
        family(o, name, "counter", "Total user and system CPU time spent in seconds.");
        sample(o, name, "", (double)(f[STAT_UTIME] + f[STAT_STIME]) / (double)tck);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        sample(o, "process_max_fds", "", (double)rl.rlim_cur);
    }
    long fds = count_open_fds();
    if (fds >= 0) {
        family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
        sample(o, "process_open_fds", "", (double)fds);
    }
    if (has_stat) {
        const char *name = "process_resident_memory_bytes";
        family(o, name, "gauge", "Resident memory size in bytes.");
        sample(o, name, "", (double)f[STAT_RSS] * (double)page);
    }
    if (has_stat && m->btime > 0) {
        const char *name = "process_start_time_seconds";
        family(o, name, "gauge", "Start time of the process since unix epoch in seconds.");
        sample(o, name, "", (double)m->btime + (double)f[STAT_STARTTIME] / (double)tck);
    }
    if (has_stat) {
        const char *name = "process_virtual_memory_bytes";
        family(o, name, "gauge", "Virtual memory size in bytes.");
        sample(o, name, "", (double)f[STAT_VSIZE]);
    }
}

int wd_metrics_render(struct wd_metrics *m, struct wd_buf *out)
{
    struct out o = {out, 0};
    const char *mode = m->mode_label;
    size_t start = out->len;

    render_exits(&o, m);
    mode_family(&o, mode, "fwatchdog_handler_killed_total", "counter",
                "Handler processes killed because their deadline passed.", (double)m->killed);
    if (m->reported_n > 0) {
        const char *name = "fwatchdog_handler_reported_duration_seconds";
        char num[64];
        family(&o, name, "summary", "Call durations the handlers reported (Nuclio metrics).");
        snprintf(num, sizeof num, "%.17g", m->reported_sum);
        put(&o, "%s_sum{%s} %s\n", name, mode, num);
        put(&o, "%s_count{%s} %" PRIu64 "\n", name, mode, m->reported_n);
    }
    mode_family(&o, mode, "fwatchdog_handler_started_total", "counter",
                "Handler processes started.", (double)m->started);
    mode_family(&o, mode, "fwatchdog_queue_depth", "gauge",
                "Requests waiting for a free handler slot.", (double)m->queue_depth);
    family(&o, "fwatchdog_queue_wait_seconds", "histogram",
           "Seconds requests waited in the queue before they ran.");
    histogram(&o, "fwatchdog_queue_wait_seconds", mode, &m->queue_wait);
    mode_family(&o, mode, "fwatchdog_ready", "gauge",
                "1 when the handler is ready and the watchdog accepts requests, else 0.",
                m->is_ready ? 1 : 0);
    mode_family(&o, mode, "fwatchdog_request_bytes_total", "counter",
                "Request body bytes read from clients.", (double)m->bytes_in);
    mode_family(&o, mode, "fwatchdog_requests_rejected_total", "counter",
                "Requests answered 429 by the concurrency limit or a full queue.",
                (double)m->rejected);
    mode_family(&o, mode, "fwatchdog_requests_timed_out_total", "counter",
                "Requests answered 504 or 408 because a deadline passed.", (double)m->timed_out);
    mode_family(&o, mode, "fwatchdog_response_bytes_total", "counter",
                "Response body bytes written to clients.", (double)m->bytes_out);
    mode_family(&o, mode, "fwatchdog_warm_restarts_total", "counter",
                "Long-lived handlers started again after they went away.",
                (double)m->warm_restarts);
    if (m->has_workers)
        mode_family(&o, mode, "fwatchdog_warm_workers_ready", "gauge",
                    "Warm workers initialised and alive (idle or busy).", (double)m->workers_ready);
    render_http(&o, m);
    render_process(&o, m);

    if (o.rc < 0) {
        out->len = start;
        return o.rc;
    }
    return 0;
}
