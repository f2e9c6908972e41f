/* train_ops.cl: the trainer's layer kernels (host/train/train_ops.h), OpenCL 1.2 C, fp32.
 *
 * Every tensor is contiguous row-major and passed as a buffer plus an element offset (no sub-buffers).
 * Row reductions use a local-memory tree over the work-group (its size a power of two, given by the host
 * with the __local scratch argument): no sub-group or warp-size assumption. Every reduction has a fixed
 * order for a given problem size, so results are bit-identical from run to run on one device.
 *
 *   dua_ops_fill, dua_ops_accumulate, dua_ops_add        elementwise, one work-item an element
 *   dua_ops_embed_fwd                                    out[r, c] = wte[tok[r], c] + wpe[r % T, c]
 *   dua_ops_embed_bwd_wte, dua_ops_embed_bwd_wpe         token rows gathered on the host (CSR), summed in
 * order dua_ops_ln_fwd, dua_ops_ln_bwd                       layer norm; ln_bwd writes per-row-group dw/db
 * partials dua_ops_colsum                                       column sums of row chunks (dw/db/dbias
 * reduction) dua_ops_gelu_fwd, dua_ops_gelu_bwd                   GELU, tanh approximation dua_ops_bias_rows
 * out[r, oc] = bias[oc] (before a beta = 1 GEMM) dua_ops_xent                                         softmax
 * cross-entropy + gradient + argmax, a group a row dua_ops_sumsq two-stage sum (of squares), fixed tree
 *   dua_ops_adamw                                        AdamW step
 */

#define DUA_LN_EPS 1e-5f
#define DUA_GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define DUA_GELU_C 0.044715f

/* Sum of v over the work-group (local size a power of two); every work-item gets the result. The trailing
 * barrier lets the caller reuse s at once. */
static float dua_ops_group_sum(__local float *s, float v) {
  const uint lid = get_local_id(0);
  s[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (uint h = get_local_size(0) >> 1; h > 0; h >>= 1) {
    if (lid < h)
      s[lid] += s[lid + h];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  const float r = s[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

/* x[0..n) = value */
__kernel void dua_ops_fill(__global float *x, ulong off, ulong n, float value) {
  const size_t i = get_global_id(0);
  if (i < n)
    x[off + i] = value;
}

/* dst[0..n) += src[0..n) */
__kernel void dua_ops_accumulate(__global float *dst, ulong dst_off, __global const float *src, ulong src_off,
                                 ulong n) {
  const size_t i = get_global_id(0);
  if (i < n)
    dst[dst_off + i] += src[src_off + i];
}

/* out[0..n) = a + b */
__kernel void dua_ops_add(__global float *out, ulong out_off, __global const float *a, ulong a_off,
                          __global const float *b, ulong b_off, ulong n) {
  const size_t i = get_global_id(0);
  if (i < n)
    out[out_off + i] = a[a_off + i] + b[b_off + i];
}

/* out [R, C] = wte[tokens[r]] + wpe[r % T]; tokens [R] (validated on the host), one work-item an element */
__kernel void dua_ops_embed_fwd(__global float *out, ulong out_off, __global const int *tokens,
                                __global const float *wte, ulong wte_off, __global const float *wpe,
                                ulong wpe_off, ulong R, int T, int C) {
  const size_t i = get_global_id(0);
  if (i >= R * (ulong)C)
    return;
  const size_t r = i / (ulong)C, c = i % (ulong)C;
  out[out_off + i] = wte[wte_off + (ulong)tokens[r] * C + c] + wpe[wpe_off + (r % (ulong)T) * C + c];
}

/* dwte [V, C] += sums of dout [R, C] rows per token. csr: tok [U] (the distinct tokens), start [U + 1]
 * (row ranges), rows [R] (row indices grouped by token, ascending within a token). Work-item (u, c) sums
 * its rows in order: no atomics, deterministic. */
__kernel void dua_ops_embed_bwd_wte(__global float *dwte, ulong dwte_off, __global const float *dout,
                                    ulong dout_off, __global const int *csr, int U, int C) {
  const size_t i = get_global_id(0);
  if (i >= (ulong)U * (ulong)C)
    return;
  const int u = (int)(i / (ulong)C), c = (int)(i % (ulong)C);
  __global const int *start = csr + U, *rows = csr + 2 * U + 1;
  float s = 0.0f;
  for (int k = start[u]; k < start[u + 1]; k++)
    s += dout[dout_off + (ulong)rows[k] * C + c];
  dwte[dwte_off + (ulong)csr[u] * C + c] += s;
}

/* dwpe [T, C] += sum over b of dout [B * T, C] row (b * T + t), in order of b */
__kernel void dua_ops_embed_bwd_wpe(__global float *dwpe, ulong dwpe_off, __global const float *dout,
                                    ulong dout_off, int B, int T, int C) {
  const size_t i = get_global_id(0);
  const size_t tc = (ulong)T * (ulong)C;
  if (i >= tc)
    return;
  float s = 0.0f;
  for (int b = 0; b < B; b++)
    s += dout[dout_off + (ulong)b * tc + i];
  dwpe[dwpe_off + i] += s;
}

/* Layer norm, a work-group a row: out [R, C], mean [R], rstd [R] <- inp [R, C], w [C], b [C].
 * Two passes (mean, then the centred variance). out may alias inp. */
__kernel void dua_ops_ln_fwd(__global float *out, ulong out_off, __global float *mean, ulong mean_off,
                             __global float *rstd, ulong rstd_off, __global const float *inp, ulong inp_off,
                             __global const float *w, ulong w_off, __global const float *b, ulong b_off,
                             int C, __local float *s) {
  const size_t row = get_group_id(0);
  const int lid = (int)get_local_id(0), L = (int)get_local_size(0);
  __global const float *x = inp + inp_off + row * C;
  float acc = 0.0f;
  for (int c = lid; c < C; c += L)
    acc += x[c];
  const float m = dua_ops_group_sum(s, acc) / (float)C;
  acc = 0.0f;
  for (int c = lid; c < C; c += L) {
    const float d = x[c] - m;
    acc += d * d;
  }
  const float rs = 1.0f / sqrt(dua_ops_group_sum(s, acc) / (float)C + DUA_LN_EPS);
  __global float *y = out + out_off + row * C;
  for (int c = lid; c < C; c += L)
    y[c] = (x[c] - m) * rs * w[w_off + c] + b[b_off + c];
  if (lid == 0) {
    mean[mean_off + row] = m;
    rstd[rstd_off + row] = rs;
  }
}

/* Layer norm backward, a work-group per `rows` consecutive rows:
 *   dinp [R, C] += rstd (dn - mean(dn) - xhat mean(dn xhat)),  dn = dout * w,  xhat = (x - mean) rstd;
 *   partial [groups, 2C]: row g holds this group's sum of dout * xhat (dw) in [0, C) and of dout (db) in
 *   [C, 2C), reduced by dua_ops_colsum. Channel c belongs to one work-item, so its partials need no sync. */
__kernel void dua_ops_ln_bwd(__global float *dinp, ulong dinp_off, __global float *partial,
                             __global const float *dout, ulong dout_off, __global const float *inp,
                             ulong inp_off, __global const float *w, ulong w_off, __global const float *mean,
                             ulong mean_off, __global const float *rstd, ulong rstd_off, int R, int C,
                             int rows, __local float *s) {
  const int g = (int)get_group_id(0);
  const int lid = (int)get_local_id(0), L = (int)get_local_size(0);
  const int r0 = g * rows, r1 = min(R, r0 + rows);
  __global float *pdw = partial + (ulong)g * 2 * C, *pdb = pdw + C;
  for (int r = r0; r < r1; r++) {
    __global const float *x = inp + inp_off + (ulong)r * C, *dy = dout + dout_off + (ulong)r * C;
    const float m = mean[mean_off + r], rs = rstd[rstd_off + r];
    float a1 = 0.0f, a2 = 0.0f;
    for (int c = lid; c < C; c += L) {
      const float dn = dy[c] * w[w_off + c];
      a1 += dn;
      a2 += dn * (x[c] - m) * rs;
    }
    const float m1 = dua_ops_group_sum(s, a1) / (float)C;
    const float m2 = dua_ops_group_sum(s, a2) / (float)C;
    __global float *dx = dinp + dinp_off + (ulong)r * C;
    for (int c = lid; c < C; c += L) {
      const float xhat = (x[c] - m) * rs, dn = dy[c] * w[w_off + c];
      dx[c] += rs * (dn - m1 - xhat * m2);
      if (r == r0) {
        pdw[c] = dy[c] * xhat;
        pdb[c] = dy[c];
      } else {
        pdw[c] += dy[c] * xhat;
        pdb[c] += dy[c];
      }
    }
  }
}

/* Column sums of src [rows, cols] (row stride ld) over chunks of `chunk` rows, in row order:
 *   dst [chunks, cols] row k  (=, or += when accumulate) sum of rows [k * chunk, min(rows, (k+1) chunk)).
 * Work-item (c, k); a stage with chunk >= rows is a plain column sum into dst [cols]. */
__kernel void dua_ops_colsum(__global float *dst, ulong dst_off, __global const float *src, ulong src_off,
                             int rows, int cols, int ld, int chunk, int accumulate) {
  const int c = (int)get_global_id(0), k = (int)get_global_id(1);
  if (c >= cols)
    return;
  const int r0 = k * chunk, r1 = min(rows, r0 + chunk);
  float acc = 0.0f;
  for (int r = r0; r < r1; r++)
    acc += src[src_off + (ulong)r * ld + c];
  __global float *d = dst + dst_off + (ulong)k * cols + c;
  if (accumulate)
    *d += acc;
  else
    *d = acc;
}

/* out[i] = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi). out may alias inp. */
__kernel void dua_ops_gelu_fwd(__global float *out, ulong out_off, __global const float *inp, ulong inp_off,
                               ulong n) {
  const size_t i = get_global_id(0);
  if (i >= n)
    return;
  const float x = inp[inp_off + i];
  out[out_off + i] = 0.5f * x * (1.0f + tanh(DUA_GELU_K * (x + DUA_GELU_C * x * x * x)));
}

/* dinp[i] += gelu'(inp[i]) dout[i] */
__kernel void dua_ops_gelu_bwd(__global float *dinp, ulong dinp_off, __global const float *inp, ulong inp_off,
                               __global const float *dout, ulong dout_off, ulong n) {
  const size_t i = get_global_id(0);
  if (i >= n)
    return;
  const float x = inp[inp_off + i];
  /* 0.5 (1 + tanh u) = s = 1 / (1 + exp(-2u)) and 1 - tanh^2 u = 4 s (1 - s): unlike 1 - t * t with t rounded
   * to one ulp of -1, this gives exactly 0 in the far negative tail (and stays finite where exp overflows) */
  const float s = 1.0f / (1.0f + exp(-2.0f * DUA_GELU_K * (x + DUA_GELU_C * x * x * x)));
  const float du = DUA_GELU_K * (1.0f + 3.0f * DUA_GELU_C * x * x);
  const float grad = s + 2.0f * x * s * (1.0f - s) * du;
  dinp[dinp_off + i] += grad * dout[dout_off + i];
}

/* out [R, OC] row r = bias [OC] */
__kernel void dua_ops_bias_rows(__global float *out, ulong out_off, __global const float *bias,
                                ulong bias_off, ulong R, int OC) {
  const size_t i = get_global_id(0);
  if (i < R * (ulong)OC)
    out[out_off + i] = bias[bias_off + i % (ulong)OC];
}

/* Softmax cross-entropy, a work-group a row of logits [R, V]; targets [R] (in [0, V) or ignore_index):
 *   losses[r] = logsumexp(x) - x[target] (0 when ignored);
 *   dlogits [R, V] = (softmax(x) - onehot(target)) * grad_scale (0 when ignored), when has_dlogits; may alias
 *   logits: every read of a row happens before the barrier that precedes its writes;
 *   pred[r] = argmax x (lowest index on ties), when has_pred. sv, si: local size floats and ints. */
__kernel void dua_ops_xent(__global float *losses, ulong losses_off, __global float *dlogits,
                           ulong dlogits_off, int has_dlogits, __global int *pred, ulong pred_off,
                           int has_pred, __global const float *logits, ulong logits_off,
                           __global const int *targets, int ignore_index, float grad_scale, int V,
                           __local float *sv, __local int *si) {
  const size_t row = get_group_id(0);
  const int lid = (int)get_local_id(0), L = (int)get_local_size(0);
  __global const float *x = logits + logits_off + row * V;
  const int t = targets[row];
  const int ignored = t == ignore_index;
  const float xt = ignored ? 0.0f : x[t];
  /* max and its lowest index: each work-item scans its columns in ascending order (strict >), then a
   * tree that prefers the larger value, the lower index on ties */
  float best = -INFINITY;
  int bi = INT_MAX;
  for (int c = lid; c < V; c += L) {
    const float v = x[c];
    if (bi == INT_MAX || v > best) {
      best = v;
      bi = c;
    }
  }
  sv[lid] = best;
  si[lid] = bi;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int h = L >> 1; h > 0; h >>= 1) {
    if (lid < h) {
      const float o = sv[lid + h];
      const int oi = si[lid + h];
      if (o > sv[lid] || (o == sv[lid] && oi < si[lid])) {
        sv[lid] = o;
        si[lid] = oi;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  const float mx = sv[0];
  const int arg = si[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  float acc = 0.0f;
  for (int c = lid; c < V; c += L)
    acc += exp(x[c] - mx);
  const float sum = dua_ops_group_sum(sv, acc); /* its last barrier orders every read before the writes */
  if (lid == 0) {
    losses[losses_off + row] = ignored ? 0.0f : log(sum) - (xt - mx);
    if (has_pred)
      pred[pred_off + row] = arg;
  }
  if (has_dlogits) {
    __global float *d = dlogits + dlogits_off + row * V;
    const float inv = 1.0f / sum;
    for (int c = lid; c < V; c += L) {
      const float p = exp(x[c] - mx) * inv;
      d[c] = ignored ? 0.0f : (p - (c == t ? 1.0f : 0.0f)) * grad_scale;
    }
  }
}

/* out[out_off + group] = sum over this group's share of x[0..n) of x^2 (square) or x: work-item i takes
 * i, i + global size, ... in order, then the group's tree. Run with G groups, then once with one group over
 * the G partials, the result is a fixed tree for a given n. */
__kernel void dua_ops_sumsq(__global float *out, ulong out_off, __global const float *x, ulong x_off, ulong n,
                            int square, __local float *s) {
  const size_t stride = get_global_size(0);
  float acc = 0.0f;
  for (size_t i = get_global_id(0); i < n; i += stride) {
    const float v = x[x_off + i];
    acc += square ? v * v : v;
  }
  const float r = dua_ops_group_sum(s, acc);
  if (get_local_id(0) == 0)
    out[out_off + get_group_id(0)] = r;
}

/* AdamW: g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p), bc1 = 1 - b1^t, bc2 = 1 - b2^t (from the host). */
__kernel void dua_ops_adamw(__global float *p, ulong p_off, __global const float *grad, ulong g_off,
                            __global float *m, ulong m_off, __global float *v, ulong v_off, ulong n, float lr,
                            float b1, float b2, float eps, float wd, float bc1, float bc2, float grad_scale) {
  const size_t i = get_global_id(0);
  if (i >= n)
    return;
  const float g = grad[g_off + i] * grad_scale;
  const float mi = b1 * m[m_off + i] + (1.0f - b1) * g;
  const float vi = b2 * v[v_off + i] + (1.0f - b2) * g * g;
  m[m_off + i] = mi;
  v[v_off + i] = vi;
  const float pi = p[p_off + i];
  p[p_off + i] = pi - lr * ((mi / bc1) / (sqrt(vi / bc2) + eps) + wd * pi);
}
