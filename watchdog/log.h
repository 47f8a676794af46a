/* log.h: the watchdog's own stderr lines and the line-by-line relay of handler output. Only
 * log.c writes the watchdog's stderr. Two formats (config log_format):
 *   text (default): Go logger style, "YYYY/MM/DD HH:MM:SS msg", byte for byte as of-watchdog;
 *   json: one object per line, {"time":"2026-11-30T20:22:21.123Z","level":"info","msg":...}.
 * Every line is written with one write(2), so lines never interleave with each other. In json,
 * each string is escaped and made valid UTF-8 (a bad byte becomes U+FFFD), so nothing a client
 * or a handler sends can break a line. All functions run on the loop thread only. */
#ifndef WD_LOG_H
#define WD_LOG_H

#include "wd.h"
#include "config.h"

enum wd_log_level { WD_LOG_DEBUG = 0, WD_LOG_INFO, WD_LOG_WARN, WD_LOG_ERROR };

extern enum wd_log_level wd_log_level; /* the only global besides the app */

/* Called once from main() before the first line; the defaults are (true, WD_LOG_TEXT, false).
 * prefix_handler_lines: text only, "<time> stderr: " before each relayed handler line.
 * log_callid: text only, append " [<call id or none>]" to request lines (json always has it). */
void wd_log_setup(bool prefix_handler_lines, enum wd_log_format format, bool log_callid);
/* A message longer than 4 KiB is cut. Use the macros: they check the level first. */
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

/* One finished request. Every pointer is borrowed for the call only; NULL strings are allowed
 * (json writes null, text writes "" or "none" for the call id). */
struct wd_log_req {
    const char *method, *path; /* path = raw request-target as sent */
    int status;
    double seconds;
    uint64_t bytes_in, bytes_out;
    const char *call_id; /* may be NULL */
    const char *mode;
    const char *error; /* failure text, may be NULL: logged on its own line first in text */
};

/* Level info, or warn when status >= 500 or error is set (checked against wd_log_level).
 * text: [error line]; "<METHOD> <path> - <status> - ContentLength: <human bytes_out> (<s>s)"
 *       plus " [<call_id or none>]" when log_callid is on.
 * json: {"time","level","msg":"request","method","path","status","duration_ms","bytes_in",
 *       "bytes_out","call_id","mode"[,"error"]}, duration_ms a number with 3 decimals. */
void wd_log_request(const struct wd_log_req *r);

/* Splits handler output into lines. Bytes are copied into a buffer of at most `max_line`
 * bytes; a longer line is emitted in pieces, so the handler is never stalled. Set up by
 * wd_linelog_init() in a struct the mode owns; wd_linelog_free() releases the buffer.
 * text: "<time> <stream>: <line>" (or the bare line with prefix_logs=false).
 * json: {"time","level":"info","msg":"<line>","stream":"<stream>"[,"call_id"]}; a piece cut
 *       inside a UTF-8 sequence gets U+FFFD for the cut bytes. */
struct wd_linelog {
    const char *stream;  /* "stderr" / "stdout": static string */
    const char *call_id; /* borrowed, may be NULL: set by the mode after init, must outlive
                            every feed/flush call (json only) */
    int fd;              /* where relayed lines go: 1 or 2 */
    bool is_split;       /* the last piece was cut at `cap`: a '\n' right after ends it */
    char *buf;           /* owned: allocated on the first partial line */
    size_t len, cap;
};

int wd_linelog_init(struct wd_linelog *ll, const char *stream, int fd, int64_t max_line);
void wd_linelog_feed(struct wd_linelog *ll, const char *data, size_t len);
void wd_linelog_flush(struct wd_linelog *ll); /* at EOF: emit a last partial line */
void wd_linelog_free(struct wd_linelog *ll);

/* "4.096kB" as docker/go-units HumanSize (decimal units, 4 significant digits). */
void wd_log_human_size(char *out, size_t outlen, uint64_t bytes);

#endif
