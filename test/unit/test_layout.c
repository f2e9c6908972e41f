/* test_layout.c: unit tests (no device) of layouts: tree depths, the exact visibility rule against an
 * independent materialized mask built here from the DESIGN.md section 2 formulas, list form and its
 * transpose, density, content buckets, mask text/SVG, and every argument check. */
#include "attention/layout_internal.h"
#include "dua.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- PRNG (splitmix64) */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* uniform integer in [lo, hi] */
static int32_t rng_int(rng *r, int32_t lo, int32_t hi) {
  return lo + (int32_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* ---------------------------------------------------------------- independent model of the rule */

typedef struct model {
  dua_layout_desc desc;
  int32_t nb, dmax;
  int32_t arities[8], depths[8]; /* [heads] */
  uint8_t *paths;                /* [B][H][nb][dmax] or NULL */
} model;

static int32_t m_arity(const model *md, int32_t h) {
  return md->desc.arities ? md->desc.arities[h] : md->desc.arity;
}

/* D = smallest d with p^d >= nb, counted by repeated multiplication */
static int32_t m_tree_depth(int32_t nb, int32_t p) {
  int32_t d = 0;
  for (int64_t s = 1; s < nb; s *= p)
    d++;
  return d;
}

static int32_t m_depth(const model *md, int32_t h) {
  int32_t d = md->desc.depths ? md->desc.depths[h] : 0;
  return d == -1 ? m_tree_depth(md->nb, m_arity(md, h)) : d;
}

static int64_t m_pow(int64_t p, int32_t e) {
  int64_t x = 1;
  while (e-- > 0)
    x *= p;
  return x;
}

/* do blocks bm and bn share the depth-d subtree of head h? */
static int m_share(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn, int32_t d) {
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

static int32_t m_lca(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn) {
  int32_t D = m_tree_depth(md->nb, m_arity(md, h)), best = 0;
  for (int32_t d = 0; d <= D; d++)
    if (m_share(md, b, h, bm, bn, d))
      best = d;
  return best;
}

static int m_tree(const model *md, int32_t b, int32_t h, int32_t i, int32_t j) {
  return m_share(md, b, h, i / md->desc.block, j / md->desc.block, m_depth(md, h));
}

static int m_extra(const model *md, int32_t i, int32_t j) {
  int32_t w = md->desc.window;
  return (w > 0 && abs(i - j) <= w) || j < md->desc.sink;
}

static int m_visible(const model *md, int32_t b, int32_t h, int32_t i, int32_t j) {
  int32_t n = md->desc.seq_len;
  if (i >= n || j >= n)
    return 0;
  return (m_tree(md, b, h, i, j) || m_extra(md, i, j)) && (!md->desc.causal || j <= i);
}

/* mask [B][H][N][N] */
static uint8_t *m_mask(const model *md) {
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

/* random desc: features switched on at random (or forced with `force`), small sizes */
enum { F_DEPTH = 1, F_ARITIES = 2, F_SHIFT = 4, F_WINDOW = 8, F_SINK = 16, F_CAUSAL = 32, F_PATHS = 64 };

static void m_random(model *md, rng *r, int features) {
  memset(md, 0, sizeof *md);
  dua_layout_desc *d = &md->desc;
  static const int32_t blks[] = {16, 32};
  d->block = blks[rng_int(r, 0, 1)];
  int shape = rng_int(r, 0, 3);
  d->seq_len = shape == 0 ? rng_int(r, 1, d->block - 1)                       /* N < BLK */
               : shape == 1 ? d->block * rng_int(r, 1, 12)                     /* multiple */
                            : rng_int(r, d->block + 1, d->block * 12);          /* tails */
  d->batch = rng_int(r, 1, 2);
  d->heads = rng_int(r, 1, 4);
  d->kv_heads = rng_int(r, 0, 1) ? 0 : 1;
  d->arity = rng_int(r, 2, 4);
  md->nb = (d->seq_len + d->block - 1) / d->block;
  if (features & F_ARITIES) {
    for (int32_t h = 0; h < d->heads; h++)
      md->arities[h] = rng_int(r, 2, 5);
    d->arities = md->arities;
  }
  int64_t max_span = 1;
  for (int32_t h = 0; h < d->heads; h++) {
    int32_t D = m_tree_depth(md->nb, m_arity(md, h));
    if (D > md->dmax)
      md->dmax = D;
    if (m_pow(m_arity(md, h), D) > max_span)
      max_span = m_pow(m_arity(md, h), D);
    md->depths[h] = rng_int(r, -1, D);
  }
  if (features & F_DEPTH)
    d->depths = md->depths;
  if (features & F_SHIFT)
    d->shift = rng_int(r, 0, (int32_t)max_span);
  if (features & F_WINDOW)
    d->window = rng_int(r, 1, 3 * d->block);
  if (features & F_SINK)
    d->sink = rng_int(r, 1, 3 * d->block);
  if (features & F_CAUSAL)
    d->causal = 1;
  if ((features & F_PATHS) && md->dmax > 0) {
    size_t n = (size_t)d->batch * d->heads * md->nb * md->dmax;
    md->paths = malloc(n);
    ck_assert_ptr_nonnull(md->paths);
    for (int32_t b = 0; b < d->batch; b++)
      for (int32_t h = 0; h < d->heads; h++) {
        int32_t D = m_tree_depth(md->nb, m_arity(md, h));
        int32_t top = rng_int(r, 0, 1) ? 1 : m_arity(md, h) - 1; /* low entropy: shared buckets */
        for (int32_t k = 0; k < md->nb; k++)
          for (int32_t lv = 0; lv < md->dmax; lv++) /* padding levels (>= D_h) get any byte */
            md->paths[(((size_t)b * d->heads + h) * md->nb + k) * md->dmax + lv] =
                (uint8_t)(lv < D ? rng_int(r, 0, top) : rng_int(r, 0, 255));
      }
    d->paths = md->paths;
  } else if (features & F_PATHS) {
    static const uint8_t none[1] = {0};
    d->paths = none; /* nb == 1: no digits at all */
  }
}

static void m_free(model *md) { free(md->paths); }

/* ---------------------------------------------------------------- checks against the model */

static void check_layout_against_model(const model *md, dua_layout *l, const char *what) {
  const dua_layout_desc *d = &md->desc;
  int32_t B = d->batch, H = d->heads, N = d->seq_len, BLK = d->block, nb = md->nb;
  ck_assert_int_eq(dua_layout_num_blocks(l), nb);
  for (int32_t h = 0; h < H; h++)
    ck_assert_int_eq(dua_layout_tree_depth(l, h), m_tree_depth(nb, m_arity(md, h)));
  uint8_t *mask = m_mask(md);
  int64_t pairs = 0;
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++)
      for (int32_t i = 0; i < N; i++)
        for (int32_t j = 0; j < N; j++) {
          int want = mask[(((size_t)b * H + h) * N + i) * N + j];
          pairs += want;
          if (dua_layout_visible(l, b, h, i, j) != want)
            ck_abort_msg("%s: visible(b=%d,h=%d,i=%d,j=%d) = %d, model says %d (N=%d BLK=%d shift=%d W=%d S=%d "
                         "causal=%d)",
                         what, b, h, i, j, !want, want, N, BLK, d->shift, d->window, d->sink, d->causal);
        }
  /* block classification from the mask: 0 skipped, 1 partial, 2 full */
  uint8_t *cls = calloc((size_t)B * H * nb * nb, 1);
  ck_assert_ptr_nonnull(cls);
  int64_t nvis = 0, nfull = 0;
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++)
      for (int32_t m = 0; m < nb; m++)
        for (int32_t n = 0; n < nb; n++) {
          int any = 0, all = 1;
          for (int32_t i = m * BLK; i < (m + 1) * BLK && i < N; i++)
            for (int32_t j = n * BLK; j < (n + 1) * BLK; j++) {
              int vis = j < N && mask[(((size_t)b * H + h) * N + i) * N + j];
              any |= vis;
              all &= vis;
            }
          int c = !any ? 0 : (all && (n + 1) * BLK <= N) ? 2 : 1;
          cls[(((size_t)b * H + h) * nb + m) * nb + n] = (uint8_t)c;
          nvis += c > 0;
          nfull += c == 2;
        }
  for (int t = 0; t < 2; t++) {
    dua_block_lists lists;
    ck_assert_int_eq(dua_layout_lists(l, t, &lists), DUA_SUCCESS);
    ck_assert_int_eq(lists.num_blocks, nb);
    for (int32_t b = 0; b < B; b++)
      for (int32_t h = 0; h < H; h++)
        for (int32_t x = 0; x < nb; x++) {
          size_t row = ((size_t)b * H + h) * nb + x;
          int32_t c = lists.counts[row], f = lists.full_counts[row];
          ck_assert(f >= 0 && f <= c && c <= nb);
          int32_t want = 0;
          for (int32_t y = 0; y < nb; y++)
            want += cls[(((size_t)b * H + h) * nb + (t ? y : x)) * nb + (t ? x : y)] > 0;
          if (c != want)
            ck_abort_msg("%s: %s row b=%d h=%d x=%d lists %d blocks, model %d", what, t ? "transposed" : "forward",
                         b, h, x, c, want);
          for (int32_t k = 0; k < c; k++) {
            int32_t y = lists.indices[row * nb + k];
            ck_assert(y >= 0 && y < nb);
            if (k > 0 && k != f)
              ck_assert_int_gt(y, lists.indices[row * nb + k - 1]); /* ascending within each part */
            int32_t mm = t ? y : x, nn = t ? x : y;
            int c2 = cls[(((size_t)b * H + h) * nb + mm) * nb + nn];
            if (c2 != (k < f ? 2 : 1))
              ck_abort_msg("%s: %s b=%d h=%d tile (%d,%d) listed as %s, model class %d", what,
                           t ? "transposed" : "forward", b, h, mm, nn, k < f ? "full" : "partial", c2);
          }
        }
  }
  dua_layout_density dens;
  ck_assert_int_eq(dua_layout_density_get(l, &dens), DUA_SUCCESS);
  double bh = (double)B * H;
  ck_assert_double_eq_tol(dens.pairs, (double)pairs / (bh * N * N), 1e-12);
  ck_assert_double_eq_tol(dens.blocks, (double)nvis / (bh * nb * nb), 1e-12);
  ck_assert_double_eq_tol(dens.full_blocks, (double)nfull / (bh * nb * nb), 1e-12);
  ck_assert_double_eq_tol(dens.partial_blocks, (double)(nvis - nfull) / (bh * nb * nb), 1e-12);
  free(cls);
  free(mask);
}

/* rule-layout internals: lca, tree ranges and content buckets against the model */
static void check_internals(const model *md, const dua_layout *l) {
  const dua_layout_desc *d = &md->desc;
  int32_t nb = md->nb;
  for (int32_t b = 0; b < d->batch; b++)
    for (int32_t h = 0; h < d->heads; h++) {
      dua_rule r = dua_layout_rule(l, h);
      for (int32_t m = 0; m < nb; m++) {
        int32_t lo = 0, hi = 0;
        if (d->paths == NULL)
          dua_tree_range(&r, m, &lo, &hi);
        int32_t rlo = 0, rhi = 0;
        if (d->paths) {
          size_t base = ((size_t)b * d->heads + h) * nb;
          rlo = l->rank_lo[base + m];
          rhi = l->rank_hi[base + m];
        }
        int32_t in_bucket = 0;
        for (int32_t n = 0; n < nb; n++) {
          int share = m_share(md, b, h, m, n, m_depth(md, h));
          ck_assert_int_eq(dua_layout_lca(l, b, h, m, n), m_lca(md, b, h, m, n));
          if (!d->paths) {
            ck_assert_int_eq(share, n >= lo && n < hi);
          } else {
            in_bucket += share;
          }
        }
        if (d->paths) {
          size_t base = ((size_t)b * d->heads + h) * nb;
          ck_assert_int_eq(rhi - rlo, in_bucket);
          for (int32_t k = rlo; k < rhi; k++) {
            int32_t n = l->order[base + k];
            ck_assert(m_share(md, b, h, m, n, m_depth(md, h)));
            if (k > rlo)
              ck_assert_int_gt(n, l->order[base + k - 1]);
          }
        }
      }
    }
}
