/* modes.c: the table of modes. Adding a mode is one file plus one line here. */
#include <string.h>

#include "mode.h"

extern const struct wd_mode wd_mode_fork;
extern const struct wd_mode wd_mode_http;
extern const struct wd_mode wd_mode_static;

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
