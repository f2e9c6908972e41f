/* train_ops.c: the trainer's layer operations (train_ops.h): kernels, scratch memory, argument checks, host
 * uploads of token/target ids, launches, and the elementwise and embedding ops. The other ops are in
 * train_ops_layers.c (layer norm, GELU, cross-entropy, sum of squares, AdamW) and train_ops_gemm.c (the
 * linear layer through CLBlast). */
#include "train/train_ops_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[OPS_KERNEL_COUNT] = {
    [OPS_FILL] = "dua_ops_fill",
    [OPS_ACCUMULATE] = "dua_ops_accumulate",
    [OPS_ADD] = "dua_ops_add",
    [OPS_EMBED_FWD] = "dua_ops_embed_fwd",
    [OPS_EMBED_BWD_WTE] = "dua_ops_embed_bwd_wte",
    [OPS_EMBED_BWD_WPE] = "dua_ops_embed_bwd_wpe",
    [OPS_LN_FWD] = "dua_ops_ln_fwd",
    [OPS_LN_BWD] = "dua_ops_ln_bwd",
    [OPS_COLSUM] = "dua_ops_colsum",
    [OPS_GELU_FWD] = "dua_ops_gelu_fwd",
    [OPS_GELU_BWD] = "dua_ops_gelu_bwd",
    [OPS_BIAS_ROWS] = "dua_ops_bias_rows",
    [OPS_XENT] = "dua_ops_xent",
    [OPS_SUMSQ] = "dua_ops_sumsq",
    [OPS_ADAMW] = "dua_ops_adamw",
};

#define WG_CAP 256 /* work-group size cap (row reductions, elementwise) */

/* ---- creation ---------------------------------------------------------------------------------------- */

dua_status dua_ops_create(dua_context *ctx, dua_ops **out) {
  if (!ctx || !out)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_ops_create: %s is NULL", ctx ? "out" : "ctx");
  *out = NULL;
  dua_ops *ops = calloc(1, sizeof *ops);
  if (!ops)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_ops_create: out of host memory");
  ops->ctx = ctx;
  size_t wg = WG_CAP;
  if (ctx->info.max_work_group_size && ctx->info.max_work_group_size < wg)
    wg = ctx->info.max_work_group_size;
  for (int i = 0; i < OPS_KERNEL_COUNT; i++) {
    dua_status st = dua_program_kernel(ctx, "train_ops", "", kernel_names[i], &ops->kernels[i]);
    if (st != DUA_SUCCESS) {
      free(ops);
      return st;
    }
    size_t kmax = 0;
    if (clGetKernelWorkGroupInfo(ops->kernels[i], ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax,
                                 NULL) == CL_SUCCESS &&
        kmax && kmax < wg)
      wg = kmax;
  }
  size_t pow2 = 1;
  while (pow2 * 2 <= wg)
    pow2 *= 2;
  ops->wg = pow2;
  *out = ops;
  return DUA_SUCCESS;
}

static void upload_release(dua_ops_upload *u) {
  if (u->pending) {
    clWaitForEvents(1, &u->pending); /* the host array must outlive its transfer */
    clReleaseEvent(u->pending);
  }
  if (u->dev)
    clReleaseMemObject(u->dev);
  free(u->host);
}

void dua_ops_destroy(dua_ops *ops) {
  if (!ops)
    return;
  upload_release(&ops->tokens);
  upload_release(&ops->csr);
  upload_release(&ops->targets);
  if (ops->scratch)
    clReleaseMemObject(ops->scratch);
  free(ops->counts);
  free(ops);
}

/* ---- shared helpers ---------------------------------------------------------------------------------- */

dua_status dua_ops_check(dua_ops *ops, const char *fn) {
  if (!ops)
    return dua_fail(NULL, DUA_ERROR_INVALID_ARGUMENT, "%s: ops is NULL", fn);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_span(dua_ops *ops, const char *fn, const char *name, dua_span s, size_t n) {
  if (!s.buf)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.buf is NULL", fn, name);
  if (s.buf->ctx != ops->ctx)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.buf belongs to another context", fn, name);
  const size_t cap = s.buf->bytes / sizeof(float);
  if (s.off > cap || n > cap - s.off)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: %s spans elements [%zu, %zu + %zu) but its buffer holds %zu elements", fn, name,
                    s.off, s.off, n, cap);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_dim(dua_ops *ops, const char *fn, const char *name, long long value) {
  if (value <= 0 || value > INT32_MAX)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s = %lld must be in [1, %d]", fn, name, value,
                    INT32_MAX);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_disjoint(dua_ops *ops, const char *fn, const char *an, dua_span a, size_t na,
                                  const char *bn, dua_span b, size_t nb) {
  if (a.buf && a.buf == b.buf && a.off < b.off + nb && b.off < a.off + na)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s overlaps %s in one buffer", fn, an, bn);
  return DUA_SUCCESS;
}

dua_status dua_ops_scratch(dua_ops *ops, size_t bytes, cl_mem *out) {
  if (ops->scratch && bytes <= ops->scratch_bytes) {
    *out = ops->scratch;
    return DUA_SUCCESS;
  }
  bytes += bytes / 2; /* grow geometrically */
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(ops->ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)err, "train ops: allocating %zu bytes of scratch failed: %s", bytes,
                    dua_status_string((dua_status)err));
  if (ops->scratch) /* queued commands keep the old buffer alive until they finish */
    clReleaseMemObject(ops->scratch);
  ops->scratch = mem;
  ops->scratch_bytes = bytes;
  *out = mem;
  return DUA_SUCCESS;
}

/* Host staging array of at least count ints, once its previous transfer finished. */
dua_status dua_ops_upload_reserve(dua_ops *ops, dua_ops_upload *u, size_t count) {
  if (u->pending) {
    cl_int err = clWaitForEvents(1, &u->pending);
    clReleaseEvent(u->pending);
    u->pending = NULL;
    if (err != CL_SUCCESS)
      return dua_fail(ops->ctx, (dua_status)err, "train ops: an earlier id upload failed: %s",
                      dua_status_string((dua_status)err));
  }
  if (count > u->host_count) {
    int32_t *h = realloc(u->host, count * sizeof *h);
    if (!h)
      return dua_fail(ops->ctx, DUA_ERROR_OUT_OF_MEMORY, "train ops: out of host memory (%zu ids)", count);
    u->host = h;
    u->host_count = count;
  }
  return DUA_SUCCESS;
}

/* Enqueues the (non-blocking) write of host[0..count) to the device copy, grown if needed. */
dua_status dua_ops_upload_send(dua_ops *ops, dua_ops_upload *u, size_t count) {
  const size_t bytes = count * sizeof(int32_t);
  cl_int err = CL_SUCCESS;
  if (!u->dev || bytes > u->dev_bytes) {
    const size_t want = bytes + bytes / 2;
    cl_mem mem = clCreateBuffer(ops->ctx->cl_ctx, CL_MEM_READ_ONLY, want, NULL, &err);
    if (err != CL_SUCCESS)
      return dua_fail(ops->ctx, (dua_status)err, "train ops: allocating %zu bytes for ids failed: %s", want,
                      dua_status_string((dua_status)err));
    if (u->dev)
      clReleaseMemObject(u->dev);
    u->dev = mem;
    u->dev_bytes = want;
  }
  err = clEnqueueWriteBuffer(ops->ctx->queue, u->dev, CL_FALSE, 0, bytes, u->host, 0, NULL, &u->pending);
  if (err != CL_SUCCESS) {
    u->pending = NULL;
    return dua_fail(ops->ctx, (dua_status)err, "train ops: uploading %zu ids failed: %s", count,
                    dua_status_string((dua_status)err));
  }
  return DUA_SUCCESS;
}

dua_status dua_ops_launch(dua_ops *ops, const dua_ops_args *a, cl_uint dims, const size_t *global,
                          const char *what) {
  if (a->err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)a->err, "%s: setting kernel argument %u failed: %s", what,
                    a->index - 1, dua_status_string((dua_status)a->err));
  size_t g[2] = {(global[0] + ops->wg - 1) / ops->wg * ops->wg, dims > 1 ? global[1] : 1};
  size_t l[2] = {ops->wg, 1};
  cl_int err = clEnqueueNDRangeKernel(ops->ctx->queue, a->kernel, dims, NULL, g, l, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)err, "%s: launching the kernel failed: %s", what,
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_ops_colsum(dua_ops *ops, cl_mem dst, size_t dst_off, cl_mem src, size_t src_off, int rows,
                          int cols, int ld, int chunk, int accumulate) {
  dua_ops_args a = dua_ops_args_of(ops, OPS_COLSUM);
  cl_ulong doff = dst_off, soff = src_off;
  dua_ops_arg(&a, sizeof dst, &dst);
  dua_ops_arg(&a, sizeof doff, &doff);
  dua_ops_arg(&a, sizeof src, &src);
  dua_ops_arg(&a, sizeof soff, &soff);
  dua_ops_arg_int(&a, rows);
  dua_ops_arg_int(&a, cols);
  dua_ops_arg_int(&a, ld);
  dua_ops_arg_int(&a, chunk);
  dua_ops_arg_int(&a, accumulate);
  size_t global[2] = {(size_t)cols, (size_t)((rows + chunk - 1) / chunk)};
  return dua_ops_launch(ops, &a, 2, global, "dua_ops_colsum");
}

/* ---- elementwise ------------------------------------------------------------------------------------- */

dua_status dua_ops_check_n(dua_ops *ops, const char *fn, size_t n) {
  if (n == 0)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: n = 0 (must be >= 1)", fn);
  return DUA_SUCCESS;
}

dua_status dua_op_fill(dua_ops *ops, dua_span x, size_t n, float value) {
  static const char fn[] = "dua_op_fill";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "x", x, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_FILL);
  dua_ops_arg_span(&a, x);
  dua_ops_arg_ulong(&a, n);
  dua_ops_arg_float(&a, value);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

dua_status dua_op_accumulate(dua_ops *ops, dua_span dst, dua_span src, size_t n) {
  static const char fn[] = "dua_op_accumulate";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "dst", dst, n)) || (st = dua_ops_check_span(ops, fn, "src", src, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_ACCUMULATE);
  dua_ops_arg_span(&a, dst);
  dua_ops_arg_span(&a, src);
  dua_ops_arg_ulong(&a, n);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

dua_status dua_op_add(dua_ops *ops, dua_span out, dua_span a_in, dua_span b_in, size_t n) {
  static const char fn[] = "dua_op_add";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "out", out, n)) || (st = dua_ops_check_span(ops, fn, "a", a_in, n)) ||
      (st = dua_ops_check_span(ops, fn, "b", b_in, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_ADD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg_span(&a, a_in);
  dua_ops_arg_span(&a, b_in);
  dua_ops_arg_ulong(&a, n);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

/* ---- embedding --------------------------------------------------------------------------------------- */

/* Shapes and token ids of the embedding ops; R = B * T. */
static dua_status check_embed(dua_ops *ops, const char *fn, const int32_t *tokens, int B, int T, int C,
                              int V) {
  dua_status st;
  if ((st = dua_ops_check_dim(ops, fn, "B", B)) || (st = dua_ops_check_dim(ops, fn, "T", T)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)) || (st = dua_ops_check_dim(ops, fn, "V", V)) ||
      (st = dua_ops_check_dim(ops, fn, "B * T", (long long)B * T)))
    return st;
  if (!tokens)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: tokens is NULL", fn);
  const size_t R = (size_t)B * (size_t)T;
  for (size_t r = 0; r < R; r++)
    if (tokens[r] < 0 || tokens[r] >= V)
      return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: tokens[%zu] = %d is outside [0, %d)", fn, r,
                      (int)tokens[r], V);
  return DUA_SUCCESS;
}

dua_status dua_op_embed_forward(dua_ops *ops, dua_span out, const int32_t *tokens, dua_span wte, dua_span wpe,
                                int B, int T, int C, int V) {
  static const char fn[] = "dua_op_embed_forward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = check_embed(ops, fn, tokens, B, T, C, V)))
    return st;
  const size_t R = (size_t)B * (size_t)T, RC = R * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "out", out, RC)) ||
      (st = dua_ops_check_span(ops, fn, "wte", wte, (size_t)V * (size_t)C)) ||
      (st = dua_ops_check_span(ops, fn, "wpe", wpe, (size_t)T * (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "wte", wte, (size_t)V * (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "wpe", wpe, (size_t)T * (size_t)C)))
    return st;
  if ((st = dua_ops_upload_reserve(ops, &ops->tokens, R)) != DUA_SUCCESS)
    return st;
  memcpy(ops->tokens.host, tokens, R * sizeof(int32_t));
  if ((st = dua_ops_upload_send(ops, &ops->tokens, R)) != DUA_SUCCESS)
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_EMBED_FWD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg(&a, sizeof(cl_mem), &ops->tokens.dev);
  dua_ops_arg_span(&a, wte);
  dua_ops_arg_span(&a, wpe);
  dua_ops_arg_ulong(&a, R);
  dua_ops_arg_int(&a, T);
  dua_ops_arg_int(&a, C);
  return dua_ops_launch(ops, &a, 1, &RC, fn);
}

dua_status dua_op_embed_backward(dua_ops *ops, dua_span dwte, dua_span dwpe, dua_span dout,
                                 const int32_t *tokens, int B, int T, int C, int V) {
  static const char fn[] = "dua_op_embed_backward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = check_embed(ops, fn, tokens, B, T, C, V)))
    return st;
  const size_t R = (size_t)B * (size_t)T, RC = R * (size_t)C, VC = (size_t)V * (size_t)C,
               TC = (size_t)T * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "dwte", dwte, VC)) ||
      (st = dua_ops_check_span(ops, fn, "dwpe", dwpe, TC)) ||
      (st = dua_ops_check_span(ops, fn, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwte", dwte, VC, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwpe", dwpe, TC, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwte", dwte, VC, "dwpe", dwpe, TC)))
    return st;
  /* CSR on the host: counts per token, then the distinct tokens in ascending order, their row ranges and
   * the rows of each token in ascending order (a counting sort; counts[v] becomes v's next free slot) */
  if ((size_t)V + 1 > ops->counts_count) {
    int32_t *c = realloc(ops->counts, ((size_t)V + 1) * sizeof *c);
    if (!c)
      return dua_fail(ops->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    ops->counts = c;
    ops->counts_count = (size_t)V + 1;
  }
  int32_t *counts = ops->counts;
  memset(counts, 0, (size_t)V * sizeof *counts);
  for (size_t r = 0; r < R; r++)
    counts[tokens[r]]++;
  int U = 0;
  for (int v = 0; v < V; v++)
    U += counts[v] > 0;
  const size_t total = 2 * (size_t)U + 1 + R;
  if ((st = dua_ops_upload_reserve(ops, &ops->csr, total)) != DUA_SUCCESS)
    return st;
  int32_t *tok = ops->csr.host, *start = tok + U, *rows = start + U + 1;
  int u = 0, pos = 0;
  for (int v = 0; v < V; v++)
    if (counts[v] > 0) {
      tok[u] = v;
      start[u++] = pos;
      const int n = counts[v];
      counts[v] = pos;
      pos += n;
    }
  start[U] = pos;
  for (size_t r = 0; r < R; r++)
    rows[counts[tokens[r]]++] = (int32_t)r;
  if ((st = dua_ops_upload_send(ops, &ops->csr, total)) != DUA_SUCCESS)
    return st;

  dua_ops_args a = dua_ops_args_of(ops, OPS_EMBED_BWD_WTE);
  dua_ops_arg_span(&a, dwte);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg(&a, sizeof(cl_mem), &ops->csr.dev);
  dua_ops_arg_int(&a, U);
  dua_ops_arg_int(&a, C);
  const size_t uc = (size_t)U * (size_t)C;
  if ((st = dua_ops_launch(ops, &a, 1, &uc, "dua_op_embed_backward (dwte)")) != DUA_SUCCESS)
    return st;
  a = dua_ops_args_of(ops, OPS_EMBED_BWD_WPE);
  dua_ops_arg_span(&a, dwpe);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg_int(&a, B);
  dua_ops_arg_int(&a, T);
  dua_ops_arg_int(&a, C);
  return dua_ops_launch(ops, &a, 1, &TC, "dua_op_embed_backward (dwpe)");
}
