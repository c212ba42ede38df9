#ifndef STRATA_C_H
#define STRATA_C_H
#include <stddef.h>
#include <stdint.h>

/// Extends a CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) over `length` bytes.
/// Start with crc = 0; the function applies the standard pre- and post-inversion.
uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length);

/// 1 when the SSE4.2 crc32 instruction is in use, 0 for the table fallback.
int strata_crc32c_hardware(void);

/// Punches a hole (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE); returns 0 or an errno.
/// Glibc's Swift module does not export fallocate(2), which needs _GNU_SOURCE.
int strata_punch_hole(int fd, uint64_t offset, uint64_t length);

/// Opens `path` for writing with O_DIRECT (and O_CLOEXEC): a descriptor, or -1 with errno (EINVAL
/// where the filesystem has no direct I/O, tmpfs for one).
int strata_open_direct(const char *path);

/// preadv2 with RWF_NOWAIT: the bytes read, or -1 with errno EAGAIN when any of them is not in
/// the page cache (a short count means only a prefix was); EOPNOTSUPP where unsupported.
long strata_pread_nowait(int fd, void *bytes, size_t length, uint64_t offset);

/// Sends `length` bytes with `fd` attached (SCM_RIGHTS); returns bytes sent or -1 (errno).
long strata_send_with_fd(int socket, const void *bytes, size_t length, int fd);

/// Receives up to `length` bytes; a descriptor attached to them is stored in `*fd` (which the
/// caller sets to -1 first). Returns bytes received, 0 at end, or -1 (errno).
long strata_receive_with_fd(int socket, void *bytes, size_t length, int *fd);

/// Serves heap allocations up to `mmap_threshold` bytes from the heap and trims a heap only when
/// over `trim_threshold` bytes are free at its top (glibc's M_MMAP_THRESHOLD and
/// M_TRIM_THRESHOLD). Returns 1 when both were set.
int strata_keep_freed_buffers(int mmap_threshold, int trim_threshold);

/// The C heap's bytes in use (glibc mallinfo2: allocated from the heaps plus mmapped chunks) and
/// the free bytes it keeps without returning them to the system.
void strata_heap_usage(uint64_t *in_use, uint64_t *free_retained);

#endif
