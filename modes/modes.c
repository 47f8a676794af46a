/* modes.c: the table of modes, and the few helpers every mode shares. Adding a mode is one
 * file plus one line here. */
#include <string.h>
#include <strings.h>

#include "mode.h"
#include "config.h"

extern const struct wd_mode wd_mode_fork;
extern const struct wd_mode wd_mode_http;
extern const struct wd_mode wd_mode_static;
extern const struct wd_mode wd_mode_warm;

/* clang-format off */
static const struct {
    const char *name; /* value of the `mode` setting */
    const struct wd_mode *mode;
} modes[] = {
    {"classic", &wd_mode_fork},
    {"serializing", &wd_mode_fork},
    {"streaming", &wd_mode_fork},
    {"http", &wd_mode_http},
    {"static", &wd_mode_static},
    {"warm", &wd_mode_warm},
};
/* clang-format on */

const struct wd_mode *wd_mode_find(const char *name)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(modes); i++) {
        if (strcmp(modes[i].name, name) == 0)
            return modes[i].mode;
    }
    return NULL;
}

const char *wd_req_header(const struct wd_http1_head *head, const char *name)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        if (strcasecmp(head->headers[i].name, name) == 0)
            return head->headers[i].value;
    }
    return NULL;
}

uint64_t wd_req_timeout_ms(const struct wd_config *cfg, const struct wd_http1_head *head)
{
    uint64_t t = cfg->exec_timeout_ms, v;
    const char *x = wd_req_header(head, "X-Timeout");
    if (t == 0 || x == NULL || x[strspn(x, "0123456789")] == '\0')
        return t;
    if (wd_parse_duration(x, &v) == 0 && v > 0 && v < t)
        return v;
    return t;
}
