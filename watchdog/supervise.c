/* supervise.c: one long-running handler process, for modes http and warm (see supervise.h). It owns
 * the process, its output pipes and its timers; it never speaks HTTP (the mode supplies the probe)
 * and it creates processes only through child.c.
 *
 * Lifecycle: spawn -> probe every 20 ms -> ready -> (exit: unready, then restart after a
 * backoff of 100 ms doubling to 10 s, reset after 10 s up; or, for restart_policy=never, the
 * watchdog drains and exits with the child's status) ... stop: SIGTERM to the group, SIGKILL
 * after shutdown_grace, wait for the exit, close everything. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "child.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#define PROBE_EVERY_MS 20
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define STABLE_MS 10000 /* up this long: the next restart starts from BACKOFF_MIN_MS again */

/* One spawned process and its output pipes. Created by spawn(), freed once both pipes are
 * closed and the process was reaped. */
struct run {
    struct wd_supervise *sv;
    struct run *next;
    pid_t pid;
    bool has_exited;
    uv_pipe_t out, err;
    bool out_open, err_open;
    struct wd_linelog outlog, errlog;
};

/* Created by wd_supervise_start(), freed by the stop sequence once every handle is closed. */
struct wd_supervise {
    struct wd_app *app;
    const struct wd_config *cfg;
    struct wd_supervise_opts o;
    char *path;       /* resolved fprocess argv[0] */
    char *cmdline;    /* the argv joined by spaces, for the log */
    const char *name; /* "upstream", "worker 2": for the log */
    struct run *runs; /* the live one first; older ones only while their pipes drain */
    struct run *cur;  /* the process now running, or NULL */
    uv_timer_t probe_timer, restart_timer, kill_timer;
    int open_timers;
    bool is_ready, is_probing, is_final, is_stopping;
    bool is_recycling; /* the running process was killed on purpose: restart it at once */
    uint64_t backoff_ms;
    uint64_t started_ms; /* uv_now() at the last spawn */
    wd_done_cb stop_done;
    void *stop_arg;
    char readbuf[64 * 1024];
};

static void maybe_finish_stop(struct wd_supervise *sv);

static void run_maybe_free(struct run *r)
{
    if (r->out_open || r->err_open || !r->has_exited)
        return;
    struct wd_supervise *sv = r->sv;
    for (struct run **pp = &sv->runs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    wd_linelog_flush(&r->outlog);
    wd_linelog_flush(&r->errlog);
    wd_linelog_free(&r->outlog);
    wd_linelog_free(&r->errlog);
    free(r);
    maybe_finish_stop(sv);
}

static void on_pipe_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    if (h == (uv_handle_t *)&r->out)
        r->out_open = false;
    else
        r->err_open = false;
    run_maybe_free(r);
}

static void close_pipe(uv_pipe_t *p, bool is_open)
{
    if (is_open && !uv_is_closing((uv_handle_t *)p))
        uv_close((uv_handle_t *)p, on_pipe_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct run *r = h->data;
    WD_UNUSED(suggested);
    *buf = uv_buf_init(r->sv->readbuf, sizeof r->sv->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct run *r = s->data;
    struct wd_linelog *ll = s == (uv_stream_t *)&r->out ? &r->outlog : &r->errlog;
    if (n > 0) {
        wd_linelog_feed(ll, buf->base, (size_t)n);
    } else if (n < 0) {
        wd_linelog_flush(ll);
        close_pipe((uv_pipe_t *)s, true);
    }
}

static void set_ready(struct wd_supervise *sv, bool is_ready)
{
    if (sv->is_ready == is_ready)
        return;
    sv->is_ready = is_ready;
    if (!sv->o.is_member)
        wd_app_set_ready(sv->app, is_ready);
}

static void probe_tick(uv_timer_t *t);

static void arm_probe(struct wd_supervise *sv, uint64_t ms)
{
    uv_timer_start(&sv->probe_timer, probe_tick, ms, 0);
}

static void probe_tick(uv_timer_t *t)
{
    struct wd_supervise *sv = t->data;
    if (sv->cur == NULL || sv->is_ready || sv->is_probing || sv->is_stopping)
        return;
    sv->is_probing = true;
    sv->o.probe(sv->o.arg);
}

void wd_supervise_probe_done(struct wd_supervise *sv, bool is_ok)
{
    sv->is_probing = false;
    if (sv->cur == NULL || sv->is_stopping)
        return;
    if (!is_ok) {
        arm_probe(sv, PROBE_EVERY_MS);
        return;
    }
    wd_log_info("%s ready pid=%d after_ms=%llu", sv->name, (int)sv->cur->pid,
                (unsigned long long)(uv_now(sv->app->loop) - sv->started_ms));
    set_ready(sv, true);
    sv->o.on_state(sv->o.arg, true, false);
}

static void on_child_exit(void *arg, int exit_status, int term_signal);

static int spawn(struct wd_supervise *sv)
{
    const struct wd_config *cfg = sv->cfg;
    int pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int extra[4] = {-1, -1, -1, -1};
    int rc;
    if (sv->path == NULL) {
        char err[320];
        rc = wd_child_resolve(cfg->fprocess_argv[0], sv->app->base_env, &sv->path, err, sizeof err);
        if (rc < 0) {
            wd_log_error("%s", err);
            return rc;
        }
    }
    struct run *r = calloc(1, sizeof *r);
    if (r == NULL)
        return UV_ENOMEM;
    r->sv = sv;
    if (pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
        rc = -errno;
        goto fail;
    }
    if (sv->o.prepare != NULL && (rc = sv->o.prepare(sv->o.arg, extra)) < 0)
        goto fail;
    struct wd_child_opts o = {
        .path = sv->path,
        .argv = sv->o.argv != NULL ? sv->o.argv : cfg->fprocess_argv,
        .envp = sv->o.envp != NULL ? sv->o.envp : sv->app->base_env,
        .fds = {extra[0], pout[1], perr[1], extra[3]},
        .rlimits = &cfg->rlimits,
        .on_exit = on_child_exit,
        .arg = r,
    };
    pid_t pid = wd_child_spawn(&o);
    close(pout[1]);
    close(perr[1]);
    if (sv->o.spawned != NULL)
        sv->o.spawned(sv->o.arg, pid);
    if (pid < 0) {
        rc = pid;
        close(pout[0]);
        close(perr[0]);
        wd_log_error("fork/exec %s: %s", sv->path, strerror(-rc));
        free(r);
        return rc;
    }
    r->pid = pid;
    wd_linelog_init(&r->outlog, "stdout", 1, cfg->log_buffer_size);
    wd_linelog_init(&r->errlog, "stderr", 2, cfg->log_buffer_size);
    uv_pipe_init(sv->app->loop, &r->out, 0);
    uv_pipe_init(sv->app->loop, &r->err, 0);
    r->out.data = r->err.data = r;
    r->out_open = r->err_open = true;
    if (uv_pipe_open(&r->out, pout[0]) == 0)
        uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
    else
        close(pout[0]);
    if (uv_pipe_open(&r->err, perr[0]) == 0)
        uv_read_start((uv_stream_t *)&r->err, on_alloc, on_read);
    else
        close(perr[0]);
    r->next = sv->runs;
    sv->runs = r;
    sv->cur = r;
    sv->started_ms = uv_now(sv->app->loop);
    wd_metrics_child_started(sv->app->metrics);
    wd_log_info("Forking: %s pid=%d", sv->cmdline, (int)pid);
    arm_probe(sv, 0);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (pout[i] >= 0)
            close(pout[i]);
        if (perr[i] >= 0)
            close(perr[i]);
    }
    free(r);
    return rc;
}

static void give_up(struct wd_supervise *sv, int exit_code, bool shutdown)
{
    sv->is_final = true;
    sv->o.on_state(sv->o.arg, false, true);
    if (shutdown)
        wd_app_shutdown(sv->app, exit_code);
}

static void on_restart_timer(uv_timer_t *t)
{
    struct wd_supervise *sv = t->data;
    if (sv->is_stopping || sv->app->is_shutting_down)
        return;
    wd_metrics_warm_restart(sv->app->metrics);
    if (spawn(sv) < 0) {
        sv->backoff_ms = sv->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : sv->backoff_ms * 2;
        uv_timer_start(&sv->restart_timer, on_restart_timer, sv->backoff_ms, 0);
    }
}

/* After the exit: relay what is already in a pipe, then close it. Anything an escaped
 * grandchild writes later is lost with it (its group was killed). */
static void drain_pipe(struct run *r, uv_pipe_t *p, bool is_open, struct wd_linelog *ll)
{
    uv_os_fd_t fd;
    if (!is_open || uv_is_closing((uv_handle_t *)p) || uv_fileno((uv_handle_t *)p, &fd) < 0)
        return;
    for (;;) {
        ssize_t n = read(fd, r->sv->readbuf, sizeof r->sv->readbuf);
        if (n <= 0)
            break;
        wd_linelog_feed(ll, r->sv->readbuf, (size_t)n);
    }
    wd_linelog_flush(ll);
    close_pipe(p, true);
}

static void on_child_exit(void *arg, int exit_status, int term_signal)
{
    struct run *r = arg;
    struct wd_supervise *sv = r->sv;
    r->has_exited = true;
    wd_metrics_child_exited(sv->app->metrics, exit_status, term_signal);
    char what[64];
    wd_child_describe_exit(what, sizeof what, exit_status, term_signal);
    /* Anything the process left in its group goes with it. */
    wd_child_kill_group(r->pid, SIGKILL);
    drain_pipe(r, &r->out, r->out_open, &r->outlog);
    drain_pipe(r, &r->err, r->err_open, &r->errlog);
    if (sv->cur == r) {
        sv->cur = NULL;
        uv_timer_stop(&sv->probe_timer);
        uv_timer_stop(&sv->kill_timer);
        set_ready(sv, false);
        if (sv->o.exited != NULL)
            sv->o.exited(sv->o.arg);
        bool is_recycled = sv->is_recycling;
        sv->is_recycling = false;
        if (is_recycled && !sv->is_stopping && !sv->app->is_shutting_down) {
            wd_log_info("replacing killed %s pid=%d", sv->name, (int)r->pid);
            sv->o.on_state(sv->o.arg, false, false);
            uv_timer_start(&sv->restart_timer, on_restart_timer, 0, 0);
        } else if (sv->is_stopping) {
            wd_log_info("%s stopped pid=%d: %s", sv->name, (int)r->pid, what);
        } else {
            wd_log_error("Forked function has terminated: %s pid=%d", what, (int)r->pid);
            int code = exit_status >= 0 ? exit_status : 128 + term_signal;
            enum wd_restart_policy pol = sv->cfg->restart_policy;
            if (sv->app->is_shutting_down) {
                give_up(sv, code, false);
            } else if (pol == WD_RESTART_NEVER) {
                wd_log_info("restart_policy=never: shutting down exit_code=%d", code);
                give_up(sv, code, true);
            } else if (pol == WD_RESTART_ON_FAILURE && exit_status == 0) {
                wd_log_info("restart_policy=on-failure: clean exit, not restarted");
                give_up(sv, 0, false);
            } else {
                uint64_t up = uv_now(sv->app->loop) - sv->started_ms;
                if (up >= STABLE_MS)
                    sv->backoff_ms = BACKOFF_MIN_MS;
                wd_log_info("restarting %s in %llums", sv->name,
                            (unsigned long long)sv->backoff_ms);
                sv->o.on_state(sv->o.arg, false, false);
                uv_timer_start(&sv->restart_timer, on_restart_timer, sv->backoff_ms, 0);
                sv->backoff_ms =
                    sv->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : sv->backoff_ms * 2;
            }
        }
    }
    run_maybe_free(r);
}

static char *join_argv(char *const *argv)
{
    size_t len = 1;
    for (size_t i = 0; argv[i] != NULL; i++)
        len += strlen(argv[i]) + 1;
    char *s = malloc(len), *p = s;
    if (s == NULL)
        return NULL;
    for (size_t i = 0; argv[i] != NULL; i++) {
        size_t n = strlen(argv[i]);
        if (i > 0)
            *p++ = ' ';
        memcpy(p, argv[i], n);
        p += n;
    }
    *p = '\0';
    return s;
}

int wd_supervise_start(struct wd_supervise **out, const struct wd_supervise_opts *o)
{
    struct wd_supervise *sv = calloc(1, sizeof *sv);
    if (sv == NULL)
        return UV_ENOMEM;
    sv->app = o->app;
    sv->cfg = o->app->cfg;
    sv->o = *o;
    sv->backoff_ms = BACKOFF_MIN_MS;
    sv->name = o->name != NULL ? o->name : "upstream";
    /* The fprocess setting as written, or the argv the caller built from it (warm's {socket}). */
    sv->cmdline = o->argv != NULL ? join_argv(o->argv) : strdup(sv->cfg->fprocess);
    if (sv->cmdline == NULL) {
        free(sv);
        return UV_ENOMEM;
    }
    uv_loop_t *loop = sv->app->loop;
    uv_timer_init(loop, &sv->probe_timer);
    uv_timer_init(loop, &sv->restart_timer);
    uv_timer_init(loop, &sv->kill_timer);
    sv->probe_timer.data = sv->restart_timer.data = sv->kill_timer.data = sv;
    sv->open_timers = 3;
    int rc = spawn(sv);
    if (rc < 0) {
        /* Cannot start at all: the caller fails start() and main exits 1. */
        sv->is_stopping = true;
        wd_supervise_stop(sv, NULL, NULL);
        return rc;
    }
    *out = sv;
    return 0;
}

void wd_supervise_poke(struct wd_supervise *sv)
{
    if (sv->cur != NULL && !sv->is_ready && !sv->is_probing && !sv->is_stopping)
        arm_probe(sv, 0);
}

void wd_supervise_recycle(struct wd_supervise *sv)
{
    if (sv->cur == NULL || sv->is_stopping || sv->is_recycling)
        return;
    sv->is_recycling = true;
    uv_timer_stop(&sv->probe_timer);
    set_ready(sv, false);
    wd_metrics_child_killed(sv->app->metrics);
    wd_child_kill_group(sv->cur->pid, SIGKILL);
}

void wd_supervise_set_call_id(struct wd_supervise *sv, const char *call_id)
{
    if (sv->cur == NULL)
        return;
    sv->cur->outlog.call_id = call_id;
    sv->cur->errlog.call_id = call_id;
}

bool wd_supervise_is_ready(const struct wd_supervise *sv)
{
    return sv->is_ready;
}

bool wd_supervise_is_final(const struct wd_supervise *sv)
{
    return sv->is_final || sv->is_stopping;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct wd_supervise *sv = h->data;
    sv->open_timers--;
    if (sv->open_timers > 0)
        return;
    wd_done_cb done = sv->stop_done;
    void *arg = sv->stop_arg;
    free(sv->path);
    free(sv->cmdline);
    free(sv);
    if (done != NULL)
        done(arg);
}

static void maybe_finish_stop(struct wd_supervise *sv)
{
    if (!sv->is_stopping || sv->runs != NULL || sv->open_timers != 3 ||
        uv_is_closing((uv_handle_t *)&sv->probe_timer))
        return;
    uv_close((uv_handle_t *)&sv->probe_timer, on_timer_closed);
    uv_close((uv_handle_t *)&sv->restart_timer, on_timer_closed);
    uv_close((uv_handle_t *)&sv->kill_timer, on_timer_closed);
}

static void on_kill_timer(uv_timer_t *t)
{
    struct wd_supervise *sv = t->data;
    if (sv->cur != NULL) {
        wd_log_warn("%s pid=%d still running after shutdown_grace: SIGKILL", sv->name,
                    (int)sv->cur->pid);
        wd_metrics_child_killed(sv->app->metrics);
        wd_child_kill_group(sv->cur->pid, SIGKILL);
    }
}

void wd_supervise_stop(struct wd_supervise *sv, wd_done_cb done, void *arg)
{
    sv->is_stopping = true;
    sv->stop_done = done;
    sv->stop_arg = arg;
    uv_timer_stop(&sv->probe_timer);
    uv_timer_stop(&sv->restart_timer);
    set_ready(sv, false);
    if (sv->cur != NULL) {
        wd_log_info("stopping %s pid=%d: SIGTERM", sv->name, (int)sv->cur->pid);
        wd_child_kill_group(sv->cur->pid, SIGTERM);
        uv_timer_start(&sv->kill_timer, on_kill_timer,
                       sv->cfg->shutdown_grace_ms > 0 ? sv->cfg->shutdown_grace_ms : 1, 0);
    }
    /* Pipes of processes already gone may be held open by escapees: close them now. The live
     * process's pipes close once it exits (its last lines are still relayed). */
    for (struct run *r = sv->runs; r != NULL; r = r->next) {
        if (r->has_exited) {
            close_pipe(&r->out, r->out_open);
            close_pipe(&r->err, r->err_open);
        }
    }
    maybe_finish_stop(sv);
}
