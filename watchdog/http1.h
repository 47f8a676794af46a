/* http1.h: HTTP/1.x request parsing on top of llhttp 8.1, with our own smuggling checks.
 * Pure: no sockets, no timers, no loop. server.c feeds bytes and gets callbacks.
 *
 * Lifetimes: struct wd_http1_head and every string in it belong to the parser and stay valid
 * from on_head until the next wd_http1_next() (or wd_http1_free()). Body slices given to
 * on_body are borrowed from the caller's buffer: valid only during the callback. */
#ifndef WD_HTTP1_H
#define WD_HTTP1_H

#include "wd.h"

struct wd_header {
    const char *name;  /* as received (case preserved) */
    const char *value; /* leading/trailing SP/HT trimmed */
};

struct wd_http1_head {
    const char *method; /* "GET", ... */
    const char *target; /* raw request-target as sent: "/a/../b?x=%20" */
    const char *path;   /* target up to '?', still percent-encoded */
    const char *query;  /* after '?', still encoded; "" when none */
    const struct wd_header *headers;
    size_t nheaders;
    const char *host;       /* Host header value, or "" */
    int64_t content_length; /* body length; -1 when chunked; 0 when no body */
    int http_major, http_minor;
    bool keep_alive;      /* what the client asked for (HTTP/1.0 needs keep-alive) */
    bool expect_continue; /* "Expect: 100-continue" */
    bool is_upgrade;      /* Upgrade requested (the body is then parsed as usual) */
};

/* Each returns 0 to go on, or < 0 to abort parsing (wd_http1_execute then returns < 0 and
 * wd_http1_error() reports status 0: the caller already knows why). on_end is always followed
 * by a stop: the parser waits for wd_http1_next() before it reads the next pipelined request. */
struct wd_http1_cbs {
    int (*on_head)(void *arg, const struct wd_http1_head *head);
    int (*on_body)(void *arg, const char *at, size_t len);
    int (*on_end)(void *arg);
};

#define WD_HTTP1_STOP 1

struct wd_http1_limits {
    uint64_t max_header_bytes; /* request line + header block; 0 = unlimited */
    uint64_t max_body_bytes;   /* 0 = unlimited */
};

struct wd_http1; /* opaque */

int wd_http1_new(struct wd_http1 **out, const struct wd_http1_cbs *cbs, void *arg,
                 const struct wd_http1_limits *limits);
void wd_http1_free(struct wd_http1 *p);

/* Feed bytes. Returns:
 *   0                  all of len consumed, more input wanted;
 *   WD_HTTP1_STOP      stopped after on_end: *consumed bytes were used (the message ends
 *                      there); keep the rest and feed it after wd_http1_next();
 *   < 0                a bad request: wd_http1_error() tells the status to answer (400, 413,
 *                      431) and a short reason; the connection must then be closed.
 * *consumed is set in every case. */
int wd_http1_execute(struct wd_http1 *p, const char *data, size_t len, size_t *consumed);

/* After on_end: get ready for the next request on the same connection. */
void wd_http1_next(struct wd_http1 *p);

/* The client closed its side: returns < 0 if a message was cut short (then 400 applies
 * only if headers were incomplete; the caller decides). */
int wd_http1_finish(struct wd_http1 *p);

/* True when no byte of a new request has been seen since the last message (idle). */
bool wd_http1_is_idle(const struct wd_http1 *p);

int wd_http1_error(const struct wd_http1 *p, const char **reason);

#endif
