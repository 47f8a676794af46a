/* mode.h: THE interface between the server (watchdog/server.c) and the modes (modes/).
 *
 * Lifecycle of one function request, as seen by a mode:
 *  1. server.c answers internal routes, 400/413/431, 405 and 429 itself; a mode sees only
 *     requests it must run.
 *  2. Events come in order: on_headers once, on_body zero or more times (de-chunked bytes,
 *     borrowed: copy what you keep), then on_end at most once. on_abort may replace any later
 *     step (client gone, read/write timeout, shutdown deadline).
 *  3. The mode answers with wd_res_start + wd_res_write* + wd_res_end, or wd_res_fail before
 *     anything was started. After wd_res_end/wd_res_fail, or once on_abort arrived, the mode must
 *     never touch `req` again (jobs that outlive it set their pointer to NULL).
 *  4. Back-pressure: wd_req_pause stops reading the client; wd_res_write returns 1 when the
 *     socket queue is deep, then on_drain tells when to write again.
 *  5. The server enforces read_timeout/write_timeout; the mode enforces exec_timeout. */
#ifndef WD_MODE_H
#define WD_MODE_H

#include "wd.h"
#include "http1.h"

/* Owned by server.c, embedded in its connection; lent to the mode from on_headers until the
 * mode ends the response or on_abort arrives. Strings live as long as the request. */
struct wd_req {
    const struct wd_http1_head *head; /* method, target, path, query, headers, ... */
    struct wd_app *app;
    uint64_t id;          /* sequence number of the request in this process */
    uint64_t start_ns;    /* uv_hrtime() when the head was complete */
    char call_id[72];     /* X-Call-Id: the client's, or generated; echoed in the response */
    char deadline[32];    /* X-Deadline: RFC 3339 UTC with ms, when the caller gives up */
    uint64_t deadline_ms; /* the same, as Unix epoch milliseconds */
    bool is_head;         /* HEAD: the server drops body bytes */
    bool is_ready_probe;  /* /_/ready proxied to ready_path */
    char peer[48];        /* client address (numeric), for X-Forwarded-For */
    void *mode_data;      /* the only field a mode writes */
};

struct wd_mode {
    const char *name; /* for logs; the `mode` setting is mapped in modes.c */
    int (*start)(struct wd_app *app, void **state); /* once, before listening */
    bool (*is_ready)(void *state); /* NULL: ready at once; else the mode calls wd_app_set_ready */
    void (*on_headers)(void *state, struct wd_req *req);
    void (*on_body)(struct wd_req *req, const char *at, size_t len);
    void (*on_end)(struct wd_req *req);
    void (*on_drain)(struct wd_req *req); /* may be NULL */
    void (*on_abort)(struct wd_req *req);
    /* After the mode answered 101 (wd_res_start), the connection is a raw tunnel: client bytes
     * arrive here (borrowed), wd_res_write sends raw bytes, wd_req_pause/resume apply, no
     * timeout runs, client EOF is on_abort, wd_res_end closes. NULL: a 101 is not a tunnel. */
    void (*on_tunnel)(struct wd_req *req, const char *at, size_t len);
    void (*stop)(void *state, wd_done_cb done, void *arg); /* kill, close, free, then done */
};

const struct wd_mode *wd_mode_find(const char *name);

/* Shared by the modes (modes.c). The first value of a request header, or NULL. */
const char *wd_req_header(const struct wd_http1_head *head, const char *name);
/* exec_timeout, lowered by an X-Timeout request header as OW does: a Go duration below
 * exec_timeout; a bare number or an invalid value is ignored; nothing applies when
 * exec_timeout is 0 (no deadline). */
uint64_t wd_req_timeout_ms(const struct wd_config *cfg, const struct wd_http1_head *head);

/* Implemented by server.c. */
void wd_req_pause(struct wd_req *req);
void wd_req_resume(struct wd_req *req);

/* Start the response. content_length -1: chunked (close-delimited for HTTP/1.0). The server adds
 * Date, Content-Length or Transfer-Encoding, and Connection. Returns 0 or < 0. */
int wd_res_start(struct wd_req *req, int status, const struct wd_header *h, size_t n,
                 int64_t content_length);
/* Copies the bytes. Returns 0, 1 (queue deep: wait for on_drain) or < 0 (connection gone). */
int wd_res_write(struct wd_req *req, const void *buf, size_t len);
void wd_res_end(struct wd_req *req);
/* End after an error once the response has started: the connection is closed after what was
 * queued, so the client sees the response cut short. */
void wd_res_abort(struct wd_req *req);
/* Whole response in one call (status, headers, body). */
void wd_res_send(struct wd_req *req, int status, const struct wd_header *h, size_t n,
                 const void *body, size_t len);
bool wd_res_started(const struct wd_req *req);

/* The server's own log of one request ends with these figures; modes add the failure text. */
void wd_req_note_error(struct wd_req *req, const char *what);

#endif
