#!/usr/bin/python3
"""Recorded-pattern load and checks for Strata's NBD end-to-end tests (python3-libnbd).

Run with /usr/bin/python3 (python3-libnbd is installed for the system Python only).

Every block a writer puts down names itself: a 32-byte unit (magic, block number, sequence
number, the sequence number's complement) repeated over the whole block. A block read back
therefore tells exactly which write put it there, and a torn, misplaced, foreign or corrupt
block is detected. Sequence numbers only grow, and a block is never written by two requests in
flight at once, so the order of the versions of a block is the order of their sequence numbers.

Subcommands (exit 0 ok, 1 a check failed or the server misbehaved, 2 usage):

  mkimage PATH SIZE SEED
      A sparse raw image: random data runs and holes of random length (512-byte granular).

  snapwriter URI NBLOCKS BS DIR NSNAPS
      Writes numbered blocks in a fixed shuffled order, 8 requests in flight, every third with
      FUA. NSNAPS times, after at least one full pass, it records which writes were
      acknowledged, writes the line `begin K` to DIR/signal (a FIFO the test reads) and waits
      for the file DIR/done-K (the test runs `strata snapshot create VOLUME@sK` in between).
      Even K: quiesced (nothing in flight, no write until done-K). Odd K: live (it keeps
      writing while the snapshot is taken, at most half a pass). After done-K it writes at
      least one more full pass of new versions. The record goes to DIR/record.json.

  snapcheck URI NBLOCKS BS DIR NSNAPS [--copies TEMPLATE]
      Checks URI@sK (or TEMPLATE with {k} replaced by K, such as a mirror's detached copies
      URI@mirror-s{k}; or, for copies on different hosts, TEMPLATE as the K URIs joined by
      commas) for every K against the record: a block acknowledged before the snapshot
      began holds that version or (live mode only) one written while the snapshot was being
      taken; no block holds a version issued after the snapshot returned. Quiesced snapshots
      must match the acknowledged state exactly. Then checks URI itself against the final
      acknowledged state, exactly.

  flushwriter URI NBLOCKS BS STATE SEED [--started PATH] [--idle] [--depth N] [--seconds S]
      Random-block writes (no two in flight on one block, every 7th with FUA) with a flush
      after every 16 writes, while more writes stay in flight, until the connection dies or
      S seconds pass. After every successful flush or FUA write it rewrites STATE (JSON)
      with the durable floor of each block: the newest version acknowledged before a flush
      that succeeded, or acknowledged with FUA. STATE also carries every acknowledged version
      (`acked`) and the next sequence number; a new run continues from an existing STATE.
      --started: created after the first successful flush. --idle: also holds a second,
      idle connection to URI.

  verify URI NBLOCKS BS STATE [--floor flushed|acked]
      Reads every block of URI: each holds a self-consistent version of itself (or zeros if it
      has no floor) at least as new as its floor and never newer than anything issued.
"""

import json
import os
import random
import struct
import sys
import time

try:
    import nbd
    NBDError = nbd.Error
except ImportError:  # mkimage needs no libnbd
    nbd = None
    NBDError = ()

MAGIC = b"STRATAE2"
UNIT = struct.Struct("<8sQQQ")
MASK = (1 << 64) - 1


class CheckFailed(Exception):
    pass


def content(block, seq, bs):
    return UNIT.pack(MAGIC, block, seq, seq ^ MASK) * (bs // UNIT.size)


def decode(data, block, bs):
    """The sequence number the block holds, or None when it is all zeros."""
    if data == bytes(bs):
        return None
    magic, b, seq, inverse = UNIT.unpack_from(data)
    if magic != MAGIC or inverse != seq ^ MASK:
        raise CheckFailed(f"block {block}: foreign or corrupt data (first bytes {bytes(data[:32]).hex()})")
    if b != block:
        raise CheckFailed(f"block {block}: holds block {b}'s data (seq {seq})")
    if data != content(block, seq, bs):
        first = next(i for i in range(bs) if data[i] != content(block, seq, bs)[i])
        raise CheckFailed(f"block {block}: torn: starts as seq {seq} but differs from byte {first}")
    return seq


def read_blocks(h, nblocks, bs):
    """Yields (block, bytes) over the whole export, 1 MiB per request."""
    per = max(1, (1 << 20) // bs)
    for first in range(0, nblocks, per):
        count = min(per, nblocks - first)
        data = h.pread(count * bs, first * bs)
        for i in range(count):
            yield first + i, data[i * bs:(i + 1) * bs]


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def save_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def intkeys(d):
    return {int(k): v for k, v in d.items()}


class Pipeline:
    """Asynchronous commands on one handle, tagged, with their results collected."""

    def __init__(self, h):
        self.h = h
        self.inflight = {}  # cookie -> (tag, buffer)

    def write(self, data, offset, tag, fua=False):
        buf = nbd.Buffer.from_bytearray(bytearray(data))
        cookie = self.h.aio_pwrite(buf, offset, flags=nbd.CMD_FLAG_FUA if fua else 0)
        self.inflight[cookie] = (tag, buf)

    def flush(self, tag):
        cookie = self.h.aio_flush()
        self.inflight[cookie] = (tag, None)

    def reap(self):
        """[(tag, None or nbd.Error)] for the commands that completed since the last call."""
        done = []
        for cookie in list(self.inflight):
            try:
                if not self.h.aio_command_completed(cookie):
                    continue
                error = None
            except nbd.Error as e:
                error = e
            tag, _ = self.inflight.pop(cookie)
            done.append((tag, error))
        return done

    def wait(self):
        """Blocks until at least one command completes; [] only when nothing is in flight."""
        while True:
            done = self.reap()
            if done or not self.inflight:
                return done
            try:
                self.h.poll(-1)
            except nbd.Error:
                done = self.reap()
                if done or not self.inflight:
                    return done
                raise

    def dead(self):
        return self.h.aio_is_dead() or self.h.aio_is_closed()


# ---------------------------------------------------------------------------------------------


def mkimage(path, size, seed):
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        pos, data = 0, rnd.random() < 0.5
        while pos < size:
            length = min(rnd.randrange(1, 8192) * 512, size - pos)
            if data:
                f.seek(pos)
                f.write(os.urandom(length))
            pos += length
            data = not data


# ---------------------------------------------------------------------------------------------


def snap_order(nblocks):
    order = list(range(nblocks))
    random.Random(7).shuffle(order)
    return order


def snapwriter(uri, nblocks, bs, directory, nsnaps):
    depth = 8
    order = snap_order(nblocks)
    h = connect(uri)
    p = Pipeline(h)
    rnd = random.Random(11)
    acked = {}
    busy = set()  # blocks with a write in flight
    state = {"seq": 0}
    record = {"nblocks": nblocks, "bs": bs, "snaps": []}
    signal = open(os.path.join(directory, "signal"), "w")  # a FIFO the test reads

    def complete(done):
        for seq, error in done:
            if error is not None:
                raise CheckFailed(f"write seq {seq} failed: {error}")
            block = order[seq % nblocks]
            busy.discard(block)
            if acked.get(block, -1) >= seq:
                raise CheckFailed(f"block {block}: seq {seq} acknowledged after seq {acked[block]}")
            acked[block] = seq

    def issue_one():
        seq = state["seq"]
        block = order[seq % nblocks]
        while len(p.inflight) >= depth or block in busy:
            complete(p.wait())
        p.write(content(block, seq, bs), block * bs, seq, fua=(seq % 3 == 0))
        busy.add(block)
        state["seq"] = seq + 1
        complete(p.reap())

    def drain():
        while p.inflight:
            complete(p.wait())

    for k in range(nsnaps):
        live = k % 2 == 1
        target = state["seq"] + nblocks + rnd.randrange(nblocks)
        while state["seq"] < target:
            issue_one()
        if not live:
            drain()
        begin_acked = dict(acked)
        seq_begin = state["seq"]
        inflight_at_begin = sorted(tag for tag, _ in p.inflight.values())
        signal.write(f"begin {k}\n")
        signal.flush()
        done_path = os.path.join(directory, f"done-{k}")
        deadline = time.monotonic() + 60
        while not os.path.exists(done_path):
            if time.monotonic() > deadline:
                raise CheckFailed(f"no {done_path} within 60 s")
            # Live: writes go on while the snapshot is taken, but at most half a pass of them,
            # so that at least half of the blocks keep a version that must be in the snapshot.
            if live and state["seq"] - seq_begin < nblocks // 2:
                issue_one()
            else:
                time.sleep(0.0005)
        seq_after = state["seq"]
        record["snaps"].append({
            "mode": "live" if live else "quiesced",
            "acked": begin_acked,
            "seq_begin": seq_begin,
            "inflight_at_begin": inflight_at_begin,
            "seq_after": seq_after,
        })
        print(f"snapwriter: s{k} ({'live' if live else 'quiesced'}): {len(begin_acked)} blocks acknowledged, "
              f"{len(inflight_at_begin)} writes in flight at begin, {seq_after - seq_begin} writes issued "
              f"while the snapshot was taken", flush=True)
    # A last full pass of new versions, then everything acknowledged.
    target = state["seq"] + nblocks
    while state["seq"] < target:
        issue_one()
    drain()
    h.flush()
    record["final"] = acked
    record["writes"] = state["seq"]
    h.shutdown()
    save_json(os.path.join(directory, "record.json"), record)
    print(f"snapwriter: {state['seq']} writes acknowledged", flush=True)


def describe(seq):
    return "zeros (never written)" if seq is None else f"seq {seq}"


def copy_uri(copies, k):
    """Copy K of snapcheck's --copies: the K-th of a comma-separated list, else the template."""
    return copies.split(",")[k] if "," in copies else copies.format(k=k)


def snapcheck(uri, nblocks, bs, directory, nsnaps, copies=None):
    record = load_json(os.path.join(directory, "record.json"))
    order = snap_order(nblocks)
    problems = []
    for k in range(nsnaps):
        snap = record["snaps"][k]
        acked = intkeys(snap["acked"])
        seq_after = snap["seq_after"]
        live = snap["mode"] == "live"
        exact = newer = 0
        h = connect(copy_uri(copies, k) if copies else f"{uri}@s{k}")
        if not h.is_read_only():
            problems.append(f"s{k}: the snapshot export is not read-only")
        for block, data in read_blocks(h, nblocks, bs):
            expected = acked.get(block)
            try:
                seq = decode(data, block, bs)
            except CheckFailed as e:
                problems.append(f"s{k}: {e}")
                continue
            if seq == expected:
                exact += 1
                continue
            if seq is not None and order[seq % nblocks] != block:
                problems.append(f"s{k} block {block}: holds seq {seq}, which was never written to it")
            elif seq is not None and seq >= seq_after:
                problems.append(f"s{k} block {block}: holds seq {seq}, written after the snapshot returned "
                                f"(first seq after: {seq_after}); acknowledged before: {describe(expected)}")
            elif live and seq is not None and (expected is None or seq > expected):
                newer += 1  # issued while the snapshot was being taken: either version is right
            else:
                problems.append(f"s{k} block {block}: holds {describe(seq)}, but {describe(expected)} was "
                                f"acknowledged before the snapshot began ({snap['mode']})")
        h.shutdown()
        print(f"snapcheck: s{k} ({snap['mode']}): {exact} blocks hold the version acknowledged before the "
              f"snapshot, {newer} hold one written while it was taken", flush=True)
    final = intkeys(record["final"])
    h = connect(uri)
    mismatched = 0
    for block, data in read_blocks(h, nblocks, bs):
        try:
            seq = decode(data, block, bs)
        except CheckFailed as e:
            problems.append(f"volume: {e}")
            continue
        if seq != final.get(block):
            mismatched += 1
            if mismatched <= 5:
                problems.append(f"volume block {block}: holds {describe(seq)}, last acknowledged "
                                f"{describe(final.get(block))}")
    h.shutdown()
    if problems:
        raise CheckFailed(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems[:40]))
    print(f"snapcheck: the volume holds exactly the last acknowledged version of all {nblocks} blocks")


# ---------------------------------------------------------------------------------------------


def flushwriter(uri, nblocks, bs, state_path, seed, started=None, idle=False, depth=16, seconds=60.0):
    rnd = random.Random(seed)
    if os.path.exists(state_path):
        state = load_json(state_path)
    else:
        state = {"flushed": {}, "acked": {}, "next_seq": 1, "sessions": 0}
    flushed = intkeys(state["flushed"])
    acked = intkeys(state["acked"])
    seq = state["next_seq"]
    flush_every = 16
    stats = {"writes_acked": 0, "flushes_ok": 0, "fua_acked": 0, "failed": 0}

    failed_writes = state.setdefault("failed_writes", [])

    def save():
        state.update(flushed=flushed, acked=acked, next_seq=seq, stats=stats, failed_writes=failed_writes)
        save_json(state_path, state)

    state["sessions"] += 1
    save()
    h = connect(uri)
    idle_handle = connect(uri) if idle else None
    p = Pipeline(h)
    busy = set()
    since_flush = []   # (block, seq) acknowledged since the last flush was issued
    batches = {}       # flush id -> [(block, seq)] acknowledged before that flush was issued
    flush_id = 0
    writes_since_flush = 0
    failure = None
    server_error = None
    deadline = time.monotonic() + seconds

    def complete(done):
        nonlocal server_error
        durable = False
        for tag, error in done:
            kind = tag[0]
            if error is not None:
                stats["failed"] += 1
                if kind == "w":
                    busy.discard(tag[1])
                    failed_writes.append(tag[2])
                # An error on a live connection is the server failing a request; on a dead one
                # it is the connection's loss, which the test caused. ESHUTDOWN is a server
                # refusing work because it is shutting down, which the test caused too.
                if not p.dead() and error.errno != "ESHUTDOWN" and server_error is None:
                    server_error = f"{tag}: {error}"
                continue
            if kind == "w":
                _, block, s, fua = tag
                busy.discard(block)
                if acked.get(block, 0) >= s:
                    server_error = f"block {block}: seq {s} acknowledged after seq {acked[block]}"
                acked[block] = s
                stats["writes_acked"] += 1
                since_flush.append((block, s))
                if fua:
                    stats["fua_acked"] += 1
                    flushed[block] = max(flushed.get(block, 0), s)
                    durable = True
            else:
                fid = tag[1]
                stats["flushes_ok"] += 1
                for older in [i for i in batches if i <= fid]:
                    for block, s in batches.pop(older):
                        flushed[block] = max(flushed.get(block, 0), s)
                durable = True
                if started and not os.path.exists(started):
                    open(started, "w").close()
        if durable:
            save()

    try:
        while time.monotonic() < deadline and server_error is None:
            if writes_since_flush >= flush_every:
                flush_id += 1
                batches[flush_id] = since_flush[:]
                since_flush.clear()
                p.flush(("f", flush_id))
                writes_since_flush = 0
                continue
            while len(p.inflight) >= depth:
                complete(p.wait())
            block = rnd.randrange(nblocks)
            while block in busy:
                block = rnd.randrange(nblocks)
            fua = seq % 7 == 0
            p.write(content(block, seq, bs), block * bs, ("w", block, seq, fua), fua=fua)
            busy.add(block)
            seq += 1
            writes_since_flush += 1
            complete(p.reap())
        while p.inflight and server_error is None:
            complete(p.wait())
    except nbd.Error as e:
        failure = str(e)
    try:
        complete(p.reap())
    except nbd.Error:
        pass
    save()
    for handle in (h, idle_handle):
        if handle is not None:
            try:
                handle.close()
            except Exception:
                pass
    ended = "connection lost" if failure or p.dead() else "time limit"
    print(f"flushwriter: {ended}: {stats['writes_acked']} writes acknowledged ({stats['fua_acked']} FUA), "
          f"{stats['flushes_ok']} flushes, {stats['failed']} commands failed; next seq {seq}"
          + (f" ({failure})" if failure else ""), flush=True)
    if server_error:
        raise CheckFailed(f"the server failed a request on a live connection: {server_error}")


def verify(uri, nblocks, bs, state_path, floor_kind="flushed"):
    state = load_json(state_path)
    floor = intkeys(state[floor_kind])
    next_seq = state["next_seq"]
    failed_writes = set(state.get("failed_writes", []))
    h = connect(uri)
    problems = []
    at_floor = newer = newer_failed = 0
    for block, data in read_blocks(h, nblocks, bs):
        try:
            seq = decode(data, block, bs)
        except CheckFailed as e:
            problems.append(str(e))
            continue
        want = floor.get(block)
        if seq is not None and seq >= next_seq:
            problems.append(f"block {block}: holds seq {seq}, never issued (next seq {next_seq})")
        elif want is None:
            continue
        elif seq is None or seq < want:
            problems.append(f"block {block}: holds {describe(seq)}, but seq {want} was {floor_kind} "
                            f"(acknowledged{' and flushed' if floor_kind == 'flushed' else ''})")
        elif seq == want:
            at_floor += 1
        else:
            newer += 1
            newer_failed += seq in failed_writes
    h.shutdown()
    if problems:
        raise CheckFailed(f"{len(problems)} block(s) lost {floor_kind} data:\n  " + "\n  ".join(problems[:40]))
    print(f"verify: {len(floor)} blocks with a {floor_kind} version: {at_floor} hold it, {newer} hold a newer one"
          f" ({newer_failed} of those from writes the client saw fail)")


# ---------------------------------------------------------------------------------------------


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[1], argv[2:]

    def option(name, default=None, flag=False):
        if name not in args:
            return default
        i = args.index(name)
        if flag:
            del args[i]
            return True
        value = args[i + 1]
        del args[i:i + 2]
        return value

    try:
        if command == "mkimage":
            mkimage(args[0], int(args[1]), int(args[2]))
        elif command == "snapwriter":
            snapwriter(args[0], int(args[1]), int(args[2]), args[3], int(args[4]))
        elif command == "snapcheck":
            copies = option("--copies")
            snapcheck(args[0], int(args[1]), int(args[2]), args[3], int(args[4]), copies=copies)
        elif command == "flushwriter":
            started = option("--started")
            idle = option("--idle", False, flag=True)
            depth = int(option("--depth", "16"))
            seconds = float(option("--seconds", "60"))
            flushwriter(args[0], int(args[1]), int(args[2]), args[3], int(args[4]), started=started, idle=idle,
                        depth=depth, seconds=seconds)
        elif command == "verify":
            kind = option("--floor", "flushed")
            verify(args[0], int(args[1]), int(args[2]), args[3], kind)
        else:
            print(f"nbdload: unknown command {command}", file=sys.stderr)
            return 2
    except CheckFailed as e:
        print(f"nbdload {command}: {e}", file=sys.stderr)
        return 1
    except NBDError as e:
        print(f"nbdload {command}: NBD error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
