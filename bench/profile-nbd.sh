#!/usr/bin/env bash
# Where the time goes in the NBD jobs that do not meet issue 9's goals: for each job, a release
# `strata serve` on a filled 2 GiB volume, nbdkit's file plugin on a filled 2 GiB file beside it,
# the job run with fio's nbd engine while `perf record -g` samples the server, then for each
# server: its CPU per request, its CPU split by thread (event loops, pool threads), and the
# symbols with the most samples. Markdown on stdout, progress on stderr.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp; not inside the repository)
#   SIZE       image size (default 2G)    RUNTIME  seconds per job (default 8)
#   JOBS       NAME:RW:BS:DEPTH list (default: the jobs of run-nbd.sh that miss their goal)
#   TOP        symbols listed per job (default 12)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio nbdkit perf; do
    command -v $tool >/dev/null || { echo "profile-nbd: $tool is missing (apt-get install fio nbdkit linux-perf)" >&2; exit 1; }
done
source bench/lib.sh
bench_init profile-nbd
SIZE=${SIZE:-2G}
RUNTIME=${RUNTIME:-8}
TOP=${TOP:-12}
read -r -a JOBS <<<"${JOBS:-randwrite-4k-qd32:randwrite:4k:32 randwrite-4k-qd1:randwrite:4k:1 randread-4k-qd1:randread:4k:1 seqwrite-1M:write:1M:8 seqread-1M:read:1M:8}"
build_strata
HZ=$(getconf CLK_TCK)

# profile PEER PID URI: every job under perf, with the server's CPU per request.
profile() {
    local peer=$1 pid=$2 uri=$3 spec job rw bs depth before after iops mibs
    for spec in "${JOBS[@]}"; do
        IFS=: read -r job rw bs depth <<<"$spec"
        echo "== $peer $job" >&2
        local data=$BENCH_DIR/$peer-$job.perf
        before=$(cpu_ticks "$pid")
        perf record -q -g -o "$data" -p "$pid" -- sleep $((RUNTIME + 1)) 2>/dev/null &
        local recorder=$!
        read -r iops mibs < <(fio_job "$uri" "$job" "$rw" "$bs" "$depth")
        wait $recorder || true
        after=$(cpu_ticks "$pid")
        local cpu
        cpu=$(awk "BEGIN { r = $iops * ($RUNTIME + 1); if (r > 0) printf \"%.1f\", ($after - $before) / $HZ * 1e6 / r; else print 0 }")
        echo
        echo "### $peer, $job: $iops IOPS, $mibs MiB/s, server CPU $cpu µs per request"
        echo
        echo "Samples by thread (threads of one kind summed: NIO-ELT event loops, TP pool threads):"
        echo
        echo '```'
        # (`|| true`: head closing the pipe early is not a failure.)
        { perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' |
            awk '{ name = $2; sub(/-?#[0-9]+$/, "", name); sub(/-[0-9]+$/, "", name); share[name] += $1; count[name]++ }
                 END { for (n in share) printf "%7.2f%%  %s (%d threads)\n", share[n], n, count[n] }' | sort -rn; } || true
        echo '```'
        echo
        echo "Top symbols (self):"
        echo
        echo '```'
        { perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9.]+%' |
            head -"$TOP" | cut -c1-160; } || true
        echo '```'
    done
}

export STRATA_POOL=$BENCH_DIR/strata
PORT=$(free_port)
"$STRATA" serve --iscsi off --http off --nbd 127.0.0.1:$PORT --create-size 8G --log-level warning &
STRATA_PID=$!
PIDS+=($STRATA_PID)
wait_daemon $PORT
"$STRATA" volume create vm1 --size "$SIZE" >/dev/null
fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/vm1" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null 2>&1
echo "# NBD profiles ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg))"
profile strata $STRATA_PID "nbd://127.0.0.1:$PORT/vm1"
kill $STRATA_PID
wait $STRATA_PID || true

truncate -s "$SIZE" "$BENCH_DIR/nbdkit.raw"
PORT=$(free_port)
nbdkit -f -i 127.0.0.1 -p $PORT file "$BENCH_DIR/nbdkit.raw" &
NBDKIT_PID=$!
PIDS+=($NBDKIT_PID)
wait_port $PORT
fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null 2>&1
profile nbdkit $NBDKIT_PID "nbd://127.0.0.1:$PORT/"
