/* token_bias.h: the token-tree bias of paper routing mode (dua_attention_params.token_scale/token_table):
 * the tree over positions, host-reference helpers and the device tensors' validation. One definition of the
 * level lvl(i, j) = D_tok - bit_length(i ^ j) for the host; cl/common.cl's dua_tok_level mirrors it. */
#ifndef DUA_TOKEN_BIAS_H
#define DUA_TOKEN_BIAS_H

#include "attention/forward_internal.h"
#include "attention/layout_internal.h"

#define DUA_MAX_TOKEN_LEVELS 33 /* D_tok + 1 for N <= 2^32 (kernels keep the table in local memory) */

static inline int32_t dua_tok_level(int64_t i, int64_t j, int32_t depth) {
  uint64_t x = (uint64_t)(i ^ j);
  int32_t bits = 0;
  while (x) {
    bits++;
    x >>= 1;
  }
  return depth - bits;
}

/* table[h or 0][lvl(i, j)] of a host bias (tb non-NULL, validated). */
static inline double dua_host_token_table_at(const dua_host_token_bias *tb, const struct dua_layout *l,
                                             int64_t h, int64_t i, int64_t j) {
  (void)l;
  const int64_t row = tb->table_heads == 1 ? 0 : h;
  return (double)tb->table[row * tb->levels + dua_tok_level(i, j, tb->levels - 1)];
}

/* scale[b][h][i] * table[h][lvl(i, j)], or 0 without a bias. */
static inline double dua_host_token_bias_at(const dua_host_token_bias *tb, const struct dua_layout *l,
                                            int64_t b, int64_t h, int64_t i, int64_t j) {
  if (!tb)
    return 0.0;
  const double r =
      (double)tb->scale[((size_t)b * (size_t)l->heads + (size_t)h) * (size_t)l->seq_len + (size_t)i];
  return r * dua_host_token_table_at(tb, l, h, i, j);
}

/* A host bias (NULL = none) for the references: non-NULL arrays, table_heads 1 or heads, levels =
 * dua_token_tree_depth(N) + 1. Message in l->error. */
dua_status dua_host_token_bias_check(struct dua_layout *l, const char *fn, const dua_host_token_bias *tb);

/* The device tensors of params (both or neither; fp32 scale (B, Hq, N, 1), table (Hq or 1, D_tok + 1, 1, 1)
 * with contiguous levels); refused with naive and decode by their callers. */
dua_status dua_check_token_bias(dua_context *ctx, const char *fn, const dua_layout *l,
                                const dua_attention_params *p);

#endif
