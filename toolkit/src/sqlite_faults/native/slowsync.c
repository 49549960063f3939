/* Slow fsync/fdatasync, switched on and off at run time: an LD_PRELOAD shim.
 *
 * strace can delay a syscall too, but while attached it stops the traced threads at every
 * syscall, and that overhead alone (measured: write p95 from ~150 ms to ~370 ms with nothing
 * injected) would swamp a 200 ms sync delay. libfiu switches faults at run time at no cost but
 * has no delay action. This shim costs nothing outside sync calls: at each fsync/fdatasync it
 * reads the control file named by SLOWSYNC_CONTROL; "MIN MAX" there (microseconds) delays the
 * call by a random time in [MIN, MAX] when the synced file's path contains SLOWSYNC_MATCH (if
 * set). An empty or missing control file means no delay.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void maybe_delay(int fd) {
    const char *control = getenv("SLOWSYNC_CONTROL");
    if (control == NULL) return;
    FILE *f = fopen(control, "r");
    if (f == NULL) return;
    long lo = 0, hi = 0;
    int n = fscanf(f, "%ld %ld", &lo, &hi);
    fclose(f);
    if (n < 1 || lo <= 0) return;
    if (n < 2 || hi < lo) hi = lo;
    const char *match = getenv("SLOWSYNC_MATCH");
    if (match != NULL && *match) {
        char link[64], path[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(link, path, sizeof path - 1);
        if (len < 0) return;
        path[len] = '\0';
        if (strstr(path, match) == NULL) return;
    }
    long us = lo + (hi > lo ? random() % (hi - lo + 1) : 0);
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    maybe_delay(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    maybe_delay(fd);
    return real(fd);
}
