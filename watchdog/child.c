/* child.c: owns process creation and reaping (see child.h). It must not parse HTTP or decide
 * restart policies. The spawn path uses vfork(): the parent's memory is borrowed until the
 * child calls execve() or _exit(), so the child only makes system calls on data prepared by the
 * parent. Sanitizer builds use fork(), which ASan supports. */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#if defined(__SANITIZE_ADDRESS__)
#define WD_USE_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WD_USE_FORK 1
#endif
#endif

struct watch {
    pid_t pid;
    wd_child_exit_cb cb;
    void *arg;
};

/* The SIGCHLD owner: one per process, like the PID-1 role it plays. */
static struct {
    uv_signal_t sigchld;
    bool is_open;
    struct watch *v;
    size_t n, cap;
} reaper;

static void reap(uv_signal_t *h, int signum);
static void init_reset_set(void);

int wd_child_init(uv_loop_t *loop)
{
    int rc = uv_signal_init(loop, &reaper.sigchld);
    if (rc < 0)
        return rc;
    rc = uv_signal_start(&reaper.sigchld, reap, SIGCHLD);
    if (rc < 0)
        return rc;
    reaper.is_open = true;
    init_reset_set();
    /* Children may have exited before the handler was installed (an inherited zombie). */
    reap(&reaper.sigchld, SIGCHLD);
    return 0;
}

void wd_child_close(void)
{
    if (reaper.is_open)
        uv_close((uv_handle_t *)&reaper.sigchld, NULL);
    reaper.is_open = false;
    free(reaper.v);
    reaper.v = NULL;
    reaper.n = reaper.cap = 0;
}

static void reap(uv_signal_t *h, int signum)
{
    WD_UNUSED(h);
    WD_UNUSED(signum);
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0)
            return; /* 0: none left that exited; -1 ECHILD: no children at all */
        for (size_t i = 0; i < reaper.n; i++) {
            if (reaper.v[i].pid != pid)
                continue;
            struct watch w = reaper.v[i];
            reaper.v[i] = reaper.v[--reaper.n];
            if (WIFEXITED(st))
                w.cb(w.arg, WEXITSTATUS(st), 0);
            else
                w.cb(w.arg, -1, WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL);
            break;
        }
        /* An unknown pid is an orphan we inherited as PID 1: reaped, nothing to tell. */
    }
}

void wd_child_forget(pid_t pid)
{
    for (size_t i = 0; i < reaper.n; i++) {
        if (reaper.v[i].pid == pid) {
            reaper.v[i] = reaper.v[--reaper.n];
            return;
        }
    }
}

size_t wd_child_count(void)
{
    return reaper.n;
}

void wd_child_kill_group(pid_t pid, int sig)
{
    /* The child called setsid() before wd_child_spawn returned (exec or the error report
     * comes after it), so pid is its group id. Linux does not reuse a pid while it still
     * names a process group, so this is safe until every member of the group is gone. */
    if (pid > 0)
        kill(-pid, sig);
}

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp != NULL && *envp != NULL; envp++) {
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    }
    return NULL;
}

int wd_child_resolve(const char *argv0, char *const *envp, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strchr(argv0, '/') != NULL) {
        *out = strdup(argv0); /* execve reports a missing file as fork/exec <path>: ... */
        return *out ? 0 : -ENOMEM;
    }
    const char *path = env_get(envp, "PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    size_t alen = strlen(argv0);
    while (*argv0 != '\0') {
        const char *end = strchr(path, ':');
        size_t dlen = end ? (size_t)(end - path) : strlen(path);
        char *cand = malloc(dlen + alen + 3);
        if (cand == NULL)
            return -ENOMEM;
        if (dlen == 0)
            memcpy(cand, ".", 2), dlen = 1;
        else
            memcpy(cand, path, dlen);
        cand[dlen] = '/';
        memcpy(cand + dlen + 1, argv0, alen + 1);
        if (access(cand, X_OK) == 0) {
            *out = cand;
            return 0;
        }
        free(cand);
        if (end == NULL)
            break;
        path = end + 1;
    }
    snprintf(err, errlen, "exec: \"%s\": executable file not found in $PATH", argv0);
    return -ENOENT;
}

static int close_range_slow(int from, int keep)
{
    for (int fd = from; fd < 1024; fd++) {
        if (fd != keep)
            close(fd);
    }
    return 0;
}

/* Close every descriptor >= from except keep (INT32_MAX: none kept). */
static int close_from(int from, int keep)
{
    if (keep == INT32_MAX)
        return syscall(SYS_close_range, from, ~0U, 0) < 0 ? close_range_slow(from, keep) : 0;
    if (keep > from && syscall(SYS_close_range, from, keep - 1, 0) < 0)
        return close_range_slow(from, keep);
    if (syscall(SYS_close_range, keep + 1, ~0U, 0) < 0)
        return close_range_slow(from, keep);
    return 0;
}

/* Signals whose disposition the child must reset: the ones we handle or ignore ourselves,
 * plus any that were ignored when we started (e.g. SIGHUP under nohup). Resetting only these
 * keeps the vfork window short (a handful of system calls instead of 64). */
/* A plain bit mask (bit n-1 = signal n): glibc's sigaddset refuses the signals it reserves
 * (32, 33), and those are exactly the ones a parent such as GNU make leaves ignored. */
static uint64_t reset_set;

/* The kernel's sigaction: glibc's refuses the signals it reserves (32, 33), which a runtime
 * such as ASan may still have set to "ignore", and a handler must not inherit that. */
struct ksigaction {
    void (*handler)(int);
    unsigned long flags;    /* cppcheck-suppress unusedStructMember */
    void (*restorer)(void); /* cppcheck-suppress unusedStructMember */
    uint64_t mask;          /* cppcheck-suppress unusedStructMember */
};

static int raw_sigaction(int sig, const struct ksigaction *sa, struct ksigaction *old)
{
    return (int)syscall(SYS_rt_sigaction, sig, sa, old, sizeof(uint64_t));
}

static void init_reset_set(void)
{
    static const int ours[] = {SIGPIPE, SIGCHLD, SIGTERM, SIGINT,   SIGHUP,  SIGQUIT,
                               SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH, SIGTTIN, SIGTTOU,
                               SIGTSTP, SIGXFSZ, SIGXCPU, SIGURG};
    reset_set = 0;
    for (size_t i = 0; i < WD_ARRAY_LEN(ours); i++)
        reset_set |= UINT64_C(1) << (ours[i] - 1);
    for (int sig = 1; sig < NSIG; sig++) {
        struct ksigaction old;
        if (sig != SIGKILL && sig != SIGSTOP && raw_sigaction(sig, NULL, &old) == 0 &&
            old.handler != SIG_DFL)
            reset_set |= UINT64_C(1) << (sig - 1);
    }
    /* Real-time signals too, always: cheap, and a parent may have left them ignored. */
    for (int sig = 32; sig < NSIG; sig++)
        reset_set |= UINT64_C(1) << (sig - 1);
}

/* Runs in the child between vfork() and execve(): system calls only, no allocation, no
 * stdio, no locks. On failure it reports errno through *err_out (vfork shares our memory)
 * or through errfd (fork), then exits 127. */
__attribute__((noreturn)) static void child_exec(const struct wd_child_opts *o, int errfd,
                                                 volatile int *err_out)
{
    int err;
    int fds[4];
    int nfds = o->fds[3] >= 0 ? 4 : 3;

    if (errfd >= 0 && errfd < 4 && (errfd = fcntl(errfd, F_DUPFD_CLOEXEC, 10)) < 0)
        _exit(127);
    /* Move sources out of the 0..3 range first so the dup2 calls cannot clobber each other. */
    for (int i = 0; i < 4; i++) {
        fds[i] = o->fds[i];
        if (fds[i] >= 0 && fds[i] < 4 && fds[i] != i) {
            fds[i] = fcntl(fds[i], F_DUPFD, 10);
            if (fds[i] < 0)
                goto fail;
        }
    }
    for (int i = 0; i < nfds; i++) {
        if (fds[i] < 0) {
            fds[i] = open("/dev/null", O_RDWR);
            if (fds[i] < 0)
                goto fail;
        }
        if (fds[i] == i) {
            if (fcntl(i, F_SETFD, 0) < 0)
                goto fail;
        } else if (dup2(fds[i], i) < 0) {
            goto fail;
        }
    }
    /* Nothing else is inherited: close what a library may have opened without O_CLOEXEC.
     * The error pipe (fork builds) is O_CLOEXEC and must stay open until execve. */
    close_from(nfds, errfd >= 0 ? errfd : INT32_MAX);
    if (setsid() < 0)
        goto fail;
    if (o->rlimits != NULL) {
        static const int res[] = {RLIMIT_AS, RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_NPROC};
        const int64_t val[] = {o->rlimits->as_bytes, o->rlimits->cpu_seconds, o->rlimits->nofile,
                               o->rlimits->nproc};
        for (size_t i = 0; i < WD_ARRAY_LEN(res); i++) {
            if (val[i] < 0)
                continue;
            struct rlimit rl = {(rlim_t)val[i], (rlim_t)val[i]};
            if (setrlimit(res[i], &rl) < 0)
                goto fail;
        }
    }
    /* Default dispositions, then an empty mask (the parent blocked everything for us). */
    struct ksigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (reset_set & (UINT64_C(1) << (sig - 1)))
            raw_sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(o->path, o->argv, o->envp);
fail:
    err = errno;
    if (err_out != NULL)
        *err_out = err;
    if (errfd >= 0 && write(errfd, &err, sizeof err) < 0) {
        /* the parent then sees a plain exit 127 */
    }
    _exit(127);
}

pid_t wd_child_spawn(const struct wd_child_opts *o)
{
    sigset_t all, old;
    pid_t pid;
    int fork_errno;

    if (reaper.n == reaper.cap) {
        size_t cap = reaper.cap ? reaper.cap * 2 : 16;
        struct watch *v = realloc(reaper.v, cap * sizeof *v);
        if (v == NULL)
            return -ENOMEM;
        reaper.v = v;
        reaper.cap = cap;
    }
    /* Block every signal so no handler of ours runs in the child before it resets them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef WD_USE_FORK
    int errpipe[2];
    int child_err = 0;
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        fork_errno = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -fork_errno;
    }
    pid = fork();
    if (pid == 0)
        child_exec(o, errpipe[1], NULL);
    fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(errpipe[1]);
    if (pid > 0) {
        ssize_t n;
        do {
            n = read(errpipe[0], &child_err, sizeof child_err);
        } while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof child_err)
            child_err = 0;
    }
    close(errpipe[0]);
#else
    /* vfork: we resume only after the child called execve or _exit, so child_err is final. */
    volatile int child_err = 0;
    pid = vfork();
    if (pid == 0)
        child_exec(o, -1, &child_err);
    fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
#endif
    if (pid < 0)
        return -fork_errno;
    if (child_err != 0)
        return -child_err; /* exec failed: the child exits 127, reaped as an unknown pid */
    reaper.v[reaper.n++] = (struct watch){pid, o->on_exit, o->arg};
    return pid;
}

void wd_child_describe_exit(char *out, size_t outlen, int exit_status, int term_signal)
{
    if (term_signal == 0) {
        snprintf(out, outlen, "exit status %d", exit_status);
        return;
    }
    /* Go prints signal names lower-case: "signal: killed", "signal: terminated". */
    const char *name = strsignal(term_signal);
    snprintf(out, outlen, "signal: %s", name ? name : "unknown");
    size_t p = strlen("signal: ");
    if (p < outlen && out[p] >= 'A' && out[p] <= 'Z')
        out[p] = (char)(out[p] - 'A' + 'a');
}
