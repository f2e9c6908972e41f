/* attn_naive.cl: the materialized-scores baseline (what the paper called "dense"): S = scale Q K^T with the
 * layout's mask written to a (B, Hq, N, N) fp32 scratch, a row softmax in place, then O = P V. Three
 * launches, every score stored: the reference point that fused kernels are measured against. */

/* global (N keys, N queries, B*Hq) */
__kernel void dua_naive_scores(__global const dua_store_t *q, __global const dua_store_t *k,
                               __global float *scores, long4 q_strides, long4 k_strides, long2 offsets,
                               dua_shape shape, int head_dim, float scale,
                               __global const dua_head_rule *head_rules, __global const uchar *paths,
                               __global const float *level_bias, long bias_offset, int bias_stride,
                               int has_bias) {
  const int j = get_global_id(0), i = get_global_id(1), bh = get_global_id(2);
  const int b = bh / shape.hq, h = bh % shape.hq, hk = h / (shape.hq / shape.hkv);
  const int m = i / shape.blk, n = j / shape.blk;
  const dua_head_rule hr = head_rules[h];
  __global const uchar *paths_bh = paths + (long)bh * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
  const int shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
  const int extra = dua_token_extra(i, j, shape.window, shape.sink);
  float x = -INFINITY;
  if ((shared || extra) && (!shape.causal || j <= i)) {
    __global const dua_store_t *qr = q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1 + i * q_strides.s2;
    __global const dua_store_t *kr = k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1 + j * k_strides.s2;
    float acc = 0.0f;
    for (int d = 0; d < head_dim; d++)
      acc = fma(DUA_LOAD(qr, d), DUA_LOAD(kr, d), acc);
    x = acc * scale;
    if (has_bias && shared && !extra)
      x += level_bias[bias_offset + h * bias_stride +
                      block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)];
  }
  scores[((long)bh * shape.n_tokens + i) * shape.n_tokens + j] = x;
}

/* global (N queries, B*Hq): softmax of one row in place; LSE (natural log), -inf and zeros when empty */
__kernel void dua_naive_softmax(__global float *scores, __global float *lse, long4 lse_strides,
                                long lse_offset, int has_lse, int n_tokens, int hq) {
  const int i = get_global_id(0), bh = get_global_id(1);
  __global float *row = scores + ((long)bh * n_tokens + i) * n_tokens;
  float mx = -INFINITY;
  for (int j = 0; j < n_tokens; j++)
    mx = fmax(mx, row[j]);
  float sum = 0.0f;
  if (mx != -INFINITY)
    for (int j = 0; j < n_tokens; j++)
      sum += exp(row[j] - mx);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int j = 0; j < n_tokens; j++)
    row[j] = sum > 0.0f ? exp(row[j] - mx) * inv : 0.0f;
  if (has_lse)
    lse[lse_offset + (bh / hq) * lse_strides.s0 + (bh % hq) * lse_strides.s1 + i * lse_strides.s2] =
        sum > 0.0f ? mx + log(sum) : -INFINITY;
}

/* global (head_dim, N queries, B*Hq): O = P V */
__kernel void dua_naive_pv(__global const float *scores, __global const dua_store_t *v,
                           __global dua_store_t *o, long4 v_strides, long4 o_strides, long2 offsets,
                           int n_tokens, int hq, int hkv) {
  const int d = get_global_id(0), i = get_global_id(1), bh = get_global_id(2);
  const int b = bh / hq, h = bh % hq, hk = h / (hq / hkv);
  __global const float *p = scores + ((long)bh * n_tokens + i) * n_tokens;
  __global const dua_store_t *vb = v + offsets.s0 + b * v_strides.s0 + hk * v_strides.s1 + d;
  float acc = 0.0f;
  for (int j = 0; j < n_tokens; j++)
    acc = fma(p[j], DUA_LOAD(vb, j * v_strides.s2), acc);
  __global dua_store_t *orow = o + offsets.s1 + b * o_strides.s0 + h * o_strides.s1 + i * o_strides.s2;
  DUA_STORE(acc, orow, d);
}
