/* admission.c: who runs now. max_inflight slots, the FIFO queue (max_queue, queue_timeout)
 * and the 429 answer, plus what every admitted request carries: its X-Call-Id and X-Deadline.
 * The queue is served from a timer, never from inside another request's callbacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "conn.h"
#include "metrics.h"

/* X-Call-Id: the client's when it is a sane token, else a fresh one (UUID-shaped, from a
 * per-process random seed and a counter: unique and cheap). */
void wd_queue_set_call_id(struct wd_server *srv, struct wd_req *req,
                          const struct wd_http1_head *head)
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
void wd_queue_send_429(struct conn *c)
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
void wd_queue_dispatch(struct conn *c)
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
        wd_conn_write_str(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
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
        wd_conn_update_reading(c);
    }
}

void wd_queue_push(struct conn *c)
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
    wd_queue_kick(srv);
}

void wd_queue_remove(struct conn *c)
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
            wd_queue_remove(c);
            wd_metrics_queue_wait(srv->app->metrics, (double)(now - c->queued_ms) / 1e3);
            wd_queue_dispatch(c);
            continue;
        }
        if (qt > 0 && now - c->queued_ms >= qt) {
            wd_queue_remove(c);
            wd_buf_free(&c->qbody);
            wd_req_note_error(&c->req, "queue_timeout passed while waiting for a slot");
            c->paused_by_queue = false;
            wd_queue_send_429(c);
            if (!c->is_closing && !c->is_shutting)
                wd_conn_update_reading(c);
            continue;
        }
        if (qt > 0)
            uv_timer_start(&srv->queue_timer, on_queue_timer, qt - (now - c->queued_ms), 0);
        return;
    }
}

void wd_queue_kick(struct wd_server *srv)
{
    if (srv->queue_timer_open && srv->qhead != NULL)
        uv_timer_start(&srv->queue_timer, on_queue_timer, 0, 0);
}
