/* supervise.h: one long-running handler process (the upstream of mode http, one worker of mode
 * warm), started once, probed until ready, restarted by restart_policy, stopped at shutdown.
 *
 * The supervisor owns the process, its output pipes (relayed line by line: stdout to fd 1,
 * stderr to fd 2) and its timers. It reports readiness to main.c with wd_app_set_ready. The
 * readiness check itself belongs to the caller (a TCP connect, an HTTP GET): the supervisor
 * calls `probe` every 20 ms while the process runs and is not ready, and the caller answers
 * each call, once, with wd_supervise_probe_done(). All functions run on the loop thread. */
#ifndef WD_SUPERVISE_H
#define WD_SUPERVISE_H

#include <sys/types.h>
#include "wd.h"

struct wd_supervise; /* opaque */

struct wd_supervise_opts {
    struct wd_app *app;
    const char *name;  /* for the log (borrowed; NULL: "upstream") */
    char *const *argv; /* NULL: the fprocess argv */
    char *const *envp; /* NULL: the watchdog's environment */
    bool is_member;    /* one of a pool: readiness goes to on_state only, not to the app */
    /* Optional. Before each spawn: set fds[0] (the child's stdin) and fds[3]; leave -1 for
     * none. Returns 0, or < 0 to fail this spawn. */
    int (*prepare)(void *arg, int fds[4]);
    /* Optional. After each spawn attempt that prepare allowed: pid > 0, or < 0 when it failed.
     * The caller closes the child's ends it gave in prepare. */
    void (*spawned)(void *arg, pid_t pid);
    /* Optional. The running process exited; called before any restart is scheduled. */
    void (*exited)(void *arg);
    /* Start one readiness check; answer with wd_supervise_probe_done(). */
    void (*probe)(void *arg);
    /* The upstream became ready (is_up) or went down. is_final: it will not come back
     * (restart_policy never / on-failure after a clean exit, or shutdown). */
    void (*on_state)(void *arg, bool is_up, bool is_final);
    void *arg;
};

/* Spawn the process. Returns 0 or < 0 (the error is logged). */
int wd_supervise_start(struct wd_supervise **out, const struct wd_supervise_opts *o);
void wd_supervise_probe_done(struct wd_supervise *sv, bool is_ok);
bool wd_supervise_is_ready(const struct wd_supervise *sv);
/* True once the upstream will not be started again. */
bool wd_supervise_is_final(const struct wd_supervise *sv);
/* Run the probe now instead of at the next tick (the caller learned something). */
void wd_supervise_poke(struct wd_supervise *sv);
/* SIGKILL the running process's group and start a fresh one at once, without backoff and
 * whatever the restart_policy (the caller gave up on it, e.g. a deadline passed). */
void wd_supervise_recycle(struct wd_supervise *sv);
/* Tag the process's relayed output lines with a call id (borrowed; NULL to clear). */
void wd_supervise_set_call_id(struct wd_supervise *sv, const char *call_id);
/* SIGTERM to the process group, SIGKILL after shutdown_grace, wait for the exit, close the
 * pipes and timers, free sv, then done(arg). */
void wd_supervise_stop(struct wd_supervise *sv, wd_done_cb done, void *arg);

#endif
