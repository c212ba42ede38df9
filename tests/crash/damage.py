#!/usr/bin/env python3
"""Damages metadata pages of a Strata pool file (docs/FORMAT.md), for the damaged-pool tests.

  damage.py pages POOLFILE          JSON list of the metadata pages that carry a page header:
                                    {"page", "kind", "sub" (level or array id), "generation"}
  damage.py flip POOLFILE PAGE SEED flips 8 random bytes of PAGE's body (past the 32-byte
                                    header, so the page still says what it is and only its
                                    checksum can tell)

Pages are 4096 bytes; pages 0 and 1 are the superblock slots, whose `metadata pages` field
(offset 56) bounds the region."""
import json
import random
import struct
import sys

PAGE = 4096
MAGIC = 0x41525453


def metadata_pages(handle):
    handle.seek(0)
    first = handle.read(2 * PAGE)
    counts = [struct.unpack_from("<Q", first, slot * PAGE + 56)[0] for slot in (0, 1)
              if struct.unpack_from("<I", first, slot * PAGE)[0] == MAGIC]
    if not counts:
        sys.exit("damage.py: neither superblock slot carries the page magic")
    return max(counts)


def pages(path):
    found = []
    with open(path, "rb") as handle:
        count = metadata_pages(handle)
        handle.seek(0)
        for page in range(count):
            header = handle.read(PAGE)
            if len(header) < 32:
                break
            magic, _crc, kind, sub = struct.unpack_from("<IIBB", header, 0)
            if magic != MAGIC:
                continue
            generation = struct.unpack_from("<Q", header, 24)[0]
            found.append({"page": page, "kind": kind, "sub": sub, "generation": generation})
    return found


def flip(path, page, seed):
    generator = random.Random(seed)
    with open(path, "r+b") as handle:
        handle.seek(page * PAGE)
        body = bytearray(handle.read(PAGE))
        for _ in range(8):
            position = generator.randrange(32, PAGE)
            body[position] ^= generator.randrange(1, 256)
        handle.seek(page * PAGE)
        handle.write(body)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "pages":
        json.dump(pages(sys.argv[2]), sys.stdout)
        print()
    elif len(sys.argv) == 5 and sys.argv[1] == "flip":
        flip(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
