/* metrics.h: the counters behind /metrics and their Prometheus text exposition (format 0.0.4).
 *
 * Pure: no sockets, no loop, no logging. The server and the modes bump plain integers on the hot
 * path (single-threaded, no locking, no allocation once every status code seen has its row);
 * text is built only when /metrics is scraped, by wd_metrics_render().
 *
 * Families, in the order rendered (sorted by name, as client_golang gathers them); a family with
 * no series yet is left out, as client_golang does for an empty vector:
 *   fwatchdog_handler_exited_total{mode,status}   counter (status "0", "3", "SIGKILL", "signal_N")
 *   fwatchdog_handler_killed_total{mode}          counter
 *   fwatchdog_handler_reported_duration_seconds{mode}  summary (sum, count; Nuclio 'm' records)
 *   fwatchdog_handler_started_total{mode}         counter
 *   fwatchdog_queue_depth{mode}                   gauge
 *   fwatchdog_queue_wait_seconds{mode}            histogram
 *   fwatchdog_ready{mode}                         gauge, 0 or 1
 *   fwatchdog_request_bytes_total{mode}           counter
 *   fwatchdog_requests_rejected_total{mode}       counter
 *   fwatchdog_requests_timed_out_total{mode}      counter
 *   fwatchdog_response_bytes_total{mode}          counter
 *   fwatchdog_warm_restarts_total{mode}           counter
 *   fwatchdog_warm_workers_ready{mode}            gauge (mode warm only)
 *   http_request_duration_seconds{code,method}    histogram   (the OpenFaaS watchdogs' three,
 *   http_requests_in_flight                       gauge        same names, help, labels and
 *   http_requests_total{code,method}              counter      buckets)
 *   process_cpu_seconds_total, process_max_fds, process_open_fds, process_resident_memory_bytes,
 *   process_start_time_seconds, process_virtual_memory_bytes   (as client_golang, from /proc)
 * Histogram buckets: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 +Inf (client_golang DefBuckets). */
#ifndef WD_METRICS_H
#define WD_METRICS_H

#include "wd.h"

struct wd_buf;
struct wd_metrics; /* opaque: only metrics.c knows the layout */

/* Create the counters, all zero, not ready. `mode_name` (may be NULL: "") is copied; it is the
 * value of every `mode` label. Returns 0 or UV_ENOMEM. Free with wd_metrics_free(). */
int wd_metrics_new(struct wd_metrics **out, const char *mode_name);
/* Accepts NULL. */
void wd_metrics_free(struct wd_metrics *m);

/* One function request answered (not health/ready probes). `method` as sent (it is mapped as
 * promhttp does: GET or get -> get, ..., anything else -> unknown); `code` the status sent (0
 * counts as 200, as promhttp). `seconds` from the request's start to its end. The first request
 * with a new status code allocates that code's row; if that fails the request is not counted. */
void wd_metrics_request(struct wd_metrics *m, const char *method, int code, double seconds);
/* http_requests_in_flight += delta. */
void wd_metrics_inflight(struct wd_metrics *m, int delta);
/* fwatchdog_queue_depth += delta: requests waiting for a free slot. */
void wd_metrics_queue(struct wd_metrics *m, int delta);
/* A request left the queue to run after waiting `seconds`. */
void wd_metrics_queue_wait(struct wd_metrics *m, double seconds);
/* A request answered 429 (concurrency limit or full queue). */
void wd_metrics_rejected(struct wd_metrics *m);
/* A request answered 504/408 because a deadline passed. */
void wd_metrics_timed_out(struct wd_metrics *m);
/* Body bytes read from the client and written to it for one request. */
void wd_metrics_bytes(struct wd_metrics *m, uint64_t in, uint64_t out);
/* A handler process was started. */
void wd_metrics_child_started(struct wd_metrics *m);
/* A handler process ended: `exit_status` its exit code (0..255), or -1 when `term_signal` (> 0)
 * killed it. */
void wd_metrics_child_exited(struct wd_metrics *m, int exit_status, int term_signal);
/* A handler process was killed because its deadline passed. */
void wd_metrics_child_killed(struct wd_metrics *m);
/* A long-lived handler was started again after it went away. */
void wd_metrics_warm_restart(struct wd_metrics *m);
/* fwatchdog_warm_workers_ready: warm workers initialised and alive. */
void wd_metrics_workers_ready(struct wd_metrics *m, size_t n);
/* A handler reported how long a call took (Nuclio's 'm' record). */
void wd_metrics_reported_duration(struct wd_metrics *m, double seconds);
/* fwatchdog_ready: the handler is ready and we are not shutting down. */
void wd_metrics_set_ready(struct wd_metrics *m, bool is_ready);

/* Append the whole exposition to `out` (Content-Type: text/plain; version=0.0.4). Reads
 * /proc/self for the process_* families (a family that cannot be read is left out). Returns 0,
 * or UV_ENOMEM / UV_E2BIG from the buffer, in which case `out` is left as it was. */
int wd_metrics_render(struct wd_metrics *m, struct wd_buf *out);

/* For tests: how many status-code rows have been allocated (one per distinct code seen). */
size_t wd_metrics_rows(const struct wd_metrics *m);

#endif
