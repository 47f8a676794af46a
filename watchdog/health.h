/* health.h: the lock file and the "accepting" flag behind /_/health and -run-healthcheck.
 * Knows nothing about HTTP or modes. */
#ifndef WD_HEALTH_H
#define WD_HEALTH_H

#include "wd.h"

struct wd_health {
    const char *lock_path; /* borrowed from the config */
    bool suppress_lock;
    bool is_accepting; /* ready and not shutting down */
    bool has_lock;     /* we wrote it and have not removed it */
};

void wd_health_init(struct wd_health *h, const char *lock_path, bool suppress_lock);
/* Remove a stale lock left by an earlier run. */
void wd_health_clear_stale(struct wd_health *h);
/* Handler ready: write the lock (unless suppressed) and accept. Returns 0 or -errno. */
int wd_health_mark_ready(struct wd_health *h);
/* Shutting down or handler gone: remove the lock, stop accepting. */
void wd_health_mark_unready(struct wd_health *h);
/* What /_/health answers: accepting and (lock present, or lock suppressed). */
bool wd_health_is_healthy(const struct wd_health *h);

/* -run-healthcheck: 0 if the lock file exists, else 1. */
int wd_health_check_lock(const char *lock_path);

#endif
