/* forward.c: dua_attention_forward: argument validation, kernel variant choice and launch of the portable
 * block-sparse forward (cl/attn_fwd.cl) or the naive materialized baseline (cl/attn_naive.cl).
 * Steady state: no allocation, no upload and no synchronization per call. */
#include "attention/forward_internal.h"
#include "tuning/fwd_params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



static cl_long4 strides_of(const dua_tensor *t) {
  cl_long4 s;
  for (int d = 0; d < 4; d++)
    s.s[d] = t->strides[d];
  return s;
}

static cl_long element_offset(const dua_tensor *t) { return (cl_long)(t->offset / dua_dtype_size(t->dtype)); }

static dua_status check_shape(dua_context *ctx, const dua_tensor *t, const char *name, int64_t d0, int64_t d1,
                              int64_t d2, int64_t d3) {
  const int64_t want[4] = {d0, d1, d2, d3};
  static const char *dims[4] = {"batch", "heads", "tokens", "head_dim"};
  for (int d = 0; d < 4; d++)
    if (t->shape[d] != want[d])
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: %s.shape[%d] (%s) = %lld, expected %lld",
                      name, d, dims[d], (long long)t->shape[d], (long long)want[d]);
  return DUA_SUCCESS;
}

/* Everything an entry point must refuse before touching an output. */
static dua_status validate(dua_context *ctx, const dua_layout *l, const dua_attention_params *p,
                           const dua_tensor *q, const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                           const dua_tensor *lse) {
  dua_status st;
  const dua_tensor *ts[4] = {q, k, v, o};
  static const char *names[4] = {"q", "k", "v", "o"};
  for (int i = 0; i < 4; i++)
    if ((st = dua_tensor_check(ctx, ts[i], names[i])) != DUA_SUCCESS)
      return st;
  for (int i = 1; i < 4; i++)
    if (ts[i]->dtype != q->dtype)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: %s.dtype = %d differs from q.dtype = %d",
                      names[i], (int)ts[i]->dtype, (int)q->dtype);
  const int64_t dh = q->shape[3];
  if (dh != 32 && dh != 64 && dh != 96 && dh != 128)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "dua_attention_forward: head_dim = %lld is not supported (32, 64, 96, 128)",
                    (long long)dh);
  if ((st = check_shape(ctx, q, "q", l->batch, l->heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = check_shape(ctx, k, "k", l->batch, l->kv_heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = check_shape(ctx, v, "v", l->batch, l->kv_heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = check_shape(ctx, o, "o", l->batch, l->heads, l->seq_len, dh)) != DUA_SUCCESS)
    return st;
  for (int i = 0; i < 4; i++)
    if (ts[i]->strides[3] != 1)
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "dua_attention_forward: %s.strides[3] = %lld; head_dim must be contiguous",
                      names[i], (long long)ts[i]->strides[3]);
  if (lse) {
    if ((st = dua_tensor_check(ctx, lse, "lse")) != DUA_SUCCESS ||
        (st = check_shape(ctx, lse, "lse", l->batch, l->heads, l->seq_len, 1)) != DUA_SUCCESS)
      return st;
    if (lse->dtype != DUA_F32)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: lse.dtype must be DUA_F32");
  }
  if (p->algo < DUA_ALGO_AUTO || p->algo > DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: params.algo = %d is not a dua_attention_algo",
                    (int)p->algo);
  if (!isfinite(p->scale) || p->scale < 0.0f)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: params.scale = %g must be finite and >= 0",
                    (double)p->scale);
  if (l->kind == DUA_LAYOUT_LIST && p->algo == DUA_ALGO_RULE)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_attention_forward: params.algo = DUA_ALGO_RULE but the layout was made from lists");
  if (l->kind == DUA_LAYOUT_LIST && p->algo == DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "dua_attention_forward: the naive baseline needs a rule layout");
  if (p->level_bias) {
    const dua_tensor *bt = p->level_bias;
    if (l->kind == DUA_LAYOUT_LIST)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "dua_attention_forward: params.level_bias needs a rule layout (lists have no tree levels)");
    if ((st = dua_tensor_check(ctx, bt, "level_bias")) != DUA_SUCCESS ||
        (st = check_shape(ctx, bt, "level_bias", l->heads, l->max_depth + 1, 1, 1)) != DUA_SUCCESS)
      return st;
    if (bt->dtype != DUA_F32 || bt->strides[1] != 1)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "dua_attention_forward: level_bias must be DUA_F32 with contiguous levels (strides[1] = 1)");
  }
  if (p->algo == DUA_ALGO_NAIVE) {
    double bytes = 4.0 * (double)l->batch * l->heads * (double)l->seq_len * l->seq_len;
    if (bytes > (double)ctx->info.max_alloc_bytes)
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                      "dua_attention_forward: the naive baseline needs %.0f bytes of scores, more than the device's "
                      "largest allocation (%llu)",
                      bytes, (unsigned long long)ctx->info.max_alloc_bytes);
  }
  return DUA_SUCCESS;
}

static shape_arg shape_of(const dua_layout *l) {
  shape_arg s = {l->seq_len, l->block, l->num_blocks, l->shift, l->window, l->sink,
                 l->causal,  l->heads, l->kv_heads,   l->max_depth};
  return s;
}

/* Sets kernel arguments in order; stops at the first failure. */
typedef struct {
  cl_kernel kernel;
  cl_uint index;
  cl_int err;
} arg_list;

static void arg(arg_list *a, size_t size, const void *value) {
  if (a->err == CL_SUCCESS)
    a->err = clSetKernelArg(a->kernel, a->index, size, value);
  a->index++;
}

static dua_status launch(dua_context *ctx, cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local,
                         const char *what) {
  cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, dims, NULL, global, local, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "launching %s failed: %s", what, dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

static dua_status forward_naive(dua_context *ctx, dua_layout *l, const dua_attention_params *p, float scale,
                                const dua_tensor *q, const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                                const dua_tensor *lse, dua_layout_device *dev) {
  char options[128];
  snprintf(options, sizeof options, "-DDUA_FP16=%d -DDUA_TREE=%d", q->dtype == DUA_F16,
           l->kind == DUA_LAYOUT_CONTENT ? 1 : 0);
  cl_kernel k_scores, k_softmax, k_pv;
  dua_status st;
  if ((st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_scores", &k_scores)) != DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_softmax", &k_softmax)) != DUA_SUCCESS ||
      (st = dua_program_kernel(ctx, "common,attn_naive", options, "dua_naive_pv", &k_pv)) != DUA_SUCCESS)
    return st;
  const size_t n = (size_t)l->seq_len, bh = (size_t)l->batch * l->heads;
  cl_mem scores;
  if ((st = dua_context_scratch(ctx, 4 * bh * n * n, &scores)) != DUA_SUCCESS)
    return st;
  shape_arg shape = shape_of(l);
  cl_int head_dim = (cl_int)q->shape[3], has_bias = p->level_bias != NULL, has_lse = lse != NULL;
  cl_long4 qs = strides_of(q), ks = strides_of(k), vs = strides_of(v), os = strides_of(o);
  cl_long4 lse_s = lse ? strides_of(lse) : qs;
  cl_long2 qk_off = {{element_offset(q), element_offset(k)}}, vo_off = {{element_offset(v), element_offset(o)}};
  cl_long bias_off = has_bias ? element_offset(p->level_bias) : 0, lse_off = lse ? element_offset(lse) : 0;
  cl_int bias_stride = has_bias ? (cl_int)p->level_bias->strides[0] : 0;
  cl_mem qm = q->buffer->mem, km = k->buffer->mem, vm = v->buffer->mem, om = o->buffer->mem;
  cl_mem paths = dev->paths ? dev->paths : dev->dummy;
  cl_mem bias = has_bias ? p->level_bias->buffer->mem : dev->dummy, lsem = lse ? lse->buffer->mem : dev->dummy;
  cl_int nt = l->seq_len, hq = l->heads, hkv = l->kv_heads;

  arg_list a = {k_scores, 0, CL_SUCCESS};
  arg(&a, sizeof qm, &qm);
  arg(&a, sizeof km, &km);
  arg(&a, sizeof scores, &scores);
  arg(&a, sizeof qs, &qs);
  arg(&a, sizeof ks, &ks);
  arg(&a, sizeof qk_off, &qk_off);
  arg(&a, sizeof shape, &shape);
  arg(&a, sizeof head_dim, &head_dim);
  arg(&a, sizeof scale, &scale);
  arg(&a, sizeof dev->head_rules, &dev->head_rules);
  arg(&a, sizeof paths, &paths);
  arg(&a, sizeof bias, &bias);
  arg(&a, sizeof bias_off, &bias_off);
  arg(&a, sizeof bias_stride, &bias_stride);
  arg(&a, sizeof has_bias, &has_bias);
  size_t g3[3] = {n, n, bh};
  if (a.err != CL_SUCCESS || (st = launch(ctx, k_scores, 3, g3, NULL, "dua_naive_scores")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive scores: argument %u", a.index) : st;

  a = (arg_list){k_softmax, 0, CL_SUCCESS};
  arg(&a, sizeof scores, &scores);
  arg(&a, sizeof lsem, &lsem);
  arg(&a, sizeof lse_s, &lse_s);
  arg(&a, sizeof lse_off, &lse_off);
  arg(&a, sizeof has_lse, &has_lse);
  arg(&a, sizeof nt, &nt);
  arg(&a, sizeof hq, &hq);
  size_t g2[2] = {n, bh};
  if (a.err != CL_SUCCESS || (st = launch(ctx, k_softmax, 2, g2, NULL, "dua_naive_softmax")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive softmax: argument %u", a.index) : st;

  a = (arg_list){k_pv, 0, CL_SUCCESS};
  arg(&a, sizeof scores, &scores);
  arg(&a, sizeof vm, &vm);
  arg(&a, sizeof om, &om);
  arg(&a, sizeof vs, &vs);
  arg(&a, sizeof os, &os);
  arg(&a, sizeof vo_off, &vo_off);
  arg(&a, sizeof nt, &nt);
  arg(&a, sizeof hq, &hq);
  arg(&a, sizeof hkv, &hkv);
  size_t gpv[3] = {(size_t)head_dim, n, bh};
  if (a.err != CL_SUCCESS || (st = launch(ctx, k_pv, 3, gpv, NULL, "dua_naive_pv")) != DUA_SUCCESS)
    return a.err != CL_SUCCESS ? dua_fail(ctx, (dua_status)a.err, "naive P.V: argument %u", a.index) : st;
  return DUA_SUCCESS;
}

/* Kernel arguments shared by every forward kernel variant (portable and vendor fast paths). */
static dua_fwd_call make_call(const dua_layout *l, const dua_attention_params *params, float scale,
                              const dua_tensor *q, const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                              const dua_tensor *lse, const dua_layout_device *dev) {
  dua_fwd_call c;
  memset(&c, 0, sizeof c);
  c.shape = shape_of(l);
  c.q_strides = strides_of(q);
  c.k_strides = strides_of(k);
  c.v_strides = strides_of(v);
  c.o_strides = strides_of(o);
  c.lse_strides = lse ? strides_of(lse) : c.q_strides;
  c.offsets = (cl_long4){{element_offset(q), element_offset(k), element_offset(v), element_offset(o)}};
  c.aux_offsets = (cl_long2){{lse ? element_offset(lse) : 0, params->level_bias ? element_offset(params->level_bias) : 0}};
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
  c.head_dim = (int)q->shape[3];
  c.fp16 = q->dtype == DUA_F16;
  c.has_bias = params->level_bias != NULL;
  c.enum_mode = (l->kind == DUA_LAYOUT_LIST || params->algo == DUA_ALGO_LIST) ? 2 : l->kind == DUA_LAYOUT_CONTENT ? 1 : 0;
  c.tree_mode = l->kind == DUA_LAYOUT_LIST ? 2 : l->kind == DUA_LAYOUT_CONTENT ? 1 : 0;
  c.batch = l->batch;
  c.heads = l->heads;
  c.num_blocks = l->num_blocks;
  c.block = l->block;
  return c;
}

dua_status dua_fwd_set_args(dua_context *ctx, cl_kernel kernel, const dua_fwd_call *c) {
  arg_list a = {kernel, 0, CL_SUCCESS};
  arg(&a, sizeof c->q, &c->q);
  arg(&a, sizeof c->k, &c->k);
  arg(&a, sizeof c->v, &c->v);
  arg(&a, sizeof c->o, &c->o);
  arg(&a, sizeof c->lse, &c->lse);
  arg(&a, sizeof c->q_strides, &c->q_strides);
  arg(&a, sizeof c->k_strides, &c->k_strides);
  arg(&a, sizeof c->v_strides, &c->v_strides);
  arg(&a, sizeof c->o_strides, &c->o_strides);
  arg(&a, sizeof c->lse_strides, &c->lse_strides);
  arg(&a, sizeof c->offsets, &c->offsets);
  arg(&a, sizeof c->aux_offsets, &c->aux_offsets);
  arg(&a, sizeof c->has_lse, &c->has_lse);
  arg(&a, sizeof c->shape, &c->shape);
  arg(&a, sizeof c->scale_log2, &c->scale_log2);
  arg(&a, sizeof c->head_rules, &c->head_rules);
  arg(&a, sizeof c->paths, &c->paths);
  arg(&a, sizeof c->order, &c->order);
  arg(&a, sizeof c->rank_range, &c->rank_range);
  arg(&a, sizeof c->list_counts, &c->list_counts);
  arg(&a, sizeof c->list_full, &c->list_full);
  arg(&a, sizeof c->list_indices, &c->list_indices);
  arg(&a, sizeof c->level_bias, &c->level_bias);
  arg(&a, sizeof c->bias_stride, &c->bias_stride);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "forward kernel: setting argument %u failed: %s", a.index - 1,
                    dua_status_string((dua_status)a.err));
  return DUA_SUCCESS;
}

static dua_status forward_portable(dua_context *ctx, const dua_fwd_call *c) {
  dua_fwd_params tp = dua_fwd_params_default(c->head_dim, c->block, &ctx->info);
  const char *tile = getenv("DUA_FWD_TILE"); /* developer override "block_m,block_n,threads_m,threads_n" */
  if (tile && *tile) {
    dua_fwd_params o;
    if (sscanf(tile, "%d,%d,%d,%d", &o.block_m, &o.block_n, &o.threads_m, &o.threads_n) != 4 ||
        !dua_fwd_params_valid(&o, c->head_dim, c->block, &ctx->info))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "DUA_FWD_TILE = \"%s\" is not a valid block_m,block_n,threads_m,threads_n for head_dim %d, "
                      "block %d on this device",
                      tile, c->head_dim, c->block);
    tp = o;
  }
  if (!dua_fwd_params_valid(&tp, c->head_dim, c->block, &ctx->info))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "dua_attention_forward: no forward tile fits this device for head_dim %d, block %d "
                    "(local memory %llu bytes, max work-group %zu)",
                    c->head_dim, c->block, (unsigned long long)ctx->info.local_mem_bytes, ctx->info.max_work_group_size);
  char options[256];
  snprintf(options, sizeof options,
           "-DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d -DDUA_FP16=%d -DDUA_ENUM=%d -DDUA_TREE=%d "
           "-DDUA_BIAS=%d",
           c->head_dim, tp.block_m, tp.block_n, tp.threads_m, tp.threads_n, c->fp16, c->enum_mode, c->tree_mode,
           c->has_bias);
  cl_kernel kernel;
  dua_status st = dua_program_kernel(ctx, "common,attn_fwd", options, "dua_attn_fwd", &kernel);
  if (st != DUA_SUCCESS || (st = dua_fwd_set_args(ctx, kernel, c)) != DUA_SUCCESS)
    return st;
  const size_t threads = (size_t)tp.threads_m * tp.threads_n;
  const size_t tiles = (size_t)c->num_blocks * (size_t)(c->block / tp.block_m);
  size_t global[3] = {tiles * threads, (size_t)c->heads, (size_t)c->batch};
  size_t local[3] = {threads, 1, 1};
  return launch(ctx, kernel, 3, global, local, "dua_attn_fwd");
}

dua_status dua_attention_forward(dua_context *ctx, dua_layout *l, const dua_attention_params *params,
                                 const dua_tensor *q, const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                                 const dua_tensor *lse) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!l)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_attention_forward: layout is NULL");
  dua_attention_params defaults;
  if (!params) {
    dua_attention_params_init(&defaults);
    params = &defaults;
  }
  dua_status st = validate(ctx, l, params, q, k, v, o, lse);
  if (st != DUA_SUCCESS)
    return st;
  const int head_dim = (int)q->shape[3];
  const float scale = params->scale > 0.0f ? params->scale : 1.0f / sqrtf((float)head_dim);
  const int use_lists = l->kind == DUA_LAYOUT_LIST || params->algo == DUA_ALGO_LIST;
  dua_layout_device *dev = NULL;
  if ((st = dua_layout_device_get(ctx, l, use_lists, &dev)) != DUA_SUCCESS)
    return st;
  if (params->algo == DUA_ALGO_NAIVE)
    return forward_naive(ctx, l, params, scale, q, k, v, o, lse, dev);
  const dua_fwd_call call = make_call(l, params, scale, q, k, v, o, lse, dev);
  if (ctx->info.nv_mma_f16 && !ctx->fast_paths_disabled) {
    st = dua_forward_nv_mma(ctx, &call);
    if (st != DUA_ERROR_UNSUPPORTED)
      return st; /* done, or a real failure; UNSUPPORTED: this shape has no tensor-core kernel */
  }
  return forward_portable(ctx, &call);
}

dua_status dua_context_warm_up(dua_context *ctx) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  static const int dims[4] = {32, 64, 96, 128};
  for (int fp16 = 0; fp16 <= 1; fp16++)
    for (int i = 0; i < 4; i++) {
      dua_fwd_params tp = dua_fwd_params_default(dims[i], 128, &ctx->info);
      if (!dua_fwd_params_valid(&tp, dims[i], 128, &ctx->info))
        continue;
      char options[256];
      snprintf(options, sizeof options,
               "-DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d -DDUA_FP16=%d -DDUA_ENUM=0 -DDUA_TREE=0 "
               "-DDUA_BIAS=0",
               dims[i], tp.block_m, tp.block_n, tp.threads_m, tp.threads_n, fp16);
      cl_kernel kernel;
      dua_status st = dua_program_kernel(ctx, "common,attn_fwd", options, "dua_attn_fwd", &kernel);
      if (st != DUA_SUCCESS)
        return st;
    }
  return DUA_SUCCESS;
}
