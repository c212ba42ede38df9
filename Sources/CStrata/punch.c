/* Hole punching for freed data chunks: returns space to the filesystem under a thin pool. */
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
