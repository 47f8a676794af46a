/* main.c: owns the process: argv, configuration, wiring, signals, the shutdown sequence and
 * the exit code (no other file exits). As PID 1 it needs no shim: child.c is the only SIGCHLD
 * owner and reaps every child, orphans included. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <uv.h>

#include "child.h"
#include "config.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "mode.h"
#include "server.h"
#include "wd.h"

extern char **environ;

struct shutdown {
    struct wd_app *app;
    struct wd_health *health;
    uv_signal_t sigterm, sigint;
    uv_timer_t timer;
    bool is_started;
    int exit_code;
};

/* Go's time.Duration.String() for whole milliseconds: 30s, 1m0s, 250ms, 1.5s, 0s. */
static void go_duration(char *out, size_t outlen, uint64_t ms)
{
    if (ms == 0) {
        snprintf(out, outlen, "0s");
    } else if (ms < 1000) {
        snprintf(out, outlen, "%llums", (unsigned long long)ms);
    } else {
        uint64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
        char sec[32];
        if (frac == 0) {
            snprintf(sec, sizeof sec, "%llus", (unsigned long long)s);
        } else {
            snprintf(sec, sizeof sec, "%llu.%03llu", (unsigned long long)s,
                     (unsigned long long)frac);
            size_t n = strlen(sec);
            while (sec[n - 1] == '0')
                sec[--n] = '\0';
            snprintf(sec + n, sizeof sec - n, "s");
        }
        if (h > 0)
            snprintf(out, outlen, "%lluh%llum%s", (unsigned long long)h, (unsigned long long)m,
                     sec);
        else if (m > 0)
            snprintf(out, outlen, "%llum%s", (unsigned long long)m, sec);
        else
            snprintf(out, outlen, "%s", sec);
    }
}

/* ---- shutdown: unready -> healthcheck_interval -> drain (write_timeout) -> stop mode ---- */

static void on_all_closed(void *arg)
{
    struct shutdown *sd = arg;
    uv_close((uv_handle_t *)&sd->sigterm, NULL);
    uv_close((uv_handle_t *)&sd->sigint, NULL);
    uv_close((uv_handle_t *)&sd->timer, NULL);
    wd_server_close(sd->app->server);
    wd_child_close();
}

static void on_mode_stopped(void *arg)
{
    struct shutdown *sd = arg;
    sd->app->mode_state = NULL;
    wd_log_info("Exiting. Active connections: 0");
    on_all_closed(sd);
}

static void on_drain_deadline(uv_timer_t *t)
{
    struct shutdown *sd = t->data;
    wd_log_error("Error in Shutdown: write_timeout passed with %zu requests in flight",
                 wd_server_inflight(sd->app->server));
    wd_server_abort_all(sd->app->server);
}

static void on_drained(void *arg)
{
    struct shutdown *sd = arg;
    uv_timer_stop(&sd->timer);
    sd->app->mode->stop(sd->app->mode_state, on_mode_stopped, sd);
}

static void start_drain(struct shutdown *sd)
{
    const struct wd_config *cfg = sd->app->cfg;
    wd_log_info("No new connections allowed, draining: %zu requests",
                wd_server_inflight(sd->app->server));
    uv_timer_start(&sd->timer, on_drain_deadline, cfg->write_timeout_ms, 0);
    wd_server_drain(sd->app->server, on_drained, sd);
}

static void on_hc_timer(uv_timer_t *t)
{
    start_drain(t->data);
}

static void begin_shutdown(struct shutdown *sd, const char *name);

static void on_signal(uv_signal_t *h, int signum)
{
    struct shutdown *sd = h->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (sd->is_started) {
        wd_log_info("%s: already shutting down", name);
        return;
    }
    begin_shutdown(sd, name);
}

static void app_shutdown(struct wd_app *app, int exit_code)
{
    struct shutdown *sd = app->lifecycle;
    if (sd->is_started)
        return;
    sd->exit_code = exit_code;
    begin_shutdown(sd, "Shutting down");
}

static void app_set_ready(struct wd_app *app, bool is_ready)
{
    struct shutdown *sd = app->lifecycle;
    if (is_ready && (sd->is_started || sd->health->is_accepting))
        return;
    if (is_ready) {
        if (!app->cfg->suppress_lock)
            wd_log_info("Writing lock-file to: %s", app->cfg->lock_path);
        int rc = wd_health_mark_ready(sd->health);
        if (rc < 0) {
            wd_log_error("cannot write lock file %s: %s", app->cfg->lock_path, strerror(-rc));
            wd_app_shutdown(app, 1);
            return;
        }
    } else {
        if (sd->health->has_lock)
            wd_log_info("Removing lock-file : %s", sd->health->lock_path);
        wd_health_mark_unready(sd->health);
    }
    wd_metrics_set_ready(app->metrics, is_ready);
}

static void begin_shutdown(struct shutdown *sd, const char *name)
{
    sd->is_started = true;
    sd->app->is_shutting_down = true;
    char hc[32];
    go_duration(hc, sizeof hc, sd->app->cfg->healthcheck_interval_ms);
    wd_log_info("%s: no new connections in %s", name, hc);
    wd_metrics_set_ready(sd->app->metrics, false);
    if (sd->health->has_lock)
        wd_log_info("Removing lock-file : %s", sd->health->lock_path);
    wd_health_mark_unready(sd->health);
    if (sd->app->cfg->healthcheck_interval_ms == 0)
        start_drain(sd);
    else
        uv_timer_start(&sd->timer, on_hc_timer, sd->app->cfg->healthcheck_interval_ms, 0);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    WD_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* ---- -run-healthcheck ---------------------------------------------------------------- */

/* With suppress_lock there is no lock file to look at: ask /_/health on loopback instead. */
static int probe_health(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char req[] = "GET /_/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buf[64] = {0};
    int rc = 1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1) &&
        read(fd, buf, sizeof buf - 1) > 12 && strncmp(buf + 9, "200", 3) == 0)
        rc = 0;
    close(fd);
    return rc;
}

static int run_healthcheck(const struct wd_config *cfg)
{
    if (cfg->suppress_lock)
        return probe_health(cfg->port);
    if (wd_health_check_lock(cfg->lock_path) == 0)
        return 0;
    fprintf(stderr, "unable to find lock file.\n");
    return 1;
}

/* ---- main ---------------------------------------------------------------------------- */

/* Close every handle left on the loop (error paths), run it to the end, free it. */
static void close_loop(uv_loop_t *loop)
{
    uv_walk(loop, close_walk_cb, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        wd_log_warn("loop closed with open handles: %s", uv_strerror(rc));
    free(loop);
}

static void on_stopped_early(void *arg)
{
    WD_UNUSED(arg);
}

static int serve(struct wd_app *app)
{
    const struct wd_config *cfg = app->cfg;
    struct wd_health health;
    struct shutdown sd;
    char err[512];
    int rc;

    memset(&sd, 0, sizeof sd);
    /* On the heap, so the app never points into a stack frame. */
    uv_loop_t *loop = malloc(sizeof *loop);
    if (loop == NULL || uv_loop_init(loop) < 0) {
        wd_log_error("cannot create the event loop");
        free(loop);
        return 1;
    }
    app->loop = loop;
    rc = wd_child_init(loop);
    if (rc < 0) {
        wd_log_error("SIGCHLD handler: %s", uv_strerror(rc));
        goto fail_loop;
    }
    wd_health_init(&health, cfg->lock_path, cfg->suppress_lock);
    wd_health_clear_stale(&health);

    /* SIGTERM/SIGINT were blocked since main() began; from here on libuv takes them, and a
     * signal that came early is handled by the first turn of the loop (after the lock file
     * exists, so the drain removes it). */
    uv_signal_init(loop, &sd.sigterm);
    uv_signal_init(loop, &sd.sigint);
    uv_timer_init(loop, &sd.timer);
    sd.app = app;
    sd.health = &health;
    /* Lives as long as this frame, which outlasts the loop; reset before returning. */
    app->lifecycle = &sd; // cppcheck-suppress autoVariables
    sd.sigterm.data = sd.sigint.data = sd.timer.data = &sd;
    uv_signal_start(&sd.sigterm, on_signal, SIGTERM);
    uv_signal_start(&sd.sigint, on_signal, SIGINT);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigprocmask(SIG_UNBLOCK, &term, NULL);

    char rt[32], wt[32], et[32], hc[32];
    go_duration(rt, sizeof rt, cfg->read_timeout_ms);
    go_duration(wt, sizeof wt, cfg->write_timeout_ms);
    go_duration(et, sizeof et, cfg->exec_timeout_ms);
    go_duration(hc, sizeof hc, cfg->healthcheck_interval_ms);
    wd_log_info("Watchdog mode: %s\tfprocess: \"%s\"", cfg->mode_name,
                cfg->fprocess ? cfg->fprocess : "");
    wd_log_info("Timeouts: read: %s write: %s hard: %s health: %s", rt, wt, et, hc);

    rc = app->mode->start(app, &app->mode_state);
    if (rc < 0) {
        wd_log_error("mode %s: cannot start: %s", cfg->mode_name, uv_strerror(rc));
        goto fail_child;
    }
    rc = wd_server_start(app, &health, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "Error: %s\n", err);
        goto fail_mode;
    }
    wd_log_info("Listening on port: %d", wd_server_port(app->server));
    if (cfg->metrics_port > 0)
        wd_log_info("Metrics listening on port: %d", wd_server_metrics_port(app->server));

    /* A lock file that cannot be written ends the process with exit 1 (fixed: OW exits 0
     * silently, CW panics): wd_app_set_ready starts that shutdown itself. */
    if (app->mode->is_ready == NULL || app->mode->is_ready(app->mode_state))
        wd_app_set_ready(app, true);

    uv_run(loop, UV_RUN_DEFAULT);

    wd_health_mark_unready(&health);
    close_loop(loop);
    wd_server_free(app->server);
    app->server = NULL;
    app->loop = NULL;
    app->lifecycle = NULL;
    return sd.exit_code;

fail_mode:
    app->mode->stop(app->mode_state, on_stopped_early, NULL);
fail_child:
    wd_child_close();
fail_loop:
    close_loop(loop);
    wd_server_free(app->server);
    app->server = NULL;
    app->loop = NULL;
    app->lifecycle = NULL;
    return 1;
}

int main(int argc, char **argv)
{
    struct wd_config cfg;
    struct wd_app app;
    char err[512];
    bool want_healthcheck = false;

    signal(SIGPIPE, SIG_IGN);
    /* Hold SIGTERM/SIGINT until the loop can handle them (see serve()). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigprocmask(SIG_BLOCK, &term, NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-version") == 0 || strcmp(a, "--version") == 0) {
            wd_log_info("Version: %s\tSHA: %s", WD_VERSION, WD_SHA);
            return 0;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "-help") == 0 || strcmp(a, "--help") == 0) {
            wd_config_describe(stdout);
            return 0;
        } else if (strcmp(a, "-run-healthcheck") == 0 || strcmp(a, "--run-healthcheck") == 0) {
            want_healthcheck = true;
        } else {
            fprintf(stderr, "fwatchdog: unknown argument \"%s\" (see --help)\n", a);
            return 2;
        }
    }

    memset(&cfg, 0, sizeof cfg);
    if (wd_config_load(&cfg, environ, err, sizeof err) < 0) {
        fprintf(stderr, "Error loading config: %s\n", err);
        return 1;
    }
    if (want_healthcheck) {
        int rc = run_healthcheck(&cfg);
        wd_config_free(&cfg);
        return rc;
    }
    wd_log_setup(cfg.prefix_logs, cfg.log_format, cfg.log_callid);
    wd_log_info("Version: %s\tSHA: %s", WD_VERSION, WD_SHA);

    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    app.base_env = environ;
    app.set_ready = app_set_ready;
    app.shutdown = app_shutdown;
    app.mode = wd_mode_find(cfg.mode_name);
    if (app.mode == NULL) {
        fprintf(stderr, "Error loading config: mode: \"%s\" is not available in this build yet\n",
                cfg.mode_name);
        wd_config_free(&cfg);
        return 1;
    }
    if (wd_metrics_new(&app.metrics, cfg.mode_name) < 0) {
        fprintf(stderr, "Error: out of memory\n");
        wd_config_free(&cfg);
        return 1;
    }
    int rc = serve(&app);
    wd_metrics_free(app.metrics);
    wd_config_free(&cfg);
    return rc;
}
