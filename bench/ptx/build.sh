#!/bin/bash
# Local PTX, ptxas report and (optionally) SASS of dua's wgmma programs, without a GPU: clang 15's nvptx back
# end on the concatenated sources (prelude.cl maps the OpenCL built-ins), the DUA_SM90A lines uncommented and
# the target set to sm_90a and each kernel's DUA_MAXNREG cap made its .maxnreg, as host/runtime/ptx_sm90a.c does.
# NVIDIA's OpenCL compiler makes its own PTX: use this to check asm plumbing and register pressure before a
# device call, not as a measurement.
#   bash bench/ptx/build.sh fwd|bwd [MT] [CLDIR]   -> $PTX_OUT (default /tmp/dua-ptx)/{prog.ptx,prog.sass}
# HEAD_DIM (default 64) the head dim; inline functions are forced inline (at 128 clang otherwise leaves calls).
# PTXAS (default .devkit/bin/ptxas) and NVDISASM (optional: nvdisasm from the nvidia-cuda-nvdisasm wheel).
set -euo pipefail
prog=${1:?fwd or bwd}
mt=${2:-2}
dir=${3:-cl}
out=${PTX_OUT:-/tmp/dua-ptx}
ptxas=${PTXAS:-.devkit/bin/ptxas}
here=$(dirname "$0")
mkdir -p "$out"
srcs="$dir/common.cl $dir/nv_mma_ops.cl $dir/nv_wgmma_ops.cl $dir/attn_fwd_mma.cl"
[ "$prog" = bwd ] && srcs="$srcs $dir/attn_bwd_mma.cl" && mt=1
cat "$here/prelude.cl" $srcs >"$out/prog.cl"
clang-15 -x cl -cl-std=CL1.2 -target nvptx64-nvidia-nvcl -O3 -S -Xclang -finclude-default-header \
  -Xclang -fgnu-keywords -DHEAD_DIM=${HEAD_DIM:-64} "-Dinline=__attribute__((always_inline)) inline" -DMT="$mt" -DDUA_FP16=1 -DDUA_TF32=0 -DDUA_ENUM=0 -DDUA_TREE=0 \
  -DDUA_BIAS=0 -DDUA_SPLIT=${SPLIT:-0} ${EXTRA_DEFS:-} -DDUA_WGMMA=1 -DDUA_SM90A=1 "$out/prog.cl" -o "$out/clang.ptx"
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
s = open(f'{out}/clang.ptx').read()
s = re.sub(r'//\s*DUA_SM90A ', '', s)
s = re.sub(r'\.target sm_\w+', '.target sm_90a', s)
parts0 = re.split(r"(?=\.visible \.entry |\.entry )", s)
s = "".join(re.sub(r"DUA_ENTRY_PARAM_", (re.match(r"(?:\.visible )?\.entry (\w+)", q).group(1) + "_param_") if re.match(r"(?:\.visible )?\.entry ", q) else "DUA_ENTRY_PARAM_", q) for q in parts0)
s = re.sub(r'\.version \d+\.\d+', '.version 8.3', s)
# per entry, its body's "// DUA_MAXNREG n" becomes ".maxnreg n" before the body, as the runtime does
parts = re.split(r'(?=\.visible \.entry |\.entry )', s)
for i, part in enumerate(parts):
    cap = re.search(r'// DUA_MAXNREG (\d+)', part)
    if '.entry ' in part[:20] and cap and '{' in part:
        b = part.index('{')
        parts[i] = part[:b] + f'.maxnreg {cap.group(1)}\n' + part[b:]
open(f'{out}/prog.ptx', 'w').write(''.join(parts))
PY
"$ptxas" -arch=sm_90a -v "$out/prog.ptx" -o "$out/prog.cubin" 2>&1 |
  grep -E "Compiling entry|registers|spill|C75"
if [ -n "${NVDISASM:-}" ]; then
  "$NVDISASM" -c "$out/prog.cubin" 2>/dev/null >"$out/prog.sass"
  echo "$out/prog.sass: $(grep -c HGMMA "$out/prog.sass") HGMMA"
fi
