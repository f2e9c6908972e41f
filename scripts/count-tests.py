#!/usr/bin/env python3
"""Counts meson test results over one or more testlog.json files; prints 'N passed, N failed'.
Exits 1 if any test failed or was skipped, or if any log holds no test (a run that executed nothing fails)."""
import json
import sys

passed = failed = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        print(f"missing test log {path}", file=sys.stderr)
        failed += 1
        continue
    ran = 0
    for line in lines:
        if not line.strip():
            continue
        ran += 1
        r = json.loads(line)
        if r.get("result") in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r.get("result") == "SKIP":
            failed += 1  # the suites must really run, not skip
            print(f"skipped counts as failed: {r.get('name')}", file=sys.stderr)
        else:
            failed += 1
            print(f"failed: {r.get('name')} ({r.get('result')}) in {path}", file=sys.stderr)
    if ran == 0:  # every build's run must have executed tests
        failed += 1
        print(f"no test ran in {path}", file=sys.stderr)
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 and passed > 0 else 1)
