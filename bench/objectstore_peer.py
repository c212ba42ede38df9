#!/usr/bin/python3
"""The plain client the object-store benchmark compares Strata with: Swift's native API over
python's http.client, one connection per worker thread, nothing else.

  objectstore_peer.py put FILE CONTAINER OBJECT_BYTES PARALLEL
        creates CONTAINER, uploads FILE as OBJECT_BYTES objects (keys bench/<index>) with
        PARALLEL PUTs at once; prints the seconds of the uploads
  objectstore_peer.py range CONTAINER KEY OFFSET LENGTH [IDLE]
        one ranged GET on an open connection, IDLE seconds (default 0) after the connection's
        last request; prints its seconds
  objectstore_peer.py fetch CONTAINER PARALLEL KEY...
        GETs every KEY whole, PARALLEL at once; prints the seconds

The endpoint and user come from STRATA_SWIFT_AUTH_URL, STRATA_SWIFT_USER, STRATA_SWIFT_KEY.
"""
import http.client, os, sys, threading, time, urllib.parse


def login():
    auth = urllib.parse.urlsplit(os.environ["STRATA_SWIFT_AUTH_URL"])
    conn = http.client.HTTPConnection(auth.hostname, auth.port, timeout=60)
    conn.request("GET", auth.path, headers={
        "X-Auth-User": os.environ["STRATA_SWIFT_USER"], "X-Auth-Key": os.environ["STRATA_SWIFT_KEY"]})
    answer = conn.getresponse()
    answer.read()
    if answer.status // 100 != 2:
        sys.exit("login: status %d" % answer.status)
    storage = urllib.parse.urlsplit(answer.getheader("X-Storage-Url"))
    return storage.hostname, storage.port, storage.path, answer.getheader("X-Auth-Token")


HOST, PORT, ACCOUNT, TOKEN = login()


def connect():
    return http.client.HTTPConnection(HOST, PORT, timeout=120)


def call(conn, method, path, body=None, headers=None):
    all_headers = {"X-Auth-Token": TOKEN}
    all_headers.update(headers or {})
    conn.request(method, ACCOUNT + "/" + path, body=body, headers=all_headers)
    answer = conn.getresponse()
    data = answer.read()
    if answer.status // 100 != 2:
        sys.exit("%s %s: status %d" % (method, path, answer.status))
    return data


def parallel(count, items, work):
    """Runs work(conn, item) for every item on `count` threads, each with its own connection."""
    lock = threading.Lock()
    queue = list(items)
    failures = []

    def worker():
        conn = connect()
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop(0)
            try:
                work(conn, item)
            except BaseException as error:  # noqa: a failed request fails the benchmark
                failures.append(error)
                return

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit("failed: %s" % failures[0])


def put(path, container, object_bytes, count):
    call(connect(), "PUT", container)
    size = os.path.getsize(path)
    indices = range((size + object_bytes - 1) // object_bytes)

    def upload(conn, index):
        with open(path, "rb") as f:
            f.seek(index * object_bytes)
            body = f.read(object_bytes)
        call(conn, "PUT", "%s/bench/%d" % (container, index), body=body)

    started = time.monotonic()
    parallel(count, indices, upload)
    print("%.6f" % (time.monotonic() - started))


def ranged(container, key, offset, length, idle=0.0):
    conn = connect()
    call(conn, "HEAD", container)  # the connection is open and authenticated before timing
    time.sleep(idle)
    started = time.monotonic()
    data = call(conn, "GET", container + "/" + key, headers={"Range": "bytes=%d-%d" % (offset, offset + length - 1)})
    elapsed = time.monotonic() - started
    assert len(data) == length, len(data)
    print("%.6f" % elapsed)


def fetch(container, count, keys):
    started = time.monotonic()
    parallel(count, keys, lambda conn, key: call(conn, "GET", container + "/" + key))
    print("%.6f" % (time.monotonic() - started))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "put":
        put(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif command == "range":
        ranged(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
    elif command == "fetch":
        fetch(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)
