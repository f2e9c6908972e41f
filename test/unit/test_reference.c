/* test_reference.c: unit tests (no device) of dua_attention_reference against an independent naive
 * computation here (mask materialized from the DESIGN.md section 2 formulas, dense float softmax), plus
 * full == dense, block-diagonal == per-chunk dense, empty rows, GQA, strides, level bias, bad shapes. */
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

/* ---------------------------------------------------------------- host tensors */

static float *elem(const dua_host_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t->data + a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

static void tensor_random(dua_host_tensor *t, rng *r) {
  for (int64_t a = 0; a < t->shape[0]; a++)
    for (int64_t b = 0; b < t->shape[1]; b++)
      for (int64_t c = 0; c < t->shape[2]; c++)
        for (int64_t d = 0; d < t->shape[3]; d++)
          *elem(t, a, b, c, d) = rng_float(r);
}

static void tensor_poison(dua_host_tensor *t) {
  size_t n = (size_t)(t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3]);
  for (size_t x = 0; x < n; x++)
    t->data[x] = NAN;
}

/* ---------------------------------------------------------------- independent naive model */

/* naive float attention with a materialized mask and bias; o, lse contiguous (B,H,N,D) / (B,H,N) */
static void naive(const model *md, const float *lb, float scale, const dua_host_tensor *q,
                  const dua_host_tensor *k, const dua_host_tensor *v, float *o, float *lse) {
  int32_t B = md->desc.batch, H = md->desc.heads, N = md->desc.seq_len, DH = (int32_t)q->shape[3];
  int32_t HKV = md->desc.kv_heads ? md->desc.kv_heads : H, BLK = md->desc.block;
  float *s = malloc((size_t)N * sizeof(float));
  uint8_t *vis = malloc((size_t)N);
  ck_assert(s && vis);
  if (scale == 0.0f)
    scale = 1.0f / sqrtf((float)DH);
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++)
      for (int32_t i = 0; i < N; i++) {
        int32_t kh = h / (H / HKV);
        float mx = -INFINITY;
        for (int32_t j = 0; j < N; j++) {
          vis[j] = (uint8_t)m_visible(md, b, h, i, j);
          float dot = 0;
          for (int32_t d = 0; d < DH; d++)
            dot += *elem(q, b, h, i, d) * *elem(k, b, kh, j, d);
          s[j] = dot * scale;
          if (lb && !md->lcounts && m_tree(md, b, h, i, j) && !m_extra(md, i, j))
            s[j] += lb[h * (md->dmax + 1) + m_lca(md, b, h, i / BLK, j / BLK)];
          if (vis[j] && s[j] > mx)
            mx = s[j];
        }
        float sum = 0;
        for (int32_t j = 0; j < N; j++)
          if (vis[j] && mx > -INFINITY) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
          }
        float *orow = o + (((size_t)b * H + h) * N + i) * DH;
        for (int32_t d = 0; d < DH; d++) {
          float acc = 0;
          for (int32_t j = 0; j < N; j++)
            if (vis[j] && mx > -INFINITY)
              acc += s[j] * *elem(v, b, kh, j, d);
          orow[d] = sum > 0 ? acc / sum : 0.0f;
        }
        lse[((size_t)b * H + h) * N + i] = sum > 0 ? mx + logf(sum) : -INFINITY;
      }
  free(s);
  free(vis);
}

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

/* |x - ref| <= 1e-4 + 1e-3 |ref| (fp32 tolerance of DESIGN.md section 6); both -inf allowed for lse */
static void expect_close(float x, float ref, const char *what, size_t idx) {
  if (isinf(ref) && ref < 0 && isinf(x) && x < 0)
    return;
  if (isnan(x) || !(fabsf(x - ref) <= 1e-4f + 1e-3f * fabsf(ref)))
    ck_abort_msg("%s[%zu] = %.8g, expected %.8g", what, idx, (double)x, (double)ref);
}

/* runs the reference and the naive model on fresh random q, k, v and compares */
static void compare_with_naive(const model *md, dua_layout *l, const float *lb, float scale, int32_t dh,
                               int bnhd, rng *r) {
  int32_t B = md->desc.batch, H = md->desc.heads, N = md->desc.seq_len;
  int32_t HKV = md->desc.kv_heads ? md->desc.kv_heads : H;
  dua_host_tensor q = test_host_tensor_new(B, H, N, dh, bnhd), k = test_host_tensor_new(B, HKV, N, dh, bnhd);
  dua_host_tensor v = test_host_tensor_new(B, HKV, N, dh, bnhd), o = test_host_tensor_new(B, H, N, dh, 0);
  dua_host_tensor lse = test_host_tensor_new(B, H, N, 1, 0);
  tensor_random(&q, r);
  tensor_random(&k, r);
  tensor_random(&v, r);
  tensor_poison(&o);
  tensor_poison(&lse);
  ck_assert_int_eq(dua_attention_reference(l, scale, lb, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  size_t no = (size_t)B * H * N * dh, nl = (size_t)B * H * N;
  float *ro = malloc(no * sizeof(float)), *rl = malloc(nl * sizeof(float));
  ck_assert(ro && rl);
  naive(md, lb, scale, &q, &k, &v, ro, rl);
  for (size_t x = 0; x < no; x++)
    expect_close(o.data[x], ro[x], "o", x);
  for (size_t x = 0; x < nl; x++)
    expect_close(lse.data[x], rl[x], "lse", x);
  free(ro);
  free(rl);
  free(q.data);
  free(k.data);
  free(v.data);
  free(o.data);
  free(lse.data);
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_params_init) {
  dua_attention_params p;
  memset(&p, 0x7f, sizeof p);
  dua_attention_params_init(&p);
  ck_assert(p.scale == 0.0f);
  ck_assert_int_eq(p.algo, DUA_ALGO_AUTO);
  ck_assert_ptr_null(p.level_bias);
  ck_assert_ptr_null(p.tile_grad);
  ck_assert_ptr_null(p.token_scale);
  ck_assert_ptr_null(p.token_table);
  ck_assert_int_eq(p.allow_tf32, 0); /* exact fp32 unless asked (a missed field once turned tf32 on) */
  dua_attention_params_init(NULL);
}
END_TEST

/* random rule layouts (all features), GQA, per-head arity, level bias, both storage orders */
START_TEST(test_random_layouts) {
  rng r = test_rng_make(0xC0FFEEull + 65537ull * (uint64_t)_i);
  model md;
  m_random_rule_model(&md, &r, 120);
  dua_layout_desc *d = &md.desc;
  float lb[8 * 16];
  int use_bias = rng_int(&r, 0, 1);
  for (int x = 0; x < 8 * 16; x++)
    lb[x] = 2.0f * rng_float(&r);
  dua_layout *l = create_ok(d);
  float scale = rng_int(&r, 0, 1) ? 0.0f : 0.3f + (float)rng_int(&r, 0, 10) / 10.0f;
  compare_with_naive(&md, l, use_bias ? lb : NULL, scale, rng_int(&r, 1, 20), rng_int(&r, 0, 1), &r);
  dua_layout_destroy(l);
  free(md.paths);
}
END_TEST

/* list layouts: random lists with empty rows; the level bias is ignored */
START_TEST(test_random_lists) {
  rng r = test_rng_make(0xBEEFull + 7777ull * (uint64_t)_i);
  model md;
  memset(&md, 0, sizeof md);
  md.desc = base_desc(rng_int(&r, 1, 100), 16);
  md.desc.batch = rng_int(&r, 1, 2);
  md.desc.heads = 2;
  md.desc.causal = rng_int(&r, 0, 1);
  md.nb = (md.desc.seq_len + 15) / 16;
  size_t rows = (size_t)md.desc.batch * md.desc.heads * md.nb;
  int32_t *counts = malloc(rows * sizeof(int32_t)), *indices = malloc(rows * md.nb * sizeof(int32_t));
  ck_assert(counts && indices);
  for (size_t row = 0; row < rows; row++) {
    counts[row] = 0;
    for (int32_t n = 0; n < md.nb; n++)
      if (rng_int(&r, 0, 2) == 0)
        indices[row * md.nb + counts[row]++] = n;
  }
  md.lcounts = counts;
  md.lindices = indices;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create_from_lists(&md.desc, counts, indices, &l, NULL, 0), DUA_SUCCESS);
  float lb[3] = {5.0f, -3.0f, 1.0f};
  compare_with_naive(&md, l, lb, 0.0f, rng_int(&r, 1, 9), 0, &r);
  dua_layout_destroy(l);
  free(counts);
  free(indices);
}
END_TEST

/* plain dense attention of rows [t0, t1) over keys [t0, t1) (or keys <= i when causal), one (b, h) */
static void dense_rows(const dua_host_tensor *q, const dua_host_tensor *k, const dua_host_tensor *v,
                       int64_t b, int64_t h, int64_t kh, int64_t t0, int64_t t1, int causal, float *o,
                       float *lse) {
  int64_t dh = q->shape[3];
  double scale = 1.0 / sqrt((double)dh);
  for (int64_t i = t0; i < t1; i++) {
    int64_t end = causal ? i + 1 : t1;
    double mx = -INFINITY, sum = 0;
    double *s = malloc((size_t)(end - t0) * sizeof(double));
    ck_assert_ptr_nonnull(s);
    for (int64_t j = t0; j < end; j++) {
      double dot = 0;
      for (int64_t d = 0; d < dh; d++)
        dot += (double)*elem(q, b, h, i, d) * *elem(k, b, kh, j, d);
      s[j - t0] = dot * scale;
      mx = fmax(mx, s[j - t0]);
    }
    for (int64_t j = t0; j < end; j++)
      sum += (s[j - t0] = exp(s[j - t0] - mx));
    for (int64_t d = 0; d < dh; d++) {
      double acc = 0;
      for (int64_t j = t0; j < end; j++)
        acc += s[j - t0] * *elem(v, b, kh, j, d);
      o[i * dh + d] = (float)(acc / sum);
    }
    lse[i] = (float)(mx + log(sum));
    free(s);
  }
}

/* full layout == dense (causal or not); block-diagonal == dense per chunk */
static void check_chunked(int32_t n, int32_t blk, int block_diagonal, int causal, uint64_t seed) {
  rng r = test_rng_make(seed);
  dua_layout_desc d = base_desc(n, blk);
  d.heads = 2;
  d.causal = causal;
  int32_t depths[2] = {-1, -1};
  if (block_diagonal)
    d.depths = depths;
  dua_layout *l = create_ok(&d);
  int32_t dh = 8;
  dua_host_tensor q = test_host_tensor_new(1, 2, n, dh, 0), k = test_host_tensor_new(1, 2, n, dh, 0),
                  v = test_host_tensor_new(1, 2, n, dh, 0);
  dua_host_tensor o = test_host_tensor_new(1, 2, n, dh, 0), lse = test_host_tensor_new(1, 2, n, 1, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  tensor_poison(&o);
  tensor_poison(&lse);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, NULL, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  float *ro = malloc((size_t)n * dh * sizeof(float)), *rl = malloc((size_t)n * sizeof(float));
  ck_assert(ro && rl);
  for (int64_t h = 0; h < 2; h++) {
    if (block_diagonal)
      for (int64_t t0 = 0; t0 < n; t0 += blk)
        dense_rows(&q, &k, &v, 0, h, h, t0, t0 + blk < n ? t0 + blk : n, causal, ro, rl);
    else
      dense_rows(&q, &k, &v, 0, h, h, 0, n, causal, ro, rl);
    for (int64_t x = 0; x < (int64_t)n * dh; x++)
      expect_close(*elem(&o, 0, h, x / dh, x % dh), ro[x], "o", (size_t)x);
    for (int64_t x = 0; x < n; x++)
      expect_close(*elem(&lse, 0, h, x, 0), rl[x], "lse", (size_t)x);
  }
  free(ro);
  free(rl);
  free(q.data);
  free(k.data);
  free(v.data);
  free(o.data);
  free(lse.data);
  dua_layout_destroy(l);
}

START_TEST(test_full_is_dense) {
  check_chunked(96, 16, 0, 0, 11);
  check_chunked(100, 32, 0, 0, 12);
  check_chunked(77, 16, 0, 1, 13);
  check_chunked(9, 16, 0, 0, 14);
}
END_TEST

START_TEST(test_block_diagonal_is_chunked) {
  check_chunked(128, 16, 1, 0, 21);
  check_chunked(100, 16, 1, 0, 22); /* tail chunk of 4 */
  check_chunked(96, 32, 1, 1, 23);
}
END_TEST

static void expect_empty_row(const dua_host_tensor *o, const dua_host_tensor *lse, int64_t b, int64_t h,
                             int64_t i) {
  for (int64_t d = 0; d < o->shape[3]; d++)
    ck_assert(*elem(o, b, h, i, d) == 0.0f && !signbit(*elem(o, b, h, i, d)));
  float x = *elem(lse, b, h, i, 0);
  ck_assert(isinf(x) && x < 0);
}

START_TEST(test_empty_rows) {
  rng r = test_rng_make(31);
  /* list form: row block 1 empty, row block 2 lists only block 3 (future, causal) */
  dua_layout_desc d = base_desc(64, 16);
  d.causal = 1;
  int32_t counts[4] = {1, 0, 1, 2}, indices[16] = {0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 3, 0, 0};
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, NULL, 0), DUA_SUCCESS);
  dua_host_tensor q = test_host_tensor_new(1, 1, 64, 4, 0), k = test_host_tensor_new(1, 1, 64, 4, 0),
                  v = test_host_tensor_new(1, 1, 64, 4, 0);
  dua_host_tensor o = test_host_tensor_new(1, 1, 64, 4, 0), lse = test_host_tensor_new(1, 1, 64, 1, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  tensor_poison(&o);
  tensor_poison(&lse);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, NULL, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  for (int64_t i = 0; i < 64; i++) {
    if (i >= 16 && i < 48) {
      expect_empty_row(&o, &lse, 0, 0, i);
    } else {
      ck_assert(isfinite(*elem(&lse, 0, 0, i, 0)));
      for (int64_t dd = 0; dd < 4; dd++)
        ck_assert(isfinite(*elem(&o, 0, 0, i, dd)));
    }
  }
  /* without lse too */
  tensor_poison(&o);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, NULL, &q, &k, &v, &o, NULL), DUA_SUCCESS);
  for (size_t x = 0; x < 64 * 4; x++)
    ck_assert(!isnan(o.data[x]));
  dua_layout_destroy(l);
  /* rule form: a -inf level bias on every tree pair of a block-diagonal layout empties every row except
   * those reaching a window key outside their block */
  d = base_desc(64, 16);
  int32_t depths[1] = {-1};
  d.depths = depths;
  d.window = 1;
  d.causal = 1;
  l = create_ok(&d);
  float lb[3] = {0.0f, 0.0f, -INFINITY}; /* D = 2: tree pairs (lca 2) are cut */
  tensor_poison(&o);
  tensor_poison(&lse);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, lb, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  for (int64_t i = 0; i < 64; i++)
    for (int64_t dd = 0; dd < 4; dd++)
      ck_assert(!isnan(*elem(&o, 0, 0, i, dd)));
  /* each row i sees window keys i-1, i (bias 0): never empty; lse finite */
  for (int64_t i = 0; i < 64; i++)
    ck_assert(isfinite(*elem(&lse, 0, 0, i, 0)));
  d.window = 0;
  dua_layout_destroy(l);
  l = create_ok(&d);
  tensor_poison(&o);
  tensor_poison(&lse);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, lb, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  for (int64_t i = 0; i < 64; i++)
    expect_empty_row(&o, &lse, 0, 0, i);
  dua_layout_destroy(l);
  free(q.data);
  free(k.data);
  free(v.data);
  free(o.data);
  free(lse.data);
}
END_TEST

/* GQA (Hq = 4, Hkv = 2) equals MHA with K/V heads replicated h -> h / 2, bit for bit */
START_TEST(test_gqa) {
  rng r = test_rng_make(41);
  dua_layout_desc d = base_desc(70, 16);
  d.heads = 4;
  d.kv_heads = 2;
  int32_t depths[4] = {0, 1, 2, -1};
  d.depths = depths;
  d.window = 5;
  d.causal = 1;
  dua_layout *lg = create_ok(&d);
  d.kv_heads = 0;
  dua_layout *lm = create_ok(&d);
  dua_host_tensor q = test_host_tensor_new(1, 4, 70, 12, 0), k = test_host_tensor_new(1, 2, 70, 12, 0),
                  v = test_host_tensor_new(1, 2, 70, 12, 0);
  dua_host_tensor k4 = test_host_tensor_new(1, 4, 70, 12, 0), v4 = test_host_tensor_new(1, 4, 70, 12, 0);
  dua_host_tensor o = test_host_tensor_new(1, 4, 70, 12, 0), o4 = test_host_tensor_new(1, 4, 70, 12, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  for (int64_t h = 0; h < 4; h++)
    for (int64_t i = 0; i < 70; i++)
      for (int64_t x = 0; x < 12; x++) {
        *elem(&k4, 0, h, i, x) = *elem(&k, 0, h / 2, i, x);
        *elem(&v4, 0, h, i, x) = *elem(&v, 0, h / 2, i, x);
      }
  ck_assert_int_eq(dua_attention_reference(lg, 0.0f, NULL, &q, &k, &v, &o, NULL), DUA_SUCCESS);
  ck_assert_int_eq(dua_attention_reference(lm, 0.0f, NULL, &q, &k4, &v4, &o4, NULL), DUA_SUCCESS);
  ck_assert_mem_eq(o.data, o4.data, 4 * 70 * 12 * sizeof(float));
  /* and the MHA layout rejects Hkv = 2 tensors */
  ck_assert_int_eq(dua_attention_reference(lm, 0.0f, NULL, &q, &k, &v, &o, NULL), DUA_ERROR_INVALID_ARGUMENT);
  dua_layout_destroy(lg);
  dua_layout_destroy(lm);
  free(q.data);
  free(k.data);
  free(v.data);
  free(k4.data);
  free(v4.data);
  free(o.data);
  free(o4.data);
}
END_TEST

/* (B,N,H,D) storage through strides gives exactly the (B,H,N,D) result */
START_TEST(test_strides) {
  rng r = test_rng_make(51);
  dua_layout_desc d = base_desc(50, 16);
  d.batch = 2;
  d.heads = 3;
  d.arity = 3;
  int32_t depths[3] = {1, 0, -1};
  d.depths = depths;
  d.sink = 4;
  dua_layout *l = create_ok(&d);
  dua_host_tensor t[2][5];
  for (int s = 0; s < 2; s++)
    for (int x = 0; x < 5; x++)
      t[s][x] = test_host_tensor_new(2, 3, 50, x == 4 ? 1 : 6, s);
  for (int x = 0; x < 3; x++) {
    tensor_random(&t[0][x], &r);
    for (int64_t b = 0; b < 2; b++)
      for (int64_t h = 0; h < 3; h++)
        for (int64_t i = 0; i < 50; i++)
          for (int64_t e = 0; e < 6; e++)
            *elem(&t[1][x], b, h, i, e) = *elem(&t[0][x], b, h, i, e);
  }
  for (int s = 0; s < 2; s++) {
    tensor_poison(&t[s][3]);
    tensor_poison(&t[s][4]);
    ck_assert_int_eq(dua_attention_reference(l, 0.7f, NULL, &t[s][0], &t[s][1], &t[s][2], &t[s][3], &t[s][4]),
                     DUA_SUCCESS);
  }
  for (int64_t b = 0; b < 2; b++)
    for (int64_t h = 0; h < 3; h++)
      for (int64_t i = 0; i < 50; i++) {
        for (int64_t e = 0; e < 6; e++)
          ck_assert(*elem(&t[0][3], b, h, i, e) == *elem(&t[1][3], b, h, i, e));
        ck_assert(*elem(&t[0][4], b, h, i, 0) == *elem(&t[1][4], b, h, i, 0));
      }
  for (int s = 0; s < 2; s++)
    for (int x = 0; x < 5; x++)
      free(t[s][x].data);
  dua_layout_destroy(l);
}
END_TEST

/* level bias by hand: q . k = 0 so every score is its bias; N = 32, BLK = 16, nb = 2, D = 1, depth 0,
 * window 2: within-block pairs (lca 1) get b1, cross-block pairs (lca 0) get b0, |i - j| <= 2 get 0. */
START_TEST(test_level_bias_manual) {
  rng r = test_rng_make(61);
  dua_layout_desc d = base_desc(32, 16);
  d.window = 2;
  dua_layout *l = create_ok(&d);
  dua_host_tensor q = test_host_tensor_new(1, 1, 32, 2, 0), k = test_host_tensor_new(1, 1, 32, 2, 0),
                  v = test_host_tensor_new(1, 1, 32, 2, 0);
  dua_host_tensor o = test_host_tensor_new(1, 1, 32, 2, 0), lse = test_host_tensor_new(1, 1, 32, 1, 0);
  for (int64_t i = 0; i < 32; i++) {
    *elem(&q, 0, 0, i, 0) = 0.5f + rng_float(&r) * 0.25f;
    *elem(&q, 0, 0, i, 1) = 0.0f;
    *elem(&k, 0, 0, i, 0) = 0.0f;
    *elem(&k, 0, 0, i, 1) = rng_float(&r);
  }
  tensor_random(&v, &r);
  const float lb[2] = {-1.5f, 0.75f};
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, lb, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  for (int64_t i = 0; i < 32; i++) {
    double sum = 0, acc[2] = {0, 0};
    for (int64_t j = 0; j < 32; j++) {
      double bias = llabs(i - j) <= 2 ? 0.0 : (i / 16 == j / 16 ? 0.75 : -1.5);
      double w = exp(bias);
      sum += w;
      acc[0] += w * *elem(&v, 0, 0, j, 0);
      acc[1] += w * *elem(&v, 0, 0, j, 1);
    }
    expect_close(*elem(&o, 0, 0, i, 0), (float)(acc[0] / sum), "o0", (size_t)i);
    expect_close(*elem(&o, 0, 0, i, 1), (float)(acc[1] / sum), "o1", (size_t)i);
    expect_close(*elem(&lse, 0, 0, i, 0), (float)log(sum), "lse", (size_t)i);
  }
  /* bias changes the result vs none */
  dua_host_tensor o2 = test_host_tensor_new(1, 1, 32, 2, 0);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, NULL, &q, &k, &v, &o2, NULL), DUA_SUCCESS);
  ck_assert(memcmp(o.data, o2.data, 32 * 2 * sizeof(float)) != 0);
  dua_layout_destroy(l);
  free(q.data);
  free(k.data);
  free(v.data);
  free(o.data);
  free(o2.data);
  free(lse.data);
}
END_TEST

static void expect_rejected(const dua_layout *l, float scale, const dua_host_tensor *q,
                            const dua_host_tensor *k, const dua_host_tensor *v, const dua_host_tensor *o,
                            const dua_host_tensor *lse, const char *words) {
  float o0 = o ? o->data[0] : 0.0f, l0 = lse ? lse->data[0] : 0.0f;
  ck_assert_int_eq(dua_attention_reference(l, scale, NULL, q, k, v, o, lse), DUA_ERROR_INVALID_ARGUMENT);
  if (l != NULL && strstr(l->error, words) == NULL)
    ck_abort_msg("message '%s' does not contain '%s'", l->error, words);
  if (o)
    ck_assert(o->data[0] == o0);
  if (lse)
    ck_assert(lse->data[0] == l0);
}

START_TEST(test_invalid_shapes) {
  rng r = test_rng_make(71);
  dua_layout_desc d = base_desc(40, 16);
  d.batch = 2;
  d.heads = 4;
  d.kv_heads = 2;
  dua_layout *l = create_ok(&d);
  dua_host_tensor q = test_host_tensor_new(2, 4, 40, 8, 0), k = test_host_tensor_new(2, 2, 40, 8, 0),
                  v = test_host_tensor_new(2, 2, 40, 8, 0);
  dua_host_tensor o = test_host_tensor_new(2, 4, 40, 8, 0), lse = test_host_tensor_new(2, 4, 40, 1, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  o.data[0] = 123.0f;
  lse.data[0] = 456.0f;
  dua_host_tensor bad;
  expect_rejected(NULL, 0, &q, &k, &v, &o, &lse, "");
  expect_rejected(l, 0, NULL, &k, &v, &o, &lse, "q is NULL");
  expect_rejected(l, 0, &q, NULL, &v, &o, &lse, "k is NULL");
  expect_rejected(l, 0, &q, &k, NULL, &o, &lse, "v is NULL");
  expect_rejected(l, 0, &q, &k, &v, NULL, &lse, "o is NULL");
  bad = q;
  bad.shape[2] = 41;
  expect_rejected(l, 0, &bad, &k, &v, &o, &lse, "q->shape[2] (tokens) = 41, expected 40");
  bad = q;
  bad.shape[0] = 1;
  expect_rejected(l, 0, &bad, &k, &v, &o, &lse, "q->shape[0] (batch)");
  bad = k;
  bad.shape[1] = 4;
  expect_rejected(l, 0, &q, &bad, &v, &o, &lse, "k->shape[1] (heads) = 4, expected 2");
  bad = v;
  bad.shape[3] = 7;
  expect_rejected(l, 0, &q, &k, &bad, &o, &lse, "v->shape[3] (head_dim) = 7");
  bad = o;
  bad.shape[1] = 2;
  expect_rejected(l, 0, &q, &k, &v, &bad, &lse, "o->shape[1]");
  bad = lse;
  bad.shape[3] = 8;
  expect_rejected(l, 0, &q, &k, &v, &o, &bad, "lse->shape[3]");
  bad = q;
  bad.shape[3] = 0;
  expect_rejected(l, 0, &bad, &k, &v, &o, &lse, "head_dim");
  bad = k;
  bad.data = NULL;
  expect_rejected(l, 0, &q, &bad, &v, &o, &lse, "k->data is NULL");
  expect_rejected(l, INFINITY, &q, &k, &v, &o, &lse, "scale");
  expect_rejected(l, NAN, &q, &k, &v, &o, &lse, "scale");
  ck_assert(o.data[0] == 123.0f && lse.data[0] == 456.0f);
  ck_assert_int_eq(dua_attention_reference(l, 0, NULL, &q, &k, &v, &o, &lse), DUA_SUCCESS);
  dua_layout_destroy(l);
  free(q.data);
  free(k.data);
  free(v.data);
  free(o.data);
  free(lse.data);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reference");
  TCase *tc = tcase_create("reference");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_params_init);
  tcase_add_loop_test(tc, test_random_layouts, 0, 120);
  tcase_add_loop_test(tc, test_random_lists, 0, 20);
  tcase_add_test(tc, test_full_is_dense);
  tcase_add_test(tc, test_block_diagonal_is_chunked);
  tcase_add_test(tc, test_empty_rows);
  tcase_add_test(tc, test_gqa);
  tcase_add_test(tc, test_strides);
  tcase_add_test(tc, test_level_bias_manual);
  tcase_add_test(tc, test_invalid_shapes);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
