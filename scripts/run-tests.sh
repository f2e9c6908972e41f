#!/bin/sh
# The README's test command: installs dependencies, builds with warnings as errors, runs the unit and cl
# suites, then runs them again under AddressSanitizer + UndefinedBehaviorSanitizer.
# Prints "N passed, N failed" last (counted from meson's test logs). Exit status 0 only if all passed.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
jobs=$(nproc)
meson setup build-test --buildtype=debugoptimized -Dwerror=true --wipe >/dev/null 2>&1 ||
  meson setup build-test --buildtype=debugoptimized -Dwerror=true
meson compile -C build-test
meson test -C build-test --suite unit --suite cl --num-processes "$jobs" --print-errorlogs || true

# Sanitizers: the ICD loader, PoCL and LLVM allocate at load time and never free (test/lsan.supp).
meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false --wipe >/dev/null 2>&1 ||
  meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
meson compile -C build-asan
# PoCL's worker threads can exit while LeakSanitizer stops the world at a test's end, and its tracer then
# crashed once in three runs ("Tracer caught signal 11", not a dua leak); one PoCL worker thread narrows
# that race (not proven to close it: if it recurs, the log shows the tracer message, not a dua frame).
POCL_MAX_PTHREAD_COUNT=1 \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$PWD/test/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --suite unit --suite cl --num-processes "$jobs" --print-errorlogs || true

python3 scripts/count-tests.py build-test/meson-logs/testlog.json build-asan/meson-logs/testlog.json
