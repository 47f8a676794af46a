/* warmproto.c: JSON encodings of mode warm (see warmproto.h). cJSON builds and parses the
 * documents; the text that goes into them is made valid UTF-8 first (cJSON copies bytes as
 * they are and stops at a NUL), and bodies that are not text travel as base64. */
#include "warmproto.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cjson/cJSON.h>
#include <uv.h>

#include "buf.h"

/* ---- UTF-8 and base64 ------------------------------------------------------------------ */

bool wd_utf8_is_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        size_t n;
        unsigned min;
        if (c < 0x80) {
            if (c == 0)
                return false; /* valid UTF-8, but JSON text through cJSON cannot carry it */
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (p[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int wd_base64_encode(struct wd_buf *out, const void *data, size_t len)
{
    const unsigned char *p = data;
    int rc = wd_buf_reserve(out, (len + 2) / 3 * 4 + 1);
    if (rc < 0)
        return rc;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        if (i + 1 < len)
            *o++ = b64[(v >> 6) & 63];
        else
            *o++ = '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int wd_base64_decode(struct wd_buf *out, const char *s, size_t len)
{
    while (len > 0 && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    int rc = wd_buf_reserve(out, len / 4 * 3 + 3);
    if (rc < 0)
        return rc;
    unsigned char *o = (unsigned char *)out->data + out->len;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out->len = (size_t)((char *)o - out->data);
    return 0;
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* A string member from bytes that may not be UTF-8: invalid text is read as Latin-1 (what
 * obs-text in a header is), so the JSON is always valid. */
static cJSON *add_text(cJSON *obj, const char *key, const char *s, size_t len)
{
    if (wd_utf8_is_valid(s, len) && strlen(s) == len)
        return cJSON_AddStringToObject(obj, key, s);
    char *t = malloc(len * 2 + 1);
    if (t == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) {
            continue;
        } else if (c < 0x80) {
            t[n++] = (char)c;
        } else {
            t[n++] = (char)(0xC0 | (c >> 6));
            t[n++] = (char)(0x80 | (c & 0x3F));
        }
    }
    t[n] = '\0';
    cJSON *item = cJSON_AddStringToObject(obj, key, t);
    free(t);
    return item;
}

/* Grouping by name in O(n log n): a client may send a hundred thousand headers or query
 * pairs, and a pairwise scan would stall the loop for minutes. */
struct named {
    const char *name;
    size_t i; /* position in the input */
};

struct group {
    size_t first;      /* input position of the group's first entry */
    size_t start, end; /* its entries in the sorted array, in input order */
};

static int cmp_icase(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    int r = strcasecmp(x->name, y->name);
    return r != 0 ? r : (x->i > y->i) - (x->i < y->i);
}

static int cmp_exact(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r != 0 ? r : (x->i > y->i) - (x->i < y->i);
}

static int cmp_first(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    return (x->first > y->first) - (x->first < y->first);
}

/* Sort e (n entries) by name and return the groups of equal names in order of first
 * appearance (*ngroups of them; malloc'ed), or NULL when out of memory. */
static struct group *group_names(struct named *e, size_t n, bool icase, size_t *ngroups)
{
    struct group *g = malloc((n > 0 ? n : 1) * sizeof *g);
    if (g == NULL)
        return NULL;
    qsort(e, n, sizeof *e, icase ? cmp_icase : cmp_exact);
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        size_t j = i + 1;
        while (j < n &&
               (icase ? strcasecmp(e[j].name, e[i].name) : strcmp(e[j].name, e[i].name)) == 0)
            j++;
        g[k] = (struct group){e[i].i, i, j};
        i = j;
    }
    qsort(g, k, sizeof *g, cmp_first);
    *ngroups = k;
    return g;
}

/* Header values joined by ", " per name (names compared case-insensitively), in first-seen
 * order; lower-cased names for actionloop, as sent (first spelling) for Nuclio. */
static int add_headers(cJSON *obj, const struct wd_http1_head *h, bool lower)
{
    size_t n = h->nheaders, ng = 0;
    struct named *e = malloc((n > 0 ? n : 1) * sizeof *e);
    if (e == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < n; i++)
        e[i] = (struct named){h->headers[i].name, i};
    struct group *g = group_names(e, n, true, &ng);
    int rc = g == NULL ? UV_ENOMEM : 0;
    struct wd_buf v;
    wd_buf_init(&v, 0);
    for (size_t k = 0; k < ng && rc == 0; k++) {
        v.len = 0;
        for (size_t j = g[k].start; j < g[k].end; j++) {
            const char *val = h->headers[e[j].i].value;
            if (j > g[k].start)
                rc |= wd_buf_append(&v, ", ", 2);
            rc |= wd_buf_append(&v, val, strlen(val));
        }
        rc |= wd_buf_append(&v, "", 1);
        char name[256];
        snprintf(name, sizeof name, "%s", h->headers[g[k].first].name);
        for (char *p = name; lower && *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (rc == 0 && add_text(obj, name, v.data, v.len - 1) == NULL)
            rc = UV_ENOMEM;
    }
    wd_buf_free(&v);
    free(g);
    free(e);
    return rc < 0 ? UV_ENOMEM : 0;
}

static int finish(cJSON *root, struct wd_buf *out)
{
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (s == NULL)
        return UV_ENOMEM;
    size_t n = strlen(s);
    int rc = wd_buf_reserve(out, n + 2);
    if (rc == 0) {
        memcpy(out->data + out->len, s, n);
        out->len += n;
        out->data[out->len++] = '\n';
    }
    cJSON_free(s);
    return rc;
}

int wd_warm_encode_actionloop(struct wd_buf *out, const struct wd_warm_event *ev)
{
    const struct wd_http1_head *h = ev->head;
    cJSON *root = cJSON_CreateObject();
    cJSON *value = cJSON_AddObjectToObject(root, "value");
    if (value == NULL)
        goto nomem;
    char method[32];
    snprintf(method, sizeof method, "%s", h->method);
    for (char *p = method; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    cJSON_AddStringToObject(value, "__ow_method", method);
    add_text(value, "__ow_path", h->path, strlen(h->path));
    add_text(value, "__ow_query", h->query, strlen(h->query));
    cJSON *hdrs = cJSON_AddObjectToObject(value, "__ow_headers");
    if (hdrs == NULL || add_headers(hdrs, h, true) < 0)
        goto nomem;
    bool is_text = wd_utf8_is_valid(ev->body, ev->body_len);
    if (is_text) {
        char *t = malloc(ev->body_len + 1);
        if (t == NULL)
            goto nomem;
        memcpy(t, ev->body, ev->body_len);
        t[ev->body_len] = '\0';
        cJSON_AddStringToObject(value, "__ow_body", t);
        free(t);
    } else {
        struct wd_buf b;
        wd_buf_init(&b, 0);
        if (wd_base64_encode(&b, ev->body, ev->body_len) < 0) {
            wd_buf_free(&b);
            goto nomem;
        }
        cJSON_AddStringToObject(value, "__ow_body", b.data);
        wd_buf_free(&b);
    }
    cJSON_AddBoolToObject(value, "__ow_isBase64Encoded", !is_text);
    char deadline[24];
    snprintf(deadline, sizeof deadline, "%llu", (unsigned long long)ev->deadline_ms);
    add_text(root, "activation_id", ev->call_id, strlen(ev->call_id));
    cJSON_AddStringToObject(root, "deadline", deadline);
    cJSON_AddStringToObject(root, "action_name", ev->action_name);
    if (cJSON_AddStringToObject(root, "namespace", ev->namespace_name) == NULL)
        goto nomem;
    return finish(root, out);
nomem:
    cJSON_Delete(root);
    return UV_ENOMEM;
}

/* One query component, '+' and %XX decoded; kept as sent when the result is not text. */
static char *query_part(const char *p, size_t len)
{
    char *d = malloc(len + 1);
    if (d == NULL)
        return NULL;
    size_t o = 0;
    for (size_t j = 0; j < len; j++) {
        char c = p[j];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && j + 2 < len && isxdigit((unsigned char)p[j + 1]) &&
                   isxdigit((unsigned char)p[j + 2])) {
            char hex[3] = {p[j + 1], p[j + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            j += 2;
        }
        d[o++] = c;
    }
    d[o] = '\0';
    if (!wd_utf8_is_valid(d, o)) {
        memcpy(d, p, len);
        d[len] = '\0';
    }
    return d;
}

/* Query string to a map. The first value of a repeated key wins, as Nuclio's fields; keys
 * are case-sensitive; a pair with an empty key is left out. */
static int add_fields(cJSON *obj, const char *q)
{
    size_t cap = 1, n = 0, ng = 0;
    for (const char *p = q; *p != '\0'; p++)
        cap += *p == '&';
    char **keys = calloc(cap, sizeof *keys), **vals = calloc(cap, sizeof *vals);
    struct named *e = malloc(cap * sizeof *e);
    struct group *g = NULL;
    int rc = keys == NULL || vals == NULL || e == NULL ? UV_ENOMEM : 0;
    while (rc == 0 && *q != '\0') {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        size_t klen = eq != NULL ? (size_t)(eq - q) : len;
        if (klen > 0) {
            keys[n] = query_part(q, klen);
            vals[n] = eq != NULL ? query_part(eq + 1, len - klen - 1) : strdup("");
            if (keys[n] == NULL || vals[n] == NULL)
                rc = UV_ENOMEM;
            e[n] = (struct named){keys[n], n};
            n++;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    if (rc == 0 && (g = group_names(e, n, false, &ng)) == NULL)
        rc = UV_ENOMEM;
    for (size_t k = 0; k < ng && rc == 0; k++) {
        const char *v = vals[g[k].first];
        if (add_text(obj, keys[g[k].first], v, strlen(v)) == NULL)
            rc = UV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    free(keys);
    free(vals);
    free(e);
    free(g);
    return rc;
}

int wd_warm_encode_nuclio(struct wd_buf *out, const struct wd_warm_event *ev)
{
    const struct wd_http1_head *h = ev->head;
    cJSON *root = cJSON_CreateObject();
    add_text(root, "id", ev->call_id, strlen(ev->call_id));
    add_text(root, "method", h->method, strlen(h->method));
    add_text(root, "path", h->path, strlen(h->path));
    add_text(root, "url", h->target, strlen(h->target));
    cJSON *fields = cJSON_AddObjectToObject(root, "fields");
    cJSON *hdrs = cJSON_AddObjectToObject(root, "headers");
    if (fields == NULL || hdrs == NULL || add_fields(fields, h->query) < 0 ||
        add_headers(hdrs, h, false) < 0)
        goto nomem;
    const char *ct = "";
    for (size_t i = 0; i < h->nheaders; i++) {
        if (strcasecmp(h->headers[i].name, "Content-Type") == 0) {
            ct = h->headers[i].value;
            break;
        }
    }
    add_text(root, "content-type", ct, strlen(ct));
    add_text(root, "content_type", ct, strlen(ct));
    struct wd_buf b;
    wd_buf_init(&b, 0);
    if (wd_base64_encode(&b, ev->body, ev->body_len) < 0) {
        wd_buf_free(&b);
        goto nomem;
    }
    cJSON_AddStringToObject(root, "body", b.len > 0 ? b.data : "");
    wd_buf_free(&b);
    cJSON_AddNumberToObject(root, "size", (double)ev->body_len);
    uint64_t now_s = ev->now_ms / 1000;
    cJSON_AddNumberToObject(root, "timestamp", (double)now_s);
    cJSON_AddNumberToObject(root, "deadline", (double)ev->deadline_ms);
    cJSON *trigger = cJSON_AddObjectToObject(root, "trigger");
    if (trigger == NULL || cJSON_AddStringToObject(trigger, "kind", "http") == NULL ||
        cJSON_AddStringToObject(trigger, "name", "fwatchdog") == NULL)
        goto nomem;
    return finish(root, out);
nomem:
    cJSON_Delete(root);
    return UV_ENOMEM;
}

/* ---- decoding ---------------------------------------------------------------------------- */

void wd_warm_reply_free(struct wd_warm_reply *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free((char *)r->headers[i].name);
        free((char *)r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    r->headers = NULL;
    r->nheaders = 0;
    r->body = NULL;
    r->body_len = 0;
}

static int fail(struct wd_warm_reply *r, const char *why)
{
    snprintf(r->err, sizeof r->err, "%s", why);
    return -1;
}

/* Header names and values must not smuggle a CR/LF or NUL into the response head. */
static bool is_header_safe(const char *s)
{
    return s[strcspn(s, "\r\n")] == '\0';
}

static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    }
    return true;
}

static int add_header(struct wd_warm_reply *r, const char *name, const char *value)
{
    struct wd_header *h = realloc(r->headers, (r->nheaders + 1) * sizeof *h);
    if (h == NULL)
        return UV_ENOMEM;
    r->headers = h;
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return UV_ENOMEM;
    }
    h[r->nheaders].name = n;
    h[r->nheaders].value = v;
    r->nheaders++;
    return 0;
}

static const char *find_header(const struct wd_warm_reply *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

/* A scalar as header text: strings as they are, numbers and booleans as JSON prints them. */
static char *scalar_text(const cJSON *v)
{
    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    if (cJSON_IsNumber(v) || cJSON_IsBool(v))
        return cJSON_PrintUnformatted(v);
    return NULL;
}

static int take_headers(struct wd_warm_reply *r, const cJSON *hdrs)
{
    if (hdrs == NULL || cJSON_IsNull(hdrs))
        return 0;
    if (!cJSON_IsObject(hdrs))
        return fail(r, "headers is not an object");
    const cJSON *h;
    cJSON_ArrayForEach(h, hdrs)
    {
        if (!is_token(h->string))
            return fail(r, "a header name is not a token");
        const cJSON *one = cJSON_IsArray(h) ? h->child : h;
        for (; one != NULL; one = cJSON_IsArray(h) ? one->next : NULL) {
            char *v = scalar_text(one);
            if (v == NULL || !is_header_safe(v)) {
                free(v);
                return fail(r, "a header value is not a string, number or boolean on one line");
            }
            int rc = add_header(r, h->string, v);
            free(v);
            if (rc < 0)
                return fail(r, "out of memory");
        }
    }
    return 0;
}

static bool is_textual(const char *ct)
{
    if (ct == NULL)
        return true;
    return strncasecmp(ct, "text/", 5) == 0 || strcasestr(ct, "json") != NULL ||
           strcasestr(ct, "xml") != NULL || strcasestr(ct, "javascript") != NULL ||
           strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;
}

static int set_body(struct wd_warm_reply *r, const char *p, size_t len)
{
    r->body = malloc(len + 1);
    if (r->body == NULL)
        return fail(r, "out of memory");
    memcpy(r->body, p, len);
    r->body[len] = '\0';
    r->body_len = len;
    return 0;
}

static int set_json_body(struct wd_warm_reply *r, const cJSON *v, bool want_type)
{
    char *s = cJSON_PrintUnformatted(v);
    if (s == NULL)
        return fail(r, "out of memory");
    int rc = set_body(r, s, strlen(s));
    cJSON_free(s);
    if (rc == 0 && want_type && find_header(r, "Content-Type") == NULL &&
        add_header(r, "Content-Type", "application/json") < 0)
        return fail(r, "out of memory");
    return rc;
}

static int set_string_body(struct wd_warm_reply *r, const char *s, bool is_base64)
{
    if (!is_base64) {
        if (find_header(r, "Content-Type") == NULL &&
            add_header(r, "Content-Type", "text/plain; charset=utf-8") < 0)
            return fail(r, "out of memory");
        return set_body(r, s, strlen(s));
    }
    struct wd_buf b;
    wd_buf_init(&b, 0);
    if (wd_base64_decode(&b, s, strlen(s)) != 0) {
        wd_buf_free(&b);
        return fail(r, "body is not valid base64 for a binary Content-Type");
    }
    int rc = set_body(r, b.len > 0 ? b.data : "", b.len);
    wd_buf_free(&b);
    return rc;
}

static int take_status(struct wd_warm_reply *r, const cJSON *st)
{
    r->status = 200;
    if (st == NULL || cJSON_IsNull(st))
        return 0;
    if (!cJSON_IsNumber(st) || st->valuedouble < 100 || st->valuedouble > 599 ||
        st->valuedouble != (double)(int)st->valuedouble)
        return fail(r, "status code is not an integer from 100 to 599");
    r->status = (int)st->valuedouble;
    return 0;
}

static cJSON *parse(const char *s, size_t len, struct wd_warm_reply *r)
{
    memset(r, 0, sizeof *r);
    cJSON *root = cJSON_ParseWithLength(s, len);
    if (root == NULL)
        fail(r, "the answer is not JSON");
    return root;
}

int wd_warm_decode_actionloop(const char *line, size_t len, struct wd_warm_reply *r)
{
    cJSON *root = parse(line, len, r);
    if (root == NULL)
        return -1;
    int rc;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "statusCode");
    const cJSON *hdrs = cJSON_GetObjectItemCaseSensitive(root, "headers");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(root, "body");
    if (cJSON_IsArray(root) ||
        (cJSON_IsObject(root) && st == NULL && hdrs == NULL && body == NULL)) {
        r->status = 200;
        rc = set_json_body(r, root, true);
    } else if (!cJSON_IsObject(root)) {
        rc = fail(r, "the action did not return a dictionary or array");
    } else if ((rc = take_status(r, st)) < 0 || (rc = take_headers(r, hdrs)) < 0) {
        /* r->err is set */
    } else if (body == NULL || cJSON_IsNull(body)) {
        rc = set_body(r, "", 0);
    } else if (cJSON_IsString(body)) {
        rc = set_string_body(r, body->valuestring, !is_textual(find_header(r, "Content-Type")));
    } else {
        rc = set_json_body(r, body, cJSON_IsObject(body) || cJSON_IsArray(body));
    }
    cJSON_Delete(root);
    return rc;
}

int wd_warm_decode_nuclio(const char *json, size_t len, struct wd_warm_reply *r)
{
    cJSON *root = parse(json, len, r);
    if (root == NULL)
        return -1;
    const cJSON *o = cJSON_IsArray(root) ? root->child : root;
    int rc;
    if (!cJSON_IsObject(o)) {
        rc = fail(r, "the reply is not a JSON object");
        goto done;
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(o, "content_type");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(o, "body_encoding");
    if ((rc = take_status(r, cJSON_GetObjectItemCaseSensitive(o, "status_code"))) < 0 ||
        (rc = take_headers(r, cJSON_GetObjectItemCaseSensitive(o, "headers"))) < 0)
        goto done;
    if (cJSON_IsString(ct) && ct->valuestring[0] != '\0' &&
        find_header(r, "Content-Type") == NULL) {
        if (!is_header_safe(ct->valuestring)) {
            rc = fail(r, "content_type is not on one line");
            goto done;
        }
        if (add_header(r, "Content-Type", ct->valuestring) < 0) {
            rc = fail(r, "out of memory");
            goto done;
        }
    }
    bool is_b64 = cJSON_IsString(enc) && strcmp(enc->valuestring, "base64") == 0;
    if (body == NULL || cJSON_IsNull(body))
        rc = set_body(r, "", 0);
    else if (cJSON_IsString(body))
        rc = set_string_body(r, body->valuestring, is_b64);
    else
        rc = set_json_body(r, body, true);
done:
    cJSON_Delete(root);
    return rc;
}

bool wd_warm_is_ack(const char *line, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(line, len);
    bool ok = cJSON_IsObject(root) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "ok"));
    cJSON_Delete(root);
    return ok;
}

int wd_warm_nuclio_log(const char *json, size_t len, enum wd_log_level *level, struct wd_buf *out)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    if (!cJSON_IsObject(root) || !cJSON_IsString(msg)) {
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(root, "level");
    const char *l = cJSON_IsString(lv) ? lv->valuestring : "info";
    *level = strncasecmp(l, "debug", 5) == 0  ? WD_LOG_DEBUG
             : strncasecmp(l, "warn", 4) == 0 ? WD_LOG_WARN
             : (strcasecmp(l, "error") == 0 || strcasecmp(l, "critical") == 0 ||
                strcasecmp(l, "fatal") == 0)
                 ? WD_LOG_ERROR
                 : WD_LOG_INFO;
    int rc = wd_buf_append(out, msg->valuestring, strlen(msg->valuestring));
    const cJSON *with = cJSON_GetObjectItemCaseSensitive(root, "with");
    const cJSON *kv;
    if (!cJSON_IsObject(with))
        with = NULL;
    cJSON_ArrayForEach(kv, with)
    {
        char *v = cJSON_IsString(kv) ? strdup(kv->valuestring) : cJSON_PrintUnformatted(kv);
        if (v == NULL)
            break;
        rc |= wd_buf_append(out, " ", 1);
        rc |= wd_buf_append(out, kv->string, strlen(kv->string));
        rc |= wd_buf_append(out, "=", 1);
        rc |= wd_buf_append(out, v, strlen(v));
        free(v);
    }
    rc |= wd_buf_append(out, "", 1);
    cJSON_Delete(root);
    return rc < 0 ? -1 : 0;
}

int wd_warm_nuclio_duration(const char *json, size_t len, double *seconds)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "duration");
    int rc = -1;
    if (cJSON_IsNumber(d) && d->valuedouble >= 0 && d->valuedouble < 1e9) {
        *seconds = d->valuedouble;
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}
