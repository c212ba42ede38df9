#!/usr/bin/env python3
"""The boot-like read of bench/run-objectstore.sh (c) with no cost but the fetches themselves.

fio reads 64 KiB blocks at random over a 1 GiB volume of 128 objects (8 MiB each), 1,024 reads
at depth 8. A read of an object not fetched yet waits for its whole-object fetch (at most 8 at
once, each taking one time unit); a read of a fetched object costs nothing; a read of an object
being fetched joins that fetch. Prints, per seed, the simulated time, the time of fetching the
covering objects directly 8 at a time, and their ratio: what reading on demand costs before any
CPU is spent verifying or storing what was fetched.

    python3 bench/simulate-boot-read.py [SEEDS]     (default 3)
"""
import random
import sys


def simulate(seed, objects=128, reads=1024, depth=8, parallel=8):
    rng = random.Random(seed)
    sequence = [rng.randrange(objects) for _ in range(reads)]
    direct = len(set(sequence)) / parallel
    now, fetched, in_flight, queued, waiting, issued = 0.0, set(), {}, [], [], 0

    def issue():
        nonlocal issued
        while len(waiting) < depth and issued < reads:
            wanted = sequence[issued]
            issued += 1
            if wanted in fetched:
                continue
            waiting.append(wanted)
            if wanted not in in_flight and wanted not in queued:
                queued.append(wanted)

    issue()
    while waiting:
        while queued and len(in_flight) < parallel:
            in_flight[queued.pop(0)] = now + 1.0
        done, now = min(in_flight.items(), key=lambda item: item[1])
        del in_flight[done]
        fetched.add(done)
        waiting[:] = [wanted for wanted in waiting if wanted != done]
        issue()
    return now, direct


for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    simulated, direct = simulate(seed)
    print(f"seed {seed}: on demand {simulated:.2f}, covering objects directly {direct:.2f}, ratio {simulated / direct:.2f}")
