/* decode_params.h: the tunable plan of the paged-KV decode kernels (cl/attn_decode.cl) and its split-KV
 * thresholds, with the compiled defaults (the behaviour before tuning existed) and the kernels' static rules.
 * The call-dependent part of the plan (query heads per work-group, bitmap words, local memory) is fitted in
 * host/attention/decode.c. */
#ifndef DUA_DECODE_PARAMS_H
#define DUA_DECODE_PARAMS_H

#include "dua.h"

#include <stdint.h>

typedef struct dua_decode_params {
  int staged;  /* 1: K/V staged through local memory ("staged"); 0: K/V in registers ("regs") */
  int tile_n;  /* keys per tile (TILE_N) */
  int threads; /* work-items per work-group (NT) */
  int rows;    /* most query rows (heads x tokens) per work-group */
} dua_decode_params;

/* Split-KV: a call runs G = sequences x KV heads x head chunks work-groups per split; it is split into
 * s = ceil(waves x compute units / G) parts, at most (key units of the longest context) / min_units and
 * max_splits, at least 1. */
typedef struct dua_decode_split_params {
  int waves, min_units, max_splits;
} dua_decode_split_params;

/* Elements per 16-byte K/V load of the regs kernel for the cache dtype. */
int dua_decode_load_elems(int fp16);

/* The compiled defaults: one_row = one query row per work-group (no GQA sharing, one query token). On CPU
 * devices staged, 16 keys x 32 work-items; on GPUs regs (fp16 cache, one row) 32 x 128 x 8 rows, else staged
 * 32 x 128 x 16 rows. rows = 64 / (regs load elements) for regs on CPU devices. */
dua_decode_params dua_decode_params_default(const dua_device_info *dev, int fp16, int one_row);
/* The compiled tile, work-items and rows of one kernel variant (staged 0/1). */
dua_decode_params dua_decode_params_variant(const dua_device_info *dev, int fp16, int staged);

/* The kernels' static rules for head_dim and the cache dtype: ranges (tile a power of two 16..128, threads a
 * power of two 16..1024 within the device's work-group size, rows 1..64), regs: threads = KG x head_dim / VE
 * with tile | threads and KG | tile; staged: threads >= rows. 1 if usable. */
int dua_decode_params_valid(const dua_decode_params *p, int head_dim, int fp16, const dua_device_info *dev);

/* Local memory (bytes) of one work-group with rows query rows and a bitmap of words 32-bit words (regs: key
 * groups = threads x VE / head_dim). */
size_t dua_decode_local_bytes(const dua_decode_params *p, int rows, int words, int head_dim, int fp16);

/* The compiled split thresholds: waves 16, min_units 8, max_splits 64. */
dua_decode_split_params dua_decode_split_default(void);

/* The split count for `groups` work-groups per split, `units` key units in the longest context. */
int dua_decode_split_count(const dua_decode_split_params *sp, int64_t groups, int64_t units,
                           int compute_units);

#endif
