#!/usr/bin/env bash
# NBD over TLS: fio's nbd engine against Strata (`--tls require`) and qemu-nbd (tls-creds-x509),
# both with the same certificates, both serving a raw image or volume on the same filesystem,
# both started by this script in the same run, with a release build of Strata; plus Strata in
# clear text, to show what TLS costs. Prints a markdown table of medians and ratios.
#
# fio's nbd engine hands the URI to libnbd but does not allow the URI to name local files
# (`tls-certificates=`), so libnbd takes its default credentials directory, $HOME/.pki/libnbd:
# the script points HOME at one holding the CA certificate. The servers do not ask for client
# certificates (qemu-nbd: verify-peer=off; Strata: no --tls-verify-peer).
#
#   BENCH_DIR  where images live (default /work/bench-tmp; not inside the repository)
#   SIZE       image size (default 2G)    RUNTIME  seconds per job (default 8)    REPEAT  runs per job (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio qemu-nbd nbdinfo openssl; do
    command -v $tool >/dev/null || { echo "run-tls: $tool is missing (apt-get install fio qemu-utils libnbd-bin openssl)" >&2; exit 1; }
done

source bench/lib.sh
source tests/nbd/pki.sh
bench_init tls
SIZE=${SIZE:-2G}
RUNTIME=${RUNTIME:-8}
REPEAT=${REPEAT:-3}
build_strata

JOBS=("randread-4k-qd32:randread:4k:32" "randwrite-4k-qd32:randwrite:4k:32" "seqread-1M:read:1M:8")
declare -A RESULT

pki_ca "$BENCH_DIR/ca" "Strata bench CA"
pki_cert "$BENCH_DIR/ca" "$BENCH_DIR/server" server localhost
mkdir -p "$BENCH_DIR/home/.pki/libnbd"
cp "$BENCH_DIR/ca/ca-cert.pem" "$BENCH_DIR/home/.pki/libnbd/"
export HOME=$BENCH_DIR/home

# run_peer NAME URI: fill the whole image (reads read data, writes overwrite), then every job
# REPEAT times (medians).
run_peer() {
    local peer=$1 uri=$2
    echo "== $peer" >&2
    fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null 2>&1 \
        || { echo "run-tls: fio cannot write to $uri" >&2; exit 1; }
    run_jobs "$peer" "$uri" "${JOBS[@]}"
}

# strata_peer NAME SCHEME ARGS...: a fresh pool served with ARGS, measured as NAME.
strata_peer() {
    local name=$1 scheme=$2
    shift 2
    export STRATA_POOL=$BENCH_DIR/$name
    PORT=$(free_port)
    "$STRATA" serve --iscsi off --nbd 127.0.0.1:$PORT --create-size 16G --log-level warning "$@" &
    local pid=$!
    PIDS+=($pid)
    wait_daemon $PORT
    "$STRATA" volume create vm1 --size "$SIZE" >/dev/null
    run_peer "$name" "$scheme://127.0.0.1:$PORT/vm1"
    kill $pid
    wait $pid || true
}

strata_peer strata-tls nbds --tls require --tls-certificates "$BENCH_DIR/server"

truncate -s "$SIZE" "$BENCH_DIR/qemu.raw"
PORT=$(free_port)
qemu-nbd -f raw -b 127.0.0.1 -p $PORT -t --shared=8 -x vm1 \
    --object "tls-creds-x509,id=tls0,dir=$BENCH_DIR/server,endpoint=server,verify-peer=off" --tls-creds tls0 \
    "$BENCH_DIR/qemu.raw" &
PIDS+=($!)
# (a bare TCP probe would make qemu-nbd log a failed negotiation; nbdinfo completes one)
for _ in $(seq 1 200); do nbdinfo --size "nbds://127.0.0.1:$PORT/vm1" >/dev/null 2>&1 && break; sleep 0.05; done
run_peer qemu-nbd-tls "nbds://127.0.0.1:$PORT/vm1"

strata_peer strata-clear nbd

echo
echo "| job (unit, median of $REPEAT) | Strata TLS | qemu-nbd TLS | Strata clear text | Strata TLS / qemu-nbd TLS | Strata TLS / clear |"
echo "|---|---:|---:|---:|---:|---:|"
for spec in "${JOBS[@]}"; do
    job=${spec%%:*}
    unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
    s=${RESULT[strata-tls,$job]}; q=${RESULT[qemu-nbd-tls,$job]}; c=${RESULT[strata-clear,$job]}
    echo "| $job ($unit) | $s | $q | $c | $(ratio "$s" "$q") | $(ratio "$s" "$c") |"
done
