#!/usr/bin/python3
"""Load and soak of a running Strata daemon (issue 13, "Load and soak"): many NBD and iSCSI
clients at once, each writing, reading back and verifying, trimming and flushing its own region
of a volume, while a control thread takes snapshots, makes clones, reads them, and deletes
both; a monitor samples the daemon's memory, descriptors and threads.

Usage (bench/run-soak.sh starts the daemon and calls this):
  soak.py --strata BIN --pool DIR --pid PID --nbd HOST:PORT --iscsi HOST:PORT
          [--clients 200] [--seconds 1800] [--rate 4] [--volumes 8] [--out FILE]

Every client owns a disjoint 4 MiB region, so what it reads must be exactly what it last wrote
(or zeros where it trimmed or never wrote); any difference, failed request or lost connection
counts as an error. Half the clients speak NBD (libnbd, so run this with /usr/bin/python3), half
iSCSI (tests/iscsi/iscsi_raw.py, the standard library only). Each client issues at most --rate
requests a second: the soak is about holding many connections and many objects for a long time,
not about speed (bench/run-nbd.sh measures that).

Prints a summary and writes it as JSON to --out: requests by kind, errors (with the first few
messages), control operations, and the daemon's VmRSS, VmHWM, open descriptors and threads:
first, peak, and the peak of the first and of the last third of the run, so growth shows; and
the longest gap between two samples, which shows when the soak's own process was starved.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "iscsi"))
import iscsi_raw  # noqa: E402

BLOCK = 4096
REGION = 4 << 20
BLOCKS = REGION // BLOCK


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = 0
        self.messages = []

    def count(self, kind):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def error(self, who, message):
        with self.lock:
            self.errors += 1
            if len(self.messages) < 20:
                self.messages.append("%s: %s" % (who, message))


def pattern(seed, count):
    """count bytes that depend on seed: a 16-byte header repeated, cheap to make and to check."""
    unit = seed.to_bytes(8, "little") * 2
    return unit * (count // len(unit))


class Client(threading.Thread):
    """One connection that writes, reads back and trims its own region."""

    def __init__(self, index, volume, args, stats, stop):
        super().__init__(daemon=True)
        self.index = index
        self.volume = volume
        self.base = (index // args.volumes) * REGION
        self.args = args
        self.stats = stats
        self.stop = stop
        self.expected = [0] * BLOCKS  # the seed each block holds; 0 = zeros
        self.random = random.Random(index)
        self.name = "%s-client-%d" % (self.kind, index)

    def run(self):
        try:
            self.open()
        except Exception as error:  # noqa: BLE001: every failure of a client is a soak error
            self.stats.error(self.name, "connect: %r" % (error,))
            return
        interval = 1.0 / self.args.rate
        next_at = time.monotonic() + self.random.random() * interval
        sequence = 0
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
                if self.stop.is_set():
                    break
            next_at += interval
            first = self.random.randrange(BLOCKS)
            count = min(self.random.choice((1, 1, 2, 4, 16)), BLOCKS - first)
            kind = self.random.choices(("write", "read", "trim", "flush"), weights=(45, 40, 10, 5))[0]
            try:
                if kind == "write":
                    sequence += 1
                    seed = (self.index << 32) | sequence
                    self.write(first, pattern(seed, count * BLOCK))
                    for block in range(first, first + count):
                        self.expected[block] = seed
                elif kind == "read":
                    data = self.read(first, count)
                    for block in range(count):
                        want = self.expected[first + block]
                        got = data[block * BLOCK:(block + 1) * BLOCK]
                        if got != (pattern(want, BLOCK) if want else bytes(BLOCK)):
                            raise AssertionError("block %d of %s reads other data than was written" % (first + block, self.volume))
                elif kind == "trim":
                    self.trim(first, count)
                    for block in range(first, first + count):
                        self.expected[block] = 0
                else:
                    self.flush()
                self.stats.count("%s-%s" % (self.kind, kind))
            except Exception as error:  # noqa: BLE001
                self.stats.error(self.name, "%s: %r" % (kind, error))
                return
        try:
            self.close()
        except Exception as error:  # noqa: BLE001
            self.stats.error(self.name, "close: %r" % (error,))


class NBDClient(Client):
    kind = "nbd"

    def open(self):
        import nbd
        self.handle = nbd.NBD()
        self.handle.connect_uri("nbd://%s/%s" % (self.args.nbd, self.volume))

    def write(self, first, data):
        self.handle.pwrite(data, self.base + first * BLOCK)

    def read(self, first, count):
        return self.handle.pread(count * BLOCK, self.base + first * BLOCK)

    def trim(self, first, count):
        self.handle.trim(count * BLOCK, self.base + first * BLOCK)

    def flush(self):
        self.handle.flush()

    def close(self):
        self.handle.shutdown()


class ISCSIClient(Client):
    kind = "iscsi"

    def open(self):
        target = "iqn.2026-11.org.strata:%s" % self.volume
        self.session = iscsi_raw.Session(self.args.iscsi, target, timeout=self.args.timeout)
        self.session.login()
        status, sense, _ = self.session.read_capacity16()
        self.check(status, sense, "READ CAPACITY(16)")
        self.per_block = BLOCK // self.session.block_size

    def check(self, status, sense, what):
        if status != 0:
            raise RuntimeError("%s: status 0x%02x sense %r" % (what, status, iscsi_raw.sense_key(sense)))

    def lba(self, first):
        return (self.base // BLOCK + first) * self.per_block

    def write(self, first, data):
        status, sense, _ = self.session.write10(self.lba(first), data)
        self.check(status, sense, "WRITE(10)")

    def read(self, first, count):
        status, sense, data = self.session.read10(self.lba(first), count * self.per_block)
        self.check(status, sense, "READ(10)")
        return data

    def trim(self, first, count):
        # UNMAP with one block descriptor (SBC-4 5.30).
        descriptor = self.lba(first).to_bytes(8, "big") + (count * self.per_block).to_bytes(4, "big") + bytes(4)
        parameters = (6 + 16).to_bytes(2, "big") + (16).to_bytes(2, "big") + bytes(4) + descriptor
        cdb = bytes([0x42, 0, 0, 0, 0, 0, 0]) + len(parameters).to_bytes(2, "big") + bytes(1)
        status, sense, _ = self.session.scsi(cdb, write_data=parameters)
        self.check(status, sense, "UNMAP")

    def flush(self):
        status, sense, _ = self.session.scsi(bytes([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
        self.check(status, sense, "SYNCHRONIZE CACHE(10)")

    def close(self):
        self.session.logout()
        self.session.close()


class Control(threading.Thread):
    """Snapshots, clones, reads of clones, and deletes, round the volumes, one every few seconds."""

    def __init__(self, args, stats, stop):
        super().__init__(daemon=True)
        self.args = args
        self.stats = stats
        self.stop = stop

    def strata(self, *words):
        env = dict(os.environ, STRATA_POOL=self.args.pool)
        result = subprocess.run([self.args.strata, *words], env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError("strata %s: %s" % (" ".join(words), result.stderr.strip()))
        return result.stdout

    def run(self):
        import nbd
        round_ = 0
        while not self.stop.wait(self.args.control_interval):
            round_ += 1
            volume = "soak%d" % (round_ % self.args.volumes)
            snapshot = "s%d" % round_
            clone = "c%d" % round_
            try:
                self.strata("snapshot", "create", "%s@%s" % (volume, snapshot))
                self.stats.count("snapshot-create")
                self.strata("clone", "%s@%s" % (volume, snapshot), clone)
                self.stats.count("clone-create")
                handle = nbd.NBD()
                handle.connect_uri("nbd://%s/%s" % (self.args.nbd, clone))
                handle.pread(1 << 20, 0)
                handle.pwrite(bytes(4096), 0)
                handle.shutdown()
                self.stats.count("clone-read-write")
                self.strata("volume", "delete", clone)
                self.stats.count("volume-delete")
                if round_ > self.args.volumes * 2:
                    old = round_ - self.args.volumes * 2
                    self.strata("snapshot", "delete", "soak%d@s%d" % (old % self.args.volumes, old))
                    self.stats.count("snapshot-delete")
            except Exception as error:  # noqa: BLE001
                self.stats.error("control", repr(error))


# The daemon's own memory gauges (/metrics), in KiB like VmRSS: the heap it uses, the freed heap
# it keeps for reuse, and the metadata cache's nodes (a count).
METRICS = (("strata_process_heap_in_use_bytes", "heapInUse", 1024), ("strata_process_heap_free_bytes", "heapFree", 1024),
           ("strata_metadata_cache_pages", "cachePages", 1))


def sample(pid, metrics_url=None):
    fields = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
    fields["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    if metrics_url:
        with urllib.request.urlopen(metrics_url, timeout=30) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            for metric, key, unit in METRICS:
                if name == metric:
                    fields[key] = int(float(value)) // unit
    return fields


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strata", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--nbd", required=True)
    parser.add_argument("--iscsi", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--rate", type=float, default=4)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--control-interval", type=float, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds an iSCSI client waits for an answer")
    parser.add_argument("--metrics", help="the daemon's /metrics URL, for its heap and cache gauges")
    parser.add_argument("--out")
    args = parser.parse_args()

    stats = Stats()
    stop = threading.Event()
    clients = []
    for index in range(args.clients):
        volume = "soak%d" % (index % args.volumes)
        cls = NBDClient if index % 2 == 0 else ISCSIClient
        clients.append(cls(index, volume, args, stats, stop))
    samples = [(0.0, sample(args.pid, args.metrics))]
    start = time.monotonic()
    for client in clients:
        client.start()
    control = Control(args, stats, stop)
    control.start()
    while time.monotonic() - start < args.seconds:
        time.sleep(min(5.0, max(0.1, args.seconds - (time.monotonic() - start))))
        try:
            samples.append((time.monotonic() - start, sample(args.pid, args.metrics)))
        except FileNotFoundError:
            stats.error("daemon", "exited during the soak")
            break
        alive = sum(1 for client in clients if client.is_alive())
        last = samples[-1][1]
        heap = "  heap %d MiB (+%d free)  cache %d nodes" % (
            last["heapInUse"] // 1024, last["heapFree"] // 1024, last["cachePages"]) if "heapInUse" in last else ""
        print("%6.0f s  clients %d  errors %d  rss %d MiB  fds %d  threads %d%s" % (
            samples[-1][0], alive, stats.errors, last["VmRSS"] // 1024, last["fds"], last["Threads"], heap), flush=True)
    stop.set()
    for client in clients:
        client.join(120)
    control.join(600)

    third = args.seconds / 3
    def peak(key, lo, hi):
        values = [s[key] for t, s in samples if lo <= t <= hi]
        return max(values) if values else None
    summary = {
        "clients": args.clients, "seconds": args.seconds, "rate": args.rate, "volumes": args.volumes,
        "requests": sum(v for k, v in stats.counts.items() if k.startswith(("nbd-", "iscsi-"))),
        "counts": stats.counts, "errors": stats.errors, "errorMessages": stats.messages,
    }
    keys = [("VmRSS", "rssKiB"), ("fds", "fds"), ("Threads", "threads")]
    if "heapInUse" in samples[0][1]:
        keys += [("heapInUse", "heapInUseKiB"), ("heapFree", "heapFreeKiB"), ("cachePages", "cachePages")]
    for key, name in keys:
        summary[name] = {
            "start": samples[0][1][key], "peak": peak(key, 0, args.seconds + 1),
            "firstThirdPeak": peak(key, 0, third), "lastThirdPeak": peak(key, 2 * third, args.seconds + 1),
        }
    summary["hwmKiB"] = samples[-1][1]["VmHWM"]
    # The longest gap between two samples (every 5 s when the machine is not starving this
    # process): a long one means the clients themselves were starved, not only the daemon.
    summary["longestSampleGapSeconds"] = round(max(b[0] - a[0] for a, b in zip(samples, samples[1:])), 1)
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
