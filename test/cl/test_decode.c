/* test_decode.c: dua_kv_cache and dua_decode on the default OpenCL device. Decoding the token at position t
 * of a sequence must give row t of the forward reference (dua_attention_reference, double accumulation) on
 * that sequence's tokens with the same layout: dense, positional depths, shift, window, sink, content
 * paths, level bias, GQA (also split into head chunks), 1..4 query tokens, fp16 storage and fp16 queries,
 * variable lengths in one batch, split-KV merges, shuffled and fragmented block tables over two layers,
 * forked sequences sharing pages (copy on write), several kernel tiles (the GPU default among them),
 * contexts shorter than the query tokens (zeros, LSE -inf, poisoned outputs overwritten), causality bit for
 * bit, capacity exhaustion that changes nothing, invalid arguments named in the error with outputs
 * untouched, and tuned plans and split thresholds (as a tuning database sets them). */
#include "attention/kv_internal.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fp32: |x - ref| <= 1e-4 + 1e-3 |ref| (DESIGN.md section 6). fp16 storage: the reference sees the stored
 * (rounded) values; an fp16 output adds one rounding (2^-11 relative): 1e-3 + 2e-3 |ref|. LSE (fp32 always):
 * 1e-4 + 1e-4 |ref|. */
#define F32_ATOL 1e-4
#define F32_RTOL 1e-3
#define F16_ATOL 1e-3
#define F16_RTOL 2e-3

/* ------------------------------------------------------------------ fixture: a cache and its host model */

/* What the cache holds, as stored (rounded to its dtype): [max_seqs][layers][max_tokens][Hkv][Dh]. */
typedef struct fixture {
  dua_context *ctx;
  dua_kv_cache *cache;
  dua_kv_cache_desc d;
  float *k, *v;
  test_rng rng;
} fixture;

static dua_kv_cache_desc cache_desc(int layers, int hkv, int dh, int page, int pages, int seqs,
                                    int max_tokens, dua_dtype dt) {
  dua_kv_cache_desc d;
  memset(&d, 0, sizeof d);
  d.layers = layers;
  d.kv_heads = hkv;
  d.head_dim = dh;
  d.page_tokens = page;
  d.num_pages = pages;
  d.max_seqs = seqs;
  d.max_tokens = max_tokens;
  d.dtype = dt;
  return d;
}

static size_t at(const fixture *f, int seq, int layer, int tok, int hk) {
  const dua_kv_cache_desc *d = &f->d;
  return ((((size_t)seq * d->layers + layer) * d->max_tokens + tok) * d->kv_heads + hk) * d->head_dim;
}

static void fx_open(fixture *f, const dua_kv_cache_desc *d, uint64_t seed) {
  memset(f, 0, sizeof *f);
  f->ctx = test_context();
  f->rng = test_rng_make(seed);
  f->d = *d;
  dua_status st = dua_kv_cache_create(f->ctx, d, &f->cache);
  ck_assert_msg(st == DUA_SUCCESS, "cache rejected: %s", dua_context_last_error(f->ctx));
  size_t n = (size_t)d->max_seqs * d->layers * d->max_tokens * d->kv_heads * d->head_dim;
  f->k = calloc(n, sizeof(float));
  f->v = calloc(n, sizeof(float));
  ck_assert(f->k && f->v);
}

static void fx_close(fixture *f) {
  dua_kv_cache_destroy(f->cache);
  dua_context_destroy(f->ctx);
  free(f->k);
  free(f->v);
}

static int32_t fx_len(fixture *f, int32_t seq, int32_t layer) {
  int32_t len = -1;
  ck_assert_int_eq(dua_kv_seq_length(f->cache, seq, layer, &len), DUA_SUCCESS);
  return len;
}

static int32_t fx_free_pages(fixture *f) {
  int32_t n = -1;
  ck_assert_int_eq(dua_kv_cache_free_pages(f->cache, &n), DUA_SUCCESS);
  return n;
}

static int32_t fx_add(fixture *f) {
  int32_t s = -1;
  ck_assert_msg(dua_kv_seq_add(f->cache, &s) == DUA_SUCCESS, "seq_add: %s", dua_context_last_error(f->ctx));
  return s;
}

/* Forks src in the cache and in the model. */
static int32_t fx_fork(fixture *f, int32_t src) {
  int32_t s = -1;
  ck_assert_msg(dua_kv_seq_fork(f->cache, src, &s) == DUA_SUCCESS, "fork: %s",
                dua_context_last_error(f->ctx));
  size_t n = at(f, 1, 0, 0, 0);
  memcpy(f->k + at(f, s, 0, 0, 0), f->k + at(f, src, 0, 0, 0), n * sizeof(float));
  memcpy(f->v + at(f, s, 0, 0, 0), f->v + at(f, src, 0, 0, 0), n * sizeof(float));
  return s;
}

/* Appends T random tokens to seqs[0..n) at layer from (n, Hkv, T, Dh) tensors of dtype src. Returns the
 * status; on success the model holds the tokens too. */
static dua_status fx_append(fixture *f, int layer, int n, const int32_t *seqs, int T, dua_dtype src) {
  const int hkv = f->d.kv_heads, dh = f->d.head_dim;
  const size_t cnt = (size_t)n * hkv * T * dh;
  float *k = malloc(cnt * 4), *v = malloc(cnt * 4);
  int32_t *len = malloc((size_t)n * sizeof(int32_t));
  ck_assert(k && v && len);
  test_fill(k, cnt, &f->rng, src);
  test_fill(v, cnt, &f->rng, src);
  for (int i = 0; i < n; i++)
    len[i] = fx_len(f, seqs[i], layer);
  dua_buffer *bk = test_upload(f->ctx, k, cnt, src), *bv = test_upload(f->ctx, v, cnt, src);
  dua_tensor tk = dua_tensor_contiguous(bk, 0, src, n, hkv, T, dh),
             tv = dua_tensor_contiguous(bv, 0, src, n, hkv, T, dh);
  dua_status st = dua_kv_append(f->cache, layer, n, seqs, &tk, &tv);
  if (st == DUA_SUCCESS)
    for (int i = 0; i < n; i++)
      for (int hk = 0; hk < hkv; hk++)
        for (int t = 0; t < T; t++)
          for (int c = 0; c < dh; c++) {
            size_t from = (((size_t)i * hkv + hk) * T + t) * dh + c,
                   to = at(f, seqs[i], layer, len[i] + t, hk) + c;
            float kx = k[from], vx = v[from];
            if (f->d.dtype == DUA_F16) {
              kx = dua_half_to_float(dua_float_to_half(kx));
              vx = dua_half_to_float(dua_float_to_half(vx));
            }
            f->k[to] = kx;
            f->v[to] = vx;
          }
  dua_buffer_destroy(bk);
  dua_buffer_destroy(bv);
  free(k);
  free(v);
  free(len);
  return st;
}

static void fx_append_ok(fixture *f, int layer, int n, const int32_t *seqs, int T, dua_dtype src) {
  dua_status st = fx_append(f, layer, n, seqs, T, src);
  ck_assert_msg(st == DUA_SUCCESS, "append failed: %s: %s", dua_status_string(st),
                dua_context_last_error(f->ctx));
}

/* ------------------------------------------------------------------ layouts */

typedef struct lay {
  dua_layout_desc desc;
  int32_t depths[16], arities[16];
  uint8_t *paths;
  dua_layout *l;
} lay;

static lay lay_base(int n, int blk, int batch, int heads, int kv_heads) {
  lay y;
  memset(&y, 0, sizeof y);
  y.desc.seq_len = n;
  y.desc.block = blk;
  y.desc.batch = batch;
  y.desc.heads = heads;
  y.desc.kv_heads = kv_heads;
  y.desc.arity = 2;
  y.desc.causal = 1;
  return y;
}

static int tree_depth(int nb, int p) {
  int d = 0;
  for (long span = 1; span < nb; span *= p)
    d++;
  return d;
}

/* Random content paths for every (batch, head, block). */
static void lay_random_paths(lay *y, test_rng *rng) {
  const dua_layout_desc *d = &y->desc;
  int nb = (d->seq_len + d->block - 1) / d->block, dmax = 0;
  for (int h = 0; h < d->heads; h++) {
    int D = tree_depth(nb, d->arities ? y->arities[h] : d->arity);
    dmax = D > dmax ? D : dmax;
  }
  if (dmax == 0)
    return;
  size_t np = (size_t)d->batch * d->heads * nb * dmax;
  y->paths = malloc(np);
  for (int b = 0; b < d->batch; b++)
    for (int h = 0; h < d->heads; h++)
      for (int n = 0; n < nb; n++)
        for (int lv = 0; lv < dmax; lv++) /* few distinct digits: buckets of several blocks */
          y->paths[(((size_t)b * d->heads + h) * nb + n) * dmax + lv] =
              (uint8_t)test_rng_int(rng, 0, (d->arities ? y->arities[h] : d->arity) - 1);
  y->desc.paths = y->paths;
}

static void lay_make(lay *y) {
  char err[256] = "";
  dua_status st = dua_layout_create(&y->desc, &y->l, err, sizeof err);
  ck_assert_msg(st == DUA_SUCCESS, "layout rejected: %s", err);
}

static void lay_free(lay *y) {
  dua_layout_destroy(y->l);
  free(y->paths);
  y->l = NULL;
  y->paths = NULL;
}

/* ------------------------------------------------------------------ the check */

typedef struct dopts {
  int T;            /* query tokens per sequence */
  dua_dtype qdtype; /* q and o */
  int bnhd;         /* q and o stored as (S, T, Hq, Dh) */
  int with_bias;    /* random level bias */
  int no_lse;       /* lse = NULL */
} dopts;

static void describe(const fixture *f, const lay *y, const dopts *o, char *buf, size_t size) {
  const dua_layout_desc *d = &y->desc;
  snprintf(buf, size,
           "N=%d blk=%d Hq=%d Hkv=%d p=%d depth0=%d shift=%d W=%d S=%d content=%d batch=%d | P=%d Dh=%d "
           "cache %s | "
           "T=%d q %s%s%s",
           d->seq_len, d->block, d->heads, f->d.kv_heads, d->arity, d->depths ? d->depths[0] : 0, d->shift,
           d->window, d->sink, d->paths != NULL, d->batch, f->d.page_tokens, f->d.head_dim,
           f->d.dtype == DUA_F16 ? "fp16" : "fp32", o->T, o->qdtype == DUA_F16 ? "fp16" : "fp32",
           o->bnhd ? " BNHD" : "", o->with_bias ? " bias" : "");
}

/* Decodes o->T query tokens of seqs[0..S) at `layer` and compares with dua_attention_reference on each
 * sequence's tokens (keys past the sequence's length are random: causality must hide them). Outputs are
 * poisoned first; rows at positions < 0 must be exactly 0 with LSE -inf. Returns the device O for callers
 * that compare runs (malloc'ed, (S, Hq, T, Dh) in the view's order). */
static float *check_decode(fixture *f, lay *y, int layer, int S, const int32_t *seqs, const dopts *o) {
  const dua_layout_desc *d = &y->desc;
  const int Hq = d->heads, Hkv = f->d.kv_heads, Dh = f->d.head_dim, N = d->seq_len, T = o->T;
  const int Bl = d->batch;
  char what[320];
  describe(f, y, o, what, sizeof what);
  /* level bias */
  int dmax = 0;
  for (int h = 0; h < Hq; h++)
    dmax = dua_layout_tree_depth(y->l, h) > dmax ? dua_layout_tree_depth(y->l, h) : dmax;
  const size_t nbias = (size_t)Hq * (dmax + 1);
  float *bias = NULL;
  dua_buffer *bb = NULL;
  dua_tensor tb;
  dua_attention_params params;
  dua_attention_params_init(&params);
  if (o->with_bias) {
    bias = malloc(nbias * 4);
    for (size_t i = 0; i < nbias; i++)
      bias[i] = 2.0f * test_rng_float(&f->rng);
    bb = test_upload(f->ctx, bias, nbias, DUA_F32);
    tb = dua_tensor_contiguous(bb, 0, DUA_F32, Hq, dmax + 1, 1, 1);
    params.level_bias = &tb;
  }
  /* device call */
  const size_t nq = (size_t)S * Hq * T * Dh, nl = (size_t)S * Hq * T;
  float *q = malloc(nq * 4), *out = malloc(nq * 4), *lse = malloc(nl * 4);
  test_fill(q, nq, &f->rng, o->qdtype);
  dua_buffer *bq = test_upload(f->ctx, q, nq, o->qdtype), *bo = NULL, *bl = NULL;
  ck_assert_int_eq(dua_buffer_create(f->ctx, nq * dua_dtype_size(o->qdtype), &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(f->ctx, nl * 4, &bl), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, nq * dua_dtype_size(o->qdtype), 0xFF), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, nl * 4, 0xFF), DUA_SUCCESS);
  dua_tensor tq = test_dev_view(bq, o->qdtype, S, Hq, T, Dh, o->bnhd),
             to = test_dev_view(bo, o->qdtype, S, Hq, T, Dh, o->bnhd);
  dua_tensor tl = dua_tensor_contiguous(bl, 0, DUA_F32, S, Hq, T, 1);
  dua_status st = dua_decode(f->ctx, f->cache, layer, y->l, &params, seqs, &tq, &to, o->no_lse ? NULL : &tl);
  ck_assert_msg(st == DUA_SUCCESS, "%s: decode failed: %s: %s", what, dua_status_string(st),
                dua_context_last_error(f->ctx));
  ck_assert_int_eq(dua_context_finish(f->ctx), DUA_SUCCESS);
  test_download(bo, out, nq, o->qdtype);
  test_download(bl, lse, nl, DUA_F32);
  dua_host_tensor hq = test_host_view(q, S, Hq, T, Dh, o->bnhd),
                  ho = test_host_view(out, S, Hq, T, Dh, o->bnhd);

  /* reference: full (Bl, H, N, Dh) tensors; with a batch-1 layout one run per sequence */
  dua_host_tensor rq = test_host_tensor_new(Bl, Hq, N, Dh, 0), rk = test_host_tensor_new(Bl, Hkv, N, Dh, 0);
  dua_host_tensor rv = test_host_tensor_new(Bl, Hkv, N, Dh, 0), ro = test_host_tensor_new(Bl, Hq, N, Dh, 0);
  dua_host_tensor rl = test_host_tensor_new(Bl, Hq, N, 1, 0);
  const double atol = o->qdtype == DUA_F16 ? F16_ATOL : F32_ATOL,
               rtol = o->qdtype == DUA_F16 ? F16_RTOL : F32_RTOL;
  const int runs = Bl == 1 ? S : 1;
  for (int run = 0; run < runs; run++) {
    const int b_lo = Bl == 1 ? run : 0, b_hi = Bl == 1 ? run + 1 : S;
    test_fill(rq.data, (size_t)Bl * Hq * N * Dh, &f->rng, DUA_F32);
    test_fill(rk.data, (size_t)Bl * Hkv * N * Dh, &f->rng, DUA_F32);
    test_fill(rv.data, (size_t)Bl * Hkv * N * Dh, &f->rng, DUA_F32);
    for (int b = b_lo; b < b_hi; b++) {
      const int rb = Bl == 1 ? 0 : b, L = fx_len(f, seqs[b], layer);
      for (int hk = 0; hk < Hkv; hk++)
        for (int j = 0; j < L; j++) {
          memcpy(rk.data + ((size_t)(rb * Hkv + hk) * N + j) * Dh, f->k + at(f, seqs[b], layer, j, hk),
                 Dh * 4u);
          memcpy(rv.data + ((size_t)(rb * Hkv + hk) * N + j) * Dh, f->v + at(f, seqs[b], layer, j, hk),
                 Dh * 4u);
        }
      for (int h = 0; h < Hq; h++)
        for (int i = 0; i < T; i++)
          if (L - T + i >= 0)
            for (int c = 0; c < Dh; c++)
              rq.data[((size_t)(rb * Hq + h) * N + (L - T + i)) * Dh + c] =
                  q[b * hq.strides[0] + h * hq.strides[1] + i * hq.strides[2] + c];
    }
    ck_assert_int_eq(dua_attention_reference(y->l, 0.0f, bias, &rq, &rk, &rv, &ro, &rl), DUA_SUCCESS);
    for (int b = b_lo; b < b_hi; b++) {
      const int rb = Bl == 1 ? 0 : b, L = fx_len(f, seqs[b], layer);
      for (int h = 0; h < Hq; h++)
        for (int i = 0; i < T; i++) {
          const int pos = L - T + i;
          const float *got = out + b * ho.strides[0] + h * ho.strides[1] + i * ho.strides[2];
          const float gl = lse[((size_t)b * Hq + h) * T + i];
          if (pos < 0) {
            for (int c = 0; c < Dh; c++)
              ck_assert_msg(got[c] == 0.0f,
                            "%s: seq %d (L=%d) h=%d token %d at position %d: O[%d] = %g, want 0", what,
                            seqs[b], L, h, i, pos, c, (double)got[c]);
            if (!o->no_lse)
              ck_assert_msg(isinf(gl) && gl < 0, "%s: empty row LSE = %g, want -inf", what, (double)gl);
            continue;
          }
          const float *ref = ro.data + ((size_t)(rb * Hq + h) * N + pos) * Dh;
          double err;
          long bad = test_compare(got, ref, (size_t)Dh, atol, rtol, &err);
          ck_assert_msg(
              bad < 0,
              "%s: seq %d (L=%d) h=%d token %d (position %d): O[%ld] = %.7g, reference %.7g (max error %g)",
              what, seqs[b], L, h, i, pos, bad, (double)(bad >= 0 ? got[bad] : 0),
              (double)(bad >= 0 ? ref[bad] : 0), err);
          if (!o->no_lse) {
            const float want = rl.data[(size_t)(rb * Hq + h) * N + pos];
            if (isinf(want))
              ck_assert_msg(isinf(gl) && gl < 0, "%s: LSE %g, want -inf", what, (double)gl);
            else
              ck_assert_msg(fabs(gl - want) <= 1e-4 + 1e-4 * fabs(want),
                            "%s: seq %d h=%d token %d: LSE %.7g, reference %.7g", what, seqs[b], h, i,
                            (double)gl, (double)want);
          }
        }
    }
  }
  if (o->no_lse) { /* the lse buffer must not have been touched */
    unsigned char *raw = malloc(nl * 4);
    ck_assert_int_eq(dua_buffer_read(bl, 0, nl * 4, raw), DUA_SUCCESS);
    for (size_t i = 0; i < nl * 4; i++)
      ck_assert_msg(raw[i] == 0xFF, "%s: lse = NULL but the buffer was written", what);
    free(raw);
  }
  free(rq.data);
  free(rk.data);
  free(rv.data);
  free(ro.data);
  free(rl.data);
  dua_buffer_destroy(bq);
  dua_buffer_destroy(bo);
  dua_buffer_destroy(bl);
  dua_buffer_destroy(bb);
  free(bias);
  free(q);
  free(lse);
  return out;
}

static void check_decode_free(fixture *f, lay *y, int layer, int S, const int32_t *seqs, const dopts *o) {
  free(check_decode(f, y, layer, S, seqs, o));
}

static dopts dopts_make(int T, dua_dtype qdtype) {
  dopts o;
  memset(&o, 0, sizeof o);
  o.T = T;
  o.qdtype = qdtype;
  return o;
}

/* ------------------------------------------------------------------ tests */

/* Dense layout, four sequences of different lengths in one batch (one token, one page exactly, page-
 * crossing, the layout's full N), 1 and 2 query tokens. */
START_TEST(dense_variable_lengths) {
  fixture f;
  dua_kv_cache_desc d = cache_desc(1, 2, 64, 16, 64, 4, 256, DUA_F32);
  fx_open(&f, &d, 201);
  int32_t s[4];
  for (int i = 0; i < 4; i++)
    s[i] = fx_add(&f);
  fx_append_ok(&f, 0, 1, &s[0], 1, DUA_F32);
  fx_append_ok(&f, 0, 1, &s[1], 16, DUA_F32);
  fx_append_ok(&f, 0, 2, &s[2], 60, DUA_F32); /* s2 and s3 together */
  fx_append_ok(&f, 0, 1, &s[2], 40, DUA_F32);
  fx_append_ok(&f, 0, 1, &s[3], 196, DUA_F32);
  ck_assert_int_eq(fx_len(&f, s[3], 0), 256);
  lay y = lay_base(256, 32, 1, 2, 2);
  lay_make(&y);
  dopts o = dopts_make(1, DUA_F32);
  check_decode_free(&f, &y, 0, 4, s, &o);
  o.T = 2;
  check_decode_free(&f, &y, 0, 4, s, &o);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Sets (value) or unsets (NULL) an environment variable once ctx's queue is empty: PoCL's worker threads call
 * getenv while they prepare commands, and setenv/unsetenv racing them crashed test_decode now and then
 * (SIGSEGV in getenv under pocl_check_kernel_dlhandle_cache, seen in a core dump). */
static void env_when_idle(dua_context *ctx, const char *name, const char *value) {
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  if (value)
    setenv(name, value, 1);
  else
    unsetenv(name);
}

/* Puts back an environment variable saved with strdup (NULL: it was unset) and frees the copy (the caller's
 * contexts are idle or destroyed). */
static void restore_env(const char *name, char *saved) {
  if (saved)
    setenv(name, saved, 1);
  else
    unsetenv(name);
  free(saved);
}

/* Random positional layouts: per-head depths and arities, shift, window, sink, level bias, GQA, page and
 * block sizes, head dims, 1..4 query tokens, fp16 cache and/or queries, (S,T,H,D) query storage; case i
 * runs kernel (and DUA_DECODE_TILE tile) when given, the device's default otherwise. mma_dims: head dims 64
 * and 128 and an fp16 cache only (the mma kernel's). */
static void random_positional_case(int i, const char *kernel, const char *tile, int mma_dims) {
  test_rng r = test_rng_make(202 + (uint64_t)i + (mma_dims ? 1000 : 0));
  static const int dims[4] = {32, 64, 96, 128}, sizes[4] = {16, 32, 64, 128};
  const int hkv = test_rng_int(&r, 1, 2), group = test_rng_int(&r, 1, mma_dims ? 4 : 3), hq = hkv * group;
  const int N = test_rng_int(&r, 40, 400), S = test_rng_int(&r, 1, 4);
  const int page = sizes[test_rng_int(&r, 0, 3)], blk = sizes[test_rng_int(&r, 0, 3)];
  const int fp16_cache = test_rng_int(&r, 0, 1) || mma_dims;
  dua_kv_cache_desc d = cache_desc(1, hkv, mma_dims ? 64 << (i % 2) : dims[i % 4], page,
                                   S * ((N + page - 1) / page), S, N, fp16_cache ? DUA_F16 : DUA_F32);
  d.page_order_seed = (uint32_t)test_rng_int(&r, 0, 1000);
  fixture f;
  fx_open(&f, &d, 210 + (uint64_t)i);
  lay y = lay_base(N, blk, 1, hq, hkv);
  y.desc.arity = test_rng_int(&r, 2, 3);
  const int nb = (N + blk - 1) / blk;
  if (test_rng_int(&r, 0, 1)) {
    for (int h = 0; h < hq; h++)
      y.arities[h] = test_rng_int(&r, 2, 4);
    y.desc.arities = y.arities;
  }
  int dmax = 0;
  for (int h = 0; h < hq; h++) {
    int D = tree_depth(nb, y.desc.arities ? y.arities[h] : y.desc.arity);
    y.depths[h] = test_rng_int(&r, -1, D);
    dmax = D > dmax ? D : dmax;
  }
  y.desc.depths = y.depths;
  if (dmax > 0 && test_rng_int(&r, 0, 1))
    y.desc.shift = test_rng_int(&r, 0, nb);
  y.desc.window = test_rng_int(&r, 0, 2) == 0 ? test_rng_int(&r, 1, 70) : 0;
  y.desc.sink = test_rng_int(&r, 0, 2) == 0 ? test_rng_int(&r, 1, 40) : 0;
  lay_make(&y);
  int32_t s[4];
  for (int i = 0; i < S; i++) {
    s[i] = fx_add(&f);
    int L = test_rng_int(&r, 1, N), done = 0;
    while (done < L) { /* a few appends of random sizes */
      int t = test_rng_int(&r, 1, L - done);
      fx_append_ok(&f, 0, 1, &s[i], t, test_rng_int(&r, 0, 1) ? DUA_F16 : DUA_F32);
      done += t;
    }
  }
  dopts o = dopts_make(test_rng_int(&r, 1, 4), test_rng_int(&r, 0, 1) ? DUA_F16 : DUA_F32);
  o.bnhd = test_rng_int(&r, 0, 1);
  o.with_bias = test_rng_int(&r, 0, 2) == 0;
  if (tile)
    env_when_idle(f.ctx, "DUA_DECODE_TILE", tile);
  char *outer =
      getenv("DUA_DECODE_KERNEL") ? strdup(getenv("DUA_DECODE_KERNEL")) : NULL; /* a whole-run choice */
  if (kernel)
    env_when_idle(f.ctx, "DUA_DECODE_KERNEL", kernel);
  check_decode_free(&f, &y, 0, S, s, &o);
  lay_free(&y);
  fx_close(&f);
  unsetenv("DUA_DECODE_TILE");
  restore_env("DUA_DECODE_KERNEL", outer);
}

/* Every kernel whatever the device's default choice (the warp kernel emulated off NVIDIA: batches of 8 keys
 * in 4 warps, and of 2 keys in 2 warps with 2 rows and two loads per lane); NULL: the device default. */
START_TEST(random_positional) {
  static const char *const tiles[6] = {"32,128,16", "64,128,8", "16,64,4", "8,128,4", "2,64,2", NULL};
  static const char *const kernels[6] = {"staged", "regs", "regs", "warp", "warp", NULL};
  if (_i % 6 == 4) /* the warp kernel with two 16-byte loads per lane and key row */
    setenv("DUA_DECODE_WARP_VPL", "2", 1);
  random_positional_case(_i, kernels[_i % 6], tiles[_i % 6], 0);
  if (_i % 6 == 4)
    unsetenv("DUA_DECODE_WARP_VPL");
}
END_TEST

/* The mma kernel (tensor-core products; emulated off NVIDIA) on the same random layouts: head dims 64 and
 * 128, fp16 cache, GQA groups up to 4 with 1..4 tokens (rows split into head chunks of at most 8), 4 and 2
 * warps. */
START_TEST(random_positional_mma) {
  random_positional_case(_i, "mma", _i % 2 ? "16,64,4" : "16,128,8", 1);
}
END_TEST

/* Content routing: random paths per (batch, head, block) with per-head depths, a window and a sink; the
 * layout's batch routes each sequence (batch = S), or one routing serves all (batch = 1). Case 2: case 1
 * (fp16 cache) through the mma kernel (emulated off NVIDIA). */
START_TEST(content_paths) {
  const int mma = _i == 2, fp16 = _i >= 1; /* case 1 and its mma run share the layout */
  fixture f;
  const int N = 300, S = 3;
  dua_kv_cache_desc d = cache_desc(1, 2, 64, 32, 40, 4, N, fp16 ? DUA_F16 : DUA_F32);
  fx_open(&f, &d, 220 + (uint64_t)fp16);
  lay y = lay_base(N, 16, fp16 ? 1 : S, 4, 2);
  y.desc.arity = 3;
  static const int32_t depths[4] = {1, 2, -1, 0};
  memcpy(y.depths, depths, sizeof depths);
  y.desc.depths = y.depths;
  y.desc.window = fp16 ? 20 : 0;
  y.desc.sink = fp16 ? 0 : 7;
  lay_random_paths(&y, &f.rng);
  lay_make(&y);
  int32_t s[3];
  static const int lens[3] = {300, 177, 33};
  for (int i = 0; i < S; i++) {
    s[i] = fx_add(&f);
    fx_append_ok(&f, 0, 1, &s[i], lens[i], DUA_F32);
  }
  dopts o = dopts_make(fp16 ? 3 : 1, DUA_F32);
  o.with_bias = !fp16;
  char *outer = getenv("DUA_DECODE_KERNEL") ? strdup(getenv("DUA_DECODE_KERNEL")) : NULL;
  if (mma)
    env_when_idle(f.ctx, "DUA_DECODE_KERNEL", "mma");
  check_decode_free(&f, &y, 0, S, s, &o);
  lay_free(&y);
  fx_close(&f);
  restore_env("DUA_DECODE_KERNEL", outer);
}
END_TEST

/* GQA: 8 query heads on 1 KV head with different depths per head; with 4 query tokens the group's 32 rows
 * are split into head chunks. fp16 cache. */
START_TEST(gqa_group_and_head_chunks) {
  fixture f;
  const int N = 320;
  dua_kv_cache_desc d = cache_desc(1, 1, 64, 64, 20, 2, N, DUA_F16);
  fx_open(&f, &d, 230);
  lay y = lay_base(N, 32, 1, 8, 1);
  static const int32_t depths[8] = {0, -1, 1, 2, -1, 0, 3, 1};
  memcpy(y.depths, depths, sizeof depths);
  y.desc.depths = y.depths;
  y.desc.sink = 3;
  lay_make(&y);
  int32_t s[2] = {fx_add(&f), fx_add(&f)};
  fx_append_ok(&f, 0, 1, &s[0], 320, DUA_F16);
  fx_append_ok(&f, 0, 1, &s[1], 131, DUA_F32);
  dopts o = dopts_make(1, DUA_F32);
  check_decode_free(&f, &y, 0, 2, s, &o);
  o.T = 4;
  o.qdtype = DUA_F16;
  check_decode_free(&f, &y, 0, 2, s, &o);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Split-KV: forced split counts (some splits then have nothing to do), including a sequence with an empty
 * context, merged through the LSE; a smaller tile with fewer work-items. */
START_TEST(split_kv_merge) {
  setenv("DUA_DECODE_SPLITS", _i ? "16" : "3", 1);
  setenv("DUA_DECODE_TILE", _i ? "16,64,4" : "32,128,16", 1); /* and the GPU default tile */
  fixture f;
  const int N = 1000;
  dua_kv_cache_desc d = cache_desc(1, 2, 32, 16, 140, 3, N, DUA_F32);
  fx_open(&f, &d, 240 + (uint64_t)_i);
  lay y = lay_base(N, 64, 1, 4, 2);
  static const int32_t depths[4] = {0, 2, -1, 1};
  memcpy(y.depths, depths, sizeof depths);
  y.desc.depths = y.depths;
  y.desc.window = 40;
  lay_make(&y);
  int32_t s[3] = {fx_add(&f), fx_add(&f), fx_add(&f)};
  fx_append_ok(&f, 0, 1, &s[0], 1000, DUA_F32);
  fx_append_ok(&f, 0, 1, &s[1], 517, DUA_F32);
  dopts o = dopts_make(_i ? 2 : 1, DUA_F32); /* s[2] is empty */
  check_decode_free(&f, &y, 0, 3, s, &o);
  lay_free(&y);
  fx_close(&f); /* (the variables change only with no context alive: see env_when_idle) */
  unsetenv("DUA_DECODE_SPLITS");
  unsetenv("DUA_DECODE_TILE");
}
END_TEST

/* Shuffled page order, two layers with different contents, interleaved appends of random sizes, sequences
 * freed and re-added in between (their pages reused by others): block tables end up fragmented. */
START_TEST(fragmented_block_tables) {
  fixture f;
  const int N = 300;
  dua_kv_cache_desc d = cache_desc(2, 2, 64, 16, 96, 6, N, _i ? DUA_F16 : DUA_F32);
  d.page_order_seed = 12345;
  fx_open(&f, &d, 250 + (uint64_t)_i);
  test_rng r = test_rng_make(251 + (uint64_t)_i);
  int32_t s[6];
  for (int i = 0; i < 6; i++)
    s[i] = fx_add(&f);
  for (int round = 0; round < 12; round++) {
    if (round == 5) { /* free two and add two: slots and pages are reused */
      ck_assert_int_eq(dua_kv_seq_free(f.cache, s[1]), DUA_SUCCESS);
      ck_assert_int_eq(dua_kv_seq_free(f.cache, s[4]), DUA_SUCCESS);
      s[1] = fx_add(&f);
      s[4] = fx_add(&f);
    }
    int32_t pick[6], n = 0;
    for (int i = 0; i < 6; i++)
      if (test_rng_int(&r, 0, 1) && fx_len(&f, s[i], 0) + 40 <= N)
        pick[n++] = s[i];
    if (n == 0)
      continue;
    int T = test_rng_int(&r, 1, 37);
    fx_append_ok(&f, 0, n, pick, T, DUA_F32);
    fx_append_ok(&f, 1, n, pick, T, DUA_F16);
  }
  int32_t live[6], n = 0;
  for (int i = 0; i < 6; i++)
    live[n++] = s[i];
  lay y = lay_base(N, 64, 1, 4, 2);
  static const int32_t depths[4] = {1, 0, -1, 2};
  memcpy(y.depths, depths, sizeof depths);
  y.desc.depths = y.depths;
  y.desc.window = 30;
  y.desc.sink = 2;
  lay_make(&y);
  dopts o = dopts_make(1, DUA_F32);
  check_decode_free(&f, &y, 0, n, live, &o);
  check_decode_free(&f, &y, 1, n, live, &o);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Forks share pages (no new page taken); a write into a shared page copies that page only; each sequence
 * keeps its own tokens; freeing the parent leaves the child intact. */
START_TEST(fork_copy_on_write) {
  fixture f;
  const int N = 128;
  dua_kv_cache_desc d = cache_desc(2, 1, 32, 16, 16, 4, N, DUA_F32);
  fx_open(&f, &d, 260);
  int32_t a = fx_add(&f);
  fx_append_ok(&f, 0, 1, &a, 40, DUA_F32); /* pages 0..2, the last one partly filled */
  fx_append_ok(&f, 1, 1, &a, 40, DUA_F32);
  ck_assert_int_eq(fx_free_pages(&f), 13);
  int32_t b = fx_fork(&f, a);
  ck_assert_int_eq(fx_free_pages(&f), 13);
  ck_assert_int_eq(fx_len(&f, b, 1), 40);
  lay y = lay_base(N, 32, 1, 2, 1);
  lay_make(&y);
  dopts o = dopts_make(1, DUA_F32);
  int32_t ab[2] = {a, b};
  check_decode_free(&f, &y, 0, 2, ab, &o);
  fx_append_ok(&f, 0, 1, &b, 5, DUA_F32); /* lands in the shared third page: copied */
  ck_assert_int_eq(fx_free_pages(&f), 12);
  fx_append_ok(&f, 0, 1, &a, 30, DUA_F32); /* a's third page is its own now; pages 3, 4 new */
  ck_assert_int_eq(fx_free_pages(&f), 10);
  check_decode_free(&f, &y, 0, 2, ab, &o);
  check_decode_free(&f, &y, 1, 2, ab, &o); /* layer 1 was copied with the page */
  int32_t c = fx_fork(&f, b);
  ck_assert_int_eq(dua_kv_seq_free(f.cache, a), DUA_SUCCESS);
  ck_assert_int_eq(fx_free_pages(&f), 13); /* a's own pages back; the first two are still b's and c's */
  ck_assert_int_eq(dua_kv_seq_free(f.cache, b), DUA_SUCCESS);
  ck_assert_int_eq(fx_free_pages(&f), 13);
  fx_append_ok(&f, 1, 1, &c, 8, DUA_F32); /* tokens 40..47: c is the only owner now, no copy */
  ck_assert_int_eq(fx_free_pages(&f), 13);
  check_decode_free(&f, &y, 1, 1, &c, &o);
  check_decode_free(&f, &y, 0, 1, &c, &o);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Contexts shorter than the query tokens: positions < 0 give O = 0 and LSE = -inf (the whole poisoned output
 * is overwritten), with one split and with several; lse may be NULL (its buffer is then untouched). */
START_TEST(empty_and_short_contexts) {
  if (_i)
    setenv("DUA_DECODE_SPLITS", "4", 1);
  fixture f;
  dua_kv_cache_desc d = cache_desc(1, 1, 64, 16, 8, 4, 64, DUA_F16);
  fx_open(&f, &d, 270 + (uint64_t)_i);
  int32_t s[3] = {fx_add(&f), fx_add(&f), fx_add(&f)};
  fx_append_ok(&f, 0, 1, &s[1], 1, DUA_F32);
  fx_append_ok(&f, 0, 1, &s[2], 2, DUA_F32);
  lay y = lay_base(64, 16, 1, 2, 1);
  y.depths[0] = y.depths[1] = -1;
  y.desc.depths = y.depths;
  lay_make(&y);
  dopts o = dopts_make(3, DUA_F16);
  check_decode_free(&f, &y, 0, 3, s, &o);
  o.T = 1;
  o.no_lse = 1;
  check_decode_free(&f, &y, 0, 3, s, &o);
  lay_free(&y);
  fx_close(&f);
  unsetenv("DUA_DECODE_SPLITS");
}
END_TEST

/* Causality bit for bit: two sequences identical up to their last token; decoding 2 tokens, the first row
 * (which must not see the last token) is the same bits in both, the second differs. */
START_TEST(causality_bit_for_bit) {
  fixture f;
  dua_kv_cache_desc d = cache_desc(1, 2, 64, 16, 32, 2, 200, _i ? DUA_F16 : DUA_F32);
  fx_open(&f, &d, 280 + (uint64_t)_i);
  int32_t a = fx_add(&f);
  fx_append_ok(&f, 0, 1, &a, 130, DUA_F32);
  int32_t b = fx_fork(&f, a);
  fx_append_ok(&f, 0, 1, &a, 1, DUA_F32);
  fx_append_ok(&f, 0, 1, &b, 1, DUA_F32);
  lay y = lay_base(200, 32, 1, 4, 2);
  static const int32_t depths[4] = {0, 1, -1, 2};
  memcpy(y.depths, depths, sizeof depths);
  y.desc.depths = y.depths;
  y.desc.window = 5;
  lay_make(&y);
  int32_t s[2] = {a, b};
  dopts o = dopts_make(2, DUA_F32);
  /* the same q for both sequences: decode each alone with one seeded q */
  test_rng keep = f.rng;
  float *oa = check_decode(&f, &y, 0, 1, &s[0], &o);
  f.rng = keep;
  float *ob = check_decode(&f, &y, 0, 1, &s[1], &o);
  int differs = 0;
  for (int h = 0; h < 4; h++)
    for (int c = 0; c < 64; c++) {
      size_t i0 = ((size_t)h * 2 + 0) * 64 + c, i1 = ((size_t)h * 2 + 1) * 64 + c;
      ck_assert_msg(memcmp(&oa[i0], &ob[i0], 4) == 0, "head %d: the row before the last token changed", h);
      differs |= oa[i1] != ob[i1];
    }
  ck_assert_msg(differs, "different last tokens changed nothing: the test is not testing");
  free(oa);
  free(ob);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Capacity: pool, max_tokens and sequence slots exhausted: DUA_ERROR_CAPACITY, nothing changes. */
START_TEST(capacity_exhaustion_changes_nothing) {
  fixture f;
  dua_kv_cache_desc d = cache_desc(1, 1, 32, 16, 4, 2, 100, DUA_F32);
  fx_open(&f, &d, 290);
  int32_t s0 = fx_add(&f), s1 = fx_add(&f);
  fx_append_ok(&f, 0, 1, &s0, 50, DUA_F32); /* 4 pages: the pool is empty */
  ck_assert_int_eq(fx_free_pages(&f), 0);
  lay y = lay_base(100, 16, 1, 1, 1);
  lay_make(&y);
  dopts o = dopts_make(1, DUA_F32);
  const test_rng keep = f.rng;
  float *before = check_decode(&f, &y, 0, 1, &s0, &o);
  ck_assert_int_eq(fx_append(&f, 0, 1, &s1, 1, DUA_F32), DUA_ERROR_CAPACITY);
  ck_assert_msg(strstr(dua_context_last_error(f.ctx), "pages") != NULL, "%s", dua_context_last_error(f.ctx));
  int32_t both[2] = {s0, s1};
  ck_assert_int_eq(fx_append(&f, 0, 2, both, 14, DUA_F32), DUA_ERROR_CAPACITY); /* s0 fits, s1 does not */
  ck_assert_int_eq(fx_append(&f, 0, 1, &s0, 20, DUA_F32), DUA_ERROR_CAPACITY);
  ck_assert_int_eq(fx_append(&f, 0, 1, &s0, 51, DUA_F32), DUA_ERROR_CAPACITY);
  ck_assert_msg(strstr(dua_context_last_error(f.ctx), "max_tokens") != NULL, "%s",
                dua_context_last_error(f.ctx));
  ck_assert_int_eq(fx_len(&f, s0, 0), 50);
  ck_assert_int_eq(fx_len(&f, s1, 0), 0);
  ck_assert_int_eq(fx_free_pages(&f), 0);
  int32_t extra = -1;
  ck_assert_int_eq(dua_kv_seq_add(f.cache, &extra), DUA_ERROR_CAPACITY);
  ck_assert_int_eq(dua_kv_seq_fork(f.cache, s0, &extra), DUA_ERROR_CAPACITY);
  ck_assert_int_eq(extra, -1);
  ck_assert_ptr_nonnull(strstr(dua_status_string(DUA_ERROR_CAPACITY), "capacity"));
  f.rng = keep; /* the same q as before: the output must be unchanged, bit for bit */
  float *after = check_decode(&f, &y, 0, 1, &s0, &o);
  ck_assert_msg(memcmp(before, after, 32 * sizeof(float)) == 0, "refused appends changed the cache");
  free(after);
  fx_append_ok(&f, 0, 1, &s0, 14, DUA_F32); /* fills the last page exactly */
  ck_assert_int_eq(fx_len(&f, s0, 0), 64);
  ck_assert_int_eq(dua_kv_seq_free(f.cache, s0), DUA_SUCCESS);
  ck_assert_int_eq(fx_free_pages(&f), 4);
  fx_append_ok(&f, 0, 1, &s1, 33, DUA_F32);
  check_decode_free(&f, &y, 0, 1, &s1, &o);
  free(before);
  lay_free(&y);
  fx_close(&f);
}
END_TEST

/* Invalid arguments: the right status, a message naming the value, outputs untouched. */
START_TEST(invalid_arguments_named) {
  dua_context *ctx = test_context();
  /* cache descriptions */
  struct {
    dua_kv_cache_desc d;
    const char *msg;
  } bad[] = {{cache_desc(0, 1, 64, 16, 4, 1, 64, DUA_F32), "desc.layers = 0"},
             {cache_desc(1, 1, 80, 16, 4, 1, 64, DUA_F32), "desc.head_dim = 80"},
             {cache_desc(1, 1, 64, 24, 4, 1, 64, DUA_F32), "desc.page_tokens = 24"},
             {cache_desc(1, 1, 64, 16, 0, 1, 64, DUA_F32), "desc.num_pages = 0"},
             {cache_desc(1, 1, 64, 16, 4, 0, 64, DUA_F32), "desc.max_seqs = 0"},
             {cache_desc(1, 1, 64, 16, 4, 1, -5, DUA_F32), "desc.max_tokens = -5"},
             {cache_desc(1, 1, 64, 16, 4, 1, 64, (dua_dtype)7), "desc.dtype = 7"},
             {cache_desc(1, 0, 64, 16, 4, 1, 64, DUA_F32), "desc.kv_heads = 0"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dua_kv_cache *c = NULL;
    ck_assert_int_eq(dua_kv_cache_create(ctx, &bad[i].d, &c), DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(dua_context_last_error(ctx), bad[i].msg), "\"%s\" lacks \"%s\"",
                  dua_context_last_error(ctx), bad[i].msg);
  }
  dua_kv_cache_desc rd = cache_desc(1, 1, 64, 16, 4, 1, 64, DUA_F32);
  rd.reserved[2] = 1;
  dua_kv_cache *c = NULL;
  ck_assert_int_eq(dua_kv_cache_create(ctx, &rd, &c), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "reserved[2]"));
  ck_assert_int_eq(dua_kv_cache_create(ctx, NULL, &c), DUA_ERROR_INVALID_ARGUMENT);
  dua_kv_cache_destroy(NULL);

  dua_kv_cache_desc d = cache_desc(2, 2, 64, 16, 8, 3, 64, DUA_F32);
  ck_assert_int_eq(dua_kv_cache_create(ctx, &d, &c), DUA_SUCCESS);
  int32_t s0, s1;
  ck_assert_int_eq(dua_kv_seq_add(c, &s0), DUA_SUCCESS);
  ck_assert_int_eq(dua_kv_seq_add(c, &s1), DUA_SUCCESS);
  ck_assert_int_eq(dua_kv_seq_free(c, s1), DUA_SUCCESS);
  dua_buffer *buf;
  ck_assert_int_eq(dua_buffer_create(ctx, 4 * 2 * 2 * 8 * 64 * 4, &buf), DUA_SUCCESS);
  dua_tensor kv = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 2, 8, 64);
  ck_assert_int_eq(dua_kv_append(c, 0, 1, &s0, &kv, &kv), DUA_SUCCESS);
  int32_t dup[2] = {s0, s0};
  dua_tensor kv2 = dua_tensor_contiguous(buf, 0, DUA_F32, 2, 2, 8, 64), k16 = kv, kbad = kv;
  k16.dtype = DUA_F16;
  kbad.shape[1] = 3;
  struct {
    int32_t layer, n;
    const int32_t *seqs;
    const dua_tensor *k, *v;
    const char *msg;
  } ap[] = {{2, 1, &s0, &kv, &kv, "layer = 2"},
            {0, 0, &s0, &kv, &kv, "n = 0"},
            {0, 1, NULL, &kv, &kv, "seqs is NULL"},
            {0, 1, &s1, &kv, &kv, "seqs[0] = 1 is not a live"},
            {0, 2, dup, &kv2, &kv2, "sequences must be distinct"},
            {0, 1, &s0, &kbad, &kv, "k.shape[1]"},
            {0, 1, &s0, &kv, &k16, "v.dtype"},
            {0, 1, &s0, &kv, NULL, "tensor v is NULL"}};
  for (size_t i = 0; i < sizeof ap / sizeof ap[0]; i++) {
    ck_assert_int_eq(dua_kv_append(c, ap[i].layer, ap[i].n, ap[i].seqs, ap[i].k, ap[i].v),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(dua_context_last_error(ctx), ap[i].msg), "append %zu: \"%s\" lacks \"%s\"", i,
                  dua_context_last_error(ctx), ap[i].msg);
  }
  int32_t len = -1;
  ck_assert_int_eq(dua_kv_seq_length(c, s0, 0, &len), DUA_SUCCESS);
  ck_assert_int_eq(len, 8);
  ck_assert_int_eq(dua_kv_seq_length(c, s1, 0, &len), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_kv_seq_free(c, 9), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "seq = 9"));
  ck_assert_int_eq(dua_kv_seq_add(c, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_kv_seq_fork(c, s1, &len), DUA_ERROR_INVALID_ARGUMENT);

  /* decode */
  lay y = lay_base(64, 16, 1, 4, 2), nc = lay_base(64, 16, 1, 4, 2), kvh = lay_base(64, 16, 1, 4, 1),
      shortn = lay_base(4, 16, 1, 4, 2), b3 = lay_base(64, 16, 3, 4, 2);
  nc.desc.causal = 0;
  lay *lays[5] = {&y, &nc, &kvh, &shortn, &b3};
  for (int i = 0; i < 5; i++)
    lay_make(lays[i]);
  int32_t counts[4 * 4] = {0}, idx[4 * 4 * 4] = {0};
  dua_layout *lists = NULL;
  char err[128];
  ck_assert_int_eq(dua_layout_create_from_lists(&y.desc, counts, idx, &lists, err, sizeof err), DUA_SUCCESS);
  dua_buffer *bo, *bl;
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * 4 * 5 * 64 * 4, &bo), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_create(ctx, 2 * 4 * 2 * 4, &bl), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bo, 0, dua_buffer_size(bo), 0x5A), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_fill_bytes(bl, 0, dua_buffer_size(bl), 0x5A), DUA_SUCCESS);
  dua_tensor q = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 4, 1, 64),
             o = dua_tensor_contiguous(bo, 0, DUA_F32, 1, 4, 1, 64);
  dua_tensor lse = dua_tensor_contiguous(bl, 0, DUA_F32, 1, 4, 1, 1);
  dua_tensor q5 = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 4, 5, 64),
             o5 = dua_tensor_contiguous(bo, 0, DUA_F32, 1, 4, 5, 64);
  dua_tensor q32 = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 4, 1, 32), o16 = o, l16 = lse;
  o16.dtype = DUA_F16;
  l16.dtype = DUA_F16;
  dua_tensor q2 = dua_tensor_contiguous(buf, 0, DUA_F32, 2, 4, 1, 64),
             o2 = dua_tensor_contiguous(bo, 0, DUA_F32, 2, 4, 1, 64);
  dua_tensor oq = dua_tensor_contiguous(buf, 512, DUA_F32, 1, 4, 1, 64); /* overlaps q */
  dua_attention_params naive, neg;
  dua_attention_params_init(&naive);
  dua_attention_params_init(&neg);
  naive.algo = DUA_ALGO_NAIVE;
  neg.scale = -2.0f;
  int32_t ss[2] = {s0, s0}, dead = s1, s_bad = 77;
  struct {
    dua_kv_cache *cache;
    int32_t layer;
    dua_layout *l;
    const dua_attention_params *p;
    const int32_t *seqs;
    const dua_tensor *q, *o, *lse;
    dua_status want;
    const char *msg;
  } dc[] = {
      {NULL, 0, y.l, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "cache is NULL"},
      {c, 0, NULL, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "layout is NULL"},
      {c, 3, y.l, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "layer = 3"},
      {c, 0, nc.l, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "layout.causal = 0"},
      {c, 0, kvh.l, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "layout.kv_heads = 1"},
      {c, 0, lists, NULL, &s0, &q, &o, &lse, DUA_ERROR_UNSUPPORTED, "block lists"},
      {c, 0, y.l, &naive, &s0, &q, &o, &lse, DUA_ERROR_UNSUPPORTED, "DUA_ALGO_NAIVE"},
      {c, 0, y.l, &neg, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "params.scale"},
      {c, 0, y.l, NULL, &s0, &q5, &o5, NULL, DUA_ERROR_INVALID_ARGUMENT, "q.shape[2] (tokens) = 5"},
      {c, 0, y.l, NULL, &s0, &q32, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "q.shape[3]"},
      {c, 0, y.l, NULL, &s0, &q, &o16, &lse, DUA_ERROR_INVALID_ARGUMENT, "o.dtype"},
      {c, 0, y.l, NULL, &s0, &q, &o, &l16, DUA_ERROR_INVALID_ARGUMENT, "lse.dtype"},
      {c, 0, y.l, NULL, NULL, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "seqs is NULL"},
      {c, 0, y.l, NULL, &dead, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "seqs[0] = 1 is not a live"},
      {c, 0, y.l, NULL, &s_bad, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "seqs[0] = 77"},
      {c, 0, shortn.l, NULL, &s0, &q, &o, &lse, DUA_ERROR_INVALID_ARGUMENT, "seq_len = 4"},
      {c, 0, b3.l, NULL, ss, &q2, &o2, NULL, DUA_ERROR_INVALID_ARGUMENT, "layout.batch = 3"},
      {c, 0, y.l, NULL, &s0, &q, &oq, &lse, DUA_ERROR_INVALID_ARGUMENT, "output o overlaps input q"},
      {c, 0, y.l, NULL, &s0, &q, NULL, &lse, DUA_ERROR_INVALID_ARGUMENT, "tensor o is NULL"},
  };
  for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++) {
    dua_status st =
        dua_decode(ctx, dc[i].cache, dc[i].layer, dc[i].l, dc[i].p, dc[i].seqs, dc[i].q, dc[i].o, dc[i].lse);
    ck_assert_msg(st == dc[i].want, "decode case %zu: got %s", i, dua_status_string(st));
    ck_assert_msg(strstr(dua_context_last_error(ctx), dc[i].msg), "decode case %zu: \"%s\" lacks \"%s\"", i,
                  dua_context_last_error(ctx), dc[i].msg);
  }
  ck_assert_int_eq(dua_decode(NULL, c, 0, y.l, NULL, &s0, &q, &o, &lse), DUA_ERROR_INVALID_ARGUMENT);
  char *outer = getenv("DUA_DECODE_KERNEL") ? strdup(getenv("DUA_DECODE_KERNEL")) : NULL;
  env_when_idle(ctx, "DUA_DECODE_KERNEL", "v1"); /* the developer switch: regs or staged only */
  ck_assert_int_eq(dua_decode(ctx, c, 0, y.l, NULL, &s0, &q, &o, &lse), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "DUA_DECODE_KERNEL = \"v1\""));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  restore_env("DUA_DECODE_KERNEL", outer);
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  unsigned char *back = malloc(dua_buffer_size(bo));
  ck_assert_int_eq(dua_buffer_read(bo, 0, dua_buffer_size(bo), back), DUA_SUCCESS);
  for (size_t i = 0; i < dua_buffer_size(bo); i++)
    ck_assert_msg(back[i] == 0x5A, "output byte %zu was written by a refused call", i);
  ck_assert_int_eq(dua_buffer_read(bl, 0, dua_buffer_size(bl), back), DUA_SUCCESS);
  for (size_t i = 0; i < dua_buffer_size(bl); i++)
    ck_assert_msg(back[i] == 0x5A, "lse byte %zu was written by a refused call", i);
  free(back);
  for (int i = 0; i < 5; i++)
    lay_free(lays[i]);
  dua_layout_destroy(lists);
  dua_buffer_destroy(bo);
  dua_buffer_destroy(bl);
  dua_buffer_destroy(buf);
  dua_kv_cache_destroy(c);
  dua_context_destroy(ctx);
}
END_TEST

/* Tuned plans (dua_context_set_tuning, as a tuning database entry would set them): the regs kernel on any
 * device, other tiles and work-groups, fewer rows per work-group (GQA groups split into head chunks), and
 * split-KV thresholds that split as far as the contexts allow, each against the reference; the plan the call
 * uses is the tuned one (dua_decode_plan_get). _i: fp32 or fp16 cache. */
START_TEST(tuned_plans) {
  fixture f;
  const int N = 300;
  const dua_dtype dt = _i ? DUA_F16 : DUA_F32;
  dua_kv_cache_desc d = cache_desc(1, 2, 64, 16, 60, 3, N, dt);
  d.page_order_seed = 7;
  fx_open(&f, &d, 280 + (uint64_t)_i);
  int32_t s[3] = {fx_add(&f), fx_add(&f), fx_add(&f)};
  fx_append_ok(&f, 0, 1, &s[0], 300, dt);
  fx_append_ok(&f, 0, 1, &s[1], 177, DUA_F32);
  fx_append_ok(&f, 0, 1, &s[2], 33, dt);
  const int32_t regs[3] = {0, 32, 64}, split[3] = {64, 1, 256};
  ck_assert_int_eq(dua_context_set_tuning(f.ctx, "decode", dt, 64, regs, 3), DUA_SUCCESS);
  ck_assert_int_eq(dua_context_set_tuning(f.ctx, "decode_split", dt, 64, split, 3), DUA_SUCCESS);
  /* one query row per work-group: Hq = Hkv */
  lay y = lay_base(N, 32, 1, 2, 2);
  y.depths[0] = 0, y.depths[1] = 2;
  y.desc.depths = y.depths;
  y.desc.window = 20;
  lay_make(&y);
  dua_decode_plan_info pi;
  ck_assert_int_eq(dua_decode_plan_get(f.ctx, f.cache, 0, y.l, s, 3, 1, &pi), DUA_SUCCESS);
  ck_assert(pi.source == DUA_TUNING_OVERRIDE && pi.split_source == DUA_TUNING_OVERRIDE);
  ck_assert(pi.staged == 0 && pi.tile_n == 32 && pi.threads == 64);
  ck_assert_int_gt(pi.splits, 8);
  dopts o = dopts_make(1, DUA_F32);
  check_decode_free(&f, &y, 0, 3, s, &o);
  lay_free(&y);
  /* GQA 8/2 with 2 tokens: regs with at most 4 rows (2 heads per work-group, 2 head chunks), then staged
   * with at most 8 rows (4 heads, one chunk) */
  lay g = lay_base(N, 32, 1, 8, 2);
  static const int32_t depths[8] = {0, -1, 1, 2, -1, 0, 3, 1};
  memcpy(g.depths, depths, sizeof depths);
  g.desc.depths = g.depths;
  g.desc.sink = 3;
  lay_make(&g);
  const int32_t plans[2][4] = {{0, 16, 32, 4}, {1, 64, 128, 8}};
  const int hpw[2] = {2, 4};
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(dua_context_set_tuning(f.ctx, "decode_gqa", dt, 64, plans[k], 4), DUA_SUCCESS);
    ck_assert_int_eq(dua_decode_plan_get(f.ctx, f.cache, 0, g.l, s, 3, 2, &pi), DUA_SUCCESS);
    ck_assert_int_eq(pi.source, DUA_TUNING_OVERRIDE);
    ck_assert(pi.staged == plans[k][0] && pi.tile_n == plans[k][1] && pi.threads == plans[k][2]);
    ck_assert_int_eq(pi.heads_per_group, hpw[k]);
    o = dopts_make(2, k ? DUA_F16 : DUA_F32);
    check_decode_free(&f, &g, 0, 3, s, &o);
  }
  lay_free(&g);
  fx_close(&f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("decode");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, dense_variable_lengths);
  tcase_add_loop_test(tc, random_positional, 0, 6);
  tcase_add_loop_test(tc, random_positional_mma, 0, 6);
  tcase_add_loop_test(tc, content_paths, 0, 3);
  tcase_add_test(tc, gqa_group_and_head_chunks);
  tcase_add_loop_test(tc, split_kv_merge, 0, 2);
  tcase_add_loop_test(tc, fragmented_block_tables, 0, 2);
  tcase_add_test(tc, fork_copy_on_write);
  tcase_add_loop_test(tc, empty_and_short_contexts, 0, 2);
  tcase_add_loop_test(tc, causality_bit_for_bit, 0, 2);
  tcase_add_test(tc, capacity_exhaustion_changes_nothing);
  tcase_add_test(tc, invalid_arguments_named);
  tcase_add_loop_test(tc, tuned_plans, 0, 2);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
