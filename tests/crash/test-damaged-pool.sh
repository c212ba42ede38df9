#!/usr/bin/env bash
# Damaged pools through the daemon (issue 13 item 5). Tree leaves of two volumes are damaged
# (bytes flipped past the page header, so only the checksum can tell) in a stopped pool; the
# daemon then serves it:
#   - on a damaged volume, NBD read, write, trim and write-zeroes fail with EIO, and the daemon's
#     log names the page for each; FLUSH works; shrink, delete and a forced receive over the
#     damaged volume fail, naming the page, and change nothing (the volume is still listed and
#     its undamaged blocks still read back as written);
#   - the daemon stays up and keeps serving the undamaged volume (written and read back);
#   - `strata check`, through the daemon and offline, exits 1 and names every damaged page.
# Then a damaged data space map: the daemon refuses to start, naming the page and `strata
# check`, and check reports the space map and a damaged leaf together.
source "$(dirname "$0")/../lib.sh"
requires qemu-io /usr/bin/python3
DAMAGE="$ROOT/tests/crash/damage.py"
POOL_FILE="$STRATA_POOL/pool.strata"

start_daemon --create-size 256M
# 48 MiB of 64 KiB chunks: three tree leaves per volume, so one damaged leaf leaves two whole.
for volume in vm1 vm2 vm3; do
    strata volume create $volume --size 48M >/dev/null
    qemu-io -f raw -c "write -P 0x11 0 48M" "$URI/$volume" >/dev/null || fail "fill $volume"
done
# An incremental stream of vm2 (a to b), to receive over the damaged vm2 later with --force,
# which replaces vm2's own tree; vm2 is written again after b (then b deleted, so the stream is
# new to vm2), so that tree is its own.
strata snapshot create vm2@a >/dev/null
qemu-io -f raw -c "write -P 0x12 0 48M" "$URI/vm2" >/dev/null || fail "write vm2"
strata snapshot create vm2@b >/dev/null
strata send vm2@b --from vm2@a >"$WORKDIR/incremental.stream" || fail "send vm2@b --from vm2@a"
strata snapshot delete vm2@b >/dev/null
qemu-io -f raw -c "write -P 0x13 0 48M" "$URI/vm2" >/dev/null || fail "write vm2"
stop_daemon

# check_json: `strata check --json` into check.json; its exit status.
check_json() {
    local status=0
    strata check --json >"$WORKDIR/check.json" || status=$?
    return $status
}
# problem_range PAGE: "OFFSET LENGTH" of the volume range check.json reports behind page PAGE.
problem_range() {
    /usr/bin/python3 -c 'import json, re, sys
for p in json.load(open(sys.argv[1]))["problems"]:
    if p.get("page") == int(sys.argv[2]) and "range" in p:
        print(*re.fullmatch(r"offset=(\d+) length=(\d+)", p["range"]).groups()); break' "$WORKDIR/check.json" "$1"
}
# problem_volume PAGE: the volume check.json reports page PAGE damaged in, or nothing.
problem_volume() {
    /usr/bin/python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["problems"]:
    if p.get("page") == int(sys.argv[2]) and "volume" in p: print(p["volume"]); break' "$WORKDIR/check.json" "$1"
}
# Damage one tree leaf each of vm1 and vm2: each leaf in turn, kept when check names vm1 or vm2.
cp "$POOL_FILE" "$WORKDIR/clean.strata"
leaves=$(/usr/bin/python3 "$DAMAGE" pages "$POOL_FILE" |
    /usr/bin/python3 -c 'import json, sys; print(" ".join(str(p["page"]) for p in json.load(sys.stdin) if p["kind"] == 3))')
declare -A DAMAGED RANGE
for page in $leaves; do
    cp "$POOL_FILE" "$WORKDIR/before.strata"
    /usr/bin/python3 "$DAMAGE" flip "$POOL_FILE" "$page" "$page"
    check_json && fail "check is clean after damaging page $page"
    volume=$(problem_volume "$page")
    if { [ "$volume" = vm1 ] || [ "$volume" = vm2 ]; } && [ -z "${DAMAGED[$volume]:-}" ]; then
        DAMAGED[$volume]=$page
        RANGE[$volume]=$(problem_range "$page")
    else
        cp "$WORKDIR/before.strata" "$POOL_FILE"
    fi
done
[ -n "${DAMAGED[vm1]:-}" ] && [ -n "${DAMAGED[vm2]:-}" ] || fail "could not damage a leaf of vm1 and of vm2 (leaves: $leaves)"
P1=${DAMAGED[vm1]}
P2=${DAMAGED[vm2]}
read -r OFFSET1 LENGTH1 <<<"${RANGE[vm1]}"
read -r OFFSET2 LENGTH2 <<<"${RANGE[vm2]}"
[ -n "$LENGTH1" ] && [ -n "$LENGTH2" ] || fail "check gave no range for pages $P1 and $P2"
echo "    damaged page $P1 (vm1 at $OFFSET1+$LENGTH1) and page $P2 (vm2 at $OFFSET2+$LENGTH2)"

# names PAGE TEXT...: the text names "page PAGE" as a whole number.
names() { local page=$1; shift; grep -Eq "page $page([^0-9]|\$)" <<<"$*"; }

start_daemon
log_lines() { wc -l <"$WORKDIR/daemon.log"; }
# nbd_fails WHAT COMMAND: qemu-io COMMAND on vm1 fails, and the daemon logs the page for it.
nbd_fails() {
    local what=$1 command=$2 before
    before=$(log_lines)
    if qemu-io -f raw -c "$command" "$URI/vm1" >"$WORKDIR/io.out" 2>&1; then fail "$what on damaged vm1 succeeded"; fi
    grep -q "Input/output error" "$WORKDIR/io.out" || fail "$what on damaged vm1: not EIO: $(cat "$WORKDIR/io.out")"
    names "$P1" "$(tail -n +"$((before + 1))" "$WORKDIR/daemon.log")" ||
        fail "$what on damaged vm1: the daemon log does not name page $P1"
}
nbd_fails read "read $OFFSET1 $LENGTH1"
nbd_fails write "write -P 0x22 $OFFSET1 $LENGTH1"
nbd_fails trim "discard $OFFSET1 $LENGTH1"
nbd_fails "write zeroes" "write -z $OFFSET1 $LENGTH1"
qemu-io -f raw -c "flush" "$URI/vm1" >/dev/null || fail "flush on vm1 failed"

# cli_fails WHAT PAGE ARGS...: a strata command fails (exit 1), naming the page and the object.
cli_fails() {
    local what=$1 page=$2 status=0
    shift 2
    strata "$@" >"$WORKDIR/cli.out" 2>&1 || status=$?
    [ $status -eq 1 ] || fail "$what: exit $status, expected 1: $(cat "$WORKDIR/cli.out")"
    names "$page" "$(cat "$WORKDIR/cli.out")" || fail "$what does not name page $page: $(cat "$WORKDIR/cli.out")"
}
cli_fails "shrink vm1" "$P1" volume resize vm1 --size 64K --allow-shrink
cli_fails "delete vm2" "$P2" volume delete vm2 --recursive
cli_fails "receive --force over vm2" "$P2" receive vm2 --force <"$WORKDIR/incremental.stream"
strata volume list --json >"$WORKDIR/volumes.json"
/usr/bin/python3 -c 'import json, sys
v = {x["name"]: x for x in json.load(open(sys.argv[1]))}
assert set(v) >= {"vm1", "vm2", "vm3"}, sorted(v)
assert v["vm2"]["snapshots"] == 1, v["vm2"]
assert v["vm1"]["sizeBytes"] == 48 << 20, v["vm1"]' "$WORKDIR/volumes.json" || fail "a failed operation changed the volumes"

# Every block of the damaged volumes outside the damaged leaf's range still reads back as
# written; every block inside it fails (qemu-io goes on after a failed command).
for volume in vm1:0x11:$OFFSET1:$LENGTH1 vm2:0x13:$OFFSET2:$LENGTH2; do
    IFS=: read -r volume pattern offset length <<<"$volume"
    reads=()
    outside=0
    for block in $(seq 0 191); do
        at=$((block * 262144))
        if [ $at -lt "$offset" ] || [ $at -ge $((offset + length)) ]; then outside=$((outside + 1)); fi
        reads+=(-c "read -P $pattern $at 256K")
    done
    qemu-io -f raw "${reads[@]}" "$URI/$volume" >"$WORKDIR/blocks.out" 2>&1 || true
    good=$(grep -c "^read 262144/262144 bytes" "$WORKDIR/blocks.out" || true)
    ! grep -q "Pattern verification failed" "$WORKDIR/blocks.out" || fail "$volume: a block outside the damage reads other data"
    [ "$good" -eq "$outside" ] || fail "$volume: $good blocks read back, expected the $outside outside offset $offset+$length"
    echo "    $volume: the $good blocks of 256 KiB outside the damaged leaf still read back as written"
done

# The daemon is up and the undamaged volume is served, written and read back.
kill -0 "$DAEMON_PID" || fail "the daemon died"
qemu-io -f raw -c "write -P 0x33 0 48M" -c "flush" -c "read -P 0x33 0 48M" "$URI/vm3" >/dev/null ||
    fail "the undamaged vm3 is not served"

# check through the daemon names both pages, in text and JSON.
status=0
strata check >"$WORKDIR/check.txt" 2>&1 || status=$?
[ $status -eq 1 ] || fail "check through the daemon exited $status: $(cat "$WORKDIR/check.txt")"
names "$P1" "$(cat "$WORKDIR/check.txt")" && names "$P2" "$(cat "$WORKDIR/check.txt")" ||
    fail "check does not name pages $P1 and $P2: $(cat "$WORKDIR/check.txt")"
stop_daemon
check_json && fail "offline check is clean"
[ "$(problem_volume "$P1")" = vm1 ] && [ "$(problem_volume "$P2")" = vm2 ] ||
    fail "offline check does not report pages $P1 (vm1) and $P2 (vm2): $(cat "$WORKDIR/check.json")"

# A damaged data space map: the pool cannot be opened safely, so the daemon refuses to start.
cp "$WORKDIR/clean.strata" "$POOL_FILE"
maps=$(/usr/bin/python3 "$DAMAGE" pages "$POOL_FILE" |
    /usr/bin/python3 -c 'import json, sys
pages = [p for p in json.load(sys.stdin) if p["kind"] == 6 and p["sub"] == 3]
top = max(p["generation"] for p in pages)
print(" ".join(str(p["page"]) for p in pages if p["generation"] == top))')
map_page=""
for page in $maps; do
    cp "$POOL_FILE" "$WORKDIR/before.strata"
    /usr/bin/python3 "$DAMAGE" flip "$POOL_FILE" "$page" 7
    if ! strata check >"$WORKDIR/check.txt" 2>&1 && names "$page" "$(cat "$WORKDIR/check.txt")"; then
        map_page=$page
        break
    fi
    cp "$WORKDIR/before.strata" "$POOL_FILE"
done
[ -n "$map_page" ] || fail "no data space map page in use among $maps"
/usr/bin/python3 "$DAMAGE" flip "$POOL_FILE" "$P1" "$P1"
status=0
timeout 60 "$STRATA" serve --nbd "127.0.0.1:$(free_port)" --iscsi off >"$WORKDIR/serve.out" 2>&1 || status=$?
[ $status -eq 1 ] || fail "serve on a damaged space map exited $status: $(cat "$WORKDIR/serve.out")"
names "$map_page" "$(cat "$WORKDIR/serve.out")" && grep -q "strata check" "$WORKDIR/serve.out" ||
    fail "serve does not name page $map_page and strata check: $(cat "$WORKDIR/serve.out")"
status=0
strata check >"$WORKDIR/check.txt" 2>&1 || status=$?
[ $status -eq 1 ] && names "$map_page" "$(cat "$WORKDIR/check.txt")" && names "$P1" "$(cat "$WORKDIR/check.txt")" ||
    fail "check does not report both the space map page $map_page and leaf $P1: $(cat "$WORKDIR/check.txt")"
echo "    damaged leaves refused cleanly on every operation, the rest served; a damaged space map (page $map_page) stops start-up"
