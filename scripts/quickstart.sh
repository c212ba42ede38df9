#!/usr/bin/env bash
# The README's quick start: builds strata (release), creates a pool in ./strata-data (unless
# one exists), creates volume vm1 and imports a raw image into it (yours, or a generated demo
# image), then shows the volume and the pool.
#
#   scripts/quickstart.sh [IMAGE.raw]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

swift build -c release --product strata
STRATA=$PWD/.build/release/strata
export STRATA_POOL=${STRATA_POOL:-$PWD/strata-data}

image=${1:-}
if [ -z "$image" ]; then
    image=$(mktemp --suffix=.raw)
    trap 'rm -f "$image"' EXIT
    # A demo disk: 16 MiB of data in a 256 MiB sparse image.
    head -c $((16 << 20)) /dev/urandom > "$image"
    truncate -s 256M "$image"
    echo "quickstart: no image given; using a generated 256 MiB demo image"
fi

[ -e "$STRATA_POOL/pool.strata" ] || "$STRATA" pool init --size 64G
if "$STRATA" volume list --json | grep -q '"name" : "vm1"'; then
    echo "quickstart: volume vm1 exists; importing into it"
    "$STRATA" import "$image" vm1
else
    "$STRATA" import "$image" vm1 --create
fi
"$STRATA" snapshot create "vm1@quickstart-$(date +%Y%m%d-%H%M%S)"
"$STRATA" volume list
"$STRATA" snapshot list vm1
"$STRATA" pool status
echo "quickstart: done. Try: $STRATA export vm1 copy.raw"
