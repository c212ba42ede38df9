#!/usr/bin/env python3
"""A recording relay for the fuzz corpus (scripts/fuzz-corpus.sh).

    capture.py LISTEN UPSTREAM OUTDIR

LISTEN and UPSTREAM are `HOST:PORT` (TCP) or a path (a Unix socket). Every connection accepted on
LISTEN is relayed to UPSTREAM unchanged; the bytes the client sent go to OUTDIR/N.client and the
bytes the server sent to OUTDIR/N.server, N counting connections from 1. OUTDIR/.listening
appears once LISTEN accepts connections. It runs until killed.
"""
import os
import socket
import sys
import threading


def endpoint(text):
    if text.startswith("/") or text.startswith("."):
        return socket.AF_UNIX, text
    host, port = text.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def pump(source, sink, path):
    with open(path, "wb") as log:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            log.write(data)
            log.flush()
            try:
                sink.sendall(data)
            except OSError:
                break
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    listen_family, listen_address = endpoint(sys.argv[1])
    upstream_family, upstream_address = endpoint(sys.argv[2])
    outdir = sys.argv[3]
    os.makedirs(outdir, exist_ok=True)
    server = socket.socket(listen_family, socket.SOCK_STREAM)
    if listen_family == socket.AF_INET:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(listen_address)
    server.listen(16)
    open(os.path.join(outdir, ".listening"), "w").close()
    count = 0
    while True:
        client, _ = server.accept()
        count += 1
        upstream = socket.socket(upstream_family, socket.SOCK_STREAM)
        upstream.connect(upstream_address)
        base = os.path.join(outdir, str(count))
        threading.Thread(target=pump, args=(client, upstream, base + ".client"), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, base + ".server"), daemon=True).start()


if __name__ == "__main__":
    main()
