#!/usr/bin/env bash
# iSCSI benchmark: Strata (release build) against tgtd (Debian's tgt, rdwr file backing store),
# both started by this script in the same run, images on the same filesystem, both on 127.0.0.1.
#
# 1. Conformance: libiscsi's iscsi-test-cu, family ALL with --dataloss, against a fresh 64 MiB
#    LUN on each; pass/fail/skip per suite side by side, and the tests whose verdicts differ.
#    (tests/iscsi/cu_report.py reads the output: a [SKIPPED] test counts as a skip.)
# 2. Speed, on a SIZE volume / file written in full first (reads read data, writes overwrite):
#    - qemu-img bench (qemu's libiscsi driver, iscsi:// URL): 4 KiB "random" read and write at
#      depth 1 and 32, 1 MiB sequential read and write at depth 8. qemu-img bench has no random
#      mode and wraps its offset modulo the image size; the 4 KiB jobs step by 4 KiB x P, P the
#      odd number nearest 0.618 x the image's 4 KiB blocks (a Weyl sequence): on a power-of-two
#      image that visits every 4 KiB block once per pass, in a scattered order.
#    - iscsi-perf (libiscsi, reads only): 4 KiB random reads with 1 and 32 requests in flight,
#      1 MiB sequential reads with 8 in flight, RUNTIME seconds each.
#    Every job runs REPEAT times; the tables hold medians and Strata / tgtd ratios.
# Prints markdown on stdout (progress on stderr), with tool versions and the commit.
#
#   BENCH_DIR   images and pools (default /work/bench-tmp; not inside the repository)
#   SIZE        speed image size (default 1G; a power of two)     REPEAT  runs per job (default 3)
#   RUNTIME     seconds per iscsi-perf run (default 5)
#   COUNT_QD1 / COUNT_QD32 / COUNT_1M   qemu-img bench request counts (20000 / 100000 / 2048)
#   BENCH_SKIP_BUILD=1  reuse .build/release/strata (the release build the other benchmarks make)
#   BENCH_PARTS="conformance speed"     run a subset
#   BENCH_PEERS="strata tgtd"           leave a peer out (its columns print "-")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in tgtd tgtadm iscsi-test-cu iscsi-perf iscsi-readcapacity16 qemu-img stdbuf; do
    command -v $tool >/dev/null || { echo "run-iscsi: $tool is missing (apt-get install tgt libiscsi-bin qemu-utils qemu-block-extra)" >&2; exit 1; }
done
qemu-img --help | grep -A1 '^Supported formats:' | grep -qw iscsi ||
    { echo "run-iscsi: qemu-img has no iscsi driver (apt-get install qemu-block-extra)" >&2; exit 1; }

BENCH_DIR=${BENCH_DIR:-/work/bench-tmp}/iscsi
SIZE=${SIZE:-1G}
REPEAT=${REPEAT:-3}
RUNTIME=${RUNTIME:-5}
COUNT_QD1=${COUNT_QD1:-20000}
COUNT_QD32=${COUNT_QD32:-100000}
COUNT_1M=${COUNT_1M:-2048}
PARTS=${BENCH_PARTS:-conformance speed}
PEERS=${BENCH_PEERS:-strata tgtd}
has_peer() { case " $PEERS " in *" $1 "*) return 0 ;; esac; return 1; }
REPORT=$ROOT/tests/iscsi/cu_report.py
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
PIDS=()
# stop PID: SIGTERM, then SIGKILL after 5 s (tgtd does not exit on SIGTERM while it has targets).
stop() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && stop "$pid"; done
    rm -rf "$BENCH_DIR"
}
trap cleanup EXIT

if has_peer strata && [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    echo "building strata (release)" >&2
    swift build -c release --product strata >&2
fi
STRATA=$ROOT/.build/release/strata

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# wait_port PORT LOG: up to 60 s for a listener; on failure, the end of LOG.
wait_port() {
    for _ in $(seq 1 600); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "run-iscsi: port $1 never opened; end of $2:" >&2
    tail -20 "$2" >&2
    exit 1
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { case "$1$2" in *-*) echo - ;; *) awk "BEGIN { if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }" ;; esac; }
bytes() { numfmt --from=iec "$1"; }

# --- the two targets -------------------------------------------------------------------------
# Strata: one daemon for the whole run; volumes `cu` (64 MiB) and `bench` (SIZE).
start_strata() {
    export STRATA_POOL=$BENCH_DIR/strata
    STRATA_PORT=$(free_port)
    STRATA_NBD=$(free_port)
    "$STRATA" serve --http off --nbd 127.0.0.1:$STRATA_NBD --iscsi 127.0.0.1:$STRATA_PORT --create-size 16G --log-level warning \
        2>"$BENCH_DIR/strata.log" &
    STRATA_PID=$!
    PIDS+=($STRATA_PID)
    wait_port $STRATA_PORT "$BENCH_DIR/strata.log"
    for _ in $(seq 1 200); do [ -S "$STRATA_POOL/control.sock" ] && break; sleep 0.05; done
    "$STRATA" volume create cu --size 64M >/dev/null
    "$STRATA" volume create bench --size "$SIZE" >/dev/null
    STRATA_CU=iscsi://127.0.0.1:$STRATA_PORT/iqn.2026-11.org.strata:cu/0
    STRATA_URL=iscsi://127.0.0.1:$STRATA_PORT/iqn.2026-11.org.strata:bench/0
}
has_peer strata && start_strata

# tgtd in the foreground on its own portal and management port (not a system tgtd's), the
# data LUN at LUN 1 (tgtd keeps LUN 0 for its controller), rdwr (buffered file I/O) backing.
tgt() { tgtadm -C $TGT_CONTROL --lld iscsi "$@"; }
tgt_target() {  # tgt_target TID NAME FILE SIZE
    truncate -s "$4" "$3"
    tgt --mode target --op new --tid "$1" --targetname "$2"
    tgt --mode logicalunit --op new --tid "$1" --lun 1 --backing-store "$3" --bstype rdwr
    tgt --mode target --op bind --tid "$1" --initiator-address 127.0.0.1
}
start_tgtd() {
    TGT_PORT=$(free_port)
    TGT_CONTROL=$((20000 + RANDOM % 10000))  # tgtd takes -C 0..32767
    tgtd -f -C $TGT_CONTROL --iscsi portal=127.0.0.1:$TGT_PORT >"$BENCH_DIR/tgtd.log" 2>&1 &
    TGT_PID=$!
    PIDS+=($TGT_PID)
    wait_port $TGT_PORT "$BENCH_DIR/tgtd.log"
    tgt_target 1 iqn.2026-11.org.tgt:cu "$BENCH_DIR/tgt-cu.img" 64M
    tgt_target 2 iqn.2026-11.org.tgt:bench "$BENCH_DIR/tgt-bench.img" "$SIZE"
    TGT_CU=iscsi://127.0.0.1:$TGT_PORT/iqn.2026-11.org.tgt:cu/1
    TGT_URL=iscsi://127.0.0.1:$TGT_PORT/iqn.2026-11.org.tgt:bench/1
}
has_peer tgtd && start_tgtd

# --- conformance -----------------------------------------------------------------------------
declare -A CU_SECONDS
conformance() {  # conformance PEER URL
    echo "== conformance: $1" >&2
    local start=$SECONDS
    set +e
    timeout -k 5 1800 stdbuf -oL -eL iscsi-test-cu --dataloss --test=ALL --initiator-name=iqn.2026-11.org.strata:bench-1 \
        --initiator-name-2=iqn.2026-11.org.strata:bench-2 "$2" 2>&1 |
        /usr/bin/python3 "$REPORT" --log "$BENCH_DIR/cu-$1.log" --results "$BENCH_DIR/cu-$1.tsv" --label "$1" >&2
    set -e
    CU_SECONDS[$1]=$((SECONDS - start))
}

conformance_table() {
    /usr/bin/python3 - "$BENCH_DIR/cu-strata.tsv" "$BENCH_DIR/cu-tgtd.tsv" "${CU_SECONDS[strata]:--}" "${CU_SECONDS[tgtd]:--}" <<'PY'
import collections, os, sys
def load(path):
    rows = collections.OrderedDict()
    if not os.path.exists(path):
        return rows
    for line in open(path):
        name, status, _ = line.rstrip("\n").split("\t")
        rows[name] = status
    return rows
strata, tgtd = load(sys.argv[1]), load(sys.argv[2])
names = list(tgtd) + [n for n in strata if n not in tgtd]
suites = collections.OrderedDict()
for name in names:
    suite = name.split(".")[1]
    counts = suites.setdefault(suite, {"strata": collections.Counter(), "tgtd": collections.Counter()})
    counts["strata"][strata.get(name, "not run")] += 1
    counts["tgtd"][tgtd.get(name, "not run")] += 1
def cell(c):
    return "%d / %d / %d" % (c["pass"], c["fail"], c["skip"]) + (" (+%d not run)" % (c["not run"] + c["unfinished"]) if c["not run"] + c["unfinished"] else "")
print("| suite | Strata pass / fail / skip | tgtd pass / fail / skip |")
print("|---|---:|---:|")
total = {"strata": collections.Counter(), "tgtd": collections.Counter()}
for suite, counts in suites.items():
    print("| %s | %s | %s |" % (suite, cell(counts["strata"]), cell(counts["tgtd"])))
    for peer in total:
        total[peer].update(counts[peer])
print("| **all %d tests** | **%s** | **%s** |" % (len(names), cell(total["strata"]), cell(total["tgtd"])))
print()
print("Wall time of the suite: Strata %s s, tgtd %s s." % (sys.argv[3], sys.argv[4]))
print()
if not strata or not tgtd:
    sys.exit(0)
only_tgtd = [n for n in names if tgtd.get(n) == "pass" and strata.get(n) != "pass"]
only_strata = [n for n in names if strata.get(n) == "pass" and tgtd.get(n) != "pass"]
print("Passed by tgtd but not by Strata (%d): %s" % (len(only_tgtd), ", ".join("%s (%s)" % (n, strata.get(n, "not run")) for n in only_tgtd) or "none"))
print()
print("Passed by Strata but not by tgtd (%d): %s" % (len(only_strata), ", ".join("%s (%s)" % (n, tgtd.get(n, "not run")) for n in only_strata) or "none"))
PY
}

# --- speed -------------------------------------------------------------------------------------
declare -A RESULT
JOBS=("randread-4k-qd1:read:4096:1" "randread-4k-qd32:read:4096:32" "randwrite-4k-qd1:write:4096:1"
      "randwrite-4k-qd32:write:4096:32" "seqread-1M-qd8:read:1M:8" "seqwrite-1M-qd8:write:1M:8")
SCATTER=$(awk -v blocks=$(($(bytes "$SIZE") / 4096)) 'BEGIN { p = int(blocks * 0.6180339887); if (p % 2 == 0) p++; printf "%d", p * 4096 }')

# qemu_bench URL RW BS DEPTH: prints IOPS (4 KiB) or MiB/s (1 MiB) of one run.
qemu_bench() {
    local url=$1 rw=$2 bs=$3 depth=$4 count step extra=()
    if [ "$bs" = 4096 ]; then
        step=$SCATTER
        count=$([ "$depth" = 1 ] && echo "$COUNT_QD1" || echo "$COUNT_QD32")
    else
        step=$(bytes "$bs")
        count=$COUNT_1M
    fi
    [ "$rw" = write ] && extra=(-w --pattern=165)
    local seconds
    seconds=$(qemu-img bench -f raw "${extra[@]}" -c "$count" -d "$depth" -s "$bs" -S "$step" "$url" |
        sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p')
    [ -n "$seconds" ] || { echo "qemu-img bench $url $rw $bs $depth failed" >&2; exit 1; }
    if [ "$bs" = 4096 ]; then awk "BEGIN {printf \"%.0f\", $count / $seconds}"; else
        awk "BEGIN {printf \"%.1f\", $count * $(bytes "$bs") / 1048576 / $seconds}"; fi
}

# iscsi_perf URL BYTES DEPTH RANDOM: prints IOPS (4 KiB) or MiB/s (1 MiB).
iscsi_perf() {
    local url=$1 size=$2 depth=$3 random=$4 block iops
    block=$(iscsi-readcapacity16 "$url" | sed -n 's/^LOGICAL BLOCK LENGTH IN BYTES:\([0-9]*\)$/\1/p')
    iops=$(timeout $((RUNTIME + 30)) iscsi-perf -m "$depth" -b $((size / block)) -t "$RUNTIME" $random "$url" 2>&1 | tr '\r' '\n' |
        sed -n 's/^ *iops average \([0-9]*\) .*/\1/p' | tail -1)
    [ -n "$iops" ] || { echo "iscsi-perf $url failed" >&2; exit 1; }
    if [ "$size" = 4096 ]; then echo "$iops"; else awk "BEGIN {printf \"%.1f\", $iops * $size / 1048576}"; fi
}

run_peer() {  # run_peer PEER URL
    local peer=$1 url=$2
    echo "== speed: $peer" >&2
    local size_bytes
    size_bytes=$(bytes "$SIZE")
    # Write the whole image first: reads then read data, and writes overwrite allocated space.
    qemu-img bench -f raw -w --pattern=90 -c $((size_bytes / 1048576)) -d 8 -s 1M -S 1M "$url" >/dev/null
    for spec in "${JOBS[@]}"; do
        IFS=: read -r job rw bs depth <<<"$spec"
        local values=()
        for _ in $(seq 1 "$REPEAT"); do values+=("$(qemu_bench "$url" "$rw" "$bs" "$depth")"); done
        RESULT[$peer,qemu,$job]=$(printf '%s\n' "${values[@]}" | median)
        echo "   qemu-img bench $job: ${RESULT[$peer,qemu,$job]} (runs: ${values[*]})" >&2
    done
    for spec in "randread-4k-qd1:4096:1:-r" "randread-4k-qd32:4096:32:-r" "seqread-1M-qd8:1048576:8:"; do
        IFS=: read -r job size depth random <<<"$spec"
        local values=()
        for _ in $(seq 1 "$REPEAT"); do values+=("$(iscsi_perf "$url" "$size" "$depth" "$random")"); done
        RESULT[$peer,perf,$job]=$(printf '%s\n' "${values[@]}" | median)
        echo "   iscsi-perf $job: ${RESULT[$peer,perf,$job]} (runs: ${values[*]})" >&2
    done
}

speed_table() {
    echo "| tool | job (unit) | Strata | tgtd | Strata / tgtd |"
    echo "|---|---|---:|---:|---:|"
    for spec in "${JOBS[@]}"; do
        job=${spec%%:*}
        unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
        s=${RESULT[strata,qemu,$job]:--}; t=${RESULT[tgtd,qemu,$job]:--}
        echo "| qemu-img bench | $job ($unit) | $s | $t | $(ratio "$s" "$t") |"
    done
    for job in randread-4k-qd1 randread-4k-qd32 seqread-1M-qd8; do
        unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
        s=${RESULT[strata,perf,$job]:--}; t=${RESULT[tgtd,perf,$job]:--}
        echo "| iscsi-perf | $job ($unit) | $s | $t | $(ratio "$s" "$t") |"
    done
}

START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
case " $PARTS " in *" conformance "*)
    if has_peer strata; then
        conformance strata "$STRATA_CU"
        kill -0 "$STRATA_PID" 2>/dev/null || { echo "run-iscsi: Strata died during the conformance suite" >&2; exit 1; }
    fi
    has_peer tgtd && conformance tgtd "$TGT_CU"
    ;;
esac
case " $PARTS " in *" speed "*)
    has_peer strata && run_peer strata "$STRATA_URL"
    has_peer tgtd && run_peer tgtd "$TGT_URL"
    ;;
esac

# --- report ------------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- Sources Package.swift | wc -l)
echo "# iSCSI benchmarks"
echo
echo "- run: $(date -u +%Y-%m-%d), $((SECONDS - START)) s; commit $commit$([ "$dirty" -gt 0 ] && echo " with $dirty uncommitted changes under Sources/ or Package.swift")"
has_peer strata && echo "- strata: release build ($("$STRATA" --version 2>/dev/null || echo '?')); $(swift --version 2>/dev/null | head -1)"
echo "- tgtd $(tgtd -V 2>&1 | head -1) (Debian tgt $(dpkg-query -W -f='${Version}' tgt 2>/dev/null)), rdwr backing files"
echo "- libiscsi-bin $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null) (iscsi-test-cu, iscsi-perf); $(qemu-img --version | head -1)"
echo "- load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- nproc $(nproc); $(free -g | awk '/^Mem:/ {print $2 " GiB memory"}'); BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR==2 {print $2 " (" $1 ")"}')"
echo "- SIZE=$SIZE REPEAT=$REPEAT RUNTIME=$RUNTIME COUNT_QD1=$COUNT_QD1 COUNT_QD32=$COUNT_QD32 COUNT_1M=$COUNT_1M"
case " $PARTS " in *" conformance "*)
    echo
    echo "## Conformance: iscsi-test-cu --dataloss --test=ALL (64 MiB LUN each)"
    echo
    conformance_table
    ;;
esac
case " $PARTS " in *" speed "*)
    echo
    echo "## Speed (medians of $REPEAT; $SIZE image written in full first)"
    echo
    speed_table
    ;;
esac
