"""jsonl_rows.py: the JSON objects of JSON-lines files (dua-bench --json, peers.py), for the summary tables of
the bench/gpu_*.sh scripts. A missing file or a line that is not JSON is skipped."""
import json


def rows(paths):
    for path in paths:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                yield json.loads(line)
            except ValueError:
                continue
