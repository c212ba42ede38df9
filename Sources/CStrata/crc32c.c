/*
 * CRC-32C for Strata's page and stream checksums.
 *
 * Swift cannot emit the SSE4.2 crc32 instruction, so this file does: on x86_64 CPUs that
 * have it, 8 bytes per instruction; elsewhere a byte-wise table (slow but identical). The
 * choice is made once, on first use. Check value (RFC 3720 B.4): crc32c("123456789") =
 * 0xE3069283, tested in StrataCoreTests.
 */
#include "strata_c.h"
#include <string.h>

static uint32_t table[256];

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        table[i] = c;
    }
}

static uint32_t crc_software(uint32_t crc, const unsigned char *p, size_t n) {
    while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hardware(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static int mode = 0; /* 0 software, 1 hardware; set before main by the constructor */

/* Runs once at load time, before any thread exists, so readers need no synchronization. */
__attribute__((constructor)) static void strata_crc32c_init(void) {
    build_table();
#if defined(__x86_64__)
    __builtin_cpu_init();
    mode = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

int strata_crc32c_hardware(void) { return mode; }

uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
#if defined(__x86_64__)
    if (mode) return ~crc_hardware(crc, p, length);
#endif
    return ~crc_software(crc, p, length);
}
