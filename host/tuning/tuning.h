/* tuning.h: the lookup chain for kernel parameters on a context (order documented in dua.h, "tuning"): the
 * developer environment variables (DUA_FWD_TILE; DUA_DECODE_KERNEL, DUA_DECODE_TILE, DUA_DECODE_SPLITS;
 * DUA_MMA_MT), the context's override, the tuning database file (read once per context), compiled per-vendor
 * defaults, generic defaults. Decode plans may name any of the three kernels (staged 0 regs, 1 staged, 2
 * warp); the warp kernel is in the tuning space (candidates, override, database) only where it runs natively
 * (NVIDIA inline PTX, dua_decode_warp_native) or with DUA_TUNING_EMULATED_WARP=1 (tests: its emulation is
 * slow); elsewhere dua_context_set_tuning refuses a warp plan and the chain skips a database's, saying so
 * once through the log. The tensor-core forward ("fwd_mma") is in the tuning space only where it runs
 * (dua_tuning_mma_runs). */
#ifndef DUA_TUNING_H
#define DUA_TUNING_H

#include "dua.h"
#include "tuning/bwd_params.h"
#include "tuning/decode_params.h"
#include "tuning/fwd_params.h"

/* The forward tile for (head_dim, fp16, layout block) and its source (origin text, may be NULL). Fails
 * only for an invalid DUA_FWD_TILE (DUA_ERROR_INVALID_ARGUMENT) or when no tile fits (DUA_ERROR_UNSUPPORTED).
 */
dua_status dua_tuning_fwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_fwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size);

/* The backward tile (both passes): the context's override, the database, the compiled default. Fails
 * (DUA_ERROR_UNSUPPORTED) only when no tile fits. */
dua_status dua_tuning_bwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_bwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size);

/* Decides whether a decode call can run a tuned plan exactly as given (no shrinking); 1 if it can. */
typedef int (*dua_decode_fits_fn)(const dua_decode_params *p, void *arg);

/* The decode plan for the cache dtype (fp16), head dim and call class (one_row: one query row per
 * work-group, kernel "decode"; else "decode_gqa"). The override and the database are used only when their
 * parameters pass the kernels' static rules and fits (NULL: not asked); *adjust is then 0 (run as given).
 * The developer variables and the compiled defaults set *adjust = 1: the caller shrinks the plan to the
 * device as it always did. Fails only for an invalid DUA_DECODE_KERNEL or DUA_DECODE_TILE. */
dua_status dua_tuning_decode(dua_context *ctx, int head_dim, int fp16, int one_row, dua_decode_fits_fn fits,
                             void *fits_arg, dua_decode_params *out, int *adjust, dua_tuning_source *source,
                             char *origin, size_t origin_size);

/* The split-KV thresholds ("decode_split") for a call running plan (its kernel and work-items) with rows
 * query rows per work-group: the override, the database, else the compiled thresholds of that plan
 * (dua_decode_split_compiled: the warp kernel has its own); *fixed_splits = DUA_DECODE_SPLITS (1..256) when
 * that developer variable is set (every call uses that count), else 0. Fails only for an invalid
 * DUA_DECODE_SPLITS. */
dua_status dua_tuning_decode_split(dua_context *ctx, int head_dim, int fp16, const dua_decode_params *plan,
                                   int rows, dua_decode_split_params *out, int *fixed_splits,
                                   dua_tuning_source *source, char *origin, size_t origin_size);

/* The tensor-core forward's m-tiles per warp (MT: 1 or 2; cl/attn_fwd_mma.cl, "fwd_mma") for a call with this
 * head dim, dtype (fp16, else tf32) and layout block, causal_short = a causal layout visiting <= 8 blocks per
 * query block (forward.c): DUA_MMA_MT ("1" or "2", both classes; another value is ignored with one warning),
 * the context's override, the database, the compiled default (mt 2 for head dim 64, else 1; mt_cs 1: today's
 * rule, measured on an H100). The class's value, except that MT 2 needs the layout block to hold 128 query
 * rows (block >= 128): where it does not, this call runs MT 1. Never fails. */
int dua_tuning_fwd_mma(dua_context *ctx, int head_dim, int fp16, int layout_block, int causal_short,
                       dua_tuning_source *source, char *origin, size_t origin_size);

/* Whether the tensor-core forward runs on this context for dtype (fp16, else fp32 with allow_tf32) and head
 * dim: NVIDIA inline PTX (ctx->info.nv_mma_f16 / nv_mma_tf32, which tests may set to run it emulated), the
 * fast paths on, head dim 64 or 128. 1 if so; else 0 with why (may be NULL). */
int dua_tuning_mma_runs(const dua_context *ctx, int fp16, int head_dim, char *why, size_t why_size);

#endif
