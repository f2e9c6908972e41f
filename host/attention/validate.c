/* validate.c: argument checks shared by the attention entry points: everything that must be refused before
 * any output is touched, with a message naming the bad value. */
#include "attention/forward_internal.h"
#include "attention/token_bias.h"

#include <math.h>

dua_status dua_check_shape(dua_context *ctx, const char *fn, const dua_tensor *t, const char *name,
                           int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  const int64_t want[4] = {d0, d1, d2, d3};
  static const char *dims[4] = {"batch", "heads", "tokens", "head_dim"};
  for (int d = 0; d < 4; d++)
    if (t->shape[d] != want[d])
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.shape[%d] (%s) = %lld, expected %lld", fn,
                      name, d, dims[d], (long long)t->shape[d], (long long)want[d]);
  return DUA_SUCCESS;
}

/* The level bias of a rule layout: fp32 (heads, max_depth + 1, 1, 1) with contiguous levels. */
dua_status dua_check_level_bias(dua_context *ctx, const char *fn, const dua_layout *l, const dua_tensor *bt) {
  dua_status st;
  if (l->kind == DUA_LAYOUT_LIST)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: params.level_bias needs a rule layout (lists have no tree levels)", fn);
  if ((st = dua_tensor_check(ctx, bt, "level_bias")) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, bt, "level_bias", l->heads, l->max_depth + 1, 1, 1)) != DUA_SUCCESS)
    return st;
  if ((uint64_t)bt->strides[0] * (uint64_t)(l->heads - 1) > (uint64_t)INT32_MAX)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s: level_bias.strides[0] = %lld is too large for 32-bit indexing", fn,
                    (long long)bt->strides[0]);
  if (bt->dtype != DUA_F32 || bt->strides[1] != 1)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: level_bias must be DUA_F32 with contiguous levels (strides[1] = 1)", fn);
  return DUA_SUCCESS;
}

/* Everything an entry point must refuse before touching an output. */
dua_status dua_attention_validate(dua_context *ctx, const char *fn, const dua_layout *l,
                                  const dua_attention_params *p, const dua_tensor *q, const dua_tensor *k,
                                  const dua_tensor *v, const dua_tensor *o, const dua_tensor *lse) {
  dua_status st;
  const dua_tensor *ts[4] = {q, k, v, o};
  static const char *names[4] = {"q", "k", "v", "o"};
  for (int i = 0; i < 4; i++)
    if ((st = dua_tensor_check(ctx, ts[i], names[i])) != DUA_SUCCESS)
      return st;
  for (int i = 1; i < 4; i++)
    if (ts[i]->dtype != q->dtype)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.dtype = %d differs from q.dtype = %d", fn,
                      names[i], (int)ts[i]->dtype, (int)q->dtype);
  const int64_t dh = q->shape[3];
  if (dh != 32 && dh != 64 && dh != 96 && dh != 128)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: head_dim = %lld is not supported (32, 64, 96, 128)", fn,
                    (long long)dh);
  if ((st = dua_check_shape(ctx, fn, q, "q", l->batch, l->heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, k, "k", l->batch, l->kv_heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, v, "v", l->batch, l->kv_heads, l->seq_len, dh)) != DUA_SUCCESS ||
      (st = dua_check_shape(ctx, fn, o, "o", l->batch, l->heads, l->seq_len, dh)) != DUA_SUCCESS)
    return st;
  for (int i = 0; i < 4; i++)
    if (ts[i]->strides[3] != 1)
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: %s.strides[3] = %lld; head_dim must be contiguous", fn,
                      names[i], (long long)ts[i]->strides[3]);
  if (lse) {
    if ((st = dua_tensor_check(ctx, lse, "lse")) != DUA_SUCCESS ||
        (st = dua_check_shape(ctx, fn, lse, "lse", l->batch, l->heads, l->seq_len, 1)) != DUA_SUCCESS)
      return st;
    if (lse->dtype != DUA_F32)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: lse.dtype must be DUA_F32", fn);
  }
  if (p->algo < DUA_ALGO_AUTO || p->algo > DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.algo = %d is not a dua_attention_algo", fn,
                    (int)p->algo);
  if (!isfinite(p->scale) || p->scale < 0.0f)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: params.scale = %g must be finite and >= 0", fn,
                    (double)p->scale);
  if (l->kind == DUA_LAYOUT_LIST && p->algo == DUA_ALGO_RULE)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: params.algo = DUA_ALGO_RULE but the layout was made from lists", fn);
  if (l->kind == DUA_LAYOUT_LIST && p->algo == DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the naive baseline needs a rule layout", fn);
  if (p->level_bias && (st = dua_check_level_bias(ctx, fn, l, p->level_bias)) != DUA_SUCCESS)
    return st;
  if ((st = dua_check_token_bias(ctx, fn, l, p)) != DUA_SUCCESS)
    return st;
  if (p->token_scale && p->algo == DUA_ALGO_NAIVE)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: the naive baseline has no token-tree bias", fn);
  if (p->algo == DUA_ALGO_NAIVE) {
    double bytes = 4.0 * (double)l->batch * l->heads * (double)l->seq_len * l->seq_len;
    if (bytes > (double)ctx->info.max_alloc_bytes)
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                      "%s: the naive baseline needs %.0f bytes of scores, more than the device's "
                      "largest allocation (%llu)",
                      fn, bytes, (unsigned long long)ctx->info.max_alloc_bytes);
  }
  return DUA_SUCCESS;
}

/* Byte range [lo, hi) a view can touch. dua_tensor_check has bounded every stride and shape already. */
static void byte_range(const dua_tensor *t, uint64_t *lo, uint64_t *hi) {
  uint64_t last = 0;
  for (int d = 0; d < 4; d++)
    last += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
  *lo = t->offset;
  *hi = t->offset + (last + 1) * dua_dtype_size(t->dtype);
}

dua_status dua_check_outputs(dua_context *ctx, const char *fn, const dua_tensor *const *outs,
                             const char *const *out_names, int n_outs, const dua_tensor *const *ins,
                             const char *const *in_names, int n_ins) {
  for (int i = 0; i < n_outs; i++) {
    if (!outs[i])
      continue;
    for (int d = 0; d < 4; d++)
      if (outs[i]->shape[d] > 1 && outs[i]->strides[d] == 0)
        return dua_fail(
            ctx, DUA_ERROR_INVALID_ARGUMENT,
            "%s: output %s.strides[%d] = 0 with shape[%d] = %lld: elements would be written twice", fn,
            out_names[i], d, d, (long long)outs[i]->shape[d]);
    uint64_t lo, hi;
    byte_range(outs[i], &lo, &hi);
    for (int j = 0; j < n_ins + n_outs; j++) {
      const dua_tensor *other = j < n_ins ? ins[j] : outs[j - n_ins];
      if (!other || (j >= n_ins && j - n_ins <= i) || other->buffer != outs[i]->buffer)
        continue;
      uint64_t olo, ohi;
      byte_range(other, &olo, &ohi);
      if (lo < ohi && olo < hi)
        return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: output %s overlaps %s %s in the same buffer",
                        fn, out_names[i], j < n_ins ? "input" : "output",
                        j < n_ins ? in_names[j] : out_names[j - n_ins]);
    }
  }
  return DUA_SUCCESS;
}
