# Sourced by the scripts: puts the Swift toolchain first on PATH. Debian's python3-swiftclient
# ships a /usr/bin/swift that would otherwise shadow the toolchain's `swift`.
SWIFTC=$(command -v swiftc || true)
if [ -z "$SWIFTC" ] && [ -x /opt/swift/usr/bin/swiftc ]; then SWIFTC=/opt/swift/usr/bin/swiftc; fi
if [ -z "$SWIFTC" ]; then
    echo "$(basename "$0"): no Swift toolchain found (swiftc); install Swift 6.1 or later" >&2
    exit 1
fi
export PATH="$(dirname "$SWIFTC"):$PATH"
