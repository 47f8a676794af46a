/* rawspawn.c: the floor under the fork modes. Spawns a handler (default `cat`) with pipes and
 * no HTTP, as fast as the kernel allows: N children in flight at once (like wrk -c N), all
 * driven by poll() from one thread. The program is looked up in PATH once, as the watchdog does.
 * Each spawn is: pipe2 x2, posix_spawn (glibc uses clone(CLONE_VM|CLONE_VFORK)) with the child in
 * its own process group and default signals, write the payload, close stdin, read stdout until EOF,
 * waitpid. Exits are watched with a pidfd in the same poll() set (blocking waitpid after EOF where
 * pidfd_open is missing), so one exiting child never holds up the others. Latency is measured from
 * before pipe2 to after waitpid.
 *
 * usage: rawspawn [seconds=5] [workers=8] [payload_bytes=64] [program=cat [args...]]
 * prints one line: key=value pairs, e.g.
 *   rawspawn program=cat workers=8 payload=64 seconds=5.00 spawns=61234 spawns/s=12246.8
 *   p50_us=612 p99_us=1301 errors=0
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_WORKERS 256

/* One child in flight. Busy while pid != 0; done once stdout hit EOF and the child was reaped. */
struct slot {
    pid_t pid;      /* 0 when idle */
    int out_fd;     /* read end of the child's stdout, -1 once EOF was read */
    int pidfd;      /* readable when the child exits; -1 when unsupported or reaped */
    bool is_reaped; /* waitpid done, status in exit_ok */
    bool is_ok;     /* exited 0 */
    size_t got;     /* bytes read back so far */
    uint64_t t0_ns; /* before pipe2 */
};

struct lat {
    uint32_t *us;
    size_t n, cap;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int lat_push(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        uint32_t *p = realloc(l->us, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->us = p;
        l->cap = cap;
    }
    uint64_t us = ns / 1000u;
    l->us[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t pct(const struct lat *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1) + 0.5);
    return l->us[i];
}

/* The PATH lookup execvp would do, done once: the first executable dir/name. */
static const char *resolve(const char *name, char *buf, size_t buflen)
{
    if (strchr(name, '/'))
        return name;
    const char *p = getenv("PATH");
    if (!p)
        p = "/usr/bin:/bin";
    while (*p) {
        size_t n = strcspn(p, ":");
        /* An empty PATH entry means the current directory. */
        int w = n ? snprintf(buf, buflen, "%.*s/%s", (int)n, p, name)
                  : snprintf(buf, buflen, "./%s", name);
        if (w > 0 && (size_t)w < buflen && access(buf, X_OK) == 0)
            return buf;
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

/* Start one child; on success s->pid and s->out_fd are set and the payload is written. */
static int spawn_one(struct slot *s, const char *path, char *const *argv,
                     const posix_spawnattr_t *attr, const char *payload, size_t len)
{
    int in[2], out[2], rc;
    posix_spawn_file_actions_t fa;

    s->t0_ns = now_ns();
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) < 0) {
        rc = -errno;
        goto fail_in;
    }
    rc = -posix_spawn_file_actions_init(&fa);
    if (rc < 0)
        goto fail_out;
    /* dup2 clears FD_CLOEXEC on the target; every other pipe end is closed by exec. */
    rc = -posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    if (rc == 0)
        rc = -posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (rc == 0)
        rc = -posix_spawn(&s->pid, path, &fa, attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc < 0)
        goto fail_out;
    close(in[0]);
    close(out[1]);
    /* The payload fits in the pipe buffer (<= 4096, checked in main), so this never blocks.
     * A short write shows up later as a short echo (EPROTO). */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(in[1], payload + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            break;
        off += (size_t)w;
    }
    close(in[1]);
    s->out_fd = out[0];
    s->got = 0;
    s->is_reaped = false;
    s->is_ok = false;
    s->pidfd = -1;
#ifdef SYS_pidfd_open
    s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
    if (s->pidfd >= 0)
        (void)fcntl(s->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    return 0;
fail_out:
    close(out[0]);
    close(out[1]);
fail_in:
    close(in[0]);
    close(in[1]);
    return rc;
}

/* waitpid the slot's child (flags 0 or WNOHANG); sets is_reaped and is_ok. */
static void reap(struct slot *s, int flags)
{
    int st;
    pid_t r;
    do {
        r = waitpid(s->pid, &st, flags);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return; /* WNOHANG and not yet: cannot happen after the pidfd fired */
    s->is_reaped = true;
    s->is_ok = r > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (s->pidfd >= 0) {
        close(s->pidfd);
        s->pidfd = -1;
    }
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    int workers = argc > 2 ? atoi(argv[2]) : 8;
    long payload_len = argc > 3 ? atol(argv[3]) : 64;
    char *def_argv[] = {"cat", NULL};
    char *const *prog = argc > 4 ? argv + 4 : def_argv;

    if (seconds <= 0 || workers < 1 || workers > MAX_WORKERS || payload_len < 0 ||
        payload_len > 4096) {
        fprintf(stderr,
                "usage: rawspawn [seconds>0] [workers 1..%d] [payload 0..4096] "
                "[program [args...]]\n",
                MAX_WORKERS);
        return 2;
    }
    size_t len = (size_t)payload_len;
    char payload[4096];
    for (size_t i = 0; i < len; i++)
        payload[i] = (char)('a' + i % 26);
    char sink[65536];
    char pathbuf[4096];
    const char *path = resolve(prog[0], pathbuf, sizeof pathbuf);
    if (!path) {
        fprintf(stderr, "rawspawn: %s: not found in PATH\n", prog[0]);
        return 1;
    }

    /* As a watchdog would: children get default signal dispositions, an empty mask and their
     * own process group. */
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    signal(SIGPIPE, SIG_IGN);

    struct slot slots[MAX_WORKERS];
    struct pollfd pfd[2 * MAX_WORKERS];
    int idx[2 * MAX_WORKERS];
    struct lat lat = {0};
    uint64_t errors = 0, done = 0;
    int first_err = 0;

    const uint64_t t_start = now_ns();
    const uint64_t t_end = t_start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < workers; i++) {
        slots[i].pid = 0;
        slots[i].out_fd = -1;
        slots[i].pidfd = -1;
    }

    for (;;) {
        uint64_t t = now_ns();
        int nfds = 0;
        for (int i = 0; i < workers; i++) {
            struct slot *s = &slots[i];
            if (s->pid == 0 && t < t_end) {
                int rc = spawn_one(s, path, prog, &attr, payload, len);
                if (rc < 0) {
                    errors++;
                    if (!first_err)
                        first_err = rc;
                    s->pid = 0;
                    if (errors > 1000)
                        goto out; /* spawning itself keeps failing: give up */
                    continue;
                }
            }
            if (s->out_fd >= 0) {
                pfd[nfds] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
                idx[nfds++] = i;
            }
            if (s->pidfd >= 0 && !s->is_reaped) {
                pfd[nfds] = (struct pollfd){.fd = s->pidfd, .events = POLLIN};
                idx[nfds++] = i;
            }
        }
        if (nfds == 0)
            break;
        int n = poll(pfd, (nfds_t)nfds, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("rawspawn: poll");
            return 1;
        }
        for (int k = 0; k < nfds; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct slot *s = &slots[idx[k]];
            if (pfd[k].fd == s->pidfd) {
                reap(s, WNOHANG);
            } else {
                ssize_t r = read(s->out_fd, sink, sizeof sink);
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                if (r > 0) {
                    s->got += (size_t)r;
                    continue;
                }
                close(s->out_fd);
                s->out_fd = -1;
                if (s->pidfd < 0 && !s->is_reaped)
                    reap(s, 0); /* no pidfd: the child is exiting, wait for it here */
            }
            if (s->out_fd >= 0 || !s->is_reaped)
                continue;
            uint64_t t1 = now_ns();
            int rc = !s->is_ok ? -ECHILD : s->got != len ? -EPROTO : 0;
            s->pid = 0;
            if (rc < 0) {
                errors++;
                if (!first_err)
                    first_err = rc;
            } else {
                done++;
                if (lat_push(&lat, t1 - s->t0_ns) < 0) {
                    fprintf(stderr, "rawspawn: out of memory\n");
                    return 1;
                }
            }
        }
    }
out:;
    double elapsed = (double)(now_ns() - t_start) / 1e9;
    qsort(lat.us, lat.n, sizeof *lat.us, cmp_u32);
    printf("rawspawn program=%s workers=%d payload=%zu seconds=%.2f spawns=%llu spawns/s=%.1f "
           "p50_us=%u p99_us=%u errors=%llu\n",
           prog[0], workers, len, elapsed, (unsigned long long)done, (double)done / elapsed,
           pct(&lat, 0.50), pct(&lat, 0.99), (unsigned long long)errors);
    if (first_err == -ECHILD)
        fprintf(stderr, "rawspawn: first error: %s exited non-zero or was killed\n", prog[0]);
    else if (first_err == -EPROTO)
        fprintf(stderr, "rawspawn: first error: %s did not echo %zu bytes\n", prog[0], len);
    else if (first_err)
        fprintf(stderr, "rawspawn: first error: %s\n", strerror(-first_err));
    free(lat.us);
    posix_spawnattr_destroy(&attr);
    return done > 0 && errors == 0 ? 0 : 1;
}
