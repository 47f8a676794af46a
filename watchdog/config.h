/* config.h: the configuration contract (../shared/reference/CONFIG.md) as a struct.
 * wd_config_load() is a pure function of an envp array: no I/O, no logging, no libuv. */
#ifndef WD_CONFIG_H
#define WD_CONFIG_H

#include <stdio.h>
#include "wd.h"

enum wd_mode_kind {
    WD_MODE_STREAMING = 0,
    WD_MODE_SERIALIZING,
    WD_MODE_CLASSIC,
    WD_MODE_HTTP,
    WD_MODE_STATIC,
    WD_MODE_WARM,
};

enum wd_restart_policy { WD_RESTART_ALWAYS = 0, WD_RESTART_ON_FAILURE, WD_RESTART_NEVER };
enum wd_warm_protocol { WD_WARM_ACTIONLOOP = 0, WD_WARM_NUCLIO };
enum wd_log_format { WD_LOG_TEXT = 0, WD_LOG_JSON };

/* Unset rlimits are -1. */
struct wd_rlimits {
    int64_t as_bytes;
    int64_t cpu_seconds;
    int64_t nofile;
    int64_t nproc;
};

/* Built by wd_config_load(), freed by wd_config_free(). Every char * is owned (heap copy).
 * Durations are milliseconds, sizes are bytes. 0 means "none/unlimited" unless noted. */
struct wd_config {
    enum wd_mode_kind mode;
    const char *mode_name; /* static string: "streaming", ... */

    char *fprocess;       /* raw string as configured (function_process wins), or NULL */
    char **fprocess_argv; /* NULL-terminated, split with shell-like quoting; NULL if unset */
    size_t fprocess_argc;

    int port;           /* port, else PORT, else 8080; 0 = ask the kernel */
    char *bind_address; /* NULL = all interfaces (IPv6 wildcard with v4-mapped, or 0.0.0.0) */
    int metrics_port;   /* 8081; 0 disables */

    uint64_t read_timeout_ms;         /* 30s; 0 = none */
    uint64_t write_timeout_ms;        /* 30s; 0 is a config error (as OW) */
    uint64_t exec_timeout_ms;         /* classic 0, others 30s; 0 = none */
    uint64_t healthcheck_interval_ms; /* = write_timeout unless set; 0 = no wait */
    uint64_t shutdown_grace_ms;       /* 5s */

    bool suppress_lock;
    char *ready_path; /* NULL if unset */
    char *lock_path;  /* $TMPDIR/.lock, default /tmp/.lock */

    uint64_t max_inflight;     /* 0 = unlimited */
    uint64_t max_queue;        /* 0 */
    uint64_t queue_timeout_ms; /* = exec_timeout unless set */
    uint64_t max_body_size;    /* 0 = unlimited */
    uint64_t max_header_size;  /* 1 MiB */

    char *content_type;   /* NULL if unset (classic then echoes the request's) */
    bool cgi_headers;     /* true */
    bool combine_output;  /* true */
    bool write_debug;     /* false */
    bool marshal_request; /* false */
    bool debug_headers;   /* false */
    bool cgi_response;    /* false */
    struct wd_rlimits rlimits;

    char *upstream_url; /* http_upstream_url wins; NULL if unset */
    bool buffer_http;   /* buffer_http or http_buffer_req_body */
    enum wd_restart_policy restart_policy;
    uint64_t workers; /* 1 */
    enum wd_warm_protocol warm_protocol;
    bool warm_ack;     /* true */
    char *static_path; /* /home/app/public */

    bool prefix_logs;        /* true */
    int64_t log_buffer_size; /* 65536; negative = unbounded */
    bool log_callid;         /* false */
    enum wd_log_format log_format;
};

/* Parse envp into cfg. Returns 0, or UV_EINVAL with one line (no newline) in err naming the
 * variable, the value and what is accepted. On error cfg holds nothing that needs freeing. */
int wd_config_load(struct wd_config *cfg, char *const *envp, char *err, size_t errlen);
void wd_config_free(struct wd_config *cfg);

/* `fwatchdog --help`: every setting with its default and meaning. */
void wd_config_describe(FILE *out);

/* Parsers shared with tests. Each returns 0 or UV_EINVAL. */
int wd_parse_duration(const char *s, uint64_t *ms);
int wd_parse_size(const char *s, uint64_t *bytes);
int wd_parse_bool(const char *s, bool *out);
/* Shell-like split: 'single', "double" (with \" \\ \$ \` escapes), backslash escapes outside
 * quotes, whitespace separates. Never expands anything. *argv_out is NULL-terminated, one
 * allocation freed with free(). */
int wd_split_argv(const char *s, char ***argv_out, size_t *argc_out);

#endif
