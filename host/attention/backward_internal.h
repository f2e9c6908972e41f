/* backward_internal.h: what backward.c hands the NVIDIA tensor-core backward (backward_nv_mma.c): the
 * buffers, strides and offsets of one dua_attention_backward call, already checked. */
#ifndef DUA_BACKWARD_INTERNAL_H
#define DUA_BACKWARD_INTERNAL_H

#include "attention/forward_internal.h"

typedef struct dua_bwd_call {
  cl_mem q, k, v, d_o, lse, delta, dq, dk, dv;
  cl_long4 q_strides, k_strides, v_strides, do_strides, dq_strides, dk_strides, dv_strides, lse_strides;
  cl_long4 in_offsets; /* elements: q, k, v, d_o */
  cl_long4 dq_aux;     /* elements: dq, lse, delta, - */
  cl_long4 kv_aux;     /* elements: dk, dv, lse, delta */
  shape_arg shape;
  cl_float scale, scale_log2;
  cl_mem head_rules, paths, order, rank_range, list_counts, list_full, list_indices;
  cl_mem tlist_counts, tlist_full, tlist_indices;
  /* variant selection and launch geometry */
  int head_dim, fp16, enum_mode, tree_mode, batch, heads, kv_heads, num_blocks, block;
  int portable_only; /* level bias, block-pair gradient or token-tree bias: the portable kernels run */
  int rows_aligned;  /* every row of q, k, v, d_o, dq, dk, dv starts on 16 bytes */
  /* the launches' tail orders (dua_layout_tail_order): [0] the dQ pass's query blocks, [1] the dK/dV pass's
   * key blocks */
  cl_mem tail_order[2];
  cl_int tail_start[2];
} dua_bwd_call;

/* Builds the tensor-core dQ and dK/dV kernels for this call and sets their arguments, without enqueuing:
 * *k_dq and *k_dkdv then run with work-groups of *local work-items over g_dq and g_dkdv (after
 * dua_attn_bwd_pre). Returns DUA_ERROR_UNSUPPORTED, without recording an error, when it has no kernel for the
 * call (the portable kernels then run). */
dua_status dua_backward_nv_mma(dua_context *ctx, const dua_bwd_call *call, cl_kernel *k_dq, cl_kernel *k_dkdv,
                               size_t g_dq[3], size_t g_dkdv[3], size_t *local);

#endif
