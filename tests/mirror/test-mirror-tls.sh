#!/usr/bin/env bash
# A remote mirror leg over mutual TLS, two hosts in network namespaces made by the test: both
# daemons have --tls-certificates from one CA (the leg's certificate names its link-local
# address), so the leg's replication listener is TLS and the primary's leg connection is too;
# the leg syncs and stays equal to the volume under writes. A primary without certificates is
# refused by the TLS-only leg daemon, with an error that says so, and nothing reaches the leg.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
source "$(dirname "$0")/../nbd/pki.sh"
requires ip qemu-img qemu-io openssl
[ "$(id -u)" = 0 ] || requires root-for-ip-netns

two_hosts
pki_ca "$WORKDIR/ca" "Strata mirror test CA"
pki_cert "$WORKDIR/ca" "$WORKDIR/leg-certs" server leg "IP:$LEG_IP"
pki_cert "$WORKDIR/ca" "$WORKDIR/leg-certs" client leg "IP:$LEG_IP"
pki_cert "$WORKDIR/ca" "$WORKDIR/primary-certs" server primary "IP:$PRIMARY_IP"
pki_cert "$WORKDIR/ca" "$WORKDIR/primary-certs" client primary "IP:$PRIMARY_IP"

serve_in "$LEG_NS" "$LEG_POOL" "$LEG_IP" --replication "$LEG_IP:10810" --replication-secret-file "$SECRET" \
    --tls-certificates "$WORKDIR/leg-certs"
LEG_PID=$SERVED_PID
LEG_URI="nbd://$LEG_IP:10809"
grep -q "accepting replication on $LEG_IP:10810 with TLS" "$LEG_POOL.log" ||
    fail "the leg daemon does not accept replication with TLS: $(tail -3 "$LEG_POOL.log")"

# A primary without certificates: refused, nothing changes on either side.
serve_in "$PRIMARY_NS" "$PRIMARY_POOL" 127.0.0.1
PRIMARY_PID=$SERVED_PID
PRIMARY_URI=nbd://127.0.0.1:10809
strata volume create vm0 --size 16M >/dev/null
if strata mirror add vm0 --to "$LEG_IP:10810" --secret-file "$SECRET" --timeout 5s --wait >"$WORKDIR/plain.out" 2>&1; then
    fail "a primary without TLS added a leg on a TLS-only daemon"
fi
grep -q "TLS" "$WORKDIR/plain.out" || fail "the refusal does not say TLS: $(cat "$WORKDIR/plain.out")"
on_leg volume list | grep -q '^vm0 ' && fail "a refused add left vm0 on the leg daemon"
stop_host "$PRIMARY_PID"

# Both with certificates: the leg syncs over TLS and follows writes.
serve_in "$PRIMARY_NS" "$PRIMARY_POOL" 127.0.0.1 --tls-certificates "$WORKDIR/primary-certs"
PRIMARY_PID=$SERVED_PID
strata volume create vm1 --size 64M >/dev/null
in_primary qemu-io -f raw -c 'write -P 0x5a 0 8M' -c 'write -P 0x33 40M 4M' "$PRIMARY_URI/vm1" >/dev/null || fail "fill vm1"
strata mirror add vm1 --to "$LEG_IP:10810" --secret-file "$SECRET" --timeout 10s --wait >/dev/null || fail "mirror add vm1 over TLS"
wait_state vm1 leg1 connected
in_primary qemu-io -f raw -c 'write -P 0x77 12M 1M' -c 'flush' "$PRIMARY_URI/vm1" >/dev/null || fail "write vm1 while connected"
same_remote vm1
stop_host "$PRIMARY_PID"
stop_host "$LEG_PID"
STRATA_POOL="$LEG_POOL" "$STRATA" check >/dev/null || fail "leg pool check"
"$STRATA" check >/dev/null || fail "primary pool check"
echo "PASS $TEST_NAME"
