/* response.c: the wd_res_* and wd_req_* calls of mode.h: the status line and headers
 * (Date, X-Call-Id, Content-Length or chunked, Connection), chunk framing, HEAD, writes with
 * back-pressure (on_drain), and the end of a response. It never parses or routes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "conn.h"

/* Go's net/http status texts, so clients see exactly what the Go watchdogs send (a proxied
 * upstream's own phrase is not relayed, as with Go's ReverseProxy). */
const char *wd_conn_reason_phrase(int status)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {102, "Processing"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {207, "Multi-Status"},
        {208, "Already Reported"},
        {226, "IM Used"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Request Entity Too Large"},
        {414, "Request URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Requested Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {418, "I'm a teapot"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Entity"},
        {423, "Locked"},
        {424, "Failed Dependency"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {506, "Variant Also Negotiates"},
        {507, "Insufficient Storage"},
        {508, "Loop Detected"},
        {510, "Not Extended"},
        {511, "Network Authentication Required"},
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(reasons); i++) {
        if (reasons[i].code == status)
            return reasons[i].text;
    }
    return NULL; /* Go: "status code N" */
}

static size_t http_date(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return strftime(out, outlen, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

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
        wd_conn_close(c);
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
            wd_conn_start_idle(c);
    }
    if (c->paused_by_flush && c->tcp.write_queue_size < LOW_WATER) {
        c->paused_by_flush = false;
        wd_conn_next(c);
    }
}

/* Queue bytes on the socket: written at once when the socket takes them, else copied. */
int wd_conn_write(struct conn *c, uv_buf_t *in, unsigned int nin)
{
    if (c->is_closing || c->is_shutting)
        return UV_ECANCELED;
    /* A corked head goes first, in the same write as what follows it. */
    uv_buf_t all[8];
    uv_buf_t *bufs = in;
    unsigned int nbufs = nin;
    if (c->is_corked) {
        WD_ASSERT(nin < WD_ARRAY_LEN(all));
        all[0] = uv_buf_init(c->head.data, (unsigned int)c->head.len);
        if (nin > 0)
            memcpy(all + 1, in, nin * sizeof *in);
        bufs = all;
        nbufs = nin + 1;
        c->is_corked = false;
    }
    size_t total = 0;
    for (unsigned int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (c->tcp.write_queue_size == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            wd_conn_close(c);
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
        wd_conn_close(c);
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
        wd_conn_close(c);
        return rc;
    }
    return 0;
}

int wd_conn_write_str(struct conn *c, const char *s, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned int)len);
    return wd_conn_write(c, &b, 1);
}

int wd_res_start(struct wd_req *req, int status, const struct wd_header *h, size_t n,
                 int64_t content_length)
{
    struct conn *c = wd_conn_of(req);
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
    if (status == 101 && c->srv->app->mode->on_tunnel != NULL) {
        /* RFC 9110 15.2.2: after 101 the connection speaks the upgraded protocol; the mode
         * relays it raw (no framing, no timeouts) until either side closes. */
        c->is_tunnel = true;
        c->res_no_body = false;
        c->keep_alive = false;
    }

    size_t cap = 256 + sizeof c->req.call_id;
    for (size_t i = 0; i < n; i++)
        cap += strlen(h[i].name) + strlen(h[i].value) + 4;
    c->head.len = 0;
    if (wd_buf_reserve(&c->head, cap) < 0) {
        wd_conn_close(c);
        return UV_ENOMEM;
    }
    char *buf = c->head.data; /* kept across requests: no allocation once warm */
    const char *reason = wd_conn_reason_phrase(status);
    size_t len =
        reason ? (size_t)snprintf(buf, cap, "HTTP/1.1 %d %s\r\nDate: ", status, reason)
               : (size_t)snprintf(buf, cap, "HTTP/1.1 %d status code %d\r\nDate: ", status, status);
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
    if (!c->keep_alive && !c->is_tunnel)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: close\r\n");
    else if (http10)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: keep-alive\r\n");
    buf[len++] = '\r';
    buf[len++] = '\n';
    c->head.len = len;
    if (c->is_closing || c->is_shutting)
        return UV_ECANCELED;
    c->is_corked = true;
    if (c->is_tunnel) {
        int rc = wd_conn_write(c, NULL, 0); /* the upgraded protocol may speak first */
        if (rc == 0)
            wd_conn_start_tunnel(c);
        return rc;
    }
    struct wd_server *srv = c->srv;
    c->cork_next = srv->corked;
    srv->corked = c;
    if (srv->cork_open && !uv_is_active((uv_handle_t *)&srv->cork))
        uv_check_start(&srv->cork, wd_conn_flush_corked);
    return 0;
}

/* End of the loop turn: a head that no body byte followed (yet) goes out on its own, so a
 * client always sees the status as soon as the mode decided it. */
void wd_conn_flush_corked(uv_check_t *h)
{
    struct wd_server *srv = h->data;
    struct conn *c = srv->corked;
    srv->corked = NULL;
    uv_check_stop(h);
    while (c != NULL) {
        struct conn *next = c->cork_next;
        c->cork_next = NULL;
        if (c->is_corked)
            wd_conn_write(c, NULL, 0);
        c = next;
    }
}

void wd_conn_uncork(struct conn *c)
{
    c->is_corked = false;
    for (struct conn **pp = &c->srv->corked; *pp != NULL; pp = &(*pp)->cork_next) {
        if (*pp == c) {
            *pp = c->cork_next;
            break;
        }
    }
    c->cork_next = NULL;
}

int wd_res_write(struct wd_req *req, const void *data, size_t len)
{
    struct conn *c = wd_conn_of(req);
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
        rc = wd_conn_write(c, b, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
        rc = wd_conn_write(c, &b, 1);
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
        wd_conn_update_reading(c);
    }
    wd_conn_maybe_complete(c);
}

void wd_res_end(struct wd_req *req)
{
    struct conn *c = wd_conn_of(req);
    if (c->res_chunked && !c->is_closing && !c->is_shutting)
        wd_conn_write_str(c, "0\r\n\r\n", 5);
    else if (c->is_corked)
        wd_conn_write(c, NULL, 0);
    finish_response(c);
}

/* Log the request (if it was a function call) and close after what is queued. */
void wd_conn_end_and_close(struct conn *c)
{
    if (c->kind == REQ_MODE)
        wd_conn_log_request(c);
    c->kind = REQ_NONE;
    wd_conn_close_after_flush(c);
}

void wd_res_abort(struct wd_req *req)
{
    struct conn *c = wd_conn_of(req);
    c->keep_alive = false;
    c->res_done = true;
    c->mode_attached = false;
    if (c->status == 0)
        c->status = 500;
    if (c->is_corked)
        wd_conn_write(c, NULL, 0); /* the head, then the cut: the client sees it was cut */
    wd_conn_end_and_close(c);
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
    struct conn *c = wd_conn_of(req);
    free(c->note);
    c->note = strdup(what);
}

void wd_req_pause(struct wd_req *req)
{
    struct conn *c = wd_conn_of(req);
    c->paused_by_mode = true;
    wd_conn_update_reading(c);
}

void wd_req_resume(struct wd_req *req)
{
    struct conn *c = wd_conn_of(req);
    c->paused_by_mode = false;
    wd_conn_update_reading(c);
}

/* Answer from the server itself (internal routes and refusals). */
void wd_conn_send_simple(struct conn *c, int status, const char *ctype, const char *body)
{
    struct wd_header h[1] = {{"Content-Type", ctype}};
    size_t n = 0;
    if (ctype != NULL)
        n = 1;
    wd_res_send(&c->req, status, h, n, body, body ? strlen(body) : 0);
}
