/* child.h: the only place that creates processes. Each handler starts in a new session (its own
 * process group) with default signal dispositions, an empty signal mask, the rlimits asked for,
 * and no descriptors beyond the ones given (0-2, and optionally 3).
 *
 * One SIGCHLD owner: child.c reaps every child with waitpid(-1) and dispatches exit statuses by
 * pid, so as PID 1 it also reaps orphaned grandchildren without ever losing a handler's status.
 * libuv's uv_spawn is never used (it would race us for the statuses). */
#ifndef WD_CHILD_H
#define WD_CHILD_H

#include <sys/types.h>
#include "wd.h"
#include "config.h"

struct uv_loop_s;

/* exit_status: the exit code, or -1 when killed by term_signal (> 0). */
typedef void (*wd_child_exit_cb)(void *arg, int exit_status, int term_signal);

struct wd_child_opts {
    const char *path; /* resolved executable (wd_child_resolve) */
    char *const *argv;
    char *const *envp;
    int fds[4];                       /* child's fds 0..3 (-1: /dev/null for 0-2, absent for 3) */
    const struct wd_rlimits *rlimits; /* may be NULL */
    wd_child_exit_cb on_exit;
    void *arg;
};

/* Install the SIGCHLD owner on loop. Call once, before any spawn. */
int wd_child_init(struct uv_loop_s *loop);
/* Stop the SIGCHLD handle (shutdown), so the loop can end. */
void wd_child_close(void);

/* Resolve argv0 like execvp does (PATH from envp). Returns 0, or -errno. On failure err gets
 * Go's wording (`exec: "x": executable file not found in $PATH`). out is malloc'ed. */
int wd_child_resolve(const char *argv0, char *const *envp, char **out, char *err, size_t errlen);

/* Start a process. Returns its pid (> 0) or -errno (exec failed, e.g. -ENOENT). The exit
 * callback runs once, from the loop, after the process has been reaped. */
pid_t wd_child_spawn(const struct wd_child_opts *o);

/* Forget a pid: its exit callback will not run (the status is still reaped). */
void wd_child_forget(pid_t pid);

/* Signal the whole process group of a spawned child (its pid is the pgid). */
void wd_child_kill_group(pid_t pid, int sig);

/* Number of spawned children not yet reaped. */
size_t wd_child_count(void);

/* Go's error text for an exit: "exit status 3", "signal: killed". */
void wd_child_describe_exit(char *out, size_t outlen, int exit_status, int term_signal);

#endif
