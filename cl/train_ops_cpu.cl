/* train_ops_cpu.cl: the trainer's kernels shaped for CPU devices (PoCL and the like), OpenCL 1.2 C, fp32.
 * host/train/train_ops.c chooses them for devices of type CPU; the kernels of cl/train_ops.cl serve GPUs.
 *
 * A CPU OpenCL runtime runs a work-group's work-items as a loop on one core and splits the kernel at every
 * barrier (each barrier region becomes its own loop over the work-items, and private values that live across
 * a barrier go through memory), so a work-group per row with a local-memory tree spends most of its time in
 * the tree. These kernels have no barriers and no local memory: a work-item owns a whole row (or a tile of
 * a GEMM) and gets its SIMD width from explicit vector types. Every reduction runs in a fixed order (DUA_VW
 * lanes over the row in steps of DUA_VW, the lanes then summed in index order, then the tail), so results
 * are bit-identical from run to run on one device.
 *
 *   dua_ops_gemm          C [M, N] (=, +=, = bias +) A(m, k) B(k, n), a register tile per work-item
 *   dua_ops_pack          a GEMM operand (B, or a transposed A) into contiguous panels of the tile width
 *   dua_ops_ln_fwd_item   layer norm, a work-item a row
 *   dua_ops_ln_bwd_item   layer-norm backward, a work-item per `rows` rows (dw/db partials per work-item)
 *   dua_ops_xent_item     softmax cross-entropy + gradient + argmax, a work-item a row
 *   dua_ops_sumsq_item    (sum of squares of) a contiguous chunk per work-item
 *   dua_ops_gelu_fwd_item, dua_ops_gelu_bwd_item   GELU (tanh approximation via exp), DUA_VW elements each
 *   dua_ops_colsum_item   column sums of row chunks, DUA_VW columns per work-item
 *   dua_ops_embed_fwd_item, dua_ops_embed_bwd_wte_item, dua_ops_embed_bwd_wpe_item   the embedding, a row
 *                         (forward) or DUA_VW columns (backward sums, in the portable kernels' order) each
 *
 * Tunables (-D from the host; these defaults are the measured best on a 2-core AVX-512 PoCL device):
 *   DUA_VW       lanes of the row reductions (4, 8 or 16)
 *   DUA_GEMM_MR  rows of C per work-item tile
 *   DUA_GEMM_VW  columns per vector (4, 8 or 16); DUA_GEMM_NV vectors per tile row (1 to 4)
 */

#ifndef DUA_VW
#define DUA_VW 8
#endif
#ifndef DUA_GEMM_MR
#define DUA_GEMM_MR 8
#endif
#ifndef DUA_GEMM_VW
#define DUA_GEMM_VW 8
#endif
#ifndef DUA_GEMM_NV
#define DUA_GEMM_NV 2
#endif

#define DUA_CAT_(a, b) a##b
#define DUA_CAT(a, b) DUA_CAT_(a, b)
#define floatV DUA_CAT(float, DUA_VW)
#define vloadV DUA_CAT(vload, DUA_VW)
#define vstoreV DUA_CAT(vstore, DUA_VW)
#define floatG DUA_CAT(float, DUA_GEMM_VW)
#define vloadG DUA_CAT(vload, DUA_GEMM_VW)
#define vstoreG DUA_CAT(vstore, DUA_GEMM_VW)
#define DUA_GEMM_NR (DUA_GEMM_VW * DUA_GEMM_NV)

#define DUA_LN_EPS 1e-5f

/* The lanes of v summed in index order (a fixed tree-free order). */
static float dua_lanes_sum(floatV v) {
  float a[DUA_VW];
  vstoreV(v, 0, a);
  float s = a[0];
  for (int i = 1; i < DUA_VW; i++)
    s += a[i];
  return s;
}

/* sum of x[0..n) */
static float dua_row_sum(__global const float *x, int n) {
  floatV acc = (floatV)(0.0f);
  int c = 0;
  for (; c + DUA_VW <= n; c += DUA_VW)
    acc += vloadV(0, x + c);
  float s = dua_lanes_sum(acc);
  for (; c < n; c++)
    s += x[c];
  return s;
}

/* sum of (x[c] - m)^2 over [0, n) */
static float dua_row_sumsq_centred(__global const float *x, int n, float m) {
  floatV acc = (floatV)(0.0f);
  int c = 0;
  for (; c + DUA_VW <= n; c += DUA_VW) {
    const floatV d = vloadV(0, x + c) - m;
    acc = fma(d, d, acc);
  }
  float s = dua_lanes_sum(acc);
  for (; c < n; c++) {
    const float d = x[c] - m;
    s = fma(d, d, s);
  }
  return s;
}

/* ---- GEMM ---------------------------------------------------------------------------------------------- */

/* Packs X(k, n) = x[x_off + k sxk + n sxn] (K x N) into panels of P columns: xp [ceil(N / P)][K][P], zeros
 * past N, so that dua_ops_gemm reads a tile's operand as one contiguous stream (the rows of a tile of a
 * row-major matrix with a power-of-two row stride would share a few cache sets). B is packed with P = NR;
 * a transposed A (the weight gradient's dout^T) with P = MR, its rows m taking the place of n. Work-item
 * (k, t) copies row k of panel t. */
__kernel void dua_ops_pack(__global float *xp, ulong xp_off, __global const float *x, ulong x_off, int sxk,
                           int sxn, int K, int N, int P) {
  const int k = (int)get_global_id(0), t = (int)get_global_id(1);
  if (k >= K || t * P >= N)
    return;
  __global const float *src = x + x_off + (ulong)k * (ulong)sxk + (ulong)t * (ulong)P * (ulong)sxn;
  __global float *dst = xp + xp_off + ((ulong)t * K + k) * P;
  if (sxn == 1 && (t + 1) * P <= N && P % 4 == 0) {
    for (int j = 0; j < P; j += 4)
      vstore4(vload4(0, src + j), 0, dst + j);
  } else {
    for (int j = 0; j < P; j++)
      dst[j] = t * P + j < N ? src[(ulong)j * (ulong)sxn] : 0.0f;
  }
}

/* C [M, N] (row stride ldc) per mode: 0  C = A B;  1  C += A B;  2  C = A B + bias[n] (broadcast over rows).
 * A(m0 + i, k) = a[a_off + m0 samt + i sam + k sak] for the tile's first row m0 (row-major A: samt = sam =
 * lda, sak = 1; A packed by dua_ops_pack with P = MR: samt = K, sam = 1, sak = MR); the NR columns of panel t
 * of B at b[b_off + t sbt + k sbk] on (packed by dua_ops_pack with P = NR: sbt = K NR, sbk = NR; a row-major
 * B whose N is a multiple of NR: sbt = NR, sbk = ldb). Work-item (i, j) computes rows [j MR, j MR + MR) x
 * columns [i NR, i NR + NR) of C: MR x NV vector accumulators in registers, k ascending (one fma per term),
 * so each element of C sums its K terms in the same order on every run. Rows past M read row M - 1 and are
 * not stored; columns past N are not stored. */
__kernel void dua_ops_gemm(__global float *c, ulong c_off, int ldc, __global const float *a, ulong a_off,
                           int samt, int sam, int sak, __global const float *b, ulong b_off, ulong sbt,
                           int sbk, __global const float *bias, ulong bias_off, int M, int N, int K,
                           int mode) {
  const int t = (int)get_global_id(0), n0 = t * DUA_GEMM_NR, m0 = (int)get_global_id(1) * DUA_GEMM_MR;
  if (n0 >= N || m0 >= M)
    return;
  __global const float *ap[DUA_GEMM_MR];
#pragma unroll
  for (int i = 0; i < DUA_GEMM_MR; i++)
    ap[i] = a + a_off + (ulong)m0 * (ulong)samt + (ulong)min(i, M - 1 - m0) * (ulong)sam;
  __global const float *bp = b + b_off + (ulong)t * sbt;
  floatG acc[DUA_GEMM_MR][DUA_GEMM_NV];
#pragma unroll
  for (int i = 0; i < DUA_GEMM_MR; i++)
#pragma unroll
    for (int v = 0; v < DUA_GEMM_NV; v++)
      acc[i][v] = (floatG)(0.0f);
  ulong ka = 0;
  for (int k = 0; k < K; k++) {
    floatG bv[DUA_GEMM_NV];
#pragma unroll
    for (int v = 0; v < DUA_GEMM_NV; v++)
      bv[v] = vloadG(v, bp);
#pragma unroll
    for (int i = 0; i < DUA_GEMM_MR; i++) {
      const float av = ap[i][ka];
#pragma unroll
      for (int v = 0; v < DUA_GEMM_NV; v++)
        acc[i][v] = fma((floatG)(av), bv[v], acc[i][v]);
    }
    bp += sbk;
    ka += (ulong)sak;
  }
  const int full = n0 + DUA_GEMM_NR <= N;
  floatG bb[DUA_GEMM_NV];
  if (mode == 2) {
    float bt[DUA_GEMM_NR];
#pragma unroll
    for (int j = 0; j < DUA_GEMM_NR; j++)
      bt[j] = n0 + j < N ? bias[bias_off + n0 + j] : 0.0f;
#pragma unroll
    for (int v = 0; v < DUA_GEMM_NV; v++)
      bb[v] = vloadG(v, bt);
  }
#pragma unroll
  for (int i = 0; i < DUA_GEMM_MR; i++) {
    if (m0 + i >= M)
      break;
    __global float *cp = c + c_off + (ulong)(m0 + i) * (ulong)ldc + (ulong)n0;
#pragma unroll
    for (int v = 0; v < DUA_GEMM_NV; v++) {
      floatG r = acc[i][v];
      if (mode == 2)
        r += bb[v];
      if (full) {
        if (mode == 1)
          r += vloadG(v, cp);
        vstoreG(r, v, cp);
      } else {
        float rt[DUA_GEMM_VW];
        vstoreG(r, 0, rt);
        for (int j = 0; j < DUA_GEMM_VW; j++) {
          const int col = v * DUA_GEMM_VW + j;
          if (n0 + col < N)
            cp[col] = mode == 1 ? cp[col] + rt[j] : rt[j];
        }
      }
    }
  }
}

/* ---- layer norm ---------------------------------------------------------------------------------------- */

/* Layer norm, a work-item a row: out [R, C], mean [R], rstd [R] <- inp [R, C], w [C], b [C]. Two passes
 * (mean, then the centred variance), as the group kernel. out may alias inp. */
__kernel void dua_ops_ln_fwd_item(__global float *out, ulong out_off, __global float *mean, ulong mean_off,
                                  __global float *rstd, ulong rstd_off, __global const float *inp,
                                  ulong inp_off, __global const float *w, ulong w_off,
                                  __global const float *b, ulong b_off, int R, int C) {
  const int row = (int)get_global_id(0);
  if (row >= R)
    return;
  __global const float *x = inp + inp_off + (ulong)row * C;
  const float m = dua_row_sum(x, C) / (float)C;
  const float rs = 1.0f / sqrt(dua_row_sumsq_centred(x, C, m) / (float)C + DUA_LN_EPS);
  __global float *y = out + out_off + (ulong)row * C;
  __global const float *wp = w + w_off, *bp = b + b_off;
  int c = 0;
  for (; c + DUA_VW <= C; c += DUA_VW)
    vstoreV((vloadV(0, x + c) - m) * rs * vloadV(0, wp + c) + vloadV(0, bp + c), 0, y + c);
  for (; c < C; c++)
    y[c] = (x[c] - m) * rs * wp[c] + bp[c];
  mean[mean_off + row] = m;
  rstd[rstd_off + row] = rs;
}

/* Layer-norm backward, work-item g over rows [g rows, (g + 1) rows):
 *   dinp [R, C] += rstd (dn - mean(dn) - xhat mean(dn xhat)),  dn = dout * w,  xhat = (x - mean) rstd;
 *   partial [groups, 2C]: row g holds the work-item's sum of dout * xhat (dw) in [0, C) and of dout (db) in
 *   [C, 2C), reduced over g by dua_ops_colsum. */
__kernel void dua_ops_ln_bwd_item(__global float *dinp, ulong dinp_off, __global float *partial,
                                  __global const float *dout, ulong dout_off, __global const float *inp,
                                  ulong inp_off, __global const float *w, ulong w_off,
                                  __global const float *mean, ulong mean_off, __global const float *rstd,
                                  ulong rstd_off, int R, int C, int rows) {
  const int g = (int)get_global_id(0);
  const int r0 = g * rows, r1 = min(R, r0 + rows);
  if (r0 >= R)
    return;
  __global float *pdw = partial + (ulong)g * 2 * C, *pdb = pdw + C;
  __global const float *wp = w + w_off;
  for (int r = r0; r < r1; r++) {
    __global const float *x = inp + inp_off + (ulong)r * C, *dy = dout + dout_off + (ulong)r * C;
    const float m = mean[mean_off + r], rs = rstd[rstd_off + r];
    floatV a1 = (floatV)(0.0f), a2 = (floatV)(0.0f);
    int c = 0;
    for (; c + DUA_VW <= C; c += DUA_VW) {
      const floatV dn = vloadV(0, dy + c) * vloadV(0, wp + c);
      a1 += dn;
      a2 += dn * ((vloadV(0, x + c) - m) * rs);
    }
    float s1 = dua_lanes_sum(a1), s2 = dua_lanes_sum(a2);
    for (; c < C; c++) {
      const float dn = dy[c] * wp[c];
      s1 += dn;
      s2 += dn * ((x[c] - m) * rs);
    }
    const float m1 = s1 / (float)C, m2 = s2 / (float)C;
    __global float *dx = dinp + dinp_off + (ulong)r * C;
    const int first = r == r0;
    for (c = 0; c + DUA_VW <= C; c += DUA_VW) {
      const floatV xhat = (vloadV(0, x + c) - m) * rs, d = vloadV(0, dy + c);
      const floatV dn = d * vloadV(0, wp + c);
      vstoreV(vloadV(0, dx + c) + rs * (dn - m1 - xhat * m2), 0, dx + c);
      vstoreV(first ? d * xhat : vloadV(0, pdw + c) + d * xhat, 0, pdw + c);
      vstoreV(first ? d : vloadV(0, pdb + c) + d, 0, pdb + c);
    }
    for (; c < C; c++) {
      const float xhat = (x[c] - m) * rs, d = dy[c], dn = d * wp[c];
      dx[c] += rs * (dn - m1 - xhat * m2);
      pdw[c] = first ? d * xhat : pdw[c] + d * xhat;
      pdb[c] = first ? d : pdb[c] + d;
    }
  }
}

/* ---- cross-entropy ------------------------------------------------------------------------------------- */

/* Softmax cross-entropy, a work-item a row of logits [R, V]; targets [R] (in [0, V) or ignore_index):
 *   losses[r] = logsumexp(x) - x[target] (0 when ignored); pred[r] = argmax x (lowest index on ties), when
 *   has_pred; dlogits [R, V] = (softmax(x) - onehot(target)) * grad_scale (0 when ignored), when has_dlogits.
 * dlogits may alias logits exactly: each element is read before it is written. With dlogits, the second
 * pass keeps exp(x - max) there and the third scales it, so every exp is computed once. */
__kernel void dua_ops_xent_item(__global float *losses, ulong losses_off, __global float *dlogits,
                                ulong dlogits_off, int has_dlogits, __global int *pred, ulong pred_off,
                                int has_pred, __global const float *logits, ulong logits_off,
                                __global const int *targets, int ignore_index, float grad_scale, int R,
                                int V) {
  const int row = (int)get_global_id(0);
  if (row >= R)
    return;
  __global const float *x = logits + logits_off + (ulong)row * V;
  const int t = targets[row];
  const int ignored = t == ignore_index;
  const float xt = ignored ? 0.0f : x[t];
  float mx = x[0];
  int arg = 0;
  for (int c = 1; c < V; c++)
    if (x[c] > mx) {
      mx = x[c];
      arg = c;
    }
  __global float *d = dlogits + dlogits_off + (ulong)row * V;
  floatV acc = (floatV)(0.0f);
  int c = 0;
  for (; c + DUA_VW <= V; c += DUA_VW) {
    const floatV e = exp(vloadV(0, x + c) - mx);
    acc += e;
    if (has_dlogits)
      vstoreV(e, 0, d + c);
  }
  float sum = dua_lanes_sum(acc);
  for (; c < V; c++) {
    const float e = exp(x[c] - mx);
    sum += e;
    if (has_dlogits)
      d[c] = e;
  }
  losses[losses_off + row] = ignored ? 0.0f : log(sum) - (xt - mx);
  if (has_pred)
    pred[pred_off + row] = arg;
  if (has_dlogits) {
    const float inv = 1.0f / sum;
    if (ignored) {
      for (c = 0; c < V; c++)
        d[c] = 0.0f;
    } else {
      const float et = d[t];
      for (c = 0; c + DUA_VW <= V; c += DUA_VW)
        vstoreV(vloadV(0, d + c) * inv * grad_scale, 0, d + c);
      for (; c < V; c++)
        d[c] = d[c] * inv * grad_scale;
      d[t] = (et * inv - 1.0f) * grad_scale; /* the one-hot term */
    }
  }
}

/* ---- sum of squares ------------------------------------------------------------------------------------ */

/* out[out_off + g] = sum over x[g chunk, min(n, (g + 1) chunk)) of x^2 (square) or x, lanes then tail. */
__kernel void dua_ops_sumsq_item(__global float *out, ulong out_off, __global const float *x, ulong x_off,
                                 ulong n, ulong chunk, int square) {
  const ulong g = get_global_id(0), i0 = g * chunk;
  if (i0 >= n)
    return;
  const ulong i1 = min(n, i0 + chunk);
  __global const float *p = x + x_off;
  floatV acc = (floatV)(0.0f);
  ulong i = i0;
  for (; i + DUA_VW <= i1; i += DUA_VW) {
    const floatV v = vloadV(0, p + i);
    acc = square ? fma(v, v, acc) : acc + v;
  }
  float s = dua_lanes_sum(acc);
  for (; i < i1; i++)
    s = square ? fma(p[i], p[i], s) : s + p[i];
  out[out_off + g] = s;
}

/* ---- GELU ---------------------------------------------------------------------------------------------- */

/* The tanh approximation through the logistic function: 0.5 (1 + tanh(u)) = 1 / (1 + e), e = exp(-2u),
 * u = k (x + 0.044715 x^3), so one exp and one division per element instead of a tanh. */
#define DUA_GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define DUA_GELU_C 0.044715f

/* out[i] = x s, s = 1 / (1 + exp(-2u)); a work-item per DUA_VW elements. out may alias inp. */
__kernel void dua_ops_gelu_fwd_item(__global float *out, ulong out_off, __global const float *inp,
                                    ulong inp_off, ulong n) {
  const ulong i0 = get_global_id(0) * DUA_VW;
  if (i0 >= n)
    return;
  __global const float *x = inp + inp_off + i0;
  __global float *y = out + out_off + i0;
  if (i0 + DUA_VW <= n) {
    const floatV v = vloadV(0, x);
    const floatV e = exp(-2.0f * DUA_GELU_K * (v + DUA_GELU_C * v * v * v));
    vstoreV(v / (1.0f + e), 0, y);
  } else {
    for (int j = 0; j < (int)(n - i0); j++) {
      const float v = x[j];
      y[j] = v / (1.0f + exp(-2.0f * DUA_GELU_K * (v + DUA_GELU_C * v * v * v)));
    }
  }
}

/* dinp[i] += gelu'(x) dout[i],  gelu'(x) = s + 2 x s (1 - s) u',  u' = k (1 + 3c x^2); written with (1 - s),
 * not e s^2, because e = exp(-2u) overflows to inf for x below about -10 and inf * 0 is NaN. */
__kernel void dua_ops_gelu_bwd_item(__global float *dinp, ulong dinp_off, __global const float *inp,
                                    ulong inp_off, __global const float *dout, ulong dout_off, ulong n) {
  const ulong i0 = get_global_id(0) * DUA_VW;
  if (i0 >= n)
    return;
  __global const float *x = inp + inp_off + i0, *dy = dout + dout_off + i0;
  __global float *dx = dinp + dinp_off + i0;
  if (i0 + DUA_VW <= n) {
    const floatV v = vloadV(0, x);
    const floatV e = exp(-2.0f * DUA_GELU_K * (v + DUA_GELU_C * v * v * v));
    const floatV s = 1.0f / (1.0f + e);
    const floatV du = DUA_GELU_K * (1.0f + 3.0f * DUA_GELU_C * v * v);
    const floatV grad = s + 2.0f * v * s * (1.0f - s) * du; /* e s^2 = s (1 - s): finite where e = inf */
    vstoreV(vloadV(0, dx) + grad * vloadV(0, dy), 0, dx);
  } else {
    for (int j = 0; j < (int)(n - i0); j++) {
      const float v = x[j];
      const float e = exp(-2.0f * DUA_GELU_K * (v + DUA_GELU_C * v * v * v));
      const float s = 1.0f / (1.0f + e);
      const float du = DUA_GELU_K * (1.0f + 3.0f * DUA_GELU_C * v * v);
      dx[j] += (s + 2.0f * v * s * (1.0f - s) * du) * dy[j];
    }
  }
}

/* ---- column sums --------------------------------------------------------------------------------------- */

/* dua_ops_colsum with DUA_VW columns per work-item: dst [chunks, cols] row k (=, or += when accumulate) the
 * sum of src rows [k chunk, min(rows, (k + 1) chunk)) (row stride ld), each column summed in row order. */
__kernel void dua_ops_colsum_item(__global float *dst, ulong dst_off, __global const float *src,
                                  ulong src_off, int rows, int cols, int ld, int chunk, int accumulate) {
  const int c0 = (int)get_global_id(0) * DUA_VW, k = (int)get_global_id(1);
  if (c0 >= cols)
    return;
  const int r0 = k * chunk, r1 = min(rows, r0 + chunk);
  __global const float *s = src + src_off + (ulong)r0 * ld + c0;
  __global float *d = dst + dst_off + (ulong)k * cols + c0;
  if (c0 + DUA_VW <= cols) {
    floatV acc = (floatV)(0.0f);
    for (int r = r0; r < r1; r++, s += ld)
      acc += vloadV(0, s);
    vstoreV(accumulate ? vloadV(0, d) + acc : acc, 0, d);
  } else {
    for (int j = 0; j < cols - c0; j++) {
      float acc = 0.0f;
      for (int r = 0; r < r1 - r0; r++)
        acc += s[(ulong)r * ld + j];
      d[j] = accumulate ? d[j] + acc : acc;
    }
  }
}

/* ---- embedding ----------------------------------------------------------------------------------------- */

/* out [R, C] = wte[tokens[r]] + wpe[r % T], a work-item a row (tokens validated on the host). */
__kernel void dua_ops_embed_fwd_item(__global float *out, ulong out_off, __global const int *tokens,
                                     __global const float *wte, ulong wte_off, __global const float *wpe,
                                     ulong wpe_off, int R, int T, int C) {
  const int r = (int)get_global_id(0);
  if (r >= R)
    return;
  __global const float *te = wte + wte_off + (ulong)tokens[r] * C, *pe = wpe + wpe_off + (ulong)(r % T) * C;
  __global float *y = out + out_off + (ulong)r * C;
  int c = 0;
  for (; c + DUA_VW <= C; c += DUA_VW)
    vstoreV(vloadV(0, te + c) + vloadV(0, pe + c), 0, y + c);
  for (; c < C; c++)
    y[c] = te[c] + pe[c];
}

/* dwte [V, C] += the sums of dout [R, C] rows per token, from the host's CSR (as dua_ops_embed_bwd_wte):
 * work-item (u, j) sums columns [j DUA_VW, j DUA_VW + DUA_VW) of token u's rows in ascending row order. */
__kernel void dua_ops_embed_bwd_wte_item(__global float *dwte, ulong dwte_off, __global const float *dout,
                                         ulong dout_off, __global const int *csr, int U, int C) {
  const int c0 = (int)get_global_id(0) * DUA_VW, u = (int)get_global_id(1);
  if (c0 >= C || u >= U)
    return;
  __global const int *start = csr + U, *rows = csr + 2 * U + 1;
  __global float *d = dwte + dwte_off + (ulong)csr[u] * C + c0;
  if (c0 + DUA_VW <= C) {
    floatV acc = (floatV)(0.0f);
    for (int k = start[u]; k < start[u + 1]; k++)
      acc += vloadV(0, dout + dout_off + (ulong)rows[k] * C + c0);
    vstoreV(vloadV(0, d) + acc, 0, d);
  } else {
    for (int j = 0; j < C - c0; j++) {
      float acc = 0.0f;
      for (int k = start[u]; k < start[u + 1]; k++)
        acc += dout[dout_off + (ulong)rows[k] * C + c0 + j];
      d[j] += acc;
    }
  }
}

/* dwpe [T, C] += sum over b of dout row b T + t, in order of b: work-item (j, t) for DUA_VW columns. */
__kernel void dua_ops_embed_bwd_wpe_item(__global float *dwpe, ulong dwpe_off, __global const float *dout,
                                         ulong dout_off, int B, int T, int C) {
  const int c0 = (int)get_global_id(0) * DUA_VW, t = (int)get_global_id(1);
  if (c0 >= C || t >= T)
    return;
  __global const float *s = dout + dout_off + (ulong)t * C + c0;
  const ulong stride = (ulong)T * C;
  __global float *d = dwpe + dwpe_off + (ulong)t * C + c0;
  if (c0 + DUA_VW <= C) {
    floatV acc = (floatV)(0.0f);
    for (int b = 0; b < B; b++)
      acc += vloadV(0, s + b * stride);
    vstoreV(vloadV(0, d) + acc, 0, d);
  } else {
    for (int j = 0; j < C - c0; j++) {
      float acc = 0.0f;
      for (int b = 0; b < B; b++)
        acc += s[b * stride + j];
      d[j] += acc;
    }
  }
}
