/* bwd_params.c: default tile parameters for the portable backward kernels, checked against the kernels'
 * divisibility rules and the device's local memory and work-group limits. */
#include "tuning/bwd_params.h"

#define TOKEN_LEVELS 33 /* DUA_MAX_TOKEN_LEVELS (cl/common.cl): the token-bias table (DUA_TBIAS) */
#define BIAS_LEVELS 32  /* DUA_MAX_LEVELS (cl/attn_bwd.cl): level-bias sums (DUA_BIAS) */

/* Floats rounded up to 16 bytes: the next array may be aligned(16). */
static size_t pad4(size_t floats) {
  return (floats + 3) & ~(size_t)3;
}

/* Every __local array of cl/attn_bwd.cl, the optional ones included (a tile must fit every call): dQ pass
 * q_tile, do_tile, k_tile, v_tile, ds_tile, tok_tab; dK/dV pass q_tile, do_tile, k_tile, v_tile, p_tile,
 * ds_tile, row_stats[3 x BLOCK_M], tok_tab, level_sums, reduce[THREADS]. */
size_t dua_bwd_local_bytes(const dua_bwd_params *p, int head_dim) {
  size_t row = (size_t)head_dim + 4, bm = (size_t)p->block_m, bn = (size_t)p->block_n;
  size_t threads = (size_t)p->threads_m * (size_t)p->threads_n;
  size_t dq = 2 * bm * row + 2 * bn * row + pad4(bm * (bn + 4)) + pad4(TOKEN_LEVELS);
  size_t dkdv = 2 * bm * row + 2 * bn * row + 2 * pad4(bn * (bm + 4)) + pad4(3 * bm) + pad4(TOKEN_LEVELS) +
                BIAS_LEVELS + pad4(threads);
  return sizeof(float) * (dq > dkdv ? dq : dkdv);
}

int dua_bwd_params_valid(const dua_bwd_params *p, int head_dim, int layout_block,
                         const dua_device_info *dev) {
  if (p->block_m <= 0 || p->block_n <= 0 || p->threads_m <= 0 || p->threads_n <= 0)
    return 0;
  if (p->block_m % p->threads_m || p->block_n % p->threads_m || p->block_m % p->threads_n ||
      p->block_n % p->threads_n || head_dim % p->threads_n || (head_dim / p->threads_n) % 4)
    return 0;
  if (layout_block % p->block_m || layout_block % p->block_n)
    return 0;
  size_t threads = (size_t)p->threads_m * p->threads_n;
  if (dev && dev->max_work_group_size && threads > dev->max_work_group_size)
    return 0;
  if (dev && dev->local_mem_bytes && dua_bwd_local_bytes(p, head_dim) > dev->local_mem_bytes)
    return 0;
  return 1;
}

dua_bwd_params dua_bwd_params_default(int head_dim, int layout_block, const dua_device_info *dev) {
  dua_bwd_params p;
  p.block_m = p.block_n = head_dim > 64 ? 16 : 32;
  p.threads_m = 8;
  p.threads_n = head_dim % 64 == 0 ? 16 : 8; /* head_dim / threads_n must be a multiple of 4 */
  if (p.block_m > layout_block)
    p.block_m = p.block_n = layout_block;
  while (!dua_bwd_params_valid(&p, head_dim, layout_block, dev) && p.threads_m > 1)
    p.threads_m /= 2;
  return p;
}
