/* decode_params.c: compiled defaults and static validity of the decode kernels' plan parameters, and the
 * split-KV count from its thresholds (the values measured on an H100 and PoCL before the tuner existed;
 * bench/RESULTS.md, decode and decode2). */
#include "tuning/decode_params.h"
#include "runtime/context_internal.h"

#include <string.h>

/* GPU plans, tile_n, work-items, most query rows: staged; regs with an fp16 cache (best of 8 measured
 * settings: 1.71 ms 16K dense) and with an fp32 cache (best of 4: 1.78 ms, 80.6% of copy, 16K dense). */
#define DECODE_WARP_TILE 4, 128, 4 /* decode4 sweep, 16K: best at depth 4, within 3% of the best dense */
#define DECODE_WARP_WAVES 2        /* decode5: 2 splits beat 4-16 at depths 2 and 4, equal dense */
#define DECODE_WARP_TILE_ROWS 8    /* several query rows per work-group (GQA 32/8, 16K fp16) */
#define DECODE_WARP_MIN_UNITS 4    /* per warp and split */
#define DECODE_MMA_TILE 16, 128, 8 /* 16 keys per warp step, 4 warps, at most 8 rows (the mma's M half) */
#define DECODE_MMA_WAVES                                                                                     \
  1 /* GQA 32/8 16K fp16 (H100): 1 split 0.751 / 0.202 / 0.061 ms at depths 0 / 2 / 4,                       \
     * 2 splits 0.760 / 0.213 / 0.073, 4: 0.769 / 0.227 / 0.088 (bench/RESULTS.md) */
#define DECODE_STAGED_TILE 32, 128, 16
#define DECODE_REGS_TILE_F16 32, 128, 8
#define DECODE_REGS_TILE_F32 32, 256, 16
#define DECODE_CPU_TILE_N                                                                                    \
  16 /* CPU devices: PoCL runs a work-group's work-items in loops around each barrier; */
#define DECODE_CPU_THREADS 32 /* 16 x 32 measured 20-35% faster there than 32 x 128 (bench/RESULTS.md) */
#define DECODE_ROWS 16        /* most query rows (heads x tokens) per work-group */
#define DECODE_ACC_FLOATS 64  /* regs on CPU devices: most output accumulators per work-item (rows x VE) */
#define DECODE_WAVES 16      /* split so that about WAVES x compute units work-groups run (short last wave) */
#define DECODE_MIN_UNITS 8   /* at least this many key units (of the longest context) per split */
#define DECODE_MAX_SPLITS 64 /* partial results per row */

int dua_decode_load_elems(int fp16) {
  return fp16 ? 8 : 4;
}

int dua_decode_warp_lanes(int head_dim, int fp16) {
  const int ve = dua_decode_load_elems(fp16), lanes = head_dim / ve;
  return head_dim % ve == 0 && lanes >= 1 && 32 % lanes == 0 ? lanes : 0;
}

int dua_decode_mma_dims(int head_dim, int fp16) {
  return fp16 && (head_dim == 64 || head_dim == 128);
}

size_t dua_decode_emu_bytes(int threads) {
  return 32 * (size_t)threads; /* emu_i, emu_u (6 words), emu_f per work-item */
}

int dua_decode_warp_native(const dua_device_info *dev) {
  return dev->type != DUA_DEVICE_CPU && dua_device_is_nvidia(dev) && dev->nv_mma_f16;
}

static int pow2_in(int v, int lo, int hi) {
  return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

dua_decode_params dua_decode_params_default(const dua_device_info *dev, int fp16, int one_row, int head_dim) {
  /* the measured choice (host/attention/decode.c): warp where inline PTX works; else regs only for an fp16
   * cache with one row on GPUs */
  /* mma for fp16 caches (bench/RESULTS.md, H100, 16K, B 32, dim 128): GQA 32/8 0.751 vs 1.290 ms (warp)
   * dense, 0.061 vs 0.132 ms at depth 4; heads 8 (one row) 0.743 vs 0.771 ms, 0.059 vs 0.065 ms */
  if (dua_decode_warp_native(dev) && dua_decode_mma_dims(head_dim, fp16))
    return dua_decode_params_variant(dev, fp16, 3);
  if (dua_decode_warp_native(dev) && dua_decode_warp_lanes(head_dim, fp16)) {
    dua_decode_params p = dua_decode_params_variant(dev, fp16, 2);
    if (!one_row) /* several rows: 8 keys per batch (with 2 loads per lane, decode.c) measured 1.24 vs 1.99 ms
                   */
      p.tile_n = DECODE_WARP_TILE_ROWS;
    return p;
  }
  return dua_decode_params_variant(dev, fp16, dev->type == DUA_DEVICE_CPU || !fp16 || !one_row);
}

dua_decode_params dua_decode_params_variant(const dua_device_info *dev, int fp16, int staged) {
  const int cpu = dev->type == DUA_DEVICE_CPU;
  dua_decode_params p;
  p.staged = staged;
  static const int staged_tile[3] = {DECODE_STAGED_TILE}, regs_f16[3] = {DECODE_REGS_TILE_F16},
                   regs_f32[3] = {DECODE_REGS_TILE_F32}, warp_tile[3] = {DECODE_WARP_TILE},
                   mma_tile[3] = {DECODE_MMA_TILE};
  const int *def = p.staged == 3   ? mma_tile
                   : p.staged == 2 ? warp_tile
                   : p.staged      ? staged_tile
                   : fp16          ? regs_f16
                                   : regs_f32;
  const int cpu_tile = cpu && p.staged < 2; /* warp, mma on a CPU device: emulated, for tests */
  p.tile_n = cpu_tile ? DECODE_CPU_TILE_N : def[0];
  p.threads = cpu_tile ? DECODE_CPU_THREADS : def[1];
  p.rows = cpu_tile ? (p.staged ? DECODE_ROWS : DECODE_ACC_FLOATS / dua_decode_load_elems(fp16)) : def[2];
  return p;
}

int dua_decode_params_valid(const dua_decode_params *p, int head_dim, int fp16, const dua_device_info *dev) {
  if (p->staged == 3) /* mma: whole warps, 16-key steps, the M half of an m16n8k16 */
    return p->tile_n == 16 && pow2_in(p->threads, 32, 1024) && p->rows >= 1 && p->rows <= 8 &&
           dua_decode_mma_dims(head_dim, fp16) &&
           !(dev && dev->max_work_group_size && (size_t)p->threads > dev->max_work_group_size);
  if (p->staged == 2) /* warp: whole warps, a key row in 1..32 lanes */
    return pow2_in(p->tile_n, 1, 128) && pow2_in(p->threads, 32, 1024) && p->rows >= 1 && p->rows <= 64 &&
           dua_decode_warp_lanes(head_dim, fp16) &&
           !(dev && dev->max_work_group_size && (size_t)p->threads > dev->max_work_group_size);
  if ((p->staged != 0 && p->staged != 1) || !pow2_in(p->tile_n, 16, 128) || !pow2_in(p->threads, 16, 1024) ||
      p->rows < 1 || p->rows > 64 || head_dim <= 0 || head_dim % 4)
    return 0;
  if (dev && dev->max_work_group_size && (size_t)p->threads > dev->max_work_group_size)
    return 0;
  if (p->staged)
    return p->threads >= p->rows; /* the kernel initializes its per-row state with one work-item per row */
  const int ve = dua_decode_load_elems(fp16), nv = head_dim / ve;
  if (head_dim % ve || p->threads % nv || p->threads % p->tile_n)
    return 0;
  const int kg = p->threads / nv; /* key groups: each holds tile / kg whole keys */
  return kg >= 1 && p->tile_n % kg == 0;
}

size_t dua_decode_local_bytes(const dua_decode_params *p, int rows, int words, int head_dim, int fp16) {
  const size_t r = (size_t)rows, stride = (size_t)head_dim + 4;
  if (p->staged >= 2) /* warp, mma: bitmap, per warp and row: partial O and (max, sum) */
    return 4 * ((size_t)words + (size_t)(p->threads / 32) * r * ((size_t)head_dim + 2)) + 64;
  if (p->staged)
    return 4 * ((size_t)words + r * stride + 2 * (size_t)p->tile_n * stride + 2 * r * (size_t)p->tile_n +
                3 * r) +
           64;
  const size_t kg = (size_t)p->threads * (size_t)dua_decode_load_elems(fp16) / (size_t)head_dim;
  return 4 * ((size_t)words + r * (size_t)head_dim + r * (size_t)p->threads + r * (size_t)p->tile_n +
              3 * r * kg + kg * (size_t)head_dim) +
         128;
}

dua_decode_split_params dua_decode_split_default(void) {
  dua_decode_split_params s = {DECODE_WAVES, DECODE_MIN_UNITS, DECODE_MAX_SPLITS};
  return s;
}

dua_decode_split_params dua_decode_split_warp_default(int threads) {
  dua_decode_split_params s = {
      DECODE_WARP_WAVES, DECODE_WARP_MIN_UNITS * (threads / 32 > 0 ? threads / 32 : 1), DECODE_MAX_SPLITS};
  return s;
}

dua_decode_split_params dua_decode_split_compiled(const dua_decode_params *plan, int rows) {
  if (!plan || plan->staged < 2)
    return dua_decode_split_default();
  dua_decode_split_params s = dua_decode_split_warp_default(plan->threads);
  if (plan->staged == 3) /* mma: the rows cost no more per key; one wave of work-groups */
    s.waves = DECODE_MMA_WAVES;
  else
    s.waves *= rows > 1 ? rows : 1;
  return s;
}

int dua_decode_split_count(const dua_decode_split_params *sp, int64_t groups, int64_t units,
                           int compute_units) {
  if (groups < 1)
    groups = 1;
  const int64_t target = (int64_t)sp->waves * (compute_units > 0 ? compute_units : 1);
  int64_t s = (target + groups - 1) / groups;
  const int64_t by_len = units / sp->min_units;
  if (s > by_len)
    s = by_len;
  if (s > sp->max_splits)
    s = sp->max_splits;
  return s < 1 ? 1 : (int)s;
}
