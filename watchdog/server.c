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
#include "conn.h"

static void conn_feed(struct conn *c, const char *data, size_t len);
static void on_write_timeout(uv_timer_t *t);

/* ---- small helpers ------------------------------------------------------------------- */

void wd_conn_update_reading(struct conn *c)
{
    bool want = !c->is_closing && !c->is_shutting && !c->paused_by_mode && !c->paused_by_pending &&
                !c->paused_by_queue && !c->paused_by_flush;
    if (want == c->is_reading)
        return;
    c->is_reading = want;
    if (!want)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        wd_conn_start_reading(c);
}

/* ---- writing ------------------------------------------------------------------------- */

/* ---- closing ------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct wd_server *srv = c->srv;
    wd_http1_free(c->parser);
    wd_buf_free(&c->qbody);
    wd_buf_free(&c->head);
    free(c->pending);
    free(c->note);
    free(c);
    if (srv->draining && srv->nconns == 0 && srv->drain_done != NULL) {
        wd_done_cb done = srv->drain_done;
        srv->drain_done = NULL;
        done(srv->drain_arg);
    }
}

static void release_slot(struct conn *c)
{
    wd_queue_remove(c);
    if (c->counted) {
        c->counted = false;
        c->srv->inflight--;
        wd_metrics_inflight(c->srv->app->metrics, -1);
        wd_queue_kick(c->srv); /* a slot is free: the queue head may run */
    }
}

static void detach_mode(struct conn *c)
{
    if (c->mode_attached) {
        c->mode_attached = false;
        c->srv->app->mode->on_abort(&c->req);
    }
}

void wd_conn_close(struct conn *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    wd_conn_uncork(c);
    detach_mode(c);
    release_slot(c);
    struct wd_server *srv = c->srv;
    WD_LIST_REMOVE(srv->conns, c);
    srv->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->read_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->write_timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    WD_UNUSED(status);
    wd_conn_close(s->data);
}

/* Close once every queued byte is out (the response was written with Connection: close). */
void wd_conn_close_after_flush(struct conn *c)
{
    if (c->is_closing || c->is_shutting)
        return;
    c->is_shutting = true;
    detach_mode(c);
    release_slot(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        wd_conn_close(c);
}

/* ---- responses ----------------------------------------------------------------------- */

/* ---- the request cycle --------------------------------------------------------------- */

static bool is_kube_probe(const struct wd_http1_head *head)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, "User-Agent") == 0)
            return strncmp(head->headers[i].value, "kube-probe", 10) == 0;
    }
    return false;
}

void wd_conn_log_request(struct conn *c)
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

void wd_conn_maybe_complete(struct conn *c)
{
    if (!(c->res_done && c->body_done && c->parser_stopped) || c->kind == REQ_NONE)
        return;
    if (c->kind == REQ_MODE)
        wd_conn_log_request(c);
    c->kind = REQ_NONE;
    release_slot(c);
    free(c->note);
    c->note = NULL;
    if (c->is_closing || c->is_shutting)
        return;
    if (!c->keep_alive || c->srv->draining) {
        uv_timer_stop(&c->write_timer);
        wd_conn_close_after_flush(c);
        return;
    }
    wd_http1_next(c->parser);
    c->parser_stopped = false;
    c->req.head = NULL;
    if (c->tcp.write_queue_size == 0) {
        wd_conn_start_idle(c);
    } else {
        /* The answer is still going out under write_timeout; the idle wait starts once it is
         * flushed. A client that sends requests without reading the answers gets nothing more
         * parsed until it reads (memory stays bounded). */
        c->awaiting_flush = true;
        if (c->tcp.write_queue_size > HIGH_WATER) {
            c->paused_by_flush = true;
            wd_conn_update_reading(c);
        }
    }
    if (c->in_feed || c->paused_by_flush)
        return; /* conn_feed goes on with the bytes it holds; or on_write resumes */
    wd_conn_next(c);
}

/* Idle keep-alive connection: the wait for the next request counts against read_timeout. */
void wd_conn_start_idle(struct conn *c)
{
    uv_timer_stop(&c->write_timer);
    if (c->srv->cfg->read_timeout_ms > 0)
        uv_timer_again(&c->read_timer);
}

/* Go on with the next request: pipelined bytes first, then the socket. */
void wd_conn_next(struct conn *c)
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
    wd_conn_update_reading(c);
}

/* The metrics listener serves /metrics only (as the peers: anything else is a 404). */
static void route_metrics(struct conn *c, const char *path)
{
    c->kind = REQ_INTERNAL;
    if (strcmp(path, "/metrics") != 0) {
        wd_conn_send_simple(c, 404, "text/plain; charset=utf-8", "404 page not found\n");
        return;
    }
    struct wd_buf out;
    wd_buf_init(&out, 0);
    if (wd_metrics_render(c->srv->app->metrics, &out) < 0) {
        wd_buf_free(&out);
        wd_conn_send_simple(c, 500, "text/plain; charset=utf-8", "cannot render metrics\n");
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
    if (strcmp(c->req.head->method, "GET") != 0) {
        wd_conn_send_simple(c, 405, NULL, NULL);
        return;
    }
    bool healthy = wd_health_is_healthy(srv->health);
    if (strcmp(path, "/_/health") == 0) {
        if (healthy)
            wd_conn_send_simple(c, 200, "text/plain; charset=utf-8", "OK");
        else
            wd_conn_send_simple(c, 503, NULL, NULL);
        return;
    }
    /* /_/ready, OW semantics: 503, 429, proxied ready_path, or 200. */
    if (!healthy) {
        wd_conn_send_simple(c, 503, NULL, NULL);
        return;
    }
    if (srv->cfg->max_inflight > 0 && srv->inflight >= srv->cfg->max_inflight &&
        srv->qlen >= srv->cfg->max_queue) {
        wd_conn_send_simple(c, 429, NULL, NULL); /* at the limit and no room left to wait */
        return;
    }
    if (srv->cfg->ready_path == NULL) {
        wd_conn_send_simple(c, 200, NULL, NULL);
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
    wd_queue_set_call_id(srv, &c->req, head);
    if (srv->cfg->max_inflight > 0 && srv->inflight >= srv->cfg->max_inflight) {
        if (srv->qlen < srv->cfg->max_queue)
            wd_queue_push(c);
        else
            wd_queue_send_429(c);
        return c->is_closing ? -1 : 0;
    }
    wd_queue_dispatch(c);
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
            wd_conn_update_reading(c);
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
        snprintf(body, sizeof body, "%s\n", reason ? reason : "bad request");
        struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        if (wd_res_start(&c->req, status, h, 1, (int64_t)strlen(body)) == 0)
            wd_conn_write_str(c, body, strlen(body));
        c->res_done = true;
    }
    wd_log_info("bad request status=%d reason=\"%s\"", status, reason ? reason : "");
    wd_conn_end_and_close(c);
}

static void on_tunnel_pending(uv_timer_t *t)
{
    struct conn *c = t->data;
    char *p = c->pending;
    size_t n = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    if (n > 0 && c->mode_attached)
        c->srv->app->mode->on_tunnel(&c->req, p, n);
    free(p);
}

/* Called from wd_res_start(101), i.e. from inside the mode: the bytes the client sent after
 * the upgrade request are handed over on the next loop turn, then the socket's as they come. */
void wd_conn_start_tunnel(struct conn *c)
{
    uv_timer_stop(&c->write_timer);
    uv_timer_stop(&c->read_timer);
    if (c->pending_len > 0)
        uv_timer_start(&c->read_timer, on_tunnel_pending, 0, 0);
    c->paused_by_pending = false;
    wd_conn_update_reading(c);
}

static void conn_feed(struct conn *c, const char *data, size_t len)
{
    if (c->is_tunnel) {
        if (c->pending_len > 0 || uv_is_active((uv_handle_t *)&c->read_timer)) {
            /* keep the order: older pending bytes go first */
            char *p = realloc(c->pending, c->pending_len + len);
            if (p == NULL) {
                wd_conn_close(c);
                return;
            }
            memcpy(p + c->pending_len, data, len);
            c->pending = p;
            c->pending_len += len;
            return;
        }
        if (c->mode_attached)
            c->srv->app->mode->on_tunnel(&c->req, data, len);
        return;
    }
    c->in_feed = true;
    while (len > 0 && !c->is_closing && !c->is_shutting) {
        if (c->parser_stopped || c->paused_by_flush) {
            char *p = realloc(c->pending, c->pending_len + len);
            if (p == NULL) {
                wd_conn_close(c);
                break;
            }
            memcpy(p + c->pending_len, data, len);
            c->pending = p;
            c->pending_len += len;
            if (c->pending_len > PENDING_MAX) {
                c->paused_by_pending = true;
                wd_conn_update_reading(c);
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
            wd_conn_maybe_complete(c); /* may restart the parser for the next request */
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
        wd_conn_close(c);
        return;
    }
    if (!c->parser_stopped && wd_http1_is_idle(c->parser) && c->srv->cfg->read_timeout_ms > 0)
        uv_timer_again(&c->read_timer); /* first byte of a request: its own read_timeout */
    conn_feed(c, buf->base, (size_t)nread);
}

void wd_conn_start_reading(struct conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- timeouts ------------------------------------------------------------------------ */

static void on_read_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->kind == REQ_NONE || c->res_started) {
        wd_conn_close(c); /* idle, or still in the head: close quietly as Go does */
        return;
    }
    /* The body did not arrive in time. */
    detach_mode(c);
    c->body_done = true;
    c->keep_alive = false;
    c->kind = REQ_MODE;
    wd_req_note_error(&c->req, "request body read timeout (read_timeout)");
    wd_conn_send_simple(c, 408, "text/plain; charset=utf-8", "read_timeout exceeded\n");
    wd_conn_end_and_close(c);
}

static void on_write_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->kind == REQ_NONE) {
        if (c->tcp.write_queue_size > 0)
            wd_conn_close(c); /* the client did not take its answer within write_timeout */
        return;
    }
    if (c->is_queued) {
        /* Never got a slot: that is the queue's answer, not a gateway timeout. */
        wd_queue_remove(c);
        wd_buf_free(&c->qbody);
        wd_req_note_error(&c->req, "write_timeout passed while waiting for a slot");
        c->body_done = true;
        c->keep_alive = false;
        wd_queue_send_429(c);
        wd_conn_end_and_close(c);
        return;
    }
    detach_mode(c);
    wd_req_note_error(&c->req, "response not complete within write_timeout");
    if (!c->res_started) {
        c->body_done = true;
        c->keep_alive = false;
        wd_conn_send_simple(c, 504, "text/plain; charset=utf-8", "write_timeout exceeded\n");
    }
    wd_conn_end_and_close(c);
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
    WD_LIST_PUSH(srv->conns, c);
    srv->nconns++;
    uint64_t rt = srv->cfg->read_timeout_ms;
    if (rt > 0)
        uv_timer_start(&c->read_timer, on_read_timeout, rt, rt);
    c->is_reading = true;
    wd_conn_start_reading(c);
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
    uv_check_init(app->loop, &srv->cork);
    srv->cork.data = srv;
    srv->cork_open = true;

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
    if (srv->cork_open)
        uv_close((uv_handle_t *)&srv->cork, NULL);
    srv->cork_open = false;
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
            wd_conn_close_after_flush(c); /* idle: whatever answer is still queued goes out */
        else if (c->is_tunnel)
            wd_conn_close(c); /* an upgraded connection has no end to wait for */
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
        wd_conn_close(c);
    }
}

void wd_server_free(struct wd_server *srv)
{
    free(srv);
}
