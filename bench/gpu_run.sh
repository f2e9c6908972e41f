#!/bin/bash
# Runs on the GPU machine from the project root (see shared/devkit/README.md). Parts, in the order given:
#   tests     the cl test programs on the GPU (forward, backward, tensor-core forward, runtime, cache)
#   ceilings  fp32 FMA / mma.sync peaks (nv-mma-peak), device copy and cuBLAS fp32 GEMM (torch)
#   fwd       dua-bench forward: N 2048 8192 32768, depths -1 3 0, fp16 fp32, + causal N 8192; then peers.py
#             on the same problems, in the same call
#   fwdbwd    dua-bench --pass fwdbwd at N 2048 8192 (depths -1 3 0), 32768 (-1 3), causal 8192; then peers.py
#   sweep     the forward tile sweep (bench/gpu_tile_sweep.sh)
# Output (at most 8 files come back): $OUT/{gpu.txt,tests.txt,ceilings.txt,dua_fwd.jsonl,peers_fwd.jsonl,
# dua_fwdbwd.jsonl,peers_fwdbwd.jsonl,sweep.txt}; a summary table is printed last.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 DUA_CACHE_DIR=/tmp/dua-cache
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="build-rel/tools/dua-bench --batch 8 --heads 8 --dim 64"
P="python3 .devkit/peers.py --batch 8 --heads 8 --dim 64"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv; \
  build-rel/tools/dua-info; } > "$OUT/gpu.txt" 2>&1
for part in ${*:-tests ceilings fwd}; do
  case $part in
  tests)
    for t in forward backward forward_mma runtime cache; do
      [ -x build-rel/test/test_$t ] || continue
      echo "== test_$t"; CK_FORK=no build-rel/test/test_$t 2>&1 | tail -3
      echo "== test_$t with DUA_NO_MMA=1"; DUA_NO_MMA=1 CK_FORK=no build-rel/test/test_$t 2>&1 | tail -1
    done > "$OUT/tests.txt" 2>&1
    cat "$OUT/tests.txt" ;;
  ceilings)
    { .devkit/nv-mma-peak 2>&1 | tail -8
      python3 - <<'PY'
import torch
from triton.testing import do_bench
x = torch.empty(2**29, dtype=torch.float32, device="cuda").uniform_()  # 2 GiB
y = torch.empty_like(x)
ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
print(f"device copy: {2 * x.numel() * 4 / ms / 1e6:.1f} GB/s (read + write, 2 GiB, median {ms:.3f} ms)")
a = torch.randn(8192, 8192, device="cuda"); b = torch.randn(8192, 8192, device="cuda")
torch.backends.cuda.matmul.allow_tf32 = False
ms = do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
print(f"cuBLAS fp32 GEMM 8192^3: {2 * 8192**3 / ms / 1e9:.1f} TFLOP/s")
PY
    } > "$OUT/ceilings.txt" 2>&1; cat "$OUT/ceilings.txt" ;;
  fwd)
    $B --n 2048 --depth -1 3 0 --dtype fp16 fp32 --check --json - 2>/dev/null > "$OUT/dua_fwd.jsonl"
    $B --n 8192 --depth -1 3 0 --dtype fp16 fp32 --force-naive --json - 2>/dev/null >> "$OUT/dua_fwd.jsonl"
    $B --n 32768 --depth -1 3 0 --dtype fp16 fp32 --no-naive --json - 2>/dev/null >> "$OUT/dua_fwd.jsonl"
    $B --n 8192 --depth -1 3 --dtype fp16 --causal --no-naive --json - 2>/dev/null >> "$OUT/dua_fwd.jsonl"
    { $P --n 2048 8192 32768 --depth -1 3 0 --dtype fp16 fp32
      $P --n 8192 --depth -1 3 0 --dtype fp32 --tf32 | sed 's/"peer": "/"tf32": true, "peer": "/'
      $P --n 8192 --depth -1 3 --dtype fp16 --causal; } 2>/dev/null | grep '^{' > "$OUT/peers_fwd.jsonl" ;;
  fwdbwd)
    $B --n 2048 8192 --depth -1 3 0 --dtype fp16 fp32 --pass fwdbwd --json - 2>/dev/null > "$OUT/dua_fwdbwd.jsonl"
    $B --n 32768 --depth -1 3 --dtype fp16 fp32 --pass fwdbwd --no-dense --json - 2>/dev/null >> "$OUT/dua_fwdbwd.jsonl"
    $B --n 8192 --depth -1 3 --dtype fp16 --causal --pass fwdbwd --json - 2>/dev/null >> "$OUT/dua_fwdbwd.jsonl"
    { $P --n 2048 8192 --depth -1 3 0 --dtype fp16 fp32 --pass fwdbwd
      $P --n 32768 --depth -1 3 --dtype fp16 fp32 --pass fwdbwd
      $P --n 8192 --depth -1 3 --dtype fp16 --causal --pass fwdbwd; } 2>/dev/null | grep '^{' \
      > "$OUT/peers_fwdbwd.jsonl" ;;
  sweep)
    bash bench/gpu_tile_sweep.sh > "$OUT/sweep.txt" 2>&1; cat "$OUT/sweep.txt" ;;
  esac
done
python3 bench/summarize.py "$OUT"
