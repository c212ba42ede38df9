/* File calls Glibc's Swift module hides behind _GNU_SOURCE: hole punching for freed data chunks
   (returns space to the filesystem under a thin pool) and O_DIRECT for writes that bypass the
   page cache. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include "strata_c.h"

int strata_punch_hole(int fd, uint64_t offset, uint64_t length) {
#ifdef __linux__
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) != 0) return errno;
    return 0;
#else
    (void)fd; (void)offset; (void)length;
    return EOPNOTSUPP;
#endif
}

int strata_open_direct(const char *path) {
#ifdef __linux__
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
#else
    (void)path;
    errno = EOPNOTSUPP;
    return -1;
#endif
}
