/* forward.c: dua_attention_forward: argument validation, kernel variant choice and launch of the portable
 * block-sparse forward (cl/attn_fwd.cl) or the naive materialized baseline (cl/attn_naive.cl).
 * Steady state: no allocation, no upload and no synchronization per call. */
#include "attention/forward_internal.h"
#include "attention/layout_internal.h"
#include "attention/token_bias.h"
#include "tuning/fwd_params.h"
#include "tuning/tuning.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dua_status dua_launch(dua_context *ctx, cl_kernel kernel, cl_uint dims, const size_t *global,
                      const size_t *local, const char *what) {
  cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, dims, NULL, global, local, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "launching %s failed: %s", what,
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

static dua_status forward_naive(dua_context *ctx, dua_layout *l, const dua_attention_params *p, float scale,
                                const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                                const dua_tensor *o, const dua_tensor *lse, dua_layout_device *dev) {
  char options[128];
  snprintf(options, sizeof options, "-DDUA_FP16=%d -DDUA_TREE=%d", q->dtype == DUA_F16,
           l->kind == DUA_LAYOUT_CONTENT ? 1 : 0);
  cl_kernel k_scores, k_softmax, k_pv;
  dua_status st;
  if ((st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_scores", &k_scores)) !=
          DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_softmax", &k_softmax)) !=
          DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_pv", &k_pv)) != DUA_SUCCESS)
    return st;
  const size_t n = (size_t)l->seq_len, bh = (size_t)l->batch * l->heads;
  cl_mem scores;
  if ((st = dua_context_scratch(ctx, 4 * bh * n * n, &scores)) != DUA_SUCCESS)
    return st;
  dua_log(ctx, DUA_LOG_DEBUG, "forward: naive baseline dua_naive_scores, _softmax, _pv (%s)", options);
  shape_arg shape = dua_shape_of(l);
  cl_int head_dim = (cl_int)q->shape[3], has_bias = p->level_bias != NULL, has_lse = lse != NULL;
  cl_long4 qs = dua_strides4(q), ks = dua_strides4(k), vs = dua_strides4(v), os = dua_strides4(o);
  cl_long4 lse_s = lse ? dua_strides4(lse) : qs;
  cl_long2 qk_off = {{dua_elem_offset(q), dua_elem_offset(k)}},
           vo_off = {{dua_elem_offset(v), dua_elem_offset(o)}};
  cl_long bias_off = has_bias ? dua_elem_offset(p->level_bias) : 0, lse_off = lse ? dua_elem_offset(lse) : 0;
  cl_int bias_stride = has_bias ? (cl_int)p->level_bias->strides[0] : 0;
  cl_mem qm = q->buffer->mem, km = k->buffer->mem, vm = v->buffer->mem, om = o->buffer->mem;
  cl_mem paths = dev->paths ? dev->paths : dev->dummy;
  cl_mem bias = has_bias ? p->level_bias->buffer->mem : dev->dummy,
         lsem = lse ? lse->buffer->mem : dev->dummy;
  cl_int nt = l->seq_len, hq = l->heads, hkv = l->kv_heads;

  dua_arg_list a = {k_scores, 0, CL_SUCCESS};
  dua_arg(&a, sizeof qm, &qm);
  dua_arg(&a, sizeof km, &km);
  dua_arg(&a, sizeof scores, &scores);
  dua_arg(&a, sizeof qs, &qs);
  dua_arg(&a, sizeof ks, &ks);
  dua_arg(&a, sizeof qk_off, &qk_off);
  dua_arg(&a, sizeof shape, &shape);
  dua_arg(&a, sizeof head_dim, &head_dim);
  dua_arg(&a, sizeof scale, &scale);
  dua_arg(&a, sizeof dev->head_rules, &dev->head_rules);
  dua_arg(&a, sizeof paths, &paths);
  dua_arg(&a, sizeof bias, &bias);
  dua_arg(&a, sizeof bias_off, &bias_off);
  dua_arg(&a, sizeof bias_stride, &bias_stride);
  dua_arg(&a, sizeof has_bias, &has_bias);
  size_t g3[3] = {n, n, bh};
  if (a.err != CL_SUCCESS || (st = dua_launch(ctx, k_scores, 3, g3, NULL, "dua_naive_scores")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive scores: argument %u", a.index) : st;

  a = (dua_arg_list){k_softmax, 0, CL_SUCCESS};
  dua_arg(&a, sizeof scores, &scores);
  dua_arg(&a, sizeof lsem, &lsem);
  dua_arg(&a, sizeof lse_s, &lse_s);
  dua_arg(&a, sizeof lse_off, &lse_off);
  dua_arg(&a, sizeof has_lse, &has_lse);
  dua_arg(&a, sizeof nt, &nt);
  dua_arg(&a, sizeof hq, &hq);
  size_t g2[2] = {n, bh};
  if (a.err != CL_SUCCESS ||
      (st = dua_launch(ctx, k_softmax, 2, g2, NULL, "dua_naive_softmax")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive softmax: argument %u", a.index) : st;

  a = (dua_arg_list){k_pv, 0, CL_SUCCESS};
  dua_arg(&a, sizeof scores, &scores);
  dua_arg(&a, sizeof vm, &vm);
  dua_arg(&a, sizeof om, &om);
  dua_arg(&a, sizeof vs, &vs);
  dua_arg(&a, sizeof os, &os);
  dua_arg(&a, sizeof vo_off, &vo_off);
  dua_arg(&a, sizeof nt, &nt);
  dua_arg(&a, sizeof hq, &hq);
  dua_arg(&a, sizeof hkv, &hkv);
  size_t gpv[3] = {(size_t)head_dim, n, bh};
  if (a.err != CL_SUCCESS || (st = dua_launch(ctx, k_pv, 3, gpv, NULL, "dua_naive_pv")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive P.V: argument %u", a.index) : st;
  return DUA_SUCCESS;
}

/* Key blocks a query block visits before causality, the head mean: its tree range's, and those the last query
 * block's token window and sink add (dua_window_range, dua_sink_blocks; counted as if outside the range: a
 * window of 16 blocks makes a block-diagonal layout's work-groups 17 blocks long, and those run faster on two
 * m-tiles: H200, bench/RESULTS.md "Twenty-fourth session"; shorter launches get one m-tile back from the
 * causal short-launch rule). */
int dua_layout_causal_short(const dua_layout *l) {
  if (!l->causal || l->kind == DUA_LAYOUT_LIST)
    return 0;
  const dua_rule r = dua_layout_rule(l, 0); /* window and sink are the layout's, not a head's */
  const int32_t last = l->num_blocks - 1;
  int32_t wlo, whi;
  dua_window_range(&r, last, &wlo, &whi);
  const int64_t extra =
      (whi > wlo ? whi - wlo - 1 : 0) + dua_sink_blocks(&r, last); /* beyond its own block */
  double blocks = 0;
  for (int32_t h = 0; h < l->heads; h++) {
    const int64_t b = l->group[h] + extra;
    blocks += (double)(b < l->num_blocks ? b : l->num_blocks);
  }
  return blocks <= 8.0 * l->heads;
}

/* Kernel arguments shared by every forward kernel variant (portable and vendor fast paths). */
static dua_fwd_call make_call(const dua_layout *l, const dua_attention_params *params, float scale,
                              const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                              const dua_tensor *o, const dua_tensor *lse, const dua_layout_device *dev) {
  dua_fwd_call c;
  memset(&c, 0, sizeof c);
  c.shape = dua_shape_of(l);
  c.q_strides = dua_strides4(q);
  c.k_strides = dua_strides4(k);
  c.v_strides = dua_strides4(v);
  c.o_strides = dua_strides4(o);
  c.lse_strides = lse ? dua_strides4(lse) : c.q_strides;
  c.offsets = (cl_long4){{dua_elem_offset(q), dua_elem_offset(k), dua_elem_offset(v), dua_elem_offset(o)}};
  c.aux_offsets = (cl_long2){
      {lse ? dua_elem_offset(lse) : 0, params->level_bias ? dua_elem_offset(params->level_bias) : 0}};
  c.has_lse = lse != NULL;
  c.scale_log2 = scale * 1.4426950408889634f;
  c.bias_stride = params->level_bias ? (cl_int)params->level_bias->strides[0] : 0;
  c.q = q->buffer->mem;
  c.k = k->buffer->mem;
  c.v = v->buffer->mem;
  c.o = o->buffer->mem;
  c.lse = lse ? lse->buffer->mem : dev->dummy;
  c.head_rules = dev->head_rules;
  c.paths = dev->paths ? dev->paths : dev->dummy;
  c.order = dev->order ? dev->order : dev->dummy;
  c.rank_range = dev->rank_range ? dev->rank_range : dev->dummy;
  c.list_counts = dev->list_counts ? dev->list_counts : dev->dummy;
  c.list_full = dev->list_full ? dev->list_full : dev->dummy;
  c.list_indices = dev->list_indices ? dev->list_indices : dev->dummy;
  c.level_bias = params->level_bias ? params->level_bias->buffer->mem : dev->dummy;
  c.has_tbias = params->token_scale != NULL;
  c.allow_tf32 = params->allow_tf32 != 0;
  c.causal_short = dua_layout_causal_short(l);
  c.tok_scale = c.has_tbias ? params->token_scale->buffer->mem : dev->dummy;
  c.tok_table = c.has_tbias ? params->token_table->buffer->mem : dev->dummy;
  c.tok_strides = c.has_tbias ? dua_strides4(params->token_scale) : c.q_strides;
  c.tok_offsets = (cl_long2){{c.has_tbias ? dua_elem_offset(params->token_scale) : 0,
                              c.has_tbias ? dua_elem_offset(params->token_table) : 0}};
  c.tok_table_stride =
      c.has_tbias && params->token_table->shape[0] > 1 ? (cl_int)params->token_table->strides[0] : 0;
  c.tok_depth = dua_token_tree_depth(l->seq_len);
  c.head_dim = (int)q->shape[3];
  c.fp16 = q->dtype == DUA_F16;
  c.has_bias = params->level_bias != NULL;
  c.enum_mode = (l->kind == DUA_LAYOUT_LIST || params->algo == DUA_ALGO_LIST) ? 2
                : l->kind == DUA_LAYOUT_CONTENT                               ? 1
                                                                              : 0;
  c.tree_mode = l->kind == DUA_LAYOUT_LIST ? 2 : l->kind == DUA_LAYOUT_CONTENT ? 1 : 0;
  c.batch = l->batch;
  c.heads = l->heads;
  c.num_blocks = l->num_blocks;
  c.block = l->block;
  return c;
}

dua_status dua_fwd_set_args(dua_context *ctx, cl_kernel kernel, const dua_fwd_call *c) {
  dua_arg_list a = {kernel, 0, CL_SUCCESS};
  dua_arg(&a, sizeof c->q, &c->q);
  dua_arg(&a, sizeof c->k, &c->k);
  dua_arg(&a, sizeof c->v, &c->v);
  dua_arg(&a, sizeof c->o, &c->o);
  dua_arg(&a, sizeof c->lse, &c->lse);
  dua_arg(&a, sizeof c->q_strides, &c->q_strides);
  dua_arg(&a, sizeof c->k_strides, &c->k_strides);
  dua_arg(&a, sizeof c->v_strides, &c->v_strides);
  dua_arg(&a, sizeof c->o_strides, &c->o_strides);
  dua_arg(&a, sizeof c->lse_strides, &c->lse_strides);
  dua_arg(&a, sizeof c->offsets, &c->offsets);
  dua_arg(&a, sizeof c->aux_offsets, &c->aux_offsets);
  dua_arg(&a, sizeof c->has_lse, &c->has_lse);
  dua_arg(&a, sizeof c->shape, &c->shape);
  dua_arg(&a, sizeof c->scale_log2, &c->scale_log2);
  dua_arg(&a, sizeof c->head_rules, &c->head_rules);
  dua_arg(&a, sizeof c->paths, &c->paths);
  dua_arg(&a, sizeof c->order, &c->order);
  dua_arg(&a, sizeof c->rank_range, &c->rank_range);
  dua_arg(&a, sizeof c->list_counts, &c->list_counts);
  dua_arg(&a, sizeof c->list_full, &c->list_full);
  dua_arg(&a, sizeof c->list_indices, &c->list_indices);
  dua_arg(&a, sizeof c->level_bias, &c->level_bias);
  dua_arg(&a, sizeof c->bias_stride, &c->bias_stride);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "forward kernel: setting argument %u failed: %s", a.index - 1,
                    dua_status_string((dua_status)a.err));
  return DUA_SUCCESS;
}

static dua_status forward_portable(dua_context *ctx, const dua_fwd_call *c) {
  /* DUA_FWD_TILE, the context's override, the tuning database, compiled defaults (tuning/tuning.h) */
  dua_fwd_params tp;
  dua_status st = dua_tuning_fwd(ctx, c->head_dim, c->fp16, c->block, &tp, NULL, NULL, 0);
  if (st != DUA_SUCCESS)
    return st;
  char options[256];
  snprintf(
      options, sizeof options,
      "-DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d -DDUA_FP16=%d -DDUA_ENUM=%d -DDUA_TREE=%d "
      "-DDUA_BIAS=%d -DDUA_TBIAS=%d",
      c->head_dim, tp.block_m, tp.block_n, tp.threads_m, tp.threads_n, c->fp16, c->enum_mode, c->tree_mode,
      c->has_bias, c->has_tbias);
  cl_kernel kernel;
  st = dua_program_kernel(ctx, "common,attn_fwd", options, "dua_attn_fwd", &kernel);
  if (st != DUA_SUCCESS || (st = dua_fwd_set_args(ctx, kernel, c)) != DUA_SUCCESS)
    return st;
  dua_arg_list a = {kernel, 24, CL_SUCCESS}; /* the token-tree bias arguments */
  dua_arg(&a, sizeof c->tok_scale, &c->tok_scale);
  dua_arg(&a, sizeof c->tok_table, &c->tok_table);
  dua_arg(&a, sizeof c->tok_strides, &c->tok_strides);
  dua_arg(&a, sizeof c->tok_offsets, &c->tok_offsets);
  dua_arg(&a, sizeof c->tok_table_stride, &c->tok_table_stride);
  dua_arg(&a, sizeof c->tok_depth, &c->tok_depth);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "forward kernel: setting argument %u failed: %s", a.index - 1,
                    dua_status_string((dua_status)a.err));
  const size_t threads = (size_t)tp.threads_m * tp.threads_n;
  const size_t tiles = (size_t)c->num_blocks * (size_t)(c->block / tp.block_m);
  size_t global[3] = {tiles * threads, (size_t)c->heads, (size_t)c->batch};
  size_t local[3] = {threads, 1, 1};
  dua_log(ctx, DUA_LOG_DEBUG, "forward: portable kernel dua_attn_fwd (%s)", options);
  return dua_launch(ctx, kernel, 3, global, local, "dua_attn_fwd");
}

dua_status dua_attention_forward(dua_context *ctx, dua_layout *l, const dua_attention_params *params,
                                 const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                                 const dua_tensor *o, const dua_tensor *lse) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!l)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: layout is NULL");
  dua_attention_params defaults;
  if (!params) {
    dua_attention_params_init(&defaults);
    params = &defaults;
  }
  dua_status st = dua_attention_validate(ctx, "dua_attention_forward", l, params, q, k, v, o, lse);
  if (st != DUA_SUCCESS)
    return st;
  const dua_tensor *outs[2] = {o, lse},
                   *ins[6] = {q, k, v, params->level_bias, params->token_scale, params->token_table};
  static const char *const out_names[2] = {"o", "lse"}, *const in_names[6] = {"q",           "k",
                                                                              "v",           "level_bias",
                                                                              "token_scale", "token_table"};
  if ((st = dua_check_outputs(ctx, "dua_attention_forward", outs, out_names, 2, ins, in_names, 6)) !=
      DUA_SUCCESS)
    return st;
  const int head_dim = (int)q->shape[3];
  const float scale = params->scale > 0.0f ? params->scale : 1.0f / sqrtf((float)head_dim);
  const int use_lists = l->kind == DUA_LAYOUT_LIST || params->algo == DUA_ALGO_LIST;
  dua_layout_device *dev = NULL;
  if ((st = dua_layout_device_get(ctx, l, use_lists ? DUA_DEVICE_LISTS : 0, &dev)) != DUA_SUCCESS)
    return st;
  if (params->algo == DUA_ALGO_NAIVE)
    return forward_naive(ctx, l, params, scale, q, k, v, o, lse, dev);
  const dua_fwd_call call = make_call(l, params, scale, q, k, v, o, lse, dev);
  if ((ctx->info.nv_mma_f16 || ctx->info.nv_mma_tf32) && !ctx->fast_paths_disabled) {
    dua_fwd_call mc = call;
    if ((st = dua_layout_tail_order(ctx, l, 0, &mc.tail_order, &mc.tail_start, &mc.tail_lengths)) !=
        DUA_SUCCESS)
      return st;
    st = dua_forward_nv_mma(ctx, &mc);
    if (st == DUA_SUCCESS)
      return st;
    if (st != DUA_ERROR_UNSUPPORTED && ctx->info.nv_wgmma) { /* the wgmma variant only: back to mma.sync */
      dua_log(ctx, DUA_LOG_WARNING, "wgmma forward unavailable (%s); using mma.sync: %s",
              dua_status_string(st), ctx->last_error);
      if (mc.head_dim == 128) /* its own variant, at the limits of local memory and registers */
        ctx->wgmma_fwd128_failed = 1;
      else
        ctx->info.nv_wgmma = 0;
      ctx->last_error[0] = '\0';
      st = dua_forward_nv_mma(ctx, &mc);
      if (st == DUA_SUCCESS)
        return st;
    }
    if (st != DUA_ERROR_UNSUPPORTED) { /* the probe passed but this kernel does not build or launch here */
      dua_log(ctx, DUA_LOG_WARNING, "tensor-core forward unavailable (%s); using the portable kernels: %s",
              dua_status_string(st), ctx->last_error);
      ctx->fast_paths_disabled = 1;
      ctx->last_error[0] = '\0';
    }
  }
  return forward_portable(ctx, &call);
}

dua_status dua_context_warm_up(dua_context *ctx) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  static const int dims[4] = {32, 64, 96, 128};
  for (int fp16 = 0; fp16 <= 1; fp16++)
    for (int i = 0; i < 4; i++) {
      dua_fwd_params tp;
      if (dua_tuning_fwd(ctx, dims[i], fp16, 128, &tp, NULL, NULL, 0) != DUA_SUCCESS) {
        ctx->last_error[0] = '\0';
        continue;
      }
      char options[256];
      snprintf(
          options, sizeof options,
          "-DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d -DDUA_FP16=%d -DDUA_ENUM=0 -DDUA_TREE=0 "
          "-DDUA_BIAS=0 -DDUA_TBIAS=0",
          dims[i], tp.block_m, tp.block_n, tp.threads_m, tp.threads_n, fp16);
      cl_kernel kernel;
      dua_status st = dua_program_kernel(ctx, "common,attn_fwd", options, "dua_attn_fwd", &kernel);
      if (st != DUA_SUCCESS)
        return st;
    }
  return DUA_SUCCESS;
}
