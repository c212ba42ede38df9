#!/usr/bin/python3
"""The load and the checker of tests/crash/test-iscsi-kill9.sh.

  kill9.py load STATE HISTORY --nbd HOST:PORT --portal HOST:PORT --target IQN --control SOCKET
                              --volume NAME --round R --seed S --started PATH
  kill9.py verify STATE HISTORY --nbd HOST:PORT --volume NAME --cut T --snapshots JSON

`load` runs three threads against one volume until the daemon dies: an NBD writer (even 4 KiB
blocks; writes, some with FUA, FLUSH, trims), an iSCSI writer (odd blocks; WRITE(10), some with
FUA, SYNCHRONIZE CACHE(10)), so every 64 KiB chunk takes writes from both protocols, and a
control thread taking and deleting snapshots. Snapshots go straight to the daemon's control
socket, never through the CLI: a CLI that finds no daemon opens the pool itself, and a snapshot
it takes after the kill holds the durable state, not the writes the dead daemon acknowledged
(what an earlier harness mistook for a lost write). Every operation is recorded before it is
issued (t0, time.monotonic(), CLOCK_MONOTONIC) and again when acknowledged (t1), so writes in
flight at the kill are known. The threads stop at their first error, the daemon's death.

`verify`, after the restart, reads the volume and every snapshot over NBD and checks them
against STATE (what the previous rounds left, each block's version per 512-byte sector as
verified after the previous restart) and this round's HISTORY, at cut time T, read after the
kill returned (so every command finished before the kill is before the cut):
- a block holds, per sector, the newest version made durable this round (its FUA acknowledged,
  or a FLUSH or SYNCHRONIZE CACHE on either protocol, or a snapshot, issued after it was
  acknowledged and acknowledged itself: each makes the whole volume durable), else the version
  the previous round left; or a version issued after that one before the cut. So a block
  written only in an earlier round is still held to that round's verified version;
- every snapshot whose create was acknowledged, and whose delete was not issued, exists; none
  deleted with an acknowledgement does; none the history never began does; a snapshot taken
  this round holds, whole, for every block, a version no older than the last acknowledged
  before its create was issued and issued before its create was acknowledged; one from an
  earlier round holds exactly what it held when first verified.
It then rewrites STATE with what it read.
"""

import json
import os
import random
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "iscsi"))

BS = 4096
SECTOR = 512
BLOCKS = 256  # written blocks: 1 MiB of the volume, 16 chunks of 64 KiB


def content(block, seq):
    """Block `block`'s bytes for version `seq`; 0 is zeros (never written, or trimmed)."""
    if seq == 0:
        return bytes(BS)
    unit = struct.pack("<8sQQQ", b"KILL9BLK", block, seq, seq ^ ((1 << 64) - 1))
    return unit * (BS // len(unit))


def sector_versions(data, block):
    """The version each sector of a block read back holds, or None when it is no version's."""
    result = []
    for sector in range(0, BS, SECTOR):
        piece = data[sector:sector + SECTOR]
        if not any(piece):
            result.append(0)
            continue
        _, owner, seq, check = struct.unpack_from("<8sQQQ", piece, 0)
        ok = owner == block and check == seq ^ ((1 << 64) - 1) and piece == content(block, seq)[sector:sector + SECTOR]
        result.append(seq if ok else None)
    return result


def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def host_port(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def control(path, request):
    """One request on the daemon's control socket (JSON lines); raises on an error reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        pending = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("control socket closed without a reply")
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                message = json.loads(line)
                if "error" in message and message["error"]:
                    raise RuntimeError(f"control: {message['error'].get('message')}")
                if "result" in message and message["result"] is not None:
                    return message["result"]


# --- load ---------------------------------------------------------------------------------------

class Load:
    def __init__(self, argv):
        with open(argv[2]) as f:
            self.state = json.load(f)
        self.history_path = argv[3]
        self.nbd_address = host_port(option(argv, "--nbd"))
        self.portal = option(argv, "--portal")
        self.target = option(argv, "--target")
        self.socket = option(argv, "--control")
        self.volume = option(argv, "--volume")
        self.round = int(option(argv, "--round"))
        self.started_path = option(argv, "--started")
        seed = int(option(argv, "--seed"))
        self.randoms = [random.Random(seed * 1009 + self.round * 7 + lane) for lane in range(3)]
        self.lock = threading.Lock()
        self.events = []
        self.seq = self.state["seq"]
        self.ready = 0
        self.errors = []

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def timed(self, event, action):
        """Records `event` before issuing it, then its acknowledgement time."""
        with self.lock:
            event["t0"] = time.monotonic()
            self.events.append(event)
        action()
        with self.lock:
            event["t1"] = time.monotonic()

    def started(self):
        with self.lock:
            self.ready += 1
            if self.ready == 3:
                open(self.started_path, "w").close()

    def lane(self, name, body):
        try:
            body()
        except BaseException as error:  # the daemon's death ends every lane
            with self.lock:
                self.errors.append(f"{name}: {type(error).__name__}: {error}")

    def nbd_lane(self):
        import nbd
        handle = nbd.NBD()
        handle.set_export_name(self.volume)
        handle.connect_tcp(*map(str, self.nbd_address))
        rng = self.randoms[0]
        first = True
        while True:
            choice = rng.randrange(100)
            block = 2 * rng.randrange(BLOCKS // 2)
            if choice < 5:
                self.timed({"op": "flush", "proto": "nbd"}, handle.flush)
            elif choice < 15:
                self.timed({"op": "write", "proto": "nbd", "block": block, "seq": 0, "fua": False},
                           lambda: handle.trim(BS, block * BS))
            else:
                seq = self.next_seq()
                fua = rng.randrange(7) == 0
                self.timed({"op": "write", "proto": "nbd", "block": block, "seq": seq, "fua": fua},
                           lambda: handle.pwrite(content(block, seq), block * BS, nbd.CMD_FLAG_FUA if fua else 0))
            if first:
                first = False
                self.started()

    def iscsi_lane(self):
        import iscsi_raw
        session = iscsi_raw.Session(self.portal, self.target)
        status = session.login()
        if status:
            raise RuntimeError(f"iSCSI login failed: status 0x{status:04x}")
        session.read_capacity16()
        rng = self.randoms[1]
        first = True

        def checked(result, what):
            status, sense, _ = result
            if status != 0:
                raise RuntimeError(f"iSCSI {what}: status {status} sense {sense.hex()}")

        while True:
            choice = rng.randrange(100)
            block = 2 * rng.randrange(BLOCKS // 2) + 1
            if choice < 5:
                self.timed({"op": "flush", "proto": "iscsi"},
                           lambda: checked(session.scsi(bytes([0x35] + [0] * 9)), "SYNCHRONIZE CACHE(10)"))
            else:
                seq = self.next_seq()
                fua = rng.randrange(7) == 0
                lba = block * BS // session.block_size
                self.timed({"op": "write", "proto": "iscsi", "block": block, "seq": seq, "fua": fua},
                           lambda: checked(session.write10(lba, content(block, seq), fua=fua), f"WRITE(10) block {block}"))
            if first:
                first = False
                self.started()

    def control_lane(self):
        rng = self.randoms[2]
        live = list(self.state["snapshots"].keys())
        counter = 0
        first = True
        while True:
            time.sleep(rng.uniform(0.01, 0.08))
            if len(live) > 4 or (len(live) > 1 and rng.randrange(3) == 0):
                name = live.pop(0)
                self.timed({"op": "snapshot-delete", "name": name},
                           lambda: control(self.socket, {"deleteSnapshot": {"volume": self.volume, "snapshot": name,
                                                                            "force": False}}))
            else:
                counter += 1
                name = f"r{self.round}s{counter}"
                self.timed({"op": "snapshot", "name": name},
                           lambda: control(self.socket, {"createSnapshot": {"volume": self.volume, "snapshot": name}}))
                live.append(name)
            if first:
                first = False
                self.started()

    def run(self):
        threads = [threading.Thread(target=self.lane, args=(name, body), daemon=True)
                   for name, body in (("nbd", self.nbd_lane), ("iscsi", self.iscsi_lane),
                                      ("control", self.control_lane))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with open(self.history_path, "w") as f:
            json.dump({"events": self.events, "seq": self.seq}, f)
        kinds = {}
        for event in self.events:
            key = event["op"] + ("" if "t1" in event else " (in flight)")
            kinds[key] = kinds.get(key, 0) + 1
        print("load: " + ", ".join(f"{count} {op}" for op, count in sorted(kinds.items())) +
              "; stopped by: " + "; ".join(sorted(self.errors)))


# --- verify -------------------------------------------------------------------------------------

class Violation(Exception):
    pass


class Checker:
    def __init__(self, argv):
        with open(argv[2]) as f:
            self.state = json.load(f)
        with open(argv[3]) as f:
            history = json.load(f)
        self.state_path = argv[2]
        self.events = history["events"]
        self.seq = history["seq"]
        self.nbd_address = host_port(option(argv, "--nbd"))
        self.volume = option(argv, "--volume")
        self.cut = float(option(argv, "--cut"))
        self.listed = set(json.loads(option(argv, "--snapshots")))
        self.stats = {"durable blocks": 0, "blocks held from earlier rounds": 0, "unflushed lost": 0,
                      "snapshots checked": 0, "snapshot blocks checked": 0}
        self.writes = {}
        for event in self.events:
            if event["op"] == "write":
                self.writes.setdefault(event["block"], []).append(event)
        # Every acknowledged FLUSH, SYNCHRONIZE CACHE and snapshot: (issued, acknowledged).
        self.syncs = [(e["t0"], e["t1"]) for e in self.events
                      if e["op"] in ("flush", "snapshot", "snapshot-delete") and "t1" in e]

    def durable(self, write):
        if "t1" not in write:
            return False
        if write["fua"]:
            return True
        return any(issued > write["t1"] for issued, _ in self.syncs)

    def read(self, name):
        import nbd
        handle = nbd.NBD()
        handle.set_export_name(name)
        handle.connect_tcp(*map(str, self.nbd_address))
        data = handle.pread(BLOCKS * BS, 0)
        handle.shutdown()
        return data

    def check_volume(self):
        data = self.read(self.volume)
        observed = {}
        for block in range(BLOCKS):
            baseline = self.state["blocks"].get(str(block), [0] * (BS // SECTOR))
            history = self.writes.get(block, [])
            floor = None
            for index, write in enumerate(history):
                if self.durable(write):
                    floor = index
            later = [w["seq"] for w in history[(floor + 1 if floor is not None else 0):] if w["t0"] < self.cut]
            actual = sector_versions(data[block * BS:(block + 1) * BS], block)
            for sector, seq in enumerate(actual):
                allowed = ([history[floor]["seq"]] if floor is not None else [baseline[sector]]) + later
                if seq not in allowed:
                    origin = f"durable this round: seq {history[floor]['seq']}" if floor is not None \
                        else f"left by the previous round: seq {baseline[sector]}"
                    raise Violation(f"{self.volume} block {block} sector {sector}: holds "
                                    f"{'no version' if seq is None else f'seq {seq}'}; allowed {allowed} ({origin}, "
                                    f"then writes issued before the cut)")
            if floor is not None:
                self.stats["durable blocks"] += 1
                acknowledged = [w for w in history[floor + 1:] if "t1" in w]
                if acknowledged and actual != [acknowledged[-1]["seq"]] * len(actual):
                    self.stats["unflushed lost"] += 1
            elif any(baseline):
                self.stats["blocks held from earlier rounds"] += 1
            observed[str(block)] = actual
        return observed

    def snapshot_allowed(self, event, block):
        """Versions a snapshot created by `event` may hold for `block` (whole)."""
        history = self.writes.get(block, [])
        low = None
        for index, write in enumerate(history):
            if "t1" in write and write["t1"] < event["t0"]:
                low = index
        end = event.get("t1", self.cut)
        allowed = []
        if low is None:
            baseline = self.state["blocks"].get(str(block), [0] * (BS // SECTOR))
            if len(set(baseline)) == 1:
                allowed.append(baseline[0])
        start = low if low is not None else 0
        allowed += [w["seq"] for w in history[start:] if w["t0"] < end]
        return allowed

    def check_snapshots(self):
        created = {e["name"]: e for e in self.events if e["op"] == "snapshot"}
        deleted = {e["name"]: e for e in self.events if e["op"] == "snapshot-delete"}
        known = set(self.state["snapshots"]) | set(created)
        if not self.listed <= known:
            raise Violation(f"snapshots nobody created: {sorted(self.listed - known)}")
        for name in sorted(known):
            must = (name in self.state["snapshots"] or "t1" in created.get(name, {})) and name not in deleted
            gone = name in deleted and "t1" in deleted[name]
            if must and name not in self.listed:
                raise Violation(f"snapshot {name}: its create was acknowledged, yet it is gone")
            if gone and name in self.listed:
                raise Violation(f"snapshot {name}: its delete was acknowledged, yet it exists")
        snapshots = {}
        for name in sorted(self.listed):
            data = self.read(f"{self.volume}@{name}")
            versions = [sector_versions(data[b * BS:(b + 1) * BS], b) for b in range(BLOCKS)]
            if name in self.state["snapshots"]:
                if versions != self.state["snapshots"][name]:
                    changed = next(b for b in range(BLOCKS) if versions[b] != self.state["snapshots"][name][b])
                    raise Violation(f"snapshot {name} block {changed}: changed since it was verified "
                                    f"({self.state['snapshots'][name][changed]} -> {versions[changed]})")
            else:
                for block in range(BLOCKS):
                    allowed = self.snapshot_allowed(created[name], block)
                    held = versions[block]
                    if len(set(held)) != 1 or held[0] not in allowed:
                        raise Violation(f"snapshot {name} block {block}: holds {held}; allowed whole {allowed} "
                                        f"(acknowledged before its create, or issued before it returned)")
                    self.stats["snapshot blocks checked"] += 1
            self.stats["snapshots checked"] += 1
            snapshots[name] = versions
        return snapshots

    def run(self):
        try:
            blocks = self.check_volume()
            snapshots = self.check_snapshots()
        except Violation as problem:
            print(f"FAIL {problem}")
            return 1
        with open(self.state_path, "w") as f:
            json.dump({"seq": self.seq, "blocks": blocks, "snapshots": snapshots}, f)
        print("verified: " + ", ".join(f"{v} {k}" for k, v in self.stats.items()))
        return 0


def main(argv):
    if len(argv) > 3 and argv[1] == "load":
        Load(argv).run()
        return 0
    if len(argv) > 3 and argv[1] == "verify":
        return Checker(argv).run()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
