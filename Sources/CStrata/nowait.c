/* Reads that never wait: RWF_NOWAIT (Linux 4.14) makes preadv2 fail with
 * EAGAIN instead of waiting on a page-cache miss, a page lock or writeback, so an event loop can
 * serve what is cached and hand the rest to a thread that may wait. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/uio.h>
#include "strata_c.h"

long strata_pread_nowait(int fd, void *bytes, size_t length, uint64_t offset) {
#if defined(__linux__) && defined(RWF_NOWAIT)
    struct iovec vector = {.iov_base = bytes, .iov_len = length};
    for (;;) {
        ssize_t done = preadv2(fd, &vector, 1, (off_t)offset, RWF_NOWAIT);
        if (done >= 0 || errno != EINTR) return (long)done;
    }
#else
    (void)fd; (void)bytes; (void)length; (void)offset;
    errno = EOPNOTSUPP;
    return -1;
#endif
}
