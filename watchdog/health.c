/* health.c: owns the lock file ($TMPDIR/.lock) and the accepting flag. */
#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

void wd_health_init(struct wd_health *h, const char *lock_path, bool suppress_lock)
{
    h->lock_path = lock_path;
    h->suppress_lock = suppress_lock;
    h->is_accepting = false;
    h->has_lock = false;
}

void wd_health_clear_stale(struct wd_health *h)
{
    unlink(h->lock_path); /* also with suppress_lock: a stale lock must not look healthy */
}

int wd_health_mark_ready(struct wd_health *h)
{
    if (!h->suppress_lock && !h->has_lock) {
        int fd = open(h->lock_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0660);
        if (fd < 0)
            return -errno;
        close(fd);
        h->has_lock = true;
    }
    h->is_accepting = true;
    return 0;
}

void wd_health_mark_unready(struct wd_health *h)
{
    h->is_accepting = false;
    if (h->has_lock)
        unlink(h->lock_path);
    h->has_lock = false;
}

bool wd_health_is_healthy(const struct wd_health *h)
{
    if (!h->is_accepting)
        return false;
    if (h->suppress_lock)
        return true; /* fixed: the peers answer 503 forever here */
    /* As the peers: deleting the lock from outside flips health to 503. */
    struct stat st;
    return stat(h->lock_path, &st) == 0;
}

int wd_health_check_lock(const char *lock_path)
{
    struct stat st;
    return stat(lock_path, &st) == 0 ? 0 : 1;
}
