/* train_ops_gemm.c: the linear layer of train_ops.h, through CLBlast's C API (row-major SGEMM on the
 * context's queue, offsets in elements; GPUs) or through dua's register-tiled GEMM of cl/train_ops_cpu.cl
 * (CPU devices, where it beats CLBlast several times over: see dua_ops_clblast_cpu_params). The bias is
 * written by a dua kernel (fused into dua's GEMM) and its gradient is a deterministic two-stage column sum
 * (dua_ops_colsum). */
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

/* CLBlast 1.5 has no tuning entry for PoCL's CPU device (vendor "AuthenticAMD" or "GenuineIntel" through
 * PoCL), so it takes its "default" parameters, and below m n k = 896^3 (every trainer GEMM) it runs the
 * XgemmDirect kernel with 16 x 16 tiles, 64 threads and 2 x 2 results each: ~5-8 GFLOP/s on PoCL, which runs
 * a work-group's threads as loops split at every barrier. Of the sets measured (bench/RESULTS.md, "Trainer
 * ops on PoCL"), 32 x 32 tiles over 16 threads of 8 x 8 results, float8 loads and no local-memory padding
 * did best, 3-4x CLBlast's default, still well below dua_ops_gemm (used on CPUs unless DUA_TRAIN_OPS says
 * clblast). The override is CLBlast's, per device and process-wide; a failure leaves CLBlast's own. */
int dua_ops_clblast_cpu_params(dua_ops *ops) {
  static const char *const names[] = {"KWID", "MDIMAD", "MDIMCD", "NDIMBD", "NDIMCD",
                                      "PADA", "PADB",   "VWMD",   "VWND",   "WGD"};
  static const size_t values[] = {8, 4, 4, 4, 4, 0, 0, 8, 8, 32};
  const CLBlastStatusCode code =
      CLBlastOverrideParameters(ops->ctx->device, "XgemmDirect", CLBlastPrecisionSingle,
                                sizeof values / sizeof values[0], (const char **)names, values);
  if (code != CLBlastSuccess) {
    dua_log(ops->ctx, DUA_LOG_WARNING,
            "train ops: CLBlastOverrideParameters failed (%d); CLBlast keeps its own", (int)code);
    return 0;
  }
  return 1;
}

/* ---- dua's GEMM (CPU devices) ------------------------------------------------------------------------ */

/* Packs X(k, j) = x[x_off + k sxk + j sxn] (k x n) into panels of p columns from element `at` of dst
 * (dua_ops_pack). */
static dua_status pack(dua_ops *ops, const char *what, cl_mem dst, size_t at, cl_mem x, size_t x_off, int sxk,
                       int sxn, int k, int n, int p) {
  dua_ops_args args = dua_ops_args_of(ops, OPS_PACK);
  const cl_ulong dst_off = at, off = x_off;
  dua_ops_arg(&args, sizeof dst, &dst);
  dua_ops_arg(&args, sizeof dst_off, &dst_off);
  dua_ops_arg(&args, sizeof x, &x);
  dua_ops_arg(&args, sizeof off, &off);
  dua_ops_arg_int(&args, sxk);
  dua_ops_arg_int(&args, sxn);
  dua_ops_arg_int(&args, k);
  dua_ops_arg_int(&args, n);
  dua_ops_arg_int(&args, p);
  const size_t global[2] = {(size_t)k, ((size_t)n + (size_t)p - 1) / (size_t)p};
  return dua_ops_launch_local(ops, &args, 2, global, (size_t)k < ops->stream_wg ? (size_t)k : ops->stream_wg,
                              what);
}

/* C [m, n] (mode 0 =, 1 +=, 2 = bias +) A(m, k) B(k, n) on dua_ops_gemm (cl/train_ops_cpu.cl), with
 * A(i, k) = a[a_off + i sam + k sak] and B(k, j) = b[b_off + k sbk + j sbn]. B is first packed into column
 * panels in the ops' scratch; so is A when it is transposed (sam == 1: its rows are columns in memory, the
 * weight gradient's dout^T). Reading a row-major B in place (ops->pack_b_tn = 0, only for a transposed A and
 * N a multiple of the tile width) saves the copy but strides through memory by the row length: at R = 8192
 * rows of 512 floats that made the weight gradient 4x slower on PoCL, so B is packed by default. */
static dua_status gemm_dua(dua_ops *ops, const char *what, int m, int n, int k, cl_mem a, size_t a_off,
                           int sam, int sak, cl_mem b, size_t b_off, int sbk, int sbn, dua_span c, int ldc,
                           dua_span bias, int mode) {
  const size_t nr = (size_t)ops->tile.vw * (size_t)ops->tile.nv, mr = (size_t)ops->tile.mr;
  const size_t panels = ((size_t)n + nr - 1) / nr, mtiles = ((size_t)m + mr - 1) / mr;
  const int pack_a = sam == 1 && m > 1 && ops->pack_a;
  const int pack_b = !(sbn == 1 && n % (int)nr == 0 && sam == 1 && !ops->pack_b_tn);
  const size_t b_elems = pack_b ? panels * nr * (size_t)k : 0;
  const size_t a_elems = pack_a ? mtiles * mr * (size_t)k : 0;
  cl_mem scratch = NULL;
  dua_status st = DUA_SUCCESS;
  if (b_elems + a_elems && (st = dua_ops_scratch(ops, (b_elems + a_elems) * sizeof(float), &scratch)))
    return st;
  size_t sbt = nr; /* panel t of B starts at b_off + t sbt */
  if (pack_b) {
    if ((st = pack(ops, what, scratch, 0, b, b_off, sbk, sbn, k, n, (int)nr)) != DUA_SUCCESS)
      return st;
    b = scratch, b_off = 0, sbt = (size_t)k * nr, sbk = (int)nr;
  }
  int samt = sam;
  if (pack_a) { /* A(i, k) = a[a_off + k sak + i]: rows i as the packed columns */
    if ((st = pack(ops, what, scratch, b_elems, a, a_off, sak, 1, k, m, (int)mr)) != DUA_SUCCESS)
      return st;
    a = scratch, a_off = b_elems, samt = k, sam = 1, sak = (int)mr;
  }
  dua_ops_args args = dua_ops_args_of(ops, OPS_GEMM);
  const cl_ulong aoff = a_off, boff = b_off;
  dua_ops_arg_span(&args, c);
  dua_ops_arg_int(&args, ldc);
  dua_ops_arg(&args, sizeof a, &a);
  dua_ops_arg(&args, sizeof aoff, &aoff);
  dua_ops_arg_int(&args, samt);
  dua_ops_arg_int(&args, sam);
  dua_ops_arg_int(&args, sak);
  dua_ops_arg(&args, sizeof b, &b);
  dua_ops_arg(&args, sizeof boff, &boff);
  dua_ops_arg_ulong(&args, sbt);
  dua_ops_arg_int(&args, sbk);
  dua_ops_arg_span(&args, bias.buf ? bias : c); /* unread unless mode 2 */
  dua_ops_arg_int(&args, m);
  dua_ops_arg_int(&args, n);
  dua_ops_arg_int(&args, k);
  dua_ops_arg_int(&args, mode);
  const size_t global[2] = {panels, mtiles};
  const size_t local = global[0] < ops->gemm_wg ? global[0] : ops->gemm_wg;
  return dua_ops_launch_local(ops, &args, 2, global, local, what);
}

/* ---- the linear layer -------------------------------------------------------------------------------- */

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
  if (ops->gemm_dua) /* out [R, OC] = inp [R, C] w^T (+ bias): B(c, oc) = w[oc C + c] */
    return gemm_dua(ops, fn, R, OC, C, inp.buf->mem, inp.off, C, 1, w.buf->mem, w.off, 1, C, out, OC, bias,
                    bias.buf ? 2 : 0);
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
  const dua_span none = {NULL, 0};
  if (ops->gemm_dua) {
    /* dinp [R, C] += dout [R, OC] w [OC, C];  dw [OC, C] += dout^T inp: A(oc, r) = dout[r OC + oc] */
    if (dinp.buf && (st = gemm_dua(ops, fn, R, C, OC, dout.buf->mem, dout.off, OC, 1, w.buf->mem, w.off, C, 1,
                                   dinp, C, none, 1)))
      return st;
    if ((st = gemm_dua(ops, fn, OC, C, R, dout.buf->mem, dout.off, 1, OC, inp.buf->mem, inp.off, C, 1, dw, C,
                       none, 1)))
      return st;
  } else {
    /* dinp [R, C] += dout [R, OC] * w [OC, C] */
    if (dinp.buf && (st = sgemm(ops, fn, "dinp += dout w", 0, 0, R, C, OC, dout, OC, w, C, 1.0f, dinp, C)))
      return st;
    /* dw [OC, C] += dout^T [OC, R] * inp [R, C] */
    if ((st = sgemm(ops, fn, "dw += dout^T inp", 1, 0, OC, C, R, dout, OC, inp, C, 1.0f, dw, C)))
      return st;
  }
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
