/* log.h: the watchdog's own stderr lines (Go logger style: "YYYY/MM/DD HH:MM:SS msg") and the
 * line-by-line relay of handler output. Only log.c writes the watchdog's stderr. */
#ifndef WD_LOG_H
#define WD_LOG_H

#include "wd.h"

enum wd_log_level { WD_LOG_DEBUG = 0, WD_LOG_INFO, WD_LOG_WARN, WD_LOG_ERROR };

extern enum wd_log_level wd_log_level; /* the only global besides the app */

void wd_log_setup(bool prefix_handler_lines);
void wd_log_write(enum wd_log_level level, const char *fmt, ...) WD_PRINTF(2, 3);

#define wd_log_at(lvl, ...)                                                                        \
    do {                                                                                           \
        if ((lvl) >= wd_log_level)                                                                 \
            wd_log_write((lvl), __VA_ARGS__);                                                      \
    } while (0)
#define wd_log_debug(...) wd_log_at(WD_LOG_DEBUG, __VA_ARGS__)
#define wd_log_info(...) wd_log_at(WD_LOG_INFO, __VA_ARGS__)
#define wd_log_warn(...) wd_log_at(WD_LOG_WARN, __VA_ARGS__)
#define wd_log_error(...) wd_log_at(WD_LOG_ERROR, __VA_ARGS__)

/* Splits handler output into lines. Bytes are copied into a buffer of at most `max_line`
 * bytes; a longer line is emitted in pieces, so the handler is never stalled. */
struct wd_linelog {
    const char *stream; /* "stderr" / "stdout" */
    int fd;             /* where relayed lines go: 1 or 2 */
    char *buf;
    size_t len, cap;
};

int wd_linelog_init(struct wd_linelog *ll, const char *stream, int fd, int64_t max_line);
void wd_linelog_feed(struct wd_linelog *ll, const char *data, size_t len);
void wd_linelog_flush(struct wd_linelog *ll); /* at EOF: emit a last partial line */
void wd_linelog_free(struct wd_linelog *ll);

/* "4.096kB" as docker/go-units HumanSize (decimal units, 4 significant digits). */
void wd_log_human_size(char *out, size_t outlen, uint64_t bytes);

#endif
