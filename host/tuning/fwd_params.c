/* fwd_params.c: default tile parameters for the portable forward kernel (cl/attn_fwd.cl), checked against
 * the device's local memory and work-group limits. */
#include "tuning/fwd_params.h"

#define TOKEN_LEVELS 33 /* DUA_MAX_TOKEN_LEVELS (cl/common.cl): the token-bias table (DUA_TBIAS) */

/* Floats rounded up to 16 bytes: the next array may be aligned(16). */
static size_t pad4(size_t floats) {
  return (floats + 3) & ~(size_t)3;
}

/* Every __local array of cl/attn_fwd.cl, the optional one included (a tile must fit every call): q_tile,
 * kv_tile, p_tile, row_max_part, row_sum_part, tok_tab. */
size_t dua_fwd_local_bytes(const dua_fwd_params *p, int head_dim) {
  const size_t row = (size_t)head_dim + 4; /* ROW_STRIDE in attn_fwd.cl */
  const size_t bm = (size_t)p->block_m, bn = (size_t)p->block_n, tn = (size_t)p->threads_n;
  return sizeof(float) * (bm * row + bn * row + pad4(bm * (bn + 4)) + 2 * pad4(bm * tn) + pad4(TOKEN_LEVELS));
}

int dua_fwd_params_valid(const dua_fwd_params *p, int head_dim, int layout_block,
                         const dua_device_info *dev) {
  if (p->block_m <= 0 || p->block_n <= 0 || p->threads_m <= 0 || p->threads_n <= 0)
    return 0;
  if (p->block_m % p->threads_m || p->block_n % p->threads_n || head_dim % p->threads_n ||
      (head_dim / p->threads_n) % 4 || p->block_n % 4)
    return 0;
  if (layout_block % p->block_m || layout_block % p->block_n)
    return 0;
  size_t threads = (size_t)p->threads_m * p->threads_n;
  if (dev && dev->max_work_group_size && threads > dev->max_work_group_size)
    return 0;
  if (dev && dev->local_mem_bytes && dua_fwd_local_bytes(p, head_dim) > dev->local_mem_bytes)
    return 0;
  return 1;
}

dua_fwd_params dua_fwd_params_default(int head_dim, int layout_block, const dua_device_info *dev) {
  dua_fwd_params p;
  p.block_m = head_dim >= 96 ? 32 : 64;
  p.block_n = 32;
  p.threads_m = 16;
  /* DK = head_dim / threads_n must be a multiple of 4; 8 columns a thread measured fastest for head dim 64 on
   * an H100 (bench/RESULTS.md, tile sweep) and on PoCL; head dim 128 keeps 8 columns (16 threads) */
  p.threads_n = head_dim == 128 ? 16 : 8;
  if (p.block_m > layout_block)
    p.block_m = layout_block;
  if (p.block_n > layout_block)
    p.block_n = layout_block;
  if (p.threads_m > p.block_m)
    p.threads_m = p.block_m;
  /* shrink until the device accepts it */
  while (!dua_fwd_params_valid(&p, head_dim, layout_block, dev) && p.block_m > p.threads_m)
    p.block_m /= 2;
  while (!dua_fwd_params_valid(&p, head_dim, layout_block, dev) && p.threads_m > 1) {
    p.threads_m /= 2;
    if (p.block_m % p.threads_m)
      p.block_m = p.threads_m;
  }
  return p;
}
