/* train_ops_gemm.c: the linear layer of train_ops.h through CLBlast's C API (row-major SGEMM on the
 * context's queue, offsets in elements); the bias is written by a dua kernel and its gradient is a
 * deterministic two-stage column sum (dua_ops_colsum). */
#include "train/train_ops_internal.h"

#include <clblast_c.h>

/* Turns a CLBlast status into a dua_status: OpenCL codes pass through, CLBlast's own become
 * DUA_ERROR_INTERNAL; the message names the call and CLBlast's code. */
static dua_status gemm_status(dua_ops *ops, CLBlastStatusCode code, const char *fn, const char *what) {
  if (code == CLBlastSuccess)
    return DUA_SUCCESS;
  const dua_status st = code > -1000 ? (dua_status)code : DUA_ERROR_INTERNAL;
  return dua_fail(ops->ctx, st, "%s: CLBlastSgemm (%s) failed with CLBlast status %d%s%s", fn, what,
                  (int)code, code > -1000 ? ", " : "", code > -1000 ? dua_status_string(st) : "");
}

/* C [m, n] = alpha op(A) op(B) + beta C, row-major, A/B/C given as spans with their leading dimensions. */
static dua_status sgemm(dua_ops *ops, const char *fn, const char *what, int trans_a, int trans_b, int m,
                        int n, int k, dua_span a, int lda, dua_span b, int ldb, float beta, dua_span c,
                        int ldc) {
  CLBlastStatusCode code =
      CLBlastSgemm(CLBlastLayoutRowMajor, trans_a ? CLBlastTransposeYes : CLBlastTransposeNo,
                   trans_b ? CLBlastTransposeYes : CLBlastTransposeNo, (size_t)m, (size_t)n, (size_t)k, 1.0f,
                   a.buf->mem, a.off, (size_t)lda, b.buf->mem, b.off, (size_t)ldb, beta, c.buf->mem, c.off,
                   (size_t)ldc, &ops->ctx->queue, NULL);
  return gemm_status(ops, code, fn, what);
}

dua_status dua_op_matmul_forward(dua_ops *ops, dua_span out, dua_span inp, dua_span w, dua_span bias, int R,
                                 int C, int OC) {
  static const char fn[] = "dua_op_matmul_forward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_dim(ops, fn, "R", R)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)) || (st = dua_ops_check_dim(ops, fn, "OC", OC)))
    return st;
  const size_t RC = (size_t)R * (size_t)C, ROC = (size_t)R * (size_t)OC, WN = (size_t)OC * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "out", out, ROC)) ||
      (st = dua_ops_check_span(ops, fn, "inp", inp, RC)) || (st = dua_ops_check_span(ops, fn, "w", w, WN)) ||
      (bias.buf && (st = dua_ops_check_span(ops, fn, "bias", bias, (size_t)OC))) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, ROC, "inp", inp, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, ROC, "w", w, WN)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, ROC, "bias", bias, (size_t)OC)))
    return st;
  float beta = 0.0f;
  if (bias.buf) { /* out = bias rows, then out += inp w^T */
    dua_ops_args a = dua_ops_args_of(ops, OPS_BIAS_ROWS);
    dua_ops_arg_span(&a, out);
    dua_ops_arg_span(&a, bias);
    dua_ops_arg_ulong(&a, (size_t)R);
    dua_ops_arg_int(&a, OC);
    if ((st = dua_ops_launch(ops, &a, 1, &ROC, "dua_op_matmul_forward (bias)")) != DUA_SUCCESS)
      return st;
    beta = 1.0f;
  }
  /* out [R, OC] (+)= inp [R, C] * w [OC, C]^T */
  return sgemm(ops, fn, "out = inp w^T", 0, 1, R, OC, C, inp, C, w, C, beta, out, OC);
}

dua_status dua_op_matmul_backward(dua_ops *ops, dua_span dinp, dua_span dw, dua_span dbias, dua_span dout,
                                  dua_span inp, dua_span w, int R, int C, int OC) {
  static const char fn[] = "dua_op_matmul_backward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_dim(ops, fn, "R", R)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)) || (st = dua_ops_check_dim(ops, fn, "OC", OC)))
    return st;
  const size_t RC = (size_t)R * (size_t)C, ROC = (size_t)R * (size_t)OC, WN = (size_t)OC * (size_t)C;
  if ((dinp.buf && (st = dua_ops_check_span(ops, fn, "dinp", dinp, RC))) ||
      (st = dua_ops_check_span(ops, fn, "dw", dw, WN)) ||
      (dbias.buf && (st = dua_ops_check_span(ops, fn, "dbias", dbias, (size_t)OC))) ||
      (st = dua_ops_check_span(ops, fn, "dout", dout, ROC)) ||
      (st = dua_ops_check_span(ops, fn, "inp", inp, RC)) || (st = dua_ops_check_span(ops, fn, "w", w, WN)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dinp", dinp, RC, "dout", dout, ROC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dinp", dinp, RC, "w", w, WN)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dinp", dinp, RC, "dw", dw, WN)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dw", dw, WN, "dout", dout, ROC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dw", dw, WN, "inp", inp, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dbias", dbias, (size_t)OC, "dout", dout, ROC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dbias", dbias, (size_t)OC, "dw", dw, WN)))
    return st;
  /* dinp [R, C] += dout [R, OC] * w [OC, C] */
  if (dinp.buf && (st = sgemm(ops, fn, "dinp += dout w", 0, 0, R, C, OC, dout, OC, w, C, 1.0f, dinp, C)))
    return st;
  /* dw [OC, C] += dout^T [OC, R] * inp [R, C] */
  if ((st = sgemm(ops, fn, "dw += dout^T inp", 1, 0, OC, C, R, dout, OC, inp, C, 1.0f, dw, C)))
    return st;
  if (!dbias.buf)
    return DUA_SUCCESS;
  /* dbias [OC] += column sums of dout: per chunk of rows into scratch [chunks, OC], then over the chunks */
  const int chunks = (R + DUA_OPS_COLSUM_ROWS - 1) / DUA_OPS_COLSUM_ROWS;
  cl_mem partial;
  if ((st = dua_ops_scratch(ops, (size_t)chunks * (size_t)OC * sizeof(float), &partial)) != DUA_SUCCESS ||
      (st = dua_ops_colsum(ops, partial, 0, dout.buf->mem, dout.off, R, OC, OC, DUA_OPS_COLSUM_ROWS, 0)) !=
          DUA_SUCCESS)
    return st;
  return dua_ops_colsum(ops, dbias.buf->mem, dbias.off, partial, 0, chunks, OC, OC, chunks, 1);
}
