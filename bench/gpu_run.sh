#!/bin/bash
# Runs on the GPU machine from the project root (see shared/devkit/README.md). Parts, in the order given:
#   tests     the cl test programs on the GPU (forward, backward, tensor-core forward, runtime, cache, decode)
#   ceilings  fp32 FMA / mma.sync peaks (nv-mma-peak), device copy and cuBLAS fp32 GEMM (torch)
#   fwd       dua-bench forward: N 2048 8192 32768, depths -1 3 0, fp16 fp32, + causal N 8192; then peers.py
#             on the same problems, in the same call
#   fwdbwd    dua-bench --pass fwdbwd at N 2048 8192 (depths -1 3 0), 32768 (-1 3), causal 8192; then peers.py
#   sweep     the forward tile sweep (bench/gpu_tile_sweep.sh)
#   decode    test_decode on the GPU; dua-bench --pass decode on the issue's problems (batch 32, dim 128, block
#             128, heads 8 and GQA 32/8, contexts 8K and 16K, depths 0..4, fp16; fp32, page = block, ragged
#             lengths, window + sink at 16K), each measuring the device copy bandwidth in the same run; then
#             peers.py --pass decode (SDPA dense and FlexAttention, contiguous KV) on the same problems
#   decodesweep  decode tile x split sweep (DUA_DECODE_TILE, DUA_DECODE_SPLITS) on the fp16 16K problem,
#             depths 0 and 4
#   decode2   the regs decode kernel ("new", DUA_DECODE_KERNEL=regs) against the staged one ("v1",
#             DUA_DECODE_KERNEL=staged) in one call: tests (default, 5 splits); fp16 and fp32 at 8K and 16K,
#             depths 0 2 4, heads 8, and GQA 32/8 fp16 16K, for both kernels, checked; the other fp16
#             conversions DUA_DECODE_HALF=1,2 (checked); a tile x split sweep of regs (adds no point after
#             190 s); peers.py fp16 8K/16K depths 0 2 4 and fp32 16K dense (at most 100 s). Under 300 s. (The
#             run in bench/RESULTS.md, commit 44b83f7, had regs at tiles 64,128,8 fp16 / 32,128,16 fp32; since
#             then regs defaults to 32,128,8 / 32,256,16.)
#   decode3   the per-case kernel choice (host/attention/decode.c) checked once: test_decode; dua-bench
#             decode with the defaults, fp16 and fp32 16K depths 0 2 4 heads 8, GQA 32/8 fp16 16K depths 0 4
#             and fp16 8K depths 0 2 4, checked; then, same call, the kernel not chosen on the heads-8 rows
#             (staged for fp16, regs for fp32) as the baseline (skipped after 100 s). No peers, no sweep.
#             Under 120 s.
#   decode4   the warp decode kernel (cl/attn_decode_warp.cl, DUA_DECODE_KERNEL=warp) against the default
#             choice in one call: test_decode with warp forced; dua-bench decode fp16 and fp32 at 8K and 16K,
#             depths 0 2 4, heads 8, and GQA 32/8 fp16 16K depths 0 4, checked, for warp and for the default;
#             a warp tile x split sweep (16K fp16 depths 0 4; stops after 200 s); peers.py fp16 8K/16K
#             depths 0 2 4 (at most 70 s). Under 330 s.
#   decode5   the defaults after decode4 (warp on NVIDIA, splits sized by the visible keys): test_decode;
#             dua-bench decode fp16/fp32 8K/16K depths 0 1 2 3 4 heads 8, GQA 32/8 fp16 16K depths 0 2 4,
#             ragged, window + sink, checked; a split sweep at depths 2 and 4 and GQA rows per work-group
#             (stops after 200 s); peers.py fp16 8K/16K depths 0..4 and window + sink (at most 80 s).
# Output (at most 8 files come back per call): $OUT/{gpu.txt,tests.txt,ceilings.txt,dua_fwd.jsonl,
# peers_fwd.jsonl,dua_fwdbwd.jsonl,peers_fwdbwd.jsonl,sweep.txt}, $OUT/{decode_test.txt,dua_decode.jsonl,
# dua_decode.log,peers_decode.jsonl} (decode), $OUT/decode_sweep.jsonl (decodesweep) and
# $OUT/{decode2_test.txt,dua_decode2.jsonl,dua_decode2.log,decode2_sweep.jsonl,peers_decode2.jsonl} (decode2),
# $OUT/{decode3_test.txt,dua_decode3.jsonl,dua_decode3.log} (decode3), $OUT/{decode4_test.txt,dua_decode4.jsonl,
# dua_decode4.log,decode4_sweep.jsonl,peers_decode4.jsonl} (decode4), the same names with 5 (decode5);
# a summary table is printed last.
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
    for t in forward backward forward_mma runtime cache decode; do
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
  decode)
    { echo "== test_decode"; CK_FORK=no build-rel/test/test_decode 2>&1 | tail -3
      echo "== test_decode with DUA_DECODE_SPLITS=5"; DUA_DECODE_SPLITS=5 CK_FORK=no build-rel/test/test_decode 2>&1 \
        | tail -1; } > "$OUT/decode_test.txt" 2>&1; cat "$OUT/decode_test.txt"
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    { $D --heads 8 --n 8192 16384 --depth 0 1 2 3 4 --dtype fp16 --check
      $D --heads 32 --kv-heads 8 --n 8192 16384 --depth 0 1 2 3 4 --dtype fp16 --check
      $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp32
      $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp16 --page 128
      $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp16 --ragged
      $D --heads 8 --n 16384 --depth 4 --window 256 --sink 4 --dtype fp16; } 2>"$OUT/dua_decode.log" \
      > "$OUT/dua_decode.jsonl"; grep -E "copy|CHECK|check|failed" "$OUT/dua_decode.log"
    P="python3 .devkit/peers.py --pass decode --batch 32 --dim 128 --block 128"
    { $P --heads 8 --n 8192 16384 --depth 0 1 2 3 4 --dtype fp16
      $P --heads 8 --n 16384 --depth 0 2 4 --dtype fp32
      $P --heads 8 --n 16384 --depth 4 --window 256 --sink 4 --dtype fp16 | sed 's/^{/{"window": 256, "sink": 4, /'
    } 2>/dev/null | grep '^{' \
      > "$OUT/peers_decode.jsonl" ;;
  decodesweep)
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    for tile in 32,128,16 32,256,16 32,64,16 16,128,16 16,64,16; do
      for splits in auto 2 4 8 16; do
        if [ $splits = auto ]; then unset DUA_DECODE_SPLITS; else export DUA_DECODE_SPLITS=$splits; fi
        DUA_DECODE_TILE=$tile $D --heads 8 --n 16384 --depth 0 4 --dtype fp16 --no-dense 2>/dev/null \
          | sed "s/^{/{\"tile\": \"$tile\", \"splits\": \"$splits\", /"
      done
    done > "$OUT/decode_sweep.jsonl"; unset DUA_DECODE_SPLITS ;;
  decode2)
    T=build-rel/test/test_decode
    { for e in DUA_DECODE_HALF=0 DUA_DECODE_SPLITS=5; do
        echo "== test_decode with $e"; env $e CK_FORK=no $T 2>&1 | tail -1; done; } > "$OUT/decode2_test.txt" 2>&1
    cat "$OUT/decode2_test.txt"
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    tag() { sed "s/^{/{\"kernel\": \"$1\", /"; }
    { for k in v1 new; do
        [ $k = v1 ] && export DUA_DECODE_KERNEL=staged || export DUA_DECODE_KERNEL=regs
        $D --heads 8 --n 8192 16384 --depth 0 2 4 --dtype fp16 --check | tag $k
        $D --heads 8 --n 8192 16384 --depth 0 2 4 --dtype fp32 --check | tag $k
        $D --heads 32 --kv-heads 8 --n 16384 --depth 0 4 --dtype fp16 --check | tag $k
      done; export DUA_DECODE_KERNEL=regs
      for h in 1 2; do DUA_DECODE_HALF=$h $D --heads 8 --n 16384 --depth 0 4 --dtype fp16 --check | tag new-half$h; done
    } 2>"$OUT/dua_decode2.log" > "$OUT/dua_decode2.jsonl"; grep -E "copy b|CHECK|check.*(bad|fail)|failed" "$OUT/dua_decode2.log"
    for point in 64,128,8:auto 64,128,8:4 64,128,8:16 64,128,8:32 32,128,8:auto 128,128,8:auto 64,256,8:auto \
        64,64,8:auto 32,128,16:auto@fp32 64,128,16:auto@fp32 32,256,16:auto@fp32 32,128,16:16@fp32; do
      [ $SECONDS -gt 190 ] && { echo "decode2 sweep: stopped at $point (time)"; break; }
      tile=${point%%:*}; rest=${point#*:}; splits=${rest%@*}; dt=fp16; [ "$rest" != "${rest%@fp32}" ] && dt=fp32
      if [ $splits = auto ]; then unset DUA_DECODE_SPLITS; else export DUA_DECODE_SPLITS=$splits; fi
      DUA_DECODE_TILE=$tile $D --heads 8 --n 16384 --depth 0 4 --dtype $dt --no-dense 2>/dev/null \
        | sed "s/^{/{\"tile\": \"$tile\", \"splits\": \"$splits\", /"
    done > "$OUT/decode2_sweep.jsonl"; unset DUA_DECODE_SPLITS DUA_DECODE_KERNEL
    P="python3 .devkit/peers.py --pass decode --batch 32 --dim 128 --block 128 --heads 8"
    { timeout 70 $P --n 8192 16384 --depth 0 2 4 --dtype fp16; timeout 30 $P --n 16384 --depth 0 --dtype fp32
    } 2>/dev/null \
      | grep '^{' > "$OUT/peers_decode2.jsonl" ;;
  decode3)
    { echo "== test_decode"; CK_FORK=no build-rel/test/test_decode 2>&1 | tail -3; } > "$OUT/decode3_test.txt" 2>&1
    cat "$OUT/decode3_test.txt"
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    tag() { sed "s/^{/{\"kernel\": \"$1\", /"; }
    { $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp16 fp32 --check | tag default
      $D --heads 32 --kv-heads 8 --n 16384 --depth 0 4 --dtype fp16 --check | tag default
      $D --heads 8 --n 8192 --depth 0 2 4 --dtype fp16 --check | tag default
      if [ $SECONDS -le 100 ]; then
        DUA_DECODE_KERNEL=staged $D --heads 8 --n 8192 16384 --depth 0 2 4 --dtype fp16 --no-dense | tag staged
        DUA_DECODE_KERNEL=regs $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp32 --no-dense | tag regs
      else echo "decode3: baselines skipped (time)" >&2; fi
    } 2>"$OUT/dua_decode3.log" > "$OUT/dua_decode3.jsonl"
    grep -E "copy b|CHECK|check.*(bad|fail)|failed|skipped" "$OUT/dua_decode3.log" ;;
  decode4)
    { echo "== test_decode, DUA_DECODE_KERNEL=warp"; DUA_DECODE_KERNEL=warp CK_FORK=no build-rel/test/test_decode 2>&1 | tail -3
    } > "$OUT/decode4_test.txt" 2>&1
    cat "$OUT/decode4_test.txt"
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    tag() { sed "s/^{/{\"kernel\": \"$1\", /"; }
    { for k in warp default; do
        if [ $k = warp ]; then export DUA_DECODE_KERNEL=warp; else unset DUA_DECODE_KERNEL; fi
        $D --heads 8 --n 8192 16384 --depth 0 2 4 --dtype fp16 fp32 --check | tag $k
        $D --heads 32 --kv-heads 8 --n 16384 --depth 0 4 --dtype fp16 --check | tag $k
      done; export DUA_DECODE_KERNEL=warp
    } 2>"$OUT/dua_decode4.log" > "$OUT/dua_decode4.jsonl"; grep -E "copy b|CHECK|check.*(bad|fail)|failed" "$OUT/dua_decode4.log"
    for point in 8,128,4:auto 16,128,4:auto 4,128,4:auto 8,256,4:auto 16,256,4:auto 8,64,4:auto 8,128,4:4 \
        8,128,4:16 16,128,4:16 4,128,4@fp32:auto 8,128,4@fp32:auto 16,256,4@fp32:auto; do
      [ $SECONDS -gt 200 ] && { echo "decode4 sweep: stopped at $point (time)"; break; }
      tile=${point%%[:@]*}; splits=${point##*:}; dt=fp16; [ "$point" != "${point%@fp32*}" ] && dt=fp32
      if [ $splits = auto ]; then unset DUA_DECODE_SPLITS; else export DUA_DECODE_SPLITS=$splits; fi
      DUA_DECODE_TILE=$tile $D --heads 8 --n 16384 --depth 0 4 --dtype $dt --no-dense 2>/dev/null \
        | sed "s/^{/{\"tile\": \"$tile\", \"splits\": \"$splits\", /"
    done > "$OUT/decode4_sweep.jsonl"; unset DUA_DECODE_SPLITS DUA_DECODE_KERNEL
    P="python3 .devkit/peers.py --pass decode --batch 32 --dim 128 --block 128 --heads 8"
    timeout 70 $P --n 8192 16384 --depth 0 2 4 --dtype fp16 2>/dev/null | grep '^{' > "$OUT/peers_decode4.jsonl" ;;
  decode5)
    { echo "== test_decode"; CK_FORK=no build-rel/test/test_decode 2>&1 | tail -3; } > "$OUT/decode5_test.txt" 2>&1
    cat "$OUT/decode5_test.txt"
    D="build-rel/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --json -"
    { $D --heads 8 --n 8192 16384 --depth 0 1 2 3 4 --dtype fp16 fp32 --check
      $D --heads 32 --kv-heads 8 --n 16384 --depth 0 2 4 --dtype fp16 --check
      $D --heads 8 --n 16384 --depth 0 2 4 --dtype fp16 --ragged --check | sed 's/^{/{"ragged_run": 1, /'
      $D --heads 8 --n 16384 --depth 4 --window 256 --sink 4 --dtype fp16 --check
    } 2>"$OUT/dua_decode5.log" > "$OUT/dua_decode5.jsonl"; grep -E "copy b|CHECK|check.*(bad|fail)|failed" "$OUT/dua_decode5.log"
    for point in 1:fp16:8 2:fp16:8 4:fp16:8 8:fp16:8 16:fp16:8 1:fp32:8 2:fp32:8 8:fp32:8 auto:fp16:32/8@4,128,1 \
        auto:fp16:32/8@4,128,2 auto:fp16:32/8@4,256,4 auto:fp16:8@4,64,4 auto:fp16:8@2,128,4; do
      [ $SECONDS -gt 200 ] && { echo "decode5 sweep: stopped at $point (time)"; break; }
      splits=${point%%:*}; rest=${point#*:}; dt=${rest%%:*}; rest=${rest#*:}; heads=${rest%@*}; tile=""
      [ "$rest" != "${rest#*@}" ] && tile=${rest#*@}
      if [ $splits = auto ]; then unset DUA_DECODE_SPLITS; else export DUA_DECODE_SPLITS=$splits; fi
      if [ -n "$tile" ]; then export DUA_DECODE_TILE=$tile; else unset DUA_DECODE_TILE; fi
      h=${heads%/*}; kv=${heads#*/}
      $D --heads $h --kv-heads $kv --n 8192 16384 --depth 0 2 4 --dtype $dt --no-dense 2>/dev/null \
        | sed "s/^{/{\"tile\": \"$tile\", \"splits\": \"$splits\", /"
    done > "$OUT/decode5_sweep.jsonl"; unset DUA_DECODE_SPLITS DUA_DECODE_TILE
    P="python3 .devkit/peers.py --pass decode --batch 32 --dim 128 --block 128 --heads 8"
    { timeout 60 $P --n 8192 16384 --depth 0 1 2 3 4 --dtype fp16
      timeout 20 $P --n 16384 --depth 4 --window 256 --sink 4 --dtype fp16 | sed 's/^{/{"window": 256, "sink": 4, /'
    } 2>/dev/null | grep '^{' > "$OUT/peers_decode5.jsonl" ;;
  esac
done
python3 bench/summarize.py "$OUT"
