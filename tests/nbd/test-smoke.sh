#!/usr/bin/env bash
# Smoke: the daemon starts, a volume created through the control socket is served, nbdinfo
# reads its size, and SIGTERM stops the daemon cleanly with `strata check` clean after.
source "$(dirname "$0")/../lib.sh"
requires nbdinfo
start_daemon
strata volume create vm1 --size 64M >/dev/null
size=$(nbdinfo --size "$URI/vm1")
[ "$size" = "67108864" ] || fail "nbdinfo --size: $size"
stop_daemon
strata check >/dev/null || fail "check after shutdown"
echo "PASS $TEST_NAME"
