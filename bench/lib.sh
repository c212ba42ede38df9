# Shared setup of the benchmark scripts that start a release `strata` and their peers (sourced
# after `cd` to the repository root): a fresh scratch directory, the processes to stop on exit,
# the release build, and free loopback ports.

# bench_init NAME: BENCH_DIR becomes ${BENCH_DIR:-/work/bench-tmp}/NAME, emptied; every PID
# added to PIDS is stopped, and BENCH_DIR removed (kept with BENCH_KEEP=1, to look at the
# profiles or logs a script left there), when the script exits.
bench_init() {
    BENCH_DIR=${BENCH_DIR:-/work/bench-tmp}/$1
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"
    mkdir -p "$BENCH_DIR"
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"
}

# build_strata: a release build of the strata executable; sets STRATA. With BENCH_SKIP_BUILD=1
# the release build already in .build is used as it is.
build_strata() {
    STRATA=$ROOT/.build/release/strata
    if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
        [ -x "$STRATA" ] || { echo "$STRATA is missing; run without BENCH_SKIP_BUILD=1" >&2; exit 1; }
        return 0
    fi
    echo "building strata (release)" >&2
    swift build -c release --product strata >&2
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# wait_daemon PORT: the NBD port and the control socket are both up.
wait_daemon() {
    wait_port "$1"
    for _ in $(seq 1 200); do [ -S "$STRATA_POOL/control.sock" ] && return 0; sleep 0.05; done
    echo "control socket never appeared in $STRATA_POOL" >&2; exit 1
}

# fio_job URI NAME RW BS DEPTH [extra...]: prints IOPS and MiB/s of one run (JSON parsed).
fio_job() {
    local uri=$1 name=$2 rw=$3 bs=$4 depth=$5; shift 5
    # fio's nbd engine prints a line on stdout, so the JSON goes to a file.
    local out=$BENCH_DIR/fio.json
    fio --name="$name" --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" --size="$SIZE" \
        --runtime="$RUNTIME" --time_based --ramp_time=1 --randrepeat=0 --group_reporting --output-format=json \
        --output="$out" "$@" >/dev/null 2>&1
    /usr/bin/python3 - "$out" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
print("%.0f %.1f" % (side["iops"], side["bw_bytes"] / 1048576))
PY
}

# median of numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# ratio A B: A / B with two decimals, "-" when B is zero.
ratio() { awk "BEGIN { if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }"; }

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (/proc/PID/stat
# fields 14 and 15; the servers measured have no space in their command name).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_pair PEER_A URI_A PEER_B URI_B JOB...: run_rotated for two targets.
run_pair() { run_rotated "$1=$2" "$3=$4" -- "${@:5}"; }

# run_rotated PEER=URI... -- JOB...: as run_jobs for several targets, their runs taking turns
# in an order that rotates each round (A B C, then B C A, then C A B; for two: A B, then B A),
# so a drift of the machine during the runs (this VM's figures move by 20% from one minute to
# the next) weighs on every side alike instead of on whichever ran last. Each run starts after a
# `sync`, with no dirty page cache left by the run before: a server that leaves its writes to
# the kernel's writeback (nbdkit's file plugin, qemu-nbd with no FLUSH from fio) otherwise had
# that writeback done during the next side's run, which paid for it. Stores the medians in
# RESULT[PEER,NAME].
run_rotated() {
    local peers=() uris=() spec job rw bs depth iops mibs round turn side
    while [ "$1" != "--" ]; do
        peers+=("${1%%=*}")
        uris+=("${1#*=}")
        shift
    done
    shift
    local count=${#peers[@]}
    for spec in "$@"; do
        IFS=: read -r job rw bs depth <<<"$spec"
        local -A values=()
        for round in $(seq 1 "$REPEAT"); do
            for turn in $(seq 0 $((count - 1))); do
                side=$(((round - 1 + turn) % count))
                sync
                read -r iops mibs < <(fio_job "${uris[$side]}" "$job" "$rw" "$bs" "$depth")
                if [ "$bs" = "1M" ]; then values[$side]+=" $mibs"; else values[$side]+=" $iops"; fi
            done
        done
        local line="   $job:"
        for side in $(seq 0 $((count - 1))); do
            # shellcheck disable=SC2086
            RESULT[${peers[$side]},$job]=$(printf '%s\n' ${values[$side]} | median)
            line+=" ${peers[$side]} ${RESULT[${peers[$side]},$job]} (runs:${values[$side]})"
        done
        echo "$line" >&2
    done
}

# run_jobs PEER URI JOB...: runs each JOB (NAME:RW:BS:DEPTH) REPEAT times and stores the median
# in RESULT[PEER,NAME] (MiB/s for 1M blocks, else IOPS). The caller declares RESULT (-A). With
# SERVER_PID set, also the server's CPU per request in microseconds, median in CPU[PEER,NAME]
# (the caller declares CPU (-A) too): its user + system time over the whole fio run, ramp
# included, divided by IOPS x (RUNTIME + the 1 s ramp), the requests of the whole run.
run_jobs() {
    local peer=$1 uri=$2 spec job rw bs depth iops mibs before after
    shift 2
    local hz
    hz=$(getconf CLK_TCK)
    for spec in "$@"; do
        IFS=: read -r job rw bs depth <<<"$spec"
        local values=() cpus=()
        for _ in $(seq 1 "$REPEAT"); do
            [ -n "${SERVER_PID:-}" ] && before=$(cpu_ticks "$SERVER_PID")
            read -r iops mibs < <(fio_job "$uri" "$job" "$rw" "$bs" "$depth")
            if [ -n "${SERVER_PID:-}" ]; then
                after=$(cpu_ticks "$SERVER_PID")
                cpus+=("$(awk "BEGIN { r = $iops * ($RUNTIME + 1); if (r > 0) printf \"%.1f\", ($after - $before) / $hz * 1e6 / r; else print 0 }")")
            fi
            if [ "$bs" = "1M" ]; then values+=("$mibs"); else values+=("$iops"); fi
        done
        RESULT[$peer,$job]=$(printf '%s\n' "${values[@]}" | median)
        local cpu_note=""
        if [ ${#cpus[@]} -gt 0 ]; then
            CPU[$peer,$job]=$(printf '%s\n' "${cpus[@]}" | median)
            cpu_note="; server CPU µs/request: ${cpus[*]}"
        fi
        echo "   $job: ${RESULT[$peer,$job]} (runs: ${values[*]}$cpu_note)" >&2
    done
}
