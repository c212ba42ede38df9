#!/usr/bin/env bash
# nbdinfo: `--list` shows every volume (read-write) and every snapshot VOLUME@SNAP (read-only)
# with its size, and no other export; `--map` (base:allocation) shows holes for never-written
# and trimmed ranges and data elsewhere, at chunk granularity (64 KiB), on the volume and on a
# snapshot taken before the trim; a never-written volume is one hole.
source "$(dirname "$0")/../lib.sh"
requires nbdinfo qemu-io /usr/bin/python3

start_daemon
strata volume create vm1 --size 64M >/dev/null
strata volume create vm2 --size 32M >/dev/null
chunk=$(strata pool status --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["chunkSize"])')
[ "$chunk" = 65536 ] || fail "this test expects 64 KiB chunks, the pool has $chunk"

M=$((1 << 20))
K=1024
qemu-io -f raw \
    -c "write -P 0x11 4M 2M" \
    -c "write -P 0x22 10M 64k" \
    -c "write -P 0x33 20M 4M" \
    -c "write -P 0x44 $((30 * M + 10)) 100" \
    -c "write -P 0x55 $((40 * M + 60 * K)) 8k" \
    -c "write -P 0x66 $((64 * M - 4 * K)) 4k" \
    "$URI/vm1" >"$WORKDIR/qemu-io.out" 2>&1 || fail "qemu-io writes: $(cat "$WORKDIR/qemu-io.out")"
strata snapshot create vm1@before-trim >/dev/null
strata snapshot create vm2@empty >/dev/null
qemu-io -f raw -c "discard 21M 2M" -c "write -P 0x77 50M 1M" -c "discard 50M 1M" "$URI/vm1" \
    >"$WORKDIR/qemu-io.out" 2>&1 || fail "qemu-io discard: $(cat "$WORKDIR/qemu-io.out")"

# --list: exactly the volumes and snapshots, with their sizes and read-only flags.
nbdinfo --list "nbd://127.0.0.1:$PORT" >"$WORKDIR/list.txt" || fail "nbdinfo --list"
for name in vm1 vm2 vm1@before-trim vm2@empty; do
    grep -q "^export=\"$name\":" "$WORKDIR/list.txt" || fail "nbdinfo --list does not show $name: $(cat "$WORKDIR/list.txt")"
done
nbdinfo --list --json "nbd://127.0.0.1:$PORT" >"$WORKDIR/list.json" || fail "nbdinfo --list --json"
/usr/bin/python3 - "$WORKDIR/list.json" <<'PY' || fail "nbdinfo --list contents"
import json, sys
exports = {e["export-name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
want = {"vm1": (64 << 20, False), "vm2": (32 << 20, False),
        "vm1@before-trim": (64 << 20, True), "vm2@empty": (32 << 20, True)}
if set(exports) != set(want):
    sys.exit(f"exports {sorted(exports)}, want {sorted(want)}")
for name, (size, ro) in want.items():
    e = exports[name]
    if e["export-size"] != size or e["is_read_only"] != ro:
        sys.exit(f"{name}: size {e['export-size']} read-only {e['is_read_only']}, want {size} {ro}")
    if "base:allocation" not in e.get("contexts", []):
        sys.exit(f"{name}: no base:allocation context")
print("list:", ", ".join(f"{n} ({exports[n]['export-size'] >> 20} MiB{', read-only' if want[n][1] else ''})"
                         for n in sorted(exports)))
PY

# --map: the extents, merged, must be exactly these (offset, length, data?).
check_map() {
    local export=$1 expected=$2
    nbdinfo --map --json "$URI/$export" >"$WORKDIR/map.json" || fail "nbdinfo --map $export"
    /usr/bin/python3 - "$WORKDIR/map.json" "$expected" "$export" <<'PY' || fail "nbdinfo --map $export"
import json, sys
extents = json.load(open(sys.argv[1]))
merged = []
for e in extents:
    data = e["type"] & 1 == 0          # bit 0: hole
    if e["type"] not in (0, 3):
        sys.exit(f"extent {e}: type {e['type']}, want 0 (data) or 3 (hole,zero)")
    if merged and merged[-1][2] == data and merged[-1][0] + merged[-1][1] == e["offset"]:
        merged[-1][1] += e["length"]
    else:
        merged.append([e["offset"], e["length"], data])
want = [[int(o), int(l), d == "data"] for o, l, d in (x.split(":") for x in sys.argv[2].split())]
if merged != want:
    fmt = lambda xs: "\n    ".join(f"{o:>10} {l:>10} {'data' if d else 'hole'}" for o, l, d in xs)
    sys.exit(f"{sys.argv[3]}: map\n    {fmt(merged)}\nwant\n    {fmt(want)}")
print(f"map {sys.argv[3]}: {len(merged)} extents as expected "
      f"({sum(l for _, l, d in merged if d) >> 10} KiB data)")
PY
}

# Chunks: a 100-byte write at 30M+10 maps the chunk [30M, 30M+64k); an 8 KiB write at 40M+60k
# crosses into the next chunk, so [40M+0, 40M+128k) is data.
check_map vm1 "
    0:$((4 * M)):hole
    $((4 * M)):$((2 * M)):data
    $((6 * M)):$((4 * M)):hole
    $((10 * M)):$((64 * K)):data
    $((10 * M + 64 * K)):$((10 * M - 64 * K)):hole
    $((20 * M)):$((1 * M)):data
    $((21 * M)):$((2 * M)):hole
    $((23 * M)):$((1 * M)):data
    $((24 * M)):$((6 * M)):hole
    $((30 * M)):$((64 * K)):data
    $((30 * M + 64 * K)):$((10 * M - 64 * K)):hole
    $((40 * M)):$((128 * K)):data
    $((40 * M + 128 * K)):$((24 * M - 128 * K - 64 * K)):hole
    $((64 * M - 64 * K)):$((64 * K)):data"
check_map vm1@before-trim "
    0:$((4 * M)):hole
    $((4 * M)):$((2 * M)):data
    $((6 * M)):$((4 * M)):hole
    $((10 * M)):$((64 * K)):data
    $((10 * M + 64 * K)):$((10 * M - 64 * K)):hole
    $((20 * M)):$((4 * M)):data
    $((24 * M)):$((6 * M)):hole
    $((30 * M)):$((64 * K)):data
    $((30 * M + 64 * K)):$((10 * M - 64 * K)):hole
    $((40 * M)):$((128 * K)):data
    $((40 * M + 128 * K)):$((24 * M - 128 * K - 64 * K)):hole
    $((64 * M - 64 * K)):$((64 * K)):data"
check_map vm2 "0:$((32 * M)):hole"
check_map vm2@empty "0:$((32 * M)):hole"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
echo "PASS $TEST_NAME"
