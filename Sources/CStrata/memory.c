/* Allocator settings for the daemon (Daemon.keepRequestBuffers says why): glibc's mallopt is
 * declared in <malloc.h>, which Swift's Glibc module does not bring in. */
#include <malloc.h>
#include "strata_c.h"

int strata_keep_freed_buffers(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}

void strata_heap_usage(uint64_t *in_use, uint64_t *free_retained) {
    struct mallinfo2 info = mallinfo2();
    *in_use = (uint64_t)info.uordblks + (uint64_t)info.hblkhd;
    *free_retained = (uint64_t)info.fordblks;
}
