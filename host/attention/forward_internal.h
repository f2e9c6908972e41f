/* forward_internal.h: what every forward kernel variant shares: the kernel argument block (one argument
 * list for cl/attn_fwd.cl and the vendor fast paths) and the hooks of those fast paths. */
#ifndef DUA_FORWARD_INTERNAL_H
#define DUA_FORWARD_INTERNAL_H

#include "attention/layout_device.h"

typedef struct {
  cl_int n_tokens, blk, nb, shift, window, sink, causal, hq, hkv, max_depth;
} shape_arg; /* dua_shape in cl/common.cl */

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
  /* tensor-core kernels only (arguments 24, 25, set by forward_nv_mma.c): the launch's tail order
   * (dua_layout_tail_order), and the key blocks the entries of its tail visit: the number where all visit as
   * many (else -1; the split tail's condition) and the most (split_tail.c) */
  cl_mem tail_order;
  cl_int tail_start;
  dua_tail_lengths tail_lengths;
  /* token-tree bias (portable kernel only: arguments after the 24 above, set by forward.c) */
  cl_mem tok_scale, tok_table;
  cl_long4 tok_strides;
  cl_long2 tok_offsets; /* elements: scale, table */
  cl_int tok_table_stride, tok_depth;
  int has_tbias;
  /* variant selection and launch geometry */
  int head_dim, fp16, has_bias, enum_mode, tree_mode; /* DUA_ENUM, DUA_TREE of attn_fwd.cl */
  int allow_tf32;                                     /* fp32 storage may take the tf32 tensor-core kernel */
  int causal_short; /* causal rule layout whose trees visit <= 8 blocks per query block (head mean) */
  int batch, heads, num_blocks, block;
} dua_fwd_call;

static inline cl_long4 dua_strides4(const dua_tensor *t) {
  cl_long4 s;
  for (int d = 0; d < 4; d++)
    s.s[d] = t->strides[d];
  return s;
}

/* A tensor's byte offset in elements. */
static inline cl_long dua_elem_offset(const dua_tensor *t) {
  return (cl_long)(t->offset / dua_dtype_size(t->dtype));
}

static inline shape_arg dua_shape_of(const dua_layout *l) {
  shape_arg s = {l->seq_len, l->block,  l->num_blocks, l->shift,    l->window,
                 l->sink,    l->causal, l->heads,      l->kv_heads, l->max_depth};
  return s;
}

/* Sets kernel arguments in order; remembers the first failure. */
typedef struct {
  cl_kernel kernel;
  cl_uint index;
  cl_int err;
} dua_arg_list;

static inline void dua_arg(dua_arg_list *a, size_t size, const void *value) {
  if (a->err == CL_SUCCESS)
    a->err = clSetKernelArg(a->kernel, a->index, size, value);
  a->index++;
}

/* Enqueues an NDRange; names the kernel in the error. */
dua_status dua_launch(dua_context *ctx, cl_kernel kernel, cl_uint dims, const size_t *global,
                      const size_t *local, const char *what);

/* Checks t's shape against (d0, d1, d2, d3); fn names the entry point in the message. */
dua_status dua_check_shape(dua_context *ctx, const char *fn, const dua_tensor *t, const char *name,
                           int64_t d0, int64_t d1, int64_t d2, int64_t d3);

/* The forward's argument checks (q, k, v, o, optional lse, params); fn names the entry point. */
dua_status dua_attention_validate(dua_context *ctx, const char *fn, const dua_layout *l,
                                  const dua_attention_params *p, const dua_tensor *q, const dua_tensor *k,
                                  const dua_tensor *v, const dua_tensor *o, const dua_tensor *lse);

/* The optional level bias of params (rule layout; fp32 (heads, max_depth + 1, 1, 1), contiguous levels). */
dua_status dua_check_level_bias(dua_context *ctx, const char *fn, const dua_layout *l,
                                const dua_tensor *bias);

/* Outputs must write each element once (no zero stride over a dimension > 1) and must not overlap inputs or
 * each other in the same buffer. NULL entries are skipped. */
dua_status dua_check_outputs(dua_context *ctx, const char *fn, const dua_tensor *const *outs,
                             const char *const *out_names, int n_outs, const dua_tensor *const *ins,
                             const char *const *in_names, int n_ins);

/* Sets the 24 arguments of a dua_attn_fwd-style kernel. */
dua_status dua_fwd_set_args(dua_context *ctx, cl_kernel kernel, const dua_fwd_call *call);

/* NVIDIA tensor-core forward (forward_nv_mma.c). Returns DUA_ERROR_UNSUPPORTED, without recording an
 * error, when it has no kernel for this call (the portable kernel then runs). */
dua_status dua_forward_nv_mma(dua_context *ctx, const dua_fwd_call *call);

/* The K and V tensor maps (256 bytes) of the wgmma forward's TMA variant for call c (tma_maps.c), whose
 * program is (sources, options): *maps NULL while they are not (yet) kept (the call runs on cp.async). An
 * error means they cannot be built here. */
dua_status dua_tma_maps(dua_context *ctx, const dua_fwd_call *c, const char *sources, const char *options,
                        const unsigned char **maps);

/* The build option that targets a tensor-core program at this device: " -DDUA_MMA_EMULATE=1" off NVIDIA (the
 * warp instructions emulated in plain OpenCL, for tests), the sm_90a rebuild for wgmma, else the rebuild that
 * applies the kernels' register caps (DUA_MAXNREG; nothing to do for a program that states none). */
const char *dua_nv_mma_target_option(const dua_context *ctx, int wgmma);

/* A causal rule layout whose trees visit <= 8 blocks per query block (mean over heads, before causality):
 * the class of the tensor-core forward's second tuned MT ("fwd_mma" mt_cs). */
int dua_layout_causal_short(const dua_layout *l);

/* The m-tiles per warp (1 or 2) a forward of layout l would run the tensor-core kernel with now (contiguous
 * 16-byte aligned tensors, no token-tree bias; fp32 with allow_tf32), with where that came from; 0 when such
 * a call would run the portable kernel; a short launch may run 1 where this says 2 (split_tail.h,
 * dua_short_launch_one_mtile; DUA_SHORT_LAUNCH=0 turns that off). For dua-tune and tests. */
int dua_forward_mma_plan(dua_context *ctx, const dua_layout *l, int head_dim, int fp16,
                         dua_tuning_source *source, char *origin, size_t origin_size);

#endif
