#!/usr/bin/env bash
# Deleting a volume a client is connected to: `strata volume delete vm1` while a libnbd handle is
# connected to vm1 is refused (exit 1) with a message naming the connection (its address and
# port, and the export); the volume and the connection both stay usable. `--force` then
# disconnects the client (its next request fails) and deletes the volume; the other volume is
# still served and `strata check` is clean.
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3 qemu-io
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"

start_daemon
strata volume create vm1 --size 16M >/dev/null
strata volume create vm2 --size 16M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 1M" "$URI/vm2" >/dev/null || fail "write vm2"

# volumes: the names of the volumes, space-separated.
volumes() {
    strata volume list --json >"$WORKDIR/volumes.json" || fail "volume list"
    /usr/bin/python3 -c 'import json, sys; print(" ".join(v["name"] for v in json.load(open(sys.argv[1]))))' \
        "$WORKDIR/volumes.json"
}

SIG="$WORKDIR/signals"
mkdir -p "$SIG"
# The client: connects through its own socket (so it knows its port), writes, and then answers
# each step the test asks for through files.
/usr/bin/python3 - "$PORT" "$SIG" >"$WORKDIR/client.out" 2>&1 <<'PY' &
import os, socket, sys, time, nbd
port, sig = int(sys.argv[1]), sys.argv[2]
def wait_for(name):
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(sig, name)):
        if time.monotonic() > deadline:
            sys.exit(f"client: no {name}")
        time.sleep(0.01)
def say(name, text=""):
    with open(os.path.join(sig, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(sig, name + ".tmp"), os.path.join(sig, name))
s = socket.create_connection(("127.0.0.1", port))
local_port = s.getsockname()[1]
h = nbd.NBD()
h.set_export_name("vm1")
h.connect_socket(s.detach())
h.pwrite(b"\x5a" * 65536, 0)
h.flush()
say("ready", str(local_port))
wait_for("check-alive")
assert h.pread(65536, 0) == b"\x5a" * 65536
h.pwrite(b"\x5b" * 4096, 4096)
h.flush()
say("alive")
wait_for("check-dead")
try:
    h.pread(4096, 0)
    say("dead", "read succeeded")
except nbd.Error as e:
    say("dead", f"request failed: {e}")
PY
CLIENT=$!
STRATA_PIDS+=("$CLIENT")

wait_file() {
    for _ in $(seq 1 1000); do
        [ -f "$SIG/$1" ] && return 0
        kill -0 "$CLIENT" 2>/dev/null || fail "client exited: $(cat "$WORKDIR/client.out")"
        sleep 0.01
    done
    fail "client never wrote $1: $(cat "$WORKDIR/client.out")"
}

wait_file ready
client_port=$(cat "$SIG/ready")
strata connections >"$WORKDIR/connections.out"
grep -q ":$client_port .*vm1" "$WORKDIR/connections.out" \
    || fail "strata connections does not list the client on port $client_port: $(cat "$WORKDIR/connections.out")"

# Refused, naming the connection.
status=0
strata volume delete vm1 >"$WORKDIR/delete.out" 2>&1 || status=$?
message=$(cat "$WORKDIR/delete.out")
echo "delete without --force: exit $status: $message"
[ $status -ne 0 ] || fail "volume delete vm1 succeeded with a client connected"
case "$message" in
*"127.0.0.1"*":$client_port"*) ;;
*) fail "the refusal does not name the connection (127.0.0.1:$client_port): $message" ;;
esac
case "$message" in *vm1*) ;; *) fail "the refusal does not name the export vm1: $message" ;; esac
grep -q -- "--force" "$WORKDIR/delete.out" || fail "the refusal does not mention --force: $message"
case " $(volumes) " in *" vm1 "*) ;; *) fail "vm1 is gone after a refused delete: $(volumes)" ;; esac

# Nothing happened to the client.
touch "$SIG/check-alive"
wait_file alive

# --force disconnects it and deletes the volume.
strata volume delete vm1 --force >"$WORKDIR/delete.out" 2>&1 || fail "volume delete vm1 --force: $(cat "$WORKDIR/delete.out")"
echo "delete --force: $(cat "$WORKDIR/delete.out")"
case " $(volumes) " in *" vm1 "*) fail "vm1 still listed after delete --force: $(volumes)" ;; esac
touch "$SIG/check-dead"
wait_file dead
grep -q "request failed" "$SIG/dead" || fail "the client was not disconnected: $(cat "$SIG/dead")"
echo "client after --force: $(cat "$SIG/dead")"
status=0
wait "$CLIENT" || status=$?
[ $status -eq 0 ] || fail "client: $(cat "$WORKDIR/client.out")"
strata connections >"$WORKDIR/connections.out"
grep -q "vm1" "$WORKDIR/connections.out" && fail "a connection to vm1 is still listed: $(cat "$WORKDIR/connections.out")"

# The daemon serves on.
out=$(qemu-io -f raw -r -c "read -P 0x42 0 1M" "$URI/vm2" 2>&1) || fail "vm2 after the delete: $out"
grep -q "Pattern verification failed" <<<"$out" && fail "vm2 after the delete: $out"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
