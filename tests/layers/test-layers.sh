#!/usr/bin/env bash
# Layers: `layer push` freezes the top three times with writes between; each layer's export
# reads its own point in time (over NBD and iSCSI); `volume layers` and `layer list` show the
# stack from the top down; a clone of a layer keeps the base; the deepest clone of a 20-deep
# stack (a clone of a snapshot of a clone of ...) over a qcow2 base reads correctly; a full
# `send` of a based volume carries the data read through the base to a pool that has no base
# file, and an incremental send after it carries only the change.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/layers-lib.sh"
requires qemu-img qemu-io nbdinfo /usr/bin/python3

cd "$WORKDIR"
make_base_raw golden.raw 32M
qemu-img convert -q -O qcow2 golden.raw golden.qcow2
cp golden.raw expect.raw
start_daemon
strata volume create vm --base golden.qcow2 >/dev/null

for n in 1 2 3; do
    qemu-io -f raw -c "write -P 0x4$n $((n << 20)) 300k" -c "discard $(((n + 10) << 20)) 1M" "$URI/vm" >/dev/null \
        || fail "writes before layer $n"
    qemu-io -f raw -c "write -P 0x4$n $((n << 20)) 300k" -c "write -z $(((n + 10) << 20)) 1M" expect.raw >/dev/null
    out=$(strata layer push vm) || fail "layer push $n"
    [ "$out" = "pushed layer vm@layer$n; vm is the writable top" ] || fail "layer push said: $out"
    cp expect.raw "layer$n.raw"
done
qemu-io -f raw -c "write -P 0x99 0 1M" "$URI/vm" >/dev/null
qemu-io -f raw -c "write -P 0x99 0 1M" expect.raw >/dev/null
for n in 1 2 3; do
    same_bytes "layer$n.raw" "$URI/vm@layer$n" "layer $n over NBD"
    same_bytes "layer$n.raw" "iscsi://$ISCSI_PORTAL/iqn.2026-11.org.strata:vm:layer$n/0" "layer $n over iSCSI"
done
same_bytes expect.raw "$URI/vm" "the writable top"
# A layer is read-only.
if qemu-io -f raw -c "write 0 4k" "$URI/vm@layer1" >/dev/null 2>&1; then fail "a layer accepted a write"; fi

strata volume layers vm --json >layers.json
/usr/bin/python3 - "$WORKDIR/golden.qcow2" <<'PY' || fail "volume layers: $(cat layers.json)"
import json, sys
layers = json.load(open("layers.json"))
names = [l["name"] for l in layers]
assert names == ["vm", "vm@layer3", "vm@layer2", "vm@layer1", sys.argv[1]], names
assert [l["kind"] for l in layers] == ["volume", "snapshot", "snapshot", "snapshot", "base"], layers
assert layers[0]["writable"] and not any(l["writable"] for l in layers[1:])
assert layers[-1]["format"] == "qcow2" and layers[-1]["sizeBytes"] == 32 << 20
PY
strata layer list vm | grep -q "^vm@layer1 " || fail "layer list: $(strata layer list vm)"
strata volume list | grep -q "golden.qcow2" || fail "volume list does not show the base: $(strata volume list)"

# A 20-deep stack: each level a clone of the previous level's snapshot, with one write each.
cp layer2.raw deep.raw
previous="vm@layer2"
for level in $(seq 1 20); do
    volume="deep$level"
    strata clone "$previous" "$volume" >/dev/null || fail "clone $previous $volume"
    qemu-io -f raw -c "write -P $((level + 100)) $((level * 64 * 1024 + 512)) 1000" "$URI/$volume" >/dev/null
    qemu-io -f raw -c "write -P $((level + 100)) $((level * 64 * 1024 + 512)) 1000" deep.raw >/dev/null
    strata snapshot create "$volume@s" >/dev/null
    previous="$volume@s"
done
same_bytes deep.raw "$URI/deep20" "the deepest clone of a 20-deep stack"
depth=$(strata volume layers deep20 --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$depth" -ge 22 ] || fail "volume layers deep20 lists $depth layers, want at least 22 (20 levels, vm, the base)"

# Send: the full stream needs no base at the receiver; the incremental carries the change.
strata snapshot create vm@send1 >/dev/null
strata send vm@send1 >full.stream || fail "send vm@send1"
qemu-io -f raw -c "write -P 0x77 5M 64k" "$URI/vm" >/dev/null
qemu-io -f raw -c "write -P 0x77 5M 64k" expect.raw >/dev/null
strata snapshot create vm@send2 >/dev/null
strata send vm@send2 --from vm@send1 >incr.stream || fail "send incremental"
[ "$(stat -c %s incr.stream)" -lt $((1 << 20)) ] || fail "the incremental stream is $(stat -c %s incr.stream) bytes for a 64 KiB change"
stop_daemon
mv golden.qcow2 golden.moved
export STRATA_POOL="$WORKDIR/replica"
strata pool init --size 1G >/dev/null
strata receive copy <full.stream >/dev/null || fail "receive the full stream"
strata receive copy <incr.stream >/dev/null || fail "receive the incremental stream"
strata export copy@send2 copy.raw >/dev/null || fail "export copy@send2"
same_bytes expect.raw copy.raw "a received based volume"
echo "REPORT 3 layers, a 20-deep clone stack and send/receive of a based volume verified"
