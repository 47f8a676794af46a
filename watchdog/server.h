/* server.h: the HTTP/1.1 front end: listener, connections, timeouts, internal routes
 * (/_/health, /_/ready), max_inflight, and the wd_req / wd_res calls of mode.h. It knows no
 * mode by name and never spawns a process. */
#ifndef WD_SERVER_H
#define WD_SERVER_H

#include "wd.h"
#include "health.h"

struct wd_server;

/* Bind and listen (cfg->bind_address, cfg->port). Returns 0 or a UV error; err says what. */
int wd_server_start(struct wd_app *app, struct wd_health *health, char *err, size_t errlen);
/* The ports actually bound (useful with port=0); metrics 0 when disabled. */
int wd_server_port(const struct wd_server *srv);
int wd_server_metrics_port(const struct wd_server *srv);
/* Last step of shutdown: close the metrics listener, the queue timer and every connection. */
void wd_server_close(struct wd_server *srv);

/* Shutdown step: close the listener and idle connections; active requests finish with
 * Connection: close. done runs once every connection is gone (maybe at once). */
void wd_server_drain(struct wd_server *srv, wd_done_cb done, void *arg);
/* Shutdown deadline: abort what is still running (modes get on_abort), close everything. */
void wd_server_abort_all(struct wd_server *srv);
/* Free the server after the loop has closed its handles. */
void wd_server_free(struct wd_server *srv);

size_t wd_server_inflight(const struct wd_server *srv);

#endif
