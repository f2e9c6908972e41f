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
