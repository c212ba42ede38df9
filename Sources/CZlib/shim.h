// zlib for the optional compression of send streams (Debian zlib1g-dev).
#include <zlib.h>
