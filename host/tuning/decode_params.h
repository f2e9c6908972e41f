/* decode_params.h: the tunable plan of the paged-KV decode kernels (cl/attn_decode.cl) and its split-KV
 * thresholds, with the compiled defaults (the behaviour before tuning existed) and the kernels' static rules.
 * The call-dependent part of the plan (query heads per work-group, bitmap words, local memory) is fitted in
 * host/attention/decode.c. */
#ifndef DUA_DECODE_PARAMS_H
#define DUA_DECODE_PARAMS_H

#include "dua.h"

#include <stdint.h>

typedef struct dua_decode_params {
  int staged;  /* kernel: 1 K/V staged through local memory ("staged"); 0 K/V in registers ("regs"); 2 every
                * warp streams its own units (cl/attn_decode_warp.cl, "warp": NVIDIA inline PTX, emulated
                * with local memory elsewhere); 3 the same walk with mma.sync products ("mma": fp16 cache,
                * head dim 64 or 128, at most 8 rows, 16-key steps; emulated off NVIDIA likewise) */
  int tile_n;  /* keys per tile (TILE_N); warp: keys per batch of a warp (KPW x UNROLL), 1..128 */
  int threads; /* work-items per work-group (NT) */
  int rows;    /* most query rows (heads x tokens) per work-group */
} dua_decode_params;

/* Split-KV: a call runs G = sequences x KV heads x head chunks work-groups per split; it is split into
 * s = ceil(waves x compute units / G) parts, at most (key units of the longest context) / min_units and
 * max_splits, at least 1. */
typedef struct dua_decode_split_params {
  int waves, min_units, max_splits;
} dua_decode_split_params;

/* Elements per 16-byte K/V load of the regs and warp kernels for the cache dtype. */
int dua_decode_load_elems(int fp16);
/* Lanes per key row of the warp kernel with one 16-byte load per lane (head_dim / load elements); 0 when that
 * does not divide 32 (the warp kernel cannot run: head dim 96). */
int dua_decode_warp_lanes(int head_dim, int fp16);
/* The warp kernel's split thresholds when none is tuned: about 2 work-groups per compute unit, at least 4
 * units per warp (decode5, bench/RESULTS.md). */
dua_decode_split_params dua_decode_split_warp_default(int threads);
/* Whether the mma decode kernel (staged 3) can run for head_dim and the cache dtype: fp16, head dim 64 or
 * 128. */
int dua_decode_mma_dims(int head_dim, int fp16);
/* Local memory (bytes) the emulated warp instructions of the warp and mma kernels add (nv_mma_ops.cl
 * EMU_LOCALS) for a work-group of threads work-items. */
size_t dua_decode_emu_bytes(int threads);
/* Whether the warp kernel runs natively (NVIDIA inline PTX: the mma.sync probe passed) rather than emulated
 * (local-memory shuffles: correct, slow, for tests). */
int dua_decode_warp_native(const dua_device_info *dev);

/* The compiled defaults: one_row = one query row per work-group (no GQA sharing, one query token). On NVIDIA
 * GPUs whose inline-PTX probe passed, mma (16 keys per step, 128 work-items, 8 rows) for an fp16 cache with
 * head dim 64 or 128, else warp (4 keys per batch, 128 work-items, 4 rows) when head_dim allows
 * it; on CPU devices staged, 16 keys x 32 work-items; on other GPUs regs (fp16 cache, one row) 32 x 128 x 8
 * rows, else staged 32 x 128 x 16 rows. rows = 64 / (regs load elements) for regs on CPU devices. */
dua_decode_params dua_decode_params_default(const dua_device_info *dev, int fp16, int one_row, int head_dim);
/* The compiled tile, work-items and rows of one kernel variant (staged 0/1/2/3). */
dua_decode_params dua_decode_params_variant(const dua_device_info *dev, int fp16, int staged);

/* The kernels' static rules for head_dim and the cache dtype: ranges (regs and staged: tile a power of two
 * 16..128, threads a power of two 16..1024; warp: tile a power of two 1..128, threads a power of two 32..1024
 * (whole warps); all: threads within the device's work-group size, rows 1..64), regs: threads = KG x
 * head_dim / VE with tile | threads and KG | tile; staged: threads >= rows; warp: head_dim / VE divides 32
 * (dua_decode_warp_lanes); mma: tile 16, rows 1..8, dua_decode_mma_dims. 1 if usable. */
int dua_decode_params_valid(const dua_decode_params *p, int head_dim, int fp16, const dua_device_info *dev);

/* Local memory (bytes) of one work-group with rows query rows and a bitmap of words 32-bit words (regs: key
 * groups = threads x VE / head_dim). */
size_t dua_decode_local_bytes(const dua_decode_params *p, int rows, int words, int head_dim, int fp16);

/* The compiled split thresholds: waves 16, min_units 8, max_splits 64. */
dua_decode_split_params dua_decode_split_default(void);
/* The compiled split thresholds for a plan whose work-groups serve `rows` query rows: the warp kernel's
 * (dua_decode_split_warp_default for its work-items, waves x rows: rows multiply a work-group's work; decode5
 * GQA: 9 splits 1.52 ms, 2 splits 1.99 ms), else dua_decode_split_default. plan NULL: the latter. */
dua_decode_split_params dua_decode_split_compiled(const dua_decode_params *plan, int rows);

/* The split count for `groups` work-groups per split, `units` key units in the longest context. */
int dua_decode_split_count(const dua_decode_split_params *sp, int64_t groups, int64_t units,
                           int compute_units);

#endif
