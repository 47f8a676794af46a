/* buf.c: growth policy and cap of struct wd_buf; it never looks at the bytes. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

void wd_buf_init(struct wd_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

int wd_buf_reserve(struct wd_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    if (b->max != 0 && b->len + more > b->max)
        return UV_E2BIG;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    if (b->max != 0 && cap > b->max)
        cap = b->max;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return UV_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int wd_buf_append(struct wd_buf *b, const void *p, size_t len)
{
    int rc = wd_buf_reserve(b, len);
    if (rc < 0)
        return rc;
    if (len > 0)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}

void wd_buf_free(struct wd_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
