#!/usr/bin/env bash
# The dashboard in a real browser (Debian's chromium, headless): a pool with two volumes,
# snapshots, a clone of a snapshot, a clone of that clone's snapshot and some data written
# over NBD; chromium loads http://127.0.0.1:PORT/, runs its script (which polls /api/v1) and
# dumps the DOM. dom_check.py then asserts every volume and snapshot sits in the right place
# of the trees (snapshot under its volume, clone under its origin snapshot) and that the pool
# figures, each volume's space and each snapshot's exclusive bytes equal the API's. A
# screenshot goes to $OUTPUT_DIR/dashboard.png, for a person to look at.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/http-lib.sh"
requires chromium curl qemu-io

start_daemon
wait_http
strata volume create vm1 --size 64M >/dev/null
strata volume create db --size 32M >/dev/null
qemu-io -f raw -c 'write -P 0x11 0 8M' "$URI/vm1" >/dev/null || fail "qemu-io write vm1"
strata snapshot create vm1@monday >/dev/null
qemu-io -f raw -c 'write -P 0x22 0 2M' "$URI/vm1" >/dev/null || fail "qemu-io overwrite vm1"
strata snapshot create vm1@tuesday >/dev/null
strata clone vm1@monday vm1-test >/dev/null
qemu-io -f raw -c 'write -P 0x33 1M 1M' "$URI/vm1-test" >/dev/null || fail "qemu-io write vm1-test"
strata snapshot create vm1-test@fixed >/dev/null
strata clone vm1-test@fixed vm1-test2 >/dev/null
qemu-io -f raw -c 'write -P 0x44 0 4M' "$URI/db" >/dev/null || fail "qemu-io write db"
strata snapshot create db@nightly >/dev/null
# Commit, so the figures stay put while the browser and the API read them.
strata pool status >/dev/null

mkdir -p "$OUTPUT_DIR" "$WORKDIR/api" "$WORKDIR/chromium"
CHROMIUM=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
    --user-data-dir="$WORKDIR/chromium" --virtual-time-budget=8000)
timeout 120 "${CHROMIUM[@]}" --dump-dom "$(http_url /)" >"$WORKDIR/dom.html" 2>"$WORKDIR/chromium.log" \
    || fail "chromium --dump-dom: $(tail -5 "$WORKDIR/chromium.log")"
for resource in pool volumes snapshots; do http_get "/api/v1/$resource" >"$WORKDIR/api/$resource.json"; done
result=$(/usr/bin/python3 "$HTTP_DIR/dom_check.py" "$WORKDIR/dom.html" "$WORKDIR/api" 2>&1) \
    || { cp "$WORKDIR/dom.html" "$OUTPUT_DIR/dom.html"; fail "dashboard DOM: $result (DOM in $OUTPUT_DIR/dom.html)"; }
echo "REPORT dashboard: $result"
grep -q 'http://\|https://' <(sed 's#http://www.w3.org/2000/svg##g' "$WORKDIR/dom.html") \
    && fail "the page refers to another host"

timeout 120 "${CHROMIUM[@]}" --hide-scrollbars --window-size=1400,1100 --screenshot="$OUTPUT_DIR/dashboard.png" \
    "$(http_url /)" >"$WORKDIR/screenshot.log" 2>&1 || fail "chromium --screenshot: $(tail -5 "$WORKDIR/screenshot.log")"
[ -s "$OUTPUT_DIR/dashboard.png" ] || fail "no screenshot"
head -c 8 "$OUTPUT_DIR/dashboard.png" | od -An -c | grep -q 'P   N   G' || fail "the screenshot is not a PNG"
echo "REPORT screenshot: $OUTPUT_DIR/dashboard.png"
stop_daemon
echo "PASS $TEST_NAME"
