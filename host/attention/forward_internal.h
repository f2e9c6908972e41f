/* forward_internal.h: what every forward kernel variant shares: the kernel argument block (one argument
 * list for cl/attn_fwd.cl and the vendor fast paths) and the hooks of those fast paths. */
#ifndef DUA_FORWARD_INTERNAL_H
#define DUA_FORWARD_INTERNAL_H

#include "attention/layout_device.h"

typedef struct {
  cl_int n_tokens, blk, nb, shift, window, sink, causal, hq, hkv, max_depth;
} shape_arg; /* dua_fwd_shape / dua_naive_shape in the kernels */

/* Arguments of dua_attn_fwd-style kernels, in kernel argument order, plus the choices that select the
 * variant (-D options). */
typedef struct dua_fwd_call {
  cl_mem q, k, v, o, lse;
  cl_long4 q_strides, k_strides, v_strides, o_strides, lse_strides;
  cl_long4 offsets;     /* elements: q, k, v, o */
  cl_long2 aux_offsets; /* elements: lse, level bias */
  cl_int has_lse;
  shape_arg shape;
  cl_float scale_log2;
  cl_mem head_rules, paths, order, rank_range, list_counts, list_full, list_indices, level_bias;
  cl_int bias_stride;
  /* variant selection and launch geometry */
  int head_dim, fp16, has_bias, enum_mode, tree_mode; /* DUA_ENUM, DUA_TREE of attn_fwd.cl */
  int batch, heads, num_blocks, block;
} dua_fwd_call;

/* Sets the 24 arguments of a dua_attn_fwd-style kernel. */
dua_status dua_fwd_set_args(dua_context *ctx, cl_kernel kernel, const dua_fwd_call *call);

/* NVIDIA tensor-core forward (forward_nv_mma.c). Returns DUA_ERROR_UNSUPPORTED, without recording an
 * error, when it has no kernel for this call (the portable kernel then runs). */
dua_status dua_forward_nv_mma(dua_context *ctx, const dua_fwd_call *call);

#endif
