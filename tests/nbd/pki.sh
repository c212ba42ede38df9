# Certificates for NBD TLS tests and benchmarks, made with openssl in the layout qemu's x509
# credentials and libnbd's tls-certificates= read: a directory holding ca-cert.pem plus
# server-cert.pem/server-key.pem (a server's) or client-cert.pem/client-key.pem (a client's).
# Sourced by tests/nbd/test-tls.sh and bench/run-tls.sh.
#
# The extensions are the ones qemu checks when it loads credentials: a CA with CA:TRUE and
# keyCertSign; a leaf with CA:FALSE, digitalSignature and keyEncipherment, serverAuth or
# clientAuth, and the names libnbd and qemu check the server against (localhost, 127.0.0.1).

# pki_ca DIR NAME: a new CA in DIR (ca-cert.pem, ca-key.pem).
pki_ca() {
    mkdir -p "$1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# pki_cert CA_DIR DIR ROLE NAME [SAN]: DIR gets ROLE-cert.pem and ROLE-key.pem (ROLE is server
# or client) signed by the CA in CA_DIR, and a copy of that CA's ca-cert.pem. SAN is the
# subjectAltName (default DNS:localhost,IP:127.0.0.1).
pki_cert() {
    local ca=$1 dir=$2 role=$3 usage=clientAuth san=${5:-DNS:localhost,IP:127.0.0.1}
    [ "$role" = server ] && usage=serverAuth
    mkdir -p "$dir"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$4" -keyout "$dir/$role-key.pem" -out "$dir/$role.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=$usage" "subjectAltName=$san" >"$dir/$role.ext"
    openssl x509 -req -in "$dir/$role.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" -CAcreateserial -days 2 \
        -extfile "$dir/$role.ext" -out "$dir/$role-cert.pem" 2>/dev/null
    cp "$ca/ca-cert.pem" "$dir/ca-cert.pem"
    rm -f "$dir/$role.csr" "$dir/$role.ext"
}
