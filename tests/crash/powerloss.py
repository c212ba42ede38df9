#!/usr/bin/python3
"""The load and the checker of tests/crash/test-power-loss.sh.

  powerloss.py load HISTORY --nbd URI --portal HOST:PORT --target IQN --strata BIN --stream FILE --ops N --seed S
  powerloss.py verify HISTORY --log LOG --pooldir DIR --strata BIN --expect-recv FILE --cuts N --seed S

`load` drives one client at a time, in order, so every acknowledgement is a point in time:
4 KiB self-describing writes to volume nv over NBD (some with FUA), NBD FLUSH and trims; writes to
volume iv over iSCSI (WRITE(10), some with FUA) and SYNCHRONIZE CACHE(10); and through the daemon's
control socket snapshots of nv, snapshot deletes, clones, clone deletes and one `strata receive`.
It records each operation's issue and acknowledgement time (time.monotonic(), CLOCK_MONOTONIC:
the clock of the write log) in HISTORY.

`verify` replays the write log (replay.py) to N cut points, at and around every sync's end and
at seeded random records, each with a seeded drop/keep/tear of the unsynced writes, and at each:
`strata check` on the pool is clean; every block of nv and iv holds, sector by sector, the last
write flushed before the cut (its flush or FUA acknowledged before the cut's time) or a write
issued after it before the cut; every snapshot, clone and the received volume whose command
returned before the cut is there, none deleted before the cut is, none begun after it is, and
each snapshot, clone and the received volume holds exactly its content.
"""

import json
import os
import random
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "nbd"))
sys.path.insert(0, os.path.join(HERE, "..", "iscsi"))
sys.path.insert(0, HERE)

BS = 4096
BLOCKS = 256  # written blocks per data volume (1 MiB of a 4 MiB volume)
SECTOR = 512


def content(volume, block, seq):
    """A block's bytes for write number `seq`; seq 0 is all zeros (a trim, or never written)."""
    if seq == 0:
        return bytes(BS)
    unit = struct.pack("<8sQQQ", b"PWRLOSS" + volume.encode()[:1], block, seq, seq ^ ((1 << 64) - 1))
    return unit * (BS // len(unit))


def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


# --- load ---------------------------------------------------------------------------------------

class Load:
    def __init__(self, argv):
        import nbd
        import iscsi_raw
        self.iscsi_raw = iscsi_raw
        self.strata = option(argv, "--strata")
        self.stream = option(argv, "--stream")
        self.random = random.Random(int(option(argv, "--seed", "1")))
        self.events = []
        self.seq = 0
        self.nbd = nbd.NBD()
        self.nbd.connect_uri(option(argv, "--nbd"))
        self.fua = nbd.CMD_FLAG_FUA
        self.scsi = iscsi_raw.Session(option(argv, "--portal"), option(argv, "--target"))
        status = self.scsi.login()
        if status:
            raise SystemExit(f"iSCSI login failed: status 0x{status:04x}")
        self.scsi.read_capacity16()
        self.snapshots = []  # live snapshot names of nv, oldest first
        self.clones = []
        self.counter = 0
        self.received = False

    def timed(self, event, action):
        event["t0"] = time.monotonic()
        action()
        event["t1"] = time.monotonic()
        self.events.append(event)

    def cli(self, *args, stdin=None):
        result = subprocess.run([self.strata, *args], stdin=stdin, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"strata {' '.join(args)} failed: {result.stderr.strip()}")

    def write(self, volume, fua):
        self.seq += 1
        block = self.random.randrange(BLOCKS)
        data = content(volume, block, self.seq)
        event = {"op": "write", "volume": volume, "block": block, "seq": self.seq, "fua": fua}
        if volume == "nv":
            self.timed(event, lambda: self.nbd.pwrite(data, block * BS, self.fua if fua else 0))
        else:
            def scsi_write():
                status, sense, _ = self.scsi.write10(block * BS // self.scsi.block_size, data, fua=fua)
                if status != 0:
                    raise SystemExit(f"iSCSI WRITE(10) block {block}: status {status} sense {sense.hex()}")
            self.timed(event, scsi_write)

    def flush(self, volume):
        event = {"op": "flush", "volume": volume}
        if volume == "nv":
            self.timed(event, self.nbd.flush)
            return
        def synchronize_cache():
            status, sense, _ = self.scsi.scsi(bytes([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
            if status != 0:
                raise SystemExit(f"iSCSI SYNCHRONIZE CACHE: status {status} sense {sense.hex()}")
        self.timed(event, synchronize_cache)

    def trim(self):
        block = self.random.randrange(BLOCKS)
        event = {"op": "write", "volume": "nv", "block": block, "seq": 0, "fua": False}
        self.timed(event, lambda: self.nbd.trim(BS, block * BS))

    def control(self):
        choice = self.random.randrange(4)
        if choice == 0 or not self.snapshots:
            self.counter += 1
            name = f"s{self.counter}"
            self.timed({"op": "snapshot", "name": name}, lambda: self.cli("snapshot", "create", f"nv@{name}"))
            self.snapshots.append(name)
        elif choice == 1 and len(self.snapshots) > 2:
            name = self.snapshots.pop(0)
            self.timed({"op": "snapshot-delete", "name": name}, lambda: self.cli("snapshot", "delete", f"nv@{name}"))
        elif choice == 2 and len(self.clones) < 3:
            self.counter += 1
            name, source = f"c{self.counter}", self.snapshots[-1]
            self.timed({"op": "clone", "name": name, "source": source},
                       lambda: self.cli("clone", f"nv@{source}", name))
            self.clones.append(name)
        elif self.clones:
            name = self.clones.pop(0)
            self.timed({"op": "clone-delete", "name": name}, lambda: self.cli("volume", "delete", name))

    def receive(self):
        with open(self.stream, "rb") as stream:
            self.timed({"op": "receive"}, lambda: self.cli("receive", "recv", stdin=stream))
        self.received = True

    def run(self, operations):
        for index in range(operations):
            choice = self.random.randrange(100)
            if index == operations // 2:
                self.receive()
            elif choice < 40:
                self.write("nv", fua=self.random.randrange(7) == 0)
            elif choice < 62:
                self.write("iv", fua=self.random.randrange(7) == 0)
            elif choice < 72:
                self.flush("nv")
            elif choice < 80:
                self.flush("iv")
            elif choice < 87:
                self.trim()
            else:
                self.control()
        self.flush("nv")
        self.flush("iv")


def load(argv):
    run = Load(argv)
    run.run(int(option(argv, "--ops", "1000")))
    run.scsi.logout()
    run.scsi.close()
    run.nbd.shutdown()
    with open(argv[2], "w") as f:
        json.dump(run.events, f)
    kinds = {}
    for event in run.events:
        kinds[event["op"]] = kinds.get(event["op"], 0) + 1
    print("load:", ", ".join(f"{count} {op}" for op, count in sorted(kinds.items())))


# --- verify -------------------------------------------------------------------------------------

class Violation(Exception):
    pass


class Expectations:
    """What the history promises at a cut time T."""

    def __init__(self, events):
        self.events = events
        # Each write's durable time: its own ack with FUA, else the ack of the first flush of its
        # volume issued after the write's ack (one client at a time, so issue order is time order).
        self.writes = {"nv": {}, "iv": {}}
        pending = {"nv": [], "iv": []}
        for event in events:
            if event["op"] == "write":
                event["durable"] = event["t1"] if event["fua"] else None
                self.writes[event["volume"]].setdefault(event["block"], []).append(event)
                if not event["fua"]:
                    pending[event["volume"]].append(event)
            elif event["op"] == "flush":
                for write in pending[event["volume"]]:
                    write["durable"] = event["t1"]
                pending[event["volume"]] = []
        # nv's content when each snapshot was taken (no write is in flight during a command).
        self.snapshot_content = {}
        state = {}
        for event in events:
            if event["op"] == "write" and event["volume"] == "nv":
                state[event["block"]] = event["seq"]
            elif event["op"] == "snapshot":
                self.snapshot_content[event["name"]] = dict(state)
        self.clone_source = {e["name"]: e["source"] for e in events if e["op"] == "clone"}

    def allowed(self, volume, block, t):
        """Sequence numbers block `block` may hold (per sector) at cut time t."""
        history = self.writes[volume].get(block, [])
        floor = 0
        start = 0
        for index, write in enumerate(history):
            if write["durable"] is not None and write["durable"] < t:
                floor, start = write["seq"], index + 1
        return [floor] + [w["seq"] for w in history[start:] if w["t0"] < t]

    def names(self, created, deleted, t):
        """(must be present, may be present) for objects made by `created` ops and removed by `deleted`."""
        must, may = set(), set()
        for event in self.events:
            if event["op"] == created and event["t0"] < t:
                may.add(event["name"])
                if event["t1"] < t:
                    must.add(event["name"])
        for event in self.events:
            if event["op"] == deleted and event["t0"] < t:
                must.discard(event["name"])
                if event["t1"] < t:
                    may.discard(event["name"])
        return must, may


class Checker:
    def __init__(self, argv):
        from replay import Log, Replayer
        self.strata = option(argv, "--strata")
        self.pooldir = option(argv, "--pooldir")
        self.scratch = os.path.join(os.path.dirname(self.pooldir), "export.img")
        with open(argv[2]) as f:
            self.expect = Expectations(json.load(f))
        with open(option(argv, "--expect-recv"), "rb") as f:
            self.recv_content = f.read()
        self.log = Log(option(argv, "--log"))
        self.replayer = Replayer(self.log, os.path.join(self.pooldir, "pool.strata"))
        self.seed = int(option(argv, "--seed", "1"))
        self.cuts_wanted = int(option(argv, "--cuts", "200"))
        self.stats = {"snapshots seen": 0, "clones seen": 0, "received seen": 0, "flushed blocks checked": 0,
                      "torn writes": 0, "lost writes": 0}

    def cli(self, *args):
        result = subprocess.run([self.strata, *args, "--pool", self.pooldir], capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr

    def read(self, source):
        status, output = self.cli("export", source, self.scratch)
        if status != 0:
            raise Violation(f"export {source}: {output.strip()}")
        with open(self.scratch, "rb") as f:
            return f.read()

    def cut_points(self):
        """Every sync's end record and the record after it (the moments a commit becomes durable),
        thinned to half the budget, plus seeded random records."""
        from replay import SYNC_END
        ends = [i for i, r in enumerate(self.log.records) if r[0] == SYNC_END]
        chooser = random.Random(self.seed)
        around = sorted({c for i in ends for c in (i, i + 1)})
        if len(around) > self.cuts_wanted // 2:
            around = chooser.sample(around, self.cuts_wanted // 2)
        rest = sorted(set(range(len(self.log.records) + 1)) - set(around))
        randoms = chooser.sample(rest, min(len(rest), self.cuts_wanted - len(around)))
        return sorted(around + randoms)

    def check_volume(self, volume, data, t):
        for block in range(BLOCKS):
            allowed = self.expect.allowed(volume, block, t)
            if len(allowed) == 1 and allowed[0] != 0:
                self.stats["flushed blocks checked"] += 1
            actual = data[block * BS:(block + 1) * BS]
            versions = [content(volume, block, seq) for seq in allowed]
            for sector in range(0, BS, SECTOR):
                piece = actual[sector:sector + SECTOR]
                if not any(piece == v[sector:sector + SECTOR] for v in versions):
                    raise Violation(f"{volume} block {block} sector {sector // SECTOR}: holds none of the writes "
                                    f"allowed at this cut (flushed seq {allowed[0]}, later {allowed[1:]}); "
                                    f"first bytes {piece[:32].hex()}")
        if any(data[BLOCKS * BS:]):
            raise Violation(f"{volume}: bytes past the written blocks")

    def check_names(self, listed, created, deleted, t, what):
        must, may = self.expect.names(created, deleted, t)
        if not must <= listed:
            raise Violation(f"{what} returned before the cut are missing: {sorted(must - listed)}")
        if not listed <= may:
            raise Violation(f"{what} present that were never created or deleted before the cut: {sorted(listed - may)}")

    def check_snapshot_content(self, source, expected_blocks):
        data = self.read(source)
        for block in range(BLOCKS):
            if data[block * BS:(block + 1) * BS] != content("nv", block, expected_blocks.get(block, 0)):
                raise Violation(f"{source}: block {block} is not the volume's content when the snapshot was taken")

    def verify_cut(self, cut):
        t = self.log.cut_time(cut) / 1e9  # the history's time.monotonic() is in seconds
        status, output = self.cli("check")
        if status != 0:
            raise Violation(f"strata check: {output.strip()[-600:]}")
        self.check_volume("nv", self.read("nv"), t)
        self.check_volume("iv", self.read("iv"), t)
        status, output = self.cli("snapshot", "list", "--json")
        snapshots = {s["name"] for s in json.loads(output) if s["volume"] == "nv"}
        self.check_names(snapshots, "snapshot", "snapshot-delete", t, "snapshots")
        status, output = self.cli("volume", "list", "--json")
        volumes = {v["name"] for v in json.loads(output)}
        self.check_names(volumes - {"nv", "iv", "src", "recv"}, "clone", "clone-delete", t, "clones")
        for name in sorted(snapshots)[-1:]:
            self.check_snapshot_content(f"nv@{name}", self.expect.snapshot_content[name])
            self.stats["snapshots seen"] += 1
        for name in sorted(volumes - {"nv", "iv", "src", "recv"})[-1:]:
            self.check_snapshot_content(name, self.expect.snapshot_content[self.expect.clone_source[name]])
            self.stats["clones seen"] += 1
        receive = next(e for e in self.expect.events if e["op"] == "receive")
        if receive["t1"] < t and "recv" not in volumes:
            raise Violation("the received volume is missing though `strata receive` returned before the cut")
        if "recv" in volumes:
            if receive["t0"] >= t:
                raise Violation("a received volume exists before the receive began")
            if self.read("recv@base") != self.recv_content or self.read("recv")[:len(self.recv_content)] != self.recv_content:
                raise Violation("the received volume or its snapshot differs from the stream's content")
            self.stats["received seen"] += 1

    def run(self):
        cuts = self.cut_points()
        started = time.monotonic()
        for number, cut in enumerate(cuts):
            undo, counts = self.replayer.cut(cut, self.seed * 1_000_003 + cut)
            self.stats["torn writes"] += counts["torn"]
            self.stats["lost writes"] += counts["lost"]
            try:
                self.verify_cut(cut)
            except Violation as problem:
                kept = os.path.join(os.path.dirname(self.pooldir), "failed-cut.strata")
                subprocess.run(["cp", "--sparse=always", os.path.join(self.pooldir, "pool.strata"), kept])
                print(f"FAIL at cut {cut} of {len(self.log.records)} (time {self.log.cut_time(cut)} ns, "
                      f"replay seed {self.seed * 1_000_003 + cut}, {counts}): {problem}\n"
                      f"image kept as {kept}; rebuild with: replay.py BASE LOG OUT --cut {cut} "
                      f"--seed {self.seed * 1_000_003 + cut}")
                return 1
            self.replayer.restore(undo)
        print(f"{len(cuts)} cut points of {len(self.log.records)} records verified in "
              f"{time.monotonic() - started:.0f}s: " + ", ".join(f"{v} {k}" for k, v in self.stats.items()))
        return 0 if len(cuts) >= self.cuts_wanted else self.too_few(len(cuts))

    def too_few(self, count):
        print(f"FAIL only {count} cut points (wanted {self.cuts_wanted}): the log is too short")
        return 1


def main(argv):
    if len(argv) > 2 and argv[1] == "load":
        load(argv)
        return 0
    if len(argv) > 2 and argv[1] == "verify":
        return Checker(argv).run()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
