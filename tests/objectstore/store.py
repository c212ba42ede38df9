#!/usr/bin/python3
"""The object store's own view for the tests, through Swift's native API (TempAuth v1.0),
independent of strata's clients. An S3 bucket of user test:tester is the Swift container of
the same name in account AUTH_test.

  store.py list CONTAINER PREFIX        keys, one a line
  store.py verify CONTAINER MANIFEST    fetch the manifest, check its header, body checksum,
                                        every object's SHA-256 and (version 2) every part's;
                                        every object's SHA-256; print the object count
  store.py keys CONTAINER MANIFEST      the object keys a manifest names, one a line
  store.py put-lease CONTAINER KEY      write a lease object now
  store.py delete CONTAINER KEY         delete one object
  store.py corrupt-header CONTAINER MANIFEST VERSION   rewrite a manifest's version field
  store.py put CONTAINER KEY            write stdin's bytes as the object KEY
  store.py key-of CONTAINER MANIFEST INDEX   the key of object INDEX in a manifest (none: a hole)
"""
import hashlib, json, os, sys, urllib.parse, urllib.request

def login():
    req = urllib.request.Request(os.environ["STRATA_SWIFT_AUTH_URL"], headers={
        "X-Auth-User": os.environ["STRATA_SWIFT_USER"], "X-Auth-Key": os.environ["STRATA_SWIFT_KEY"]})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]

URL, TOKEN = login()

def call(method, container, key="", query="", body=None):
    path = URL + "/" + urllib.parse.quote(container) + ("/" + urllib.parse.quote(key) if key else "")
    req = urllib.request.Request(path + query, data=body, method=method, headers={"X-Auth-Token": TOKEN})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()

def listing(container, prefix):
    keys, marker = [], ""
    while True:
        page = json.loads(call("GET", container, query="?format=json&prefix=%s&marker=%s" % (
            urllib.parse.quote(prefix), urllib.parse.quote(marker))) or b"[]")
        if not page:
            return keys
        keys += [o["name"] for o in page]
        marker = page[-1]["name"]

def manifest(container, key):
    data = call("GET", container, key)
    header_line, body = data.split(b"\n", 1)
    header = json.loads(header_line)
    assert header["format"] == "strata-manifest" and header["version"] in (1, 2), header
    assert header["bodyBytes"] == len(body), "body length"
    assert hashlib.sha256(body).hexdigest() == header["bodySHA256"], "body checksum"
    return header, json.loads(body)

cmd, container = sys.argv[1], sys.argv[2]
if cmd == "list":
    print("\n".join(listing(container, sys.argv[3])))
elif cmd == "keys":
    print("\n".join(sorted({o["key"] for o in manifest(container, sys.argv[3])[1]["objects"]})))
elif cmd == "verify":
    _, body = manifest(container, sys.argv[3])
    for o in body["objects"]:
        data = call("GET", container, o["key"])
        assert len(data) == o["bytes"], "object %d: %d bytes, manifest says %d" % (o["index"], len(data), o["bytes"])
        assert hashlib.sha256(data).hexdigest() == o["sha256"], "object %d: SHA-256 mismatch" % o["index"]
        # Version 2: every part's own SHA-256 (docs/OBJECTSTORE.md "Manifest").
        part = body.get("partSizeBytes")
        assert ("parts" not in o) or part, "object %d: parts without partSizeBytes" % o["index"]
        for number, digest in enumerate(o.get("parts", [])):
            piece = data[number * part:(number + 1) * part]
            assert hashlib.sha256(piece).hexdigest() == digest, "object %d part %d: SHA-256 mismatch" % (o["index"], number)
        assert len(o.get("parts", [])) in (0, -(-len(data) // (part or 1))), "object %d: part count" % o["index"]
    print(len(body["objects"]))
elif cmd == "put-lease":
    call("PUT", container, sys.argv[3], body=b"push lease written by the test\n")
elif cmd == "delete":
    call("DELETE", container, sys.argv[3])
elif cmd == "put":
    call("PUT", container, sys.argv[3], body=sys.stdin.buffer.read())
elif cmd == "key-of":
    entries = [o for o in manifest(container, sys.argv[3])[1]["objects"] if o["index"] == int(sys.argv[4])]
    print(entries[0]["key"] if entries else "none")
elif cmd == "corrupt-header":
    data = call("GET", container, sys.argv[3])
    header_line, body = data.split(b"\n", 1)
    header = json.loads(header_line)
    header["version"] = int(sys.argv[4])
    call("PUT", container, sys.argv[3], body=json.dumps(header).encode() + b"\n" + body)
else:
    sys.exit("unknown command " + cmd)
