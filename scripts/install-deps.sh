#!/bin/sh
# Installs what dua needs on Debian 12 (run as root). Idempotent; quiet unless something fails.
set -eu
pkgs="build-essential meson ninja-build pkg-config python3 ocl-icd-opencl-dev opencl-c-headers
  pocl-opencl-icd clinfo libclblast-dev libcjson-dev libhwloc-dev libssl-dev check libsubunit-dev binutils"
missing=""
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
