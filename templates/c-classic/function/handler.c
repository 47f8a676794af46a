/* c-classic template handler: run once per request by the watchdog (mode streaming).
 *
 * The request body streams in on stdin and whatever is written to stdout streams back to the
 * caller as it is written; request headers are in the environment (Http_Method, Http_Path,
 * Http_Query, Http_Content_Type, ...). Exit 0 for 200; a non-zero exit before any output
 * answers 500. This one greets and echoes the body back without holding it in memory.
 *
 * One self-contained file with no dependencies beyond libc, so it builds with `cc` and, for
 * the FROM scratch image, with `musl-gcc -static`. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write all of buf, retrying short writes and EINTR. 0, or -1 when stdout is gone. */
static int write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(void)
{
    static char buf[65536];
    const char *method = getenv("Http_Method");
    int len = snprintf(buf, sizeof buf, "Hello from C! %s, you said: ", method ? method : "?");
    if (len < 0 || (size_t)len >= sizeof buf || write_all(buf, (size_t)len) < 0)
        return 1;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "read: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        if (write_all(buf, (size_t)n) < 0)
            return 1;
    }
    return write_all("\n", 1) < 0 ? 1 : 0;
}
