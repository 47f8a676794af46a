/* warm.c: mode warm, a pool of `workers` long-running handler processes, each serving one
 * request at a time over a framed protocol: OpenWhisk's actionloop (a JSON line on stdin, the
 * answer as a JSON line on fd 3) or Nuclio's wrapper protocol (JSON lines over a Unix socket,
 * typed answer lines). The encodings live in warmproto.c; each process is run, probed,
 * restarted and stopped by supervise.c; this file owns the pool, the FIFO of waiting requests,
 * the channels to the processes and the deadlines.
 *
 * Objects: one struct warm; one struct worker per pool slot (fixed); one struct chan per
 * spawned process (its pipes or socket: freed once every handle is closed, so a replacement
 * never reuses a closing handle); one struct job per request (freed once its timer is closed).
 *
 * Readiness: ready once every worker has been ready at least once (or gave up for good), then
 * while at least one worker is initialised (idle or busy). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "child.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mode.h"
#include "supervise.h"
#include "warmproto.h"

#define LINE_MAX_BYTES (256u << 20) /* one answer line; beyond it the worker is replaced */
#define MAX_WORKERS 1024
#define NOACK_READY_MS 20 /* actionloop without ack: alive this long counts as ready */

struct warm;
struct worker;

struct chan {
    struct worker *wk; /* NULL once its process is gone or given up */
    struct warm *w;
    uv_pipe_t in;       /* actionloop: the process's stdin */
    uv_pipe_t res;      /* actionloop: fd 3's read end; nuclio: the accepted connection */
    uv_pipe_t listener; /* nuclio */
    int nopen;          /* handles not yet closed */
    bool has_in, has_res, has_listener;
    bool is_acked; /* actionloop: the ack arrived (or none is asked); nuclio: 's' arrived */
    uint64_t spawned_ms;
    int child_fds[2]; /* actionloop, between prepare and spawned: stdin read end, fd 3 */
    struct wd_buf line;
};

struct job {
    struct warm *w;
    struct wd_req *req;      /* NULL once the client is gone or was answered */
    struct job *next, *prev; /* w->jobs */
    struct job *qnext;       /* w->queue */
    struct worker *wk;       /* the worker holding it */
    struct wd_buf body;
    uv_timer_t timer;
    uint64_t deadline_epoch_ms;
    bool is_queued, has_timer;
};

struct worker {
    struct warm *w;
    int index;
    struct wd_supervise *sv;
    struct chan *ch;
    struct job *job;
    pid_t pid;
    bool is_up, was_up, is_final, is_stopped;
    char **argv; /* nuclio: fprocess with {socket} substituted */
    char sock_path[108];
    char sock_env[140]; /* FWATCHDOG_SOCKET=<sock_path> */
    char name[24];      /* "worker 2", for supervise.c's log lines */
    char **envp;        /* nuclio: w->envp plus sock_env (owned array) */
};

struct warm {
    struct wd_app *app;
    const struct wd_config *cfg;
    bool is_nuclio;
    struct worker *workers;
    size_t nworkers;
    struct job *jobs;
    struct job *queue, **queue_tail;
    size_t nchans, nstopped;
    bool is_ready, is_stopping, in_dispatch, dispatch_again;
    char **envp; /* the watchdog's environment plus our additions (owned array) */
    const char *action_name, *namespace_name;
    wd_done_cb stop_done;
    void *stop_arg;
    char readbuf[64 * 1024];
};

static void dispatch(struct warm *w);
static void maybe_finish_stop(struct warm *w);

/* ---- jobs -------------------------------------------------------------------------------- */

static void on_job_timer_closed(uv_handle_t *h)
{
    struct job *job = h->data;
    struct warm *w = job->w;
    free(job);
    maybe_finish_stop(w);
}

static void job_unqueue(struct job *job)
{
    if (!job->is_queued)
        return;
    struct warm *w = job->w;
    struct job **pp = &w->queue;
    while (*pp != job)
        pp = &(*pp)->qnext;
    *pp = job->qnext;
    if (w->queue_tail == &job->qnext)
        w->queue_tail = pp;
    job->is_queued = false;
    wd_metrics_queue(w->app->metrics, -1);
}

/* The oldest waiting request, taken off the queue; NULL when none waits. */
static struct job *queue_pop(struct warm *w)
{
    struct job *job = w->queue;
    if (job == NULL)
        return NULL;
    w->queue = job->qnext;
    if (w->queue == NULL)
        w->queue_tail = &w->queue;
    job->qnext = NULL;
    job->is_queued = false;
    wd_metrics_queue(w->app->metrics, -1);
    return job;
}

/* Once nobody needs it: no request, no worker. */
static void job_maybe_free(struct job *job)
{
    if (job->req != NULL || job->wk != NULL)
        return;
    job_unqueue(job);
    WD_LIST_REMOVE(job->w->jobs, job);
    wd_buf_free(&job->body);
    /* Freed in place only without a timer; then the stop, if one runs, is finished by the
     * close callbacks still pending (the worker's channel, its supervisor), never from here:
     * callers walk lists of w. */
    if (job->has_timer)
        uv_close((uv_handle_t *)&job->timer, on_job_timer_closed);
    else
        free(job);
}

static void job_send(struct job *job, int status, const struct wd_header *extra, size_t nextra,
                     const void *body, size_t len)
{
    struct wd_req *req = job->req;
    if (req == NULL)
        return;
    job->req = NULL;
    if (job->has_timer)
        uv_timer_stop(&job->timer);
    struct wd_header few[16], *h = few;
    if (nextra + 1 > WD_ARRAY_LEN(few) && (h = malloc((nextra + 1) * sizeof *h)) == NULL) {
        req->mode_data = NULL;
        wd_res_send(req, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    char dur[32];
    snprintf(dur, sizeof dur, "%f", (double)(uv_hrtime() - req->start_ns) / 1e9);
    h[0] = (struct wd_header){"X-Duration-Seconds", dur};
    if (nextra > 0)
        memcpy(h + 1, extra, nextra * sizeof *h);
    req->mode_data = NULL;
    wd_res_send(req, status, h, nextra + 1, body, len);
    if (h != few)
        free(h);
}

/* An error answer: a short text body, and the reason for the request's log line. */
static void job_fail(struct job *job, int status, const char *what)
{
    if (job->req == NULL)
        return;
    wd_req_note_error(job->req, what);
    char body[256];
    int len = snprintf(body, sizeof body, "%s\n", what);
    struct wd_header h[] = {{"Content-Type", "text/plain; charset=utf-8"},
                            {"X-OpenFaaS-Internal", "fwatchdog"}};
    job_send(job, status, h, WD_ARRAY_LEN(h), body,
             (size_t)len < sizeof body ? (size_t)len : sizeof body - 1);
}

/* ---- channels ---------------------------------------------------------------------------- */

static void chan_unref(struct chan *ch)
{
    if (--ch->nopen > 0)
        return;
    struct warm *w = ch->w;
    wd_buf_free(&ch->line);
    free(ch);
    w->nchans--;
    maybe_finish_stop(w);
}

static void on_chan_handle_closed(uv_handle_t *h)
{
    chan_unref(h->data);
}

static void close_handle(uv_pipe_t *p, bool *has)
{
    if (!*has)
        return;
    *has = false;
    uv_close((uv_handle_t *)p, on_chan_handle_closed);
}

/* The channel's process is gone (or given up): no more lines from it reach a worker. */
static void chan_close(struct chan *ch)
{
    if (ch->wk != NULL && ch->wk->ch == ch)
        ch->wk->ch = NULL;
    ch->wk = NULL;
    for (int i = 0; i < 2; i++) {
        if (ch->child_fds[i] >= 0)
            close(ch->child_fds[i]);
        ch->child_fds[i] = -1;
    }
    ch->nopen++; /* hold the struct while closing */
    close_handle(&ch->in, &ch->has_in);
    close_handle(&ch->res, &ch->has_res);
    close_handle(&ch->listener, &ch->has_listener);
    chan_unref(ch);
}

/* Give up on a worker's process: its channel is dropped and its group killed; supervise.c
 * starts a fresh one at once. The job it held was answered already. */
static void worker_recycle(struct worker *wk, const char *why)
{
    wd_log_error("warm worker %d pid=%d: %s: killed and replaced", wk->index, (int)wk->pid, why);
    if (wk->job != NULL) {
        struct job *job = wk->job;
        wk->job = NULL;
        job->wk = NULL;
        job_maybe_free(job);
    }
    struct chan *ch = wk->ch;
    wk->ch = NULL;
    if (ch != NULL)
        chan_close(ch);
    wd_supervise_set_call_id(wk->sv, NULL);
    wd_supervise_recycle(wk->sv);
}

static void worker_done(struct worker *wk)
{
    struct job *job = wk->job;
    wk->job = NULL;
    wd_supervise_set_call_id(wk->sv, NULL);
    if (job != NULL) {
        job->wk = NULL;
        job_maybe_free(job);
    }
    dispatch(wk->w);
}

static void answer(struct worker *wk, const char *line, size_t len)
{
    struct job *job = wk->job;
    if (job == NULL) {
        wd_log_warn("warm worker %d pid=%d: an answer with no request: dropped", wk->index,
                    (int)wk->pid);
        return;
    }
    struct wd_warm_reply r;
    int rc = wk->w->is_nuclio ? wd_warm_decode_nuclio(line, len, &r)
                              : wd_warm_decode_actionloop(line, len, &r);
    if (rc < 0) {
        wd_log_error("warm worker %d pid=%d: bad answer: %s", wk->index, (int)wk->pid, r.err);
        char what[200];
        snprintf(what, sizeof what, "bad answer from the function: %s", r.err);
        job_fail(job, 502, what);
    } else {
        job_send(job, r.status, r.headers, r.nheaders, r.body, r.body_len);
    }
    wd_warm_reply_free(&r);
    worker_done(wk);
}

static void nuclio_line(struct worker *wk, const char *line, size_t len)
{
    char type = '\0';
    if (len > 0)
        type = line[0];
    if (type == 's') {
        wk->ch->is_acked = true;
        wd_supervise_poke(wk->sv);
    } else if (type == 'r') {
        answer(wk, line + 1, len - 1);
    } else if (type == 'l') {
        struct wd_buf text;
        enum wd_log_level level;
        wd_buf_init(&text, 0);
        if (wd_warm_nuclio_log(line + 1, len - 1, &level, &text) == 0)
            wd_log_at(level, "worker %d: %s", wk->index, text.data);
        else
            wd_log_warn("warm worker %d: a log record that is not JSON with a message", wk->index);
        wd_buf_free(&text);
    } else if (type == 'm') {
        double s;
        if (wd_warm_nuclio_duration(line + 1, len - 1, &s) == 0)
            wd_metrics_reported_duration(wk->w->app->metrics, s);
    } else if (len > 0) {
        wd_log_warn("warm worker %d: unknown message type '%c': ignored", wk->index, type);
    }
}

static void actionloop_line(struct worker *wk, const char *line, size_t len)
{
    struct chan *ch = wk->ch;
    if (ch->is_acked) {
        answer(wk, line, len);
    } else if (wd_warm_is_ack(line, len)) {
        ch->is_acked = true;
        wd_supervise_poke(wk->sv);
    } else {
        /* An init failure: the process is killed and restarted with backoff. */
        wd_log_error("warm worker %d pid=%d: expected {\"ok\":true} on fd 3, got %.*s", wk->index,
                     (int)wk->pid, len > 200 ? 200 : (int)len, line);
        wd_child_kill_group(wk->pid, SIGKILL);
        wk->ch = NULL;
        chan_close(ch);
    }
}

/* Split what arrived into lines; never assume one read is one message. */
static void chan_feed(struct chan *ch, const char *data, size_t n)
{
    while (n > 0 && ch->wk != NULL) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl != NULL ? (size_t)(nl - data) : n;
        if (ch->line.len + take > LINE_MAX_BYTES) {
            struct worker *wk = ch->wk;
            if (wk->job != NULL)
                job_fail(wk->job, 502, "the function's answer is too large");
            worker_recycle(wk, "answer line too large");
            return;
        }
        if (wd_buf_append(&ch->line, data, take) < 0) {
            worker_recycle(ch->wk, "out of memory");
            return;
        }
        if (nl == NULL)
            return;
        data += take + 1;
        n -= take + 1;
        size_t len = ch->line.len;
        while (len > 0 && ch->line.data[len - 1] == '\r')
            len--;
        ch->line.len = 0;
        if (ch->w->is_nuclio)
            nuclio_line(ch->wk, ch->line.data, len);
        else
            actionloop_line(ch->wk, ch->line.data, len);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct chan *ch = h->data;
    WD_UNUSED(suggested);
    *buf = uv_buf_init(ch->w->readbuf, sizeof ch->w->readbuf);
}

static void on_res_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct chan *ch = s->data;
    if (n > 0) {
        chan_feed(ch, buf->base, (size_t)n);
    } else if (n < 0) {
        /* EOF: the process closed its end, or is exiting; its exit does the rest. */
        uv_read_stop(s);
    }
}

/* Read what is already waiting, before the channel is dropped at the process's exit: an
 * answer written just before exiting still counts. */
static void chan_drain(struct chan *ch)
{
    uv_os_fd_t fd;
    if (!ch->has_res || uv_fileno((uv_handle_t *)&ch->res, &fd) < 0)
        return;
    for (int i = 0; i < 64 && ch->wk != NULL; i++) {
        ssize_t n = read(fd, ch->w->readbuf, sizeof ch->w->readbuf);
        if (n <= 0)
            break;
        chan_feed(ch, ch->w->readbuf, (size_t)n);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct chan *ch = server->data;
    if (status < 0 || ch->has_res)
        return;
    uv_pipe_init(ch->w->app->loop, &ch->res, 0);
    ch->res.data = ch;
    ch->has_res = true;
    ch->nopen++;
    if (uv_accept(server, (uv_stream_t *)&ch->res) < 0) {
        close_handle(&ch->res, &ch->has_res);
        return;
    }
    uv_read_start((uv_stream_t *)&ch->res, on_alloc, on_res_read);
    close_handle(&ch->listener, &ch->has_listener); /* one connection per process */
}

/* ---- supervise callbacks ----------------------------------------------------------------- */

static int open_pipe(struct chan *ch, uv_pipe_t *p, bool *has, int fd)
{
    uv_pipe_init(ch->w->app->loop, p, 0);
    p->data = ch;
    *has = true;
    ch->nopen++;
    return uv_pipe_open(p, fd);
}

static int prepare(void *arg, int fds[4])
{
    struct worker *wk = arg;
    struct warm *w = wk->w;
    struct chan *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return UV_ENOMEM;
    ch->wk = wk;
    ch->w = w;
    ch->child_fds[0] = ch->child_fds[1] = -1;
    wd_buf_init(&ch->line, 0);
    w->nchans++;
    wk->ch = ch;
    int rc;
    if (w->is_nuclio) {
        unlink(wk->sock_path);
        uv_pipe_init(w->app->loop, &ch->listener, 0);
        ch->listener.data = ch;
        ch->has_listener = true;
        ch->nopen++;
        rc = uv_pipe_bind(&ch->listener, wk->sock_path);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&ch->listener, 1, on_connection);
        if (rc < 0)
            wd_log_error("warm worker %d: listen on %s: %s", wk->index, wk->sock_path,
                         uv_strerror(rc));
    } else {
        int pin[2], pres[2];
        if (pipe2(pin, O_CLOEXEC) < 0) {
            rc = -errno;
        } else if (pipe2(pres, O_CLOEXEC) < 0) {
            rc = -errno;
            close(pin[0]);
            close(pin[1]);
        } else {
            ch->child_fds[0] = pin[0];
            ch->child_fds[1] = pres[1];
            rc = open_pipe(ch, &ch->in, &ch->has_in, pin[1]);
            if (rc < 0)
                close(pin[1]);
            int rc2 = open_pipe(ch, &ch->res, &ch->has_res, pres[0]);
            if (rc2 < 0)
                close(pres[0]);
            else
                uv_read_start((uv_stream_t *)&ch->res, on_alloc, on_res_read);
            rc = rc < 0 ? rc : rc2;
            fds[0] = pin[0];
            fds[3] = pres[1];
        }
        ch->is_acked = !w->cfg->warm_ack;
    }
    if (rc < 0) {
        wk->ch = NULL;
        chan_close(ch);
        return rc;
    }
    return 0;
}

static void spawned(void *arg, pid_t pid)
{
    struct worker *wk = arg;
    struct chan *ch = wk->ch;
    if (ch == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        if (ch->child_fds[i] >= 0)
            close(ch->child_fds[i]);
        ch->child_fds[i] = -1;
    }
    if (pid < 0) {
        wk->ch = NULL;
        chan_close(ch);
        return;
    }
    wk->pid = pid;
    ch->spawned_ms = uv_now(wk->w->app->loop);
}

static void exited(void *arg)
{
    struct worker *wk = arg;
    struct chan *ch = wk->ch;
    if (ch != NULL) {
        chan_drain(ch); /* may drop the channel itself (a bad answer) */
        // cppcheck-suppress knownConditionTrueFalse
        if (wk->ch == ch) {
            wk->ch = NULL;
            chan_close(ch);
        }
    }
    struct job *job = wk->job;
    if (job != NULL) {
        job_fail(job, 502, "the function's worker exited");
        wk->job = NULL;
        job->wk = NULL;
        job_maybe_free(job);
    }
    wd_supervise_set_call_id(wk->sv, NULL);
}

static void probe(void *arg)
{
    struct worker *wk = arg;
    struct chan *ch = wk->ch;
    bool ok = ch != NULL && ch->is_acked;
    if (ok && !wk->w->is_nuclio && !wk->w->cfg->warm_ack)
        ok = uv_now(wk->w->app->loop) - ch->spawned_ms >= NOACK_READY_MS;
    wd_supervise_probe_done(wk->sv, ok);
}

static void update_ready(struct warm *w)
{
    size_t nup = 0, nboot = 0, nfinal = 0;
    for (size_t i = 0; i < w->nworkers; i++) {
        struct worker *wk = &w->workers[i];
        nup += wk->is_up;
        nboot += wk->was_up || wk->is_final;
        nfinal += wk->is_final;
    }
    wd_metrics_workers_ready(w->app->metrics, nup);
    bool ready = !w->is_stopping && nboot == w->nworkers && nup > 0;
    if (ready != w->is_ready) {
        w->is_ready = ready;
        wd_app_set_ready(w->app, ready);
    }
    if (nfinal == w->nworkers) {
        /* Nobody will serve them. */
        struct job *job;
        while ((job = queue_pop(w)) != NULL) {
            job_fail(job, 503, "no function worker is running");
            job_maybe_free(job);
        }
    }
}

static void on_state(void *arg, bool is_up, bool is_final)
{
    struct worker *wk = arg;
    wk->is_up = is_up;
    wk->was_up |= is_up;
    wk->is_final = is_final;
    update_ready(wk->w);
    if (is_up)
        dispatch(wk->w);
}

/* ---- requests ---------------------------------------------------------------------------- */

static void on_write_done(uv_write_t *wr, int status)
{
    WD_UNUSED(status); /* a dead process is noticed at its exit */
    free(wr->data);
    free(wr);
}

static int worker_send(struct worker *wk, struct job *job)
{
    struct warm *w = wk->w;
    struct wd_req *req = job->req;
    struct wd_warm_event ev = {
        .head = req->head,
        .body = job->body.len > 0 ? job->body.data : "",
        .body_len = job->body.len,
        .call_id = req->call_id,
        .deadline_ms = job->deadline_epoch_ms,
        .now_ms = (uint64_t)(uv_hrtime() / 1000000),
        .action_name = w->action_name,
        .namespace_name = w->namespace_name,
    };
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) == 0)
        ev.now_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    struct wd_buf out;
    wd_buf_init(&out, 0);
    int rc = w->is_nuclio ? wd_warm_encode_nuclio(&out, &ev) : wd_warm_encode_actionloop(&out, &ev);
    uv_write_t *wr = rc == 0 ? malloc(sizeof *wr) : NULL;
    if (wr == NULL) {
        wd_buf_free(&out);
        return UV_ENOMEM;
    }
    wr->data = out.data;
    uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
    uv_stream_t *s = (uv_stream_t *)(w->is_nuclio ? &wk->ch->res : &wk->ch->in);
    rc = uv_write(wr, s, &b, 1, on_write_done);
    if (rc < 0) {
        free(out.data);
        free(wr);
        return rc;
    }
    wd_buf_free(&job->body); /* sent: no need to hold it */
    return 0;
}

static struct worker *idle_worker(struct warm *w)
{
    for (size_t i = 0; i < w->nworkers; i++) {
        struct worker *wk = &w->workers[i];
        if (wk->is_up && wk->job == NULL && wk->ch != NULL && wk->ch->is_acked &&
            (!w->is_nuclio || wk->ch->has_res))
            return wk;
    }
    return NULL;
}

/* Hand waiting requests to idle workers, oldest first. Never re-entered: an answer sent from
 * here may let the server start the next pipelined request, which lands in the queue. */
static void dispatch(struct warm *w)
{
    if (w->in_dispatch) {
        w->dispatch_again = true;
        return;
    }
    w->in_dispatch = true;
    do {
        w->dispatch_again = false;
        struct worker *wk;
        while (w->queue != NULL && !w->is_stopping && (wk = idle_worker(w)) != NULL) {
            struct job *job = queue_pop(w);
            int rc = worker_send(wk, job);
            if (rc < 0) {
                wd_log_error("warm worker %d pid=%d: send: %s", wk->index, (int)wk->pid,
                             uv_strerror(rc));
                job_fail(job, 502, "could not send the request to the function");
                job_maybe_free(job);
                worker_recycle(wk, "send failed");
                continue;
            }
            wk->job = job;
            job->wk = wk;
            wd_supervise_set_call_id(wk->sv, job->req->call_id);
        }
    } while (w->dispatch_again);
    w->in_dispatch = false;
}

static void on_deadline(uv_timer_t *t)
{
    struct job *job = t->data;
    if (job->wk != NULL) {
        struct worker *wk = job->wk;
        job_fail(job, 504, "the function's deadline passed");
        worker_recycle(wk, "deadline passed");
    } else {
        job_fail(job, 504,
                 job->is_queued ? "the deadline passed while waiting for a worker"
                                : "the deadline passed before the body arrived");
        job_maybe_free(job);
    }
}

static void on_headers(void *state, struct wd_req *req)
{
    struct warm *w = state;
    struct job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        wd_res_send(req, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    job->w = w;
    job->req = req;
    wd_buf_init(&job->body, w->cfg->max_body_size > 0 ? (size_t)w->cfg->max_body_size : 0);
    WD_LIST_PUSH(w->jobs, job);
    req->mode_data = job;
    uint64_t timeout_ms = wd_req_timeout_ms(w->cfg, req->head);
    uint64_t spent_ms = (uv_hrtime() - req->start_ns) / 1000000;
    job->deadline_epoch_ms = req->deadline_ms;
    if (timeout_ms > 0) {
        if (timeout_ms < w->cfg->exec_timeout_ms)
            job->deadline_epoch_ms -= w->cfg->exec_timeout_ms - timeout_ms;
        uv_timer_init(w->app->loop, &job->timer);
        job->timer.data = job;
        job->has_timer = true;
        uv_timer_start(&job->timer, on_deadline, timeout_ms > spent_ms ? timeout_ms - spent_ms : 0,
                       0);
    }
}

static void on_body(struct wd_req *req, const char *at, size_t len)
{
    struct job *job = req->mode_data;
    if (job == NULL)
        return;
    if (wd_buf_append(&job->body, at, len) < 0) {
        job_fail(job, 413, "request body too large");
        job_maybe_free(job);
    }
}

static void on_end(struct wd_req *req)
{
    struct job *job = req->mode_data;
    if (job == NULL)
        return;
    struct warm *w = job->w;
    job->is_queued = true;
    *w->queue_tail = job;
    w->queue_tail = &job->qnext;
    wd_metrics_queue(w->app->metrics, 1);
    bool is_down = true;
    for (size_t i = 0; i < w->nworkers && is_down; i++)
        is_down = w->workers[i].is_final;
    if (is_down) {
        update_ready(w); /* answers the queue with 503 */
        return;
    }
    dispatch(w);
}

static void on_abort(struct wd_req *req)
{
    struct job *job = req->mode_data;
    if (job == NULL || job->req != req)
        return;
    job->req = NULL;
    /* A busy worker finishes its call; the answer is dropped. */
    job_maybe_free(job);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static char **build_argv(char *const *argv, const char *sock)
{
    size_t n = 0;
    while (argv[n] != NULL)
        n++;
    char **out = calloc(n + 1, sizeof *out);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct wd_buf b;
        wd_buf_init(&b, 0);
        int rc = 0;
        for (const char *p = argv[i]; *p != '\0';) {
            const char *hit = strstr(p, "{socket}");
            size_t len = hit != NULL ? (size_t)(hit - p) : strlen(p);
            rc |= wd_buf_append(&b, p, len);
            if (hit == NULL)
                break;
            rc |= wd_buf_append(&b, sock, strlen(sock));
            p = hit + 8;
        }
        rc |= wd_buf_append(&b, "", 1);
        out[i] = b.data;
        if (rc < 0) {
            for (size_t j = 0; j <= i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void free_argv(char **argv)
{
    for (size_t i = 0; argv != NULL && argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}

/* The watchdog's environment plus `extra` (NULL-terminated "K=V" strings, borrowed). */
static char **build_env(char *const *base, const char **extra)
{
    size_t n = 0, m = 0;
    while (base[n] != NULL)
        n++;
    while (extra[m] != NULL)
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    if (env == NULL)
        return NULL;
    memcpy(env, base, n * sizeof *env);
    memcpy(env + n, extra, m * sizeof *env);
    return env;
}

static void warm_free(struct warm *w)
{
    for (size_t i = 0; i < w->nworkers; i++) {
        free_argv(w->workers[i].argv);
        free(w->workers[i].envp);
        if (w->is_nuclio && w->workers[i].sock_path[0] != '\0')
            unlink(w->workers[i].sock_path);
    }
    free(w->workers);
    free(w->envp);
    free(w);
}

static bool is_ready(void *state)
{
    WD_UNUSED(state);
    return false; /* wd_app_set_ready once every worker is */
}

static int start(struct wd_app *app, void **state)
{
    const struct wd_config *cfg = app->cfg;
    if (cfg->fprocess_argv == NULL || cfg->fprocess_argc == 0) {
        wd_log_error("mode warm: fprocess is required");
        return UV_EINVAL;
    }
    if (cfg->workers < 1 || cfg->workers > MAX_WORKERS) {
        wd_log_error("mode warm: workers must be from 1 to %d, not %llu", MAX_WORKERS,
                     (unsigned long long)cfg->workers);
        return UV_EINVAL;
    }
    struct warm *w = calloc(1, sizeof *w);
    size_t n = (size_t)cfg->workers;
    if (w == NULL || (w->workers = calloc(n, sizeof *w->workers)) == NULL) {
        free(w);
        return UV_ENOMEM;
    }
    w->app = app;
    w->cfg = cfg;
    w->nworkers = n;
    w->is_nuclio = cfg->warm_protocol == WD_WARM_NUCLIO;
    w->queue_tail = &w->queue;
    w->action_name = getenv("OPENFAAS_NAME") ? getenv("OPENFAAS_NAME") : "function";
    w->namespace_name = getenv("OPENFAAS_NAMESPACE") ? getenv("OPENFAAS_NAMESPACE") : "default";
    const char *extra[] = {NULL, NULL};
    if (!w->is_nuclio && cfg->warm_ack)
        extra[0] = "__OW_WAIT_FOR_ACK=1";
    if ((w->envp = build_env(app->base_env, extra)) == NULL) {
        warm_free(w);
        return UV_ENOMEM;
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct worker *wk = &w->workers[i];
        wk->w = w;
        wk->index = (int)i;
        snprintf(wk->name, sizeof wk->name, "worker %d", wk->index);
        if (!w->is_nuclio)
            continue;
        int len = snprintf(wk->sock_path, sizeof wk->sock_path, "%s/fwatchdog-%d-%zu.sock", tmp,
                           (int)getpid(), i);
        if (len < 0 || (size_t)len >= sizeof wk->sock_path) {
            wd_log_error("mode warm: socket path under %s is too long; set TMPDIR shorter", tmp);
            rc = UV_ENAMETOOLONG;
        } else if ((wk->argv = build_argv(cfg->fprocess_argv, wk->sock_path)) == NULL) {
            rc = UV_ENOMEM;
        }
    }
    if (rc < 0) {
        warm_free(w);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        struct worker *wk = &w->workers[i];
        /* Nuclio workers also find their socket in the environment. Supervise keeps the
         * arrays for every respawn: they live as long as the worker. */
        if (w->is_nuclio) {
            const char *sextra[] = {wk->sock_env, NULL};
            snprintf(wk->sock_env, sizeof wk->sock_env, "FWATCHDOG_SOCKET=%s", wk->sock_path);
            if ((wk->envp = build_env(w->envp, sextra)) == NULL) {
                rc = UV_ENOMEM;
                break;
            }
        }
        struct wd_supervise_opts o = {
            .app = app,
            .name = wk->name,
            .argv = wk->argv,
            .envp = wk->envp != NULL ? wk->envp : w->envp,
            .is_member = true,
            .prepare = prepare,
            .spawned = spawned,
            .exited = exited,
            .probe = probe,
            .on_state = on_state,
            .arg = wk,
        };
        rc = wd_supervise_start(&wk->sv, &o);
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        /* main exits 1 without a stop(): end the workers already started. */
        for (size_t i = 0; i < n; i++) {
            if (w->workers[i].pid > 0)
                wd_child_kill_group(w->workers[i].pid, SIGKILL);
        }
        return rc;
    }
    wd_log_info("mode warm: %zu worker%s, protocol %s", n, n == 1 ? "" : "s",
                w->is_nuclio ? "nuclio" : "actionloop");
    *state = w;
    return 0;
}

static void maybe_finish_stop(struct warm *w)
{
    if (!w->is_stopping || w->nstopped < w->nworkers || w->nchans > 0 || w->jobs != NULL)
        return;
    wd_done_cb done = w->stop_done;
    void *arg = w->stop_arg;
    w->is_stopping = false; /* once */
    w->nstopped = 0;
    warm_free(w);
    if (done != NULL)
        done(arg);
}

static void on_worker_stopped(void *arg)
{
    struct worker *wk = arg;
    wk->is_stopped = true;
    wk->w->nstopped++;
    maybe_finish_stop(wk->w);
}

static void stop(void *state, wd_done_cb done, void *arg)
{
    struct warm *w = state;
    w->is_stopping = true;
    w->stop_done = done;
    w->stop_arg = arg;
    update_ready(w);
    for (struct job *job = w->jobs, *next; job != NULL; job = next) {
        next = job->next;
        job_fail(job, 503, "shutting down");
        job_unqueue(job);
        job_maybe_free(job);
    }
    for (size_t i = 0; i < w->nworkers; i++) {
        struct worker *wk = &w->workers[i];
        if (wk->ch != NULL && wk->ch->has_in)
            close_handle(&wk->ch->in, &wk->ch->has_in); /* EOF on its stdin */
        if (wk->sv != NULL) {
            wd_supervise_stop(wk->sv, on_worker_stopped, wk);
        } else {
            wk->is_stopped = true;
            w->nstopped++;
        }
    }
    maybe_finish_stop(w);
}

const struct wd_mode wd_mode_warm = {
    .name = "warm",
    .start = start,
    .is_ready = is_ready,
    .on_headers = on_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_abort = on_abort,
    .stop = stop,
};
