/* test_forward_mma.c: the NVIDIA tensor-core forward (cl/attn_fwd_mma.cl) against the double-precision CPU
 * reference, on whatever device the cl suite runs on. On NVIDIA (ctx info nv_mma_f16) every fp16 case with
 * head dim 64/128, block >= 64 and aligned rows must take the mma kernel (a DEBUG log line proves it), and
 * every other case (fp32, head dims 32/96, blocks 16/32, misaligned views) must fall back to the portable
 * kernel. Elsewhere the same cases run on the portable kernel, and with DUA_TEST_MMA_EMULATE=1 the mma kernel
 * itself runs with its warp instructions emulated in plain OpenCL (DUA_MMA_EMULATE), so PoCL checks its
 * indexing and layout logic. Each test also runs with DUA_NO_MMA=1 set before the context exists.
 *
 * fp32 storage with allow_tf32 (the tf32 kernel, DUA_TF32): on NVIDIA (nv_mma_tf32) or emulated, the same
 * layouts must take the tensor cores and match a reference computed on Q, K, V rounded to tf32 the way the
 * kernel rounds them (Q to nearest, ties away; K and V truncated); fp32 without allow_tf32 never does. */
#include "dua_cl.h" /* the mask test's own kernel launch */
#include "test_util.h"

#include "attention/forward_internal.h" /* the m-tiles a call plans (dua_forward_mma_plan) */
#include "attention/split_tail.h"       /* the causal split plan (dua_split_causal_plan) */
#include "runtime/context_internal.h"   /* to force the emulated mma kernel on non-NVIDIA devices */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp16 storage: inputs exactly representable, output rounded to half once (relative 2^-11 = 4.9e-4). The mma
 * path also rounds P (in [0, 1]) to f16 before P V: each weight is off by at most 2^-12 relative, so O moves
 * by at most 2^-12 max|v| = 2.4e-4 for |v| <= 1 (random signs make it far smaller), inside the same stated
 * bound |x - ref| <= 1e-3 + 2e-3 |ref| as the portable kernel. fp32: 1e-4 + 1e-3 |ref|. */
#define F32_ATOL 1e-4
#define F32_RTOL 1e-3
#define F16_ATOL 1e-3
#define F16_RTOL 2e-3
/* tf32: against the reference on tf32-rounded Q, K, V the scores are exact up to fp32 summation, and the only
 * rounding left is P's (to a 10-bit mantissa, relative 2^-11, as f16 for P in [2^-14, 1]): the fp16 bound. */
#define TF32_ATOL F16_ATOL
#define TF32_RTOL F16_RTOL

typedef struct problem {
  dua_layout_desc desc;
  int32_t depths[16], arities[16];
  uint8_t *paths;
  int head_dim;
  dua_dtype dtype;
  int bnhd;      /* (B,N,H,D) storage */
  int with_bias; /* random level bias */
  int misalign;  /* view q, k, v, o at a 1-element offset: rows not 16-byte aligned */
  dua_attention_algo algo;
  int tf32; /* fp32 storage with params.allow_tf32 = 1 */
} problem;

typedef test_fwd_run run;

/* ---- context with a counter of tensor-core launches */
typedef struct mma_ctx {
  dua_context *ctx;
  int mma_launches;
  int wgmma_launches; /* of which the wgmma variant (DUA_WGMMA=1 in the logged options) */
  int mt2_launches;   /* of which with MT 2 */
  int split_launches; /* of which with a split tail (DUA_SPLIT_TAIL) */
  int tma_launches;   /* of which the TMA variant (DUA_TMA=1) */
  int split_warnings; /* warnings about DUA_SPLIT_TAIL's value */
  int mt_expected;    /* 1 or 2: the MT the next launches must have (the short-launch rule); 0: the plan's */
  int mma_possible;   /* the mma kernel can run here (NVIDIA probe, or forced emulation), fast paths on */
  int tf32_possible;  /* ... and its tf32 variant */
  int emulated;
  int tma_possible; /* a real Hopper GPU: the wgmma forward at head dim 64 runs on TMA from its third call on
                     */
} mma_ctx;

static void count_log(dua_log_level level, const char *msg, void *user) {
  ((mma_ctx *)user)->split_warnings += level == DUA_LOG_WARNING && strstr(msg, "DUA_SPLIT_TAIL") != NULL;
  if (strstr(msg, "dua_attn_fwd_mma")) {
    ((mma_ctx *)user)->mma_launches++;
    ((mma_ctx *)user)->wgmma_launches += strstr(msg, "DUA_WGMMA=1") != NULL;
    ((mma_ctx *)user)->mt2_launches += strstr(msg, "-DMT=2 ") != NULL;
    ((mma_ctx *)user)->split_launches += strstr(msg, "split tail:") != NULL;
    ((mma_ctx *)user)->tma_launches += strstr(msg, "DUA_TMA=1") != NULL;
  }
}

/* no_mma: set DUA_NO_MMA=1 before the context exists (the kill switch). */
static void mma_context(mma_ctx *m, int no_mma) {
  memset(m, 0, sizeof *m);
  if (no_mma)
    setenv("DUA_NO_MMA", "1", 1);
  else
    unsetenv("DUA_NO_MMA");
  dua_context_options opt;
  dua_context_options_init(&opt);
  opt.log = count_log;
  opt.log_user = m;
  opt.log_level = DUA_LOG_DEBUG;
  dua_status st = dua_context_create(&opt, &m->ctx);
  ck_assert_msg(st == DUA_SUCCESS, "no OpenCL device for the cl suite: %s", dua_status_string(st));
  const char *emu = getenv("DUA_TEST_MMA_EMULATE");
  if (!m->ctx->info.nv_mma_f16 && emu && *emu && strcmp(emu, "0") != 0) {
    m->ctx->info.nv_mma_f16 = 1; /* forward_nv_mma.c builds the emulated kernel on non-NVIDIA devices */
    m->ctx->info.nv_mma_tf32 = 1;
    m->emulated = 1;
    const char *wg =
        getenv("DUA_TEST_WGMMA_EMULATE"); /* ... and its wgmma variant (fp16, head dims 64, 128) */
    m->ctx->info.nv_wgmma = wg && *wg && strcmp(wg, "0") != 0;
  }
  m->mma_possible = m->ctx->info.nv_mma_f16 && !m->ctx->fast_paths_disabled;
  m->tf32_possible = m->ctx->info.nv_mma_tf32 && !m->ctx->fast_paths_disabled;
  /* TMA: on a Hopper GPU; emulated (its copies in plain OpenCL) with DUA_TEST_TMA_EMULATE=1 */
  const char *no_tma = getenv("DUA_NO_TMA"), *tma_emu = getenv("DUA_TEST_TMA_EMULATE");
  m->ctx->tma_emulated = m->emulated && tma_emu && !strcmp(tma_emu, "1");
  m->tma_possible =
      m->ctx->info.nv_wgmma && (!m->emulated || m->ctx->tma_emulated) && !(no_tma && !strcmp(no_tma, "1"));
  if (no_mma)
    ck_assert_msg(!m->mma_possible && !m->tf32_possible,
                  "DUA_NO_MMA=1 did not turn the tensor-core path off");
  fprintf(stderr, "device %s: nv_mma_f16 %d, nv_wgmma %d%s, DUA_NO_MMA %d\n", m->ctx->info.name,
          m->ctx->info.nv_mma_f16, m->ctx->info.nv_wgmma, m->emulated ? " (emulated)" : "", no_mma);
}

/* Does this problem take the tensor-core kernel (forward_nv_mma.c's rules)? */
static int expect_mma(const mma_ctx *m, const problem *p) {
  const int path = p->dtype == DUA_F16 ? m->mma_possible : p->tf32 && m->tf32_possible;
  return path && (p->head_dim == 64 || p->head_dim == 128) && p->desc.block >= 64 && !p->misalign;
}

/* x rounded to tf32 as the kernel rounds it: to nearest, ties away from zero (Q), or truncated (K, V: the
 * tensor core reads the upper 19 bits); finite x. */
static float round_tf32(float x, int nearest) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u)
    u = (u + (nearest ? 0x1000u : 0u)) & ~0x1fffu;
  memcpy(&x, &u, 4);
  return x;
}

static dua_tensor dev_view(dua_buffer *buf, size_t offset, dua_dtype dt, int64_t b, int64_t h, int64_t n,
                           int64_t d, int bnhd) {
  dua_tensor t = test_dev_view(buf, dt, b, h, n, d, bnhd);
  t.offset = offset;
  return t;
}

/* Buffer of n elements after `pad` leading elements (the misaligned views). */
static dua_buffer *upload(dua_context *ctx, const float *x, size_t n, dua_dtype dt, size_t pad) {
  dua_buffer *buf = NULL;
  const size_t es = dua_dtype_size(dt);
  ck_assert_int_eq(dua_buffer_create(ctx, (n + pad) * es, &buf), DUA_SUCCESS);
  if (dt == DUA_F16) {
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
      h[i] = dua_float_to_half(x[i]);
    ck_assert_int_eq(dua_buffer_write(buf, pad * 2, n * 2, h), DUA_SUCCESS);
    free(h);
  } else {
    ck_assert_int_eq(dua_buffer_write(buf, pad * 4, n * 4, x), DUA_SUCCESS);
  }
  return buf;
}

static void download(dua_buffer *buf, float *x, size_t n, dua_dtype dt, size_t pad) {
  if (dt == DUA_F16) {
    uint16_t *h = malloc(n * 2);
    ck_assert_int_eq(dua_buffer_read(buf, pad * 2, n * 2, h), DUA_SUCCESS);
    for (size_t i = 0; i < n; i++)
      x[i] = dua_half_to_float(h[i]);
    free(h);
  } else {
    ck_assert_int_eq(dua_buffer_read(buf, pad * 4, n * 4, x), DUA_SUCCESS);
  }
}

static dua_layout *make_layout(problem *p) {
  dua_layout *l = NULL;
  char err[256] = "";
  dua_status st = dua_layout_create(&p->desc, &l, err, sizeof err);
  ck_assert_msg(st == DUA_SUCCESS, "layout rejected: %s", err);
  return l;
}

static void describe(const problem *p, char *buf, size_t size) {
  const dua_layout_desc *d = &p->desc;
  snprintf(
      buf, size,
      "N=%d blk=%d B=%d H=%d Hkv=%d p=%d depth0=%d shift=%d W=%d S=%d causal=%d content=%d Dh=%d %s%s%s%s "
      "algo=%d",
      d->seq_len, d->block, d->batch, d->heads, d->kv_heads, d->arity, d->depths ? d->depths[0] : 0, d->shift,
      d->window, d->sink, d->causal, d->paths != NULL, p->head_dim, p->dtype == DUA_F16 ? "fp16" : "fp32",
      p->bnhd ? " BNHD" : "", p->with_bias ? " bias" : "", p->misalign ? " misaligned" : "", (int)p->algo);
}

/* Runs the device forward (outputs poisoned with NaN first) and the reference on fresh random inputs, and
 * checks which kernel ran. */
static void run_problem(mma_ctx *m, problem *p, dua_layout *l, run *r, test_rng *rng) {
  dua_context *ctx = m->ctx;
  const dua_layout_desc *d = &p->desc;
  const int64_t B = d->batch, H = d->heads, HK = d->kv_heads ? d->kv_heads : d->heads, N = d->seq_len,
                D = p->head_dim;
  const size_t pad = p->misalign ? 1 : 0, es = dua_dtype_size(p->dtype);
  r->nq = (size_t)(B * H * N * D);
  r->nk = (size_t)(B * HK * N * D);
  r->nl = (size_t)(B * H * N);
  r->q = malloc(r->nq * 4);
  r->k = malloc(r->nk * 4);
  r->v = malloc(r->nk * 4);
  test_fill(r->q, r->nq, rng, p->dtype);
  test_fill(r->k, r->nk, rng, p->dtype);
  test_fill(r->v, r->nk, rng, p->dtype);
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
  dua_buffer *bq = upload(ctx, r->q, r->nq, p->dtype, pad), *bk = upload(ctx, r->k, r->nk, p->dtype, pad);
  dua_buffer *bv = upload(ctx, r->v, r->nk, p->dtype, pad), *bo = NULL, *bl = NULL, *bb = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, (r->nq + pad) * es, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, r->nl * 4, &bl), DUA_SUCCESS);
  /* poison: all-ones bytes are NaN in fp32 and fp16 */
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, (r->nq + pad) * es, 0xFF), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, r->nl * 4, 0xFF), DUA_SUCCESS);
  dua_tensor tq = dev_view(bq, pad * es, p->dtype, B, H, N, D, p->bnhd);
  dua_tensor tk = dev_view(bk, pad * es, p->dtype, B, HK, N, D, p->bnhd);
  dua_tensor tv = dev_view(bv, pad * es, p->dtype, B, HK, N, D, p->bnhd);
  dua_tensor to = dev_view(bo, pad * es, p->dtype, B, H, N, D, p->bnhd);
  dua_tensor tl = dua_tensor_contiguous(bl, 0, DUA_F32, B, H, N, 1), tb;
  dua_attention_params params;
  dua_attention_params_init(&params);
  params.algo = p->algo;
  params.allow_tf32 = p->tf32;
  if (p->with_bias) {
    bb = upload(ctx, r->bias, r->nbias, DUA_F32, 0);
    tb = dua_tensor_contiguous(bb, 0, DUA_F32, H, dmax + 1, 1, 1);
    params.level_bias = &tb;
  }
  char what[256];
  describe(p, what, sizeof what);
  dua_status st;
  if (m->tma_possible) { /* two calls first: the TMA forward's maps are noted, then built (tma_maps.c); the
                          * launch counters count the checked call only */
    const mma_ctx counts = *m;
    for (int i = 0; i < 2; i++) {
      const int tma0 = m->tma_launches;
      st = dua_attention_forward(ctx, l, &params, &tq, &tk, &tv, &to, &tl);
      ck_assert_msg(st == DUA_SUCCESS, "%s: warm-up call %d failed: %s", what, i,
                    dua_context_last_error(ctx));
      ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
      /* new buffers have no maps yet (a kept pair's buffers are retained, so no new buffer has their handle;
       * the second call may find the first noted already, where a noted pair's handle came back) */
      ck_assert_msg(i > 0 || m->tma_launches == tma0, "%s: the first call on new buffers ran the TMA variant",
                    what);
    }
    ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, (r->nq + pad) * es, 0xFF), DUA_SUCCESS);
    ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, r->nl * 4, 0xFF), DUA_SUCCESS);
    const int warnings = m->split_warnings; /* said once per context: maybe by a warm-up call */
    *m = counts;                            /* the context and flags are the same */
    m->split_warnings = warnings;
  }
  const int launches0 = m->mma_launches, wg_launches0 = m->wgmma_launches, mt2_launches0 = m->mt2_launches,
            tma_launches0 = m->tma_launches;
  st = dua_attention_forward(ctx, l, &params, &tq, &tk, &tv, &to, &tl);
  ck_assert_msg(st == DUA_SUCCESS, "%s: forward failed: %s: %s", what, dua_status_string(st),
                dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  const int want = expect_mma(m, p), got = m->mma_launches - launches0;
  ck_assert_msg(got == want, "%s: tensor-core kernel launched %d times, expected %d", what, got, want);
  dua_tuning_source src;
  const int plan = want ? dua_forward_mma_plan(ctx, l, p->head_dim, p->dtype == DUA_F16, &src, NULL, 0) : 0;
  const int mt = m->mt_expected ? m->mt_expected : plan;
  /* wgmma: fp16, head dim 64, or 128 on one m-tile */
  const int want_wg = want && p->dtype == DUA_F16 && (p->head_dim == 64 || mt == 1) && m->ctx->info.nv_wgmma,
            got_wg = m->wgmma_launches - wg_launches0;
  ck_assert_msg(got_wg == want_wg, "%s: wgmma variant launched %d times, expected %d", what, got_wg, want_wg);
  /* TMA: not for two m-tiles whose work-groups visit one key block each (forward_nv_mma.c, use_tma) */
  dua_tail_lengths lengths = {-1, -1};
  cl_mem order;
  cl_int tail_start;
  if (want_wg && m->tma_possible)
    ck_assert_int_eq(dua_layout_tail_order(ctx, l, 0, &order, &tail_start, &lengths), DUA_SUCCESS);
  const int short_mt2 = mt == 2 && lengths.longest >= 0 && lengths.longest <= 1;
  const int want_tma = want_wg && p->head_dim == 64 && m->tma_possible && !short_mt2,
            got_tma = m->tma_launches - tma_launches0;
  ck_assert_msg(got_tma == want_tma, "%s: TMA variant launched %d times, expected %d", what, got_tma,
                want_tma);
  if (want) { /* the m-tiles: the plan ran; the plan is DUA_MMA_MT or the compiled rule (no database) */
    ck_assert_msg(m->mt2_launches - mt2_launches0 == (mt == 2), "%s: MT 2 launched %d times, expected MT %d",
                  what, m->mt2_launches - mt2_launches0, mt);
    const char *mt_env = getenv("DUA_MMA_MT");
    const int rule = mt_env && (!strcmp(mt_env, "1") || !strcmp(mt_env, "2")) ? mt_env[0] - '0'
                     : p->head_dim == 64 && !dua_layout_causal_short(l)       ? 2
                                                                              : 1;
    if (src == DUA_TUNING_DEVELOPER_ENV || src == DUA_TUNING_BUILTIN || src == DUA_TUNING_GENERIC)
      ck_assert_msg(plan == (p->desc.block >= 128 ? rule : 1), "%s: plan MT %d, rule %d", what, plan, rule);
  }
  download(bo, r->o, r->nq, p->dtype, pad);
  download(bl, r->lse, r->nl, DUA_F32, 0);
  if (p->tf32 && want) { /* the reference sees the operands the tensor cores saw */
    for (size_t i = 0; i < r->nq; i++)
      r->q[i] = round_tf32(r->q[i], 1);
    for (size_t i = 0; i < r->nk; i++) {
      r->k[i] = round_tf32(r->k[i], 0);
      r->v[i] = round_tf32(r->v[i], 0);
    }
  }
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

static void compare(const problem *p, const run *r) {
  char what[256];
  describe(p, what, sizeof what);
  double atol = p->dtype == DUA_F16 ? F16_ATOL
                : p->tf32           ? TF32_ATOL
                                    : F32_ATOL,
         rtol = p->dtype == DUA_F16 ? F16_RTOL
                : p->tf32           ? TF32_RTOL
                                    : F32_RTOL;
  test_fwd_run_check(r, atol, rtol, what);
}

static void check_problem(mma_ctx *m, problem *p, test_rng *rng) {
  dua_layout *l = make_layout(p);
  run r;
  memset(&r, 0, sizeof r);
  run_problem(m, p, l, &r, rng);
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
  p.dtype = DUA_F16;
  return p;
}

static void set_depths(problem *p, int32_t d0, int32_t d1) {
  for (int h = 0; h < p->desc.heads; h++)
    p->depths[h] = h % 2 ? d1 : d0;
  p->desc.depths = p->depths;
}

/* Whether name is one of the comma-separated names in list */
static int test_name_listed(const char *name, const char *list) {
  const size_t len = strlen(name);
  for (const char *p = list; *p;) {
    const size_t n = strcspn(p, ",");
    if (n == len && !strncmp(p, name, n))
      return 1;
    p += n + (p[n] == ',');
  }
  return 0;
}

/* _i: 0 = default context (the mma kernel where available), 1 = DUA_NO_MMA=1 */

START_TEST(dense_and_block_sizes) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(201);
  static const int blocks[5] = {16, 32, 64, 128, 256};
  for (int bi = 0; bi < 5; bi++)
    for (int causal = 0; causal <= 1; causal++) {
      problem p = base_problem(bi < 2 ? 128 : 320, blocks[bi], 64);
      p.desc.causal = causal;
      check_problem(&m, &p, &rng); /* depths NULL: all 0 = dense */
    }
  dua_context_destroy(m.ctx);
}
END_TEST

START_TEST(block_diagonal_depth_and_tails) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(202);
  static const int ns[5] = {300, 37, 64, 130, 1000};
  static const int blks[5] = {64, 64, 128, 256, 128};
  for (int c = 0; c < 5; c++) { /* block-diagonal; N < 64, N not a multiple of 64, N < block */
    problem p = base_problem(ns[c], blks[c], 64);
    set_depths(&p, -1, -1);
    check_problem(&m, &p, &rng);
  }
  for (int depth = 1; depth <= 3; depth++) { /* N = 2048, block 128: nb = 16, D = 4 */
    problem p = base_problem(2048, 128, 64);
    set_depths(&p, depth, depth == 3 ? 2 : 3);
    p.desc.causal = depth == 2;
    check_problem(&m, &p, &rng);
  }
  dua_context_destroy(m.ctx);
}
END_TEST

START_TEST(causal_window_sink_shift) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(203);
  for (int c = 0; c < 4; c++) {
    problem p = base_problem(333 + 100 * c, c % 2 ? 128 : 64, c < 2 ? 64 : 128);
    p.desc.heads = 3;
    p.depths[0] = 1;
    p.depths[1] = 2;
    p.depths[2] = -1;
    p.desc.depths = p.depths;
    p.desc.window = c == 3 ? 150 : 20;
    p.desc.sink = c == 2 ? 70 : 5;
    p.desc.causal = c != 1;
    p.desc.shift = c;
    p.algo = c == 3 ? DUA_ALGO_LIST : DUA_ALGO_AUTO; /* device lists */
    check_problem(&m, &p, &rng);
  }
  dua_context_destroy(m.ctx);
}
END_TEST

static void random_paths(problem *p, test_rng *rng) {
  const dua_layout_desc *d = &p->desc;
  int nb = (d->seq_len + d->block - 1) / d->block, dmax = 0;
  for (int h = 0; h < d->heads; h++) {
    int ar = d->arities ? p->arities[h] : d->arity, D = 0;
    for (long span = 1; span < nb; span *= ar)
      D++;
    dmax = D > dmax ? D : dmax;
  }
  size_t np = (size_t)d->batch * d->heads * nb * dmax;
  p->paths = malloc(np ? np : 1);
  for (int b = 0; b < d->batch; b++)
    for (int h = 0; h < d->heads; h++)
      for (int blk = 0; blk < nb; blk++)
        for (int lv = 0; lv < dmax; lv++)
          p->paths[(((size_t)b * d->heads + h) * nb + blk) * dmax + lv] =
              (uint8_t)test_rng_int(rng, 0, (d->arities ? p->arities[h] : d->arity) - 1);
  p->desc.paths = p->paths;
}

START_TEST(content_paths_bias_gqa_bnhd) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(204);
  for (int c = 0; c < 6; c++) {
    problem p = base_problem(c == 5 ? 700 : 512, c == 4 ? 128 : 64, c % 3 == 2 ? 128 : 64);
    p.desc.batch = 2;
    p.desc.heads = 4;
    p.desc.kv_heads = c % 3 == 0 ? 0 : c % 3 == 1 ? 2 : 1; /* GQA */
    p.desc.causal = c % 2;
    p.desc.window = c == 1 ? 33 : 0;
    p.desc.sink = c == 3 ? 9 : 0;
    p.depths[0] = -1;
    p.depths[1] = 1;
    p.depths[2] = 2;
    p.depths[3] = 0;
    p.desc.depths = p.depths;
    if (c < 4)
      random_paths(&p, &rng); /* content tree (bucket enumeration) */
    p.with_bias = c != 2;
    p.bnhd = c >= 2;
    p.algo = c == 1 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    check_problem(&m, &p, &rng);
    free(p.paths);
  }
  dua_context_destroy(m.ctx);
}
END_TEST

/* Random layouts, all fp16, head dims and blocks cycling through the covered and the fallback ones. */
START_TEST(random_layouts) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(205);
  static const int dims[4] = {64, 128, 64, 32};
  static const int blocks[4] = {64, 128, 256, 32};
  for (int c = 0; c < 8; c++) {
    problem p = base_problem(test_rng_int(&rng, 1, 600), blocks[test_rng_int(&rng, 0, 3)], dims[c % 4]);
    dua_layout_desc *d = &p.desc;
    d->batch = test_rng_int(&rng, 1, 2);
    d->heads = 4;
    d->kv_heads = test_rng_int(&rng, 0, 1) ? 2 : 0;
    d->arity = test_rng_int(&rng, 2, 3);
    d->causal = test_rng_int(&rng, 0, 1);
    d->window = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 150) : 0;
    d->sink = test_rng_int(&rng, 0, 2) == 0 ? test_rng_int(&rng, 1, 80) : 0;
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
    if (test_rng_int(&rng, 0, 2) == 0 && dmax > 0)
      random_paths(&p, &rng);
    else if (test_rng_int(&rng, 0, 1) && dmax > 0)
      d->shift = test_rng_int(&rng, 0, nb);
    p.bnhd = test_rng_int(&rng, 0, 1);
    p.with_bias = test_rng_int(&rng, 0, 2) == 0;
    p.algo = test_rng_int(&rng, 0, 2) == 0 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    check_problem(&m, &p, &rng);
    free(p.paths);
  }
  dua_context_destroy(m.ctx);
}
END_TEST

/* Fallbacks: fp32 storage, head dims 32/96, misaligned rows: the portable kernel runs, results still right.
 */
START_TEST(fallbacks) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(206);
  problem p = base_problem(200, 64, 64);
  set_depths(&p, 1, -1);
  p.dtype = DUA_F32;
  check_problem(&m, &p, &rng);
  p.dtype = DUA_F16;
  p.head_dim = 96;
  check_problem(&m, &p, &rng);
  p.head_dim = 64;
  p.misalign = 1;
  check_problem(&m, &p, &rng);
  p.misalign = 0;
  check_problem(&m, &p, &rng); /* and the aligned twin takes the fast path */
  dua_context_destroy(m.ctx);
}
END_TEST

/* fp32 storage through tf32: dense and block sizes, block-diagonal tails (N < 64, N < block), depths, causal,
 * window, sink, shift, content paths, level bias, GQA, (B,N,H,D), device lists, head dims 64 and 128 (a
 * 32-key tile); then the fallbacks: misaligned rows, head dim 96, and allow_tf32 = 0 (exact fp32). */
START_TEST(tf32_storage) {
  mma_ctx m;
  mma_context(&m, _i);
  test_rng rng = test_rng_make(209);
  static const int ns[7] = {320, 37, 300, 1000, 512, 700, 260};
  static const int blks[7] = {64, 64, 128, 256, 64, 128, 64};
  for (int c = 0; c < 7; c++) {
    problem p = base_problem(ns[c], blks[c], c % 2 ? 128 : 64);
    p.dtype = DUA_F32;
    p.tf32 = 1;
    p.desc.heads = 4;
    p.desc.kv_heads = c == 4 || c == 5 ? 2 : 0;
    p.depths[0] = c == 0 ? 0 : -1;
    p.depths[1] = c == 0 ? 0 : c == 1 ? -1 : 1; /* c = 1: one block */
    p.depths[2] = c == 0 ? 0 : c == 1 ? -1 : 2;
    p.depths[3] = 0;
    p.desc.depths = p.depths;
    p.desc.causal = c % 3 != 1;
    p.desc.window = c == 5 ? 33 : 0;
    p.desc.sink = c == 6 ? 9 : 0;
    p.desc.shift = c == 3 ? 1 : 0;
    if (c == 4)
      random_paths(&p, &rng);
    p.with_bias = c >= 4;
    p.bnhd = c == 2 || c == 5;
    p.algo = c == 6 ? DUA_ALGO_LIST : DUA_ALGO_AUTO;
    check_problem(&m, &p, &rng);
    free(p.paths);
  }
  { /* non-causal, block 128, head dim 64: two m-tiles per warp by the compiled rule, O staged in k_s and v_s
     */
    problem p = base_problem(300, 128, 64);
    set_depths(&p, 1, 0);
    p.dtype = DUA_F32;
    p.tf32 = 1;
    check_problem(&m, &p, &rng);
  }
  problem p = base_problem(200, 64, 64);
  set_depths(&p, 1, -1);
  p.dtype = DUA_F32;
  p.tf32 = 1;
  p.misalign = 1;
  check_problem(&m, &p, &rng);
  p.misalign = 0;
  p.head_dim = 96;
  check_problem(&m, &p, &rng);
  p.head_dim = 64;
  p.tf32 = 0; /* exact fp32: portable */
  check_problem(&m, &p, &rng);
  dua_context_destroy(m.ctx);
}
END_TEST

/* Problem p on caller lists (counts[rows], indices[rows][nb]) against the reference; query block `empty` of
 * (batch 0, head 0), which visits nothing, must give O = 0 and LSE = -inf. */
static void check_lists_with_empty_block(mma_ctx *m, problem *p, const int32_t *counts,
                                         const int32_t *indices, int empty, test_rng *rng) {
  dua_layout *l = NULL;
  char err[256];
  ck_assert_msg(dua_layout_create_from_lists(&p->desc, counts, indices, &l, err, sizeof err) == DUA_SUCCESS,
                "%s", err);
  run r;
  memset(&r, 0, sizeof r);
  run_problem(m, p, l, &r, rng);
  compare(p, &r);
  const int blk = p->desc.block, dh = p->head_dim;
  for (int i = empty * blk; i < (empty + 1) * blk && i < p->desc.seq_len; i++) {
    ck_assert(isinf(r.lse[i]) && r.lse[i] < 0);
    for (int c = 0; c < dh; c++)
      ck_assert_msg(r.o[(size_t)i * dh + c] == 0.0f, "empty row %d not zero", i);
  }
  test_fwd_run_free(&r);
  dua_layout_destroy(l);
}

/* Caller lists (DUA_TREE 2) with an empty query block: zeros and LSE -inf, never NaN. */
START_TEST(caller_lists_with_empty_rows) {
  mma_ctx m;
  mma_context(&m, _i & 1);
  test_rng rng = test_rng_make(207);
  /* causal runs use block 128: two m-tiles (MT 2) share a work-group, and the empty
   * block is the 36-row tail */
  const int blk = _i & 4 ? 128 : 64, n_tokens = 420, nb = (n_tokens + blk - 1) / blk, rows = 2 * nb;
  const int dh = _i & 2 ? 128 : 64;
  problem p = base_problem(n_tokens, blk, dh);
  p.desc.causal = (_i >> 2) & 1;
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
  check_lists_with_empty_block(&m, &p, counts, indices, 3, &rng);
  dua_context_destroy(m.ctx);
}
END_TEST

/* A token-tree bias (paper mode) on an fp16 problem the tensor cores would take: the mma kernel declines (no
 * launch logged), the portable kernel runs, and O matches the reference with the bias. */
START_TEST(token_bias_declines_to_portable) {
  mma_ctx m;
  mma_context(&m, 0);
  test_rng rng = test_rng_make(208);
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = 200, desc.block = 64, desc.batch = 1, desc.heads = 2, desc.arity = 2, desc.causal = 1;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
  const int N = 200, H = 2, D = 64, levels = dua_token_tree_depth(N) + 1;
  const size_t n = (size_t)H * N * D, nr = (size_t)H * N;
  float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4), *ref = malloc(n * 4);
  float *r = malloc(nr * 4), tab[16];
  test_fill(q, n, &rng, DUA_F16);
  test_fill(k, n, &rng, DUA_F16);
  test_fill(v, n, &rng, DUA_F16);
  test_fill(r, nr, &rng, DUA_F32);
  test_fill(tab, (size_t)levels, &rng, DUA_F32);
  for (size_t i = 0; i < nr; i++)
    r[i] *= 3.0f;
  dua_buffer *bq = test_upload(m.ctx, q, n, DUA_F16), *bk = test_upload(m.ctx, k, n, DUA_F16);
  dua_buffer *bv = test_upload(m.ctx, v, n, DUA_F16), *bo = NULL;
  dua_buffer *br = test_upload(m.ctx, r, nr, DUA_F32), *bt = test_upload(m.ctx, tab, (size_t)levels, DUA_F32);
  ck_assert_int_eq(dua_buffer_create(m.ctx, n * 2, &bo), DUA_SUCCESS);
  dua_tensor tq = dua_tensor_contiguous(bq, 0, DUA_F16, 1, H, N, D),
             tk = dua_tensor_contiguous(bk, 0, DUA_F16, 1, H, N, D);
  dua_tensor tv = dua_tensor_contiguous(bv, 0, DUA_F16, 1, H, N, D),
             to = dua_tensor_contiguous(bo, 0, DUA_F16, 1, H, N, D);
  dua_tensor tr = dua_tensor_contiguous(br, 0, DUA_F32, 1, H, N, 1),
             tt = dua_tensor_contiguous(bt, 0, DUA_F32, 1, levels, 1, 1);
  dua_attention_params params;
  dua_attention_params_init(&params);
  params.token_scale = &tr, params.token_table = &tt;
  const int before = m.mma_launches;
  ck_assert_msg(dua_attention_forward(m.ctx, l, &params, &tq, &tk, &tv, &to, NULL) == DUA_SUCCESS, "%s",
                dua_context_last_error(m.ctx));
  ck_assert_int_eq(dua_context_finish(m.ctx), DUA_SUCCESS);
  ck_assert_int_eq(m.mma_launches, before);
  test_download(bo, o, n, DUA_F16);
  dua_host_token_bias tb = {r, tab, 1, levels};
  dua_host_tensor hq = test_host_view(q, 1, H, N, D, 0), hk = test_host_view(k, 1, H, N, D, 0);
  dua_host_tensor hv = test_host_view(v, 1, H, N, D, 0), ho = test_host_view(ref, 1, H, N, D, 0);
  ck_assert_int_eq(dua_attention_reference_ex(l, 0.0f, NULL, &tb, &hq, &hk, &hv, &ho, NULL), DUA_SUCCESS);
  double err;
  long bad = test_compare(o, ref, n, F16_ATOL, F16_RTOL, &err);
  ck_assert_msg(bad < 0, "o[%ld] = %g, reference %g", bad, (double)(bad >= 0 ? o[bad] : 0),
                (double)(bad >= 0 ? ref[bad] : 0));
  dua_buffer *all[] = {bq, bk, bv, bo, br, bt};
  for (int i = 0; i < 6; i++)
    dua_buffer_destroy(all[i]);
  free(q), free(k), free(v), free(o), free(ref), free(r);
  dua_layout_destroy(l);
  dua_context_destroy(m.ctx);
}
END_TEST

/* A split row tile's part 0 with no key block of its own (fewer blocks than parts) has already started the
 * copy of its first key tile (the head rule gives it before the part's range is cut): the work-group must
 * wait for it before it ends. Under TMA a copy still in flight would land in the next work-group's local
 * memory (on PoCL the emulated TMA's bookkeeping writes NaN instead). Depth 2 of 3: two blocks per row, three
 * parts. */
START_TEST(tma_empty_split_part) {
  setenv("DUA_SPLIT_TAIL", "1000000,3", 1);
  mma_ctx m;
  mma_context(&m, 0);
  test_rng rng = test_rng_make(215);
  problem p = base_problem(1024, 128, 64);
  set_depths(&p, 2, 2);
  const int before = m.split_launches;
  check_problem(&m, &p, &rng);
  ck_assert_int_eq(m.split_launches - before, expect_mma(&m, &p));
  unsetenv("DUA_SPLIT_TAIL");
  dua_context_destroy(m.ctx);
}
END_TEST

/* The split tail (DUA_SPLIT_TAIL forces it; host/attention/split_tail.c): the last work-groups (or all) cut
 * into parts by key blocks, merged by the last part of each row tile. Against the reference as every case:
 * dense and sparse, tails, causal with window and sink, one and two m-tiles, head dims 64 and 128, tf32, GQA,
 * more parts than a row tile has blocks (empty parts), row tiles past N, caller lists with an empty query
 * block (O = 0, LSE -inf), and the split launched where the tensor cores run. Run twice per case: the
 * counters must be left 0; and two runs on the same inputs give the same bits (the merge's order does not
 * depend on which part ends last). */
START_TEST(split_tail) {
  static const char *const forced[3] = {"1000000,2", "1000000,3", "3,5"};
  const char *quick = getenv("DUA_TEST_SPLIT_QUICK"); /* the cl suite's emulated run: all but the first */
  if (quick && *quick && strcmp(quick, "0") != 0 && _i == 0)
    return;
  setenv("DUA_SPLIT_TAIL", forced[_i], 1);
  mma_ctx m;
  mma_context(&m, 0);
  test_rng rng = test_rng_make(209 + (uint64_t)_i);
  for (int c = 0; c < 8; c++) { /* c 7: N 300, one m-tile of block 128: the last block's second is past N */
    problem p = base_problem(c == 7  ? 300
                             : c % 2 ? 1000
                                     : 333,
                             c < 4 || c == 7 ? 128 : 64, c == 3 || c == 7 ? 128 : 64);
    p.desc.heads = 4;
    p.desc.kv_heads = c == 2 ? 2 : 0;
    if (c == 1)
      set_depths(&p, 2, 1);
    if (c == 4) {
      p.desc.causal = 1, p.desc.window = 70, p.desc.sink = 5;
      set_depths(&p, 2, -1);
    }
    if (c == 5) {
      p.dtype = DUA_F32, p.tf32 = 1;
      set_depths(&p, 1, 2);
    }
    if (c == 6)
      p.desc.causal = 1;
    for (int twice = 0; twice < 2; twice++) {
      const int before = m.split_launches;
      check_problem(&m, &p, &rng);
      ck_assert_int_eq(m.split_launches - before, expect_mma(&m, &p));
    }
  }
  /* the same bits on every run, whichever part of a row tile finishes last (dense, N 1000, 8 heads) */
  {
    dua_layout_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.seq_len = 1000, desc.block = 128, desc.batch = 1, desc.heads = 8, desc.arity = 2;
    dua_layout *l = NULL;
    ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
    const size_t n = (size_t)8 * 1000 * 64, nr = (size_t)8 * 1000;
    float *x = malloc(n * 4), *o = malloc(n * 4 * 2), *lse = malloc(nr * 4 * 2);
    ck_assert(x && o && lse);
    test_fill(x, n, &rng, DUA_F16);
    dua_buffer *bx = test_upload(m.ctx, x, n, DUA_F16), *bo = NULL, *bl = NULL;
    ck_assert_int_eq(dua_buffer_create(m.ctx, n * 2, &bo), DUA_SUCCESS);
    ck_assert_int_eq(dua_buffer_create(m.ctx, nr * 4, &bl), DUA_SUCCESS);
    dua_tensor tx = dua_tensor_contiguous(bx, 0, DUA_F16, 1, 8, 1000, 64),
               to = dua_tensor_contiguous(bo, 0, DUA_F16, 1, 8, 1000, 64),
               tl = dua_tensor_contiguous(bl, 0, DUA_F32, 1, 8, 1000, 1);
    for (int run = 0; run < 2; run++) {
      ck_assert_msg(dua_attention_forward(m.ctx, l, NULL, &tx, &tx, &tx, &to, &tl) == DUA_SUCCESS, "%s",
                    dua_context_last_error(m.ctx));
      test_download(bo, o + run * n, n, DUA_F16);
      test_download(bl, lse + run * nr, nr, DUA_F32);
    }
    ck_assert_msg(memcmp(o, o + n, n * 4) == 0 && memcmp(lse, lse + nr, nr * 4) == 0, "two runs differ");
    dua_buffer_destroy(bx);
    dua_buffer_destroy(bo);
    dua_buffer_destroy(bl);
    free(x), free(o), free(lse);
    dua_layout_destroy(l);
  }
  /* caller lists, block 128 (two m-tiles where the rule says so), query block 2 of head 0 visits nothing */
  problem p = base_problem(420, 128, 64);
  int32_t counts[8] = {3, 4, 0, 2, 1, 4, 2, 3}, indices[8 * 4];
  for (int r = 0; r < 8; r++)
    for (int k = 0; k < 4; k++)
      indices[r * 4 + k] = (r + k) % 4;
  check_lists_with_empty_block(&m, &p, counts, indices, 2, &rng);
  dua_context_destroy(m.ctx);
  unsetenv("DUA_SPLIT_TAIL");
}
END_TEST

/* The short-launch rule (host/attention/split_tail.c, dua_short_launch_one_mtile; off in the other tests):
 * where the compiled rule says two m-tiles, a launch of less than a wave of two-m-tile work-groups that visit
 * 4 blocks each runs one m-tile, so does one of 8 work-groups of 4 blocks of 256 keys (under 1.5 waves from
 * two compute units on), and one of at least a wave of 16-block work-groups keeps two; causal (the rule by
 * the longest work-group): a launch of 16 work-groups of up to 16 blocks runs one m-tile (under 3 waves from
 * two compute units on), split where that is under a wave (dua_split_causal_plan; the rules see 8 compute
 * units at least, so that this runs on a two-core host too), 3 waves of them keep two and are not split; all
 * against the reference. On a device whose forward has no wgmma variant (the rule's slots are measured there
 * only), or with DUA_MMA_MT set, all keep the plan's MT. With an invalid DUA_SPLIT_TAIL, warned about once.
 */
START_TEST(short_launch) {
  unsetenv("DUA_SHORT_LAUNCH");
  mma_ctx m;
  mma_context(&m, 0);
  /* the rules' slots as on 8 compute units at least, so that the causal split runs on a two-core host too */
  if (m.ctx->info.compute_units < 8)
    m.ctx->info.compute_units = 8;
  test_rng rng = test_rng_make(211);
  const char *mt_env = getenv("DUA_MMA_MT"); /* a developer's MT is not the rule's to change */
  const int rule =
      m.mma_possible && m.ctx->info.nv_wgmma && !(mt_env && (!strcmp(mt_env, "1") || !strcmp(mt_env, "2")));
  const unsigned slots = 3 * m.ctx->info.compute_units; /* two-m-tile work-groups per compute unit: 3 */
  setenv("DUA_SPLIT_TAIL", "2;3", 1);     /* invalid: the plan as unset, said once per context */
  problem p = base_problem(512, 128, 64); /* dense: 4 work-groups of 4 blocks */
  p.desc.heads = 1;
  m.mt_expected = rule ? 1 : 0;
  check_problem(&m, &p, &rng);
  p = base_problem(1024, 256, 64); /* dense, block 256: 8 two-m-tile work-groups of 1024 keys */
  p.desc.heads = 1;
  m.mt_expected = rule && m.ctx->info.compute_units >= 2 ? 1 : 0; /* under 1.5 waves from 2 units on */
  check_problem(&m, &p, &rng);
  p = base_problem(2048, 128, 64); /* dense: a wave or more of 16-block work-groups */
  p.desc.heads = (int32_t)((slots + 15) / 16);
  m.mt_expected = 0;
  check_problem(&m, &p, &rng);
  p = base_problem(2048, 128, 64); /* causal dense: 16 work-groups of 1 to 16 blocks (a tree of 16: MT 2) */
  p.desc.heads = 1;
  p.desc.causal = 1;
  m.mt_expected = rule ? 1 : 0; /* under 3 waves */
  /* ... and its 32 one-m-tile work-groups (the rule's or DUA_MMA_MT=1) split, under a wave of 5 per unit */
  const int mt_run = m.mt_expected ? m.mt_expected : mt_env && !strcmp(mt_env, "1") ? 1 : 2;
  int parts = 1;
  const int split = m.mma_possible && m.ctx->info.nv_wgmma && mt_run == 1 &&
                    dua_split_causal_plan(32, 5 * m.ctx->info.compute_units, 16, 128, &parts) > 0;
  ck_assert(split || !rule); /* 40 slots or more */
  int splits_before = m.split_launches;
  check_problem(&m, &p, &rng);
  ck_assert_int_eq(m.split_launches - splits_before, split);
  p.desc.heads = (int32_t)((3 * slots + 15) / 16); /* 3 waves or more: two m-tiles, no split */
  m.mt_expected = 0;
  splits_before = m.split_launches;
  check_problem(&m, &p, &rng);
  ck_assert_int_eq(m.split_launches - splits_before, 0);
  ck_assert_int_eq(m.split_warnings, m.mma_possible ? 1 : 0);
  unsetenv("DUA_SPLIT_TAIL");
  dua_context_destroy(m.ctx);
  setenv("DUA_SHORT_LAUNCH", "0", 1);
}
END_TEST

/* The masked tiles' element mask as bounds on each key's place (row_keys_of in cl/attn_fwd_mma.cl) against
 * masked_score, key by key, on random configurations of every kind: windows (none, narrow, wider than the
 * tile), sinks, causal or not, tree-visible or not, rows and keys past the sequence's end, columns not on a
 * tile boundary. Any disagreement fails; so does a draw whose keys are all shown or all hidden too often (a
 * test that could not see a wrong bound). Runs the kernel on the device as plain OpenCL (emulated build). */
START_TEST(mask_bounds) {
  dua_context *ctx = test_context();
  cl_kernel k = NULL;
  ck_assert_msg(dua_program_kernel(ctx, "common,nv_mma_ops,attn_fwd_mma",
                                   "-DHEAD_DIM=64 -DMT=1 -DDUA_FP16=1 -DDUA_MMA_EMULATE=1 -DDUA_MASK_TEST=1",
                                   "dua_mask_bounds_test", &k) == DUA_SUCCESS,
                "%s", dua_context_last_error(ctx));
  enum { N_CFG = 20000 };
  int *cfg = malloc(sizeof(int) * 8 * N_CFG), *out = malloc(sizeof(int) * 2 * N_CFG);
  ck_assert(cfg && out);
  test_rng rng = test_rng_make(223);
  for (int i = 0; i < N_CFG; i++) {
    int *c = cfg + 8 * i;
    const int n = test_rng_int(&rng, 1, 700);
    const int w = test_rng_int(&rng, 0, 3);
    c[0] = n;
    c[1] = w == 0 ? 0 : w == 1 ? test_rng_int(&rng, 1, 40) : test_rng_int(&rng, 1, 400);
    c[2] = test_rng_int(&rng, 0, 2) ? 0 : test_rng_int(&rng, 1, 300);
    c[3] = test_rng_int(&rng, 0, 1);
    c[4] = test_rng_int(&rng, 0, 3) == 0;
    c[5] = test_rng_int(&rng, 0, n + 80);
    /* a lane's first column: j0 + 2t, or (rarely) anywhere near the row, never before key 0 */
    const int near = c[5] + test_rng_int(&rng, -500, 100);
    c[6] = test_rng_int(&rng, 0, 3)
               ? 64 * test_rng_int(&rng, 0, (n + 127) / 64) + 2 * test_rng_int(&rng, 0, 3)
               : (near > 0 ? near : 0);
    c[7] = 0;
  }
  dua_buffer *bc = NULL, *bo = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, sizeof(int) * 8 * N_CFG, &bc), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, sizeof(int) * 2 * N_CFG, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_write(bc, 0, sizeof(int) * 8 * N_CFG, cfg), DUA_SUCCESS);
  cl_mem mc = dua_buffer_cl_mem(bc), mo = dua_buffer_cl_mem(bo);
  ck_assert_int_eq(clSetKernelArg(k, 0, sizeof mc, &mc), CL_SUCCESS);
  ck_assert_int_eq(clSetKernelArg(k, 1, sizeof mo, &mo), CL_SUCCESS);
  const size_t global = N_CFG;
  ck_assert_int_eq(
      clEnqueueNDRangeKernel(dua_context_cl_queue(ctx), k, 1, NULL, &global, NULL, 0, NULL, NULL),
      CL_SUCCESS);
  ck_assert_int_eq(dua_buffer_read(bo, 0, sizeof(int) * 2 * N_CFG, out), DUA_SUCCESS);
  int partly = 0; /* draws with keys both shown and hidden */
  for (int i = 0; i < N_CFG; i++) {
    const int *c = cfg + 8 * i;
    ck_assert_msg(
        out[2 * i] == 0,
        "configuration %d (n_tokens %d, window %d, sink %d, causal %d, shared %d, row %d, c0 %d): %d keys "
        "differ from masked_score",
        i, c[0], c[1], c[2], c[3], c[4], c[5], c[6], out[2 * i]);
    partly += out[2 * i + 1] > 0 && out[2 * i + 1] < 64;
  }
  ck_assert_msg(partly > N_CFG / 10, "only %d of %d draws show some keys and hide others", partly, N_CFG);
  dua_buffer_destroy(bc);
  dua_buffer_destroy(bo);
  free(cfg), free(out);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  setenv("DUA_SHORT_LAUNCH", "0", 1); /* the other tests' MT is the plan's, whatever the device's size */
  Suite *s = suite_create("forward_mma");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  const char *only = getenv("DUA_TEST_ONLY"); /* filter: test names, comma-separated */
#define ADD(fn, n)                                                                                           \
  if (!only || test_name_listed(#fn, only))                                                                  \
    tcase_add_loop_test(tc, fn, 0, n);
  ADD(dense_and_block_sizes, 2)
  ADD(block_diagonal_depth_and_tails, 2)
  ADD(causal_window_sink_shift, 2)
  ADD(content_paths_bias_gqa_bnhd, 2)
  ADD(random_layouts, 2)
  ADD(fallbacks, 2)
  ADD(caller_lists_with_empty_rows, 8)
  ADD(tf32_storage, 2)
  ADD(token_bias_declines_to_portable, 1)
  ADD(split_tail, 3)
  ADD(tma_empty_split_part, 1)
  ADD(short_launch, 1)
  ADD(mask_bounds, 1)
#undef ADD
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
