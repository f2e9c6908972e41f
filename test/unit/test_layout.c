/* test_layout.c: unit tests (no device) of layouts: tree depths, the exact visibility rule against an
 * independent materialized mask built here from the DESIGN.md section 2 formulas, list form and its
 * transpose, density, content buckets, mask text/SVG, and every argument check. */
#include "attention/layout_internal.h"
#include "dua.h"
#include "mask_model.h"
#include "test_util.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- PRNG (splitmix64) */

/* Seeded per case and per run (test_util: DUA_TEST_SEED repeats a run). */
typedef test_rng rng;
#define rng_next test_rng_next
#define rng_int test_rng_int
#define rng_float test_rng_float

/* ---------------------------------------------------------------- independent model of the rule */

/* random desc: features switched on at random (or forced with `force`), small sizes */
enum { F_DEPTH = 1, F_ARITIES = 2, F_SHIFT = 4, F_WINDOW = 8, F_SINK = 16, F_CAUSAL = 32, F_PATHS = 64 };

static void m_random(model *md, rng *r, int features) {
  memset(md, 0, sizeof *md);
  dua_layout_desc *d = &md->desc;
  static const int32_t blks[] = {16, 32};
  d->block = blks[rng_int(r, 0, 1)];
  int shape = rng_int(r, 0, 3);
  d->seq_len = shape == 0   ? rng_int(r, 1, d->block - 1)              /* N < BLK */
               : shape == 1 ? d->block * rng_int(r, 1, 12)             /* multiple */
                            : rng_int(r, d->block + 1, d->block * 12); /* tails */
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
  const int64_t max_span = m_random_depths(md, r);
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

static void m_free(model *md) {
  free(md->paths);
}

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
            ck_abort_msg(
                "%s: visible(b=%d,h=%d,i=%d,j=%d) = %d, model says %d (N=%d BLK=%d shift=%d W=%d S=%d "
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
            ck_abort_msg("%s: %s row b=%d h=%d x=%d lists %d blocks, model %d", what,
                         t ? "transposed" : "forward", b, h, x, c, want);
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

/* ---------------------------------------------------------------- tests */

static dua_layout *create_ok(const dua_layout_desc *d) {
  char err[256] = "";
  dua_layout *l = NULL;
  dua_status st = dua_layout_create(d, &l, err, sizeof err);
  if (st != DUA_SUCCESS)
    ck_abort_msg("dua_layout_create failed (%d): %s", (int)st, err);
  return l;
}

static dua_layout_desc base_desc(int32_t n, int32_t blk) {
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = n;
  d.block = blk;
  d.batch = 1;
  d.heads = 1;
  d.arity = 2;
  return d;
}

START_TEST(test_tree_depth) {
  static const struct {
    int32_t nb, p, D;
  } cases[] = {{1, 2, 0},  {2, 2, 1},  {3, 2, 2},     {4, 2, 2},    {5, 2, 3},  {8, 2, 3},
               {9, 2, 4},  {1, 3, 0},  {3, 3, 1},     {4, 3, 2},    {9, 3, 2},  {10, 3, 3},
               {27, 3, 3}, {28, 3, 4}, {4, 4, 1},     {5, 4, 2},    {16, 4, 2}, {17, 4, 3},
               {64, 4, 3}, {65, 4, 4}, {1000, 10, 3}, {1001, 10, 4}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int tail = 0; tail < 2; tail++) {
      dua_layout_desc d = base_desc(cases[c].nb * 16 - (tail ? 5 : 0), 16);
      if (d.seq_len <= 0)
        continue;
      d.arity = cases[c].p;
      int32_t depths[1] = {-1};
      d.depths = depths;
      dua_layout *l = create_ok(&d);
      ck_assert_int_eq(dua_layout_num_blocks(l), cases[c].nb);
      ck_assert_int_eq(dua_layout_tree_depth(l, 0), cases[c].D);
      ck_assert_int_eq(dua_layout_tree_depth(l, 1), -1);
      dua_layout_destroy(l);
    }
  dua_layout_destroy(NULL);
}
END_TEST

/* Random rule layouts: each feature alone, then random combinations. Seed differs per case. */
START_TEST(test_random_rule) {
  static const int single[] = {
      0,        F_DEPTH,           F_ARITIES | F_DEPTH,          F_SHIFT | F_DEPTH, F_WINDOW, F_SINK,
      F_CAUSAL, F_PATHS | F_DEPTH, F_PATHS | F_DEPTH | F_ARITIES};
  rng r = test_rng_make(0x1234567ull + 7919ull * (uint64_t)_i);
  int nsingle = (int)(sizeof single / sizeof single[0]);
  int features = _i < 2 * nsingle ? single[_i % nsingle] : (int)(rng_next(&r) & 127u) | F_DEPTH;
  model md;
  m_random(&md, &r, features);
  dua_layout *l = create_ok(&md.desc);
  char what[64];
  snprintf(what, sizeof what, "case %d features 0x%x", (int)_i, features);
  check_internals(&md, l);
  check_layout_against_model(&md, l, what);
  dua_layout_destroy(l);
  m_free(&md);
}
END_TEST

/* Caller-supplied lists: random subsets (given unsorted), causal or not, tails. */
START_TEST(test_from_lists) {
  rng r = test_rng_make(0xABCDEFull + 104729ull * (uint64_t)_i);
  model md;
  m_random(&md, &r, rng_int(&r, 0, 1) ? F_CAUSAL : 0);
  md.desc.window = 5; /* ignored by list layouts */
  md.desc.sink = 3;
  int32_t nb = md.nb;
  size_t rows = (size_t)md.desc.batch * md.desc.heads * nb;
  int32_t *counts = malloc(rows * sizeof(int32_t)), *indices = malloc(rows * nb * sizeof(int32_t));
  ck_assert(counts && indices);
  for (size_t row = 0; row < rows; row++) {
    int32_t c = 0, *dst = indices + row * nb;
    for (int32_t n = 0; n < nb; n++)
      if (rng_int(&r, 0, 2) == 0)
        dst[c++] = n;
    for (int32_t k = c - 1; k > 0; k--) { /* shuffle: the library sorts */
      int32_t x = rng_int(&r, 0, k), t = dst[k];
      dst[k] = dst[x];
      dst[x] = t;
    }
    for (int32_t k = c; k < nb; k++)
      dst[k] = -77; /* unused tail of the row is never read */
    counts[row] = c;
  }
  md.lcounts = counts;
  md.lindices = indices;
  dua_layout *l = NULL;
  char err[256];
  ck_assert_int_eq(dua_layout_create_from_lists(&md.desc, counts, indices, &l, err, sizeof err), DUA_SUCCESS);
  check_layout_against_model(&md, l, "from_lists");
  dua_layout_destroy(l);
  free(counts);
  free(indices);
  m_free(&md);
}
END_TEST

START_TEST(test_full_density) {
  for (int tail = 0; tail < 2; tail++) {
    dua_layout_desc d = base_desc(tail ? 250 : 256, 32);
    d.batch = 2;
    d.heads = 3;
    dua_layout *l = create_ok(&d);
    dua_layout_density dens;
    ck_assert_int_eq(dua_layout_density_get(l, &dens), DUA_SUCCESS);
    ck_assert_double_eq_tol(dens.pairs, 1.0, 1e-12);
    ck_assert_double_eq_tol(dens.blocks, 1.0, 1e-12);
    ck_assert_double_eq_tol(dens.full_blocks, tail ? 7.0 / 8.0 : 1.0, 1e-12); /* tail column is partial */
    dua_layout_destroy(l);
  }
  /* causal dense: pairs N(N+1)/2 / N^2 */
  dua_layout_desc d = base_desc(128, 16);
  d.causal = 1;
  dua_layout *l = create_ok(&d);
  dua_layout_density dens;
  ck_assert_int_eq(dua_layout_density_get(l, &dens), DUA_SUCCESS);
  ck_assert_double_eq_tol(dens.pairs, 128.0 * 129.0 / 2.0 / (128.0 * 128.0), 1e-12);
  ck_assert_double_eq_tol(dens.full_blocks, 28.0 / 64.0, 1e-12);
  ck_assert_double_eq_tol(dens.partial_blocks, 8.0 / 64.0, 1e-12);
  dua_layout_destroy(l);
}
END_TEST

START_TEST(test_block_diagonal_density) {
  static const int32_t nbs[] = {2, 3, 8, 9, 16};
  for (size_t c = 0; c < sizeof nbs / sizeof nbs[0]; c++)
    for (int32_t p = 2; p <= 4; p++) {
      dua_layout_desc d = base_desc(nbs[c] * 64, 64);
      d.arity = p;
      d.heads = 2;
      int32_t depths[2] = {-1, -1};
      d.depths = depths;
      dua_layout *l = create_ok(&d);
      dua_layout_density dens;
      ck_assert_int_eq(dua_layout_density_get(l, &dens), DUA_SUCCESS);
      ck_assert_double_eq_tol(dens.pairs, 1.0 / nbs[c], 1e-12);
      ck_assert_double_eq_tol(dens.blocks, 1.0 / nbs[c], 1e-12);
      ck_assert_double_eq_tol(dens.full_blocks, 1.0 / nbs[c], 1e-12);
      dua_layout_destroy(l);
    }
}
END_TEST

/* expects INVALID_ARGUMENT, a message containing `field`, and *out untouched */
static void expect_invalid(const dua_layout_desc *d, const char *field) {
  dua_layout *sentinel = (dua_layout *)(uintptr_t)0x5a5a5a5a, *l = sentinel;
  char err[256] = "";
  ck_assert_int_eq(dua_layout_create(d, &l, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_eq(l, sentinel);
  if (strstr(err, field) == NULL)
    ck_abort_msg("message '%s' does not name '%s'", err, field);
  /* error may be NULL or tiny */
  ck_assert_int_eq(dua_layout_create(d, &l, NULL, 0), DUA_ERROR_INVALID_ARGUMENT);
  char tiny[4] = "xyz";
  ck_assert_int_eq(dua_layout_create(d, &l, tiny, sizeof tiny), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq((int)strlen(tiny), 3);
  ck_assert_ptr_eq(l, sentinel);
}

START_TEST(test_invalid_arguments) {
  dua_layout_desc d;
  int32_t depths[2] = {0, 0}, arities[2] = {2, 2};
  d = base_desc(256, 32); /* nb = 8, D = 3 */
  depths[0] = 4;
  d.depths = depths;
  expect_invalid(&d, "depths[0]");
  depths[0] = -2;
  expect_invalid(&d, "depths[0]");
  d = base_desc(256, 32);
  d.arity = 1;
  expect_invalid(&d, "arity");
  d = base_desc(256, 32);
  d.heads = 2;
  arities[1] = 1;
  d.arities = arities;
  expect_invalid(&d, "arities[1]");
  arities[1] = 2;
  d = base_desc(256, 48);
  expect_invalid(&d, "block");
  d = base_desc(256, 512);
  expect_invalid(&d, "block");
  d = base_desc(0, 32);
  expect_invalid(&d, "seq_len");
  d = base_desc(256, 32);
  d.batch = 0;
  expect_invalid(&d, "batch");
  d = base_desc(256, 32);
  d.heads = -1;
  expect_invalid(&d, "heads");
  d = base_desc(256, 32);
  d.heads = 6;
  d.kv_heads = 4;
  expect_invalid(&d, "kv_heads");
  d.kv_heads = -2;
  expect_invalid(&d, "kv_heads");
  d = base_desc(256, 32);
  d.window = -1;
  expect_invalid(&d, "window");
  d = base_desc(256, 32);
  d.sink = -3;
  expect_invalid(&d, "sink");
  d = base_desc(256, 32);
  d.shift = -1;
  expect_invalid(&d, "shift");
  d.shift = 9; /* > p^D = 8 */
  expect_invalid(&d, "shift");
  d = base_desc(256, 32);
  d.causal = 2;
  expect_invalid(&d, "causal");
  expect_invalid(NULL, "desc");
  d = base_desc(256, 32);
  char err[256] = "";
  ck_assert_int_eq(dua_layout_create(&d, NULL, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "out"));
  /* overflow: batch * heads * nb beyond int32 */
  d = base_desc(16, 16);
  d.batch = 65536;
  d.heads = 65536;
  expect_invalid(&d, "batch");
  /* subtree span p^D beyond 2^30 */
  d = base_desc(16 * 100000, 16);
  d.arity = 70000; /* D = 2, p^D = 4.9e9 */
  expect_invalid(&d, "arity");
  /* bad content digit */
  d = base_desc(64, 16); /* nb = 4, D = 2 */
  d.batch = 2;
  uint8_t paths[2 * 4 * 2];
  for (int k = 0; k < 16; k++)
    paths[k] = (uint8_t)(k & 1);
  paths[(1 * 4 + 3) * 2 + 1] = 2; /* b=1, block 3, level 1 */
  d.paths = paths;
  expect_invalid(&d, "paths[b=1][h=0][block=3][level=1] = 2");
}
END_TEST

START_TEST(test_invalid_lists) {
  dua_layout_desc d = base_desc(64, 16); /* nb = 4 */
  int32_t counts[4] = {1, 2, 0, 4}, indices[16] = {0, 9, 9, 9, 1, 0, 9, 9, 9, 9, 9, 9, 3, 2, 1, 0};
  dua_layout *sentinel = (dua_layout *)(uintptr_t)0x77, *l = sentinel;
  char err[256] = "";
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, err, sizeof err), DUA_SUCCESS);
  ck_assert_ptr_ne(l, sentinel);
  dua_layout_destroy(l);
  l = sentinel;
  indices[5] = 1; /* duplicate */
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "indices"));
  indices[5] = 4; /* out of range */
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "indices"));
  indices[5] = 0;
  counts[2] = 5;
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "counts"));
  counts[2] = 0;
  ck_assert_int_eq(dua_layout_create_from_lists(&d, NULL, indices, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "counts"));
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, NULL, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "indices"));
  d.block = 48;
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "block"));
  ck_assert_ptr_eq(l, sentinel);
  dua_block_lists lists;
  ck_assert_int_eq(dua_layout_lists(NULL, 0, &lists), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_layout_density_get(NULL, NULL), DUA_ERROR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_lists_too_large) {
  dua_layout_desc d = base_desc(16 * 50000, 16); /* nb^2 = 2.5e9 > INT32_MAX */
  int32_t depths[1] = {-1};
  d.depths = depths;
  dua_layout *l = create_ok(&d);
  dua_block_lists lists;
  memset(&lists, 0, sizeof lists);
  ck_assert_int_eq(dua_layout_lists(l, 0, &lists), DUA_ERROR_UNSUPPORTED);
  ck_assert_ptr_null(lists.counts);
  ck_assert_int_eq(dua_layout_visible(l, 0, 0, 16 * 49999 + 3, 16 * 49999), 1);
  ck_assert_int_eq(dua_layout_visible(l, 0, 0, 16 * 49999 + 3, 16 * 49998), 0);
  dua_layout_destroy(l);
}
END_TEST

START_TEST(test_mask_text) {
  dua_layout_desc d = base_desc(64, 16); /* nb = 4, p = 2, D = 2 */
  int32_t depths[1] = {1};
  d.depths = depths;
  d.causal = 1;
  d.window = 16;
  dua_layout *l = create_ok(&d);
  const char *want = "+...\n#+..\n.++.\n..#+\n";
  char buf[64];
  ck_assert_uint_eq(dua_layout_mask_text(l, 0, 0, buf, sizeof buf), strlen(want) + 1);
  ck_assert_str_eq(buf, want);
  ck_assert_uint_eq(dua_layout_mask_text(l, 0, 0, NULL, 0), strlen(want) + 1);
  char small[8];
  ck_assert_uint_eq(dua_layout_mask_text(l, 0, 0, small, sizeof small), strlen(want) + 1);
  ck_assert_str_eq(small, "+...\n#+");
  dua_layout_destroy(l);
  /* non-causal block diagonal with shift 1 (nb = 4, g = 2): pairs {0}, {1,2}, {3}; tail column partial */
  d = base_desc(60, 16);
  depths[0] = 1;
  d.depths = depths;
  d.shift = 1;
  l = create_ok(&d);
  ck_assert_uint_eq(dua_layout_mask_text(l, 0, 0, buf, sizeof buf), 21);
  ck_assert_str_eq(buf, "#...\n.##.\n.##.\n...+\n");
  dua_layout_destroy(l);
}
END_TEST

START_TEST(test_mask_svg) {
  dua_layout_desc d = base_desc(200, 16);
  int32_t depths[1] = {2};
  d.depths = depths;
  d.causal = 1;
  d.sink = 20;
  dua_layout *l = create_ok(&d);
  char path[] = "/tmp/dua_test_layout_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(dua_layout_mask_svg(l, 0, 0, path), DUA_SUCCESS);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char text[4096] = "";
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  remove(path);
  ck_assert_ptr_nonnull(strstr(text, "<svg"));
  ck_assert_ptr_nonnull(strstr(text, "N=200"));
  ck_assert_ptr_nonnull(strstr(text, "#1f77b4")); /* full */
  ck_assert_ptr_nonnull(strstr(text, "#ffbf00")); /* partial */
  ck_assert_int_eq(dua_layout_mask_svg(l, 0, 0, "/nonexistent-dir/x/mask.svg"), DUA_ERROR_IO);
  ck_assert_ptr_nonnull(strstr(l->error, "/nonexistent-dir/x/mask.svg"));
  ck_assert_int_eq(dua_layout_mask_svg(l, 0, 1, path), DUA_ERROR_INVALID_ARGUMENT);
  dua_layout_destroy(l);
}
END_TEST

/* rule helpers that the kernels mirror: visit intervals are disjoint, sorted, and cover the model */
START_TEST(test_visit_intervals) {
  rng r = test_rng_make(0x51ull + 31337ull * (uint64_t)_i);
  model md;
  m_random(&md, &r, F_DEPTH | F_SHIFT | F_WINDOW | F_SINK | (rng_int(&r, 0, 1) ? F_CAUSAL : 0));
  dua_layout *l = create_ok(&md.desc);
  for (int32_t h = 0; h < md.desc.heads; h++) {
    dua_rule rule = dua_layout_rule(l, h);
    for (int32_t m = 0; m < md.nb; m++) {
      int32_t lo, hi;
      dua_tree_range(&rule, m, &lo, &hi);
      dua_block_interval iv[3];
      int niv = dua_visit_intervals(&rule, m, lo, hi, iv);
      ck_assert(niv >= 1 && niv <= 3);
      for (int k = 0; k < niv; k++) {
        ck_assert_int_lt(iv[k].lo, iv[k].hi);
        if (k > 0)
          ck_assert_int_gt(iv[k].lo, iv[k - 1].hi);
      }
      for (int32_t n = 0; n < md.nb; n++) {
        int in = 0, any = 0;
        for (int k = 0; k < niv; k++)
          in |= n >= iv[k].lo && n < iv[k].hi;
        for (int32_t i = m * md.desc.block; i < (m + 1) * md.desc.block; i++)
          for (int32_t j = n * md.desc.block; j < (n + 1) * md.desc.block; j++)
            any |= m_visible(&md, 0, h, i, j);
        ck_assert_int_eq(in, any);
      }
    }
  }
  dua_layout_destroy(l);
  m_free(&md);
}
END_TEST

/* The launch tail's order (tail_order.c): a permutation of the last entries by decreasing length, ties in
 * entry order, the lengths counted here from the model's mask (key blocks a query block visits; query blocks
 * visiting a key block over its GQA group); nothing reordered where those lengths are equal; their common
 * length and the longest reported as counted. */
START_TEST(test_tail_order) {
  rng r = test_rng_make(0x7a11ull + 65537ull * (uint64_t)_i);
  model md;
  m_random_rule_model(&md, &r, 300);
  if (_i % 2) /* half the cases causal, where lengths differ */
    md.desc.causal = 1;
  dua_layout *l = create_ok(&md.desc);
  const dua_layout_desc *d = &md.desc;
  const int32_t nb = md.nb, n_tok = d->seq_len, blk = d->block, hkv = d->kv_heads ? d->kv_heads : d->heads;
  uint8_t *mask = m_mask(&md); /* [B][H][N][N] */
  for (int keys = 0; keys < 2; keys++) {
    const int32_t heads = keys ? hkv : d->heads, group = d->heads / hkv;
    const int64_t total = (int64_t)d->batch * heads * nb;
    int64_t *length = calloc((size_t)total, sizeof *length);
    int32_t *order = malloc((size_t)total * sizeof *order);
    ck_assert(length && order);
    for (int32_t b = 0; b < d->batch; b++)
      for (int32_t h = 0; h < d->heads; h++)
        for (int32_t m = 0; m < nb; m++)
          for (int32_t n = 0; n < nb; n++) {
            int any = 0;
            for (int32_t i = m * blk; i < (m + 1) * blk && i < n_tok; i++)
              for (int32_t j = n * blk; j < (n + 1) * blk && j < n_tok; j++)
                any |= mask[(((size_t)b * d->heads + h) * n_tok + i) * n_tok + j];
            if (any)
              length[keys ? ((int64_t)b * heads + h / group) * nb + n : ((int64_t)b * heads + h) * nb + m]++;
          }
    /* (tail, window): equal, and the lengths' window longer or shorter than the reordered tail */
    const int64_t tails[5][2] = {
        {total, total}, {total / 2 + 1, total / 2 + 1}, {3, 3}, {3, total}, {total, 2}};
    for (int t = 0; t < 5; t++) {
      const int64_t tail = tails[t][0] < total ? tails[t][0] : total, first = total - tail;
      const int64_t window = tails[t][1] < total ? tails[t][1] : total, wfirst = total - window;
      int64_t count = -1;
      dua_tail_lengths lengths = {-2, -2};
      ck_assert_int_eq(dua_layout_tail_entries(l, keys, tails[t][1], tails[t][0], order, &count, &lengths),
                       DUA_SUCCESS);
      int equal = 1, wequal = 1;
      int64_t longest = length[wfirst];
      for (int64_t e = first + 1; e < total; e++)
        equal &= length[e] == length[first];
      for (int64_t e = wfirst + 1; e < total; e++) {
        wequal &= length[e] == length[wfirst];
        longest = length[e] > longest ? length[e] : longest;
      }
      ck_assert_int_eq(count, tail < 2 || equal ? 0 : tail);
      ck_assert_int_eq(lengths.uniform, window >= 2 && wequal ? length[wfirst] : -1);
      ck_assert_int_eq(lengths.longest, window >= 2 ? longest : -1);
      uint8_t *seen = calloc((size_t)total, 1);
      ck_assert_ptr_nonnull(seen);
      for (int64_t i = 0; i < count; i++) {
        ck_assert(order[i] >= first && order[i] < total && !seen[order[i]]);
        seen[order[i]] = 1;
        if (i > 0) {
          const int64_t a = length[order[i - 1]], c = length[order[i]];
          ck_assert(a > c || (a == c && order[i - 1] < order[i]));
        }
      }
      free(seen);
    }
    free(length);
    free(order);
  }
  free(mask);
  free(md.paths);
  dua_layout_destroy(l);
}
END_TEST

int main(void) {
  Suite *s = suite_create("layout");
  TCase *tc = tcase_create("layout");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_tree_depth);
  tcase_add_loop_test(tc, test_random_rule, 0, 160);
  tcase_add_loop_test(tc, test_from_lists, 0, 24);
  tcase_add_loop_test(tc, test_visit_intervals, 0, 40);
  tcase_add_loop_test(tc, test_tail_order, 0, 40);
  tcase_add_test(tc, test_full_density);
  tcase_add_test(tc, test_block_diagonal_density);
  tcase_add_test(tc, test_invalid_arguments);
  tcase_add_test(tc, test_invalid_lists);
  tcase_add_test(tc, test_lists_too_large);
  tcase_add_test(tc, test_mask_text);
  tcase_add_test(tc, test_mask_svg);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
