/* test_backward.c: dua_attention_backward on the default OpenCL device against the double-precision CPU
 * backward reference (itself checked against finite differences in test_reference_bwd.c): every layout
 * feature alone and combined, rule and list enumeration, caller lists with empty rows, GQA (dK/dV summed over
 * the group), tails, fp16, (B,N,H,D) strides, the level-bias gradient, determinism (two runs bit for bit),
 * poisoned outputs fully overwritten, the block-pair gradient (params.tile_grad) against the reference and
 * against d_level_bias, invalid arguments that leave outputs untouched, and tiles of the tuning space (as a
 * tuning database sets them). tensor_core_cases: fp16 head-dim-64 layouts the NVIDIA tensor-core backward
 * (attn_bwd_mma.cl) takes where the mma probe passed, and the ones it leaves to the portable kernels (a DEBUG
 * log line tells which ran); elsewhere they run portable, and with DUA_TEST_MMA_EMULATE=1 the tensor-core
 * kernels run with their warp instructions emulated (DUA_MMA_EMULATE), so PoCL checks their indexing. */
#include "test_util.h"

#include "runtime/context_internal.h" /* to force the emulated mma kernels on non-NVIDIA devices */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Gradients are sums over up to N terms of O(1) products: fp32 accumulation against the double reference,
 * |x - ref| <= 2e-4 + 2e-3 |ref|. fp16 storage rounds every input and output to half (relative 4.9e-4) and
 * P enters in fp32: 3e-3 + 6e-3 |ref|. */
#define F32_ATOL 2e-4
#define F32_RTOL 2e-3
#define F16_ATOL 3e-3
#define F16_RTOL 6e-3

typedef struct case_desc {
  dua_layout_desc desc;
  int32_t depths[8], arities[8];
  uint8_t *paths;
  int head_dim, bnhd, with_bias, with_tiles;
  dua_dtype dtype;
  dua_attention_algo algo;
} case_desc;

static int32_t max_tree_depth(const dua_layout *l, int heads) {
  int32_t m = 0;
  for (int h = 0; h < heads; h++)
    if (dua_layout_tree_depth(l, h) > m)
      m = dua_layout_tree_depth(l, h);
  return m;
}

typedef struct grads {
  float *dq, *dk, *dv, *db, *tg; /* tg: block-pair gradient [B][H][nb][nb] */
} grads;

/* Runs forward + backward on the device; returns the gradients (host, float). */
static grads device_grads(dua_context *ctx, dua_layout *l, const case_desc *c, const float *q, const float *k,
                          const float *v, const float *g, const float *bias, size_t nq, size_t nk,
                          size_t nb) {
  const dua_layout_desc *d = &c->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : H, N = d->seq_len,
                D = c->head_dim;
  const size_t es = dua_dtype_size(c->dtype);
  dua_buffer *bq = test_upload(ctx, q, nq, c->dtype), *bk = test_upload(ctx, k, nk, c->dtype);
  dua_buffer *bv = test_upload(ctx, v, nk, c->dtype), *bg = test_upload(ctx, g, nq, c->dtype);
  dua_buffer *bo, *bl, *bdq, *bdk, *bdv, *bb = NULL, *bdb = NULL, *btg = NULL;
  const size_t nblk = (size_t)dua_layout_num_blocks(l), ntg = (size_t)(B * H) * nblk * nblk;
  ck_assert_int_eq(dua_buffer_create(ctx, nq * es, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, (size_t)(B * H * N) * 4, &bl), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nq * es, &bdq), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nk * es, &bdk), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, nk * es, &bdv), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bdq, 0, nq * es, 0xFF), DUA_SUCCESS); /* NaN poison */
  ck_assert_int_eq(dua_buffer_fill_bytes(bdk, 0, nk * es, 0xFF), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bdv, 0, nk * es, 0xFF), DUA_SUCCESS);
  dua_tensor tq = test_dev_view(bq, c->dtype, B, H, N, D, c->bnhd),
             tk = test_dev_view(bk, c->dtype, B, HK, N, D, c->bnhd);
  dua_tensor tv = test_dev_view(bv, c->dtype, B, HK, N, D, c->bnhd),
             tg = test_dev_view(bg, c->dtype, B, H, N, D, c->bnhd);
  dua_tensor to = test_dev_view(bo, c->dtype, B, H, N, D, c->bnhd),
             tdq = test_dev_view(bdq, c->dtype, B, H, N, D, c->bnhd);
  dua_tensor tdk = test_dev_view(bdk, c->dtype, B, HK, N, D, c->bnhd),
             tdv = test_dev_view(bdv, c->dtype, B, HK, N, D, c->bnhd);
  dua_tensor tl = dua_tensor_contiguous(bl, 0, DUA_F32, B, H, N, 1), tb, tdb;
  dua_attention_params params;
  dua_attention_params_init(&params);
  params.algo = c->algo;
  const int32_t levels = max_tree_depth(l, (int)H) + 1;
  if (bias) {
    bb = test_upload(ctx, bias, nb, DUA_F32);
    ck_assert_int_eq(dua_buffer_create(ctx, nb * 4, &bdb), DUA_SUCCESS);
    ck_assert_int_eq(dua_buffer_fill_bytes(bdb, 0, nb * 4, 0xFF), DUA_SUCCESS);
    tb = dua_tensor_contiguous(bb, 0, DUA_F32, H, levels, 1, 1);
    tdb = dua_tensor_contiguous(bdb, 0, DUA_F32, H, levels, 1, 1);
    params.level_bias = &tb;
  }
  dua_tensor ttg;
  if (c->with_tiles) {
    ck_assert_int_eq(dua_buffer_create(ctx, ntg * 4, &btg), DUA_SUCCESS);
    ck_assert_int_eq(dua_buffer_fill_bytes(btg, 0, ntg * 4, 0xFF), DUA_SUCCESS); /* NaN poison */
    ttg = dua_tensor_contiguous(btg, 0, DUA_F32, B, H, (int64_t)nblk, (int64_t)nblk);
    params.tile_grad = &ttg;
  }
  dua_status st = dua_attention_forward(ctx, l, &params, &tq, &tk, &tv, &to, &tl);
  ck_assert_msg(st == DUA_SUCCESS, "forward: %s", dua_context_last_error(ctx));
  st = dua_attention_backward(ctx, l, &params, &tq, &tk, &tv, &to, &tl, &tg, &tdq, &tdk, &tdv,
                              bias ? &tdb : NULL);
  ck_assert_msg(st == DUA_SUCCESS, "backward: %s: %s", dua_status_string(st), dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  grads out = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4), bias ? malloc(nb * 4) : NULL,
               c->with_tiles ? malloc(ntg * 4) : NULL};
  test_download(bdq, out.dq, nq, c->dtype);
  test_download(bdk, out.dk, nk, c->dtype);
  test_download(bdv, out.dv, nk, c->dtype);
  if (bias)
    test_download(bdb, out.db, nb, DUA_F32);
  if (c->with_tiles)
    test_download(btg, out.tg, ntg, DUA_F32);
  dua_buffer *all[] = {bq, bk, bv, bg, bo, bl, bdq, bdk, bdv, bb, bdb, btg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    dua_buffer_destroy(all[i]);
  return out;
}

static void grads_free(grads *g) {
  free(g->dq);
  free(g->dk);
  free(g->dv);
  free(g->db);
  free(g->tg);
}

static void expect_close(const char *what, const char *name, const float *x, const float *ref, size_t n,
                         dua_dtype dt) {
  double err;
  const double atol = dt == DUA_F16 ? F16_ATOL : F32_ATOL, rtol = dt == DUA_F16 ? F16_RTOL : F32_RTOL;
  long bad = test_compare(x, ref, n, atol, rtol, &err);
  ck_assert_msg(bad < 0, "%s: %s[%ld] = %g, reference %g (max error %g)", what, name, bad,
                (double)(bad >= 0 ? x[bad] : 0), (double)(bad >= 0 ? ref[bad] : 0), err);
}

static void check_case(dua_context *ctx, case_desc *c, dua_layout *l, test_rng *rng) {
  const dua_layout_desc *d = &c->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : H, N = d->seq_len,
                D = c->head_dim;
  const size_t nq = (size_t)(B * H * N * D), nk = (size_t)(B * HK * N * D);
  const int32_t levels = max_tree_depth(l, (int)H) + 1;
  const size_t nb = (size_t)(H * levels);
  float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *g = malloc(nq * 4), *bias = NULL;
  test_fill(q, nq, rng, c->dtype);
  test_fill(k, nk, rng, c->dtype);
  test_fill(v, nk, rng, c->dtype);
  test_fill(g, nq, rng, c->dtype);
  if (c->with_bias) {
    bias = malloc(nb * 4);
    test_fill(bias, nb, rng, DUA_F32);
  }
  grads dev = device_grads(ctx, l, c, q, k, v, g, bias, nq, nk, nb);
  const size_t nblk = (size_t)dua_layout_num_blocks(l), ntg = (size_t)(B * H) * nblk * nblk;
  grads ref = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4), bias ? malloc(nb * 4) : NULL,
               c->with_tiles ? malloc(ntg * 4) : NULL};
  dua_host_tensor hq = test_host_view(q, B, H, N, D, c->bnhd), hk = test_host_view(k, B, HK, N, D, c->bnhd);
  dua_host_tensor hv = test_host_view(v, B, HK, N, D, c->bnhd), hg = test_host_view(g, B, H, N, D, c->bnhd);
  dua_host_tensor hdq = test_host_view(ref.dq, B, H, N, D, c->bnhd),
                  hdk = test_host_view(ref.dk, B, HK, N, D, c->bnhd);
  dua_host_tensor hdv = test_host_view(ref.dv, B, HK, N, D, c->bnhd);
  ck_assert_int_eq(dua_attention_backward_reference_tiles(l, 0.0f, bias, &hq, &hk, &hv, &hg, &hdq, &hdk, &hdv,
                                                          ref.db, ref.tg),
                   DUA_SUCCESS);
  char what[200];
  snprintf(what, sizeof what,
           "N=%d blk=%d B=%d H=%d Hkv=%d depth0=%d W=%d S=%d causal=%d content=%d Dh=%d %s%s%s algo=%d",
           d->seq_len, d->block, d->batch, d->heads, d->kv_heads, d->depths ? d->depths[0] : 0, d->window,
           d->sink, d->causal, d->paths != NULL, c->head_dim, c->dtype == DUA_F16 ? "fp16" : "fp32",
           c->bnhd ? " BNHD" : "", bias ? " bias" : "", (int)c->algo);
  expect_close(what, "dq", dev.dq, ref.dq, nq, c->dtype);
  expect_close(what, "dk", dev.dk, ref.dk, nk, c->dtype);
  expect_close(what, "dv", dev.dv, ref.dv, nk, c->dtype);
  if (bias) { /* a sum over up to B*N*N/levels pairs: scale the absolute tolerance by the row count */
    double err;
    long bad = test_compare(dev.db, ref.db, nb, (c->dtype == DUA_F16 ? F16_ATOL : F32_ATOL) * (double)N,
                            c->dtype == DUA_F16 ? F16_RTOL : F32_RTOL, &err);
    ck_assert_msg(bad < 0, "%s: d_level_bias[%ld] = %g, reference %g", what, bad,
                  (double)(bad >= 0 ? dev.db[bad] : 0), (double)(bad >= 0 ? ref.db[bad] : 0));
  }
  if (c->with_tiles) { /* a sum over up to BLK x BLK pairs: scale the absolute tolerance by the rows */
    double err;
    long bad = test_compare(dev.tg, ref.tg, ntg, (c->dtype == DUA_F16 ? F16_ATOL : F32_ATOL) * d->block,
                            c->dtype == DUA_F16 ? F16_RTOL : F32_RTOL, &err);
    ck_assert_msg(bad < 0, "%s: tile_grad[%ld] = %g, reference %g (max error %g)", what, bad,
                  (double)(bad >= 0 ? dev.tg[bad] : 0), (double)(bad >= 0 ? ref.tg[bad] : 0), err);
    double total = 0.0, ref_total = 0.0, nonzero = 0;
    for (size_t x = 0; x < ntg; x++) {
      total += dev.tg[x];
      ref_total += ref.tg[x];
      nonzero += ref.tg[x] != 0.0f;
    }
    ck_assert_msg(nonzero > 0, "%s: every reference block-pair gradient is 0 (the test checks nothing)",
                  what);
    if (bias) { /* the level-bias gradient is the block-pair gradient summed over the pairs of each lca */
      double db_total = 0.0;
      for (size_t x = 0; x < nb; x++)
        db_total += dev.db[x];
      ck_assert_msg(fabs(db_total - total) <= 1e-3 + 1e-4 * fabs(db_total),
                    "%s: sum of tile_grad %g != sum of d_level_bias %g", what, total, db_total);
    }
  }
  /* deterministic: a second run gives the same bits */
  grads again = device_grads(ctx, l, c, q, k, v, g, bias, nq, nk, nb);
  ck_assert_msg(memcmp(again.dq, dev.dq, nq * 4) == 0 && memcmp(again.dk, dev.dk, nk * 4) == 0 &&
                    memcmp(again.dv, dev.dv, nk * 4) == 0 &&
                    (!bias || memcmp(again.db, dev.db, nb * 4) == 0) &&
                    (!c->with_tiles || memcmp(again.tg, dev.tg, ntg * 4) == 0),
                "%s: two runs differ", what);
  grads_free(&again);
  grads_free(&dev);
  grads_free(&ref);
  free(q);
  free(k);
  free(v);
  free(g);
  free(bias);
}

static case_desc base_case(int32_t n, int32_t blk, int head_dim) {
  case_desc c;
  memset(&c, 0, sizeof c);
  c.desc.seq_len = n;
  c.desc.block = blk;
  c.desc.batch = 1;
  c.desc.heads = 2;
  c.desc.arity = 2;
  c.head_dim = head_dim;
  c.dtype = DUA_F32;
  return c;
}

static void run_case(dua_context *ctx, case_desc *c, test_rng *rng) {
  dua_layout *l = NULL;
  char err[256] = "";
  ck_assert_msg(dua_layout_create(&c->desc, &l, err, sizeof err) == DUA_SUCCESS, "%s", err);
  check_case(ctx, c, l, rng);
  dua_layout_destroy(l);
}

START_TEST(dense_and_block_diagonal) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(201);
  for (int causal = 0; causal <= 1; causal++) {
    case_desc c = base_case(160, 32, 64);
    c.desc.causal = causal;
    run_case(ctx, &c, &rng);
    c.depths[0] = c.depths[1] = -1;
    c.desc.depths = c.depths;
    c.desc.seq_len = 150; /* tail */
    run_case(ctx, &c, &rng);
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(random_layouts) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(202 + (uint64_t)_i);
  static const int dims[4] = {32, 64, 96, 128};
  static const int blocks[3] = {16, 32, 64};
  for (int n_case = 0; n_case < 2; n_case++) { /* one head dim per loop index: few kernel builds on PoCL */
    case_desc c = base_case(test_rng_int(&rng, 1, 200), blocks[test_rng_int(&rng, 0, 2)], dims[_i % 4]);
    dua_layout_desc *d = &c.desc;
    d->batch = test_rng_int(&rng, 1, 2);
    d->heads = 4;
    d->kv_heads = test_rng_int(&rng, 0, 2) == 0 ? 0 : test_rng_int(&rng, 0, 1) ? 2 : 1;
    d->arity = test_rng_int(&rng, 2, 3);
    d->causal = test_rng_int(&rng, 0, 1);
    d->window = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 50) : 0;
    d->sink = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 20) : 0;
    const int nb = (d->seq_len + d->block - 1) / d->block;
    int dmax = 0;
    for (int h = 0; h < 4; h++) {
      int D = 0;
      for (long span = 1; span < nb; span *= d->arity)
        D++;
      c.depths[h] = test_rng_int(&rng, -1, D);
      dmax = D > dmax ? D : dmax;
    }
    d->depths = c.depths;
    if (test_rng_int(&rng, 0, 2) == 0 && dmax > 0) {
      size_t np = (size_t)d->batch * 4 * nb * dmax;
      c.paths = malloc(np);
      for (size_t i = 0; i < np; i++)
        c.paths[i] = (uint8_t)test_rng_int(&rng, 0, d->arity - 1);
      d->paths = c.paths;
    } else if (dmax > 0) {
      d->shift = test_rng_int(&rng, 0, nb);
    }
    c.dtype = test_rng_int(&rng, 0, 2) == 0 ? DUA_F16 : DUA_F32;
    c.bnhd = test_rng_int(&rng, 0, 1);
    c.with_bias = test_rng_int(&rng, 0, 1);
    c.algo = test_rng_int(&rng, 0, 2) == 0 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    run_case(ctx, &c, &rng);
    free(c.paths);
  }
  dua_context_destroy(ctx);
}
END_TEST

/* params.tile_grad: content and positional trees, window/sink pairs (excluded), GQA, fp16, a layout block of
 * several key tiles (partials summed by dua_attn_bwd_tiles), with and without a level bias */
START_TEST(tile_gradient) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(204);
  for (int n_case = 0; n_case < 4; n_case++) {
    case_desc c = base_case(n_case == 3 ? 200 : 150, n_case == 3 ? 64 : 16, 32);
    dua_layout_desc *d = &c.desc;
    d->batch = 2;
    d->heads = 4;
    d->kv_heads = n_case == 2 ? 2 : 0;
    d->causal = n_case != 1;
    d->window = n_case == 1 ? 9 : 0;
    d->sink = n_case == 2 ? 5 : 0;
    const int nb = (d->seq_len + d->block - 1) / d->block;
    int D = 0;
    for (long span = 1; span < nb; span *= 2)
      D++;
    for (int h = 0; h < 4; h++)
      c.depths[h] = h % (D + 1);
    d->depths = c.depths;
    if (n_case != 1) {
      size_t np = (size_t)d->batch * 4 * nb * D;
      c.paths = malloc(np);
      for (size_t i = 0; i < np; i++)
        c.paths[i] = (uint8_t)test_rng_int(&rng, 0, 1);
      d->paths = c.paths;
    }
    c.with_bias = n_case != 2;
    c.with_tiles = 1;
    c.dtype = n_case == 2 ? DUA_F16 : DUA_F32;
    run_case(ctx, &c, &rng);
    free(c.paths);
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(caller_lists_with_empty_rows) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(203);
  case_desc c = base_case(100, 16, 32);
  c.desc.causal = 1;
  const int nb = 7, rows = 2 * nb;
  int32_t counts[14], indices[14 * 7];
  for (int r = 0; r < rows; r++) {
    counts[r] = r == 2 ? 0 : test_rng_int(&rng, 1, nb);
    int used[7] = {0};
    for (int i = 0; i < counts[r]; i++) {
      int n;
      do
        n = test_rng_int(&rng, 0, nb - 1);
      while (used[n]);
      used[n] = 1;
      indices[r * nb + i] = n;
    }
  }
  dua_layout *l = NULL;
  char err[256];
  ck_assert_msg(dua_layout_create_from_lists(&c.desc, counts, indices, &l, err, sizeof err) == DUA_SUCCESS,
                "%s", err);
  check_case(ctx, &c, l, &rng);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(invalid_arguments_leave_outputs_untouched) {
  dua_context *ctx = test_context();
  case_desc c = base_case(64, 32, 64);
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&c.desc, &l, NULL, 0), DUA_SUCCESS);
  const size_t n = 2 * 64 * 64;
  dua_buffer *bx, *bdq, *bl;
  ck_assert_int_eq(dua_buffer_create(ctx, n * 4, &bx), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, n * 4, &bdq), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * 64 * 4, &bl), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bx, 0, n * 4, 0x11), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bdq, 0, n * 4, 0x5A), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, 2 * 64 * 4, 0x22), DUA_SUCCESS);
  dua_tensor x = dua_tensor_contiguous(bx, 0, DUA_F32, 1, 2, 64, 64),
             dq = dua_tensor_contiguous(bdq, 0, DUA_F32, 1, 2, 64, 64);
  dua_tensor lse = dua_tensor_contiguous(bl, 0, DUA_F32, 1, 2, 64, 1), bad = x;
  bad.shape[2] = 32;
  dua_tensor half = x;
  half.dtype = DUA_F16;
  dua_attention_params naive;
  dua_attention_params_init(&naive);
  naive.algo = DUA_ALGO_NAIVE;
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, NULL, &x, &dq, &x, &x, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "lse is NULL"));
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &bad, &dq, &x, &x, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "d_o.shape[2]"));
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &half, &x, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "dk.dtype"));
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &x, &x, &lse),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "params.level_bias is NULL"));
  ck_assert_int_eq(dua_attention_backward(ctx, l, &naive, &x, &x, &x, &x, &lse, &x, &dq, &x, &x, NULL),
                   DUA_ERROR_UNSUPPORTED);
  { /* params.tile_grad must be (B, Hq, nb, nb) fp32 */
    dua_attention_params tp;
    dua_attention_params_init(&tp);
    dua_tensor tg = dua_tensor_contiguous(bl, 0, DUA_F32, 1, 2, 2, 3);
    tp.tile_grad = &tg;
    ck_assert_int_eq(dua_attention_backward(ctx, l, &tp, &x, &x, &x, &x, &lse, &x, &dq, &x, &x, NULL),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "params.tile_grad.shape[3]"));
    tg.shape[3] = 2;
    tg.dtype = DUA_F16;
    ck_assert_int_eq(dua_attention_backward(ctx, l, &tp, &x, &x, &x, &x, &lse, &x, &dq, &x, &x, NULL),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "params.tile_grad.dtype"));
  }
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, NULL, &x, &x, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_attention_backward(NULL, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &x, &x, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  /* outputs may not alias an input or each other, nor write an element twice */
  dua_buffer *bk;
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * n * 4, &bk), DUA_SUCCESS);
  dua_tensor dk = dua_tensor_contiguous(bk, 0, DUA_F32, 1, 2, 64, 64);
  dua_tensor dv = dua_tensor_contiguous(bk, n * 4, DUA_F32, 1, 2, 64, 64);
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &x, &dv, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "output dk overlaps input q"));
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &dk, &dk, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "output dk overlaps output dv"));
  dua_tensor twice = dk;
  twice.strides[2] = 0;
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &x, &dq, &twice, &dv, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "strides[2] = 0"));
  ck_assert_int_eq(dua_buffer_fill_bytes(bk, 0, 2 * n * 4, 0x6B), DUA_SUCCESS);
  ck_assert_int_eq(dua_attention_backward(ctx, l, NULL, &x, &x, &x, &x, &lse, &bad, &dq, &dk, &dv, NULL),
                   DUA_ERROR_INVALID_ARGUMENT);
  unsigned char *kv_back = malloc(2 * n * 4);
  ck_assert_int_eq(dua_buffer_read(bk, 0, 2 * n * 4, kv_back), DUA_SUCCESS);
  for (size_t i = 0; i < 2 * n * 4; i++)
    ck_assert_msg(kv_back[i] == 0x6B, "dk/dv byte %zu written by a refused call", i);
  free(kv_back);
  dua_buffer_destroy(bk);
  unsigned char *back = malloc(n * 4);
  ck_assert_int_eq(dua_buffer_read(bdq, 0, n * 4, back), DUA_SUCCESS);
  for (size_t i = 0; i < n * 4; i++)
    ck_assert_msg(back[i] == 0x5A, "dq byte %zu written by a refused call", i);
  free(back);
  dua_buffer_destroy(bx);
  dua_buffer_destroy(bdq);
  dua_buffer_destroy(bl);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

/* Tuned tiles (dua_context_set_tuning, as a tuning database entry would set them): three tiles of the
 * device's candidate space for head dim 64 and block 64, fp32, fp16 and with the level bias, against the
 * reference; the backward reports the tile as the one in use. */
START_TEST(tuned_tiles) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(205);
  int count = 0;
  ck_assert_int_eq(dua_tuning_candidates(ctx, "bwd", DUA_F32, 64, 64, NULL, 0, &count), DUA_SUCCESS);
  ck_assert_int_gt(count, 3);
  int32_t *tiles = malloc((size_t)count * 4 * sizeof *tiles);
  ck_assert_int_eq(dua_tuning_candidates(ctx, "bwd", DUA_F32, 64, 64, tiles, count, &count), DUA_SUCCESS);
  const int pick[3] = {count / 5, count / 2, count - 1};
  for (int j = 0; j < 3; j++) {
    case_desc c = base_case(200, 64, 64);
    c.dtype = j == 1 ? DUA_F16 : DUA_F32;
    c.desc.heads = 4;
    c.desc.kv_heads = 2;
    c.desc.causal = 1;
    c.desc.window = 30;
    static const int32_t depths[4] = {0, 1, -1, 2};
    memcpy(c.depths, depths, sizeof depths);
    c.desc.depths = c.depths;
    c.with_bias = j == 2;
    const int32_t *tile = tiles + 4 * pick[j];
    ck_assert_int_eq(dua_context_set_tuning(ctx, "bwd", c.dtype, 64, tile, 4), DUA_SUCCESS);
    dua_tuning_info t;
    ck_assert_int_eq(dua_context_get_tuning(ctx, "bwd", c.dtype, 64, 64, &t), DUA_SUCCESS);
    ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
    ck_assert(!memcmp(t.params, tile, 4 * sizeof *tile));
    run_case(ctx, &c, &rng);
  }
  free(tiles);
  dua_context_destroy(ctx);
}
END_TEST

/* ---- the tensor-core backward */
/* user: int[4], the tensor-core backward's launches, those whose dQ / dK-dV kernel was the wgmma variant, and
 * those whose dK/dV kernel skips dead query tiles of a window (backward_nv_mma.c logs "dua_attn_bwd_dq_mma
 * (options), dua_attn_bwd_dkdv_mma (options)") */
static void count_bwd_mma(dua_log_level level, const char *msg, void *user) {
  (void)level;
  const char *dq = strstr(msg, "dua_attn_bwd_dq_mma ("), *kv = strstr(msg, "dua_attn_bwd_dkdv_mma (");
  if (!dq || !kv)
    return;
  const char *wg = strstr(dq, "-DDUA_WGMMA=1");
  ((int *)user)[0]++;
  ((int *)user)[1] += wg && wg < kv;
  ((int *)user)[2] += strstr(kv, "-DDUA_WGMMA=1") != NULL;
  ((int *)user)[3] += strstr(kv, "-DDUA_WINDOWED=1") != NULL;
}

/* _i: 0 = default context (the tensor-core kernels where available), 1 = DUA_NO_MMA=1 */
START_TEST(tensor_core_cases) {
  int launches[4] = {0, 0, 0, 0};
  if (_i)
    setenv("DUA_NO_MMA", "1", 1);
  else
    unsetenv("DUA_NO_MMA");
  dua_context_options opt;
  dua_context_options_init(&opt);
  opt.log = count_bwd_mma;
  opt.log_user = launches;
  opt.log_level = DUA_LOG_DEBUG;
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(&opt, &ctx), DUA_SUCCESS);
  const char *emu = getenv("DUA_TEST_MMA_EMULATE");
  int emulated = 0;
  if (!ctx->info.nv_mma_f16 && emu && *emu && strcmp(emu, "0") != 0) {
    ctx->info.nv_mma_f16 = emulated = 1; /* backward_nv_mma.c builds the emulated kernels elsewhere */
    const char *wg = getenv("DUA_TEST_WGMMA_EMULATE"); /* ... and their wgmma variant */
    ctx->info.nv_wgmma = wg && *wg && strcmp(wg, "0") != 0;
  }
  const int possible = ctx->info.nv_mma_f16 && !ctx->fast_paths_disabled,
            wgmma = possible && ctx->info.nv_wgmma;
  if (_i)
    ck_assert_msg(!possible, "DUA_NO_MMA=1 did not turn the tensor-core path off");
  test_rng rng = test_rng_make(205);
  for (int n_case = 0; n_case < 12; n_case++) {
    /* 0-1 dense (causal); 2-3 block-diagonal with a tail and N < 64; 4 mixed depths, window, sink, shift,
     * causal; 5 content paths, window and sink (not causal: query tiles dead on both sides of the window),
     * GQA 4/2, (B,N,H,D); 6 device lists, GQA 4/1, causal; 8 head dim 128 (wgmma on Hopper), block 128
     * (32-row query tiles wholly before a key tile of their block), a tail in the last query and key tiles;
     * then the portable ones: 7 level bias, 9 block 32, 10 fp32; then 11 head dim 128 with a window and GQA
     * 4/2, block 64 (not causal: the dK/dV walk's dead 32-row query tiles on both sides of the window) */
    static const int ns[12] = {320, 320, 300, 37, 1000, 512, 420, 256, 250, 256, 256, 300};
    static const int blks[12] = {64, 128, 128, 64, 128, 128, 64, 64, 128, 32, 64, 64};
    /* emulated warp instructions are slow: shorter sequences, the same features (tails, N < 64 kept) */
    const int n_tok = emulated && ns[n_case] > 256 ? ns[n_case] / 2 : ns[n_case];
    case_desc c = base_case(n_tok, blks[n_case], n_case == 8 || n_case == 11 ? 128 : 64);
    dua_layout_desc *d = &c.desc;
    c.dtype = n_case == 10 ? DUA_F32 : DUA_F16;
    d->causal = n_case == 1 || n_case == 2 || n_case == 4 || n_case == 6 || (n_case >= 7 && n_case != 11);
    d->heads = n_case >= 4 ? 4 : 2;
    d->kv_heads = n_case == 5 || n_case == 11 ? 2 : n_case == 6 ? 1 : 0;
    if (n_case >= 2) {
      for (int h = 0; h < d->heads; h++)
        c.depths[h] = n_case <= 3 ? -1 : (h % 3) - 1 + (n_case == 4); /* -1..2 */
      d->depths = c.depths;
    }
    if (n_case == 4)
      d->window = 65, d->sink = 9, d->shift = 1; /* 65: the skip's boundary, a query tile's first row
                                                  * reaching the last key of the tile 128 keys back */
    if (n_case == 11) /* 33: tiles at 32-row starts meet both bounds exactly (key0 + 63 = i0 - 33, key0 = i0 +
                       * 31 + 33; at the emulated N 150 too) */
      d->window = 33;
    if (n_case == 5) {
      d->window = 65, d->sink = 3; /* 65: the skip's other boundary, a query tile's last
                                    * row reaching the first key of the tile 128 keys on */
      const int nb = (d->seq_len + d->block - 1) / d->block;
      int D = 0;
      for (int span = 1; span < nb; span *= d->arity)
        D++;
      c.paths = malloc((size_t)d->batch * d->heads * nb * D);
      for (int i = 0; i < d->batch * d->heads * nb * D; i++)
        c.paths[i] = (uint8_t)test_rng_int(&rng, 0, 1);
      d->paths = c.paths;
      c.bnhd = 1;
    }
    c.algo = n_case == 6 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    c.with_bias = n_case == 7;
    const int before[4] = {launches[0], launches[1], launches[2], launches[3]};
    run_case(ctx, &c, &rng);
    const int want = possible && (n_case < 7 || n_case == 8 || n_case == 11)
                         ? 2
                         : 0; /* check_case runs the backward twice */
    ck_assert_msg(launches[0] - before[0] == want,
                  "case %d: tensor-core backward launched %d times, expected %d", n_case,
                  launches[0] - before[0], want);
    /* on Hopper (or emulated) both passes on wgmma: never a silent fallback */
    const int want_dq = wgmma ? want : 0, want_kv = want_dq;
    ck_assert_msg(launches[1] - before[1] == want_dq && launches[2] - before[2] == want_kv,
                  "case %d: wgmma dQ / dK-dV kernels launched %d / %d times, expected %d / %d", n_case,
                  launches[1] - before[1], launches[2] - before[2], want_dq, want_kv);
    /* the windowed cases (4, 5, 11) on the variant that skips dead query tiles, the others not */
    const int want_windowed = d->window > 0 ? want : 0;
    ck_assert_msg(launches[3] - before[3] == want_windowed,
                  "case %d (window %d): windowed dK/dV kernel launched %d times, expected %d", n_case,
                  d->window, launches[3] - before[3], want_windowed);
    free(c.paths);
  }
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("backward");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  const char *only = getenv("DUA_TEST_ONLY"); /* developer filter: substring of a test name */
#define ADD(fn, n)                                                                                           \
  if (!only || strstr(#fn, only))                                                                            \
    tcase_add_loop_test(tc, fn, 0, n);
  ADD(dense_and_block_diagonal, 1)
  ADD(random_layouts, 4)
  ADD(tile_gradient, 1)
  ADD(caller_lists_with_empty_rows, 1)
  ADD(invalid_arguments_leave_outputs_untouched, 1)
  ADD(tuned_tiles, 1)
  ADD(tensor_core_cases, 2)
#undef ADD
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
