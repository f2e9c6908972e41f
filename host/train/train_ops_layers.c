/* train_ops_layers.c: the layer-norm, GELU, softmax cross-entropy, sum-of-squares and AdamW ops of
 * train_ops.h on the kernels of cl/train_ops.cl. */
#include "train/train_ops_internal.h"

#include <math.h>
#include <string.h>

#define SUMSQ_MAX_GROUPS 1024u /* first-stage groups of dua_op_sumsq */

/* ---- layer norm -------------------------------------------------------------------------------------- */

dua_status dua_op_layernorm_forward(dua_ops *ops, dua_span out, dua_span mean, dua_span rstd, dua_span inp,
                                    dua_span w, dua_span b, int R, int C) {
  static const char fn[] = "dua_op_layernorm_forward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_dim(ops, fn, "R", R)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)))
    return st;
  const size_t RC = (size_t)R * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "out", out, RC)) ||
      (st = dua_ops_check_span(ops, fn, "mean", mean, (size_t)R)) ||
      (st = dua_ops_check_span(ops, fn, "rstd", rstd, (size_t)R)) ||
      (st = dua_ops_check_span(ops, fn, "inp", inp, RC)) ||
      (st = dua_ops_check_span(ops, fn, "w", w, (size_t)C)) ||
      (st = dua_ops_check_span(ops, fn, "b", b, (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "w", w, (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "b", b, (size_t)C)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_LN_FWD_ITEM : OPS_LN_FWD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg_span(&a, mean);
  dua_ops_arg_span(&a, rstd);
  dua_ops_arg_span(&a, inp);
  dua_ops_arg_span(&a, w);
  dua_ops_arg_span(&a, b);
  if (ops->row_item) { /* a work-item a row */
    dua_ops_arg_int(&a, R);
    dua_ops_arg_int(&a, C);
    const size_t rows = (size_t)R;
    return dua_ops_launch_local(ops, &a, 1, &rows, ops->item_wg, fn);
  }
  dua_ops_arg_int(&a, C);
  dua_ops_arg_local(&a, ops->wg * sizeof(cl_float));
  const size_t global = (size_t)R * ops->wg;
  return dua_ops_launch(ops, &a, 1, &global, fn);
}

dua_status dua_op_layernorm_backward(dua_ops *ops, dua_span dinp, dua_span dw, dua_span db, dua_span dout,
                                     dua_span inp, dua_span w, dua_span mean, dua_span rstd, int R, int C) {
  static const char fn[] = "dua_op_layernorm_backward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_dim(ops, fn, "R", R)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)))
    return st;
  const size_t RC = (size_t)R * (size_t)C, uC = (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "dinp", dinp, RC)) ||
      (st = dua_ops_check_span(ops, fn, "dw", dw, uC)) || (st = dua_ops_check_span(ops, fn, "db", db, uC)) ||
      (st = dua_ops_check_span(ops, fn, "dout", dout, RC)) ||
      (st = dua_ops_check_span(ops, fn, "inp", inp, RC)) || (st = dua_ops_check_span(ops, fn, "w", w, uC)) ||
      (st = dua_ops_check_span(ops, fn, "mean", mean, (size_t)R)) ||
      (st = dua_ops_check_span(ops, fn, "rstd", rstd, (size_t)R)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dinp", dinp, RC, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dinp", dinp, RC, "inp", inp, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dw", dw, uC, "db", db, uC)))
    return st;
  if (C > INT32_MAX / 2)
    return dua_fail(ops->ctx, DUA_ERROR_UNSUPPORTED, "%s: C = %d is too large (at most %d)", fn, C,
                    INT32_MAX / 2);
  const int groups = (R + DUA_OPS_LN_ROWS - 1) / DUA_OPS_LN_ROWS;
  cl_mem partial;
  if ((st = dua_ops_scratch(ops, (size_t)groups * 2 * uC * sizeof(float), &partial)) != DUA_SUCCESS)
    return st;
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_LN_BWD_ITEM : OPS_LN_BWD);
  dua_ops_arg_span(&a, dinp);
  dua_ops_arg(&a, sizeof partial, &partial);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg_span(&a, inp);
  dua_ops_arg_span(&a, w);
  dua_ops_arg_span(&a, mean);
  dua_ops_arg_span(&a, rstd);
  dua_ops_arg_int(&a, R);
  dua_ops_arg_int(&a, C);
  dua_ops_arg_int(&a, DUA_OPS_LN_ROWS);
  if (ops->row_item) { /* a work-item per DUA_OPS_LN_ROWS rows */
    const size_t items = (size_t)groups;
    st = dua_ops_launch_local(ops, &a, 1, &items, ops->item_wg, fn);
  } else {
    dua_ops_arg_local(&a, ops->wg * sizeof(cl_float));
    const size_t global = (size_t)groups * ops->wg;
    st = dua_ops_launch(ops, &a, 1, &global, fn);
  }
  if (st != DUA_SUCCESS)
    return st;
  /* partial [groups, 2C]: dw sums in columns [0, C), db sums in [C, 2C); each reduced in group order */
  if ((st = dua_ops_colsum(ops, dw.buf->mem, dw.off, partial, 0, groups, C, 2 * C, groups, 1)) != DUA_SUCCESS)
    return st;
  return dua_ops_colsum(ops, db.buf->mem, db.off, partial, uC, groups, C, 2 * C, groups, 1);
}

/* ---- GELU -------------------------------------------------------------------------------------------- */

/* An element per work-item (portable kernels), or ops->vw elements per work-item (CPU kernels). */
static dua_status gelu_launch(dua_ops *ops, const dua_ops_args *a, size_t n, const char *fn) {
  if (!ops->row_item)
    return dua_ops_launch(ops, a, 1, &n, fn);
  const size_t items = (n + (size_t)ops->vw - 1) / (size_t)ops->vw;
  return dua_ops_launch_local(ops, a, 1, &items, ops->stream_wg, fn);
}

dua_status dua_op_gelu_forward(dua_ops *ops, dua_span out, dua_span inp, size_t n) {
  static const char fn[] = "dua_op_gelu_forward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "out", out, n)) || (st = dua_ops_check_span(ops, fn, "inp", inp, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_GELU_FWD_ITEM : OPS_GELU_FWD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg_span(&a, inp);
  dua_ops_arg_ulong(&a, n);
  return gelu_launch(ops, &a, n, fn);
}

dua_status dua_op_gelu_backward(dua_ops *ops, dua_span dinp, dua_span inp, dua_span dout, size_t n) {
  static const char fn[] = "dua_op_gelu_backward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "dinp", dinp, n)) ||
      (st = dua_ops_check_span(ops, fn, "inp", inp, n)) ||
      (st = dua_ops_check_span(ops, fn, "dout", dout, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_GELU_BWD_ITEM : OPS_GELU_BWD);
  dua_ops_arg_span(&a, dinp);
  dua_ops_arg_span(&a, inp);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg_ulong(&a, n);
  return gelu_launch(ops, &a, n, fn);
}

/* ---- cross-entropy ----------------------------------------------------------------------------------- */

dua_status dua_op_crossentropy(dua_ops *ops, dua_span losses, dua_span dlogits, dua_span predictions,
                               dua_span logits, const int32_t *targets, int ignore_index, float grad_scale,
                               int R, int V) {
  static const char fn[] = "dua_op_crossentropy";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_dim(ops, fn, "R", R)) ||
      (st = dua_ops_check_dim(ops, fn, "V", V)))
    return st;
  const size_t RV = (size_t)R * (size_t)V;
  if ((st = dua_ops_check_span(ops, fn, "losses", losses, (size_t)R)) ||
      (st = dua_ops_check_span(ops, fn, "logits", logits, RV)) ||
      (dlogits.buf && (st = dua_ops_check_span(ops, fn, "dlogits", dlogits, RV))) ||
      (predictions.buf && (st = dua_ops_check_span(ops, fn, "predictions", predictions, (size_t)R))) ||
      (st = dua_ops_check_disjoint(ops, fn, "losses", losses, (size_t)R, "logits", logits, RV)) ||
      (st = dua_ops_check_disjoint(ops, fn, "predictions", predictions, (size_t)R, "logits", logits, RV)) ||
      (st = dua_ops_check_disjoint(ops, fn, "losses", losses, (size_t)R, "dlogits", dlogits, RV)) ||
      (st = dua_ops_check_disjoint(ops, fn, "predictions", predictions, (size_t)R, "dlogits", dlogits, RV)) ||
      (st = dua_ops_check_disjoint(ops, fn, "losses", losses, (size_t)R, "predictions", predictions,
                                   (size_t)R)))
    return st;
  if (dlogits.buf && !(dlogits.buf == logits.buf && dlogits.off == logits.off) &&
      (st = dua_ops_check_disjoint(ops, fn, "dlogits", dlogits, RV, "logits (other than exactly)", logits,
                                   RV)))
    return st;
  if (!isfinite(grad_scale))
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: grad_scale = %g is not finite", fn,
                    (double)grad_scale);
  if (!targets)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: targets is NULL", fn);
  for (int r = 0; r < R; r++)
    if (targets[r] != ignore_index && (targets[r] < 0 || targets[r] >= V))
      return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: targets[%d] = %d is outside [0, %d) and is not the ignore index %d", fn, r,
                      (int)targets[r], V, ignore_index);
  if ((st = dua_ops_upload_reserve(ops, &ops->targets, (size_t)R)) != DUA_SUCCESS)
    return st;
  memcpy(ops->targets.host, targets, (size_t)R * sizeof(int32_t));
  if ((st = dua_ops_upload_send(ops, &ops->targets, (size_t)R)) != DUA_SUCCESS)
    return st;
  /* absent optional outputs: any valid buffer stands in, the kernel does not touch it */
  const dua_span none = {losses.buf, 0};
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_XENT_ITEM : OPS_XENT);
  dua_ops_arg_span(&a, losses);
  dua_ops_arg_span(&a, dlogits.buf ? dlogits : none);
  dua_ops_arg_int(&a, dlogits.buf != NULL);
  dua_ops_arg_span(&a, predictions.buf ? predictions : none);
  dua_ops_arg_int(&a, predictions.buf != NULL);
  dua_ops_arg_span(&a, logits);
  dua_ops_arg(&a, sizeof(cl_mem), &ops->targets.dev);
  dua_ops_arg_int(&a, ignore_index);
  dua_ops_arg_float(&a, grad_scale);
  if (ops->row_item) { /* a work-item a row */
    dua_ops_arg_int(&a, R);
    dua_ops_arg_int(&a, V);
    const size_t rows = (size_t)R;
    return dua_ops_launch_local(ops, &a, 1, &rows, ops->item_wg, fn);
  }
  dua_ops_arg_int(&a, V);
  dua_ops_arg_local(&a, ops->wg * sizeof(cl_float));
  dua_ops_arg_local(&a, ops->wg * sizeof(cl_int));
  const size_t global = (size_t)R * ops->wg;
  return dua_ops_launch(ops, &a, 1, &global, fn);
}

/* ---- sum of squares ---------------------------------------------------------------------------------- */

/* Reads partial[at] back into *result (blocking). */
static dua_status read_result(dua_ops *ops, const char *fn, cl_mem partial, size_t at, float *result) {
  float value = 0.0f;
  cl_int err = clEnqueueReadBuffer(ops->ctx->queue, partial, CL_TRUE, at * sizeof(float), sizeof value,
                                   &value, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)err, "%s: reading the result back failed: %s", fn,
                    dua_status_string((dua_status)err));
  *result = value;
  return DUA_SUCCESS;
}

/* The work-item path: G work-items (G a function of n only) each sum a contiguous chunk into
 * partial[0..G), then one work-item sums those in order into partial[G]. */
static dua_status sumsq_item(dua_ops *ops, dua_span x, size_t n, float *result) {
  static const char fn[] = "dua_op_sumsq";
  const size_t items = n < SUMSQ_MAX_GROUPS ? n : SUMSQ_MAX_GROUPS;
  size_t chunk = (n + items - 1) / items;
  chunk = (chunk + 15) / 16 * 16; /* whole vectors while aligned */
  const size_t groups = (n + chunk - 1) / chunk;
  cl_mem partial;
  dua_status st;
  if ((st = dua_ops_scratch(ops, (groups + 1) * sizeof(float), &partial)) != DUA_SUCCESS)
    return st;
  for (int stage = 0; stage < 2; stage++) {
    dua_ops_args a = dua_ops_args_of(ops, OPS_SUMSQ_ITEM);
    dua_ops_arg(&a, sizeof partial, &partial);
    dua_ops_arg_ulong(&a, stage ? groups : 0);
    if (stage)
      dua_ops_arg(&a, sizeof partial, &partial);
    else
      dua_ops_arg(&a, sizeof(cl_mem), &x.buf->mem);
    dua_ops_arg_ulong(&a, stage ? 0 : x.off);
    dua_ops_arg_ulong(&a, stage ? groups : n);
    dua_ops_arg_ulong(&a, stage ? groups : chunk);
    dua_ops_arg_int(&a, !stage);
    const size_t global = stage ? 1 : groups;
    if ((st = dua_ops_launch_local(ops, &a, 1, &global, stage ? 1 : ops->item_wg, fn)) != DUA_SUCCESS)
      return st;
  }
  return read_result(ops, fn, partial, groups, result);
}

dua_status dua_op_sumsq(dua_ops *ops, dua_span x, size_t n, float *result) {
  static const char fn[] = "dua_op_sumsq";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "x", x, n)))
    return st;
  if (!result)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: result is NULL", fn);
  if (ops->row_item)
    return sumsq_item(ops, x, n, result);
  /* stage 1: G groups (a function of n only) write partial[0..G); stage 2: one group sums them into
   * partial[G] */
  size_t groups = (n + ops->wg - 1) / ops->wg;
  if (groups > SUMSQ_MAX_GROUPS)
    groups = SUMSQ_MAX_GROUPS;
  cl_mem partial;
  if ((st = dua_ops_scratch(ops, (groups + 1) * sizeof(float), &partial)) != DUA_SUCCESS)
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_SUMSQ);
  dua_ops_arg(&a, sizeof partial, &partial);
  dua_ops_arg_ulong(&a, 0);
  dua_ops_arg_span(&a, x);
  dua_ops_arg_ulong(&a, n);
  dua_ops_arg_int(&a, 1);
  dua_ops_arg_local(&a, ops->wg * sizeof(cl_float));
  size_t global = groups * ops->wg;
  if ((st = dua_ops_launch(ops, &a, 1, &global, fn)) != DUA_SUCCESS)
    return st;
  a = dua_ops_args_of(ops, OPS_SUMSQ);
  dua_ops_arg(&a, sizeof partial, &partial);
  dua_ops_arg_ulong(&a, groups);
  dua_ops_arg(&a, sizeof partial, &partial);
  dua_ops_arg_ulong(&a, 0);
  dua_ops_arg_ulong(&a, groups);
  dua_ops_arg_int(&a, 0);
  dua_ops_arg_local(&a, ops->wg * sizeof(cl_float));
  global = ops->wg;
  if ((st = dua_ops_launch(ops, &a, 1, &global, fn)) != DUA_SUCCESS)
    return st;
  return read_result(ops, fn, partial, groups, result);
}

/* ---- AdamW ------------------------------------------------------------------------------------------- */

dua_status dua_op_adamw(dua_ops *ops, dua_span params, dua_span grads, dua_span m, dua_span v, size_t n,
                        float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale) {
  static const char fn[] = "dua_op_adamw";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "params", params, n)) ||
      (st = dua_ops_check_span(ops, fn, "grads", grads, n)) ||
      (st = dua_ops_check_span(ops, fn, "m", m, n)) || (st = dua_ops_check_span(ops, fn, "v", v, n)) ||
      (st = dua_ops_check_disjoint(ops, fn, "params", params, n, "grads", grads, n)) ||
      (st = dua_ops_check_disjoint(ops, fn, "params", params, n, "m", m, n)) ||
      (st = dua_ops_check_disjoint(ops, fn, "params", params, n, "v", v, n)) ||
      (st = dua_ops_check_disjoint(ops, fn, "m", m, n, "v", v, n)))
    return st;
  const char *bad = NULL;
  double value = 0.0;
  if (t < 1)
    bad = "t", value = t;
  else if (!(beta1 >= 0.0f && beta1 < 1.0f))
    bad = "beta1", value = beta1;
  else if (!(beta2 >= 0.0f && beta2 < 1.0f))
    bad = "beta2", value = beta2;
  else if (!(eps >= 0.0f) || !isfinite(eps))
    bad = "eps", value = eps;
  else if (!isfinite(lr))
    bad = "lr", value = lr;
  else if (!isfinite(wd))
    bad = "wd", value = wd;
  else if (!isfinite(grad_scale))
    bad = "grad_scale", value = grad_scale;
  if (bad)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: %s = %g is out of range (t >= 1, betas in [0, 1), eps >= 0, all finite)", fn, bad,
                    value);
  const float bc1 = (float)(1.0 - pow(beta1, t)), bc2 = (float)(1.0 - pow(beta2, t));
  dua_ops_args a = dua_ops_args_of(ops, OPS_ADAMW);
  dua_ops_arg_span(&a, params);
  dua_ops_arg_span(&a, grads);
  dua_ops_arg_span(&a, m);
  dua_ops_arg_span(&a, v);
  dua_ops_arg_ulong(&a, n);
  dua_ops_arg_float(&a, lr);
  dua_ops_arg_float(&a, beta1);
  dua_ops_arg_float(&a, beta2);
  dua_ops_arg_float(&a, eps);
  dua_ops_arg_float(&a, wd);
  dua_ops_arg_float(&a, bc1);
  dua_ops_arg_float(&a, bc2);
  dua_ops_arg_float(&a, grad_scale);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}
