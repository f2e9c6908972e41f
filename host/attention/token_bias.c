/* token_bias.c: the token tree over positions (dua_token_tree_depth/level) and the checks of the token-tree
 * bias arguments of the attention entry points and references (see token_bias.h, dua.h). */
#include "attention/token_bias.h"

#include <math.h>

int32_t dua_token_tree_depth(int32_t n) {
  int32_t d = 0;
  while (d < 31 && ((int64_t)1 << d) < (int64_t)n)
    d++;
  return d;
}

int32_t dua_token_tree_level(int32_t i, int32_t j, int32_t depth) {
  return dua_tok_level(i, j, depth);
}

dua_status dua_host_token_bias_check(struct dua_layout *l, const char *fn, const dua_host_token_bias *tb) {
  if (!tb)
    return DUA_SUCCESS;
  const int32_t levels = dua_token_tree_depth(l->seq_len) + 1;
  if (!tb->scale || !tb->table)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "%s: token_bias->%s is NULL", fn, tb->scale ? "table" : "scale");
  if (tb->table_heads != 1 && tb->table_heads != l->heads)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "%s: token_bias->table_heads = %d must be 1 or heads = %d", fn,
                           (int)tb->table_heads, (int)l->heads);
  if (tb->levels != levels)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "%s: token_bias->levels = %d, expected dua_token_tree_depth(%d) + 1 = %d", fn,
                           (int)tb->levels, (int)l->seq_len, (int)levels);
  return DUA_SUCCESS;
}

dua_status dua_check_token_bias(dua_context *ctx, const char *fn, const dua_layout *l,
                                const dua_attention_params *p) {
  if (!p->token_scale && !p->token_table)
    return DUA_SUCCESS;
  if (!p->token_scale || !p->token_table)
    return dua_fail(
        ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.%s is set but params.%s is NULL (both or neither)", fn,
        p->token_scale ? "token_scale" : "token_table", p->token_scale ? "token_table" : "token_scale");
  const int32_t levels = dua_token_tree_depth(l->seq_len) + 1;
  dua_status st;
  const dua_tensor *s = p->token_scale, *t = p->token_table;
  if ((st = dua_tensor_check(ctx, s, "token_scale")) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, s, "token_scale", l->batch, l->heads, l->seq_len, 1)) != DUA_SUCCESS ||
      (st = dua_tensor_check(ctx, t, "token_table")) != DUA_SUCCESS)
    return st;
  if (t->shape[0] != 1 && t->shape[0] != l->heads)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: token_table.shape[0] = %lld must be 1 or heads = %d", fn, (long long)t->shape[0],
                    (int)l->heads);
  if ((st = dua_check_shape(ctx, fn, t, "token_table", t->shape[0], levels, 1, 1)) != DUA_SUCCESS)
    return st;
  if (s->dtype != DUA_F32 || t->dtype != DUA_F32 || t->strides[1] != 1)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: token_scale and token_table must be DUA_F32, token_table with contiguous levels "
                    "(strides[1] = 1)",
                    fn);
  if (levels > DUA_MAX_TOKEN_LEVELS)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: token tree depth %d is too deep", fn, (int)levels - 1);
  return DUA_SUCCESS;
}
