#!/usr/bin/env python3
"""Checks docs/admin-api.openapi.yaml against the running admin API
(tests/ctl.rs feeds it what the server registers and what it answered).

    openapi_check.py DOC CASES.json

DOC is validated as an OpenAPI 3.1 document (openapi-spec-validator).
CASES.json holds {"routes": ["GET /v1/calls", ...], "answers": [{"method":
"GET", "route": "/v1/calls/{id}", "status": 200, "body": <JSON>}, ...]}:
every route must be in the document with its method, and every answer's
body must validate against the schema the document gives for that route,
method and status (JSON Schema 2020-12, as OpenAPI 3.1 uses). Prints each
problem and exits 1 if there is any, else prints a summary and exits 0.
"""

import json
import sys

import jsonschema
import yaml
from openapi_spec_validator import validate


def main() -> int:
    doc_path, cases_path = sys.argv[1], sys.argv[2]
    with open(doc_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    problems = []
    try:
        validate(spec)
    except Exception as e:  # the validator's own error types vary by version
        problems.append(f"{doc_path} is not a valid OpenAPI document: {e}")
    paths = spec.get("paths", {})
    for route in cases["routes"]:
        method, path = route.split(" ", 1)
        if method.lower() not in paths.get(path, {}):
            problems.append(f"{route}: registered by the server, missing from {doc_path}")
    for a in cases["answers"]:
        where = f"{a['method']} {a['route']} -> {a['status']}"
        op = paths.get(a["route"], {}).get(a["method"].lower())
        if op is None:
            problems.append(f"{where}: no such operation in the document")
            continue
        response = op.get("responses", {}).get(str(a["status"]))
        if response is None:
            problems.append(f"{where}: status not documented")
            continue
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[-1]
            response = spec["components"]["responses"][name]
        content = response.get("content", {})
        if "application/json" not in content:
            problems.append(f"{where}: documented without a JSON body")
            continue
        schema = dict(content["application/json"]["schema"])
        schema["components"] = spec["components"]
        validator = jsonschema.Draft202012Validator(schema)
        for err in validator.iter_errors(a["body"]):
            at = "/".join(str(p) for p in err.absolute_path) or "(root)"
            problems.append(f"{where}: at {at}: {err.message}")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"{len(cases['routes'])} routes documented, {len(cases['answers'])} answers valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
