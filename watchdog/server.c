/* server.c: owns the listener, every client connection, read/write timeouts, keep-alive and
 * pipelining, the internal routes and max_inflight, and implements the wd_req_* / wd_res_*
 * calls of mode.h. It never spawns a process and knows no mode by name.
 *
 * One connection serves one request at a time. Bytes that arrive after the end of the current
 * request (pipelining) wait in `pending` until the response is done; responses therefore go
 * out in request order. A connection is freed in the close callback of its last handle. */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "config.h"
#include "http1.h"
#include "log.h"
#include "buf.h"
#include "metrics.h"
#include "mode.h"

#define HIGH_WATER ((size_t)256 * 1024) /* wd_res_write asks the mode to wait above this */
#define LOW_WATER ((size_t)64 * 1024)   /* on_drain once the queue is back below this */
#define PENDING_MAX ((size_t)64 * 1024) /* pipelined bytes held while a request runs */

enum req_kind { REQ_NONE = 0, REQ_MODE, REQ_INTERNAL };

struct conn {
    uv_tcp_t tcp;
    uv_timer_t read_timer;  /* read_timeout: idle wait, then head + body */
    uv_timer_t write_timer; /* write_timeout: from head complete to response end */
    uv_shutdown_t shutdown;
    int open_handles;
    struct wd_server *srv;
    struct conn *prev, *next;
    struct wd_http1 *parser;

    struct wd_req req;               /* lent to the mode while mode_attached */
    struct wd_http1_head probe_head; /* /_/ready rewritten to ready_path */
    enum req_kind kind;
    bool mode_attached; /* the mode may call us for req; cleared on end/abort */
    bool body_to_mode;
    bool counted;        /* holds a max_inflight slot */
    bool parser_stopped; /* message complete, waiting for the response */
    bool body_done;
    bool res_started, res_done;
    bool res_chunked, res_no_body;
    bool keep_alive;
    bool want_drain;
    bool paused_by_mode, paused_by_pending, paused_by_queue, paused_by_flush, is_reading;
    bool awaiting_flush; /* request done, answer still queued: idle time starts when flushed */
    bool in_feed, is_closing, is_shutting;
    bool is_metrics; /* accepted on the metrics listener: only /metrics is served */
    char peer[48];   /* client address, copied into each request */
    bool is_queued;  /* waiting for a max_inflight slot (FIFO) */
    struct conn *qnext;
    uint64_t queued_ms;  /* uv_now() when queued */
    struct wd_buf qbody; /* body bytes that arrived while queued */
    int status;
    uint64_t bytes_in, bytes_out;
    char *pending;
    size_t pending_len;
    char *note; /* failure text the mode reported, logged with the request */
};

struct wd_server {
    struct wd_app *app;
    const struct wd_config *cfg;
    struct wd_health *health;
    uv_tcp_t listener;
    bool listener_open;
    int port;
    uv_tcp_t metrics_listener;
    bool metrics_open;
    int metrics_port;
    struct conn *qhead, *qtail; /* FIFO of requests waiting for a slot */
    size_t qlen;
    uv_timer_t queue_timer; /* expires the queue head; also runs dispatches */
    bool queue_timer_open;
    uint64_t id_seed;
    struct conn *conns;
    size_t nconns;
    size_t inflight;
    bool draining;
    wd_done_cb drain_done;
    void *drain_arg;
    uint64_t next_id;
    struct wd_http1_limits limits;
    char readbuf[64 * 1024];
};

static void conn_close(struct conn *c);
static void conn_feed(struct conn *c, const char *data, size_t len);
static void maybe_complete(struct conn *c);
static void start_idle(struct conn *c);
static void conn_next(struct conn *c);
static void start_reading(struct conn *c);
static void on_write_timeout(uv_timer_t *t);
static void log_request(struct conn *c);

/* ---- small helpers ------------------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {413, "Request Entity Too Large"},
        {415, "Unsupported Media Type"},
        {416, "Requested Range Not Satisfiable"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(reasons); i++) {
        if (reasons[i].code == status)
            return reasons[i].text;
    }
    return status < 300 ? "OK" : status < 500 ? "Error" : "Server Error";
}

static size_t http_date(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return strftime(out, outlen, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static struct conn *conn_of(struct wd_req *req)
{
    return WD_CONTAINER_OF(req, struct conn, req);
}

static void update_reading(struct conn *c)
{
    bool want = !c->is_closing && !c->is_shutting && !c->paused_by_mode && !c->paused_by_pending &&
                !c->paused_by_queue && !c->paused_by_flush;
    if (want == c->is_reading)
        return;
    c->is_reading = want;
    if (!want)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        start_reading(c);
}

/* ---- writing ------------------------------------------------------------------------- */

struct write_req {
    uv_write_t w;
    struct conn *c;
    char data[];
};

static void on_write(uv_write_t *w, int status)
{
    struct write_req *wr = WD_CONTAINER_OF(w, struct write_req, w);
    struct conn *c = wr->c;
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->want_drain && c->tcp.write_queue_size < LOW_WATER) {
        c->want_drain = false;
        if (c->mode_attached && c->srv->app->mode->on_drain != NULL)
            c->srv->app->mode->on_drain(&c->req);
    }
    if (c->awaiting_flush && c->tcp.write_queue_size == 0) {
        c->awaiting_flush = false;
        if (c->kind == REQ_NONE)
            start_idle(c);
    }
    if (c->paused_by_flush && c->tcp.write_queue_size < LOW_WATER) {
        c->paused_by_flush = false;
        conn_next(c);
    }
}

/* Queue bytes on the socket: written at once when the socket takes them, else copied. */
static int conn_write(struct conn *c, uv_buf_t *bufs, unsigned int nbufs)
{
    if (c->is_closing || c->is_shutting)
        return UV_ECANCELED;
    size_t total = 0;
    for (unsigned int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (c->tcp.write_queue_size == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return n;
        }
        size_t done = n > 0 ? (size_t)n : 0;
        if (done == total)
            return 0;
        /* drop what was written from the front of bufs */
        while (done > 0) {
            if (done >= bufs[0].len) {
                done -= bufs[0].len;
                total -= bufs[0].len;
                bufs++;
                nbufs--;
            } else {
                bufs[0].base += done;
                bufs[0].len -= done;
                total -= done;
                done = 0;
            }
        }
    }
    struct write_req *wr = malloc(sizeof *wr + total);
    if (wr == NULL) {
        conn_close(c);
        return UV_ENOMEM;
    }
    wr->c = c;
    size_t off = 0;
    for (unsigned int i = 0; i < nbufs; i++) {
        memcpy(wr->data + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    uv_buf_t one = uv_buf_init(wr->data, (unsigned int)total);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &one, 1, on_write);
    if (rc < 0) {
        free(wr);
        conn_close(c);
        return rc;
    }
    return 0;
}

static int conn_write_str(struct conn *c, const char *s, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned int)len);
    return conn_write(c, &b, 1);
}

/* ---- closing ------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct wd_server *srv = c->srv;
    wd_http1_free(c->parser);
    wd_buf_free(&c->qbody);
    free(c->pending);
    free(c->note);
    free(c);
    if (srv->draining && srv->nconns == 0 && srv->drain_done != NULL) {
        wd_done_cb done = srv->drain_done;
        srv->drain_done = NULL;
        done(srv->drain_arg);
    }
}

static void queue_remove(struct conn *c);
static void queue_kick(struct wd_server *srv);

static void release_slot(struct conn *c)
{
    queue_remove(c);
    if (c->counted) {
        c->counted = false;
        c->srv->inflight--;
        wd_metrics_inflight(c->srv->app->metrics, -1);
        queue_kick(c->srv); /* a slot is free: the queue head may run */
    }
}

static void detach_mode(struct conn *c)
{
    if (c->mode_attached) {
        c->mode_attached = false;
        c->srv->app->mode->on_abort(&c->req);
    }
}

static void conn_close(struct conn *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    detach_mode(c);
    release_slot(c);
    struct wd_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->read_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->write_timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    WD_UNUSED(status);
    conn_close(s->data);
}

/* Close once every queued byte is out (the response was written with Connection: close). */
static void conn_close_after_flush(struct conn *c)
{
    if (c->is_closing || c->is_shutting)
        return;
    c->is_shutting = true;
    detach_mode(c);
    release_slot(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

/* ---- responses ----------------------------------------------------------------------- */

int wd_res_start(struct wd_req *req, int status, const struct wd_header *h, size_t n,
                 int64_t content_length)
{
    struct conn *c = conn_of(req);
    const struct wd_http1_head *head = c->req.head;
    if (c->res_started)
        return UV_EALREADY;
    c->res_started = true;
    c->status = status;
    if ((!c->body_done && head->content_length != 0) || c->srv->draining)
        c->keep_alive = false; /* the rest of the body is discarded, then we close */
    bool http10 = head->http_major == 1 && head->http_minor == 0;
    c->res_no_body = req->is_head || status == 204 || status == 304 || status < 200;
    c->res_chunked = false;

    size_t cap = 256 + sizeof c->req.call_id;
    for (size_t i = 0; i < n; i++)
        cap += strlen(h[i].name) + strlen(h[i].value) + 4;
    char stackbuf[2048];
    char *buf = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (buf == NULL) {
        conn_close(c);
        return UV_ENOMEM;
    }
    size_t len =
        (size_t)snprintf(buf, cap, "HTTP/1.1 %d %s\r\nDate: ", status, reason_phrase(status));
    len += http_date(buf + len, cap - len);
    buf[len++] = '\r';
    buf[len++] = '\n';
    if (c->kind == REQ_MODE && c->req.call_id[0] != '\0')
        len += (size_t)snprintf(buf + len, cap - len, "X-Call-Id: %s\r\n", c->req.call_id);
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(h[i].name), vl = strlen(h[i].value);
        memcpy(buf + len, h[i].name, nl);
        len += nl;
        buf[len++] = ':';
        buf[len++] = ' ';
        memcpy(buf + len, h[i].value, vl);
        len += vl;
        buf[len++] = '\r';
        buf[len++] = '\n';
    }
    bool has_framing = !(status == 204 || status == 304 || status < 200);
    if (has_framing && content_length >= 0) {
        len += (size_t)snprintf(buf + len, cap - len, "Content-Length: %lld\r\n",
                                (long long)content_length);
    } else if (!has_framing || req->is_head) {
        /* no body, or HEAD of unknown length: neither header (as Go) */
    } else if (!http10) {
        c->res_chunked = true;
        len += (size_t)snprintf(buf + len, cap - len, "Transfer-Encoding: chunked\r\n");
    } else {
        c->keep_alive = false; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    if (!c->keep_alive)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: close\r\n");
    else if (http10)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: keep-alive\r\n");
    buf[len++] = '\r';
    buf[len++] = '\n';
    int rc = conn_write_str(c, buf, len);
    if (buf != stackbuf)
        free(buf);
    return rc;
}

int wd_res_write(struct wd_req *req, const void *data, size_t len)
{
    struct conn *c = conn_of(req);
    if (c->is_closing || c->is_shutting)
        return UV_ECANCELED;
    if (len == 0)
        return 0;
    c->bytes_out += len;
    if (c->res_no_body)
        return 0;
    int rc;
    if (c->res_chunked) {
        char pre[24];
        int pn = snprintf(pre, sizeof pre, "%zx\r\n", len);
        uv_buf_t b[3] = {uv_buf_init(pre, (unsigned int)pn),
                         uv_buf_init((char *)data, (unsigned int)len), uv_buf_init("\r\n", 2)};
        rc = conn_write(c, b, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
        rc = conn_write(c, &b, 1);
    }
    if (rc < 0)
        return rc;
    if (c->tcp.write_queue_size > HIGH_WATER) {
        c->want_drain = true;
        return 1;
    }
    return 0;
}

static void finish_response(struct conn *c)
{
    c->res_done = true;
    c->mode_attached = false;
    if (c->paused_by_mode) {
        /* The mode paused the body and is gone: the rest of the body is ours to discard. */
        c->paused_by_mode = false;
        update_reading(c);
    }
    maybe_complete(c);
}

void wd_res_end(struct wd_req *req)
{
    struct conn *c = conn_of(req);
    if (c->res_chunked && !c->is_closing && !c->is_shutting)
        conn_write_str(c, "0\r\n\r\n", 5);
    finish_response(c);
}

/* Log the request (if it was a function call) and close after what is queued. */
static void end_and_close(struct conn *c)
{
    if (c->kind == REQ_MODE)
        log_request(c);
    c->kind = REQ_NONE;
    conn_close_after_flush(c);
}

void wd_res_abort(struct wd_req *req)
{
    struct conn *c = conn_of(req);
    c->keep_alive = false;
    c->res_done = true;
    c->mode_attached = false;
    if (c->status == 0)
        c->status = 500;
    end_and_close(c);
}

void wd_res_send(struct wd_req *req, int status, const struct wd_header *h, size_t n,
                 const void *body, size_t len)
{
    if (wd_res_start(req, status, h, n, (int64_t)len) == 0)
        wd_res_write(req, body, len);
    wd_res_end(req);
}

bool wd_res_started(const struct wd_req *req)
{
    return WD_CONTAINER_OF(req, struct conn, req)->res_started;
}

void wd_req_note_error(struct wd_req *req, const char *what)
{
    struct conn *c = conn_of(req);
    free(c->note);
    c->note = strdup(what);
}

void wd_req_pause(struct wd_req *req)
{
    struct conn *c = conn_of(req);
    c->paused_by_mode = true;
    update_reading(c);
}

void wd_req_resume(struct wd_req *req)
{
    struct conn *c = conn_of(req);
    c->paused_by_mode = false;
    update_reading(c);
}

/* Answer from the server itself (internal routes and refusals). */
static void send_simple(struct conn *c, int status, const char *ctype, const char *body)
{
    struct wd_header h[1] = {{"Content-Type", ctype}};
    size_t n = 0;
    if (ctype != NULL)
        n = 1;
    wd_res_send(&c->req, status, h, n, body, body ? strlen(body) : 0);
}

/* ---- the request cycle --------------------------------------------------------------- */

static bool is_kube_probe(const struct wd_http1_head *head)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, "User-Agent") == 0)
            return strncmp(head->headers[i].value, "kube-probe", 10) == 0;
    }
    return false;
}

static void log_request(struct conn *c)
{
    const struct wd_http1_head *head = c->req.head;
    if (head == NULL || c->req.is_ready_probe)
        return; /* probes are neither counted nor logged, as the peers */
    double secs = (double)(uv_hrtime() - c->req.start_ns) / 1e9;
    struct wd_metrics *m = c->srv->app->metrics;
    wd_metrics_request(m, head->method, c->status, secs);
    wd_metrics_bytes(m, c->bytes_in, c->bytes_out);
    if (c->status == 504 || c->status == 408)
        wd_metrics_timed_out(m);
    if (is_kube_probe(head))
        return;
    struct wd_log_req r = {
        .method = head->method,
        .path = head->target,
        .status = c->status,
        .seconds = secs,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .call_id = c->req.call_id[0] ? c->req.call_id : NULL,
        .mode = c->srv->cfg->mode_name,
        .error = c->note,
    };
    wd_log_request(&r);
}

static void maybe_complete(struct conn *c)
{
    if (!(c->res_done && c->body_done && c->parser_stopped) || c->kind == REQ_NONE)
        return;
    if (c->kind == REQ_MODE)
        log_request(c);
    c->kind = REQ_NONE;
    release_slot(c);
    free(c->note);
    c->note = NULL;
    if (c->is_closing || c->is_shutting)
        return;
    if (!c->keep_alive || c->srv->draining) {
        uv_timer_stop(&c->write_timer);
        conn_close_after_flush(c);
        return;
    }
    wd_http1_next(c->parser);
    c->parser_stopped = false;
    c->req.head = NULL;
    if (c->tcp.write_queue_size == 0) {
        start_idle(c);
    } else {
        /* The answer is still going out under write_timeout; the idle wait starts once it is
         * flushed. A client that sends requests without reading the answers gets nothing more
         * parsed until it reads (memory stays bounded). */
        c->awaiting_flush = true;
        if (c->tcp.write_queue_size > HIGH_WATER) {
            c->paused_by_flush = true;
            update_reading(c);
        }
    }
    if (c->in_feed || c->paused_by_flush)
        return; /* conn_feed goes on with the bytes it holds; or on_write resumes */
    conn_next(c);
}

/* Idle keep-alive connection: the wait for the next request counts against read_timeout. */
static void start_idle(struct conn *c)
{
    uv_timer_stop(&c->write_timer);
    if (c->srv->cfg->read_timeout_ms > 0)
        uv_timer_again(&c->read_timer);
}

/* Go on with the next request: pipelined bytes first, then the socket. */
static void conn_next(struct conn *c)
{
    if (c->is_closing || c->is_shutting)
        return;
    if (c->pending_len > 0) {
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, p, n);
        free(p);
    }
    c->paused_by_pending = false;
    update_reading(c);
}

static const char *method_of(const struct wd_http1_head *head)
{
    return head->method;
}

/* The metrics listener serves /metrics only (as the peers: anything else is a 404). */
static void route_metrics(struct conn *c, const char *path)
{
    c->kind = REQ_INTERNAL;
    if (strcmp(path, "/metrics") != 0) {
        send_simple(c, 404, "text/plain; charset=utf-8", "404 page not found\n");
        return;
    }
    struct wd_buf out;
    wd_buf_init(&out, 0);
    if (wd_metrics_render(c->srv->app->metrics, &out) < 0) {
        wd_buf_free(&out);
        send_simple(c, 500, "text/plain; charset=utf-8", "cannot render metrics\n");
        return;
    }
    struct wd_header h[] = {{"Content-Type", "text/plain; version=0.0.4; charset=utf-8"}};
    wd_res_send(&c->req, 200, h, 1, out.data, out.len);
    wd_buf_free(&out);
}

static void route_internal(struct conn *c, const char *path)
{
    struct wd_server *srv = c->srv;
    c->kind = REQ_INTERNAL;
    if (strcmp(method_of(c->req.head), "GET") != 0) {
        send_simple(c, 405, NULL, NULL);
        return;
    }
    bool healthy = wd_health_is_healthy(srv->health);
    if (strcmp(path, "/_/health") == 0) {
        if (healthy)
            send_simple(c, 200, "text/plain; charset=utf-8", "OK");
        else
            send_simple(c, 503, NULL, NULL);
        return;
    }
    /* /_/ready, OW semantics: 503, 429, proxied ready_path, or 200. */
    if (!healthy) {
        send_simple(c, 503, NULL, NULL);
        return;
    }
    if (srv->cfg->max_inflight > 0 && srv->inflight >= srv->cfg->max_inflight &&
        srv->qlen >= srv->cfg->max_queue) {
        send_simple(c, 429, NULL, NULL); /* at the limit and no room left to wait */
        return;
    }
    if (srv->cfg->ready_path == NULL) {
        send_simple(c, 200, NULL, NULL);
        return;
    }
    c->probe_head = *c->req.head;
    c->probe_head.method = "GET";
    c->probe_head.target = srv->cfg->ready_path;
    c->probe_head.path = srv->cfg->ready_path;
    const char *q = strchr(srv->cfg->ready_path, '?');
    c->probe_head.query = q ? q + 1 : "";
    c->probe_head.content_length = 0;
    c->probe_head.expect_continue = false;
    c->req.head = &c->probe_head;
    c->req.is_ready_probe = true;
    c->kind = REQ_MODE;
    c->mode_attached = true;
    c->body_to_mode = false;
    srv->app->mode->on_headers(srv->app->mode_state, &c->req);
    if (c->mode_attached && !c->is_closing)
        srv->app->mode->on_end(&c->req); /* the probe has no body */
}

/* X-Call-Id: the client's when it is a sane token, else a fresh one (UUID-shaped, from a
 * per-process random seed and a counter: unique and cheap). */
static void set_call_id(struct wd_server *srv, struct wd_req *req, const struct wd_http1_head *head)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, "X-Call-Id") != 0)
            continue;
        const char *v = head->headers[i].value;
        size_t n = strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:");
        if (n > 0 && v[n] == '\0' && n < sizeof req->call_id) {
            memcpy(req->call_id, v, n + 1);
            return;
        }
        break;
    }
    uint64_t a = srv->id_seed, b = req->id;
    snprintf(req->call_id, sizeof req->call_id, "%08llx-%04llx-%04llx-%04llx-%012llx",
             (unsigned long long)(a >> 32), (unsigned long long)((a >> 16) & 0xffff),
             (unsigned long long)(a & 0xffff), (unsigned long long)((b >> 48) & 0xffff),
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* X-Deadline: when the caller gives up, i.e. exec_timeout (else write_timeout) from now. */
static void set_deadline(struct wd_server *srv, struct wd_req *req)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t budget =
        srv->cfg->exec_timeout_ms ? srv->cfg->exec_timeout_ms : srv->cfg->write_timeout_ms;
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + budget;
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(req->deadline, sizeof req->deadline, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(req->deadline + n, sizeof req->deadline - n, ".%03lluZ",
             (unsigned long long)(ms % 1000));
    req->deadline_ms = ms;
}

/* 429 as faas-middleware's limiter, plus Retry-After. */
static void send_429(struct conn *c)
{
    struct wd_server *srv = c->srv;
    char body[96];
    snprintf(body, sizeof body,
             "Concurrent request limit exceeded. Max concurrent requests: %llu\n",
             (unsigned long long)srv->cfg->max_inflight);
    struct wd_header h[] = {{"Content-Type", "text/plain"},
                            {"X-OpenFaaS-Internal", "faas-middleware"},
                            {"Retry-After", "1"}};
    wd_metrics_rejected(srv->app->metrics);
    c->kind = REQ_MODE; /* logged and counted like a function request */
    wd_res_send(&c->req, 429, h, WD_ARRAY_LEN(h), body, strlen(body));
}

/* Hand a request that holds a slot to the mode, with whatever body arrived meanwhile. */
static void dispatch(struct conn *c)
{
    struct wd_server *srv = c->srv;
    const struct wd_http1_head *head = c->req.head;
    srv->inflight++;
    wd_metrics_inflight(srv->app->metrics, 1);
    c->counted = true;
    c->mode_attached = true;
    c->body_to_mode = true;
    set_deadline(srv, &c->req);
    if (head->expect_continue && head->http_minor >= 1 && !c->body_done)
        conn_write_str(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    /* The mode may answer at once (405), and the next pipelined request may then start on
     * this connection before on_headers returns: from then on, nothing here is ours. */
    uint64_t id = c->req.id;
    struct wd_buf held = c->qbody;
    bool ended = c->body_done;
    wd_buf_init(&c->qbody, 0);
    srv->app->mode->on_headers(srv->app->mode_state, &c->req);
    if (held.len > 0 && c->req.id == id && c->mode_attached && !c->is_closing)
        srv->app->mode->on_body(&c->req, held.data, held.len);
    wd_buf_free(&held);
    if (ended && c->req.id == id && c->mode_attached && !c->is_closing)
        srv->app->mode->on_end(&c->req);
    if (c->req.id != id)
        return;
    if (c->paused_by_queue) {
        c->paused_by_queue = false;
        update_reading(c);
    }
}

static void queue_push(struct conn *c)
{
    struct wd_server *srv = c->srv;
    c->is_queued = true;
    c->qnext = NULL;
    c->queued_ms = uv_now(srv->app->loop);
    wd_buf_free(&c->qbody);
    if (srv->qtail)
        srv->qtail->qnext = c;
    else
        srv->qhead = c;
    srv->qtail = c;
    srv->qlen++;
    wd_metrics_queue(srv->app->metrics, 1);
    queue_kick(srv);
}

static void queue_remove(struct conn *c)
{
    struct wd_server *srv = c->srv;
    if (!c->is_queued)
        return;
    c->is_queued = false;
    struct conn **pp = &srv->qhead, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp == c)
        *pp = c->qnext;
    if (srv->qtail == c)
        srv->qtail = prev;
    c->qnext = NULL;
    srv->qlen--;
    wd_metrics_queue(srv->app->metrics, -1);
}

/* The queue timer runs from the loop, never inside another request's callbacks: it starts
 * the head of the queue when a slot is free, and answers 429 to waits past queue_timeout. */
static void on_queue_timer(uv_timer_t *t)
{
    struct wd_server *srv = t->data;
    uint64_t now = uv_now(srv->app->loop);
    uint64_t qt = srv->cfg->queue_timeout_ms;
    while (srv->qhead != NULL) {
        struct conn *c = srv->qhead;
        bool has_slot = srv->inflight < srv->cfg->max_inflight;
        if (has_slot) {
            queue_remove(c);
            wd_metrics_queue_wait(srv->app->metrics, (double)(now - c->queued_ms) / 1e3);
            dispatch(c);
            continue;
        }
        if (qt > 0 && now - c->queued_ms >= qt) {
            queue_remove(c);
            wd_buf_free(&c->qbody);
            wd_req_note_error(&c->req, "queue_timeout passed while waiting for a slot");
            c->paused_by_queue = false;
            send_429(c);
            if (!c->is_closing && !c->is_shutting)
                update_reading(c);
            continue;
        }
        if (qt > 0)
            uv_timer_start(&srv->queue_timer, on_queue_timer, qt - (now - c->queued_ms), 0);
        return;
    }
}

static void queue_kick(struct wd_server *srv)
{
    if (srv->queue_timer_open && srv->qhead != NULL)
        uv_timer_start(&srv->queue_timer, on_queue_timer, 0, 0);
}

static int on_head(void *arg, const struct wd_http1_head *head)
{
    struct conn *c = arg;
    struct wd_server *srv = c->srv;
    if (c->is_closing)
        return -1;
    memset(&c->req, 0, sizeof c->req);
    c->req.head = head;
    c->req.app = srv->app;
    c->req.id = ++srv->next_id;
    c->req.start_ns = uv_hrtime();
    c->req.is_head = strcmp(head->method, "HEAD") == 0;
    memcpy(c->req.peer, c->peer, sizeof c->peer);
    c->kind = REQ_NONE;
    c->body_done = false;
    c->res_started = c->res_done = false;
    c->res_chunked = c->res_no_body = false;
    c->status = 0;
    c->bytes_in = c->bytes_out = 0;
    c->want_drain = false;
    c->keep_alive = head->keep_alive && !srv->draining;
    if (srv->cfg->write_timeout_ms > 0)
        uv_timer_start(&c->write_timer, on_write_timeout, srv->cfg->write_timeout_ms, 0);

    const char *path = head->path;
    if (c->is_metrics) {
        route_metrics(c, path);
        return c->is_closing ? -1 : 0;
    }
    if (strcmp(path, "/_/health") == 0 || strcmp(path, "/_/ready") == 0) {
        route_internal(c, path);
        return c->is_closing ? -1 : 0;
    }
    c->kind = REQ_MODE;
    set_call_id(srv, &c->req, head);
    if (srv->cfg->max_inflight > 0 && srv->inflight >= srv->cfg->max_inflight) {
        if (srv->qlen < srv->cfg->max_queue)
            queue_push(c);
        else
            send_429(c);
        return c->is_closing ? -1 : 0;
    }
    dispatch(c);
    return c->is_closing ? -1 : 0;
}

static int on_body(void *arg, const char *at, size_t len)
{
    struct conn *c = arg;
    if (c->is_closing)
        return -1;
    c->bytes_in += len;
    if (c->is_queued) {
        /* Hold it for the mode; past one read's worth, stop reading until dispatch. */
        if (wd_buf_append(&c->qbody, at, len) < 0)
            return -1;
        if (c->qbody.len >= sizeof c->srv->readbuf && !c->paused_by_queue) {
            c->paused_by_queue = true;
            update_reading(c);
        }
        return 0;
    }
    if (c->mode_attached && c->body_to_mode)
        c->srv->app->mode->on_body(&c->req, at, len);
    return c->is_closing ? -1 : 0;
}

static int on_end(void *arg)
{
    struct conn *c = arg;
    if (c->is_closing)
        return -1;
    c->body_done = true;
    uv_timer_stop(&c->read_timer);
    if (c->mode_attached && c->body_to_mode)
        c->srv->app->mode->on_end(&c->req);
    return c->is_closing ? -1 : 0;
}

static const struct wd_http1_cbs parser_cbs = {on_head, on_body, on_end};

/* A request the parser refused: answer (if nothing was sent yet) and close. */
static void conn_bad_request(struct conn *c)
{
    const char *reason = NULL;
    int status = wd_http1_error(c->parser, &reason);
    if (status == 0 || c->is_closing)
        return;
    detach_mode(c);
    if (!c->res_started) {
        if (c->req.head == NULL) {
            /* no head yet: answer with a minimal request context */
            static const struct wd_http1_head none = {.method = "-",
                                                      .target = "-",
                                                      .path = "",
                                                      .query = "",
                                                      .host = "",
                                                      .http_major = 1,
                                                      .http_minor = 1};
            memset(&c->req, 0, sizeof c->req);
            c->req.head = &none;
            c->req.start_ns = uv_hrtime();
        }
        c->body_done = true;
        c->keep_alive = false;
        char body[160];
        snprintf(body, sizeof body, "%s\n", reason ? reason : reason_phrase(status));
        struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        if (wd_res_start(&c->req, status, h, 1, (int64_t)strlen(body)) == 0)
            conn_write_str(c, body, strlen(body));
        c->res_done = true;
    }
    wd_log_info("bad request status=%d reason=\"%s\"", status, reason ? reason : "");
    end_and_close(c);
}

static void conn_feed(struct conn *c, const char *data, size_t len)
{
    c->in_feed = true;
    while (len > 0 && !c->is_closing && !c->is_shutting) {
        if (c->parser_stopped || c->paused_by_flush) {
            char *p = realloc(c->pending, c->pending_len + len);
            if (p == NULL) {
                conn_close(c);
                break;
            }
            memcpy(p + c->pending_len, data, len);
            c->pending = p;
            c->pending_len += len;
            if (c->pending_len > PENDING_MAX) {
                c->paused_by_pending = true;
                update_reading(c);
            }
            break;
        }
        size_t used = 0;
        int rc = wd_http1_execute(c->parser, data, len, &used);
        data += used;
        len -= used;
        if (rc < 0) {
            conn_bad_request(c);
            break;
        }
        if (rc == WD_HTTP1_STOP) {
            c->parser_stopped = true;
            maybe_complete(c); /* may restart the parser for the next request */
        }
    }
    c->in_feed = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    WD_UNUSED(suggested);
    *buf = uv_buf_init(c->srv->readbuf, sizeof c->srv->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* Client gone (EOF or reset). A request still running is aborted: its handler is
         * killed, as nobody is left to read the answer (Go cancels the context likewise). */
        conn_close(c);
        return;
    }
    if (!c->parser_stopped && wd_http1_is_idle(c->parser) && c->srv->cfg->read_timeout_ms > 0)
        uv_timer_again(&c->read_timer); /* first byte of a request: its own read_timeout */
    conn_feed(c, buf->base, (size_t)nread);
}

static void start_reading(struct conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- timeouts ------------------------------------------------------------------------ */

static void on_read_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->kind == REQ_NONE || c->res_started) {
        conn_close(c); /* idle, or still in the head: close quietly as Go does */
        return;
    }
    /* The body did not arrive in time. */
    detach_mode(c);
    c->body_done = true;
    c->keep_alive = false;
    c->kind = REQ_MODE;
    wd_req_note_error(&c->req, "request body read timeout (read_timeout)");
    send_simple(c, 408, "text/plain; charset=utf-8", "read_timeout exceeded\n");
    end_and_close(c);
}

static void on_write_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->kind == REQ_NONE) {
        if (c->tcp.write_queue_size > 0)
            conn_close(c); /* the client did not take its answer within write_timeout */
        return;
    }
    if (c->is_queued) {
        /* Never got a slot: that is the queue's answer, not a gateway timeout. */
        queue_remove(c);
        wd_buf_free(&c->qbody);
        wd_req_note_error(&c->req, "write_timeout passed while waiting for a slot");
        c->body_done = true;
        c->keep_alive = false;
        send_429(c);
        end_and_close(c);
        return;
    }
    detach_mode(c);
    wd_req_note_error(&c->req, "response not complete within write_timeout");
    if (!c->res_started) {
        c->body_done = true;
        c->keep_alive = false;
        send_simple(c, 504, "text/plain; charset=utf-8", "write_timeout exceeded\n");
    }
    end_and_close(c);
}

/* ---- listener ------------------------------------------------------------------------ */

static void accept_conn(uv_stream_t *ls, struct wd_server *srv, bool is_metrics)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->srv = srv;
    c->is_metrics = is_metrics;
    uv_tcp_init(srv->app->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0 ||
        wd_http1_new(&c->parser, &parser_cbs, c, &srv->limits) < 0) {
        c->open_handles = 1;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0) {
        if (peer.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&peer, c->peer, sizeof c->peer);
        else
            uv_ip4_name((struct sockaddr_in *)&peer, c->peer, sizeof c->peer);
    }
    uv_timer_init(srv->app->loop, &c->read_timer);
    uv_timer_init(srv->app->loop, &c->write_timer);
    c->read_timer.data = c->write_timer.data = c;
    c->open_handles = 3;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    uint64_t rt = srv->cfg->read_timeout_ms;
    if (rt > 0)
        uv_timer_start(&c->read_timer, on_read_timeout, rt, rt);
    c->is_reading = true;
    start_reading(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    if (status == 0)
        accept_conn(ls, ls->data, false);
}

static void on_metrics_connection(uv_stream_t *ls, int status)
{
    if (status == 0)
        accept_conn(ls, ls->data, true);
}

static int resolve_bind(const char *host, int port, struct sockaddr_storage *ss)
{
    if (host == NULL || strcmp(host, "localhost") == 0)
        host = host ? "127.0.0.1" : "::";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return UV_EINVAL;
}

/* Bind and listen on bind_address:port; without a bind_address, the IPv6 wildcard (dual
 * stack) or, on hosts without IPv6, 0.0.0.0. Returns the bound port or a UV error. */
static int listen_on(struct wd_server *srv, uv_tcp_t *tcp, bool *is_open, int port,
                     uv_connection_cb cb)
{
    const char *host = srv->cfg->bind_address;
    struct sockaddr_storage ss;
    int rc = resolve_bind(host, port, &ss);
    if (rc < 0)
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        uv_tcp_init(srv->app->loop, tcp);
        tcp->data = srv;
        *is_open = true;
        rc = uv_tcp_bind(tcp, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)tcp, 1024, cb);
        if (rc == 0)
            break;
        uv_close((uv_handle_t *)tcp, NULL);
        *is_open = false;
        if (host != NULL || ss.ss_family != AF_INET6 || rc == UV_EADDRINUSE)
            return rc;
        uv_ip4_addr("0.0.0.0", port, (struct sockaddr_in *)&ss);
    }
    int len = sizeof ss;
    uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len);
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

int wd_server_start(struct wd_app *app, struct wd_health *health, char *err, size_t errlen)
{
    const struct wd_config *cfg = app->cfg;
    struct wd_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return UV_ENOMEM;
    srv->app = app;
    srv->cfg = cfg;
    srv->health = health;
    srv->limits.max_header_bytes = cfg->max_header_size;
    srv->limits.max_body_bytes = cfg->max_body_size;
    app->server = srv;
    uv_random(NULL, NULL, &srv->id_seed, sizeof srv->id_seed, 0, NULL);
    uv_timer_init(app->loop, &srv->queue_timer);
    srv->queue_timer.data = srv;
    srv->queue_timer_open = true;

    int rc = listen_on(srv, &srv->listener, &srv->listener_open, cfg->port, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "port: cannot listen on %s:%d: %s",
                 cfg->bind_address ? cfg->bind_address : "*", cfg->port, uv_strerror(rc));
        return rc;
    }
    srv->port = rc;
    if (cfg->metrics_port > 0) {
        rc = listen_on(srv, &srv->metrics_listener, &srv->metrics_open, cfg->metrics_port,
                       on_metrics_connection);
        if (rc < 0) {
            snprintf(err, errlen,
                     "metrics_port: cannot listen on %s:%d: %s (set metrics_port "
                     "to a free port, or 0 to disable metrics)",
                     cfg->bind_address ? cfg->bind_address : "*", cfg->metrics_port,
                     uv_strerror(rc));
            return rc;
        }
        srv->metrics_port = rc;
    }
    return 0;
}

int wd_server_port(const struct wd_server *srv)
{
    return srv->port;
}

int wd_server_metrics_port(const struct wd_server *srv)
{
    return srv->metrics_port;
}

void wd_server_close(struct wd_server *srv)
{
    if (srv->metrics_open)
        uv_close((uv_handle_t *)&srv->metrics_listener, NULL);
    srv->metrics_open = false;
    if (srv->queue_timer_open)
        uv_close((uv_handle_t *)&srv->queue_timer, NULL);
    srv->queue_timer_open = false;
    wd_server_abort_all(srv);
}

size_t wd_server_inflight(const struct wd_server *srv)
{
    return srv->inflight;
}

void wd_server_drain(struct wd_server *srv, wd_done_cb done, void *arg)
{
    srv->draining = true;
    srv->drain_done = done;
    srv->drain_arg = arg;
    if (srv->listener_open) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listener_open = false;
    }
    for (struct conn *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->kind == REQ_NONE && !c->parser_stopped)
            conn_close_after_flush(c); /* idle: whatever answer is still queued goes out */
    }
    if (srv->nconns == 0 && srv->drain_done != NULL) {
        srv->drain_done = NULL;
        done(arg);
    }
}

void wd_server_abort_all(struct wd_server *srv)
{
    srv->draining = true;
    if (srv->listener_open) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listener_open = false;
    }
    for (struct conn *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
}

void wd_server_free(struct wd_server *srv)
{
    free(srv);
}
