/* reference_bwd.c: CPU reference backward of block-sparse attention in double accumulation, over the exact
 * layout semantics of dua_attention_reference (DESIGN.md sections 2, 6 and 7).
 *
 * It recomputes the forward for each (b, h, i): P_ij = softmax_j(scale * q_i . k_j + bias_ij) over the
 * visible keys j (bias: level_bias[h][lca] for tree pairs outside the window/sink set, else 0; none for list
 * layouts), then with dP_ij = dO_i . v_j and D_i = sum_j P_ij dP_ij (= rowsum(dO_i * O_i), computed from P
 * and dP in double rather than from a rounded O): dS_ij = P_ij (dP_ij - D_i),  dq_i = scale * sum_j dS_ij
 * k_j,  dk_j += scale * dS_ij q_i,  dv_j += P_ij dO_i, d_level_bias[h][lca(m, n)] += dS_ij for every biased
 * (tree, non window/sink) pair, and tile_grad[b][h][m][n] += dS_ij for the same pairs (i in block m, j in
 * block n) when asked. dk/dv sum over the query heads of a GQA group. Rows with no visible key (or
 * only -inf scores) contribute nothing and get dq_i = 0. Argument errors return DUA_ERROR_INVALID_ARGUMENT
 * with a message in the layout's error text; nothing is written on error. Outputs must not alias inputs. */
#include "attention/layout_internal.h"
#include "attention/token_bias.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define FN "dua_attention_backward_reference"

static dua_status check_tensor(struct dua_layout *l, const char *name, const dua_host_tensor *t, int64_t s0,
                               int64_t s1, int64_t s2, int64_t s3) {
  char *e = l->error;
  size_t es = sizeof l->error;
  if (t == NULL)
    return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT, FN ": %s is NULL", name);
  if (t->data == NULL)
    return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT, FN ": %s->data is NULL", name);
  const int64_t want[4] = {s0, s1, s2, s3};
  static const char *dims[4] = {"batch", "heads", "tokens", "head_dim"};
  for (int d = 0; d < 4; d++)
    if (t->shape[d] != want[d])
      return dua_layout_fail(e, es, DUA_ERROR_INVALID_ARGUMENT,
                             FN ": %s->shape[%d] (%s) = %lld, expected %lld", name, d, dims[d],
                             (long long)t->shape[d], (long long)want[d]);
  return DUA_SUCCESS;
}

static size_t at(const dua_host_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return (size_t)(a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3]);
}

/* Scratch of one call; all of it allocated before anything is written. */
typedef struct bwd_scratch {
  int32_t *blocks;   /* [nb] visited key blocks of a query block */
  uint8_t *full;     /* [nb] (unused, required by dua_layout_row_blocks) */
  uint8_t *shared;   /* [nb] tile shares the tree */
  int32_t *tile_lca; /* [nb] lca of the tile's blocks (-1: no bias applies) */
  double *scores;    /* [N] scores of one row, then P */
  double *dp;        /* [N] dP of one row, then dS */
  int64_t *cols;     /* [N] key index of each score */
  int32_t *lvl;      /* [N] level-bias slot of each score, -1 for unbiased pairs */
  uint8_t *tree;     /* [N] the score's pair is a tree pair and not a window/sink pair */
  double *tiles;     /* [B][H][nb][nb] block-pair sums of dS, or NULL */
  double *dq;        /* [DH] */
  double *dk, *dv;   /* [N][DH] accumulators of one (b, kv head) */
  double *dlb;       /* [H][Dmax + 1] */
} bwd_scratch;

static void scratch_free(bwd_scratch *s) {
  free(s->blocks);
  free(s->full);
  free(s->shared);
  free(s->tile_lca);
  free(s->scores);
  free(s->dp);
  free(s->cols);
  free(s->lvl);
  free(s->tree);
  free(s->tiles);
  free(s->dq);
  free(s->dk);
  free(s->dv);
  free(s->dlb);
}

static int scratch_alloc(bwd_scratch *s, int32_t nb, int64_t n, int64_t dh, int64_t h, int32_t dmax) {
  s->blocks = malloc((size_t)nb * sizeof(int32_t));
  s->full = malloc((size_t)nb);
  s->shared = malloc((size_t)nb);
  s->tile_lca = malloc((size_t)nb * sizeof(int32_t));
  s->scores = malloc((size_t)n * sizeof(double));
  s->dp = malloc((size_t)n * sizeof(double));
  s->cols = malloc((size_t)n * sizeof(int64_t));
  s->lvl = malloc((size_t)n * sizeof(int32_t));
  s->tree = malloc((size_t)n);
  s->dq = malloc((size_t)dh * sizeof(double));
  s->dk = NULL;
  s->dv = NULL;
  if ((uint64_t)dh <= SIZE_MAX / sizeof(double) / (uint64_t)n) {
    s->dk = malloc((size_t)n * (size_t)dh * sizeof(double));
    s->dv = malloc((size_t)n * (size_t)dh * sizeof(double));
  }
  s->dlb = calloc((size_t)h * (size_t)(dmax + 1), sizeof(double));
  return s->blocks && s->full && s->shared && s->tile_lca && s->scores && s->dp && s->cols && s->lvl &&
         s->tree && s->dq && s->dk && s->dv && s->dlb;
}

/* Backward of one query row i of (b, h), accumulating into s->dk, s->dv (the row's kv head) and s->dlb, and
 * writing dq_i. c tiles of block m are described by s->blocks / shared / tile_lca. */
static void backward_row(const struct dua_layout *l, const dua_rule *r, bwd_scratch *s, int32_t c, int64_t b,
                         int64_t h, int64_t hk, int64_t i, double sc, const float *bias,
                         const dua_host_token_bias *tb, float *d_token_scale, const dua_host_tensor *q,
                         const dua_host_tensor *k, const dua_host_tensor *v, const dua_host_tensor *d_o,
                         const dua_host_tensor *dq) {
  const int64_t DH = q->shape[3];
  const int32_t blk = r->block;
  int64_t count = 0;
  double mx = -INFINITY;
  for (int32_t t = 0; t < c; t++) {
    int64_t j0 = (int64_t)s->blocks[t] * blk, j1 = dua_block_last_row(r, s->blocks[t]);
    for (int64_t j = j0; j <= j1; j++) {
      if (r->causal && j > i)
        break;
      int extra = l->kind != DUA_LAYOUT_LIST && dua_token_extra(r, i, j);
      if (!s->shared[t] && !extra)
        continue;
      double x = 0;
      for (int64_t d = 0; d < DH; d++)
        x += (double)q->data[at(q, b, h, i, d)] * (double)k->data[at(k, b, hk, j, d)];
      int32_t slot = s->shared[t] && !extra ? s->tile_lca[t] : -1;
      s->tree[count] = (uint8_t)(s->shared[t] && !extra);
      x = x * sc + (slot >= 0 ? (double)bias[(size_t)h * (l->max_depth + 1) + slot] : 0.0) +
          dua_host_token_bias_at(tb, l, b, h, i, j);
      s->scores[count] = x;
      s->lvl[count] = slot;
      s->cols[count++] = j;
      if (x > mx)
        mx = x;
    }
  }
  for (int64_t d = 0; d < DH; d++)
    s->dq[d] = 0;
  double sum = 0;
  if (count > 0 && mx > -INFINITY)
    for (int64_t x = 0; x < count; x++)
      sum += (s->scores[x] = exp(s->scores[x] - mx));
  double dts = 0; /* d token_scale[b][h][i] = sum_j dS_ij table[h][lvl(i, j)] */
  if (sum > 0) {
    double di = 0; /* D_i = sum_j P_ij dP_ij */
    for (int64_t x = 0; x < count; x++) {
      s->scores[x] /= sum;
      double dpx = 0;
      for (int64_t d = 0; d < DH; d++)
        dpx += (double)d_o->data[at(d_o, b, h, i, d)] * (double)v->data[at(v, b, hk, s->cols[x], d)];
      s->dp[x] = dpx;
      di += s->scores[x] * dpx;
    }
    for (int64_t x = 0; x < count; x++) {
      double p = s->scores[x], ds = p * (s->dp[x] - di);
      double *dkj = s->dk + s->cols[x] * DH, *dvj = s->dv + s->cols[x] * DH;
      for (int64_t d = 0; d < DH; d++) {
        s->dq[d] += ds * (double)k->data[at(k, b, hk, s->cols[x], d)];
        dkj[d] += sc * ds * (double)q->data[at(q, b, h, i, d)];
        dvj[d] += p * (double)d_o->data[at(d_o, b, h, i, d)];
      }
      if (s->lvl[x] >= 0)
        s->dlb[(size_t)h * (l->max_depth + 1) + s->lvl[x]] += ds;
      if (s->tiles && s->tree[x])
        s->tiles[((size_t)(b * l->heads + h) * l->num_blocks + (size_t)(i / blk)) * l->num_blocks +
                 (size_t)(s->cols[x] / blk)] += ds;
      if (tb)
        dts += ds * dua_host_token_table_at(tb, l, h, i, s->cols[x]);
    }
  }
  if (tb && d_token_scale)
    d_token_scale[((size_t)b * (size_t)l->heads + (size_t)h) * (size_t)l->seq_len + (size_t)i] = (float)dts;
  for (int64_t d = 0; d < DH; d++)
    dq->data[at(dq, b, h, i, d)] = (float)(sc * s->dq[d]);
}

static dua_status backward_reference(const dua_layout *layout, float scale, const float *level_bias,
                                     const dua_host_token_bias *tb, const dua_host_tensor *q,
                                     const dua_host_tensor *k, const dua_host_tensor *v,
                                     const dua_host_tensor *d_o, const dua_host_tensor *dq,
                                     const dua_host_tensor *dk, const dua_host_tensor *dv,
                                     float *d_level_bias, float *d_token_scale, float *tile_grad);

dua_status dua_attention_backward_reference(const dua_layout *layout, float scale, const float *level_bias,
                                            const dua_host_tensor *q, const dua_host_tensor *k,
                                            const dua_host_tensor *v, const dua_host_tensor *d_o,
                                            const dua_host_tensor *dq, const dua_host_tensor *dk,
                                            const dua_host_tensor *dv, float *d_level_bias) {
  return backward_reference(layout, scale, level_bias, NULL, q, k, v, d_o, dq, dk, dv, d_level_bias, NULL,
                            NULL);
}

dua_status dua_attention_backward_reference_tiles(const dua_layout *layout, float scale,
                                                  const float *level_bias, const dua_host_tensor *q,
                                                  const dua_host_tensor *k, const dua_host_tensor *v,
                                                  const dua_host_tensor *d_o, const dua_host_tensor *dq,
                                                  const dua_host_tensor *dk, const dua_host_tensor *dv,
                                                  float *d_level_bias, float *tile_grad) {
  return backward_reference(layout, scale, level_bias, NULL, q, k, v, d_o, dq, dk, dv, d_level_bias, NULL,
                            tile_grad);
}

dua_status dua_attention_backward_reference_ex(const dua_layout *layout, float scale, const float *level_bias,
                                               const dua_host_token_bias *tb, const dua_host_tensor *q,
                                               const dua_host_tensor *k, const dua_host_tensor *v,
                                               const dua_host_tensor *d_o, const dua_host_tensor *dq,
                                               const dua_host_tensor *dk, const dua_host_tensor *dv,
                                               float *d_level_bias, float *d_token_scale) {
  return backward_reference(layout, scale, level_bias, tb, q, k, v, d_o, dq, dk, dv, d_level_bias,
                            d_token_scale, NULL);
}

/* The references above: level bias, token-tree bias (tb, d_token_scale) and block-pair sums (tile_grad),
 * each optional. */
static dua_status backward_reference(const dua_layout *layout, float scale, const float *level_bias,
                                     const dua_host_token_bias *tb, const dua_host_tensor *q,
                                     const dua_host_tensor *k, const dua_host_tensor *v,
                                     const dua_host_tensor *d_o, const dua_host_tensor *dq,
                                     const dua_host_tensor *dk, const dua_host_tensor *dv,
                                     float *d_level_bias, float *d_token_scale, float *tile_grad) {
  if (layout == NULL)
    return DUA_ERROR_INVALID_ARGUMENT;
  /* the layout is heap memory owned by the library: its error text is the message channel */
  struct dua_layout *l = (struct dua_layout *)layout;
  const int64_t B = l->batch, H = l->heads, HKV = l->kv_heads, N = l->seq_len;
  if (q == NULL)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT, FN ": q is NULL");
  if (q->shape[3] <= 0)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           FN ": q->shape[3] (head_dim) = %lld must be > 0", (long long)q->shape[3]);
  const int64_t DH = q->shape[3];
  dua_status st;
  if ((st = check_tensor(l, "q", q, B, H, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "k", k, B, HKV, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "v", v, B, HKV, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "d_o", d_o, B, H, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "dq", dq, B, H, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "dk", dk, B, HKV, N, DH)) != DUA_SUCCESS ||
      (st = check_tensor(l, "dv", dv, B, HKV, N, DH)) != DUA_SUCCESS)
    return st;
  if (!isfinite(scale))
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_INVALID_ARGUMENT,
                           FN ": scale = %g must be finite", (double)scale);
  if ((st = dua_host_token_bias_check(l, FN, tb)) != DUA_SUCCESS)
    return st;
  double sc = scale == 0.0f ? 1.0 / sqrt((double)DH) : (double)scale;
  int32_t nb = l->num_blocks;
  const float *bias = l->kind == DUA_LAYOUT_LIST ? NULL : level_bias;
  const int64_t group = H / HKV;

  bwd_scratch s;
  int ok = scratch_alloc(&s, nb, N, DH, H, l->max_depth);
  s.tiles = tile_grad ? calloc((size_t)B * (size_t)H * (size_t)nb * (size_t)nb, sizeof(double)) : NULL;
  if (!ok || (tile_grad && !s.tiles)) {
    scratch_free(&s);
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY, FN ": out of memory");
  }
  for (int64_t b = 0; b < B; b++)
    for (int64_t hk = 0; hk < HKV; hk++) {
      for (size_t x = 0; x < (size_t)N * (size_t)DH; x++)
        s.dk[x] = s.dv[x] = 0.0;
      for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        dua_rule r = dua_layout_rule(l, (int32_t)h);
        for (int32_t m = 0; m < nb; m++) {
          int32_t c = dua_layout_row_blocks(l, (int32_t)b, (int32_t)h, m, s.blocks, s.full);
          for (int32_t t = 0; t < c; t++) {
            s.shared[t] = (uint8_t)dua_layout_block_shared(l, (int32_t)b, (int32_t)h, m, s.blocks[t]);
            s.tile_lca[t] = bias ? dua_layout_lca(l, (int32_t)b, (int32_t)h, m, s.blocks[t]) : -1;
          }
          int64_t last = dua_block_last_row(&r, m);
          for (int64_t i = (int64_t)m * r.block; i <= last; i++)
            backward_row(l, &r, &s, c, b, h, hk, i, sc, bias, tb, d_token_scale, q, k, v, d_o, dq);
        }
      }
      for (int64_t j = 0; j < N; j++)
        for (int64_t d = 0; d < DH; d++) {
          dk->data[at(dk, b, hk, j, d)] = (float)s.dk[j * DH + d];
          dv->data[at(dv, b, hk, j, d)] = (float)s.dv[j * DH + d];
        }
    }
  if (level_bias != NULL && d_level_bias != NULL)
    for (size_t x = 0; x < (size_t)H * (size_t)(l->max_depth + 1); x++)
      d_level_bias[x] = (float)s.dlb[x];
  if (tile_grad)
    for (size_t x = 0; x < (size_t)B * (size_t)H * (size_t)nb * (size_t)nb; x++)
      tile_grad[x] = (float)s.tiles[x];
  scratch_free(&s);
  return DUA_SUCCESS;
}
