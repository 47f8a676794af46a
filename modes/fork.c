/* fork.c: the fork-per-request modes. One handler process per request: the request body goes
 * to its stdin, its stdout becomes the response, its stderr is logged line by line, and on
 * exec_timeout its whole process group is killed and the answer is sent at once.
 *
 *   classic      CW semantics: body and output fully buffered; 200/500/408; CW env.
 *   serializing  OW semantics: body and output fully buffered; 200/500/504 (fixed).
 *   streaming    OW, fixed: full duplex and live; chunked output as the handler writes it.
 *
 * It never touches a socket: it talks to the server through mode.h only, and creates
 * processes through child.c only. */
#include "mode.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>
#include <cjson/cJSON.h>

#include "buf.h"
#include "cgi.h"
#include "child.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#define STDIN_HIGH ((size_t)256 * 1024) /* pause the client above this much queued for stdin */
#define EXIT_GRACE_MS 100 /* after exit: how long pipes held by escapees may stay open */
#define STREAM_PIPE_BYTES (256 * 1024)
#define CGI_HEAD_MAX ((size_t)64 * 1024)

enum variant { V_CLASSIC, V_SERIALIZING, V_STREAMING };

struct fork_job;

/* Created by start(), freed by stop() once the last job is gone. */
struct fork_state {
    struct wd_app *app;
    const struct wd_config *cfg;
    enum variant variant;
    char *path;            /* resolved fprocess argv[0]; NULL until it resolves */
    struct fork_job *jobs; /* every live job, for stop() */
    wd_done_cb stop_done;
    void *stop_arg;
    bool is_stopping;
    char readbuf[256 * 1024]; /* streaming stdout reads; consumed synchronously */
};

/* One request run. Created in on_headers, freed in on_handle_closed once the process has been
 * reaped and every handle is closed. `req` is borrowed: NULL once we ended the response or
 * the server aborted us. */
struct fork_job {
    struct fork_state *st;
    struct wd_req *req;
    struct fork_job *prev, *next;
    pid_t pid;
    uv_pipe_t p_in, p_out, p_err;
    uv_timer_t timer; /* exec_timeout, then the exit grace */
    int open_handles;
    bool in_open, out_open, err_open, timer_open;
    bool is_spawned, has_exited, out_eof, err_eof, timed_out, body_ended;
    int exit_status, term_signal;
    size_t stdin_queued; /* bytes written to stdin not yet taken by the pipe */
    bool paused_client;
    bool out_paused;
    bool sent_head;
    struct wd_buf body; /* classic/serializing: whole request body */
    struct wd_buf out;  /* classic/serializing: stdout; streaming: CGI head bytes */
    struct wd_linelog errlog;
    char **envp;          /* owned, one allocation (NULL when the base env is used) */
    char env_call_id[96]; /* Http_X_Call_Id=..., Http_X_Deadline=...: win over headers */
    char env_deadline[64];
    char call_id[72];
    char errtext[320]; /* exec failure text */
};

static void job_finish(struct fork_job *job);
static void job_maybe_free(struct fork_job *job);
static void exit_grace(struct fork_job *job);

/* ---- helpers ------------------------------------------------------------------------- */

static const char *header_value(const struct wd_http1_head *head, const char *name)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, name) == 0)
            return head->headers[i].value;
    }
    return NULL;
}

/* A subset of Go's http.DetectContentType, enough for what handlers print. */
static const char *sniff(const char *p, size_t len)
{
    static const char *const html[] = {"<!DOCTYPE HTML",
                                       "<HTML",
                                       "<HEAD",
                                       "<SCRIPT",
                                       "<IFRAME",
                                       "<H1",
                                       "<DIV",
                                       "<FONT",
                                       "<TABLE",
                                       "<A",
                                       "<STYLE",
                                       "<TITLE",
                                       "<B",
                                       "<BODY",
                                       "<BR",
                                       "<P",
                                       "<!--"};
    if (len == 0)
        return NULL;
    const char *t = p;
    size_t rest = len;
    while (rest > 0 && strchr(" \t\n\r\f", *t) != NULL) {
        t++;
        rest--;
    }
    for (size_t k = 0; k < WD_ARRAY_LEN(html); k++) {
        size_t n = strlen(html[k]);
        if (rest > n && strncasecmp(t, html[k], n) == 0 && (t[n] == ' ' || t[n] == '>'))
            return "text/html; charset=utf-8";
    }
    if (rest >= 5 && memcmp(t, "<?xml", 5) == 0)
        return "text/xml; charset=utf-8";
    if (len >= 5 && memcmp(p, "%PDF-", 5) == 0)
        return "application/pdf";
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (len >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "image/gif";
    if (len >= 3 && memcmp(p, "\xff\xd8\xff", 3) == 0)
        return "image/jpeg";
    for (size_t k = 0; k < len && k < 512; k++) {
        unsigned char ch = (unsigned char)p[k];
        if (ch <= 0x08 || ch == 0x0b || (ch >= 0x0e && ch <= 0x1a) || (ch >= 0x1c && ch <= 0x1f))
            return "application/octet-stream";
    }
    return "text/plain; charset=utf-8";
}

static const char *ow_content_type(const struct fork_state *st)
{
    return st->cfg->content_type ? st->cfg->content_type : "application/octet-stream";
}

static double elapsed_s(const struct fork_job *job)
{
    return (double)(uv_hrtime() - job->req->start_ns) / 1e9;
}

static void debug_out_headers(const struct fork_state *st, const struct wd_header *h, size_t n)
{
    if (st->variant != V_CLASSIC || !st->cfg->debug_headers)
        return;
    for (size_t i = 0; i < n; i++)
        printf("[out] %s=[%s]\n", h[i].name, h[i].value);
    fflush(stdout);
}

/* Send a whole buffered answer and let the request go. */
static void respond(struct fork_job *job, int status, const struct wd_header *h, size_t n,
                    const void *body, size_t len)
{
    if (job->req == NULL)
        return;
    debug_out_headers(job->st, h, n);
    struct wd_req *req = job->req;
    job->req = NULL;
    wd_res_send(req, status, h, n, body, len);
}

/* ---- handles and lifetime ------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    struct fork_job *job = h->data;
    job->open_handles--;
    job_maybe_free(job);
}

static void close_handle(uv_handle_t *h, bool *is_open)
{
    if (!*is_open)
        return;
    *is_open = false;
    uv_close(h, on_handle_closed);
}

static void close_pipes(struct fork_job *job)
{
    close_handle((uv_handle_t *)&job->p_in, &job->in_open);
    close_handle((uv_handle_t *)&job->p_out, &job->out_open);
    close_handle((uv_handle_t *)&job->p_err, &job->err_open);
}

static void job_maybe_free(struct fork_job *job)
{
    int timer = job->timer_open ? 1 : 0;
    if (job->open_handles > timer || (job->is_spawned && !job->has_exited) || job->req != NULL)
        return;
    if (job->timer_open) {
        close_handle((uv_handle_t *)&job->timer, &job->timer_open);
        return;
    }
    struct fork_state *st = job->st;
    WD_LIST_REMOVE(st->jobs, job);
    wd_linelog_flush(&job->errlog);
    wd_linelog_free(&job->errlog);
    wd_buf_free(&job->body);
    wd_buf_free(&job->out);
    free(job->envp);
    free(job);
    if (st->is_stopping && st->jobs == NULL && st->stop_done != NULL) {
        wd_done_cb done = st->stop_done;
        void *arg = st->stop_arg;
        free(st);
        done(arg);
    }
}

/* ---- process output ------------------------------------------------------------------ */

static void on_err_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fork_job *job = h->data;
    WD_UNUSED(suggested);
    *buf = uv_buf_init(job->st->readbuf, sizeof job->st->readbuf);
}

static void on_err_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fork_job *job = s->data;
    if (n > 0) {
        wd_linelog_feed(&job->errlog, buf->base, (size_t)n);
        return;
    }
    if (n < 0) {
        wd_linelog_flush(&job->errlog);
        job->err_eof = true;
        close_handle((uv_handle_t *)&job->p_err, &job->err_open);
        job_finish(job);
    }
}

/* Buffered modes read stdout straight into job->out. */
static void on_out_alloc_buffered(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fork_job *job = h->data;
    WD_UNUSED(suggested);
    if (wd_buf_reserve(&job->out, (size_t)64 * 1024) < 0) {
        *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: treated as EOF */
        return;
    }
    *buf = uv_buf_init(job->out.data + job->out.len, (unsigned int)(job->out.cap - job->out.len));
}

static void out_done(struct fork_job *job)
{
    job->out_eof = true;
    close_handle((uv_handle_t *)&job->p_out, &job->out_open);
    job_finish(job);
}

static void on_out_read_buffered(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fork_job *job = s->data;
    WD_UNUSED(buf);
    if (n > 0) {
        job->out.len += (size_t)n;
        exit_grace(job);
    } else if (n < 0) {
        out_done(job);
    }
}

static void on_out_alloc_stream(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    on_err_alloc(h, suggested, buf);
}

/* Streaming: the status line and headers go out with the first output byte. */
static int stream_send_head(struct fork_job *job, const struct wd_cgi_head *cgi)
{
    struct wd_header h[66];
    size_t n = 0;
    int status = 200;
    bool has_ct = false;
    if (cgi != NULL) {
        status = cgi->status;
        for (size_t i = 0; i < cgi->nheaders; i++) {
            h[n++] = cgi->headers[i];
            if (strcasecmp(cgi->headers[i].name, "Content-Type") == 0)
                has_ct = true;
        }
    }
    if (!has_ct)
        h[n++] = (struct wd_header){"Content-Type", ow_content_type(job->st)};
    job->sent_head = true;
    return wd_res_start(job->req, status, h, n, -1);
}

static void stream_write(struct fork_job *job, const char *p, size_t len)
{
    if (job->req == NULL || len == 0)
        return;
    if (!job->sent_head && stream_send_head(job, NULL) < 0)
        return;
    if (wd_res_write(job->req, p, len) == 1 && job->out_open) {
        job->out_paused = true;
        uv_read_stop((uv_stream_t *)&job->p_out);
    }
}

/* cgi_response: hold output until the CGI head is complete. */
static void stream_cgi(struct fork_job *job, const char *p, size_t len)
{
    if (wd_buf_append(&job->out, p, len) < 0)
        wd_log_error("cgi_response: out of memory");
    struct wd_cgi_head cgi;
    memset(&cgi, 0, sizeof cgi);
    int rc = wd_cgi_parse_head(&cgi, job->out.data, job->out.len, CGI_HEAD_MAX);
    if (rc == 0)
        return;
    if (rc < 0) {
        wd_cgi_head_free(&cgi);
        wd_log_error("cgi_response: malformed CGI head from handler");
        wd_child_kill_group(job->pid, SIGKILL);
        close_pipes(job);
        struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        const char *msg = "malformed CGI response from handler\n";
        wd_req_note_error(job->req, "malformed CGI response head");
        respond(job, 502, h, 1, msg, strlen(msg));
        return;
    }
    if (stream_send_head(job, &cgi) == 0) {
        size_t body = job->out.len - (size_t)rc;
        char *rest = job->out.data + rc;
        job->out.len = 0;
        if (body > 0 && wd_res_write(job->req, rest, body) == 1 && job->out_open) {
            job->out_paused = true;
            uv_read_stop((uv_stream_t *)&job->p_out);
        }
    }
    wd_cgi_head_free(&cgi);
    wd_buf_free(&job->out);
}

static void on_out_read_stream(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fork_job *job = s->data;
    if (n < 0) {
        out_done(job);
        return;
    }
    if (n == 0 || job->req == NULL)
        return;
    if (job->st->cfg->cgi_response && !job->sent_head)
        stream_cgi(job, buf->base, (size_t)n);
    else
        stream_write(job, buf->base, (size_t)n);
    exit_grace(job);
}

/* ---- finishing ----------------------------------------------------------------------- */

/* cgi_response in the buffered modes: the head at the start of job->out sets the status and
 * headers; `extra` headers are added (a Content-Type among them only when the head has none). */
static void respond_cgi(struct fork_job *job, const struct wd_header *extra, size_t nextra)
{
    struct wd_cgi_head cgi;
    memset(&cgi, 0, sizeof cgi);
    int rc = wd_cgi_parse_head(&cgi, job->out.data, job->out.len, CGI_HEAD_MAX);
    if (rc <= 0) {
        const char *msg = "malformed CGI response from handler\n";
        struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        wd_req_note_error(job->req, "malformed CGI response head");
        respond(job, 502, h, 1, msg, strlen(msg));
        wd_cgi_head_free(&cgi);
        return;
    }
    struct wd_header all[WD_ARRAY_LEN(cgi.headers) + 4];
    size_t n = 0;
    bool has_ct = false;
    for (size_t i = 0; i < cgi.nheaders; i++) {
        all[n++] = cgi.headers[i];
        has_ct |= strcasecmp(cgi.headers[i].name, "Content-Type") == 0;
    }
    for (size_t i = 0; i < nextra && n < WD_ARRAY_LEN(all); i++) {
        if (!(has_ct && strcasecmp(extra[i].name, "Content-Type") == 0))
            all[n++] = extra[i];
    }
    respond(job, cgi.status, all, n, job->out.data + rc, job->out.len - (size_t)rc);
    wd_cgi_head_free(&cgi);
}

static void finish_classic(struct fork_job *job, const char *failure)
{
    const struct fork_state *st = job->st;
    char dur[32];
    struct wd_header h[3];
    size_t n = 0;
    if (job->timed_out) {
        wd_log_info("Killing process: %s", st->cfg->fprocess);
        const char *msg = "Killed process.\n";
        h[n++] = (struct wd_header){"Content-Type", "text/plain; charset=utf-8"};
        respond(job, 408, h, n, msg, strlen(msg));
        return;
    }
    if (failure != NULL) {
        /* CW: "<error>\n<captured output>", Content-Type sniffed, no X-Duration-Seconds. */
        struct wd_buf b;
        wd_buf_init(&b, 0);
        wd_buf_append(&b, failure, strlen(failure));
        wd_buf_append(&b, "\n", 1);
        wd_buf_append(&b, job->out.data, job->out.len);
        if (st->cfg->write_debug) {
            wd_log_info("Success=false, Error=%s", failure);
            wd_log_info("Out=%.*s", (int)job->out.len, job->out.data ? job->out.data : "");
        }
        h[n++] = (struct wd_header){"Content-Type", sniff(b.data, b.len)};
        respond(job, 500, h, n, b.data, b.len);
        wd_buf_free(&b);
        return;
    }
    double secs = elapsed_s(job);
    snprintf(dur, sizeof dur, "%f", secs);
    h[n++] = (struct wd_header){"X-Duration-Seconds", dur};
    const char *ct = st->cfg->content_type;
    if (ct == NULL)
        ct = header_value(job->req->head, "Content-Type");
    if (ct == NULL && !st->cfg->cgi_response)
        ct = sniff(job->out.data, job->out.len);
    if (ct != NULL)
        h[n++] = (struct wd_header){"Content-Type", ct};
    if (st->cfg->write_debug) {
        fwrite(job->out.data ? job->out.data : "", 1, job->out.len, stdout);
        printf("Duration: %f seconds\n", secs);
        fflush(stdout);
    } else {
        wd_log_info("Wrote %zu Bytes - Duration: %f seconds", job->out.len, secs);
    }
    if (st->cfg->cgi_response)
        respond_cgi(job, h, n);
    else
        respond(job, 200, h, n, job->out.data, job->out.len);
}

static void finish_serializing(struct fork_job *job, const char *failure)
{
    char dur[32];
    snprintf(dur, sizeof dur, "%f", elapsed_s(job));
    struct wd_header h[] = {{"Content-Type", ow_content_type(job->st)},
                            {"X-Duration-Seconds", dur}};
    if (job->timed_out) {
        const char *msg = "exec_timeout exceeded";
        respond(job, 504, h, 2, msg, strlen(msg));
    } else if (failure != NULL) {
        respond(job, 500, h, 2, failure, strlen(failure)); /* OW: no trailing newline */
    } else if (job->st->cfg->cgi_response) {
        respond_cgi(job, h, 2);
    } else {
        respond(job, 200, h, 2, job->out.data, job->out.len);
    }
}

static void finish_streaming(struct fork_job *job, const char *failure)
{
    struct wd_req *req = job->req;
    if (job->sent_head) {
        /* The status is out: end the response; the failure is only logged. */
        job->req = NULL;
        wd_res_end(req);
        return;
    }
    struct wd_header h[] = {{"Content-Type", ow_content_type(job->st)}};
    if (job->timed_out) {
        const char *msg = "exec_timeout exceeded";
        respond(job, 504, h, 1, msg, strlen(msg));
    } else if (failure != NULL) {
        respond(job, 500, h, 1, failure, strlen(failure));
    } else if (job->st->cfg->cgi_response && job->out.len > 0) {
        stream_cgi(job, "", 0); /* head without blank line at EOF */
        if (job->req != NULL && !job->sent_head) {
            const char *msg = "malformed CGI response from handler\n";
            respond(job, 502, h, 1, msg, strlen(msg));
        } else if (job->req != NULL) {
            req = job->req;
            job->req = NULL;
            wd_res_end(req);
        }
    } else {
        respond(job, 200, h, 1, NULL, 0);
    }
}

/* Called on every event that may complete the job: answer once output is complete. */
static void job_finish(struct fork_job *job)
{
    if (job->req == NULL) {
        job_maybe_free(job);
        return;
    }
    bool done = job->timed_out || (job->has_exited && job->out_eof) ||
                (!job->is_spawned && job->errtext[0] != '\0');
    if (!done) {
        job_maybe_free(job);
        return;
    }
    char failure[160];
    const char *fail = NULL;
    if (job->errtext[0] != '\0') {
        fail = job->errtext;
    } else if (job->timed_out) {
        fail = "signal: killed";
    } else if (job->exit_status != 0 || job->term_signal != 0) {
        wd_child_describe_exit(failure, sizeof failure, job->exit_status, job->term_signal);
        fail = failure;
    }
    if (fail != NULL)
        wd_req_note_error(job->req, fail);
    if (job->timer_open)
        uv_timer_stop(&job->timer);
    switch (job->st->variant) {
    case V_CLASSIC:
        finish_classic(job, fail);
        break;
    case V_SERIALIZING:
        finish_serializing(job, fail);
        break;
    case V_STREAMING:
        finish_streaming(job, fail);
        break;
    }
    close_pipes(job);
    job_maybe_free(job);
}

static void on_timer(uv_timer_t *t)
{
    struct fork_job *job = t->data;
    if (!job->has_exited) {
        /* exec_timeout: kill the whole group, answer now, don't wait for the pipes. */
        job->timed_out = true;
        wd_child_kill_group(job->pid, SIGKILL);
        wd_metrics_child_killed(job->st->app->metrics);
    }
    /* Else the exit grace ran out: a process that left the group still holds a pipe. */
    close_pipes(job);
    job->out_eof = job->err_eof = true;
    job_finish(job);
}

/* After the handler exited, its stdout may still be held open by a process that left its
 * group: give the pipe EXIT_GRACE_MS of silence, then end the response anyway. The clock
 * stops while we hold the pipe ourselves (client back-pressure). */
static void exit_grace(struct fork_job *job)
{
    if (!job->has_exited || job->out_eof || job->timed_out || !job->timer_open)
        return;
    if (job->out_paused)
        uv_timer_stop(&job->timer);
    else
        uv_timer_start(&job->timer, on_timer, EXIT_GRACE_MS, 0);
}

static void on_exit_cb(void *arg, int exit_status, int term_signal)
{
    struct fork_job *job = arg;
    job->has_exited = true;
    job->exit_status = exit_status;
    job->term_signal = term_signal;
    wd_metrics_child_exited(job->st->app->metrics, exit_status, term_signal);
    /* Whatever the handler left behind in its group goes with it. */
    wd_child_kill_group(job->pid, SIGKILL);
    exit_grace(job);
    job_finish(job);
}

/* ---- stdin --------------------------------------------------------------------------- */

struct in_write {
    uv_write_t w;
    struct fork_job *job;
    size_t len;
    bool is_owned; /* data follows the struct */
    char data[];
};

static void maybe_close_stdin(struct fork_job *job)
{
    if (job->body_ended && job->stdin_queued == 0)
        close_handle((uv_handle_t *)&job->p_in, &job->in_open);
}

static void on_in_written(uv_write_t *w, int status)
{
    struct in_write *iw = WD_CONTAINER_OF(w, struct in_write, w);
    struct fork_job *job = iw->job;
    job->stdin_queued -= iw->len;
    free(iw);
    if (status < 0) {
        /* EPIPE: the handler does not read stdin. Drop the rest of the body (as CW/OW);
         * writes still queued come back cancelled and subtract their own length. */
        job->body_ended = true;
        close_handle((uv_handle_t *)&job->p_in, &job->in_open);
    }
    if (job->paused_client && job->stdin_queued < STDIN_HIGH / 4 && job->req != NULL) {
        job->paused_client = false;
        wd_req_resume(job->req);
    }
    maybe_close_stdin(job);
}

/* Queue bytes for stdin. copy=false: data stays valid until written (job->body). */
static void stdin_write(struct fork_job *job, const char *p, size_t len, bool copy)
{
    if (!job->in_open || len == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned int)len);
    if (job->stdin_queued == 0 && job->p_in.write_queue_size == 0) {
        int n = uv_try_write((uv_stream_t *)&job->p_in, &b, 1);
        if (n == (int)len)
            return;
        if (n < 0 && n != UV_EAGAIN) {
            job->body_ended = true;
            close_handle((uv_handle_t *)&job->p_in, &job->in_open);
            return;
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    struct in_write *iw = malloc(sizeof *iw + (copy ? len : 0));
    if (iw == NULL)
        return;
    iw->job = job;
    iw->len = len;
    iw->is_owned = copy;
    if (copy) {
        memcpy(iw->data, p, len);
        p = iw->data;
    }
    b = uv_buf_init((char *)p, (unsigned int)len);
    if (uv_write(&iw->w, (uv_stream_t *)&job->p_in, &b, 1, on_in_written) < 0) {
        free(iw);
        return;
    }
    job->stdin_queued += len;
    if (job->stdin_queued > STDIN_HIGH && job->req != NULL && !job->paused_client) {
        job->paused_client = true;
        wd_req_pause(job->req);
    }
}

/* ---- spawning ------------------------------------------------------------------------ */

static int open_pipe(struct fork_job *job, uv_pipe_t *p, bool *is_open, int fd)
{
    uv_pipe_init(job->st->app->loop, p, 0);
    p->data = job;
    *is_open = true;
    job->open_handles++;
    return uv_pipe_open(p, fd);
}

static void make_error_text(struct fork_job *job, const char *path, int rc)
{
    char msg[128];
    snprintf(msg, sizeof msg, "%s", strerror(-rc));
    if (msg[0] >= 'A' && msg[0] <= 'Z')
        msg[0] = (char)(msg[0] - 'A' + 'a'); /* Go's errno strings are lower-case */
    snprintf(job->errtext, sizeof job->errtext, "fork/exec %s: %s", path, msg);
}

static int job_spawn(struct fork_job *job)
{
    struct fork_state *st = job->st;
    const struct wd_config *cfg = st->cfg;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int rc;

    if (st->path == NULL) {
        rc = wd_child_resolve(cfg->fprocess_argv[0], st->app->base_env, &st->path, job->errtext,
                              sizeof job->errtext);
        if (rc < 0)
            return rc;
    }
    bool with_env = st->variant != V_CLASSIC || cfg->cgi_headers;
    if (with_env) {
        snprintf(job->env_call_id, sizeof job->env_call_id, "Http_X_Call_Id=%s", job->req->call_id);
        snprintf(job->env_deadline, sizeof job->env_deadline, "Http_X_Deadline=%s",
                 job->req->deadline);
        char *extra[] = {job->env_call_id, job->env_deadline, NULL};
        rc = wd_cgi_build_env(&job->envp, st->app->base_env, job->req->head,
                              st->variant == V_CLASSIC ? WD_CGI_CW : WD_CGI_OW, extra);
        if (rc < 0)
            return rc;
    }
    bool merge = st->variant == V_CLASSIC && cfg->combine_output;
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
        (!merge && pipe2(perr, O_CLOEXEC) < 0)) {
        rc = -errno;
        goto fail;
    }
    if (st->variant == V_STREAMING) {
        /* Bigger pipes mean fewer wake-ups on large transfers (256 MiB echo: ~400 -> ~650
         * MiB/s). Best effort: a user over pipe-user-pages-soft just keeps 64 KiB pipes, and
         * stdin grows only for bodies that can use it. */
        fcntl(pout[0], F_SETPIPE_SZ, STREAM_PIPE_BYTES);
        int64_t cl = job->req->head->content_length;
        if (cl < 0 || cl > (int64_t)64 * 1024)
            fcntl(pin[1], F_SETPIPE_SZ, STREAM_PIPE_BYTES);
    }
    struct wd_child_opts o = {
        .path = st->path,
        .argv = cfg->fprocess_argv,
        .envp = with_env ? job->envp : st->app->base_env,
        .fds = {pin[0], pout[1], merge ? pout[1] : perr[1], -1},
        .rlimits = &cfg->rlimits,
        .on_exit = on_exit_cb,
        .arg = job,
    };
    pid_t pid = wd_child_spawn(&o);
    close(pin[0]);
    close(pout[1]);
    if (perr[1] >= 0)
        close(perr[1]);
    pin[0] = pout[1] = perr[1] = -1;
    if (pid < 0) {
        rc = pid;
        make_error_text(job, st->path, rc);
        goto fail;
    }
    job->pid = pid;
    job->is_spawned = true;
    wd_metrics_child_started(st->app->metrics);
    if (open_pipe(job, &job->p_in, &job->in_open, pin[1]) < 0 ||
        open_pipe(job, &job->p_out, &job->out_open, pout[0]) < 0 ||
        (!merge && open_pipe(job, &job->p_err, &job->err_open, perr[0]) < 0)) {
        /* uv_pipe_open cannot fail for a fresh pipe; kill rather than hang if it does */
        wd_child_kill_group(pid, SIGKILL);
        return UV_EIO;
    }
    if (merge)
        job->err_eof = true;
    if (st->variant == V_STREAMING)
        uv_read_start((uv_stream_t *)&job->p_out, on_out_alloc_stream, on_out_read_stream);
    else
        uv_read_start((uv_stream_t *)&job->p_out, on_out_alloc_buffered, on_out_read_buffered);
    if (!merge)
        uv_read_start((uv_stream_t *)&job->p_err, on_err_alloc, on_err_read);
    if (cfg->exec_timeout_ms > 0) {
        uv_update_time(st->app->loop); /* the deadline counts from now, not the loop's last tick */
        uv_timer_start(&job->timer, on_timer, cfg->exec_timeout_ms, 0);
    }
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0)
            close(pin[i]);
        if (pout[i] >= 0)
            close(pout[i]);
        if (perr[i] >= 0)
            close(perr[i]);
    }
    return rc;
}

/* classic with marshal_request: {"header":{Name:[values]},"body":{"raw":"<base64>"}} */
static int marshal(struct fork_job *job)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const struct wd_http1_head *head = job->req->head;
    cJSON *root = cJSON_CreateObject();
    cJSON *hdr = cJSON_AddObjectToObject(root, "header");
    cJSON *body = cJSON_AddObjectToObject(root, "body");
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, "Host") == 0 ||
            strcasecmp(head->headers[i].name, "Transfer-Encoding") == 0)
            continue;
        char name[256];
        if (strlen(head->headers[i].name) >= sizeof name)
            continue;
        wd_cgi_canonical_name(name, head->headers[i].name);
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(hdr, name);
        if (arr == NULL)
            arr = cJSON_AddArrayToObject(hdr, name);
        cJSON_AddItemToArray(arr, cJSON_CreateString(head->headers[i].value));
    }
    size_t n = job->body.len;
    char *enc = malloc(4 * ((n + 2) / 3) + 1);
    if (enc == NULL) {
        cJSON_Delete(root);
        return UV_ENOMEM;
    }
    const unsigned char *s = (const unsigned char *)job->body.data;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        enc[o++] = b64[(v >> 18) & 63];
        enc[o++] = b64[(v >> 12) & 63];
        enc[o++] = (char)(i + 1 < n ? b64[(v >> 6) & 63] : '=');
        enc[o++] = (char)(i + 2 < n ? b64[v & 63] : '=');
    }
    enc[o] = '\0';
    cJSON_AddStringToObject(body, "raw", enc);
    free(enc);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL)
        return UV_ENOMEM;
    wd_buf_free(&job->body);
    wd_buf_append(&job->body, text, strlen(text));
    cJSON_free(text);
    return 0;
}

static void start_failed(struct fork_job *job, int rc)
{
    if (job->errtext[0] == '\0')
        snprintf(job->errtext, sizeof job->errtext, "fork/exec %s: %s",
                 job->st->cfg->fprocess_argv[0], uv_strerror(rc));
    job_finish(job);
}

/* ---- the mode interface -------------------------------------------------------------- */

static void on_headers(void *state, struct wd_req *req)
{
    struct fork_state *st = state;
    const struct wd_http1_head *head = req->head;
    if (st->variant == V_CLASSIC) {
        static const char *const allowed[] = {"POST", "PUT", "PATCH", "DELETE", "GET"};
        bool ok = false;
        for (size_t i = 0; i < WD_ARRAY_LEN(allowed); i++)
            ok |= strcmp(head->method, allowed[i]) == 0;
        if (!ok) {
            wd_res_send(req, 405, NULL, 0, NULL, 0);
            return;
        }
        if (st->cfg->write_debug) {
            wd_log_info("Query  %s", head->query);
            wd_log_info("Path  %s", head->path);
        }
        if (st->cfg->debug_headers) {
            for (size_t i = 0; i < head->nheaders; i++)
                printf("[in] %s=[%s]\n", head->headers[i].name, head->headers[i].value);
            fflush(stdout);
        }
        wd_log_info("Forking fprocess.");
    }
    struct fork_job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        wd_res_send(req, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    job->st = st;
    job->req = req;
    req->mode_data = job;
    wd_buf_init(&job->body, 0);
    wd_buf_init(&job->out, 0);
    wd_linelog_init(&job->errlog, "stderr", 2, st->cfg->log_buffer_size);
    snprintf(job->call_id, sizeof job->call_id, "%s", req->call_id);
    job->errlog.call_id = job->call_id; /* the job's copy: stderr may outlive the request */
    uv_timer_init(st->app->loop, &job->timer);
    job->timer.data = job;
    job->timer_open = true;
    job->open_handles = 1;
    WD_LIST_PUSH(st->jobs, job);
    /* Reserve what the client announced, up to 1 MiB: a claim is not a body (a lying
     * Content-Length must not reserve gigabytes); the buffer grows as bytes arrive. */
    size_t want = head->content_length > 0 ? (size_t)head->content_length : 0;
    if (want > ((size_t)1 << 20))
        want = (size_t)1 << 20;
    if (want > 0 && st->variant != V_STREAMING && wd_buf_reserve(&job->body, want) < 0) {
        start_failed(job, UV_ENOMEM);
        return;
    }
    if (st->variant == V_STREAMING) {
        int rc = job_spawn(job);
        if (rc < 0)
            start_failed(job, rc);
    }
}

static void on_body(struct wd_req *req, const char *at, size_t len)
{
    struct fork_job *job = req->mode_data;
    if (job->st->variant == V_STREAMING)
        stdin_write(job, at, len, true);
    else if (wd_buf_append(&job->body, at, len) < 0)
        wd_log_error("request body: out of memory");
}

static void on_end(struct wd_req *req)
{
    struct fork_job *job = req->mode_data;
    if (job->st->variant != V_STREAMING) {
        if (job->st->variant == V_CLASSIC && job->st->cfg->marshal_request && marshal(job) < 0) {
            start_failed(job, UV_ENOMEM);
            return;
        }
        int rc = job_spawn(job);
        if (rc < 0) {
            start_failed(job, rc);
            return;
        }
        stdin_write(job, job->body.data, job->body.len, false);
    }
    job->body_ended = true;
    maybe_close_stdin(job);
}

static void on_drain(struct wd_req *req)
{
    struct fork_job *job = req->mode_data;
    if (job->out_paused && job->out_open) {
        job->out_paused = false;
        uv_read_start((uv_stream_t *)&job->p_out, on_out_alloc_stream, on_out_read_stream);
        exit_grace(job);
    }
}

static void on_abort(struct wd_req *req)
{
    struct fork_job *job = req->mode_data;
    if (job == NULL)
        return;
    job->req = NULL;
    if (job->is_spawned && !job->has_exited)
        wd_child_kill_group(job->pid, SIGKILL);
    close_pipes(job);
    job_maybe_free(job);
}

static int start(struct wd_app *app, void **state)
{
    struct fork_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return UV_ENOMEM;
    st->app = app;
    st->cfg = app->cfg;
    switch (st->cfg->mode) {
    case WD_MODE_CLASSIC:
        st->variant = V_CLASSIC;
        break;
    case WD_MODE_SERIALIZING:
        st->variant = V_SERIALIZING;
        break;
    default:
        st->variant = V_STREAMING;
        break;
    }
    char err[256];
    if (wd_child_resolve(st->cfg->fprocess_argv[0], app->base_env, &st->path, err, sizeof err) < 0)
        wd_log_warn("%s (retried at each request)", err);
    *state = st;
    return 0;
}

static void stop(void *state, wd_done_cb done, void *arg)
{
    struct fork_state *st = state;
    st->is_stopping = true;
    for (struct fork_job *job = st->jobs; job != NULL; job = job->next) {
        if (job->is_spawned && !job->has_exited)
            wd_child_kill_group(job->pid, SIGKILL);
        close_pipes(job);
    }
    free(st->path);
    st->path = NULL;
    if (st->jobs == NULL) {
        free(st);
        done(arg);
        return;
    }
    /* The last job's free frees the state and calls done. */
    st->stop_done = done;
    st->stop_arg = arg;
}

/* One implementation for the three fork modes; start() picks the variant from cfg->mode. */
const struct wd_mode wd_mode_fork = {
    .name = "fork",
    .start = start,
    .on_headers = on_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_drain = on_drain,
    .on_abort = on_abort,
    .stop = stop,
};
