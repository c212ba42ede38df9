#!/usr/bin/python3
"""Replays a Strata write log (STRATA_TEST_WRITE_LOG, Sources/StrataCore/WriteLogDevice.swift) onto
a copy of the pool file from before the daemon opened it, as a power loss at any point of the log
could have left the device: a user-space dm-log-writes replay.

A cut at record K means records 0..K-1 happened and nothing after. The cut's time is record K's
CLOCK_MONOTONIC timestamp, so a client that saw an acknowledgement before that time knows the sync
behind it ended before the cut. Writes before the begin record of the last sync that ended before
the cut are durable and applied as written; every later write (and discard) before the cut is
volatile and, seeded, lost, kept, or torn per 512-byte sector (each sector kept or lost).

  replay.py BASE LOG OUT --cut K [--seed N]     write the device at cut K to OUT (a copy of BASE)
  replay.py info LOG                            records, syncs, bytes

As a module, `Log` parses a log once and `Replayer` walks cut points in increasing order over one
image file, applying the volatile writes of a cut and undoing them afterwards, so 200 cut points
cost the writes they replay, not 200 copies of the pool.
"""

import mmap
import os
import random
import shutil
import struct
import sys

MAGIC = b"STRATAWL"
HEADER = struct.Struct("<8sIIQ")
RECORD = struct.Struct("<B7xQQQ")
WRITE, DISCARD, SYNC_BEGIN, SYNC_END = ord("W"), ord("D"), ord("B"), ord("E")
SECTOR = 512


class Log:
    """A parsed write log: records as (kind, time_ns, offset, length, payload position)."""

    def __init__(self, path):
        self.file = open(path, "rb")
        self.map = mmap.mmap(self.file.fileno(), 0, prot=mmap.PROT_READ)
        magic, version, _, self.device_size = HEADER.unpack_from(self.map, 0)
        if magic != MAGIC or version != 1:
            raise ValueError(f"{path}: not a version-1 Strata write log (magic {magic!r}, version {version})")
        self.records = []
        position = HEADER.size
        while position + RECORD.size <= len(self.map):
            kind, time_ns, offset, length = RECORD.unpack_from(self.map, position)
            if kind not in (WRITE, DISCARD, SYNC_BEGIN, SYNC_END):
                raise ValueError(f"{path}: unknown record kind {kind} at byte {position}")
            payload = position + RECORD.size
            end = payload + (length if kind == WRITE else 0)
            if end > len(self.map):
                break  # a record cut short by the writer's death: it never completed
            self.records.append((kind, time_ns, offset, length, payload))
            position = end
        self.durable_prefix = self._durable_prefixes()

    def _durable_prefixes(self):
        """durable_prefix[K]: the records before this index are durable at a cut at K. A sync's end
        makes durable what was logged before its begin; overlapping syncs pair first-in first-out,
        which can only pair an end with an earlier begin (conservative)."""
        prefixes = [0] * (len(self.records) + 1)
        open_begins = []
        durable = 0
        for index, record in enumerate(self.records):
            prefixes[index] = durable
            if record[0] == SYNC_BEGIN:
                open_begins.append(index)
            elif record[0] == SYNC_END and open_begins:
                durable = max(durable, open_begins.pop(0))
        prefixes[len(self.records)] = durable
        return prefixes

    def cut_time(self, cut):
        """The time of a cut at record `cut`: that record's timestamp (the end of time after the last)."""
        return self.records[cut][1] if cut < len(self.records) else 1 << 63

    def payload(self, record):
        return self.map[record[4]:record[4] + record[3]]


def apply(image, offset, data):
    image.seek(offset)
    image.write(data)


class Replayer:
    """Walks cut points in increasing order over one image file (a copy of the base)."""

    def __init__(self, log, image_path):
        self.log = log
        self.image = open(image_path, "r+b")
        self.applied = 0  # records before this index are in the image as durable

    def data(self, record):
        return self.log.payload(record) if record[0] == WRITE else bytes(record[3])

    def advance(self, prefix):
        assert prefix >= self.applied, "cut points must come in increasing order"
        for record in self.log.records[self.applied:prefix]:
            if record[0] in (WRITE, DISCARD):
                apply(self.image, record[2], self.data(record))
        self.applied = prefix

    def cut(self, cut, seed):
        """Makes the image the device at cut `cut`; returns (undo list, counts) for `restore`."""
        self.advance(self.log.durable_prefix[cut])
        chooser = random.Random(seed)
        undo = []
        counts = {"durable": self.applied, "lost": 0, "kept": 0, "torn": 0}
        for record in self.log.records[self.applied:cut]:
            if record[0] not in (WRITE, DISCARD):
                continue
            fate = chooser.randrange(3)
            if fate == 0:
                counts["lost"] += 1
                continue
            data = self.data(record)
            sectors = range(0, len(data), SECTOR)
            keep = sectors if fate == 1 else [s for s in sectors if chooser.randrange(2)]
            counts["kept" if fate == 1 else "torn"] += 1
            for start in keep:
                piece = data[start:start + SECTOR]
                self.image.seek(record[2] + start)
                undo.append((record[2] + start, self.image.read(len(piece))))
                apply(self.image, record[2] + start, piece)
        self.image.flush()
        return undo, counts

    def restore(self, undo):
        for offset, old in reversed(undo):
            apply(self.image, offset, old)
        self.image.flush()


def main(argv):
    if len(argv) == 3 and argv[1] == "info":
        log = Log(argv[2])
        kinds = [r[0] for r in log.records]
        print(f"{len(log.records)} records: {kinds.count(WRITE)} writes, {kinds.count(DISCARD)} discards, "
              f"{kinds.count(SYNC_END)} syncs, {sum(r[3] for r in log.records if r[0] == WRITE)} bytes written")
        return 0
    if len(argv) < 6 or argv[4] != "--cut":
        print(__doc__, file=sys.stderr)
        return 2
    base, log_path, out, cut = argv[1], argv[2], argv[3], int(argv[5])
    seed = int(argv[7]) if len(argv) > 7 and argv[6] == "--seed" else 0
    log = Log(log_path)
    shutil.copyfile(base, out)
    replayer = Replayer(log, out)
    _, counts = replayer.cut(min(cut, len(log.records)), seed)
    replayer.image.close()
    print(f"cut {cut} of {len(log.records)}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
