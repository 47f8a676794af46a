/* handler.c: the function of `make image-test` when templates/c-classic/handler.c is absent.
 * Reads the request body on stdin and writes "hello from scratch: <body>" on stdout. Built
 * static with musl so that it runs in a FROM scratch image beside build/fwatchdog-static. */
#include <stdio.h>

int main(void)
{
    char buf[4096];
    size_t n;

    fputs("hello from scratch: ", stdout);
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, stdout) != n)
            return 1;
    }
    return ferror(stdin) || fflush(stdout) != 0 ? 1 : 0;
}
