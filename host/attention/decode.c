/* decode.c: dua_decode: argument validation, the launch plan (kernel, query heads per work-group, tile,
 * bitmap size, split-KV count) and the launch of dua_decode (cl/attn_decode.cl or cl/attn_decode_warp.cl)
 * and, with several splits, cl/attn_decode_merge.cl's dua_decode_merge. Steady state: no allocation on the
 * device, no synchronization, and an upload only when the (sequence, length) table differs from the previous
 * call's. */
#include "attention/forward_internal.h"
#include "attention/kv_internal.h"
#include "tuning/tuning.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Four kernels: cl/attn_decode.cl's "regs" keeps K and V in registers (16-byte loads, an online softmax per
 * key group) and "staged" stages them through local memory (4-element loads); cl/attn_decode_warp.cl's
 * "warp" lets every warp stream its own units with no barrier (NVIDIA inline-PTX shuffles; emulated with
 * local memory on other devices, for tests only), and its "mma" variant (same file, DUA_DECODE_MMA) does the
 * products of the work-group's query rows on tensor cores, 16 keys at a time. mma is the compiled default for
 * fp16 caches with head dim 64 or 128 wherever inline PTX works (bench/RESULTS.md, decode on tensor cores:
 * GQA 32/8 16K dense 0.751 vs 1.290 ms, 95% of copy; heads 8 0.743 vs 0.771 ms), with one split per wave of
 * work-groups; the warp kernel elsewhere there when head_dim allows it: in decode4 (bench/RESULTS.md, commit
 * ac3723f) it beat the other kernels everywhere but GQA 32/8 at depth 4 (equal): 16K dense fp16 0.80 vs 1.70
 * ms (90% of copy), fp32 1.47 vs 1.84 ms, depth 4 fp16 0.082 vs 0.164 ms, GQA dense 1.92 vs 2.34 ms; its
 * splits aim at 2 work-groups per compute unit (decode5). The plan
 * (kernel, tile, work-items, most rows per work-group) and the split-KV thresholds come through the tuning
 * lookup chain (tuning/tuning.h: kernels "decode" for calls with one query row per work-group, "decode_gqa"
 * for several, and "decode_split"). Without a tuning source the compiled defaults (tuning/decode_params.c)
 * follow the H100 measurements of bench/RESULTS.md (decode2, commit 44b83f7): regs only for an fp16 cache
 * with one query row per work-group (no GQA sharing, one token) on GPU devices, where its tile 32,128,8 beat
 * staged (16K dense 1.71 vs 2.08 ms, depth 4 0.165 vs 0.177 ms); staged everywhere else: it won fp32 at depth
 * 4 (0.172 vs 0.192 ms at regs' best fp32 tile) and GQA 32/8 (2.36 vs 3.20 ms dense), and the rest is
 * unmeasured (CPU devices, several query tokens). A compiled (or developer) plan is shrunk to the device's
 * work-group size and local memory as needed; a tuned plan runs exactly as stored or not at all (the chain
 * then goes on to the compiled plan). DUA_DECODE_KERNEL=regs|staged|warp|mma,
 * DUA_DECODE_TILE=tile_n,threads,rows and DUA_DECODE_SPLITS=n override the plan (development);
 * DUA_DECODE_HALF=0|1|2 picks regs' fp16 conversion (cl/attn_decode.cl DUA_HALF_CVT); DUA_DECODE_WARP_VPL=1|2
 * the warp kernel's 16-byte loads per lane and key row (cl/attn_decode_warp.cl VPL). Splits are sized by the
 * keys a row can see, not the context length. */
#define DECODE_MAX_UNITS 65536  /* key units of the layout's N (the bitmap is WORDS = units/32 words) */
#define DECODE_WARP_MAX_UNIT 64 /* warp kernel: largest key unit (a warp streams whole units) */

typedef struct decode_plan {
  int tokens, hpw, hchunks, tile_n, threads, words, unit_shift, page_shift, splits;
  int staged, half_cvt, key_groups; /* kernel (0 regs, 1 staged, 2 warp, 3 mma); fp16 conversion; regs' KG */
  int unroll, vpl, emulate;         /* warp: key steps per batch, 16-byte loads per lane and key, emulated */
  dua_decode_split_params split;    /* the split-KV thresholds (unused with DUA_DECODE_SPLITS) */
} decode_plan;

static int log2i(int x) {
  int s = 0;
  while ((1 << s) < x)
    s++;
  return s;
}

static size_t local_bytes(const decode_plan *p, int head_dim, int fp16) {
  const dua_decode_params tp = {p->staged, p->tile_n, p->threads, p->hpw * p->tokens};
  return dua_decode_local_bytes(&tp, p->hpw * p->tokens, p->words, head_dim, fp16) +
         (p->emulate ? dua_decode_emu_bytes(p->threads) : 0); /* the emulated warp instructions' scratch */
}

static int is_nvidia(const dua_context *ctx) {
  return dua_device_is_nvidia(&ctx->info);
}

/* The warp kernel's build parameters for a unit of `unit` tokens: key steps per batch (tile_n keys, at most
 * the unit), loads per lane (DUA_DECODE_WARP_VPL), shuffles emulated off NVIDIA's PTX. */
static dua_status warp_setup(dua_context *ctx, const dua_kv_cache *c, int unit, decode_plan *p) {
  p->emulate = !(is_nvidia(ctx) && ctx->info.nv_mma_f16);
  if (p->staged == 3) { /* mma: 16-key steps; smaller units (pages or blocks under 16 tokens) take warp */
    if (unit >= 16)
      return DUA_SUCCESS;
    p->staged = 2;
    p->tile_n = 8;
  }
  const int fp16 = c->desc.dtype == DUA_F16, lanes = dua_decode_warp_lanes(c->desc.head_dim, fp16);
  const char *v = getenv("DUA_DECODE_WARP_VPL");
  /* several rows per work-group: two loads per lane halve the shuffles per score (GQA 32/8 16K fp16 dense:
   * 1.49 vs 1.99 ms, with 8 keys per batch 1.24 ms; bench/RESULTS.md) */
  p->vpl = p->hpw * p->tokens > 1 ? 2 : 1;
  if (v && *v) {
    if (strcmp(v, "1") != 0 && strcmp(v, "2") != 0)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "DUA_DECODE_WARP_VPL = \"%s\" is not 1 or 2", v);
    p->vpl = *v - '0';
  }
  if (lanes % p->vpl)
    p->vpl = 1; /* one lane per key row already */
  const int kpw = 32 / (lanes / p->vpl);
  p->unroll = p->tile_n / kpw < 1 ? 1 : p->tile_n / kpw;
  while (p->unroll > 1 && p->unroll * kpw > unit)
    p->unroll /= 2;
  return DUA_SUCCESS;
}

/* The regs kernel's work-group: NT = KG x (loads per row) work-items with KG a power of two <= tile_n,
 * tile_n | NT (whole work-items per key in Q.K) and KG | tile_n (whole keys per key group); shrinks the
 * tile (not below 16) or grows KG until both hold, and keeps NT within the device's work-group size. */
static int fit_groups(decode_plan *p, int nv, size_t max_wg) {
  int kg = 1;
  while (kg * 2 * nv <= p->threads && kg * 2 <= p->tile_n)
    kg *= 2;
  while ((kg * nv) % p->tile_n)
    if (kg * nv > p->tile_n && p->tile_n > 16)
      p->tile_n /= 2;
    else
      kg *= 2;
  while ((size_t)kg * nv > max_wg && kg > 1 && p->tile_n > 16) { /* halve both: divisibility holds */
    kg /= 2;
    p->tile_n /= 2;
  }
  p->key_groups = kg;
  p->threads = kg * nv;
  return (size_t)p->threads <= max_wg;
}

/* Query heads per work-group: the largest divisor of the GQA group whose rows (x tokens) fit rows. */
static int heads_per_group(int group, int tokens, int rows) {
  for (int d = group; d >= 1; d--)
    if (group % d == 0 && d * tokens <= rows)
      return d;
  return 1;
}

/* Key units of the layout's N for the plan's tile: unit_shift and words; 0 if above DECODE_MAX_UNITS. */
static int set_units(decode_plan *p, const dua_kv_cache *c, const dua_layout *l, int64_t *units_out) {
  const int unit = c->desc.page_tokens < l->block ? c->desc.page_tokens : l->block;
  const int cap = p->staged >= 2 ? DECODE_WARP_MAX_UNIT : p->tile_n; /* warp, mma: tile_n is a batch */
  const int u = unit < cap ? unit : cap;
  p->unit_shift = log2i(u);
  const int64_t units = ((int64_t)l->seq_len + u - 1) / u;
  *units_out = units;
  if (units > DECODE_MAX_UNITS)
    return 0;
  p->words = 8;
  while ((int64_t)p->words * 32 < units)
    p->words *= 2;
  return 1;
}

typedef struct plan_call {
  dua_context *ctx;
  const dua_kv_cache *c;
  const dua_layout *l;
  int tokens;
} plan_call;

/* A tuned plan exactly as given (the kernels' static rules already hold): 1 if this call can run it with no
 * shrinking (rows for the staged kernel's work-items, units, local memory), filling p. */
static int plan_exact(const plan_call *pc, const dua_decode_params *tp, decode_plan *p) {
  const dua_kv_cache *c = pc->c;
  const int group = pc->l->heads / pc->l->kv_heads, fp16 = c->desc.dtype == DUA_F16;
  p->staged = tp->staged, p->tile_n = tp->tile_n, p->threads = tp->threads, p->tokens = pc->tokens;
  p->hpw = heads_per_group(group, pc->tokens, tp->rows);
  p->key_groups = p->threads * dua_decode_load_elems(fp16) / c->desc.head_dim;
  p->page_shift = log2i(c->desc.page_tokens);
  int64_t units;
  if (p->staged >= 2 && (!set_units(p, c, pc->l, &units) || (p->staged == 3 && (1 << p->unit_shift) < 16) ||
                         warp_setup(pc->ctx, c, 1 << p->unit_shift, p) != DUA_SUCCESS))
    return 0;
  if ((p->staged == 1 && p->threads < p->hpw * p->tokens) || !set_units(p, c, pc->l, &units) ||
      local_bytes(p, c->desc.head_dim, fp16) > pc->ctx->info.local_mem_bytes)
    return 0;
  p->hchunks = group / p->hpw;
  return 1;
}

static int plan_fits(const dua_decode_params *tp, void *arg) {
  decode_plan p;
  memset(&p, 0, sizeof p);
  return plan_exact(arg, tp, &p);
}

/* A compiled or developer plan, shrunk to the device as decode always did (tile, then heads per group). */
static dua_status plan_adjusted(const plan_call *pc, const dua_decode_params *tp, decode_plan *p) {
  static const char *fn = "dua_decode";
  dua_context *ctx = pc->ctx;
  const dua_kv_cache *c = pc->c;
  const dua_layout *l = pc->l;
  const int group = l->heads / l->kv_heads, fp16 = c->desc.dtype == DUA_F16;
  int threads = tp->threads;
  p->staged = tp->staged;
  if ((size_t)threads > ctx->info.max_work_group_size)
    threads = (int)ctx->info.max_work_group_size;
  if (threads < (p->staged >= 2 ? 32 : 16))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the device's work-groups (%zu work-items) are too small",
                    fn, ctx->info.max_work_group_size);
  p->tokens = pc->tokens;
  p->hpw = heads_per_group(group, pc->tokens, tp->rows);
  p->tile_n = tp->tile_n;
  p->threads = threads;
  if (p->staged == 0 &&
      !fit_groups(p, c->desc.head_dim / dua_decode_load_elems(fp16), ctx->info.max_work_group_size))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the device's work-groups (%zu work-items) are too small",
                    fn, ctx->info.max_work_group_size);
  p->page_shift = log2i(c->desc.page_tokens);
  for (;;) {
    int64_t units;
    if (!set_units(p, c, l, &units))
      return dua_fail(
          ctx, DUA_ERROR_UNSUPPORTED,
          "%s: the layout's seq_len = %d is %lld key units of %d tokens; decode handles at most %d", fn,
          (int)l->seq_len, (long long)units, 1 << p->unit_shift, DECODE_MAX_UNITS);
    dua_status st;
    if (p->staged >= 2 && (st = warp_setup(ctx, c, 1 << p->unit_shift, p)) != DUA_SUCCESS)
      return st;
    if (local_bytes(p, c->desc.head_dim, fp16) <= ctx->info.local_mem_bytes)
      break;
    if (p->staged < 2 && p->tile_n > 16 && (p->staged || p->tile_n > p->key_groups))
      p->tile_n /= 2; /* regs: tile_n | NT still holds, KG | tile_n while KG < tile_n */
    else if (p->hpw > 1)
      for (int d = p->hpw - 1; d >= 1; d--) {
        if (group % d == 0) {
          p->hpw = d;
          break;
        }
      }
    else
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                      "%s: needs %zu bytes of local memory per work-group, the device has %llu", fn,
                      local_bytes(p, c->desc.head_dim, fp16), (unsigned long long)ctx->info.local_mem_bytes);
  }
  p->hchunks = group / p->hpw;
  return DUA_SUCCESS;
}

/* Most keys one query row can see in a context of max_len tokens: for a positional tree the largest subtree
 * of any head (g_h blocks, one more for a shifted edge) plus window and sink; the whole context otherwise.
 * Splits are sized by it, so a sparse layout is not cut into splits with nothing to read. */
static int64_t visible_tokens(const dua_layout *l, int32_t max_len) {
  if (l->kind != DUA_LAYOUT_POSITIONAL)
    return max_len;
  int64_t g = 0;
  for (int h = 0; h < l->heads; h++)
    if (l->group[h] > g)
      g = l->group[h];
  const int64_t v = (g + 1) * l->block + l->window + 1 + l->sink;
  return v < max_len ? v : max_len;
}

static dua_status make_plan(dua_context *ctx, const dua_kv_cache *c, const dua_layout *l, int tokens,
                            int32_t batch, int32_t max_len, decode_plan *p, dua_tuning_source *source,
                            dua_tuning_source *split_source) {
  const int group = l->heads / l->kv_heads, fp16 = c->desc.dtype == DUA_F16, Dh = c->desc.head_dim;
  const char *env = getenv("DUA_DECODE_HALF");
  p->half_cvt = env && *env >= '0' && *env <= '2' ? *env - '0' : 0;
  const plan_call pc = {ctx, c, l, tokens};
  dua_decode_params tp;
  int adjust;
  dua_status st = dua_tuning_decode(ctx, Dh, fp16, group == 1 && tokens == 1, plan_fits, (void *)&pc, &tp,
                                    &adjust, source, NULL, 0);
  if (st != DUA_SUCCESS)
    return st;
  if (adjust) {
    if ((st = plan_adjusted(&pc, &tp, p)) != DUA_SUCCESS)
      return st;
  } else if (!plan_exact(&pc, &tp, p)) { /* the chain checked it with plan_fits */
    return dua_fail(ctx, DUA_ERROR_INTERNAL, "dua_decode: the tuned plan does not fit after all");
  }
  /* the compiled thresholds depend on the kernel (the warp kernel's: 2 work-groups per compute unit x rows)
   */
  const dua_decode_params run = {p->staged, p->tile_n, p->threads, p->hpw * p->tokens};
  int fixed;
  if ((st = dua_tuning_decode_split(ctx, Dh, fp16, &run, p->hpw * p->tokens, &p->split, &fixed, split_source,
                                    NULL, 0)) != DUA_SUCCESS)
    return st;
  const int64_t units = (visible_tokens(l, max_len) + (1 << p->unit_shift) - 1) >> p->unit_shift;
  p->splits = fixed ? fixed
                    : dua_decode_split_count(&p->split, (int64_t)batch * l->kv_heads * p->hchunks, units,
                                             (int)ctx->info.compute_units);
  return DUA_SUCCESS;
}

dua_status dua_decode_plan_get(dua_context *ctx, dua_kv_cache *c, int32_t layer, const dua_layout *l,
                               const int32_t *seqs, int32_t num_seqs, int32_t tokens,
                               dua_decode_plan_info *out) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!c || !l || !seqs || !out || num_seqs < 1 || tokens < 1 || tokens > 4 || layer < 0 ||
      layer >= c->desc.layers || l->kv_heads != c->desc.kv_heads || l->kind == DUA_LAYOUT_LIST)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_decode_plan_get: bad arguments");
  int32_t max_len = 0;
  for (int32_t i = 0; i < num_seqs; i++) {
    if (seqs[i] < 0 || seqs[i] >= c->desc.max_seqs || !c->live[seqs[i]])
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_decode_plan_get: seqs[%d] = %d is not live",
                      (int)i, (int)seqs[i]);
    const int32_t len = c->length[(size_t)seqs[i] * c->desc.layers + (size_t)layer];
    max_len = len > max_len ? len : max_len;
  }
  decode_plan p;
  memset(&p, 0, sizeof p);
  memset(out, 0, sizeof *out);
  dua_status st = make_plan(ctx, c, l, tokens, num_seqs, max_len, &p, &out->source, &out->split_source);
  if (st != DUA_SUCCESS)
    return st;
  out->staged = p.staged, out->tile_n = p.tile_n, out->threads = p.threads;
  out->heads_per_group = p.hpw, out->splits = p.splits;
  out->unroll = p.staged == 2 ? p.unroll : 0, out->vpl = p.staged == 2 ? p.vpl : 0;
  out->split = p.split;
  return DUA_SUCCESS;
}

static dua_status validate(dua_context *ctx, dua_kv_cache *c, int32_t layer, const dua_layout *l,
                           const dua_attention_params *p, const int32_t *seqs, const dua_tensor *q,
                           const dua_tensor *o, const dua_tensor *lse, int32_t *max_len) {
  static const char *fn = "dua_decode";
  dua_status st;
  if (c->ctx != ctx)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: the cache belongs to another context", fn);
  if (layer < 0 || layer >= c->desc.layers)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: layer = %d is not in 0..%d", fn, (int)layer,
                    (int)c->desc.layers - 1);
  if (l->kind == DUA_LAYOUT_LIST)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: layouts made from block lists are not supported", fn);
  if (!l->causal)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: layout.causal = 0; decode is causal by construction (make the layout causal)", fn);
  if (l->kv_heads != c->desc.kv_heads)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: layout.kv_heads = %d differs from the cache's %d",
                    fn, (int)l->kv_heads, (int)c->desc.kv_heads);
  if (p->algo < DUA_ALGO_AUTO || p->algo > DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.algo = %d is not a dua_attention_algo", fn,
                    (int)p->algo);
  if (p->algo == DUA_ALGO_NAIVE || p->algo == DUA_ALGO_LIST)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s: params.algo = %s is not supported (decode enumerates the rule)", fn,
                    p->algo == DUA_ALGO_NAIVE ? "DUA_ALGO_NAIVE" : "DUA_ALGO_LIST");
  if (!isfinite(p->scale) || p->scale < 0.0f)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.scale = %g must be finite and >= 0", fn,
                    (double)p->scale);
  if (p->level_bias && (st = dua_check_level_bias(ctx, fn, l, p->level_bias)) != DUA_SUCCESS)
    return st;
  if (p->token_scale || p->token_table)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s: params.token_scale/token_table: decode has no token-tree bias", fn);
  if ((st = dua_tensor_check(ctx, q, "q")) != DUA_SUCCESS ||
      (st = dua_tensor_check(ctx, o, "o")) != DUA_SUCCESS)
    return st;
  const int64_t S = q->shape[0], T = q->shape[2];
  if (T < 1 || T > 4)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: q.shape[2] (tokens) = %lld must be 1..4", fn,
                    (long long)T);
  if (S > INT32_MAX / 4)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: q.shape[0] (sequences) = %lld is too large", fn,
                    (long long)S);
  if ((st = dua_check_shape(ctx, fn, q, "q", S, l->heads, T, c->desc.head_dim)) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, o, "o", S, l->heads, T, c->desc.head_dim)) != DUA_SUCCESS)
    return st;
  if (o->dtype != q->dtype)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: o.dtype = %d differs from q.dtype = %d", fn,
                    (int)o->dtype, (int)q->dtype);
  if (q->strides[3] != 1 || o->strides[3] != 1)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: %s.strides[3] = %lld; head_dim must be contiguous", fn,
                    q->strides[3] != 1 ? "q" : "o",
                    (long long)(q->strides[3] != 1 ? q->strides[3] : o->strides[3]));
  if (lse) {
    if ((st = dua_tensor_check(ctx, lse, "lse")) != DUA_SUCCESS ||
        (st = dua_check_shape(ctx, fn, lse, "lse", S, l->heads, T, 1)) != DUA_SUCCESS)
      return st;
    if (lse->dtype != DUA_F32)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: lse.dtype must be DUA_F32", fn);
  }
  if (l->batch != 1 && l->batch != S)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: layout.batch = %d must be 1 or the number of sequences q.shape[0] = %lld", fn,
                    (int)l->batch, (long long)S);
  if (!seqs)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: seqs is NULL", fn);
  *max_len = 0;
  for (int64_t i = 0; i < S; i++) {
    const int32_t s = seqs[i];
    if (s < 0 || s >= c->desc.max_seqs || !c->live[s])
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: seqs[%lld] = %d is not a live sequence", fn,
                      (long long)i, (int)s);
    const int32_t len = c->length[(size_t)s * c->desc.layers + (size_t)layer];
    if (len > l->seq_len)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: sequence %d holds %d tokens at layer %d, more than the layout's seq_len = %d", fn,
                      (int)s, (int)len, (int)layer, (int)l->seq_len);
    if (len > *max_len)
      *max_len = len;
  }
  const dua_tensor *outs[2] = {o, lse}, *ins[2] = {q, p->level_bias};
  static const char *const out_names[2] = {"o", "lse"}, *const in_names[2] = {"q", "level_bias"};
  return dua_check_outputs(ctx, fn, outs, out_names, 2, ins, in_names, 2);
}

dua_status dua_decode(dua_context *ctx, dua_kv_cache *cache, int32_t layer, dua_layout *l,
                      const dua_attention_params *params, const int32_t *seqs, const dua_tensor *q,
                      const dua_tensor *o, const dua_tensor *lse) {
  static const char *fn = "dua_decode";
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!cache || !l)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s is NULL", fn, cache ? "layout" : "cache");
  dua_attention_params defaults;
  if (!params) {
    dua_attention_params_init(&defaults);
    params = &defaults;
  }
  int32_t max_len = 0;
  dua_status st = validate(ctx, cache, layer, l, params, seqs, q, o, lse, &max_len);
  if (st != DUA_SUCCESS)
    return st;
  const int32_t S = (int32_t)q->shape[0], T = (int32_t)q->shape[2], Dh = cache->desc.head_dim;
  decode_plan plan;
  memset(&plan, 0, sizeof plan);
  if ((st = make_plan(ctx, cache, l, T, S, max_len, &plan, NULL, NULL)) != DUA_SUCCESS)
    return st;
  dua_layout_device *dev = NULL;
  if ((st = dua_layout_device_get(ctx, l, 0, &dev)) != DUA_SUCCESS)
    return st;

  /* the (sequence, length) table of this call */
  int32_t *calls = malloc((size_t)S * 2 * sizeof(int32_t));
  if (!calls)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  for (int32_t i = 0; i < S; i++) {
    calls[2 * i] = seqs[i];
    calls[2 * i + 1] = cache->length[(size_t)seqs[i] * cache->desc.layers + (size_t)layer];
  }
  st = dua_kv_table_set(cache, &cache->decode_calls, calls, (size_t)S * 2, fn);
  free(calls);
  if (st != DUA_SUCCESS)
    return st;

  char options[400];
  snprintf(options, sizeof options,
           "-DHEAD_DIM=%d -DTOKENS=%d -DHPW=%d -DTILE_N=%d -DNT=%d -DWORDS=%d -DDUA_FP16=%d -DDUA_TREE=%d "
           "-DDUA_BIAS=%d -DDUA_DECODE_STAGED=%d -DDUA_HALF_CVT=%d -DUNROLL=%d -DVPL=%d -DDUA_MMA_EMULATE=%d "
           "-DDUA_DECODE_MMA=%d -DDUA_MMA_SPLIT=%d",
           Dh, T, plan.hpw, plan.tile_n, plan.threads, plan.words, cache->desc.dtype == DUA_F16,
           l->kind == DUA_LAYOUT_CONTENT, params->level_bias != NULL, plan.staged == 1, plan.half_cvt,
           plan.unroll > 0 ? plan.unroll : 1, plan.vpl > 0 ? plan.vpl : 1, plan.emulate, plan.staged == 3,
           plan.staged == 3 && q->dtype == DUA_F32);
  const char *sources = plan.staged >= 2
                            ? "common,attn_decode_units,nv_mma_ops,attn_decode_warp,attn_decode_merge"
                            : "common,attn_decode_units,attn_decode,attn_decode_merge";
  cl_kernel kernel, merge = NULL;
  if ((st = dua_program_kernel(ctx, sources, options, "dua_decode", &kernel)) != DUA_SUCCESS)
    return st;
  if (plan.splits > 1 &&
      (st = dua_program_kernel(ctx, sources, options, "dua_decode_merge", &merge)) != DUA_SUCCESS)
    return st;

  const size_t rows = (size_t)S * (size_t)l->heads * (size_t)T;
  cl_mem part = dev->dummy;
  cl_long part_lse = (cl_long)(rows * (size_t)plan.splits * (size_t)Dh);
  if (plan.splits > 1 &&
      (st = dua_context_scratch(ctx, ((size_t)part_lse + rows * (size_t)plan.splits) * sizeof(float),
                                &part)) != DUA_SUCCESS)
    return st;

  const float scale = params->scale > 0.0f ? params->scale : 1.0f / sqrtf((float)Dh);
  cl_float scale_log2 = scale * 1.4426950408889634f;
  shape_arg shape = dua_shape_of(l);
  cl_int max_pages = cache->max_pages, page_shift = plan.page_shift, unit_shift = plan.unit_shift;
  cl_int qo_fp16 = q->dtype == DUA_F16, has_lse = lse != NULL, splits = plan.splits;
  cl_int layout_batch = l->batch,
         bias_stride = params->level_bias ? (cl_int)params->level_bias->strides[0] : 0;
  cl_int hchunks = plan.hchunks, hq = l->heads;
  cl_long4 qs = dua_strides4(q), os = dua_strides4(o), ls = lse ? dua_strides4(lse) : os;
  cl_long4 offs = {{dua_elem_offset(q), dua_elem_offset(o), lse ? dua_elem_offset(lse) : 0,
                    params->level_bias ? dua_elem_offset(params->level_bias) : 0}};
  cl_mem qm = q->buffer->mem, om = o->buffer->mem, lm = lse ? lse->buffer->mem : dev->dummy;
  cl_mem paths = dev->paths ? dev->paths : dev->dummy, order = dev->order ? dev->order : dev->dummy;
  cl_mem rank_range = dev->rank_range ? dev->rank_range : dev->dummy;
  cl_mem bias = params->level_bias ? params->level_bias->buffer->mem : dev->dummy;

  dua_arg_list a = {kernel, 0, CL_SUCCESS};
  dua_arg(&a, sizeof(cl_mem), &cache->k[layer]);
  dua_arg(&a, sizeof(cl_mem), &cache->v[layer]);
  dua_arg(&a, sizeof(cl_mem), &cache->block_table);
  dua_arg(&a, sizeof max_pages, &max_pages);
  dua_arg(&a, sizeof(cl_mem), &cache->decode_calls.mem);
  dua_arg(&a, sizeof page_shift, &page_shift);
  dua_arg(&a, sizeof unit_shift, &unit_shift);
  dua_arg(&a, sizeof qm, &qm);
  dua_arg(&a, sizeof om, &om);
  dua_arg(&a, sizeof lm, &lm);
  dua_arg(&a, sizeof qs, &qs);
  dua_arg(&a, sizeof os, &os);
  dua_arg(&a, sizeof ls, &ls);
  dua_arg(&a, sizeof offs, &offs);
  dua_arg(&a, sizeof qo_fp16, &qo_fp16);
  dua_arg(&a, sizeof has_lse, &has_lse);
  dua_arg(&a, sizeof part, &part);
  dua_arg(&a, sizeof part_lse, &part_lse);
  dua_arg(&a, sizeof splits, &splits);
  dua_arg(&a, sizeof shape, &shape);
  dua_arg(&a, sizeof scale_log2, &scale_log2);
  dua_arg(&a, sizeof dev->head_rules, &dev->head_rules);
  dua_arg(&a, sizeof paths, &paths);
  dua_arg(&a, sizeof layout_batch, &layout_batch);
  dua_arg(&a, sizeof order, &order);
  dua_arg(&a, sizeof rank_range, &rank_range);
  dua_arg(&a, sizeof bias, &bias);
  dua_arg(&a, sizeof bias_stride, &bias_stride);
  dua_arg(&a, sizeof hchunks, &hchunks);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: setting kernel argument %u failed: %s", fn, a.index - 1,
                    dua_status_string((dua_status)a.err));
  size_t global[3] = {(size_t)plan.splits * (size_t)plan.threads, (size_t)l->kv_heads * (size_t)plan.hchunks,
                      (size_t)S};
  size_t local[3] = {(size_t)plan.threads, 1, 1};
  if ((st = dua_launch(ctx, kernel, 3, global, local, "dua_decode")) != DUA_SUCCESS || plan.splits == 1)
    return st;

  a = (dua_arg_list){merge, 0, CL_SUCCESS};
  dua_arg(&a, sizeof part, &part);
  dua_arg(&a, sizeof part_lse, &part_lse);
  dua_arg(&a, sizeof splits, &splits);
  dua_arg(&a, sizeof om, &om);
  dua_arg(&a, sizeof lm, &lm);
  dua_arg(&a, sizeof os, &os);
  dua_arg(&a, sizeof ls, &ls);
  dua_arg(&a, sizeof offs, &offs);
  dua_arg(&a, sizeof qo_fp16, &qo_fp16);
  dua_arg(&a, sizeof has_lse, &has_lse);
  dua_arg(&a, sizeof hq, &hq);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: setting merge argument %u failed: %s", fn, a.index - 1,
                    dua_status_string((dua_status)a.err));
  size_t mglobal[2] = {(size_t)Dh / 4, rows};
  return dua_launch(ctx, merge, 2, mglobal, NULL, "dua_decode_merge");
}
