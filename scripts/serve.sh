#!/usr/bin/env bash
# The README's main job: builds strata (release) and runs the daemon. With no arguments it
# serves ./strata-data (created, 64 GiB sparse, on first start) on nbd://127.0.0.1:10809.
# Extra arguments go to `strata serve` (see `strata serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFTC=$(command -v swiftc || true)
[ -z "$SWIFTC" ] && [ -x /opt/swift/usr/bin/swiftc ] && SWIFTC=/opt/swift/usr/bin/swiftc
if [ -z "$SWIFTC" ]; then
    echo "serve: no Swift toolchain found (swiftc); install Swift 6.1 or later" >&2
    exit 1
fi
# The toolchain first on PATH: Debian's python3-swiftclient ships a /usr/bin/swift.
export PATH="$(dirname "$SWIFTC"):$PATH"
STRATA_NO_BENCH=1 swift build -c release --product strata >&2
exec "$PWD/.build/release/strata" serve "$@"
