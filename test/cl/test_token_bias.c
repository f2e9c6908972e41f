/* test_token_bias.c: the token-tree bias of paper routing mode (dua_attention_params.token_scale/token_table)
 * on the default OpenCL device: forward O and LSE and backward dQ, dK, dV, d_token_scale (and the level-bias
 * gradient alongside) against the double-precision CPU references over random shapes: causal and not, tails,
 * GQA, fp16, windows, sinks, sparse depths, shared and per-head tables, rule and list enumeration; the
 * reference's d_token_scale against central finite differences; determinism; the tree level rule; and
 * refused arguments (naive, mismatched table) that leave outputs untouched. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances as test_forward.c / test_backward.c (fp32 1e-4 + 1e-3|ref| forward, 2e-4 + 2e-3|ref| gradients;
 * fp16 storage looser: 3e-3 + 6e-3|ref|). d_token_scale sums up to N terms like d_level_bias: its absolute
 * tolerance scales with sqrt(N) (random signs). */
#define FWD_ATOL 1e-4
#define FWD_RTOL 1e-3
#define F32_ATOL 2e-4
#define F32_RTOL 2e-3
#define F16_ATOL 3e-3
#define F16_RTOL 6e-3

typedef struct tb_case {
  dua_layout_desc desc;
  int32_t depths[8];
  int head_dim, shared_table, with_level_bias;
  dua_dtype dtype;
  dua_attention_algo algo;
} tb_case;

static int32_t max_tree_depth(const dua_layout *l, int heads) {
  int32_t m = 0;
  for (int h = 0; h < heads; h++)
    if (dua_layout_tree_depth(l, h) > m)
      m = dua_layout_tree_depth(l, h);
  return m;
}

typedef struct outs {
  float *o, *lse, *dq, *dk, *dv, *dlb, *dr;
} outs;

static void outs_free(outs *x) {
  free(x->o);
  free(x->lse);
  free(x->dq);
  free(x->dk);
  free(x->dv);
  free(x->dlb);
  free(x->dr);
}

static void expect_close(const char *what, const char *name, const float *x, const float *ref, size_t n,
                         double atol, double rtol) {
  double err;
  long bad = test_compare(x, ref, n, atol, rtol, &err);
  ck_assert_msg(bad < 0, "%s: %s[%ld] = %g, reference %g (max error %g)", what, name, bad,
                (double)(bad >= 0 ? x[bad] : 0), (double)(bad >= 0 ? ref[bad] : 0), err);
}

/* Forward + backward on the device with the token-tree bias (and optionally a level bias). */
static outs device_run(dua_context *ctx, dua_layout *l, const tb_case *c, const float *q, const float *k,
                       const float *v, const float *g, const float *lb, const float *r, const float *tab,
                       int tab_heads, int levels) {
  const dua_layout_desc *d = &c->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : H, N = d->seq_len,
                D = c->head_dim;
  const size_t nq = (size_t)(B * H * N * D), nk = (size_t)(B * HK * N * D), nr = (size_t)(B * H * N);
  const int32_t lvl_bias = max_tree_depth(l, (int)H) + 1;
  const size_t nlb = (size_t)(H * lvl_bias), es = dua_dtype_size(c->dtype);
  dua_buffer *bq = test_upload(ctx, q, nq, c->dtype), *bk = test_upload(ctx, k, nk, c->dtype);
  dua_buffer *bv = test_upload(ctx, v, nk, c->dtype), *bg = test_upload(ctx, g, nq, c->dtype);
  dua_buffer *br = test_upload(ctx, r, nr, DUA_F32),
             *bt = test_upload(ctx, tab, (size_t)tab_heads * levels, DUA_F32);
  dua_buffer *bo, *bl, *bdq, *bdk, *bdv, *bdr, *blb = NULL, *bdlb = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, nq * es, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nr * 4, &bl), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nq * es, &bdq), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nk * es, &bdk), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nk * es, &bdv), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nr * 4, &bdr), DUA_SUCCESS);
  dua_buffer *poison[] = {bo, bl, bdq, bdk, bdv, bdr};
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(dua_buffer_fill_bytes(poison[i], 0, dua_buffer_size(poison[i]), 0xFF), DUA_SUCCESS);
  dua_tensor tq = dua_tensor_contiguous(bq, 0, c->dtype, B, H, N, D),
             tk = dua_tensor_contiguous(bk, 0, c->dtype, B, HK, N, D);
  dua_tensor tv = dua_tensor_contiguous(bv, 0, c->dtype, B, HK, N, D),
             tg = dua_tensor_contiguous(bg, 0, c->dtype, B, H, N, D);
  dua_tensor to = dua_tensor_contiguous(bo, 0, c->dtype, B, H, N, D),
             tl = dua_tensor_contiguous(bl, 0, DUA_F32, B, H, N, 1);
  dua_tensor tdq = dua_tensor_contiguous(bdq, 0, c->dtype, B, H, N, D),
             tdk = dua_tensor_contiguous(bdk, 0, c->dtype, B, HK, N, D);
  dua_tensor tdv = dua_tensor_contiguous(bdv, 0, c->dtype, B, HK, N, D);
  dua_tensor tr = dua_tensor_contiguous(br, 0, DUA_F32, B, H, N, 1),
             tdr = dua_tensor_contiguous(bdr, 0, DUA_F32, B, H, N, 1);
  dua_tensor tt = dua_tensor_contiguous(bt, 0, DUA_F32, tab_heads, levels, 1, 1), tlb, tdlb;
  dua_attention_params params;
  dua_attention_params_init(&params);
  params.algo = c->algo;
  params.token_scale = &tr;
  params.token_table = &tt;
  if (lb) {
    blb = test_upload(ctx, lb, nlb, DUA_F32);
    ck_assert_int_eq(dua_buffer_create(ctx, nlb * 4, &bdlb), DUA_SUCCESS);
    tlb = dua_tensor_contiguous(blb, 0, DUA_F32, H, lvl_bias, 1, 1);
    tdlb = dua_tensor_contiguous(bdlb, 0, DUA_F32, H, lvl_bias, 1, 1);
    params.level_bias = &tlb;
  }
  dua_status st = dua_attention_forward(ctx, l, &params, &tq, &tk, &tv, &to, &tl);
  ck_assert_msg(st == DUA_SUCCESS, "forward: %s", dua_context_last_error(ctx));
  st = dua_attention_backward_ex(ctx, l, &params, &tq, &tk, &tv, &to, &tl, &tg, &tdq, &tdk, &tdv,
                                 lb ? &tdlb : NULL, &tdr);
  ck_assert_msg(st == DUA_SUCCESS, "backward: %s", dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  outs x = {malloc(nq * 4), malloc(nr * 4), malloc(nq * 4),
            malloc(nk * 4), malloc(nk * 4), lb ? malloc(nlb * 4) : NULL,
            malloc(nr * 4)};
  test_download(bo, x.o, nq, c->dtype);
  test_download(bl, x.lse, nr, DUA_F32);
  test_download(bdq, x.dq, nq, c->dtype);
  test_download(bdk, x.dk, nk, c->dtype);
  test_download(bdv, x.dv, nk, c->dtype);
  test_download(bdr, x.dr, nr, DUA_F32);
  if (lb)
    test_download(bdlb, x.dlb, nlb, DUA_F32);
  dua_buffer *all[] = {bq, bk, bv, bg, br, bt, bo, bl, bdq, bdk, bdv, bdr, blb, bdlb};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    dua_buffer_destroy(all[i]);
  return x;
}

static void check_case(dua_context *ctx, tb_case *c, test_rng *rng) {
  dua_layout *l = NULL;
  char err[256] = "";
  ck_assert_msg(dua_layout_create(&c->desc, &l, err, sizeof err) == DUA_SUCCESS, "%s", err);
  const dua_layout_desc *d = &c->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : H, N = d->seq_len,
                D = c->head_dim;
  const size_t nq = (size_t)(B * H * N * D), nk = (size_t)(B * HK * N * D), nr = (size_t)(B * H * N);
  const int levels = dua_token_tree_depth((int32_t)N) + 1, tab_heads = c->shared_table ? 1 : (int)H;
  const int32_t lvl_bias = max_tree_depth(l, (int)H) + 1;
  const size_t nlb = (size_t)(H * lvl_bias);
  float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *g = malloc(nq * 4);
  float *r = malloc(nr * 4), *tab = malloc((size_t)tab_heads * levels * 4), *lb = NULL;
  test_fill(q, nq, rng, c->dtype);
  test_fill(k, nk, rng, c->dtype);
  test_fill(v, nk, rng, c->dtype);
  test_fill(g, nq, rng, c->dtype);
  test_fill(r, nr, rng, DUA_F32);
  for (size_t i = 0; i < nr; i++)
    r[i] *= 3.0f; /* amplitudes up to 3: the bias moves the softmax visibly */
  test_fill(tab, (size_t)tab_heads * levels, rng, DUA_F32);
  if (c->with_level_bias) {
    lb = malloc(nlb * 4);
    test_fill(lb, nlb, rng, DUA_F32);
  }
  outs dev = device_run(ctx, l, c, q, k, v, g, lb, r, tab, tab_heads, levels);
  outs ref = {malloc(nq * 4), malloc(nr * 4), malloc(nq * 4),
              malloc(nk * 4), malloc(nk * 4), lb ? malloc(nlb * 4) : NULL,
              malloc(nr * 4)};
  dua_host_token_bias tb = {r, tab, tab_heads, levels};
  dua_host_tensor hq = test_host_view(q, B, H, N, D, 0), hk = test_host_view(k, B, HK, N, D, 0);
  dua_host_tensor hv = test_host_view(v, B, HK, N, D, 0), hg = test_host_view(g, B, H, N, D, 0);
  dua_host_tensor ho = test_host_view(ref.o, B, H, N, D, 0), hl = test_host_view(ref.lse, B, H, N, 1, 0);
  dua_host_tensor hdq = test_host_view(ref.dq, B, H, N, D, 0), hdk = test_host_view(ref.dk, B, HK, N, D, 0);
  dua_host_tensor hdv = test_host_view(ref.dv, B, HK, N, D, 0);
  ck_assert_int_eq(dua_attention_reference_ex(l, 0.0f, lb, &tb, &hq, &hk, &hv, &ho, &hl), DUA_SUCCESS);
  ck_assert_int_eq(dua_attention_backward_reference_ex(l, 0.0f, lb, &tb, &hq, &hk, &hv, &hg, &hdq, &hdk, &hdv,
                                                       ref.dlb, ref.dr),
                   DUA_SUCCESS);
  char what[240];
  snprintf(what, sizeof what,
           "N=%d blk=%d B=%d H=%d Hkv=%d depth0=%d W=%d S=%d causal=%d Dh=%d %s table=%s%s algo=%d",
           d->seq_len, d->block, d->batch, d->heads, d->kv_heads, d->depths ? d->depths[0] : 0, d->window,
           d->sink, d->causal, c->head_dim, c->dtype == DUA_F16 ? "fp16" : "fp32",
           c->shared_table ? "shared" : "per-head", lb ? " level-bias" : "", (int)c->algo);
  const int f16 = c->dtype == DUA_F16;
  const double fa = f16 ? F16_ATOL : FWD_ATOL, fr = f16 ? F16_RTOL : FWD_RTOL;
  const double ga = f16 ? F16_ATOL : F32_ATOL, gr = f16 ? F16_RTOL : F32_RTOL;
  expect_close(what, "o", dev.o, ref.o, nq, fa, fr);
  for (size_t i = 0; i < nr; i++) /* empty rows: -inf in both */
    if (isinf(ref.lse[i]))
      ck_assert_msg(isinf(dev.lse[i]) && dev.lse[i] < 0, "%s: lse[%zu] = %g, reference -inf", what, i,
                    (double)dev.lse[i]);
    else
      ck_assert_msg(fabs(dev.lse[i] - ref.lse[i]) <= fa + fr * fabs(ref.lse[i]),
                    "%s: lse[%zu] = %g, reference %g", what, i, (double)dev.lse[i], (double)ref.lse[i]);
  expect_close(what, "dq", dev.dq, ref.dq, nq, ga, gr);
  expect_close(what, "dk", dev.dk, ref.dk, nk, ga, gr);
  expect_close(what, "dv", dev.dv, ref.dv, nk, ga, gr);
  expect_close(what, "d_token_scale", dev.dr, ref.dr, nr, ga * sqrt((double)N), gr);
  if (lb)
    expect_close(what, "d_level_bias", dev.dlb, ref.dlb, nlb, ga * (double)N, gr);
  outs again = device_run(ctx, l, c, q, k, v, g, lb, r, tab, tab_heads, levels);
  ck_assert_msg(memcmp(again.dr, dev.dr, nr * 4) == 0 && memcmp(again.dq, dev.dq, nq * (f16 ? 4 : 4)) == 0,
                "%s: two runs differ", what);
  outs_free(&again);
  outs_free(&dev);
  outs_free(&ref);
  free(q);
  free(k);
  free(v);
  free(g);
  free(r);
  free(tab);
  free(lb);
  dua_layout_destroy(l);
}

START_TEST(tree_level_rule) {
  /* D - k*, k* = min{k >= 1 : i >> k == j >> k}, diagonal D: the definition, by brute force */
  for (int n = 1; n <= 70; n++) {
    int D = dua_token_tree_depth(n), want = 0;
    while ((1 << want) < n)
      want++;
    ck_assert_int_eq(D, want);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) {
        int lvl = D;
        if (i != j) {
          int ks = 1;
          while ((i >> ks) != (j >> ks))
            ks++;
          lvl = D - ks;
        }
        ck_assert_int_eq(dua_token_tree_level(i, j, D), lvl);
      }
  }
}
END_TEST

START_TEST(random_cases) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(901 + (uint64_t)_i);
  static const int dims[2] = {32, 64};
  static const int blocks[3] = {16, 32, 64};
  for (int n_case = 0; n_case < 3; n_case++) {
    tb_case c;
    memset(&c, 0, sizeof c);
    dua_layout_desc *d = &c.desc;
    d->seq_len = test_rng_int(&rng, 1, 160);
    d->block = blocks[test_rng_int(&rng, 0, 2)];
    d->batch = test_rng_int(&rng, 1, 2);
    d->heads = 4;
    d->kv_heads = test_rng_int(&rng, 0, 1) ? 0 : test_rng_int(&rng, 0, 1) ? 2 : 1;
    d->arity = 2;
    d->causal = n_case == 0 ? 1 : test_rng_int(&rng, 0, 1);
    d->window = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 40) : 0;
    d->sink = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 10) : 0;
    const int nb = (d->seq_len + d->block - 1) / d->block;
    int Dt = 0;
    while ((1 << Dt) < nb)
      Dt++;
    for (int h = 0; h < 4; h++)
      c.depths[h] = test_rng_int(&rng, 0, 2) == 0 ? 0 : test_rng_int(&rng, -1, Dt); /* dense like training */
    d->depths = c.depths;
    c.head_dim = dims[_i % 2];
    c.dtype = _i >= 2 ? DUA_F16 : DUA_F32;
    c.shared_table = test_rng_int(&rng, 0, 1);
    c.with_level_bias = test_rng_int(&rng, 0, 2) == 0;
    c.algo = test_rng_int(&rng, 0, 3) == 0 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    check_case(ctx, &c, &rng);
  }
  dua_context_destroy(ctx);
}
END_TEST

/* loss = sum_{b,h,i,d} O * G through the reference forward; dLoss/dr by central differences in double-ish
 * (float inputs, double accumulation) against the reference backward's d_token_scale. */
START_TEST(reference_gradient_finite_differences) {
  test_rng rng = test_rng_make(911);
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = 21, desc.block = 16, desc.batch = 1, desc.heads = 2, desc.arity = 2, desc.causal = 1;
  desc.window = 3;
  int32_t depths[2] = {0, 1};
  desc.depths = depths;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
  const int N = 21, H = 2, D = 32, levels = dua_token_tree_depth(N) + 1;
  const size_t nq = (size_t)H * N * D, nr = (size_t)H * N;
  float *q = malloc(nq * 4), *k = malloc(nq * 4), *v = malloc(nq * 4), *g = malloc(nq * 4),
        *o = malloc(nq * 4);
  float *dq = malloc(nq * 4), *dk = malloc(nq * 4), *dv = malloc(nq * 4), *r = malloc(nr * 4),
        *dr = malloc(nr * 4);
  float tab[2 * 6];
  test_fill(q, nq, &rng, DUA_F32);
  test_fill(k, nq, &rng, DUA_F32);
  test_fill(v, nq, &rng, DUA_F32);
  test_fill(g, nq, &rng, DUA_F32);
  test_fill(r, nr, &rng, DUA_F32);
  test_fill(tab, (size_t)H * levels, &rng, DUA_F32);
  dua_host_token_bias tb = {r, tab, H, levels};
  dua_host_tensor hq = test_host_view(q, 1, H, N, D, 0), hk = test_host_view(k, 1, H, N, D, 0);
  dua_host_tensor hv = test_host_view(v, 1, H, N, D, 0), hg = test_host_view(g, 1, H, N, D, 0);
  dua_host_tensor ho = test_host_view(o, 1, H, N, D, 0), hdq = test_host_view(dq, 1, H, N, D, 0);
  dua_host_tensor hdk = test_host_view(dk, 1, H, N, D, 0), hdv = test_host_view(dv, 1, H, N, D, 0);
  ck_assert_int_eq(
      dua_attention_backward_reference_ex(l, 0.0f, NULL, &tb, &hq, &hk, &hv, &hg, &hdq, &hdk, &hdv, NULL, dr),
      DUA_SUCCESS);
  double worst = 0.0;
  for (size_t i = 0; i < nr; i++) {
    const float keep = r[i], eps = 1e-2f;
    double f[2];
    for (int side = 0; side < 2; side++) {
      r[i] = keep + (side ? -eps : eps);
      ck_assert_int_eq(dua_attention_reference_ex(l, 0.0f, NULL, &tb, &hq, &hk, &hv, &ho, NULL), DUA_SUCCESS);
      double s = 0;
      for (size_t x = 0; x < nq; x++)
        s += (double)o[x] * g[x];
      f[side] = s;
    }
    r[i] = keep;
    const double fd = (f[0] - f[1]) / (2.0 * eps), err = fabs(fd - dr[i]);
    ck_assert_msg(err <= 1e-3 + 1e-2 * fabs(fd), "d_token_scale[%zu] = %g, finite differences %g", i,
                  (double)dr[i], fd);
    worst = err > worst ? err : worst;
  }
  /* the bias must matter: a nonzero gradient somewhere */
  double norm = 0;
  for (size_t i = 0; i < nr; i++)
    norm += fabs(dr[i]);
  ck_assert_msg(norm > 1e-3, "d_token_scale is all zero");
  free(q), free(k), free(v), free(g), free(o), free(dq), free(dk), free(dv), free(r), free(dr);
  dua_layout_destroy(l);
}
END_TEST

START_TEST(refused_arguments) {
  dua_context *ctx = test_context();
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = 40, desc.block = 16, desc.batch = 1, desc.heads = 2, desc.arity = 2, desc.causal = 1;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
  const size_t nq = 2 * 40 * 32;
  dua_buffer *b, *bo, *br, *bt;
  ck_assert_int_eq(dua_buffer_create(ctx, nq * 4, &b), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nq * 4, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, 80 * 4, &br), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * 7 * 4, &bt), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(b, 0, nq * 4, 0), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, nq * 4, 0xAB), DUA_SUCCESS);
  dua_tensor t = dua_tensor_contiguous(b, 0, DUA_F32, 1, 2, 40, 32),
             to = dua_tensor_contiguous(bo, 0, DUA_F32, 1, 2, 40, 32);
  dua_tensor tr = dua_tensor_contiguous(br, 0, DUA_F32, 1, 2, 40, 1);
  dua_tensor bad_levels =
      dua_tensor_contiguous(bt, 0, DUA_F32, 2, 7, 1, 1); /* D_tok(40) = 6: 7 levels is right */
  dua_tensor wrong = dua_tensor_contiguous(bt, 0, DUA_F32, 2, 6, 1, 1);
  dua_attention_params p;
  dua_attention_params_init(&p);
  p.token_scale = &tr;
  ck_assert_int_eq(dua_attention_forward(ctx, l, &p, &t, &t, &t, &to, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(dua_context_last_error(ctx), "token_table") != NULL, "%s",
                dua_context_last_error(ctx));
  p.token_table = &wrong;
  ck_assert_int_eq(dua_attention_forward(ctx, l, &p, &t, &t, &t, &to, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(dua_context_last_error(ctx), "token_table.shape[1]") != NULL, "%s",
                dua_context_last_error(ctx));
  p.token_table = &bad_levels;
  p.algo = DUA_ALGO_NAIVE;
  ck_assert_int_eq(dua_attention_forward(ctx, l, &p, &t, &t, &t, &to, NULL), DUA_ERROR_UNSUPPORTED);
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  unsigned char *host = malloc(nq * 4);
  ck_assert_int_eq(dua_buffer_read(bo, 0, nq * 4, host), DUA_SUCCESS);
  for (size_t i = 0; i < nq * 4; i++)
    ck_assert_msg(host[i] == 0xAB, "output byte %zu written by a refused call", i);
  free(host);
  dua_buffer_destroy(b), dua_buffer_destroy(bo), dua_buffer_destroy(br), dua_buffer_destroy(bt);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("token_bias");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, tree_level_rule);
  tcase_add_test(tc, reference_gradient_finite_differences);
  tcase_add_loop_test(tc, random_cases, 0, 4);
  tcase_add_test(tc, refused_arguments);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
