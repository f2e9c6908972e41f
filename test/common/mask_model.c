/* mask_model.c: the tests' independent model of the layout rule (see mask_model.h). */
#include "mask_model.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

int32_t m_arity(const model *md, int32_t h) {
  return md->desc.arities ? md->desc.arities[h] : md->desc.arity;
}

/* D = smallest d with p^d >= nb, counted by repeated multiplication */
int32_t m_tree_depth(int32_t nb, int32_t p) {
  int32_t d = 0;
  for (int64_t s = 1; s < nb; s *= p)
    d++;
  return d;
}

int32_t m_depth(const model *md, int32_t h) {
  int32_t d = md->desc.depths ? md->desc.depths[h] : 0;
  return d == -1 ? m_tree_depth(md->nb, m_arity(md, h)) : d;
}

int64_t m_pow(int64_t p, int32_t e) {
  int64_t x = 1;
  while (e-- > 0)
    x *= p;
  return x;
}

/* do blocks bm and bn share the depth-d subtree of head h? */
int m_share(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn, int32_t d) {
  if (d == 0)
    return 1;
  int32_t D = m_tree_depth(md->nb, m_arity(md, h));
  if (md->paths) {
    const uint8_t *pm = md->paths + (((size_t)b * md->desc.heads + h) * md->nb + bm) * md->dmax;
    const uint8_t *pn = md->paths + (((size_t)b * md->desc.heads + h) * md->nb + bn) * md->dmax;
    return memcmp(pm, pn, (size_t)d) == 0;
  }
  int64_t g = m_pow(m_arity(md, h), D - d), s = md->desc.shift;
  return (bm + s) / g == (bn + s) / g;
}

int32_t m_lca(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn) {
  int32_t D = m_tree_depth(md->nb, m_arity(md, h)), best = 0;
  for (int32_t d = 0; d <= D; d++)
    if (m_share(md, b, h, bm, bn, d))
      best = d;
  return best;
}

int m_tree(const model *md, int32_t b, int32_t h, int32_t i, int32_t j) {
  if (md->lcounts) {
    size_t row = ((size_t)b * md->desc.heads + h) * md->nb + i / md->desc.block;
    for (int32_t k = 0; k < md->lcounts[row]; k++)
      if (md->lindices[row * md->nb + k] == j / md->desc.block)
        return 1;
    return 0;
  }
  return m_share(md, b, h, i / md->desc.block, j / md->desc.block, m_depth(md, h));
}

int m_extra(const model *md, int32_t i, int32_t j) {
  if (md->lcounts)
    return 0; /* list layouts ignore window and sink */
  int32_t w = md->desc.window;
  return (w > 0 && abs(i - j) <= w) || j < md->desc.sink;
}

int m_visible(const model *md, int32_t b, int32_t h, int32_t i, int32_t j) {
  int32_t n = md->desc.seq_len;
  if (i >= n || j >= n)
    return 0;
  return (m_tree(md, b, h, i, j) || m_extra(md, i, j)) && (!md->desc.causal || j <= i);
}

/* mask [B][H][N][N] */
uint8_t *m_mask(const model *md) {
  int32_t B = md->desc.batch, H = md->desc.heads, N = md->desc.seq_len;
  uint8_t *mask = malloc((size_t)B * H * N * N);
  ck_assert_ptr_nonnull(mask);
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++)
      for (int32_t i = 0; i < N; i++)
        for (int32_t j = 0; j < N; j++)
          mask[(((size_t)b * H + h) * N + i) * N + j] = (uint8_t)m_visible(md, b, h, i, j);
  return mask;
}

int64_t m_random_depths(model *md, test_rng *r) {
  int64_t max_span = 1;
  for (int32_t h = 0; h < md->desc.heads; h++) {
    const int32_t D = m_tree_depth(md->nb, m_arity(md, h));
    const int64_t span = m_pow(m_arity(md, h), D);
    max_span = span > max_span ? span : max_span;
    md->dmax = D > md->dmax ? D : md->dmax;
    md->depths[h] = test_rng_int(r, -1, D);
  }
  return max_span;
}

void m_random_rule_model(model *md, test_rng *r, int32_t max_len) {
  memset(md, 0, sizeof *md);
  dua_layout_desc *d = &md->desc;
  d->block = 16;
  d->seq_len = test_rng_int(r, 0, 3) == 0 ? test_rng_int(r, 1, 15) : test_rng_int(r, 17, max_len);
  d->batch = test_rng_int(r, 1, 2);
  d->heads = test_rng_int(r, 1, 4);
  d->kv_heads = test_rng_int(r, 0, 1) ? (d->heads % 2 == 0 ? d->heads / 2 : 1) : 0;
  d->arity = test_rng_int(r, 2, 3);
  md->nb = (d->seq_len + 15) / 16;
  if (test_rng_int(r, 0, 1)) {
    for (int32_t h = 0; h < d->heads; h++)
      md->arities[h] = test_rng_int(r, 2, 4);
    d->arities = md->arities;
  }
  const int64_t max_span = m_random_depths(md, r);
  d->depths = md->depths;
  d->shift = test_rng_int(r, 0, 1) ? test_rng_int(r, 0, (int32_t)max_span) : 0;
  d->window = test_rng_int(r, 0, 1) ? test_rng_int(r, 1, 40) : 0;
  d->sink = test_rng_int(r, 0, 2) == 0 ? test_rng_int(r, 1, 20) : 0;
  d->causal = test_rng_int(r, 0, 1);
  if (test_rng_int(r, 0, 2) == 0 && md->dmax > 0) {
    size_t n = (size_t)d->batch * d->heads * md->nb * md->dmax;
    md->paths = malloc(n);
    ck_assert_ptr_nonnull(md->paths);
    for (int32_t b = 0; b < d->batch; b++)
      for (int32_t h = 0; h < d->heads; h++)
        for (int32_t k = 0; k < md->nb; k++)
          for (int32_t lv = 0; lv < md->dmax; lv++)
            md->paths[(((size_t)b * d->heads + h) * md->nb + k) * md->dmax + lv] =
                (uint8_t)(lv < m_tree_depth(md->nb, m_arity(md, h)) ? test_rng_int(r, 0, 1) : 0);
    d->paths = md->paths;
  }
}
