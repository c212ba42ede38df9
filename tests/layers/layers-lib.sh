# Helpers for the layered-image tests (sourced after tests/lib.sh). Every image is made by the
# test itself with qemu-img and qemu-io, never checked in.

# make_base_raw FILE SIZE: a sparse raw image with data in a few places and holes between.
make_base_raw() {
    qemu-img create -q -f raw "$1" "$2"
    qemu-io -f raw \
        -c "write -P 0xa1 0 64k" \
        -c "write -P 0xb2 1M 3M" \
        -c "write -P 0xc3 $((9 << 20 | 4096)) 12k" \
        -c "write -P 0xd4 20M 5M" \
        -c "write -P 0xe5 $(( $(qemu-img info --output=json "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') - 65536 )) 64k" \
        "$1" >/dev/null || fail "qemu-io could not write $1"
}

# raw_copy IMAGE OUT: the image's contents as a raw file.
raw_copy() {
    qemu-img convert -O raw "$1" "$2" || fail "qemu-img convert $1"
}

# same_bytes A B WHAT: fails unless the two raw sources read identically.
same_bytes() {
    qemu-img compare -q -f raw -F raw "$1" "$2" || fail "$3: $1 and $2 differ: $(qemu-img compare -f raw -F raw "$1" "$2" 2>&1 | head -3)"
}

# fingerprint FILE: sha256 and mtime, to prove a base file was never written.
fingerprint() {
    echo "$(sha256sum "$1" | cut -d' ' -f1) $(stat -c %Y.%y "$1")"
}

# data_map URI_OR_FILE FORMAT: "start end" lines of the data ranges, merged (nbdinfo or qemu-img).
nbd_data_map() {
    nbdinfo --map "$1" | awk '$3 == 0 { print $1, $1 + $2 }' | merge_ranges
}
image_data_map() {
    qemu-img map --output=json -f "$2" "$1" | /usr/bin/python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["data"] and not e.get("zero", False):
        print(e["start"], e["start"] + e["length"])' | merge_ranges
}
merge_ranges() {
    awk 'NR == 1 { s = $1; e = $2; next } $1 == e { e = $2; next } { print s, e; s = $1; e = $2 } END { if (NR) print s, e }'
}
