/* conn.h: the server's private vocabulary, shared by server.c (connections, routes,
 * timeouts, listeners), response.c (the wd_res_* calls: framing and writing) and admission.c
 * (max_inflight, the FIFO queue, call ids and deadlines). Nothing outside these three files
 * includes it: modes see only mode.h, main.c only server.h. */
#ifndef WD_CONN_H
#define WD_CONN_H

#include <uv.h>

#include "buf.h"
#include "config.h"
#include "health.h"
#include "http1.h"
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
    bool is_tunnel;  /* a 101 went out: raw bytes both ways until either side closes */
    bool is_corked;  /* `head` is built but not written: it goes out with the first body
                        bytes, or at the end of this loop turn (srv->cork), one write less */
    struct wd_buf head;
    struct conn *cork_next;
    char peer[48];  /* client address, copied into each request */
    bool is_queued; /* waiting for a max_inflight slot (FIFO) */
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
    uv_check_t cork; /* end of loop turn: writes the heads nothing followed */
    bool cork_open;
    struct conn *corked;
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

static inline struct conn *wd_conn_of(struct wd_req *req)
{
    return WD_CONTAINER_OF(req, struct conn, req);
}

/* server.c */
void wd_conn_close(struct conn *c);             /* now: detach the mode, close every handle */
void wd_conn_close_after_flush(struct conn *c); /* once what is queued is written */
void wd_conn_update_reading(struct conn *c);    /* read the socket unless something paused it */
void wd_conn_start_reading(struct conn *c);
void wd_conn_maybe_complete(struct conn *c); /* request done both ways: log, next or close */
void wd_conn_start_idle(struct conn *c);     /* keep-alive wait under read_timeout */
void wd_conn_next(struct conn *c);           /* go on with pipelined bytes, then the socket */
void wd_conn_log_request(struct conn *c);    /* metrics and the request log line */

void wd_conn_start_tunnel(struct conn *c); /* after a 101: pending bytes, then the socket */

/* response.c */
void wd_conn_uncork(struct conn *c); /* drop from the cork list (closing) */
void wd_conn_flush_corked(uv_check_t *h);
const char *wd_conn_reason_phrase(int status);
int wd_conn_write(struct conn *c, uv_buf_t *bufs, unsigned int nbufs);
int wd_conn_write_str(struct conn *c, const char *s, size_t len);
void wd_conn_send_simple(struct conn *c, int status, const char *ctype, const char *body);
void wd_conn_end_and_close(struct conn *c); /* log (function requests) and close */

/* admission.c */
void wd_queue_set_call_id(struct wd_server *srv, struct wd_req *req,
                          const struct wd_http1_head *head);
void wd_queue_dispatch(struct conn *c);    /* take a slot, hand the request to the mode */
void wd_queue_push(struct conn *c);        /* wait (FIFO) for a slot */
void wd_queue_remove(struct conn *c);      /* leave the queue (closed, timed out) */
void wd_queue_kick(struct wd_server *srv); /* a slot was freed: run the queue soon */
void wd_queue_send_429(struct conn *c);

#endif
