#!/bin/sh
# Installs the build into a scratch root and builds test/consumer/consumer.c against the installed dua.pc.
set -eu
build=$1
src=$2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --destdir "$root" --no-rebuild >/dev/null
pcfile=$(find "$root" -name dua.pc | head -1)
[ -n "$pcfile" ] || { echo "dua.pc was not installed"; exit 1; }
pc=$(dirname "$pcfile")
export PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$root"
for f in dua.h dua_cl.h; do find "$root" -name "$f" | grep -q . || { echo "$f was not installed"; exit 1; }; done
find "$root" -name dua-info | grep -q . || { echo "dua-info was not installed"; exit 1; }
lib=$(find "$root" -name 'libdua.so.*.*' | head -1)
extra=""  # a sanitizer build of libdua needs the sanitizer runtime in the consumer too
objdump -p "$lib" | grep -q 'NEEDED.*libasan' && extra="-fsanitize=address,undefined"
cc -std=c11 -Wall -Wextra -Werror $extra $(pkg-config --cflags dua) "$src" -o "$root/consumer" $(pkg-config --libs dua)
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "libdua.so.0" ] || { echo "unexpected SONAME $soname"; exit 1; }
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'libdua.so' | head -1)")" "$root/consumer"
