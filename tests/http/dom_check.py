#!/usr/bin/python3
"""Checks the dashboard's DOM (chromium --dump-dom) against the API's JSON.

  dom_check.py DOM.html API_DIR

API_DIR holds pool.json, volumes.json and snapshots.json from /api/v1. Checks that every
volume and snapshot appears exactly once in the trees, in the right place: a snapshot right
under its volume, a clone right under the snapshot it was made from (its `origin`), other
volumes at the top of a tree; that the page's pool figures, each volume's allocated bytes in
the space legend and each snapshot's exclusive bytes equal the API's; and that the page
loaded (body[data-loaded]). Prints a summary; exits 1 on the first mismatch.
"""
import json
import sys
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack = []          # open elements: (tag, attrs)
        self.nodes = {}          # data-name -> (kind, parent data-name or None)
        self.by_id = {}          # id -> attrs
        self.legend = {}         # volume -> data-bytes
        self.exclusive = {}      # snapshot full name -> data-exclusive-bytes
        self.loaded = False

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body" and attrs.get("data-loaded") == "true":
            self.loaded = True
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
        if "legend-volume" in attrs.get("class", "").split():
            self.legend[attrs["data-volume"]] = int(attrs["data-bytes"])
        if tag == "li" and "data-name" in attrs:
            parent = next((a["data-name"] for t, a in reversed(self.stack) if t == "li" and "data-name" in a), None)
            name = attrs["data-name"]
            if name in self.nodes:
                sys.exit(f"{name} appears twice in the trees")
            self.nodes[name] = (attrs["data-kind"], parent)
        if "data-exclusive-bytes" in attrs:
            owner = next((a["data-name"] for t, a in reversed(self.stack) if t == "li"), None)
            self.exclusive[owner] = int(attrs["data-exclusive-bytes"])
        if tag not in self.VOID:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag == tag:
                break


def main():
    dom_path, api = sys.argv[1], sys.argv[2]
    page = Page()
    with open(dom_path, encoding="utf-8") as file:
        page.feed(file.read())
    load = lambda name: json.load(open(f"{api}/{name}.json", encoding="utf-8"))
    pool, volumes, snapshots = load("pool"), load("volumes"), load("snapshots")
    if not page.loaded:
        sys.exit("the page's script did not finish a poll (body has no data-loaded)")
    expected = {}
    present = {f"{s['volume']}@{s['name']}" for s in snapshots}
    for volume in volumes:
        parent = volume.get("origin") if volume.get("origin") in present else None
        expected[volume["name"]] = ("volume", parent)
    for snapshot in snapshots:
        expected[f"{snapshot['volume']}@{snapshot['name']}"] = ("snapshot", snapshot["volume"])
    if page.nodes != expected:
        missing = {k: v for k, v in expected.items() if page.nodes.get(k) != v}
        extra = {k: v for k, v in page.nodes.items() if k not in expected}
        sys.exit(f"tree positions differ: expected {missing}, page has {[(k, page.nodes.get(k)) for k in missing]}, extra {extra}")
    figures = {"pool-capacity": "capacityBytes", "pool-used": "dataUsedBytes", "pool-free": "dataFreeBytes",
               "pool-metadata": "metadataUsedBytes"}
    for element, field in figures.items():
        shown = int(page.by_id[element]["data-bytes"])
        if shown != pool[field]:
            sys.exit(f"#{element} shows {shown}, the API's {field} is {pool[field]}")
    for element, field in {"pool-volumes": "volumes", "pool-snapshots": "snapshots"}.items():
        if int(page.by_id[element]["data-count"]) != pool[field]:
            sys.exit(f"#{element} differs from the API's {field}")
    for volume in volumes:
        if page.legend.get(volume["name"]) != volume["allocatedBytes"]:
            sys.exit(f"space legend for {volume['name']}: {page.legend.get(volume['name'])} != {volume['allocatedBytes']}")
    for snapshot in snapshots:
        full = f"{snapshot['volume']}@{snapshot['name']}"
        if page.exclusive.get(full) != snapshot["exclusiveBytes"]:
            sys.exit(f"{full} exclusive bytes: page {page.exclusive.get(full)}, API {snapshot['exclusiveBytes']}")
    print(f"{len(volumes)} volumes and {len(snapshots)} snapshots in place; pool figures, per-volume space "
          f"and per-snapshot exclusive bytes equal the API's")


main()
