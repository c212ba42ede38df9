#!/usr/bin/python3
"""Checks a live Strata HTTP API against docs/openapi.yaml (python3-yaml, python3-jsonschema).

  api_check.py SPEC BASE_URL PATH...

For each concrete PATH (such as /api/v1/volumes/vm1) it finds the document's path template
that matches, GETs it, and checks that the status is one the operation documents, that the
Content-Type is the documented one, and that the body validates against the documented
schema (JSON Schema 2020-12, with the document's $refs resolved). It also checks that every
path template of the document was exercised by some PATH, so a new endpoint cannot go
untested. Prints one line per request; exits 1 on the first mismatch.
"""
import json
import re
import sys
import urllib.error
import urllib.request

import jsonschema
import yaml


def template_regex(template):
    return re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")


def main():
    spec_path, base, paths = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3:]
    with open(spec_path, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    if not str(spec.get("openapi", "")).startswith("3."):
        sys.exit("not an OpenAPI 3 document")
    # Resolve "#/components/..." references against the document itself.
    registry_schema = {"$id": "strata-openapi", "components": spec["components"]}
    resolver = jsonschema.RefResolver("", registry_schema, store={"": registry_schema})
    exercised = set()
    for path in paths:
        matches = [t for t in spec["paths"] if template_regex(t).match(path)]
        if len(matches) != 1:
            sys.exit(f"{path}: matches {matches} in the document")
        template = matches[0]
        exercised.add(template)
        operation = spec["paths"][template]["get"]
        try:
            with urllib.request.urlopen(base + path) as response:
                status, content_type, body = response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            status, content_type, body = error.code, error.headers["Content-Type"], error.read()
        documented = operation["responses"].get(str(status))
        if documented is None:
            sys.exit(f"GET {path}: status {status} is not documented for {template}")
        if "$ref" in documented:
            documented = resolver.resolve(documented["$ref"])[1]
        media_types = documented.get("content", {})
        media = content_type.split(";")[0].strip()
        if media not in media_types:
            sys.exit(f"GET {path}: Content-Type {content_type} is not documented ({list(media_types)})")
        schema = media_types[media]["schema"]
        value = json.loads(body) if media == "application/json" else body.decode("utf-8")
        validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            sys.exit(f"GET {path}: {errors[0].message} at {list(errors[0].path)}")
        print(f"GET {path}: {status} {media} valid against {template}")
    missing = set(spec["paths"]) - exercised
    if missing:
        sys.exit(f"paths of the document not exercised: {sorted(missing)}")


main()
