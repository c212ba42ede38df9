# Shared helpers for the iSCSI end-to-end tests (sourced after tests/lib.sh).
#
#   IQN                     the target name prefix, iqn.2026-11.org.strata
#   iscsi_url VOL[:SNAP] [CREDENTIALS]
#                           prints iscsi://[CREDENTIALS@]127.0.0.1:ISCSI_PORT/IQN:VOL[:SNAP]/0
#   wait_iscsi              waits for the daemon's iSCSI portal (start_daemon waits for NBD only)
#   qemu_has_iscsi          qemu-img was built with (or has the module for) iscsi:// URLs

IQN=iqn.2026-11.org.strata
ISCSI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=/usr/bin/python3

iscsi_url() {
    local target=$1 credentials=${2:-}
    [ -n "$credentials" ] && credentials="$credentials@"
    echo "iscsi://${credentials}$ISCSI_PORTAL/$IQN:$target/0"
}

wait_iscsi() {
    for _ in $(seq 1 200); do
        (echo >"/dev/tcp/127.0.0.1/$ISCSI_PORT") 2>/dev/null && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited: $(tail -5 "$WORKDIR/daemon.log")"
        sleep 0.05
    done
    fail "daemon does not listen for iSCSI on $ISCSI_PORTAL"
}

# qemu-img opens iscsi:// through block-iscsi.so, which Debian ships in qemu-block-extra.
qemu_has_iscsi() {
    qemu-img --help 2>/dev/null | grep -A1 '^Supported formats:' | grep -qw iscsi
}

# expect_fail WHAT CMD...: CMD must exit non-zero; its output goes to $WORKDIR/out.
expect_fail() {
    local what=$1
    shift
    if "$@" >"$WORKDIR/out" 2>&1; then
        fail "$what: succeeded but must fail: $*"
    fi
    echo "ok: $what ($(tr '\n' ' ' <"$WORKDIR/out" | cut -c1-160))"
}

# expect_ok WHAT CMD...: CMD must exit 0; its output goes to $WORKDIR/out.
expect_ok() {
    local what=$1
    shift
    "$@" >"$WORKDIR/out" 2>&1 || fail "$what: exit $?: $* -> $(tr '\n' ' ' <"$WORKDIR/out" | cut -c1-300)"
    echo "ok: $what"
}
