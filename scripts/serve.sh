#!/usr/bin/env bash
# The README's main job: builds strata (release) and runs the daemon. With no arguments it
# serves ./strata-data (created, 64 GiB sparse, on first start) on nbd://127.0.0.1:10809 and
# iSCSI on 127.0.0.1:3260.
# Extra arguments go to `strata serve` (see `strata serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
swift build -c release --product strata >&2
exec "$PWD/.build/release/strata" serve "$@"
