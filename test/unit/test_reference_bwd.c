/* test_reference_bwd.c: unit tests (no device) of dua_attention_backward_reference: central finite
 * differences of loss = sum(O * G) through the forward reference on tiny shapes (every layout feature, GQA,
 * tails, lists, empty rows, level bias), an independent dense backward here with a mask materialized from the
 * DESIGN.md section 2 formulas, strides, invalid shapes (outputs untouched) and NaN-freedom. */
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

static size_t tensor_count(const dua_host_tensor *t) {
  return (size_t)(t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3]);
}

static float *elem(const dua_host_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t->data + a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

static void tensor_random(dua_host_tensor *t, rng *r) {
  for (size_t x = 0; x < tensor_count(t); x++)
    t->data[x] = rng_float(r);
}

static void tensor_poison(dua_host_tensor *t) {
  for (size_t x = 0; x < tensor_count(t); x++)
    t->data[x] = NAN;
}

/* every element written and finite */
static void expect_finite(const float *x, size_t n, const char *what) {
  for (size_t e = 0; e < n; e++)
    if (!isfinite(x[e]))
      ck_abort_msg("%s[%zu] = %g is not finite", what, e, (double)x[e]);
}

static dua_layout *create_ok(const dua_layout_desc *d) {
  char err[256] = "";
  dua_layout *l = NULL;
  dua_status st = dua_layout_create(d, &l, err, sizeof err);
  if (st != DUA_SUCCESS)
    ck_abort_msg("dua_layout_create failed (%d): %s", (int)st, err);
  return l;
}

/* ---------------------------------------------------------------- finite differences */

/* One tiny problem. block is always 16. bias: 0 none, 1 random in [-1, 1], 2 random with -inf at the
 * deepest level D_h of every head (leaf-sharing tree pairs cut). list: caller lists, random, with row
 * block 1 of (b 0, h 0) empty. content: random paths. all_empty: every row must be empty. */
typedef struct fd_case {
  const char *name;
  int32_t n, batch, heads, kv_heads, arity, shift, window, sink, causal;
  int32_t depths[4];
  int32_t arities[4]; /* all 0: uniform arity */
  int content, list, bias, all_empty;
  int32_t dh;
  float scale;
} fd_case;

static const fd_case fd_cases[] = {
    /* name           n batch heads kvh p sh  W  S  c  depths         arities    cont list bias empty dh scale
     */
    {"dense", 40, 1, 2, 0, 2, 0, 0, 0, 0, {0, 0}, {0}, 0, 0, 1, 0, 8, 0.0f},
    {"block-diagonal", 40, 2, 2, 0, 2, 0, 0, 0, 0, {-1, -1}, {0}, 0, 0, 1, 0, 4, 0.0f},
    {"intermediate", 60, 1, 2, 0, 2, 0, 0, 0, 0, {1, 1}, {0}, 0, 0, 1, 0, 6, 0.0f},
    {"arity-3", 56, 1, 2, 0, 3, 0, 0, 0, 0, {1, 2}, {0}, 0, 0, 1, 0, 5, 0.0f},
    {"per-head-arity", 40, 1, 4, 0, 2, 0, 0, 0, 0, {1, 1, 0, 2}, {2, 3, 4, 2}, 0, 0, 1, 0, 4, 0.0f},
    {"shift", 60, 1, 2, 0, 2, 1, 0, 0, 0, {1, 2}, {0}, 0, 0, 1, 0, 6, 0.0f},
    {"causal", 37, 1, 2, 0, 2, 0, 0, 0, 1, {0, 1}, {0}, 0, 0, 1, 0, 8, 0.0f},
    {"window", 40, 1, 2, 0, 2, 0, 5, 0, 0, {-1, -1}, {0}, 0, 0, 1, 0, 4, 0.0f},
    {"window-causal", 45, 1, 2, 0, 2, 0, 7, 0, 1, {-1, 1}, {0}, 0, 0, 1, 0, 5, 0.0f},
    {"sink", 40, 1, 2, 0, 2, 0, 0, 3, 1, {-1, -1}, {0}, 0, 0, 1, 0, 4, 0.0f},
    {"content", 60, 2, 2, 0, 2, 0, 0, 0, 0, {1, 2}, {0}, 1, 0, 1, 0, 4, 0.0f},
    {"content-causal", 40, 1, 2, 0, 2, 0, 3, 2, 1, {-1, 1}, {0}, 1, 0, 0, 0, 6, 0.7f},
    {"gqa-4-2", 40, 1, 4, 2, 2, 0, 3, 0, 1, {0, 1, 2, -1}, {0}, 0, 0, 1, 0, 4, 0.0f},
    {"gqa-4-1", 33, 1, 4, 1, 2, 0, 0, 2, 0, {1, 0, 2, 1}, {0}, 0, 0, 1, 0, 4, 0.0f},
    {"tail", 19, 2, 2, 0, 2, 0, 0, 0, 0, {1, 0}, {0}, 0, 0, 1, 0, 8, 1.3f},
    {"lists", 40, 2, 2, 0, 2, 0, 0, 0, 1, {0, 0}, {0}, 0, 1, 1, 0, 4, 0.0f},
    {"empty-rows", 40, 1, 2, 0, 2, 0, 0, 0, 1, {-1, -1}, {0}, 0, 0, 2, 1, 4, 0.0f},
    {"neg-inf-bias", 60, 1, 2, 0, 2, 0, 2, 0, 1, {1, 1}, {0}, 0, 0, 2, 0, 4, 0.0f},
};

/* sum(O * G) through the forward reference (fp32 host arrays, double accumulation, O rounded to fp32) */
static double loss(const dua_layout *l, float scale, const float *lb, const dua_host_tensor *q,
                   const dua_host_tensor *k, const dua_host_tensor *v, dua_host_tensor *o,
                   const dua_host_tensor *g) {
  ck_assert_int_eq(dua_attention_reference(l, scale, lb, q, k, v, o, NULL), DUA_SUCCESS);
  double s = 0;
  for (size_t x = 0; x < tensor_count(o); x++)
    s += (double)o->data[x] * (double)g->data[x];
  return s;
}

/* Tolerance |a - n| <= FD_ATOL + FD_RTOL |n|. The analytical gradient is exact to double accumulation then
 * fp32 rounding; the numerical one, with step h = 1e-3 on inputs of magnitude <= 1, has a truncation error
 * h^2/6 |f'''| ~ 1e-7 and a rounding error dominated by the forward's fp32 outputs (outputs a perturbation
 * does not reach round identically and cancel exactly): each moved O element carries up to 2^-24 |O| <= 6e-8
 * of rounding and |G| <= 1, so over the M outputs one k/v/bias element reaches (M <= ~1300 here) the loss
 * difference is off by ~sqrt(M) * 3e-8 ~ 1e-6 typically, i.e. ~5e-4 after dividing by 2h (~4e-5 for a q
 * element, which reaches one row). Hence 5e-4 absolute, plus 1e-2 relative for large gradients. Measured
 * (18 cases, ~30k gradients): max |a - n| = 8.4e-5, worst |a - n| / tol = 0.13; a 0.1% error in D_i, a
 * missing scale on dK, or a bias on window pairs each fail dozens of cases. The ratio is printed per case. */
#define FD_STEP 1e-3f
#define FD_ATOL 5e-4
#define FD_RTOL 1e-2

typedef struct fd_stats {
  double max_err, worst_ratio;
  size_t checked;
} fd_stats;

static void fd_compare(double a, double n, const char *case_name, const char *what, size_t idx,
                       fd_stats *st) {
  double err = fabs(a - n), tol = FD_ATOL + FD_RTOL * fabs(n);
  if (!(err <= tol))
    ck_abort_msg("%s: d%s[%zu] analytical %.8g vs numerical %.8g (|diff| %.3g > tol %.3g)", case_name, what,
                 idx, a, n, err, tol);
  if (err > st->max_err)
    st->max_err = err;
  if (err / tol > st->worst_ratio)
    st->worst_ratio = err / tol;
  st->checked++;
}

/* central difference of the loss w.r.t. every element of x (q, k, v or the level bias) */
static void fd_tensor(const fd_case *c, const dua_layout *l, float *x, size_t count, const float *grad,
                      const char *what, const float *lb, const dua_host_tensor *q, const dua_host_tensor *k,
                      const dua_host_tensor *v, dua_host_tensor *o, const dua_host_tensor *g, fd_stats *st) {
  for (size_t e = 0; e < count; e++) {
    float x0 = x[e];
    if (!isfinite(x0)) { /* a -inf level bias: no pair can move, the gradient must be exactly 0 */
      ck_assert_msg(grad[e] == 0.0f, "%s: d%s[%zu] = %g at a -inf bias", c->name, what, e, (double)grad[e]);
      continue;
    }
    float xp = x0 + FD_STEP, xm = x0 - FD_STEP;
    x[e] = xp;
    double lp = loss(l, c->scale, lb, q, k, v, o, g);
    x[e] = xm;
    double lm = loss(l, c->scale, lb, q, k, v, o, g);
    x[e] = x0;
    fd_compare(grad[e], (lp - lm) / ((double)xp - (double)xm), c->name, what, e, st);
  }
}

START_TEST(test_finite_differences) {
  const fd_case *c = &fd_cases[_i];
  rng r = test_rng_make(0xFD0000ull + 7919ull * (uint64_t)_i);
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = c->n;
  d.block = 16;
  d.batch = c->batch;
  d.heads = c->heads;
  d.kv_heads = c->kv_heads;
  d.arity = c->arity;
  d.arities = c->arities[0] ? c->arities : NULL;
  d.depths = c->depths;
  d.shift = c->shift;
  d.window = c->window;
  d.sink = c->sink;
  d.causal = c->causal;
  int32_t nb = (c->n + 15) / 16, dmax = 0, dhead[4];
  for (int32_t h = 0; h < c->heads; h++) {
    dhead[h] = m_tree_depth(nb, c->arities[0] ? c->arities[h] : c->arity);
    dmax = dhead[h] > dmax ? dhead[h] : dmax;
  }
  uint8_t *paths = NULL;
  int32_t *counts = NULL, *indices = NULL;
  dua_layout *l = NULL;
  if (c->content) {
    size_t np = (size_t)c->batch * c->heads * nb * dmax;
    paths = malloc(np);
    ck_assert_ptr_nonnull(paths);
    for (size_t x = 0; x < np; x++)
      paths[x] = (uint8_t)rng_int(&r, 0, c->arity - 1);
    d.paths = paths;
  }
  if (c->list) {
    size_t rows = (size_t)c->batch * c->heads * nb;
    counts = calloc(rows, sizeof(int32_t));
    indices = calloc(rows * nb, sizeof(int32_t));
    ck_assert(counts && indices);
    for (size_t row = 0; row < rows; row++)
      for (int32_t n = 0; n < nb && row != 1; n++)
        if (rng_int(&r, 0, 1))
          indices[row * nb + counts[row]++] = n;
    ck_assert_int_eq(dua_layout_create_from_lists(&d, counts, indices, &l, NULL, 0), DUA_SUCCESS);
    ck_assert_int_eq(counts[1], 0);
  } else {
    l = create_ok(&d);
  }
  ck_assert_int_eq(l->max_depth, c->list ? l->max_depth : dmax);
  int32_t hkv = c->kv_heads ? c->kv_heads : c->heads, nlb = c->heads * (l->max_depth + 1);
  float *lb = malloc((size_t)nlb * sizeof(float)), *dlb = malloc((size_t)nlb * sizeof(float));
  ck_assert(lb && dlb);
  for (int32_t x = 0; x < nlb; x++) {
    lb[x] = rng_float(&r);
    dlb[x] = NAN;
  }
  if (c->bias == 2)
    for (int32_t h = 0; h < c->heads; h++)
      lb[h * (l->max_depth + 1) + dhead[h]] = -INFINITY;
  const float *lbp = c->bias ? lb : NULL;

  dua_host_tensor q = test_host_tensor_new(c->batch, c->heads, c->n, c->dh, 0);
  dua_host_tensor k = test_host_tensor_new(c->batch, hkv, c->n, c->dh, 0),
                  v = test_host_tensor_new(c->batch, hkv, c->n, c->dh, 0);
  dua_host_tensor g = test_host_tensor_new(c->batch, c->heads, c->n, c->dh, 0),
                  o = test_host_tensor_new(c->batch, c->heads, c->n, c->dh, 0);
  dua_host_tensor dq = test_host_tensor_new(c->batch, c->heads, c->n, c->dh, 0);
  dua_host_tensor dk = test_host_tensor_new(c->batch, hkv, c->n, c->dh, 0),
                  dv = test_host_tensor_new(c->batch, hkv, c->n, c->dh, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  tensor_random(&g, &r);
  tensor_poison(&dq);
  tensor_poison(&dk);
  tensor_poison(&dv);
  ck_assert_int_eq(dua_attention_backward_reference(l, c->scale, lbp, &q, &k, &v, &g, &dq, &dk, &dv, dlb),
                   DUA_SUCCESS);
  expect_finite(dq.data, tensor_count(&dq), "dq");
  expect_finite(dk.data, tensor_count(&dk), "dk");
  expect_finite(dv.data, tensor_count(&dv), "dv");
  if (lbp)
    expect_finite(dlb, (size_t)nlb, "d_level_bias");
  else
    for (int32_t x = 0; x < nlb; x++)
      ck_assert(isnan(dlb[x])); /* not written without a level bias */
  if (c->all_empty) {
    for (size_t x = 0; x < tensor_count(&dq); x++)
      ck_assert(dq.data[x] == 0.0f);
    for (size_t x = 0; x < tensor_count(&dk); x++)
      ck_assert(dk.data[x] == 0.0f && dv.data[x] == 0.0f);
  }
  if (c->list) { /* row block 1 of (b 0, h 0) is empty: dq = 0 there; lists have no level-bias gradient */
    for (int64_t i = 16; i < 32; i++)
      for (int64_t e = 0; e < c->dh; e++)
        ck_assert(*elem(&dq, 0, 0, i, e) == 0.0f);
    for (int32_t x = 0; x < nlb; x++)
      ck_assert(dlb[x] == 0.0f);
  }

  fd_stats st = {0, 0, 0};
  fd_tensor(c, l, q.data, tensor_count(&q), dq.data, "q", lbp, &q, &k, &v, &o, &g, &st);
  fd_tensor(c, l, k.data, tensor_count(&k), dk.data, "k", lbp, &q, &k, &v, &o, &g, &st);
  fd_tensor(c, l, v.data, tensor_count(&v), dv.data, "v", lbp, &q, &k, &v, &o, &g, &st);
  if (lbp)
    fd_tensor(c, l, lb, (size_t)nlb, dlb, "level_bias", lbp, &q, &k, &v, &o, &g, &st);
  printf("fd %-15s %5zu gradients, max |a - n| = %.2e, worst |a - n| / tol = %.3f\n", c->name, st.checked,
         st.max_err, st.worst_ratio);
  fflush(stdout);

  dua_layout_destroy(l);
  free(paths);
  free(counts);
  free(indices);
  free(lb);
  free(dlb);
  free(q.data);
  free(k.data);
  free(v.data);
  free(g.data);
  free(o.data);
  free(dq.data);
  free(dk.data);
  free(dv.data);
}
END_TEST

/* ---------------------------------------------------------------- independent dense backward */

/* Dense materialized backward in double: P over the masked row, dV = P^T dO, dS = P (dP - rowsum(dO O)),
 * dQ = scale dS K, dK = scale dS^T Q, dbias[h][lca] = sum dS over biased pairs, dtile[b][h][m][n] = sum dS
 * over the tree, non window/sink pairs of block pair (m, n). Outputs contiguous (B,H,N,D), (B,Hkv,N,D),
 * [H][dmax+1] and [B][H][nb][nb], zeroed here. tile = {b, h, m, n} or NULL: eps is added to the scores of
 * that block pair's tree, non window/sink pairs (a per-tile bias, for finite differences); *loss_out (if not
 * NULL) receives sum(dO * O). */
static void dense_backward_tiles(const model *md, const float *lb, float scale, const dua_host_tensor *q,
                                 const dua_host_tensor *k, const dua_host_tensor *v,
                                 const dua_host_tensor *d_o, double *dq, double *dk, double *dv, double *dlb,
                                 double *dtile, const int32_t *tile, double eps, double *loss_out) {
  int32_t B = md->desc.batch, H = md->desc.heads, N = md->desc.seq_len, DH = (int32_t)q->shape[3];
  int32_t HKV = md->desc.kv_heads ? md->desc.kv_heads : H, BLK = md->desc.block;
  double sc = scale == 0.0f ? 1.0 / sqrt((double)DH) : (double)scale;
  double *p = malloc((size_t)N * sizeof(double)), *o = malloc((size_t)DH * sizeof(double));
  uint8_t *vis = malloc((size_t)N);
  int32_t *lvl = malloc((size_t)N * sizeof(int32_t));
  ck_assert(p && o && vis && lvl);
  memset(dq, 0, (size_t)B * H * N * DH * sizeof(double));
  memset(dk, 0, (size_t)B * HKV * N * DH * sizeof(double));
  memset(dv, 0, (size_t)B * HKV * N * DH * sizeof(double));
  memset(dlb, 0, (size_t)H * (md->dmax + 1) * sizeof(double));
  const int32_t NB = (N + BLK - 1) / BLK;
  memset(dtile, 0, (size_t)B * H * NB * NB * sizeof(double));
  double total_loss = 0.0;
  for (int32_t b = 0; b < B; b++)
    for (int32_t h = 0; h < H; h++)
      for (int32_t i = 0; i < N; i++) {
        int32_t kh = h / (H / HKV);
        double mx = -INFINITY, sum = 0;
        for (int32_t j = 0; j < N; j++) {
          vis[j] = (uint8_t)m_visible(md, b, h, i, j);
          lvl[j] =
              lb && m_tree(md, b, h, i, j) && !m_extra(md, i, j) ? m_lca(md, b, h, i / BLK, j / BLK) : -1;
          double s = 0;
          for (int32_t e = 0; e < DH; e++)
            s += (double)*elem(q, b, h, i, e) * *elem(k, b, kh, j, e);
          p[j] = s * sc + (lvl[j] >= 0 ? (double)lb[h * (md->dmax + 1) + lvl[j]] : 0.0);
          if (tile && b == tile[0] && h == tile[1] && i / BLK == tile[2] && j / BLK == tile[3] &&
              m_tree(md, b, h, i, j) && !m_extra(md, i, j))
            p[j] += eps;
          if (vis[j] && p[j] > mx)
            mx = p[j];
        }
        for (int32_t j = 0; j < N; j++) {
          p[j] = vis[j] && mx > -INFINITY ? exp(p[j] - mx) : 0.0;
          sum += p[j];
        }
        if (!(sum > 0))
          continue;
        for (int32_t j = 0; j < N; j++)
          p[j] /= sum;
        double di = 0; /* rowsum(dO * O) with O recomputed */
        for (int32_t e = 0; e < DH; e++) {
          o[e] = 0;
          for (int32_t j = 0; j < N; j++)
            o[e] += p[j] * *elem(v, b, kh, j, e);
          di += o[e] * *elem(d_o, b, h, i, e);
        }
        total_loss += di;
        for (int32_t j = 0; j < N; j++) {
          if (p[j] == 0.0)
            continue;
          double dp = 0;
          for (int32_t e = 0; e < DH; e++)
            dp += (double)*elem(d_o, b, h, i, e) * *elem(v, b, kh, j, e);
          double ds = p[j] * (dp - di);
          size_t qi = (((size_t)b * H + h) * N + i) * DH, kj = (((size_t)b * HKV + kh) * N + j) * DH;
          for (int32_t e = 0; e < DH; e++) {
            dq[qi + e] += sc * ds * *elem(k, b, kh, j, e);
            dk[kj + e] += sc * ds * *elem(q, b, h, i, e);
            dv[kj + e] += p[j] * *elem(d_o, b, h, i, e);
          }
          if (lvl[j] >= 0)
            dlb[h * (md->dmax + 1) + lvl[j]] += ds;
          if (m_tree(md, b, h, i, j) && !m_extra(md, i, j))
            dtile[(((size_t)b * H + h) * NB + i / BLK) * NB + j / BLK] += ds;
        }
      }
  if (loss_out)
    *loss_out = total_loss;
  free(p);
  free(o);
  free(vis);
  free(lvl);
}

/* both double-accumulated: only fp32 output rounding and summation order differ */
static void expect_close(float x, double ref, const char *what, size_t idx) {
  if (!(fabs((double)x - ref) <= 1e-5 + 1e-4 * fabs(ref)))
    ck_abort_msg("%s[%zu] = %.8g, expected %.8g", what, idx, (double)x, ref);
}

/* random rule layouts (all features), GQA, per-head arity, level bias, both storage orders */
START_TEST(test_random_vs_dense) {
  rng r = test_rng_make(0xDE45Eull + 104729ull * (uint64_t)_i);
  model md;
  m_random_rule_model(&md, &r, 100);
  dua_layout_desc *d = &md.desc;
  dua_layout *l = create_ok(d);
  int32_t B = d->batch, H = d->heads, N = d->seq_len, HKV = d->kv_heads ? d->kv_heads : H;
  int32_t dh = rng_int(&r, 1, 12), nlb = H * (md.dmax + 1);
  float lb[4 * 16], dlb[4 * 16];
  for (int x = 0; x < 4 * 16; x++) {
    lb[x] = 2.0f * rng_float(&r);
    dlb[x] = NAN;
  }
  if (rng_int(&r, 0, 3) == 0) /* some cut levels: rows with -inf scores, maybe empty rows */
    lb[rng_int(&r, 0, nlb - 1)] = -INFINITY;
  const float *lbp = rng_int(&r, 0, 3) ? lb : NULL;
  float scale = rng_int(&r, 0, 1) ? 0.0f : 0.3f + (float)rng_int(&r, 0, 10) / 10.0f;
  int bi = rng_int(&r, 0, 1), bo = rng_int(&r, 0, 1);
  dua_host_tensor q = test_host_tensor_new(B, H, N, dh, bi), k = test_host_tensor_new(B, HKV, N, dh, bi);
  dua_host_tensor v = test_host_tensor_new(B, HKV, N, dh, bi), g = test_host_tensor_new(B, H, N, dh, bi);
  dua_host_tensor dq = test_host_tensor_new(B, H, N, dh, bo), dk = test_host_tensor_new(B, HKV, N, dh, bo);
  dua_host_tensor dv = test_host_tensor_new(B, HKV, N, dh, bo);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  tensor_random(&g, &r);
  tensor_poison(&dq);
  tensor_poison(&dk);
  tensor_poison(&dv);
  const size_t ntile = (size_t)B * H * md.nb * md.nb;
  float *tg = malloc(ntile * sizeof(float));
  double *rtg = malloc(ntile * sizeof(double));
  ck_assert(tg && rtg);
  for (size_t x = 0; x < ntile; x++)
    tg[x] = NAN;
  ck_assert_int_eq(
      dua_attention_backward_reference_tiles(l, scale, lbp, &q, &k, &v, &g, &dq, &dk, &dv, dlb, tg),
      DUA_SUCCESS);
  expect_finite(dq.data, tensor_count(&dq), "dq");
  expect_finite(dk.data, tensor_count(&dk), "dk");
  expect_finite(dv.data, tensor_count(&dv), "dv");
  expect_finite(tg, ntile, "tile_grad");
  size_t nq = (size_t)B * H * N * dh, nk = (size_t)B * HKV * N * dh;
  double *rq = malloc(nq * sizeof(double)), *rk = malloc(nk * sizeof(double)),
         *rv = malloc(nk * sizeof(double));
  double rlb[4 * 16];
  ck_assert(rq && rk && rv);
  dense_backward_tiles(&md, lbp, scale, &q, &k, &v, &g, rq, rk, rv, rlb, rtg, NULL, 0.0, NULL);
  for (size_t x = 0; x < ntile; x++)
    expect_close(tg[x], rtg[x], "tile_grad", x);
  /* finite differences of sum(dO * O) w.r.t. a bias on one block pair's biased pairs, for a few pairs */
  for (int t = 0; t < 6; t++) {
    int32_t tile[4] = {rng_int(&r, 0, B - 1), rng_int(&r, 0, H - 1), rng_int(&r, 0, md.nb - 1), 0};
    tile[3] = rng_int(&r, 0, tile[2]);
    const double hstep = 1e-4;
    double lp, lm;
    dense_backward_tiles(&md, lbp, scale, &q, &k, &v, &g, rq, rk, rv, rlb, rtg, tile, hstep, &lp);
    dense_backward_tiles(&md, lbp, scale, &q, &k, &v, &g, rq, rk, rv, rlb, rtg, tile, -hstep, &lm);
    size_t x = (((size_t)tile[0] * H + tile[1]) * md.nb + tile[2]) * md.nb + tile[3];
    expect_close(tg[x], (lp - lm) / (2 * hstep), "tile_grad vs finite differences", x);
  }
  dense_backward_tiles(&md, lbp, scale, &q, &k, &v, &g, rq, rk, rv, rlb, rtg, NULL, 0.0, NULL);
  free(tg);
  free(rtg);
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < N; i++)
      for (int64_t e = 0; e < dh; e++) {
        for (int64_t h = 0; h < H; h++) {
          size_t x = (((size_t)b * H + h) * N + i) * dh + e;
          expect_close(*elem(&dq, b, h, i, e), rq[x], "dq", x);
        }
        for (int64_t h = 0; h < HKV; h++) {
          size_t x = (((size_t)b * HKV + h) * N + i) * dh + e;
          expect_close(*elem(&dv, b, h, i, e), rv[x], "dv", x);
          expect_close(*elem(&dk, b, h, i, e), rk[x], "dk", x);
        }
      }
  for (int32_t x = 0; x < nlb; x++) {
    if (lbp)
      expect_close(dlb[x], rlb[x], "d_level_bias", (size_t)x);
    else
      ck_assert(isnan(dlb[x]));
  }
  dua_layout_destroy(l);
  free(md.paths);
  free(rq);
  free(rk);
  free(rv);
  free(q.data);
  free(k.data);
  free(v.data);
  free(g.data);
  free(dq.data);
  free(dk.data);
  free(dv.data);
}
END_TEST

/* ---------------------------------------------------------------- storage order, bias flags */

/* (B,N,H,D) storage through strides gives exactly the (B,H,N,D) result; d_level_bias NULL is allowed */
START_TEST(test_strides) {
  rng r = test_rng_make(0x57D1DEull);
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = 50;
  d.block = 16;
  d.batch = 2;
  d.heads = 4;
  d.kv_heads = 2;
  d.arity = 3;
  int32_t depths[4] = {1, 0, -1, 1};
  d.depths = depths;
  d.sink = 4;
  d.window = 3;
  dua_layout *l = create_ok(&d);
  float lb[4 * 3], dlb[2][4 * 3];
  for (int x = 0; x < 12; x++)
    lb[x] = rng_float(&r);
  dua_host_tensor t[2][7]; /* q k v do dq dk dv */
  for (int s = 0; s < 2; s++)
    for (int x = 0; x < 7; x++)
      t[s][x] = test_host_tensor_new(2, x == 1 || x == 2 || x == 5 || x == 6 ? 2 : 4, 50, 6, s);
  for (int x = 0; x < 4; x++) {
    tensor_random(&t[0][x], &r);
    for (int64_t b = 0; b < 2; b++)
      for (int64_t h = 0; h < t[0][x].shape[1]; h++)
        for (int64_t i = 0; i < 50; i++)
          for (int64_t e = 0; e < 6; e++)
            *elem(&t[1][x], b, h, i, e) = *elem(&t[0][x], b, h, i, e);
  }
  for (int s = 0; s < 2; s++) {
    for (int x = 4; x < 7; x++)
      tensor_poison(&t[s][x]);
    ck_assert_int_eq(dua_attention_backward_reference(l, 0.5f, lb, &t[s][0], &t[s][1], &t[s][2], &t[s][3],
                                                      &t[s][4], &t[s][5], &t[s][6], dlb[s]),
                     DUA_SUCCESS);
  }
  for (int x = 4; x < 7; x++)
    for (int64_t b = 0; b < 2; b++)
      for (int64_t h = 0; h < t[0][x].shape[1]; h++)
        for (int64_t i = 0; i < 50; i++)
          for (int64_t e = 0; e < 6; e++)
            ck_assert(*elem(&t[0][x], b, h, i, e) == *elem(&t[1][x], b, h, i, e));
  ck_assert_mem_eq(dlb[0], dlb[1], sizeof dlb[0]);
  /* no d_level_bias output: the other gradients are unchanged */
  tensor_poison(&t[1][4]);
  ck_assert_int_eq(dua_attention_backward_reference(l, 0.5f, lb, &t[0][0], &t[0][1], &t[0][2], &t[0][3],
                                                    &t[1][4], &t[0][5], &t[0][6], NULL),
                   DUA_SUCCESS);
  for (int64_t b = 0; b < 2; b++)
    for (int64_t h = 0; h < 4; h++)
      for (int64_t i = 0; i < 50; i++)
        for (int64_t e = 0; e < 6; e++)
          ck_assert(*elem(&t[0][4], b, h, i, e) == *elem(&t[1][4], b, h, i, e));
  for (int s = 0; s < 2; s++)
    for (int x = 0; x < 7; x++)
      free(t[s][x].data);
  dua_layout_destroy(l);
}
END_TEST

/* ---------------------------------------------------------------- invalid arguments */

typedef struct bwd_args {
  const dua_host_tensor *q, *k, *v, *d_o, *dq, *dk, *dv;
} bwd_args;

static void expect_rejected(const dua_layout *l, float scale, bwd_args a, const char *words, float *outs[4],
                            const float *saved[4], const size_t sizes[4]) {
  ck_assert_int_eq(
      dua_attention_backward_reference(l, scale, outs[3], a.q, a.k, a.v, a.d_o, a.dq, a.dk, a.dv, outs[3]),
      DUA_ERROR_INVALID_ARGUMENT);
  if (l != NULL && strstr(l->error, words) == NULL)
    ck_abort_msg("message '%s' does not contain '%s'", l->error, words);
  for (int x = 0; x < 4; x++)
    ck_assert_mem_eq(outs[x], saved[x], sizes[x]);
}

START_TEST(test_invalid_shapes) {
  rng r = test_rng_make(0xBAD5ull);
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = 40;
  d.block = 16;
  d.batch = 2;
  d.heads = 4;
  d.kv_heads = 2;
  d.arity = 2;
  dua_layout *l = create_ok(&d);
  dua_host_tensor q = test_host_tensor_new(2, 4, 40, 8, 0), k = test_host_tensor_new(2, 2, 40, 8, 0),
                  v = test_host_tensor_new(2, 2, 40, 8, 0);
  dua_host_tensor g = test_host_tensor_new(2, 4, 40, 8, 0), dq = test_host_tensor_new(2, 4, 40, 8, 0);
  dua_host_tensor dk = test_host_tensor_new(2, 2, 40, 8, 0), dv = test_host_tensor_new(2, 2, 40, 8, 0);
  tensor_random(&q, &r);
  tensor_random(&k, &r);
  tensor_random(&v, &r);
  tensor_random(&g, &r);
  tensor_random(&dq, &r);
  tensor_random(&dk, &r);
  tensor_random(&dv, &r);
  float dlb[4 * 3]; /* doubles as the level bias: nothing may change it */
  for (int x = 0; x < 12; x++)
    dlb[x] = rng_float(&r);
  float *outs[4] = {dq.data, dk.data, dv.data, dlb};
  const size_t sizes[4] = {tensor_count(&dq) * sizeof(float), tensor_count(&dk) * sizeof(float),
                           tensor_count(&dv) * sizeof(float), sizeof dlb};
  float *copies[4];
  for (int x = 0; x < 4; x++) {
    copies[x] = malloc(sizes[x]);
    ck_assert_ptr_nonnull(copies[x]);
    memcpy(copies[x], outs[x], sizes[x]);
  }
  const float *saved[4] = {copies[0], copies[1], copies[2], copies[3]};
  const bwd_args ok = {&q, &k, &v, &g, &dq, &dk, &dv};
  bwd_args a;
  dua_host_tensor bad;
  expect_rejected(NULL, 0, ok, "", outs, saved, sizes);
  const dua_host_tensor **slot[7] = {&a.q, &a.k, &a.v, &a.d_o, &a.dq, &a.dk, &a.dv};
  static const char *null_msg[7] = {"q is NULL",  "k is NULL",  "v is NULL", "d_o is NULL",
                                    "dq is NULL", "dk is NULL", "dv is NULL"};
  for (int x = 0; x < 7; x++) {
    a = ok;
    *slot[x] = NULL;
    expect_rejected(l, 0, a, null_msg[x], outs, saved, sizes);
  }
  /* one wrong dimension in each tensor */
  static const struct {
    int which, dim;
    int64_t value;
    const char *msg;
  } wrong[] = {
      {0, 2, 41, "q->shape[2] (tokens) = 41, expected 40"},
      {0, 0, 1, "q->shape[0] (batch)"},
      {1, 1, 4, "k->shape[1] (heads) = 4, expected 2"},
      {2, 3, 7, "v->shape[3] (head_dim) = 7, expected 8"},
      {3, 1, 2, "d_o->shape[1] (heads) = 2, expected 4"},
      {3, 3, 4, "d_o->shape[3] (head_dim) = 4, expected 8"},
      {4, 2, 39, "dq->shape[2] (tokens) = 39, expected 40"},
      {4, 1, 2, "dq->shape[1] (heads) = 2, expected 4"},
      {5, 1, 4, "dk->shape[1] (heads) = 4, expected 2"},
      {5, 0, 3, "dk->shape[0] (batch) = 3, expected 2"},
      {6, 3, 16, "dv->shape[3] (head_dim) = 16, expected 8"},
      {6, 2, 48, "dv->shape[2] (tokens) = 48, expected 40"},
  };
  for (size_t x = 0; x < sizeof wrong / sizeof wrong[0]; x++) {
    a = ok;
    bad = **slot[wrong[x].which];
    bad.shape[wrong[x].dim] = wrong[x].value;
    *slot[wrong[x].which] = &bad;
    expect_rejected(l, 0, a, wrong[x].msg, outs, saved, sizes);
  }
  a = ok;
  bad = q;
  bad.shape[3] = 0;
  a.q = &bad;
  expect_rejected(l, 0, a, "head_dim", outs, saved, sizes);
  a = ok;
  bad = dk;
  bad.data = NULL;
  a.dk = &bad;
  expect_rejected(l, 0, a, "dk->data is NULL", outs, saved, sizes);
  expect_rejected(l, INFINITY, ok, "scale", outs, saved, sizes);
  expect_rejected(l, NAN, ok, "scale", outs, saved, sizes);
  /* the same arguments are accepted */
  ck_assert_int_eq(dua_attention_backward_reference(l, 0, dlb, &q, &k, &v, &g, &dq, &dk, &dv, dlb),
                   DUA_SUCCESS);
  dua_layout_destroy(l);
  for (int x = 0; x < 4; x++)
    free(copies[x]);
  free(q.data);
  free(k.data);
  free(v.data);
  free(g.data);
  free(dq.data);
  free(dk.data);
  free(dv.data);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reference_bwd");
  TCase *tc = tcase_create("reference_bwd");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_finite_differences, 0, (int)(sizeof fd_cases / sizeof fd_cases[0]));
  tcase_add_loop_test(tc, test_random_vs_dense, 0, 80);
  tcase_add_test(tc, test_strides);
  tcase_add_test(tc, test_invalid_shapes);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
