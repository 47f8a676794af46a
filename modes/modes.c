/* modes.c: the table of modes. Adding a mode is one file plus one line here. */
#include <string.h>

#include "mode.h"

extern const struct wd_mode wd_mode_classic, wd_mode_serializing, wd_mode_streaming;

static const struct wd_mode *const modes[] = {&wd_mode_classic, &wd_mode_serializing,
                                              &wd_mode_streaming};

const struct wd_mode *wd_mode_find(const char *name)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(modes); i++) {
        if (strcmp(modes[i]->name, name) == 0)
            return modes[i];
    }
    return NULL;
}
