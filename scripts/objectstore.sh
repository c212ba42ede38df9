#!/usr/bin/env bash
# scripts/objectstore.sh start|stop|destroy|env DIR: a real OpenStack Swift on loopback for the
# object-store tests (issue 11; docs/OBJECTSTORE.md, docs/TESTING.md). One node, one replica:
# a proxy serving the native API (TempAuth v1.0) and the S3 API (s3api), the account,
# container and object servers, and memcached (TempAuth keeps its tokens there).
#
#   start DIR    installs Debian's python3-swift, python3-swiftclient and memcached when missing
#                (diverting the swiftclient's /usr/bin/swift away from the Swift toolchain's
#                name first), writes everything under DIR, starts the five processes bound to
#                127.0.0.1, waits until they are healthy, writes DIR/objectstore.env
#   stop DIR     stops exactly the processes it started, by the PIDs in DIR/run (each checked
#                to still be ours: its command line names DIR), SIGTERM then SIGKILL after 5 s
#   destroy DIR  stop, then remove DIR (and the object data directory if it was placed elsewhere)
#   env DIR      prints DIR/objectstore.env: STRATA_SWIFT_AUTH_URL, _USER, _KEY, STRATA_S3_ENDPOINT,
#                _REGION, _ACCESS_KEY, _SECRET_KEY, ST_AUTH/ST_USER/ST_KEY for the `swift.openstack`
#                client, STRATA_OBJECTSTORE_DIR and STRATA_OBJECTSTORE_PIDS
#
# Ports: proxy=B, object=B+1, container=B+2, account=B+3, memcached=B+4. With
# STRATA_OBJECTSTORE_PORT_BASE=B that base is used or start fails; without it, the first base
# from 28080 up in steps of 10 whose five ports are free (the shared SAIO experiments use 18080).
#
# Users (TempAuth): test:tester/testing (admin of AUTH_test), test2:tester2/testing2,
# test:tester3/testing3 (no rights: for 403 tests). S3 access key = the Swift user, secret = key.
set -euo pipefail

die() { echo "objectstore: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 start|stop|destroy|env DIR"
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
PY=/usr/bin/python3
SERVERS="memcached account container object proxy"
RUN_USER=$(id -un)

pidfile() { echo "$DIR/run/$1.pid"; }

# alive NAME: the recorded PID runs, is not a zombie, and its command line names DIR (not a reused PID).
alive() {
    local f pid
    f=$(pidfile "$1")
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

choose_ports() {
    local base candidate ok p
    if [ -n "${STRATA_OBJECTSTORE_PORT_BASE:-}" ]; then
        base=$STRATA_OBJECTSTORE_PORT_BASE
        for p in 0 1 2 3 4; do port_free $((base + p)) || die "127.0.0.1:$((base + p)) is in use; choose another STRATA_OBJECTSTORE_PORT_BASE"; done
    else
        base=
        for candidate in $(seq 28080 10 28580); do
            ok=1
            for p in 0 1 2 3 4; do port_free $((candidate + p)) || { ok=0; break; }; done
            [ $ok = 1 ] && { base=$candidate; break; }
        done
        [ -n "$base" ] || die "no free port base between 28080 and 28580; set STRATA_OBJECTSTORE_PORT_BASE"
    fi
    PROXY_PORT=$base OBJECT_PORT=$((base + 1)) CONTAINER_PORT=$((base + 2)) ACCOUNT_PORT=$((base + 3)) MEMCACHED_PORT=$((base + 4))
}

ensure_packages() {
    local need=() p SUDO=
    for p in python3-swift python3-swiftclient memcached; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    echo "objectstore: installing ${need[*]}" >&2
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    # python3-swiftclient ships /usr/bin/swift, which would shadow the Swift toolchain's `swift`:
    # divert it to /usr/bin/swift.openstack before the package can install it.
    if ! dpkg-divert --list /usr/bin/swift | grep -q swift.openstack; then
        $SUDO dpkg-divert --local --rename --divert /usr/bin/swift.openstack --add /usr/bin/swift >/dev/null
    fi
    mkdir -p "$DIR/log"
    { $SUDO env RUNLEVEL=1 apt-get -q -o DPkg::Lock::Timeout=300 update &&
        $SUDO env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
            --no-install-recommends "${need[@]}"; } >"$DIR/log/apt.log" 2>&1 ||
        { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get failed; see $DIR/log/apt.log"; }
}

# Swift keeps object metadata in user xattrs; put the device where they work.
setup_device() {
    local dev="$DIR/srv/node/d1" candidate data
    mkdir -p "$DIR/srv/node"
    xattr_ok() {
        "$PY" - "$1" <<'EOF' 2>/dev/null
import os, sys, tempfile
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as f:
    os.setxattr(f.name, 'user.swift.probe', b'x' * 300)
EOF
    }
    [ -d "$dev/" ] && xattr_ok "$dev/" && return 0
    rm -rf "$dev"
    mkdir -p "$dev"
    xattr_ok "$dev" && return 0
    rmdir "$dev"
    for candidate in /var/tmp /tmp /dev/shm; do
        data=$(mktemp -d "$candidate/strata-objectstore-data.XXXXXX") || continue
        if xattr_ok "$data"; then ln -s "$data" "$dev"; return 0; fi
        rmdir "$data"
    done
    die "no filesystem with user xattrs for the object data"
}

write_launcher() {
    mkdir -p "$DIR/bin"
    # Points Swift at DIR/etc/swift.conf (it hard-codes /etc/swift/swift.conf), logs to
    # stderr instead of syslog, then runs a server or builds the rings.
    cat >"$DIR/bin/launch.py" <<'EOF'
import logging, os, sys
swift_conf, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
import swift.common.utils as utils
utils.SWIFT_CONF_FILE = swift_conf
class NoSyslog(logging.NullHandler):
    def __init__(self, *a, **kw):
        logging.NullHandler.__init__(self)
utils.ThreadSafeSysLogHandler = NoSyslog
if cmd == 'server':
    from swift.common.wsgi import run_wsgi
    sys.exit(run_wsgi(args[1], args[0], verbose=True))
elif cmd == 'rings':
    from swift.common.ring import RingBuilder
    for spec in args[1:]:
        name, port = spec.split(':')
        builder = RingBuilder(8, 1, 1)
        builder.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port),
                         'replication_ip': '127.0.0.1', 'replication_port': int(port),
                         'device': 'd1', 'weight': 100, 'meta': ''})
        builder.rebalance()
        builder.get_ring().save(os.path.join(args[0], name + '.ring.gz'))
EOF
}

server_conf() {  # server_conf NAME PORT APP
    cat >"$DIR/etc/$1-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
devices = $DIR/srv/node
mount_check = false
disable_fallocate = true
recon_cache_path = $DIR/cache
log_name = $1-server

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$3

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
}

write_configs() {
    mkdir -p "$DIR/etc" "$DIR/run" "$DIR/log" "$DIR/cache"
    printf '[swift-hash]\nswift_hash_path_prefix = strata-prefix\nswift_hash_path_suffix = strata-suffix\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' \
        >"$DIR/etc/swift.conf"
    server_conf account "$ACCOUNT_PORT" account
    server_conf container "$CONTAINER_PORT" container
    server_conf object "$OBJECT_PORT" object
    cat >"$DIR/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
log_name = proxy-server

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
conn_timeout = 0.5
node_timeout = 3
recoverable_node_timeout = 3
error_suppression_limit = 10
error_suppression_interval = 1

[filter:tempauth]
use = egg:swift#tempauth
reseller_prefix = AUTH
token_life = 86400
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
user_test_tester3 = testing3

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false
dns_compliant_bucket_names = true
allowable_clock_skew = 900

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF
    rm -f "$DIR"/etc/*.ring.gz
    "$PY" "$DIR/bin/launch.py" "$DIR/etc/swift.conf" rings "$DIR/etc" \
        "account:$ACCOUNT_PORT" "container:$CONTAINER_PORT" "object:$OBJECT_PORT" >"$DIR/log/rings.log" 2>&1 ||
        { cat "$DIR/log/rings.log" >&2; die "building the rings failed"; }
}

start_one() {
    local name=$1 pid
    case $name in
    memcached)
        # -P names a file under DIR, so its command line carries the DIR marker alive() checks.
        setsid memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -u "$RUN_USER" -P "$DIR/run/memcached.own.pid" \
            >>"$DIR/log/memcached.log" 2>&1 </dev/null &
        ;;
    *)
        setsid "$PY" "$DIR/bin/launch.py" "$DIR/etc/swift.conf" server "$name-server" "$DIR/etc/$name-server.conf" \
            >>"$DIR/log/$name.log" 2>&1 </dev/null &
        ;;
    esac
    pid=$!
    echo "$pid" >"$(pidfile "$name")"
    for _ in $(seq 1 100); do
        alive "$name" && return 0
        [ -d "/proc/$pid" ] || break
        sleep 0.05
    done
    alive "$name" || die "$name did not start; see $DIR/log/$name.log"
}

wait_healthy() {
    local deadline=$((SECONDS + 60)) port token ok name
    while :; do
        ok=1
        for name in $SERVERS; do alive "$name" || die "$name died during start-up; see $DIR/log/$name.log"; done
        for port in $ACCOUNT_PORT $CONTAINER_PORT $OBJECT_PORT $PROXY_PORT; do
            [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/healthcheck" || true)" = 200 ] || { ok=0; break; }
        done
        if [ $ok = 1 ]; then
            token=$(curl -s -m 3 -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
                "http://127.0.0.1:$PROXY_PORT/auth/v1.0" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
            if [ -n "$token" ] && [[ "$(curl -s -o /dev/null -m 3 -w '%{http_code}' -I -H "X-Auth-Token: $token" \
                "http://127.0.0.1:$PROXY_PORT/v1/AUTH_test" || true)" == 2* ]]; then
                return 0
            fi
        fi
        [ $SECONDS -lt $deadline ] || die "not healthy after 60 s; see $DIR/log/"
        sleep 0.2
    done
}

write_env() {
    local endpoint="http://127.0.0.1:$PROXY_PORT" pids="" name
    for name in $SERVERS; do pids+="$name=$(cat "$(pidfile "$name")") "; done
    cat >"$DIR/objectstore.env" <<EOF
# source this file: the object store started by scripts/objectstore.sh in $DIR
export STRATA_OBJECTSTORE_DIR='$DIR'
export STRATA_OBJECTSTORE_PIDS='${pids% }'
export STRATA_SWIFT_AUTH_URL='$endpoint/auth/v1.0'
export STRATA_SWIFT_USER='test:tester'
export STRATA_SWIFT_KEY='testing'
export STRATA_S3_ENDPOINT='$endpoint'
export STRATA_S3_REGION='us-east-1'
export STRATA_S3_ACCESS_KEY='test:tester'
export STRATA_S3_SECRET_KEY='testing'
export ST_AUTH='$endpoint/auth/v1.0' ST_USER='test:tester' ST_KEY='testing'
EOF
}

stop_all() {
    local name pid
    for name in proxy object container account memcached; do
        if alive "$name"; then
            pid=$(cat "$(pidfile "$name")")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pidfile "$name")"
    done
}

case $CMD in
start)
    for name in $SERVERS; do alive "$name" && die "already running in $DIR (stop it first)"; done
    command -v curl >/dev/null || die "curl is required"
    ensure_packages
    choose_ports
    setup_device
    write_launcher
    write_configs
    for name in $SERVERS; do start_one "$name"; done
    wait_healthy
    write_env
    echo "objectstore: Swift (native and S3 API) on http://127.0.0.1:$PROXY_PORT; source $DIR/objectstore.env"
    ;;
stop) stop_all ;;
destroy)
    stop_all
    [ -f "$DIR/etc/swift.conf" ] && [ -f "$DIR/bin/launch.py" ] || die "$DIR is not an objectstore directory; not removing it"
    [ -L "$DIR/srv/node/d1" ] && rm -rf "$(readlink "$DIR/srv/node/d1")"
    rm -rf "$DIR"
    ;;
env)
    [ -f "$DIR/objectstore.env" ] || die "no $DIR/objectstore.env; run start first"
    cat "$DIR/objectstore.env"
    ;;
*) die "usage: $0 start|stop|destroy|env DIR" ;;
esac
