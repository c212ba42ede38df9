#!/usr/bin/env bash
# Replication over mutual TLS: two daemons with --tls-certificates from one CA replicate a
# volume (and the replica's listener speaks TLS and asks for a client certificate); a source
# whose certificate another CA signed is refused by the replica, a replica whose certificate
# another CA signed is refused by the source, and a source without certificates (plain TCP) is
# refused; in every refused case nothing reaches the replica and the error says TLS.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/replication-lib.sh"
source "$(dirname "$0")/../nbd/pki.sh"
requires openssl

GOOD="$WORKDIR/ca-good"
EVIL="$WORKDIR/ca-evil"
pki_ca "$GOOD" "Strata test CA"
pki_ca "$EVIL" "Another CA"
# Each daemon's directory holds a server pair (it accepts) and a client pair (it connects).
for who in source replica; do
    pki_cert "$GOOD" "$WORKDIR/$who-certs" server "$who"
    pki_cert "$GOOD" "$WORKDIR/$who-certs" client "$who"
done
# A rogue source: trusts the right CA, but its own certificate is the other CA's.
pki_cert "$EVIL" "$WORKDIR/rogue-certs" client rogue
pki_cert "$EVIL" "$WORKDIR/rogue-certs" server rogue
cp "$GOOD/ca-cert.pem" "$WORKDIR/rogue-certs/ca-cert.pem"

STRATA_POOL="$REPLICA_POOL" start_daemon --replication "127.0.0.1:$REPLICATION_PORT" \
    --replication-secret-file "$SECRET" --tls-certificates "$WORKDIR/replica-certs"
REPLICA_PID=$DAEMON_PID
wait_until 20 "the replication port" bash -c "echo >/dev/tcp/127.0.0.1/$REPLICATION_PORT"
grep -q "accepting replication on 127.0.0.1:$REPLICATION_PORT with TLS" "$WORKDIR/daemon.log" ||
    fail "the replica does not say it accepts replication with TLS: $(tail -3 "$WORKDIR/daemon.log")"

# The listener is TLS with the CA's certificate for 127.0.0.1, and asks for a client certificate.
openssl s_client -connect "127.0.0.1:$REPLICATION_PORT" -CAfile "$GOOD/ca-cert.pem" -verify_ip 127.0.0.1 \
    -cert "$WORKDIR/source-certs/client-cert.pem" -key "$WORKDIR/source-certs/client-key.pem" \
    </dev/null >"$WORKDIR/s_client.out" 2>&1 || true
grep -q "Verify return code: 0 (ok)" "$WORKDIR/s_client.out" || fail "the replication port is not TLS with the CA's certificate: $(tail -20 "$WORKDIR/s_client.out")"
grep -q "Acceptable client certificate CA names" "$WORKDIR/s_client.out" || fail "the replication port does not ask for a client certificate"

STRATA_POOL="$SOURCE_POOL" start_daemon --tls-certificates "$WORKDIR/source-certs"
SOURCE_PID=$DAEMON_PID
on_source volume create vm1 --size 64M >/dev/null
head -c 8M /dev/urandom >"$WORKDIR/a.raw"
on_source import "$WORKDIR/a.raw" vm1 >/dev/null
on_source replicate start vm1 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$SECRET" --every 1h >/dev/null
wait_until 60 "the first replicated snapshot" on_replica snapshot list vm1
[ "$(job_field errors)" = "0" ] || fail "replication over TLS counted errors: $(on_source replicate status --json)"
on_source replicate stop vm1 >/dev/null
same_snapshot "$(newest_replicated)"
kill -TERM "$SOURCE_PID"; wait "$SOURCE_PID" || fail "the source did not stop cleanly"

# refused_source NAME ARGS...: a fresh source daemon started with ARGS tries to replicate vm2;
# the attempt fails, nothing named vm2 reaches the replica.
refused_source() {
    local name=$1
    shift
    rm -rf "$SOURCE_POOL"
    STRATA_POOL="$SOURCE_POOL" start_daemon "$@"
    SOURCE_PID=$DAEMON_PID
    on_source volume create vm2 --size 16M >/dev/null
    on_source replicate start vm2 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$SECRET" --every 1s >/dev/null
    wait_until 60 "a refused attempt ($name)" bash -c "[ \"\$(STRATA_POOL=$SOURCE_POOL $STRATA replicate status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"errors\"])')\" != 0 ]"
    on_source replicate status --json >"$WORKDIR/status-$name.json"
    on_source replicate stop vm2 >/dev/null
    on_replica volume list | grep -q '^vm2 ' && fail "$name: vm2 reached the replica"
    kill -TERM "$SOURCE_PID"; wait "$SOURCE_PID" || fail "$name: the source did not stop cleanly"
}

refused_source rogue --tls-certificates "$WORKDIR/rogue-certs"
grep -qi "TLS" "$WORKDIR/status-rogue.json" || fail "rogue source: the error does not say TLS: $(cat "$WORKDIR/status-rogue.json")"

refused_source plain
grep -q "accepts only TLS" "$WORKDIR/status-plain.json" || fail "plain source: the error does not say the peer takes only TLS: $(cat "$WORKDIR/status-plain.json")"

# A replica whose certificate another CA signed: the source refuses it.
ROGUE_PORT=$(free_port)
STRATA_POOL="$WORKDIR/rogue-replica" start_daemon --replication "127.0.0.1:$ROGUE_PORT" \
    --replication-secret-file "$SECRET" --tls-certificates "$WORKDIR/rogue-certs"
ROGUE_PID=$DAEMON_PID
wait_until 20 "the rogue replication port" bash -c "echo >/dev/tcp/127.0.0.1/$ROGUE_PORT"
rm -rf "$SOURCE_POOL"
STRATA_POOL="$SOURCE_POOL" start_daemon --tls-certificates "$WORKDIR/source-certs"
SOURCE_PID=$DAEMON_PID
on_source volume create vm3 --size 16M >/dev/null
on_source replicate start vm3 --to "127.0.0.1:$ROGUE_PORT" --secret-file "$SECRET" --every 1s >/dev/null
wait_until 60 "the source refusing the rogue replica" bash -c "STRATA_POOL=$SOURCE_POOL $STRATA replicate status --json | grep -qi 'TLS'"
on_source replicate stop vm3 >/dev/null
STRATA_POOL="$WORKDIR/rogue-replica" "$STRATA" volume list | grep -q '^vm3 ' && fail "vm3 reached the rogue replica"
kill -TERM "$SOURCE_PID" "$ROGUE_PID"
wait "$SOURCE_PID" "$ROGUE_PID" || true

on_replica check >/dev/null || fail "replica check"
echo "PASS $TEST_NAME"
