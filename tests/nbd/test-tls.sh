#!/usr/bin/env bash
# NBD over TLS (STARTTLS), with certificates this test makes with openssl:
# - start errors: TLS without credentials, a missing directory, a missing, unparsable or
#   mismatched file, contradicting options; each names the file or option, and no pool is made;
# - --tls require: nbdinfo and nbdcopy over nbds://…?tls-certificates=DIR (libnbd URIs), qemu-img
#   compare and qemu-io through qemu's --object tls-creds-x509 with --image-opts (qemu-img has
#   no nbds:// URI); a clear-text client gets NBD_REP_ERR_TLS_REQD for every option, no export
#   (EXPORT_NAME closes the connection), and a client trusting another CA is refused;
# - --tls on: clear-text and TLS clients both get the export;
# - --tls-verify-peer: a client certificate from the CA is accepted, none or one from another
#   CA is refused;
# - --tls-psk: nbdinfo with tls-psk-file= and qemu's tls-creds-psk get the export; a wrong key
#   is refused.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/pki.sh"
requires nbdinfo nbdcopy qemu-img qemu-io openssl /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires python3-libnbd

# Credentials: the server's; a client with a certificate from the same CA; a client with only
# the CA (no certificate); a client with a certificate from another CA; a client that trusts
# only the other CA.
pki_ca "$WORKDIR/ca" "Strata test CA"
pki_ca "$WORKDIR/other-ca" "Another CA"
pki_cert "$WORKDIR/ca" "$WORKDIR/server" server localhost
pki_cert "$WORKDIR/ca" "$WORKDIR/client" client "test client"
mkdir -p "$WORKDIR/anonymous" && cp "$WORKDIR/ca/ca-cert.pem" "$WORKDIR/anonymous/"
pki_cert "$WORKDIR/other-ca" "$WORKDIR/rogue" client "rogue client"
cp "$WORKDIR/ca/ca-cert.pem" "$WORKDIR/rogue/ca-cert.pem"
mkdir -p "$WORKDIR/wrong-ca" && cp "$WORKDIR/other-ca/ca-cert.pem" "$WORKDIR/wrong-ca/"

# --- Start errors: each exits non-zero at once, names the problem, and creates no pool.
# refused WHAT EXPECTED ARGS...: `strata serve ARGS` must fail and print EXPECTED.
refused() {
    local what=$1 expected=$2 status=0
    shift 2
    timeout 60 "$STRATA" serve --nbd "127.0.0.1:$(free_port)" --iscsi off "$@" >"$WORKDIR/start.out" 2>&1 || status=$?
    [ $status -ne 0 ] || fail "$what: serve started"
    grep -qF -- "$expected" "$WORKDIR/start.out" || fail "$what: want '$expected' in: $(cat "$WORKDIR/start.out")"
    [ ! -e "$STRATA_POOL" ] || fail "$what: a pool was made at $STRATA_POOL"
    echo "start refused ($what): $(head -1 "$WORKDIR/start.out")"
}
mkdir -p "$WORKDIR/bad"
cp "$WORKDIR/server/ca-cert.pem" "$WORKDIR/server/server-cert.pem" "$WORKDIR/bad/"
refused "require without credentials" "--tls-certificates DIR" --tls require
refused "a bad mode" "use off, on or require" --tls maybe
refused "certificates with TLS off everywhere" "TLS is off for NBD and for replication" --tls-certificates "$WORKDIR/server" \
    --replication-tls off
refused "replication TLS without certificates" "--replication-tls on needs credentials" --replication-tls on
refused "PSK with TLS off" "--tls-psk given, but TLS is off" --tls-psk "$WORKDIR/none.psk"
refused "a missing directory" "$WORKDIR/absent is not a directory" --tls on --tls-certificates "$WORKDIR/absent"
refused "a missing key" "$WORKDIR/bad/server-key.pem does not exist" --tls on --tls-certificates "$WORKDIR/bad"
echo "not a key" >"$WORKDIR/bad/server-key.pem"
refused "an unparsable key" "$WORKDIR/bad/server-key.pem is not an unencrypted PEM private key" --tls on --tls-certificates "$WORKDIR/bad"
cp "$WORKDIR/client/client-key.pem" "$WORKDIR/bad/server-key.pem"
refused "a key of another certificate" "$WORKDIR/bad/server-cert.pem and $WORKDIR/bad/server-key.pem do not make a pair" \
    --tls on --tls-certificates "$WORKDIR/bad"
echo "garbage" >"$WORKDIR/bad/server-cert.pem"
refused "an unparsable certificate" "$WORKDIR/bad/server-cert.pem is not a PEM certificate" --tls on --tls-certificates "$WORKDIR/bad"
rm "$WORKDIR/bad/ca-cert.pem"
refused "a missing CA certificate" "$WORKDIR/bad/ca-cert.pem does not exist" --tls on --tls-certificates "$WORKDIR/bad"
refused "verify-peer with PSK" "--tls-verify-peer checks client certificates" --tls on --tls-verify-peer --tls-psk "$WORKDIR/none.psk"
refused "both credentials" "not both" --tls on --tls-certificates "$WORKDIR/server" --tls-psk "$WORKDIR/none.psk"
echo "alice:xyz" >"$WORKDIR/bad.psk"
refused "a malformed PSK file" "$WORKDIR/bad.psk line 1 is not username:hexkey" --tls on --tls-psk "$WORKDIR/bad.psk"

# tls_uri DIR EXPORT: a libnbd URI over TLS with the credentials in DIR.
tls_uri() { echo "nbds://127.0.0.1:$PORT/$2?tls-certificates=$1"; }
# qemu_x509 DIR: qemu's client-side x509 credentials object for DIR.
qemu_x509() { echo "tls-creds-x509,id=tls0,dir=$1,endpoint=client"; }
qemu_opts() { echo "driver=nbd,host=127.0.0.1,port=$PORT,export=$1,tls-creds=tls0"; }
# (qemu-img takes --image-opts for every image or for none)
raw_opts() { echo "driver=raw,file.filename=$1"; }
tls_failures() { grep -c "TLS failed" "$WORKDIR/daemon.log" || true; }

# --- require: TLS clients work; clear text gets nothing.
start_daemon --tls require --tls-certificates "$WORKDIR/server"
grep -q "NBD on 127.0.0.1:$PORT (TLS require)" "$WORKDIR/daemon.log" || fail "the start line does not say TLS require"
strata volume create vm1 --size 64M >/dev/null
/usr/bin/python3 "$(dirname "$0")/nbdload.py" mkimage "$WORKDIR/a.raw" $((64 << 20)) 7
nbdcopy --flush "$WORKDIR/a.raw" "$(tls_uri "$WORKDIR/anonymous" vm1)" >"$WORKDIR/copy.out" 2>&1 \
    || fail "nbdcopy into nbds://: $(cat "$WORKDIR/copy.out")"
nbdinfo "$(tls_uri "$WORKDIR/anonymous" vm1)" >"$WORKDIR/info.txt" 2>&1 || fail "nbdinfo nbds://: $(cat "$WORKDIR/info.txt")"
grep -q "with TLS" "$WORKDIR/info.txt" || fail "nbdinfo does not report TLS: $(cat "$WORKDIR/info.txt")"
grep -q "export-size: $((64 << 20))" "$WORKDIR/info.txt" || fail "nbdinfo size: $(cat "$WORKDIR/info.txt")"
nbdinfo --list "nbds://127.0.0.1:$PORT?tls-certificates=$WORKDIR/anonymous" >"$WORKDIR/list.txt" 2>&1 \
    || fail "nbdinfo --list over TLS: $(cat "$WORKDIR/list.txt")"
grep -q '^export="vm1":' "$WORKDIR/list.txt" || fail "nbdinfo --list over TLS lacks vm1: $(cat "$WORKDIR/list.txt")"
qemu-img compare --object "$(qemu_x509 "$WORKDIR/anonymous")" --image-opts "$(raw_opts "$WORKDIR/a.raw")" "$(qemu_opts vm1)" \
    >"$WORKDIR/compare.out" 2>&1 || fail "qemu-img compare over TLS: $(cat "$WORKDIR/compare.out")"
echo "require: nbdcopy, nbdinfo, nbdinfo --list and qemu-img compare over TLS"
# A write through qemu's TLS, made to a.raw too (0x5a is octal 132), then the whole volume read
# back through libnbd's.
qemu-io --object "$(qemu_x509 "$WORKDIR/anonymous")" --image-opts "$(qemu_opts vm1)" \
    -c "write -P 0x5a 1M 64k" -c "read -P 0x5a 1M 64k" >"$WORKDIR/io.out" 2>&1 || fail "qemu-io over TLS: $(cat "$WORKDIR/io.out")"
head -c 65536 /dev/zero | tr '\0' '\132' | dd of="$WORKDIR/a.raw" bs=64k seek=16 conv=notrunc status=none
nbdcopy "$(tls_uri "$WORKDIR/anonymous" vm1)" "$WORKDIR/b.raw" >"$WORKDIR/copy.out" 2>&1 \
    || fail "nbdcopy out of nbds://: $(cat "$WORKDIR/copy.out")"
cmp "$WORKDIR/a.raw" "$WORKDIR/b.raw" || fail "the volume read back over TLS differs from what was written"

# A clear-text client, by hand: every option but STARTTLS and ABORT, known or not, is
# NBD_REP_ERR_TLS_REQD, and EXPORT_NAME (which has no error reply) ends the connection.
/usr/bin/python3 - "$PORT" <<'PY' || fail "clear-text client under --tls require"
import socket, struct, sys
port = int(sys.argv[1])
IHAVEOPT, REPLY_MAGIC, TLS_REQD, ACK = b"IHAVEOPT", 0x3E889045565A9, 0x80000005, 1

def recv_exact(s, n):
    data = b""
    while len(data) < n:
        piece = s.recv(n - len(data))
        if not piece:
            sys.exit(f"connection closed after {len(data)} of {n} bytes")
        data += piece
    return data

def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    greeting = recv_exact(s, 18)
    assert greeting[:16] == b"NBDMAGIC" + IHAVEOPT, greeting
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s

def option(s, code, data=b""):
    s.sendall(IHAVEOPT + struct.pack(">II", code, len(data)) + data)
    magic, opt, kind, length = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == REPLY_MAGIC and opt == code, (hex(magic), opt)
    return kind, recv_exact(s, length)

name = b"vm1"
info = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
meta = struct.pack(">I", len(name)) + name + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation"
s = connect()
for label, code, data in [("LIST", 3, b""), ("INFO", 6, info), ("GO", 7, info), ("STRUCTURED_REPLY", 8, b""),
                          ("LIST_META_CONTEXT", 9, meta), ("SET_META_CONTEXT", 10, meta), ("unknown 99", 99, b"")]:
    kind, message = option(s, code, data)
    if kind != TLS_REQD:
        sys.exit(f"{label} in clear text: reply 0x{kind:x}, want NBD_REP_ERR_TLS_REQD")
kind, _ = option(s, 2)  # ABORT is allowed
assert kind == ACK, hex(kind)
print(f"clear text: 7 options refused with TLS required ({message.decode()!r}); ABORT acknowledged")
s = connect()
s.sendall(IHAVEOPT + struct.pack(">II", 1, len(name)) + name)
rest = s.recv(200)
if rest != b"":
    sys.exit(f"EXPORT_NAME in clear text got {len(rest)} bytes, want the connection closed")
print("clear text: EXPORT_NAME closed the connection with no reply")
PY
status=0
nbdinfo "$URI/vm1" >"$WORKDIR/plain.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "nbdinfo in clear text got the export under --tls require"
echo "require: clear-text nbdinfo refused: $(grep -m1 "^nbdinfo:" "$WORKDIR/plain.out")"
status=0
qemu-img info "$URI/vm1" >"$WORKDIR/plain.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "qemu-img in clear text got the export under --tls require"
# A client that trusts another CA refuses the server's certificate.
before=$(tls_failures)
status=0
nbdinfo "$(tls_uri "$WORKDIR/wrong-ca" vm1)" >"$WORKDIR/wrong.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "a client trusting another CA connected"
status=0
qemu-img info --object "$(qemu_x509 "$WORKDIR/wrong-ca")" --image-opts "$(qemu_opts vm1)" >"$WORKDIR/wrong.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "qemu-img trusting another CA connected"
echo "require: clients trusting another CA refused ($(($(tls_failures) - before)) TLS failures logged)"
stop_daemon

# --- on: clear text and TLS both work.
start_daemon --tls on --tls-certificates "$WORKDIR/server"
nbdinfo "$URI/vm1" >"$WORKDIR/plain.out" 2>&1 || fail "nbdinfo in clear text under --tls on: $(cat "$WORKDIR/plain.out")"
grep -q "with TLS" "$WORKDIR/plain.out" && fail "a clear-text nbdinfo reports TLS"
nbdinfo "$(tls_uri "$WORKDIR/anonymous" vm1)" >"$WORKDIR/info.txt" 2>&1 || fail "nbdinfo nbds:// under --tls on"
grep -q "with TLS" "$WORKDIR/info.txt" || fail "nbdinfo nbds:// under --tls on is not TLS"
qemu-img compare -f raw "$WORKDIR/a.raw" "$URI/vm1" >/dev/null || fail "qemu-img compare in clear text under --tls on"
qemu-img compare --object "$(qemu_x509 "$WORKDIR/anonymous")" --image-opts "$(raw_opts "$WORKDIR/a.raw")" "$(qemu_opts vm1)" \
    >/dev/null || fail "qemu-img compare over TLS under --tls on"
echo "on: clear-text and TLS clients both served"
stop_daemon

# --- verify-peer: only a client certificate from ca-cert.pem's CA gets in.
start_daemon --tls require --tls-certificates "$WORKDIR/server" --tls-verify-peer
nbdinfo "$(tls_uri "$WORKDIR/client" vm1)" >"$WORKDIR/info.txt" 2>&1 || fail "nbdinfo with a client certificate: $(cat "$WORKDIR/info.txt")"
qemu-img compare --object "$(qemu_x509 "$WORKDIR/client")" --image-opts "$(raw_opts "$WORKDIR/a.raw")" "$(qemu_opts vm1)" \
    >"$WORKDIR/compare.out" 2>&1 || fail "qemu-img compare with a client certificate: $(cat "$WORKDIR/compare.out")"
# Each nbdinfo attempt must be refused by the server (its handshake failure is logged); qemu
# also refuses to use a client certificate its own ca-cert.pem did not sign, before connecting.
for dir in anonymous rogue; do
    before=$(tls_failures)
    status=0
    nbdinfo "$(tls_uri "$WORKDIR/$dir" vm1)" >"$WORKDIR/$dir.out" 2>&1 || status=$?
    [ $status -ne 0 ] || fail "--tls-verify-peer let in a client with the $dir credentials"
    [ "$(tls_failures)" -gt "$before" ] || fail "the server logged no refused handshake for the $dir client"
    status=0
    qemu-img info --object "$(qemu_x509 "$WORKDIR/$dir")" --image-opts "$(qemu_opts vm1)" >"$WORKDIR/$dir.out" 2>&1 || status=$?
    [ $status -ne 0 ] || fail "--tls-verify-peer let qemu-img in with the $dir credentials"
done
grep -q "PEER_DID_NOT_RETURN_A_CERTIFICATE" "$WORKDIR/daemon.log" || fail "no log of a client without a certificate"
echo "verify-peer: the CA's client certificate accepted; none and another CA's refused by the server"
stop_daemon

# --- PSK: nbdkit's and qemu's username:hexkey file.
mkdir -p "$WORKDIR/psk" "$WORKDIR/wrong-psk"
echo "alice:$(openssl rand -hex 32)" >"$WORKDIR/psk/keys.psk"
echo "alice:$(openssl rand -hex 32)" >"$WORKDIR/wrong-psk/keys.psk"
start_daemon --tls require --tls-psk "$WORKDIR/psk/keys.psk"
nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$WORKDIR/psk/keys.psk" >"$WORKDIR/info.txt" 2>&1 \
    || fail "nbdinfo with PSK: $(cat "$WORKDIR/info.txt")"
grep -q "with TLS" "$WORKDIR/info.txt" || fail "nbdinfo with PSK is not TLS"
qemu-img compare --object "tls-creds-psk,id=tls0,dir=$WORKDIR/psk,username=alice,endpoint=client" --image-opts "$(raw_opts "$WORKDIR/a.raw")" \
    "$(qemu_opts vm1)" >"$WORKDIR/compare.out" 2>&1 || fail "qemu-img compare with PSK: $(cat "$WORKDIR/compare.out")"
status=0
nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$WORKDIR/wrong-psk/keys.psk" >"$WORKDIR/wrong.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "a wrong PSK got in"
status=0
nbdinfo "nbds://mallory@127.0.0.1:$PORT/vm1?tls-psk-file=$WORKDIR/psk/keys.psk" >"$WORKDIR/wrong.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "an unknown PSK identity got in"
status=0
nbdinfo "$URI/vm1" >"$WORKDIR/plain.out" 2>&1 || status=$?
[ $status -ne 0 ] || fail "clear text got in under --tls require with PSK"
echo "psk: nbdinfo and qemu-img compare with the key; a wrong key, an unknown user and clear text refused"
stop_daemon

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
echo "PASS $TEST_NAME"
