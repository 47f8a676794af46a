/* http.c: mode http, a reverse proxy to a warm HTTP server (`fprocess`, supervised by
 * supervise.c) at `upstream_url`. Per request: wait until the upstream is ready (within the
 * request's deadline), take a kept-alive connection from a small pool or connect, send the
 * request head and stream the body (with back-pressure), parse the response with llhttp and
 * stream it back (with back-pressure). exec_timeout, lowered by X-Timeout, bounds each request.
 * An Upgrade request (WebSocket) goes out on a fresh connection with its Connection/Upgrade
 * fields; a 101 answer turns both connections into a raw tunnel, relayed until either side
 * closes (exec_timeout bounds only the wait for the 101).
 *
 * It talks to the server through mode.h only and never creates processes itself. Differences
 * from of-watchdog are listed in README.md (## Mode http). */
#include "mode.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <llhttp.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "supervise.h"

#define POOL_MAX 32                         /* idle upstream connections kept */
#define BODY_HIGH ((size_t)256 * 1024)      /* pause the client above this much queued */
#define BODY_LOW ((size_t)64 * 1024)        /* resume below it */
#define PROBE_TIMEOUT_MS 1000               /* one readiness check */
#define WAIT_CAP_MS ((uint64_t)30 * 1000)   /* no deadline at all: wait this long for ready */
#define MAX_RESP_HEAD ((size_t)1024 * 1024) /* upstream response head */

struct http_state;
struct job;

/* One TCP connection to the upstream. Created by conn_new(), freed in its close callback.
 * Borrowed by at most one job at a time (`job`), else idle in the pool. */
struct upconn {
    struct http_state *st;
    struct upconn *prev, *next; /* st->conns: every connection */
    struct job *job;            /* borrowed, NULL when idle */
    uv_tcp_t tcp;
    uv_connect_t connect;
    llhttp_t parser;
    bool is_connected, is_closing, is_idle, is_reused, is_reading;
    bool got_bytes;      /* a byte of the current response arrived */
    bool is_msg_done;    /* on_message_complete ran for the current response */
    bool is_interim;     /* a 1xx response is being skipped */
    bool is_tunnel;      /* the upstream answered 101: raw bytes both ways, never pooled */
    bool in_field;       /* response header parsing state */
    size_t value_off;    /* offset of the current header value in job->rhead */
    size_t write_queued; /* bytes handed to uv_write, not yet written */
};

/* One proxied request. Created in on_headers, freed in the timer's close callback once the
 * request is answered or aborted (req == NULL). `req` is borrowed; `uc` is borrowed too. */
struct job {
    struct http_state *st;
    struct job *prev, *next;   /* st->jobs */
    struct job *wprev, *wnext; /* st->waiters, while waiting for readiness */
    struct wd_req *req;
    struct upconn *uc;
    uv_timer_t timer; /* the deadline */
    bool timer_open, is_waiting, head_sent, body_ended, body_sent, is_chunked, is_buffered;
    bool has_cl, is_head, retried, paused_client;
    bool is_upgrade; /* the client asked for an Upgrade: forwarded, fresh connection */
    bool is_tunnel;  /* the 101 went to the client: on_tunnel relays */
    int64_t content_length;
    uint64_t timeout_ms; /* the request's exec budget; 0 = none */
    struct wd_buf head;  /* request head without the framing line and final CRLF */
    struct wd_buf body;  /* body bytes that arrived before the head went out (or buffered) */
    struct wd_buf rhead; /* response header names and values, NUL-terminated pairs */
    size_t nrh;          /* pairs in rhead */
    double head_seconds; /* time until the response head (X-Duration-Seconds) */
};

/* Created by start(), freed by stop() once every handle is closed and the supervisor is done. */
struct http_state {
    struct wd_app *app;
    const struct wd_config *cfg;
    struct wd_supervise *sv;
    struct sockaddr_storage addr; /* the upstream */
    char hostport[300];           /* "127.0.0.1:8080": Host of our own requests */
    char *base;                   /* path prefix of upstream_url, no trailing '/' ("" if none) */
    struct upconn *conns;
    size_t nidle;
    struct job *jobs, *waiters;
    int open_handles; /* probe handles, job timers, connections */
    /* the readiness probe */
    uv_tcp_t probe_tcp;
    uv_connect_t probe_connect;
    uv_timer_t probe_timer;
    bool probe_busy, probe_tcp_open;
    char probe_buf[512];
    size_t probe_len;
    bool is_stopping, sv_done;
    wd_done_cb stop_done;
    void *stop_arg;
    llhttp_settings_t settings;
    char readbuf[64 * 1024];
};

static void job_maybe_free(struct job *job);
static void tunnel_end(struct job *job);
static void job_connect(struct job *job);
static void conn_close(struct upconn *uc);
static void stop_maybe_done(struct http_state *st);

/* ---- helpers ------------------------------------------------------------------------- */

static bool name_is(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

/* RFC 9110 7.6.1: hop-by-hop fields, and any named in Connection. */
static bool is_listed(const char *list, const char *name)
{
    size_t nl = strlen(name);
    const char *p = list;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if ((size_t)(e - p) == nl && strncasecmp(p, name, nl) == 0)
            return true;
        p = e;
    }
    return false;
}

static bool is_hop(const char *name, const char *connection)
{
    static const char *const hop[] = {"Connection",    "Keep-Alive",        "TE",
                                      "Trailer",       "Transfer-Encoding", "Upgrade",
                                      "Content-Length"};
    for (size_t i = 0; i < WD_ARRAY_LEN(hop); i++) {
        if (name_is(name, hop[i]))
            return true;
    }
    if (strncasecmp(name, "Proxy-", 6) == 0)
        return true;
    return connection != NULL && is_listed(connection, name);
}

static int buf_str(struct wd_buf *b, const char *s)
{
    return wd_buf_append(b, s, strlen(s));
}

static int buf_hdr(struct wd_buf *b, const char *name, const char *value)
{
    int rc = buf_str(b, name);
    rc |= buf_str(b, ": ");
    rc |= buf_str(b, value);
    rc |= buf_str(b, "\r\n");
    return rc;
}

/* ---- upstream URL -------------------------------------------------------------------- */

static int parse_upstream(struct http_state *st, const char *url)
{
    if (strncmp(url, "http://", 7) != 0) {
        wd_log_error("upstream_url %s: only http://host:port[/path] is supported", url);
        return UV_EINVAL;
    }
    const char *p = url + 7, *hend, *rest;
    char host[256];
    if (*p == '[') {
        hend = strchr(p, ']');
        if (hend == NULL || (size_t)(hend - p - 1) >= sizeof host)
            goto bad;
        memcpy(host, p + 1, (size_t)(hend - p - 1));
        host[hend - p - 1] = '\0';
        rest = hend + 1;
    } else {
        hend = p + strcspn(p, ":/");
        if ((size_t)(hend - p) >= sizeof host || hend == p)
            goto bad;
        memcpy(host, p, (size_t)(hend - p));
        host[hend - p] = '\0';
        rest = hend;
    }
    long port = 80;
    if (*rest == ':') {
        char *end;
        port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port <= 0 || port > 65535 || (*end != '\0' && *end != '/'))
            goto bad;
        rest = end;
    }
    if (*rest != '\0' && *rest != '/')
        goto bad;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&st->addr) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&st->addr) != 0)
        goto bad;
    snprintf(st->hostport, sizeof st->hostport, strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host,
             port);
    st->base = strdup(rest);
    if (st->base == NULL)
        return UV_ENOMEM;
    size_t bl = strlen(st->base);
    while (bl > 0 && st->base[bl - 1] == '/')
        st->base[--bl] = '\0';
    return 0;
bad:
    wd_log_error("upstream_url %s: expected http://host:port[/path] with a numeric IPv4/IPv6 "
                 "address or localhost",
                 url);
    return UV_EINVAL;
}

/* ---- handle bookkeeping -------------------------------------------------------------- */

static void on_state_handle_closed(uv_handle_t *h)
{
    struct http_state *st = h->data;
    st->open_handles--;
    stop_maybe_done(st);
}

static void stop_maybe_done(struct http_state *st)
{
    if (!st->is_stopping || !st->sv_done || st->open_handles > 0 || st->jobs != NULL ||
        st->stop_done == NULL)
        return;
    wd_done_cb done = st->stop_done;
    void *arg = st->stop_arg;
    free(st->base);
    free(st);
    done(arg);
}

/* ---- answering ----------------------------------------------------------------------- */

static void job_detach_conn(struct job *job, bool reuse);

static void job_unwait(struct job *job)
{
    if (!job->is_waiting)
        return;
    struct http_state *st = job->st;
    if (job->wprev)
        job->wprev->wnext = job->wnext;
    else
        st->waiters = job->wnext;
    if (job->wnext)
        job->wnext->wprev = job->wprev;
    job->wprev = job->wnext = NULL;
    job->is_waiting = false;
}

static void job_resume_client(struct job *job)
{
    if (job->paused_client && job->req != NULL) {
        job->paused_client = false;
        wd_req_resume(job->req);
    }
}

/* Answer with an error (or cut a started response short), close the connection, let go. */
static void job_fail(struct job *job, int status, const char *body, const char *note,
                     bool retry_after)
{
    struct wd_req *req = job->req;
    job_unwait(job);
    if (job->uc != NULL)
        job_detach_conn(job, false);
    if (req == NULL)
        return;
    job->req = NULL;
    if (note != NULL) {
        char text[256];
        snprintf(text, sizeof text, "Upstream HTTP request error: %s", note);
        wd_req_note_error(req, text); /* logged by the server with the request */
    }
    if (wd_res_started(req)) {
        wd_res_abort(req);
    } else {
        char dur[32];
        snprintf(dur, sizeof dur, "%f", (double)(uv_hrtime() - req->start_ns) / 1e9);
        struct wd_header h[4];
        size_t n = 0;
        h[n++] = (struct wd_header){"X-Duration-Seconds", dur};
        h[n++] = (struct wd_header){"X-OpenFaaS-Internal", "of-watchdog"};
        if (body != NULL)
            h[n++] = (struct wd_header){"Content-Type", "text/plain; charset=utf-8"};
        if (retry_after)
            h[n++] = (struct wd_header){"Retry-After", "1"};
        wd_res_send(req, status, h, n, body, body ? strlen(body) : 0);
    }
    job_maybe_free(job);
}

static void on_job_timer_closed(uv_handle_t *h)
{
    struct job *job = h->data;
    struct http_state *st = job->st;
    WD_LIST_REMOVE(st->jobs, job);
    wd_buf_free(&job->head);
    wd_buf_free(&job->body);
    wd_buf_free(&job->rhead);
    free(job);
    st->open_handles--;
    stop_maybe_done(st);
}

static void job_maybe_free(struct job *job)
{
    if (job->req != NULL || job->uc != NULL || !job->timer_open)
        return;
    job_unwait(job);
    job->timer_open = false;
    uv_close((uv_handle_t *)&job->timer, on_job_timer_closed);
}

static void on_deadline(uv_timer_t *t)
{
    struct job *job = t->data;
    if (job->req == NULL)
        return;
    if (job->is_waiting) {
        job_fail(job, 503, "upstream not ready\n", "upstream not ready before the deadline", true);
        return;
    }
    char et[64];
    snprintf(et, sizeof et, "context deadline exceeded (exec_timeout %llums)",
             (unsigned long long)job->timeout_ms);
    wd_log_info("Upstream HTTP killed due to exec_timeout: %llums",
                (unsigned long long)job->st->cfg->exec_timeout_ms);
    job_fail(job, 504, NULL, et, false);
}

/* ---- upstream connections ------------------------------------------------------------ */

static void on_conn_closed(uv_handle_t *h)
{
    struct upconn *uc = h->data;
    struct http_state *st = uc->st;
    WD_LIST_REMOVE(st->conns, uc);
    free(uc);
    st->open_handles--;
    stop_maybe_done(st);
}

static void conn_close(struct upconn *uc)
{
    if (uc->is_closing)
        return;
    if (uc->is_idle) {
        uc->is_idle = false;
        uc->st->nidle--;
    }
    uc->is_closing = true;
    uc->job = NULL;
    uv_close((uv_handle_t *)&uc->tcp, on_conn_closed);
}

static struct upconn *conn_new(struct http_state *st)
{
    struct upconn *uc = calloc(1, sizeof *uc);
    if (uc == NULL)
        return NULL;
    uc->st = st;
    uv_tcp_init(st->app->loop, &uc->tcp);
    uc->tcp.data = uc;
    uc->connect.data = uc;
    uv_tcp_nodelay(&uc->tcp, 1);
    WD_LIST_PUSH(st->conns, uc);
    st->open_handles++;
    return uc;
}

static void on_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct upconn *uc = h->data;
    WD_UNUSED(suggested);
    *buf = uv_buf_init(uc->st->readbuf, sizeof uc->st->readbuf);
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void conn_read(struct upconn *uc, bool on)
{
    if (uc->is_closing || on == uc->is_reading)
        return;
    uc->is_reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&uc->tcp, on_up_alloc, on_up_read);
    else
        uv_read_stop((uv_stream_t *)&uc->tcp);
}

/* The job lets go of its connection: back to the pool when reusable, else closed. */
static void job_detach_conn(struct job *job, bool reuse)
{
    struct upconn *uc = job->uc;
    struct http_state *st = job->st;
    job->uc = NULL;
    uc->job = NULL;
    if (reuse && !st->is_stopping && st->nidle < POOL_MAX && wd_supervise_is_ready(st->sv)) {
        uc->is_idle = true;
        st->nidle++;
        conn_read(uc, true); /* an EOF on an idle connection closes it */
        return;
    }
    conn_close(uc);
}

struct up_write {
    uv_write_t w;
    struct upconn *uc;
    size_t len;
    char data[];
};

static void on_up_written(uv_write_t *w, int status)
{
    struct up_write *uw = (struct up_write *)w;
    struct upconn *uc = uw->uc;
    uc->write_queued -= uw->len;
    free(uw);
    struct job *job = uc->job;
    if (job == NULL || uc->is_closing)
        return;
    if (status < 0) {
        if (job->is_tunnel) {
            tunnel_end(job);
            return;
        }
        /* The read side reports the reset; a write error alone means the same. */
        if (!uc->got_bytes)
            job_fail(job, 502, "upstream connection failed\n", uv_strerror(status), false);
        return;
    }
    if (uc->write_queued < BODY_LOW)
        job_resume_client(job);
}

static int conn_write(struct upconn *uc, const void *a, size_t alen, const void *b, size_t blen,
                      const char *c, size_t clen)
{
    struct up_write *uw = malloc(sizeof *uw + alen + blen + clen);
    if (uw == NULL)
        return UV_ENOMEM;
    uw->uc = uc;
    uw->len = alen + blen + clen;
    if (alen)
        memcpy(uw->data, a, alen);
    if (blen)
        memcpy(uw->data + alen, b, blen);
    if (clen)
        memcpy(uw->data + alen + blen, c, clen);
    uv_buf_t ub = uv_buf_init(uw->data, (unsigned int)uw->len);
    int rc = uv_write(&uw->w, (uv_stream_t *)&uc->tcp, &ub, 1, on_up_written);
    if (rc < 0) {
        free(uw);
        return rc;
    }
    uc->write_queued += uw->len;
    return 0;
}

/* Body bytes in the framing the head announced (chunked: one chunk per call). */
static int send_body(struct job *job, const char *at, size_t len)
{
    if (len == 0)
        return 0;
    job->body_sent = true;
    if (!job->is_chunked)
        return conn_write(job->uc, at, len, NULL, 0, NULL, 0);
    char sz[24];
    int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
    return conn_write(job->uc, sz, (size_t)n, at, len, "\r\n", 2);
}

static void job_send_head(struct job *job)
{
    if (job->is_buffered && !job->body_ended)
        return; /* sent by on_end with the whole body */
    struct wd_buf h;
    wd_buf_init(&h, 0);
    int rc = wd_buf_append(&h, job->head.data, job->head.len);
    char line[64];
    if (job->is_buffered) {
        snprintf(line, sizeof line, "Content-Length: %zu\r\n", job->body.len);
        rc |= buf_str(&h, line);
    } else if (job->is_chunked) {
        rc |= buf_str(&h, "Transfer-Encoding: chunked\r\n");
    } else if (job->has_cl) {
        snprintf(line, sizeof line, "Content-Length: %lld\r\n", (long long)job->content_length);
        rc |= buf_str(&h, line);
    }
    rc |= buf_str(&h, "\r\n");
    if (rc == 0)
        rc = conn_write(job->uc, h.data, h.len, NULL, 0, NULL, 0);
    wd_buf_free(&h);
    if (rc < 0) {
        job_fail(job, 502, "upstream connection failed\n", uv_strerror(rc), false);
        return;
    }
    job->head_sent = true;
    if (job->body.len > 0) {
        /* buffered: keep the body for a retry; streamed: it is gone once written */
        rc = send_body(job, job->body.data, job->body.len);
        if (!job->is_buffered)
            wd_buf_free(&job->body);
    }
    if (rc == 0 && job->body_ended && job->is_chunked)
        rc = conn_write(job->uc, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    if (rc < 0)
        job_fail(job, 502, "upstream connection failed\n", uv_strerror(rc), false);
}

static void job_start_on(struct job *job, struct upconn *uc)
{
    job->uc = uc;
    uc->job = job;
    uc->got_bytes = uc->is_msg_done = uc->is_interim = false;
    job->rhead.len = 0;
    job->nrh = 0;
    if (job->timeout_ms == 0)
        uv_timer_stop(&job->timer); /* no exec deadline: the timer only bounded the wait */
    llhttp_init(&uc->parser, HTTP_RESPONSE, &job->st->settings);
    uc->parser.data = uc;
    conn_read(uc, true);
    job_send_head(job);
}

/* A broken connection before any response byte: retry once on a fresh connection when no
 * body byte is lost (nothing sent yet, or the buffered body is still held). */
static void conn_broken(struct upconn *uc, int err)
{
    struct job *job = uc->job;
    if (job == NULL) {
        conn_close(uc);
        return;
    }
    bool can_retry = uc->is_reused && !uc->got_bytes && !job->retried &&
                     (!job->body_sent || job->is_buffered) && job->req != NULL;
    if (can_retry) {
        job->retried = true;
        job->uc = NULL;
        conn_close(uc);
        job->head_sent = false;
        job_connect(job);
        return;
    }
    if (uc->got_bytes || (job->req != NULL && wd_res_started(job->req))) {
        job_fail(job, 502, NULL, uv_strerror(err), false);
        return;
    }
    job_fail(job, 502, "upstream connection failed\n", uv_strerror(err), false);
}

static void on_connected(uv_connect_t *c, int status)
{
    struct upconn *uc = c->data;
    struct job *job = uc->job;
    if (uc->is_closing)
        return;
    if (status < 0) {
        conn_close(uc);
        if (job == NULL)
            return;
        job->uc = NULL;
        if (status == UV_ECONNREFUSED && !wd_supervise_is_ready(job->st->sv) &&
            !wd_supervise_is_final(job->st->sv)) {
            job_connect(job); /* restarting: wait for it */
            return;
        }
        job_fail(job, 502, "upstream connection failed\n", uv_strerror(status), false);
        return;
    }
    uc->is_connected = true;
    if (job == NULL) {
        conn_close(uc);
        return;
    }
    job_start_on(job, uc);
}

static void job_wait(struct job *job)
{
    struct http_state *st = job->st;
    job->is_waiting = true;
    job->wnext = st->waiters;
    job->wprev = NULL;
    if (st->waiters)
        st->waiters->wprev = job;
    st->waiters = job;
}

static void job_connect(struct job *job)
{
    struct http_state *st = job->st;
    if (job->req == NULL)
        return;
    if (!wd_supervise_is_ready(st->sv)) {
        if (wd_supervise_is_final(st->sv) || job->req->is_ready_probe) {
            job_fail(job, 503, "upstream not running\n", "upstream not running", true);
            return;
        }
        job_wait(job);
        return;
    }
    for (struct upconn *uc = st->conns; uc != NULL && !job->is_upgrade; uc = uc->next) {
        if (uc->is_idle && !uc->is_closing) {
            uc->is_idle = false;
            st->nidle--;
            uc->is_reused = true;
            job_start_on(job, uc);
            return;
        }
    }
    struct upconn *uc = conn_new(st);
    if (uc == NULL) {
        job_fail(job, 502, "out of memory\n", "out of memory", false);
        return;
    }
    uc->job = job;
    job->uc = uc;
    int rc =
        uv_tcp_connect(&uc->connect, &uc->tcp, (const struct sockaddr *)&st->addr, on_connected);
    if (rc < 0) {
        job->uc = NULL;
        conn_close(uc);
        job_fail(job, 502, "upstream connection failed\n", uv_strerror(rc), false);
    }
}

/* ---- response parsing ---------------------------------------------------------------- */

static struct job *parser_job(llhttp_t *p)
{
    struct upconn *uc = p->data;
    return uc->job != NULL && uc->job->req != NULL ? uc->job : NULL;
}

static int on_r_field(llhttp_t *p, const char *at, size_t len)
{
    struct upconn *uc = p->data;
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    if (job->rhead.len + len > MAX_RESP_HEAD)
        return -1;
    uc->in_field = true;
    return wd_buf_append(&job->rhead, at, len) == 0 ? 0 : -1;
}

static int on_r_field_done(llhttp_t *p)
{
    struct upconn *uc = p->data;
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    uc->in_field = false;
    return wd_buf_append(&job->rhead, "", 1) == 0 ? 0 : -1;
}

static int on_r_value(llhttp_t *p, const char *at, size_t len)
{
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    if (job->rhead.len + len > MAX_RESP_HEAD)
        return -1;
    return wd_buf_append(&job->rhead, at, len) == 0 ? 0 : -1;
}

static int on_r_value_done(llhttp_t *p)
{
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    /* trim trailing whitespace (RFC 9110 5.5) */
    while (job->rhead.len > 0 && (job->rhead.data[job->rhead.len - 1] == ' ' ||
                                  job->rhead.data[job->rhead.len - 1] == '\t'))
        job->rhead.len--;
    job->nrh++;
    return wd_buf_append(&job->rhead, "", 1) == 0 ? 0 : -1;
}

static int on_r_headers_done(llhttp_t *p)
{
    struct upconn *uc = p->data;
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    int status = p->status_code;
    if (status >= 100 && status < 200 && status != 101) {
        uc->is_interim = true; /* 100 Continue and friends: not forwarded */
        job->rhead.len = 0;
        job->nrh = 0;
        return 0;
    }
    bool switching = status == 101;
    if (switching && (!job->is_upgrade || !p->upgrade))
        return -1; /* a 101 nobody asked for, or without Connection/Upgrade: 502 */
    struct wd_req *req = job->req;
    job->head_seconds = (double)(uv_hrtime() - req->start_ns) / 1e9;
    const char *connection = NULL;
    const char *s = job->rhead.data;
    for (size_t i = 0; i < job->nrh; i++) {
        const char *v = s + strlen(s) + 1;
        if (name_is(s, "Connection"))
            connection = v;
        s = v + strlen(v) + 1;
    }
    struct wd_header *h = calloc(job->nrh + 1, sizeof *h);
    if (h == NULL)
        return -1;
    size_t n = 0;
    s = job->rhead.data;
    for (size_t i = 0; i < job->nrh; i++) {
        const char *v = s + strlen(s) + 1;
        bool keep = switching && (name_is(s, "Connection") || name_is(s, "Upgrade"));
        if (keep || (!is_hop(s, connection) && !name_is(s, "Date") && !name_is(s, "X-Call-Id") &&
                     !name_is(s, "X-Duration-Seconds")))
            h[n++] = (struct wd_header){s, v};
        s = v + strlen(v) + 1;
    }
    char dur[32];
    snprintf(dur, sizeof dur, "%f", job->head_seconds);
    h[n++] = (struct wd_header){"X-Duration-Seconds", dur};
    int64_t cl = -1;
    if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED))
        cl = (int64_t)p->content_length;
    if (switching) {
        /* the tunnel lives as long as both ends do: exec_timeout only bounded the wait */
        uc->is_tunnel = true;
        uv_timer_stop(&job->timer);
        cl = -1;
    }
    int rc = wd_res_start(req, status, h, n, cl);
    free(h);
    if (rc < 0)
        return HPE_PAUSED;
    if (switching)
        job->is_tunnel = true;
    return job->is_head ? 1 : 0; /* HEAD: no body follows */
}

static int on_r_body(llhttp_t *p, const char *at, size_t len)
{
    struct upconn *uc = p->data;
    struct job *job = parser_job(p);
    if (job == NULL)
        return HPE_PAUSED;
    int rc = wd_res_write(job->req, at, len);
    if (rc < 0)
        return HPE_PAUSED;
    if (rc == 1)
        conn_read(uc, false); /* on_drain reads again */
    return 0;
}

static int on_r_message_done(llhttp_t *p)
{
    struct upconn *uc = p->data;
    if (uc->is_interim) {
        uc->is_interim = false;
        return 0;
    }
    if (uc->is_tunnel)
        return 0; /* llhttp stops with HPE_PAUSED_UPGRADE: the rest is tunnel data */
    uc->is_msg_done = true;
    return HPE_PAUSED;
}

static void response_done(struct upconn *uc, bool is_clean)
{
    struct job *job = uc->job;
    struct wd_req *req = job->req;
    bool reuse = is_clean && job->head_sent && job->body_ended && !job->is_waiting &&
                 !job->is_upgrade && !uc->is_tunnel && llhttp_should_keep_alive(&uc->parser) &&
                 uc->write_queued == 0;
    job->req = NULL;
    job_detach_conn(job, reuse);
    if (req != NULL)
        wd_res_end(req);
    job_maybe_free(job);
}

/* ---- tunnel (after a 101) ------------------------------------------------------------ */

/* Either side closed: the upstream connection goes, the client's closes after its flush. */
static void tunnel_end(struct job *job)
{
    struct wd_req *req = job->req;
    job->req = NULL;
    if (job->uc != NULL)
        job_detach_conn(job, false);
    if (req != NULL)
        wd_res_end(req);
    job_maybe_free(job);
}

/* Upstream bytes to the client; the upstream is not read while the client's queue is deep. */
static void tunnel_to_client(struct upconn *uc, const char *at, size_t len)
{
    struct job *job = uc->job;
    if (len == 0)
        return;
    int rc = wd_res_write(job->req, at, len);
    if (uc->is_closing)
        return; /* the client went away meanwhile: on_abort closed the upstream */
    if (rc < 0)
        tunnel_end(job);
    else if (rc == 1)
        conn_read(uc, false); /* on_drain reads again */
}

static void on_tunnel(struct wd_req *req, const char *at, size_t len)
{
    struct job *job = req->mode_data;
    if (job == NULL || job->req != req || job->uc == NULL || !job->is_tunnel)
        return;
    int rc = conn_write(job->uc, at, len, NULL, 0, NULL, 0);
    if (rc < 0) {
        tunnel_end(job);
        return;
    }
    if (job->uc->write_queued > BODY_HIGH && !job->paused_client) {
        job->paused_client = true;
        wd_req_pause(req); /* on_up_written resumes below BODY_LOW */
    }
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct upconn *uc = s->data;
    if (uc->is_closing)
        return;
    struct job *job = uc->job;
    if (job == NULL) {
        conn_close(uc); /* idle: the upstream closed it, or sent bytes nobody asked for */
        return;
    }
    if (job->is_tunnel) {
        if (n < 0)
            tunnel_end(job); /* upstream EOF or reset: the client gets EOF after the flush */
        else
            tunnel_to_client(uc, buf->base, (size_t)n);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF && uc->got_bytes && llhttp_message_needs_eof(&uc->parser)) {
            llhttp_finish(&uc->parser);
            if (uc->is_closing || uc->job != job)
                return;
            if (uc->is_msg_done) {
                response_done(uc, false); /* close-delimited body */
                return;
            }
        }
        conn_broken(uc, (int)n);
        return;
    }
    if (n == 0)
        return;
    uc->got_bytes = true;
    llhttp_errno_t err = llhttp_execute(&uc->parser, buf->base, (size_t)n);
    if (uc->is_closing || uc->job != job)
        return;
    if (err == HPE_PAUSED_UPGRADE && job->is_tunnel) {
        /* bytes after the 101 head in this read are already tunnel data */
        const char *pos = llhttp_get_error_pos(&uc->parser);
        if (pos != NULL && pos >= buf->base && pos < buf->base + n)
            tunnel_to_client(uc, pos, (size_t)(buf->base + n - pos));
        return;
    }
    if (uc->is_msg_done) {
        bool extra = (size_t)(llhttp_get_error_pos(&uc->parser) - buf->base) < (size_t)n;
        response_done(uc, !extra);
        return;
    }
    if (err == HPE_PAUSED) {
        /* the client went away (or wd_res_start failed): the server aborts the request */
        if (job->req == NULL || wd_res_started(job->req)) {
            conn_read(uc, false);
            return;
        }
    }
    if (err != HPE_OK) {
        char why[160];
        snprintf(why, sizeof why, "bad upstream response: %s", llhttp_errno_name(err));
        job_fail(job, 502, "bad upstream response\n", why, false);
    }
}

/* ---- readiness probe ----------------------------------------------------------------- */

static void probe_finish(struct http_state *st, bool ok)
{
    if (!st->probe_busy)
        return;
    st->probe_busy = false;
    uv_timer_stop(&st->probe_timer);
    if (st->probe_tcp_open) {
        st->probe_tcp_open = false;
        uv_close((uv_handle_t *)&st->probe_tcp, on_state_handle_closed);
    }
    if (!st->is_stopping)
        wd_supervise_probe_done(st->sv, ok);
}

static void on_probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_state *st = h->data;
    WD_UNUSED(suggested);
    size_t room = sizeof st->probe_buf - 1 - st->probe_len;
    *buf = uv_buf_init(st->probe_buf + st->probe_len, (unsigned int)room);
}

static void on_probe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct http_state *st = s->data;
    WD_UNUSED(buf);
    if (n < 0) {
        probe_finish(st, false);
        return;
    }
    st->probe_len += (size_t)n;
    st->probe_buf[st->probe_len] = '\0';
    if (strchr(st->probe_buf, '\n') == NULL && st->probe_len < sizeof st->probe_buf - 1)
        return;
    bool ok =
        strncmp(st->probe_buf, "HTTP/1.", 7) == 0 && st->probe_len > 12 && st->probe_buf[9] == '2';
    probe_finish(st, ok);
}

static void on_probe_connected(uv_connect_t *c, int status)
{
    struct http_state *st = c->data;
    if (!st->probe_busy)
        return;
    if (status < 0 || st->cfg->ready_path == NULL) {
        probe_finish(st, status == 0);
        return;
    }
    st->probe_len = 0;
    int n = snprintf(st->probe_buf, sizeof st->probe_buf,
                     "GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", st->base,
                     st->cfg->ready_path, st->hostport);
    if (n <= 0 || (size_t)n >= sizeof st->probe_buf) {
        probe_finish(st, false);
        return;
    }
    uv_buf_t b = uv_buf_init(st->probe_buf, (unsigned int)n);
    /* uv_try_write: the request is tiny and the socket fresh */
    if (uv_try_write((uv_stream_t *)&st->probe_tcp, &b, 1) != n) {
        probe_finish(st, false);
        return;
    }
    memset(st->probe_buf, 0, sizeof st->probe_buf);
    uv_read_start((uv_stream_t *)&st->probe_tcp, on_probe_alloc, on_probe_read);
}

static void on_probe_timeout(uv_timer_t *t)
{
    probe_finish(t->data, false);
}

static void probe(void *arg)
{
    struct http_state *st = arg;
    st->probe_busy = true;
    uv_tcp_init(st->app->loop, &st->probe_tcp);
    st->probe_tcp.data = st;
    st->probe_tcp_open = true;
    st->open_handles++;
    st->probe_connect.data = st;
    uv_timer_start(&st->probe_timer, on_probe_timeout, PROBE_TIMEOUT_MS, 0);
    if (uv_tcp_connect(&st->probe_connect, &st->probe_tcp, (const struct sockaddr *)&st->addr,
                       on_probe_connected) < 0)
        probe_finish(st, false);
}

static void on_sv_state(void *arg, bool is_up, bool is_final)
{
    struct http_state *st = arg;
    if (!is_up) {
        /* connections to a dead upstream are useless */
        for (struct upconn *uc = st->conns; uc != NULL; uc = uc->next) {
            if (uc->is_idle)
                conn_close(uc);
        }
        if (!is_final)
            return;
    }
    /* ready (or gone for good): every waiter goes on */
    while (st->waiters != NULL) {
        struct job *job = st->waiters;
        job_unwait(job);
        job_connect(job);
    }
}

/* ---- the mode interface -------------------------------------------------------------- */

/* RFC 9110 7.8: `Connection: upgrade` plus a non-empty Upgrade on an HTTP/1.1 request without a
 * body (the tunnel would start after it); anything else is proxied as a plain request. */
static bool wants_upgrade(const struct wd_http1_head *head)
{
    const char *connection = wd_req_header(head, "Connection");
    const char *upgrade = wd_req_header(head, "Upgrade");
    return connection != NULL && is_listed(connection, "upgrade") && upgrade != NULL &&
           upgrade[strspn(upgrade, " \t")] != '\0' && head->http_major == 1 &&
           head->http_minor >= 1 && head->content_length == 0 && !name_is(head->method, "CONNECT");
}

static int build_head(struct job *job)
{
    struct http_state *st = job->st;
    const struct wd_req *req = job->req;
    const struct wd_http1_head *head = req->head;
    struct wd_buf *b = &job->head;
    const char *connection = wd_req_header(head, "Connection");
    int rc = 0;
    rc |= buf_str(b, head->method);
    rc |= buf_str(b, " ");
    rc |= buf_str(b, st->base);
    rc |= buf_str(b, head->target);
    rc |= buf_str(b, " HTTP/1.1\r\n");
    struct wd_buf xff;
    wd_buf_init(&xff, 0);
    for (size_t i = 0; i < head->nheaders; i++) {
        const char *n = head->headers[i].name, *v = head->headers[i].value;
        if (name_is(n, "X-Forwarded-For")) {
            if (xff.len > 0)
                rc |= buf_str(&xff, ", ");
            rc |= buf_str(&xff, v);
            continue;
        }
        if (name_is(n, "Content-Length"))
            job->has_cl = true;
        if (is_hop(n, connection) || name_is(n, "X-Forwarded-Proto") ||
            name_is(n, "X-Forwarded-Host") || name_is(n, "X-Deadline") || name_is(n, "X-Call-Id") ||
            name_is(n, "Expect"))
            continue;
        rc |= buf_hdr(b, n, v);
    }
    if (job->is_upgrade) {
        rc |= buf_hdr(b, "Connection", "Upgrade");
        rc |= buf_hdr(b, "Upgrade", wd_req_header(head, "Upgrade"));
    }
    if (head->host[0] == '\0')
        rc |= buf_hdr(b, "Host", st->hostport);
    if (xff.len > 0)
        rc |= buf_str(&xff, ", ");
    rc |= buf_str(&xff, req->peer);
    rc |= wd_buf_append(&xff, "", 1);
    if (rc == 0)
        rc |= buf_hdr(b, "X-Forwarded-For", xff.data);
    wd_buf_free(&xff);
    rc |= buf_hdr(b, "X-Forwarded-Proto", "http");
    if (head->host[0] != '\0')
        rc |= buf_hdr(b, "X-Forwarded-Host", head->host);
    if (req->deadline[0] != '\0')
        rc |= buf_hdr(b, "X-Deadline", req->deadline);
    rc |= buf_hdr(b, "X-Call-Id", req->call_id);
    return rc;
}

static void on_headers(void *state, struct wd_req *req)
{
    struct http_state *st = state;
    struct job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        wd_res_send(req, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    job->st = st;
    job->req = req;
    req->mode_data = job;
    wd_buf_init(&job->head, 0);
    wd_buf_init(&job->body, 0);
    wd_buf_init(&job->rhead, MAX_RESP_HEAD);
    job->is_head = req->is_head;
    job->content_length = req->head->content_length;
    job->is_buffered = st->cfg->buffer_http;
    job->is_chunked = !job->is_buffered && job->content_length < 0;
    job->is_upgrade = wants_upgrade(req->head);
    uv_timer_init(st->app->loop, &job->timer);
    job->timer.data = job;
    job->timer_open = true;
    st->open_handles++;
    WD_LIST_PUSH(st->jobs, job);
    if (build_head(job) != 0) {
        job_fail(job, 500, "out of memory\n", "out of memory", false);
        return;
    }
    if (job->content_length > 0)
        job->has_cl = true;
    job->timeout_ms = wd_req_timeout_ms(st->cfg, req->head);
    uint64_t wait = job->timeout_ms ? job->timeout_ms : WAIT_CAP_MS;
    uv_timer_start(&job->timer, on_deadline, wait, 0);
    job_connect(job);
}

static void on_body(struct wd_req *req, const char *at, size_t len)
{
    struct job *job = req->mode_data;
    if (job == NULL || job->req == NULL)
        return;
    int rc = 0;
    if (!job->is_buffered && job->head_sent && job->uc != NULL) {
        rc = send_body(job, at, len);
        if (rc == 0 && job->uc->write_queued > BODY_HIGH && !job->paused_client) {
            job->paused_client = true;
            wd_req_pause(req);
        }
    } else {
        rc = wd_buf_append(&job->body, at, len);
        if (rc == 0 && !job->is_buffered && job->body.len > BODY_HIGH && !job->paused_client) {
            job->paused_client = true;
            wd_req_pause(req);
        }
    }
    if (rc < 0)
        job_fail(job, 502, "upstream connection failed\n", uv_strerror(rc), false);
}

static void on_end(struct wd_req *req)
{
    struct job *job = req->mode_data;
    if (job == NULL || job->req == NULL)
        return;
    job->body_ended = true;
    if (job->uc == NULL || !job->uc->is_connected)
        return; /* sent once connected */
    if (job->is_buffered) {
        job_send_head(job);
    } else if (job->head_sent && job->is_chunked) {
        int rc = conn_write(job->uc, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
        if (rc < 0)
            job_fail(job, 502, "upstream connection failed\n", uv_strerror(rc), false);
    }
}

static void on_drain(struct wd_req *req)
{
    struct job *job = req->mode_data;
    if (job != NULL && job->uc != NULL)
        conn_read(job->uc, true);
}

static void on_abort(struct wd_req *req)
{
    struct job *job = req->mode_data;
    if (job == NULL || job->req != req)
        return;
    job->req = NULL;
    job_unwait(job);
    if (job->uc != NULL)
        job_detach_conn(job, false); /* the upstream learns the caller is gone */
    job_maybe_free(job);
}

static bool is_ready(void *state)
{
    WD_UNUSED(state);
    return false; /* wd_app_set_ready once the upstream answers */
}

static int start(struct wd_app *app, void **state)
{
    const struct wd_config *cfg = app->cfg;
    if (cfg->fprocess_argv == NULL || cfg->fprocess_argc == 0) {
        wd_log_error("mode http: fprocess is required");
        return UV_EINVAL;
    }
    struct http_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return UV_ENOMEM;
    st->app = app;
    st->cfg = cfg;
    int rc = parse_upstream(st, cfg->upstream_url ? cfg->upstream_url : "");
    if (rc < 0) {
        free(st->base);
        free(st);
        return rc;
    }
    llhttp_settings_init(&st->settings);
    st->settings.on_header_field = on_r_field;
    st->settings.on_header_field_complete = on_r_field_done;
    st->settings.on_header_value = on_r_value;
    st->settings.on_header_value_complete = on_r_value_done;
    st->settings.on_headers_complete = on_r_headers_done;
    st->settings.on_body = on_r_body;
    st->settings.on_message_complete = on_r_message_done;
    struct wd_supervise_opts o = {.app = app, .probe = probe, .on_state = on_sv_state, .arg = st};
    rc = wd_supervise_start(&st->sv, &o);
    if (rc < 0) {
        free(st->base);
        free(st);
        return rc;
    }
    /* The first probe runs from the loop, after start() returned. */
    uv_timer_init(app->loop, &st->probe_timer);
    st->probe_timer.data = st;
    st->open_handles = 1;
    wd_log_info("mode http: upstream %s%s", st->hostport, st->base);
    *state = st;
    return 0;
}

static void on_sv_stopped(void *arg)
{
    struct http_state *st = arg;
    st->sv_done = true;
    stop_maybe_done(st);
}

static void stop(void *state, wd_done_cb done, void *arg)
{
    struct http_state *st = state;
    st->is_stopping = true;
    st->stop_done = done;
    st->stop_arg = arg;
    probe_finish(st, false);
    uv_close((uv_handle_t *)&st->probe_timer, on_state_handle_closed);
    while (st->waiters != NULL) {
        struct job *job = st->waiters;
        job_fail(job, 503, "shutting down\n", "shutting down", true);
    }
    for (struct job *job = st->jobs; job != NULL; job = job->next) {
        if (job->req != NULL)
            job_fail(job, 503, "shutting down\n", "shutting down", true);
    }
    for (struct upconn *uc = st->conns; uc != NULL; uc = uc->next)
        conn_close(uc);
    wd_supervise_stop(st->sv, on_sv_stopped, st);
}

const struct wd_mode wd_mode_http = {
    .name = "http",
    .start = start,
    .is_ready = is_ready,
    .on_headers = on_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_drain = on_drain,
    .on_abort = on_abort,
    .on_tunnel = on_tunnel,
    .stop = stop,
};
