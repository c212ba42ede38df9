#!/usr/bin/python3
"""Parses /metrics pages with prometheus_client's text parser (python3-prometheus-client).

  metrics_check.py parse FILE                    checks the page parses; prints its families
  metrics_check.py value FILE NAME [LABEL=VALUE...]  prints one sample's value (fails if absent)
  metrics_check.py absent FILE NAME [LABEL=VALUE...] fails if such a sample exists
  metrics_check.py histogram FILE NAME [LABEL=VALUE...]  checks a histogram's buckets: cumulative,
                                                   +Inf == _count; prints _count
"""
import sys
from prometheus_client.parser import text_string_to_metric_families


def families(path):
    with open(path, encoding="utf-8") as page:
        return list(text_string_to_metric_families(page.read()))


def samples(path, name, labels):
    found = []
    for family in families(path):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append(sample)
    return found


def main():
    command, path = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else None
    labels = dict(arg.split("=", 1) for arg in sys.argv[4:])
    if command == "parse":
        parsed = families(path)
        if not parsed:
            sys.exit("no metric families")
        for family in parsed:
            print(family.name, family.type, len(family.samples))
    elif command == "value":
        found = [s for s in samples(path, name, labels) if "le" not in s.labels]
        if len(found) != 1:
            sys.exit(f"{name} {labels}: {len(found)} samples")
        print(int(found[0].value) if found[0].value == int(found[0].value) else found[0].value)
    elif command == "absent":
        found = samples(path, name, labels)
        if found:
            sys.exit(f"{name} {labels}: present: {found[0]}")
    elif command == "histogram":
        buckets = sorted(
            ((float(s.labels["le"]), s.value) for s in samples(path, name + "_bucket", labels)), key=lambda b: b[0])
        count = samples(path, name + "_count", labels)
        if not buckets or len(count) != 1:
            sys.exit(f"{name} {labels}: {len(buckets)} buckets, {len(count)} counts")
        values = [v for _, v in buckets]
        if values != sorted(values):
            sys.exit(f"{name} {labels}: buckets not cumulative: {buckets}")
        if buckets[-1][0] != float("inf") or buckets[-1][1] != count[0].value:
            sys.exit(f"{name} {labels}: +Inf bucket {buckets[-1]} != count {count[0].value}")
        print(int(count[0].value))
    else:
        sys.exit(f"unknown command {command}")


main()
