/* buf.h: struct wd_buf, growable bytes with a hard cap: the one buffer type. */
#ifndef WD_BUF_H
#define WD_BUF_H

#include "wd.h"

struct wd_buf {
    char *data;
    size_t len, cap;
    size_t max; /* 0 = no cap */
};

void wd_buf_init(struct wd_buf *b, size_t max);
/* Make room for at least `more` bytes after len. Returns 0, UV_ENOMEM or UV_E2BIG (cap). */
int wd_buf_reserve(struct wd_buf *b, size_t more);
int wd_buf_append(struct wd_buf *b, const void *p, size_t len);
void wd_buf_free(struct wd_buf *b);

#endif
