#!/usr/bin/env bash
# The HTTP service's guards, with curl: read-only (POST, PUT, DELETE → 405 with Allow, and
# nothing changes), the bearer token (none or a wrong one → 401 on /metrics and /api/v1, the
# right one → 200; the dashboard's files need none), a non-loopback --http without a token
# refused before anything is bound, --http off, and HTTPS with certificates made by openssl in
# qemu's layout (curl --cacert succeeds, plain HTTP to the TLS port gets no response).
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/http-lib.sh"
requires curl openssl

# Non-loopback without a token: refused with the fix, and no pool was created.
status=0
"$STRATA" serve --nbd "127.0.0.1:$(free_port)" --iscsi off --http "0.0.0.0:$(free_port)" >"$WORKDIR/refused.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "serve --http 0.0.0.0:… without a token started"
grep -q -- "--http-token-file" "$WORKDIR/refused.out" || fail "the refusal does not name the fix: $(cat "$WORKDIR/refused.out")"
[ ! -e "$STRATA_POOL/pool.strata" ] || fail "the refused serve created a pool"
echo "REPORT refused: $(head -1 "$WORKDIR/refused.out")"

# A token on loopback guards the data.
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORKDIR/token"
TOKEN=$(cat "$WORKDIR/token")
start_daemon --http-token-file "$WORKDIR/token"
wait_http
strata volume create vm1 --size 16M >/dev/null
for path in /metrics /api/v1/pool /api/v1/volumes; do
    [ "$(http_status GET "$path")" = 401 ] || fail "GET $path without a token: not 401"
    [ "$(http_status GET "$path" -H "Authorization: Bearer wrong$TOKEN")" = 401 ] || fail "GET $path with a wrong token: not 401"
    [ "$(http_status GET "$path" -H "Authorization: Bearer ${TOKEN%?}")" = 401 ] || fail "GET $path with a prefix of the token: not 401"
    [ "$(http_status GET "$path" -H "Authorization: Bearer $TOKEN")" = 200 ] || fail "GET $path with the token: not 200"
done
curl -sS -D "$WORKDIR/headers" -o /dev/null "$(http_url /metrics)"
grep -qi '^WWW-Authenticate: Bearer' "$WORKDIR/headers" || fail "401 without WWW-Authenticate"
for path in / /dashboard.js /dashboard.css; do
    [ "$(http_status GET "$path")" = 200 ] || fail "GET $path (a dashboard file) needs no token"
done

# Read-only: every other method is 405 and changes nothing.
before=$(http_get /api/v1/volumes -H "Authorization: Bearer $TOKEN")
for method in POST PUT DELETE PATCH; do
    for path in / /metrics /api/v1/volumes /api/v1/volumes/vm1; do
        [ "$(http_status "$method" "$path" -H "Authorization: Bearer $TOKEN" -d '{}')" = 405 ] || fail "$method $path: not 405"
    done
done
curl -sS -D "$WORKDIR/headers" -o /dev/null -X DELETE "$(http_url /api/v1/volumes/vm1)"
grep -qi '^Allow: GET, HEAD' "$WORKDIR/headers" || fail "405 without Allow: GET, HEAD"
[ "$(http_get /api/v1/volumes -H "Authorization: Bearer $TOKEN")" = "$before" ] || fail "a refused method changed the volumes"
[ "$(http_status HEAD /api/v1/pool -H "Authorization: Bearer $TOKEN" --head)" = 200 ] || fail "HEAD /api/v1/pool: not 200"
stop_daemon

# --http off: no HTTP service.
start_daemon --http off
sleep 0.2
curl -s -o /dev/null "$(http_url /)" && fail "--http off still serves on $HTTP_PORT"
grep -q "HTTP off" "$WORKDIR/daemon.log" || fail "the start message does not say HTTP is off"
stop_daemon

# HTTPS with certificates in qemu's layout.
CERTS="$WORKDIR/certs"
mkdir -p "$CERTS"
(
    cd "$CERTS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=strata-test-ca" -keyout ca-key.pem -out ca-cert.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile ext.cnf -out server-cert.pem
) >"$WORKDIR/openssl.log" 2>&1 || fail "openssl: $(cat "$WORKDIR/openssl.log")"
start_daemon --http-tls-certificates "$CERTS"
for _ in $(seq 1 400); do
    curl -s -o /dev/null --cacert "$CERTS/ca-cert.pem" "https://127.0.0.1:$HTTP_PORT/" && break
    sleep 0.05
done
code=$(curl -sS -o "$WORKDIR/tls.json" -w '%{http_code}' --cacert "$CERTS/ca-cert.pem" "https://127.0.0.1:$HTTP_PORT/api/v1/pool") \
    || fail "HTTPS with the CA failed"
[ "$code" = 200 ] || fail "HTTPS GET /api/v1/pool: $code"
grep -q '"capacityBytes"' "$WORKDIR/tls.json" || fail "HTTPS body: $(cat "$WORKDIR/tls.json")"
curl -s -o /dev/null --max-time 5 "$(http_url /api/v1/pool)" && fail "plain HTTP to the HTTPS port was answered"
curl -s -o /dev/null --max-time 5 "https://127.0.0.1:$HTTP_PORT/" && fail "HTTPS without the CA was trusted"
grep -q "https://127.0.0.1:$HTTP_PORT/" "$WORKDIR/daemon.log" || fail "the start message does not give the https URL"
stop_daemon
echo "REPORT https: curl --cacert reads /api/v1/pool over TLS; plain HTTP and an unknown CA fail"
echo "PASS $TEST_NAME"
