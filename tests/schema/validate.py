#!/usr/bin/env python3
"""Validates m365mail message records against docs/message.schema.json.

Usage: validate.py FILE...   (each FILE: one JSON record, or NDJSON — one record per line; `-` reads stdin)
Prints `valid N` and exits 0 when every record is valid; otherwise prints each error and exits 1.
"""
import json
import pathlib
import sys

import jsonschema

SCHEMA = json.loads((pathlib.Path(__file__).resolve().parents[2] / "docs" / "message.schema.json").read_text())
validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
jsonschema.Draft202012Validator.check_schema(SCHEMA)


def records(path):
    text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text(encoding="utf-8")
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("{") and "\n{" not in stripped:
        return [json.loads(stripped)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    count, failures = 0, 0
    for path in sys.argv[1:]:
        for record in records(path):
            count += 1
            for error in validator.iter_errors(record):
                failures += 1
                where = "/".join(str(p) for p in error.absolute_path)
                print(f"{path}: record {record.get('id')!r}: {where}: {error.message}")
    print(f"valid {count - failures if failures == 0 else 0} of {count}" if failures else f"valid {count}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
