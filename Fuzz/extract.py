#!/usr/bin/env python3
"""Cuts captured traffic and real files into fuzz seeds (scripts/fuzz-corpus.sh).

    extract.py nbd CORPUS NAME CLIENT_BYTES            nbd-handshake and nbd-requests seeds
    extract.py iscsi CORPUS NAME CLIENT_BYTES          iscsi-framer, -login, -session, -text-keys, -cdb seeds
    extract.py pages CORPUS POOL_FILE                  superblock, tree-page and volume-table seeds
    extract.py lines CORPUS/TARGET NAME SKIP FILE      each JSON line of FILE after its first SKIP bytes
    extract.py binary CORPUS/TARGET NAME SKIP FILE     what follows the first line after SKIP bytes (at most 16 KiB)
    extract.py file CORPUS/TARGET NAME FILE            FILE itself

Seeds carry the settings byte their target expects first (Sources/StrataFuzz: NBD and iSCSI
targets); every other seed is the bytes as they were.
"""
import os
import struct
import sys


def put(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as out:
        out.write(data)


def nbd(corpus, name, client):
    # Settings byte 0: TLS off, simple replies; 4: structured replies (what the client asked
    # for when it negotiated them; the handshake target takes it from the options).
    put(os.path.join(corpus, "nbd-handshake"), name, b"\x00" + client)
    start = client.find(struct.pack(">I", 0x25609513))
    if start >= 0:
        put(os.path.join(corpus, "nbd-requests"), name, b"\x04" + client[start:])


def pdus(client):
    """The PDUs of an initiator's bytes (no digests: the captures negotiate none)."""
    position = 0
    while position + 48 <= len(client):
        header = client[position:position + 48]
        ahs = header[4] * 4
        length = int.from_bytes(header[5:8], "big")
        padded = (length + 3) & ~3
        data = client[position + 48 + ahs:position + 48 + ahs + length]
        yield header, data
        position += 48 + ahs + padded


def iscsi(corpus, name, client):
    for target in ("iscsi-framer", "iscsi-login", "iscsi-session"):
        put(os.path.join(corpus, target), name, b"\x00" + client)
    count = 0
    for header, data in pdus(client):
        opcode = header[0] & 0x3F
        if opcode in (0x03, 0x04) and data:  # Login and Text requests: key=value text
            count += 1
            put(os.path.join(corpus, "iscsi-text-keys"), "%s-%d" % (name, count), data)
        if opcode == 0x01:  # SCSI Command: settings 3 = the 16-byte CDB field, then immediate data
            count += 1
            put(os.path.join(corpus, "iscsi-cdb"), "%s-%d" % (name, count), b"\x03" + header[32:48] + data)


def pages(corpus, path):
    with open(path, "rb") as pool:
        def page(number):
            pool.seek(number * 4096)
            return pool.read(4096)

        slots = [page(0), page(1)]
        for slot, data in enumerate(slots):
            put(os.path.join(corpus, "superblock"), "pool-slot%d" % slot, data)
        newest = max(slots, key=lambda data: struct.unpack_from("<Q", data, 24)[0])
        metadata_pages = struct.unpack_from("<Q", newest, 56)[0]
        leaves = interiors = 0
        for number in range(2, metadata_pages):
            data = page(number)
            if data[:4] != b"STRA":
                continue
            if data[8] == 3 and leaves < 4:
                leaves += 1
                put(os.path.join(corpus, "tree-page"), "leaf-%d" % number, bytes([0]) + data)
            elif data[8] == 2 and interiors < 4:
                interiors += 1
                put(os.path.join(corpus, "tree-page"), "interior-%d" % number, bytes([data[9]]) + data)
        # The volume table, renumbered as the target numbers pages: root 2, then its index and
        # leaf pages in order (the target fixes each page's number and CRC).
        root = page(struct.unpack_from("<Q", newest, 96)[0])
        table = [bytearray(root)]
        index_count = struct.unpack_from("<I", root, 12)[0]
        for i in range(index_count):
            index = bytearray(page(struct.unpack_from("<Q", root, 40 + 8 * i)[0]))
            struct.pack_into("<Q", table[0], 40 + 8 * i, 2 + len(table))
            table.append(index)
            leaf_count = struct.unpack_from("<I", index, 12)[0]
            for j in range(leaf_count):
                leaf_number = struct.unpack_from("<Q", index, 32 + 8 * j)[0]
                if leaf_number == 0:
                    continue
                struct.pack_into("<Q", index, 32 + 8 * j, 2 + len(table))
                table.append(bytearray(page(leaf_number)))
        put(os.path.join(corpus, "volume-table"), "pool-table", b"".join(bytes(p) for p in table[:8]))


def lines(directory, name, skip, path):
    with open(path, "rb") as capture:
        data = capture.read()[skip:]
    count = 0
    for line in data.split(b"\n"):
        if line.startswith(b"{") or line.startswith(b"["):
            count += 1
            put(directory, "%s-%d" % (name, count), line + b"\n")


def binary(directory, name, skip, path):
    """The binary messages of a session that starts with one JSON line (a mirror leg's)."""
    with open(path, "rb") as capture:
        data = capture.read()[skip:]
    newline = data.find(b"\n")
    if newline >= 0 and len(data) > newline + 1:
        put(directory, name, data[newline + 1:newline + 1 + (16 << 10)])


def main():
    command = sys.argv[1]
    if command == "nbd":
        nbd(sys.argv[2], sys.argv[3], open(sys.argv[4], "rb").read())
    elif command == "iscsi":
        iscsi(sys.argv[2], sys.argv[3], open(sys.argv[4], "rb").read())
    elif command == "pages":
        pages(sys.argv[2], sys.argv[3])
    elif command == "lines":
        lines(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif command == "binary":
        binary(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif command == "file":
        put(sys.argv[2], sys.argv[3], open(sys.argv[4], "rb").read())
    else:
        sys.exit("extract.py: unknown command %s" % command)


if __name__ == "__main__":
    main()
