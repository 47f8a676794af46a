/* wd.h: shared vocabulary only: the application struct, small macros and attributes.
 * Nothing here does I/O; every module may include it. */
#ifndef WD_H
#define WD_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define WD_VERSION "0.1.0"
#ifndef WD_SHA
#define WD_SHA "unknown"
#endif

#define WD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define WD_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
#define WD_UNUSED(x) ((void)(x))

/* Intrusive doubly linked lists of structs with `prev`/`next` members and a head pointer (the
 * shape every live-object list here has: connections, jobs, upstream connections). */
#define WD_LIST_PUSH(head, node)                                                                   \
    do {                                                                                           \
        (node)->prev = NULL;                                                                       \
        (node)->next = (head);                                                                     \
        if ((head) != NULL)                                                                        \
            (head)->prev = (node);                                                                 \
        (head) = (node);                                                                           \
    } while (0)
#define WD_LIST_REMOVE(head, node)                                                                 \
    do {                                                                                           \
        if ((node)->prev != NULL)                                                                  \
            (node)->prev->next = (node)->next;                                                     \
        else                                                                                       \
            (head) = (node)->next;                                                                 \
        if ((node)->next != NULL)                                                                  \
            (node)->next->prev = (node)->prev;                                                     \
    } while (0)
#define WD_PRINTF(f, a) __attribute__((format(printf, f, a)))

#define WD_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            wd_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

_Noreturn void wd_assert_fail(const char *what, const char *file, int line);

struct uv_loop_s;
struct wd_config;
struct wd_server;
struct wd_mode;
struct wd_metrics;

typedef void (*wd_done_cb)(void *arg);

/* One per process, built in main.c and passed by pointer. */
struct wd_app {
    struct uv_loop_s *loop;
    const struct wd_config *cfg;
    char **base_env;            /* borrowed: the watchdog's own environment, NULL-terminated */
    struct wd_server *server;   /* owned by main.c */
    const struct wd_mode *mode; /* static table entry */
    void *mode_state;           /* owned by the mode: created by start(), freed by stop() */
    struct wd_metrics *metrics; /* owned by main.c; always there (metrics_port=0: not served) */
    bool is_shutting_down;
    void *lifecycle; /* main.c's shutdown state */
    /* Set by main.c (function pointers, so modules link without main.c, e.g. in unit tests). */
    void (*set_ready)(struct wd_app *app, bool is_ready);
    void (*shutdown)(struct wd_app *app, int exit_code);
};

/* For modes whose handler becomes ready later (a warm child): the watchdog is ready (lock
 * file, /_/health 200) only between set_ready(true) and set_ready(false). Modes with
 * is_ready == NULL are ready as soon as the listener is up. */
static inline void wd_app_set_ready(struct wd_app *app, bool is_ready)
{
    app->set_ready(app, is_ready);
}

/* Start the shutdown sequence as SIGTERM does, then exit with exit_code (restart_policy=never). */
static inline void wd_app_shutdown(struct wd_app *app, int exit_code)
{
    app->shutdown(app, exit_code);
}

#endif
