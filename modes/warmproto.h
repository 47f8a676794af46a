/* warmproto.h: the wire formats of mode warm, as pure functions (no loop, no sockets): an HTTP
 * request encoded as one JSON line for an actionloop or a Nuclio worker, and a worker's answer
 * line decoded into a status, headers and body. warm.c moves the bytes; the README's "Mode
 * warm" section is the contract. */
#ifndef WD_WARMPROTO_H
#define WD_WARMPROTO_H

#include "wd.h"
#include "http1.h"
#include "log.h"

struct wd_buf;

struct wd_warm_event {
    const struct wd_http1_head *head;
    const char *body;
    size_t body_len;
    const char *call_id;
    uint64_t deadline_ms; /* Unix epoch milliseconds */
    uint64_t now_ms;      /* Unix epoch milliseconds */
    const char *action_name, *namespace_name;
};

/* A decoded answer. Every string is owned (freed by wd_warm_reply_free). */
struct wd_warm_reply {
    int status;
    struct wd_header *headers;
    size_t nheaders;
    char *body;
    size_t body_len;
    char err[160]; /* why the answer was refused */
};

/* Append the event as one JSON line ending in '\n'. Returns 0 or UV_ENOMEM / UV_E2BIG. */
int wd_warm_encode_actionloop(struct wd_buf *out, const struct wd_warm_event *ev);
int wd_warm_encode_nuclio(struct wd_buf *out, const struct wd_warm_event *ev);

/* Decode one answer line (without its '\n'). Returns 0, or -1 with r->err set (the caller
 * answers 502). Free r with wd_warm_reply_free in both cases. */
int wd_warm_decode_actionloop(const char *line, size_t len, struct wd_warm_reply *r);
/* The JSON after the 'r' type byte of a Nuclio reply. */
int wd_warm_decode_nuclio(const char *json, size_t len, struct wd_warm_reply *r);
void wd_warm_reply_free(struct wd_warm_reply *r);

/* The acknowledgement of an actionloop worker: a JSON object with "ok": true. */
bool wd_warm_is_ack(const char *line, size_t len);

/* A Nuclio 'l' record rendered as one log line ("message key=value ..."), and its level.
 * Returns 0, or -1 when the JSON is not an object with a message. */
int wd_warm_nuclio_log(const char *json, size_t len, enum wd_log_level *level, struct wd_buf *out);
/* A Nuclio 'm' record: {"duration": seconds}. Returns 0 with *seconds, or -1. */
int wd_warm_nuclio_duration(const char *json, size_t len, double *seconds);

/* Helpers, exported for the unit tests. */
bool wd_utf8_is_valid(const char *s, size_t len);
/* Returns 0, or UV_ENOMEM / UV_E2BIG. */
int wd_base64_encode(struct wd_buf *out, const void *data, size_t len);
/* Standard alphabet, padding optional, no whitespace. Returns 0, -1 (not base64) or UV_E*. */
int wd_base64_decode(struct wd_buf *out, const char *s, size_t len);

#endif
