#!/bin/sh
# Runs the tuning database fuzzer for a while: new inputs go to a scratch corpus in the build directory,
# test/corpus/tuning/ is read as the seed corpus and left unchanged. usage: run_fuzz.sh FUZZER CORPUS WORK [SECONDS]
set -eu
mkdir -p "$3"
exec "$1" -max_total_time="${4:-30}" -timeout=10 -rss_limit_mb=2048 "$3" "$2"
