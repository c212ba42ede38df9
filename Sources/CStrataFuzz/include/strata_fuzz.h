#ifndef STRATA_FUZZ_H
#define STRATA_FUZZ_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt FuzzerInterface.h), declared for strata-fuzz's entry point:
/// SwiftPM links an executable with `main` defined as the target's own entry symbol, so
/// libFuzzer's `main` is never linked and strata-fuzz calls the driver itself. Only the build
/// with `-sanitize=fuzzer` (scripts/fuzz.sh) references it.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*user_callback)(const uint8_t *data, size_t size));

#endif
