/* test_forward.c: dua_attention_forward on the default OpenCL device against the double-precision CPU
 * reference (dua_attention_reference, itself checked against a materialized mask in test_reference.c):
 * every layout feature alone and combined, rule vs list enumeration, caller lists, the naive baseline, fp16,
 * (B,N,H,D) strides, GQA, level bias, tails, causality bit for bit, empty rows, poisoned outputs, and
 * invalid arguments that must leave outputs untouched. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp32: |x - ref| <= 1e-4 + 1e-3 |ref| (DESIGN.md section 6). fp16 storage: inputs are exactly representable
 * (rounded before the reference sees them) and the output is rounded to half once, a relative error of
 * 2^-11 = 4.9e-4; stated tolerance 1e-3 + 2e-3 |ref|. */
#define F32_ATOL 1e-4
#define F32_RTOL 1e-3
#define F16_ATOL 1e-3
#define F16_RTOL 2e-3

typedef struct problem {
  dua_layout_desc desc;
  int32_t depths[16], arities[16];
  uint8_t *paths;
  int head_dim;
  dua_dtype dtype;
  int bnhd;      /* (B,N,H,D) storage */
  int with_bias; /* random level bias */
  dua_attention_algo algo;
} problem;

typedef test_fwd_run run;

static dua_layout *make_layout(problem *p) {
  dua_layout *l = NULL;
  char err[256] = "";
  dua_status st = dua_layout_create(&p->desc, &l, err, sizeof err);
  ck_assert_msg(st == DUA_SUCCESS, "layout rejected: %s", err);
  return l;
}

/* Runs the device forward and the reference on fresh random inputs; compares O and LSE. Inputs of rows
 * (tokens) >= perturb_from are replaced by new random values when perturb_from >= 0 (the causality test). */
static void run_problem(dua_context *ctx, problem *p, dua_layout *l, run *r, test_rng *rng) {
  const dua_layout_desc *d = &p->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : d->heads, N = d->seq_len,
                D = p->head_dim;
  r->nq = (size_t)(B * H * N * D);
  r->nk = (size_t)(B * HK * N * D);
  r->nl = (size_t)(B * H * N);
  if (!r->q) {
    r->q = malloc(r->nq * 4);
    r->k = malloc(r->nk * 4);
    r->v = malloc(r->nk * 4);
    test_fill(r->q, r->nq, rng, p->dtype);
    test_fill(r->k, r->nk, rng, p->dtype);
    test_fill(r->v, r->nk, rng, p->dtype);
  }
  r->o = malloc(r->nq * 4);
  r->lse = malloc(r->nl * 4);
  r->ref_o = malloc(r->nq * 4);
  r->ref_lse = malloc(r->nl * 4);
  int32_t dmax = dua_layout_tree_depth(l, 0);
  for (int h = 1; h < H; h++)
    if (dua_layout_tree_depth(l, h) > dmax)
      dmax = dua_layout_tree_depth(l, h);
  r->nbias = (size_t)(H * (dmax + 1));
  r->bias = NULL;
  if (p->with_bias) {
    r->bias = malloc(r->nbias * 4);
    for (size_t i = 0; i < r->nbias; i++)
      r->bias[i] = 2.0f * test_rng_float(rng);
  }
  dua_buffer *bq = test_upload(ctx, r->q, r->nq, p->dtype), *bk = test_upload(ctx, r->k, r->nk, p->dtype);
  dua_buffer *bv = test_upload(ctx, r->v, r->nk, p->dtype), *bo = NULL, *bl = NULL, *bb = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, r->nq * dua_dtype_size(p->dtype), &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, r->nl * 4, &bl), DUA_SUCCESS);
  /* poison: all-ones bytes are NaN in fp32 and fp16 */
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, r->nq * dua_dtype_size(p->dtype), 0xFF), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, r->nl * 4, 0xFF), DUA_SUCCESS);
  dua_tensor tq = test_dev_view(bq, p->dtype, B, H, N, D, p->bnhd),
             tk = test_dev_view(bk, p->dtype, B, HK, N, D, p->bnhd);
  dua_tensor tv = test_dev_view(bv, p->dtype, B, HK, N, D, p->bnhd),
             to = test_dev_view(bo, p->dtype, B, H, N, D, p->bnhd);
  dua_tensor tl = dua_tensor_contiguous(bl, 0, DUA_F32, B, H, N, 1), tb;
  dua_attention_params params;
  dua_attention_params_init(&params);
  params.algo = p->algo;
  if (p->with_bias) {
    bb = test_upload(ctx, r->bias, r->nbias, DUA_F32);
    tb = dua_tensor_contiguous(bb, 0, DUA_F32, H, dmax + 1, 1, 1);
    params.level_bias = &tb;
  }
  dua_status st = dua_attention_forward(ctx, l, &params, &tq, &tk, &tv, &to, &tl);
  ck_assert_msg(st == DUA_SUCCESS, "forward failed: %s: %s", dua_status_string(st),
                dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  test_download(bo, r->o, r->nq, p->dtype);
  test_download(bl, r->lse, r->nl, DUA_F32);
  r->hq = test_host_view(r->q, B, H, N, D, p->bnhd);
  r->hk = test_host_view(r->k, B, HK, N, D, p->bnhd);
  r->hv = test_host_view(r->v, B, HK, N, D, p->bnhd);
  r->ho = test_host_view(r->ref_o, B, H, N, D, p->bnhd);
  r->hl = test_host_view(r->ref_lse, B, H, N, 1, 0);
  ck_assert_int_eq(dua_attention_reference(l, 0.0f, r->bias, &r->hq, &r->hk, &r->hv, &r->ho, &r->hl),
                   DUA_SUCCESS);
  dua_buffer_destroy(bq);
  dua_buffer_destroy(bk);
  dua_buffer_destroy(bv);
  dua_buffer_destroy(bo);
  dua_buffer_destroy(bl);
  dua_buffer_destroy(bb);
}

static void describe(const problem *p, char *buf, size_t size) {
  const dua_layout_desc *d = &p->desc;
  snprintf(buf, size,
           "N=%d blk=%d B=%d H=%d Hkv=%d p=%d depth0=%d shift=%d W=%d S=%d causal=%d content=%d Dh=%d %s%s%s "
           "algo=%d",
           d->seq_len, d->block, d->batch, d->heads, d->kv_heads, d->arity, d->depths ? d->depths[0] : 0,
           d->shift, d->window, d->sink, d->causal, d->paths != NULL, p->head_dim,
           p->dtype == DUA_F16 ? "fp16" : "fp32", p->bnhd ? " BNHD" : "", p->with_bias ? " bias" : "",
           (int)p->algo);
}

static void compare(const problem *p, const run *r) {
  char what[256];
  describe(p, what, sizeof what);
  double atol = p->dtype == DUA_F16 ? F16_ATOL : F32_ATOL, rtol = p->dtype == DUA_F16 ? F16_RTOL : F32_RTOL;
  test_fwd_run_check(r, atol, rtol, what);
}

static void check_problem(dua_context *ctx, problem *p, test_rng *rng) {
  dua_layout *l = make_layout(p);
  run r;
  memset(&r, 0, sizeof r);
  run_problem(ctx, p, l, &r, rng);
  compare(p, &r);
  test_fwd_run_free(&r);
  dua_layout_destroy(l);
}

static problem base_problem(int32_t n, int32_t blk, int head_dim) {
  problem p;
  memset(&p, 0, sizeof p);
  p.desc.seq_len = n;
  p.desc.block = blk;
  p.desc.batch = 1;
  p.desc.heads = 2;
  p.desc.arity = 2;
  p.head_dim = head_dim;
  p.dtype = DUA_F32;
  return p;
}

START_TEST(full_layout_is_dense_attention) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(101);
  for (int causal = 0; causal <= 1; causal++) {
    problem p = base_problem(256, 64, 64);
    p.desc.causal = causal;
    check_problem(ctx, &p, &rng); /* depths NULL: all 0 = dense */
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(block_diagonal_with_tail) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(102);
  problem p = base_problem(300, 64, 64);
  p.depths[0] = p.depths[1] = -1;
  p.desc.depths = p.depths;
  check_problem(ctx, &p, &rng);
  p.desc.seq_len = 37; /* smaller than one block */
  check_problem(ctx, &p, &rng);
  dua_context_destroy(ctx);
}
END_TEST

/* Random layouts: every feature alone and combined. Head dims and dtypes cycle so each kernel variant runs.
 */
START_TEST(random_layouts) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(103 + (uint64_t)_i);
  static const int dims[4] = {32, 64, 96, 128};
  static const int blocks[4] = {16, 32, 64, 128};
  for (int c = 0; c < 6; c++) {
    problem p =
        base_problem(test_rng_int(&rng, 1, 420), blocks[test_rng_int(&rng, 0, 3)], dims[(c + _i) % 4]);
    dua_layout_desc *d = &p.desc;
    d->batch = test_rng_int(&rng, 1, 2);
    d->heads = 4;
    d->kv_heads = test_rng_int(&rng, 0, 1) ? 2 : 0;
    d->arity = test_rng_int(&rng, 2, 3);
    d->causal = test_rng_int(&rng, 0, 1);
    d->window = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 70) : 0;
    d->sink = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 40) : 0;
    int nb = (d->seq_len + d->block - 1) / d->block;
    if (test_rng_int(&rng, 0, 1)) {
      for (int h = 0; h < 4; h++)
        p.arities[h] = test_rng_int(&rng, 2, 4);
      d->arities = p.arities;
    }
    int dmax = 0;
    for (int h = 0; h < 4; h++) {
      int ar = d->arities ? p.arities[h] : d->arity, D = 0;
      for (long span = 1; span < nb; span *= ar)
        D++;
      p.depths[h] = test_rng_int(&rng, -1, D);
      dmax = D > dmax ? D : dmax;
    }
    d->depths = p.depths;
    int content = test_rng_int(&rng, 0, 2) == 0 && dmax > 0;
    if (content) {
      size_t np = (size_t)d->batch * 4 * nb * dmax;
      p.paths = malloc(np);
      for (int b = 0; b < d->batch; b++)
        for (int h = 0; h < 4; h++)
          for (int blk = 0; blk < nb; blk++)
            for (int lv = 0; lv < dmax; lv++)
              p.paths[(((size_t)b * 4 + h) * nb + blk) * dmax + lv] =
                  (uint8_t)test_rng_int(&rng, 0, (d->arities ? p.arities[h] : d->arity) - 1);
      d->paths = p.paths;
    } else if (test_rng_int(&rng, 0, 1) && dmax > 0) {
      d->shift = test_rng_int(&rng, 0, nb);
    }
    p.dtype = test_rng_int(&rng, 0, 2) == 0 ? DUA_F16 : DUA_F32;
    p.bnhd = test_rng_int(&rng, 0, 1);
    p.with_bias = test_rng_int(&rng, 0, 2) == 0;
    p.algo = test_rng_int(&rng, 0, 2) == 0 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    check_problem(ctx, &p, &rng);
    free(p.paths);
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(rule_and_list_enumeration_agree) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(104);
  problem p = base_problem(333, 32, 64);
  p.desc.heads = 3;
  p.depths[0] = 1;
  p.depths[1] = 3;
  p.depths[2] = -1;
  p.desc.depths = p.depths;
  p.desc.window = 20;
  p.desc.sink = 5;
  p.desc.causal = 1;
  p.desc.shift = 2;
  for (int algo = DUA_ALGO_RULE; algo <= DUA_ALGO_NAIVE; algo++) {
    p.algo = (dua_attention_algo)algo;
    check_problem(ctx, &p, &rng);
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(caller_lists_with_empty_rows) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(105);
  problem p = base_problem(200, 32, 32);
  p.desc.causal = _i;
  int nb = 7, rows = 1 * 2 * nb;
  int32_t counts[14], indices[14 * 7];
  for (int r = 0; r < rows; r++) {
    counts[r] = r == 3 ? 0 : test_rng_int(&rng, 0, nb); /* row 3 (b0 h0 m3) is empty */
    int used[7] = {0};
    for (int c = 0; c < counts[r]; c++) {
      int n;
      do
        n = test_rng_int(&rng, 0, nb - 1);
      while (used[n]);
      used[n] = 1;
      indices[r * nb + c] = n;
    }
  }
  dua_layout *l = NULL;
  char err[256];
  ck_assert_msg(dua_layout_create_from_lists(&p.desc, counts, indices, &l, err, sizeof err) == DUA_SUCCESS,
                "%s", err);
  run r;
  memset(&r, 0, sizeof r);
  run_problem(ctx, &p, l, &r, &rng);
  compare(&p, &r);
  for (int i = 3 * 32; i < 4 * 32; i++) { /* empty rows: zeros, LSE -inf, no NaN */
    ck_assert(isinf(r.lse[i]) && r.lse[i] < 0);
    for (int c = 0; c < 32; c++)
      ck_assert_msg(r.o[(size_t)i * 32 + c] == 0.0f, "empty row %d not zero", i);
  }
  test_fwd_run_free(&r);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

/* Causality: new values for every token after t change no output at a position <= t, bit for bit. */
START_TEST(causality_bit_for_bit) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(106);
  problem p = base_problem(257, 32, 64);
  p.desc.causal = 1;
  p.desc.window = 9;
  p.desc.sink = 3;
  p.depths[0] = 2;
  p.depths[1] = 0;
  p.desc.depths = p.depths;
  p.dtype = _i ? DUA_F16 : DUA_F32;
  dua_layout *l = make_layout(&p);
  run a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  run_problem(ctx, &p, l, &a, &rng);
  const int t = 150, D = 64, N = 257;
  b.q = malloc(a.nq * 4);
  b.k = malloc(a.nk * 4);
  b.v = malloc(a.nk * 4);
  memcpy(b.q, a.q, a.nq * 4);
  memcpy(b.k, a.k, a.nk * 4);
  memcpy(b.v, a.v, a.nk * 4);
  for (int h = 0; h < 2; h++)
    for (int j = t + 1; j < N; j++)
      for (int c = 0; c < D; c++) {
        size_t idx = ((size_t)h * N + j) * D + c;
        b.q[idx] = test_rng_float(&rng);
        b.k[idx] = test_rng_float(&rng);
        b.v[idx] = test_rng_float(&rng) * 100.0f;
      }
  if (p.dtype == DUA_F16)
    for (size_t i = 0; i < a.nq; i++) {
      b.q[i] = dua_half_to_float(dua_float_to_half(b.q[i]));
      b.k[i] = dua_half_to_float(dua_float_to_half(b.k[i]));
      b.v[i] = dua_half_to_float(dua_float_to_half(b.v[i]));
    }
  run_problem(ctx, &p, l, &b, &rng);
  compare(&p, &a);
  int changed_after = 0;
  for (int h = 0; h < 2; h++)
    for (int i = 0; i < N; i++)
      for (int c = 0; c < D; c++) {
        size_t idx = ((size_t)h * N + i) * D + c;
        if (i <= t)
          ck_assert_msg(memcmp(&a.o[idx], &b.o[idx], 4) == 0, "output at position %d <= %d changed", i, t);
        else
          changed_after |= a.o[idx] != b.o[idx];
      }
  ck_assert_msg(changed_after, "perturbing the future changed nothing at all: the test is not testing");
  test_fwd_run_free(&a);
  test_fwd_run_free(&b);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

/* Invalid arguments: right status, a message naming the value, and outputs untouched. */
START_TEST(invalid_arguments_leave_outputs_untouched) {
  dua_context *ctx = test_context();
  problem p = base_problem(64, 32, 64);
  dua_layout *l = make_layout(&p);
  const size_t n = 2 * 64 * 64;
  dua_buffer *bq, *bo, *bl;
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * n * 4, &bq), DUA_SUCCESS); /* room for the batch-2 view */
  ck_assert_int_eq(dua_buffer_create(ctx, n * 4, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * 64 * 4, &bl), DUA_SUCCESS);
  test_rng rng = test_rng_make(107);
  float *x = malloc(n * 4);
  test_fill(x, n, &rng, DUA_F32);
  ck_assert_int_eq(dua_buffer_write(bq, 0, n * 4, x), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, n * 4, 0x5A), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, 2 * 64 * 4, 0x5A), DUA_SUCCESS);
  dua_tensor q = dua_tensor_contiguous(bq, 0, DUA_F32, 1, 2, 64, 64),
             o = dua_tensor_contiguous(bo, 0, DUA_F32, 1, 2, 64, 64);
  dua_tensor lse = dua_tensor_contiguous(bl, 0, DUA_F32, 1, 2, 64, 1);
  struct {
    const char *name;
    dua_status want;
    const char *msg;
  } cases[] = {{"q batch", DUA_ERROR_INVALID_ARGUMENT, "q.shape[0]"},
               {"k tokens", DUA_ERROR_INVALID_ARGUMENT, "k.shape[2]"},
               {"head dim 80", DUA_ERROR_UNSUPPORTED, "head_dim = 80"},
               {"dtype mismatch", DUA_ERROR_INVALID_ARGUMENT, "dtype"},
               {"lse fp16", DUA_ERROR_INVALID_ARGUMENT, "lse.dtype"},
               {"NULL v", DUA_ERROR_INVALID_ARGUMENT, "tensor v is NULL"},
               {"negative scale", DUA_ERROR_INVALID_ARGUMENT, "scale"},
               {"bad algo", DUA_ERROR_INVALID_ARGUMENT, "algo"},
               {"bias shape", DUA_ERROR_INVALID_ARGUMENT, "level_bias.shape"},
               {"strided head dim", DUA_ERROR_UNSUPPORTED, "strides[3]"},
               {"overflowing stride", DUA_ERROR_INVALID_ARGUMENT, "tensor q"},
               {"o aliases q", DUA_ERROR_INVALID_ARGUMENT, "output o overlaps input q"},
               {"o zero stride", DUA_ERROR_INVALID_ARGUMENT, "output o.strides[1] = 0"}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    dua_tensor tq = q, tk = q, tv = q, to = o, tl = lse,
               tb = dua_tensor_contiguous(bl, 0, DUA_F32, 2, 5, 1, 1);
    const dua_tensor *pv = &tv;
    dua_attention_params params;
    dua_attention_params_init(&params);
    switch (c) {
    case 0:
      tq.shape[0] = 2;
      break;
    case 1:
      tk.shape[2] = 63;
      break;
    case 2:
      tq = tk = tv = to = dua_tensor_contiguous(bq, 0, DUA_F32, 1, 2, 64, 80);
      break;
    case 3:
      to.dtype = DUA_F16;
      break;
    case 4:
      tl.dtype = DUA_F16;
      break;
    case 5:
      pv = NULL;
      break;
    case 6:
      params.scale = -1.0f;
      break;
    case 7:
      params.algo = (dua_attention_algo)9;
      break;
    case 8:
      params.level_bias = &tb;
      break;
    case 9: /* shape (1,2,64,64) with every element 2 floats apart: fits bq's 2n floats */
      tq.strides[0] = 16384;
      tq.strides[1] = 8192;
      tq.strides[2] = 128;
      tq.strides[3] = 2;
      tk = tv = tq;
      break;
    case 10:
      tq.strides[1] = INT64_MAX / 4;
      break;
    case 11:
      to = dua_tensor_contiguous(bq, 4096 * 4, DUA_F32, 1, 2, 64, 64); /* second half of q's rows */
      break;
    case 12:
      to.strides[1] = 0;
      break;
    }
    dua_status st = dua_attention_forward(ctx, l, &params, &tq, &tk, pv, &to, &tl);
    ck_assert_msg(st == cases[c].want, "%s: got %s", cases[c].name, dua_status_string(st));
    ck_assert_msg(strstr(dua_context_last_error(ctx), cases[c].msg) != NULL,
                  "%s: message \"%s\" lacks \"%s\"", cases[c].name, dua_context_last_error(ctx),
                  cases[c].msg);
  }
  ck_assert_int_eq(dua_attention_forward(ctx, NULL, NULL, &q, &q, &q, &o, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_attention_forward(NULL, l, NULL, &q, &q, &q, &o, NULL), DUA_ERROR_INVALID_ARGUMENT);
  unsigned char *back = malloc(n * 4);
  ck_assert_int_eq(dua_buffer_read(bo, 0, n * 4, back), DUA_SUCCESS);
  for (size_t i = 0; i < n * 4; i++)
    ck_assert_msg(back[i] == 0x5A, "output byte %zu was written by a refused call", i);
  ck_assert_int_eq(dua_buffer_read(bl, 0, 2 * 64 * 4, back), DUA_SUCCESS);
  for (size_t i = 0; i < 2 * 64 * 4; i++)
    ck_assert_msg(back[i] == 0x5A, "lse byte %zu was written by a refused call", i);
  free(back);
  free(x);
  dua_buffer_destroy(bq);
  dua_buffer_destroy(bo);
  dua_buffer_destroy(bl);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

/* Steady state: a repeated call builds nothing and uploads nothing (the program and layout are cached). */
START_TEST(repeated_calls_reuse_programs) {
  dua_context *ctx = test_context();
  test_rng rng = test_rng_make(108);
  problem p = base_problem(128, 64, 32);
  dua_layout *l = make_layout(&p);
  run r;
  memset(&r, 0, sizeof r);
  run_problem(ctx, &p, l, &r, &rng);
  dua_cache_stats s0, s1;
  dua_context_cache_stats(ctx, &s0);
  test_fwd_run_free(&r);
  run_problem(ctx, &p, l, &r, &rng);
  compare(&p, &r);
  dua_context_cache_stats(ctx, &s1);
  ck_assert_uint_eq(s1.builds, s0.builds);
  ck_assert_uint_eq(s1.disk_hits, s0.disk_hits);
  ck_assert_uint_gt(s1.memory_hits, s0.memory_hits);
  test_fwd_run_free(&r);
  dua_layout_destroy(l);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("forward");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, full_layout_is_dense_attention);
  tcase_add_test(tc, block_diagonal_with_tail);
  tcase_add_loop_test(tc, random_layouts, 0, 4);
  tcase_add_test(tc, rule_and_list_enumeration_agree);
  tcase_add_loop_test(tc, caller_lists_with_empty_rows, 0, 2);
  tcase_add_loop_test(tc, causality_bit_for_bit, 0, 2);
  tcase_add_test(tc, invalid_arguments_leave_outputs_untouched);
  tcase_add_test(tc, repeated_calls_reuse_programs);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
