#!/bin/bash
# Runs on the GPU machine from the project root (see shared/devkit/README.md): device info, the cl test
# suites on the GPU, ceilings (fp32 FMA / mma.sync peaks, copy bandwidth), dua-bench and peers.py on the
# forward problem set of bench/RESULTS.md. Writes logs and JSON lines under $OUT.
#   bash bench/gpu_forward.sh [tests] [ceilings] [dua] [peers]      (default: all four)
set -uo pipefail
source .devkit/device-env.sh
export PYTHONUNBUFFERED=1 DUA_CACHE_DIR=/tmp/dua-cache
parts=${*:-tests ceilings dua peers}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
build-rel/tools/dua-info | tee "$OUT/dua-info.txt"
build-rel/tools/dua-info --json > "$OUT/dua-info.json"
for p in $parts; do
  case $p in
  tests)
    for t in runtime cache forward; do
      echo "== test_$t on the GPU"
      CK_FORK=no build-rel/test/test_$t 2>&1 | tail -4
    done 2>&1 | tee "$OUT/tests.txt" ;;
  ceilings)
    .devkit/nv-mma-peak 2>&1 | tail -8 | tee "$OUT/ceilings.txt"
    python3 - <<'PY' 2>&1 | tee -a "$OUT/ceilings.txt"
import torch
from triton.testing import do_bench
x = torch.empty(2**30 // 4 * 2, dtype=torch.float32, device="cuda").uniform_()  # 2 GiB
y = torch.empty_like(x)
ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
print(f"device copy: {2 * x.numel() * 4 / ms / 1e6:.1f} GB/s (read + write, 2 GiB, median {ms:.3f} ms)")
a = torch.randn(8192, 8192, device="cuda"); b = torch.randn(8192, 8192, device="cuda")
torch.backends.cuda.matmul.allow_tf32 = False
ms = do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
print(f"cuBLAS fp32 GEMM 8192^3: {2 * 8192**3 / ms / 1e9:.1f} TFLOP/s")
PY
    ;;
  dua)
    build-rel/tools/dua-bench --n 2048 --batch 8 --heads 8 --dim 64 --depth -1 3 0 --dtype fp16 fp32 --check \
      --json "$OUT/dua_2048.jsonl" 2>&1 | tail -16 | tee "$OUT/dua_2048.txt"
    build-rel/tools/dua-bench --n 8192 --batch 8 --heads 8 --dim 64 --depth -1 3 0 --dtype fp16 fp32 --force-naive \
      --json "$OUT/dua_8192.jsonl" 2>&1 | tail -22 | tee "$OUT/dua_8192.txt"
    build-rel/tools/dua-bench --n 32768 --batch 8 --heads 8 --dim 64 --depth -1 3 0 --dtype fp16 fp32 \
      --json "$OUT/dua_32768.jsonl" 2>&1 | tail -16 | tee "$OUT/dua_32768.txt"
    build-rel/tools/dua-bench --n 8192 --batch 8 --heads 8 --dim 64 --depth -1 3 --dtype fp16 --causal --no-naive \
      --json "$OUT/dua_causal.jsonl" 2>&1 | tail -8 | tee "$OUT/dua_causal.txt" ;;
  peers)
    python3 .devkit/peers.py --n 2048 8192 32768 --depth -1 3 0 --dtype fp16 fp32 2>&1 | grep '^{' > "$OUT/peers.jsonl"
    python3 .devkit/peers.py --n 8192 --depth -1 3 0 --dtype fp32 --tf32 2>&1 | grep '^{' > "$OUT/peers_tf32.jsonl"
    python3 .devkit/peers.py --n 8192 --depth -1 3 --dtype fp16 --causal 2>&1 | grep '^{' > "$OUT/peers_causal.jsonl"
    python3 -c "
import json,sys
for f in ['peers.jsonl','peers_tf32.jsonl','peers_causal.jsonl']:
    for l in open('$OUT/'+f):
        r=json.loads(l); print(f'{r[\"peer\"]:16s} n={r[\"n\"]:6d} depth={r[\"depth\"]:2d} {r[\"dtype\"]} causal={r[\"causal\"]} dens={r[\"density\"]:.4f} ms={r[\"ms\"]:.4f}')
" | tee "$OUT/peers.txt" ;;
  esac
done
