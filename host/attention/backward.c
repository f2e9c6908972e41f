/* backward.c: dua_attention_backward: argument checks and the launches of the portable backward
 * (cl/attn_bwd.cl): delta = rowsum(dO O), the dQ pass over query tiles, the dK/dV pass over key tiles with
 * the transposed block lists, the deterministic reduction of the level-bias gradient and, when
 * params.tile_grad is set, of the block-pair gradient; with a token-tree bias (paper mode) the dQ pass also
 * writes the gradient of its per-row scale. The tile comes through the tuning lookup chain (kernel "bwd").
 * On NVIDIA GPUs whose mma probe passed, fp16 calls without biases or block-pair gradient run the dQ and
 * dK/dV passes on tensor cores instead (backward_nv_mma.c); delta comes from the portable pre-pass either
 * way. */
#include "attention/backward_internal.h"
#include "attention/token_bias.h"
#include "tuning/tuning.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const FN = "dua_attention_backward";

static dua_status check_like(dua_context *ctx, const dua_tensor *t, const char *name, const dua_tensor *like,
                             dua_dtype dtype) {
  dua_status st = dua_tensor_check(ctx, t, name);
  if (st != DUA_SUCCESS)
    return st;
  if (t->dtype != dtype)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.dtype = %d, expected %d", FN, name,
                    (int)t->dtype, (int)dtype);
  if ((st = dua_check_shape(ctx, FN, t, name, like->shape[0], like->shape[1], like->shape[2],
                            like->shape[3])) != DUA_SUCCESS)
    return st;
  if (t->strides[3] != 1)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: %s.strides[3] = %lld; head_dim must be contiguous", FN,
                    name, (long long)t->strides[3]);
  return DUA_SUCCESS;
}

static dua_status validate_backward(dua_context *ctx, const dua_layout *l, const dua_attention_params *p,
                                    const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                                    const dua_tensor *o, const dua_tensor *lse, const dua_tensor *d_o,
                                    const dua_tensor *dq, const dua_tensor *dk, const dua_tensor *dv,
                                    const dua_tensor *d_bias, const dua_tensor *d_tok) {
  dua_status st = dua_attention_validate(ctx, FN, l, p, q, k, v, o, lse);
  if (st != DUA_SUCCESS)
    return st;
  if (!lse)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: lse is NULL (the forward's LSE is required)", FN);
  if (p->algo == DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: params.algo = DUA_ALGO_NAIVE has no backward", FN);
  if ((st = check_like(ctx, d_o, "d_o", q, q->dtype)) != DUA_SUCCESS ||
      (st = check_like(ctx, dq, "dq", q, q->dtype)) != DUA_SUCCESS ||
      (st = check_like(ctx, dk, "dk", k, q->dtype)) != DUA_SUCCESS ||
      (st = check_like(ctx, dv, "dv", k, q->dtype)) != DUA_SUCCESS)
    return st;
  if (d_bias) {
    if (!p->level_bias)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: d_level_bias is set but params.level_bias is NULL", FN);
    if ((st = dua_tensor_check(ctx, d_bias, "d_level_bias")) != DUA_SUCCESS ||
        (st = dua_check_shape(ctx, FN, d_bias, "d_level_bias", l->heads, l->max_depth + 1, 1, 1)) !=
            DUA_SUCCESS)
      return st;
    if (d_bias->dtype != DUA_F32 || d_bias->strides[1] != 1)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: d_level_bias must be DUA_F32 with contiguous levels (strides[1] = 1)", FN);
  }
  const dua_tensor *tg = p->tile_grad;
  if (tg) {
    if ((st = dua_tensor_check(ctx, tg, "params.tile_grad")) != DUA_SUCCESS ||
        (st = dua_check_shape(ctx, FN, tg, "params.tile_grad", l->batch, l->heads, l->num_blocks,
                              l->num_blocks)) != DUA_SUCCESS)
      return st;
    if (tg->dtype != DUA_F32)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.tile_grad.dtype = %d, must be DUA_F32", FN,
                      (int)tg->dtype);
  }
  if (d_tok) {
    if (!p->token_scale)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: d_token_scale is set but params.token_scale is NULL", FN);
    if ((st = dua_tensor_check(ctx, d_tok, "d_token_scale")) != DUA_SUCCESS ||
        (st = dua_check_shape(ctx, FN, d_tok, "d_token_scale", l->batch, l->heads, l->seq_len, 1)) !=
            DUA_SUCCESS)
      return st;
    if (d_tok->dtype != DUA_F32)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: d_token_scale must be DUA_F32", FN);
  }
  {
    const dua_tensor *outs[6] = {dq, dk, dv, d_bias, tg, d_tok},
                     *ins[9] = {q, k, v, o, lse, d_o, p->level_bias, p->token_scale, p->token_table};
    static const char *const out_names[6] = {"dq",           "dk", "dv", "d_level_bias", "params.tile_grad",
                                             "d_token_scale"};
    static const char *const in_names[9] = {"q",   "k",          "v",           "o",          "lse",
                                            "d_o", "level_bias", "token_scale", "token_table"};
    if ((st = dua_check_outputs(ctx, FN, outs, out_names, 6, ins, in_names, 9)) != DUA_SUCCESS)
      return st;
  }
  return DUA_SUCCESS;
}

dua_status dua_attention_backward(dua_context *ctx, dua_layout *l, const dua_attention_params *params,
                                  const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                                  const dua_tensor *o, const dua_tensor *lse, const dua_tensor *d_o,
                                  const dua_tensor *dq, const dua_tensor *dk, const dua_tensor *dv,
                                  const dua_tensor *d_bias) {
  return dua_attention_backward_ex(ctx, l, params, q, k, v, o, lse, d_o, dq, dk, dv, d_bias, NULL);
}

dua_status dua_attention_backward_ex(dua_context *ctx, dua_layout *l, const dua_attention_params *params,
                                     const dua_tensor *q, const dua_tensor *k, const dua_tensor *v,
                                     const dua_tensor *o, const dua_tensor *lse, const dua_tensor *d_o,
                                     const dua_tensor *dq, const dua_tensor *dk, const dua_tensor *dv,
                                     const dua_tensor *d_bias, const dua_tensor *d_tok) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!l)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: layout is NULL", FN);
  dua_attention_params defaults;
  if (!params) {
    dua_attention_params_init(&defaults);
    params = &defaults;
  }
  dua_status st = validate_backward(ctx, l, params, q, k, v, o, lse, d_o, dq, dk, dv, d_bias, d_tok);
  if (st != DUA_SUCCESS)
    return st;
  const int head_dim = (int)q->shape[3];
  /* the context's override, the tuning database, compiled defaults (tuning/tuning.h) */
  dua_bwd_params tp;
  if ((st = dua_tuning_bwd(ctx, head_dim, q->dtype == DUA_F16, l->block, &tp, NULL, NULL, 0)) != DUA_SUCCESS)
    return st;
  const int use_lists = l->kind == DUA_LAYOUT_LIST || params->algo == DUA_ALGO_LIST;
  dua_layout_device *dev = NULL;
  if ((st = dua_layout_device_get(ctx, l, DUA_DEVICE_TRANSPOSED_LISTS | (use_lists ? DUA_DEVICE_LISTS : 0),
                                  &dev)) != DUA_SUCCESS)
    return st;

  /* scratch: delta [B*Hq*N], the level-bias partials [B*Hq*key_tiles*levels], then the block-pair partials
   * [B*Hq*nb*key_tiles] */
  const int has_bias = params->level_bias != NULL, levels = l->max_depth + 1;
  const dua_tensor *tile_grad = params->tile_grad;
  const size_t key_tiles = (size_t)l->num_blocks * (size_t)(l->block / tp.block_n);
  const size_t n_delta = (size_t)l->batch * l->heads * l->seq_len;
  const size_t n_partial = has_bias ? (size_t)l->batch * l->heads * key_tiles * (size_t)levels : 0;
  const size_t n_tile = tile_grad ? (size_t)l->batch * l->heads * (size_t)l->num_blocks * key_tiles : 0;
  cl_mem scratch;
  if ((st = dua_context_scratch(ctx, sizeof(float) * (n_delta + n_partial + n_tile + 1), &scratch)) !=
      DUA_SUCCESS)
    return st;

  enum { PRE_ROWS = 16, PRE_LANES = 8 }; /* dua_attn_bwd_pre: rows per work-group, work-items per row */
  char options[256];
  const int enum_mode = use_lists ? 2 : l->kind == DUA_LAYOUT_CONTENT ? 1 : 0;
  const int tree_mode = l->kind == DUA_LAYOUT_LIST ? 2 : l->kind == DUA_LAYOUT_CONTENT ? 1 : 0;
  snprintf(
      options, sizeof options,
      "-DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d -DDUA_FP16=%d -DDUA_ENUM=%d -DDUA_TREE=%d "
      "-DDUA_BIAS=%d -DDUA_TBIAS=%d -DPRE_ROWS=%d -DPRE_LANES=%d%s",
      head_dim, tp.block_m, tp.block_n, tp.threads_m, tp.threads_n, q->dtype == DUA_F16, enum_mode, tree_mode,
      has_bias, params->token_scale != NULL, PRE_ROWS, PRE_LANES, tile_grad ? " -DDUA_TILE_GRAD=1" : "");
  cl_kernel k_pre, k_dq, k_dkdv, k_bias = NULL, k_tiles = NULL;
  if ((st = dua_program_kernel(ctx, "common,attn_bwd", options, "dua_attn_bwd_pre", &k_pre)) != DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_bwd", options, "dua_attn_bwd_dq", &k_dq)) != DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_bwd", options, "dua_attn_bwd_dkdv", &k_dkdv)) !=
          DUA_SUCCESS ||
      (d_bias && (st = dua_program_kernel(ctx, "common,attn_bwd", options, "dua_attn_bwd_bias", &k_bias)) !=
                     DUA_SUCCESS) ||
      (tile_grad && (st = dua_program_kernel(ctx, "common,attn_bwd", options, "dua_attn_bwd_tiles",
                                             &k_tiles)) != DUA_SUCCESS))
    return st;

  const shape_arg shape = dua_shape_of(l);
  const cl_float scale = params->scale > 0.0f ? params->scale : 1.0f / sqrtf((float)head_dim);
  const cl_float scale_log2 = scale * 1.4426950408889634f;
  const cl_long4 qs = dua_strides4(q), ks = dua_strides4(k), vs = dua_strides4(v), os = dua_strides4(o);
  const cl_long4 gs = dua_strides4(d_o), dqs = dua_strides4(dq), dks = dua_strides4(dk),
                 dvs = dua_strides4(dv);
  const cl_long4 ls = dua_strides4(lse);
  const cl_long4 in_off = {
      {dua_elem_offset(q), dua_elem_offset(k), dua_elem_offset(v), dua_elem_offset(d_o)}};
  const cl_long delta_off = 0, partial_off = (cl_long)n_delta, tile_off = (cl_long)(n_delta + n_partial);
  const cl_long bias_off = has_bias ? dua_elem_offset(params->level_bias) : 0;
  const cl_int bias_stride = has_bias ? (cl_int)params->level_bias->strides[0] : 0;
  const cl_mem qm = q->buffer->mem, km = k->buffer->mem, vm = v->buffer->mem, om = o->buffer->mem;
  const cl_mem gm = d_o->buffer->mem, lm = lse->buffer->mem, dqm = dq->buffer->mem, dkm = dk->buffer->mem;
  const cl_mem dvm = dv->buffer->mem, bm = has_bias ? params->level_bias->buffer->mem : dev->dummy;
  const cl_mem paths = dev->paths ? dev->paths : dev->dummy, order = dev->order ? dev->order : dev->dummy;
  const cl_mem ranks = dev->rank_range ? dev->rank_range : dev->dummy;
  const cl_mem lc = dev->list_counts ? dev->list_counts : dev->dummy;
  const cl_mem lf = dev->list_full ? dev->list_full : dev->dummy;
  const cl_mem li = dev->list_indices ? dev->list_indices : dev->dummy;
  const size_t threads = (size_t)tp.threads_m * tp.threads_n;
  size_t local[3] = {threads, 1, 1};

  /* 1. delta = rowsum(dO * O) */
  dua_arg_list a = {k_pre, 0, CL_SUCCESS};
  const cl_long2 pre_off = {{dua_elem_offset(o), dua_elem_offset(d_o)}};
  dua_arg(&a, sizeof om, &om);
  dua_arg(&a, sizeof gm, &gm);
  dua_arg(&a, sizeof scratch, &scratch);
  dua_arg(&a, sizeof os, &os);
  dua_arg(&a, sizeof gs, &gs);
  dua_arg(&a, sizeof pre_off, &pre_off);
  dua_arg(&a, sizeof delta_off, &delta_off);
  dua_arg(&a, sizeof shape, &shape);
  size_t g_pre[3] = {(size_t)(l->seq_len + PRE_ROWS - 1) / PRE_ROWS * PRE_ROWS * PRE_LANES, (size_t)l->heads,
                     (size_t)l->batch},
         l_pre[3] = {PRE_ROWS * PRE_LANES, 1, 1};
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: dua_attn_bwd_pre argument %u", FN, a.index - 1);

  /* 2. dQ over query tiles, the forward's enumeration */
  a = (dua_arg_list){k_dq, 0, CL_SUCCESS};
  const cl_long4 dq_aux = {{dua_elem_offset(dq), dua_elem_offset(lse), delta_off, bias_off}};
  const cl_mem in_dq[7] = {qm, km, vm, gm, lm, scratch, dqm};
  for (int i = 0; i < 7; i++)
    dua_arg(&a, sizeof in_dq[i], &in_dq[i]);
  const cl_long4 dq_strides[6] = {qs, ks, vs, gs, dqs, ls};
  for (int i = 0; i < 6; i++)
    dua_arg(&a, sizeof dq_strides[i], &dq_strides[i]);
  dua_arg(&a, sizeof in_off, &in_off);
  dua_arg(&a, sizeof dq_aux, &dq_aux);
  dua_arg(&a, sizeof shape, &shape);
  dua_arg(&a, sizeof scale, &scale);
  dua_arg(&a, sizeof scale_log2, &scale_log2);
  const cl_mem rule_mems[8] = {dev->head_rules, paths, order, ranks, lc, lf, li, bm};
  for (int i = 0; i < 8; i++)
    dua_arg(&a, sizeof rule_mems[i], &rule_mems[i]);
  dua_arg(&a, sizeof bias_stride, &bias_stride);
  /* token-tree bias (dummies without one) */
  const int has_tok = params->token_scale != NULL;
  const cl_mem tsm = has_tok ? params->token_scale->buffer->mem : dev->dummy,
               ttm = has_tok ? params->token_table->buffer->mem : dev->dummy,
               dtm = d_tok ? d_tok->buffer->mem : dev->dummy;
  const cl_long4 tss = has_tok ? dua_strides4(params->token_scale) : qs,
                 dts = d_tok ? dua_strides4(d_tok) : qs;
  const cl_long4 tok_off = {{has_tok ? dua_elem_offset(params->token_scale) : 0,
                             has_tok ? dua_elem_offset(params->token_table) : 0,
                             d_tok ? dua_elem_offset(d_tok) : 0, 0}};
  const cl_long2 tok_off2 = {{tok_off.s[0], tok_off.s[1]}};
  const cl_int tok_tstride =
                   has_tok && params->token_table->shape[0] > 1 ? (cl_int)params->token_table->strides[0] : 0,
               tok_depth = dua_token_tree_depth(l->seq_len), has_dtok = d_tok != NULL;
  dua_arg(&a, sizeof tsm, &tsm);
  dua_arg(&a, sizeof ttm, &ttm);
  dua_arg(&a, sizeof dtm, &dtm);
  dua_arg(&a, sizeof tss, &tss);
  dua_arg(&a, sizeof dts, &dts);
  dua_arg(&a, sizeof tok_off, &tok_off);
  dua_arg(&a, sizeof tok_tstride, &tok_tstride);
  dua_arg(&a, sizeof tok_depth, &tok_depth);
  dua_arg(&a, sizeof has_dtok, &has_dtok);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: dua_attn_bwd_dq argument %u", FN, a.index - 1);
  const size_t q_tiles = (size_t)l->num_blocks * (size_t)(l->block / tp.block_m);
  size_t g_dq[3] = {q_tiles * threads, (size_t)l->heads, (size_t)l->batch};

  /* 3. dK, dV (and level-bias partials) over key tiles, the transposed lists */
  a = (dua_arg_list){k_dkdv, 0, CL_SUCCESS};
  const cl_mem in_kv[9] = {qm, km, vm, gm, lm, scratch, dkm, dvm, scratch};
  for (int i = 0; i < 9; i++)
    dua_arg(&a, sizeof in_kv[i], &in_kv[i]);
  const cl_long4 kv_strides[7] = {qs, ks, vs, gs, dks, dvs, ls};
  for (int i = 0; i < 7; i++)
    dua_arg(&a, sizeof kv_strides[i], &kv_strides[i]);
  const cl_long4 kv_aux = {{dua_elem_offset(dk), dua_elem_offset(dv), dua_elem_offset(lse), delta_off}};
  const cl_long2 kv_bias_off = {{bias_off, partial_off}};
  const cl_int n_levels = levels;
  dua_arg(&a, sizeof in_off, &in_off);
  dua_arg(&a, sizeof kv_aux, &kv_aux);
  dua_arg(&a, sizeof kv_bias_off, &kv_bias_off);
  dua_arg(&a, sizeof shape, &shape);
  dua_arg(&a, sizeof scale, &scale);
  dua_arg(&a, sizeof scale_log2, &scale_log2);
  const cl_mem t_mems[6] = {dev->head_rules,    paths, dev->tlist_counts, dev->tlist_full,
                            dev->tlist_indices, bm};
  for (int i = 0; i < 6; i++)
    dua_arg(&a, sizeof t_mems[i], &t_mems[i]);
  dua_arg(&a, sizeof bias_stride, &bias_stride);
  dua_arg(&a, sizeof n_levels, &n_levels);
  dua_arg(&a, sizeof tsm, &tsm);
  dua_arg(&a, sizeof ttm, &ttm);
  dua_arg(&a, sizeof tss, &tss);
  dua_arg(&a, sizeof tok_off2, &tok_off2);
  dua_arg(&a, sizeof tok_tstride, &tok_tstride);
  dua_arg(&a, sizeof tok_depth, &tok_depth);
  dua_arg(&a, sizeof scratch, &scratch);
  dua_arg(&a, sizeof tile_off, &tile_off);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: dua_attn_bwd_dkdv argument %u", FN, a.index - 1);
  size_t g_kv[3] = {key_tiles * threads, (size_t)l->kv_heads, (size_t)l->batch};
  /* the tensor-core passes, where they apply (arguments set, nothing enqueued yet) */
  const dua_tensor *rows[7] = {q, k, v, d_o, dq, dk, dv};
  int aligned = 1;
  for (int i = 0; i < 7; i++) {
    aligned &= dua_elem_offset(rows[i]) % 8 == 0;
    for (int d = 0; d < 3; d++)
      aligned &= rows[i]->strides[d] % 8 == 0;
  }
  dua_bwd_call mc = {qm,
                     km,
                     vm,
                     gm,
                     lm,
                     scratch,
                     dqm,
                     dkm,
                     dvm,
                     qs,
                     ks,
                     vs,
                     gs,
                     dqs,
                     dks,
                     dvs,
                     ls,
                     in_off,
                     dq_aux,
                     kv_aux,
                     shape,
                     scale,
                     scale_log2,
                     dev->head_rules,
                     paths,
                     order,
                     ranks,
                     lc,
                     lf,
                     li,
                     dev->tlist_counts,
                     dev->tlist_full,
                     dev->tlist_indices,
                     head_dim,
                     q->dtype == DUA_F16,
                     enum_mode,
                     tree_mode,
                     l->batch,
                     l->heads,
                     l->kv_heads,
                     l->num_blocks,
                     l->block,
                     has_bias || tile_grad != NULL || has_tok,
                     aligned,
                     {NULL, NULL},
                     {INT32_MAX, INT32_MAX}};
  for (int keys = 0; keys < 2 && ctx->info.nv_mma_f16 && !ctx->fast_paths_disabled; keys++)
    if ((st = dua_layout_tail_order(ctx, l, keys, &mc.tail_order[keys], &mc.tail_start[keys], NULL)) !=
        DUA_SUCCESS)
      return st;
  cl_kernel m_dq = NULL, m_kv = NULL;
  size_t mg_dq[3], mg_kv[3], m_local = 0;
  st = dua_backward_nv_mma(ctx, &mc, &m_dq, &m_kv, mg_dq, mg_kv, &m_local);
  int *wgmma_failed = &ctx->wgmma_bwd_failed[mc.head_dim == 128];
  if (st == DUA_ERROR_BUILD_FAILED && ctx->info.nv_wgmma && !*wgmma_failed) { /* back to mma.sync */
    dua_log(ctx, DUA_LOG_WARNING, "wgmma backward (head dim %d) unavailable (%s); using mma.sync: %s",
            mc.head_dim, dua_status_string(st), ctx->last_error);
    *wgmma_failed = 1; /* per head dim; the forward keeps its own wgmma kernels */
    ctx->last_error[0] = '\0';
    st = dua_backward_nv_mma(ctx, &mc, &m_dq, &m_kv, mg_dq, mg_kv, &m_local);
  }
  if (st == DUA_SUCCESS) {
    size_t ml[3] = {m_local, 1, 1};
    if ((st = dua_launch(ctx, k_pre, 3, g_pre, l_pre, "dua_attn_bwd_pre")) != DUA_SUCCESS ||
        (st = dua_launch(ctx, m_dq, 3, mg_dq, ml, "dua_attn_bwd_dq_mma")) != DUA_SUCCESS)
      return st;
    return dua_launch(ctx, m_kv, 3, mg_kv, ml, "dua_attn_bwd_dkdv_mma");
  }
  if (st != DUA_ERROR_UNSUPPORTED) { /* the probe passed but these kernels do not build here */
    dua_log(ctx, DUA_LOG_WARNING, "tensor-core backward unavailable (%s); using the portable kernels: %s",
            dua_status_string(st), ctx->last_error);
    ctx->fast_paths_disabled = 1;
    ctx->last_error[0] = '\0';
  }

  /* 4. level-bias gradient: fixed-order sum of the partials */
  size_t g_bias[1] = {(size_t)l->heads * (size_t)levels};
  if (d_bias) {
    a = (dua_arg_list){k_bias, 0, CL_SUCCESS};
    const cl_mem out = d_bias->buffer->mem;
    const cl_long out_off = dua_elem_offset(d_bias);
    const cl_int out_stride = (cl_int)d_bias->strides[0], nbatch = l->batch, hq = l->heads,
                 kt = (cl_int)key_tiles;
    dua_arg(&a, sizeof scratch, &scratch);
    dua_arg(&a, sizeof out, &out);
    dua_arg(&a, sizeof partial_off, &partial_off);
    dua_arg(&a, sizeof out_off, &out_off);
    dua_arg(&a, sizeof out_stride, &out_stride);
    dua_arg(&a, sizeof nbatch, &nbatch);
    dua_arg(&a, sizeof hq, &hq);
    dua_arg(&a, sizeof kt, &kt);
    dua_arg(&a, sizeof n_levels, &n_levels);
    if (a.err != CL_SUCCESS)
      return dua_fail(ctx, (dua_status)a.err, "%s: dua_attn_bwd_bias argument %u", FN, a.index - 1);
  }

  /* 5. block-pair gradient: fixed-order sum of the key-tile partials of each key block */
  size_t g_tiles[3] = {(size_t)l->num_blocks * (size_t)l->num_blocks, (size_t)l->heads, (size_t)l->batch};
  if (tile_grad) {
    a = (dua_arg_list){k_tiles, 0, CL_SUCCESS};
    const cl_mem out = tile_grad->buffer->mem;
    const cl_long4 ts = dua_strides4(tile_grad);
    const cl_long out_off = dua_elem_offset(tile_grad);
    const cl_int nbk = l->num_blocks, tpb = l->block / tp.block_n;
    dua_arg(&a, sizeof scratch, &scratch);
    dua_arg(&a, sizeof out, &out);
    dua_arg(&a, sizeof tile_off, &tile_off);
    dua_arg(&a, sizeof ts, &ts);
    dua_arg(&a, sizeof out_off, &out_off);
    dua_arg(&a, sizeof nbk, &nbk);
    dua_arg(&a, sizeof tpb, &tpb);
    if (a.err != CL_SUCCESS)
      return dua_fail(ctx, (dua_status)a.err, "%s: dua_attn_bwd_tiles argument %u", FN, a.index - 1);
  }

  /* Every argument is set: only now does anything reach the queue (a failure above wrote nothing). An enqueue
   * failure from here on can leave the gradients partly written; the status says so. */
  dua_log(ctx, DUA_LOG_DEBUG, "backward: portable kernels dua_attn_bwd_pre, _dq, _dkdv (%s)", options);
  if ((st = dua_launch(ctx, k_pre, 3, g_pre, l_pre, "dua_attn_bwd_pre")) != DUA_SUCCESS ||
      (st = dua_launch(ctx, k_dq, 3, g_dq, local, "dua_attn_bwd_dq")) != DUA_SUCCESS)
    return st;
  if (has_bias) {
    const cl_float zero = 0.0f;
    cl_int err =
        clEnqueueFillBuffer(ctx->queue, scratch, &zero, sizeof zero, (size_t)partial_off * sizeof(float),
                            n_partial * sizeof(float), 0, NULL, NULL);
    if (err != CL_SUCCESS)
      return dua_fail(ctx, (dua_status)err, "%s: clearing the level-bias partials failed: %s", FN,
                      dua_status_string((dua_status)err));
  }
  if (tile_grad) {
    const cl_float zero = 0.0f;
    cl_int err = clEnqueueFillBuffer(ctx->queue, scratch, &zero, sizeof zero,
                                     (size_t)tile_off * sizeof(float), n_tile * sizeof(float), 0, NULL, NULL);
    if (err != CL_SUCCESS)
      return dua_fail(ctx, (dua_status)err, "%s: clearing the block-pair partials failed: %s", FN,
                      dua_status_string((dua_status)err));
  }
  if ((st = dua_launch(ctx, k_dkdv, 3, g_kv, local, "dua_attn_bwd_dkdv")) != DUA_SUCCESS)
    return st;
  if (d_bias && (st = dua_launch(ctx, k_bias, 1, g_bias, NULL, "dua_attn_bwd_bias")) != DUA_SUCCESS)
    return st;
  return tile_grad ? dua_launch(ctx, k_tiles, 3, g_tiles, NULL, "dua_attn_bwd_tiles") : DUA_SUCCESS;
}
