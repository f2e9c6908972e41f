/* decode.c: dua_decode: argument validation, the launch plan (kernel, query heads per work-group, tile,
 * bitmap size, split-KV count) and the launch of dua_decode (cl/attn_decode.cl or cl/attn_decode_warp.cl)
 * and, with several splits, cl/attn_decode_merge.cl's dua_decode_merge. Steady state: no allocation on the
 * device, no synchronization, and an upload only when the (sequence, length) table differs from the previous
 * call's. */
#include "attention/forward_internal.h"
#include "attention/kv_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Three kernels: cl/attn_decode.cl's "regs" keeps K and V in registers (16-byte loads, an online softmax per
 * key group) and "staged" stages them through local memory (4-element loads); cl/attn_decode_warp.cl's
 * "warp" lets every warp stream its own units with no barrier (NVIDIA inline-PTX shuffles; emulated with
 * local memory on other devices, for tests only). The choice follows the H100 measurements of
 * bench/RESULTS.md: warp wherever inline PTX works (NVIDIA, the mma probe passed) and a 16-byte load divides
 * a key row into a power-of-two number of lanes: in decode4 (commit ac3723f) it beat the previous choice
 * everywhere but GQA 32/8 at depth 4 (equal): 16K dense fp16 0.80 vs 1.70 ms (90% of copy), fp32 1.47 vs
 * 1.84 ms, depth 4 fp16 0.082 vs 0.164 ms, GQA dense 1.92 vs 2.34 ms. Elsewhere, from decode2 (commit
 * 44b83f7): regs for an fp16 cache with one query row per work-group on GPU devices (16K dense 1.71 vs 2.08
 * ms against staged), staged for the rest (fp32 at depth 4, GQA, CPU devices, several query tokens).
 * DUA_DECODE_KERNEL=regs|staged|warp forces one; DUA_DECODE_TILE=tile_n,threads,rows and
 * DUA_DECODE_SPLITS=n override the plan (development); DUA_DECODE_HALF=0|1|2 picks regs' fp16 conversion
 * (cl/attn_decode.cl DUA_HALF_CVT). */
/* GPU plans, tile_n, work-items, most query rows: staged; regs with an fp16 cache (best of 8 measured
 * settings: 1.71 ms 16K dense) and with an fp32 cache (best of 4: 1.78 ms, 80.6% of copy, 16K dense). */
#define DECODE_STAGED_TILE 32, 128, 16
#define DECODE_REGS_TILE_F16 32, 128, 8
#define DECODE_REGS_TILE_F32 32, 256, 16
#define DECODE_CPU_TILE_N                                                                                    \
  16 /* CPU devices: PoCL runs a work-group's work-items in loops around each barrier; */
#define DECODE_CPU_THREADS 32 /* 16 x 32 measured 20-35% faster there than 32 x 128 (bench/RESULTS.md) */
#define DECODE_ROWS 16        /* most query rows (heads x tokens) per work-group */
#define DECODE_ACC_FLOATS 64  /* regs on CPU devices: most output accumulators per work-item (rows x VE) */
#define DECODE_WAVES 16    /* split so that about WAVES x compute units work-groups run (short last wave) */
#define DECODE_MIN_UNITS 8 /* at least this many key units (of the longest context) per split */
#define DECODE_WARP_MIN_UNITS 4 /* warp kernel: at least this many units per warp and split */
#define DECODE_WARP_WAVES                                                                                    \
  2 /* warp kernel: about 2 x compute units work-groups (decode5: 2 splits beat 4-16                         \
     * at depths 2 and 4, equal dense, batch 32 x 8 heads on 132 SMs) */
#define DECODE_MAX_SPLITS 64   /* partial results per row */
#define DECODE_MAX_UNITS 65536 /* key units of the layout's N (the bitmap is WORDS = units/32 words) */
/* warp kernel: keys per batch of a warp (KPW x UNROLL), work-items, most query rows (decode4 sweep, 16K:
 * 4 keys per batch was best at depth 4 and within 3% of the best dense for fp16, best for fp32); largest
 * key unit */
#define DECODE_WARP_TILE 4, 128, 4
#define DECODE_WARP_MAX_UNIT 64

typedef struct decode_plan {
  int tokens, hpw, hchunks, tile_n, threads, words, unit_shift, page_shift, splits;
  int staged, half_cvt, key_groups; /* staged kernel; fp16 conversion; regs' key groups (NT / VE loads) */
  int warp, unroll, emulate;        /* warp kernel; its key steps per batch; shuffles emulated */
} decode_plan;

/* Elements per 16-byte K/V load of the regs kernel. */
static int load_elems(const dua_kv_cache *c) {
  return c->desc.dtype == DUA_F16 ? 8 : 4;
}

static int log2i(int x) {
  int s = 0;
  while ((1 << s) < x)
    s++;
  return s;
}

static int is_nvidia(const dua_context *ctx) {
  return strstr(ctx->info.vendor, "NVIDIA") != NULL || strstr(ctx->info.platform_name, "NVIDIA") != NULL;
}

/* Lanes per key row in the warp kernel (head_dim / elements per 16-byte load); 0 if it does not divide 32. */
static int warp_lanes_per_key(const dua_kv_cache *c) {
  const int lpk = c->desc.head_dim / load_elems(c);
  return c->desc.head_dim % load_elems(c) == 0 && lpk >= 1 && 32 % lpk == 0 ? lpk : 0;
}

static size_t local_bytes(const decode_plan *p, int head_dim) {
  size_t rows = (size_t)p->hpw * p->tokens, stride = (size_t)head_dim + 4;
  if (p->warp)
    return 4 * ((size_t)p->words + (size_t)(p->threads / 32) * rows * ((size_t)head_dim + 2) +
                (p->emulate ? (size_t)p->threads : 0)) +
           64;
  if (p->staged)
    return 4 * ((size_t)p->words + rows * stride + 2 * (size_t)p->tile_n * stride + 2 * rows * p->tile_n +
                3 * rows) +
           64;
  const size_t kg = (size_t)p->key_groups;
  return 4 * ((size_t)p->words + rows * (size_t)head_dim + rows * (size_t)p->threads + rows * p->tile_n +
              3 * rows * kg + kg * (size_t)head_dim) +
         128;
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
                            int32_t batch, int32_t max_len, decode_plan *p) {
  static const char *fn = "dua_decode";
  const int cpu = ctx->info.type == DUA_DEVICE_CPU, group = l->heads / l->kv_heads;
  const char *env = getenv("DUA_DECODE_KERNEL");
  if (env && *env) {
    if (strcmp(env, "regs") != 0 && strcmp(env, "staged") != 0 && strcmp(env, "warp") != 0)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "DUA_DECODE_KERNEL = \"%s\" is not regs, staged or warp", env);
    p->staged = env[0] == 's';
    p->warp = env[0] == 'w';
    if (p->warp && !warp_lanes_per_key(c))
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                      "%s: DUA_DECODE_KERNEL = warp needs head_dim / %d (a 16-byte load) to divide 32; "
                      "head_dim = %d",
                      fn, load_elems(c), (int)c->desc.head_dim);
  } else { /* the measured choice (top of this file) */
    p->warp = !cpu && is_nvidia(ctx) && ctx->info.nv_mma_f16 && warp_lanes_per_key(c);
    p->staged = !p->warp && (cpu || c->desc.dtype != DUA_F16 || group != 1 || tokens != 1);
  }
  p->emulate = p->warp && !(is_nvidia(ctx) && ctx->info.nv_mma_f16);
  env = getenv("DUA_DECODE_HALF");
  p->half_cvt = env && *env >= '0' && *env <= '2' ? *env - '0' : 0;
  static const int staged_tile[3] = {DECODE_STAGED_TILE}, regs_f16[3] = {DECODE_REGS_TILE_F16},
                   regs_f32[3] = {DECODE_REGS_TILE_F32};
  static const int warp_tile[3] = {DECODE_WARP_TILE};
  const int *def = p->warp                    ? warp_tile
                   : p->staged                ? staged_tile
                   : c->desc.dtype == DUA_F16 ? regs_f16
                                              : regs_f32;
  int tile_n = cpu && !p->warp ? DECODE_CPU_TILE_N : def[0],
      threads = cpu && !p->warp ? DECODE_CPU_THREADS : def[1];
  int rows = cpu && !p->warp ? (p->staged ? DECODE_ROWS : DECODE_ACC_FLOATS / load_elems(c)) : def[2];
  env = getenv("DUA_DECODE_TILE");
  if (env && *env) {
    if (sscanf(env, "%d,%d,%d", &tile_n, &threads, &rows) != 3 || tile_n < (p->warp ? 1 : 16) ||
        tile_n > 128 || (tile_n & (tile_n - 1)) || threads < 16 || threads > 1024 ||
        (threads & (threads - 1)) || rows < 1 || rows > 64)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "DUA_DECODE_TILE = \"%s\" is not tile_n,threads,rows (tile_n a power of two 16..128, "
                      "1..128 for the warp kernel, threads a power of two 16..1024, rows 1..64)",
                      env);
  }
  if ((size_t)threads > ctx->info.max_work_group_size)
    threads = (int)ctx->info.max_work_group_size;
  if (threads < (p->warp ? 32 : 16))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the device's work-groups (%zu work-items) are too small",
                    fn, ctx->info.max_work_group_size);
  p->tokens = tokens;
  p->hpw = 1;
  for (int d = group; d >= 1; d--)
    if (group % d == 0 && d * tokens <= rows) {
      p->hpw = d;
      break;
    }
  p->tile_n = tile_n;
  p->threads = threads;
  if (!p->staged && !p->warp &&
      !fit_groups(p, c->desc.head_dim / load_elems(c), ctx->info.max_work_group_size))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the device's work-groups (%zu work-items) are too small",
                    fn, ctx->info.max_work_group_size);
  p->page_shift = log2i(c->desc.page_tokens);
  int unit = c->desc.page_tokens < l->block ? c->desc.page_tokens : l->block;
  if (p->warp) { /* a warp streams whole units; tile_n is its batch of keys */
    const int kpw = 32 / warp_lanes_per_key(c);
    if (unit > DECODE_WARP_MAX_UNIT)
      unit = DECODE_WARP_MAX_UNIT;
    p->unroll = p->tile_n / kpw < 1 ? 1 : p->tile_n / kpw;
    while (p->unroll > 1 && p->unroll * kpw > unit)
      p->unroll /= 2;
  }
  for (;;) {
    const int u = unit < p->tile_n || p->warp ? unit : p->tile_n;
    p->unit_shift = log2i(u);
    const int64_t units = ((int64_t)l->seq_len + u - 1) / u;
    if (units > DECODE_MAX_UNITS)
      return dua_fail(
          ctx, DUA_ERROR_UNSUPPORTED,
          "%s: the layout's seq_len = %d is %lld key units of %d tokens; decode handles at most %d", fn,
          (int)l->seq_len, (long long)units, u, DECODE_MAX_UNITS);
    p->words = 8;
    while ((int64_t)p->words * 32 < units)
      p->words *= 2;
    if (local_bytes(p, c->desc.head_dim) <= ctx->info.local_mem_bytes)
      break;
    if (!p->warp && p->tile_n > 16 && (p->staged || p->tile_n > p->key_groups))
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
                      local_bytes(p, c->desc.head_dim), (unsigned long long)ctx->info.local_mem_bytes);
  }
  p->hchunks = group / p->hpw;
  env = getenv("DUA_DECODE_SPLITS");
  if (env && *env) {
    char *end;
    long s = strtol(env, &end, 10);
    if (*end != '\0' || s < 1 || s > 256)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "DUA_DECODE_SPLITS = \"%s\" is not a number in 1..256",
                      env);
    p->splits = (int)s;
  } else {
    const int64_t base = (int64_t)batch * l->kv_heads * p->hchunks;
    const int64_t target = (int64_t)(p->warp ? DECODE_WARP_WAVES : DECODE_WAVES) *
                           (ctx->info.compute_units ? ctx->info.compute_units : 1);
    int64_t s = (target + base - 1) / base;
    const int64_t visible = visible_tokens(l, max_len);
    const int64_t by_len = ((visible + (1 << p->unit_shift) - 1) >> p->unit_shift) /
                           (p->warp ? DECODE_WARP_MIN_UNITS * (p->threads / 32) : DECODE_MIN_UNITS);
    if (s > by_len)
      s = by_len;
    if (s > DECODE_MAX_SPLITS)
      s = DECODE_MAX_SPLITS;
    p->splits = s < 1 ? 1 : (int)s;
  }
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
  if ((st = make_plan(ctx, cache, l, T, S, max_len, &plan)) != DUA_SUCCESS)
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

  char options[320];
  snprintf(options, sizeof options,
           "-DHEAD_DIM=%d -DTOKENS=%d -DHPW=%d -DTILE_N=%d -DNT=%d -DWORDS=%d -DDUA_FP16=%d -DDUA_TREE=%d "
           "-DDUA_BIAS=%d -DDUA_DECODE_STAGED=%d -DDUA_HALF_CVT=%d -DUNROLL=%d -DDUA_WARP_EMULATE=%d",
           Dh, T, plan.hpw, plan.tile_n, plan.threads, plan.words, cache->desc.dtype == DUA_F16,
           l->kind == DUA_LAYOUT_CONTENT, params->level_bias != NULL, plan.staged, plan.half_cvt,
           plan.unroll > 0 ? plan.unroll : 1, plan.emulate);
  const char *sources = plan.warp ? "common,attn_decode_units,attn_decode_warp,attn_decode_merge"
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
