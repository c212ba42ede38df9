# Shared setup of the benchmark scripts that start a release `strata` and their peers (sourced
# after `cd` to the repository root): a fresh scratch directory, the processes to stop on exit,
# the release build, and free loopback ports.

# bench_init NAME: BENCH_DIR becomes ${BENCH_DIR:-/work/bench-tmp}/NAME, emptied; every PID
# added to PIDS is stopped, and BENCH_DIR removed, when the script exits.
bench_init() {
    BENCH_DIR=${BENCH_DIR:-/work/bench-tmp}/$1
    rm -rf "$BENCH_DIR"
    mkdir -p "$BENCH_DIR"
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
    rm -rf "$BENCH_DIR"
}

# build_strata: a release build of the strata executable; sets STRATA.
build_strata() {
    echo "building strata (release)" >&2
    STRATA_NO_BENCH=1 swift build -c release --product strata >&2
    STRATA=$ROOT/.build/release/strata
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
