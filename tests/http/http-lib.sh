# Shared helpers for tests/http/ (sourced after tests/lib.sh): the daemon's HTTP service at
# http://127.0.0.1:$HTTP_PORT (start_daemon picks the port).
#
#   OUTPUT_DIR  where a test leaves what a person should look at (screenshots); kept after the
#               test, under $STRATA_TEST_OUTPUT (default /tmp/strata-test-output)

OUTPUT_DIR="${STRATA_TEST_OUTPUT:-/tmp/strata-test-output}/$TEST_NAME"
HTTP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# http_url PATH: the URL of PATH on this test's daemon.
http_url() { echo "http://127.0.0.1:$HTTP_PORT$1"; }

# http_get PATH [CURL ARGS...]: the body of a GET, failing the test unless it is 200.
http_get() {
    local path=$1 status
    shift
    status=$(curl -sS -o "$WORKDIR/body" -w '%{http_code}' "$@" "$(http_url "$path")") || fail "GET $path: curl failed"
    [ "$status" = 200 ] || fail "GET $path: status $status: $(cat "$WORKDIR/body")"
    cat "$WORKDIR/body"
}

# http_status METHOD PATH [CURL ARGS...]: the status code of a request.
http_status() {
    local method=$1 path=$2
    shift 2
    curl -sS -o /dev/null -w '%{http_code}' -X "$method" "$@" "$(http_url "$path")"
}

# wait_http: waits up to 20 s for the HTTP service to answer.
wait_http() {
    for _ in $(seq 1 400); do
        curl -s -o /dev/null "$(http_url /)" && return 0
        sleep 0.05
    done
    fail "the HTTP service did not answer on $HTTP_PORT: $(tail -5 "$WORKDIR/daemon.log")"
}

# hold_nbd URI: opens one NBD connection (libnbd) and holds it until release_nbd; sets HOLDER.
hold_nbd() {
    /usr/bin/python3 - "$1" "$WORKDIR/held" <<'PY' &
import nbd, os, sys, time
handle = nbd.NBD()
handle.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.05)
PY
    HOLDER=$!
    STRATA_PIDS+=("$HOLDER")
    wait_started "$WORKDIR/held" "$HOLDER" || fail "the NBD client did not connect to $1"
}

# release_nbd: closes the connection hold_nbd opened.
release_nbd() {
    rm -f "$WORKDIR/held"
    wait "$HOLDER"
    forget "$HOLDER"
}
