// Declarations only (include/strata_fuzz.h): libFuzzer defines the function in the fuzz build.
#include "strata_fuzz.h"
