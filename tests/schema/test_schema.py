#!/usr/bin/env python3
"""docs/events.schema.json agrees with docs/events.md and with the parser.

    python3 tests/schema/test_schema.py      (from anywhere in the repo)

Checks that the schema is valid JSON Schema 2020-12 (check_schema), that it
accepts every ```json example in docs/events.md and that those examples show
every event type, and that it rejects every event in tests/schema/invalid/
(each has exactly one defect; tests/unit/test_event.c feeds the same files to the C
parser, which must reject them too, with the code the file name starts with).

Prints one line per check and ends with "N passed, N failed"; exits 1 on
any failure. Needs python3-jsonschema (scripts/setup.sh installs it).
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "events.schema.json"
DOCS = ROOT / "docs" / "events.md"
INVALID = ROOT / "tests" / "schema" / "invalid"

passed = 0
failed = 0


def result(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what}" + (f": {detail}" if detail else ""))


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


def doc_examples():
    """The ```json blocks of docs/events.md, as (line number, text)."""
    text = DOCS.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```json\n(.*?)\n```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def main():
    try:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
    except ImportError:
        result(False, "import jsonschema", "install python3-jsonschema (scripts/setup.sh)")
        finish()

    try:
        schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        result(False, f"read {SCHEMA.relative_to(ROOT)}", str(e))
        finish()
    try:
        Draft202012Validator.check_schema(schema)
        result(True, "schema is valid JSON Schema 2020-12")
    except SchemaError as e:
        result(False, "schema is valid JSON Schema 2020-12", e.message)
        finish()
    result(schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema",
           "schema declares draft 2020-12")
    validator = Draft202012Validator(schema)
    types = schema["properties"]["type"]["enum"]

    seen = set()
    examples = doc_examples()
    for line, text in examples:
        what = f"docs/events.md:{line} example is valid"
        try:
            ev = json.loads(text)
        except ValueError as e:
            result(False, what, f"not JSON: {e}")
            continue
        what = f"docs/events.md:{line} {ev.get('type')} example is valid"
        errors = sorted(validator.iter_errors(ev), key=lambda e: list(e.path))
        result(not errors, what,
               "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                         for e in errors[:3]))
        seen.add(ev.get("type"))
    missing = [t for t in types if t not in seen]
    result(not missing, f"docs/events.md shows all {len(types)} types",
           "no example of " + ", ".join(missing))
    unknown = sorted(t for t in seen if t not in types)
    result(not unknown, "docs/events.md shows no type the schema lacks", ", ".join(map(str, unknown)))

    files = sorted(INVALID.glob("*.json"))
    result(len(files) >= 15, f"{len(files)} invalid examples (at least 15)")
    for f in files:
        what = f"tests/schema/invalid/{f.name} is rejected"
        try:
            ev = json.loads(f.read_text(encoding="utf-8"))
        except ValueError as e:
            result(False, what, f"not JSON: {e}")
            continue
        errors = list(validator.iter_errors(ev))
        if not errors:
            result(False, what, "the schema accepts it")
        elif len(errors) > 1:
            result(False, what, f"{len(errors)} defects, not one: " +
                   "; ".join(e.message[:60] for e in errors))
        else:
            where = "/".join(map(str, errors[0].path)) or "(root)"
            result(True, f"{what} ({where}: {errors[0].message[:70]})")
    finish()


if __name__ == "__main__":
    main()
