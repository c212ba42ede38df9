#!/usr/bin/env bash
# Load and soak (issue 13): a release `strata serve` with CLIENTS clients at once, half NBD and
# half iSCSI, each writing, reading back (verified), trimming and flushing its own region of one
# of VOLUMES volumes at RATE requests a second, while snapshots, clones (read and written over
# NBD) and deletes run every CONTROL_INTERVAL seconds, for SECONDS. bench/soak.py drives it and
# samples the daemon's VmRSS, descriptors and threads every 5 s, and from its /metrics the heap in
# use, the freed heap it keeps and the metadata cache. Afterwards `strata check` must be clean and
# the daemon must stop cleanly on SIGTERM. Not part of the test command: it runs for 30 minutes.
# Prints the summary JSON and a markdown row for bench/README.md.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp)   CLIENTS  (default 200)
#   SECONDS_   run time in seconds (default 1800)             RATE     requests/s per client (default 4)
#   VOLUMES    (default 8)                                    CONTROL_INTERVAL  seconds between rounds of
#                                                             snapshot, clone, clone I/O, delete (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "run-soak: python3-libnbd is missing (apt-get install python3-libnbd)" >&2; exit 1; }
source bench/lib.sh
bench_init soak
CLIENTS=${CLIENTS:-200}
DURATION=${SECONDS_:-1800}
RATE=${RATE:-4}
VOLUMES=${VOLUMES:-8}
CONTROL_INTERVAL=${CONTROL_INTERVAL:-3}
build_strata

export STRATA_POOL=$BENCH_DIR/pool
PORT=$(free_port)
ISCSI_PORT=$(free_port)
HTTP_PORT=$(free_port)
"$STRATA" serve --nbd 127.0.0.1:$PORT --iscsi 127.0.0.1:$ISCSI_PORT --http 127.0.0.1:$HTTP_PORT --create-size 64G \
    --log-level warning 2>"$BENCH_DIR/daemon.log" &
STRATA_PID=$!
PIDS+=($STRATA_PID)
wait_daemon $PORT
for index in $(seq 0 $((VOLUMES - 1))); do "$STRATA" volume create soak$index --size 1G >/dev/null; done

status=0
/usr/bin/python3 bench/soak.py --strata "$STRATA" --pool "$STRATA_POOL" --pid $STRATA_PID --nbd 127.0.0.1:$PORT \
    --iscsi 127.0.0.1:$ISCSI_PORT --clients "$CLIENTS" --seconds "$DURATION" --rate "$RATE" --volumes "$VOLUMES" \
    --control-interval "$CONTROL_INTERVAL" --metrics "http://127.0.0.1:$HTTP_PORT/metrics" --out "$BENCH_DIR/soak.json" || status=$?
"$STRATA" check >"$BENCH_DIR/check.out" 2>&1 || { echo "run-soak: strata check failed:" >&2; cat "$BENCH_DIR/check.out" >&2; status=1; }
kill -TERM $STRATA_PID
wait $STRATA_PID || { echo "run-soak: the daemon did not stop cleanly" >&2; status=1; }
if grep -qiE "error|critical" "$BENCH_DIR/daemon.log"; then
    echo "run-soak: the daemon logged errors:" >&2
    grep -iE "error|critical" "$BENCH_DIR/daemon.log" | head -20 >&2
fi
/usr/bin/python3 - "$BENCH_DIR/soak.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
mib = lambda k: s["rssKiB"][k] / 1024
print("| clients | seconds | requests | control ops | errors | RSS start / peak MiB | RSS peak first / last third MiB | fds start / peak | threads peak |")
print("|---|---|---|---|---|---|---|---|---|")
control = sum(v for k, v in s["counts"].items() if not k.startswith(("nbd-", "iscsi-")))
print("| %d | %d | %d | %d | %d | %.0f / %.0f | %.0f / %.0f | %d / %d | %d |" % (
    s["clients"], s["seconds"], s["requests"], control, s["errors"], mib("start"), mib("peak"),
    mib("firstThirdPeak"), mib("lastThirdPeak"), s["fds"]["start"], s["fds"]["peak"], s["threads"]["peak"]))
print()
print("| heap in use start / peak MiB | heap in use peak first / last third MiB | freed heap kept peak MiB | metadata cache nodes peak |")
print("|---|---|---|---|")
heap = lambda k: s["heapInUseKiB"][k] / 1024
print("| %.0f / %.0f | %.0f / %.0f | %.0f | %d |" % (
    heap("start"), heap("peak"), heap("firstThirdPeak"), heap("lastThirdPeak"), s["heapFreeKiB"]["peak"] / 1024,
    s["cachePages"]["peak"]))
PY
exit $status
