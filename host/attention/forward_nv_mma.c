/* forward_nv_mma.c: NVIDIA tensor-core forward (cl/attn_fwd_mma.cl, inline-PTX mma.sync) for fp16 storage
 * (m16n8k16 f16) and, where the caller allows tf32, fp32 storage (m16n8k8 tf32); head dims 64 and 128, block
 * sizes >= 64, 16-byte aligned rows, no token-tree bias. Each work-group owns 64 MT query rows of one query
 * block, MT = 1 or 2 m-tiles of 16 rows per warp: a tunable ("fwd_mma", mma_mt below). On Hopper
 * (ctx->info.nv_wgmma) fp16 calls of head dim 64, and of 128 on one m-tile, take the kernel's wgmma variant
 * (cl/nv_wgmma_ops.cl, built for sm_90a): one warpgroup, each product one wgmma per m-tile of 64 rows (and
 * per 64 columns of the head dim). Anything else returns
 * DUA_ERROR_UNSUPPORTED without recording an error, and the portable kernel runs instead.
 *
 * On a device that is not NVIDIA's (reached only when a test forces ctx->info.nv_mma_f16 / nv_mma_tf32), the
 * kernel is built with DUA_MMA_EMULATE=1: the warp instructions are emulated in plain OpenCL, so PoCL can
 * check the kernel. */
#include "attention/forward_internal.h"
#include "attention/split_tail.h"
#include "tuning/tuning.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MMA_ROWS 64 /* query rows per work-group and m-tile per warp (attn_fwd_mma.cl BM = 64 MT) */
#define MMA_THREADS 128
/* dua_attn_fwd_mma's argument of the tensor maps (cl/attn_fwd_mma.cl, TMA_MAPS_ARG) */
#define TMA_MAPS_ARG 29

/* Every row of every tensor starts on a 16-byte boundary (cp.async moves 16 bytes; O is stored as half2 or
 * float2): offsets and strides are multiples of `elems` (16 bytes of the storage type). */
static int rows_aligned(const dua_fwd_call *c, int elems) {
  const cl_long4 *s[4] = {&c->q_strides, &c->k_strides, &c->v_strides, &c->o_strides};
  for (int i = 0; i < 4; i++) {
    if (c->offsets.s[i] % elems != 0)
      return 0;
    for (int d = 0; d < 3; d++)
      if (s[i]->s[d] % elems != 0)
        return 0;
  }
  return 1;
}

static int is_nvidia(const dua_context *ctx) {
  return dua_device_is_nvidia(&ctx->info);
}

const char *dua_nv_mma_target_option(const dua_context *ctx, int wgmma) {
  return !is_nvidia(ctx) ? " -DDUA_MMA_EMULATE=1" : wgmma ? " " DUA_SM90A_OPTION : " " DUA_PTX_CAPS_OPTION;
}

/* Whether this call can take the tensor-core kernel (the fast paths are checked by the caller). */
static int mma_fits(const dua_context *ctx, const dua_fwd_call *c) {
  if (c->has_tbias) /* no token-tree bias in this kernel: the portable one runs */
    return 0;
  const int tf32 = !c->fp16; /* fp32 storage runs in tf32, only where the caller allows it */
  if (tf32 ? !(c->allow_tf32 && ctx->info.nv_mma_tf32) : !ctx->info.nv_mma_f16)
    return 0;
  return (c->head_dim == 64 || c->head_dim == 128) && c->block >= MMA_ROWS && rows_aligned(c, tf32 ? 4 : 8);
}

/* Hopper's warpgroup MMA for both products (cl/nv_wgmma_ops.cl): fp16, head dim 64 or 128 (one m-tile: a
 * tuned or forced MT 2 at head dim 128 runs on mma.sync), where its probe passed (ctx->info.nv_wgmma: sm_90,
 * not DUA_NO_WGMMA=1; at head dim 128 unless that variant failed here, which leaves head dim 64 on wgmma).
 * There MT counts m-tiles of 64 query rows of the one warpgroup (sharing each K and V tile). */
static int use_wgmma(const dua_context *ctx, const dua_fwd_call *c) {
  return c->fp16 && ctx->info.nv_wgmma &&
         (c->head_dim == 64 || (c->head_dim == 128 && !ctx->wgmma_fwd128_failed));
}

/* Hopper's tensor memory accelerator for the key loop's K and V tiles (cl/attn_fwd_mma.cl, DUA_TMA; maps:
 * tma_maps.c): wgmma at head dim 64 on an NVIDIA device, not DUA_NO_TMA=1 and not after the TMA variant
 * failed here. A tensor map wants 16-byte aligned starts (rows_aligned) and strides that are multiples of
 * 16 bytes (the same) and not 0. Not for two m-tiles whose work-groups visit one key block each: there V's
 * one buffer (TMA_V_ALONE) leaves the second tile's copy exposed, 1-4% slower than cp.async on an H200
 * (block-diagonal, N 8192 and 32768; 2 blocks and more: 1.4-6% faster; bench/NOTES-mma.md). */
static int use_tma(const dua_context *ctx, const dua_fwd_call *c, int wgmma, int mt) {
  const char *off = getenv("DUA_NO_TMA");
  if (!wgmma || c->head_dim != 64 || !(is_nvidia(ctx) || ctx->tma_emulated) || ctx->tma_failed ||
      (off && !strcmp(off, "1")))
    return 0;
  if (mt == 2 && c->tail_lengths.longest >= 0 && c->tail_lengths.longest <= 1)
    return 0;
  for (int d = 0; d < 3; d++)
    if (c->k_strides.s[d] <= 0 || c->v_strides.s[d] <= 0)
      return 0;
  return 1;
}

/* The m-tiles per warp: DUA_MMA_MT, the context's override, the tuning database, the compiled rule
 * (tuning.h, dua_tuning_fwd_mma: "fwd_mma" mt for most calls, mt_cs for causal layouts visiting few blocks).
 * The compiled rule: 32 query rows per warp (MT = 2) halve the local-memory reads per mma: 9% faster dense
 * fp16 on an H100, 12-20% for tf32 (bench/NOTES-mma.md); head dim 128 keeps 16 (its O and Q fragments alone
 * would take ~200 registers). Causal layouts that visit few blocks keep 16 too: there a 128-row tile computes
 * a quarter of its diagonal block masked, and half the work-groups fill the GPU less (block-diagonal causal
 * N = 8192: 0.204 vs 0.278 ms fp16, 0.280 vs 0.357 ms tf32; depth 3: 0.514 vs 0.584 ms fp16, equal tf32). MT
 * 2 needs blocks >= 128 (a work-group's rows divide the block); where a tuned 2 does not fit, MT 1 runs. */
static int mma_mt(dua_context *ctx, const dua_fwd_call *c, dua_tuning_source *source, char *origin,
                  size_t origin_size) {
  return dua_tuning_fwd_mma(ctx, c->head_dim, c->fp16, c->block, c->causal_short, source, origin,
                            origin_size);
}

/* Work-groups of the kernel that fit on one compute unit, where measured (the split tail's slots; 0:
 * unknown, no split). wgmma: the register caps of cl/attn_fwd_mma.cl (168 for two m-tiles: three; 96 for one:
 * five, whose 40 KB of local memory each also fit five times in an H100's 228 KB; 128 at head dim 128: four,
 * 48 KB each). */
static int work_groups_per_cu(int wgmma, int mt, int head_dim) {
  return wgmma ? (mt == 2 ? 3 : head_dim == 128 ? 4 : 5) : 0;
}

/* The launch's MT: the plan's (mma_mt), or 1 for a short launch of short work-groups (*short_launch set;
 * split_tail.c, dua_short_launch_one_mtile) where the plan's 2 is the compiled default's: not DUA_MMA_MT, the
 * override or a database entry (dua-tune times its candidates through the override and files what it timed),
 * and not with DUA_SHORT_LAUNCH=0 (dua-tune; test_forward_mma but in its test of the rule). The rule's
 * lengths are c->tail_lengths, over the last 8 entries per compute unit (tail_order.c): every entry of a
 * launch short enough for the rule of equal lengths (under 4.5 two-m-tile work-groups per compute unit),
 * 8 of the 9 per compute unit that causal launches reach (the longest, estimated from those). Lengths that
 * differ without causality (windows, sinks, heads of different depths) were not measured: the plan's MT. */
static int launch_mt(dua_context *ctx, const dua_fwd_call *c, int wgmma, int *short_launch) {
  dua_tuning_source source;
  const int mt = mma_mt(ctx, c, &source, NULL, 0);
  const char *env = getenv("DUA_SHORT_LAUNCH");
  if (mt != 2 || !wgmma || source < DUA_TUNING_BUILTIN || (env && !strcmp(env, "0")))
    return mt;
  const int64_t grid2 = (int64_t)c->num_blocks * (c->block / (2 * MMA_ROWS)) * c->heads * c->batch;
  const int64_t slots = (int64_t)work_groups_per_cu(wgmma, 2, c->head_dim) * ctx->info.compute_units;
  if (c->tail_lengths.uniform >= 0)
    *short_launch = dua_short_launch_one_mtile(grid2, slots, c->tail_lengths.uniform, c->block);
  else if (c->shape.causal)
    *short_launch = dua_short_launch_one_mtile_causal(grid2, slots, c->tail_lengths.longest, c->block);
  return *short_launch ? 1 : mt;
}

int dua_forward_mma_plan(dua_context *ctx, const dua_layout *l, int head_dim, int fp16,
                         dua_tuning_source *source, char *origin, size_t origin_size) {
  if (!(ctx->info.nv_mma_f16 || ctx->info.nv_mma_tf32) || ctx->fast_paths_disabled)
    return 0; /* dua_attention_forward's gate */
  dua_fwd_call c;
  memset(&c, 0, sizeof c); /* offsets and strides 0: aligned */
  c.head_dim = head_dim, c.fp16 = fp16, c.allow_tf32 = 1, c.block = l->block;
  c.causal_short = dua_layout_causal_short(l);
  return mma_fits(ctx, &c) ? mma_mt(ctx, &c, source, origin, origin_size) : 0;
}

/* The TMA variant failed here (its maps, build or launch; status st): said once, then this call and every
 * later one run on cp.async. */
static dua_status tma_failed(dua_context *ctx, const dua_fwd_call *c, dua_status st) {
  dua_log(ctx, DUA_LOG_WARNING, "TMA forward unavailable (%s); using cp.async: %s", dua_status_string(st),
          ctx->last_error);
  ctx->last_error[0] = '\0';
  ctx->tma_failed = 1;
  return dua_forward_nv_mma(ctx, c);
}

dua_status dua_forward_nv_mma(dua_context *ctx, const dua_fwd_call *c) {
  if (!mma_fits(ctx, c))
    return DUA_ERROR_UNSUPPORTED;
  const int tf32 = !c->fp16, wgmma_fits = use_wgmma(ctx, c);
  int short_launch = 0;
  const int mt = launch_mt(ctx, c, wgmma_fits, &short_launch);
  const int wgmma = wgmma_fits && (c->head_dim == 64 || mt == 1);
  const size_t tiles = (size_t)c->num_blocks * (size_t)(c->block / (mt * MMA_ROWS));
  const size_t threads = MMA_THREADS;
  dua_split_tail split;
  dua_status st = dua_split_tail_make(
      ctx, (int64_t)(tiles * (size_t)c->heads * (size_t)c->batch), c->heads, c->tail_lengths,
      c->shape.causal && mt == 1 /* the causal split: measured on one m-tile only */, c->block,
      work_groups_per_cu(wgmma, mt, c->head_dim), (int64_t)mt * (c->head_dim / 2 + 4) * MMA_THREADS, &split);
  if (st != DUA_SUCCESS)
    return st;
  const int splitting = split.split.s[1] >= 2;
  int tma = use_tma(ctx, c, wgmma, mt);
  char options[2][256]; /* without and with TMA */
  for (int i = 0; i < 2; i++)
    snprintf(
        options[i], sizeof options[i],
        "-DHEAD_DIM=%d -DMT=%d -DDUA_FP16=%d -DDUA_TF32=%d -DDUA_ENUM=%d -DDUA_TREE=%d -DDUA_BIAS=%d%s%s%s%s",
        c->head_dim, mt, !tf32, tf32, c->enum_mode, c->tree_mode, c->has_bias, wgmma ? " -DDUA_WGMMA=1" : "",
        splitting ? " -DDUA_SPLIT=1" : "", i ? " -DDUA_TMA=1" : "", dua_nv_mma_target_option(ctx, wgmma));
  const char *sources =
      wgmma ? "common,nv_mma_ops,nv_wgmma_ops,attn_fwd_mma" : "common,nv_mma_ops,attn_fwd_mma";
  const unsigned char *maps = NULL;
  if (tma && (st = dua_tma_maps(ctx, c, sources, options[1], &maps)) != DUA_SUCCESS)
    return tma_failed(ctx, c, st);
  tma = maps != NULL; /* else not (yet) kept: cp.async */
  cl_kernel kernel;
  st = dua_program_kernel(ctx, sources, options[tma], "dua_attn_fwd_mma", &kernel);
  if (st != DUA_SUCCESS && tma)
    return tma_failed(ctx, c, st);
  if (st != DUA_SUCCESS || (st = dua_fwd_set_args(ctx, kernel, c)) != DUA_SUCCESS)
    return st;
  const cl_mem none = c->tail_order; /* any buffer: not read without a split */
  dua_arg_list a = {kernel, 24, CL_SUCCESS};
  dua_arg(&a, sizeof c->tail_order, &c->tail_order);
  dua_arg(&a, sizeof c->tail_start, &c->tail_start);
  dua_arg(&a, sizeof(cl_mem), split.partials ? &split.partials : &none);
  dua_arg(&a, sizeof(cl_mem), split.counts ? &split.counts : &none);
  dua_arg(&a, sizeof split.split, &split.split);
  static const unsigned char no_maps[sizeof ctx->tma[0].maps];
  if (a.err == CL_SUCCESS && a.index != TMA_MAPS_ARG) /* the kernel would take another argument for a map */
    return dua_fail(ctx, DUA_ERROR_INTERNAL, "forward kernel: the tensor maps are argument %d, not %u",
                    TMA_MAPS_ARG, a.index);
  dua_arg(&a, sizeof no_maps, tma ? maps : no_maps);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "forward kernel: setting argument %u failed: %s", a.index - 1,
                    dua_status_string((dua_status)a.err));
  /* (tiles, heads, batch) work-groups; with a split tail, those and the extra parts in one dimension */
  size_t global[3] = {tiles * threads, (size_t)c->heads, (size_t)c->batch};
  if (splitting)
    global[0] = (size_t)split.work_groups * threads, global[1] = global[2] = 1;
  size_t local[3] = {threads, 1, 1};
  cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, 0, NULL, NULL);
  if (err != CL_SUCCESS && tma)
    return tma_failed(ctx, c, (dua_status)err);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "launching dua_attn_fwd_mma failed: %s",
                    dua_status_string((dua_status)err));
  char split_note[96] = "";
  if (splitting)
    snprintf(split_note, sizeof split_note, "; split tail: the last %d of %d work-groups in %d parts",
             split.split.s[2] - split.split.s[0], split.split.s[2], split.split.s[1]);
  dua_log(ctx, DUA_LOG_DEBUG, "forward: tensor-core kernel dua_attn_fwd_mma (%s)%s%s", options[tma],
          split_note, short_launch ? "; one m-tile for a short launch" : "");
  return DUA_SUCCESS;
}
