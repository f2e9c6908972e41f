#!/usr/bin/env python3
"""make_text_corpus.py: a UTF-8 text corpus for `dua-train --task text` on a machine without internet.

Concatenates the top-level modules of the running Python's standard library (sorted by name, each one kept
only if it decodes as UTF-8) until --mb megabytes, and prints the corpus's size, SHA-256 and source, so a
run can be traced to its exact bytes. Source code is text with long-range structure (indentation, matching
brackets, names defined far above their use), which is what block routing has to find.

usage: python3 bench/make_text_corpus.py OUT [--mb 8]
"""
import argparse
import hashlib
import os
import sysconfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size in MB (default 8)")
    a = ap.parse_args()
    src = sysconfig.get_paths()["stdlib"]
    limit = int(a.mb * 1e6)
    data = bytearray()
    used = 0
    for name in sorted(os.listdir(src)):
        if not name.endswith(".py") or len(data) >= limit:
            continue
        raw = open(os.path.join(src, name), "rb").read()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        data += raw[: limit - len(data)] if len(data) + len(raw) > limit else raw
        used += 1
    # a cut inside a multi-byte character would make the file invalid UTF-8: back off to a character start
    while data and (data[-1] & 0xC0) == 0x80:
        data.pop()
    if data and data[-1] >= 0xC0:
        data.pop()
    data.decode("utf-8")
    with open(a.out, "wb") as f:
        f.write(data)
    print(f"{a.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"{used} modules of {src}")


if __name__ == "__main__":
    main()
