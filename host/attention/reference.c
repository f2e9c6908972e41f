/* reference.c: CPU attention in double accumulation over the exact layout semantics (DESIGN.md sections 2
 * and 6), for tests and for verifying tuned kernels; and dua_attention_params_init.
 *
 * Per (b, h, i): scores s_j = scale * q_i . k_j + bias_ij over the visible keys j (bias: level_bias[h][lca]
 * for tree pairs outside the window/sink set, else 0), softmax with the max subtracted, o_i = sum p_j v_j,
 * lse_i = max + log(sum exp(s_j - max)). A row with no visible key (or only -inf scores) gets o_i = 0 and
 * lse_i = -inf. List layouts: the level bias is not applied (they have no tree). The optional token-tree bias
 * (dua_attention_reference_ex) adds scale[b][h][i] * table[h][lvl(i, j)] to every visible pair.
 * Argument errors return DUA_ERROR_INVALID_ARGUMENT and leave a message in the layout's internal error
 * text (struct dua_layout.error); outputs are untouched on error. */
#include "attention/layout_internal.h"
#include "attention/token_bias.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void dua_attention_params_init(dua_attention_params *params) {
  if (params == NULL)
    return;
  memset(params, 0, sizeof *params); /* every field, present and future: 0 / NULL is its default */
  params->scale = 0.0f;
  params->algo = DUA_ALGO_AUTO;
}

static dua_status check_tensor(struct dua_layout *l, const char *name, const dua_host_tensor *t, int64_t s0,
                               int64_t s1, int64_t s2, int64_t s3) {
  char *e = l->error;
  size_t es = sizeof l->error;
  if (t == NULL)
    return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_reference: %s is NULL", name);
  if (t->data == NULL)
    return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_reference: %s->data is NULL",
                           name);
  const int64_t want[4] = {s0, s1, s2, s3};
  static const char *dims[4] = {"batch", "heads", "tokens", "head_dim"};
  for (int d = 0; d < 4; d++)
    if (t->shape[d] != want[d])
      return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT,
                             "dua_attention_reference: %s->shape[%d] (%s) = %lld, expected %lld", name, d,
                             dims[d], (long long)t->shape[d], (long long)want[d]);
  return DUA_SUCCESS;
}

static size_t at(const dua_host_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return (size_t)(a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3]);
}

dua_status dua_attention_reference(const dua_layout *layout, float scale, const float *level_bias,
                                   const dua_host_tensor *q, const dua_host_tensor *k,
                                   const dua_host_tensor *v, const dua_host_tensor *o,
                                   const dua_host_tensor *lse) {
  return dua_attention_reference_ex(layout, scale, level_bias, NULL, q, k, v, o, lse);
}

dua_status dua_attention_reference_ex(const dua_layout *layout, float scale, const float *level_bias,
                                      const dua_host_token_bias *tb, const dua_host_tensor *q,
                                      const dua_host_tensor *k, const dua_host_tensor *v,
                                      const dua_host_tensor *o, const dua_host_tensor *lse) {
  if (layout == NULL)
    return DUA_ERROR_INVALID_ARGUMENT;
  /* the layout is heap memory owned by the library: its error text is the message channel */
  struct dua_layout *l = (struct dua_layout *)layout;
  const int64_t B = l->batch, H = l->heads, HKV = l->kv_heads, N = l->seq_len;
  if (q == NULL)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "dua_attention_reference: q is NULL");
  if (q->shape[3] <= 0)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "dua_attention_reference: q->shape[3] (head_dim) = %lld must be > 0",
                           (long long)q->shape[3]);
  const int64_t DH = q->shape[3];
  dua_status st;
  if ((st = check_tensor(l, "q", q, B, H, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "k", k, B, HKV, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "v", v, B, HKV, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "o", o, B, H, N, DH)) != DUA_SUCCESS ||
      (lse != NULL && (st = check_tensor(l, "lse", lse, B, H, N, 1)) != DUA_SUCCESS))
    return st;
  if (!isfinite(scale))
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           "dua_attention_reference: scale = %g must be finite", (double)scale);
  if ((st = dua_host_token_bias_check(l, "dua_attention_reference", tb)) != DUA_SUCCESS)
    return st;
  double sc = scale == 0.0f ? 1.0 / sqrt((double)DH) : (double)scale;
  int32_t nb = l->num_blocks, blk = l->block;
  const float *bias = l->kind == DUA_LAYOUT_LIST ? NULL : level_bias;

  int32_t *blocks = malloc((size_t)nb * sizeof(int32_t));  /* [nb] visited key blocks of a query block */
  uint8_t *full = malloc((size_t)nb);                      /* [nb] */
  uint8_t *shared = malloc((size_t)nb);                    /* [nb] tile shares the tree */
  double *tile_bias = malloc((size_t)nb * sizeof(double)); /* [nb] level bias of tree pairs */
  double *scores = malloc((size_t)N * sizeof(double));     /* [N] scores of one row */
  int64_t *cols = malloc((size_t)N * sizeof(int64_t));     /* [N] their key indices */
  double *acc = malloc((size_t)DH * sizeof(double));       /* [DH] */
  if (!blocks || !full || !shared || !tile_bias || !scores || !cols || !acc) {
    free(blocks);
    free(full);
    free(shared);
    free(tile_bias);
    free(scores);
    free(cols);
    free(acc);
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY,
                           "dua_attention_reference: out of memory");
  }
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++) {
      dua_rule r = dua_layout_rule(l, h);
      int64_t hk = h / (H / HKV);
      for (int32_t m = 0; m < nb; m++) {
        int32_t c = dua_layout_row_blocks(l, b, h, m, blocks, full);
        for (int32_t t = 0; t < c; t++) {
          shared[t] = (uint8_t)dua_layout_block_shared(l, b, h, m, blocks[t]);
          tile_bias[t] =
              bias ? (double)bias[(size_t)h * (l->max_depth + 1) + dua_layout_lca(l, b, h, m, blocks[t])]
                   : 0.0;
        }
        int64_t last = dua_block_last_row(&r, m);
        for (int64_t i = (int64_t)m * blk; i <= last; i++) {
          int64_t count = 0;
          double mx = -INFINITY;
          for (int32_t t = 0; t < c; t++) {
            int64_t j0 = (int64_t)blocks[t] * blk, j1 = dua_block_last_row(&r, blocks[t]);
            for (int64_t j = j0; j <= j1; j++) {
              if (r.causal && j > i)
                break;
              int extra = l->kind != DUA_LAYOUT_LIST && dua_token_extra(&r, i, j);
              if (!shared[t] && !extra)
                continue;
              double s = 0;
              for (int64_t d = 0; d < DH; d++)
                s += (double)q->data[at(q, b, h, i, d)] * (double)k->data[at(k, b, hk, j, d)];
              s = s * sc + (shared[t] && !extra ? tile_bias[t] : 0.0) +
                  dua_host_token_bias_at(tb, l, b, h, i, j);
              scores[count] = s;
              cols[count++] = j;
              if (s > mx)
                mx = s;
            }
          }
          for (int64_t d = 0; d < DH; d++)
            acc[d] = 0;
          double sum = 0;
          if (count > 0 && mx > -INFINITY) {
            for (int64_t x = 0; x < count; x++) {
              double p = exp(scores[x] - mx);
              sum += p;
              for (int64_t d = 0; d < DH; d++)
                acc[d] += p * (double)v->data[at(v, b, hk, cols[x], d)];
            }
          }
          int empty = !(sum > 0);
          for (int64_t d = 0; d < DH; d++)
            o->data[at(o, b, h, i, d)] = empty ? 0.0f : (float)(acc[d] / sum);
          if (lse != NULL)
            lse->data[at(lse, b, h, i, 0)] = empty ? -INFINITY : (float)(mx + log(sum));
        }
      }
    }
  free(blocks);
  free(full);
  free(shared);
  free(tile_bias);
  free(scores);
  free(cols);
  free(acc);
  return DUA_SUCCESS;
}
