/* backward_nv_mma.c: NVIDIA tensor-core backward (cl/attn_bwd_mma.cl, inline-PTX mma.sync m16n8k16, and on
 * Hopper where the wgmma probe passed (ctx->info.nv_wgmma) both passes on the warpgroup MMA of
 * cl/nv_wgmma_ops.cl) for fp16 storage, head dim 64 or 128, blocks >= 64, 16-byte aligned
 * rows, without level bias, block-pair gradient or token-tree bias. Anything else returns
 * DUA_ERROR_UNSUPPORTED without recording an error, and backward.c runs the portable kernels. The program is
 * attn_fwd_mma.cl (helpers, enumeration) + attn_bwd_mma.cl, with 64-row tiles (MT 1) and DUA_MMA_EMULATE=1 on
 * devices that are not NVIDIA's (tests force ctx->info.nv_mma_f16). */
#include "attention/backward_internal.h"

#include <stdio.h>

#define MMA_ROWS 64 /* query rows (dq) or keys (dkdv) per work-group */
#define MMA_THREADS 128

/* Builds kernel `name` of attn_bwd_mma.cl, on wgmma or mma.sync; its options go to options[size]. On NVIDIA's
 * devices both programs are rebuilt from their PTX with the dK/dV kernel's register cap (DUA_MAXNREG,
 * host/runtime/ptx_sm90a.c; dua_nv_mma_target_option). */
static dua_status bwd_kernel(dua_context *ctx, const dua_bwd_call *c, int wgmma, const char *name,
                             cl_kernel *out, char *options, size_t size) {
  snprintf(options, size,
           "-DHEAD_DIM=%d -DMT=1 -DDUA_FP16=1 -DDUA_TF32=0 -DDUA_ENUM=%d -DDUA_TREE=%d -DDUA_BIAS=0%s%s%s",
           c->head_dim, c->enum_mode, c->tree_mode, wgmma ? " -DDUA_WGMMA=1" : "",
           c->shape.window > 0 ? " -DDUA_WINDOWED=1" : "", dua_nv_mma_target_option(ctx, wgmma));
  return dua_program_kernel(ctx,
                            wgmma ? "common,nv_mma_ops,nv_wgmma_ops,attn_fwd_mma,attn_bwd_mma"
                                  : "common,nv_mma_ops,attn_fwd_mma,attn_bwd_mma",
                            options, name, out);
}

dua_status dua_backward_nv_mma(dua_context *ctx, const dua_bwd_call *c, cl_kernel *k_dq, cl_kernel *k_dkdv,
                               size_t g_dq[3], size_t g_dkdv[3], size_t *local) {
  if (!ctx->info.nv_mma_f16 || ctx->fast_paths_disabled || c->portable_only || !c->fp16 ||
      (c->head_dim != 64 && c->head_dim != 128) || c->block < MMA_ROWS || c->block % MMA_ROWS ||
      !c->rows_aligned)
    return DUA_ERROR_UNSUPPORTED;
  /* On Hopper both passes on wgmma: at head dim 64 on an H100 at N 8192 1.01-1.12x faster than the dK/dV
   * pass on mma.sync (bench/NOTES-mma.md); head dim 128 has its own variant (cl/attn_bwd_mma.cl) and its own
   * flag should it not build */
  const int wgmma = ctx->info.nv_wgmma && !ctx->wgmma_bwd_failed[c->head_dim == 128];
  char options_dq[256], options_kv[256];
  dua_status st;
  if ((st = bwd_kernel(ctx, c, wgmma, "dua_attn_bwd_dq_mma", k_dq, options_dq, sizeof options_dq)) !=
          DUA_SUCCESS ||
      (st = bwd_kernel(ctx, c, wgmma, "dua_attn_bwd_dkdv_mma", k_dkdv, options_kv, sizeof options_kv)) !=
          DUA_SUCCESS)
    return st;
  /* dQ: the forward's enumeration */
  dua_arg_list a = {*k_dq, 0, CL_SUCCESS};
  const cl_mem dq_mems[7] = {c->q, c->k, c->v, c->d_o, c->lse, c->delta, c->dq};
  for (int i = 0; i < 7; i++)
    dua_arg(&a, sizeof dq_mems[i], &dq_mems[i]);
  const cl_long4 dq_strides[6] = {c->q_strides,  c->k_strides,  c->v_strides,
                                  c->do_strides, c->dq_strides, c->lse_strides};
  for (int i = 0; i < 6; i++)
    dua_arg(&a, sizeof dq_strides[i], &dq_strides[i]);
  dua_arg(&a, sizeof c->in_offsets, &c->in_offsets);
  dua_arg(&a, sizeof c->dq_aux, &c->dq_aux);
  dua_arg(&a, sizeof c->shape, &c->shape);
  dua_arg(&a, sizeof c->scale, &c->scale);
  dua_arg(&a, sizeof c->scale_log2, &c->scale_log2);
  const cl_mem rules[7] = {c->head_rules,  c->paths,     c->order,       c->rank_range,
                           c->list_counts, c->list_full, c->list_indices};
  for (int i = 0; i < 7; i++)
    dua_arg(&a, sizeof rules[i], &rules[i]);
  dua_arg(&a, sizeof c->tail_order[0], &c->tail_order[0]);
  dua_arg(&a, sizeof c->tail_start[0], &c->tail_start[0]);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "dua_attention_backward: dua_attn_bwd_dq_mma argument %u",
                    a.index - 1);
  /* dK, dV: the transposed lists */
  a = (dua_arg_list){*k_dkdv, 0, CL_SUCCESS};
  const cl_mem kv_mems[8] = {c->q, c->k, c->v, c->d_o, c->lse, c->delta, c->dk, c->dv};
  for (int i = 0; i < 8; i++)
    dua_arg(&a, sizeof kv_mems[i], &kv_mems[i]);
  const cl_long4 kv_strides[7] = {c->q_strides,  c->k_strides,  c->v_strides,  c->do_strides,
                                  c->dk_strides, c->dv_strides, c->lse_strides};
  for (int i = 0; i < 7; i++)
    dua_arg(&a, sizeof kv_strides[i], &kv_strides[i]);
  dua_arg(&a, sizeof c->in_offsets, &c->in_offsets);
  dua_arg(&a, sizeof c->kv_aux, &c->kv_aux);
  dua_arg(&a, sizeof c->shape, &c->shape);
  dua_arg(&a, sizeof c->scale, &c->scale);
  dua_arg(&a, sizeof c->scale_log2, &c->scale_log2);
  const cl_mem trules[5] = {c->head_rules, c->paths, c->tlist_counts, c->tlist_full, c->tlist_indices};
  for (int i = 0; i < 5; i++)
    dua_arg(&a, sizeof trules[i], &trules[i]);
  dua_arg(&a, sizeof c->tail_order[1], &c->tail_order[1]);
  dua_arg(&a, sizeof c->tail_start[1], &c->tail_start[1]);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "dua_attention_backward: dua_attn_bwd_dkdv_mma argument %u",
                    a.index - 1);
  const size_t tiles = (size_t)c->num_blocks * (size_t)(c->block / MMA_ROWS);
  g_dq[0] = tiles * MMA_THREADS, g_dq[1] = (size_t)c->heads, g_dq[2] = (size_t)c->batch;
  g_dkdv[0] = tiles * MMA_THREADS, g_dkdv[1] = (size_t)c->kv_heads, g_dkdv[2] = (size_t)c->batch;
  *local = MMA_THREADS;
  dua_log(ctx, DUA_LOG_DEBUG,
          "backward: tensor-core kernels dua_attn_bwd_dq_mma (%s), dua_attn_bwd_dkdv_mma (%s)", options_dq,
          options_kv);
  return DUA_SUCCESS;
}
